"""A pacing simulator: one day of diurnal traffic with a flash crowd, driving the real pacer on a real Redis.

The simulated item has ``requests_per_day × eligibility_share`` eligible impressions a day (3x its daily cap
by default), spread by a sinusoidal day curve ``1 + a·cos(2π(h − peak_hour)/24)`` (mean 1; at the default
a = 0.6, peak 18:00, the 06:00 trough has a quarter of the peak traffic), and a surge multiplies the traffic
by ``surge_factor`` (3x) for ``surge_hours`` from ``surge_start_hour`` (12:00 to 14:00). Each control
interval is split into ``ticks_per_interval`` ticks; in each tick every simulated worker draws a Poisson number
of eligible impressions, passes them through its own ``ExposurePacer.apply`` (cap mode: each survives with
the throttle's pass rate, none after the cap) and records the survivors with ``record_exposures``. The workers
share one Redis, exactly as service workers do: one of them steps the controller at each interval, each reads
the view in its own refresh, and the final Redis counter must equal the exposures the simulator served.

Policies: ``pid`` (the controller with the given gains), ``hard_cap`` (the same pacer with all gains 0: the
pass rate stays 1, only the hard stop at the cap acts) and ``none`` (everything eligible is served).

Metrics (``pacing_metrics``), all from the served exposures per interval:

* ``overshoot_pct_of_cap``: ``max(0, exposures − cap) / cap``, in % of the cap;
* ``rmse_pct_of_cap``: root mean square of (cumulative exposures − target curve) at the end of every
  interval, in % of the cap;
* ``rise_intervals`` / ``settling_intervals``: the delivery rate (exposures per interval, centred 3-interval
  mean) relative to the target rate; counted in control intervals from the surge's first interval, over the
  windows that lie inside the surge: rise = first interval back within ±``band`` (10%), settling = first
  interval from which it stays within ±10% until the surge ends. ``None``: never (within the surge);
  ``settling_after_surge_end_intervals`` is the same for the drop back to normal traffic, over as many
  intervals as the surge lasted;
* ``served_share_of_day``: the fraction of the day's intervals with at least one exposure (a hard cap that
  fills by noon scores about 0.5).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import redis
from recstack.control.pacing import ExposurePacer
from recstack.control.pacing_store import DAY_S, PacedEntity, PacingCurve, PacingLimits, PacingStore
from recstack.control.pid import PidGains
from recstack.features.keys import RedisKey
from recstack.online.recall import UserView

Policy = Literal["pid", "hard_cap", "none"]
POLICIES: tuple[Policy, ...] = ("pid", "hard_cap", "none")
DAY0_S = 1_700_006_400  # 2023-11-15 00:00 UTC: the simulated day
NO_GAINS = PidGains(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SurgeScenario:
    """One simulated day of one paced item (cap mode, uniform target curve)."""

    intervals: int = 288  # control intervals per day (288: 5 min)
    daily_cap: int = 100_000  # exposures
    requests_per_day: float = 3_000_000.0  # traffic of a day without the surge
    eligibility_share: float = 0.1  # share of requests in which the item is eligible (would be shown)
    diurnal_amplitude: float = 0.6  # a of the day curve (0: flat traffic)
    peak_hour: float = 18.0
    surge_start_hour: float = 12.0
    surge_hours: float = 2.0
    surge_factor: float = 3.0
    ticks_per_interval: int = 5  # request batches per worker and interval
    workers: int = 2  # service workers sharing the Redis state

    @property
    def interval_s(self) -> int:
        return DAY_S // self.intervals

    def surge(self) -> tuple[int, int]:
        """``[first, end)`` intervals of the surge."""
        per_hour = self.intervals / 24.0
        start = round(self.surge_start_hour * per_hour)
        return start, min(self.intervals, start + max(1, round(self.surge_hours * per_hour)))

    def eligible_mean(self) -> np.ndarray:
        """(intervals,) expected eligible impressions of the item in each interval."""
        hours = (np.arange(self.intervals) + 0.5) * 24.0 / self.intervals
        shape = 1.0 + self.diurnal_amplitude * np.cos(2 * np.pi * (hours - self.peak_hour) / 24.0)
        shape /= shape.mean()
        start, end = self.surge()
        shape[start:end] *= self.surge_factor
        return self.requests_per_day / self.intervals * self.eligibility_share * shape  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DayTrace:
    """What one simulated day served, per control interval."""

    policy: Policy
    daily_cap: int
    served: np.ndarray  # (n,) exposures
    eligible: np.ndarray  # (n,) eligible impressions drawn
    target: np.ndarray  # (n + 1,) exposures due by the start of each interval (and the end of the day)
    pass_rate: (
        np.ndarray
    )  # (n,) pacer pass probability in each interval (worker 0's view after its first tick)
    redis_count: int  # the day's exposure counter in Redis at the end
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cumulative(self) -> np.ndarray:
        """(n + 1,) exposures served by the start of each interval (and the end of the day)."""
        return np.concatenate([[0], np.cumsum(self.served)])  # type: ignore[no-any-return]


class SimClock:
    """A settable clock (epoch seconds) shared by the simulated workers."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def simulate_day(client: redis.Redis, scenario: SurgeScenario, policy: Policy, gains: PidGains, seed: int = 0,
                 limits: PacingLimits | None = None, item_id: int = 1) -> DayTrace:  # fmt: skip
    """Run one day of ``scenario`` under ``policy`` through real ``ExposurePacer`` workers on ``client``.

    Keys go under a fresh random prefix, deleted at the end. Raises if Redis's count disagrees with the
    exposures served (the workers lost or double-counted an increment).
    """
    n, ticks = scenario.intervals, scenario.ticks_per_interval
    keys = RedisKey(f"pacing-sim:{secrets.token_hex(6)}")
    clock = SimClock(DAY0_S)
    curve = PacingCurve.uniform(n)
    entity = PacedEntity(f"item:{item_id}", (item_id,), scenario.daily_cap, "cap", curve)
    pid_gains = NO_GAINS if policy == "hard_cap" else gains
    pacers = [
        ExposurePacer(PacingStore(client, keys, [entity], pid_gains, limits, scenario.interval_s),
                      cache_ttl_s=1.0, seed=seed * 1009 + w, clock=clock)
        for w in range(scenario.workers)
    ]  # fmt: skip
    user = UserView(0, None, np.empty(0, np.int64), np.empty(0, np.int64), -1, DAY0_S)
    rng = np.random.default_rng(seed)
    per_draw = scenario.eligible_mean() / (ticks * scenario.workers)
    served = np.zeros(n, np.int64)
    eligible = np.zeros(n, np.int64)
    pass_rate = np.ones(n)
    tick_s = scenario.interval_s / ticks
    try:
        for k in range(n):
            for t in range(ticks):
                clock.now_s = DAY0_S + k * scenario.interval_s + t * tick_s
                for pacer in pacers:
                    count = int(rng.poisson(per_draw[k]))
                    candidates = np.full(count, item_id, np.int64)
                    if policy == "none":
                        shown = candidates
                    else:
                        scores = pacer.apply(user, candidates, np.ones(count))
                        shown = candidates[~np.isnan(scores)]
                    pacer.record_exposures(shown)
                    served[k] += len(shown)
                    eligible[k] += count
                view = pacers[0].view
                if t == 0 and view is not None and len(view.pass_rate):
                    pass_rate[k] = float(view.pass_rate[0])
        redis_count = int(pacers[0].store.read(clock())[1][0])
    finally:
        stale = list(client.scan_iter(match=f"{keys.prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
    if redis_count != int(served.sum()):
        raise RuntimeError(f"Redis counted {redis_count} exposures, the simulator served {int(served.sum())}")
    target = scenario.daily_cap * curve.cumulative
    return DayTrace(policy, scenario.daily_cap, served, eligible, target, pass_rate, redis_count)


def _band_entry(ratio: np.ndarray, first: int, end: int, band: float) -> tuple[int | None, int | None]:
    """(first index, settling index) relative to ``first`` of ``|ratio − 1| <= band`` over ``[first, end)``."""
    inside = np.abs(ratio[first:end] - 1.0) <= band
    if not inside.any():
        return None, None
    rise = int(np.argmax(inside))
    outside = np.flatnonzero(~inside)
    if len(outside) and outside[-1] == len(inside) - 1:
        return rise, None
    return rise, int(outside[-1]) + 1 if len(outside) else 0


def pacing_metrics(
    trace: DayTrace, scenario: SurgeScenario, band: float = 0.1
) -> dict[str, float | int | None]:
    """The benchmark metrics of one simulated day (definitions in the module docstring)."""
    cap = float(trace.daily_cap)
    cum = trace.cumulative
    err = cum[1:] - trace.target[1:]
    kernel = np.ones(3) / 3.0
    # centred 3-interval means; the two ends use what they have
    served = np.convolve(trace.served, kernel, mode="same")
    due = np.convolve(np.diff(trace.target), kernel, mode="same")
    ratio = served / np.maximum(due, 1e-9)
    start, end = scenario.surge()
    rise, settle = _band_entry(ratio, start, end - 1, band)  # centred windows inside the surge
    after_end = min(len(ratio) - 1, end + (end - start))
    _, settle_after = _band_entry(ratio, end, after_end, band)
    return {
        "overshoot_pct_of_cap": round(100.0 * max(0.0, float(cum[-1]) - cap) / cap, 3),
        "rmse_pct_of_cap": round(100.0 * float(np.sqrt(np.mean(err**2))) / cap, 3),
        "rise_intervals": rise,
        "settling_intervals": settle,
        "served_share_of_day": round(float(np.mean(trace.served > 0)), 4),
        "delivered_pct_of_cap": round(100.0 * float(cum[-1]) / cap, 3),
        "max_abs_error_pct_of_cap": round(100.0 * float(np.abs(err).max()) / cap, 3),
        "settling_after_surge_end_intervals": settle_after,
        "last_exposure_hour": round(float(np.flatnonzero(trace.served)[-1] + 1) * 24.0 / len(trace.served), 2)
        if trace.served.any()
        else 0.0,
    }
