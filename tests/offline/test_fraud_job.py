"""Offline anti-fraud job on generated events: a click farm and an in-step gang are blocklisted, households
and a housemate of a farm account are not, re-runs are idempotent, and the published blocklist is what the
online guard enforces (real Spark, real Redis)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import redis
from recstack.control.fraud import FraudAction, FraudGuard
from recstack.features.keys import Col, RedisKey
from recstack.features.schema import EVENT_SCHEMA, Event, EventType
from recstack.offline.jobs.fraud import (
    ATTR,
    BLOCKLIST_COLUMNS,
    blocklist_dir,
    connected_components,
    publish_blocklist_to_redis,
    read_blocklist,
    run_fraud_job,
)
from recstack.offline.lake import EventLake

pytestmark = pytest.mark.integration  # a real Spark session and redis-server

D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
FARM = list(range(1000, 1008))  # 8 accounts on 2 devices, one IP; account 1007 also logs in at user 6's home
GANG = list(range(2000, 2005))  # 5 accounts on their own phones and IPs, clicking in step
HOUSEHOLDS = {1: "192.168.1.10", 2: "192.168.1.10", 3: "192.168.2.10", 4: "192.168.2.10", 5: "192.168.2.10",
              6: "192.168.3.10"}  # fmt: skip
NORMAL = list(range(1, 41))
NAT_IP = "100.64.0.1"  # a carrier NAT: 35 ordinary users, never evidence


class EventLog:
    """Rows in ``EVENT_SCHEMA`` for the lake."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: EventType, ts: dt.datetime, user: int, item: int, device: str, ip: str) -> None:
        self.rows.append({
            Col.EVENT_ID: f"e{len(self.rows)}", Col.EVENT_TYPE: kind.value, Col.TS: ts, Col.USER_ID: user,
            Col.ITEM_ID: item, Col.REQUEST_ID: None, Col.VALUE: None, Col.LABEL: None, Col.PAGE: None,
            Col.SLOT: None, Col.DEVICE: None, Col.CITY: None, Col.VARIANT: None, Col.DEVICE_ID: device, Col.IP: ip,
        })  # fmt: skip


def generate(log: EventLog, seed: int = 7) -> None:
    rng = random.Random(seed)
    for day in (D1, D2):
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        # ordinary users: 6 visits a day at random times, 5 items shown, one clicked 40% of the time
        for user in NORMAL:
            for _ in range(6):
                at = midnight + dt.timedelta(seconds=rng.randrange(86_000))
                device = "tablet-h2" if user in (3, 4) and rng.random() < 0.5 else f"phone-{user}"
                ip = HOUSEHOLDS.get(user) or (NAT_IP if user > 5 and rng.random() < 0.5 else f"10.0.{user}.1")
                shown = rng.sample(range(300), 5)
                for item in shown:
                    log.add(EventType.IMPRESSION, at, user, item, device, ip)
                if rng.random() < 0.4:
                    log.add(EventType.CLICK, at + dt.timedelta(seconds=rng.uniform(5, 60)), user,
                            rng.choice(shown), device, ip)  # fmt: skip
        # the farm: every 10 minutes from 02:00 all accounts click the same item within 20 s; impressions
        # only in every other round
        for r in range(12):
            start = midnight + dt.timedelta(hours=2, minutes=10 * r)
            item = 900 + r
            for account in FARM:
                device = "farm-a" if account < 1004 else "farm-b"
                at = start + dt.timedelta(seconds=rng.uniform(0, 20))
                if r % 2 == 0:
                    log.add(
                        EventType.IMPRESSION,
                        at - dt.timedelta(seconds=2),
                        account,
                        item,
                        device,
                        "203.0.113.7",
                    )
                log.add(EventType.CLICK, at, account, item, device, "203.0.113.7")
        log.add(EventType.IMPRESSION, midnight + dt.timedelta(hours=20), 1007, 5, "farm-b", HOUSEHOLDS[6])
        # the gang: own phones and IPs, shown and clicked, but always the same item within 15 s
        for r in range(5):
            start = midnight + dt.timedelta(hours=14, minutes=7 * r)
            item = 950 + r + (5 if day == D2 else 0)
            for account in GANG:
                at = start + dt.timedelta(seconds=rng.uniform(0, 15))
                device, ip = f"phone-{account}", f"198.51.100.{account - 1999}"
                log.add(EventType.IMPRESSION, at - dt.timedelta(seconds=3), account, item, device, ip)
                log.add(EventType.CLICK, at, account, item, device, ip)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = EventLog()
    generate(log)
    lake = EventLake(tmp_path_factory.mktemp("fraud") / "lake")
    with lake.stage() as stage:
        stage.write(pa.Table.from_pylist(log.rows, schema=EVENT_SCHEMA))
        stage.commit()
    return lake.root


@pytest.fixture(scope="module")
def first_run(spark, lake_root: Path) -> tuple[dict[str, Any], pd.DataFrame]:  # type: ignore[no-untyped-def]
    report = run_fraud_job(spark, lake_root, D1, D2)
    rows = pd.read_parquet(blocklist_dir(lake_root, report["version"]))
    return report, rows


def actors(rows: pd.DataFrame, kind: str) -> set[str]:
    return {a.split(":", 1)[1] for a in rows.loc[rows["kind"] == kind, "actor"]}


