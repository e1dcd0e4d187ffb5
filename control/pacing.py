"""PID exposure pacing: the ``ExposurePacer`` control stage of the ranking cascade.

Each paced entity (an item, or a campaign of items) has a daily exposure cap (or goal) and a target curve,
the share of the cap due by each time of day (uniform by default, or ``[hour, weight]`` points). At the start
of each control interval (``pacing.interval_s``, 5 min by default) one worker compares the day's exposures
with the curve and steps the entity's PID controller (``control/pid.py``: P, I with conditional-integration
anti-windup and an error discount, D, output clamping, dead band); the state and the counters live in Redis
(``control/pacing_store.py``), so every worker applies the same control and a restart loses nothing.

Per request, ``ExposurePacer.apply`` looks the candidates up in a per-worker copy of the per-item view
(~40 µs for 300 candidates), re-read from Redis in one pipelined round trip every ``cache_ttl_s``: by the
first request after it expired, or, in the service, by ``start_background_refresh``'s thread so that no
request waits for Redis. The worker that first sees a new interval also steps the controllers there.

* ``cap`` mode: a paced candidate passes with probability ``exp(u)`` (the throttle is ``1 − exp(u)``) and is
  dropped (NaN) otherwise; at the cap it is always dropped (the hard stop under the PID). Within one call no
  more candidates of an item pass than its remaining headroom;
* ``guaranteed`` mode: the score is multiplied by ``exp(u)`` (> 1 boosts an item behind its curve, < 1 damps
  one ahead of it); nothing is dropped. The multiplication is sign-aware (a negative score is divided), so a
  boost always moves an item up.

Items that no entity paces pass untouched. ``record_exposures`` counts the served items (one pipelined
``INCRBY`` round trip) and updates the worker's copy of the counts from the replies, so the hard stop of a
worker is exact for what it served itself; exposures of the other workers are seen at the next refresh,
which bounds an overshoot across ``w`` workers to what they serve in ``cache_ttl_s``. When Redis fails the
last view is kept (and retried after ``retry_s``); a worker that never read one passes everything (fail open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import redis
from recstack.control.pacing_store import (
    DAY_S,
    PacedEntity,
    PacingCurve,
    PacingLimits,
    PacingStore,
    PacingView,
)
from recstack.control.pid import PidGains
from recstack.features.keys import RedisKey
from recstack.features.settings import PacingSettings

if TYPE_CHECKING:
    from recstack.online.recall import UserView

log = logging.getLogger(__name__)


def occurrence_rank(ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(n,) for each kept entry, how many kept entries with the same id come before it (0 for dropped ones)."""
    rank = np.zeros(len(ids), np.int64)
    kept = np.flatnonzero(keep)
    if not len(kept):
        return rank
    order = kept[np.argsort(ids[kept], kind="stable")]
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank[order] = np.arange(len(order)) - np.repeat(starts, sizes)
    return rank


