"""Spark job: the training samples — labels, context and real-time point-in-time features.

Output ``samples/event_date=D`` (with ``user_asof`` / ``item_asof``, the training table of the ranking models), one row per impression of ``[start, end]`` (an impression logged twice is one
sample, the earliest), with:

* ``click``: 1 when the same user clicked the same item of the same request within ``attribution_window_s``
  after the impression (``t <= click_ts <= t + window``); duplicate clicks count once and ``click_ts`` is
  the first; late clicks after the range end (up to the window) are read and counted;
* ``like``: the label of the user's rating / like of that request's item (rating >= 4), null when none;
* context: ``page``, ``slot``, ``device``, ``city``, ``variant``, ``hour``, ``weekday``;
* the real-time window features of ``features.definitions`` as of the impression's timestamp: counts of
  events with ``t - w <= ts < t`` and the user's recent clicked items; nothing at or after ``t`` is seen.

The user and item features as of 00:00 of the sample's day are not copied onto every sample: the features
job writes them once per (entity, day) and readers join them on (id, ``event_date``)
(``offline/jobs/training_table.py``: the training table).

Plan: read events of ``[start - 1 day, end + late]``; shuffle a narrow projection of the impressions and clicks
(event hash, user, item, time) by item and compute the item windows of every impression of the range; shuffle
the events and those narrow results together by user, and compute dedup, attribution, likes and the user
windows, taking each kept impression's item windows from its result row (``offline/jobs/windows.py``, per
partition). Only the narrow columns make the item round trip; no driver-side collect of data. The user stage's
tasks write their samples themselves (``write_partitioned_arrow``: Arrow's Parquet writer, committed by the
driver from the paths the tasks return), so the output never goes back through the JVM.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from recstack.features.definitions import (
    MAX_LOOKBACK_S,
    RECENT_ITEMS,
    RECENT_ITEMS_K,
    RECENT_ITEMS_WINDOW_S,
    WINDOW_FEATURES,
    Counted,
    Entity,
    hour_of_day_ms,
    weekday_ms,
)
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EventType
from recstack.offline.jobs.common import arrow_schema, partitions_for, read_events, write_partitioned_arrow
from recstack.offline.jobs.windows import (
    dense_codes,
    first_match_within,
    first_per_group,
    group_max,
    recent_values,
    window_counts,
)

TS_MS = "ts_ms"
KIND = "kind"  # 0 impression, 1 click, 2 rating / like
HOUR = "hour"
WEEKDAY = "weekday"
USER_WINDOWS = [w for w in WINDOW_FEATURES if w.entity == Entity.USER]
ITEM_WINDOWS = [w for w in WINDOW_FEATURES if w.entity == Entity.ITEM]

CONTEXT_COLUMNS = [Col.PAGE, Col.SLOT, Col.DEVICE, Col.CITY, Col.VARIANT]
SAMPLE_COLUMNS = [
    Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID, Col.TS, *CONTEXT_COLUMNS, HOUR, WEEKDAY,
    Col.CLICK, Col.CLICK_TS, Col.LIKE,
    *[w.name for w in WINDOW_FEATURES], RECENT_ITEMS, Col.EVENT_DATE,
]  # fmt: skip
"""Columns of the ``samples`` table, in order."""

EVENT_HASH = "event_hash"  # xxhash64 of event_id: the tie-break between duplicate impressions
REQUEST_HASH = "request_hash"  # xxhash64 of request_id: the kernels group on integers, not strings
_ACT_FIELDS = [
    T.StructField(EVENT_HASH, T.LongType()),
    T.StructField(REQUEST_HASH, T.LongType()),
    T.StructField(Col.REQUEST_ID, T.StringType()),
    T.StructField(Col.USER_ID, T.LongType()),
    T.StructField(Col.ITEM_ID, T.LongType()),
    T.StructField(Col.TS, T.TimestampType()),
    T.StructField(TS_MS, T.LongType()),
    T.StructField(KIND, T.ByteType()),
    T.StructField(Col.LABEL, T.ByteType()),
    T.StructField(Col.PAGE, T.StringType()),
    T.StructField(Col.SLOT, T.ShortType()),
    T.StructField(Col.DEVICE, T.StringType()),
    T.StructField(Col.CITY, T.StringType()),
    T.StructField(Col.VARIANT, T.StringType()),
    T.StructField(Col.EVENT_DATE, T.DateType()),
]
RESULT = 3  # KIND of an item-result row in the user stage's input
_ITEM_WINDOW_FIELDS = [T.StructField(w.name, T.IntegerType()) for w in ITEM_WINDOWS]
_NARROW = [EVENT_HASH, Col.USER_ID, Col.ITEM_ID, TS_MS, KIND, Col.EVENT_DATE]
_ITEM_RESULT_SCHEMA = T.StructType(
    [f for f in _ACT_FIELDS if f.name in _NARROW and f.name != Col.EVENT_DATE] + _ITEM_WINDOW_FIELDS
)
_REQUIRED = {Col.USER_ID, Col.ITEM_ID, Col.TS, Col.EVENT_DATE} | {w.name for w in ITEM_WINDOWS}
_USER_STAGE_SCHEMA = T.StructType(
    [
        T.StructField(f.name, f.dataType, nullable=f.name not in _REQUIRED)
        for f in _ACT_FIELDS + _ITEM_WINDOW_FIELDS
        if f.name not in (EVENT_HASH, REQUEST_HASH, KIND, Col.LABEL)
    ]
    + [
        T.StructField(HOUR, T.ByteType(), nullable=False),
        T.StructField(WEEKDAY, T.ByteType(), nullable=False),
        T.StructField(Col.CLICK, T.ByteType(), nullable=False),
        T.StructField(Col.CLICK_TS, T.TimestampType()),
        T.StructField(Col.LIKE, T.ByteType()),
        *[T.StructField(w.name, T.IntegerType(), nullable=False) for w in USER_WINDOWS],
        T.StructField(RECENT_ITEMS, T.ArrayType(T.LongType(), containsNull=False), nullable=False),
    ]
)
"""The samples as the user stage returns them. The ids, time and date are never null in the lake and the kernel
computes the labels and windows without nulls: declared non-null, they are written as required Parquet
columns, with no definition levels to encode."""
SAMPLES_ARROW_SCHEMA = pa.schema([arrow_schema(_USER_STAGE_SCHEMA).field(c) for c in SAMPLE_COLUMNS])
"""The ``samples`` table's columns as the job writes them (Arrow types and nullability)."""


