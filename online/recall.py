"""Recall channels and the merge: each channel is a named strategy from ``serving.channels``.

A channel answers ``recall(user, context, n)`` with item ids best first and its own scores (numpy arrays; no
per-candidate Python objects on the hot path). ``run_channels`` runs the configured channels concurrently
with a per-channel deadline; ``merge`` filters (already seen, not approved, blocked), de-duplicates (the
first channel in configured order keeps the item) and applies each channel's quota after filtering, so the
quota counts servable items. The ``popular`` fallback is not a configured channel: the pipeline uses it when
everything else came back empty, so a request never gets an empty list.

Kinds (``ChannelSettings.kind``):

========== ==========================================================================================
embedding  FAISS inner-product search with the user's embedding (the release's index)
item2item  neighbours of the user's recent items (release neighbour lists, else cosine FAISS search)
cooccur    session co-occurrence neighbours of the recent items (graph snapshot ``item_item``)
genre      inverted index genre → items, for the user's top genres (history + recent items)
segment    demographic segment (age bucket × gender) → the segment's popular items
keyword    inverted index title / tag token → items, for the request's query or the recent items' tokens
trending   time-decayed popularity
fresh      items first seen in the last ``serving.fresh_days`` (cold-start items), most trending first
========== ==========================================================================================
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from recstack.features.settings import ChannelSettings
from recstack.models.catalog import APPROVED, tokens
from recstack.online.contracts import RequestContext

if TYPE_CHECKING:
    from recstack.online.pipeline import ServingRelease

SEEDS = 10
"""Recent items used as seeds by the item-to-item channels (newest first)."""
RECENCY_DECAY = 0.85
"""Weight of the i-th most recent seed: ``RECENCY_DECAY ** i``."""
log = logging.getLogger(__name__)
_EMPTY_I = np.empty(0, np.int64)
_EMPTY_F = np.empty(0, np.float32)


@dataclass(frozen=True)
class UserView:
    """What the pipeline knows about the requesting user when recall starts."""

    user_id: int
    vector: np.ndarray | None  # (d,) float32; None for a user the model has not seen
    seen: np.ndarray  # item ids the user interacted with (model history + real-time recent items)
    recent: np.ndarray  # real-time recent items, newest first (empty when Redis is unavailable)
    segment: int  # catalog segment, -1 unknown
    now_s: int
    query: str | None = None
    realtime: dict[str, float] = field(default_factory=dict)

    @property
    def seeds(self) -> np.ndarray:
        """Seeds of the item-to-item channels: the recent items, else the last items of the history."""
        if len(self.recent):
            return self.recent[:SEEDS]
        return self.seen[-SEEDS:][::-1]


@dataclass(frozen=True)
class Candidates:
    items: np.ndarray  # int64 item ids, best first
    scores: np.ndarray  # float32, the channel's own scale

    @staticmethod
    def empty() -> Candidates:
        return Candidates(_EMPTY_I, _EMPTY_F)

    def __len__(self) -> int:
        return len(self.items)


class Channel(Protocol):
    name: str

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates: ...


def _top(items: np.ndarray, scores: np.ndarray, n: int) -> Candidates:
    """The ``n`` best of (items, scores) by summed score per item (ties: the smaller item id)."""
    if len(items) == 0:
        return Candidates.empty()
    # np.unique(return_inverse) + bincount, written out: a channel's few hundred rows cost ~2x less this way
    order = np.argsort(items, kind="stable")  # stable: each item's scores are summed in input order
    ordered = items[order]
    new = np.empty(len(ordered), dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    total = np.add.reduceat(scores[order].astype(np.float64), starts)
    best = np.argsort(-total, kind="stable")[:n]
    return Candidates(ordered[starts][best], total[best].astype(np.float32))


def _ranked(items: np.ndarray, n: int) -> Candidates:
    items = items[:n]
    return Candidates(items.astype(np.int64, copy=False), (1.0 / (1.0 + np.arange(len(items)))).astype(np.float32))


class EmbeddingChannel:
    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.release = name, release

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        if user.vector is None or not np.any(user.vector):
            return Candidates.empty()
        ids, scores = self.release.index.search(user.vector, n + min(len(user.seen), n))
        keep = ids[0] >= 0
        return Candidates(ids[0][keep], scores[0][keep].astype(np.float32))


class ItemToItemChannel:
    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.release = name, release

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        seeds = user.seeds
        if len(seeds) == 0:
            return Candidates.empty()
        weights = RECENCY_DECAY ** np.arange(len(seeds))
        per_seed = max(10, 2 * n // len(seeds))
        items, scores = self.release.similar_many(seeds, per_seed)
        items, scores = items.ravel(), (scores * weights[:, None]).ravel()
        found = items >= 0  # lists are -1 padded (short lists, seeds the model does not know)
        return _top(items[found], scores[found], n)


class CooccurChannel:
    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.catalog = name, release.catalog

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        rows = self.catalog.rows_of(user.seeds)
        items, scores = [], []
        for i, row in enumerate(rows):
            if row >= 0:
                its, ws = self.catalog.cooccurring(int(row))
                items.append(its)
                scores.append(ws / (ws.max() if len(ws) else 1.0) * RECENCY_DECAY**i)
        if not items:
            return Candidates.empty()
        return _top(np.concatenate(items), np.concatenate(scores), n)


class GenreChannel:
    """Top genres of the user's history (recent items count double) → the most trending items of each."""

    top_genres = 3

    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.catalog = name, release.catalog

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        cat = self.catalog
        if not cat.genre_names:
            return Candidates.empty()
        hist = cat.rows_of(user.seen[-200:])
        recent = cat.rows_of(user.recent)
        gm = cat.genre_matrix
        interest = gm[hist[hist >= 0]].sum(0) + 2.0 * gm[recent[recent >= 0]].sum(0)
        if not interest.any():
            return Candidates.empty()
        top = np.argsort(-interest, kind="stable")[: self.top_genres]
        top = top[interest[top] > 0]
        share = interest[top] / interest[top].sum()
        items, scores = [], []
        for g, s in zip(top, share, strict=True):
            take = int(np.ceil(s * n)) + min(len(user.seen), n)
            rows = cat.by_genre(int(g))[:take]
            items.append(cat.item_ids[rows])
            scores.append(s / (1.0 + np.arange(len(rows))))
        return _top(np.concatenate(items), np.concatenate(scores), n + min(len(user.seen), n))


