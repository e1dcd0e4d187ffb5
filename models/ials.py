"""Implicit alternating least squares (iALS) on the user–item interactions, in torch.

The loss (Hu et al., 2008, in the form of Rendle et al., 2022, "Revisiting the Performance of iALS on Item
Recommendation Benchmarks") over user vectors ``w_u`` and item vectors ``h_i``::

    Σ_{(u,i) observed} (1 − w_u·h_i)²  +  α₀ Σ_{all u,i} (w_u·h_i)²
      +  λ Σ_u (n_u + α₀·I)^ν |w_u|²  +  λ Σ_i (n_i + α₀·U)^ν |h_i|²

``α₀`` (``unobserved_weight``) weighs every unobserved pair as a weak negative; the regulariser grows with a
row's number of observations ``n`` (``reg_exponent`` ν = 1: as often as its terms appear in the loss). Each
half-step solves one side exactly, row by row: ``(α₀ HᵀH + H_uᵀH_u + λ_u I) w_u = H_uᵀ 1``. The Gram matrix
``HᵀH`` is shared; ``H_uᵀH_u`` is summed over the row's observed items only, so a sweep costs
O(edges · d² + rows · d³), not O(users · items). Rows are solved in blocks (batched Cholesky) of at most
``block_edges`` gathered vectors at a time, so memory stays bounded on a large graph.

Every observation counts alike (the rating is not a confidence here): on the ml-100k reference split, whose
relevance is "rated at all", that is what the benchmark rewards. Runs on CUDA when ``device`` says so.
Output: user and item vectors whose inner product is the model's score (the recall artifact's contract).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IALSConfig:
    dim: int = 64
    unobserved_weight: float = 0.2  # α₀
    reg: float = 0.02  # λ
    reg_exponent: float = 1.0  # ν
    iterations: int = 10
    init_std: float = 0.1  # of the initial vectors, divided by √dim
    block_edges: int = 1 << 16  # item vectors gathered at once (32 MB at d = 64)
    seed: int = 42
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.dim, self.iterations, self.block_edges) <= 0:
            raise ValueError("dim, iterations and block_edges must be positive")
        if self.unobserved_weight < 0 or self.reg <= 0 or self.reg_exponent < 0 or self.init_std <= 0:
            raise ValueError("unobserved_weight and reg_exponent must be >= 0, reg and init_std > 0")


@dataclass
class IALSResult:
    users: np.ndarray  # (U, dim) float32
    items: np.ndarray  # (I, dim) float32
    history: dict[str, float]


def _csr(rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr (n + 1,), cols sorted by row) of a set of (row, col) pairs."""
    order = torch.argsort(rows, stable=True)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols[order]


