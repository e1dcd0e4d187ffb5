"""PID exposure pacing: the controller maths, the Redis store and pacer on a real Redis, and the simulator bench."""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import redis
from recstack.control.pacing import ExposurePacer, occurrence_rank, pacer_from_settings
from recstack.control.pacing_store import PacedEntity, PacingCurve, PacingLimits, PacingStore, PacingView
from recstack.control.pid import PidController, PidGains, PidState
from recstack.features.keys import RedisKey
from recstack.features.redis_local import free_port
from recstack.features.settings import PacingSettings, Settings
from recstack.offline.bench.pacing import autotune_gains, run_pacing_bench
from recstack.online.ranking import ControlStage
from recstack.online.recall import UserView
from redis.backoff import NoBackoff
from redis.retry import Retry

DAY0 = 1_700_006_400  # a UTC midnight
INTERVAL_S = 300
NOON = DAY0 + 144 * INTERVAL_S  # start of interval 144 of 288
USER = UserView(1, None, np.empty(0, np.int64), np.empty(0, np.int64), -1, NOON)
integration = pytest.mark.integration


# -- the controller maths ----------------------------------------------------------------------------------
def test_step_response_converges_without_offset() -> None:
    # first-order lag y' = (y + u) / 2: a P-only loop settles at kp / (1 + kp) of the set point, PI at 1.0
    def run(gains: PidGains) -> float:
        pid, state, y = PidController(gains, -10.0, 10.0), PidState(), 0.0
        for _ in range(200):
            state = pid.step(state, 1.0 - y)
            y = 0.5 * y + 0.5 * state.output
        return y

    assert run(PidGains(0.8, 0.2, 0.05)) == pytest.approx(1.0, abs=1e-4)
    assert run(PidGains(0.8, 0.0, 0.0)) == pytest.approx(0.8 / 1.8, abs=1e-4)


def test_anti_windup_keeps_integral_bounded_while_saturated() -> None:
    pid = PidController(PidGains(kp=0.5, ki=0.1, kd=0.0), out_min=-1.0, out_max=1.0)
    state = pid.initial()
    for _ in range(200):  # an error the output cannot remove: saturated for 195 steps
        state = pid.step(state, 1.0)
    assert state.output == 1.0
    assert state.integral == pytest.approx(5.0)  # stops where kp·e + ki·I reaches the limit (plain sum: 200)
    state = pid.step(state, -0.1)
    assert state.output < 1.0  # leaves saturation at the first error of the other sign


def test_output_is_clamped() -> None:
    pid = PidController(PidGains(kp=2.0, ki=0.5, kd=1.0), out_min=-0.7, out_max=0.3)
    assert pid.step(pid.initial(), 100.0).output == 0.3
    assert pid.step(pid.initial(), -100.0).output == -0.7
    assert pid.step(pid.initial(), 0.1).output == pytest.approx(2.0 * 0.1 + 0.5 * 0.1)


def test_dead_band_changes_nothing() -> None:
    pid = PidController(PidGains(kp=1.0, ki=0.5, kd=0.0, dead_band=0.2), -5.0, 5.0)
    state = PidState(integral=1.5, prev_error=1.0, output=0.9)
    inside = pid.step(state, 0.15)
    assert (inside.output, inside.integral) == (0.9, 1.5) and inside.prev_error == 0.15
    outside = pid.step(state, 0.25)
    assert outside.output != 0.9 and outside.integral == pytest.approx(1.75)


def test_error_discount_fades_old_errors() -> None:
    pid = PidController(PidGains(kp=0.0, ki=1.0, kd=0.0, integral_discount=0.5), -100.0, 100.0)
    state = pid.initial()
    for e in (1.0, 1e-9, 1e-9):  # one error, then (almost) none: the integral halves each step
        state = pid.step(state, e)
    assert state.integral == pytest.approx(0.25, abs=1e-6)
    for _ in range(50):  # a constant error: the integral levels off at e / (1 − γ) instead of growing
        state = pid.step(state, 1.0)
    assert state.integral == pytest.approx(2.0, abs=1e-6) and state.output == pytest.approx(2.0, abs=1e-6)


def test_derivative_reacts_to_a_growing_error() -> None:
    pid = PidController(PidGains(kp=0.0, ki=0.0, kd=2.0), -10.0, 10.0)
    first = pid.step(pid.initial(), 1.0)
    assert first.output == 0.0  # no derivative kick on the first step
    assert pid.step(first, 1.5).output == pytest.approx(1.0)


