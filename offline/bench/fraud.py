"""``recstack bench fraud``: MovieLens-100K replayed as live traffic with labelled attacks, judged by the real
``FraudGuard`` on a real Redis, and the CTR model trained on the attacked data with and without the filter.

**Normal traffic.** Each user's ratings made at the same second form one request (a page of the rating UI):
a slate of impressions of the rated items plus 4 non-rated items per rated one (popularity-weighted, never
an item the user rated), and a click on each item rated >= 4, one after the other at human pace (each
click 6 s median after the previous one or the impression, lognormal sigma 0.9: about 0.3% come sooner than
0.5 s). A page starts at its rating time, or a few seconds after the previous page's last click when the
user was still busy (MovieLens users rate pages seconds apart, so the pace is kept, not the timestamps).
Users have stable devices (a phone or browser; 30% a second one; 40% of multi-person households a shared
tablet) and IPs: 20% of users live in households of 2-4 sharing one home IP, and 40% of the sessions on a
phone go through one of 100 carrier-NAT IPs shared by all users. Rating-3 ratings are impressions without a
click, as in the CTR protocol.

**Attacks** (each event labelled with its attack; times spread over the ml-100k period):

* ``bot_flood``: 8 accounts, each with its own device (6 on their own IP, 2 behind the carrier NAT), fetch
  slates of 10 (6 target items, 4 popular ones) and click the 6 targets, the first 0.15-1.5 s after the slate
  is shown, then every 0.2-0.9 s, for 15-40 minutes;
* ``click_farm``: two farms of 300 and 200 accounts on 4 and 3 devices and 2 and 1 IPs; half the accounts
  are real users' accounts taken over while dormant (no activity of their own from a day before to 5 days
  after the farm starts), half fresh ones; each account logs in 3 times over 3 days; a session shows 12 items
  (5 of the farm's targets) and clicks the 5 targets at human pace (4 s median apart); a device runs sessions
  back to back;
* ``replay``: 300 clicks of normal users sent again 1-3 times, 2 s to 12 h later: half byte-identical (same
  event_id and ts), half with a new event_id and the later ts (same user, item, request, device, IP);
* ``impressionless``: 20 accounts (own devices, 5 IPs) send 30-80 clicks per burst, 15-90 s apart, on target
  items never shown to them (no or forged request id), in 2 bursts each.

Target items are 40 items with at least 30 ratings and a positive rate in the lowest quarter: the items a
promotion would need. Fresh accounts have the profile of a random real user (sign-up asks for one).

**Metrics, per event.** An event is caught when its verdict is flag or block. ``recall`` of an attack = its
events caught / its events. ``precision`` of an attack = its events caught / (its events caught + normal
events caught by a rule aimed at it or by a generic rule); the rules aimed at each attack: bot_flood
request_rate / click_rate / click_too_fast / abnormal_ctr (automated clicking); click_farm shared; replay
duplicate_event / duplicate_click; impressionless no_impression; generic: escalation, blocklist (a
``blocked:...`` reason counts as its cause). ``precision_overall`` = attack events caught / all events
caught. ``fpr_normal`` = normal events caught / normal events.

**AUC.** The ``bench ctr`` protocol (rating 3 dropped, click = rating >= 4, random 80/10/10 split, seed 42),
Wide&Deep trained ``epochs`` epochs (best clean-validation epoch kept; the mean test AUC of ``auc_seeds``
trainings with seeds 1, 2, ...) on: the clean training split; the attacked one = clean training rows + one
row per attack click (positive, for its user and item) and per attack impression not clicked in its request
(negative); the filtered one = the attacked rows whose events the guard allowed (a normal rating's row is
dropped when its impression or click was caught). Validation and test stay clean. The taken-over accounts
are what hurts the model: fresh accounts' clicks are mostly absorbed by their own user-id parameters.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis
import torch
from recstack.control.fraud import FraudAction, FraudGuard, FraudVerdict
from recstack.control.fraud_rules import FraudRule, reason_rule
from recstack.features.keys import RedisKey
from recstack.features.schema import Event, EventType
from recstack.features.settings import FraudSettings
from recstack.models.ctr import CtrEncoder, TrainConfig, WideDeep, auc, predict, train_ctr
from recstack.offline.bench.ctr import BATCH, CROSSES, FIELDS, load_ratings, split
from recstack.offline.ingest import Progress, no_progress

NORMAL = "normal"
ATTACKS = ("bot_flood", "click_farm", "replay", "impressionless")
AIMED: dict[str, frozenset[FraudRule]] = {  # the rules written against each attack
    "bot_flood": frozenset(
        {FraudRule.REQUEST_RATE, FraudRule.CLICK_RATE, FraudRule.CLICK_TOO_FAST, FraudRule.ABNORMAL_CTR}
    ),  # fmt: skip
    "click_farm": frozenset({FraudRule.SHARED}),
    "replay": frozenset({FraudRule.DUPLICATE_EVENT, FraudRule.DUPLICATE_CLICK}),
    "impressionless": frozenset({FraudRule.NO_IMPRESSION}),
}
GENERIC = frozenset(FraudRule) - frozenset().union(*AIMED.values()) - {FraudRule.BLOCKED}
FARMS = ((300, 4, 2), (200, 3, 1))  # (accounts, devices, IPs) of each click farm
HIJACKED_SHARE = 0.5  # of a farm's accounts: real users' accounts, taken over while their owners are away
JUDGE_BATCH = 1000
_IMP, _CLICK = 0, 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class Traffic:
    """The simulated events as columns; ``label`` is ``normal`` or the attack's name."""

    event_id: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)  # _IMP / _CLICK
    ts: list[int] = field(default_factory=list)  # event time, ms
    arrival: list[int] = field(default_factory=list)  # when the guard sees it, ms (= ts but for late replays)
    user: list[int] = field(default_factory=list)
    item: list[int] = field(default_factory=list)
    request: list[str | None] = field(default_factory=list)
    device: list[str] = field(default_factory=list)
    ip: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)

    def add(self, kind: int, ts: float, user: int, item: int, request: str | None, device: str, ip: str,
            label: str, event_id: str | None = None, arrival: float | None = None) -> int:  # fmt: skip
        self.event_id.append(event_id or f"{label[0]}{len(self.event_id)}")
        self.kind.append(kind)
        self.ts.append(int(ts))
        self.arrival.append(int(ts if arrival is None else arrival))
        self.user.append(int(user))
        self.item.append(int(item))
        self.request.append(request)
        self.device.append(device)
        self.ip.append(ip)
        self.label.append(label)
        return len(self.event_id) - 1

    def __len__(self) -> int:
        return len(self.event_id)

    def event(self, i: int) -> Event:
        return Event.model_construct(
            event_id=self.event_id[i], event_type=EventType.CLICK if self.kind[i] == _CLICK else EventType.IMPRESSION,
            ts=_EPOCH + dt.timedelta(milliseconds=self.ts[i]), user_id=self.user[i], item_id=self.item[i],
            request_id=self.request[i], device_id=self.device[i], ip=self.ip[i],
        )  # fmt: skip


