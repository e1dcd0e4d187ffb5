"""``recstack bench pacing``: no control vs a hard cap vs PID pacing on a simulated day with a 3x surge.

``run_pacing_bench`` runs the day of ``control/simulator.py`` (real ``ExposurePacer`` workers on a real Redis)
once per policy and returns the metrics defined there: overshoot of the daily cap and RMSE to the target
curve (% of the cap), rise and settling time after the surge (control intervals, ±10% band) and the share of
the day's intervals in which the item is still served.

How the default gains were tuned (``autotune_gains``; docs/pacing.md has the reasoning and the numbers):

1. Search space, per gain: ``kp`` in [0.05, 2] and ``ki`` in [0.001, 0.2] (log-uniform), ``kd`` in [0, 1],
   ``dead_band`` in [0, 0.3] intervals of delivery, ``integral_discount`` in {1, 0.999, 0.995, 0.99}.
2. Objective, averaged over tuning days (seeds 101 and 102; the benchmark's seed 0 is held out):
   ``rmse + 20·overshoot + 0.1·settling + 0.05·settling_after_surge_end + 10·(1 − served_share)``
   (% of cap and intervals; a day that never settles counts twice the surge length).
3. Random search (``trials`` draws, the current defaults included), then coordinate refinement around the best:
   each gain in turn is multiplied / divided by a step (or moved by it when additive), improvements are kept,
   and the step shrinks each round.
4. The winner is re-run on the held-out day and reported with its metrics. The defaults in ``PacingSettings``
   (kp 1.0, ki 0.015, kd 0.1, dead band 0.05, no discount) are the search's winner (kp 1.35, ki 0.0165,
   kd 0.093, dead band 0.067: objective 0.62 on the tuning days) moved to kp = 1, the dead-beat gain of the
   log-rate loop, for margin against measurement lag: within 0.05 of the winner's objective over six days.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from recstack.control.pacing import gains_from_settings
from recstack.control.pacing_store import PacingLimits
from recstack.control.pid import PidGains
from recstack.control.simulator import POLICIES, SurgeScenario, pacing_metrics, simulate_day
from recstack.features.settings import PacingSettings
from recstack.offline.ingest import Progress, no_progress

TUNE_SEEDS = (101, 102)
DISCOUNTS = (1.0, 0.999, 0.995, 0.99)
_MULTIPLICATIVE = ("kp", "ki")  # searched on a log scale
_ADDITIVE = {"kd": 1.0, "dead_band": 0.3}  # searched on [0, upper]
_RANGES = {"kp": (0.05, 2.0), "ki": (1e-3, 0.2)}

Metrics = dict[str, float | int | None]


def default_gains() -> PidGains:
    """The gains ``PacingSettings`` ships with."""
    return gains_from_settings(PacingSettings())


def _split_opts(opts: dict[str, Any]) -> tuple[SurgeScenario, dict[str, float], PacingLimits]:
    fields = {f.name for f in dataclasses.fields(SurgeScenario)}
    gain_fields = {f.name for f in dataclasses.fields(PidGains)}
    limit_fields = {f.name for f in dataclasses.fields(PacingLimits)}
    unknown = set(opts) - fields - gain_fields - limit_fields
    if unknown:
        raise TypeError(f"unknown pacing bench options: {sorted(unknown)}")
    scenario = SurgeScenario(**{k: v for k, v in opts.items() if k in fields})
    limits = PacingLimits(**{k: v for k, v in opts.items() if k in limit_fields})
    return scenario, {k: v for k, v in opts.items() if k in gain_fields}, limits


def run_pacing_bench(redis_url: str, seed: int = 0, **opts: Any) -> dict[str, Any]:
    """Metrics of the policies ``pid``, ``hard_cap`` and ``none`` on one simulated day.

    ``opts``: fields of ``SurgeScenario`` (e.g. ``intervals``, ``surge_factor``, ``workers``), of ``PidGains``
    (override the default gains) and of ``PacingLimits``. Returns ``{policy: metrics}`` plus ``gains``,
    ``scenario``, ``surge_intervals`` and ``seconds``.
    """
    scenario, gain_opts, limits = _split_opts(opts)
    gains = dataclasses.replace(default_gains(), **gain_opts)
    client = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        for policy in POLICIES:
            trace = simulate_day(client, scenario, policy, gains, seed=seed, limits=limits)
            result[policy] = pacing_metrics(trace, scenario)
    finally:
        client.close()
    result["gains"] = dataclasses.asdict(gains)
    result["scenario"] = dataclasses.asdict(scenario)
    result["surge_intervals"] = list(scenario.surge())
    result["seed"] = seed
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def tuning_objective(metrics: Metrics, surge_intervals: int) -> float:
    """Lower is better: RMSE and overshoot (% of cap), settling (intervals), lost serving time."""
    never = 2.0 * surge_intervals
    settle = metrics["settling_intervals"]
    after = metrics["settling_after_surge_end_intervals"]
    return (
        float(metrics["rmse_pct_of_cap"] or 0.0)
        + 20.0 * float(metrics["overshoot_pct_of_cap"] or 0.0)
        + 0.1 * (never if settle is None else float(settle))
        + 0.05 * (never if after is None else float(after))
        + 10.0 * (1.0 - float(metrics["served_share_of_day"] or 0.0))
    )


def _moved(gains: PidGains, name: str, value: float) -> PidGains:
    """``gains`` with ``name`` set to ``value``, kept inside the search range."""
    lo, hi = _RANGES[name] if name in _RANGES else (0.0, _ADDITIVE[name])
    return dataclasses.replace(gains, **{name: float(np.clip(value, lo, hi))})


def autotune_gains(redis_url: str, seed: int = 0, trials: int = 24, refine_rounds: int = 2,
                   tune_seeds: Sequence[int] = TUNE_SEEDS, progress: Progress = no_progress,
                   **opts: Any) -> dict[str, Any]:  # fmt: skip
    """Search PID gains on the simulator (random search, then coordinate refinement; see the module docstring).

    ``opts`` as for ``run_pacing_bench`` (scenario and limits; gain fields set the starting point). Returns
    ``gains`` (the best), ``objective`` (its mean over ``tune_seeds``), ``metrics`` (its PID metrics on the
    held-out day ``seed``), ``default_gains`` / ``default_objective`` and ``evaluations``.
    """
    scenario, gain_opts, limits = _split_opts(opts)
    start, end = scenario.surge()
    client = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(seed)
    cache: dict[PidGains, float] = {}
    t0 = time.perf_counter()

    def evaluate(gains: PidGains) -> float:
        if gains not in cache:
            days = [simulate_day(client, scenario, "pid", gains, seed=s, limits=limits) for s in tune_seeds]
            scores = [tuning_objective(pacing_metrics(d, scenario), end - start) for d in days]
            cache[gains] = float(np.mean(scores))
            progress(f"pacing autotune: {len(cache)} evaluated, {gains} → {cache[gains]:.3f}")
        return cache[gains]

    try:
        initial = dataclasses.replace(default_gains(), **gain_opts)
        best, best_score = initial, evaluate(initial)
        # 1. random search
        for _ in range(trials):
            kp, ki = (float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for lo, hi in _RANGES.values())
            kd, band = (float(rng.uniform(0.0, hi)) for hi in _ADDITIVE.values())
            candidate = PidGains(kp, ki, kd, float(rng.choice(DISCOUNTS)), band)
            if (score := evaluate(candidate)) < best_score:
                best, best_score = candidate, score
        # 2. coordinate refinement with a shrinking step
        factor = 1.6
        for _ in range(refine_rounds):
            for name in (*_MULTIPLICATIVE, *_ADDITIVE):
                value = getattr(best, name)
                if name in _ADDITIVE:
                    step = (factor - 1.0) * max(value, 0.1 * _ADDITIVE[name])
                    moves = [value + step, value - step]
                else:
                    moves = [value * factor, value / factor]
                for moved in moves:
                    candidate = _moved(best, name, moved)
                    if (score := evaluate(candidate)) < best_score:
                        best, best_score = candidate, score
            factor = 1.0 + (factor - 1.0) / 2.0
        held_out = pacing_metrics(
            simulate_day(client, scenario, "pid", best, seed=seed, limits=limits), scenario
        )
    finally:
        client.close()
    return {
        "gains": dataclasses.asdict(best),
        "objective": round(best_score, 4),
        "metrics": held_out,
        "default_gains": dataclasses.asdict(initial),
        "default_objective": round(cache[initial], 4),
        "evaluations": len(cache),
        "tune_seeds": list(tune_seeds),
        "held_out_seed": seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }
