"""Reading and writing the lake's date-partitioned tables from Spark, shared by every offline job."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.dataset as ds
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from recstack.features.keys import Col, LakeTable
from recstack.offline.lake import DATE_PARTITIONING


def read_events(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date) -> DataFrame:
    """Events with ``start <= event_date <= end`` (partition pruning on the lake layout)."""
    path = str(Path(lake_root) / LakeTable.EVENTS)
    return (
        spark.read.option("basePath", path)
        .parquet(path)
        .where(F.col(Col.EVENT_DATE).between(F.lit(start), F.lit(end)))
    )


def read_partitioned(
    spark: SparkSession, lake_root: Path | str, table: str, start: dt.date | None, end: dt.date
) -> DataFrame:
    """Rows of a date-partitioned lake table with ``start <= event_date <= end`` (no lower bound if None)."""
    path = Path(lake_root) / table
    if not path.exists():
        raise FileNotFoundError(f"lake table {table!r} missing at {path}")
    frame = spark.read.parquet(str(path))
    cond = F.col(Col.EVENT_DATE) <= F.lit(end)
    if start is not None:
        cond = cond & (F.col(Col.EVENT_DATE) >= F.lit(start))
    return frame.where(cond)


def write_partitioned(frame: DataFrame, lake_root: Path | str, table: str) -> str:
    """Write ``frame`` partitioned by ``event_date``, replacing exactly the partitions present in it.

    Each task writes the dates it holds (no extra shuffle); jobs size their partitions to the data.
    """
    path = str(Path(lake_root) / table)
    frame.write.mode("overwrite").partitionBy(Col.EVENT_DATE).parquet(path)
    return path


def count_rows(lake_root: Path | str, table: str, start: dt.date, end: dt.date) -> int:
    """Rows of a date-partitioned table in [start, end], from the Parquet footers (no data read)."""
    path = Path(lake_root) / table
    if not path.exists():
        return 0
    dataset = ds.dataset(path, format="parquet", partitioning=DATE_PARTITIONING)
    flt = (ds.field(Col.EVENT_DATE) >= start.isoformat()) & (ds.field(Col.EVENT_DATE) <= end.isoformat())
    return int(dataset.count_rows(filter=flt))


def partitions_for(spark: SparkSession, lake_root: Path | str, start: dt.date, end: dt.date) -> int:
    """Shuffle partitions for a job over [start, end] of events: ~1M events each (a Python kernel holds one
    partition in memory), at least the session's default parallelism, at most spark.sql.shuffle.partitions
    times 8, rounded up to a multiple of the default parallelism (11 tasks on 2 cores run 6 rounds, the last
    on one core; 12 smaller ones run 6 full rounds)."""
    base = Path(lake_root) / LakeTable.EVENTS
    size = 0
    day = start
    while day <= end:
        folder = base / f"{Col.EVENT_DATE}={day.isoformat()}"
        if folder.exists():
            size += sum(f.stat().st_size for f in folder.glob("*.parquet"))
        day += dt.timedelta(days=1)
    by_size = size // (16 << 20) + 1  # ~16 MB of Parquet events is about 1M events
    default = int(spark.conf.get("spark.sql.shuffle.partitions") or 8)
    cores = spark.sparkContext.defaultParallelism
    n = min(max(by_size, cores), default * 8)
    return int(-(-n // cores) * cores)
