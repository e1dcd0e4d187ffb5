"""The folded ensemble scores exactly as the weighted sum of the members' per-user standardised scores."""

from __future__ import annotations

import numpy as np
import pytest
from recstack.models.artifact import EmbeddingArtifact
from recstack.models.ensemble import EnsembleConfig, fold_ensemble, score_scale


def _member(rng: np.random.Generator, users: int, items: int, dim: int, name: str) -> EmbeddingArtifact:
    return EmbeddingArtifact(
        model=name, version="v", user_ids=np.arange(users, dtype=np.int64),
        user_vectors=rng.normal(size=(users, dim)).astype(np.float32) * rng.uniform(0.1, 5, (users, 1)).astype(np.float32),
        item_ids=np.arange(100, 100 + items, dtype=np.int64),
        item_vectors=(rng.normal(size=(items, dim)) + rng.normal(size=dim)).astype(np.float32),
        popular_items=np.arange(100, 105, dtype=np.int64), popular_scores=np.ones(5, np.float32),
        seen_indptr=np.zeros(users + 1, np.int64), seen_items=np.empty(0, np.int64),
    )  # fmt: skip


def test_score_scale_is_the_std_over_items() -> None:
    rng = np.random.default_rng(0)
    m = _member(rng, 20, 300, 8, "a")
    direct = (m.user_vectors.astype(np.float64) @ m.item_vectors.T.astype(np.float64)).std(axis=1)
    np.testing.assert_allclose(score_scale(m.user_vectors, m.item_vectors), direct, rtol=1e-6)


def test_folded_scores_rank_like_the_standardised_sum() -> None:
    rng = np.random.default_rng(1)
    members = [_member(rng, 30, 200, 8, "a"), _member(rng, 30, 200, 4, "b"), _member(rng, 30, 200, 6, "c")]
    weights = [0.5, 0.25, 1.0]
    folded = fold_ensemble(members, weights, "ens")
    assert folded.model == "ensemble" and folded.dim == 18
    got = folded.user_vectors.astype(np.float64) @ folded.item_vectors.T.astype(np.float64)
    want = np.zeros_like(got)
    for m, w in zip(members, weights, strict=True):
        s = m.user_vectors.astype(np.float64) @ m.item_vectors.T.astype(np.float64)
        want += w * (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)
    diff = got - want  # a per-user constant (the dropped means), nothing item-dependent
    np.testing.assert_allclose(diff - diff[:, :1], 0.0, atol=1e-4)
    assert (np.argsort(-got, 1)[:, :10] == np.argsort(-want, 1)[:, :10]).mean() > 0.99


def test_members_must_share_ids() -> None:
    rng = np.random.default_rng(2)
    a, b = _member(rng, 10, 50, 4, "a"), _member(rng, 11, 50, 4, "b")
    with pytest.raises(ValueError, match="other ids"):
        fold_ensemble([a, b], [1.0, 1.0], "x")
    with pytest.raises(ValueError, match="one weight per member"):
        fold_ensemble([a], [1.0, 2.0], "x")
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ials_seeds=0, ease_weight=0.0)


def test_the_popularity_prior_adds_beta_times_standardised_log_popularity() -> None:
    from recstack.models.ensemble import popularity_prior, with_prior
    from recstack.models.evaluation import Interactions
    from recstack.models.recall import RecallData

    users = np.array([1, 1, 2, 2, 3, 3, 3], np.int64)
    items = np.array([100, 101, 100, 102, 100, 101, 103], np.int64)
    data = RecallData.build(Interactions(users, items, np.arange(7, dtype=np.int64), np.ones(7)))
    prior = popularity_prior(data)
    pop = np.log1p(np.array([3, 2, 1, 1], np.float64))
    np.testing.assert_allclose(prior, (pop - pop.mean()) / pop.std())
    rng = np.random.default_rng(3)
    m = _member(rng, 3, 4, 5, "a")
    plus = with_prior(m, prior, 0.2)
    assert plus.dim == m.dim + 1
    before = m.user_vectors.astype(np.float64) @ m.item_vectors.T.astype(np.float64)
    after = plus.user_vectors.astype(np.float64) @ plus.item_vectors.T.astype(np.float64)
    np.testing.assert_allclose(after - before, np.tile(0.2 * prior, (3, 1)), atol=1e-5)
    with pytest.raises(ValueError, match="prior has shape"):
        with_prior(m, prior[:2], 0.2)
    with pytest.raises(ValueError, match=">= 0"):
        EnsembleConfig(popularity_weight=-1.0)