def test_curve_from_points_and_uniform() -> None:
    assert PacingCurve.uniform(4).cumulative.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    curve = PacingCurve.from_points([(0.0, 1.0), (12.0, 3.0)], 24)  # a quarter by noon
    assert curve.cumulative[12] == pytest.approx(0.25) and curve.cumulative[-1] == pytest.approx(1.0)
    day_only = PacingCurve.from_points([(6.0, 1.0), (18.0, 0.0)], 24)  # the night weight wraps round midnight
    assert day_only.cumulative[6] == 0.0 and day_only.cumulative[12] == pytest.approx(0.5)
    assert day_only.cumulative[18] == pytest.approx(1.0) and day_only.target(1000, 9) == pytest.approx(250.0)
    with pytest.raises(ValueError):
        PacingCurve.from_points([(3.0, 0.0)], 24)


def test_occurrence_rank_counts_kept_repeats_in_order() -> None:
    ids = np.array([5, 7, 5, 5, 7, 5])
    keep = np.array([True, True, False, True, True, True])
    assert occurrence_rank(ids, keep).tolist() == [0, 0, 0, 1, 1, 2]


# -- the Redis store and the pacer -------------------------------------------------------------------------
class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def _keys() -> RedisKey:
    return RedisKey(f"test-pacing:{uuid.uuid4().hex[:8]}")


def _store(
    url: str, keys: RedisKey, entities: list[PacedEntity], gains: PidGains | None = None
) -> PacingStore:
    return PacingStore(redis.Redis.from_url(url), keys, entities, gains or PidGains(0.5, 0.01, 0.0),
                       PacingLimits(), INTERVAL_S)  # fmt: skip


def _entity(item: int, cap: int, mode: str = "cap", name: str | None = None) -> PacedEntity:
    return PacedEntity(name or f"item:{item}", (item,), cap, mode, PacingCurve.uniform(288))  # type: ignore[arg-type]


def _served(out: np.ndarray, items: np.ndarray) -> np.ndarray:
    return items[~np.isnan(out)]