class SegmentChannel:
    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.catalog = name, release.catalog

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        return _ranked(self.catalog.segment_popular(user.segment), n + min(len(user.seen), 4 * n))


class KeywordChannel:
    """Inverted index token → items: the request's ``query`` tokens, else the rarest tokens of the titles and
    tags of the user's recent items (IDF-weighted)."""

    max_tokens = 5

    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.catalog = name, release.catalog

    def query_tokens(self, user: UserView) -> np.ndarray:
        """Token ids to look up: the query's, else the seeds' titles and tags, by count x IDF, best first."""
        cat = self.catalog
        if user.query:
            ids = cat.keyword_ids(tokens(user.query))
        else:
            ids = cat.row_keyword_ids(cat.rows_of(user.seeds[:5]))
        if len(ids) == 0:
            return ids
        uniq, counts = np.unique(ids, return_counts=True)
        weight = counts * cat.keyword_idf_of(uniq)
        order = np.argsort(-weight, kind="stable")
        return uniq[order][weight[order] > 0][: self.max_tokens]  # type: ignore[no-any-return]

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        cat = self.catalog
        token_ids = self.query_tokens(user)
        if len(token_ids) == 0:
            return Candidates.empty()
        take = n + min(len(user.seen), n)
        items, scores = [], []
        for t, idf in zip(token_ids, cat.keyword_idf_of(token_ids), strict=True):
            rows = cat.keyword_rows(int(t))[:take]
            items.append(cat.item_ids[rows])
            scores.append(idf / (1.0 + np.arange(len(rows))))
        return _top(np.concatenate(items), np.concatenate(scores), take)


