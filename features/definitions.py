"""The feature set, declared once: what each feature is, its kind, and the pure-Python form of each transform.

Spark computes these offline (``offline/jobs/features.py``, ``offline/jobs/samples.py``) and the online service
computes the same names from Redis (online issue). The scalar transforms below (age bucket, zip prefix, hour,
weekday) are the single definition; the Spark expressions in ``features/spark_exprs.py`` are tested against
them for parity. The crosses of the wide part are declared here and hashed by the ranker's encoder.

Point-in-time rules:

* **real-time window features** of a sample at time ``t`` count the entity's events with ``t - w <= ts < t``:
  an event at or after the sample's own timestamp is never seen;
* **daily snapshot features** (activity statistics, item popularity and rating) of a sample on date ``D`` are
  the state at 00:00 UTC of ``D``, built from events of dates ``< D``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import xxhash

# -- user ---------------------------------------------------------------------------------------------------
AGE_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
"""Age bucket edges (MovieLens-1M groups): bucket 0 = unknown, 1 = under 18, ..., 7 = 56 and over."""
ZIP_PREFIX_LEN = 3
UNKNOWN = "unknown"


def age_bucket(age: int | None) -> int:
    """Bucket index of ``age``: 0 unknown, then 1 + the number of edges <= age."""
    if age is None or age <= 0:
        return 0
    return 1 + bisect.bisect_right(AGE_EDGES, age)


def zip_prefix(zip_code: str | None) -> str:
    """First ``ZIP_PREFIX_LEN`` characters of a zip code, upper-cased; ``unknown`` when missing or too short."""
    if not zip_code or len(zip_code.strip()) < ZIP_PREFIX_LEN:
        return UNKNOWN
    return zip_code.strip()[:ZIP_PREFIX_LEN].upper()


# -- context ------------------------------------------------------------------------------------------------
def hour_of_day(ts: dt.datetime) -> int:
    """UTC hour 0-23."""
    return ts.astimezone(dt.UTC).hour


def weekday(ts: dt.datetime) -> int:
    """UTC weekday, Monday = 0 ... Sunday = 6."""
    return ts.astimezone(dt.UTC).weekday()


_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday


def hour_of_day_ms(ts_ms: np.ndarray) -> np.ndarray:
    """``hour_of_day`` of many instants at once: (n,) int64 Unix milliseconds -> (n,) int8 UTC hours 0-23."""
    return (np.floor_divide(ts_ms, _MS_PER_HOUR) % 24).astype(np.int8)


def weekday_ms(ts_ms: np.ndarray) -> np.ndarray:
    """``weekday`` of many instants at once: (n,) int64 Unix milliseconds -> (n,) int8, Monday = 0."""
    return ((np.floor_divide(ts_ms, _MS_PER_DAY) + _EPOCH_WEEKDAY) % 7).astype(np.int8)


# -- real-time windows --------------------------------------------------------------------------------------
class Entity(StrEnum):
    USER = "user"
    ITEM = "item"


class Counted(StrEnum):
    CLICK = "click"
    IMPRESSION = "impression"


@dataclass(frozen=True)
class WindowFeature:
    """Count of ``counted`` events of the sample's ``entity`` with ``t - window_s <= ts < t``."""

    name: str
    entity: Entity
    counted: Counted
    window_s: int


WINDOW_FEATURES: tuple[WindowFeature, ...] = (
    WindowFeature("user_clicks_30m", Entity.USER, Counted.CLICK, 1800),
    WindowFeature("user_clicks_1h", Entity.USER, Counted.CLICK, 3600),
    WindowFeature("user_clicks_1d", Entity.USER, Counted.CLICK, 86400),
    WindowFeature("item_exposures_1h", Entity.ITEM, Counted.IMPRESSION, 3600),
    WindowFeature("item_exposures_1d", Entity.ITEM, Counted.IMPRESSION, 86400),
    WindowFeature("item_clicks_1h", Entity.ITEM, Counted.CLICK, 3600),
    WindowFeature("item_clicks_1d", Entity.ITEM, Counted.CLICK, 86400),
)
RECENT_ITEMS = "user_recent_items"
RECENT_ITEMS_K = 10
"""``user_recent_items``: the user's last ``RECENT_ITEMS_K`` clicked items with ``t - 1 day <= ts < t``, newest
first (a click repeated is listed each time)."""
RECENT_ITEMS_WINDOW_S = 86400
MAX_LOOKBACK_S = max([w.window_s for w in WINDOW_FEATURES] + [RECENT_ITEMS_WINDOW_S])
"""The furthest back any real-time feature looks: a day's features need the previous day's events."""


# -- hashed crosses for the wide part -----------------------------------------------------------------------
SPARK_XXHASH_SEED = 42  # the seed of Spark's xxhash64


@dataclass(frozen=True)
class Cross:
    """A hashed cross of two categorical features (the second may be multi-valued: one key per value).

    Crosses are not stored in the samples: the ranker's encoder hashes them from the fields' vocabulary codes
    (``models.ctr.CtrEncoder.encode``, the one function training and serving both call), so a cross never
    disagrees with the vocabularies of the model that uses it.
    """

    left: str
    right: str

    @property
    def name(self) -> str:
        return f"{self.left}_x_{self.right}"


CROSSES: tuple[Cross, ...] = (
    Cross("user_id", "genres"),
    Cross("item_id", "gender"),
    Cross("item_id", "age_bucket"),
    Cross("item_id", "occupation"),
    Cross("gender", "genres"),
    Cross("age_bucket", "genres"),
    Cross("device", "hour"),
)


