"""Spark: user / item features as of each day, feature statistics, the latest user / item snapshots.

Daily partials ``user_daily/``, ``item_daily/`` (partitioned by ``event_date``) hold each entity's counts of
that day. The features of a sample dated D are the totals over partials of dates ``< D``, i.e. the state at
00:00 of D; ``point_in_time_features`` builds them. Missing partials of earlier dates are back-filled, so a
first run and a daily run agree.

The features job (``run_features_job``) writes, for ``[start, end]``:

* ``user_daily/``, ``item_daily/``: the partials of the range (and any missing earlier date);
* ``user_asof/``, ``item_asof/``: each active (entity, day)'s features as of 00:00 of that day; with the
  samples they make the training table (``offline/jobs/training_table.py``; ``training_table`` here);
* ``feature_stats/event_date=<end>/stats.json``: mean / std / min / max of every dense feature of the
  training table (after log1p where declared), the categorical vocabularies (most frequent first) and the
  feature-set version;
* ``user_features/``, ``item_features/``: profile + statistics after the last event of ``end``, for serving,
  lookalike and graph node features.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from recstack.features.definitions import (
    DENSE_FEATURES,
    FEATURE_SET_VERSION,
    FEATURES_BY_NAME,
    UNKNOWN,
)
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import ITEM_SCHEMA, USER_SCHEMA, EventType
from recstack.features.spark_exprs import age_bucket_col, zip_prefix_col
from recstack.offline.jobs.common import count_rows, read_events, read_partitioned, write_partitioned
from recstack.offline.jobs.training_table import FEATURE_PARTS
from recstack.offline.lake import EventLake, date_partition

COUNTS = ["impressions", "clicks", "ratings", "rating_sum"]
FIRST_TS = "first_ts"
ACTIVE_DAYS = "active_days"
PRIOR_RATING = 3.0  # mean rating used before an entity has any
CTR_PRIOR = (1.0, 10.0)  # (clicks + 1) / (impressions + 10): smoothed towards 10%
CONTEXT_VOCABS = ("page", "device", "slot", "hour", "weekday")
USER_VOCABS = ("age_bucket", Col.GENDER, Col.OCCUPATION, "zip_prefix")


def _daily(events: DataFrame, key: str) -> DataFrame:
    kind = F.col(Col.EVENT_TYPE)
    rating = kind == EventType.RATING.value
    return events.groupBy(key, Col.EVENT_DATE).agg(
        F.sum((kind == EventType.IMPRESSION.value).cast("long")).alias("impressions"),
        F.sum((kind == EventType.CLICK.value).cast("long")).alias("clicks"),
        F.sum(rating.cast("long")).alias("ratings"),
        F.sum(F.when(rating, F.col(Col.VALUE)).otherwise(0.0)).cast("double").alias("rating_sum"),
        F.min(Col.TS).alias(FIRST_TS),
    )


def _missing_partials(lake_root: Path, table: str, dates: list[dt.date]) -> list[dt.date]:
    path = Path(lake_root) / table
    have = {p.name.split("=", 1)[1] for p in path.glob(f"{Col.EVENT_DATE}=*")} if path.exists() else set()
    return [d for d in dates if d.isoformat() not in have]


def write_daily_partials(spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date) -> list[dt.date]:
    """Write ``user_daily`` and ``item_daily`` for [start, end] plus any missing earlier date; returns the
    dates written."""
    earlier = [d for d in EventLake(lake_root).event_dates() if d < start]
    todo = sorted(
        set(_missing_partials(lake_root, LakeTable.USER_DAILY, earlier))
        | set(_missing_partials(lake_root, LakeTable.ITEM_DAILY, earlier))
    )
    first = min([start, *todo])
    events = read_events(spark, lake_root, first, end)
    if todo:
        keep = todo + [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        events = events.where(F.col(Col.EVENT_DATE).isin(keep))
    for key, table in ((Col.USER_ID, LakeTable.USER_DAILY), (Col.ITEM_ID, LakeTable.ITEM_DAILY)):
        write_partitioned(_daily(events, key), lake_root, table)
    return todo + [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _as_of(daily: DataFrame, key: str) -> DataFrame:
    """Each entity's totals over its daily partials of dates before each of its dates (00:00 state)."""
    w = Window.partitionBy(key).orderBy(Col.EVENT_DATE).rowsBetween(Window.unboundedPreceding, -1)
    return daily.select(
        key,
        Col.EVENT_DATE,
        *[F.coalesce(F.sum(c).over(w), F.lit(0)).alias(c) for c in COUNTS],
        F.count(F.lit(1)).over(w).alias(ACTIVE_DAYS),
        F.min(FIRST_TS).over(w).alias(FIRST_TS),
    )


