"""Every recall channel on a small real release, the merge rules, concurrency with deadlines, the cascade's
fallbacks."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import numpy as np
import pytest
from recstack.features.settings import ChannelSettings, ServingSettings, available_cores
from recstack.models.catalog import APPROVED, PENDING, segment_of, tokens
from recstack.online.contracts import RequestContext
from recstack.online.pipeline import Recommender, ServingRelease
from recstack.online.ranking import diversify
from recstack.online.recall import Candidates, UserView, make_channel, merge, run_channels

from tests.online.conftest import NOW, SmallWorld


def _release(world: SmallWorld) -> ServingRelease:
    return ServingRelease.load(world.release_dir)


def _user(world: SmallWorld, release: ServingRelease, user_id: int, recent=(), query=None) -> UserView:  # type: ignore[no-untyped-def]
    vec, seen = release.user_history(user_id)
    recent = np.asarray(recent, np.int64)
    return UserView(user_id, vec, np.concatenate([seen, recent]), recent,
                    release.catalog.segment_of_user(user_id), int(NOW.timestamp()), query)  # fmt: skip


def _channel(kind: str, release: ServingRelease, quota: int = 10):  # type: ignore[no-untyped-def]
    return make_channel(ChannelSettings(name=kind, kind=kind, quota=quota), release, fresh_days=30)  # type: ignore[arg-type]


def test_embedding_channel_is_exact_inner_product_search(world: SmallWorld) -> None:
    rel = _release(world)
    user = _user(world, rel, 3)
    got = _channel("embedding", rel).recall(user, RequestContext(), 10)
    scores = world.artifact.item_vectors @ user.vector
    expected = world.artifact.item_ids[np.argsort(-scores)][: len(got)]
    assert got.items.tolist() == expected.tolist() and len(got) >= 10
    assert np.allclose(got.scores, np.sort(scores)[::-1][: len(got)], atol=1e-5)
    assert len(_channel("embedding", rel).recall(_user(world, rel, 999), RequestContext(), 10)) == 0


def test_item_to_item_channel_uses_the_recent_items_neighbours(world: SmallWorld) -> None:
    rel = _release(world)
    seed = int(world.artifact.item_ids[7])
    got = _channel("item2item", rel).recall(_user(world, rel, 3, recent=[seed]), RequestContext(), 5)
    nb_ids, _ = rel.neighbors.of(seed)  # type: ignore[union-attr]
    assert got.items.tolist() == nb_ids[:5].tolist()
    # a seed the model does not know adds nothing (its padded list never leaks a -1)
    mixed = _channel("item2item", rel).recall(_user(world, rel, 3, recent=[10**9, seed]), RequestContext(), 50)
    assert (mixed.items >= 0).all() and sorted(mixed.items.tolist()) == sorted(nb_ids.tolist())
    # without recent items the seeds are the last items of the history
    hist = _channel("item2item", rel).recall(_user(world, rel, 3), RequestContext(), 5)
    assert len(hist) == 5


def test_cooccurrence_channel_follows_session_pairs(world: SmallWorld) -> None:
    rel = _release(world)
    seed = int(world.artifact.item_ids[10])
    got = _channel("cooccur", rel).recall(_user(world, rel, 999, recent=[seed]), RequestContext(), 5)
    assert got.items.tolist() == [seed + 10]  # item_item links each item to the next one


def test_genre_channel_serves_the_users_top_genre(world: SmallWorld) -> None:
    rel = _release(world)
    cat = rel.catalog
    action = [int(i) for i, g in zip(world.items.item_id, world.items.genres, strict=True) if g[0] == "action"]
    user = _user(world, rel, 999, recent=action[:4])  # an unknown user who just watched four action films
    got = _channel("genre", rel).recall(user, RequestContext(), 10)
    has_action = ["action" in [cat.genre_names[g] for g in cat.genre_idx[cat.genre_indptr[r]:cat.genre_indptr[r + 1]]]
                  for r in cat.rows_of(got.items)]  # fmt: skip
    # interest 4 action : 1 comedy (item 10 is action + comedy), so action items lead and dominate
    assert has_action[0] and sum(has_action[:10]) >= 7


def test_segment_channel_serves_the_segments_popular_items(world: SmallWorld) -> None:
    rel = _release(world)
    user_id = 4
    row = world.users[world.users.user_id == user_id].iloc[0]
    seg = rel.catalog.segment_names.index(segment_of(int(row.age), row.gender))
    got = _channel("segment", rel).recall(_user(world, rel, user_id), RequestContext(), 5)
    members = world.users[[segment_of(int(a), g) == rel.catalog.segment_names[seg]
                           for a, g in zip(world.users.age, world.users.gender, strict=True)]].user_id  # fmt: skip
    weights = world.user_item[world.user_item.user_id.isin(members)].groupby("item_id").decayed_weight.sum()
    assert got.items[:3].tolist() == weights.sort_values(ascending=False).index[:3].tolist()


def test_keyword_channel_matches_title_tokens(world: SmallWorld) -> None:
    rel = _release(world)
    got = _channel("keyword", rel).recall(_user(world, rel, 999, query="ghost"), RequestContext(), 50)
    titles = dict(zip(world.items.item_id, world.items.title, strict=True))
    assert len(got) > 0 and all("ghost" in tokens(titles[int(i)]) for i in got.items)
    assert len(got) == sum("ghost" in tokens(t) for t in world.items.title)


def test_trending_and_fresh_channels(world: SmallWorld) -> None:
    rel = _release(world)
    user = _user(world, rel, 999)
    trend = _channel("trending", rel).recall(user, RequestContext(), 5)
    pop = world.user_item.groupby("item_id").decayed_weight.sum().sort_values(ascending=False)
    assert trend.items.tolist() == pop.index[:5].tolist()
    fresh = _channel("fresh", rel).recall(user, RequestContext(), 20)
    never_seen = set(world.artifact.item_ids[-5:].tolist())  # no interactions at all: brand new
    assert never_seen <= set(fresh.items.tolist())
    recent_first = world.user_item.groupby("item_id").first_ts.min()
    old = set(recent_first[recent_first < NOW - np.timedelta64(30, "D")].index.tolist())
    assert not old & set(fresh.items.tolist())


def test_merge_filters_dedupes_and_applies_quotas_after_filtering() -> None:
    a = Candidates(np.array([1, 2, 3, 4, 5]), np.ones(5, np.float32))
    b = Candidates(np.array([2, 6, 7, 8, 9]), np.ones(5, np.float32))
    state = np.ones(20, np.int8)
    state[7] = PENDING
    merged = merge([a, b], [3, 2], lambda x: np.where(np.asarray(x) < 20, x, -1), exclude=np.array([1]),
                   state=state, blocked=np.array([6]))  # fmt: skip
    # a: 1 seen -> 2, 3, 4 (quota 3); b: 2 taken by a, 6 blocked, 7 not approved -> 8, 9
    assert merged.items.tolist() == [2, 3, 4, 8, 9]
    assert merged.channel.tolist() == [0, 0, 0, 1, 1]
    assert merged.rank_prior[0] == pytest.approx(1 / 2)  # 2 was second in channel a


def _merge_by_hand(results, quotas, rows_of, exclude, state, blocked):  # type: ignore[no-untyped-def]
    """The merge rules one candidate at a time: known, approved, not seen, not blocked, not taken by an earlier
    occurrence, within its channel's quota (counted after filtering)."""
    banned = {int(i) for i in exclude} | {int(i) for i in (blocked if blocked is not None else [])}
    first: dict[int, tuple[int, int]] = {}
    for c, cands in enumerate(results):
        for p, item in enumerate(cands.items.tolist()):
            first.setdefault(item, (c, p))
    out = []
    for c, (cands, quota) in enumerate(zip(results, quotas, strict=True)):
        taken = 0
        for p, item in enumerate(cands.items.tolist()):
            row = int(rows_of(np.array([item]))[0])
            if row < 0 or state[row] != APPROVED or item in banned or first[item] != (c, p):
                continue
            if taken < quota:
                out.append((item, row, float(cands.scores[p]), float(np.float32(1.0 / (1.0 + p))), c))
            taken += 1
    return out


