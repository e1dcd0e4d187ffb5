"""Seeded synthetic event generator, 10^4 to 10^8 events, written day by day into the lake.

The world it simulates:

* **users** with demographics (age, gender, occupation, zip, city, preferred device) and a power-law
  activity level (log-normal, sigma 1.2). Each user's genre affinity is drawn from a Dirichlet centred on
  their demographic segment's genre profile, so demographics predict taste;
* **items** with a primary genre (and up to two more), a Zipf popularity weight (exponent 1.0 over a random
  rank), a latent quality, a release date, title tokens and tags;
* **traffic**: each day has a weekday factor; sessions start following a diurnal curve (trough at 04:00,
  peak at 20:00-21:00 UTC), hold a geometric number of requests (mean 3) ~90 s apart;
* **requests** show a slate of ``slate_size`` items, each picked by drawing a genre from the user's affinity
  and then an item of that genre by popularity; a slate shows an item at most once;
* **feedback**: click probability = sigmoid(base + 1.2 * log-affinity + 0.8 * quality - 0.08 * slot), clicks
  follow the impression after a log-normal delay (median ~8 s); 30% of clicks get a 1-5 rating driven by
  quality and affinity, ~60 s later.

All randomness flows from ``numpy.random.default_rng((seed, day))``, so a day's events depend only on the seed
and the world, never on how many days were generated before.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from recstack.features.keys import Col
from recstack.features.schema import EVENT_RULES, EVENT_SCHEMA, EventType, validate_table
from recstack.offline.ingest import IngestReport, Progress, no_progress
from recstack.offline.lake import EventLake

GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
OCCUPATIONS = [
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
]  # fmt: skip
DEVICES = ["ios", "android", "web"]
PAGES = ["home", "detail", "search"]
VARIANTS = ["control", "treatment"]
AGE_EDGES = [18, 25, 35, 45, 56]
# Relative traffic per UTC hour: trough at 04:00, evening peak.
DIURNAL = np.array(
    [0.9, 0.6, 0.4, 0.3, 0.25, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1, 1.0, 1.0, 1.1, 1.3, 1.6, 1.9, 2.1, 2.1,
     1.8, 1.3]
)  # fmt: skip
WEEKDAY = np.array([0.95, 0.95, 0.97, 1.0, 1.05, 1.15, 1.1])
CLICK_RATE_PER_IMP = 0.08
RATE_SHARE = 0.3
START = dt.date(2026, 1, 1)


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the synthetic world. Zero sizes are derived from ``events``."""

    events: int = 200_000
    seed: int = 42
    users: int = 0
    items: int = 0
    days: int = 0
    slate_size: int = 10
    start: dt.date = START

    def resolved(self) -> SyntheticConfig:
        if not 1_000 <= self.events <= 10**9:
            raise ValueError(f"events must be between 1e3 and 1e9, got {self.events}")
        users = self.users or int(np.clip(self.events // 200, 100, 5_000_000))
        items = self.items or int(np.clip(self.events // 1_000, 50, 1_000_000))
        days = self.days or int(np.clip(math.ceil(self.events / 1_500_000), 7, 60))
        return SyntheticConfig(self.events, self.seed, users, items, days, self.slate_size, self.start)


@dataclass
class SyntheticWorld:
    """The users and items of one seed, with the hidden variables that drive behaviour."""

    users: pd.DataFrame
    items: pd.DataFrame
    activity_cum: np.ndarray  # (U,) cumulative user activity, for sampling request users
    affinity: np.ndarray  # (U, G) float32, rows sum to 1
    affinity_cum: np.ndarray  # (U, G) cumulative affinity
    item_genre: np.ndarray  # (I,) primary genre index
    quality: np.ndarray  # (I,)
    genre_items: np.ndarray  # item indices grouped by primary genre
    genre_cum: np.ndarray  # genre index + within-genre cumulative popularity share, aligned with genre_items
    user_device: np.ndarray  # (U,) preferred device index
    user_city: np.ndarray  # (U,) city index


def build_world(cfg: SyntheticConfig) -> SyntheticWorld:
    """Draw users and items for ``cfg`` (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng((cfg.seed, 0xC0FFEE))
    n_u, n_i, n_g = cfg.users, cfg.items, len(GENRES)

    # Users: demographics, segment-shaped taste, heavy-tailed activity.
    age = np.clip(rng.normal(33, 12, n_u), 13, 75).astype(np.int16)
    gender = rng.choice(np.array(["M", "F"]), n_u, p=[0.55, 0.45])
    segment = np.digitize(age, AGE_EDGES) * 2 + (gender == "F")
    seg_profile = rng.dirichlet(np.full(n_g, 0.6), size=segment.max() + 1)
    affinity = rng.gamma(4.0 * seg_profile[segment] + 0.05).astype(np.float32)
    affinity /= affinity.sum(axis=1, keepdims=True)
    n_city = 50
    city_p = 1.0 / np.arange(1, n_city + 1)
    user_city = rng.choice(n_city, n_u, p=city_p / city_p.sum())
    user_device = rng.choice(len(DEVICES), n_u, p=[0.45, 0.4, 0.15])
    occupation = rng.choice(np.array(OCCUPATIONS), n_u)
    zip_code = pd.Series(rng.integers(10_000, 99_999, n_u)).astype(str).to_numpy()
    activity = rng.lognormal(0.0, 1.2, n_u)
    users = pd.DataFrame(
        {
            Col.USER_ID: np.arange(1, n_u + 1, dtype=np.int64),
            Col.AGE: age,
            Col.GENDER: gender,
            Col.OCCUPATION: occupation,
            Col.ZIP_CODE: zip_code,
            Col.CITY: np.array([f"city-{c:02d}" for c in range(n_city)])[user_city],
        }
    )

    # Items: genre, Zipf popularity, quality loosely tied to popularity, metadata.
    genre_p = rng.dirichlet(np.full(n_g, 2.0))
    item_genre = rng.choice(n_g, n_i, p=genre_p)
    pop_rank = rng.permutation(n_i)
    popularity = 1.0 / (pop_rank + 10.0)
    quality = (0.5 * rng.normal(size=n_i) - 0.3 * np.log1p(pop_rank) / np.log(n_i + 1) * 2).astype(np.float32)
    second = rng.integers(0, n_g, (n_i, 2))
    has_second = rng.random((n_i, 2)) < np.array([0.5, 0.2])
    vocab = np.array([f"w{k:03d}" for k in range(400)])
    words = rng.integers(0, len(vocab), (n_i, 3))
    release = pd.to_datetime(cfg.start) - pd.to_timedelta(rng.integers(0, 20 * 365, n_i), unit="D")
    genre_names = np.array(GENRES)
    items = pd.DataFrame(
        {
            Col.ITEM_ID: np.arange(1, n_i + 1, dtype=np.int64),
            Col.TITLE: [" ".join(vocab[w]) for w in words],
            Col.RELEASE_DATE: release.date,
            Col.GENRES: [
                list(dict.fromkeys([genre_names[g], *genre_names[s[h]]]))
                for g, s, h in zip(item_genre, second, has_second, strict=True)
            ],
            Col.TAGS: [
                [f"{genre_names[g].lower()}-{vocab[w[0]]}"] for g, w in zip(item_genre, words, strict=True)
            ],
        }
    )

    # Sampling tables: items grouped by genre with cumulative popularity shares offset by the genre index.
    order = np.lexsort((pop_rank, item_genre))
    g_sorted = item_genre[order]
    w_sorted = popularity[order]
    genre_total = np.bincount(g_sorted, weights=w_sorted, minlength=n_g)
    within = np.cumsum(w_sorted) - np.concatenate([[0.0], np.cumsum(genre_total)])[g_sorted]
    genre_cum = g_sorted + within / np.where(genre_total[g_sorted] > 0, genre_total[g_sorted], 1.0)
    # An empty genre cannot be drawn: fold its affinity into the user's other genres.
    present = genre_total > 0
    affinity = affinity * present[None, :]
    affinity /= affinity.sum(axis=1, keepdims=True)
    return SyntheticWorld(
        users=users,
        items=items,
        activity_cum=np.cumsum(activity) / activity.sum(),
        affinity=affinity,
        affinity_cum=np.cumsum(affinity, axis=1),
        item_genre=item_genre,
        quality=quality,
        genre_items=order,
        genre_cum=genre_cum,
        user_device=user_device,
        user_city=user_city,
    )


def _events_per_request(slate: int) -> float:
    return slate * (1 + CLICK_RATE_PER_IMP * (1 + RATE_SHARE))


def generate_day(world: SyntheticWorld, cfg: SyntheticConfig, day: int) -> pa.Table:
    """Events of day ``day`` (0-based) as an ``EVENT_SCHEMA`` table, sorted by time."""
    rng = np.random.default_rng((cfg.seed, day))
    date = cfg.start + dt.timedelta(days=day)
    weekday_w = WEEKDAY[[(cfg.start + dt.timedelta(days=d)).weekday() for d in range(cfg.days)]]
    n_req = int(round(cfg.events / _events_per_request(cfg.slate_size) * weekday_w[day] / weekday_w.sum()))
    n_u, s = len(world.users), cfg.slate_size

    # Sessions: user by activity, start by the diurnal curve, a geometric number of requests ~90 s apart.
    n_sess = max(1, n_req // 3)
    sess_user = np.minimum(np.searchsorted(world.activity_cum, rng.random(n_sess)), n_u - 1)
    hour = rng.choice(24, n_sess, p=DIURNAL / DIURNAL.sum())
    sess_start = (hour * 3600 + rng.integers(0, 3600, n_sess)).astype(np.int64) * 1000
    sess_len = rng.geometric(1 / 3, n_sess)
    req_sess = np.repeat(np.arange(n_sess), sess_len)
    first = np.repeat(np.cumsum(sess_len) - sess_len, sess_len)
    step = (rng.exponential(90_000, len(req_sess))).astype(np.int64)
    step[np.arange(len(req_sess)) == first] = 0
    offset = np.cumsum(step) - np.repeat(np.cumsum(step)[np.cumsum(sess_len) - sess_len], sess_len)
    day_ms = int(dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    req_ts = day_ms + sess_start[req_sess] + offset
    req_user = sess_user[req_sess]
    order = np.argsort(req_ts, kind="stable")
    req_ts, req_user = req_ts[order], req_user[order]
    n_req = len(req_ts)

    # Slates: genre from the user's affinity, then an item of that genre by popularity. Draw 1.5x the slate,
    # drop repeats within a request, keep the first ``s`` distinct items.
    m = s + s // 2 + 2
    imp_req = np.repeat(np.arange(n_req), m)
    cum = world.affinity_cum[req_user[imp_req]]
    genre = np.minimum((rng.random(len(imp_req))[:, None] > cum).sum(axis=1), cum.shape[1] - 1)
    pos = np.searchsorted(world.genre_cum, genre + rng.random(len(imp_req)) * 0.999999, side="right")
    imp_item_idx = world.genre_items[np.minimum(pos, len(world.genre_items) - 1)]
    key = imp_req.astype(np.int64) * len(world.items) + imp_item_idx
    _, first_idx = np.unique(key, return_index=True)
    first_idx.sort()
    req_of = imp_req[first_idx]
    rank_in_req = np.arange(len(first_idx)) - np.searchsorted(req_of, req_of, side="left")
    kept = first_idx[rank_in_req < s]
    imp_req, imp_item_idx = imp_req[kept], imp_item_idx[kept]
    imp_slot = rank_in_req[rank_in_req < s]
    imp_user = req_user[imp_req]

    # Feedback.
    aff = world.affinity[imp_user, world.item_genre[imp_item_idx]] * world.affinity.shape[1]
    logit = -3.2 + 1.2 * np.log(aff + 1e-3) + 0.8 * world.quality[imp_item_idx] - 0.08 * imp_slot
    clicked = rng.random(len(logit)) < 1 / (1 + np.exp(-logit))
    c_idx = np.flatnonzero(clicked)
    click_ts = (
        req_ts[imp_req[c_idx]] + np.minimum(rng.lognormal(8.0, 1.0, len(c_idx)), 600_000).astype(np.int64) + 1
    )
    rated = rng.random(len(c_idx)) < RATE_SHARE
    r_idx = c_idx[rated]
    score = (
        3.2
        + 0.8 * world.quality[imp_item_idx[r_idx]]
        + 0.5 * np.log(aff[r_idx] + 1e-3)
        + rng.normal(0, 0.8, len(r_idx))
    )
    rating = np.clip(np.rint(score), 1, 5).astype(np.float32)
    rate_ts = click_ts[rated] + rng.integers(20_000, 120_000, len(r_idx))

    # Request context.
    req_page = rng.choice(len(PAGES), n_req, p=[0.7, 0.2, 0.1])
    other_dev = rng.integers(0, len(DEVICES), n_req)
    req_dev = np.where(rng.random(n_req) < 0.8, world.user_device[req_user], other_dev)

    n_imp, n_clk, n_rate = len(imp_req), len(c_idx), len(r_idx)
    ev_req = np.concatenate([imp_req, imp_req[c_idx], imp_req[r_idx]])
    ev_item_idx = np.concatenate([imp_item_idx, imp_item_idx[c_idx], imp_item_idx[r_idx]])
    ev_ts = np.concatenate([req_ts[imp_req], click_ts, rate_ts])
    ev_slot = np.concatenate([imp_slot, imp_slot[c_idx], imp_slot[r_idx]]).astype(np.int16)
    ev_type = np.concatenate([np.zeros(n_imp, np.int8), np.ones(n_clk, np.int8), np.full(n_rate, 2, np.int8)])
    ev_value = np.concatenate([np.full(n_imp + n_clk, np.nan, np.float32), rating])
    ev_label = np.concatenate(
        [np.full(n_imp + n_clk, -1, np.int8), (rating >= EVENT_RULES.positive_rating).astype(np.int8)]
    )
    ord_ev = np.argsort(ev_ts, kind="stable")
    ev_req, ev_item_idx, ev_ts, ev_slot = ev_req[ord_ev], ev_item_idx[ord_ev], ev_ts[ord_ev], ev_slot[ord_ev]
    ev_type, ev_value, ev_label = ev_type[ord_ev], ev_value[ord_ev], ev_label[ord_ev]
    ev_user = req_user[ev_req]
    n = len(ev_ts)

    prefix = f"s{cfg.seed}:{date.isoformat()}"
    req_ids = pc.binary_join_element_wise(prefix, pc.cast(pa.array(ev_req), pa.string()), ":q")
    type_names = pa.array([EventType.IMPRESSION.value, EventType.CLICK.value, EventType.RATING.value])
    uid = ev_user.astype(np.int64) + 1
    ip = pc.binary_join_element_wise(
        "10", *[pc.cast(pa.array((uid >> sh) & 255), pa.string()) for sh in (16, 8, 0)], "."
    )
    table = pa.table(
        {
            Col.EVENT_ID: pc.binary_join_element_wise(
                prefix, pc.cast(pa.array(np.arange(n)), pa.string()), ":e"
            ),
            Col.EVENT_TYPE: type_names.take(pa.array(ev_type)),
            Col.TS: pa.array(ev_ts, pa.int64()).cast(pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
            Col.USER_ID: pa.array(uid),
            Col.ITEM_ID: pa.array(ev_item_idx.astype(np.int64) + 1),
            Col.REQUEST_ID: req_ids,
            Col.VALUE: pa.array(ev_value, mask=np.isnan(ev_value)),
            Col.LABEL: pa.array(ev_label, mask=ev_label < 0),
            Col.PAGE: pa.array(PAGES).take(pa.array(req_page[ev_req])),
            Col.SLOT: pa.array(ev_slot),
            Col.DEVICE: pa.array(DEVICES).take(pa.array(req_dev[ev_req])),
            Col.CITY: pa.array(world.users[Col.CITY].to_numpy()).take(pa.array(ev_user)),
            Col.VARIANT: pa.array(VARIANTS).take(pa.array((uid * 2654435761 >> 7) % 2)),
            Col.DEVICE_ID: pc.binary_join_element_wise("dev", pc.cast(pa.array(uid), pa.string()), "-"),
            Col.IP: ip,
        }
    )
    return table.cast(EVENT_SCHEMA)


def ingest_synthetic(cfg: SyntheticConfig, lake: EventLake, progress: Progress = no_progress) -> IngestReport:
    """Generate ``cfg`` into ``lake`` (profiles, then one day at a time); returns the report."""
    cfg = cfg.resolved()
    report = IngestReport(source=f"synthetic(seed={cfg.seed})", format="synthetic")
    progress(
        f"synthetic world: {cfg.users:,} users, {cfg.items:,} items, {cfg.days} days, ~{cfg.events:,} events"
    )
    world = build_world(cfg)
    lake.write_users(world.users)
    lake.write_items(world.items)
    report.users, report.items = len(world.users), len(world.items)
    with lake.stage() as stage:
        for day in range(cfg.days):
            table = generate_day(world, cfg, day)
            report.records_read += table.num_rows
            result = validate_table(table, report.source)
            report.quarantined.update(result.reasons)
            lake.write_quarantine(result.quarantined, report.source, stage.run_id)
            stage.write(result.valid)
            progress(f"day {day + 1}/{cfg.days}: {stage.rows:,} events")
        report.events_written = stage.rows
        report.partitions = stage.commit()
    progress(report.summary())
    return report
