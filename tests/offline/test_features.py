"""Features job: Spark/Python parity of the transforms, point-in-time daily features, incrementality, stats."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from recstack.features.definitions import (
    CROSSES,
    DENSE_FEATURES,
    FEATURES_BY_NAME,
    age_bucket,
    hour_of_day,
    weekday,
    zip_prefix,
)
from recstack.features.keys import Col
from recstack.features.schema import EVENT_SCHEMA
from recstack.features.spark_exprs import age_bucket_col, zip_prefix_col
from recstack.offline.jobs.features import feature_stats, run_features_job, training_table
from recstack.offline.jobs.samples import run_samples_job
from recstack.offline.jobs.training_table import read_training_table
from recstack.offline.lake import EventLake

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def _ev(eid: str, kind: str, req: str, user: int, item: int, ts: dt.datetime, value: float | None = None) -> dict:
    return {
        Col.EVENT_ID: eid, Col.EVENT_TYPE: kind, Col.TS: ts, Col.USER_ID: user, Col.ITEM_ID: item,
        Col.REQUEST_ID: req, Col.VALUE: value, Col.LABEL: None if value is None else int(value >= 4),
        Col.PAGE: "home", Col.SLOT: 1, Col.DEVICE: "ios", Col.CITY: None, Col.VARIANT: None,
        Col.DEVICE_ID: None, Col.IP: None,
    }  # fmt: skip


def _at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


def _make_lake(root: Path) -> EventLake:
    """Three days: user 1 is active every day, user 2 only on D2; item 10 is rated on D1 and D2."""
    rows = []
    for d, day in enumerate((D1, D2, D3)):
        for h in range(3):
            req = f"r{d}{h}"
            rows += [_ev(f"i{d}{h}a", "impression", req, 1, 10, _at(day, 9 + h)),
                     _ev(f"i{d}{h}b", "impression", req, 1, 11, _at(day, 9 + h))]  # fmt: skip
            if h < d + 1:  # D1: 1 click, D2: 2 clicks, D3: 3 clicks on item 10
                rows.append(_ev(f"c{d}{h}", "click", req, 1, 10, _at(day, 9 + h, 1)))
                rows.append(_ev(f"t{d}{h}", "rating", req, 1, 10, _at(day, 9 + h, 2), value=5.0 - d))
    rows += [_ev("i2x", "impression", "rx", 2, 10, _at(D2, 20)), _ev("c2x", "click", "rx", 2, 10, _at(D2, 20, 1))]
    lake = EventLake(root)
    with lake.stage() as stage:
        stage.write(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
        stage.commit()
    lake.write_users(pd.DataFrame({Col.USER_ID: [1, 2], Col.AGE: [24, None], Col.GENDER: ["F", None],
                                   Col.OCCUPATION: ["writer", None], Col.ZIP_CODE: ["55414", None],
                                   Col.CITY: [None, None]}))  # fmt: skip
    lake.write_items(pd.DataFrame({Col.ITEM_ID: [10, 11], Col.TITLE: ["a", "b"],
                                   Col.RELEASE_DATE: [dt.date(2020, 3, 1), None],
                                   Col.GENRES: [["Drama", "Comedy"], None], Col.TAGS: [None, None]}))  # fmt: skip
    return lake


def _training(root: Path) -> pd.DataFrame:
    t = read_training_table(root)
    return t.sort_values([Col.EVENT_DATE, Col.TS, Col.ITEM_ID]).reset_index(drop=True)


@pytest.mark.integration
def test_transforms_match_the_python_definitions(spark) -> None:  # type: ignore[no-untyped-def]
    ages = [None, 0, 35, 17, 18, 24, 25, 49, 50, 55, 56, 90]
    zips = [None, "", "12", " 55414", "k7l5j", "E2A 4Z3", "55414", "0", "123", None, "abc", "10001-1234"]
    df = spark.createDataFrame(pd.DataFrame({"age": pd.array(ages, dtype="Int64"), "zip": zips}))
    got = df.select(age_bucket_col(F.col("age")).alias("b"), zip_prefix_col(F.col("zip")).alias("z")).collect()
    assert [r["b"] for r in got] == [age_bucket(a) for a in ages]
    assert [r["z"] for r in got] == [zip_prefix(z) for z in zips]
    assert len({age_bucket(a) for a in ages}) == 8  # every bucket exercised



def test_the_declared_crosses_are_what_the_ranker_hashes() -> None:
    from recstack.offline.jobs.rank import CROSSES as RANKER_CROSSES
    from recstack.offline.jobs.rank import FIELDS

    assert [(c.left, c.right) for c in CROSSES] == RANKER_CROSSES
    for cross in CROSSES:  # both sides are declared features the encoder has codes for
        assert FEATURES_BY_NAME[cross.left].kind == "categorical" and cross.left in FIELDS
        assert FEATURES_BY_NAME[cross.right].kind in ("categorical", "multi")
        assert cross.right in FIELDS or cross.right == Col.GENRES


@pytest.mark.integration
def test_daily_features_are_as_of_the_start_of_the_day_and_runs_are_incremental(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lake = _make_lake(tmp_path / "full")
    run_samples_job(spark, lake.root, D1, D3)
    out = run_features_job(spark, lake.root, D1, D3)
    t = _training(lake.root)
    assert out["rows"] == len(t) == 19
    first = t[(t[Col.USER_ID] == 1) & (t[Col.ITEM_ID] == 10)].groupby(Col.EVENT_DATE).first()
    # as of 00:00: nothing on D1; D1's 6 impressions / 1 click / rating 5 on D2; on D3 D1 + D2 (incl. user 2)
    assert first["user_impressions"].tolist() == [0, 6, 12]
    assert first["user_clicks"].tolist() == [0, 1, 3]
    assert first["user_avg_rating"].tolist() == [3.0, 5.0, (5 + 4 + 4) / 3]
    assert first["user_active_days"].tolist() == [0, 1, 2]
    assert first["item_impressions"].tolist() == [0, 3, 7]
    assert first["item_clicks"].tolist() == [0, 1, 4]
    assert first["item_ctr"].tolist() == pytest.approx([0.1, 2 / 13, 5 / 17])
    assert first["item_age_days"].tolist() == pytest.approx([0.0, 15 / 24, 1 + 15 / 24])
    assert first["age_bucket"].tolist() == [2, 2, 2] and first["zip_prefix"].tolist() == ["554"] * 3
    assert sorted(first["genres"].iloc[0]) == ["Comedy", "Drama"] and first["release_year"].iloc[0] == 2020
    u2 = t[t[Col.USER_ID] == 2].iloc[0]
    assert (u2["gender"], u2["age_bucket"], u2["user_impressions"]) == ("unknown", 0, 0)
    # Spark's hour / weekday agree with the online functions on every row
    for ts, hour, day in zip(t[Col.TS], t["hour"], t["weekday"], strict=True):
        assert (hour, day) == (hour_of_day(ts.to_pydatetime()), weekday(ts.to_pydatetime()))

    # statistics: every dense feature, values that agree with the table
    stats = json.loads(Path(out["stats"]).read_text())
    assert set(stats["dense"]) == set(DENSE_FEATURES) and stats["rows"] == 19
    # every dense feature's statistics equal those of the joined training table (the job weights the as-of
    # rows by their samples instead of joining them onto every sample)
    for name in DENSE_FEATURES:
        x = t[name].astype(float)
        x = np.log1p(x) if FEATURES_BY_NAME[name].log1p else x
        got = stats["dense"][name]
        assert [got["mean"], got["std"], got["min"], got["max"]] == pytest.approx(
            [x.mean(), x.std(ddof=0), x.min(), x.max()], rel=1e-9, abs=1e-12), name
    assert len({stats["dense"][n]["mean"] for n in DENSE_FEATURES}) > 10  # not one number repeated
    shuffled = feature_stats(spark, lake.root, D1, D3, vocab_max=100, broadcast_rows_max=0)  # no broadcast
    for name in DENSE_FEATURES:
        assert shuffled["dense"][name] == pytest.approx(stats["dense"][name], rel=1e-9), name
    assert set(stats["vocab"]["genres"]) == {"Drama", "Comedy"}
    assert stats["vocab"]["gender"][0] == "F" and "unknown" in stats["vocab"]["gender"]
    assert len(stats["feature_set_version"]) == 16

    # the samples are stored keyed: the day's features live once per (entity, day) and are joined on read;
    # Spark's join (the statistics) and the Arrow readers' join (the rankers) give the same table
    assert "user_impressions" not in pd.read_parquet(lake.root / "samples").columns
    spark_table = training_table(spark, lake.root, D1, D3, broadcast_rows_max=0).toPandas()  # the shuffled join
    spark_table[Col.EVENT_DATE] = spark_table[Col.EVENT_DATE].astype(str)
    spark_table = spark_table.sort_values([Col.EVENT_DATE, Col.TS, Col.ITEM_ID]).reset_index(drop=True)
    for col in ["user_impressions", "user_avg_rating", "item_ctr", "item_age_days", "age_bucket", "gender", "release_year"]:
        if t[col].dtype.kind == "f":
            np.testing.assert_allclose(spark_table[col], t[col], err_msg=col)
        else:
            assert spark_table[col].tolist() == t[col].tolist(), col
    assert [sorted(g) for g in spark_table[Col.GENRES]] == [sorted(g) for g in t[Col.GENRES]]
    recent = read_training_table(lake.root, [Col.USER_ID, "user_clicks", Col.CLICK], since=D3)
    assert list(recent.columns) == [Col.USER_ID, "user_clicks", Col.CLICK] and len(recent) == 6
    with pytest.raises(KeyError, match="no_such_feature"):
        read_training_table(lake.root, [Col.USER_ID, "no_such_feature"])

    # the daily tier: D3 alone on a lake that has D1..D2 done gives the same rows
    before = t.copy()
    run_samples_job(spark, lake.root, D3, D3)
    run_features_job(spark, lake.root, D3, D3)
    pd.testing.assert_frame_equal(_training(lake.root), before)

    # a first run that starts at D3 back-fills the partials of D1 and D2 instead of starting from zero
    fresh = _make_lake(tmp_path / "fresh")
    assert run_samples_job(spark, fresh.root, D3, D3) == 6
    run_features_job(spark, fresh.root, D3, D3)
    written = sorted(p.name for p in (fresh.root / "user_daily").iterdir() if p.name.startswith("event_date="))
    assert written == [f"event_date={d}" for d in (D1, D2, D3)]
    on_d3 = before[before[Col.EVENT_DATE] == D3.isoformat()].reset_index(drop=True)
    pd.testing.assert_frame_equal(_training(fresh.root), on_d3)

    # the latest snapshots include every event up to the end
    users = pd.read_parquet(lake.root / "user_features").set_index(Col.USER_ID)
    assert users.loc[1, "user_clicks"] == 6 and users.loc[2, "user_clicks"] == 1
    items = pd.read_parquet(lake.root / "item_features").set_index(Col.ITEM_ID)
    assert items.loc[10, "item_impressions"] == 10 and math.isclose(items.loc[10, "item_avg_rating"], 22 / 6)
