"""EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"), as a low-rank recall artifact.

EASE learns an item–item matrix ``B`` (I × I) with a zero diagonal that reconstructs each user's row of the
interaction matrix ``X``: ``min |X − XB|² + λ|B|²`` s.t. ``diag(B) = 0``, in closed form
``B = I − P · diagMat(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹``. A user's scores are ``x_u B``.

``X`` is binary (Steck's form, ``weighted=False``) or holds each interaction's strength (``weighted=True``:
a rating r counts r / 5, a click or like 1; a pair seen several times takes its strongest). Weighted rows
let a user's well-rated items speak louder for what else they will rate: on an inner 80 / 20 split of the
ml-100k reference split's ``train.tsv`` (``benchmarks/ensemble_candidates.py``), the export ensemble with
the weighted EASE (rank 64, weight 0.25) scores nDCG@10 0.2486, with the binary one swapped in 0.2464 (weight
0.125), 0.2449 (0.25) or 0.2469 (full rank).

The recall contract is an inner product of a user and an item vector, so ``B`` is served through its
truncated SVD ``B ≈ U_k Σ_k V_kᵀ``: user vector ``x_u U_k Σ_k``, item vector the item's row of ``V_k``.
On the ml-100k reference split rank 32–512 score as the full matrix does (nDCG@10 0.477–0.481 against
0.480): the ranking lives in the leading directions. Above ``FULL_SVD_ITEMS`` the factorisation is a
seeded randomised truncated SVD instead of a full one. Cost: the I × I inverse, O(I³) time and O(I²) memory,
so ``max_items`` refuses a catalogue where that would not fit (20,000 items: 3.2 GB per matrix); the export
ensemble then leaves EASE out and says so, and its other members carry the catalogue.

**DLAE** (Steck, 2020, "Autoencoders that don't overfit towards the identity"; ``zero_diagonal=False``,
``dropout`` p > 0): instead of forbidding ``B`` its diagonal, the input is corrupted by dropout with
probability p, whose expected loss is ``|X − XB|² + |Λ^½ B|²`` with
``Λ = p / (1 − p) · diagMat(diag(XᵀX)) + λI``: a ridge penalty that grows with each item's own popularity, so
copying an item to itself stops paying. Closed form ``B = (XᵀX + Λ)⁻¹ XᵀX``. ``dropout`` with the zero
diagonal kept is Steck's EDLAE (EASE with that Λ). The export ensemble's member is the DLAE (weighted X,
p 0.25, λ 500, rank 256): on the inner split of the ml-100k reference split it scores nDCG@10 0.238 alone
against 0.235 for EASE, and lifts the blend (see ``models/ensemble.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

FULL_SVD_ITEMS = 4096  # above this many items B is factorised by a randomised truncated SVD


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 500.0  # λ
    rank: int = 64  # of the served factorisation of B
    weighted: bool = False  # X holds interaction strengths (max per pair) instead of 1
    max_items: int = 20_000
    device: str = "cpu"
    dropout: float = 0.0  # p of the input dropout (DLAE / EDLAE): Λ = p / (1 − p) · diag(XᵀX) + λ
    zero_diagonal: bool = True  # EASE's constraint diag(B) = 0; False with dropout > 0 is the DLAE

    def __post_init__(self) -> None:
        if not self.l2 > 0 or self.rank <= 0 or self.max_items <= 0:
            raise ValueError("l2, rank and max_items must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.zero_diagonal and self.dropout == 0:
            raise ValueError("zero_diagonal=False needs dropout > 0: without either, B learns the identity "
                             "(every item recommends itself)")  # fmt: skip


@dataclass
class EASEResult:
    users: np.ndarray  # (U, rank) float32: x_u U_k Σ_k
    items: np.ndarray  # (I, rank) float32: rows of V_k
    history: dict[str, float]


def ease_matrix(x: sp.csr_matrix, l2: float, device: str = "cpu", dropout: float = 0.0,
                zero_diagonal: bool = True) -> torch.Tensor:  # fmt: skip
    """B (I, I) float64 of a user × item matrix (binary, or interaction strengths).

    EASE (``dropout`` 0, zero diagonal), EDLAE (``dropout`` > 0, zero diagonal) or DLAE (``zero_diagonal``
    False): the penalty is ``Λ = dropout / (1 − dropout) · diag(XᵀX) + l2`` per item."""
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    gram = torch.from_numpy((x.T @ x).toarray()).to(device, torch.float64)
    penalty = gram.diagonal() * (dropout / (1.0 - dropout)) + l2
    if not zero_diagonal:
        lhs = gram.clone()
        lhs.diagonal().add_(penalty)
        return torch.linalg.solve(lhs, gram)
    gram.diagonal().add_(penalty)
    p = torch.linalg.inv(gram)
    b = -p / p.diagonal()[None, :]
    b.diagonal().zero_()
    return b


def train_ease(user_rows: np.ndarray, item_cols: np.ndarray, num_users: int, num_items: int, cfg: EASEConfig,
               weight: np.ndarray | None = None) -> EASEResult:  # fmt: skip
    """User and item vectors (rank ``min(cfg.rank, num_items)``) whose inner product approximates x_u B.

    ``weight`` (one per interaction, > 0) fills X when ``cfg.weighted``; it is required then."""
    t0 = time.perf_counter()
    rows, cols = np.asarray(user_rows, np.int64), np.asarray(item_cols, np.int64)
    if rows.size == 0:
        raise ValueError("no interactions to train on")
    if num_items > cfg.max_items:
        raise ValueError(f"EASE inverts an items × items matrix: {num_items} items is over max_items "
                         f"{cfg.max_items}; use iALS or the graph models for a catalogue this large")  # fmt: skip
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= num_users or cols.max() >= num_items:
        raise ValueError("a row or column is outside the given number of users / items")
    x = _interaction_matrix(rows, cols, num_users, num_items, cfg.weighted, weight)
    b = ease_matrix(x, cfg.l2, cfg.device, cfg.dropout, cfg.zero_diagonal)
    k = min(cfg.rank, num_items)
    total = float((b**2).sum())
    if num_items <= FULL_SVD_ITEMS:
        u, s, vt = torch.linalg.svd(b)
        u, s, v = u[:, :k], s[:k], vt[:k].T
    else:  # randomised range finder (Halko et al.), seeded: a full SVD of a large B costs O(I³) again
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(b, q=min(k + 16, num_items), niter=4)
        u, s, v = u[:, :k], s[:k], v[:, :k]
    users = np.asarray(x @ (u * s).cpu().numpy(), np.float32)
    items = np.ascontiguousarray(v.cpu().numpy(), np.float32)
    kept = float((s**2).sum()) / total
    return EASEResult(users, items, {"train_s": time.perf_counter() - t0, "energy_kept": kept})


def _interaction_matrix(rows: np.ndarray, cols: np.ndarray, num_users: int, num_items: int, weighted: bool,
                        weight: np.ndarray | None) -> sp.csr_matrix:  # fmt: skip
    """X (users, items): 1 per interacted pair, or (``weighted``) the pair's strongest interaction weight."""
    if not weighted:
        x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_users, num_items))
        x.data[:] = 1.0  # duplicates count once
        return x
    w = np.asarray(weight if weight is not None else (), np.float64)
    if w.shape != rows.shape:
        raise ValueError(f"need one weight per interaction: {w.shape} weights for {rows.shape} interactions")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("interaction weights must be finite and positive")
    keys = rows * num_items + cols
    order = np.argsort(keys, kind="stable")
    keys, w = keys[order], w[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    strongest = np.maximum.reduceat(w, first)  # a pair seen twice takes its strongest weight
    keys = keys[first]
    return sp.csr_matrix((strongest, (keys // num_items, keys % num_items)), shape=(num_users, num_items))


def config_params(cfg: EASEConfig) -> dict[str, object]:
    return {f"ease.{k}": v for k, v in asdict(cfg).items()}
