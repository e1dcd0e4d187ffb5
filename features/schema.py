"""Data contracts: the event schema, the user / item profile tables and the quarantine table.

Defined once here and imported by every stage. Two views of the same contract:

* Arrow schemas (``EVENT_SCHEMA`` ...) for the Parquet lake and Spark;
* the pydantic ``Event`` for single records on the wire (``POST /events``, the event bus).

Both enforce the same rules (``EVENT_RULES``), so a record the API accepts is one ingestion accepts too.
Ids are non-negative 64-bit integers; a deployment with string ids maps them to integers at its edge.
Timestamps are UTC, millisecond precision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator
from recstack.features.keys import Col


class EventType(StrEnum):
    """What happened: an item was shown, clicked, rated, or liked."""

    IMPRESSION = "impression"
    CLICK = "click"
    RATING = "rating"
    LIKE = "like"


@dataclass(frozen=True)
class EventRules:
    """Bounds every event must satisfy, shared by the vectorised and the per-record validators."""

    rating_min: float = 0.5
    rating_max: float = 5.0
    positive_rating: float = 4.0  # a rating >= this is a positive (like) label
    ts_min: dt.datetime = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
    max_future: dt.timedelta = dt.timedelta(days=1)  # clock skew tolerated for client events
    max_id_len: int = 128


EVENT_RULES = EventRules()
EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

TS_TYPE = pa.timestamp("ms", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field(Col.EVENT_ID, pa.string(), nullable=False),
        pa.field(Col.EVENT_TYPE, pa.string(), nullable=False),
        pa.field(Col.TS, TS_TYPE, nullable=False),
        pa.field(Col.USER_ID, pa.int64(), nullable=False),
        pa.field(Col.ITEM_ID, pa.int64(), nullable=False),
        pa.field(Col.REQUEST_ID, pa.string()),
        pa.field(Col.VALUE, pa.float32()),  # the rating, for rating events
        pa.field(Col.LABEL, pa.int8()),  # explicit positive / negative label where the source has one
        pa.field(Col.PAGE, pa.string()),
        pa.field(Col.SLOT, pa.int16()),  # position in the shown list, 0-based
        pa.field(Col.DEVICE, pa.string()),  # device type: ios / android / web
        pa.field(Col.CITY, pa.string()),
        pa.field(Col.VARIANT, pa.string()),  # experiment variant that served the request
        pa.field(Col.DEVICE_ID, pa.string()),
        pa.field(Col.IP, pa.string()),
    ]
)
"""One row per event. The lake partitions it by ``event_date`` (UTC date of ``ts``)."""

USER_SCHEMA = pa.schema(
    [
        pa.field(Col.USER_ID, pa.int64(), nullable=False),
        pa.field(Col.AGE, pa.int16()),
        pa.field(Col.GENDER, pa.string()),
        pa.field(Col.OCCUPATION, pa.string()),
        pa.field(Col.ZIP_CODE, pa.string()),
        pa.field(Col.CITY, pa.string()),
    ]
)
"""User profile table. Every attribute is optional: MovieLens CSV data has no demographics."""

ITEM_SCHEMA = pa.schema(
    [
        pa.field(Col.ITEM_ID, pa.int64(), nullable=False),
        pa.field(Col.TITLE, pa.string()),
        pa.field(Col.RELEASE_DATE, pa.date32()),
        pa.field(Col.GENRES, pa.list_(pa.string())),
        pa.field(Col.TAGS, pa.list_(pa.string())),
    ]
)
"""Item profile table."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field(Col.SOURCE, pa.string(), nullable=False),  # file or stream the record came from
        pa.field(Col.RECORD, pa.string(), nullable=False),  # the raw record, as JSON
        pa.field(Col.REASON, pa.string(), nullable=False),
        pa.field(Col.INGESTED_AT, TS_TYPE, nullable=False),
    ]
)
"""Rejected records, kept with the reason so that nothing is silently dropped."""


