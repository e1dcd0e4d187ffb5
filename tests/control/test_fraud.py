"""Anti-fraud rules on crafted events, against a real Redis (no mocks): each rule fires on its pattern and
stays silent on a normal user's browsing."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from pathlib import Path

import pytest
import redis
from recstack.control.fraud import (
    FraudAction,
    FraudGuard,
    FraudVerdict,
    actor_member,
    publish_blocklist,
)
from recstack.control.fraud_rules import FraudRule, reason_rule
from recstack.features.keys import RedisKey
from recstack.features.schema import Event, EventType
from recstack.features.settings import FraudSettings

pytestmark = pytest.mark.integration  # a real redis-server

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def at(seconds: float) -> int:
    """Event time ``seconds`` after T0, in ms."""
    return int((T0 + dt.timedelta(seconds=seconds)).timestamp() * 1000)


def ev(kind: EventType, seconds: float, user: int, item: int, request: str | None = None,
       device: str | None = None, ip: str | None = "10.0.0.1", event_id: str | None = None) -> Event:  # fmt: skip
    """An event of ``user`` at T0 + ``seconds``, on the user's own phone unless ``device`` is given."""
    return Event(
        event_id=event_id or f"e{next(_ids)}", event_type=kind, ts=T0 + dt.timedelta(seconds=seconds),
        user_id=user, item_id=item, request_id=request, device_id=device or f"phone-{user}", ip=ip,
    )  # fmt: skip


def imp(seconds: float, user: int, item: int, **kw: object) -> Event:
    return ev(EventType.IMPRESSION, seconds, user, item, **kw)  # type: ignore[arg-type]


def click(seconds: float, user: int, item: int, **kw: object) -> Event:
    return ev(EventType.CLICK, seconds, user, item, **kw)  # type: ignore[arg-type]


@pytest.fixture
def keys() -> RedisKey:
    return RedisKey(f"test-fraud-{uuid.uuid4().hex[:8]}")  # every test has its own key space


@pytest.fixture
def guard(client: redis.Redis, keys: RedisKey) -> FraudGuard:
    return FraudGuard(client, keys, FraudSettings())


def actions(verdicts: list[FraudVerdict]) -> list[str]:
    return [v.action.value for v in verdicts]


def test_normal_browsing_is_allowed(guard: FraudGuard) -> None:
    events = []
    for r in range(6):  # a slate every ~2 minutes, two clicks 5-40 s after it is shown
        t = 120.0 * r
        events += [imp(t, 1, 100 * r + slot, request=f"q{r}") for slot in range(10)]
        events += [click(t + 5 + 3 * r, 1, 100 * r + 2, request=f"q{r}"),
                   click(t + 40, 1, 100 * r + 7, request=f"q{r}")]  # fmt: skip
    verdicts = guard.judge_many(events)
    assert actions(verdicts) == ["allow"] * len(events), [v.reasons for v in verdicts if not v.allowed]
    last = verdicts[-1].scores
    assert last["click_delay_ms"] == 40_000
    assert last["user.clicks_1h"] == 12 and last["device.users"] == 1
    assert not guard.is_blocked(1, "phone-1", "10.0.0.1", at_ms=at(800))


