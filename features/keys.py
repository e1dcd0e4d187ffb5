"""Column names, lake paths and Redis key builders: the one place every stage takes them from."""

from __future__ import annotations


class Col:
    """Column names of the lake tables (events, profiles, samples, quarantine)."""

    EVENT_ID = "event_id"
    EVENT_TYPE = "event_type"
    TS = "ts"
    EVENT_DATE = "event_date"
    USER_ID = "user_id"
    ITEM_ID = "item_id"
    REQUEST_ID = "request_id"
    VALUE = "value"
    LABEL = "label"
    PAGE = "page"
    SLOT = "slot"
    DEVICE = "device"
    CITY = "city"
    VARIANT = "variant"
    DEVICE_ID = "device_id"
    IP = "ip"

    # profiles
    AGE = "age"
    GENDER = "gender"
    OCCUPATION = "occupation"
    ZIP_CODE = "zip_code"
    TITLE = "title"
    RELEASE_DATE = "release_date"
    GENRES = "genres"
    TAGS = "tags"

    # samples
    CLICK = "click"
    LIKE = "like"
    CLICK_TS = "click_ts"

    # quarantine
    SOURCE = "source"
    RECORD = "record"
    REASON = "reason"
    INGESTED_AT = "ingested_at"


class LakeTable:
    """Table folders under the lake root."""

    EVENTS = "events"
    USERS = "users"
    ITEMS = "items"
    QUARANTINE = "quarantine"
    SAMPLES = "samples"
    USER_DAILY = "user_daily"
    ITEM_DAILY = "item_daily"
    USER_ASOF = "user_asof"
    """User features as of 00:00 of each day the user is active (``offline/jobs/training_table.py``)."""
    ITEM_ASOF = "item_asof"
    """Item features as of 00:00 of each day the item is active."""
    FEATURE_STATS = "feature_stats"
    USER_FEATURES = "user_features"
    ITEM_FEATURES = "item_features"
    SESSIONS = "sessions"
    GRAPH_DAILY = "graph_daily"
    GRAPHS = "graphs"
    FRAUD_BLOCKLIST = "fraud_blocklist"
    """Offline anti-fraud blocklists: ``fraud_blocklist/version=<v>/`` (``offline/jobs/fraud.py``)."""