class Event(BaseModel):
    """One event on the wire (API and bus). Same rules as ``validate_events``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=EVENT_RULES.max_id_len)
    event_type: EventType
    ts: dt.datetime = Field(description="UTC time of the event; naive values are read as UTC")
    user_id: int = Field(ge=0)
    item_id: int = Field(ge=0)
    request_id: str | None = Field(default=None, max_length=EVENT_RULES.max_id_len)
    value: float | None = Field(default=None, description="rating value for rating events")
    label: int | None = Field(default=None, ge=0, le=1)
    page: str | None = None
    slot: int | None = Field(default=None, ge=0, le=32767)
    device: str | None = None
    city: str | None = None
    variant: str | None = None
    device_id: str | None = None
    ip: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Event:
        ts = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        if ts < EVENT_RULES.ts_min or ts > now + EVENT_RULES.max_future:
            raise ValueError(f"ts {ts.isoformat()} is outside [{EVENT_RULES.ts_min.date()}, now + 1 day]")
        object.__setattr__(self, "ts", ts)
        if self.event_type == EventType.RATING:
            if self.value is None:
                raise ValueError("a rating event needs a value")
            if not EVENT_RULES.rating_min <= self.value <= EVENT_RULES.rating_max:
                raise ValueError(
                    f"rating {self.value} is outside [{EVENT_RULES.rating_min}, {EVENT_RULES.rating_max}]"
                )
            if self.label is None:
                object.__setattr__(self, "label", int(self.value >= EVENT_RULES.positive_rating))
        return self

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Event:
        return cls.model_validate_json(raw)

    def to_row(self) -> dict[str, Any]:
        """The event as a lake row (``EVENT_SCHEMA`` column names)."""
        return self.model_dump(mode="python")


def events_to_table(events: list[Event]) -> pa.Table:
    """Events as an Arrow table in ``EVENT_SCHEMA``."""
    return pa.Table.from_pylist([e.to_row() for e in events], schema=EVENT_SCHEMA)


@dataclass
class ValidationResult:
    """Split of a batch into valid events (``EVENT_SCHEMA`` table) and quarantined rows (``QUARANTINE_SCHEMA``)."""

    valid: pa.Table
    quarantined: pd.DataFrame

    @property
    def reasons(self) -> dict[str, int]:
        if self.quarantined.empty:
            return {}
        return {str(k): int(v) for k, v in self.quarantined[Col.REASON].value_counts().items()}


_LENIENT_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Boolean compute result → numpy bool, nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def event_reasons(
    table: pa.Table,
    known_users: np.ndarray | None = None,
    known_items: np.ndarray | None = None,
    now: dt.datetime | None = None,
) -> np.ndarray:
    """Per row, the first rule it breaks ('' where none): the single statement of the event rules.

    ``table`` has the ``EVENT_SCHEMA`` columns and types with nulls allowed (a value that could not be parsed
    is null). Rows referencing ids outside ``known_users`` / ``known_items`` (when given) are unknown.
    """
    now = now or dt.datetime.now(dt.UTC)
    n = table.num_rows
    reason = np.full(n, "", dtype=object)

    def flag(mask: np.ndarray, why: str) -> None:
        reason[mask & (reason == "")] = why

    eid = table[Col.EVENT_ID]
    eid_len = pc.utf8_length(eid)
    flag(~_mask(pc.greater(eid_len, 0)), "missing event_id")
    flag(_mask(pc.greater(eid_len, EVENT_RULES.max_id_len)), "event_id too long")
    flag(~_mask(pc.is_in(table[Col.EVENT_TYPE], value_set=pa.array(EVENT_TYPES))), "unknown event_type")
    flag(~_mask(pc.greater_equal(table[Col.USER_ID], 0)), "invalid user_id")
    flag(~_mask(pc.greater_equal(table[Col.ITEM_ID], 0)), "invalid item_id")
    ts = table[Col.TS]
    flag(_mask(pc.is_null(ts)), "invalid ts")
    lo = pa.scalar(EVENT_RULES.ts_min, TS_TYPE)
    hi = pa.scalar(now + EVENT_RULES.max_future, TS_TYPE)
    flag(_mask(pc.or_(pc.less(ts, lo), pc.greater(ts, hi))), "ts out of range")
    is_rating = _mask(pc.equal(table[Col.EVENT_TYPE], EventType.RATING.value))
    value = table[Col.VALUE]
    flag(is_rating & _mask(pc.is_null(value)), "rating without value")
    out_of_range = pc.or_(pc.less(value, EVENT_RULES.rating_min), pc.greater(value, EVENT_RULES.rating_max))
    flag(is_rating & _mask(out_of_range), "rating out of range")
    flag(~_mask(pc.or_(pc.is_null(table[Col.LABEL]), pc.is_in(table[Col.LABEL], value_set=pa.array([0, 1], pa.int8())))),
         "invalid label")  # fmt: skip
    flag(_mask(pc.less(table[Col.SLOT], 0)), "invalid slot")
    if known_users is not None:
        flag(
            ~_mask(pc.is_in(table[Col.USER_ID], value_set=pa.array(known_users, pa.int64()))),
            "unknown user_id",
        )
    if known_items is not None:
        flag(
            ~_mask(pc.is_in(table[Col.ITEM_ID], value_set=pa.array(known_items, pa.int64()))),
            "unknown item_id",
        )
    return reason


def quarantine_frame(
    rows: pd.DataFrame | None, reasons: np.ndarray | pd.Series, source: str, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Rejected ``rows`` (as the source gave them) with one reason each, in ``QUARANTINE_SCHEMA`` columns."""
    records = [] if rows is None else [orjson.dumps(r, default=str).decode() for r in rows.to_dict("records")]
    return pd.DataFrame(
        {
            Col.SOURCE: pd.Series([source] * len(records), dtype=object),
            Col.RECORD: pd.Series(records, dtype=object),
            Col.REASON: pd.Series(np.asarray(reasons, dtype=object), dtype=object),
            Col.INGESTED_AT: pd.Timestamp(now or dt.datetime.now(dt.UTC)).tz_convert("UTC"),
        }
    )