class ExposurePacer:
    """The pacing ``ControlStage``: throttles (cap mode) or boosts (guaranteed mode) the paced candidates.

    ``clock`` gives epoch seconds (the simulator passes a simulated one); ``seed`` seeds the throttle draws.
    Thread-safe: requests share the view, which is replaced, never mutated.
    """

    name = "pacing/pid"

    def __init__(self, store: PacingStore, cache_ttl_s: float = 1.0, seed: int | None = None,
                 clock: Callable[[], float] = time.time, retry_s: float = 2.0) -> None:  # fmt: skip
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock
        self.retry_s = retry_s
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._view: PacingView | None = None
        self._expires = -np.inf
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def view(self) -> PacingView | None:
        """The view the next request uses (None before the first successful read)."""
        return self._view

    def refresh(self) -> PacingView | None:
        """Step the controllers if this worker is the first to see a new interval, then re-read the view."""
        now = self.clock()
        try:
            old = self._view
            if old is None or self.store.global_interval(now) > old.interval:
                self.store.advance(now)
            view = self.store.view(now)
            if old is not None and self._same_day(old.interval, view.interval):
                # counts this worker recorded while the read was in flight must not go back
                view = self.store.view_of(view.interval, view.outputs, np.maximum(view.counts, old.counts))
            self._view = view
            self._expires = now + self.cache_ttl_s
        except redis.RedisError:
            log.warning(
                "pacing: Redis read failed; keeping the last view for %.1fs", self.retry_s, exc_info=True
            )
            self._expires = now + self.retry_s
        return self._view

    def _same_day(self, interval: int, other: int) -> bool:
        n = self.store.intervals_per_day
        return interval // n == other // n

    def start_background_refresh(self) -> None:
        """Refresh every ``cache_ttl_s`` on a daemon thread, so no request waits for Redis (the service's mode:
        a refresh reads every entity, tens of ms for a thousand). Requests then only read the current view."""
        if self._refresher is not None:
            return
        self._stop.clear()
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(max(self.cache_ttl_s, 0.05)):
                self.refresh()

        self._refresher = threading.Thread(target=loop, name="pacing-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        """Stop the background refresh (if started)."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None

    def _current(self) -> PacingView | None:
        if self._refresher is not None or self.clock() < self._expires:
            return self._view
        # one thread refreshes; the others go on with the current view (or wait for the very first one)
        if not self._refresh_lock.acquire(blocking=self._view is None):
            return self._view
        try:
            return self._view if self.clock() < self._expires else self.refresh()
        finally:
            self._refresh_lock.release()

    def apply(self, user: UserView, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(n,) float64 new scores for the (n,) candidate ``items``: paced ones multiplied or dropped (NaN)."""
        out = np.array(scores, dtype=np.float64)
        view = self._current()
        if view is None or not len(view.items) or not len(out):
            return out
        items = np.asarray(items, np.int64)
        pos = np.minimum(np.searchsorted(view.items, items), len(view.items) - 1)
        rows = np.flatnonzero(view.items[pos] == items)
        if not len(rows):
            return out
        p = pos[rows]
        m = view.multiplier[p]
        s = out[rows]
        out[rows] = np.where(s >= 0, s * m, s / m)
        with self._rng_lock:
            draws = self._rng.random(len(rows))
        keep = draws < view.pass_rate[p]
        room = view.headroom[p]
        if (room < len(rows)).any():  # the hard stop: never more passes than exposures left under the cap
            keep &= occurrence_rank(items[rows], keep) < room
        out[rows[~keep]] = np.nan
        return out

    def record_exposures(self, items: np.ndarray) -> None:
        """Count the served ``items`` (item ids, repeats counted) in Redis: one pipelined INCRBY round trip.

        The worker's copy of the counts takes the new totals at once (the hard stop sees them). Redis errors
        propagate: the caller decides whether a lost count may be retried.
        """
        now = self.clock()
        counts = self.store.record(np.asarray(items, np.int64), now)
        view = self._view
        if not counts or view is None:
            return
        if not self._same_day(self.store.global_interval(now), view.interval):
            # a new day: the copy's counts are yesterday's; re-read at the next request
            self._expires = -np.inf
            return
        new = view.counts.copy()
        for j, c in counts.items():
            new[j] = max(new[j], c)
        self._view = self.store.view_of(view.interval, view.outputs, new)


def gains_from_settings(settings: PacingSettings) -> PidGains:
    """The PID gains configured in ``settings`` (their defaults are the benchmark's default gains)."""
    return PidGains(settings.kp, settings.ki, settings.kd, settings.integral_discount, settings.dead_band)


def curve_from_points(points: list[tuple[float, float]] | None, intervals: int) -> PacingCurve:
    """The target curve of ``[hour, weight]`` points, or the uniform curve when ``points`` is None."""
    return PacingCurve.uniform(intervals) if points is None else PacingCurve.from_points(points, intervals)


def pacer_from_settings(client: redis.Redis, keys: RedisKey, settings: PacingSettings,
                        clock: Callable[[], float] = time.time) -> ExposurePacer:  # fmt: skip
    """The service's pacer: ``settings.entities`` paced with the configured gains, limits and curves."""
    n = DAY_S // settings.interval_s
    default_curve = curve_from_points(settings.curve, n)
    entities = [
        PacedEntity(e.name, tuple(e.items), e.daily_cap, e.mode,
                    default_curve if e.curve is None else curve_from_points(e.curve, n))
        for e in settings.entities
    ]  # fmt: skip
    limits = PacingLimits(settings.min_rate, settings.max_boost, settings.min_multiplier)
    store = PacingStore(client, keys, entities, gains_from_settings(settings), limits, settings.interval_s,
                        settings.tz_offset_s)  # fmt: skip
    return ExposurePacer(store, settings.cache_ttl_s, settings.seed, clock)
