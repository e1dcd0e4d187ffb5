"""The settings tree: one validated model with a section per stage.

Sources, highest priority first: keyword arguments, environment variables (``RECSTACK_`` prefix, ``__`` between
levels, e.g. ``RECSTACK_SPARK__MASTER=spark://host:7077``), the TOML file named by ``RECSTACK_CONFIG`` (see
``docs/recstack.example.toml``), then the embedded single-machine defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SparkSettings(BaseModel):
    """Spark session used by every offline job."""

    master: str = Field("local[*]", description="local[*] on one machine; spark://, yarn or k8s:// at scale")
    app_name: str = "recstack"
    driver_memory: str = "4g"
    java_options: str = Field(
        "-XX:+UseParallelGC",
        description="extra JVM options of the driver and the executors (spark.*.extraJavaOptions): the "
        "throughput collector suits batch jobs, which care about total time, not pauses",
    )
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings, passed as given")


class LakeSettings(BaseModel):
    """The Parquet event lake."""

    root: Path | None = Field(
        None, description="lake directory; default <home>/lake. s3a:// etc. on a cluster"
    )


class MlflowSettings(BaseModel):
    """Experiment tracking and model registry."""

    tracking_uri: str | None = Field(
        None, description="default sqlite:///<home>/mlflow.db; http://... at scale"
    )
    artifact_root: str | None = Field(None, description="default <home>/mlartifacts")
    experiment: str = "recstack"


class RedisSettings(BaseModel):
    """Online state store (real-time features, counters) and default event bus."""

    url: str | None = Field(
        None,
        description="redis://host:port/db. Unset: recstack starts a local redis-server under <home>/redis",
    )
    local_port: int = Field(6390, description="port of the local server recstack starts when url is unset")
    key_prefix: str = "recstack"


class BusSettings(BaseModel):
    """The event bus. The URL scheme picks the backend: redis:// (Streams) or kafka://host:port[,host:port]."""

    url: str | None = Field(None, description="unset: Redis Streams on the Redis above")
    events_topic: str = "events"
    claim_idle_ms: int = Field(
        30_000,
        ge=0,
        description="Redis Streams: a message unacknowledged this long is redelivered to the group",
    )
    kafka_session_timeout_ms: int = 10_000
    kafka_max_poll_interval_ms: int = 30_000


class RealtimeSettings(BaseModel):
    """The stream consumer that keeps the real-time window features in Redis (``features/realtime.py``)."""

    group: str = Field("realtime-features", description="consumer group on the events topic")
    consumer_name: str | None = Field(None, description="member name in the group; default <hostname>-<pid>")
    batch_size: int = Field(500, ge=1, description="most events polled and applied in one round trip")
    poll_timeout_s: float = Field(1.0, gt=0, description="longest wait of one poll when no event is ready")
    snapshot_interval_s: float = Field(
        5.0, ge=0, description="how often the item snapshot read by the service is rewritten (0: every batch)"
    )
    retention_slack_s: int = Field(
        3600,
        ge=0,
        description="events are kept this long beyond the 1-day lookback (trim and key TTL): reads stay exact "
        "for client clocks up to this far ahead",
    )
    dead_letter_max_len: int = Field(100_000, ge=1, description="malformed messages kept (approximately)")


ChannelKind = Literal["embedding", "item2item", "cooccur", "genre", "segment", "keyword", "trending", "fresh"]


