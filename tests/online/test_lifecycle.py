"""Hot reload under load, refusal of a corrupt release, the MLflow champion source, and degradation when Redis
or the event bus die (real servers, stopped for real)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from recstack.features.bus import open_bus
from recstack.features.redis_local import free_port, start_redis_server
from recstack.features.settings import Settings
from recstack.models.catalog import CATALOG_DIR
from recstack.models.tracking import log_training_run
from recstack.online.app import create_app
from recstack.online.lifecycle import MlflowAliasSource, ReleaseManager
from recstack.online.pipeline import Recommender, ServingRelease

from tests.online.conftest import build_world


def _settings(home: Path, redis_url: str, **serving: object) -> Settings:
    return Settings(home=home, redis={"url": redis_url, "key_prefix": f"lc{time.time_ns()}"},
                    serving={"model_dir": home / "serving", "reload_interval_s": 0.1, **serving})  # fmt: skip


def test_hot_reload_under_concurrent_requests_loses_none(tmp_path: Path, redis_url: str) -> None:
    s = _settings(tmp_path, redis_url)
    build_world(s.serving_dir, "small-v1", seed=1)
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    with TestClient(create_app(s)) as client:

        def hammer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                r = client.get("/recommend", params={"user_id": 1 + (worker * 7 + i) % 25, "k": 5})
                body = r.json()
                results.append((r.status_code, body.get("model_version", "") if r.status_code == 200 else r.text))
                i += 1

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        build_world(s.serving_dir, "small-v2", seed=2)  # publish: swaps serving/current
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["model_version"] != "small-v2" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # a corrupt release is refused and v2 keeps serving
        bad = build_world(tmp_path / "other", "small-v3", seed=3).release_dir
        with open(bad / "model" / "arrays.npz", "r+b") as f:
            f.seek(64)
            f.write(b"corrupt!")
        link = s.serving_dir / "current"
        tmp_link = s.serving_dir / ".swap"
        tmp_link.symlink_to(bad)
        tmp_link.replace(link)
        time.sleep(0.8)
        stop.set()
        for t in threads:
            t.join()
        ready = client.get("/readyz").json()
        metrics = client.get("/metrics").text
    statuses = [code for code, _ in results]
    versions = [v for code, v in results if code == 200]
    assert len(results) > 50 and set(statuses) == {200}, [r for r in results if r[0] != 200][:3]
    assert versions[0] == "small-v1" and "small-v2" in versions and "small-v3" not in versions
    assert ready["model_version"] == "small-v2"
    assert 'recstack_model_reload_total{outcome="reloaded"} 1.0' in metrics
    assert 'recstack_model_reload_total{outcome="refused"} 1.0' in metrics


def test_mlflow_champion_alias_is_served_and_followed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    s = Settings(home=tmp_path)
    versions = []
    for v, seed in (("small-v1", 1), ("small-v2", 2)):
        world = build_world(tmp_path / v, v, seed=seed)
        tracked = log_training_run(
            tracking_uri=s.mlflow_tracking_uri, artifact_root=s.mlflow_artifact_root, experiment="lc",
            run_name=v, params={}, metrics={}, model_dir=world.release_dir / "model", lineage={"test": True},
            extra_artifacts={CATALOG_DIR: world.release_dir / CATALOG_DIR,
                             "neighbors": world.release_dir / "item_neighbors.npz"},
            register_as="recstack-small", tags={"version": v},
        )  # fmt: skip
        versions.append(tracked.version)
    client = MlflowClient(s.mlflow_tracking_uri)
    source = MlflowAliasSource(s.mlflow_tracking_uri, "recstack-small", "champion", tmp_path / "cache")
    assert source.current() is None  # no champion yet
    client.set_registered_model_alias("recstack-small", "champion", versions[0])
    manager = ReleaseManager(source, lambda rel: Recommender(rel), interval_s=60)
    manager.load_initial()
    assert manager.recommender is not None and manager.recommender.release.version == "small-v1"
    # the index was not logged: it was built from the model; the catalog and neighbour lists came along
    rel = manager.recommender.release
    assert rel.neighbors is not None and rel.catalog.titles[0].startswith("star")
    assert not manager.check()  # nothing changed
    client.set_registered_model_alias("recstack-small", "champion", versions[1])
    assert manager.check() and manager.recommender.release.version == "small-v2"
    assert len(manager.recommender.recommend(3, 5).items) == 5


def test_dead_redis_gives_fallback_answers_within_budget(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis_server(port, tmp_path / "redis", persist=False)
    url = f"redis://127.0.0.1:{port}/0"
    s = _settings(tmp_path, url, redis_retry_s=5.0)
    build_world(s.serving_dir, "small-v1")
    try:
        with TestClient(create_app(s)) as client:
            ok = client.get("/recommend", params={"user_id": 3, "k": 5}).json()
            assert ok["degraded"] == []
            proc.terminate()
            proc.wait(10)
            lat, bodies = [], []
            for _ in range(20):
                start = time.perf_counter()
                r = client.get("/recommend", params={"user_id": 3, "k": 5})
                lat.append(time.perf_counter() - start)
                assert r.status_code == 200
                bodies.append(r.json())
            assert all(len(b["items"]) == 5 for b in bodies)
            assert bodies[0]["degraded"] == ["redis"]
            assert [b["item_id"] for b in bodies[0]["items"]] == [b["item_id"] for b in ok["items"]]
            assert max(lat[1:]) < 0.25  # Redis is skipped after the first failure, not waited on
            assert client.get("/readyz").json()["redis"] == "degraded"
            assert 'recstack_fallback_total{reason="redis"}' in client.get("/metrics").text
    finally:
        if proc.poll() is None:
            proc.terminate()


def test_events_are_spooled_while_the_bus_is_down_and_resent(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    bus_url = f"redis://127.0.0.1:{port}/0"
    proc = start_redis_server(port, tmp_path / "bus", persist=False)
    s = Settings(home=tmp_path, redis={"url": redis_url, "key_prefix": f"sp{time.time_ns()}"},
                 bus={"url": bus_url}, serving={"model_dir": tmp_path / "serving"})  # fmt: skip
    build_world(s.serving_dir, "small-v1")
    event = {"event_id": "s-1", "event_type": "click", "ts": "2026-01-03T10:00:00Z", "user_id": 3, "item_id": 40}
    try:
        with TestClient(create_app(s)) as client:
            proc.terminate()
            proc.wait(10)
            r = client.post("/events", json={"events": [event, {**event, "event_id": "s-2"}]})
            assert r.status_code == 202 and r.json()["spooled"] == 2
            assert len(list((tmp_path / "spool").glob("events-*.jsonl"))) == 1
            proc = start_redis_server(port, tmp_path / "bus2", persist=False)  # the bus is back (empty)
            bus = open_bus(bus_url, s.bus, key_prefix=s.redis.key_prefix)
            bus.ensure_topic(s.bus.events_topic)
            consumer = bus.consumer(s.bus.events_topic, "spool-test", "c1")
            consumer.poll(timeout_s=0.01)
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                got += consumer.poll(timeout_s=0.2)
            assert sorted(json.loads(m.value)["event_id"] for m in got) == ["s-1", "s-2"]
            assert not list((tmp_path / "spool").glob("events-*"))
            bus.close()
    finally:
        proc.terminate()


def test_realtime_features_reach_the_ranker(tmp_path: Path, redis_url: str) -> None:
    """Events through the store change what the service reads: recent items feed item-to-item recall and
    are excluded from the answer."""
    import datetime as dt

    import redis
    from recstack.features.keys import RedisKey
    from recstack.features.realtime import RealtimeStore
    from recstack.features.schema import Event

    s = _settings(tmp_path, redis_url)
    world = build_world(s.serving_dir, "small-v1")
    store = RealtimeStore(redis.Redis.from_url(redis_url), RedisKey(s.redis.key_prefix))
    now = dt.datetime.now(dt.UTC)
    clicked = [int(x) for x in world.artifact.item_ids[[30, 31]]]
    store.apply([Event(event_id=f"rt-{i}", event_type="click", ts=now - dt.timedelta(seconds=10 - i), user_id=999,
                       item_id=item) for i, item in enumerate(clicked)])  # fmt: skip
    with TestClient(create_app(s)) as client:
        body = client.get("/recommend", params={"user_id": 999, "k": 10}).json()
    ids = [i["item_id"] for i in body["items"]]
    assert not set(clicked) & set(ids)  # recent items are excluded
    assert "item2item/recent" in {i["channel"] for i in body["items"]}  # and seed the item-to-item channel
    rel = ServingRelease.load(world.release_dir)
    nb, _ = rel.similar_many(np.array(clicked[::-1]), 10)
    assert set(ids) & set(nb.ravel().tolist())
