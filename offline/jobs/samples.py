"""Spark job: impressions joined with clicks and ratings into labelled samples.

Output ``samples/event_date=D`` (one row per impression): the impression's request, user, item, time and
context, ``click`` (1 when the same user clicked the same item of the same request within
``attribution_window_s`` after the impression, duplicate clicks counted once, late clicks up to the window
after the range end included), ``click_ts``, and ``like`` (label of the rating or like event for that
request and item, null when the user gave none).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EventType

SAMPLE_COLUMNS = [
    Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID, Col.TS, Col.PAGE, Col.SLOT, Col.DEVICE, Col.CITY, Col.VARIANT,
    Col.CLICK, Col.CLICK_TS, Col.LIKE, Col.EVENT_DATE,
]  # fmt: skip


def read_events(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date) -> DataFrame:
    """Events with ``start <= event_date <= end`` (partition pruning on the lake layout)."""
    path = str(Path(lake_root) / LakeTable.EVENTS)
    return (
        spark.read.option("basePath", path)
        .parquet(path)
        .where(F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end)))
    )


def build_samples(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    attribution_window_s: int = 1800,
) -> DataFrame:
    """The labelled samples of impressions in [start, end] (lazy DataFrame)."""
    late_end = end + dt.timedelta(days=max(1, attribution_window_s // 86400 + 1))
    events = read_events(spark, lake_root, start, late_end)
    keys = [Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID]
    impressions = (
        events.where(
            (F.col(Col.EVENT_TYPE) == EventType.IMPRESSION.value) & (F.col(Col.EVENT_DATE) <= F.lit(end))
        )
        .select(*keys, Col.TS, Col.PAGE, Col.SLOT, Col.DEVICE, Col.CITY, Col.VARIANT, Col.EVENT_DATE)
        .dropDuplicates(keys)  # an impression logged twice is one sample
    )
    clicks = events.where(F.col(Col.EVENT_TYPE) == EventType.CLICK.value).select(
        *keys, F.col(Col.TS).alias(Col.CLICK_TS)
    )
    likes = (
        events.where(F.col(Col.EVENT_TYPE).isin(EventType.RATING.value, EventType.LIKE.value))
        .groupBy(*keys)
        .agg(F.max(Col.LABEL).cast("tinyint").alias(Col.LIKE))
    )
    window = F.expr(f"INTERVAL {int(attribution_window_s)} SECONDS")
    imp = impressions.alias("i")
    clk = clicks.alias("c")
    attributed = (
        imp.join(
            clk,
            on=[F.col(f"i.{k}") == F.col(f"c.{k}") for k in keys]
            + [
                F.col(f"c.{Col.CLICK_TS}") >= F.col(f"i.{Col.TS}"),
                F.col(f"c.{Col.CLICK_TS}") <= F.col(f"i.{Col.TS}") + window,
            ],
            how="left",
        )
        .groupBy(
            *[
                F.col(f"i.{c}")
                for c in (
                    *keys,
                    Col.TS,
                    Col.PAGE,
                    Col.SLOT,
                    Col.DEVICE,
                    Col.CITY,
                    Col.VARIANT,
                    Col.EVENT_DATE,
                )
            ]
        )
        .agg(F.min(f"c.{Col.CLICK_TS}").alias(Col.CLICK_TS))  # duplicate clicks: the first one counts
        .withColumn(Col.CLICK, F.col(Col.CLICK_TS).isNotNull().cast("tinyint"))
    )
    return attributed.join(likes, on=keys, how="left").select(*SAMPLE_COLUMNS)


def write_samples(samples: DataFrame, lake_root: Path | str) -> str:
    """Write partitioned by ``event_date``, replacing exactly the partitions present in ``samples``."""
    path = str(Path(lake_root) / LakeTable.SAMPLES)
    # one shuffle partition per day: one file per date directory instead of one per task
    samples.repartition(Col.EVENT_DATE).write.mode("overwrite").partitionBy(Col.EVENT_DATE).parquet(path)
    return path


def run_samples_job(
    spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date, attribution_window_s: int = 1800
) -> int:
    """Build and write the samples of [start, end]; returns the number of samples written."""
    samples = build_samples(spark, lake_root, start, end, attribution_window_s).cache()
    count = samples.count()
    write_samples(samples, lake_root)
    samples.unpersist()
    return count