def test_merge_equals_its_rules_on_random_inputs() -> None:
    rng = np.random.default_rng(7)
    kept = 0
    state = rng.choice([APPROVED, PENDING], 60, p=[0.85, 0.15]).astype(np.int8)
    rows_of = lambda x: np.where((np.asarray(x) >= 0) & (np.asarray(x) < 60), np.asarray(x), -1)  # noqa: E731
    for trial in range(300):
        results = []
        for _ in range(int(rng.integers(1, 5))):
            items = rng.integers(-3, 70, int(rng.integers(0, 30)))
            results.append(Candidates(items, rng.random(len(items)).astype(np.float32)))
        quotas = rng.integers(0, 20, len(results)).tolist()
        exclude = rng.integers(-2, 70, int(rng.integers(0, 10)))
        blocked = rng.integers(-2, 70, int(rng.integers(0, 4))) if trial % 2 else None
        m = merge(results, quotas, rows_of, exclude, state, blocked)
        got = list(zip(m.items.tolist(), m.rows.tolist(), m.scores.tolist(), m.rank_prior.tolist(),
                       m.channel.tolist(), strict=True))  # fmt: skip
        want = _merge_by_hand(results, quotas, rows_of, exclude, state, blocked)
        assert got == want, trial
        kept += len(want)
    assert kept > 1000  # the inputs leave plenty through every rule


