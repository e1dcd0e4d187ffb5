"""Recall models behind one contract: interactions in, :class:`EmbeddingArtifact` out.

:class:`RecallData` is the typed input every trainer takes (dense user / item rows, edge strengths, profile
frames for node features); :func:`fit_deepwalk`, :func:`fit_graphsage` (graph embeddings), :func:`fit_ials`
and :func:`fit_ease` (the export ensemble's other members) return the artifact the FAISS index and the
online service consume, plus each model's extras (item neighbours, the inductive encoder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from recstack.features.keys import Col
from recstack.models.artifact import EmbeddingArtifact
from recstack.models.baseline import popularity
from recstack.models.deepwalk import DeepWalkConfig, train_deepwalk
from recstack.models.deepwalk import config_params as deepwalk_params
from recstack.models.ease import EASEConfig, train_ease
from recstack.models.ease import config_params as ease_params
from recstack.models.evaluation import Interactions, evaluate, topk_from_scores
from recstack.models.graph import CSRGraph, bipartite
from recstack.models.graphsage import SageConfig, SageModel, train_link_sage
from recstack.models.graphsage import config_params as sage_params
from recstack.models.ials import IALSConfig, train_ials
from recstack.models.ials import config_params as ials_params
from recstack.models.node_features import FeatureEncoder, aligned

Progress = Callable[[str], None]

DEFAULT_DEEPWALK = DeepWalkConfig()
"""Tuned on the ml-100k reference split: uniform negative sampling and in·out scoring keep popularity."""
DEFAULT_GRAPHSAGE = SageConfig(epochs=30, lr=0.005, l2=0.0, loss="softmax", negatives=512, normalize=True,
                               temperature=0.2)  # fmt: skip
"""Tuned on the ml-100k reference split: sampled softmax over 512 shared negatives, cosine / temperature 0.2
(0.05: 0.381, 0.1: 0.394, 0.2: 0.427, 0.3: 0.412, 0.5: 0.346 nDCG@10)."""
DEFAULT_EASE = EASEConfig()
"""λ 500, the peer's setting on the reference split; rank 64 of B served."""
DEFAULT_IALS = IALSConfig()
"""Chosen on an inner 80/20 split of the reference split's train.tsv (not on its test): d 64, α₀ 0.2, λ 0.02."""
LOOKALIKE = SageConfig(
    epochs=10, lr=0.005, l2=0.0, loss="softmax", negatives=256, normalize=True, temperature=0.1
)
"""User–user attribute graph: cosine embeddings, so lookalike scores are comparable across users."""