@integration
def test_two_workers_share_one_consistent_count(redis_url: str) -> None:
    keys = _keys()
    entities = [_entity(3, 10**9), PacedEntity("campaign:c", (3, 4), 10**9, "cap", PacingCurve.uniform(288))]
    clock = Clock(NOON)
    workers = [ExposurePacer(_store(redis_url, keys, entities), seed=w, clock=clock) for w in range(2)]
    sent = [0, 0]
    sent_campaign = [0, 0]
    barrier = threading.Barrier(2)

    def serve(w: int) -> None:
        rng = np.random.default_rng(w)
        barrier.wait()
        for _ in range(300):
            items = rng.choice(np.array([3, 4, 9]), size=int(rng.integers(1, 20)))
            workers[w].record_exposures(items)
            sent[w] += int((items == 3).sum())
            sent_campaign[w] += int(np.isin(items, [3, 4]).sum())

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, counts = workers[1].store.read(NOON)
    assert counts.tolist() == [sum(sent), sum(sent_campaign)]

    # both workers see the next interval; exactly one of them steps the controllers
    clock.now_s = NOON + INTERVAL_S
    stepped = [0, 0]

    def advance(w: int) -> None:
        barrier.wait()
        stepped[w] = workers[w].store.advance(clock())

    threads = [threading.Thread(target=advance, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(stepped) == [0, 2]
    workers[0].store.client.delete(keys.pacing_step_lock(workers[0].store.global_interval(clock())))
    assert workers[0].store.advance(clock()) == 0  # even without the lock, an interval is stepped once
    states, _ = workers[0].store.read(clock())
    assert {s.interval for s in states} == {workers[0].store.global_interval(clock())}


@integration
def test_restart_continues_from_the_stored_state(redis_url: str) -> None:
    keys = _keys()
    gains = PidGains(0.5, 0.05, 0.1)
    clock = Clock(DAY0)
    first = ExposurePacer(_store(redis_url, keys, [_entity(5, 28_800)], gains), clock=clock)  # 100 / interval
    for k in range(4):  # serve ahead of the curve (150 per interval), step every interval
        clock.now_s = DAY0 + k * INTERVAL_S
        first.refresh()
        first.record_exposures(np.full(150, 5))
    clock.now_s = DAY0 + 4 * INTERVAL_S
    first.refresh()
    before, _ = first.store.read(clock())
    assert before[0].pid.integral < 0 and before[0].pid.output < 0  # throttling

    restarted = ExposurePacer(_store(redis_url, keys, [_entity(5, 28_800)], gains), clock=clock)
    after, counts = restarted.store.read(clock())
    assert after == before and counts.tolist() == [600]  # the day's count is there too
    view = restarted.refresh()
    assert view is not None and view.outputs[0] == pytest.approx(before[0].pid.output)
    # the next step continues the stored integral, not a fresh one
    clock.now_s = DAY0 + 5 * INTERVAL_S
    restarted.refresh()
    stepped, counts = restarted.store.read(clock())
    error = restarted.store.error(restarted.store.entities[0], int(counts[0]), 5)
    expected = restarted.store.controllers["cap"].step(before[0].pid, error)
    assert stepped[0].pid.integral == pytest.approx(expected.integral)
    assert stepped[0].pid.output == pytest.approx(expected.output)


@integration
def test_cap_mode_never_exceeds_the_cap(redis_url: str) -> None:
    keys = _keys()
    clock = Clock(NOON)
    entities = [_entity(11, 500)]
    workers = [ExposurePacer(_store(redis_url, keys, entities, PidGains(0, 0, 0)), cache_ttl_s=0.0, seed=w,
                             clock=clock) for w in range(2)]  # fmt: skip
    served = 0
    for i in range(60):  # 60 batches of 40 eligible impressions: 2400 for a cap of 500
        pacer = workers[i % 2]
        items = np.full(40, 11)
        shown = _served(pacer.apply(USER, items, np.ones(40)), items)
        pacer.record_exposures(shown)
        served += len(shown)
    assert served == 500
    assert workers[0].store.read(clock())[1].tolist() == [500]
    items = np.array([11, 12])
    out = workers[1].apply(USER, items, np.array([2.0, 1.0]))
    assert np.isnan(out[0]) and out[1] == 1.0  # at the cap: always dropped; an unpaced item passes


@integration
def test_guaranteed_mode_boosts_behind_and_damps_ahead(redis_url: str) -> None:
    keys = _keys()
    clock = Clock(NOON)
    behind = _entity(21, 28_800, "guaranteed")
    ahead = _entity(22, 28_800, "guaranteed")
    pacer = ExposurePacer(_store(redis_url, keys, [behind, ahead], PidGains(0.2, 0.0, 0.0)), clock=clock)
    pacer.record_exposures(np.full(20_000, 22))  # noon target: 14 400
    clock.now_s = NOON + 1  # the same interval; the pacer steps it at its first refresh
    items = np.array([21, 22, 23, 21])
    out = pacer.apply(USER, items, np.array([1.0, 1.0, 1.0, -1.0]))
    boost = math.exp(0.2 * 14_400 / 100)  # clamped to max_boost
    assert out[0] == pytest.approx(min(boost, 3.0)) and out[0] > 1.0
    assert out[3] == pytest.approx(-1.0 / out[0])  # sign-aware: a boosted negative score moves up too
    assert out[1] == pytest.approx(0.5)  # ahead of the curve: damped to min_multiplier
    assert out[2] == 1.0 and not np.isnan(out).any()  # unpaced untouched, guaranteed mode never drops


@integration
def test_pacer_is_a_control_stage_that_throttles_by_the_pass_rate(redis_url: str) -> None:
    keys = _keys()
    clock = Clock(NOON)
    pacer = ExposurePacer(_store(redis_url, keys, [_entity(31, 28_800)], PidGains(1.0, 0.0, 0.0)), seed=0,
                          clock=clock)  # fmt: skip
    pacer.record_exposures(np.full(14_450, 31))  # half an interval ahead at noon: output −0.5
    stage: ControlStage = pacer
    items = np.concatenate([np.full(20_000, 31), [32, 33]])
    scores = np.linspace(1.0, 2.0, len(items))
    out = stage.apply(USER, items, scores)
    assert isinstance(stage.name, str) and out.shape == scores.shape
    kept = ~np.isnan(out[:-2])
    assert kept.mean() == pytest.approx(math.exp(-0.5), abs=0.015)
    assert np.array_equal(out[:-2][kept], scores[:-2][kept])  # cap mode throttles, it does not re-score
    assert out[-2:].tolist() == scores[-2:].tolist()
    view = pacer.view
    assert isinstance(view, PacingView) and view.pass_rate[0] == pytest.approx(math.exp(-0.5))


@integration
def test_new_day_restarts_the_count_and_keeps_the_control(redis_url: str) -> None:
    keys = _keys()
    clock = Clock(DAY0 - INTERVAL_S)  # the last interval of the day before
    pacer = ExposurePacer(_store(redis_url, keys, [_entity(41, 28_800)]), clock=clock)
    pacer.record_exposures(np.full(30_000, 41))  # over the cap
    pacer.refresh()
    items = np.full(5, 41)
    assert np.isnan(pacer.apply(USER, items, np.ones(5))).all()
    yesterday, _ = pacer.store.read(clock())
    clock.now_s = DAY0  # midnight: a new counter, the controller carries its output and integral
    out = pacer.apply(USER, items, np.ones(5))
    states, counts = pacer.store.read(clock())
    assert counts.tolist() == [0] and not np.isnan(out).all()
    assert states[0].day == yesterday[0].day + 1 and states[0].pid.prev_error == 0.0
    # the error restarts at 0 (no P, no D); the integral, what the loop learnt of the traffic, carries on
    assert yesterday[0].pid.integral < 0 and states[0].pid.integral == pytest.approx(
        yesterday[0].pid.integral
    )
    assert states[0].pid.output == pytest.approx(0.01 * yesterday[0].pid.integral)


def test_pacer_fails_open_without_redis() -> None:
    dead = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    store = PacingStore(dead, _keys(), [_entity(51, 10)], PidGains(1.0, 0.0, 0.0), interval_s=INTERVAL_S)
    pacer = ExposurePacer(store, clock=Clock(NOON))
    items, scores = np.array([51, 52]), np.array([1.0, 2.0])
    assert pacer.apply(USER, items, scores).tolist() == [1.0, 2.0]  # no view: everything passes
    with pytest.raises(redis.ConnectionError):
        pacer.record_exposures(items)  # a lost count is the caller's to handle, not hidden


@integration
def test_background_refresh_sees_the_other_workers(redis_url: str) -> None:
    keys = _keys()
    clock = Clock(NOON)
    watcher = ExposurePacer(_store(redis_url, keys, [_entity(61, 100)]), cache_ttl_s=0.02, clock=clock)
    server = ExposurePacer(_store(redis_url, keys, [_entity(61, 100)]), clock=clock)
    watcher.start_background_refresh()
    try:
        server.record_exposures(np.full(100, 61))  # the other worker fills the cap
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            view = watcher.view
            if view is not None and view.counts.tolist() == [100]:
                break
            time.sleep(0.01)
        assert np.isnan(watcher.apply(USER, np.array([61]), np.ones(1))).all()
    finally:
        watcher.close()


@integration
def test_pacer_from_settings(redis_url: str) -> None:
    settings = Settings(pacing={
        "enabled": True, "curve": [[0, 1], [12, 3]],
        "entities": [{"name": "campaign:x", "items": [1, 2], "daily_cap": 50},
                     {"name": "item:2", "items": [2], "daily_cap": 20, "mode": "guaranteed", "curve": None}],
    })  # fmt: skip
    pacer = pacer_from_settings(redis.Redis.from_url(redis_url), _keys(), settings.pacing, clock=Clock(NOON))
    assert [e.name for e in pacer.store.entities] == ["campaign:x", "item:2"]
    assert pacer.store.entities[0].curve.cumulative[144] == pytest.approx(0.25)
    assert pacer.store.items.tolist() == [1, 2]
    with pytest.raises(ValueError, match="does not divide a day"):
        PacingSettings(interval_s=7000)


# -- simulator and benchmark -------------------------------------------------------------------------------
@integration
def test_bench_default_gains_meet_the_targets(redis_url: str) -> None:
    result = run_pacing_bench(redis_url, seed=0)
    pid, hard, none = result["pid"], result["hard_cap"], result["none"]
    keys = {
        "overshoot_pct_of_cap",
        "rmse_pct_of_cap",
        "rise_intervals",
        "settling_intervals",
        "served_share_of_day",
    }
    assert keys <= set(pid) and keys <= set(hard) and keys <= set(none)
    assert pid["overshoot_pct_of_cap"] <= 1.0 and pid["rmse_pct_of_cap"] <= 5.0
    assert pid["settling_intervals"] is not None and pid["settling_intervals"] <= 6
    assert pid["served_share_of_day"] > hard["served_share_of_day"]
    assert hard["overshoot_pct_of_cap"] <= 1.0 and hard["rmse_pct_of_cap"] > 10.0
    assert none["overshoot_pct_of_cap"] > 100.0


@integration
def test_autotune_improves_on_a_poor_start(redis_url: str) -> None:
    small: dict[str, Any] = {"intervals": 48, "ticks_per_interval": 1, "workers": 1, "surge_hours": 4.0}
    result = autotune_gains(redis_url, seed=0, trials=3, refine_rounds=1, tune_seeds=(1,), kp=0.05, ki=0.001,
                            **small)  # fmt: skip
    assert result["objective"] < result["default_objective"]
    assert set(result["gains"]) == {"kp", "ki", "kd", "integral_discount", "dead_band"}
    assert result["metrics"]["rmse_pct_of_cap"] is not None
