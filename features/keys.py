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
        return f"{self.prefix}:u:{user_id}:clicks"

    def item_exposures(self, item_id: int) -> str:
        return f"{self.prefix}:i:{item_id}:exp"