class ChannelSettings(BaseModel):
    """One recall channel of the service: a named strategy with its share of the candidates and a deadline."""

    name: str = Field(description="reported as each item's channel and in the metrics")
    kind: ChannelKind = Field(description="the strategy (online/recall.py)")
    quota: int = Field(ge=1, description="most candidates this channel contributes after filtering")
    timeout_ms: float = Field(30.0, gt=0, description="a slower answer is dropped and counted as a timeout")
    parallel: bool | None = Field(
        None,
        description="run on the recall thread pool (concurrently, abandoned at its deadline) instead of in the "
        "request thread; default: the embedding channel when each worker has a spare core (FAISS releases the "
        "GIL, so its search overlaps the other channels), else none: the in-memory channels' thread hand-off "
        "would cost more than they do, and with no spare core the overlap only adds the hand-off",
    )
    enabled: bool = True

    def runs_in_pool(self, spare_cores: bool) -> bool:
        """Whether this channel runs on the recall pool, given whether each worker has a spare core."""
        return (self.kind == "embedding" and spare_cores) if self.parallel is None else self.parallel


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_channels() -> list[ChannelSettings]:
    return [
        ChannelSettings(name="faiss/user-embedding", kind="embedding", quota=200),
        ChannelSettings(name="item2item/recent", kind="item2item", quota=80),
        ChannelSettings(name="item2item/cooccur", kind="cooccur", quota=40),
        ChannelSettings(name="genre/interest", kind="genre", quota=60),
        ChannelSettings(name="segment/popular", kind="segment", quota=40),
        ChannelSettings(name="keyword/recent", kind="keyword", quota=30),
        ChannelSettings(name="trending/decayed", kind="trending", quota=40),
        ChannelSettings(name="fresh/cold-start", kind="fresh", quota=20),
    ]


class RerankSettings(BaseModel):
    """Re-rank for diversity and business rules."""

    window: int = Field(5, ge=1, description="sliding window of the genre-diversity rule")
    max_same_genre: int = Field(2, ge=1, description="most items of one primary genre within any window")
    fresh_bonus: float = Field(0.0, description="added to the fine-rank score of fresh items (business rule)")


