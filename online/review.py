"""The human review API of content safety (``control/safety.py``): the queue and the decisions.

Include it in the service with the dependency that gives the worker's ``ModerationStore``::

    app.include_router(make_review_router(get_moderation_store))

=================================  ============================================================================
``GET /review/queue?limit=``       items awaiting review, riskiest first, with the machine's score and reasons
``POST /review/{item_id}``         ``{"decision": "approve" | "reject", "reviewer": ..., "note": ...}``: the
                                   item leaves the queue with that state (audited); 404 when it is not queued
``GET /review/audit?limit=``       the newest decisions, machine and human, oldest first
=================================  ============================================================================

Routes are sync (``def``): FastAPI runs them on its thread pool, off the event loop, as Redis calls block.
No ``from __future__ import annotations`` here: the routes' ``Store`` alias is local to the router factory,
and FastAPI must see the annotations evaluated.
"""

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field
from recstack.control.safety import STATE_NAMES, AuditEntry, ModerationStore, NotQueuedError

__all__ = ["ReviewDecisionIn", "ReviewOutcome", "ReviewQueue", "make_review_router"]


class QueuedItemOut(BaseModel):
    item_id: int
    score: float = Field(description="machine risk score, 0..1")
    reasons: list[str] = Field(description="the rules that fired: <rule>[:<detail>]")
    title: str | None
    queued_at_ms: int = Field(description="when the machine review queued it (ms since the epoch)")


class ReviewQueue(BaseModel):
    total: int = Field(description="items awaiting review")
    items: list[QueuedItemOut]


class ReviewDecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    reviewer: str = Field(min_length=1, max_length=128)
    note: str | None = Field(default=None, max_length=2000)


class ReviewOutcome(BaseModel):
    item_id: int
    state: str = Field(description="the item's moderation state now: approved / rejected")
    audit_id: str = Field(description="id of the decision in the audit stream")


class AuditEntryOut(BaseModel):
    audit_id: str
    item_id: int
    decision: str
    state: str
    reviewer: str
    note: str | None
    score: float | None
    reasons: list[str]
    at_ms: int


def _audit_out(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(audit_id=e.entry_id, item_id=e.item_id, decision=e.decision, state=STATE_NAMES[e.state],
                         reviewer=e.reviewer, note=e.note, score=e.score, reasons=list(e.reasons), at_ms=e.at_ms)  # fmt: skip


def make_review_router(get_store: Callable[..., ModerationStore]) -> APIRouter:
    """The ``/review`` routes; ``get_store`` is a FastAPI dependency that returns a ``ModerationStore``
    (it may take ``Request`` and other dependencies, and can be overridden with ``dependency_overrides``)."""
    router = APIRouter(prefix="/review", tags=["review"])
    Store = Annotated[ModerationStore, Depends(get_store)]

    @router.get("/queue", response_model=ReviewQueue, summary="Items awaiting review, riskiest first")
    def review_queue(store: Store, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReviewQueue:
        items = [QueuedItemOut(item_id=q.item_id, score=q.score, reasons=list(q.reasons), title=q.title,
                               queued_at_ms=q.queued_at_ms) for q in store.queue(limit)]  # fmt: skip
        return ReviewQueue(total=store.queue_size(), items=items)

    @router.post("/{item_id}", response_model=ReviewOutcome, summary="Approve or reject a queued item")
    def review_item(
        store: Store, item_id: Annotated[int, Path(ge=0)], body: ReviewDecisionIn
    ) -> ReviewOutcome:
        try:
            entry = store.decide(item_id, body.decision, body.reviewer, body.note)
        except NotQueuedError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return ReviewOutcome(item_id=item_id, state=STATE_NAMES[entry.state], audit_id=entry.entry_id)

    @router.get("/audit", response_model=list[AuditEntryOut], summary="The newest moderation decisions")
    def review_audit(
        store: Store,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        item_id: Annotated[int | None, Query(ge=0, description="only this item's decisions")] = None,
    ) -> list[AuditEntryOut]:
        return [_audit_out(e) for e in store.audit_log(limit, item_id)]

    return router
