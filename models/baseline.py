"""The first recall models: time-decayed popularity and a PureSVD item embedding.

PureSVD (Cremonesi et al., RecSys 2010): the top-``dim`` right singular vectors ``V`` of the binary user-item
matrix ``R``. Item vectors are the rows of ``V``; a user's vector is ``r_u V`` (the sum of the vectors of the
items they interacted with), so a user with any history gets an embedding, no retraining needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from recstack.models.artifact import EmbeddingArtifact
from sklearn.utils.extmath import randomized_svd


@dataclass(frozen=True)
class BaselineConfig:
    dim: int = 64
    popularity_half_life_days: float = 14.0
    seed: int = 42


def popularity(items: np.ndarray, ts_s: np.ndarray, half_life_days: float) -> tuple[np.ndarray, np.ndarray]:
    """Items ranked by exponentially time-decayed interaction count (decay relative to the newest event)."""
    age_days = (ts_s.max() - ts_s) / 86400.0
    weight = np.power(0.5, age_days / half_life_days)
    ids, inverse = np.unique(items, return_inverse=True)
    score = np.bincount(inverse, weights=weight)
    order = np.argsort(-score, kind="stable")
    return ids[order], (score[order] / score.max()).astype(np.float32)


def train_baseline(
    users: np.ndarray, items: np.ndarray, ts_s: np.ndarray, cfg: BaselineConfig, version: str,
    lineage: dict[str, object] | None = None,
) -> EmbeddingArtifact:  # fmt: skip
    """Train popularity + PureSVD on positive interactions (parallel arrays, one row per interaction)."""
    user_ids, u_idx = np.unique(users, return_inverse=True)
    item_ids, i_idx = np.unique(items, return_inverse=True)
    r = sp.csr_matrix((np.ones(len(u_idx), np.float32), (u_idx, i_idx)), shape=(len(user_ids), len(item_ids)))
    r.data[:] = 1.0  # duplicates summed by the constructor count once
    dim = max(1, min(cfg.dim, min(r.shape) - 1))
    _, _, vt = randomized_svd(r, n_components=dim, n_iter=7, random_state=cfg.seed)
    item_vectors = vt.T.astype(np.float32)
    user_vectors = np.asarray(r @ item_vectors, dtype=np.float32)
    pop_items, pop_scores = popularity(items, ts_s, cfg.popularity_half_life_days)
    return EmbeddingArtifact(
        model="baseline-puresvd",
        version=version,
        user_ids=user_ids,
        user_vectors=user_vectors,
        item_ids=item_ids,
        item_vectors=item_vectors,
        popular_items=pop_items,
        popular_scores=pop_scores,
        seen_indptr=r.indptr.astype(np.int64),
        seen_items=item_ids[r.indices],
        lineage=dict(lineage or {}),
        params={"dim": dim, "popularity_half_life_days": cfg.popularity_half_life_days, "seed": cfg.seed},
    )
