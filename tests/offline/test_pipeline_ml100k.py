"""The whole offline pipeline on the real MovieLens 100K: samples, features, sessions, graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recstack.features.definitions import DENSE_FEATURES
from recstack.features.keys import Col
from recstack.features.settings import DataSettings, JobSettings
from recstack.offline.ingest.movielens import ingest_movielens
from recstack.offline.jobs.graphs import latest_graphs_dir
from recstack.offline.jobs.pipeline import run_pipeline
from recstack.offline.lake import EventLake


@pytest.mark.integration
def test_pipeline_on_ml100k(spark, ml100k: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lake = EventLake(tmp_path / "lake")
    ingest_movielens(ml100k, lake, DataSettings(impressions_per_request=5))
    dates = lake.event_dates()
    lines: list[str] = []
    report = run_pipeline(spark, lake.root, dates[0], dates[-1], JobSettings(), progress=lines.append)
    assert len([x for x in lines if "done in" in x]) == 4  # a progress line per stage

    # samples: one per distinct impression (up to 5 per rating; early slates are shorter), the rated one
    # clicked and labelled
    events = lake.read_events().to_pandas()
    impressions = events[events[Col.EVENT_TYPE] == "impression"]
    expected = len(impressions.drop_duplicates([Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID]))
    samples = pd.read_parquet(lake.root / "samples")
    samples[Col.EVENT_DATE] = samples[Col.EVENT_DATE].astype(str)
    assert report.outputs["samples"] == len(samples) == expected > 495_000
    assert samples[Col.CLICK].sum() == 100_000
    assert samples[Col.LIKE].notna().sum() == 100_000 and samples[Col.LIKE].sum() == 55_375
    # point in time on real data: on a user's first day their daily history is empty
    first_day = samples.groupby(Col.USER_ID)[Col.EVENT_DATE].transform("min") == samples[Col.EVENT_DATE]
    assert (samples.loc[first_day, "user_impressions"] == 0).all()
    assert (samples.loc[~first_day, "user_impressions"] > 0).all()
    assert samples["user_clicks_1d"].max() > 0 and samples["item_exposures_1d"].max() > 0
    assert samples["age_bucket"].between(1, 7).all() and samples["occupation"].nunique() == 21
    assert samples["genres"].map(len).gt(0).mean() > 0.99

    stats = json.loads(Path(report.outputs["features"]["stats"]).read_text())
    assert stats["rows"] == expected and set(stats["dense"]) == set(DENSE_FEATURES)
    assert len(stats["vocab"]["occupation"]) == 21 and len(stats["vocab"]["genres"]) >= 18
    users = pd.read_parquet(lake.root / "user_features")
    assert len(users) == 943 and users["user_ratings"].sum() == 100_000

    sessions = pd.read_parquet(lake.root / "sessions")
    assert report.outputs["sessions"] == len(sessions) > 943
    assert sessions["n_ratings"].sum() == 100_000 and sessions["items"].map(len).min() >= 1

    g = latest_graphs_dir(lake.root)
    ui = pd.read_parquet(g / "user_item")
    assert len(ui) == 100_000  # one edge per rated (user, item)
    # every edge is a click (1) plus the rating / 5
    assert np.all((ui["weight"] > 1.19) & (ui["weight"] < 2.01)) and (ui["n"] == 2).all()
    assert len(pd.read_parquet(g / "nodes_users")) == 943 and len(pd.read_parquet(g / "nodes_items")) == 1682
    ii = pd.read_parquet(g / "item_item")
    assert len(ii) > 10_000 and ii.groupby("src").size().max() <= JobSettings().item_neighbors_max
    uu = pd.read_parquet(g / "user_user")
    assert uu["src"].nunique() > 0.95 * 943 and uu.groupby("src").size().max() <= JobSettings().user_user_degree
