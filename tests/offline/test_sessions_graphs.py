"""Sessions and graphs jobs on crafted events: gap boundaries, weights, decay, incrementality, degree caps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from recstack.features.keys import Col
from recstack.features.schema import EVENT_SCHEMA
from recstack.offline.jobs.graphs import graphs_dir, latest_graphs_dir, run_graphs_job
from recstack.offline.jobs.sessions import run_sessions_job
from recstack.offline.lake import EventLake

D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
T = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
GAP = 1800


def _ev(n: int, kind: str, user: int, item: int, ts: dt.datetime, value: float | None = None) -> dict:
    return {
        Col.EVENT_ID: f"e{n}", Col.EVENT_TYPE: kind, Col.TS: ts, Col.USER_ID: user, Col.ITEM_ID: item,
        Col.REQUEST_ID: f"r{n}", Col.VALUE: value, Col.LABEL: None if value is None else int(value >= 4),
        Col.PAGE: None, Col.SLOT: None, Col.DEVICE: None, Col.CITY: None, Col.VARIANT: None, Col.DEVICE_ID: None,
        Col.IP: None,
    }  # fmt: skip


def _lake(root: Path, rows: list[dict], users: pd.DataFrame | None = None) -> EventLake:
    lake = EventLake(root)
    with lake.stage() as stage:
        stage.write(pa.Table.from_pylist([_ev(i, *r) for i, r in enumerate(rows)], schema=EVENT_SCHEMA))
        stage.commit()
    if users is None:
        users = pd.DataFrame({Col.USER_ID: [1, 2, 3]})
    for c in (Col.AGE, Col.GENDER, Col.OCCUPATION, Col.ZIP_CODE, Col.CITY):
        if c not in users:
            users[c] = None
    lake.write_users(users)
    lake.write_items(pd.DataFrame({Col.ITEM_ID: [10, 11, 12, 13, 14], Col.TITLE: None, Col.RELEASE_DATE: None,
                                   Col.GENRES: None, Col.TAGS: None}))  # fmt: skip
    return lake


s = dt.timedelta(seconds=1)
ms = dt.timedelta(milliseconds=1)
ROWS = [
    # user 1, session A: 10 → 11 (click + rating on 11 back to back: listed once) → 12, gap exactly GAP stays in
    ("click", 1, 10, T), ("click", 1, 11, T + 60 * s), ("rating", 1, 11, T + 90 * s, 5.0),
    ("click", 1, 12, T + 90 * s + GAP * s),
    # session B: one more millisecond than the gap after A's last event
    ("click", 1, 10, T + 90 * s + 2 * GAP * s + ms), ("click", 1, 13, T + 200 * s + 2 * GAP * s),
    # user 2: a session that starts at 23:50 on D1 and goes on past midnight
    ("click", 2, 10, dt.datetime(2026, 3, 1, 23, 50, tzinfo=dt.UTC)),
    ("click", 2, 11, dt.datetime(2026, 3, 2, 0, 10, tzinfo=dt.UTC)),
    ("rating", 2, 11, dt.datetime(2026, 3, 2, 0, 11, tzinfo=dt.UTC), 2.0),
    # user 3 on D2 only; impressions never make sessions or edges
    ("click", 3, 12, dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)),
    ("impression", 3, 14, dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)),
]


@pytest.mark.integration
def test_sessions_split_on_the_gap_and_belong_to_their_start_day(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lake = _lake(tmp_path / "lake", ROWS)
    assert run_sessions_job(spark, lake.root, D1, D2, GAP) == 4
    got = pd.read_parquet(lake.root / "sessions").sort_values(["user_id", "start_ts"]).reset_index(drop=True)
    assert [list(v) for v in got["items"]] == [[10, 11, 12], [10, 13], [10, 11], [12]]
    assert got["n_events"].tolist() == [4, 2, 3, 1]
    assert got["n_ratings"].tolist() == [1, 0, 1, 0]
    assert got["n_distinct_items"].tolist() == [3, 2, 2, 1]
    assert got["duration_s"].iloc[0] == 90 + GAP
    assert got["event_date"].astype(str).tolist() == ["2026-03-01", "2026-03-01", "2026-03-01", "2026-03-02"]
    # re-running D2 alone keeps user 2's midnight session on D1 and replaces D2 exactly
    assert run_sessions_job(spark, lake.root, D2, D2, GAP) == 1
    assert len(pd.read_parquet(lake.root / "sessions")) == 4


@pytest.mark.integration
def test_graphs_weights_decay_incrementality_and_lookalike_links(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    users = pd.DataFrame({
        Col.USER_ID: [1, 2, 3, 4, 5, 6],
        Col.AGE: [24, 24, 24, 60, 24, None],
        Col.GENDER: ["F", "F", "F", "M", "M", None],
        Col.OCCUPATION: ["writer", "writer", "writer", "writer", "artist", None],
        Col.ZIP_CODE: ["55414", "55499", "10001", "55400", "10002", None],
    })  # fmt: skip
    full = _lake(tmp_path / "full", ROWS, users)
    run_sessions_job(spark, full.root, D1, D2, GAP)
    counts = run_graphs_job(spark, full.root, D1, D2, half_life_days=1.0, cooccurrence_window=1,
                            item_neighbors_max=1, user_user_degree=2)  # fmt: skip
    g = latest_graphs_dir(full.root)
    assert g == graphs_dir(full.root, D2)
    assert counts["nodes_users"] == 6 and counts["nodes_items"] == 5  # all profile ids, edges or not

    ui = pd.read_parquet(g / "user_item").set_index([Col.USER_ID, Col.ITEM_ID])
    assert ui.loc[(1, 11), "n"] == 2 and ui.loc[(1, 11), "weight"] == pytest.approx(1.0 + 5.0 / 5)
    assert ui.loc[(1, 10), "n"] == 2 and ui.loc[(2, 11), "weight"] == pytest.approx(1.0 + 2.0 / 5)
    assert (3, 14) not in ui.index  # an impression is not an interaction
    end = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    age = (end - ROWS[0][3]).total_seconds() / 86400
    age2 = (end - ROWS[4][3]).total_seconds() / 86400
    assert ui.loc[(1, 10), "decayed_weight"] == pytest.approx(0.5**age + 0.5**age2)
    nodes = pd.read_parquet(g / "nodes_users")
    assert sorted(nodes["idx"]) == list(range(6)) and nodes.sort_values("user_id")["idx"].tolist() == list(range(6))
    assert (ui["user_idx"] == ui.index.get_level_values(0) - 1).all()

    # D1 then D2 as two daily runs give the same user-item graph as one run over both days
    inc = _lake(tmp_path / "inc", ROWS, users)
    for day in (D1, D2):
        run_sessions_job(spark, inc.root, day, day, GAP)
        run_graphs_job(spark, inc.root, day, day, half_life_days=1.0, cooccurrence_window=1,
                       item_neighbors_max=1, user_user_degree=2)  # fmt: skip
    ui_inc = pd.read_parquet(graphs_dir(inc.root, D2) / "user_item").set_index([Col.USER_ID, Col.ITEM_ID])
    pd.testing.assert_frame_equal(ui_inc.sort_index(), ui.sort_index(), check_like=True)

    # item-item: adjacent pairs of the sessions [10,11,12] [10,13] [10,11] [12]; 10-11 twice; one neighbour kept
    ii = pd.read_parquet(g / "item_item")
    assert ii.groupby("src").size().max() == 1
    best = dict(zip(ii["src"], ii["dst"], strict=True))
    assert best[10] == 11 and ii.set_index("src").loc[10, "weight"] == 2.0
    assert best[13] == 10 and best[12] == 11

    # user-user: shared attributes (age bucket, gender, occupation, zip prefix); unknowns never link
    uu = pd.read_parquet(g / "user_user")
    w = {(a, b): x for a, b, x in zip(uu["src"], uu["dst"], uu["weight"], strict=True)}
    assert w[(1, 2)] == 4.0 and w[(2, 1)] == 4.0  # same bucket, gender, occupation, zip prefix 554
    assert 6 not in set(uu["src"]) | set(uu["dst"])
    assert uu.groupby("src").size().max() <= 2
    assert all(x >= 1 for x in w.values())