class TrendingChannel:
    def __init__(self, name: str, release: ServingRelease) -> None:
        self.name, self.catalog = name, release.catalog

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        rows = self.catalog.trending_rows()[: n + min(len(user.seen), 4 * n)]
        return Candidates(self.catalog.item_ids[rows], self.catalog.trending[rows])


class FreshChannel:
    def __init__(self, name: str, release: ServingRelease, fresh_days: float) -> None:
        self.name, self.catalog, self.fresh_days = name, release.catalog, fresh_days

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        take = n + min(len(user.seen), n)
        rows = self.catalog.fresh_rows(user.now_s, self.fresh_days)[:take]
        return _ranked(self.catalog.item_ids[rows], take)


class PopularChannel:
    """The fallback: the model's popularity ranking, else the catalog's trending items; never empty while the
    catalog has an approved item."""

    name = "popular/fallback"

    def __init__(self, release: ServingRelease) -> None:
        self.release = release

    def recall(self, user: UserView, context: RequestContext, n: int) -> Candidates:
        art = self.release.artifact
        take = n + len(user.seen)
        items = art.popular_items[:take]
        if len(items) < take:
            extra = self.release.catalog.item_ids[self.release.catalog.trending_rows()[:take]]
            items = np.concatenate([items, extra[~np.isin(extra, items)]])[:take]
        return _ranked(items, take)


def make_channel(spec: ChannelSettings, release: ServingRelease, fresh_days: float) -> Channel:
    kinds: dict[str, type] = {
        "embedding": EmbeddingChannel, "item2item": ItemToItemChannel, "cooccur": CooccurChannel,
        "genre": GenreChannel, "segment": SegmentChannel, "keyword": KeywordChannel, "trending": TrendingChannel,
    }  # fmt: skip
    if spec.kind == "fresh":
        return FreshChannel(spec.name, release, fresh_days)
    return kinds[spec.kind](spec.name, release)  # type: ignore[no-any-return]


# -- running and merging ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelResult:
    name: str
    candidates: Candidates
    seconds: float
    status: str  # ok / timeout / error / empty


def _timed(channel: Channel, user: UserView, context: RequestContext, n: int) -> tuple[Candidates, float]:
    start = time.perf_counter()
    out = channel.recall(user, context, n)
    return out, time.perf_counter() - start


def run_channels(
    pool: cf.ThreadPoolExecutor, channels: list[tuple[Channel, ChannelSettings]], user: UserView,
    context: RequestContext, spare_cores: bool = True,
) -> list[ChannelResult]:  # fmt: skip
    """Run every channel; a channel past its ``timeout_ms`` or raising is reported, never fatal.

    Pool channels (``ChannelSettings.runs_in_pool(spare_cores)``) start first and run concurrently with each other and
    with the in-thread channels; a pool channel still running at its deadline is abandoned (its answer is
    dropped). An in-thread channel cannot be interrupted: its answer is dropped if it came after its deadline.
    """
    start = time.perf_counter()
    futures: dict[int, cf.Future[tuple[Candidates, float]]] = {
        i: pool.submit(_timed, ch, user, context, spec.quota)
        for i, (ch, spec) in enumerate(channels) if spec.runs_in_pool(spare_cores)
    }  # fmt: skip
    out: list[ChannelResult | None] = [None] * len(channels)
    for i, (ch, spec) in enumerate(channels):
        if i in futures:
            continue
        try:
            cands, seconds = _timed(ch, user, context, spec.quota)
        except Exception:
            log.exception("recall channel %s failed", ch.name)
            out[i] = ChannelResult(ch.name, Candidates.empty(), time.perf_counter() - start, "error")
            continue
        out[i] = _result(ch.name, cands, seconds, spec.timeout_ms)
    for i, fut in futures.items():
        ch, spec = channels[i]
        remaining = spec.timeout_ms / 1000.0 - (time.perf_counter() - start)
        try:
            cands, seconds = fut.result(timeout=max(remaining, 0.0))
        except cf.TimeoutError:
            fut.cancel()
            out[i] = ChannelResult(ch.name, Candidates.empty(), time.perf_counter() - start, "timeout")
            continue
        except Exception:
            log.exception("recall channel %s failed", ch.name)
            out[i] = ChannelResult(ch.name, Candidates.empty(), time.perf_counter() - start, "error")
            continue
        out[i] = _result(ch.name, cands, seconds, spec.timeout_ms)
    return [r for r in out if r is not None]


