"""The recommendation service (FastAPI). Routes stay thin; the work is in ``online.pipeline``.

Start with ``recstack serve`` (uvicorn, ``--workers N``) or ``uvicorn --factory recstack.online.app:create_app``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import datetime as dt
import logging
import os
import threading
import time
import time as _time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated

import numpy as np
import orjson
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from recstack.control.safety import ModerationStore
from recstack.features.bus import EventBus, open_bus
from recstack.features.redis_local import ensure_redis_url
from recstack.features.settings import Settings, load_settings
from recstack.models.artifact import ArtifactError
from recstack.online.contracts import (
    EventBatch,
    EventsAccepted,
    RecommendedItem,
    RecommendResponse,
    RequestContext,
    SimilarResponse,
)
from recstack.online.ctr_ranker import ChampionRanker, load_ranker_file
from recstack.online.lifecycle import DirectorySource, MlflowAliasSource, ReleaseManager, ReleaseSource
from recstack.online.metrics import ServiceMetrics
from recstack.online.pipeline import Recommender, ServingRelease
from recstack.online.ranking import ControlStage, Ranker
from recstack.online.realtime import RealtimeReader
from recstack.online.review import make_review_router
from recstack.online.spool import EventSpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from recstack.control.fraud import FraudGuard
    from recstack.control.pacing import ExposurePacer
    from recstack.control.safety import ModerationSync

log = logging.getLogger(__name__)


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

    def __init__(
        self, settings: Settings, manager: ReleaseManager, bus: EventBus | None, metrics: ServiceMetrics,
        spool: EventSpool, realtime: RealtimeReader | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.manager = manager
        self.bus = bus
        self.metrics = metrics
        self.spool = spool
        self.realtime = realtime
        self.champion: ChampionRanker | None = None  # the registry's ranker, when serving.ranker = ctr
        self.ranker_version: str | None = None
        self.next_ranker_check = 0.0
        self.pacer: ExposurePacer | None = None  # counts served items when pacing is enabled
        self.fraud_guard: FraudGuard | None = None  # request-time block check (fraud.check_requests)
        self.fraud_retry_at = 0.0  # after a failed check, skip checks until then (monotonic s)
        self.fraud_cache: dict[tuple[int, str | None, str | None], tuple[float, bool]] = {}  # -> (expires, blocked)
        self.fraud_url = ""  # the check's asyncio connection (opened on the event loop at first use)
        self.fraud_aclient: aioredis.Redis | None = None
        self.moderation: ModerationStore | None = None  # content-safety review store (safety.enabled)
        self.moderation_sync: ModerationSync | None = None

    @property
    def recommender(self) -> Recommender:
        rec = self.manager.recommender
        if rec is None:
            raise NotReadyError("no model loaded yet")
        return rec


FRAUD_CACHE_MAX = 100_000  # remembered request checks per worker (cleared when full)


async def _blocked(state: ServiceState, user_id: int, device_id: str | None, ip: str | None) -> bool:
    """Whether anti-fraud blocks this request's user, device or IP (False when Redis cannot say). Awaited
    next to the real-time read: the check never holds the event loop."""
    guard = state.fraud_guard
    now = _time.monotonic()
    if guard is None or now < state.fraud_retry_at:
        return False
    key = (user_id, device_id, ip)
    hit = state.fraud_cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    timeout = state.settings.serving.redis_timeout_ms / 1000
    try:
        if state.fraud_aclient is None:
            state.fraud_aclient = aioredis.Redis.from_url(
                state.fraud_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        check = guard.block_reasons_async(state.fraud_aclient, user_id, device_id, ip)
        blocked = bool(await asyncio.wait_for(check, timeout=4 * timeout))
    except Exception:  # Redis down: serve, and skip the check for redis_retry_s (the event side still screens)
        log.debug("anti-fraud check unavailable", exc_info=True)
        state.fraud_retry_at = _time.monotonic() + state.settings.serving.redis_retry_s
        return False
    ttl = state.settings.fraud.check_cache_s
    if ttl > 0:
        if len(state.fraud_cache) >= FRAUD_CACHE_MAX:
            state.fraud_cache.clear()
        state.fraud_cache[key] = (now + ttl, blocked)
    return blocked


def open_ctr_ranker(s: Settings) -> tuple[Ranker, ChampionRanker | None]:
    """The ``ctr`` fine ranker: ``serving.ranker_path`` if set, else the registry's alias (re-checked by the
    background loop). Fails the start with a clear error when there is none."""
    if s.serving.ranker_path is not None:
        return load_ranker_file(s.serving.ranker_path, s.serving.ranker_weights), None
    champion = ChampionRanker(s.mlflow_tracking_uri, s.serving.ranker_model, s.serving.alias,
                              s.home / "ranker-cache", s.serving.ranker_weights)  # fmt: skip
    try:
        champion.check()
    except Exception as exc:
        raise ArtifactError(f"serving.ranker = ctr: cannot load {champion.model_name}@{s.serving.alias} "
                            f"({exc}); train and promote one (recstack train / promote) or set ranker_path") from exc  # fmt: skip
    assert champion.ranker is not None
    return champion.ranker, champion


async def get_state(request: Request) -> ServiceState:  # async: FastAPI would run a sync one on a thread
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


def release_source(s: Settings) -> ReleaseSource:
    if s.serving.source == "mlflow":
        return MlflowAliasSource(s.mlflow_tracking_uri, s.serving.registered_model, s.serving.alias,
                                 s.serving_dir / "mlflow-cache")  # fmt: skip
    return DirectorySource(s.serving_dir)


def _background(state: ServiceState, stop: threading.Event) -> None:
    """Per worker, every second: re-send spooled events when the bus is back; refresh the item snapshot."""
    while not stop.wait(1.0):
        if state.bus is not None and state.spool.dir.exists():
            try:
                sent = state.spool.drain(lambda v, k: state.bus.publish(state.settings.bus.events_topic, v, k))  # type: ignore[union-attr]
                if sent:
                    log.info("re-published %d spooled events", sent)
                    state.metrics.events.inc(sent)
            except Exception as exc:  # still down: try again next tick
                log.debug("bus still unavailable: %s", exc)
        if state.realtime is not None:
            state.realtime.refresh_items()
        rec = state.manager.recommender
        if state.moderation_sync is not None and rec is not None:
            state.moderation_sync.refresh(rec.release.catalog)  # a review decision reaches serving here
        champion = state.champion
        if champion is not None and time.monotonic() >= state.next_ranker_check:
            state.next_ranker_check = time.monotonic() + state.settings.serving.reload_interval_s
            try:
                if champion.check():
                    state.ranker_version = champion.version
                    state.metrics.reloads.labels("ranker").inc()
                    log.info("ranker %s v%s swapped in", champion.model_name, champion.version)
            except Exception:  # refused: the current ranker keeps serving
                log.exception("ranker %s: the new champion was refused", champion.model_name)
                state.metrics.reloads.labels("ranker_refused").inc()


class ObserveMiddleware:
    """Pure ASGI middleware: latency and count of every request by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            app = scope.get("app")
            service: ServiceState | None = getattr(app.state, "service", None) if app is not None else None
            route = scope.get("route")
            if service is not None and route is not None:
                path = getattr(route, "path", scope.get("path", ""))
                service.metrics.observe_request(path, status[0], time.perf_counter() - start)