@dataclass
class RecallData:
    """Interactions indexed densely: user ``user_ids[r]`` is row ``r`` (node ``r``), item ``item_ids[c]`` is
    column ``c`` (node ``num_users + c``)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_rows: np.ndarray
    item_cols: np.ndarray
    weight: np.ndarray
    ts: np.ndarray
    users: pd.DataFrame = field(default_factory=pd.DataFrame)  # profiles (USER_SCHEMA columns), any order
    items: pd.DataFrame = field(default_factory=pd.DataFrame)  # profiles (ITEM_SCHEMA columns)
    lineage: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(
        cls, data: Interactions, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None,
        lineage: dict[str, object] | None = None,
    ) -> RecallData:  # fmt: skip
        if len(data) == 0:
            raise ValueError("no interactions to train on")
        user_ids, user_rows = np.unique(data.users, return_inverse=True)
        item_ids, item_cols = np.unique(data.items, return_inverse=True)
        return cls(
            user_ids=user_ids, item_ids=item_ids, user_rows=user_rows, item_cols=item_cols,
            weight=np.asarray(data.weight, np.float64), ts=np.asarray(data.ts, np.int64),
            users=users if users is not None else pd.DataFrame({Col.USER_ID: user_ids}),
            items=items if items is not None else pd.DataFrame({Col.ITEM_ID: item_ids}),
            lineage=dict(lineage or {}),
        )  # fmt: skip

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def strengths(self) -> np.ndarray:
        """Each interaction's strength, floored at 1e-6 (a like of label 0 still links its pair)."""
        return np.maximum(self.weight, 1e-6)

    def graph(self, weighted: bool = True) -> CSRGraph:
        w = self.strengths if weighted else None
        return bipartite(self.user_rows, self.item_cols, self.num_users, self.num_items, w)

    def seen(self) -> sp.csr_matrix:
        r = sp.csr_matrix(
            (np.ones(len(self.user_rows), np.float32), (self.user_rows, self.item_cols)),
            shape=(self.num_users, self.num_items),
        )
        r.sum_duplicates()
        r.sort_indices()
        return r

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id, -1 for a user not in this data."""
        pos = np.searchsorted(self.user_ids, user_ids)
        found = (pos < self.num_users) & (self.user_ids[np.minimum(pos, self.num_users - 1)] == user_ids)
        return np.where(found, pos, -1)

    def seen_rows(self) -> dict[int, np.ndarray]:
        """Each user id's interacted item columns (what recommendation excludes)."""
        r = self.seen()
        return {
            int(u): r.indices[r.indptr[k] : r.indptr[k + 1]] for k, u in enumerate(self.user_ids.tolist())
        }

    def node_features(self, encoder: FeatureEncoder) -> np.ndarray:
        """(users + items, user_dim + item_dim) with the user block left, the item block right."""
        fu = encoder.user_matrix(aligned(self.users, Col.USER_ID, self.user_ids))
        fi = encoder.item_matrix(aligned(self.items, Col.ITEM_ID, self.item_ids))
        out = np.zeros((self.num_users + self.num_items, fu.shape[1] + fi.shape[1]), np.float32)
        out[: self.num_users, : fu.shape[1]] = fu
        out[self.num_users :, fu.shape[1] :] = fi
        return out

    def artifact(self, model: str, version: str, user_vectors: np.ndarray, item_vectors: np.ndarray,
                 params: dict[str, object]) -> EmbeddingArtifact:  # fmt: skip
        seen = self.seen()
        pop_items, pop_scores = popularity(self.item_ids[self.item_cols], self.ts, 14.0)
        return EmbeddingArtifact(
            model=model, version=version,
            user_ids=self.user_ids.astype(np.int64), user_vectors=np.ascontiguousarray(user_vectors, np.float32),
            item_ids=self.item_ids.astype(np.int64), item_vectors=np.ascontiguousarray(item_vectors, np.float32),
            popular_items=pop_items, popular_scores=pop_scores,
            seen_indptr=seen.indptr.astype(np.int64), seen_items=self.item_ids[seen.indices],
            lineage=self.lineage, params=params,
        )  # fmt: skip


def fit_deepwalk(data: RecallData, cfg: DeepWalkConfig, version: str, sessions: list[np.ndarray] | None = None,
                 progress: Progress | None = None) -> EmbeddingArtifact:  # fmt: skip
    """DeepWalk on the strength-weighted user–item graph; ``sessions`` are item-id sequences (item2vec)."""
    seqs: list[np.ndarray] = []
    if cfg.use_sessions and sessions:
        col = {int(i): c for c, i in enumerate(data.item_ids.tolist())}
        for s in sessions:
            nodes = [data.num_users + col[int(i)] for i in s if int(i) in col]
            if len(nodes) > 1:
                seqs.append(np.asarray(nodes, np.int64))
    result = train_deepwalk(data.graph(weighted=True), cfg, seqs, progress)
    u, n = result.vectors[: data.num_users], data.num_users
    if cfg.score == "in_out":  # P(item in the context of user) ∝ exp(u_in · i_out): the skip-gram's own score
        i = result.context[n:]
    elif cfg.score == "cosine":
        u, i = _unit(u), _unit(result.vectors[n:])
    else:
        i = result.vectors[n:]
    return data.artifact(
        "deepwalk", version, u, i,
        {**deepwalk_params(cfg), **{f"history.{k}": x for k, x in result.history.items()}},
    )  # fmt: skip