class _Slow:
    def __init__(self, name: str, delay: float) -> None:
        self.name, self.delay = name, delay

    def recall(self, user, context, n):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return Candidates(np.array([1, 2]), np.ones(2, np.float32))


class _Broken:
    name = "broken"

    def recall(self, user, context, n):  # type: ignore[no-untyped-def]
        raise RuntimeError("index shard down")


def test_channels_run_concurrently_and_a_slow_or_broken_one_is_dropped(world: SmallWorld) -> None:
    rel = _release(world)
    user = _user(world, rel, 3)
    pool = cf.ThreadPoolExecutor(4)
    channels = [
        (_Slow("slow-pool-a", 0.2), ChannelSettings(name="slow-pool-a", kind="embedding", quota=5, timeout_ms=50)),
        (_Slow("fast-pool", 0.0), ChannelSettings(name="fast-pool", kind="embedding", quota=5, timeout_ms=50)),
        (_Broken(), ChannelSettings(name="broken", kind="trending", quota=5)),
        (_Slow("slow-inline", 0.06), ChannelSettings(name="slow-inline", kind="trending", quota=5, timeout_ms=20)),
    ]  # fmt: skip
    start = time.perf_counter()
    out = run_channels(pool, channels, user, RequestContext())  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    status = {r.name: r.status for r in out}
    assert status == {"slow-pool-a": "timeout", "fast-pool": "ok", "broken": "error", "slow-inline": "timeout"}
    assert elapsed < 0.15  # the 200 ms channel was abandoned at its 50 ms deadline
    pool.shutdown(wait=False)


class _WhereRun:
    name = "where"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def recall(self, user, context, n):  # type: ignore[no-untyped-def]
        self.threads.append(threading.current_thread().name)
        return Candidates(np.array([1, 2]), np.ones(2, np.float32))


def test_embedding_channel_uses_the_pool_only_with_a_spare_core(world: SmallWorld) -> None:
    rel = _release(world)
    user = _user(world, rel, 3)
    pool = cf.ThreadPoolExecutor(2, thread_name_prefix="recall")
    emb, forced = _WhereRun(), _WhereRun()
    channels = [(emb, ChannelSettings(name="emb", kind="embedding", quota=5)),
                (forced, ChannelSettings(name="forced", kind="trending", quota=5, parallel=True))]  # fmt: skip
    run_channels(pool, channels, user, RequestContext(), spare_cores=True)  # type: ignore[arg-type]
    run_channels(pool, channels, user, RequestContext(), spare_cores=False)  # type: ignore[arg-type]
    me = threading.current_thread().name
    assert emb.threads[0].startswith("recall") and emb.threads[1] == me
    assert all(t.startswith("recall") for t in forced.threads)  # an explicit `parallel` wins
    pool.shutdown(wait=False)
    cores = available_cores()
    assert ServingSettings(workers=1).spare_cores == (cores >= 2)
    assert Recommender(rel, ServingSettings(workers=cores)).spare_cores is False


