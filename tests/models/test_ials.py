"""iALS: each half-step is the exact minimiser of the documented loss, the loss never rises, it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recstack.models.ials import IALSConfig, _csr, ials_loss, solve_side, train_ials


def _pairs(rng: np.random.Generator, users: int, items: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    pairs = np.unique(np.stack([u, i]), axis=1)
    return pairs[0], pairs[1]


@pytest.mark.parametrize("block_edges", [1, 7, 1 << 16])
def test_a_half_step_equals_the_dense_weighted_least_squares(block_edges: int) -> None:
    """Row by row with the dense weights (α₀ everywhere, 1 + α₀ where observed), against the grouped,
    zero-padded batched solve; a user with no observations gets the zero vector."""
    rng = np.random.default_rng(1)
    users, items, d = 30, 50, 6
    u, i = _pairs(rng, users - 1, items, 300)  # the last user has nothing
    cfg = IALSConfig(dim=d, unobserved_weight=0.3, reg=0.05, reg_exponent=0.7, block_edges=block_edges)
    h = rng.normal(size=(items, d))
    got = solve_side(*_csr(torch.from_numpy(u), torch.from_numpy(i), users), torch.from_numpy(h), cfg).numpy()
    x = np.zeros((users, items))
    x[u, i] = 1
    for r in range(users):
        c = cfg.unobserved_weight + x[r]
        lam = cfg.reg * (x[r].sum() + cfg.unobserved_weight * items) ** cfg.reg_exponent
        want = np.linalg.solve((h * c[:, None]).T @ h + lam * np.eye(d), h.T @ x[r])
        np.testing.assert_allclose(got[r], want, rtol=1e-9, atol=1e-12)
    assert not got[-1].any()


def test_the_solution_is_a_stationary_point_of_the_loss() -> None:
    rng = np.random.default_rng(2)
    u, i = _pairs(rng, 25, 40, 250)
    cfg = IALSConfig(dim=5, unobserved_weight=0.2, reg=0.03)
    ut, it = torch.from_numpy(u), torch.from_numpy(i)
    items = torch.from_numpy(rng.normal(size=(40, 5)))
    users = solve_side(*_csr(ut, it, 25), items, cfg).requires_grad_(True)
    loss = ials_loss(ut, it, users, items, cfg, as_tensor=True)
    (grad,) = torch.autograd.grad(loss, users)
    assert grad.abs().max() < 1e-8
    moved = users.detach() + 1e-3 * torch.randn(users.shape, dtype=torch.float64)
    assert ials_loss(ut, it, moved, items, cfg) > float(loss.detach())


def test_training_lowers_the_loss_every_iteration_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    u, i = _pairs(rng, 60, 80, 900)
    cfg = IALSConfig(dim=8, iterations=6, seed=5)
    a = train_ials(u, i, 60, 80, cfg)
    losses = [a.history[f"loss.{k}"] for k in range(6)]
    assert all(later <= earlier + 1e-9 for earlier, later in zip(losses, losses[1:], strict=False))
    b = train_ials(u, i, 60, 80, cfg)
    np.testing.assert_array_equal(a.users, b.users)
    c = train_ials(u, i, 60, 80, IALSConfig(dim=8, iterations=6, seed=6))
    assert not np.allclose(a.users, c.users)
    assert a.users.shape == (60, 8) and a.items.shape == (80, 8) and a.users.dtype == np.float32


def test_it_ranks_held_out_items_of_the_users_own_community_first() -> None:
    """Two communities, each user rating a random half of its own community's items: the other half
    ranks above the other community's items (AUC per user, averaged)."""
    rng = np.random.default_rng(4)
    users, items = 80, 60
    group_u, group_i = np.arange(users) % 2, np.arange(items) % 2
    rows, cols, held = [], [], []
    for r in range(users):
        own = np.flatnonzero(group_i == group_u[r])
        picked = rng.permutation(own)
        rows += [r] * 15
        cols += picked[:15].tolist()
        held.append(picked[15:])
    res = train_ials(np.array(rows), np.array(cols), users, items, IALSConfig(dim=4, reg=0.01, iterations=8))
    score = res.users @ res.items.T
    auc = [
        (score[r, held[r]][:, None] > score[r, group_i != group_u[r]][None, :]).mean() for r in range(users)
    ]
    assert np.mean(auc) > 0.98 and min(auc) > 0.8


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        IALSConfig(dim=0)
    with pytest.raises(ValueError, match="reg"):
        IALSConfig(reg=0.0)
    with pytest.raises(ValueError, match="outside"):
        train_ials(np.array([0, 5]), np.array([0, 1]), 3, 3, IALSConfig(dim=2))
    with pytest.raises(ValueError, match="no interactions"):
        train_ials(np.array([], np.int64), np.array([], np.int64), 3, 3, IALSConfig(dim=2))