def fit_ials(
    data: RecallData, cfg: IALSConfig, version: str, progress: Progress | None = None
) -> EmbeddingArtifact:
    """Implicit ALS on which user interacted with which item (every interaction alike, see ``models/ials.py``)."""
    result = train_ials(data.user_rows, data.item_cols, data.num_users, data.num_items, cfg, progress)
    params = {**ials_params(cfg), "history.train_s": result.history["train_s"],
              "history.loss": result.history[f"loss.{cfg.iterations - 1}"]}  # fmt: skip
    return data.artifact("ials", version, result.users, result.items, params)


def fit_ease(data: RecallData, cfg: EASEConfig, version: str) -> EmbeddingArtifact:
    """EASE's item–item model served through its truncated SVD (see ``models/ease.py``); with ``cfg.weighted``
    the interactions' strengths fill its matrix."""
    result = train_ease(data.user_rows, data.item_cols, data.num_users, data.num_items, cfg,
                        data.strengths if cfg.weighted else None)  # fmt: skip
    params = {**ease_params(cfg), **{f"history.{k}": v for k, v in result.history.items()}}
    return data.artifact("ease", version, result.users, result.items, params)


@dataclass
class SageRecall:
    """A trained user–item GraphSAGE with what inductive inference needs."""

    model: SageModel
    encoder: FeatureEncoder
    data: RecallData

    def embed_new_users(self, item_lists: list[np.ndarray], profiles: pd.DataFrame) -> np.ndarray:
        """Embeddings for users unseen in training, from the item ids they interacted with (unknown items are
        ignored) and their profile rows (aligned with ``item_lists``)."""
        col = {int(i): c for c, i in enumerate(self.data.item_ids.tolist())}
        nbrs = [np.asarray([self.data.num_users + col[int(i)] for i in items if int(i) in col], np.int64)
                for items in item_lists]  # fmt: skip
        fu = self.encoder.user_matrix(profiles.reset_index(drop=True))
        feats = np.zeros((len(item_lists), fu.shape[1] + self.encoder.item_dim), np.float32)
        feats[:, : fu.shape[1]] = fu
        return self.model.embed_new(nbrs, feats if self.model.features is not None else None).numpy()


