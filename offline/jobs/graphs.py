"""Spark job: interaction graphs as Parquet edge lists with id maps.

For ``[start, end]`` it writes daily partials ``graph_daily/event_date=D`` of the user–item edges, then the
graphs **as of the end of** ``end`` under ``graphs/as_of=<end>/``:

* ``nodes_users/``, ``nodes_items/``: ``user_id``/``item_id`` → dense ``idx`` (0..n-1, in id order), every
  user / item of the profile tables and of the edges;
* ``user_item/``: ``user_id``, ``item_id``, ``user_idx``, ``item_idx``, ``n`` (interactions), ``weight``
  (sum of interaction strengths: click 1, like 1, rating value / 5), ``decayed_weight`` (each strength
  times ``0.5 ** (age / half_life)``, age measured to the end of ``end``), ``first_ts``, ``last_ts``;
* ``item_item/``: ``src``, ``dst`` (+ ``src_idx``, ``dst_idx``), ``weight`` = how often the two items stand
  at most ``cooccurrence_window`` apart in a session (both directions, no self loops), each item's
  ``item_neighbors_max`` heaviest edges;
* ``user_user/``: users linked by shared attributes for lookalike. Candidate pairs come from blocks of users
  equal on an attribute combination (each user linked to the next ones in a seeded shuffle of its block,
  so a block of a million costs what a block of 20 does); ``weight`` = number of shared attributes (age
  bucket, gender, occupation, zip prefix); each user keeps its ``user_user_degree`` heaviest links.

The decayed weight is exact and incremental: a partial stores its sum decayed to the end of its own day, and
the snapshot decays each partial by the days between.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from recstack.features.definitions import UNKNOWN
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EventType
from recstack.offline.jobs.common import read_events, read_partitioned, write_partitioned
from recstack.offline.jobs.features import profile_tables, user_profile
from recstack.offline.jobs.sessions import ITEMS

AS_OF = "as_of"
USER_ATTRS = ("age_bucket", Col.GENDER, Col.OCCUPATION, "zip_prefix")
USER_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("age_bucket", Col.GENDER, Col.OCCUPATION),
    (Col.OCCUPATION, "zip_prefix"),
    ("age_bucket", "zip_prefix"),
    (Col.GENDER, "zip_prefix"),
)
"""Attribute combinations whose equal-valued users are candidate lookalike pairs."""


def _strength() -> F.Column:
    kind = F.col(Col.EVENT_TYPE)
    return (
        F.when(kind == EventType.RATING.value, F.col(Col.VALUE) / 5.0)
        .when(kind == EventType.LIKE.value, F.coalesce(F.col(Col.LABEL), F.lit(1)).cast("double"))
        .otherwise(1.0)
    )


def write_graph_partials(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date, half_life_days: float
) -> None:
    events = read_events(spark, lake_root, start, end).where(
        F.col(Col.EVENT_TYPE).isin(EventType.CLICK.value, EventType.RATING.value, EventType.LIKE.value)
    )
    day_end = F.unix_seconds(F.to_timestamp(F.date_add(F.col(Col.EVENT_DATE), 1)))
    age_days = (day_end - F.unix_seconds(Col.TS)) / 86400.0
    partial = events.groupBy(Col.USER_ID, Col.ITEM_ID, Col.EVENT_DATE).agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(_strength()).alias("weight"),
        F.sum(_strength() * F.pow(F.lit(0.5), age_days / half_life_days)).alias("decayed_weight"),
        F.min(Col.TS).alias("first_ts"),
        F.max(Col.TS).alias("last_ts"),
    )
    write_partitioned(partial, lake_root, LakeTable.GRAPH_DAILY)


def user_item_edges(spark: SparkSession, lake_root: Path, end: dt.date, half_life_days: float) -> DataFrame:
    daily = read_partitioned(spark, lake_root, LakeTable.GRAPH_DAILY, None, end)
    days_before_end = F.datediff(F.lit(end), F.col(Col.EVENT_DATE))
    return daily.groupBy(Col.USER_ID, Col.ITEM_ID).agg(
        F.sum("n").alias("n"),
        F.sum("weight").alias("weight"),
        F.sum(F.col("decayed_weight") * F.pow(F.lit(0.5), days_before_end / half_life_days)).alias("decayed_weight"),
        F.min("first_ts").alias("first_ts"),
        F.max("last_ts").alias("last_ts"),
    )


def id_map(ids: DataFrame, column: str) -> DataFrame:
    """Distinct ``column`` values → ``idx`` 0..n-1 in id order (zipWithIndex: no single-partition window)."""
    distinct = ids.select(column).where(F.col(column).isNotNull()).distinct().orderBy(column)
    spark = distinct.sparkSession
    rdd = distinct.rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1]))
    return spark.createDataFrame(rdd, f"{column} long, idx long")


def item_item_edges(spark: SparkSession, lake_root: Path, end: dt.date, window: int, max_degree: int) -> DataFrame:
    sessions = read_partitioned(spark, lake_root, LakeTable.SESSIONS, None, end)
    pairs = sessions.select(
        F.explode(
            F.flatten(
                F.transform(
                    F.sequence(F.lit(1), F.lit(window)),
                    lambda k: F.transform(
                        F.arrays_zip(F.col(ITEMS).alias("a"), F.slice(ITEMS, k + 1, 1 << 20).alias("b")),
                        lambda z: F.struct(z["a"].alias("src"), z["b"].alias("dst")),
                    ),
                )
            )
        ).alias("p")
    ).select("p.src", "p.dst")
    pairs = pairs.where(F.col("dst").isNotNull() & (F.col("src") != F.col("dst")))
    both = pairs.unionByName(pairs.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    # partitioned by src before counting: the count and the ranking window then share one shuffle (the
    # count's map-side combine is lost, which costs less than a second shuffle of the counted pairs)
    edges = both.repartition("src").groupBy("src", "dst").agg(F.count(F.lit(1)).cast("double").alias("weight"))
    rank = F.row_number().over(Window.partitionBy("src").orderBy(F.desc("weight"), "dst"))
    return edges.withColumn("r", rank).where(F.col("r") <= max_degree).drop("r")


def user_profiles(spark: SparkSession, lake_root: Path) -> DataFrame:
    """Profile attributes as strings; an unknown age (bucket 0) is ``unknown`` like the other attributes."""
    profile = user_profile(profile_tables(spark, lake_root)[0])
    bucket = F.col("age_bucket")
    return profile.withColumn("age_bucket", F.when(bucket == 0, F.lit(UNKNOWN)).otherwise(bucket.cast("string")))


def user_user_edges(profiles: DataFrame, degree: int, seed: int = 42) -> DataFrame:
    """Lookalike edges from shared attributes; unknown attribute values never link users.

    Each block (users equal on one of ``USER_BLOCKS``) is shuffled by a seeded hash; the user at position p
    links to the users at p + 1 .. p + reach (mod the block's size). All blocks are ranked in one window
    pass, the next users read with ``lead``, and the wrap-around ones (past the block's end) from the
    block's first ``reach`` users, a small broadcast table: one shuffle for the candidates of all blocks."""
    reach = max(1, math.ceil(degree / 2))
    keyed = None
    for b, block in enumerate(USER_BLOCKS):
        known = profiles.where(F.greatest(*[(F.col(a) == UNKNOWN).cast("int") for a in block]) == 0)
        frame = known.select(
            Col.USER_ID,
            F.concat_ws("\x1f", F.lit(str(b)), *[F.col(a) for a in block]).alias("block"),
            F.xxhash64(F.col(Col.USER_ID), F.lit(seed + b)).alias("order"),
        )
        keyed = frame if keyed is None else keyed.unionByName(frame)
    assert keyed is not None
    w = Window.partitionBy("block").orderBy("order")
    ranked = keyed.select(
        Col.USER_ID, "block", (F.row_number().over(w) - 1).alias("pos"),
        F.count(F.lit(1)).over(Window.partitionBy("block")).alias("size"),
        F.array(*[F.lead(Col.USER_ID, k).over(w) for k in range(1, reach + 1)]).alias("next"),
    ).where(F.col("size") > 1)  # fmt: skip
    heads = ranked.where(F.col("pos") < reach).select("block", F.col("pos").alias("hpos"), F.col(Col.USER_ID).alias("head"))
    links = ranked.select(
        "block", F.col(Col.USER_ID).alias("src"), "pos", "size", "next",
        F.explode(F.sequence(F.lit(1), F.least(F.lit(reach), F.col("size") - 1))).alias("k"),
    ).withColumn("dst", F.element_at("next", F.col("k").cast("int")))  # fmt: skip
    links = links.withColumn("hpos", F.when(F.col("dst").isNull(), F.col("pos") + F.col("k") - F.col("size")))
    links = links.join(F.broadcast(heads), ["block", "hpos"], "left")
    pairs = links.select("src", F.coalesce(F.col("dst"), F.col("head")).alias("dst"))
    pairs = pairs.unionByName(pairs.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    pairs = pairs.where(F.col("src") != F.col("dst"))  # a pair found in several blocks is here several times
    src_attrs = profiles.select(F.col(Col.USER_ID).alias("src"), *[F.col(c).alias(f"s_{c}") for c in USER_ATTRS])
    dst_attrs = profiles.select(F.col(Col.USER_ID).alias("dst"), *[F.col(c).alias(f"d_{c}") for c in USER_ATTRS])
    shared = sum(
        ((F.col(f"s_{c}") == F.col(f"d_{c}")) & (F.col(f"s_{c}") != UNKNOWN)).cast("int") for c in USER_ATTRS
    )
    weighted = pairs.join(src_attrs, "src").join(dst_attrs, "dst").select("src", "dst", shared.cast("double").alias("weight"))
    tie = F.xxhash64(F.col("src"), F.col("dst"), F.lit(seed))
    # the copies of a pair share a dense rank, and the rows are already partitioned by src when the copies
    # are dropped: one shuffle (the window's) instead of a distinct's and the window's
    rank = F.dense_rank().over(Window.partitionBy("src").orderBy(F.desc("weight"), tie, "dst"))
    return weighted.withColumn("r", rank).where(F.col("r") <= degree).dropDuplicates(["src", "dst"]).drop("r")


def graphs_dir(lake_root: Path | str, as_of: dt.date) -> Path:
    return Path(lake_root) / LakeTable.GRAPHS / f"{AS_OF}={as_of.isoformat()}"


def latest_graphs_dir(lake_root: Path | str) -> Path:
    """The newest ``graphs/as_of=D`` folder."""
    found = sorted((Path(lake_root) / LakeTable.GRAPHS).glob(f"{AS_OF}=*"))
    if not found:
        raise FileNotFoundError(f"no graphs under {Path(lake_root) / LakeTable.GRAPHS}: run `recstack graphs`")
    return found[-1]


def run_graphs_job(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    half_life_days: float = 14.0,
    cooccurrence_window: int = 3,
    item_neighbors_max: int = 200,
    user_user_degree: int = 20,
) -> dict[str, int]:
    """Write the partials of [start, end] and the graphs as of ``end``; returns edge and node counts."""
    root = Path(lake_root)
    if not (root / LakeTable.SESSIONS).exists():
        raise FileNotFoundError(f"no sessions at {root / LakeTable.SESSIONS}: run `recstack sessions` first")
    write_graph_partials(spark, root, start, end, half_life_days)
    out = graphs_dir(root, end)
    ui = user_item_edges(spark, root, end, half_life_days).cache()
    user_table, item_table = profile_tables(spark, root)
    users = id_map(user_table.select(Col.USER_ID).unionByName(ui.select(Col.USER_ID)), Col.USER_ID).cache()
    items = id_map(item_table.select(Col.ITEM_ID).unionByName(ui.select(Col.ITEM_ID)), Col.ITEM_ID).cache()
    users.write.mode("overwrite").parquet(str(out / "nodes_users"))
    items.write.mode("overwrite").parquet(str(out / "nodes_items"))
    uidx = F.broadcast(users.withColumnRenamed("idx", "user_idx"))
    iidx = F.broadcast(items.withColumnRenamed("idx", "item_idx"))
    ui.join(uidx, Col.USER_ID).join(iidx, Col.ITEM_ID).write.mode("overwrite").parquet(str(out / "user_item"))

    ii = item_item_edges(spark, root, end, cooccurrence_window, item_neighbors_max)
    ii = ii.join(F.broadcast(items.select(F.col(Col.ITEM_ID).alias("src"), F.col("idx").alias("src_idx"))), "src")
    ii = ii.join(F.broadcast(items.select(F.col(Col.ITEM_ID).alias("dst"), F.col("idx").alias("dst_idx"))), "dst")
    ii.write.mode("overwrite").parquet(str(out / "item_item"))

    uu = user_user_edges(user_profiles(spark, root), user_user_degree)
    uu = uu.join(F.broadcast(users.select(F.col(Col.USER_ID).alias("src"), F.col("idx").alias("src_idx"))), "src")
    uu = uu.join(F.broadcast(users.select(F.col(Col.USER_ID).alias("dst"), F.col("idx").alias("dst_idx"))), "dst")
    uu.write.mode("overwrite").parquet(str(out / "user_user"))
    counts = {  # from the Parquet footers, no data read
        name: pq.ParquetDataset(out / name).read(columns=[]).num_rows
        for name in ("nodes_users", "nodes_items", "user_item", "item_item", "user_user")
    }
    ui.unpersist()
    users.unpersist()
    items.unpersist()
    return counts
