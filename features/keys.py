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
    FEATURE_STATS = "feature_stats"
    USER_FEATURES = "user_features"
    ITEM_FEATURES = "item_features"
    SESSIONS = "sessions"
    GRAPH_DAILY = "graph_daily"
    GRAPHS = "graphs"


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