def fit_graphsage(data: RecallData, cfg: SageConfig, version: str, progress: Progress | None = None,
                  use_features: bool = True) -> tuple[EmbeddingArtifact, SageRecall]:  # fmt: skip
    """GraphSAGE link prediction on the user–item graph with profile features on the nodes."""
    t0 = time.perf_counter()
    encoder = FeatureEncoder().fit(data.users, data.items)
    feats = data.node_features(encoder) if use_features else None
    model = train_link_sage(
        data.graph(weighted=False), feats, data.user_rows, data.num_users + data.item_cols,
        (data.num_users, data.num_users + data.num_items), cfg, progress,
    )  # fmt: skip
    assert model.embeddings is not None
    h = model.embeddings.numpy()
    params = {**sage_params(cfg), "use_features": use_features, "feature_dim": 0 if feats is None else feats.shape[1],
              "train_s": time.perf_counter() - t0}  # fmt: skip
    art = data.artifact("graphsage", version, h[: data.num_users], h[data.num_users :], params)
    return art, SageRecall(model=model, encoder=encoder, data=data)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def item_neighbors(item_vectors: np.ndarray, item_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``n`` most similar other items by cosine: (ids (I, n), scores (I, n)), -1 padded."""
    from recstack.models.index import VectorIndex

    x = _unit(np.asarray(item_vectors, np.float32))
    index = VectorIndex.build(x, item_ids, "neighbors")
    ids, scores = index.search(x, n + 1)
    same = ids == np.asarray(item_ids)[:, None]
    out_ids = np.full((len(x), n), -1, np.int64)
    out_scores = np.zeros((len(x), n), np.float32)
    for r in range(len(x)):
        keep = ~same[r] & (ids[r] >= 0)
        k = min(n, int(keep.sum()))
        out_ids[r, :k] = ids[r][keep][:k]
        out_scores[r, :k] = scores[r][keep][:k]
    return out_ids, out_scores


def evaluate_artifact(
    art: EmbeddingArtifact, data: RecallData, test: Interactions, k: int = 10, catalog: int | None = None
) -> dict[str, float]:
    """Pure embedding recall of ``art`` (trained on ``data``) on ``test``: top ``k`` unseen items per test user."""
    test_users = np.unique(test.users)
    recs = topk_from_scores(
        score_fn(art), test_users, data.rows_of(test_users), art.item_ids, data.seen_rows(), k
    )
    train = Interactions(data.user_ids[data.user_rows], data.item_ids[data.item_cols], data.ts, data.weight)
    return evaluate(recs, test, train, k, catalog or len(np.union1d(data.item_ids, test.items)))


def score_fn(art: EmbeddingArtifact) -> Callable[[np.ndarray], torch.Tensor]:
    u, i = torch.as_tensor(art.user_vectors), torch.as_tensor(art.item_vectors)
    return lambda rows: u[torch.as_tensor(rows)] @ i.T


def fit_lookalike(
    user_ids: np.ndarray, src_rows: np.ndarray, dst_rows: np.ndarray, users: pd.DataFrame,
    encoder: FeatureEncoder, version: str = "", cfg: SageConfig = LOOKALIKE, progress: Progress | None = None,
) -> EmbeddingArtifact:  # fmt: skip
    """GraphSAGE link prediction on the user–user attribute graph (edges between rows of ``user_ids``), with
    the users' profile features; the artifact's user and "item" vectors are both the user embeddings."""
    if len(src_rows) == 0:
        raise ValueError("the user-user graph has no edges")
    graph = CSRGraph.from_edges(src_rows, dst_rows, len(user_ids))
    feats = encoder.user_matrix(aligned(users, Col.USER_ID, user_ids))
    model = train_link_sage(graph, feats, src_rows, dst_rows, (0, len(user_ids)), cfg, progress)
    assert model.embeddings is not None
    vec = model.embeddings.numpy()
    ids = np.asarray(user_ids, np.int64)
    return EmbeddingArtifact(
        model="lookalike-graphsage", version=version, user_ids=ids, user_vectors=vec, item_ids=ids, item_vectors=vec,
        popular_items=np.empty(0, np.int64), popular_scores=np.empty(0, np.float32),
        seen_indptr=np.zeros(len(ids) + 1, np.int64), seen_items=np.empty(0, np.int64),
        params={"edges": int(len(src_rows)), **sage_params(cfg)},
    )  # fmt: skip


def lookalike_audience(
    art: EmbeddingArtifact, seed_users: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` users most similar to the centroid of ``seed_users`` (cosine), seeds excluded:
    (user ids, scores). Seeds unknown to the model are ignored; none known is an error."""
    rows = np.nonzero(np.isin(art.user_ids, np.asarray(seed_users, np.int64)))[0]
    if len(rows) == 0:
        raise ValueError("none of the seed users is known to the lookalike model")
    from recstack.models.index import VectorIndex

    x = _unit(np.asarray(art.user_vectors, np.float32))
    centroid = _unit(x[rows].mean(axis=0, keepdims=True))
    index = VectorIndex.build(x, art.user_ids, art.version)
    ids, scores = index.search(centroid, size + len(rows))
    keep = (ids[0] >= 0) & ~np.isin(ids[0], art.user_ids[rows])
    return ids[0][keep][:size], scores[0][keep][:size]
