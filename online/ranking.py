"""The ranking cascade after recall: pre-rank → fine rank → re-rank → control.

* **Pre-rank** (cheap): keeps the ``serving.recall_size`` best merged candidates by the dot product of the
  user and item embeddings (one (n, d) @ (d,) product), or by the channel-position prior for a user without
  an embedding.
* **Fine rank**: one batched forward pass of the current ranker over a ``RankBatch`` (every feature of every
  candidate as arrays). ``EmbeddingRanker`` scores with the recall model itself; ``MLPRanker`` is a torch
  network over user, item, real-time and context features (the slot the trained Wide&Deep / MoE rankers of
  the ranking issue take). A ranker that raises is replaced by the pre-rank order for that request.
* **Re-rank**: business rules (score multiplier for fresh items) and genre diversity: a sliding window in
  which at most ``max_same_genre`` items share a primary genre (an item that would break it waits for a
  later slot; if nothing else is left the list is filled in score order).
* **Control**: ``ControlStage`` hooks (PID exposure pacing, anti-fraud of the control issue) get the final
  candidates and scores and may re-weight or drop items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from recstack.online.recall import Merged, UserView

RT_USER = ("user_clicks_30m", "user_clicks_1h", "user_clicks_1d")
RT_ITEM = ("item_exposures_1h", "item_exposures_1d", "item_clicks_1h", "item_clicks_1d")


@dataclass(frozen=True)
class RankBatch:
    """Features of one request's candidates, aligned on axis 0 (n candidates)."""

    user_vector: np.ndarray | None  # (d,)
    item_vectors: np.ndarray  # (n, d), zeros for items without an embedding
    has_vector: np.ndarray  # (n,) bool
    recall_prior: np.ndarray  # (n,) 1 / (1 + position in the recalling channel)
    channel: np.ndarray  # (n,) channel index
    trending: np.ndarray  # (n,) log1p decayed popularity
    genre_match: np.ndarray  # (n,) share of the item's genres in the user's interest
    user_realtime: np.ndarray  # (len(RT_USER),) log1p counts
    item_realtime: np.ndarray  # (n, len(RT_ITEM)) log1p counts
    hour: int
    weekday: int
    user_id: int = -1
    item_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (n,) ids of the candidates
    page: str | None = None
    device: str | None = None

    def __len__(self) -> int:
        return len(self.item_vectors)


class Ranker(Protocol):
    name: str

    def score(self, batch: RankBatch) -> np.ndarray:
        """(n,) float scores, higher is better."""
        ...


class EmbeddingRanker:
    """The recall model's own score (user · item). Items without an embedding rank after those with one, and
    a user without an embedding is ranked by a prior (decayed popularity, genre match, recall position)."""

    name = "embedding"

    def score(self, batch: RankBatch) -> np.ndarray:
        prior = 0.1 * batch.trending + batch.genre_match + batch.recall_prior
        if batch.user_vector is None:
            return prior
        dots = batch.item_vectors @ batch.user_vector
        if not batch.has_vector.any():
            return prior
        low, high = float(dots[batch.has_vector].min()), float(dots[batch.has_vector].max())
        span = max(high - low, 1e-6)
        # items without a vector go below every item with one, ordered by the prior
        return np.where(batch.has_vector, dots, low - span * (1.0 + 1.0 / (1.0 + prior)))  # type: ignore[no-any-return]