def test_recommender_degrades_but_always_answers(world: SmallWorld) -> None:
    rel = _release(world)
    rec = Recommender(rel, ServingSettings())
    good = rec.recommend(3, 10, RequestContext(time=NOW))
    assert len(good.items) == 10 and not good.fallback and good.degraded == []
    seen = set(world.artifact.seen(2).tolist())
    assert not seen & {i.item_id for i in good.items}
    assert len({i.item_id for i in good.items}) == 10

    cold = rec.recommend(10**9, 10, RequestContext(time=NOW))  # unknown user: segment-less, history-less
    assert len(cold.items) == 10 and {i.channel for i in cold.items} <= {"trending/decayed", "fresh/cold-start",
                                                                           "popular/fallback"}  # fmt: skip

    # every channel failing: the popularity fallback, flagged
    broken = Recommender(rel, ServingSettings())
    broken.channels = [(_Broken(), ChannelSettings(name="broken", kind="trending", quota=5))]  # type: ignore[list-item]
    out = broken.recommend(3, 5, RequestContext(time=NOW))
    assert out.fallback and len(out.items) == 5 and {i.channel for i in out.items} == {"popular/fallback"}
    assert "channel:broken:error" in out.degraded

    # a ranker that raises: the pre-rank order (the user's dot products), flagged
    class BadRanker:
        name = "bad"

        def score(self, batch):  # type: ignore[no-untyped-def]
            raise RuntimeError("model server down")

    ranked = Recommender(rel, ServingSettings(rerank={"max_same_genre": 10}), ranker=BadRanker())  # type: ignore[arg-type]
    out = ranked.recommend(3, 5, RequestContext(time=NOW))
    assert out.degraded == ["ranker"] and len(out.items) == 5
    vec, _ = rel.user_history(3)
    dots = [float(rel.artifact.item_vectors[rel.item_row(i.item_id)] @ vec) for i in out.items]  # type: ignore[index]
    assert dots == sorted(dots, reverse=True)


def test_rerank_spreads_genres() -> None:
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2.0])
    genre = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    picked = diversify(scores, genre, 6, window=3, max_same=1)
    assert picked.tolist()[:4] == [0, 4, 6, 1]  # action, then the best comedy, the best drama, action again
    assert len(picked) == 6 and len(set(picked.tolist())) == 6
    # never shorter than asked when only one genre is left
    assert len(diversify(np.arange(5.0), np.zeros(5, int), 5, 3, 1)) == 5


def test_catalog_round_trip_and_corruption(world: SmallWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recstack.models.artifact import ArtifactError
    from recstack.models.catalog import Catalog

    cat = Catalog.load(world.release_dir / "catalog")
    assert cat.item_ids.tolist() == world.catalog.item_ids.tolist() and cat.titles == world.catalog.titles
    with open(world.release_dir / "catalog" / "arrays.npz", "r+b") as f:
        f.seek(50)
        f.write(b"xx")
    with pytest.raises(ArtifactError, match="checksum"):
        ServingRelease.load(world.release_dir)


def test_mlp_ranker_fast_path_equals_the_module_forward(world: SmallWorld) -> None:
    from recstack.online.ranking import MLPRanker, RankBatch

    rng = np.random.default_rng(0)
    n, d = 50, world.artifact.dim
    batch = RankBatch(
        user_vector=rng.standard_normal(d).astype(np.float32), item_vectors=rng.standard_normal((n, d)).astype(np.float32),
        has_vector=np.ones(n, bool), recall_prior=rng.random(n).astype(np.float32), channel=np.zeros(n, np.int16),
        trending=rng.random(n).astype(np.float32), genre_match=rng.random(n).astype(np.float32),
        user_realtime=rng.random(3).astype(np.float32), item_realtime=rng.random((n, 4)).astype(np.float32),
        hour=13, weekday=2,
    )  # fmt: skip
    ranker = MLPRanker(d, seed=3)
    assert np.allclose(ranker.score(batch), ranker.score_module(batch), atol=1e-4)
    cold = RankBatch(**{**batch.__dict__, "user_vector": None})
    assert np.allclose(ranker.score(cold), ranker.score_module(cold), atol=1e-4)
