"""Spark job: labelled samples with their context and point-in-time real-time features.

Output ``samples/event_date=D``, one row per impression of ``[start, end]`` (an impression logged twice is one
sample, the earliest), with:

* ``click``: 1 when the same user clicked the same item of the same request within ``attribution_window_s``
  after the impression (``t <= click_ts <= t + window``); duplicate clicks count once and ``click_ts`` is
  the first; late clicks after the range end (up to the window) are read and counted;
* ``like``: the label of the user's rating / like of that request's item (rating >= 4), null when none;
* context: ``page``, ``slot``, ``device``, ``city``, ``variant``, ``hour``, ``weekday``;
* the real-time window features of ``features.definitions`` as of the impression's timestamp: counts of
  events with ``t - w <= ts < t`` and the user's recent clicked items; nothing at or after ``t`` is seen.

Plan: read events of ``[start - 1 day, end + late]``; shuffle by user and compute dedup, attribution, likes and
the user windows per partition (``offline/jobs/windows.py``); union the samples with the counted events,
shuffle by item and compute the item windows. Two shuffles, no driver-side collect.
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
)
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EventType
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
ROLE = "role"  # item stage: "q" sample rows, "c" counted events
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

_ACT_FIELDS = [
    T.StructField(Col.EVENT_ID, T.StringType()),
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
_USER_STAGE_SCHEMA = T.StructType(
    [f for f in _ACT_FIELDS if f.name not in (Col.EVENT_ID, KIND, Col.LABEL)]
    + [
        T.StructField(Col.CLICK, T.ByteType()),
        T.StructField(Col.CLICK_TS, T.TimestampType()),
        T.StructField(Col.LIKE, T.ByteType()),
        *[T.StructField(w.name, T.IntegerType()) for w in USER_WINDOWS],
        T.StructField(RECENT_ITEMS, T.ArrayType(T.LongType())),
    ]
)
_ITEM_STAGE_SCHEMA = T.StructType(
    [f for f in _USER_STAGE_SCHEMA.fields] + [T.StructField(w.name, T.IntegerType()) for w in ITEM_WINDOWS]
)


def read_events(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date) -> DataFrame:
    """Events with ``start <= event_date <= end`` (partition pruning on the lake layout)."""
    path = str(Path(lake_root) / LakeTable.EVENTS)
    return (
        spark.read.option("basePath", path)
        .parquet(path)
        .where(F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end)))
    )


def _activity(events: DataFrame) -> DataFrame:
    kind = (
        F.when(F.col(Col.EVENT_TYPE) == EventType.IMPRESSION.value, 0)
        .when(F.col(Col.EVENT_TYPE) == EventType.CLICK.value, 1)
        .otherwise(2)
        .cast("tinyint")
    )
    return events.select(
        *[
            (kind if f.name == KIND else F.unix_millis(Col.TS) if f.name == TS_MS else F.col(f.name))
            .cast(f.dataType)
            .alias(f.name)
            for f in _ACT_FIELDS
        ]
    )


def _partitions(spark: SparkSession) -> int:
    return max(int(spark.conf.get("spark.sql.shuffle.partitions") or 8), 1)


def build_samples(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    attribution_window_s: int = 1800,
) -> DataFrame:
    """The samples of impressions in [start, end] with labels and real-time features (lazy DataFrame)."""
    if attribution_window_s <= 0:
        raise ValueError(f"attribution_window_s must be positive, got {attribution_window_s}")
    first = start - dt.timedelta(days=math.ceil(MAX_LOOKBACK_S / 86400))
    late_end = end + dt.timedelta(days=attribution_window_s // 86400 + 1)
    events = read_events(spark, lake_root, first, late_end)
    events = events.where(F.col(Col.EVENT_TYPE).isin([t.value for t in EventType]))
    acts = _activity(events)
    n = _partitions(spark)
    window_ms = attribution_window_s * 1000

    user_stage = functools.partial(
        _map_partition, _user_stage, _arrow_schema(acts.schema), start=start, end=end, window_ms=window_ms
    )
    by_user = acts.repartition(n, Col.USER_ID).mapInArrow(user_stage, _USER_STAGE_SCHEMA)

    counted = (
        acts.where((F.col(KIND) < 2) & (F.col(Col.EVENT_DATE) <= F.lit(end)))
        .select(Col.ITEM_ID, TS_MS, KIND)
        .withColumn(ROLE, F.lit("c"))
    )
    both = by_user.withColumn(ROLE, F.lit("q")).withColumn(KIND, F.lit(0).cast("tinyint"))
    both = both.unionByName(counted, allowMissingColumns=True)
    item_stage = functools.partial(_map_partition, _item_stage, _arrow_schema(both.schema))
    samples = both.repartition(n, Col.ITEM_ID).mapInArrow(item_stage, _ITEM_STAGE_SCHEMA)
    return samples.select(
        *[
            F.hour(Col.TS).cast("tinyint").alias(HOUR)
            if c == HOUR
            else ((F.dayofweek(Col.TS) + 5) % 7).cast("tinyint").alias(WEEKDAY)
            if c == WEEKDAY
            else F.col(c)
            for c in SAMPLE_COLUMNS
        ]
    )


def _map_partition(
    kernel: Callable[..., pa.Table], schema: pa.Schema, batches: Iterator[pa.RecordBatch], **kwargs: object
) -> Iterator[pa.RecordBatch]:
    """Run ``kernel`` on the whole partition (every row of an entity is in one partition)."""
    table = pa.Table.from_batches(list(batches), schema=schema)
    if table.num_rows:
        yield from kernel(table, **kwargs).to_batches()


def _arrow_schema(schema: T.StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table[col].to_numpy(zero_copy_only=False)


def _user_stage(acts: pa.Table, start: dt.date, end: dt.date, window_ms: int) -> pa.Table:
    """Dedup, click attribution, like labels and user windows for one partition of whole users."""
    kind = _np(acts, KIND)
    ts = _np(acts, TS_MS)
    user = _np(acts, Col.USER_ID)
    req = pc.fill_null(acts[Col.REQUEST_ID], "").to_numpy(zero_copy_only=False)
    triple = dense_codes(req, user, _np(acts, Col.ITEM_ID))
    imp, clk, rated = kind == 0, kind == 1, kind == 2

    # one sample per (request, user, item): the earliest impression (ties: smallest event_id)
    imp_idx = np.flatnonzero(imp)
    eid = acts[Col.EVENT_ID].to_numpy(zero_copy_only=False)
    keep = imp_idx[first_per_group(triple[imp_idx], ts[imp_idx], eid[imp_idx])]
    dates = _np(acts, Col.EVENT_DATE)[keep]
    keep = keep[(dates >= np.datetime64(start)) & (dates <= np.datetime64(end))]
    out = acts.take(pa.array(keep)).drop_columns([Col.EVENT_ID, KIND, Col.LABEL])
    q_ts, q_user, q_triple = ts[keep], user[keep], triple[keep]

    click_ts = first_match_within(q_triple, q_ts, triple[clk], ts[clk], window_ms)
    label = pc.fill_null(acts[Col.LABEL], -1).to_numpy()
    rated &= label >= 0
    like = group_max(q_triple, triple[rated], label[rated])
    counts = window_counts(q_user, q_ts, user[clk], ts[clk], [w.window_s * 1000 for w in USER_WINDOWS])
    offsets, recent = recent_values(
        q_user, q_ts, user[clk], ts[clk], _np(acts, Col.ITEM_ID)[clk], RECENT_ITEMS_WINDOW_S * 1000,
        RECENT_ITEMS_K,
    )  # fmt: skip
    out = out.append_column(Col.CLICK, pa.array((click_ts >= 0).astype(np.int8)))
    out = out.append_column(
        Col.CLICK_TS,
        pa.array(click_ts * 1000, mask=click_ts < 0, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    )
    out = out.append_column(Col.LIKE, pa.array(like.astype(np.int8), mask=like < 0))
    for j, w in enumerate(USER_WINDOWS):
        out = out.append_column(w.name, pa.array(counts[:, j].astype(np.int32)))
    return out.append_column(RECENT_ITEMS, pa.ListArray.from_arrays(pa.array(offsets), pa.array(recent)))


def _item_stage(rows: pa.Table) -> pa.Table:
    """Item windows for the sample rows (role q) of one partition of whole items, counted over role c rows."""
    role = rows[ROLE].to_numpy(zero_copy_only=False)
    q, c = role == "q", role == "c"
    item, ts, kind = _np(rows, Col.ITEM_ID), _np(rows, TS_MS), _np(rows, KIND)
    out = rows.filter(pa.array(q)).drop_columns([ROLE, KIND])
    for w in ITEM_WINDOWS:
        sel = c & (kind == (1 if w.counted == Counted.CLICK else 0))
        counts = window_counts(item[q], ts[q], item[sel], ts[sel], [w.window_s * 1000])
        out = out.append_column(w.name, pa.array(counts[:, 0].astype(np.int32)))
    return out


def write_partitioned(frame: DataFrame, lake_root: Path | str, table: str) -> str:
    """Write ``frame`` partitioned by ``event_date``, replacing exactly the partitions present in it."""
    path = str(Path(lake_root) / table)
    # one writer task per day: one file per date directory instead of one per task
    frame.repartition(Col.EVENT_DATE).write.mode("overwrite").partitionBy(Col.EVENT_DATE).parquet(path)
    return path


def run_samples_job(
    spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date, attribution_window_s: int = 1800
) -> int:
    """Build and write the samples of [start, end]; returns the number of samples written."""
    samples = build_samples(spark, lake_root, start, end, attribution_window_s)
    write_partitioned(samples, lake_root, LakeTable.SAMPLES)
    return spark.read.parquet(str(Path(lake_root) / LakeTable.SAMPLES)).where(
        F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end))
    ).count()