def test_click_flood_is_blocked_and_remembered(
    guard: FraudGuard, client: redis.Redis, keys: RedisKey
) -> None:
    limit = guard.settings.user.clicks_per_min
    events = [imp(0, 2, i, request="q") for i in range(60)]
    events += [click(1 + 0.8 * i, 2, i, request="q", device="bot-1", ip="203.0.113.9") for i in range(45)]
    verdicts = guard.judge_many(events)[60:]
    assert actions(verdicts[:limit]) == ["allow"] * limit
    assert all(v.action == FraudAction.BLOCK for v in verdicts[limit:])
    assert "click_rate:user" in verdicts[limit].reasons and "click_rate:device" in verdicts[limit].reasons
    # the block is remembered: a later, innocent-looking event of the user is blocked too
    later = guard.judge(imp(600, 2, 999, request="q2", device="phone-2", ip="10.9.9.9"))
    assert later.action == FraudAction.BLOCK and later.reasons == ("blocked:user(click_rate:user)",)
    assert reason_rule(later.reasons[0]) == FraudRule.CLICK_RATE
    assert guard.is_blocked(2, at_ms=at(600))
    assert guard.is_blocked(99, device_id="bot-1", at_ms=at(600))
    assert not guard.is_blocked(99, device_id="phone-9", ip="10.9.9.9", at_ms=at(600))
    # remembered in Redis with a TTL; the block ends block_ttl_s of event time after its last cause
    assert 0 < client.pttl(keys.fraud_blocked("user", "2")) <= guard.settings.user.block_ttl_s * 1000
    after = 1 + 0.8 * 44 + guard.settings.user.block_ttl_s + 1
    assert not guard.is_blocked(2, at_ms=at(after))
    assert guard.judge(imp(after, 2, 5, request="q3", device="phone-2", ip="10.9.9.9")).allowed


def test_request_flood_and_repeated_flags_block_the_actor(guard: FraudGuard) -> None:
    limit = guard.settings.user.requests_per_min
    slates = [imp(0.5 * r, 10, 1000 + 3 * r + k, request=f"s{r}") for r in range(limit + 5) for k in range(3)]
    verdicts = guard.judge_many(slates)
    assert actions(verdicts[: 3 * limit]) == ["allow"] * (3 * limit)  # 3 impressions, one request each slate
    assert verdicts[3 * limit].reasons == ("request_rate:user", "request_rate:device")
    assert verdicts[3 * limit].scores["user.requests_1m"] == limit + 1
    # clicks flagged again and again: the actor is blocked once its flags exceed max_flags_per_hour
    most = guard.settings.user.max_flags_per_hour
    flagged = guard.judge_many([click(60.0 * k, 11, 7000 + k) for k in range(most + 2)])
    assert actions(flagged[:most]) == ["flag"] * most
    assert flagged[most].action == FraudAction.BLOCK and "escalation:user" in flagged[most].reasons
    assert flagged[most + 1].reasons[0] == "blocked:user(escalation:user)"


def test_impressionless_click_is_flagged(guard: FraudGuard) -> None:
    v = guard.judge(click(10, 3, 42))  # never shown
    assert v.action == FraudAction.FLAG and v.reasons == ("no_impression",)
    guard.judge(imp(100, 3, 43))
    stale = guard.judge(click(100 + guard.settings.impression_window_s + 1, 3, 43))  # shown too long ago
    assert stale.reasons == ("no_impression",)
    # a click matches an impression of the same user and item, or of the same request
    guard.judge(imp(5000, 4, 50, request="shared-q"))
    assert guard.judge(click(5010, 5, 50, request="shared-q")).allowed
    assert guard.judge(click(5010, 5, 51, request="shared-q")).reasons == ("no_impression",)


def test_too_fast_click_is_flagged(guard: FraudGuard) -> None:
    events = [imp(0, 6, 1, request="q"), imp(0, 6, 2, request="q"),
              click(0.2, 6, 1, request="q"), click(2.5, 6, 2, request="q")]  # fmt: skip
    verdicts = guard.judge_many(events)
    assert verdicts[2].action == FraudAction.FLAG and verdicts[2].reasons == ("click_too_fast",)
    assert verdicts[2].scores["click_delay_ms"] == 200
    assert verdicts[3].allowed