def test_deepwalk_members_take_the_return_parameters_in_turn() -> None:
    """(1, 4) over four DeepWalk members: seeds 42, 42, 43, 43 with p = 1, 4, 1, 4; the p = 4 members walk
    differently from the p = 1 member of the same seed."""
    from recstack.models.deepwalk import DeepWalkConfig
    from recstack.models.ensemble import fit_ensemble
    from recstack.models.evaluation import Interactions
    from recstack.models.recall import RecallData

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 600), rng.integers(0, 60, 600)
    data = RecallData.build(Interactions(users.astype(np.int64), items.astype(np.int64) + 1000,
                                         np.arange(600, dtype=np.int64), np.ones(600)))  # fmt: skip
    cfg = EnsembleConfig(deepwalk_seeds=4, graphsage_seeds=0, ials_seeds=0, ease_weight=0.0, popularity_weight=0.0,
                         deepwalk_return_ps=(1.0, 4.0),
                         deepwalk=DeepWalkConfig(dim=8, walks_per_node=2, walk_length=10, epochs=1))  # fmt: skip
    folded = fit_ensemble(data, cfg, "v")
    assert folded.params["members"] == ["deepwalk:42", "deepwalk:42", "deepwalk:43", "deepwalk:43"]
    assert folded.params["deepwalk_return_ps"] == [1.0, 4.0] and folded.dim == 4 * 8
    blocks = [folded.item_vectors[:, 8 * k : 8 * (k + 1)] for k in range(4)]
    assert not np.allclose(blocks[0], blocks[1])  # same seed, other walks
    with pytest.raises(ValueError, match="deepwalk_return_ps"):
        EnsembleConfig(deepwalk_return_ps=(1.0, 0.0))


def test_ials_and_ease_members_join_with_their_weights() -> None:
    """An ensemble of one iALS member and EASE only: its folded scores are
    ``w_ials · z(iALS) + w_ease · z(EASE)`` of the same members trained alone."""
    from recstack.models.ease import EASEConfig
    from recstack.models.ensemble import fit_ensemble
    from recstack.models.evaluation import Interactions
    from recstack.models.ials import IALSConfig
    from recstack.models.recall import RecallData, fit_ease, fit_ials

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 700), rng.integers(0, 60, 700)
    data = RecallData.build(Interactions(users.astype(np.int64), items.astype(np.int64) + 1000,
                                         np.arange(700, dtype=np.int64), rng.choice([0.2, 0.6, 1.0], 700)))  # fmt: skip
    ials, ease = IALSConfig(dim=6, iterations=4), EASEConfig(l2=10.0, rank=12, weighted=True)
    cfg = EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ials_seeds=1, ials_weight=0.25, ease_weight=0.5,
                         popularity_weight=0.0, ials=ials, ease=ease)  # fmt: skip
    folded = fit_ensemble(data, cfg, "v")
    assert folded.params["members"] == ["ials:42", "ease"] and folded.dim == 6 + 12
    assert folded.params["ials_weight"] == 0.25 and folded.params["ease_weight"] == 0.5
    want = np.zeros((data.num_users, data.num_items))
    for art, w in ((fit_ials(data, ials, "a"), 0.25), (fit_ease(data, ease, "b"), 0.5)):
        s = art.user_vectors.astype(np.float64) @ art.item_vectors.T
        want += w * (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)
    got = folded.user_vectors.astype(np.float64) @ folded.item_vectors.T
    np.testing.assert_allclose(got - got.mean(1, keepdims=True), want, atol=1e-4)
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ials_seeds=0, ease_weight=0.0)
    assert EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ease_weight=1.0).ease_weight == 1.0
    with pytest.raises(ValueError, match="weights"):
        EnsembleConfig(ials_weight=-1.0)


def test_ease_is_left_out_over_its_max_items() -> None:
    """A catalogue over EASE's max_items trains the other members and says so; EASE alone is refused."""
    from recstack.models.ease import EASEConfig
    from recstack.models.ensemble import fit_ensemble
    from recstack.models.evaluation import Interactions
    from recstack.models.ials import IALSConfig
    from recstack.models.recall import RecallData

    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    data = RecallData.build(Interactions(users.astype(np.int64), items.astype(np.int64),
                                         np.arange(400, dtype=np.int64), np.ones(400)))  # fmt: skip
    small = EASEConfig(max_items=10)
    said: list[str] = []
    cfg = EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ials_seeds=1, ease_weight=0.5, popularity_weight=0.0,
                         ials=IALSConfig(dim=4, iterations=2), ease=small)  # fmt: skip
    folded = fit_ensemble(data, cfg, "v", said.append)
    assert folded.params["members"] == ["ials:42"] and folded.params["ease_skipped"] is True
    assert any("EASE left out" in line for line in said)
    alone = EnsembleConfig(deepwalk_seeds=0, graphsage_seeds=0, ials_seeds=0, ease_weight=1.0, ease=small)
    with pytest.raises(ValueError, match="no ensemble member"):
        fit_ensemble(data, alone, "v")