def _result(name: str, cands: Candidates, seconds: float, timeout_ms: float) -> ChannelResult:
    if seconds * 1000.0 > timeout_ms:
        return ChannelResult(name, Candidates.empty(), seconds, "timeout")
    return ChannelResult(name, cands, seconds, "ok" if len(cands) else "empty")


@dataclass(frozen=True)
class Merged:
    """Candidates after merge, in channel order then each channel's order."""

    items: np.ndarray  # int64
    rows: np.ndarray  # catalog rows
    scores: np.ndarray  # float32 recall score (the channel's scale)
    rank_prior: np.ndarray  # float32 1 / (1 + position in its channel), comparable across channels
    channel: np.ndarray  # int16 index into the channel list

    def __len__(self) -> int:
        return len(self.items)

    def take(self, idx: np.ndarray) -> Merged:
        return Merged(self.items[idx], self.rows[idx], self.scores[idx], self.rank_prior[idx], self.channel[idx])


def merge(
    results: list[Candidates], quotas: list[int], catalog_rows: Callable[[np.ndarray], np.ndarray], exclude: np.ndarray,
    state: np.ndarray, blocked: np.ndarray | None = None,
) -> Merged:  # fmt: skip
    """Filter, de-duplicate (earlier channel wins) and cap each channel at its quota, all vectorised.

    ``catalog_rows`` maps item ids to catalog rows (-1 unknown, dropped); ``state`` is the moderation state by
    row; ``exclude`` the user's seen items; ``blocked`` item ids blocked at run time (control stage).
    """
    sizes = np.array([len(c) for c in results], dtype=np.int64)
    if sizes.sum() == 0:
        return Merged(_EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_F, np.empty(0, np.int16))
    items = np.concatenate([c.items for c in results])
    scores = np.concatenate([c.scores for c in results]).astype(np.float32, copy=False)
    channel = np.repeat(np.arange(len(results), dtype=np.int16), sizes)
    starts = np.cumsum(sizes) - sizes
    pos = np.arange(len(items)) - np.repeat(starts, sizes)
    rows = catalog_rows(items)
    keep = rows >= 0
    keep[keep] = state[rows[keep]] == APPROVED
    # filters and de-duplication by catalog row (one row per item id): a flag table, not sorted set operations
    banned_ids = [ids for ids in (exclude, blocked) if ids is not None and len(ids)]
    if banned_ids:
        banned = np.zeros(len(state), dtype=bool)
        for ids in banned_ids:
            r = catalog_rows(ids)
            banned[r[r >= 0]] = True
        keep[keep] = ~banned[rows[keep]]
    # an item's every occurrence passes or fails the filters alike, so de-duplicating the kept ones is the same
    # as de-duplicating all: the first occurrence (earlier channel, then earlier position) stays
    kept = np.flatnonzero(keep)
    kept_rows = rows[kept]
    order = np.argsort(kept_rows, kind="stable")
    ordered = kept_rows[order]
    repeat = np.zeros(len(kept), dtype=bool)
    np.equal(ordered[1:], ordered[:-1], out=repeat[1:])
    keep[kept[order[repeat]]] = False
    # quota per channel after filtering: rank of each kept candidate within its channel
    kept_rank = np.cumsum(keep) - 1
    before = np.concatenate([[0], np.cumsum(keep)])[starts]
    rank_in_channel = kept_rank - np.repeat(before, sizes)
    keep &= rank_in_channel < np.repeat(np.asarray(quotas), sizes)
    idx = np.flatnonzero(keep)
    prior = (1.0 / (1.0 + pos[idx])).astype(np.float32)
    return Merged(items[idx], rows[idx], scores[idx], prior, channel[idx])