class _ItemDraws:
    """Popularity-weighted item ids, drawn in blocks and handed out one at a time."""

    def __init__(self, items: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> None:
        self.items, self.p, self.rng = items, weights / weights.sum(), rng
        self.pool: np.ndarray = np.zeros(0, np.int64)
        self.pos = 0

    def next(self) -> int:
        if self.pos >= len(self.pool):
            self.pool, self.pos = self.rng.choice(self.items, size=100_000, p=self.p), 0
        self.pos += 1
        return int(self.pool[self.pos - 1])


# -- normal traffic -------------------------------------------------------------------------------------------
def _normal_traffic(
    ratings: pd.DataFrame, rng: np.random.Generator, t: Traffic
) -> dict[tuple[int, int], list[int]]:
    """Append the replayed ml-100k traffic to ``t``; returns (user, item) → its impression and click rows."""
    counts = ratings["item_id"].value_counts()
    draws = _ItemDraws(counts.index.to_numpy(np.int64), counts.to_numpy(np.float64), rng)
    rated = ratings.groupby("user_id")["item_id"].agg(set).to_dict()
    users = np.sort(ratings["user_id"].unique())
    carriers = [f"172.20.{k // 200}.{k % 200 + 1}" for k in range(100)]
    home: dict[int, str] = {}
    tablet: dict[int, str] = {}
    order = rng.permutation(users)
    pos = household = 0
    while pos < len(order):  # 80% of users alone, the others in households of 2-4 sharing an IP
        size = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        members = order[pos : pos + size]
        for u in members:
            home[int(u)] = f"100.64.{household // 250}.{household % 250 + 1}"
            if len(members) > 1 and household % 5 < 2:
                tablet[int(u)] = f"tab-{household}"
        pos, household = pos + size, household + 1
    rows: dict[tuple[int, int], list[int]] = {}
    for u, frame in ratings.sort_values(["user_id", "ts"], kind="stable").groupby("user_id", sort=True):
        uid = int(u)  # type: ignore[call-overload]
        devices = [f"dev-{uid}-a"] + ([f"dev-{uid}-b"] if rng.random() < 0.3 else [])
        devices += [tablet[uid]] if uid in tablet else []
        weights = np.array([0.6, 0.25, 0.15][: len(devices)])
        busy_until, last_page = -(10**15), -(10**15)
        device, ip = devices[0], home[uid]
        for page, (ts_s, page_frame) in enumerate(frame.groupby("ts", sort=True)):
            start = max(int(ts_s) * 1000, busy_until + int(rng.lognormal(np.log(3000), 0.5)))  # type: ignore[call-overload]
            if start - last_page > 30 * 60_000:  # a new session: maybe another device and network
                device = devices[int(rng.choice(len(devices), p=weights / weights.sum()))]
                on_phone = device.endswith("-b") or (device.endswith("-a") and rng.random() < 0.5)
                ip = (
                    carriers[int(rng.integers(len(carriers)))]
                    if on_phone and rng.random() < 0.4
                    else home[uid]
                )
            last_page = start
            request = f"q{uid}-{page}"
            items = page_frame["item_id"].to_numpy(np.int64)
            for i in items:
                rows[(uid, int(i))] = [t.add(_IMP, start, uid, int(i), request, device, ip, NORMAL)]
            extra: set[int] = set()
            while len(extra) < 4 * len(items):
                cand = draws.next()
                if cand not in rated[uid]:
                    extra.add(cand)
            for i in sorted(extra):
                t.add(_IMP, start, uid, i, request, device, ip, NORMAL)
            clock = start
            positives = page_frame.loc[page_frame["rating"] >= 4, "item_id"].to_numpy(np.int64)
            for i in rng.permutation(positives):
                clock += int(rng.lognormal(np.log(6000), 0.9))
                rows[(uid, int(i))].append(t.add(_CLICK, clock, uid, int(i), request, device, ip, NORMAL))
            busy_until = clock if len(positives) else start + int(rng.lognormal(np.log(5000), 0.5))
    return rows


# -- attacks --------------------------------------------------------------------------------------------------
def _slate(
    targets: np.ndarray, n_targets: int, popular: np.ndarray, size: int, rng: np.random.Generator
) -> list[int]:
    picked = list(rng.choice(targets, n_targets, replace=False))
    while len(picked) < size:
        cand = int(rng.choice(popular))
        if cand not in picked:
            picked.append(cand)
    return [int(i) for i in picked]


def _bot_floods(t: Traffic, start: np.ndarray, targets: np.ndarray, popular: np.ndarray,
                carriers: list[str], rng: np.random.Generator) -> None:  # fmt: skip
    for b, t0 in enumerate(start):
        uid, device = 90_000 + b, f"dev-x{b}"
        ip = (
            f"198.18.{b}.10" if b < len(start) - 2 else carriers[b % len(carriers)]
        )  # the last two behind NAT
        now, end, q = float(t0), float(t0) + rng.uniform(15, 40) * 60_000, 0
        while now < end:
            request = f"xq{b}-{q}"
            slate = _slate(targets, 6, popular, 10, rng)
            for i in slate:
                t.add(_IMP, now, uid, i, request, device, ip, "bot_flood")
            clock = now + rng.uniform(150, 1500)
            for i in rng.permutation(slate[:6]):  # every target shown
                t.add(_CLICK, clock, uid, int(i), request, device, ip, "bot_flood")
                clock += rng.uniform(200, 900)
            now, q = clock + rng.uniform(300, 1500), q + 1


def _click_farms(t: Traffic, start: np.ndarray, targets: np.ndarray, popular: np.ndarray, activity: pd.DataFrame,
                 scale: float, rng: np.random.Generator) -> None:  # fmt: skip
    """``activity``: first and last rating time (ms) per real user, to pick accounts dormant during a farm."""
    taken: set[int] = set()
    for f, (accounts, devices, ips) in enumerate(FARMS):
        farm_targets = rng.choice(targets, 10, replace=False)
        n = max(2 * devices, round(accounts * scale))
        lo, hi = float(start[f]) - 86_400_000, float(start[f]) + 5 * 86_400_000  # the farm's days and blocks
        dormant = activity.index[
            ((activity["last"] < lo) | (activity["first"] > hi)) & ~activity.index.isin(taken)
        ]
        hijacked = rng.choice(
            dormant.to_numpy(np.int64), min(len(dormant), round(n * HIJACKED_SHARE)), replace=False
        )
        taken.update(int(u) for u in hijacked)
        users = np.concatenate([hijacked, 91_000 + 1000 * f + np.arange(n - len(hijacked))])
        for day in range(3):
            queues = np.array_split(rng.permutation(users), devices)
            for d, queue in enumerate(queues):
                device, ip = f"dev-f{f}-{d}", f"198.51.{f}.{d % ips + 1}"
                now = float(start[f]) + day * 86_400_000 + rng.uniform(0, 600_000)
                for k, uid in enumerate(queue):
                    request = f"fq{f}-{day}-{d}-{k}"
                    slate = _slate(farm_targets, 5, popular, 12, rng)
                    for i in slate:
                        t.add(_IMP, now, int(uid), i, request, device, ip, "click_farm")
                    clock = now
                    for i in rng.permutation(slate[:5]):  # every target shown
                        clock += rng.lognormal(np.log(4000), 0.5)
                        t.add(_CLICK, clock, int(uid), int(i), request, device, ip, "click_farm")
                    now = clock + rng.uniform(20_000, 90_000)


def _replays(t: Traffic, train_clicks: np.ndarray, n: int, rng: np.random.Generator) -> None:
    for k, row in enumerate(rng.choice(train_clicks, min(n, len(train_clicks)), replace=False)):
        for j in range(int(rng.integers(1, 4))):
            lag = float(np.clip(rng.lognormal(np.log(600_000), 1.2), 2_000, 12 * 3_600_000))
            original = (
                t.kind[row],
                t.ts[row],
                t.user[row],
                t.item[row],
                t.request[row],
                t.device[row],
                t.ip[row],
            )
            kind, ts, user, item, request, device, ip = original
            if rng.random() < 0.5:  # byte-identical: same id and time, arriving late
                t.add(kind, ts, user, item, request, device, ip, "replay", t.event_id[row], ts + lag)
            else:
                t.add(kind, ts + lag, user, item, request, device, ip, "replay", f"rp{k}-{j}")


def _impressionless(t: Traffic, start: np.ndarray, targets: np.ndarray, popular: np.ndarray,
                    rng: np.random.Generator) -> None:  # fmt: skip
    for a in range(len(start) // 2):
        uid, device, ip = 95_000 + a, f"dev-z{a}", f"192.0.2.{a % 5 + 1}"
        for burst in range(2):
            now = float(start[2 * a + burst])
            for n in range(int(rng.integers(30, 81))):
                item = int(rng.choice(targets)) if rng.random() < 0.7 else int(rng.choice(popular))
                request = None if rng.random() < 0.5 else f"zq{a}-{burst}-{n}"
                t.add(_CLICK, now, uid, item, request, device, ip, "impressionless")
                now += rng.uniform(15_000, 90_000)


# -- judging and metrics --------------------------------------------------------------------------------------
def _judge(t: Traffic, guard: FraudGuard, progress: Progress) -> list[FraudVerdict]:
    order = sorted(range(len(t)), key=lambda i: (t.arrival[i], t.kind[i], i))
    verdicts: list[FraudVerdict | None] = [None] * len(t)
    started = time.perf_counter()
    for lo in range(0, len(order), JUDGE_BATCH):
        batch = order[lo : lo + JUDGE_BATCH]
        for i, v in zip(batch, guard.judge_many([t.event(i) for i in batch]), strict=True):
            verdicts[i] = v
        if (lo // JUDGE_BATCH) % 100 == 99:
            progress(f"judged {lo + len(batch):,} / {len(t):,} events ({time.perf_counter() - started:.0f}s)")
    return [v for v in verdicts if v is not None]


def _metrics(t: Traffic, verdicts: list[FraudVerdict]) -> dict[str, Any]:
    label = np.array(t.label)
    caught = np.array([v.action != FraudAction.ALLOW for v in verdicts])
    rules = [{reason_rule(r) for r in v.reasons} for v in verdicts]
    normal = label == NORMAL
    normal_caught = np.flatnonzero(normal & caught)
    attacks: dict[str, dict[str, Any]] = {}
    for name in ATTACKS:
        mine = label == name
        tp = int((mine & caught).sum())
        fp = sum(1 for i in normal_caught if rules[i] & (AIMED[name] | GENERIC))
        attacks[name] = {"precision": round(tp / max(1, tp + fp), 4), "recall": round(tp / max(1, int(mine.sum())), 4),
                         "events": int(mine.sum()), "caught": tp, "normal_caught_by_its_rules": fp}  # fmt: skip
    attack_caught = int((~normal & caught).sum())
    return {
        "attacks": attacks,
        "fpr_normal": round(len(normal_caught) / max(1, int(normal.sum())), 5),
        "precision_overall": round(attack_caught / max(1, attack_caught + len(normal_caught)), 4),
        "normal_events": int(normal.sum()),
        "normal_caught": len(normal_caught),
        "normal_caught_reasons": dict(
            Counter(r.value for i in normal_caught for r in rules[i]).most_common()
        ),
        "blocked": int(sum(v.action == FraudAction.BLOCK for v in verdicts)),
    }


# -- CTR model on attacked data -------------------------------------------------------------------------------
def _attack_rows(t: Traffic, allowed: np.ndarray, frame: pd.DataFrame,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Training rows of the attack events (clicks positive, unclicked impressions negative) and whether the
    guard allowed each one's event."""
    clicked = {
        (t.request[i], t.item[i]) for i in range(len(t)) if t.kind[i] == _CLICK and t.label[i] != NORMAL
    }
    item_cols = frame.drop_duplicates("item_id").set_index("item_id")[["genres", "release_year"]]
    by_pair = frame.set_index(["user_id", "item_id"])
    profiles = frame.drop_duplicates("user_id").set_index("user_id")[
        ["gender", "age_bucket", "occupation", "zip_prefix"]
    ]
    fake: dict[int, dict[str, Any]] = {}
    records, keep = [], []
    for i in range(len(t)):
        if t.label[i] == NORMAL or (t.kind[i] == _IMP and (t.request[i], t.item[i]) in clicked):
            continue
        if t.label[i] == "replay" and (t.user[i], t.item[i]) in by_pair.index:  # a victim's own row, again
            row = by_pair.loc[(t.user[i], t.item[i])].to_dict()
            row.update(user_id=t.user[i], item_id=t.item[i])
        else:
            if t.user[i] not in fake:  # a taken-over account keeps its owner's profile
                owner = profiles.index.get_loc(t.user[i]) if t.user[i] in profiles.index else None
                fake[t.user[i]] = profiles.iloc[
                    int(rng.integers(len(profiles))) if owner is None else owner
                ].to_dict()
            row = {"user_id": t.user[i], "item_id": t.item[i], "rating": np.nan, **fake[t.user[i]]}
            if t.item[i] in item_cols.index:
                row.update(item_cols.loc[t.item[i]].to_dict())
            else:
                row.update(genres=[], release_year=0)
        row["click"] = np.float32(t.kind[i] == _CLICK)
        row["like"] = np.float32(0)
        records.append(row)
        keep.append(bool(allowed[i]))
    return pd.DataFrame.from_records(records), np.array(keep, dtype=bool)


def _train_auc(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, epochs: int, seeds: int,
               progress: Progress, name: str) -> list[float]:  # fmt: skip
    """Test AUC of Wide&Deep trained ``epochs`` epochs on ``train`` (best validation epoch kept), once per
    seed 1..``seeds``: one training's noise (~0.001) is the size of the effects measured."""
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)
    tr, va, te = enc.transform(train), enc.transform(val), enc.transform(test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread contention on a busy machine
    scores = []
    try:
        for seed in range(1, seeds + 1):
            torch.manual_seed(seed)
            model = WideDeep(enc)
            train_ctr(model, tr, {"click": train["click"].to_numpy()}, va, {"click": val["click"].to_numpy()},
                      TrainConfig(epochs=epochs, patience=epochs, batch_size=BATCH, seed=seed))  # fmt: skip
            scores.append(round(auc(test["click"].to_numpy(), predict(model, te)["click"]), 4))
            progress(f"{name}: seed {seed}: test AUC {scores[-1]:.4f}")
    finally:
        torch.set_num_threads(threads)
    return scores


# -- the bench ------------------------------------------------------------------------------------------------
def run_fraud_bench(data: Path, redis_url: str, seed: int = 42, progress: Progress = no_progress, epochs: int = 3,
                    auc_seeds: int = 3, max_user: int | None = None, attack_scale: float = 1.0,
                    settings: FraudSettings | None = None) -> dict[str, Any]:  # fmt: skip
    """Replay ml-100k with labelled attacks through ``FraudGuard`` on the Redis at ``redis_url`` (under a fresh
    key prefix, deleted afterwards) and train Wide&Deep on clean / attacked / filtered data.

    ``max_user`` keeps the users with ids up to it and ``attack_scale`` scales the number of attacking
    accounts (a quick run); ``epochs`` and ``auc_seeds`` (trainings averaged) are the same for the three
    training sets. Returns ``{"attacks": {name: {"precision", "recall", ...}}, "fpr_normal", "auc": {"clean",
    "attacked_filtered", "attacked_unfiltered"}, ...}`` (definitions in the module docstring).
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    data = Path(data)
    ratings = pd.read_csv(
        data / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"]
    )
    frame = load_ratings(data)
    if max_user is not None:
        ratings = ratings[ratings["user_id"] <= max_user]
        frame = frame[frame["user_id"] <= max_user].reset_index(drop=True)
    train, val, test = split(frame)  # the protocol's split (seed 42); ``seed`` drives the simulation

    # 1. traffic: ml-100k replayed, then the attacks
    t = Traffic()
    rows = _normal_traffic(ratings, rng, t)
    n_normal = len(t)
    counts = frame.groupby("item_id")["click"].agg(["size", "mean"])
    candidates = counts[counts["size"] >= min(30, counts["size"].quantile(0.9))]
    weak = candidates.nsmallest(max(10, len(candidates) // 4), "mean").index.to_numpy(np.int64)
    targets = rng.choice(weak, min(40, len(weak)), replace=False)
    popular = ratings["item_id"].value_counts().index[:300].to_numpy(np.int64)
    t_lo, t_hi = (
        int(ratings["ts"].min()) * 1000 + 86_400_000,
        int(ratings["ts"].max()) * 1000 - 4 * 86_400_000,
    )
    span = lambda n: np.sort(rng.uniform(t_lo, t_hi, n))  # noqa: E731
    carriers = sorted({t.ip[i] for i in range(n_normal) if t.ip[i].startswith("172.20.")}) or ["172.20.0.1"]
    _bot_floods(t, span(max(2, round(8 * attack_scale))), targets, popular, carriers, rng)
    activity = (ratings.groupby("user_id")["ts"].agg(["min", "max"]) * 1000).set_axis(
        ["first", "last"], axis=1
    )
    _click_farms(t, span(len(FARMS)), targets, popular, activity, attack_scale, rng)
    train_pairs = set(zip(train["user_id"], train["item_id"], strict=True))
    train_clicks = np.array([r[1] for p, r in rows.items() if len(r) > 1 and p in train_pairs])
    _replays(t, train_clicks, max(10, round(300 * attack_scale)), rng)
    _impressionless(t, span(2 * max(2, round(20 * attack_scale))), targets, popular, rng)
    gen_s = time.perf_counter() - started
    progress(f"{n_normal:,} normal events and {len(t) - n_normal:,} attack events in {gen_s:.1f}s")

    # 2. every event judged by the guard, in arrival order
    client = redis.Redis.from_url(redis_url)
    keys = RedisKey(f"bench-fraud-{uuid.uuid4().hex[:8]}")
    try:
        t0 = time.perf_counter()
        verdicts = _judge(t, FraudGuard(client, keys, settings or FraudSettings()), progress)
        judge_s = time.perf_counter() - t0
    finally:
        for chunk in _chunks(client.scan_iter(match=f"{keys.prefix}:*", count=10_000), 10_000):
            client.unlink(*chunk)
        client.close()
    out = _metrics(t, verdicts)
    progress(f"judged {len(t):,} events in {judge_s:.1f}s: fpr_normal {out['fpr_normal']:.5f}, "
             + ", ".join(f"{k} p {v['precision']:.3f} r {v['recall']:.3f}" for k, v in out["attacks"].items()))  # fmt: skip

    # 3. the CTR model on clean, attacked and filtered training data
    allowed = np.array([v.action == FraudAction.ALLOW for v in verdicts])
    attack, attack_kept = _attack_rows(t, allowed, frame, rng)
    caught_pairs = {p for p, r in rows.items() if not allowed[r].all()}
    clean_kept = np.array(
        [p not in caught_pairs for p in zip(train["user_id"], train["item_id"], strict=True)]
    )
    attacked = pd.concat([train, attack], ignore_index=True)
    filtered = pd.concat([train[clean_kept], attack[attack_kept]], ignore_index=True)
    progress(f"training rows: clean {len(train):,}, attacked {len(attacked):,} ({int(attack['click'].sum()):,} "
             f"attack clicks), filtered {len(filtered):,}")  # fmt: skip
    sets = {"clean": train, "attacked_filtered": filtered, "attacked_unfiltered": attacked}
    per_seed = {
        name: _train_auc(rows_, val, test, epochs, auc_seeds, progress, name) for name, rows_ in sets.items()
    }
    out["auc"] = {name: round(float(np.mean(s)), 4) for name, s in per_seed.items()}
    out["auc_per_seed"] = per_seed
    out.update(
        events=len(t), attack_events=len(t) - n_normal, judge_s=round(judge_s, 1),
        events_per_s=round(len(t) / judge_s), train_rows={name: len(rows_) for name, rows_ in sets.items()},
        epochs=epochs, auc_seeds=auc_seeds, seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip
    return out


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
