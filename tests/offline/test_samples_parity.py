"""Spark samples job vs the pandas reference, and the point-in-time rule on crafted events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from recstack.features.definitions import RECENT_ITEMS, WINDOW_FEATURES
from recstack.features.keys import Col
from recstack.features.schema import EVENT_SCHEMA
from recstack.offline.jobs.reference import samples_reference
from recstack.offline.jobs.samples import run_samples_job
from recstack.offline.lake import EventLake

DAY = dt.date(2026, 3, 2)
T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def _row(eid: str, kind: str, req: str | None, user: int, item: int, ts: dt.datetime,
         label: int | None = None) -> dict:  # fmt: skip
    return {
        Col.EVENT_ID: eid, Col.EVENT_TYPE: kind, Col.TS: ts, Col.USER_ID: user, Col.ITEM_ID: item,
        Col.REQUEST_ID: req, Col.VALUE: None if label is None else 4.0 + label - 1 + 0.0, Col.LABEL: label,
        Col.PAGE: "home", Col.SLOT: 0, Col.DEVICE: "web", Col.CITY: None, Col.VARIANT: None,
        Col.DEVICE_ID: None, Col.IP: None,
    }  # fmt: skip


def generated_events(seed: int = 7) -> list[dict]:
    """Random traffic over three days with the edge cases: window boundaries, late and duplicate clicks,
    duplicate impressions, users with one event, many events at the same millisecond."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    n = 0

    def add(kind: str, req: str | None, user: int, item: int, ts: dt.datetime, label: int | None = None) -> None:
        nonlocal n
        n += 1
        rows.append(_row(f"e{n:06d}", kind, req, user, item, ts, label))

    start = T0 - dt.timedelta(days=1)
    for r in range(900):
        user = int(rng.integers(1, 40))
        # clustered in time so that windows of 30 min / 1 h / 1 day all matter; whole seconds make ties common
        ts = start + dt.timedelta(seconds=int(rng.integers(0, 3 * 86400) // 7 * 7))
        items = rng.choice(np.arange(1, 25), size=int(rng.integers(1, 6)), replace=False)
        for item in items:
            add("impression", f"r{r}", user, int(item), ts)
            if rng.random() < 0.05:
                add("impression", f"r{r}", user, int(item), ts)  # logged twice
            u = rng.random()
            if u < 0.25:
                delay = int(rng.choice([0, 1, 1799, 1800, 5, 600]))
                add("click", f"r{r}", user, int(item), ts + dt.timedelta(seconds=delay))
                if rng.random() < 0.2:
                    add("click", f"r{r}", user, int(item), ts + dt.timedelta(seconds=delay + 3))  # duplicate
                if rng.random() < 0.5:
                    add("rating", f"r{r}", user, int(item), ts + dt.timedelta(seconds=60), int(rng.random() < 0.6))
            elif u < 0.28:
                add("click", f"r{r}", user, int(item), ts + dt.timedelta(milliseconds=1_800_001))  # too late
    # late click across midnight, a click without an impression, a user with a single event
    add("impression", "late", 50, 3, T0 + dt.timedelta(hours=23, minutes=59, seconds=30))
    add("click", "late", 50, 3, T0 + dt.timedelta(days=1, seconds=10))
    add("click", "orphan", 51, 4, T0 + dt.timedelta(hours=5))
    add("impression", "single", 52, 5, T0 + dt.timedelta(hours=6))
    return rows


def _lake(tmp_path: Path, rows: list[dict]) -> EventLake:
    lake = EventLake(tmp_path / "lake")
    with lake.stage() as stage:
        stage.write(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
        stage.commit()
    return lake


def _spark_samples(spark, lake: EventLake, start: dt.date, end: dt.date) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    run_samples_job(spark, lake.root, start, end, attribution_window_s=1800)
    out = pd.read_parquet(lake.root / "samples")
    out[Col.TS] = pd.to_datetime(out[Col.TS], utc=True)
    out[Col.CLICK_TS] = pd.to_datetime(out[Col.CLICK_TS], utc=True)
    return out


@pytest.mark.integration
def test_spark_samples_equal_pandas_reference(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = generated_events()
    lake = _lake(tmp_path, rows)
    got = _spark_samples(spark, lake, DAY, DAY).sort_values([Col.REQUEST_ID, Col.ITEM_ID]).reset_index(drop=True)
    events = pd.DataFrame(rows)
    events[Col.TS] = pd.to_datetime(events[Col.TS], utc=True)
    want = samples_reference(events, DAY, DAY, 1800).sort_values([Col.REQUEST_ID, Col.ITEM_ID])
    want = want.reset_index(drop=True)

    assert len(got) == len(want) > 300
    assert got[Col.CLICK].sum() > 20 and got[Col.LIKE].notna().sum() > 10  # the data exercises the rules
    for col in (Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID, Col.TS, Col.CLICK):
        assert got[col].tolist() == want[col].tolist(), col
    assert got[Col.CLICK_TS].equals(want[Col.CLICK_TS].astype(got[Col.CLICK_TS].dtype))
    assert got[Col.LIKE].astype("Int64").tolist() == want[Col.LIKE].astype("Int64").tolist()
    for w in WINDOW_FEATURES:
        assert got[w.name].tolist() == want[w.name].tolist(), w.name
        assert got[w.name].max() > 0, w.name
    assert [list(v) for v in got[RECENT_ITEMS]] == want[RECENT_ITEMS].tolist()
    # the late click after midnight is attributed, the lone impression is a sample with empty history
    late = got[got[Col.REQUEST_ID] == "late"].iloc[0]
    assert late[Col.CLICK] == 1
    single = got[got[Col.REQUEST_ID] == "single"].iloc[0]
    assert single["user_clicks_1d"] == 0 and len(single[RECENT_ITEMS]) == 0


@pytest.mark.integration
def test_features_never_see_the_sample_time_or_later(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    t = T0 + dt.timedelta(hours=12)
    ms = dt.timedelta(milliseconds=1)
    rows = [
        _row("q", "impression", "rq", 1, 100, t),  # the sample
        # the user's clicks: exactly 30 min before (inside), 30 min + 1 ms before (outside 30m, inside 1h),
        # at t (not seen), after t (not seen)
        _row("c1", "click", "a", 1, 201, t - dt.timedelta(minutes=30)),
        _row("c2", "click", "b", 1, 202, t - dt.timedelta(minutes=30) - ms),
        _row("c3", "click", "c", 1, 203, t),
        _row("c4", "click", "d", 1, 204, t + ms),
        _row("c5", "click", "e", 1, 205, t - dt.timedelta(days=1)),  # exactly a day before: inside 1d
        _row("c6", "click", "f", 1, 206, t - dt.timedelta(days=1) - ms),  # outside every window
        # other users' exposures and clicks of the item: before, at and after t
        _row("x1", "impression", "g", 2, 100, t - ms),
        _row("x2", "impression", "h", 3, 100, t),
        _row("x3", "impression", "i", 4, 100, t + ms),
        _row("x4", "click", "g", 2, 100, t - dt.timedelta(hours=1)),
        _row("x5", "click", "h", 3, 100, t),
    ]
    lake = _lake(tmp_path, rows)
    got = _spark_samples(spark, lake, DAY, DAY)
    s = got[got[Col.REQUEST_ID] == "rq"].iloc[0]
    assert (s["user_clicks_30m"], s["user_clicks_1h"], s["user_clicks_1d"]) == (1, 2, 3)
    assert list(s[RECENT_ITEMS]) == [201, 202, 205]
    assert (s["item_exposures_1h"], s["item_exposures_1d"]) == (1, 1)
    assert (s["item_clicks_1h"], s["item_clicks_1d"]) == (1, 1)