def _ratio(num: Column, den: Column, prior: float) -> Column:
    return F.when(den > 0, num / den).otherwise(F.lit(prior))


def user_profile(users: DataFrame) -> DataFrame:
    """Profile features of each user: age bucket, gender, occupation, zip prefix (unknown when missing)."""
    return users.select(
        Col.USER_ID,
        age_bucket_col(F.col(Col.AGE)).alias("age_bucket"),
        F.coalesce(F.col(Col.GENDER), F.lit(UNKNOWN)).alias(Col.GENDER),
        F.coalesce(F.col(Col.OCCUPATION), F.lit(UNKNOWN)).alias(Col.OCCUPATION),
        zip_prefix_col(F.col(Col.ZIP_CODE)).alias("zip_prefix"),
    )


def _activity_columns(prefix: str) -> list[Column]:
    """``<prefix>_impressions``, ``_clicks``, smoothed ``_ctr``, ``_ratings`` and ``_avg_rating`` from totals."""
    clicks, impressions, ratings = F.col("clicks"), F.col("impressions"), F.col("ratings")
    return [
        impressions.alias(f"{prefix}_impressions"),
        clicks.alias(f"{prefix}_clicks"),
        ((clicks + CTR_PRIOR[0]) / (impressions + CTR_PRIOR[1])).alias(f"{prefix}_ctr"),
        ratings.alias(f"{prefix}_ratings"),
        _ratio(F.col("rating_sum"), ratings, PRIOR_RATING).alias(f"{prefix}_avg_rating"),
    ]


def _user_columns(stats: DataFrame, users: DataFrame) -> DataFrame:
    profile = user_profile(users)
    s = stats.select(
        Col.USER_ID, Col.EVENT_DATE, *_activity_columns("user"), F.col(ACTIVE_DAYS).alias("user_active_days")
    )
    return s.join(F.broadcast(profile), Col.USER_ID, "left").fillna(
        {"age_bucket": 0, Col.GENDER: UNKNOWN, Col.OCCUPATION: UNKNOWN, "zip_prefix": UNKNOWN}
    )


def _item_columns(stats: DataFrame, items: DataFrame, day_start: Column) -> DataFrame:
    profile = items.select(
        Col.ITEM_ID,
        F.coalesce(F.col(Col.GENRES), F.array().cast("array<string>")).alias(Col.GENRES),
        F.coalesce(F.year(Col.RELEASE_DATE), F.lit(0)).cast("int").alias("release_year"),
        F.col(Col.RELEASE_DATE),
    )
    s = stats.select(
        Col.ITEM_ID,
        Col.EVENT_DATE,
        *_activity_columns("item"),
        F.coalesce(
            (F.unix_seconds(day_start) - F.unix_seconds(F.col(FIRST_TS))) / 86400.0, F.lit(0.0)
        ).alias("item_age_days"),
    )
    out = s.join(F.broadcast(profile), Col.ITEM_ID, "left")
    years = F.datediff(F.col(Col.EVENT_DATE), F.col(Col.RELEASE_DATE)) / 365.25
    out = out.withColumn("item_years_since_release", F.coalesce(years, F.lit(0.0)).cast("double"))
    return out.drop(Col.RELEASE_DATE).fillna({"release_year": 0}).withColumn(
        Col.GENRES, F.coalesce(F.col(Col.GENRES), F.array().cast("array<string>"))
    )


def profile_tables(spark: SparkSession, lake_root: Path) -> tuple[DataFrame, DataFrame]:
    """The user and item profile tables; a lake without them (events only) gets empty ones."""
    from pyspark.sql.pandas.types import from_arrow_schema

    frames = []
    for table, schema in ((LakeTable.USERS, USER_SCHEMA), (LakeTable.ITEMS, ITEM_SCHEMA)):
        path = Path(lake_root) / table
        frames.append(spark.read.parquet(str(path)) if path.exists()
                      else spark.createDataFrame([], from_arrow_schema(schema)))  # fmt: skip
    return frames[0], frames[1]


def point_in_time_features(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date
) -> tuple[DataFrame, DataFrame]:
    """User and item feature rows keyed by (id, event_date) for dates in [start, end], as of 00:00 of each."""
    root = Path(lake_root)
    users, items = profile_tables(spark, root)
    in_range = F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end))
    user_daily = read_partitioned(spark, root, LakeTable.USER_DAILY, None, end)
    item_daily = read_partitioned(spark, root, LakeTable.ITEM_DAILY, None, end)
    user_cols = _user_columns(_as_of(user_daily, Col.USER_ID).where(in_range), users)
    day_start = F.to_timestamp(F.col(Col.EVENT_DATE))
    item_cols = _item_columns(_as_of(item_daily, Col.ITEM_ID).where(in_range), items, day_start)
    return user_cols, item_cols