def solve_side(
    indptr: torch.Tensor, cols: torch.Tensor, other: torch.Tensor, cfg: IALSConfig
) -> torch.Tensor:
    """The exact minimiser of the loss over one side's vectors (n, d), the other side ``other`` (m, d) fixed.

    Row r's observed columns are ``cols[indptr[r]:indptr[r + 1]]``. Rows are grouped by their number of
    observations rounded up to a power of two, so each group's ``H_uᵀH_u`` is one batched matrix product over
    zero-padded (rows, L, d) blocks (at most twice the work of the exact sums, all of it in BLAS)."""
    n, m, d = len(indptr) - 1, other.shape[0], other.shape[1]
    dev, dtype = other.device, other.dtype
    a0 = cfg.unobserved_weight
    gram = a0 * (other.T @ other)
    counts = indptr[1:] - indptr[:-1]
    reg = cfg.reg * (counts.to(dtype) + a0 * m) ** cfg.reg_exponent  # (n,)
    eye = torch.eye(d, dtype=dtype, device=dev)
    out = torch.zeros((n, d), dtype=dtype, device=dev)
    width = torch.where(counts > 0, 2 ** torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), 0)
    max_rows = max(1, min(cfg.block_edges, 1 << 11))  # (rows, d, d) systems at a time
    for w in torch.unique(width).tolist():
        if w == 0:  # no observations: (α₀ HᵀH + λ I) w = 0, the zero vector
            continue
        group = torch.nonzero(width == w).flatten()
        step = max(1, min(max_rows, cfg.block_edges // w))
        for lo in range(0, len(group), step):
            rows = group[lo : lo + step]
            offset = torch.arange(w, device=dev)
            pos = indptr[rows][:, None] + offset[None, :]
            valid = offset[None, :] < counts[rows][:, None]
            v = other[cols[torch.where(valid, pos, 0)]] * valid[:, :, None]  # (r, w, d), zero-padded
            a = torch.baddbmm(gram.expand(len(rows), d, d), v.transpose(1, 2), v)
            a += reg[rows, None, None] * eye
            chol = torch.linalg.cholesky(a)
            out[rows] = torch.cholesky_solve(v.sum(1)[:, :, None], chol)[:, :, 0]
    return out


def ials_loss(user_rows: torch.Tensor, item_cols: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
              cfg: IALSConfig, as_tensor: bool = False) -> float | torch.Tensor:  # fmt: skip
    """The loss above (pairs de-duplicated by the caller), O(edges · d + d² (U + I)); a float, or the
    scalar tensor (differentiable) with ``as_tensor``."""
    a0 = cfg.unobserved_weight
    pred = (users[user_rows] * items[item_cols]).sum(1)
    observed = ((1 - pred) ** 2).sum()
    everything = a0 * ((users.T @ users) * (items.T @ items)).sum()  # Σ_ui (w_u·h_i)² via the two Grams
    n_u = torch.bincount(user_rows, minlength=users.shape[0]).to(users.dtype)
    n_i = torch.bincount(item_cols, minlength=items.shape[0]).to(items.dtype)
    reg_u = (cfg.reg * (n_u + a0 * items.shape[0]) ** cfg.reg_exponent * (users**2).sum(1)).sum()
    reg_i = (cfg.reg * (n_i + a0 * users.shape[0]) ** cfg.reg_exponent * (items**2).sum(1)).sum()
    loss = observed + everything + reg_u + reg_i
    return loss if as_tensor else float(loss)


def train_ials(user_rows: np.ndarray, item_cols: np.ndarray, num_users: int, num_items: int, cfg: IALSConfig,
               progress: Progress | None = None) -> IALSResult:  # fmt: skip
    """User and item vectors for the observed (row, col) pairs (duplicates count once)."""
    say = progress or (lambda _: None)
    t0 = time.perf_counter()
    dev = torch.device(cfg.device)
    pairs = np.unique(np.stack([np.asarray(user_rows, np.int64), np.asarray(item_cols, np.int64)]), axis=1)
    if pairs.size == 0:
        raise ValueError("no interactions to train on")
    if pairs[0].max() >= num_users or pairs[1].max() >= num_items or pairs.min() < 0:
        raise ValueError("a row or column is outside the given number of users / items")
    u, i = torch.from_numpy(pairs[0]).to(dev), torch.from_numpy(pairs[1]).to(dev)
    by_user = _csr(u, i, num_users)
    by_item = _csr(i, u, num_items)
    gen = torch.Generator().manual_seed(cfg.seed)
    std = cfg.init_std / np.sqrt(cfg.dim)
    users = (torch.randn((num_users, cfg.dim), generator=gen, dtype=torch.float64) * std).to(dev)
    items = (torch.randn((num_items, cfg.dim), generator=gen, dtype=torch.float64) * std).to(dev)
    history: dict[str, float] = {}
    for it in range(cfg.iterations):
        users = solve_side(*by_user, items, cfg)
        items = solve_side(*by_item, users, cfg)
        loss = float(ials_loss(u, i, users, items, cfg))
        history[f"loss.{it}"] = loss
        say(f"iALS iteration {it + 1}/{cfg.iterations}: loss {loss:.2f}")
    history["train_s"] = time.perf_counter() - t0
    return IALSResult(users.float().cpu().numpy(), items.float().cpu().numpy(), history)


def config_params(cfg: IALSConfig) -> dict[str, object]:
    return {f"ials.{k}": v for k, v in asdict(cfg).items()}
