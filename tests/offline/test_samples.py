"""Spark sample join on hand-made events with the edge cases that matter."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
from recstack.features.keys import Col
from recstack.features.schema import EVENT_SCHEMA
from recstack.offline.jobs.samples import run_samples_job
from recstack.offline.lake import EventLake

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _ev(eid: str, kind: str, req: str, user: int, item: int, secs: float, label: int | None = None,
        value: float | None = None) -> dict:  # fmt: skip
    return {
        Col.EVENT_ID: eid, Col.EVENT_TYPE: kind, Col.TS: T0 + dt.timedelta(seconds=secs), Col.USER_ID: user,
        Col.ITEM_ID: item, Col.REQUEST_ID: req, Col.VALUE: value, Col.LABEL: label, Col.PAGE: "home",
        Col.SLOT: 0, Col.DEVICE: "ios", Col.CITY: "c", Col.VARIANT: "default", Col.DEVICE_ID: None, Col.IP: None,
    }  # fmt: skip


def test_click_attribution_window_duplicates_late_clicks_and_likes(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = [
        _ev("i1", "impression", "r1", 1, 10, 0),
        _ev("c1", "click", "r1", 1, 10, 5),
        _ev("c1b", "click", "r1", 1, 10, 9),  # duplicate click: still one sample, first click time
        _ev("rt1", "rating", "r1", 1, 10, 60, label=1, value=5.0),
        _ev("i2", "impression", "r1", 1, 11, 0),  # shown, never clicked
        _ev("i3", "impression", "r2", 2, 10, 0),
        _ev("c3", "click", "r2", 2, 10, 1801),  # outside the 1800 s window
        _ev("i4", "impression", "r3", 3, 12, 12 * 3600 - 60),  # 23:59 on day 1
        _ev("c4", "click", "r3", 3, 12, 12 * 3600 + 60),  # late click lands in the next day's partition
        _ev("i5", "impression", "r4", 4, 13, 0),
        _ev("i5b", "impression", "r4", 4, 13, 0),  # impression logged twice
        _ev("c5", "click", "r4", 5, 13, 3),  # another user's click does not count
        _ev("c6", "click", "r9", 6, 14, 3),  # click with no impression: no sample
    ]
    lake = EventLake(tmp_path / "lake")
    stage = lake.stage()
    stage.write(pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    stage.commit()
    day = T0.date()
    n = run_samples_job(spark, lake.root, day, day, attribution_window_s=1800)
    assert n == 5
    rows = {
        (r[Col.REQUEST_ID], r[Col.ITEM_ID]): r
        for r in spark.read.parquet(str(lake.root / "samples")).collect()
    }
    assert rows[("r1", 10)][Col.CLICK] == 1
    # Spark hands back naive datetimes in the session time zone, which is UTC
    assert rows[("r1", 10)][Col.CLICK_TS].replace(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=5)
    assert rows[("r1", 10)][Col.LIKE] == 1
    assert rows[("r1", 11)][Col.CLICK] == 0 and rows[("r1", 11)][Col.LIKE] is None
    assert rows[("r2", 10)][Col.CLICK] == 0
    assert rows[("r3", 12)][Col.CLICK] == 1
    assert rows[("r4", 13)][Col.CLICK] == 0
    assert all(str(r[Col.EVENT_DATE]) == "2026-03-01" for r in rows.values())

    # re-running the day replaces it exactly
    assert run_samples_job(spark, lake.root, day, day) == 5
    assert spark.read.parquet(str(lake.root / "samples")).count() == 5


def test_the_session_jvm_runs_the_configured_collector(spark) -> None:  # type: ignore[no-untyped-def]
    # SparkSettings.java_options reaches the driver JVM: ParallelGC's collectors are "PS Scavenge" and
    # "PS MarkSweep" (G1, Java's default, would show "G1 Young Generation")
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    names = {bean.getName() for bean in beans}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names
    assert spark.conf.get("spark.executor.extraJavaOptions") == "-XX:+UseParallelGC"