def write_point_in_time_features(spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date) -> None:
    """Write ``user_asof`` and ``item_asof`` for the dates in [start, end] (their daily partials must exist)."""
    for frame, table in zip(point_in_time_features(spark, lake_root, start, end),
                            (LakeTable.USER_ASOF, LakeTable.ITEM_ASOF), strict=True):  # fmt: skip
        write_partitioned(frame, lake_root, table)


def training_table(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date, broadcast_rows_max: int
) -> DataFrame:
    """The samples of [start, end] with their user and item features as of 00:00 of their day (left joins on
    id and ``event_date``; ``offline/jobs/training_table.py`` is the same join for Arrow readers).

    A feature table of at most ``broadcast_rows_max`` rows in the range is broadcast (no shuffle of the
    samples); a larger one is joined by shuffling.
    """
    table = read_partitioned(spark, lake_root, LakeTable.SAMPLES, start, end)
    for name, keys in FEATURE_PARTS:
        features = read_partitioned(spark, lake_root, name, start, end)
        small = count_rows(lake_root, name, start, end) <= broadcast_rows_max
        table = table.join(F.broadcast(features) if small else features, keys, "left")
    return table


def _moments(names: list[str], weight: Column) -> list[Column]:
    """Per feature: Σ w·x, Σ w·x², Σ w over non-null x, min and max of x over rows with w > 0 (log1p'd where
    declared). A row of weight w stands for w rows of the training table. Plain sums (codegen'd, one pass)
    rather than Spark's Welford stddev: var = E[x²] − E[x]²."""
    aggs = []
    for name in names:
        x = F.col(name).cast("double")
        x = F.log1p(x) if FEATURES_BY_NAME[name].log1p else x
        shown = F.when(weight > 0, x)
        aggs += [F.sum(weight * x).alias(f"{name}.sum"), F.sum(weight * x * x).alias(f"{name}.sumsq"),
                 F.sum(F.when(x.isNotNull(), weight)).alias(f"{name}.n"),
                 F.min(shown).alias(f"{name}.min"), F.max(shown).alias(f"{name}.max")]  # fmt: skip
    return aggs


def dense_moments(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date, broadcast_rows_max: int
) -> dict[str, Any]:
    """Σ x, Σ x², n, min and max of every dense feature over the training table of [start, end], and its rows.

    The training table is not materialised: a sample's own features (the windows) are aggregated over the
    samples, and a feature of the user / item as-of tables over those tables, each (entity, day) row weighted
    by its number of samples (one aggregation of the samples' keys per table, a join of that small count,
    instead of a join on every sample). The same numbers as aggregating the joined table, up to the order of
    floating-point additions."""
    samples = read_partitioned(spark, lake_root, LakeTable.SAMPLES, start, end)
    own = [n for n in DENSE_FEATURES if n in samples.columns]
    row = samples.agg(F.count(F.lit(1)).alias("rows"), *_moments(own, F.lit(1))).first()
    assert row is not None
    values = row.asDict()
    for name, keys in FEATURE_PARTS:
        features = read_partitioned(spark, lake_root, name, start, end)
        cols = [n for n in DENSE_FEATURES if n in features.columns and n not in own]
        counts = samples.groupBy(*keys).agg(F.count(F.lit(1)).alias("_samples"))
        small = count_rows(lake_root, name, start, end) <= broadcast_rows_max
        joined = counts.join(F.broadcast(features) if small else features, keys, "left")
        row = joined.agg(*_moments(cols, F.col("_samples"))).first()
        assert row is not None
        values |= row.asDict()
    return values


