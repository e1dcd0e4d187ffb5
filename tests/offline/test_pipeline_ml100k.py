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
from recstack.offline.jobs.training_table import read_training_table
from recstack.offline.lake import EventLake


@pytest.fixture(scope="module")
def ml100k_lake(spark, ml100k: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    lake = EventLake(tmp_path_factory.mktemp("ml100k") / "lake")
    ingest_movielens(ml100k, lake, DataSettings(impressions_per_request=5))
    dates = lake.event_dates()
    lines: list[str] = []
    report = run_pipeline(spark, lake.root, dates[0], dates[-1], JobSettings(), progress=lines.append)
    return lake, report, lines


@pytest.mark.integration
def test_pipeline_on_ml100k(ml100k_lake) -> None:  # type: ignore[no-untyped-def]
    lake, report, lines = ml100k_lake
    assert len([x for x in lines if "done in" in x]) == 4  # a progress line per stage

    # samples: one per distinct impression (up to 5 per rating; early slates are shorter), the rated one
    # clicked and labelled
    events = lake.read_events().to_pandas()
    impressions = events[events[Col.EVENT_TYPE] == "impression"]
    expected = len(impressions.drop_duplicates([Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID]))
    samples = read_training_table(lake.root)
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


@pytest.mark.integration
@pytest.mark.parametrize("model", ["deepwalk", "graphsage"])
def test_graph_models_train_on_the_pipeline_output(ml100k_lake, model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The graph-embedding jobs read the pipeline's graphs, log to a real MLflow (sqlite + local artifacts),
    register a version and publish a release the online service loads."""
    from mlflow.tracking import MlflowClient
    from recstack.features.settings import Settings
    from recstack.models.deepwalk import DeepWalkConfig
    from recstack.models.graphsage import SageConfig
    from recstack.offline.jobs.embeddings import run_embedding_job
    from recstack.online.pipeline import ServingRelease

    lake, _, _ = ml100k_lake
    settings = Settings(home=tmp_path)
    settings = settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": lake.root})})
    assert settings.lake_root == lake.root
    cfg = (DeepWalkConfig(dim=32, walks_per_node=4, walk_length=20, epochs=2) if model == "deepwalk"
           else SageConfig(dim=32, epochs=3, lr=0.01, l2=1e-2, loss="softmax", negatives=256))  # fmt: skip
    lines: list[str] = []
    result = run_embedding_job(settings, model, holdout=0.1, progress=lines.append, cfg=cfg)
    m = result["metrics"]
    assert 0.05 < m["ndcg@10"] <= 1 and m["users"] > 50 and m["coverage_items"] >= 10  # ~90 users in the newest 10 %
    assert result["users"] == 943 and result["items"] == 1682
    release = ServingRelease.load(Path(result["release"]))
    assert release.artifact.model == model and release.index.index.ntotal == 1682
    nbrs = np.load(Path(result["release"]) / "item_neighbors.npz")
    assert nbrs["neighbors"].shape == (1682, 50)
    item = int(nbrs["item_ids"][7])
    similar = release.similar(item, 5)  # served from the precomputed lists
    assert [c.item_id for c in similar] == nbrs["neighbors"][7][:5].tolist()
    assert {c.channel for c in similar} == {"item2item/neighbors"} and item not in [c.item_id for c in similar]

    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(m["ndcg@10"])
    assert run.data.metrics["popularity.ndcg_at_10"] == pytest.approx(m["popularity.ndcg@10"])
    assert run.data.params["dim"] == "32" and run.data.tags["lineage.partition_count"] == str(len(lake.event_dates()))
    files = {f.path for f in client.list_artifacts(result["run_id"])}
    assert {"model", "neighbors", "lineage.json"} <= files
    if model == "graphsage":
        assert {"state", "lookalike"} <= files
    version = client.get_model_version(f"recstack-{model}", result["registered_version"])
    assert version.run_id == result["run_id"]
    assert any("registered version" in x for x in lines)


@pytest.mark.integration
def test_ranker_training_and_gated_promotion_on_ml100k(ml100k_lake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Wide&Deep on the lake's point-in-time samples, evaluated on the held-out last 14 days, registered in
    MLflow; the gate promotes it, then refuses an untrained candidate through the CLI (the champion stays)."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient
    from recstack.features.settings import Settings
    from recstack.offline.jobs.rank import promote_ranker, registered_name, train_ranker

    lake, _, _ = ml100k_lake
    s = Settings(home=tmp_path, lake={"root": lake.root})
    first = train_ranker(s, "widedeep", eval_days=14, epochs=1)
    assert first["metrics"]["auc"] > 0.7 and first["registered_version"] == "1"
    decision = promote_ranker(s, "widedeep", "1", eval_days=14)
    assert decision.promoted and decision.champion is None
    assert decision.candidate_metrics["auc"] == pytest.approx(first["metrics"]["auc"], abs=1e-9)  # same window

    untrained = train_ranker(s, "widedeep", eval_days=14, epochs=0)
    r = subprocess.run([sys.executable, "-m", "recstack.offline.cli", "promote", "--model", "widedeep", "--version",
                        untrained["registered_version"], "--eval-days", "14", "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "RECSTACK_LAKE__ROOT": str(lake.root)})  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["promoted"] is False and out["champion"] == "1"
    assert any("regresses" in reason for reason in out["reasons"])
    client = MlflowClient(s.mlflow_tracking_uri)
    assert str(client.get_model_version_by_alias(registered_name("widedeep"), "champion").version) == "1"
    assert client.get_model_version(registered_name("widedeep"), "2").tags["gate.decision"] == "refused"


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_promoted_ranker_is_what_the_service_ranks_with(ml100k_lake, redis_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """serving.ranker = ctr loads recstack-ranker-<model>@champion: the service reports and ranks with the
    promoted version, its online encoding equals the offline one, and moving the alias swaps the ranker."""
    import time

    from fastapi.testclient import TestClient
    from mlflow.tracking import MlflowClient
    from recstack.features.definitions import FEATURES_BY_NAME
    from recstack.features.settings import Settings
    from recstack.models.ctr import predict
    from recstack.offline.jobs.rank import promote_ranker, registered_name, train_ranker
    from recstack.offline.jobs.train import run_train_job
    from recstack.online.app import create_app, open_ctr_ranker
    from recstack.online.ranking import RT_ITEM, RT_USER, RankBatch

    lake, _, _ = ml100k_lake
    s = Settings(home=tmp_path, lake={"root": lake.root}, redis={"url": redis_url, "key_prefix": f"rk{time.time_ns()}"},
                 serving={"ranker": "ctr", "ranker_model": "widedeep", "reload_interval_s": 0.2,
                          "ranker_weights": {"click": 1.0}})  # fmt: skip
    assert train_ranker(s, "widedeep", eval_days=14, epochs=1)["registered_version"] == "1"
    assert promote_ranker(s, "widedeep", "1", eval_days=14).promoted
    ranker, champion = open_ctr_ranker(s)
    assert champion is not None and champion.version == "1" and ranker.name == "ctr"

    # online encoding == offline transform of the same feature values (snapshot + context + real-time)
    ctr = champion.ranker.current  # type: ignore[union-attr]
    user_id, items = 13, np.array([1, 50, 100, 181, 258, 999_999], np.int64)  # the last is unknown
    rt_user, rt_item = np.array([0.0, 1.0, 2.0], np.float32), np.full((len(items), len(RT_ITEM)), 0.5, np.float32)
    batch = RankBatch(
        user_vector=None, item_vectors=np.zeros((len(items), 4), np.float32), has_vector=np.zeros(len(items), bool),
        recall_prior=np.ones(len(items)), channel=np.zeros(len(items), np.int64), trending=np.zeros(len(items)),
        genre_match=np.zeros(len(items), np.float32), user_realtime=rt_user, item_realtime=rt_item, hour=20,
        weekday=3, user_id=user_id, item_ids=items, page="home", device="web",
    )  # fmt: skip
    online = ctr.score(batch)
    from recstack.offline.jobs.rank import feature_snapshot

    snap = feature_snapshot(lake.root)
    frame = pd.DataFrame({Col.ITEM_ID: items}).merge(snap["items"], on=Col.ITEM_ID, how="left")
    urow = snap["users"][snap["users"][Col.USER_ID] == user_id].iloc[0]
    for col in snap["users"].columns:
        if col != Col.USER_ID:
            frame[col] = urow[col]
    frame[Col.USER_ID] = user_id
    frame[Col.GENRES] = frame[Col.GENRES].map(lambda g: g if isinstance(g, list) else [])
    frame = frame.assign(hour=20, weekday=3, page="home", slot=0, device="web")
    for name in DENSE_FEATURES:  # as read_samples prepares them
        if name in RT_USER:
            frame[name] = rt_user[RT_USER.index(name)]
        elif name in RT_ITEM:
            frame[name] = rt_item[:, RT_ITEM.index(name)]
        else:
            col = frame[name].astype(float)
            known = col.notna()
            col = np.log1p(col.clip(lower=0)) if FEATURES_BY_NAME[name].log1p else col
            frame[name] = col.where(known, ctr.enc.dense_stats[name][0])  # unknown item: the training mean
    p = predict(ctr.model, ctr.enc.transform(frame))["click"]
    np.testing.assert_allclose(online, np.log(p), rtol=1e-4, atol=1e-5)

    # the service ranks with the promoted version; an alias move swaps it in without a restart
    run_train_job(lake.root, s.serving_dir)
    with TestClient(create_app(s)) as client:
        ready = client.get("/readyz").json()
        assert ready["ranker"] == "ctr" and ready["ranker_version"] == "1"
        rec = client.get("/recommend", params={"user_id": user_id, "k": 5})
        assert rec.status_code == 200 and len(rec.json()["items"]) == 5
        second = train_ranker(s, "widedeep", eval_days=14, epochs=0)["registered_version"]
        MlflowClient(s.mlflow_tracking_uri).set_registered_model_alias(registered_name("widedeep"), "champion", second)
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["ranker_version"] != second and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").json()["ranker_version"] == second
        assert client.get("/recommend", params={"user_id": user_id, "k": 5}).status_code == 200


@pytest.mark.integration
def test_fraud_job_on_real_traffic_blocks_nobody(ml100k_lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """`recstack fraud-job` over ml-100k (real users, simulated impressions): every user is scanned and none is
    blocklisted (the gang rules need shared devices / IPs or synchronised clicks, which honest traffic lacks)."""
    from recstack.offline.cli import main

    lake, _, _ = ml100k_lake
    monkeypatch.setenv("RECSTACK_LAKE__ROOT", str(lake.root))
    dates = lake.event_dates()
    assert main(["fraud-job", "--home", str(tmp_path), "--start", dates[-30].isoformat(),
                 "--end", dates[-1].isoformat(), "--version", "t1"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["users_scanned"] > 100 and report["flagged_users"] == 0 and report["version"] == "t1"
