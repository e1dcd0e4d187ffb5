"""The service over a release built by the real path: synthetic lake → Spark samples → train → FAISS."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from recstack.features.bus import open_bus
from recstack.features.settings import Settings
from recstack.models.artifact import ArtifactError
from recstack.offline.ingest.synthetic import SyntheticConfig, ingest_synthetic
from recstack.offline.jobs.samples import run_samples_job
from recstack.offline.jobs.train import current_release, run_train_job
from recstack.offline.lake import EventLake
from recstack.online.app import create_app
from recstack.online.pipeline import ServingRelease


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, spark, redis_url: str) -> Settings:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("home")
    s = Settings(home=home, redis={"url": redis_url, "key_prefix": f"svc{time.time_ns()}"})
    lake = EventLake(s.lake_root)
    ingest_synthetic(SyntheticConfig(events=60_000, seed=11), lake)
    dates = lake.event_dates()
    run_samples_job(spark, s.lake_root, dates[0], dates[-1])
    run_train_job(s.lake_root, s.serving_dir)
    return s


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def release(settings: Settings) -> ServingRelease:
    return ServingRelease.load(current_release(settings.serving_dir))


def test_known_user_gets_personalised_unseen_items(client: TestClient, release: ServingRelease,
                                                    settings: Settings) -> None:  # fmt: skip
    user = int(release.artifact.user_ids[5])
    r = client.get("/recommend", params={"user_id": user, "k": 10, "page": "home", "device": "ios"})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == user and body["variant"] == "default" and body["fallback"] is False
    assert body["model_version"] == release.version and body["degraded"] == []
    items = [i["item_id"] for i in body["items"]]
    assert len(items) == 10 == len(set(items))
    assert not set(items) & set(release.artifact.seen(5).tolist())
    channels = {i["channel"] for i in body["items"]}
    assert channels <= {c.name for c in settings.serving.channels} and "faiss/user-embedding" in channels
    # the fine ranker is the recall model's score: embedding-recalled items come in dot-product order
    vec = release.artifact.user_vectors[5]
    dots = [float(release.artifact.item_vectors[release.item_row(i)] @ vec) for i in items]  # type: ignore[index]
    assert max(dots) == dots[0]


def test_unknown_user_gets_a_non_empty_cold_start_list(client: TestClient, release: ServingRelease) -> None:
    r = client.get("/recommend", params={"user_id": 10**12, "k": 7})
    assert r.status_code == 200
    body = r.json()
    assert len(body["items"]) == 7 == len({i["item_id"] for i in body["items"]})
    assert {i["channel"] for i in body["items"]} <= {"trending/decayed", "fresh/cold-start", "segment/popular",
                                                      "popular/fallback"}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"),
    [({"user_id": "abc"}, "user_id"), ({}, "user_id"), ({"user_id": 1, "k": 0}, "k"), ({"user_id": -1}, "user_id"),
     ({"user_id": 1, "k": 100000}, "k")],
)  # fmt: skip
def test_malformed_request_gets_a_clear_4xx(client: TestClient, params: dict, field: str) -> None:
    r = client.get("/recommend", params=params)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request"
    assert field in body["message"]
    assert body["errors"][0]["field"] == field


def test_events_are_validated_and_published_to_the_bus(client: TestClient, settings: Settings) -> None:
    bus = open_bus(settings.redis.url or "", settings.bus, key_prefix=settings.redis.key_prefix)
    consumer = bus.consumer(settings.bus.events_topic, "test-svc", "c1")
    consumer.poll(timeout_s=0.01)  # join the group before publishing (group starts at the stream head)
    event = {"event_id": "e-1", "event_type": "click", "ts": "2026-01-03T10:00:00Z", "user_id": 3, "item_id": 4,
             "page": "home"}  # fmt: skip
    r = client.post("/events", json={"events": [event, {**event, "event_id": "e-2"}]})
    assert r.status_code == 202 and r.json()["accepted"] == 2
    bad = client.post(
        "/events", json={"events": [{**event, "event_id": "e-3"}, {**event, "event_type": "buy"}]}
    )
    assert bad.status_code == 422
    assert "events.1.event_type" in bad.json()["message"]
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        got += consumer.poll(timeout_s=0.2)
    ids = [json.loads(m.value)["event_id"] for m in got]
    assert ids[:2] == ["e-1", "e-2"]
    assert "e-3" not in ids  # the invalid batch published nothing
    consumer.commit(got)
    bus.close()


def test_health_readiness_and_metrics(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["worker"] == os.getpid()  # TestClient: this process answers
    assert client.get("/readyz").json()["status"] == "ready"
    client.get("/recommend", params={"user_id": 10**12})
    text = client.get("/metrics").text
    assert 'recstack_http_requests_total{route="/recommend",status="200"}' in text
    assert 'recstack_recall_channel_total{channel="trending/decayed",status="ok"}' in text
    assert 'recstack_recall_candidates_total{channel="faiss/user-embedding"}' in text
    for stage in ("features", "recall", "prerank", "rank", "rerank"):
        assert f'recstack_stage_seconds_count{{stage="{stage}"}}' in text
    assert "recstack_http_request_seconds_bucket" in text
    assert client.get("/openapi.json").json()["paths"]["/recommend"]


def test_corrupt_release_is_refused(settings: Settings, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "release"
    shutil.copytree(current_release(settings.serving_dir), broken)
    with open(broken / "model" / "arrays.npz", "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        ServingRelease.load(broken)


def test_similar_items_endpoint(client: TestClient, release: ServingRelease) -> None:
    """The baseline release has no neighbour lists: similar items come from cosine search over item vectors."""
    import numpy as np

    item = int(release.artifact.item_ids[3])
    r = client.get(f"/items/{item}/similar", params={"k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_id"] == item and body["model_version"] == release.version
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 7 == len(set(ids)) and item not in ids
    assert {i["channel"] for i in body["items"]} == {"item2item/faiss"}
    # the scores are the cosine similarities of the item vectors, best first
    v = release.artifact.item_vectors
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    row = {int(x): k for k, x in enumerate(release.artifact.item_ids.tolist())}
    expected = [float(unit[row[item]] @ unit[row[i]]) for i in ids]
    assert [i["score"] for i in body["items"]] == pytest.approx(expected, abs=1e-4)
    assert expected == sorted(expected, reverse=True)

    missing = client.get(f"/items/{10**12}/similar")
    assert missing.status_code == 404 and "is not in model" in missing.json()["message"]
    assert client.get("/items/-1/similar").status_code == 422
    assert client.get(f"/items/{item}/similar", params={"k": 10**6}).status_code == 422


def test_corrupt_neighbour_lists_are_refused(settings: Settings, tmp_path: Path) -> None:
    import shutil

    from recstack.models.artifact import NEIGHBORS_FILE

    broken = tmp_path / "release"
    shutil.copytree(current_release(settings.serving_dir), broken)
    (broken / NEIGHBORS_FILE).write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="cannot read item neighbours"):
        ServingRelease.load(broken)


def test_pid_pacing_caps_an_items_exposure_across_requests(settings: Settings, client: TestClient) -> None:
    """pacing.enabled: the pacer is the cascade's control stage and counts what is served; a capped item stops
    being served at its daily cap, and the shared Redis count is exactly what was served."""
    from recstack.control.pacing_store import PacingStore

    users = list(range(1, 60))
    seen: dict[int, int] = {}
    for u in users:  # the unpaced service: which item is served most?
        for item in client.get("/recommend", params={"user_id": u, "k": 10}).json()["items"]:
            seen[item["item_id"]] = seen.get(item["item_id"], 0) + 1
    head, shown = max(seen.items(), key=lambda kv: kv[1])
    assert shown >= 10
    cap = 4
    paced = settings.model_copy(update={
        "redis": settings.redis.model_copy(update={"key_prefix": f"pace{time.time_ns()}"}),
        "pacing": settings.pacing.model_copy(update={"enabled": True, "seed": 1, "cache_ttl_s": 0.05,
                                                     "entities": [{"name": f"item:{head}", "items": [head],
                                                                   "daily_cap": cap}]}),
    })  # fmt: skip
    paced = Settings.model_validate(paced.model_dump())
    with TestClient(create_app(paced)) as pc:
        served = 0
        for u in users:
            items = [i["item_id"] for i in pc.get("/recommend", params={"user_id": u, "k": 10}).json()["items"]]
            served += items.count(head)
        store = pc.app.state.service.pacer.store  # type: ignore[attr-defined]
        assert isinstance(store, PacingStore)
    assert 1 <= served <= cap  # throttled and hard-stopped at the cap (it was shown to >= 10 users unpaced)
    assert int(store.view(time.time()).counts.sum()) == served  # the shared Redis count is what was served


@pytest.mark.parametrize("response", ["fallback", "429"])
def test_a_blocked_actor_gets_non_personalised_results_or_429(settings: Settings, response: str) -> None:
    """A device on the published anti-fraud blocklist: its requests get the popularity list (nothing personal)
    or HTTP 429, as fraud.blocked_response says; other clients are served as usual."""
    import redis as redis_sync
    from recstack.control.fraud import publish_blocklist
    from recstack.features.keys import RedisKey

    s = Settings.model_validate({**settings.model_dump(), "fraud": {**settings.fraud.model_dump(),
                                 "blocked_response": response, "blocklist_refresh_s": 0}})  # fmt: skip
    client_r = redis_sync.Redis.from_url(s.redis.url or "")
    publish_blocklist(client_r, RedisKey(s.redis.key_prefix), ["device:bad-phone"], f"v{time.time_ns()}")
    with TestClient(create_app(s)) as c:
        ok = c.get("/recommend", params={"user_id": 3, "k": 5}, headers={"X-Device-Id": "good-phone"})
        assert ok.status_code == 200 and ok.json()["fallback"] is False and "blocked" not in ok.json()["degraded"]
        bad = c.get("/recommend", params={"user_id": 3, "k": 5}, headers={"X-Device-Id": "bad-phone"})
        if response == "429":
            assert bad.status_code == 429 and "blocked" in bad.json()["detail"]
        else:
            body = bad.json()
            assert bad.status_code == 200 and body["fallback"] is True and body["degraded"] == ["blocked"]
            assert all(i["channel"] == "popular/fallback" for i in body["items"]) and len(body["items"]) == 5
        assert 'recstack_fallback_total{reason="blocked"} 1.0' in c.get("/metrics").text


def test_a_new_block_takes_effect_within_the_check_cache(settings: Settings) -> None:
    """Each worker remembers a request check for fraud.check_cache_s: a block published after a client's
    first request reaches it once the remembered answer expires, not later."""
    import redis as redis_sync
    from recstack.control.fraud import publish_blocklist
    from recstack.features.keys import RedisKey

    s = Settings.model_validate({**settings.model_dump(), "fraud": {**settings.fraud.model_dump(),
                                 "blocklist_refresh_s": 0, "check_cache_s": 0.5}})  # fmt: skip
    client_r = redis_sync.Redis.from_url(s.redis.url or "")
    device = f"phone-{time.time_ns()}"
    with TestClient(create_app(s)) as c:
        first = c.get("/recommend", params={"user_id": 3, "k": 5}, headers={"X-Device-Id": device})
        assert first.json()["degraded"] == []
        publish_blocklist(client_r, RedisKey(s.redis.key_prefix), [f"device:{device}"], f"v{time.time_ns()}")
        cached = c.get("/recommend", params={"user_id": 3, "k": 5}, headers={"X-Device-Id": device})
        assert cached.json()["degraded"] == []  # the remembered answer, still fresh
        other = c.get("/recommend", params={"user_id": 4, "k": 5}, headers={"X-Device-Id": device})
        assert other.json()["degraded"] == ["blocked"]  # another (user, device, IP): asked Redis
        time.sleep(0.6)
        later = c.get("/recommend", params={"user_id": 3, "k": 5}, headers={"X-Device-Id": device})
        assert later.json()["degraded"] == ["blocked"]


def test_review_decisions_reach_the_served_lists(settings: Settings) -> None:
    """Content safety in the service: an item the machine review rejects, or a reviewer rejects through
    /review, is never served after the next refresh; one approved from the queue is servable again."""
    import redis as redis_sync
    from recstack.control.safety import ContentReviewer, ItemContent, ModerationStore
    from recstack.features.keys import RedisKey

    s = Settings.model_validate({**settings.model_dump(), "redis": {**settings.redis.model_dump(),
                                 "key_prefix": f"mod{time.time_ns()}"}, "safety": {"refresh_s": 0.1}})  # fmt: skip
    with TestClient(create_app(s)) as c:
        first = [i["item_id"] for i in c.get("/recommend", params={"user_id": 5, "k": 10}).json()["items"]]
        banned, doubtful = first[0], first[1]
        store = ModerationStore(redis_sync.Redis.from_url(s.redis.url or ""), RedisKey(s.redis.key_prefix), s.safety)
        reviewer = ContentReviewer(s.safety)
        store.submit(reviewer.review_many([ItemContent(banned, "free p0rn here", ()),
                                           ItemContent(doubtful, "Visit www.cheap-pills.example now", ())]))  # fmt: skip
        queue = c.get("/review/queue", params={"limit": 10}).json()
        assert doubtful in [q["item_id"] for q in queue["items"]] and banned not in [q["item_id"] for q in queue["items"]]
        deadline = time.monotonic() + 10
        served = first
        while (banned in served or doubtful in served) and time.monotonic() < deadline:
            time.sleep(0.2)
            served = [i["item_id"] for i in c.get("/recommend", params={"user_id": 5, "k": 10}).json()["items"]]
        assert banned not in served and doubtful not in served  # rejected and pending are never served
        r = c.post(f"/review/{doubtful}", json={"decision": "approve", "reviewer": "alice", "note": "fine"})
        assert r.status_code == 200
        assert c.post(f"/review/{doubtful}", json={"decision": "maybe", "reviewer": "alice"}).status_code == 422
        deadline = time.monotonic() + 10
        while doubtful not in served and time.monotonic() < deadline:
            time.sleep(0.2)
            served = [i["item_id"] for i in c.get("/recommend", params={"user_id": 5, "k": 10}).json()["items"]]
        assert doubtful in served and banned not in served
