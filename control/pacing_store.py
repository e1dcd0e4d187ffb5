"""The Redis side of exposure pacing: target curves, paced entities, exposure counters and controller state.

Everything a worker needs lives in Redis, so all service workers share it and a restarted process continues
where the last one stopped (``RedisKey.pacing_*``):

* ``pacing_exposures(entity, day)``: the day's exposure counter, ``INCRBY`` from ``PacingStore.record``
  (one pipelined round trip for all the entities a batch of served items touches), kept two days;
* ``pacing_state(entity)``: a hash with the PID state (``interval``, ``day``, ``integral``, ``prev_error``,
  ``output``) and, for inspection, the last ``error``, ``count`` and ``target``;
* ``pacing_step_lock(interval)``: ``SET NX EX`` taken by the one worker that steps the controllers at the
  start of a control interval. The state itself is written by a compare-and-set script that only accepts a
  state computed from the stored one (same ``interval``), so even a worker whose lock expired mid-step cannot
  step an interval twice or overwrite a newer state.

Control signal: the PID output ``u`` is a *log* pass rate. Cap mode serves an eligible impression with
probability ``exp(u)``, ``u ∈ [log(min_rate), 0]``; guaranteed mode multiplies the score by ``exp(u)``,
``u ∈ [log(min_multiplier), log(max_boost)]``. In log space the loop gain does not depend on the traffic:
a change ``Δu`` changes the delivery by the factor ``exp(Δu)`` at night as at peak or in a surge, so one set
of gains fits the whole day. The error is measured in *intervals of delivery*: ``(target − count) / (cap / n)``
where ``n`` is the number of intervals of the day; 1.0 means one average interval's worth behind the curve.

On Redis Cluster the pipelines touch keys of several slots; they are pipelines, not transactions, so this is
fine, and the compare-and-set script touches one key.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis
from recstack.control.pid import PidController, PidGains, PidState
from recstack.features.keys import RedisKey

DAY_S = 86_400
PacingMode = Literal["cap", "guaranteed"]

# KEYS[1] state hash; ARGV[1] interval the new state was computed from ('' = none), ARGV[2] TTL (s),
# ARGV[3..] field, value, ... Writes only if the stored interval is still ARGV[1]; returns 1 if written.
_COMPARE_AND_SET = """
local cur = redis.call('HGET', KEYS[1], 'interval')
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
_STATE_FIELDS = ("interval", "day", "integral", "prev_error", "output")
_STATE_TTL_S = 7 * DAY_S
_COUNTER_TTL_S = 2 * DAY_S


@dataclass(frozen=True)
class PacingCurve:
    """The share of the daily cap due by the start of each control interval."""

    cumulative: np.ndarray  # (n + 1,) float, 0 at midnight → 1 at the next midnight, non-decreasing

    @property
    def intervals(self) -> int:
        return len(self.cumulative) - 1

    @classmethod
    def uniform(cls, intervals: int) -> PacingCurve:
        """The same delivery in every interval."""
        return cls(np.linspace(0.0, 1.0, intervals + 1))

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]], intervals: int) -> PacingCurve:
        """A time-of-day curve: from each ``(hour, weight)`` point until the next one (wrapping at midnight) the
        cap is delivered at a rate proportional to ``weight``; split exactly into ``intervals`` intervals."""
        pts = sorted((float(h), float(w)) for h, w in points)
        if not pts or any(not 0.0 <= h < 24.0 or w < 0.0 for h, w in pts) or sum(w for _, w in pts) <= 0:
            raise ValueError(
                f"curve points need hours in [0, 24), weights >= 0 and some weight > 0: {points}"
            )
        hours = [0.0] + [h for h, _ in pts] + [24.0]
        rates = [pts[-1][1]] + [w for _, w in pts]  # before the first point: the last point's weight (wrap)
        cum = np.concatenate([[0.0], np.cumsum(np.diff(hours) * np.asarray(rates))])
        if cum[-1] <= 0:
            raise ValueError(f"curve {points} delivers nothing over the day")
        at = np.linspace(0.0, 24.0, intervals + 1)
        return cls(np.interp(at, hours, cum) / cum[-1])

    def target(self, daily_cap: float, interval: int) -> float:
        """Exposures due by the start of ``interval`` (0 ≤ interval ≤ n)."""
        return float(daily_cap * self.cumulative[interval])


@dataclass(frozen=True)
class PacedEntity:
    """An item or item group (campaign) with its own daily cap (or goal), mode and target curve."""

    name: str
    items: tuple[int, ...]
    daily_cap: int
    mode: PacingMode
    curve: PacingCurve