class ServingSettings(BaseModel):
    """The FastAPI recommendation service."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(200, ge=1)
    recall_size: int = Field(300, ge=1, description="candidates the fine ranker scores per request (after pre-rank)")
    default_variant: str = "default"
    model_dir: Path | None = Field(None, description="serving artifact directory; default <home>/serving")
    source: Literal["release", "mlflow"] = Field(
        "release", description="release: <model_dir>/current; mlflow: the registered model's alias (champion)"
    )
    registered_model: str = Field("recstack-graphsage", description="registered model served when source=mlflow")
    alias: str = Field("champion", description="registry alias served when source=mlflow")
    reload_interval_s: float = Field(5.0, gt=0, description="how often a worker checks for a new release")
    channels: list[ChannelSettings] = Field(default_factory=default_channels)
    fresh_days: float = Field(30.0, gt=0, description="items first seen this recently are fresh (cold-start)")
    ranker: Literal["embedding", "mlp", "ctr"] = Field(
        "embedding",
        description="fine ranker: the recall model's score; an MLP ranker artifact; or ctr: the trained "
        "Wide&Deep / MoE ranker (the registry's alias, or ranker_path)",
    )
    ranker_path: Path | None = Field(
        None, description="mlp: state dict (untrained weights when unset); ctr: a ranker.pt (else the registry)"
    )
    ranker_model: Literal["widedeep", "moe"] = Field(
        "moe", description="ctr ranker served from the registry: recstack-ranker-<ranker_model> at `alias`"
    )
    ranker_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "like": 0.5},
        description="final score = sum of weight * log p(task) over the ranker's tasks (click, like)",
    )
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    redis_timeout_ms: float = Field(25.0, gt=0, description="socket timeout of the per-request Redis read")
    redis_retry_s: float = Field(2.0, ge=0, description="after a Redis failure, skip Redis this long")
    events_spool_dir: Path | None = Field(
        None, description="events the bus refused are kept here and re-sent; default <home>/spool"
    )

    @property
    def spare_cores(self) -> bool:
        """True when the machine has at least two cores per worker (``workers`` is set by ``recstack serve``):
        then a pool channel's search overlaps the request thread's work instead of taking its turn on a core."""
        return available_cores() >= 2 * self.workers

    @model_validator(mode="after")
    def _channels_valid(self) -> ServingSettings:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"serving.channels: duplicate channel names in {names}")
        return self


class DataSettings(BaseModel):
    """How raw sources are turned into events."""

    impressions_per_request: int = Field(
        5, ge=1, description="slate size simulated around each MovieLens rating (1 consumed + n-1 not)"
    )
    seed: int = 42


class JobSettings(BaseModel):
    """Parameters of the offline Spark jobs (samples, features, sessions, graphs)."""

    attribution_window_s: int = Field(1800, ge=1, description="a click counts for an impression this long after it")
    session_gap_s: int = Field(
        1800, ge=1, le=86400, description="inactivity that closes a session (at most a day)"
    )
    graph_half_life_days: float = Field(14.0, gt=0, description="half-life of recency-decayed edge weights")
    cooccurrence_window: int = Field(3, ge=1, description="item pairs at most this far apart in a session")
    item_neighbors_max: int = Field(200, ge=1, description="degree cap of the item-item co-occurrence graph")
    user_user_degree: int = Field(20, ge=1, description="degree cap of the user-user attribute graph")
    vocab_max: int = Field(10_000, ge=1, description="largest vocabulary kept in the feature statistics")
    broadcast_rows_max: int = Field(
        5_000_000, ge=0, description="user / item point-in-time feature tables up to this many rows are broadcast to the samples"
    )


class PacedEntitySettings(BaseModel):
    """One paced item or item group (campaign): its daily exposure cap or goal and its target curve."""

    name: str = Field(description="id in the Redis keys and metrics, e.g. item:42 or campaign:spring")
    items: list[int] = Field(min_length=1, description="item ids whose exposures count towards this entity")
    daily_cap: int = Field(ge=1, description="exposures per pacing day: the cap, or the goal (guaranteed)")
    mode: Literal["cap", "guaranteed"] = Field(
        "cap",
        description="cap: throttle towards the curve and stop at the cap; guaranteed: boost (score "
        "multiplier > 1) an item behind the curve, damp one ahead of it, never stop it",
    )
    curve: list[tuple[float, float]] | None = Field(
        None, description="[hour, weight] points of the target curve (see pacing.curve); unset: pacing.curve"
    )


class PacingSettings(BaseModel):
    """PID exposure pacing (``control/pacing.py``); gains tuned by ``autotune_gains`` (docs/pacing.md)."""

    enabled: bool = False
    interval_s: int = Field(300, ge=10, description="control interval (s); must divide a day")
    tz_offset_s: int = Field(0, description="UTC offset (s) of the pacing day's midnight")
    kp: float = Field(1.0, ge=0, description="proportional gain: log pass rate per interval behind")
    ki: float = Field(0.015, ge=0, description="integral gain: log pass rate per interval·interval behind")
    kd: float = Field(0.1, ge=0, description="derivative gain: log pass rate per interval of error growth")
    integral_discount: float = Field(1.0, gt=0, le=1, description="integral multiplier per interval (1: off)")
    dead_band: float = Field(0.05, ge=0, description="errors up to this many intervals: no change at all")
    min_rate: float = Field(1e-3, gt=0, le=1, description="cap mode: smallest pass probability under the cap")
    max_boost: float = Field(3.0, ge=1, description="guaranteed mode: largest score multiplier")
    min_multiplier: float = Field(0.5, gt=0, le=1, description="guaranteed mode: smallest score multiplier")
    cache_ttl_s: float = Field(1.0, ge=0, description="a worker re-reads multipliers and counts this often")
    seed: int | None = Field(None, description="seed of the throttle draws; unset: from the OS")
    curve: list[tuple[float, float]] | None = Field(
        None,
        description="default target curve as [hour, weight] points: from each hour until the next point "
        "(wrapping at midnight) the cap is delivered at a rate proportional to the weight; unset: uniform",
    )
    entities: list[PacedEntitySettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid(self) -> PacingSettings:
        if 86400 % self.interval_s:
            raise ValueError(f"pacing.interval_s={self.interval_s} does not divide a day (86400 s)")
        names = [e.name for e in self.entities]
        if len(set(names)) != len(names):
            raise ValueError(f"pacing.entities: duplicate names in {names}")
        return self


class FraudActorLimits(BaseModel):
    """Anti-fraud limits of one kind of actor over event-time windows; these defaults are a user account's.

    A rate above its limit blocks the actor (``block_ttl_s``); the other rules flag the event (kept out of
    training and real-time features, the actor still served). A person reads: ~1 click / 2 s for a minute or
    / 6 s for an hour is far above their pace.
    """

    requests_per_min: int = Field(
        default=60, ge=1, description="distinct requests (slates) in 60 s; more blocks"
    )
    clicks_per_min: int = Field(default=30, ge=1, description="clicks in 60 s; more blocks")
    clicks_per_hour: int = Field(default=600, ge=1, description="clicks in 3600 s; more blocks")
    max_ctr: float = Field(
        default=0.5, gt=0, le=1, description="clicks / impressions over fraud.ctr_window_s above this flag"
    )
    ctr_min_impressions: int = Field(
        default=20, ge=1, description="impressions in the CTR window before the CTR rule applies"
    )
    max_flags_per_hour: int = Field(
        default=10,
        ge=1,
        description="click-rule flags (no impression, too fast, duplicate, CTR) in 3600 s; more blocks",
    )
    users_flag: int | None = Field(
        default=None,
        ge=2,
        description="distinct users seen in users_window_s from which the actor's events are flagged",
    )
    users_block: int | None = Field(
        default=None, ge=2, description="distinct users in users_window_s from which it is blocked"
    )
    users_window_s: int = Field(default=86400, ge=1, description="window of the distinct-users count")
    block_ttl_s: int = Field(
        default=86400, ge=1, description="how long (event time) a block lasts after its last cause"
    )


class FraudDeviceLimits(FraudActorLimits):
    """A device's limits: a phone or browser is personal; a family tablet sees 2-3 accounts a day, a farm
    device dozens."""

    users_flag: int | None = Field(default=3, ge=2, description="distinct users in users_window_s: flag")
    users_block: int | None = Field(default=4, ge=2, description="distinct users in users_window_s: block")


class FraudIpLimits(FraudActorLimits):
    """An IP's limits: households and carrier NAT put many people behind one IP, so higher limits, shorter
    blocks, and never a block for its user count alone (flag only)."""

    requests_per_min: int = Field(
        default=300, ge=1, description="distinct requests (slates) in 60 s; more blocks"
    )
    clicks_per_min: int = Field(default=150, ge=1, description="clicks in 60 s; more blocks")
    clicks_per_hour: int = Field(default=3000, ge=1, description="clicks in 3600 s; more blocks")
    ctr_min_impressions: int = Field(default=100, ge=1, description="impressions before the CTR rule applies")
    max_flags_per_hour: int = Field(default=50, ge=1, description="click-rule flags in 3600 s; more blocks")
    users_flag: int | None = Field(default=50, ge=2, description="distinct users in users_window_s: flag")
    users_window_s: int = Field(default=3600, ge=1, description="window of the distinct-users count")
    block_ttl_s: int = Field(default=3600, ge=1, description="how long (event time) a block lasts")


class FraudSettings(BaseModel):
    """Real-time anti-fraud (``control/fraud.py``): sliding-window rules per user, device and IP in Redis.

    Windows run on event time (the event's ``ts``), so a replayed log is judged as it was live.
    """

    enabled: bool = True
    user: FraudActorLimits = Field(default_factory=FraudActorLimits)
    device: FraudDeviceLimits = Field(default_factory=FraudDeviceLimits)
    ip: FraudIpLimits = Field(default_factory=FraudIpLimits)
    impression_window_s: int = Field(
        default=1800,
        ge=1,
        description="a click needs an impression of its item (same user, or same request) this recently",
    )
    min_click_delay_ms: int = Field(
        default=500,
        ge=0,
        description="a click sooner than this after its impression is flagged (faster than a human)",
    )
    duplicate_click_window_s: int = Field(
        default=86400,
        ge=1,
        description="a second click of the same user on the same item within this is flagged",
    )
    event_id_ttl_s: int = Field(
        default=86400, ge=1, description="an event_id seen again within this is a replay (flagged)"
    )
    ctr_window_s: int = Field(default=3600, ge=60, description="window of the abnormal-CTR rule")
    propagate_device_block: bool = Field(
        default=True,
        description="a blocked device also blocks the accounts seen on it (device users_window_s)",
    )
    blocked_response: Literal["fallback", "429"] = Field(
        default="fallback",
        description="what the service gives a blocked actor: non-personalised results, or HTTP 429",
    )
    check_requests: bool = Field(
        default=True,
        description="/recommend checks the user, X-Device-Id and client IP against blocks (one Redis round trip)",
    )
    check_cache_s: float = Field(
        default=1.0, ge=0,
        description="each worker remembers a (user, device, IP) check's answer this long, so a new block takes "
        "effect within it; 0 asks Redis on every request",
    )
    audit_max_len: int = Field(
        default=1_000_000, ge=1, description="quarantined events kept in the audit stream (approx.)"
    )
    blocklist_refresh_s: float = Field(
        default=60.0, ge=0, description="how often the published blocklist pointer is re-read"
    )


class SafetySettings(BaseModel):
    """Content safety (``control/safety.py``): the machine review of items (high recall: anything doubtful goes
    to a human), the review queue, and the moderation states in Redis that serving applies to its catalog."""

    enabled: bool = True
    banned_words: list[str] = Field(
        default_factory=lambda: ["porn", "porno", "hentai", "kill yourself", "child abuse"],
        description="words / phrases of the banned_word rule (whole words, after leetspeak and obfuscation "
        "normalisation: p0rn, p.o.r.n, pooorn)",
    )
    # fmt: off
    suspicious_words: list[str] = Field(
        default_factory=lambda: ["sex", "xxx", "nude", "naked", "nsfw", "escort", "onlyfans", "casino",
                                 "betting", "viagra", "cocaine", "heroin", "gore", "crypto", "giveaway",
                                 "free money", "click here"],
        description="words / phrases of the suspicious_word rule (same matching): sent to review (xxx is a "
        "film title too)",
    )
    # fmt: on
    reject_rules: list[str] = Field(
        default_factory=lambda: ["banned_word"],
        description="rules that reject an item without review (control/safety.py SafetyRule); [] queues all",
    )
    queue_score: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="risk score (sum of the fired rules' weights, at most 1) from which an item waits for "
        "review; below it the item is approved",
    )
    max_tags: int = Field(default=30, ge=1, description="more tags than this is tag stuffing (spam)")
    unreviewed: Literal["approved", "pending"] = Field(
        default="approved",
        description="state served for items the review never saw: approved (the catalog's default) or "
        "pending (strict: nothing is served before its review)",
    )
    refresh_s: float = Field(
        default=5.0, ge=0, description="how often a service worker checks the moderation version"
    )
    audit_max_len: int = Field(
        default=1_000_000, ge=1, description="moderation decisions kept in the audit stream"
    )


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="RECSTACK_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    environment: Literal["development", "production"] = "development"
    home: Path = Field(Path(".recstack"), description="working directory for the lake, models, mlflow, redis")
    spark: SparkSettings = Field(default_factory=SparkSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    pacing: PacingSettings = Field(default_factory=PacingSettings)
    fraud: FraudSettings = Field(default_factory=FraudSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RECSTACK_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"RECSTACK_CONFIG={config_file} does not name a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        # Embedded defaults are for one machine; production must name its services explicitly.
        if self.environment == "production":
            missing = [
                name
                for name, value in (
                    ("redis.url", self.redis.url),
                    ("mlflow.tracking_uri", self.mlflow.tracking_uri),
                    ("lake.root", self.lake.root),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"environment=production needs explicit settings for: {', '.join(missing)}")
        return self

    # Derived locations ------------------------------------------------------------------------------
    @property
    def lake_root(self) -> Path:
        return Path(self.lake.root) if self.lake.root else self.home / "lake"

    @property
    def serving_dir(self) -> Path:
        return Path(self.serving.model_dir) if self.serving.model_dir else self.home / "serving"

    @property
    def spool_dir(self) -> Path:
        return Path(self.serving.events_spool_dir) if self.serving.events_spool_dir else self.home / "spool"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> str:
        return self.mlflow.artifact_root or str((self.home / "mlartifacts").resolve())


def load_settings(**overrides: Any) -> Settings:
    """Build the settings tree from all sources; ``overrides`` win (used by the CLI and tests)."""
    return Settings(**overrides)