def test_duplicate_clicks_and_replayed_events_are_flagged(guard: FraudGuard) -> None:
    first = click(10, 7, 9, request="q", event_id="orig")
    verdicts = guard.judge_many([imp(0, 7, 9, request="q"), first])
    assert actions(verdicts) == ["allow", "allow"]
    # the same event sent again: flagged and not counted twice
    replay = guard.judge(first)
    assert replay.action == FraudAction.FLAG and replay.reasons == ("duplicate_event",)
    # the same click re-sent with a fresh id ten minutes later (with a fresh impression): a duplicate click
    again = guard.judge_many([imp(600, 7, 9, request="q2"), click(605, 7, 9, request="q2")])
    assert again[1].reasons == ("duplicate_click",)
    assert again[1].scores["user.clicks_1h"] == 2  # the replayed event_id was not counted


def test_abnormal_ctr_is_flagged(guard: FraudGuard) -> None:
    events = [imp(0, 8, i, request="q", ip=f"10.1.0.{i}") for i in range(20)]
    events += [click(10 + 10 * i, 8, i, request="q", ip="10.1.0.99") for i in range(12)]
    verdicts = guard.judge_many(events)[20:]
    assert actions(verdicts[:10]) == ["allow"] * 10  # 10 / 20 shown: not above 0.5
    assert verdicts[10].action == FraudAction.FLAG and "abnormal_ctr:user" in verdicts[10].reasons
    assert verdicts[10].scores["user.ctr_clicks"] == 11 and verdicts[10].scores["user.ctr_impressions"] == 20


def test_device_shared_by_many_accounts_is_blocked_with_its_accounts(guard: FraudGuard) -> None:
    verdicts = []
    for k, user in enumerate(range(20, 25)):  # five accounts, one after the other, on one device
        t = 60.0 * k
        verdicts.append(guard.judge_many([imp(t, user, 1, request=f"f{k}", device="farm-1"),
                                          click(t + 5, user, 1, request=f"f{k}", device="farm-1")]))  # fmt: skip
    assert actions(verdicts[0]) == actions(verdicts[1]) == ["allow", "allow"]
    assert verdicts[2][0].action == FraudAction.FLAG and "shared:device" in verdicts[2][0].reasons
    assert verdicts[3][0].action == FraudAction.BLOCK and "shared:device" in verdicts[3][0].reasons
    assert verdicts[4][0].reasons[0] == "blocked:device(shared:device)"
    # the first account is blocked with the device, on any device
    assert guard.is_blocked(20, at_ms=at(300))
    assert guard.judge(imp(400, 20, 2, request="x", device="own-phone", ip="10.7.7.7")).reasons == (
        "blocked:user(shared:device)",
    )


def test_windows_run_on_event_time_and_impressions_go_first(guard: FraudGuard) -> None:
    # 100 clicks judged at once but 40 s apart in event time: no flood (each minute holds 2)
    events = []
    for i in range(100):
        events.append(click(40.0 * i + 3, 30, 10 * i, request=f"q{i}"))
        events += [imp(40.0 * i, 30, 10 * i + slot, request=f"q{i}") for slot in range(5)]
    verdicts = guard.judge_many(events)  # each click precedes its impression in the batch
    assert actions(verdicts) == ["allow"] * len(events), {r for v in verdicts for r in v.reasons}
    assert max(v.scores.get("user.clicks_1m", 0) for v in verdicts) == 2
    # a click stamped before its impression is impression-less, whatever the arrival order
    early = guard.judge_many([imp(9000, 30, 5001, request="z"), click(8999, 30, 5001, request="z")])
    assert early[1].reasons == ("no_impression",)