@dataclass(frozen=True)
class PacingLimits:
    """Output ranges of the two modes (clamping of the PID output)."""

    min_rate: float = 1e-3  # cap mode: smallest pass probability while under the cap
    max_boost: float = 3.0  # guaranteed mode: largest score multiplier
    min_multiplier: float = 0.5  # guaranteed mode: smallest score multiplier

    def controller(self, gains: PidGains, mode: PacingMode) -> PidController:
        if mode == "cap":
            return PidController(gains, out_min=math.log(self.min_rate), out_max=0.0)
        return PidController(gains, out_min=math.log(self.min_multiplier), out_max=math.log(self.max_boost))


@dataclass(frozen=True)
class PacingView:
    """What a worker applies per request, per paced item (sorted by id), read from Redis at one instant."""

    interval: int  # global control interval (days since the epoch · n + interval of the day) of the read
    items: np.ndarray  # (m,) int64 sorted paced item ids
    multiplier: np.ndarray  # (m,) score multiplier (product over the item's guaranteed entities)
    pass_rate: np.ndarray  # (m,) probability of passing the throttle (product over its cap entities)
    headroom: np.ndarray  # (m,) exposures left under the item's tightest cap today (inf: no cap)
    counts: np.ndarray  # (entities,) int64 today's exposures per entity
    outputs: np.ndarray  # (entities,) PID outputs (log rate or log multiplier)


@dataclass(frozen=True)
class EntityState:
    """One entity's stored controller state (``interval`` -1: never stepped)."""

    interval: int
    day: int
    pid: PidState