def _split(
    table: pa.Table, reason: np.ndarray, source: str, raw: pd.DataFrame | None, now: dt.datetime
) -> ValidationResult:
    bad = reason != ""
    valid = table.filter(pa.array(~bad))
    # A rating carries its like label explicitly: rating >= positive_rating, unless the source gave one.
    is_rating = pc.equal(valid[Col.EVENT_TYPE], EventType.RATING.value)
    derived = pc.cast(pc.greater_equal(valid[Col.VALUE], EVENT_RULES.positive_rating), pa.int8())
    label = pc.if_else(pc.and_(is_rating, pc.is_null(valid[Col.LABEL])), derived, valid[Col.LABEL])
    valid = valid.set_column(valid.schema.get_field_index(Col.LABEL), Col.LABEL, label).cast(EVENT_SCHEMA)
    rows = (raw[bad] if raw is not None else table.filter(pa.array(bad)).to_pandas()) if bad.any() else None
    quarantined = quarantine_frame(rows, reason[bad], source, now)
    return ValidationResult(valid=valid, quarantined=quarantined)


def validate_table(
    table: pa.Table,
    source: str,
    known_users: np.ndarray | None = None,
    known_items: np.ndarray | None = None,
) -> ValidationResult:
    """Validate typed events (``EVENT_SCHEMA`` columns, nulls allowed), e.g. from a generator or the bus."""
    now = dt.datetime.now(dt.UTC)
    table = table.select([f.name for f in EVENT_SCHEMA]).cast(_LENIENT_SCHEMA)
    return _split(table, event_reasons(table, known_users, known_items, now), source, None, now)


def validate_events(
    frame: pd.DataFrame,
    source: str,
    raw: pd.DataFrame | None = None,
    known_users: np.ndarray | None = None,
    known_items: np.ndarray | None = None,
) -> ValidationResult:
    """Validate candidate events parsed leniently from text (any column may hold junk).

    Values that do not parse become null and break the matching rule of ``event_reasons``. ``raw`` holds the
    rows as the source gave them; a quarantined record shows that (defaults to ``frame``). Never raises on a
    bad row.
    """
    now = dt.datetime.now(dt.UTC)

    def whole(col: str) -> pa.Array:
        num = pd.to_numeric(frame[col], errors="coerce")
        num = num.where(num % 1 == 0)
        return pa.array(num.astype("float64").to_numpy(), mask=num.isna().to_numpy()).cast(
            pa.int64(), safe=False
        )

    def text(col: str) -> pa.Array:
        s = frame[col]
        return pa.array(
            s.where(s.notna(), None).astype(object).map(lambda v: v if v is None else str(v)), pa.string()
        )

    value = pd.to_numeric(frame[Col.VALUE], errors="coerce").astype("float64")
    slot = pd.to_numeric(frame[Col.SLOT], errors="coerce")
    slot = slot.where((slot % 1 == 0) & (slot.abs() < 32768))
    label = pd.to_numeric(frame[Col.LABEL], errors="coerce")
    label = label.where(label.isin([0, 1]), -1).where(label.notna())
    ts = pd.to_datetime(frame[Col.TS], utc=True, errors="coerce")
    table = pa.table(
        {
            Col.EVENT_ID: text(Col.EVENT_ID),
            Col.EVENT_TYPE: text(Col.EVENT_TYPE),
            Col.TS: pa.array(ts.astype("datetime64[ms, UTC]")),
            Col.USER_ID: whole(Col.USER_ID),
            Col.ITEM_ID: whole(Col.ITEM_ID),
            Col.REQUEST_ID: text(Col.REQUEST_ID),
            Col.VALUE: pa.array(value.to_numpy(), mask=value.isna().to_numpy()).cast(pa.float32()),
            Col.LABEL: pa.array(label.fillna(0).to_numpy(), mask=label.isna().to_numpy()).cast(pa.int8()),
            Col.PAGE: text(Col.PAGE),
            Col.SLOT: pa.array(slot.fillna(0).to_numpy(), mask=slot.isna().to_numpy()).cast(pa.int16()),
            Col.DEVICE: text(Col.DEVICE),
            Col.CITY: text(Col.CITY),
            Col.VARIANT: text(Col.VARIANT),
            Col.DEVICE_ID: text(Col.DEVICE_ID),
            Col.IP: text(Col.IP),
        },
        schema=_LENIENT_SCHEMA,
    )
    reason = event_reasons(table, known_users, known_items, now)
    # A value present in the text but unparseable gets a precise reason instead of "missing".
    for col, parsed in ((Col.VALUE, value), (Col.SLOT, slot), (Col.LABEL, label)):
        unparsed = (frame[col].notna() & parsed.isna()).to_numpy()
        reason[unparsed] = f"invalid {col}"
    return _split(table, reason, source, raw if raw is not None else frame, now)


def empty_event_frame(n: int) -> pd.DataFrame:
    """A frame of ``n`` rows with every ``EVENT_SCHEMA`` column set to missing, for sources to fill in."""
    return pd.DataFrame({f.name: pd.Series([None] * n, dtype=object) for f in EVENT_SCHEMA})
