"""The recommendation pipeline: user view → recall channels → merge → pre-rank → fine rank → re-rank → control.

The same objects serve the API (``online.app``) and batch exports. ``ServingRelease`` is one loaded release
(model, vector index, neighbour lists, catalog); ``Recommender`` holds a release, the configured channels, a
ranker and the control hooks, and turns one request into a ``Recommendation`` with the timings of each stage
and what degraded. Every failure on the way (Redis, a channel, the ranker) has a fallback:

=============== ====================================================================================
failure          what the request gets
=============== ====================================================================================
Redis            no real-time features: recall from the model history, zero real-time counts
a channel        the other channels (a timeout or error is counted per channel)
every channel    the popularity fallback (``fallback: true``), never an empty list
the ranker       the pre-rank order (dot product / channel position)
=============== ====================================================================================
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from recstack.features.definitions import hour_of_day, weekday
from recstack.features.realtime import UserRealtime
from recstack.features.settings import ChannelSettings, ServingSettings
from recstack.models.artifact import NEIGHBORS_FILE, ArtifactError, EmbeddingArtifact, ItemNeighbors
from recstack.models.catalog import CATALOG_DIR, Catalog
from recstack.models.ids import IdIndex
from recstack.models.index import VectorIndex
from recstack.online.contracts import RankedItem, RecallCandidate, RequestContext
from recstack.online.ranking import (
    RT_ITEM,
    RT_USER,
    ControlStage,
    EmbeddingRanker,
    MLPRanker,
    RankBatch,
    Ranker,
    diversify,
    prerank,
)
from recstack.online.realtime import RealtimeReader
from recstack.online.recall import (
    Channel,
    ChannelResult,
    Merged,
    PopularChannel,
    UserView,
    make_channel,
    merge,
    run_channels,
)

log = logging.getLogger(__name__)
NOT_READ = object()
"""``Recommender.recommend(realtime=...)`` default: read the real-time features in the call."""


class ServingRelease:
    """A loaded release: model + index (same version) + optional neighbour lists + catalog."""

    def __init__(
        self, artifact: EmbeddingArtifact, index: VectorIndex, neighbors: ItemNeighbors | None = None,
        catalog: Catalog | None = None,
    ) -> None:  # fmt: skip
        if index.model_version != artifact.version:
            raise ArtifactError(
                f"index built for model {index.model_version} cannot serve model {artifact.version}"
            )
        if index.index.d != artifact.dim:
            raise ArtifactError(f"index dim {index.index.d} != model dim {artifact.dim}")
        self.artifact = artifact
        self.index = index
        self.neighbors = neighbors
        if catalog is None:
            pop = dict(zip(artifact.popular_items.tolist(), artifact.popular_scores.tolist(), strict=True))
            catalog = Catalog.minimal(artifact.item_ids, pop)
        self.catalog = catalog
        self._cosine_index: VectorIndex | None = None
        self._items = IdIndex(artifact.item_ids)
        self._users = IdIndex(artifact.user_ids)
        # catalog row -> artifact row (-1: no embedding); vectors padded with a zero row for the -1s
        art_rows = self.item_rows(catalog.item_ids)
        self.catalog_art_rows = art_rows
        self._padded_vectors = np.vstack([artifact.item_vectors, np.zeros((1, artifact.dim), np.float32)])
        missing = ~np.isin(artifact.item_ids, catalog.item_ids)
        if missing.any():
            raise ArtifactError(f"catalog lacks {int(missing.sum())} items of model {artifact.version}")

    @property
    def version(self) -> str:
        return self.artifact.version

    @classmethod
    def load(cls, release_dir: Path) -> ServingRelease:
        """Load and check every part; any missing, corrupt or mismatched part raises ``ArtifactError``."""
        path = release_dir / NEIGHBORS_FILE
        neighbors = ItemNeighbors.load(path) if path.exists() else None
        catalog = Catalog.load(release_dir / CATALOG_DIR) if (release_dir / CATALOG_DIR).exists() else None
        return cls(
            EmbeddingArtifact.load(release_dir / "model"), VectorIndex.load(release_dir / "index"), neighbors,
            catalog,
        )  # fmt: skip

    def item_row(self, item_id: int) -> int | None:
        row = self._items.row(item_id)
        return row if row >= 0 else None

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Artifact rows of ``item_ids`` (-1 for items without an embedding)."""
        return self._items.rows(item_ids)

    def vectors_of_catalog_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) item vectors of catalog rows (zeros where the model has none) and the has-vector mask."""
        art = self.catalog_art_rows[rows]
        return self._padded_vectors[art], art >= 0

    def _cosine(self) -> VectorIndex:
        if self._cosine_index is None:  # built on first use; a race builds it twice, harmlessly
            v = self.artifact.item_vectors
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
            self._cosine_index = VectorIndex.build(unit, self.artifact.item_ids, self.version)
        return self._cosine_index

    def similar_many(self, item_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most similar items of each of ``item_ids``: (ids (S, n) -1 padded, scores (S, n) 0 padded).
        From the neighbour lists when the release has them, else one batched cosine search."""
        item_ids = np.asarray(item_ids, np.int64)
        if self.neighbors is not None:
            nb = self.neighbors
            pos = np.minimum(np.searchsorted(nb.item_ids, item_ids), max(len(nb.item_ids) - 1, 0))
            known = nb.item_ids[pos] == item_ids
            ids = np.where(known[:, None], nb.neighbors[pos, :n], -1)
            scores = np.where(ids >= 0, nb.scores[pos, :n], 0.0).astype(np.float32)
            return ids, scores
        rows = self.item_rows(item_ids)
        out_ids = np.full((len(item_ids), n), -1, np.int64)
        out_scores = np.zeros((len(item_ids), n), np.float32)
        ok = np.flatnonzero(rows >= 0)
        if len(ok):
            v = self.artifact.item_vectors[rows[ok]]
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            q = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
            ids, scores = self._cosine().search(q, n + 1)
            for r, qi in enumerate(ok):
                keep = (ids[r] >= 0) & (ids[r] != item_ids[qi])
                got = ids[r][keep][:n]
                out_ids[qi, : len(got)] = got
                out_scores[qi, : len(got)] = scores[r][keep][:n]
        return out_ids, out_scores

    def similar(self, item_id: int, n: int) -> list[RecallCandidate]:
        """Items most similar to ``item_id``: the release's neighbour lists when it has them (graph models),
        else cosine search over the item vectors. Raises KeyError for an item the model does not know."""
        if self.item_row(item_id) is None:
            raise KeyError(item_id)
        ids, scores = self.similar_many(np.array([item_id]), n)
        channel = "item2item/neighbors" if self.neighbors is not None else "item2item/faiss"
        keep = ids[0] >= 0
        return [RecallCandidate(int(i), float(s), channel) for i, s in zip(ids[0][keep], scores[0][keep], strict=True)]

    def user_history(self, user_id: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(embedding or None, seen item ids) of a user."""
        row = self._users.row(user_id)
        if row >= 0:
            return self.artifact.user_vectors[row], self.artifact.seen(row)
        return None, np.empty(0, dtype=np.int64)


@dataclass
class Recommendation:
    items: list[RankedItem]
    model_version: str
    fallback: bool  # true when the personalised channels gave nothing and the list is all fallback
    degraded: list[str] = field(default_factory=list)  # what failed and was replaced (redis, channel:x, ranker)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    channels: list[ChannelResult] = field(default_factory=list)
    ranked: int = 0  # candidates the fine ranker scored


def make_ranker(settings: ServingSettings, dim: int) -> Ranker:
    """The configured fine ranker. ``ctr`` from a file here; the service resolves the registry's champion
    itself (``online/app.py``) and passes the ranker in."""
    if settings.ranker == "mlp":
        return MLPRanker(dim, state_path=settings.ranker_path)
    if settings.ranker == "ctr":
        from recstack.online.ctr_ranker import load_ranker_file

        if settings.ranker_path is None:
            raise ValueError("serving.ranker = ctr without ranker_path: pass the registry's ranker in")
        return load_ranker_file(settings.ranker_path, settings.ranker_weights)
    return EmbeddingRanker()


class Recommender:
    """One release + channels + ranker + control hooks. Thread-safe: it holds no per-request state."""

    def __init__(
        self, release: ServingRelease, settings: ServingSettings | None = None,
        realtime: RealtimeReader | None = None, ranker: Ranker | None = None,
        control: list[ControlStage] | None = None, pool: cf.ThreadPoolExecutor | None = None,
    ) -> None:  # fmt: skip
        self.release = release
        release.catalog.warm()
        self.settings = settings or ServingSettings()
        self.realtime = realtime
        self.ranker = ranker or make_ranker(self.settings, release.artifact.dim)
        self.control = control or []
        specs = [c for c in self.settings.channels if c.enabled]
        self.channels: list[tuple[Channel, ChannelSettings]] = [
            (make_channel(spec, release, self.settings.fresh_days), spec) for spec in specs
        ]
        self.fallback = PopularChannel(release)
        self.spare_cores = self.settings.spare_cores  # read once: os.sched_getaffinity is a system call
        self.pool = pool or cf.ThreadPoolExecutor(max_workers=4 * max(len(self.channels), 1),
                                                  thread_name_prefix="recall")  # fmt: skip

    def user_view(self, user_id: int, now_s: int, query: str | None, degraded: list[str],
                  prefetched: UserRealtime | None | object = NOT_READ) -> UserView:  # fmt: skip
        vector, seen = self.release.user_history(user_id)
        recent = np.empty(0, np.int64)
        realtime: dict[str, float] = {}
        if self.realtime is not None:
            rt = self.realtime.read_user(user_id, now_s * 1000) if prefetched is NOT_READ else prefetched
            if not isinstance(rt, UserRealtime):
                degraded.append("redis")
            else:
                recent = rt.recent_items
                realtime = {k: float(v) for k, v in rt.counts.items()}
        if len(recent):
            seen = np.concatenate([seen, recent])
        return UserView(user_id, vector, seen, recent, self.release.catalog.segment_of_user(user_id), now_s,
                        query, realtime)  # fmt: skip

    def recommend(self, user_id: int, k: int, context: RequestContext | None = None, query: str | None = None,
                  realtime: UserRealtime | None | object = NOT_READ) -> Recommendation:  # fmt: skip
        """Top ``k`` for a user. ``realtime``: the user's real-time features when the caller already read them
        (the API reads them asynchronously; ``None`` = the read failed), else they are read here."""
        context = context or RequestContext()
        t0 = time.perf_counter()
        now = context.time.timestamp() if context.time is not None else time.time()
        degraded: list[str] = []
        stages: dict[str, float] = {}
        user = self.user_view(user_id, int(now), query, degraded, realtime)
        t1 = time.perf_counter()
        stages["features"] = t1 - t0

        results = run_channels(self.pool, self.channels, user, context, self.spare_cores)
        degraded += [f"channel:{r.name}:{r.status}" for r in results if r.status in ("timeout", "error")]
        cat = self.release.catalog
        quotas = [spec.quota for _, spec in self.channels]
        merged = merge([r.candidates for r in results], quotas, cat.rows_of, user.seen, cat.state)
        fallback = len(merged) == 0
        if len(merged) < k:  # top up from the fallback (the only source when everything else is empty)
            pop = self.fallback.recall(user, context, k + len(merged))
            merged = merge([r.candidates for r in results] + [pop], quotas + [k], cat.rows_of, user.seen, cat.state)
        t2 = time.perf_counter()
        stages["recall"] = t2 - t1

        vectors, has_vector = self.release.vectors_of_catalog_rows(merged.rows)
        keep = prerank(merged, user, vectors, has_vector, self.settings.recall_size)
        merged, vectors, has_vector = merged.take(keep), vectors[keep], has_vector[keep]
        t3 = time.perf_counter()
        stages["prerank"] = t3 - t2

        batch = self._batch(user, merged, vectors, has_vector, now, context.page, context.device)
        try:
            scores = np.asarray(self.ranker.score(batch), dtype=np.float64)
            if scores.shape != (len(merged),) or not np.isfinite(scores).all():
                raise ValueError(f"ranker returned {scores.shape} scores with non-finite values")
        except Exception:  # any ranker failure: serve the pre-rank order
            log.exception("ranker %s failed; serving the pre-rank order", self.ranker.name)
            degraded.append("ranker")
            scores = (vectors @ user.vector if user.vector is not None else merged.rank_prior).astype(np.float64)
        t4 = time.perf_counter()
        stages["rank"] = t4 - t3

        rr = self.settings.rerank
        if rr.fresh_bonus and len(merged):  # business rule: fresh items move up
            fresh = np.isin(merged.rows, cat.fresh_rows(int(now), self.settings.fresh_days))
            scores = scores + rr.fresh_bonus * fresh
        for hook in self.control:
            scores = np.asarray(hook.apply(user, merged.items, scores), dtype=np.float64)
        alive = np.flatnonzero(~np.isnan(scores))
        picked = alive[diversify(scores[alive], cat.primary_genre[merged.rows[alive]], k, rr.window,
                                 rr.max_same_genre)]  # fmt: skip
        stages["rerank"] = time.perf_counter() - t4
        names = [r.name for r in results] + [PopularChannel.name]
        items = [RankedItem(int(merged.items[i]), float(scores[i]), names[min(int(merged.channel[i]), len(names) - 1)])
                 for i in picked]  # fmt: skip
        return Recommendation(items, self.release.version, fallback, degraded, stages, results, len(merged))

    def fallback_only(self, user_id: int, k: int, context: RequestContext | None = None) -> Recommendation:
        """The popularity list alone (the last resort when the pipeline itself failed)."""
        context = context or RequestContext()
        _, seen = self.release.user_history(user_id)
        user = UserView(user_id, None, seen, np.empty(0, np.int64), -1, int(time.time()))
        pop = self.fallback.recall(user, context, k)
        cat = self.release.catalog
        merged = merge([pop], [k], cat.rows_of, seen, cat.state)
        items = [RankedItem(int(i), float(s), PopularChannel.name) for i, s in zip(merged.items, merged.scores, strict=True)]
        return Recommendation(items, self.release.version, True, ["internal"])

    def _batch(self, user: UserView, m: Merged, vectors: np.ndarray, has_vector: np.ndarray,
               now: float, page: str | None = None, device: str | None = None) -> RankBatch:  # fmt: skip
        cat = self.release.catalog
        rows = m.rows
        if cat.genre_names:
            gm = cat.genre_matrix
            hist = cat.rows_of(user.seen[-200:])
            interest = gm[hist[hist >= 0]].sum(0)
            total = float(interest.sum())
            genre_match = (gm[rows] @ interest) / total if total > 0 else np.zeros(len(rows), np.float32)
        else:
            genre_match = np.zeros(len(rows), np.float32)
        if self.realtime is not None:
            item_rt = self.realtime.item_counts(m.items)
        else:
            item_rt = np.zeros((len(rows), len(RT_ITEM)), np.float32)
        ts = dt.datetime.fromtimestamp(now, dt.UTC)
        return RankBatch(
            user_vector=user.vector, item_vectors=vectors, has_vector=has_vector,
            recall_prior=m.rank_prior, channel=m.channel,
            trending=np.log1p(cat.trending[rows]), genre_match=genre_match.astype(np.float32),
            user_realtime=np.log1p(np.array([user.realtime.get(n, 0.0) for n in RT_USER], np.float32)),
            item_realtime=np.log1p(item_rt), hour=hour_of_day(ts), weekday=weekday(ts),
            user_id=user.user_id, item_ids=m.items, page=page, device=device,
        )  # fmt: skip

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