class PacingStore:
    """Exposure counters and PID state of the paced entities in Redis, shared by every service worker.

    ``client`` must return bytes (redis-py's default). ``interval_s`` must divide a day; the pacing day starts
    at midnight UTC shifted by ``tz_offset_s``.
    """

    def __init__(self, client: redis.Redis, keys: RedisKey, entities: Sequence[PacedEntity], gains: PidGains,
                 limits: PacingLimits | None = None, interval_s: int = 300, tz_offset_s: int = 0) -> None:  # fmt: skip
        if DAY_S % interval_s:
            raise ValueError(f"interval_s={interval_s} does not divide a day")
        n = DAY_S // interval_s
        if any(e.curve.intervals != n for e in entities):
            raise ValueError(f"every curve must have {n} intervals (interval_s={interval_s})")
        if len({e.name for e in entities}) != len(entities):
            raise ValueError("paced entity names must be unique")
        self.client = client
        self.keys = keys
        self.entities = list(entities)
        self.gains = gains
        self.limits = limits or PacingLimits()
        self.interval_s = interval_s
        self.intervals_per_day = n
        self.tz_offset_s = tz_offset_s
        self.controllers = {m: self.limits.controller(gains, m) for m in ("cap", "guaranteed")}
        self._cas = client.register_script(_COMPARE_AND_SET)
        # item → entity pairs sorted by item (an item may be in several entities, e.g. its own cap and a campaign)
        pairs = sorted((item, j) for j, e in enumerate(self.entities) for item in set(e.items))
        pair_item = np.asarray([p[0] for p in pairs], np.int64)
        self._pair_entity = np.asarray([p[1] for p in pairs], np.int64)
        self.items, self._starts, self._pair_row = np.unique(
            pair_item, return_index=True, return_inverse=True
        )
        self._is_cap = np.asarray([e.mode == "cap" for e in self.entities], bool)
        self._caps = np.asarray([e.daily_cap for e in self.entities], np.float64)

    # time -------------------------------------------------------------------------------------------------
    def clock(self, now_s: float) -> tuple[int, int]:
        """``(day, interval of the day)`` of the instant ``now_s`` (epoch seconds)."""
        local = now_s + self.tz_offset_s
        day = int(local // DAY_S)
        return day, int((local - day * DAY_S) // self.interval_s)

    def global_interval(self, now_s: float) -> int:
        day, k = self.clock(now_s)
        return day * self.intervals_per_day + k

    # counters ---------------------------------------------------------------------------------------------
    def entity_exposures(self, items: np.ndarray) -> np.ndarray:
        """(entities,) int64: how many of ``items`` (served item ids, repeats counted) each entity gets."""
        items = np.asarray(items, np.int64)
        if not len(self.items) or not len(items):
            return np.zeros(len(self.entities), np.int64)
        pos = np.minimum(np.searchsorted(self.items, items), len(self.items) - 1)
        hit = self.items[pos] == items
        per_item = np.bincount(pos[hit], minlength=len(self.items))
        per_pair = per_item[self._pair_row]
        return np.bincount(self._pair_entity, weights=per_pair, minlength=len(self.entities)).astype(np.int64)

    def record(self, items: np.ndarray, now_s: float) -> dict[int, int]:
        """Count the served ``items`` towards their entities: one pipelined round trip of ``INCRBY``.

        Returns ``{entity index: today's count after the increment}`` for the entities touched.
        """
        added = self.entity_exposures(items)
        touched = np.flatnonzero(added)
        if not len(touched):
            return {}
        day, _ = self.clock(now_s)
        pipe = self.client.pipeline(transaction=False)
        for j in touched:
            key = self.keys.pacing_exposures(self.entities[j].name, day)
            pipe.incrby(key, int(added[j]))
            pipe.expire(key, _COUNTER_TTL_S)
        replies = pipe.execute()
        return {int(j): int(replies[2 * i]) for i, j in enumerate(touched)}

    # state ------------------------------------------------------------------------------------------------
    def _read(self, day: int) -> tuple[list[EntityState], np.ndarray]:
        """Every entity's state and its exposures on ``day``: one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for e in self.entities:
            pipe.hmget(self.keys.pacing_state(e.name), list(_STATE_FIELDS))
            pipe.get(self.keys.pacing_exposures(e.name, day))
        replies = pipe.execute()
        states = [self._parse_state(replies[2 * j], e.mode) for j, e in enumerate(self.entities)]
        counts = np.asarray([int(replies[2 * j + 1] or 0) for j in range(len(self.entities))], np.int64)
        return states, counts

    def read(self, now_s: float) -> tuple[list[EntityState], np.ndarray]:
        """Every entity's stored controller state and today's exposure count (index-aligned with ``entities``)."""
        return self._read(self.clock(now_s)[0])

    def _parse_state(self, fields: list[bytes | None], mode: PacingMode) -> EntityState:
        interval, day, integral, prev_error, output = fields
        if interval is None:
            return EntityState(-1, -1, self.controllers[mode].initial())
        prev = float(prev_error) if prev_error else None
        return EntityState(
            int(interval), int(day or -1), PidState(float(integral or 0), prev, float(output or 0))
        )

    def view(self, now_s: float) -> PacingView:
        """Multipliers, pass rates and cap headroom of every paced item now: one pipelined round trip."""
        day, _ = self.clock(now_s)
        states, counts = self._read(day)
        outputs = np.asarray([s.pid.output for s in states], np.float64)
        return self.view_of(self.global_interval(now_s), outputs, counts)

    def view_of(self, interval: int, outputs: np.ndarray, counts: np.ndarray) -> PacingView:
        """The per-item view of per-entity ``outputs`` and ``counts`` (no Redis)."""
        factor = np.exp(outputs)
        ent_mult = np.where(self._is_cap, 1.0, factor)
        ent_pass = np.where(self._is_cap, factor, 1.0)
        ent_room = np.where(self._is_cap, np.maximum(self._caps - counts, 0.0), np.inf)
        if not len(self.items):
            empty = np.empty(0, np.float64)
            return PacingView(interval, self.items, empty, empty, empty, counts, outputs)
        e = self._pair_entity
        return PacingView(
            interval, self.items,
            np.multiply.reduceat(ent_mult[e], self._starts), np.multiply.reduceat(ent_pass[e], self._starts),
            np.minimum.reduceat(ent_room[e], self._starts), counts, outputs,
        )  # fmt: skip

    def error(self, entity: PacedEntity, count: int, interval_of_day: int) -> float:
        """Tracking error in intervals of delivery: (target − count) / (cap / n); > 0 means behind the curve."""
        target = entity.curve.target(entity.daily_cap, interval_of_day)
        return (target - count) / (entity.daily_cap / self.intervals_per_day)

    def advance(self, now_s: float) -> int:
        """Step every entity's controller to the interval containing ``now_s``, unless done already.

        Only the worker that takes the interval's ``SET NX`` lock steps; the others return at once. The step
        reads every state and counter (one pipeline), runs the PID maths here, and writes each state with a
        compare-and-set (one pipeline). A new day keeps the output and integral and restarts the derivative
        (the counter restarts at 0 with the target). Returns how many entities this call stepped.
        """
        g = self.global_interval(now_s)
        if not self.entities:
            return 0
        token = secrets.token_hex(8)
        if not self.client.set(self.keys.pacing_step_lock(g), token, nx=True, ex=max(self.interval_s, 1)):
            return 0
        day, k = self.clock(now_s)
        states, counts = self._read(day)
        pipe = self.client.pipeline(transaction=False)
        for e, s, count in zip(self.entities, states, counts, strict=True):
            if s.interval >= g:
                continue
            pid = s.pid if s.day == day else PidState(s.pid.integral, None, s.pid.output)
            err = self.error(e, int(count), k)
            new = self.controllers[e.mode].step(pid, err)
            fields = {
                "interval": g, "day": day, "integral": new.integral, "output": new.output,
                "prev_error": "" if new.prev_error is None else new.prev_error,
                "error": err, "count": int(count), "target": e.curve.target(e.daily_cap, k),
            }  # fmt: skip
            flat = [str(x) for kv in fields.items() for x in kv]
            expected = "" if s.interval < 0 else str(s.interval)
            self._cas(
                keys=[self.keys.pacing_state(e.name)], args=[expected, _STATE_TTL_S, *flat], client=pipe
            )
        return sum(int(r) for r in pipe.execute())