def create_app(settings: Settings | None = None, bus: EventBus | None = None,
               ranker: Ranker | None = None) -> FastAPI:  # fmt: skip
    """Build the app. ``settings`` default to the environment's; ``bus`` defaults to the configured one;
    ``ranker`` overrides the configured fine ranker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or load_settings()
        metrics = ServiceMetrics()
        redis_url = s.redis.url or ensure_redis_url(s)
        realtime = RealtimeReader.connect(redis_url, s.redis.key_prefix, s.serving.redis_timeout_ms,
                                          s.serving.redis_retry_s)  # fmt: skip
        pool = cf.ThreadPoolExecutor(max_workers=4 * max(len(s.serving.channels), 1), thread_name_prefix="recall")

        fine_ranker, champion = ranker, None
        if fine_ranker is None and s.serving.ranker == "ctr":
            fine_ranker, champion = open_ctr_ranker(s)
        pacer = None
        if s.pacing.enabled:  # PID exposure pacing: state shared by all workers in Redis
            import redis as redis_sync
            from recstack.control.pacing import pacer_from_settings
            from recstack.features.keys import RedisKey

            # record_exposures runs on the request path: a hung Redis may stall a request this long at most
            # (the background refresh reads every entity's state, ~30 ms for 1,000 entities, within it)
            timeout_s = max(0.25, s.serving.redis_timeout_ms / 1000)
            pacer = pacer_from_settings(redis_sync.Redis.from_url(redis_url, socket_timeout=timeout_s,
                                                                  socket_connect_timeout=timeout_s),
                                        RedisKey(s.redis.key_prefix), s.pacing)  # fmt: skip
            pacer.start_background_refresh()
        control: list[ControlStage] = [pacer] if pacer is not None else []

        moderation = sync = None
        if s.safety.enabled:  # content safety: item states from the review store (only approved are served)
            import redis as redis_sync
            from recstack.control.safety import ModerationSync
            from recstack.features.keys import RedisKey

            moderation = ModerationStore(redis_sync.Redis.from_url(redis_url, socket_timeout=10),
                                         RedisKey(s.redis.key_prefix), s.safety)  # fmt: skip
            sync = ModerationSync(moderation)

        def build(release: ServingRelease) -> Recommender:
            if sync is not None:  # a new release serves only after its items have their review states
                try:
                    sync.refresh(release.catalog, force=True)
                except Exception:  # Redis down: the release's own states (refreshed in the background later)
                    log.warning("moderation states not applied to release %s", release.version, exc_info=True)
            return Recommender(release, s.serving, realtime=realtime, ranker=fine_ranker, pool=pool,
                               control=list(control))  # fmt: skip

        def on_event(kind: str, detail: str) -> None:
            metrics.reloads.labels(kind).inc()

        manager = ReleaseManager(release_source(s), build, s.serving.reload_interval_s, on_event)
        manager.load_initial()
        event_bus = bus
        if event_bus is None:
            event_bus = open_bus(s.bus.url or redis_url, s.bus, key_prefix=s.redis.key_prefix)
        state = ServiceState(s, manager, event_bus, metrics, EventSpool(s.spool_dir), realtime)
        state.champion = champion
        state.pacer = pacer
        state.moderation, state.moderation_sync = moderation, sync
        if s.fraud.enabled and s.fraud.check_requests:
            import redis as redis_sync
            from recstack.control.fraud import FraudGuard
            from recstack.features.keys import RedisKey

            timeout = s.serving.redis_timeout_ms / 1000
            state.fraud_url = redis_url
            state.fraud_guard = FraudGuard(redis_sync.Redis.from_url(redis_url, socket_timeout=timeout,
                                                                     socket_connect_timeout=timeout),
                                           RedisKey(s.redis.key_prefix), s.fraud)  # fmt: skip
        state.ranker_version = champion.version if champion is not None else getattr(fine_ranker, "version", None)
        state.next_ranker_check = time.monotonic() + s.serving.reload_interval_s
        app.state.service = state
        manager.start()
        stop = threading.Event()
        worker = threading.Thread(target=_background, args=(state, stop), name="service-background", daemon=True)
        worker.start()
        yield
        stop.set()
        manager.stop()
        worker.join(timeout=5)
        if pacer is not None:
            pacer.close()
        pool.shutdown(wait=False, cancel_futures=True)
        await realtime.aclose()
        if state.fraud_aclient is not None:
            await state.fraud_aclient.aclose()
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

    app.add_middleware(ObserveMiddleware)

    async def moderation_store(state: State) -> ModerationStore:
        if state.moderation is None:
            raise NotFoundError("content safety is disabled (safety.enabled = false)")
        return state.moderation

    app.include_router(make_review_router(moderation_store))

    @app.get("/recommend", response_model=RecommendResponse, summary="Top-k items for a user")
    async def recommend(
        state: State,
        request: Request,
        user_id: Annotated[int, Query(ge=0, description="user id (non-negative integer)")],
        k: Annotated[int | None, Query(ge=1, description="number of items; default from settings")] = None,
        page: Annotated[str | None, Query(max_length=64)] = None,
        device: Annotated[str | None, Query(max_length=64)] = None,
        city: Annotated[str | None, Query(max_length=64)] = None,
        time: Annotated[dt.datetime | None, Query(description="serve as of this time (ISO 8601); default now")] = None,
        q: Annotated[str | None, Query(max_length=200, description="optional keywords for the keyword channel")] = None,
        x_device_id: Annotated[str | None, Header(max_length=128, description="device id, for anti-fraud")] = None,
    ) -> Response:
        k = _checked_k(state, k)
        if time is None:
            time = dt.datetime.now(dt.UTC)
        elif time.tzinfo is None:
            time = time.replace(tzinfo=dt.UTC)
        rt = state.realtime
        started = _time.perf_counter()
        # the anti-fraud check and the real-time read: two round trips in flight together
        check = _blocked(state, user_id, x_device_id, request.client.host if request.client else None)
        if rt is not None:
            blocked, user_rt = await asyncio.gather(check, rt.read_user_async(user_id, int(time.timestamp() * 1000)))
        else:
            blocked, user_rt = await check, None
        redis_s = _time.perf_counter() - started
        if blocked and state.settings.fraud.blocked_response == "429":
            state.metrics.fallbacks.labels("blocked").inc()
            return JSONResponse({"detail": "too many requests: this client is blocked by anti-fraud"}, status_code=429)
        recommender = state.recommender
        context = RequestContext(page=page, device=device, city=city, time=time)
        m = state.metrics
        try:
            if blocked:  # non-personalised: nothing of the blocked actor's behaviour is used
                rec = recommender.fallback_only(user_id, k, context)
                rec.degraded = ["blocked"]
            else:
                rec = recommender.recommend(user_id, k, context, query=q, realtime=user_rt)
                rec.stages["features"] += redis_s
        except Exception:  # last resort: a valid request never gets a 5xx
            log.exception("recommend failed for user %s; serving the popularity fallback", user_id)
            m.errors.labels("recommend").inc()
            rec = recommender.fallback_only(user_id, k, context)
        if state.pacer is not None and rec.items:  # exposures of paced items (one pipelined INCRBY)
            try:
                state.pacer.record_exposures(np.fromiter((i.item_id for i in rec.items), np.int64, len(rec.items)))
            except Exception:  # Redis down: the counts miss this list; the request is still served
                log.warning("pacing: could not record exposures", exc_info=True)
                m.fallbacks.labels("pacing").inc()
        m.observe_recommendation(rec.stages, [(r.name, r.status, len(r.candidates)) for r in rec.channels])
        if rec.fallback and not blocked:
            m.fallbacks.labels("cold_start").inc()
        for reason in rec.degraded:
            m.fallbacks.labels(reason.split(":", 1)[0]).inc()
        # serialised directly (the route's response_model documents the shape; this skips re-validation)
        return Response(orjson.dumps({
            "user_id": user_id, "request_id": uuid.uuid4().hex, "variant": state.settings.serving.default_variant,
            "model_version": rec.model_version, "fallback": rec.fallback, "degraded": rec.degraded,
            "items": [{"item_id": i.item_id, "score": i.score, "channel": i.channel} for i in rec.items],
        }), media_type="application/json")  # fmt: skip

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
        except Exception as exc:  # the bus is down: spool to disk, re-sent by the background thread
            log.warning("event bus unavailable (%s): spooling %d events", exc, len(values))
            await run_in_threadpool(state.spool.append, values, keys)
            state.metrics.fallbacks.labels("bus").inc()
            state.metrics.spooled.inc(len(values))
            return EventsAccepted(accepted=len(values), topic=topic, spooled=len(values))
        state.metrics.events.inc(len(values))
        return EventsAccepted(accepted=len(values), topic=topic)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "worker": os.getpid()}  # which process of the service answered

    @app.get("/readyz", summary="Readiness: a model is loaded")
    async def readyz(state: State) -> dict[str, object]:
        rt = state.realtime
        return {"status": "ready", "model_version": state.recommender.release.version,
                "release": state.manager.ident, "reloads": state.manager.reloads,
                "ranker": state.recommender.ranker.name, "ranker_version": state.ranker_version,
                "redis": "ok" if rt is None or rt.healthy else "degraded"}  # fmt: skip

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(state: State) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