def _activity(events: DataFrame) -> DataFrame:
    kind = (
        F.when(F.col(Col.EVENT_TYPE) == EventType.IMPRESSION.value, 0)
        .when(F.col(Col.EVENT_TYPE) == EventType.CLICK.value, 1)
        .otherwise(2)
        .cast("tinyint")
    )
    derived = {
        KIND: kind,
        TS_MS: F.unix_millis(Col.TS),
        EVENT_HASH: F.xxhash64(Col.EVENT_ID),
        REQUEST_HASH: F.xxhash64(F.coalesce(F.col(Col.REQUEST_ID), F.lit(""))),
    }
    return events.select(
        *[derived.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in _ACT_FIELDS]
    )


def build_samples(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    attribution_window_s: int = 1800,
) -> DataFrame:
    """The samples of impressions in [start, end] with labels and real-time features (lazy DataFrame)."""
    source, kernel = _user_stage_plan(spark, lake_root, start, end, attribution_window_s)
    stage = functools.partial(_map_partition, kernel, arrow_schema(source.schema))
    return source.mapInArrow(stage, _USER_STAGE_SCHEMA).select(*SAMPLE_COLUMNS)


def _user_stage_plan(
    spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date, attribution_window_s: int
) -> tuple[DataFrame, Callable[[pa.Table], pa.Table]]:
    """The user stage's input, partitioned by user (item windows already attached), and its kernel."""
    if attribution_window_s <= 0:
        raise ValueError(f"attribution_window_s must be positive, got {attribution_window_s}")
    first = start - dt.timedelta(days=math.ceil(MAX_LOOKBACK_S / 86400))
    late_end = end + dt.timedelta(days=attribution_window_s // 86400 + 1)
    events = read_events(spark, lake_root, first, late_end)
    events = events.where(F.col(Col.EVENT_TYPE).isin([t.value for t in EventType]))
    acts = _activity(events)
    n = partitions_for(spark, lake_root, first, late_end)

    # shuffle 1 (narrow), by item: the item windows of every impression of the range, one result row each
    narrow = acts.where(F.col(KIND) <= 1).select(*_NARROW)
    item_stage = functools.partial(
        _map_partition, _item_stage, arrow_schema(narrow.schema), start=start, end=end
    )
    results = narrow.repartition(n, Col.ITEM_ID).mapInArrow(item_stage, _ITEM_RESULT_SCHEMA)
    # shuffle 2, by user, the events with their impressions' item results: dedup, labels, user windows
    no_windows = [F.lit(None).cast("int").alias(w.name) for w in ITEM_WINDOWS]
    results = results.withColumn(REQUEST_HASH, F.lit(0).cast("long"))  # the kernels read it as a non-null int
    user_input = acts.select("*", *no_windows).unionByName(results, allowMissingColumns=True)
    kernel = functools.partial(_user_stage, start=start, end=end, window_ms=attribution_window_s * 1000)
    return user_input.repartition(n, Col.USER_ID), kernel


def _map_partition(
    kernel: Callable[..., pa.Table], schema: pa.Schema, batches: Iterator[pa.RecordBatch], **kwargs: object
) -> Iterator[pa.RecordBatch]:
    """Run ``kernel`` on the whole partition (every row of an entity is in one partition)."""
    table = pa.Table.from_batches(list(batches), schema=schema)
    if table.num_rows:
        yield from kernel(table, **kwargs).to_batches()


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table[col].to_numpy(zero_copy_only=False)


def _user_stage(acts: pa.Table, start: dt.date, end: dt.date, window_ms: int) -> pa.Table:
    """Dedup, click attribution, like labels and user windows for one partition of whole users."""
    kind = _np(acts, KIND)
    ts = _np(acts, TS_MS)
    user = _np(acts, Col.USER_ID)
    triple = dense_codes(_np(acts, REQUEST_HASH), user, _np(acts, Col.ITEM_ID))
    imp, clk, rated = kind == 0, kind == 1, kind == 2

    # one sample per (request, user, item): the earliest impression (ties: smallest event id hash)
    imp_idx = np.flatnonzero(imp)
    keep = imp_idx[first_per_group(triple[imp_idx], ts[imp_idx], _np(acts, EVENT_HASH)[imp_idx])]
    dates = _np(acts, Col.EVENT_DATE)[keep]
    keep = keep[(dates >= np.datetime64(start)) & (dates <= np.datetime64(end))]
    q_ts, q_user, q_triple = ts[keep], user[keep], triple[keep]
    match = _match_results(
        keep, np.flatnonzero(kind == RESULT), _np(acts, EVENT_HASH), _np(acts, Col.ITEM_ID), ts
    )
    out = acts.take(pa.array(keep)).drop_columns([EVENT_HASH, REQUEST_HASH, KIND, Col.LABEL])
    for w in ITEM_WINDOWS:
        out = out.set_column(
            out.schema.get_field_index(w.name), w.name, pa.array(_np(acts, w.name)[match].astype(np.int32))
        )

    click_ts = first_match_within(q_triple, q_ts, triple[clk], ts[clk], window_ms)
    label = pc.fill_null(acts[Col.LABEL], -1).to_numpy()
    rated &= label >= 0
    like = group_max(q_triple, triple[rated], label[rated])
    counts = window_counts(q_user, q_ts, user[clk], ts[clk], [w.window_s * 1000 for w in USER_WINDOWS])
    offsets, recent = recent_values(
        q_user, q_ts, user[clk], ts[clk], _np(acts, Col.ITEM_ID)[clk], RECENT_ITEMS_WINDOW_S * 1000,
        RECENT_ITEMS_K,
    )  # fmt: skip
    # hour and weekday from the kept impressions' milliseconds (numpy, not Spark's per-row calendar lookups)
    out = out.append_column(HOUR, pa.array(hour_of_day_ms(q_ts)))
    out = out.append_column(WEEKDAY, pa.array(weekday_ms(q_ts)))
    out = out.append_column(Col.CLICK, pa.array((click_ts >= 0).astype(np.int8)))
    out = out.append_column(
        Col.CLICK_TS,
        pa.array(click_ts * 1000, mask=click_ts < 0, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    )
    out = out.append_column(Col.LIKE, pa.array(like.astype(np.int8), mask=like < 0))
    for j, w in enumerate(USER_WINDOWS):
        out = out.append_column(w.name, pa.array(counts[:, j].astype(np.int32)))
    return out.append_column(RECENT_ITEMS, pa.ListArray.from_arrays(pa.array(offsets), pa.array(recent)))


def _match_results(
    keep: np.ndarray, result: np.ndarray, event_hash: np.ndarray, item: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """The index of the item-result row of each kept impression (same event hash, item and time)."""
    both = np.concatenate([keep, result])
    codes = dense_codes(event_hash[both], item[both], ts[both])
    lookup = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int64)
    lookup[codes[len(keep) :]] = result
    match = lookup[codes[: len(keep)]]
    if (match < 0).any():
        raise RuntimeError(
            f"{int((match < 0).sum())} impressions have no item-window result (the lake's event_date must be the UTC date of ts)"
        )
    return match


def _item_stage(acts: pa.Table, start: dt.date, end: dt.date) -> pa.Table:
    """Item windows of the impressions of [start, end] in one partition of whole items (impressions and
    clicks of the whole read range as counted rows): one row per impression."""
    item, ts, kind = _np(acts, Col.ITEM_ID), _np(acts, TS_MS), _np(acts, KIND)
    dates = _np(acts, Col.EVENT_DATE)
    q = np.flatnonzero((kind == 0) & (dates >= np.datetime64(start)) & (dates <= np.datetime64(end)))
    out = acts.take(pa.array(q)).drop_columns([Col.EVENT_DATE])
    out = out.set_column(
        out.schema.get_field_index(KIND), KIND, pa.array(np.full(len(q), RESULT, dtype=np.int8))
    )
    counts = {}
    for counted in {w.counted for w in ITEM_WINDOWS}:  # one search per counted kind, all its windows at once
        windows = [w for w in ITEM_WINDOWS if w.counted == counted]
        sel = kind == (1 if counted == Counted.CLICK else 0)
        got = window_counts(item[q], ts[q], item[sel], ts[sel], [w.window_s * 1000 for w in windows])
        counts.update({w.name: got[:, j] for j, w in enumerate(windows)})
    for w in ITEM_WINDOWS:
        out = out.append_column(w.name, pa.array(counts[w.name].astype(np.int32)))
    return out


def run_samples_job(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    attribution_window_s: int = 1800,
) -> int:
    """Write the training samples of [start, end]: labels, context and real-time features. Returns the number
    of samples."""
    source, kernel = _user_stage_plan(spark, lake_root, start, end, attribution_window_s)
    written = write_partitioned_arrow(source, kernel, SAMPLES_ARROW_SCHEMA, lake_root, LakeTable.SAMPLES)
    return sum(written.values())