def test_blocklist_membership_and_versions(guard: FraudGuard, client: redis.Redis, keys: RedisKey) -> None:
    assert guard.load_blocklist() is None and not guard.in_blocklist(40)
    publish_blocklist(
        client, keys, ["user:40", actor_member("device", "emu-1"), "ip:198.51.100.7"], "2024-03-01"
    )
    assert guard.load_blocklist() == "2024-03-01"
    assert guard.in_blocklist(40) and guard.in_blocklist(41, device_id="emu-1")
    assert guard.in_blocklist(41, ip="198.51.100.7") and not guard.in_blocklist(41, "phone-1", "10.0.0.1")
    assert guard.is_blocked(41, ip="198.51.100.7", at_ms=at(0))
    v = guard.judge(imp(0, 40, 1))
    assert v.action == FraudAction.BLOCK and v.reasons == ("blocklist:user",)
    # a new version replaces the old one atomically
    publish_blocklist(client, keys, ["user:41"], "2024-03-02")
    assert guard.load_blocklist() == "2024-03-02"
    assert not guard.in_blocklist(40) and guard.in_blocklist(41)
    assert guard.judge(imp(10, 40, 2)).allowed
    with pytest.raises(ValueError):
        publish_blocklist(client, keys, ["someone"], "v3")


def test_screen_keeps_every_event_and_audits_the_quarantined(guard: FraudGuard) -> None:
    events = [imp(0, 50, 1, request="q"), click(6, 50, 1, request="q"),  # normal
              click(7, 51, 2),  # impression-less
              imp(10, 52, 3, request="r"), click(10.1, 52, 3, request="r")]  # too fast  # fmt: skip
    events.append(events[1])  # replayed
    screened = guard.screen(events)
    assert len(screened.clean) + len(screened.quarantined) == len(events)
    assert [e.event_id for e in screened.clean] == [
        events[0].event_id,
        events[1].event_id,
        events[3].event_id,
    ]
    assert [q.event.event_id for q in screened.quarantined] == [events[2].event_id, events[4].event_id,
                                                                 events[5].event_id]  # fmt: skip
    assert [q.verdict.reasons for q in screened.quarantined] == [
        ("no_impression",),
        ("click_too_fast",),
        ("duplicate_event",),
    ]
    audit = guard.audit_log(10)
    assert [(a.event, a.verdict.action, a.verdict.reasons) for a in audit] == [
        (q.event, q.verdict.action, q.verdict.reasons) for q in screened.quarantined
    ]
    assert audit[1].verdict.scores["click_delay_ms"] == 100


def test_disabled_guard_allows_everything_and_writes_nothing(client: redis.Redis, keys: RedisKey) -> None:
    guard = FraudGuard(client, keys, FraudSettings(enabled=False))
    assert actions(guard.judge_many([click(0, 60, 1), click(0, 60, 1)])) == ["allow", "allow"]
    assert not list(client.scan_iter(match=f"{keys.prefix}:*"))


def test_fraud_bench_smoke(ml100k: Path, redis_url: str) -> None:
    from recstack.offline.bench.fraud import ATTACKS, run_fraud_bench

    out = run_fraud_bench(ml100k, redis_url, max_user=100, attack_scale=0.1, epochs=1, auc_seeds=1)
    assert set(out["attacks"]) == set(ATTACKS)
    for name, m in out["attacks"].items():
        assert m["events"] > 0 and m["recall"] >= 0.85 and m["precision"] >= 0.95, (name, m)
    assert out["fpr_normal"] <= 0.005
    assert set(out["auc"]) == {"clean", "attacked_filtered", "attacked_unfiltered"}
    assert out["auc"]["attacked_unfiltered"] < out["auc"]["clean"] - 0.01
    assert abs(out["auc"]["attacked_filtered"] - out["auc"]["clean"]) < 0.01
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match="bench-fraud-*"))  # its keys are gone
    client.close()


def test_one_limit_overridden_keeps_the_other_defaults_of_its_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from recstack.features.settings import load_settings

    monkeypatch.setenv("RECSTACK_FRAUD__DEVICE__USERS_BLOCK", "6")
    monkeypatch.setenv("RECSTACK_FRAUD__BLOCKED_RESPONSE", "429")
    fraud = load_settings().fraud
    assert fraud.device.users_block == 6 and fraud.device.users_flag == 3
    assert fraud.ip.clicks_per_min > fraud.user.clicks_per_min and fraud.ip.users_block is None
    assert fraud.blocked_response == "429"