def spark_xxhash64(text: str) -> int:
    """Spark's ``xxhash64`` of a string: signed 64-bit XXH64 of its UTF-8 bytes, seed 42."""
    h = xxhash.xxh64_intdigest(text.encode("utf-8"), seed=SPARK_XXHASH_SEED)
    return h - (1 << 64) if h >= 1 << 63 else h


# -- the feature table --------------------------------------------------------------------------------------
class Kind(StrEnum):
    CATEGORICAL = "categorical"  # one id from a vocabulary
    MULTI = "multi"  # several ids (multi-hot)
    DENSE = "dense"  # a number, normalised with the persisted statistics
    SEQUENCE = "sequence"  # an ordered list of item ids
    HASHED = "hashed"  # hashed cross indices (models.ctr.hash_cross), computed when encoding


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    group: str  # user / item / context / realtime / cross
    kind: Kind
    doc: str
    log1p: bool = False  # dense counts are log1p-transformed before normalisation


FEATURES: tuple[FeatureSpec, ...] = (
    # user (profile + activity as of 00:00 of the sample's date)
    FeatureSpec("user_id", "user", Kind.CATEGORICAL, "the user id"),
    FeatureSpec("age_bucket", "user", Kind.CATEGORICAL, "age_bucket(age): 0 unknown, 1..7"),
    FeatureSpec("gender", "user", Kind.CATEGORICAL, "M / F / unknown"),
    FeatureSpec("occupation", "user", Kind.CATEGORICAL, "occupation name or unknown"),
    FeatureSpec("zip_prefix", "user", Kind.CATEGORICAL, "first 3 characters of the zip code"),
    FeatureSpec("user_impressions", "user", Kind.DENSE, "impressions before the date", log1p=True),
    FeatureSpec("user_clicks", "user", Kind.DENSE, "clicks before the date", log1p=True),
    FeatureSpec("user_ctr", "user", Kind.DENSE, "(clicks + 1) / (impressions + 10) before the date"),
    FeatureSpec("user_ratings", "user", Kind.DENSE, "ratings before the date", log1p=True),
    FeatureSpec("user_avg_rating", "user", Kind.DENSE, "mean rating before the date (3.0 when none)"),
    FeatureSpec("user_active_days", "user", Kind.DENSE, "days with any event before the date", log1p=True),
    # item (profile + statistics as of 00:00 of the sample's date)
    FeatureSpec("item_id", "item", Kind.CATEGORICAL, "the item id"),
    FeatureSpec("genres", "item", Kind.MULTI, "genre names (multi-hot)"),
    FeatureSpec(
        "item_impressions", "item", Kind.DENSE, "impressions before the date (popularity)", log1p=True
    ),
    FeatureSpec("item_clicks", "item", Kind.DENSE, "clicks before the date (popularity)", log1p=True),
    FeatureSpec("item_ctr", "item", Kind.DENSE, "(clicks + 1) / (impressions + 10) before the date"),
    FeatureSpec("item_ratings", "item", Kind.DENSE, "ratings before the date", log1p=True),
    FeatureSpec("item_avg_rating", "item", Kind.DENSE, "mean rating before the date (3.0 when none)"),
    FeatureSpec(
        "item_age_days", "item", Kind.DENSE, "days since first seen in the log (0 if new)", log1p=True
    ),
    FeatureSpec("release_year", "item", Kind.CATEGORICAL, "release year (0 unknown)"),
    FeatureSpec("item_years_since_release", "item", Kind.DENSE, "years from release to the date"),
    # context (from the sample itself)
    FeatureSpec("hour", "context", Kind.CATEGORICAL, "UTC hour of the impression"),
    FeatureSpec("weekday", "context", Kind.CATEGORICAL, "UTC weekday, Monday = 0"),
    FeatureSpec("page", "context", Kind.CATEGORICAL, "page of the request"),
    FeatureSpec("slot", "context", Kind.CATEGORICAL, "position in the slate"),
    FeatureSpec("device", "context", Kind.CATEGORICAL, "device type"),
    # real-time (as of the sample's timestamp)
    *(
        FeatureSpec(
            w.name,
            "realtime",
            Kind.DENSE,
            f"{w.counted}s of the {w.entity} in the last {w.window_s} s",
            log1p=True,
        )
        for w in WINDOW_FEATURES
    ),  # fmt: skip
    FeatureSpec(
        RECENT_ITEMS, "realtime", Kind.SEQUENCE, "last 10 clicked items in the last day, newest first"
    ),
    # wide part
    FeatureSpec(
        "crosses",
        "cross",
        Kind.HASHED,
        "hashed crosses, computed by the ranker's encoder (not stored): "
        + ", ".join(c.name for c in CROSSES),
    ),
)
FEATURES_BY_NAME = {f.name: f for f in FEATURES}
DENSE_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == Kind.DENSE)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == Kind.CATEGORICAL)


def _definitions_digest() -> str:
    text = repr((AGE_EDGES, ZIP_PREFIX_LEN, WINDOW_FEATURES, RECENT_ITEMS_K, RECENT_ITEMS_WINDOW_S, CROSSES,
                 FEATURES))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


FEATURE_SET_VERSION = _definitions_digest()
"""A fingerprint of the definitions above; persisted with every feature output and its statistics."""