class RedisKey:
    """Builders for every Redis key recstack writes; the prefix keeps tenants and tests apart."""

    def __init__(self, prefix: str = "recstack") -> None:
        self.prefix = prefix

    def stream(self, topic: str) -> str:
        """Redis Stream that carries one event-bus topic."""
        return f"{self.prefix}:stream:{topic}"

    def user_recent_items(self, user_id: int) -> str:
        return f"{self.prefix}:u:{user_id}:recent"

    def user_clicks(self, user_id: int) -> str:
        """Sorted set of the user's clicks of the last day, scored by ts (ms); ``features/realtime.py`` reads
        both the click windows and the recent items from it."""
        return f"{self.prefix}:u:{user_id}:clicks"

    def item_exposures(self, item_id: int) -> str:
        """Sorted set of the item's impressions of the last day, scored by ts (ms)."""
        return f"{self.prefix}:i:{item_id}:exp"

    def item_clicks(self, item_id: int) -> str:
        """Sorted set of the item's clicks of the last day, scored by ts (ms)."""
        return f"{self.prefix}:i:{item_id}:clicks"

    def active_items(self) -> str:
        """Sorted set of item ids scored by the ts (ms) of their newest event: the items of the snapshot."""
        return f"{self.prefix}:i:active"

    def item_snapshot(self) -> str:
        """The packed item real-time snapshot the service workers cache (binary value)."""
        return f"{self.prefix}:rt:item_snapshot"

    def item_snapshot_version(self) -> str:
        """Counter bumped on every item snapshot write; workers poll it to refresh their copy."""
        return f"{self.prefix}:rt:item_snapshot:version"

    def dead_letter(self, topic: str) -> str:
        """Redis Stream of the messages of ``topic`` that could not be decoded, each with its reason."""
        return f"{self.prefix}:dlq:{topic}"

    def pacing_state(self, entity: str) -> str:
        """Hash of one paced entity's PID state (``control/pacing.py``): interval, day, integral, output, ..."""
        return f"{self.prefix}:pace:{entity}:state"

    def pacing_exposures(self, entity: str, day: int) -> str:
        """Counter (INCRBY) of the paced entity's exposures on pacing day ``day`` (days since the epoch)."""
        return f"{self.prefix}:pace:{entity}:exp:{day}"

    def pacing_step_lock(self, interval: int) -> str:
        """SET NX lock of the one worker that steps every pacing controller at global interval ``interval``."""
        return f"{self.prefix}:pace:lock:{interval}"

    # anti-fraud (control/fraud.py); kind is user / device / ip ----------------------------------------------
    def fraud_actor(self, kind: str, actor_id: str, series: str) -> str:
        """Sorted set of one anti-fraud series of an actor, scored by event time (ms): ``req`` (request ids by
        first impression), ``imp`` / ``clk`` (impression / click event ids), ``users`` (user ids by last
        event), ``flags`` (event ids of its flagged clicks)."""
        return f"{self.prefix}:fraud:{kind}:{actor_id}:{series}"

    def fraud_blocked(self, kind: str, actor_id: str) -> str:
        """String ``<until ms (event time)> <reason>`` of a blocked actor; expires with the block."""
        return f"{self.prefix}:fraud:blocked:{kind}:{actor_id}"

    def fraud_user_shown(self, user_id: int) -> str:
        """Sorted set of the items shown to the user in the impression window, scored by the newest ts (ms)."""
        return f"{self.prefix}:fraud:user:{user_id}:shown"

    def fraud_user_clicked(self, user_id: int) -> str:
        """Sorted set of the items the user clicked in the duplicate-click window, scored by the newest ts (ms)."""
        return f"{self.prefix}:fraud:user:{user_id}:clicked"

    def fraud_request(self, request_id: str) -> str:
        """Hash item id → ts (ms) of the impressions of one request, kept for the impression window."""
        return f"{self.prefix}:fraud:req:{request_id}"

    def fraud_event(self, event_id: str) -> str:
        """Marker of an event_id already judged (SET NX): a second one is a replay."""
        return f"{self.prefix}:fraud:event:{event_id}"

    def fraud_blocklist(self, version: str) -> str:
        """Set of the actors (``user:<id>``, ``device:<id>``, ``ip:<addr>``) of one published blocklist."""
        return f"{self.prefix}:fraud:blocklist:{version}"

    def fraud_blocklist_current(self) -> str:
        """The version of the blocklist in force (a pointer switched atomically on publish)."""
        return f"{self.prefix}:fraud:blocklist:current"

    def fraud_audit(self) -> str:
        """Redis Stream of the quarantined (flagged or blocked) events with their verdicts."""
        return f"{self.prefix}:fraud:audit"

    # content safety (control/safety.py) --------------------------------------------------------------------
    def moderation_states(self) -> str:
        """Hash item id → moderation state code (``models/catalog.py``: APPROVED / PENDING / REJECTED)."""
        return f"{self.prefix}:mod:state"

    def moderation_version(self) -> str:
        """Counter bumped on every moderation state change; service workers poll it to re-apply the states."""
        return f"{self.prefix}:mod:version"

    def moderation_queue(self) -> str:
        """Sorted set of the item ids awaiting human review, scored by risk (highest first)."""
        return f"{self.prefix}:mod:queue"

    def moderation_findings(self) -> str:
        """Hash item id → JSON of the machine review (score, reasons, title, ts) of the queued items."""
        return f"{self.prefix}:mod:findings"

    def moderation_human(self) -> str:
        """Hash item id → JSON of the last human decision; machine re-reviews leave these items alone."""
        return f"{self.prefix}:mod:human"

    def moderation_audit(self) -> str:
        """Redis Stream of every moderation decision (machine and human) with its reasons."""
        return f"{self.prefix}:mod:audit"
