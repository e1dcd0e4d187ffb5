"""Online real-time features (Redis, ``features/realtime.py``) equal the Spark samples job's, per sample.

The events of ``test_samples_parity`` (window boundaries, duplicate and late clicks, impressions logged twice,
users with one event, many events at one millisecond) plus crafted boundary cases are written to the lake and
turned into samples by the real Spark job. The same events are then replayed in time order through the store,
each batch delivered twice (at-least-once), and at every sample timestamp ``t`` -- after every event with
``ts <= t`` and none later: the events at ``t`` itself are stored but must not count -- the online user
features, item features and item snapshot must equal the sample's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession
from recstack.features.definitions import RECENT_ITEMS, RECENT_ITEMS_K, WINDOW_FEATURES, Entity
from recstack.features.keys import Col, RedisKey
from recstack.features.realtime import ItemSnapshotCache, RealtimeStore, ts_ms
from recstack.features.schema import Event

from tests.offline.test_samples_parity import DAY, T0, _lake, _row, _spark_samples, generated_events

USER_WINDOWS = [w.name for w in WINDOW_FEATURES if w.entity == Entity.USER]
ITEM_WINDOWS = [w.name for w in WINDOW_FEATURES if w.entity == Entity.ITEM]
EDGE_T = T0 + dt.timedelta(hours=15)
BATCH = 500


def edge_rows() -> list[dict]:
    """Crafted cases on their own ids (users 900+, items 900+) around the samples at ``EDGE_T``."""
    t, ms, m = EDGE_T, dt.timedelta(milliseconds=1), dt.timedelta(minutes=1)
    rows = [
        # three samples at the same instant: two users on item 950, and one more user's impression of it
        _row("q1", "impression", "edge", 900, 950, t),
        _row("q2", "impression", "edge2", 901, 950, t),
        _row("q3", "impression", "edge3", 902, 950, t),
        # user 900's clicks on the window boundaries, at t (not seen) and after
        _row("b1", "click", "b", 900, 901, t - 30 * m),
        _row("b2", "click", "b", 900, 902, t - 30 * m - ms),
        _row("b3", "click", "b", 900, 903, t - 60 * m),
        _row("b4", "click", "b", 900, 904, t - 60 * m - ms),
        _row("b5", "click", "b", 900, 905, t - dt.timedelta(days=1)),
        _row("b6", "click", "b", 900, 906, t - dt.timedelta(days=1) - ms),
        _row("b7", "click", "b", 900, 907, t),
        _row("b8", "click", "b", 900, 908, t + ms),
        # three clicks at one millisecond (the larger item id is the newer) and a click logged twice
        _row("t1", "click", "t", 900, 912, t - 10 * m),
        _row("t2", "click", "t", 900, 911, t - 10 * m),
        _row("t3", "click", "t", 900, 913, t - 10 * m),
        _row("d1", "click", "d", 900, 914, t - 5 * m),
        _row("d2", "click", "d", 900, 914, t - 5 * m),
        # item 950 seen by others: on the boundaries, logged twice, and clicked
        _row("i1", "impression", "o1", 930, 950, t - 60 * m),
        _row("i2", "impression", "o2", 931, 950, t - 60 * m - ms),
        _row("i3", "impression", "o3", 932, 950, t - dt.timedelta(days=1)),
        _row("i4", "impression", "o4", 933, 950, t - dt.timedelta(days=1) - ms),
        _row("i5", "impression", "o5", 934, 950, t - 2 * 60 * m),
        _row("i6", "impression", "o5", 934, 950, t - 2 * 60 * m),
        _row("i7", "click", "o1", 930, 950, t - 60 * m),
        _row("i8", "click", "o9", 935, 950, t - dt.timedelta(days=1)),
        _row("i9", "click", "o9", 935, 950, t),
    ]
    # a user with more than RECENT_ITEMS_K clicks in the day before a sample
    rows += [_row(f"k{i}", "click", f"k{i}", 940, 960 + i, t - (i + 1) * m) for i in range(15)]
    rows.append(_row("k-sample", "impression", "k-sample", 940, 950, t))
    return rows


def _ms(ts: pd.Series) -> np.ndarray:
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)


@pytest.mark.integration
def test_online_realtime_features_equal_spark_samples(
    spark: SparkSession, redis_url: str, tmp_path: Path
) -> None:
    rows = generated_events() + edge_rows()
    samples = _spark_samples(spark, _lake(tmp_path, rows), DAY, DAY).reset_index(drop=True)
    samples["t_ms"] = _ms(samples[Col.TS])
    events = sorted((Event(**r) for r in rows), key=lambda e: ts_ms(e.ts))
    event_ms = np.array([ts_ms(e.ts) for e in events], dtype=np.int64)

    client = redis.Redis.from_url(redis_url)
    keys = RedisKey(f"parity{uuid.uuid4().hex[:8]}")
    store = RealtimeStore(client, keys)
    cache = ItemSnapshotCache(client, keys, check_interval_s=0)
    online: dict[int, dict[str, object]] = {}  # sample row → online features
    from_snapshot: dict[int, dict[str, int]] = {}
    applied = 0
    try:
        for t, group in samples.groupby("t_ms", sort=True):
            # every event up to t (those at t must not count), none after; each batch delivered twice
            upto = int(np.searchsorted(event_ms, t, side="right"))
            for start in range(applied, upto, BATCH):
                batch = events[start : min(start + BATCH, upto)]
                assert store.apply(batch) > 0 or not any(
                    e.event_type in ("click", "impression") for e in batch
                )
                assert store.apply(batch[::-1]) == 0
            applied = upto
            t = int(t)
            users = {u: store.user_features(u, t) for u in group[Col.USER_ID].unique().tolist()}
            items = group[Col.ITEM_ID].to_numpy(dtype=np.int64)
            item_counts = store.item_features(items, t)
            store.write_item_snapshot(t)
            assert cache.maybe_refresh()
            snap_counts = cache.lookup(items)
            for j, (row, user_id) in enumerate(zip(group.index, group[Col.USER_ID], strict=True)):
                user = users[user_id]
                online[row] = {**user.counts, RECENT_ITEMS: user.recent_items.tolist(),
                               **{name: int(item_counts[name][j]) for name in ITEM_WINDOWS}}  # fmt: skip
                from_snapshot[row] = {name: int(snap_counts[name][j]) for name in ITEM_WINDOWS}
    finally:
        for key in client.scan_iter(match=f"{keys.prefix}:*"):
            client.delete(key)
        client.close()

    assert len(online) == len(samples) > 300
    mismatches = []
    for row, s in samples.iterrows():
        offline: dict[str, object] = {name: int(s[name]) for name in USER_WINDOWS + ITEM_WINDOWS}
        offline[RECENT_ITEMS] = [int(v) for v in s[RECENT_ITEMS]]
        if online[row] != offline or any(from_snapshot[row][n] != offline[n] for n in ITEM_WINDOWS):
            mismatches.append((s[Col.REQUEST_ID], s[Col.USER_ID], s[Col.ITEM_ID], offline, online[row]))
    assert not mismatches, f"{len(mismatches)} samples differ, e.g. {mismatches[:3]}"

    # the data exercises every feature, the recent-items limit and the crafted boundaries
    for name in USER_WINDOWS + ITEM_WINDOWS:
        assert samples[name].max() > 0, name
    assert (samples[RECENT_ITEMS].map(len) == RECENT_ITEMS_K).any()
    edge = samples[samples[Col.REQUEST_ID] == "edge"].iloc[0]
    assert [int(edge[n]) for n in USER_WINDOWS] == [6, 8, 10]  # 30m: b1, t1-3, d1-2; 1h: + b2-3; 1d: + b4-5
    assert list(edge[RECENT_ITEMS]) == [914, 914, 913, 912, 911, 901, 902, 903, 904, 905]
    assert [int(edge[n]) for n in ITEM_WINDOWS] == [1, 5, 1, 2]
