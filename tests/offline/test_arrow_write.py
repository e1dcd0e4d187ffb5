"""The Arrow-side partitioned writer (``write_partitioned_arrow``): what Spark reads back, the date-exact
replacement, and the commit protocol (a failed job changes nothing and leaves nothing behind)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import types as T
from recstack.offline.jobs.common import _commit, conform, write_partitioned_arrow
from recstack.offline.jobs.samples import SAMPLE_COLUMNS, SAMPLES_ARROW_SCHEMA, build_samples

from tests.offline.test_samples_parity import DAY, _lake, generated_events

D1, D2, D3 = dt.date(2026, 5, 1), dt.date(2026, 5, 2), dt.date(2026, 5, 3)
OUT = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("double", pa.int64(), nullable=False),
        pa.field("note", pa.string()),
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)


def _source(spark, days: list[dt.date], per_day: int = 50):  # type: ignore[no-untyped-def]
    rows = [(i + 1000 * k, day) for k, day in enumerate(days) for i in range(per_day)]
    frame = spark.createDataFrame(rows, "id long, event_date date")
    return frame.repartition(3, "id")


def _double(table: pa.Table) -> pa.Table:
    ids = table["id"]
    notes = pa.array([None if i % 7 == 0 else f"n{i}" for i in ids.to_pylist()], pa.string())
    return pa.table({"event_date": table["event_date"], "id": ids, "double": pc.multiply(ids, 2), "note": notes})


def _read(root: Path) -> dict[tuple[int, str], int]:
    got = pq.read_table(root / "t", partitioning="hive").to_pylist()
    return {(r["id"], str(r["event_date"])): r["double"] for r in got}


@pytest.mark.integration
def test_writes_dates_spark_reads_back_and_replaces_exactly_the_dates_written(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = write_partitioned_arrow(_source(spark, [D1, D2]), _double, OUT, tmp_path, "t")
    assert rows == {D1: 50, D2: 50}
    back = spark.read.parquet(str(tmp_path / "t"))
    types = {f.name: f.dataType for f in back.schema.fields}
    assert types == {"id": T.LongType(), "double": T.LongType(), "note": T.StringType(), "event_date": T.DateType()}
    assert back.where("double != 2 * id").count() == 0 and back.where("note is null").count() > 0
    # the columns declared non-null are required in the Parquet files (no definition levels)
    files = sorted((tmp_path / "t").rglob("*.parquet"))
    schema = pq.ParquetFile(files[0]).schema
    assert schema.column(0).max_definition_level == 0 and schema.column(2).max_definition_level == 1
    before = _read(tmp_path)

    # D2 again (other ids) and D3 new: D2 is replaced exactly, D1 untouched, D3 added
    rows = write_partitioned_arrow(_source(spark, [D2, D3], per_day=20), _double, OUT, tmp_path, "t")
    assert rows == {D2: 20, D3: 20}
    after = _read(tmp_path)
    assert {k: v for k, v in after.items() if k[1] == str(D1)} == {k: v for k, v in before.items() if k[1] == str(D1)}
    assert sorted(i for i, d in after if d == str(D2)) == list(range(20))
    assert sorted(i for i, d in after if d == str(D3)) == list(range(1000, 1020))
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith("_")]  # no staging left


@pytest.mark.integration
def test_a_failed_job_changes_nothing_and_leaves_no_staging(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_partitioned_arrow(_source(spark, [D1, D2]), _double, OUT, tmp_path, "t")
    before = _read(tmp_path)

    def fails_on_one_partition(table: pa.Table) -> pa.Table:
        if 1005 in table["id"].to_pylist():
            raise RuntimeError("kernel failed")
        return _double(table)

    def nulls_in_required(table: pa.Table) -> pa.Table:
        out = _double(table)
        return out.set_column(out.schema.get_field_index("double"), "double", pa.nulls(len(out), pa.int64()))

    with pytest.raises(Exception, match="kernel failed"):
        write_partitioned_arrow(_source(spark, [D1, D2]), fails_on_one_partition, OUT, tmp_path, "t")
    with pytest.raises(Exception, match="nulls in non-nullable output columns"):
        write_partitioned_arrow(_source(spark, [D1, D2]), nulls_in_required, OUT, tmp_path, "t")
    assert _read(tmp_path) == before
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith("_")]


def test_refuses_an_unknown_codec_and_a_schema_without_the_date(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = _source(spark, [D1])
    with pytest.raises(ValueError, match="event_date"):
        write_partitioned_arrow(source, _double, pa.schema([("id", pa.int64())]), tmp_path, "t")
    spark.conf.set("spark.sql.parquet.compression.codec", "lzo")
    try:
        with pytest.raises(ValueError, match="lzo"):
            write_partitioned_arrow(source, _double, OUT, tmp_path, "t")
    finally:
        spark.conf.set("spark.sql.parquet.compression.codec", "snappy")
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())


def test_commit_moves_only_the_listed_files(tmp_path: Path) -> None:
    # a retried or speculative task attempt leaves its own file in the staging folder; only the files the
    # successful attempts returned are committed
    staging = tmp_path / "t" / "_staging-x"
    folder = staging / "event_date=2026-05-01"
    folder.mkdir(parents=True)
    kept, orphan = folder / "part-00000-1-a.parquet", folder / "part-00000-0-b.parquet"
    pq.write_table(pa.table({"id": [1]}), kept)
    pq.write_table(pa.table({"id": [2]}), orphan)
    old = tmp_path / "t" / "event_date=2026-05-01"
    old.mkdir()
    pq.write_table(pa.table({"id": [3]}), old / "part-old.parquet")
    _commit(tmp_path / "t", staging, {D1: [kept]})
    assert [p.name for p in old.iterdir()] == [kept.name]
    assert orphan.exists()  # left in staging, which the writer deletes


def test_conform_orders_casts_and_checks_columns() -> None:
    table = pa.table({"event_date": [D1], "note": ["x"], "double": pa.array([4], pa.int32()), "id": [2]})
    out = conform(table, OUT)
    assert out.schema == OUT and out.to_pylist() == [{"id": 2, "double": 4, "note": "x", "event_date": D1}]
    with pytest.raises(ValueError, match="lacks columns"):
        conform(table.drop_columns(["note"]), OUT)


@pytest.mark.integration
def test_samples_written_by_arrow_equal_the_spark_plan_and_keep_their_types(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from recstack.offline.jobs.samples import run_samples_job

    lake = _lake(tmp_path, generated_events())
    n = run_samples_job(spark, lake.root, DAY, DAY, attribution_window_s=1800)
    written = spark.read.parquet(str(lake.root / "samples"))
    planned = build_samples(spark, lake.root, DAY, DAY, 1800)
    # readers see the types they saw when Spark's own writer wrote the table
    planned.write.partitionBy("event_date").parquet(str(tmp_path / "by_spark"))
    by_spark = spark.read.parquet(str(tmp_path / "by_spark"))
    assert [(f.name, f.dataType) for f in written.schema.fields] == [
        (f.name, f.dataType) for f in by_spark.schema.fields
    ]
    assert n == planned.count() == written.count() > 300
    assert written.select(*SAMPLE_COLUMNS).exceptAll(planned).count() == 0
    assert planned.exceptAll(written.select(*SAMPLE_COLUMNS)).count() == 0
    files = sorted((lake.root / "samples").rglob("*.parquet"))
    assert pq.read_schema(files[0]).remove_metadata() == SAMPLES_ARROW_SCHEMA.remove(
        SAMPLES_ARROW_SCHEMA.get_field_index("event_date")
    )
