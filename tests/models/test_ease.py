"""EASE: the closed form solves its constrained least squares, and the served factorisation reproduces x_u B."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from recstack.models.ease import EASEConfig, ease_matrix, train_ease


def _data(seed: int, users: int = 40, items: int = 30, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), rng.integers(0, items, n)


def test_b_satisfies_the_optimality_conditions() -> None:
    """Zero diagonal, and the gradient of |X − XB|² + λ|B|² vanishes off the diagonal (the diagonal carries
    the constraint's multipliers)."""
    u, i = _data(0)
    x = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(40, 30))
    x.data[:] = 1
    b = ease_matrix(x, 7.0).numpy()
    assert np.abs(np.diag(b)).max() == 0
    xd = x.toarray()
    grad = xd.T @ (xd @ b - xd) + 7.0 * b
    off = grad - np.diag(np.diag(grad))
    assert np.abs(off).max() < 1e-9
    assert np.abs(np.diag(grad)).max() > 1e-3  # the constraint binds: an unconstrained B would differ


def test_full_rank_vectors_reproduce_x_times_b_and_lower_ranks_approach_it() -> None:
    u, i = _data(1)
    x = np.zeros((40, 30))
    x[u, i] = 1
    want = x @ ease_matrix(sp.csr_matrix(x), 20.0).numpy()
    full = train_ease(u, i, 40, 30, EASEConfig(l2=20.0, rank=64))  # rank is capped at the 30 items
    assert full.users.shape == (40, 30) and full.items.shape == (30, 30)
    np.testing.assert_allclose(full.users @ full.items.T, want, atol=1e-4)
    errors = []
    for rank in (4, 12, 24):
        r = train_ease(u, i, 40, 30, EASEConfig(l2=20.0, rank=rank))
        errors.append(np.abs(r.users @ r.items.T - want).mean())
    assert errors[0] > errors[1] > errors[2]
    assert 0 < r.history["energy_kept"] < 1


