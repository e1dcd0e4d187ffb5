"""Spark job: gap-based sessionization of user behaviour into item sequences and session statistics.

Behaviour events are clicks, ratings and likes. A user's session ends when the next event comes more than
``gap_s`` later. Output ``sessions/event_date=D`` holds the sessions that *start* on D: ``session_id``
(``<user>-<start ms>``), ``user_id``, ``start_ts``, ``end_ts``, ``duration_s``, ``n_events``, ``n_clicks``,
``n_ratings``, ``items`` (item ids in time order, an item repeated back to back listed once) and
``n_distinct_items``.

The job reads a day before and after the range (the gap is at most a day), so a session crossing midnight is
whole and belongs to its start day; re-run the previous day in the daily tier to complete its last session.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EventType
from recstack.offline.jobs.common import count_rows, read_events, write_partitioned

SESSION_ID = "session_id"
ITEMS = "items"
BEHAVIOUR = (EventType.CLICK.value, EventType.RATING.value, EventType.LIKE.value)


def build_sessions(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date, gap_s: int) -> DataFrame:
    """Sessions starting in [start, end] (lazy DataFrame)."""
    if not 0 < gap_s <= 86400:
        raise ValueError(f"session gap must be in (0, 86400] seconds, got {gap_s}")
    day = dt.timedelta(days=1)
    events = read_events(spark, lake_root, start - day, end + day).where(F.col(Col.EVENT_TYPE).isin(*BEHAVIOUR))
    ev = events.select(
        Col.USER_ID, Col.ITEM_ID, Col.EVENT_TYPE, Col.TS, F.unix_millis(Col.TS).alias("ms")
    )
    w = Window.partitionBy(Col.USER_ID).orderBy("ms", Col.ITEM_ID, Col.EVENT_TYPE)
    gap = F.col("ms") - F.lag("ms").over(w)
    ev = ev.withColumn("new", F.when(gap.isNull() | (gap > gap_s * 1000), 1).otherwise(0))
    ev = ev.withColumn("n", F.sum("new").over(w.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    s = ev.groupBy(Col.USER_ID, "n").agg(
        F.min(Col.TS).alias("start_ts"),
        F.max(Col.TS).alias("end_ts"),
        F.min("ms").alias("start_ms"),
        F.count(F.lit(1)).alias("n_events"),
        F.sum((F.col(Col.EVENT_TYPE) == EventType.CLICK.value).cast("int")).alias("n_clicks"),
        F.sum((F.col(Col.EVENT_TYPE) == EventType.RATING.value).cast("int")).alias("n_ratings"),
        F.sort_array(F.collect_list(F.struct("ms", Col.ITEM_ID))).alias("seq"),
    )
    seq = F.transform("seq", lambda x: x[Col.ITEM_ID])
    s = s.withColumn(ITEMS, F.filter(seq, lambda x, i: (i == 0) | (x != F.get(seq, i - 1))))
    # from the collected sequence, not countDistinct: a distinct aggregate beside the others makes Spark expand
    # every row once per distinct group and aggregate twice
    distinct = F.size(F.array_distinct(F.filter(ITEMS, lambda x: x.isNotNull())))
    s = s.withColumn("n_distinct_items", distinct.cast("long"))
    s = s.withColumn(Col.EVENT_DATE, F.to_date("start_ts")).where(
        F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end))
    )
    return s.select(
        F.concat_ws("-", F.col(Col.USER_ID).cast("string"), F.col("start_ms").cast("string")).alias(SESSION_ID),
        Col.USER_ID,
        "start_ts",
        "end_ts",
        (F.col("end_ts").cast("double") - F.col("start_ts").cast("double")).alias("duration_s"),
        "n_events",
        "n_clicks",
        "n_ratings",
        ITEMS,
        "n_distinct_items",
        Col.EVENT_DATE,
    )


def run_sessions_job(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date, gap_s: int) -> int:
    """Write the sessions starting in [start, end]; returns how many."""
    write_partitioned(build_sessions(spark, lake_root, start, end, gap_s), lake_root, LakeTable.SESSIONS)
    return count_rows(lake_root, LakeTable.SESSIONS, start, end)
