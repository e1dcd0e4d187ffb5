"""The recommendation pipeline: recall channels → merge → rank. Used by the service and by batch exports.

Channels are named strategies run in order, each with a quota; candidates are de-duplicated (first channel
wins) and already-seen items removed. The popularity channel is the fallback that tops the list up, so a
request never comes back empty, whoever the user is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from recstack.models.artifact import NEIGHBORS_FILE, ArtifactError, EmbeddingArtifact, ItemNeighbors
from recstack.models.index import VectorIndex
from recstack.online.contracts import RankedItem, RecallCandidate, RequestContext


@dataclass(frozen=True)
class UserState:
    """What the pipeline knows about the requesting user."""

    user_id: int
    vector: np.ndarray | None  # (d,) float32, None for a user the model has not seen
    seen: np.ndarray  # item ids to exclude


class RecallChannel(Protocol):
    name: str

    def recall(self, user: UserState, context: RequestContext, n: int) -> list[RecallCandidate]: ...


class ServingRelease:
    """A loaded model + index pair from one release directory."""

    def __init__(
        self, artifact: EmbeddingArtifact, index: VectorIndex, neighbors: ItemNeighbors | None = None
    ) -> None:
        if index.model_version != artifact.version:
            raise ArtifactError(
                f"index built for model {index.model_version} cannot serve model {artifact.version}"
            )
        if index.index.d != artifact.dim:
            raise ArtifactError(f"index dim {index.index.d} != model dim {artifact.dim}")
        self.artifact = artifact
        self.index = index
        self.neighbors = neighbors
        self._cosine_index: VectorIndex | None = None
        self._item_order = np.argsort(artifact.item_ids)
        self._sorted_items = artifact.item_ids[self._item_order]
        self._user_order = np.argsort(artifact.user_ids)
        self._sorted_users = artifact.user_ids[self._user_order]

    @property
    def version(self) -> str:
        return self.artifact.version

    @classmethod
    def load(cls, release_dir: Path) -> ServingRelease:
        path = release_dir / NEIGHBORS_FILE
        neighbors = ItemNeighbors.load(path) if path.exists() else None
        return cls(
            EmbeddingArtifact.load(release_dir / "model"), VectorIndex.load(release_dir / "index"), neighbors
        )

    def item_row(self, item_id: int) -> int | None:
        pos = int(np.searchsorted(self._sorted_items, item_id))
        if pos < len(self._sorted_items) and self._sorted_items[pos] == item_id:
            return int(self._item_order[pos])
        return None

    def similar(self, item_id: int, n: int) -> list[RecallCandidate]:
        """Items most similar to ``item_id``: the release's neighbour lists when it has them (graph models),
        else cosine search over the item vectors (a unit-norm index built on first use). Raises KeyError for an item the model does not know."""
        row = self.item_row(item_id)
        if row is None:
            raise KeyError(item_id)
        if self.neighbors is not None:
            ids, scores = self.neighbors.of(item_id)
            return [RecallCandidate(int(i), float(s), "item2item/neighbors")
                    for i, s in zip(ids[:n], scores[:n], strict=True)]  # fmt: skip
        if self._cosine_index is None:  # built on first use; a race builds it twice, harmlessly
            v = self.artifact.item_vectors
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
            self._cosine_index = VectorIndex.build(unit, self.artifact.item_ids, self.version)
        v = self.artifact.item_vectors[row]
        if not np.any(v):
            return []
        query = v / float(np.linalg.norm(v))
        ids, scores = self._cosine_index.search(query, n + 1)
        keep = (ids[0] >= 0) & (ids[0] != item_id)
        return [RecallCandidate(int(i), float(s), "item2item/faiss")
                for i, s in zip(ids[0][keep][:n], scores[0][keep][:n], strict=True)]  # fmt: skip

    def user_state(self, user_id: int) -> UserState:
        pos = int(np.searchsorted(self._sorted_users, user_id))
        if pos < len(self._sorted_users) and self._sorted_users[pos] == user_id:
            row = int(self._user_order[pos])
            return UserState(user_id, self.artifact.user_vectors[row], self.artifact.seen(row))
        return UserState(user_id, None, np.empty(0, dtype=np.int64))


class EmbeddingRecall:
    """FAISS inner-product search with the user's embedding."""

    name = "faiss/user-embedding"

    def __init__(self, release: ServingRelease) -> None:
        self.release = release

    def recall(self, user: UserState, context: RequestContext, n: int) -> list[RecallCandidate]:
        if user.vector is None or not np.any(user.vector):
            return []
        ids, scores = self.release.index.search(user.vector, n + len(user.seen))
        keep = (ids[0] >= 0) & ~np.isin(ids[0], user.seen)
        return [
            RecallCandidate(int(i), float(s), self.name)
            for i, s in zip(ids[0][keep][:n], scores[0][keep][:n], strict=True)
        ]


class PopularRecall:
    """Time-decayed popularity; serves everyone, including users the model has never seen."""

    name = "popular/decayed"

    def __init__(self, release: ServingRelease) -> None:
        self.release = release

    def recall(self, user: UserState, context: RequestContext, n: int) -> list[RecallCandidate]:
        items = self.release.artifact.popular_items
        scores = self.release.artifact.popular_scores
        take = n + len(user.seen)
        keep = ~np.isin(items[:take], user.seen)
        return [
            RecallCandidate(int(i), float(s), self.name)
            for i, s in zip(items[:take][keep][:n], scores[:take][keep][:n], strict=True)
        ]


@dataclass
class Recommendation:
    items: list[RankedItem]
    model_version: str
    fallback: bool  # true when the personalised channels gave nothing and the list is all fallback


class Recommender:
    """Runs the channels in order with quotas, merges, de-duplicates and tops up from the fallback."""

    def __init__(self, release: ServingRelease, recall_size: int = 300) -> None:
        self.release = release
        self.recall_size = recall_size
        self.channels: list[RecallChannel] = [EmbeddingRecall(release)]
        self.fallback: RecallChannel = PopularRecall(release)

    def recommend(self, user_id: int, k: int, context: RequestContext | None = None) -> Recommendation:
        context = context or RequestContext()
        user = self.release.user_state(user_id)
        merged: dict[int, RecallCandidate] = {}
        for channel in self.channels:
            for cand in channel.recall(user, context, self.recall_size):
                merged.setdefault(cand.item_id, cand)
        personalised = len(merged) > 0
        if len(merged) < k:
            for cand in self.fallback.recall(user, context, k + len(merged)):
                merged.setdefault(cand.item_id, cand)
        ranked = list(merged.values())[:k]
        return Recommendation(
            items=[RankedItem(c.item_id, c.score, c.channel) for c in ranked],
            model_version=self.release.version,
            fallback=not personalised,
        )
