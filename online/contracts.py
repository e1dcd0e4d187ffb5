"""Records passed between online stages and the API's request / response models."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel, Field
from recstack.features.schema import Event


@dataclass(frozen=True, slots=True)
class RecallCandidate:
    """An item proposed by one recall channel, with that channel's score (higher is better)."""

    item_id: int
    score: float
    channel: str


@dataclass(frozen=True, slots=True)
class RankedItem:
    """An item in the final list: its score after ranking and the channel that recalled it."""

    item_id: int
    score: float
    channel: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where and when the request is served."""

    page: str | None = None
    device: str | None = None
    city: str | None = None
    time: dt.datetime | None = None


class RecommendedItem(BaseModel):
    item_id: int
    score: float
    channel: str = Field(description="recall channel that proposed the item")


class SimilarResponse(BaseModel):
    item_id: int
    model_version: str
    items: list[RecommendedItem]


class RecommendResponse(BaseModel):
    user_id: int
    request_id: str
    variant: str
    model_version: str
    fallback: bool = Field(description="true when the personalised path could not serve and a fallback did")
    degraded: list[str] = Field(
        default_factory=list,
        description="parts that failed and were replaced by their fallback: redis, channel:<name>:<timeout|error>, "
        "ranker, internal",
    )
    items: list[RecommendedItem]


class EventBatch(BaseModel):
    """A batch of events; the whole batch is rejected (nothing published) if any event is invalid."""

    events: list[Event] = Field(min_length=1, max_length=1000)


class EventsAccepted(BaseModel):
    accepted: int
    topic: str
    spooled: int = Field(0, description="events kept on local disk because the bus was down; re-sent later")
