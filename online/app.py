"""The recommendation service (FastAPI). Routes stay thin; the work is in ``online.pipeline``.

Start with ``recstack serve`` (uvicorn, ``--workers N``) or ``uvicorn --factory recstack.online.app:create_app``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from recstack.features.bus import EventBus, open_bus
from recstack.features.redis_local import ensure_redis_url
from recstack.features.settings import Settings, load_settings
from recstack.offline.jobs.train import current_release
from recstack.online.contracts import (
    EventBatch,
    EventsAccepted,
    RecommendedItem,
    RecommendResponse,
    RequestContext,
    SimilarResponse,
)
from recstack.online.metrics import ServiceMetrics
from recstack.online.pipeline import Recommender, ServingRelease


class ServiceError(Exception):
    """A domain error that carries its HTTP status."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotReadyError(ServiceError):
    status_code = 503


class BusUnavailableError(ServiceError):
    status_code = 503


class NotFoundError(ServiceError):
    status_code = 404


class ServiceState:
    """Everything the routes need, opened once in the lifespan."""

    def __init__(self, settings: Settings, recommender: Recommender, bus: EventBus | None) -> None:
        self.settings = settings
        self.recommender = recommender
        self.bus = bus
        self.metrics = ServiceMetrics()


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReadyError("service is starting: no model loaded yet")
    return state  # type: ignore[no-any-return]


State = Annotated[ServiceState, Depends(get_state)]


def _checked_k(state: ServiceState, k: int | None) -> int:
    """``k`` or the default, refused with a 422 above ``serving.max_k``."""
    limit = state.settings.serving.max_k
    k = k or state.settings.serving.default_k
    if k > limit:
        raise RequestValidationError(
            [{"loc": ("query", "k"), "msg": f"k must be <= {limit}", "type": "value_error"}]
        )
    return k


def create_app(settings: Settings | None = None, bus: EventBus | None = None) -> FastAPI:
    """Build the app. ``settings`` default to the environment's; ``bus`` defaults to the configured one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or load_settings()
        release = ServingRelease.load(current_release(s.serving_dir))
        event_bus = bus
        if event_bus is None:
            event_bus = open_bus(s.bus.url or ensure_redis_url(s), s.bus, key_prefix=s.redis.key_prefix)
        app.state.service = ServiceState(s, Recommender(release, s.serving.recall_size), event_bus)
        yield
        if bus is None and event_bus is not None:
            event_bus.close()

    app = FastAPI(
        title="recstack",
        description="Recommendations (recall → rank → control) and event intake.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p not in ("query", "body")), "message": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors[:5])
        return JSONResponse(
            status_code=422, content={"error": "invalid_request", "message": summary, "errors": errors}
        )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"error": type(exc).__name__, "message": exc.message}
        )

    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        service: ServiceState | None = getattr(request.app.state, "service", None)
        route = request.scope.get("route")
        if service is not None and route is not None:
            path = getattr(route, "path", request.url.path)
            service.metrics.latency.labels(path).observe(time.perf_counter() - start)
            service.metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.get("/recommend", response_model=RecommendResponse, summary="Top-k items for a user")
    async def recommend(
        state: State,
        user_id: Annotated[int, Query(ge=0, description="user id (non-negative integer)")],
        k: Annotated[int | None, Query(ge=1, description="number of items; default from settings")] = None,
        page: str | None = None,
        device: str | None = None,
        city: str | None = None,
    ) -> RecommendResponse:
        k = _checked_k(state, k)
        rec = state.recommender.recommend(user_id, k, RequestContext(page=page, device=device, city=city))
        for item in rec.items:
            state.metrics.candidates.labels(item.channel).inc()
        if rec.fallback:
            state.metrics.fallbacks.labels("cold_start").inc()
        return RecommendResponse(
            user_id=user_id,
            request_id=uuid.uuid4().hex,
            variant=state.settings.serving.default_variant,
            model_version=rec.model_version,
            fallback=rec.fallback,
            items=[RecommendedItem(item_id=i.item_id, score=i.score, channel=i.channel) for i in rec.items],
        )

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse, summary="Items similar to an item")
    async def similar(
        state: State,
        item_id: Annotated[int, Path(ge=0, description="item id (non-negative integer)")],
        k: Annotated[int | None, Query(ge=1, description="number of items; default from settings")] = None,
    ) -> SimilarResponse:
        k = _checked_k(state, k)
        release = state.recommender.release
        try:
            items = release.similar(item_id, k)
        except KeyError:
            raise NotFoundError(f"item {item_id} is not in model {release.version}") from None
        return SimilarResponse(
            item_id=item_id, model_version=release.version,
            items=[RecommendedItem(item_id=c.item_id, score=c.score, channel=c.channel) for c in items],
        )  # fmt: skip

    @app.post("/events", response_model=EventsAccepted, status_code=202, summary="Publish a batch of events")
    async def post_events(state: State, batch: EventBatch) -> EventsAccepted:
        if state.bus is None:
            raise BusUnavailableError("event bus is not configured")
        topic = state.settings.bus.events_topic
        values = [e.to_json_bytes() for e in batch.events]
        keys = [str(e.user_id).encode() for e in batch.events]
        try:
            await run_in_threadpool(state.bus.publish, topic, values, keys)
        except Exception as exc:  # the bus client raises many types; the caller needs a clear 503
            raise BusUnavailableError(f"event bus unavailable, nothing was published: {exc}") from exc
        state.metrics.events.inc(len(values))
        return EventsAccepted(accepted=len(values), topic=topic)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: a model is loaded")
    async def readyz(state: State) -> dict[str, str]:
        return {"status": "ready", "model_version": state.recommender.release.version}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(state: State) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