def feature_stats(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date, vocab_max: int, broadcast_rows_max: int
) -> dict[str, object]:
    """Normalisation statistics of the dense features of the training table of [start, end] and vocabularies."""
    root = Path(lake_root)
    samples = read_partitioned(spark, root, LakeTable.SAMPLES, start, end)
    values = dense_moments(spark, root, start, end, broadcast_rows_max)
    missing = [n for n in DENSE_FEATURES if f"{n}.n" not in values]
    if missing:
        raise KeyError(f"dense features {missing} are in neither the samples nor the as-of tables")
    dense: dict[str, dict[str, object]] = {}
    for name in DENSE_FEATURES:
        n = values[f"{name}.n"] or 0
        mean = values[f"{name}.sum"] / n if n else None
        var = max(values[f"{name}.sumsq"] / n - mean * mean, 0.0) if mean is not None else None
        dense[name] = {"log1p": FEATURES_BY_NAME[name].log1p, "mean": mean,
                       "std": None if var is None else math.sqrt(var),
                       "min": values[f"{name}.min"], "max": values[f"{name}.max"]}  # fmt: skip
    # entities shown in the range, exactly, from the small daily partials
    cardinality = {
        key: read_partitioned(spark, root, table, start, end).where(F.col("impressions") > 0).select(key).distinct().count()
        for key, table in ((Col.USER_ID, LakeTable.USER_DAILY), (Col.ITEM_ID, LakeTable.ITEM_DAILY))
    }
    # vocabularies, most frequent first: context from the samples, profiles from the (small) entity tables;
    # one job for all of them (each value's count, the top vocab_max of each vocabulary), not one per vocabulary
    users, items = profile_tables(spark, root)
    profiles = user_profile(users)
    genres = items.select(F.explode(Col.GENRES).alias(Col.GENRES))  # an item without genres adds none
    years = items.select(F.coalesce(F.year(Col.RELEASE_DATE), F.lit(0)).cast("int").alias("release_year"))
    context = samples.groupBy(*CONTEXT_VOCABS).count()  # one pass over the samples, a small result
    sources = [(context, c) for c in CONTEXT_VOCABS] + [(profiles, c) for c in USER_VOCABS]
    sources += [(genres, Col.GENRES), (years, "release_year")]
    counted = [
        frame.select(
            F.lit(c).alias("vocab"),
            F.coalesce(F.col(c).cast("string"), F.lit(UNKNOWN)).alias("v"),
            (F.col("count") if frame is context else F.lit(1)).cast("long").alias("n"),
        )
        for frame, c in sources
    ]
    every = counted[0]
    for frame in counted[1:]:
        every = every.unionByName(frame)
    totals = every.groupBy("vocab", "v").agg(F.sum("n").alias("n"))
    order = F.row_number().over(Window.partitionBy("vocab").orderBy(F.desc("n"), "v"))
    top = totals.withColumn("r", order).where(F.col("r") <= vocab_max)
    vocab: dict[str, list[str]] = {c: [] for _, c in sources}
    for r in top.orderBy("vocab", "r").collect():
        vocab[r["vocab"]].append(r["v"])
    return {
        "feature_set_version": FEATURE_SET_VERSION,
        "rows": values["rows"],
        "dense": dense,
        "vocab": vocab,
        "cardinality": cardinality,
    }


def write_snapshots(spark: SparkSession, lake_root: Path, end: dt.date) -> None:
    """Profile + statistics of every user and item after the last event of ``end`` (overwritten)."""
    root = Path(lake_root)
    users, items = profile_tables(spark, root)
    as_of = F.lit(end + dt.timedelta(days=1))
    for key, table, out, build in (
        (Col.USER_ID, LakeTable.USER_DAILY, LakeTable.USER_FEATURES, lambda s: _user_columns(s, users)),
        (Col.ITEM_ID, LakeTable.ITEM_DAILY, LakeTable.ITEM_FEATURES,
         lambda s: _item_columns(s, items, F.to_timestamp(as_of))),
    ):  # fmt: skip
        daily = read_partitioned(spark, root, table, None, end)
        totals = daily.groupBy(key).agg(
            *[F.sum(c).alias(c) for c in COUNTS], F.count(F.lit(1)).alias(ACTIVE_DAYS), F.min(FIRST_TS).alias(FIRST_TS)
        ).withColumn(Col.EVENT_DATE, as_of)
        frame = build(totals).drop(Col.EVENT_DATE)
        frame.coalesce(1).write.mode("overwrite").parquet(str(root / out))


def run_features_job(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    vocab_max: int = 10_000,
    broadcast_rows_max: int = 5_000_000,
) -> dict[str, object]:
    """The daily partials and point-in-time features of [start, end], the statistics of its training table and
    the user / item snapshots after ``end``."""
    root = Path(lake_root)
    if not (root / LakeTable.SAMPLES).exists():
        raise FileNotFoundError(f"no samples at {root / LakeTable.SAMPLES}: run `recstack samples` first")
    write_daily_partials(spark, root, start, end)
    write_point_in_time_features(spark, root, start, end)
    stats = feature_stats(spark, root, start, end, vocab_max, broadcast_rows_max)
    stats |= {"start": start.isoformat(), "end": end.isoformat()}
    stats_dir = root / LakeTable.FEATURE_STATS / date_partition(end)
    stats_dir.mkdir(parents=True, exist_ok=True)
    (stats_dir / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    write_snapshots(spark, root, end)
    return {"rows": stats["rows"], "stats": str(stats_dir / "stats.json")}