def test_duplicate_interactions_count_once() -> None:
    u, i = _data(2)
    a = train_ease(u, i, 40, 30, EASEConfig(l2=5.0, rank=8))
    b = train_ease(
        np.concatenate([u, u[:50]]), np.concatenate([i, i[:50]]), 40, 30, EASEConfig(l2=5.0, rank=8)
    )
    np.testing.assert_allclose(a.users @ a.items.T, b.users @ b.items.T, atol=1e-5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        EASEConfig(rank=0)
    with pytest.raises(ValueError, match="max_items"):
        train_ease(np.array([0]), np.array([0]), 1, 50, EASEConfig(max_items=10))
    with pytest.raises(ValueError, match="outside"):
        train_ease(np.array([0, 3]), np.array([0, 1]), 2, 5, EASEConfig())
    with pytest.raises(ValueError, match="no interactions"):
        train_ease(np.array([], np.int64), np.array([], np.int64), 2, 5, EASEConfig())


def test_a_large_catalogue_takes_the_randomised_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above FULL_SVD_ITEMS the truncated SVD is randomised (seeded): the same scores as the exact one's
    leading directions, and the same every call."""
    import recstack.models.ease as ease

    u, i = _data(3, users=60, items=40, n=500)
    exact = train_ease(u, i, 60, 40, EASEConfig(l2=5.0, rank=6))
    monkeypatch.setattr(ease, "FULL_SVD_ITEMS", 10)
    fast = train_ease(u, i, 60, 40, EASEConfig(l2=5.0, rank=6))
    again = train_ease(u, i, 60, 40, EASEConfig(l2=5.0, rank=6))
    np.testing.assert_array_equal(fast.users, again.users)
    want = exact.users @ exact.items.T
    assert np.abs(fast.users @ fast.items.T - want).max() < 0.05 * np.abs(want).max()
    assert abs(fast.history["energy_kept"] - exact.history["energy_kept"]) < 0.02


def test_weighted_x_holds_each_pairs_strongest_weight_and_b_solves_for_it() -> None:
    """weighted=True: X holds the interactions' strengths (a repeated pair its strongest), B is the closed form
    for that X, and unit weights give the binary model exactly."""
    u, i = _data(4)
    rng = np.random.default_rng(4)
    w = rng.choice([0.2, 0.4, 0.6, 0.8, 1.0], len(u))
    cfg = EASEConfig(l2=8.0, rank=64, weighted=True)
    got = train_ease(u, i, 40, 30, cfg, w)
    x = np.zeros((40, 30))
    np.maximum.at(x, (u, i), w)
    want = x @ ease_matrix(sp.csr_matrix(x), 8.0).numpy()
    np.testing.assert_allclose(got.users @ got.items.T, want, atol=1e-4)
    binary = train_ease(u, i, 40, 30, EASEConfig(l2=8.0, rank=64))
    unit = train_ease(u, i, 40, 30, cfg, np.ones(len(u)))
    np.testing.assert_allclose(unit.users @ unit.items.T, binary.users @ binary.items.T, atol=1e-6)
    assert np.abs(got.users @ got.items.T - binary.users @ binary.items.T).max() > 1e-2  # the weights matter
    # a pair repeated with a weaker weight keeps its strongest
    again = train_ease(np.r_[u, u[:40]], np.r_[i, i[:40]], 40, 30, cfg, np.r_[w, w[:40] / 2])
    np.testing.assert_allclose(again.users @ again.items.T, got.users @ got.items.T, atol=1e-6)


def test_weighted_ease_refuses_bad_weights() -> None:
    u, i = _data(5)
    cfg = EASEConfig(l2=5.0, rank=4, weighted=True)
    for bad, why in ((None, "one weight per interaction"), (np.ones(3), "one weight per interaction"),
                     (np.r_[np.ones(len(u) - 1), 0.0], "positive"), (np.r_[np.ones(len(u) - 1), np.nan], "finite")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            train_ease(u, i, 40, 30, cfg, bad)


def _dense(u: np.ndarray, i: np.ndarray, users: int = 40, items: int = 30) -> np.ndarray:
    x = np.zeros((users, items))
    x[u, i] = 1.0
    return x


def test_dlae_solves_its_penalised_least_squares() -> None:
    """zero_diagonal=False: B minimises |X − XB|² + |Λ^½ B|² with Λ = p / (1 − p) · diag(XᵀX) + λ, so the
    gradient vanishes everywhere, and B keeps a diagonal (nothing forbids it)."""
    u, i = _data(6)
    x = _dense(u, i)
    p, lam = 0.25, 3.0
    b = ease_matrix(sp.csr_matrix(x), lam, dropout=p, zero_diagonal=False).numpy()
    penalty = p / (1 - p) * np.diag(x.T @ x) + lam
    grad = x.T @ (x @ b - x) + penalty[:, None] * b
    assert np.abs(grad).max() < 1e-9
    assert np.abs(np.diag(b)).min() > 1e-3
    # a larger dropout shrinks the diagonal (the identity) harder
    stronger = ease_matrix(sp.csr_matrix(x), lam, dropout=0.6, zero_diagonal=False).numpy()
    assert np.diag(stronger).mean() < np.diag(b).mean()


def test_dlae_is_the_least_squares_of_dropout_corrupted_inputs() -> None:
    """The DLAE's B equals, up to sampling error, the ridge solution of reconstructing X from many
    dropout-corrupted copies M ∘ X / (1 − p): the penalty Λ is what input dropout amounts to on average. A
    wrong factor in Λ (p, p (1 − p), 1.3 p / (1 − p)) lands 0.05–0.11 away; sampling error is ~0.003."""
    rng = np.random.default_rng(7)
    u, i = rng.integers(0, 30, 200), rng.integers(0, 10, 200)
    x = np.zeros((30, 10))
    x[u, i] = 1.0
    p, lam, samples = 0.3, 2.0, 4000
    corrupted = (rng.random((samples, *x.shape)) >= p) * x / (1 - p)
    lhs = np.einsum("sui,suj->ij", corrupted, corrupted) / samples + lam * np.eye(10)
    b_sampled = np.linalg.solve(lhs, np.einsum("sui,uj->ij", corrupted, x) / samples)
    b = ease_matrix(sp.csr_matrix(x), lam, dropout=p, zero_diagonal=False).numpy()
    assert np.abs(b - b_sampled).max() < 0.015


def test_edlae_keeps_the_zero_diagonal_with_the_dropout_penalty() -> None:
    u, i = _data(8)
    x = _dense(u, i)
    p, lam = 0.25, 3.0
    b = ease_matrix(sp.csr_matrix(x), lam, dropout=p).numpy()
    assert np.abs(np.diag(b)).max() == 0
    penalty = p / (1 - p) * np.diag(x.T @ x) + lam
    grad = x.T @ (x @ b - x) + penalty[:, None] * b
    assert np.abs(grad - np.diag(np.diag(grad))).max() < 1e-9
    plain = ease_matrix(sp.csr_matrix(x), lam).numpy()
    assert np.abs(b - plain).max() > 1e-3  # the dropout penalty changes the model


def test_dlae_vectors_reproduce_x_times_b() -> None:
    u, i = _data(9)
    cfg = EASEConfig(l2=4.0, rank=64, dropout=0.25, zero_diagonal=False, weighted=True)
    w = np.random.default_rng(9).choice([0.4, 0.8, 1.0], len(u))
    got = train_ease(u, i, 40, 30, cfg, w)
    x = np.zeros((40, 30))
    np.maximum.at(x, (u, i), w)
    want = x @ ease_matrix(sp.csr_matrix(x), 4.0, dropout=0.25, zero_diagonal=False).numpy()
    np.testing.assert_allclose(got.users @ got.items.T, want, atol=1e-4)


def test_bad_dropout_is_refused() -> None:
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="dropout"):
            EASEConfig(dropout=bad)
        with pytest.raises(ValueError, match="dropout"):
            ease_matrix(sp.csr_matrix(np.eye(3)), 1.0, dropout=bad)
    with pytest.raises(ValueError, match="identity"):
        EASEConfig(zero_diagonal=False)
