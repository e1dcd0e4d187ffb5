"""Real-time window features kept in Redis by a stream consumer: the online twin of the Spark samples job.

``RealtimeStore`` holds, per entity, the events each window feature of ``features.definitions`` counts, as
sorted sets scored by the event time in ms (``RedisKey.user_clicks``, ``item_exposures``, ``item_clicks``).
A query at time ``t`` counts the members with ``t - w <= score < t`` (``ZCOUNT key t-w (t``), so the online
value at ``t`` is exactly the offline value of a sample at ``t`` (``tests/offline/test_realtime_parity.py``).

The counting rules follow ``offline/jobs/samples.py``, which counts *event rows*, not samples:

* every click event counts, duplicates included (two clicks of the same item and request are two clicks);
  every impression event counts, an impression logged twice included (only the *sample* is de-duplicated);
  clicks count whether or not they are attributed to an impression (orphan and late clicks too);
* an event is identified by its ``event_id``: the member is built from it, so a message the bus redelivers
  (at-least-once) is written again as the same member and never counted twice. The lake does not de-duplicate
  ``event_id``, so offline and online agree as long as ids are unique there (the ingest path's contract);
* ``user_recent_items``: clicks at the same millisecond are ordered by item id, the larger id is the newer
  (``offline/jobs/windows.py: recent_values``). The user's member is ``<item id, 20 digits>:<event_id>``, and
  ``ZREVRANGEBYSCORE`` orders equal scores by member in reverse, which gives that order.

Redis never grows without bound: each write trims the key to the members of the last ``MAX_LOOKBACK_S`` plus
``retention_slack_s`` before the newest event written, and refreshes a TTL of the same length. Memory is
therefore one member per counted event of the last day (and the slack), per entity. A read at ``at_ms`` is
exact whenever ``at_ms >= newest event of the entity - retention_slack_s``: always for serving (``at_ms`` is
now) and for a replay in time order; the slack covers client clocks ahead of the server's.

Serving reads: ``queue_user_reads`` / ``parse_user_reads`` put the user's four reads into the service's own
pipeline (one round trip per request), and items come from ``ItemSnapshotCache``, a per-worker copy of the
packed snapshot ``write_item_snapshot`` stores every few seconds (no per-item read per request).
``item_features`` answers any number of items in one round trip with a server-side script.

The client must return bytes (``decode_responses=False``, redis-py's default): the snapshot is binary.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis
from pydantic import ValidationError
from recstack.features.bus import BusMessage, EventBus, open_bus
from recstack.features.definitions import (
    MAX_LOOKBACK_S,
    RECENT_ITEMS_K,
    RECENT_ITEMS_WINDOW_S,
    WINDOW_FEATURES,
    Counted,
    Entity,
)
from recstack.features.keys import RedisKey
from recstack.features.schema import Event, EventType
from recstack.features.settings import Settings

log = logging.getLogger(__name__)

USER_WINDOWS = tuple(w for w in WINDOW_FEATURES if w.entity == Entity.USER)
ITEM_WINDOWS = tuple(w for w in WINDOW_FEATURES if w.entity == Entity.ITEM)
LOOKBACK_MS = MAX_LOOKBACK_S * 1000
_COUNTED = {EventType.CLICK: Counted.CLICK, EventType.IMPRESSION: Counted.IMPRESSION}
_ITEM_DIGITS = 20  # any non-negative int64 fits; zero-padded so members sort like the ids
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)

# The sorted sets kept per (entity, counted kind). Recent items are read from the user's click set.
_SERIES: dict[tuple[Entity, Counted], Callable[[RedisKey, int], str]] = {
    (Entity.USER, Counted.CLICK): RedisKey.user_clicks,
    (Entity.ITEM, Counted.IMPRESSION): RedisKey.item_exposures,
    (Entity.ITEM, Counted.CLICK): RedisKey.item_clicks,
}
if missing := {(w.entity, w.counted) for w in WINDOW_FEATURES} - set(_SERIES):
    raise RuntimeError(f"features/realtime.py keeps no sorted set for the window features of {missing}")
if any(w.counted != Counted.CLICK for w in USER_WINDOWS):
    raise RuntimeError("features/realtime.py reads every user window from the user's click set")

# Item reads: one sorted set per counted kind, every distinct item window counted on each.
_ITEM_KINDS: tuple[Counted, ...] = tuple(sorted({w.counted for w in ITEM_WINDOWS}))
_ITEM_WINDOWS_MS: tuple[int, ...] = tuple(sorted({w.window_s * 1000 for w in ITEM_WINDOWS}))
_ITEM_LAYOUT: tuple[tuple[str, int, int], ...] = tuple(
    (w.name, _ITEM_KINDS.index(w.counted), _ITEM_WINDOWS_MS.index(w.window_s * 1000)) for w in ITEM_WINDOWS
)
ITEM_FEATURE_NAMES: tuple[str, ...] = tuple(w.name for w in ITEM_WINDOWS)

_ZCOUNT_MANY = """
-- KEYS: sorted sets. ARGV[1] = m, then m (min, max) ZCOUNT bounds applied to every key.
-- Returns the counts flat and key-major: out[(i - 1) * m + j] = ZCOUNT(KEYS[i], min_j, max_j).
local m = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  for j = 1, m do
    out[#out + 1] = redis.call('ZCOUNT', KEYS[i], ARGV[2 * j], ARGV[2 * j + 1])
  end
end
return out
"""


def ts_ms(ts: dt.datetime) -> int:
    """Milliseconds since the epoch, floored (Spark's ``unix_millis``); naive values are read as UTC."""
    ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH) // _MS


def _bounds(at_ms: int, window_ms: int) -> tuple[int, str]:
    """``ZCOUNT`` bounds of ``at_ms - window_ms <= score < at_ms``."""
    return at_ms - window_ms, f"({at_ms}"


@dataclass(frozen=True)
class UserRealtime:
    """A user's real-time features at one instant.

    ``counts``: user window feature name → count; ``recent_items``: int64 item ids, newest first, at most
    ``RECENT_ITEMS_K``.
    """

    counts: dict[str, int]
    recent_items: np.ndarray

    @classmethod
    def empty(cls) -> UserRealtime:
        """No events: what a new user, or a request without Redis, gets."""
        return cls({w.name: 0 for w in USER_WINDOWS}, np.zeros(0, dtype=np.int64))


def parse_user_reads(results: Sequence[Any]) -> UserRealtime:
    """``UserRealtime`` from ``results[reads]``: the results of ``RealtimeStore.queue_user_reads``."""
    if len(results) != len(USER_WINDOWS) + 1:
        raise ValueError(f"expected {len(USER_WINDOWS) + 1} results of queue_user_reads, got {len(results)}")
    counts = {w.name: int(results[i]) for i, w in enumerate(USER_WINDOWS)}
    recent = np.array([int(m[:_ITEM_DIGITS]) for m in results[-1]], dtype=np.int64)
    return UserRealtime(counts, recent)


# -- item snapshot ------------------------------------------------------------------------------------------
_SNAPSHOT_MAGIC = b"RTS1"
_HEADER_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class ItemSnapshot:
    """The item window counts of every recently active item at ``at_ms``.

    ``item_ids``: sorted int64 (n,); ``counts``: item window feature name → int64 (n,) aligned with it.
    """

    version: int
    at_ms: int
    item_ids: np.ndarray
    counts: dict[str, np.ndarray]

    def lookup(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Counts aligned with ``item_ids`` (any order, repeats allowed); 0 for items absent."""
        q = np.asarray(item_ids, dtype=np.int64)
        out = {name: np.zeros(len(q), dtype=np.int64) for name in self.counts}
        if len(self.item_ids) == 0:
            return out
        pos = np.minimum(np.searchsorted(self.item_ids, q), len(self.item_ids) - 1)
        hit = self.item_ids[pos] == q
        for name, c in self.counts.items():
            out[name][hit] = c[pos[hit]]
        return out

    def to_bytes(self) -> bytes:
        """``RTS1`` | header length (uint32 LE) | JSON header | ids (int64 LE) | counts, a row per feature."""
        header = json.dumps(
            {
                "version": self.version,
                "at_ms": self.at_ms,
                "n": len(self.item_ids),
                "features": list(self.counts),
            }
        ).encode()
        body = [np.ascontiguousarray(self.item_ids, dtype="<i8").tobytes()]
        body += [np.ascontiguousarray(c, dtype="<i8").tobytes() for c in self.counts.values()]
        return b"".join([_SNAPSHOT_MAGIC, _HEADER_LEN.pack(len(header)), header, *body])

    @classmethod
    def from_bytes(cls, blob: bytes) -> ItemSnapshot:
        if blob[:4] != _SNAPSHOT_MAGIC:
            raise ValueError("not an item snapshot (bad magic)")
        (size,) = _HEADER_LEN.unpack_from(blob, 4)
        header = json.loads(blob[8 : 8 + size])
        n, offset = int(header["n"]), 8 + size
        arrays = np.frombuffer(blob, dtype="<i8", offset=offset).reshape(1 + len(header["features"]), n)
        arrays = arrays.astype(np.int64)
        counts = {name: arrays[1 + j] for j, name in enumerate(header["features"])}
        return cls(int(header["version"]), int(header["at_ms"]), arrays[0], counts)


# -- the store ----------------------------------------------------------------------------------------------
class RealtimeStore:
    """The real-time window state in Redis: written by ``apply``, read at any instant ``at_ms``.

    On Redis Cluster the multi-key script of ``item_features`` / ``write_item_snapshot`` needs its keys in one
    hash slot, which per-item keys are not: there, split the keys by node (``CLUSTER KEYSLOT``) and run the
    script once per node, or read from a single-instance replica. Everything else is single-key commands.
    """

    def __init__(self, client: redis.Redis, keys: RedisKey, retention_slack_s: int = 3600) -> None:
        self.client = client
        self.keys = keys
        self.retention_ms = LOOKBACK_MS + retention_slack_s * 1000
        self.key_ttl_s = MAX_LOOKBACK_S + retention_slack_s
        self._zcount_many = client.register_script(_ZCOUNT_MANY)

    # writes ---------------------------------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> int:
        """Add the clicks and impressions of ``events`` to their sorted sets (other types are ignored).

        One pipelined round trip. Each touched key is trimmed to the lookback plus the slack before its newest
        event of the batch and gets a TTL of the same length. Returns how many events were new
        (an event already stored, e.g. redelivered by the bus, changes nothing and is not counted).
        """
        members: dict[str, dict[str, int]] = {}  # key → member → ts (ms)
        item_keys: set[str] = set()
        active: dict[str, int] = {}  # item id → newest ts (ms)
        for e in events:
            counted = _COUNTED.get(e.event_type)
            if counted is None:
                continue
            t = ts_ms(e.ts)
            user_builder = _SERIES.get((Entity.USER, counted))
            if user_builder is not None:
                member = f"{e.item_id:0{_ITEM_DIGITS}d}:{e.event_id}"  # ties of recent items: by item id
                members.setdefault(user_builder(self.keys, e.user_id), {})[member] = t
            item_key = _SERIES[(Entity.ITEM, counted)](self.keys, e.item_id)
            members.setdefault(item_key, {})[e.event_id] = t
            item_keys.add(item_key)
            active[str(e.item_id)] = max(t, active.get(str(e.item_id), t))
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key, mapping in members.items():
            pipe.zadd(key, mapping)
            pipe.zremrangebyscore(key, "-inf", f"({max(mapping.values()) - self.retention_ms}")
            pipe.expire(key, self.key_ttl_s)
        active_key = self.keys.active_items()
        pipe.zadd(active_key, active, gt=True)  # keep each item's newest ts
        pipe.zremrangebyscore(active_key, "-inf", f"({max(active.values()) - self.retention_ms}")
        pipe.expire(active_key, self.key_ttl_s)
        added = pipe.execute()[0 : 3 * len(members) : 3]
        # every counted event is in exactly one item set (exposures or clicks): count the additions there
        return sum(int(n) for key, n in zip(members, added, strict=True) if key in item_keys)

    def write_dead_letters(self, topic: str, records: Sequence[tuple[bytes, str, str]], max_len: int) -> None:
        """Append ``(raw message, reason, bus position)`` records to ``RedisKey.dead_letter(topic)``."""
        if not records:
            return
        key = self.keys.dead_letter(topic)
        pipe = self.client.pipeline(transaction=False)
        now = int(time.time() * 1000)
        for raw, reason, position in records:
            fields = {"v": raw, "reason": reason[:2000], "position": position, "at_ms": str(now)}
            pipe.xadd(key, fields, maxlen=max_len, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    # user reads -----------------------------------------------------------------------------------------
    def queue_user_reads(self, pipe: redis.client.Pipeline, user_id: int, at_ms: int) -> slice:
        """Queue the reads of ``user_id``'s features at ``at_ms`` on the caller's pipeline.

        Returns where their results will be in ``pipe.execute()``'s list: pass ``results[slice]`` to
        ``parse_user_reads``. The caller may queue its own commands before and after, so a request does all
        its Redis reads in one round trip::

            pipe = client.pipeline(transaction=False)
            reads = store.queue_user_reads(pipe, user_id, now_ms)
            pipe.get(...)  # the service's own reads
            results = pipe.execute()
            user = parse_user_reads(results[reads])
        """
        start = len(pipe)
        key = self.keys.user_clicks(user_id)
        for w in USER_WINDOWS:
            pipe.zcount(key, *_bounds(at_ms, w.window_s * 1000))
        lo, hi = _bounds(at_ms, RECENT_ITEMS_WINDOW_S * 1000)
        pipe.zrevrangebyscore(key, hi, lo, start=0, num=RECENT_ITEMS_K)
        return slice(start, len(pipe))

    def user_features(self, user_id: int, at_ms: int) -> UserRealtime:
        """The user's window counts and recent items at ``at_ms`` (events of ``at_ms - w <= ts < at_ms``)."""
        pipe = self.client.pipeline(transaction=False)
        reads = self.queue_user_reads(pipe, user_id, at_ms)
        return parse_user_reads(pipe.execute()[reads])

    # item reads -----------------------------------------------------------------------------------------
    def _item_script_args(self, item_ids: np.ndarray, at_ms: int) -> tuple[list[str], list[int | str]]:
        series = [_SERIES[(Entity.ITEM, kind)] for kind in _ITEM_KINDS]
        keys = [builder(self.keys, int(i)) for i in item_ids for builder in series]
        args: list[int | str] = [len(_ITEM_WINDOWS_MS)]
        for w in _ITEM_WINDOWS_MS:
            args.extend(_bounds(at_ms, w))
        return keys, args

    @staticmethod
    def _item_counts(flat: Iterable[int], n: int) -> dict[str, np.ndarray]:
        grid = np.asarray(list(flat), dtype=np.int64).reshape(n, len(_ITEM_KINDS), len(_ITEM_WINDOWS_MS))
        return {name: grid[:, k, w].copy() for name, k, w in _ITEM_LAYOUT}

    def item_features(self, item_ids: np.ndarray, at_ms: int) -> dict[str, np.ndarray]:
        """Item window feature name → int64 counts at ``at_ms``, aligned with ``item_ids``.

        One round trip whatever the number of items (one script call; ~2 µs of server time per item and
        window, so 1,000 items hold the server for a few ms).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(ids) == 0:
            return {name: np.zeros(0, dtype=np.int64) for name in ITEM_FEATURE_NAMES}
        keys, args = self._item_script_args(ids, at_ms)
        return self._item_counts(self._zcount_many(keys=keys, args=args), len(ids))

    # item snapshot --------------------------------------------------------------------------------------
    def write_item_snapshot(self, at_ms: int, chunk_items: int = 2000) -> ItemSnapshot:
        """Count the windows of every item with events in the lookback at ``at_ms`` and store them packed.

        Items whose counts are all 0 are left out. The scripts run in chunks of ``chunk_items`` so that a
        large catalog never holds the server for long. The blob (which carries its version) and
        ``RedisKey.item_snapshot_version`` are written in one optimistic transaction (WATCH / MULTI), so a
        reader never sees one without the other, even with several writers (the last one wins).
        """
        lo = at_ms - LOOKBACK_MS
        active = self.keys.active_items()
        raw_ids: list[bytes] = self.client.zrangebyscore(active, lo, "+inf")  # type: ignore[assignment]
        ids = np.sort(np.array([int(i) for i in raw_ids], dtype=np.int64))
        counts = {name: np.zeros(len(ids), dtype=np.int64) for name in ITEM_FEATURE_NAMES}
        if len(ids):
            pipe = self.client.pipeline(transaction=False)
            chunks = [ids[i : i + chunk_items] for i in range(0, len(ids), chunk_items)]
            for chunk in chunks:
                keys, args = self._item_script_args(chunk, at_ms)
                self._zcount_many(keys=keys, args=args, client=pipe)
            parts = [self._item_counts(flat, len(c)) for flat, c in zip(pipe.execute(), chunks, strict=True)]
            counts = {name: np.concatenate([p[name] for p in parts]) for name in ITEM_FEATURE_NAMES}
            nonzero = np.any(np.stack(list(counts.values())) > 0, axis=0)
            ids = ids[nonzero]
            counts = {name: c[nonzero] for name, c in counts.items()}
        version_key = self.keys.item_snapshot_version()
        written: list[ItemSnapshot] = []

        def store(pipe: redis.client.Pipeline) -> None:  # re-run by redis-py if another writer got in first
            snapshot = ItemSnapshot(int(pipe.get(version_key) or 0) + 1, at_ms, ids, counts)
            pipe.multi()
            pipe.set(self.keys.item_snapshot(), snapshot.to_bytes())
            pipe.set(version_key, snapshot.version)
            written.append(snapshot)

        self.client.transaction(store, version_key)
        return written[-1]


class ItemSnapshotCache:
    """A service worker's copy of the item snapshot: item real-time features without a Redis read per item.

    ``maybe_refresh`` reads the version key (at most once per ``check_interval_s``) and fetches the blob only
    when the version changed. ``lookup`` is a local binary search; before the first snapshot it returns zeros.
    Safe to share between threads: a refresh swaps one immutable ``ItemSnapshot``.
    """

    def __init__(self, client: redis.Redis, keys: RedisKey, check_interval_s: float = 1.0) -> None:
        self.client = client
        self.keys = keys
        self.check_interval_s = check_interval_s
        self.snapshot: ItemSnapshot | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        """Version of the snapshot held, 0 before the first."""
        return self.snapshot.version if self.snapshot else 0

    def maybe_refresh(self, force: bool = False) -> bool:
        """Load the stored snapshot if its version differs from the one held; True when one was loaded."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval_s:
            return False
        if not self._lock.acquire(blocking=False):  # another thread is refreshing
            return False
        try:
            self._checked_at = now
            stored = self.client.get(self.keys.item_snapshot_version())
            if stored is None or int(stored) == self.version:
                return False
            blob = self.client.get(self.keys.item_snapshot())
            if blob is None:
                return False
            self.snapshot = ItemSnapshot.from_bytes(blob)  # type: ignore[arg-type]
            return True
        finally:
            self._lock.release()

    def lookup(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Item window feature name → int64 counts aligned with ``item_ids`` (0 for items absent)."""
        snapshot = self.snapshot
        if snapshot is None:
            return {name: np.zeros(len(item_ids), dtype=np.int64) for name in ITEM_FEATURE_NAMES}
        return snapshot.lookup(item_ids)


# -- the consumer -------------------------------------------------------------------------------------------
def decode_event(raw: bytes) -> Event | str:
    """The ``Event`` in a bus message, or the reason it is malformed."""
    try:
        return Event.from_json_bytes(raw)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5])
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ScreenedBatch(Protocol):
    clean: list[Event]
    quarantined: list[Any]


class EventScreen(Protocol):
    """Judges a batch before it reaches the features (``control/fraud.py`` ``FraudGuard``): flagged or blocked
    events are kept, marked, in the screen's audit stream and only ``clean`` ones are applied."""

    def screen(self, events: Sequence[Event]) -> ScreenedBatch: ...


class RealtimeConsumer:
    """A member of a consumer group that keeps ``store`` up to date from the events topic.

    With a ``screen`` (anti-fraud), each batch is judged once before ``apply`` and only its clean events are
    applied; a retried batch reuses its first verdicts (judging twice would read the replay markers the first
    judgement wrote). Quarantined events are counted in ``quarantined``.

    Each batch: decode → malformed messages copied to the dead-letter stream with their reason → ``apply`` →
    commit. A batch that fails (Redis or the bus down) is kept and retried, never committed before it is
    applied: at-least-once, and ``apply`` is idempotent. Every ``snapshot_interval_s`` the item snapshot is
    rewritten at ``now_ms()``; with several members in the group each rewrites it from the same shared state,
    which is redundant but safe (give all but one a long interval to save the work).

    Counters: ``processed`` (decoded events applied), ``changed`` (new events stored), ``malformed``,
    ``batches``, ``snapshots``, ``errors``, ``last_event_ms`` (newest event time seen) and ``lag_ms``.
    """

    def __init__(
        self,
        bus: EventBus,
        store: RealtimeStore,
        topic: str,
        group: str,
        name: str,
        batch_size: int = 500,
        poll_timeout_s: float = 1.0,
        snapshot_interval_s: float = 5.0,
        dead_letter_max_len: int = 100_000,
        now_ms: Callable[[], int] = _now_ms,
        screen: EventScreen | None = None,
    ) -> None:
        self.store = store
        self.screen = screen
        self._screened: ScreenedBatch | None = None
        self.quarantined = 0
        self.topic = topic
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.snapshot_interval_s = snapshot_interval_s
        self.dead_letter_max_len = dead_letter_max_len
        self.now_ms = now_ms
        self._consumer = bus.consumer(topic, group, name)
        self._retry: list[BusMessage] = []
        self._snapshot_at = -float("inf")
        self.processed = self.changed = self.malformed = 0
        self.batches = self.snapshots = self.errors = 0
        self.last_event_ms: int | None = None

    @property
    def lag_ms(self) -> int | None:
        """Wall time minus the newest event time seen (None before the first event)."""
        return None if self.last_event_ms is None else self.now_ms() - self.last_event_ms

    def counters(self) -> dict[str, int | None]:
        return {
            "processed": self.processed, "changed": self.changed, "malformed": self.malformed,
            "batches": self.batches, "snapshots": self.snapshots, "errors": self.errors,
            "lag_ms": self.lag_ms, "quarantined": self.quarantined,
        }  # fmt: skip

    def close(self) -> None:
        """Leave the group (uncommitted messages go to another member)."""
        self._consumer.close()

    def run_once(self) -> int:
        """Poll one batch (or retry the failed one), apply it and commit; returns the messages handled."""
        messages = self._retry or self._consumer.poll(self.batch_size, self.poll_timeout_s)
        self._retry = messages  # cleared once committed: an exception below leaves it for the next call
        events: list[Event] = []
        bad: list[tuple[bytes, str, str]] = []
        for m in messages:
            decoded = decode_event(m.value)
            if isinstance(decoded, Event):
                events.append(decoded)
            else:
                bad.append((m.value, decoded, str(m.position)))
        self.store.write_dead_letters(self.topic, bad, self.dead_letter_max_len)
        clean = events
        if self.screen is not None and events:
            if self._screened is None:
                self._screened = self.screen.screen(events)
            clean = self._screened.clean
        changed = self.store.apply(clean)
        self._consumer.commit(messages)
        self._retry = []
        if self._screened is not None:
            self.quarantined += len(self._screened.quarantined)
            self._screened = None
        if messages:
            self.batches += 1
        self.processed += len(events)
        self.changed += changed
        self.malformed += len(bad)
        if events:
            newest = max(ts_ms(e.ts) for e in events)
            self.last_event_ms = max(newest, self.last_event_ms or newest)
        if time.monotonic() - self._snapshot_at >= self.snapshot_interval_s:
            self.store.write_item_snapshot(self.now_ms())
            self._snapshot_at = time.monotonic()
            self.snapshots += 1
        return len(messages)

    def run(
        self,
        stop: threading.Event,
        progress: Callable[[str], None] | None = None,
        progress_interval_s: float = 30.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        """Consume until ``stop`` is set. A failing batch is logged, counted in ``errors`` and retried with
        exponential backoff; a malformed message never stops the loop."""
        backoff = 0.0
        reported = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                    backoff = 0.0
                except Exception:  # the bus or Redis is unavailable: keep the batch and retry
                    self.errors += 1
                    backoff = min(max_backoff_s, max(0.1, 2 * backoff))
                    log.exception("realtime consumer: batch failed, retrying in %.1fs", backoff)
                    stop.wait(backoff)
                if progress is not None and time.monotonic() - reported >= progress_interval_s:
                    reported = time.monotonic()
                    progress(self._progress_line())
        finally:
            self._consumer.close()
            if progress is not None:
                progress(self._progress_line())

    def _progress_line(self) -> str:
        lag = "-" if self.lag_ms is None else f"{self.lag_ms / 1000:.1f}s"
        return (f"realtime: {self.processed:,} events ({self.changed:,} new), {self.malformed:,} malformed, "
                f"{self.snapshots:,} snapshots, {self.errors:,} errors, lag {lag}")  # fmt: skip


def run_realtime_consumer(
    settings: Settings, stop: threading.Event, progress: Callable[[str], None] | None = None,
    screen: Callable[[redis.Redis], EventScreen] | None = None,
) -> dict[str, int | None]:
    """Open Redis and the bus from ``settings`` and run a ``RealtimeConsumer`` on the events topic until
    ``stop`` is set. Returns the consumer's counters."""
    from recstack.features.redis_local import ensure_redis_url

    rt = settings.realtime
    redis_url = ensure_redis_url(settings)
    client = redis.Redis.from_url(redis_url)
    bus = open_bus(settings.bus.url or redis_url, settings.bus, key_prefix=settings.redis.key_prefix)
    try:
        store = RealtimeStore(client, RedisKey(settings.redis.key_prefix), rt.retention_slack_s)
        name = rt.consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        consumer = RealtimeConsumer(
            bus, store, settings.bus.events_topic, rt.group, name, batch_size=rt.batch_size,
            poll_timeout_s=rt.poll_timeout_s, snapshot_interval_s=rt.snapshot_interval_s,
            dead_letter_max_len=rt.dead_letter_max_len, screen=screen(client) if screen else None,
        )  # fmt: skip
        consumer.run(stop, progress)
        return consumer.counters()
    finally:
        bus.close()
        client.close()