class MLPRanker:
    """A torch MLP over [u, i, u*i, dense features] per candidate, one forward for the whole batch.

    ``state_path`` holds trained weights (``torch.save(module.state_dict())``); without it the weights are the
    seeded initialisation, which is only good for measuring cost (the serving benchmark says so).
    """

    name = "mlp"

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 64), state_path: Path | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        torch.manual_seed(seed)
        n_dense = 4 + len(RT_USER) + len(RT_ITEM) + 2
        layers: list[torch.nn.Module] = []
        width = 3 * dim + n_dense
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        self.dim = dim
        self.module = torch.nn.Sequential(*layers).eval()
        self.trained = state_path is not None
        if state_path is not None:
            self.module.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))

    def dense(self, batch: RankBatch) -> np.ndarray:
        n = len(batch)
        return np.column_stack([
            batch.has_vector, batch.recall_prior, batch.trending, batch.genre_match,
            np.broadcast_to(batch.user_realtime, (n, len(RT_USER))), batch.item_realtime,
            np.full(n, batch.hour / 23.0), np.full(n, batch.weekday / 6.0),
        ]).astype(np.float32)  # fmt: skip

    def features(self, batch: RankBatch) -> np.ndarray:
        """The network's input rows [u, i, u*i, dense] (what it is trained on)."""
        n = len(batch)
        u = batch.user_vector if batch.user_vector is not None else np.zeros(self.dim, np.float32)
        ub = np.broadcast_to(u, (n, self.dim))
        return np.hstack([ub, batch.item_vectors, ub * batch.item_vectors, self.dense(batch)]).astype(np.float32)

    def score_module(self, batch: RankBatch) -> np.ndarray:
        """The plain torch forward over ``features`` (reference for ``score``)."""
        with torch.inference_mode():
            out = self.module(torch.from_numpy(self.features(batch)))
        return out.numpy().ravel()  # type: ignore[no-any-return]

    def _weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        cached = getattr(self, "_np_weights", None)
        if cached is None:
            linears = [m for m in self.module if isinstance(m, torch.nn.Linear)]
            cached = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
            self._np_weights = cached
        return cached

    def score(self, batch: RankBatch) -> np.ndarray:
        """The same network, first layer factored: the user block is computed once per request and the item
        and cross blocks fold into one matrix, ``i @ (W_i + diag(u) W_ui)``, so a request costs one
        (n, d) x (d, h) product instead of an (n, 3d) one. Equal to ``score_module`` up to float rounding."""
        d = self.dim
        layers = self._weights()
        w1, b1 = layers[0]
        u = batch.user_vector if batch.user_vector is not None else np.zeros(d, np.float32)
        folded = w1[d : 2 * d] + u[:, None] * w1[2 * d : 3 * d]
        h = batch.item_vectors @ folded + self.dense(batch) @ w1[3 * d :] + (u @ w1[:d] + b1)
        for w, b in layers[1:]:
            np.maximum(h, 0.0, out=h)
            h = h @ w + b
        return h.ravel()  # type: ignore[no-any-return]


def prerank(merged: Merged, user: UserView, item_vectors: np.ndarray, has_vector: np.ndarray, n: int) -> np.ndarray:
    """Indices (into ``merged``) of the ``n`` candidates kept for the fine ranker, in merged order."""
    if len(merged) <= n:
        return np.arange(len(merged))
    if user.vector is not None:
        cheap = np.where(has_vector, item_vectors @ user.vector, -np.inf) + 1e-6 * merged.rank_prior
    else:
        cheap = merged.rank_prior.astype(np.float64)
    keep = np.argpartition(-cheap, n - 1)[:n]
    return np.sort(keep)


def diversify(scores: np.ndarray, genre: np.ndarray, k: int, window: int, max_same: int) -> np.ndarray:
    """Indices of the top ``k`` by score such that, in any ``window`` consecutive picks, at most ``max_same``
    share a primary genre (items without a genre, ``-1``, are never constrained). When no remaining item fits,
    the best remaining one is taken, so the list is always ``min(k, n)`` long."""
    n = len(scores)
    head = min(n, k * window + 4 * k)  # enough to fill k slots under the rule; beyond it, plain score order
    top = np.argpartition(-scores, head - 1)[:head] if head < n else np.arange(n)
    order = top[np.argsort(-scores[top], kind="stable")].tolist()
    genres = genre[order].tolist()
    picked: list[int] = []
    picked_genres: list[int] = []
    while order and len(picked) < k:
        recent = picked_genres[-(window - 1):] if window > 1 else []  # fmt: skip
        j = next((i for i, g in enumerate(genres) if g < 0 or recent.count(g) < max_same), 0)
        picked.append(order.pop(j))
        picked_genres.append(genres.pop(j))
    return np.asarray(picked, dtype=np.int64)


class ControlStage(Protocol):
    """A hook after re-rank (pacing, anti-fraud): returns new scores (NaN drops an item) for the candidates."""

    name: str

    def apply(self, user: UserView, items: np.ndarray, scores: np.ndarray) -> np.ndarray: ...
