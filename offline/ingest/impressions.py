"""Reproducible simulation of the request around each logged rating.

A rating log records only what a user consumed. CTR samples also need what was shown and *not* consumed, so
each rating (user u, item i, time t, rating r) becomes one simulated request ``ml:q:u:i:t``:

* a slate of ``S`` impressions at ``t - 10 s``: item ``i`` at a uniformly random slot, and ``S - 1`` other
  items. Those are drawn in proportion to item popularity (total ratings), among items already in the log at
  ``t`` (first rating at or before ``t``), never an item ``u`` rated at any time, never twice in one slate
  (rejection sampling, 8 rounds; a slot still colliding after that is left out of the slate);
* a click on ``i`` at ``t`` (consumption), and the rating event itself at ``t`` with ``label = r >= 4``.

Randomness comes from ``numpy.random.default_rng((seed, chunk))`` over the log sorted by (t, u, i) and cut
into fixed-size chunks, so the same input and seed always give the same events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from recstack.features.keys import Col
from recstack.features.schema import EVENT_RULES, EVENT_SCHEMA, EventType

IMPRESSION_LEAD_S = 10
CHUNK = 500_000
_REJECTION_ROUNDS = 8


@dataclass
class RatingLog:
    """Valid ratings as parallel arrays, sorted by (ts, user, item)."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    ts: np.ndarray  # int64 unix seconds
    rating: np.ndarray  # float32

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RatingLog:
        f = frame.sort_values(["ts", "user", "item"], kind="stable")
        return cls(
            user=f["user"].to_numpy(np.int64),
            item=f["item"].to_numpy(np.int64),
            ts=f["ts"].to_numpy(np.int64),
            rating=f["rating"].to_numpy(np.float32),
        )


class _NegativeSampler:
    """Draws popularity-weighted items that existed at time t and that the user never rated."""

    def __init__(self, log: RatingLog) -> None:
        items, first_idx, counts = np.unique(log.item, return_index=True, return_counts=True)
        first_ts = log.ts[first_idx]  # log is sorted by ts, so the first occurrence is the first rating
        order = np.argsort(first_ts, kind="stable")
        self.items = items[order]
        self.first_ts = first_ts[order]
        self.cum = np.cumsum(counts[order]).astype(np.float64)
        self.stride = np.int64(log.item.max() + 1)
        self.pairs = np.unique(log.user * self.stride + log.item)

    def rated(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        key = user * self.stride + item
        pos = np.searchsorted(self.pairs, key)
        pos = np.minimum(pos, len(self.pairs) - 1)
        return self.pairs[pos] == key

    def draw(self, rng: np.random.Generator, ts: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.first_ts, ts, side="right")  # items known at ts: a prefix, k >= 1
        total = self.cum[np.maximum(k, 1) - 1]
        idx = np.searchsorted(self.cum, rng.random(len(ts)) * total, side="right")
        return self.items[np.minimum(idx, len(self.items) - 1)]


def _str(arr: np.ndarray | pa.Array) -> pa.Array:
    return pc.cast(pa.array(arr), pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, ":")


def expand_ratings(log: RatingLog, slate_size: int, seed: int, tag: str) -> Iterator[pa.Table]:
    """Yield the simulated events (``EVENT_SCHEMA`` tables), one table per chunk of the log."""
    sampler = _NegativeSampler(log)
    n_neg = slate_size - 1
    for chunk_no, start in enumerate(range(0, len(log.user), CHUNK)):
        sl = slice(start, start + CHUNK)
        u, i, t, r = log.user[sl], log.item[sl], log.ts[sl], log.rating[sl]
        n = len(u)
        rng = np.random.default_rng((seed, chunk_no))
        consumed_slot = rng.integers(0, slate_size, n)
        negs = np.empty((n, n_neg), dtype=np.int64)
        ok = np.ones((n, n_neg), dtype=bool)
        for j in range(n_neg):
            cand = sampler.draw(rng, t)
            for _ in range(_REJECTION_ROUNDS):
                bad = sampler.rated(u, cand) | (negs[:, :j] == cand[:, None]).any(axis=1)
                if not bad.any():
                    break
                cand[bad] = sampler.draw(rng, t[bad])
            negs[:, j] = cand
            ok[:, j] = ~(sampler.rated(u, cand) | (negs[:, :j] == cand[:, None]).any(axis=1))
        neg_slot = np.arange(n_neg)[None, :] + (np.arange(n_neg)[None, :] >= consumed_slot[:, None])

        request = _join(tag, "q", _str(u), _str(i), _str(t))
        ms = t * 1000
        imp_ts = ms - IMPRESSION_LEAD_S * 1000
        row_u = np.concatenate([u, np.repeat(u, n_neg)[ok.ravel()], u, u])
        row_i = np.concatenate([i, negs.ravel()[ok.ravel()], i, i])
        row_slot = np.concatenate([consumed_slot, neg_slot.ravel()[ok.ravel()], np.full(2 * n, -1)])
        row_ts = np.concatenate([imp_ts, np.repeat(imp_ts, n_neg)[ok.ravel()], ms, ms])
        req_idx = np.concatenate(
            [np.arange(n), np.repeat(np.arange(n), n_neg)[ok.ravel()], np.arange(n), np.arange(n)]
        )
        n_imp = n + int(ok.sum())
        kinds = np.concatenate(
            [np.full(n_imp, EventType.IMPRESSION.value, dtype=object),
             np.full(n, EventType.CLICK.value, dtype=object), np.full(n, EventType.RATING.value, dtype=object)]
        )  # fmt: skip
        req = request.take(pa.array(req_idx))
        suffix = pa.concat_arrays(
            [_join("imp", _str(row_slot[:n_imp])), pa.array(["click"] * n, pa.string()),
             pa.array(["rating"] * n, pa.string())]
        )  # fmt: skip
        value = np.concatenate([np.full(n_imp + n, np.nan, dtype=np.float32), r])
        label = np.concatenate(
            [np.full(n_imp + n, -1, dtype=np.int8), (r >= EVENT_RULES.positive_rating).astype(np.int8)]
        )
        slot_arr = pa.array(row_slot.astype(np.int16), mask=row_slot < 0)
        table = pa.table(
            {
                Col.EVENT_ID: _join(req, suffix),
                Col.EVENT_TYPE: pa.array(kinds, pa.string()),
                Col.TS: pa.array(row_ts, pa.int64())
                .cast(pa.timestamp("ms"))
                .cast(EVENT_SCHEMA.field(Col.TS).type),
                Col.USER_ID: pa.array(row_u, pa.int64()),
                Col.ITEM_ID: pa.array(row_i, pa.int64()),
                Col.REQUEST_ID: req,
                Col.VALUE: pa.array(value, mask=np.isnan(value)),
                Col.LABEL: pa.array(label, mask=label < 0),
                Col.PAGE: pa.array(["browse"] * len(row_u), pa.string()),
                Col.SLOT: slot_arr,
            }
        )
        for col in (Col.DEVICE, Col.CITY, Col.VARIANT, Col.DEVICE_ID, Col.IP):
            table = table.append_column(col, pa.nulls(len(row_u), pa.string()))
        yield table.select([f.name for f in EVENT_SCHEMA]).cast(EVENT_SCHEMA)
