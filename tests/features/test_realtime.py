"""Real-time window features on a real Redis: the store, the item snapshot and the stream consumer."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from recstack.features.bus import EventBus, open_bus
from recstack.features.definitions import RECENT_ITEMS_K
from recstack.features.keys import RedisKey
from recstack.features.realtime import (
    ITEM_FEATURE_NAMES,
    ItemSnapshotCache,
    RealtimeConsumer,
    RealtimeStore,
    parse_user_reads,
    run_realtime_consumer,
    ts_ms,
)
from recstack.features.schema import Event, EventType
from recstack.features.settings import BusSettings, load_settings

pytestmark = pytest.mark.integration

T = ts_ms(dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC))
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def event(eid: str, kind: str, user: int, item: int, at_ms: int, **extra: Any) -> Event:
    ts = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=at_ms)
    return Event(event_id=eid, event_type=EventType(kind), ts=ts, user_id=user, item_id=item, **extra)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[RedisKey]:
    k = RedisKey(f"rt{uuid.uuid4().hex[:10]}")  # one prefix per test: tests share the server
    yield k
    for key in client.scan_iter(match=f"{k.prefix}:*"):
        client.delete(key)


@pytest.fixture
def store(client: redis.Redis, keys: RedisKey) -> RealtimeStore:
    return RealtimeStore(client, keys)


def _item(store: RealtimeStore, item: int, at_ms: int) -> tuple[int, ...]:
    got = store.item_features(np.array([item]), at_ms)
    return tuple(int(got[name][0]) for name in ITEM_FEATURE_NAMES)


def test_window_boundaries(store: RealtimeStore) -> None:
    past = [
        # the user's clicks: exactly 30 min before (inside 30m), 30 min + 1 ms before (outside 30m, inside
        # 1h), exactly a day before (inside 1d), a day + 1 ms before (outside every window)
        event("c1", "click", 1, 201, T - 30 * MIN),
        event("c2", "click", 1, 202, T - 30 * MIN - 1),
        event("c5", "click", 1, 205, T - DAY),
        event("c6", "click", 1, 206, T - DAY - 1),
        # the item: an impression 1 ms before, a click exactly an hour before, a click an hour + 1 ms before
        event("x1", "impression", 2, 100, T - 1),
        event("x4", "click", 2, 100, T - HOUR),
        event("x6", "click", 3, 100, T - HOUR - 1),
    ]
    at_or_after = [
        event("c3", "click", 1, 203, T),
        event("c4", "click", 1, 204, T + 1),
        event("x2", "impression", 3, 100, T),
        event("x3", "impression", 4, 100, T + 1),
        event("x5", "click", 3, 100, T),
    ]
    assert store.apply(past) == len(past)
    for applied_later in (False, True):  # events at or after t are never counted at t, applied or not
        if applied_later:
            assert store.apply(at_or_after) == len(at_or_after)
        user = store.user_features(1, T)
        assert user.counts == {"user_clicks_30m": 1, "user_clicks_1h": 2, "user_clicks_1d": 3}
        assert user.recent_items.tolist() == [201, 202, 205]
        assert user.recent_items.dtype == np.int64
        # item_exposures_1h, item_exposures_1d, item_clicks_1h, item_clicks_1d
        assert _item(store, 100, T) == (1, 1, 1, 2)
    # 2 ms later the clicks at t and t + 1 count, c1 leaves the 30 minutes and c5 the day
    assert store.user_features(1, T + 2).counts == {
        "user_clicks_30m": 2,
        "user_clicks_1h": 4,
        "user_clicks_1d": 4,
    }
    assert store.user_features(999, T).counts["user_clicks_1d"] == 0  # unknown user: zeros, no error


def test_redelivery_is_idempotent_and_duplicates_count(store: RealtimeStore, client: redis.Redis) -> None:
    batch = [
        event("a", "click", 1, 10, T - 5 * MIN, request_id="r1"),
        # a second click of the same request and item is a second event: counted, like offline
        event("b", "click", 1, 10, T - 5 * MIN + 3000, request_id="r1"),
        event("c", "impression", 1, 10, T - 6 * MIN, request_id="r1"),
        event("d", "impression", 1, 10, T - 6 * MIN, request_id="r1"),  # an impression logged twice
        event("e", "rating", 1, 10, T - 4 * MIN, value=4.0),  # not a counted kind
    ]
    assert store.apply(batch) == 4
    want_user, want_item = store.user_features(1, T), _item(store, 10, T)
    assert want_user.counts["user_clicks_30m"] == 2 and want_item == (2, 2, 2, 2)
    assert want_user.recent_items.tolist() == [10, 10]
    assert store.apply(batch) == 0  # the bus delivered the batch again
    assert store.apply([batch[1], batch[0], batch[1]]) == 0  # again, reordered and repeated within a batch
    assert store.apply([*batch, event("f", "click", 1, 11, T - MIN)]) == 1
    assert store.user_features(1, T).counts["user_clicks_30m"] == 3
    assert _item(store, 10, T) == want_item
    assert store.apply([]) == 0


def test_old_members_are_trimmed_and_keys_expire(
    store: RealtimeStore, client: redis.Redis, keys: RedisKey
) -> None:
    store.apply([event("old", "click", 1, 10, T - 2 * DAY), event("older", "impression", 1, 10, T - 3 * DAY)])
    assert client.zcard(keys.user_clicks(1)) == 1 and client.zcard(keys.item_exposures(10)) == 1
    store.apply([event("new", "click", 1, 10, T), event("new-imp", "impression", 2, 10, T)])
    # the older members fell out of the lookback (+ slack) of the newest event of each key
    assert client.zcard(keys.user_clicks(1)) == 1 and client.zcard(keys.item_clicks(10)) == 1
    assert client.zcard(keys.item_exposures(10)) == 1
    # a member just inside the retention is kept, so reads slightly before the newest event stay exact
    store.apply([event("edge", "click", 1, 11, T - DAY - HOUR)])
    assert client.zcard(keys.user_clicks(1)) == 2
    for key in (keys.user_clicks(1), keys.item_clicks(10), keys.item_exposures(10), keys.active_items()):
        assert 0 < client.ttl(key) <= store.key_ttl_s


def test_recent_items_order_and_limit(store: RealtimeStore) -> None:
    clicks = [
        event("z0", "click", 1, 99, T - DAY - 1),  # outside the day
        *[event(f"s{i}", "click", 1, 20 + i, T - (20 - i) * MIN) for i in range(8)],
        # three clicks at the same millisecond: the larger item id counts as the newer (offline order)
        event("t1", "click", 1, 7, T - 2 * MIN),
        event("t2", "click", 1, 3, T - 2 * MIN),
        event("t3", "click", 1, 9, T - 2 * MIN),
        event("r1", "click", 1, 5, T - MIN),
        event("r2", "click", 1, 5, T - MIN // 2),  # a repeated click is listed each time
        event("late", "click", 1, 77, T),  # at t: not seen
    ]
    store.apply(clicks)
    recent = store.user_features(1, T).recent_items.tolist()
    assert len(recent) == RECENT_ITEMS_K
    assert recent == [5, 5, 9, 7, 3, 27, 26, 25, 24, 23]
    assert store.user_features(1, T - 2 * MIN).recent_items.tolist()[:3] == [27, 26, 25]  # ties at t excluded


def test_item_features_for_many_items_in_one_round_trip(store: RealtimeStore, client: redis.Redis) -> None:
    n = 1000
    events = []
    for i in range(n):
        events += [event(f"i{i}-{j}", "impression", j, i, T - (j + 1) * MIN) for j in range(i % 7)]
        events += [event(f"c{i}-{j}", "click", j, i, T - 2 * HOUR - j) for j in range(i % 3)]
    for start in range(0, len(events), 500):
        store.apply(events[start : start + 500])
    ids = np.concatenate([np.random.default_rng(0).permutation(n), [5000, 3, 3]])  # absent, repeated
    store.item_features(ids[:2], T)  # loads the script
    before = client.info("commandstats")
    got = store.item_features(ids, T)
    after = client.info("commandstats")
    calls = {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after}
    assert calls["cmdstat_evalsha"] == 1 and calls.get("cmdstat_eval", 0) == 0
    assert calls["cmdstat_zcount"] == 2 * 2 * len(ids)  # all the counting happened inside that one call
    expect_exp = np.where(ids < n, ids % 7, 0)
    expect_clk = np.where(ids < n, ids % 3, 0)
    assert got["item_exposures_1h"].tolist() == expect_exp.tolist()
    assert got["item_exposures_1d"].tolist() == expect_exp.tolist()
    assert got["item_clicks_1h"].tolist() == [0] * len(ids)
    assert got["item_clicks_1d"].tolist() == expect_clk.tolist()
    assert all(v.dtype == np.int64 for v in got.values())
    assert store.item_features(np.zeros(0, dtype=np.int64), T)["item_clicks_1d"].shape == (0,)


def test_user_reads_join_the_callers_pipeline(
    store: RealtimeStore, client: redis.Redis, keys: RedisKey
) -> None:
    store.apply([event("a", "click", 1, 10, T - MIN), event("b", "click", 1, 11, T - 2 * HOUR)])
    client.set(f"{keys.prefix}:own", b"x")
    pipe = client.pipeline(transaction=False)
    pipe.get(f"{keys.prefix}:own")
    reads = store.queue_user_reads(pipe, 1, T)
    pipe.get(f"{keys.prefix}:own")
    results = pipe.execute()
    assert results[0] == results[-1] == b"x"
    user, direct = parse_user_reads(results[reads]), store.user_features(1, T)
    assert user.counts == direct.counts == {"user_clicks_30m": 1, "user_clicks_1h": 1, "user_clicks_1d": 2}
    assert user.recent_items.tolist() == direct.recent_items.tolist() == [10, 11]
    with pytest.raises(ValueError, match="results"):
        parse_user_reads(results)


def test_item_snapshot_round_trip_and_cache_refresh(
    store: RealtimeStore, client: redis.Redis, keys: RedisKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.apply([event(f"e{i}", "impression", 1, 10 + i % 4, T - i * MIN) for i in range(1, 30)])
    store.apply([event("c", "click", 1, 11, T - 3 * HOUR), event("future", "impression", 1, 50, T + MIN)])
    cache = ItemSnapshotCache(client, keys, check_interval_s=0)
    ids = np.array([13, 10, 11, 12, 50, 777])
    assert not cache.maybe_refresh() and cache.lookup(ids)["item_exposures_1h"].tolist() == [0] * 6

    snap = store.write_item_snapshot(T)
    assert snap.version == 1 and snap.item_ids.tolist() == [10, 11, 12, 13]  # item 50 has no event before T
    assert cache.maybe_refresh() and cache.version == 1 and cache.snapshot and cache.snapshot.at_ms == T
    got, want = cache.lookup(ids), store.item_features(ids, T)
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}
    assert got["item_clicks_1d"].tolist() == [0, 0, 1, 0, 0, 0]

    gets: list[str] = []
    real_get = client.get

    def spy_get(key: str) -> Any:
        gets.append(key)
        return real_get(key)

    monkeypatch.setattr(client, "get", spy_get)
    assert not cache.maybe_refresh()
    assert gets == [keys.item_snapshot_version()]  # unchanged version: the blob is not fetched

    store.write_item_snapshot(T + 2 * MIN)
    assert cache.maybe_refresh() and cache.version == 2
    assert gets[-1] == keys.item_snapshot()
    assert cache.lookup(np.array([50]))["item_exposures_1h"].tolist() == [1]
    slow = ItemSnapshotCache(client, keys, check_interval_s=3600)
    assert slow.maybe_refresh() and not slow.maybe_refresh()  # at most one check per interval


# -- the consumer through the real Redis Streams bus --------------------------------------------------------
@pytest.fixture
def bus(redis_url: str, keys: RedisKey) -> Iterator[EventBus]:
    b = open_bus(redis_url, BusSettings(claim_idle_ms=300), key_prefix=keys.prefix)
    yield b
    b.close()


def _until(predicate: Callable[[], bool], step: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        step()


def test_consumer_applies_events_and_dead_letters_malformed_messages(
    store: RealtimeStore, bus: EventBus, client: redis.Redis, keys: RedisKey
) -> None:
    topic = "events"
    good = [
        event("g1", "click", 1, 10, T - MIN),
        event("g2", "impression", 2, 10, T - 2 * MIN),
        event("g3", "rating", 1, 10, T - MIN, value=5.0),
        event("g4", "click", 1, 11, T - 3 * MIN),
    ]
    bad_event = orjson.dumps({**good[0].model_dump(mode="json"), "event_id": "b2", "user_id": -1})
    values = [good[0].to_json_bytes(), b"{not json", bad_event, good[1].to_json_bytes(), b"",
              good[2].to_json_bytes(), good[3].to_json_bytes()]  # fmt: skip
    bus.publish(topic, values)
    consumer = RealtimeConsumer(
        bus,
        store,
        topic,
        "rt",
        "c1",
        batch_size=3,
        poll_timeout_s=0.1,
        snapshot_interval_s=0,
        now_ms=lambda: T,
    )
    _until(lambda: consumer.processed + consumer.malformed >= len(values), consumer.run_once)

    assert (consumer.processed, consumer.changed, consumer.malformed) == (4, 3, 3)
    assert consumer.batches == 3 and consumer.snapshots >= 3 and consumer.errors == 0
    assert consumer.lag_ms == MIN and consumer.last_event_ms == T - MIN
    dead_key = keys.dead_letter(topic)
    dead: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(dead_key)  # type: ignore[assignment]
    assert [f[b"v"] for _, f in dead] == [b"{not json", bad_event, b""]
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert "json" in reasons[0].lower() and "user_id" in reasons[1] and reasons[2]
    assert client.xpending(keys.stream(topic), "rt")["pending"] == 0  # every message committed
    user = store.user_features(1, T)
    assert user.counts["user_clicks_30m"] == 2 and user.recent_items.tolist() == [10, 11]
    cache = ItemSnapshotCache(client, keys, check_interval_s=0)
    assert cache.maybe_refresh()
    assert cache.lookup(np.array([10, 11]))["item_clicks_1h"].tolist() == [1, 1]
    assert cache.lookup(np.array([10]))["item_exposures_1h"].tolist() == [1]


def test_a_batch_redelivered_after_a_crash_is_counted_once(
    store: RealtimeStore, bus: EventBus, client: redis.Redis, keys: RedisKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "events"
    events = [event(f"e{i}", "click", 1, 10 + i, T - (i + 1) * MIN) for i in range(5)]
    bus.publish(topic, [e.to_json_bytes() for e in events])
    crashing = RealtimeConsumer(bus, store, topic, "rt", "a", poll_timeout_s=0.1, snapshot_interval_s=3600)

    def crash(messages: object) -> None:
        raise redis.ConnectionError("lost the connection before the commit")

    monkeypatch.setattr(crashing._consumer, "commit", crash)
    with pytest.raises(redis.ConnectionError):
        crashing.run_once()  # applied, never committed: the member dies here
    assert store.user_features(1, T).counts["user_clicks_1h"] == 5

    other = RealtimeConsumer(bus, store, topic, "rt", "b", poll_timeout_s=0.1, snapshot_interval_s=3600)
    _until(lambda: other.processed >= 5, other.run_once)  # claimed once a's entries idle past claim_idle_ms
    assert (other.processed, other.changed) == (5, 0)
    assert store.user_features(1, T).counts["user_clicks_1h"] == 5
    assert client.xpending(keys.stream(topic), "rt")["pending"] == 0


def test_run_loop_retries_a_failed_batch(
    store: RealtimeStore, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "events"
    bus.publish(topic, [event("e1", "click", 1, 10, T - MIN).to_json_bytes()])
    consumer = RealtimeConsumer(bus, store, topic, "rt", "c", poll_timeout_s=0.1, snapshot_interval_s=3600)
    real_apply, failures = store.apply, [1]

    def flaky(events: list[Event]) -> int:
        if failures and events:
            failures.pop()
            raise redis.ConnectionError("redis went away")
        return real_apply(events)

    monkeypatch.setattr(store, "apply", flaky)
    stop = threading.Event()
    lines: list[str] = []
    thread = threading.Thread(target=consumer.run, args=(stop, lines.append), daemon=True)
    thread.start()
    _until(lambda: consumer.processed >= 1, lambda: time.sleep(0.05))
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert consumer.errors == 1 and consumer.processed == 1 and consumer.changed == 1
    assert lines and "1 events" in lines[-1]


def test_run_realtime_consumer_from_settings(
    redis_url: str, keys: RedisKey, store: RealtimeStore, bus: EventBus, client: redis.Redis, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("RECSTACK_CONFIG", raising=False)
    settings = load_settings(
        home=tmp_path, redis={"url": redis_url, "key_prefix": keys.prefix},
        realtime={"poll_timeout_s": 0.1, "snapshot_interval_s": 0, "consumer_name": "cli"},
    )  # fmt: skip
    stop = threading.Event()
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(run_realtime_consumer(settings, stop)), daemon=True
    )
    thread.start()
    bus.publish(settings.bus.events_topic, [event("e1", "click", 7, 10, T - MIN).to_json_bytes(), b"junk"])
    _until(lambda: store.user_features(7, T).counts["user_clicks_1h"] == 1, lambda: time.sleep(0.05))
    # the bus may hand over the junk message in a later batch: wait for its dead letter too (the batch then
    # finishes, counters included, before the loop looks at the stop flag)
    _until(lambda: client.xlen(keys.dead_letter(settings.bus.events_topic)) >= 1, lambda: time.sleep(0.05))
    stop.set()
    thread.join(10)
    assert result["processed"] == 1 and result["malformed"] == 1


def test_consumer_on_kafka(store: RealtimeStore, kafka_url: str) -> None:
    """The same consumer on the Kafka backend (a real Kafka-protocol broker): events keyed by user, consumed
    by a group, applied, committed; a second member of the group sees nothing left."""
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    kbus = open_bus(kafka_url, BusSettings())
    try:
        kbus.ensure_topic(topic)
        events = [event(f"k{i}", "click", 7, 100 + i, T - (i + 1) * MIN) for i in range(5)]
        kbus.publish(topic, [e.to_json_bytes() for e in events] + [b"{bad"], [b"7"] * 6)
        consumer = RealtimeConsumer(kbus, store, topic, "rt-kafka", "k1", poll_timeout_s=0.5,
                                    snapshot_interval_s=0, now_ms=lambda: T)  # fmt: skip
        _until(lambda: consumer.processed + consumer.malformed >= 6, consumer.run_once, timeout_s=60)
        assert (consumer.processed, consumer.malformed) == (5, 1)
        user = store.user_features(7, T)
        assert user.counts["user_clicks_30m"] == 5 and user.recent_items.tolist() == [100, 101, 102, 103, 104]
        consumer.close()
        again = RealtimeConsumer(kbus, store, topic, "rt-kafka", "k2", poll_timeout_s=0.5, now_ms=lambda: T)
        again.run_once()
        again.run_once()
        assert again.processed == 0  # committed: not redelivered to the group
        again.close()
    finally:
        kbus.close()


def test_consumer_applies_only_events_the_fraud_screen_allows(
    store: RealtimeStore, bus: EventBus, client: redis.Redis, keys: RedisKey
) -> None:
    """Anti-fraud sits before the features: an impression-less click never reaches them, but is audited."""
    from recstack.control.fraud import FraudGuard

    guard = FraudGuard(client, keys)
    topic = f"events-{uuid.uuid4().hex[:6]}"
    shown = event("f1", "impression", 5, 20, T - 5 * MIN, device_id="d5", ip="10.0.0.5")
    clicked = event("f2", "click", 5, 20, T - 4 * MIN, device_id="d5", ip="10.0.0.5")
    blind = event("f3", "click", 5, 21, T - 3 * MIN, device_id="d5", ip="10.0.0.5")  # never shown
    bus.publish(topic, [e.to_json_bytes() for e in (shown, clicked, blind)])
    consumer = RealtimeConsumer(bus, store, topic, "rt", "c1", batch_size=10, poll_timeout_s=0.1,
                                snapshot_interval_s=1e9, now_ms=lambda: T, screen=guard)  # fmt: skip
    _until(lambda: consumer.processed >= 3, consumer.run_once)
    assert consumer.quarantined == 1 and consumer.counters()["quarantined"] == 1
    user = store.user_features(5, T)
    assert user.counts["user_clicks_30m"] == 1 and user.recent_items.tolist() == [20]
    audit = guard.audit_log()
    assert [r.event.event_id for r in audit] == ["f3"]