def test_components_by_min_label_propagation(spark) -> None:  # type: ignore[no-untyped-def]
    # a chain 5 - 4 - 3 - 2 - 1 over four attributes needs several rounds; 10 - 11 is its own component
    edges = [
        (5, "a"),
        (4, "a"),
        (4, "b"),
        (3, "b"),
        (3, "c"),
        (2, "c"),
        (2, "d"),
        (1, "d"),
        (10, "x"),
        (11, "x"),
    ]
    members = spark.createDataFrame(edges, f"{Col.USER_ID} long, {ATTR} string")
    labels, rounds = connected_components(members)
    got = dict(labels.toPandas().itertuples(index=False, name=None))
    assert got == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 10: 10, 11: 10}
    assert rounds >= 3
    with pytest.raises(RuntimeError, match="still changing"):
        connected_components(members, max_rounds=1)


def test_click_farm_and_gang_are_blocklisted_households_are_not(first_run) -> None:  # type: ignore[no-untyped-def]
    report, rows = first_run
    assert list(rows.columns) == list(BLOCKLIST_COLUMNS)
    assert actors(rows, "user") == {str(u) for u in FARM + GANG}
    assert actors(rows, "device") == {"farm-a", "farm-b"} | {f"phone-{u}" for u in GANG}
    assert actors(rows, "ip") == {"203.0.113.7"}  # not the homes, not the NAT, not the gang's own addresses
    farm = rows[rows["actor"] == "user:1000"].iloc[0]
    assert farm["component"] == 6  # user 6's home IP joins the farm's component; user 6 is spared
    assert farm["score"] >= 0.7 and "sync=0.98" in farm["reason"]  # user 6's clicks are not in step
    gang = rows[rows["actor"] == "user:2000"].iloc[0]
    assert gang["component"] == 2000 and "no_impression=0.00" in gang["reason"]
    assert report["users_scanned"] == len(NORMAL) + len(FARM) + len(GANG)
    assert report["flagged_components"] == 2
    assert (report["flagged_users"], report["flagged_devices"], report["flagged_ips"]) == (13, 7, 1)
    assert report["busy_ips"] == 1 and report["crowded_devices"] == 0
    assert report["components"] == 4  # farm (with user 6), gang, the two households
    assert report["published"] is None


def test_rerun_gives_the_same_blocklist(spark, lake_root: Path, first_run, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    report, rows = first_run
    prefix = f"test-fraudjob-{uuid.uuid4().hex[:8]}"
    again = run_fraud_job(spark, lake_root, D1, D2, redis_url=redis_url, key_prefix=prefix)
    assert again["version"] == report["version"] and again["version"].startswith("20260301-20260302-")
    pd.testing.assert_frame_equal(pd.read_parquet(blocklist_dir(lake_root, again["version"])), rows)
    assert again["published"] == len(rows)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.get(RedisKey(prefix).fraud_blocklist_current()) == report["version"]
    client.close()


def test_published_blocklist_is_what_the_guard_sees(
    spark, lake_root: Path, first_run, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    report, _ = first_run
    prefix = f"test-fraudjob-{uuid.uuid4().hex[:8]}"
    keys = RedisKey(prefix)
    frame = read_blocklist(spark, lake_root, report["version"])
    assert publish_blocklist_to_redis(frame, redis_url, prefix, report["version"]) == frame.count()
    client = redis.Redis.from_url(redis_url)
    guard = FraudGuard(client, keys)
    assert guard.is_blocked(1000)
    assert guard.is_blocked(2003, "phone-2003")
    assert guard.is_blocked(424242, device_id="farm-b")  # a new account on a farm device
    assert guard.is_blocked(424242, ip="203.0.113.7")
    assert not guard.is_blocked(6, "phone-6", HOUSEHOLDS[6])  # the farm account's housemate
    for user in (1, 2, 3, 4, 5, 17):
        assert not guard.is_blocked(user, f"phone-{user}", HOUSEHOLDS.get(user, NAT_IP))
    assert not guard.is_blocked(4, "tablet-h2", HOUSEHOLDS[4])
    click = Event(event_id=uuid.uuid4().hex, event_type=EventType.CLICK, ts=dt.datetime.now(dt.UTC),
                  user_id=1001, item_id=900, device_id="farm-a", ip="203.0.113.7")  # fmt: skip
    verdict = guard.judge(click)
    assert verdict.action == FraudAction.BLOCK and "blocklist:user" in verdict.reasons

    # a newer version takes over; the old one expires instead of lingering
    newer = pd.DataFrame({"actor": ["user:1000"]})
    assert publish_blocklist_to_redis(newer, redis_url, prefix, "manual-1", previous_ttl_s=600) == 1
    assert 0 < int(client.ttl(keys.fraud_blocklist(report["version"]))) <= 600  # type: ignore[arg-type]
    assert guard.load_blocklist() == "manual-1" and not guard.is_blocked(1001, "farm-a")
    client.close()


def test_a_range_without_events_writes_the_given_version_empty(spark, lake_root: Path) -> None:  # type: ignore[no-untyped-def]
    report = run_fraud_job(spark, lake_root, dt.date(2026, 4, 1), dt.date(2026, 4, 2), version="manual-april")
    assert report["version"] == "manual-april"
    assert (report["users_scanned"], report["components"], report["flagged_users"]) == (0, 0, 0)
    assert read_blocklist(spark, lake_root, "manual-april").count() == 0
