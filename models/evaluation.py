"""Offline top-k evaluation shared by every recall model, and the splits it runs on.

Protocol: for every evaluated user, the model ranks the items the user has **not** interacted with in the
training data; relevance is binary (the user interacted with the item in the test data). Metrics at ``k`` are
averaged over all test users (a user with no recommendation scores 0):

* ``precision@k`` = hits / k; ``recall@k`` = hits / |relevant|; ``hit_rate@k`` = 1 if any hit;
* ``ndcg@k`` = DCG / ideal DCG with gains ``1 / log2(rank + 1)`` and the ideal list of ``min(k, |relevant|)``;
* ``map@k`` = sum of precision at each hit rank / ``min(k, |relevant|)``;
* ``coverage_items`` = distinct items over all lists, ``coverage`` = that / catalog size;
* ``popularity_bias`` = mean training popularity of recommended items / mean popularity of the catalog
  (1.0 = as popular as an average item; popularity ranking scores far above 1).

This is the protocol of ``../shared/data/ml-100k-split`` (Microsoft Recommenders' definitions of precision,
recall and nDCG), so the numbers compare with the reference ones given there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays of (user id, item id, timestamp in seconds, strength), one row per interaction."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Interactions:
        return cls(
            users=df["user_id"].to_numpy(np.int64), items=df["item_id"].to_numpy(np.int64),
            ts=df["ts"].to_numpy(np.int64), weight=df["weight"].to_numpy(np.float64),
        )  # fmt: skip

    def take(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.users[mask], self.items[mask], self.ts[mask], self.weight[mask])


def read_split_tsv(path: Path) -> Interactions:
    """A reference-split file: user, item, rating, unix time; tab-separated, no header."""
    try:
        df = pd.read_csv(path, sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"])
    except (OSError, pd.errors.ParserError) as exc:
        raise ValueError(f"cannot read split file {path}: {exc}") from exc
    if df.isna().any().any() or len(df) == 0:
        raise ValueError(f"{path}: empty or has missing values")
    df["weight"] = df["rating"] / 5.0
    return Interactions.from_frame(df)


def time_split(data: Interactions, test_fraction: float = 0.2) -> tuple[Interactions, Interactions]:
    """Global temporal split: the newest ``test_fraction`` of interactions are the test set; test rows whose
    user is absent from training are dropped (they are a cold-start problem, evaluated separately)."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    cut = np.quantile(data.ts, 1 - test_fraction)
    train, test = data.take(data.ts < cut), data.take(data.ts >= cut)
    return train, test.take(np.isin(test.users, np.unique(train.users)))


@dataclass(frozen=True)
class TopK:
    """Recommendations for ``users`` (U,): ``items`` (U, k) item ids, -1 where fewer than k were found."""

    users: np.ndarray
    items: np.ndarray


def topk_from_scores(
    score_fn: Callable[[np.ndarray], torch.Tensor], users: np.ndarray, user_rows: np.ndarray,
    item_ids: np.ndarray, seen: dict[int, np.ndarray], k: int, batch: int = 1024,
) -> TopK:  # fmt: skip
    """Top ``k`` item ids per user from a dense scorer ``score_fn(user_rows) -> (B, I)``, excluding each
    user's ``seen`` item rows. Users with row -1 (unknown to the model) get no recommendations."""
    out = np.full((len(users), k), -1, dtype=np.int64)
    known = np.nonzero(user_rows >= 0)[0]
    for lo in range(0, len(known), batch):
        pos = known[lo : lo + batch]
        scores = score_fn(user_rows[pos]).to(torch.float32).clone()
        for b, p in enumerate(pos):
            rows = seen.get(int(users[p]))
            if rows is not None and len(rows):
                scores[b, torch.as_tensor(rows)] = -torch.inf
        kk = min(k, scores.shape[1])
        vals, idx = torch.topk(scores, kk, dim=1)
        ids = item_ids[idx.numpy()]
        out[pos, :kk] = np.where(np.isfinite(vals.numpy()), ids, -1)
    return TopK(users=users, items=out)


def evaluate(
    recs: TopK, test: Interactions, train: Interactions, k: int = 10, catalog_size: int | None = None
) -> dict[str, float]:
    """Ranking metrics at ``k`` averaged over every user in ``test`` (see the module docs)."""
    test_users = np.unique(test.users)
    if len(test_users) == 0:
        raise ValueError("the test set is empty")
    relevant: dict[int, set[int]] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        relevant.setdefault(u, set()).add(i)
    row_of = {int(u): r for r, u in enumerate(recs.users.tolist())}
    items_pop = pd.Series(train.items).value_counts()
    catalog = catalog_size or len(np.union1d(np.unique(train.items), np.unique(test.items)))
    mean_pop = len(train) / catalog
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("precision", "recall", "ndcg", "map", "hit_rate"), 0.0)
    recommended: list[np.ndarray] = []
    for u in test_users.tolist():
        rel = relevant[u]
        r = row_of.get(u)
        lst = recs.items[r, :k] if r is not None else np.empty(0, np.int64)
        lst = lst[lst >= 0]
        recommended.append(lst)
        hits = np.fromiter((i in rel for i in lst.tolist()), dtype=bool, count=len(lst))
        n_hits = int(hits.sum())
        ideal = min(k, len(rel))
        sums["precision"] += n_hits / k
        sums["recall"] += n_hits / len(rel)
        sums["hit_rate"] += float(n_hits > 0)
        sums["ndcg"] += float(discounts[: len(lst)][hits].sum() / discounts[:ideal].sum())
        if n_hits:
            prec_at_hit = np.cumsum(hits)[hits] / (np.nonzero(hits)[0] + 1)
            sums["map"] += float(prec_at_hit.sum() / ideal)
    n = len(test_users)
    flat = np.concatenate(recommended) if recommended else np.empty(0, np.int64)
    pops = items_pop.reindex(flat).fillna(0).to_numpy()
    metrics = {f"{name}@{k}": value / n for name, value in sums.items()}
    metrics.update({
        "coverage_items": float(len(np.unique(flat))),
        "coverage": len(np.unique(flat)) / catalog,
        "popularity_bias": float(pops.mean() / mean_pop) if len(pops) else 0.0,
        "users": float(n),
    })  # fmt: skip
    return metrics


def popularity_topk(train: Interactions, users: np.ndarray, k: int) -> TopK:
    """The bare baseline: the most-interacted training items the user has not seen."""
    order = pd.Series(train.items).value_counts().index.to_numpy(np.int64)
    seen = pd.DataFrame({"u": train.users, "i": train.items}).groupby("u")["i"].apply(set).to_dict()
    out = np.full((len(users), k), -1, dtype=np.int64)
    for r, u in enumerate(users.tolist()):
        s = seen.get(u, set())
        picked = [i for i in order[: k + len(s)].tolist() if i not in s][:k]
        out[r, : len(picked)] = picked
    return TopK(users=users, items=out)
