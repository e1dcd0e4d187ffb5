"""DeepWalk and GraphSAGE learn the structure of a planted two-community graph; GraphSAGE is inductive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recstack.features.keys import Col
from recstack.models.deepwalk import DeepWalkConfig
from recstack.models.evaluation import Interactions
from recstack.models.graphsage import SageConfig
from recstack.models.node_features import FeatureEncoder
from recstack.models.recall import (
    RecallData,
    fit_deepwalk,
    fit_graphsage,
    fit_lookalike,
    item_neighbors,
    lookalike_audience,
)

USERS, ITEMS = 60, 40


def _planted(
    seed: int = 0, holdout_user: int | None = None
) -> tuple[Interactions, pd.DataFrame, pd.DataFrame]:
    """Users 0..29 watch items 0..19, users 30..59 items 20..39 (8 each, plus 1 random cross-over)."""
    rng = np.random.default_rng(seed)
    us, its = [], []
    for u in range(USERS):
        block = 0 if u < USERS // 2 else ITEMS // 2
        for i in rng.choice(ITEMS // 2, 8, replace=False):
            us.append(u)
            its.append(block + int(i))
        us.append(u)
        its.append(int(rng.integers(0, ITEMS)))
    users = pd.DataFrame({Col.USER_ID: np.arange(USERS), Col.AGE: np.where(np.arange(USERS) < 30, 25, 55),
                          Col.GENDER: np.where(np.arange(USERS) < 30, "F", "M"), Col.OCCUPATION: "x",
                          Col.ZIP_CODE: "12345"})  # fmt: skip
    items = pd.DataFrame(
        {Col.ITEM_ID: np.arange(ITEMS), Col.GENRES: [["a"] if i < 20 else ["b"] for i in range(ITEMS)]}
    )
    data = Interactions(np.array(us), np.array(its), np.arange(len(us)), np.ones(len(us)))
    if holdout_user is not None:
        data = data.take(data.users != holdout_user)
    return data, users, items


def _cos(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def _same_vs_cross(item_vectors: np.ndarray) -> tuple[float, float]:
    sim = _cos(item_vectors)
    block = np.arange(ITEMS) < ITEMS // 2
    same = block[:, None] == block[None, :]
    off_diag = ~np.eye(ITEMS, dtype=bool)
    return float(sim[same & off_diag].mean()), float(sim[~same].mean())


def test_deepwalk_places_co_watched_items_closer() -> None:
    data, users, items = _planted()
    lines: list[str] = []
    art = fit_deepwalk(RecallData.build(data, users, items), DeepWalkConfig(dim=16, walks_per_node=8, walk_length=20,
                                                                            epochs=3), "t", progress=lines.append)  # fmt: skip
    assert sum("word2vec epoch" in x for x in lines) == 3  # progress per epoch
    same, cross = _same_vs_cross(art.item_vectors)
    assert same > cross + 0.2, (same, cross)
    ids, _ = item_neighbors(art.item_vectors, art.item_ids, 5)
    same_block = (ids < 20) == (art.item_ids[:, None] < 20)
    assert same_block.mean() > 0.8
    assert not (ids == art.item_ids[:, None]).any()  # an item is never its own neighbour


def test_deepwalk_is_deterministic_with_a_seed() -> None:
    data, users, items = _planted()
    cfg = DeepWalkConfig(dim=8, walks_per_node=2, walk_length=10, epochs=1)
    a = fit_deepwalk(RecallData.build(data, users, items), cfg, "a")
    b = fit_deepwalk(RecallData.build(data, users, items), cfg, "b")
    assert np.array_equal(a.item_vectors, b.item_vectors)


SAGE = SageConfig(
    dim=16, epochs=15, batch_size=128, lr=0.01, l2=1e-3, loss="softmax", negatives=32, fanouts=(5, 5)
)


def test_graphsage_places_co_watched_items_closer_and_ranks_own_community() -> None:
    data, users, items = _planted()
    rd = RecallData.build(data, users, items)
    art, _ = fit_graphsage(rd, SAGE, "t")
    same, cross = _same_vs_cross(art.item_vectors)
    assert same > cross + 0.2, (same, cross)
    scores = art.user_vectors @ art.item_vectors.T
    top = np.argsort(-scores, axis=1)[:, :5]
    own = (top < 20) == (np.arange(USERS)[:, None] < 30)
    assert own.mean() > 0.8


def test_graphsage_embeds_an_unseen_user_inductively() -> None:
    data, users, items = _planted(holdout_user=3)
    rd = RecallData.build(data, users, items)
    assert 3 not in rd.user_ids
    art, sage = fit_graphsage(rd, SAGE, "t")
    new = sage.embed_new_users(
        [np.array([0, 1, 2, 5, 999])], users[users[Col.USER_ID] == 3]
    )  # 999: unknown item
    assert new.shape == (1, art.dim) and np.isfinite(new).all()
    scores = new @ art.item_vectors.T
    top = art.item_ids[np.argsort(-scores[0])[:10]]
    assert (top < 20).mean() >= 0.8, top
    # features alone still give an embedding
    cold = sage.embed_new_users([np.array([], np.int64)], users[users[Col.USER_ID] == 3])
    assert np.isfinite(cold).all() and np.abs(cold).sum() > 0


def test_graphsage_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="fanouts"):
        SageConfig(layers=2, fanouts=(5,))


def test_graphsage_is_deterministic_with_a_seed() -> None:
    data, users, items = _planted()
    cfg = SageConfig(dim=8, epochs=2, batch_size=128, loss="softmax", negatives=16, fanouts=(3, 3))
    a, _ = fit_graphsage(RecallData.build(data, users, items), cfg, "a")
    b, _ = fit_graphsage(RecallData.build(data, users, items), cfg, "b")
    assert np.array_equal(a.user_vectors, b.user_vectors) and np.array_equal(a.item_vectors, b.item_vectors)


def test_item2vec_sessions_pull_session_neighbours_together() -> None:
    """Items 0 and 25 are never watched by the same user; sessions that pair them make them close."""
    data, users, items = _planted()
    rd = RecallData.build(data, users, items)
    cfg = DeepWalkConfig(dim=16, walks_per_node=4, walk_length=10, epochs=3, score="cosine")
    sessions = [np.array([0, 25, 0, 25, 0, 25])] * 300
    plain = fit_deepwalk(rd, cfg, "p")
    with_sessions = fit_deepwalk(rd, DeepWalkConfig(**{**cfg.__dict__, "use_sessions": True}), "s", sessions)
    col = {int(i): c for c, i in enumerate(rd.item_ids.tolist())}

    def sim(art) -> float:  # type: ignore[no-untyped-def]
        v = art.item_vectors
        a, b = v[col[0]], v[col[25]]
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert sim(with_sessions) > sim(plain) + 0.3


def test_lookalike_finds_users_of_the_same_block() -> None:
    """Users 0..29 are linked among themselves, 30..59 among themselves (attribute blocks)."""
    rng = np.random.default_rng(1)
    src, dst = [], []
    for u in range(USERS):
        lo = 0 if u < 30 else 30
        for v in rng.choice(np.arange(lo, lo + 30), 5, replace=False):
            if v != u:
                src.append(u)
                dst.append(int(v))
    _, users, items = _planted()
    enc = FeatureEncoder().fit(users, items)
    ids = np.arange(100, 100 + USERS)  # ids differ from rows
    art = fit_lookalike(ids, np.array(src), np.array(dst), users.assign(**{Col.USER_ID: ids}), enc,
                        cfg=SageConfig(dim=16, epochs=10, batch_size=64, loss="softmax", negatives=32,
                                   normalize=True, temperature=0.1, fanouts=(5, 5)))  # fmt: skip
    audience, scores = lookalike_audience(art, np.array([100, 101, 102, 99999]), 10)
    assert len(audience) == 10 and not set(audience.tolist()) & {100, 101, 102}
    assert (audience < 130).mean() >= 0.9 and np.all(np.diff(scores) <= 1e-6)
    with pytest.raises(ValueError, match="none of the seed users"):
        lookalike_audience(art, np.array([5]), 3)
