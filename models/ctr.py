"""Ranking models: Wide&Deep CTR and a Mixture-of-Experts multi-task ranker, with their input encoding.

Input (``CtrBatch``, tensors aligned on the batch axis):

* ``sparse`` (B, F) int64: one id per categorical field, offset into one shared table (0 of each field =
  unknown / out of vocabulary), e.g. user id, item id, gender, age bucket, occupation, zip prefix, release year;
* ``multi`` (B, M) int64: a multi-valued field (genres), 0-padded, mean-pooled;
* ``cross`` (B, C) int64: hashed crosses for the wide part, in ``[0, cross_buckets)``;
* ``dense`` (B, D) float32: normalised dense features (may be D = 0).

``CtrEncoder`` fits the vocabularies on training rows and turns a frame into these arrays; crosses are hashed
from the encoded ids with a multiplicative hash, so they need no string work.

**Wide&Deep**: logit = wide (a weight per sparse id, per genre and per cross bucket, summed) + deep (MLP over
the concatenated field embeddings, the pooled genre embedding and the dense features).

**MoE ranker** (MMoE / PLE style, with DeepSeek-V3's auxiliary-loss-free balancing): shared experts always
on, routed experts chosen per task by a gate (softmax over all routed experts, or top-k). For top-k routing
each expert has a bias added to its routing score for *selection only*; after each training step the bias of
an over-used expert goes down and an under-used one up by ``bias_rate`` (sign of the load error), which
balances the load without an auxiliary loss term. Each task has a tower; the click task also gets the wide
part. Expert utilisation (share of routed weight per expert and task) is tracked for logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

CROSS_BUCKETS = 1 << 20
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class CtrBatch:
    sparse: torch.Tensor
    multi: torch.Tensor
    cross: torch.Tensor
    dense: torch.Tensor

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def take(self, idx: torch.Tensor) -> CtrBatch:
        return CtrBatch(self.sparse[idx], self.multi[idx], self.cross[idx], self.dense[idx])

    def slice(self, part: slice) -> CtrBatch:
        """Rows ``part`` as views (no copy)."""
        return CtrBatch(self.sparse[part], self.multi[part], self.cross[part], self.dense[part])

    def to(self, device: torch.device | str) -> CtrBatch:
        return CtrBatch(self.sparse.to(device), self.multi.to(device), self.cross.to(device), self.dense.to(device))


with np.errstate(over="ignore"):
    _PMIX = np.uint64(1_000_003) * _MIX  # wraps mod 2^64, as the hash's arithmetic does


LEFT_FACTOR, RIGHT_FACTOR = _PMIX, _MIX
"""The factors of a cross's left and right codes in the hash's first, linear step (``_cross_linear``)."""


def _cross_linear(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The part of the hash's first step that is linear in the codes (mod 2^64): a * P * MIX + b * MIX."""
    with np.errstate(over="ignore"):
        return a.astype(np.uint64) * _PMIX + b.astype(np.uint64) * _MIX


def _cross_salt(salt: int | np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(salt, np.uint64) * _MIX * _MIX


def cross_bucket(x: np.ndarray, buckets: int = CROSS_BUCKETS) -> np.ndarray:
    return (np.uint64(1) + (x ^ (x >> np.uint64(29))) % np.uint64(buckets - 1)).astype(np.int64)


def hash_cross(a: np.ndarray, b: np.ndarray, salt: int | np.ndarray, buckets: int = CROSS_BUCKETS) -> np.ndarray:
    """A bucket in ``[1, buckets)`` per (a, b) pair of encoded ids (multiplicative hashing, vectorised); 0 is
    left for padding. x = (a * P + b + salt * MIX) * MIX (mod 2^64), x ^= x >> 29, 1 + x mod (buckets - 1);
    the first step is linear in a and b, so a sum of per-side parts (``_cross_linear``) hashes alike."""
    with np.errstate(over="ignore"):
        return cross_bucket(_cross_linear(a, b) + _cross_salt(salt), buckets)


@dataclass
class CtrEncoder:
    """Vocabularies of the categorical fields and the multi-valued field, fitted on training rows."""

    fields: list[str]
    multi_field: str | None = None
    crosses: list[tuple[str, str]] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    max_multi: int = 6
    vocab: dict[str, dict[object, int]] = field(default_factory=dict)
    multi_vocab: dict[object, int] = field(default_factory=dict)
    dense_stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    min_count: int = 1

    def fit(self, frame: pd.DataFrame) -> CtrEncoder:
        for f in self.fields:
            counts = frame[f].value_counts()
            keep = counts[counts >= self.min_count].index
            self.vocab[f] = {v: i + 1 for i, v in enumerate(sorted(keep.tolist(), key=str))}
        if self.multi_field:
            values = sorted({v for vs in frame[self.multi_field] for v in vs}, key=str)
            self.multi_vocab = {v: i + 1 for i, v in enumerate(values)}
        for d in self.dense:
            col = frame[d].astype(float)
            self.dense_stats[d] = (float(col.mean()), float(col.std() or 1.0))
        return self

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[f]) + 1 for f in self.fields]

    @property
    def multi_cardinality(self) -> int:
        return len(self.multi_vocab) + 1

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, F) per-field codes (0 = unknown), before table offsets."""
        out = np.zeros((len(frame), len(self.fields)), dtype=np.int64)
        for j, f in enumerate(self.fields):
            out[:, j] = frame[f].map(self.vocab[f]).fillna(0).to_numpy(np.int64)
        return out

    def multi_codes(self, values: Sequence[Sequence[object]]) -> np.ndarray:
        """(n, max_multi) codes of the multi-valued field, 0-padded (unknown values are 0)."""
        multi = np.zeros((len(values), self.max_multi), dtype=np.int64)
        for i, vs in enumerate(values):
            ids = [self.multi_vocab.get(v, 0) for v in vs][: self.max_multi]
            multi[i, : len(ids)] = ids
        return multi

    def transform(self, frame: pd.DataFrame) -> CtrBatch:
        n = len(frame)
        multi = self.multi_codes(list(frame[self.multi_field])) if self.multi_field else np.zeros((n, self.max_multi), np.int64)
        dense = np.column_stack([frame[d].astype(float).to_numpy() for d in self.dense]) if self.dense else np.zeros((n, 0))
        return self.encode(self.codes(frame), multi, dense)

    @property
    def offsets(self) -> np.ndarray:
        """Where each field's codes start in the shared embedding table."""
        return np.concatenate([[0], np.cumsum(self.cardinalities)[:-1]]).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cross_plan", None)  # derived from the fields and crosses: rebuilt after loading, never saved
        return state

    @cached_property
    def _cross_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per cross column: left field, right column of ``[codes | multi]``, salt, whether the right side is
        a (0-padded) value of the multi-valued field."""
        pos = {f: j for j, f in enumerate(self.fields)}
        left, right, salt, multi = [], [], [], []
        for k, (a, b) in enumerate(self.crosses):
            # one cross per value of the multi-valued field (a padded slot -> bucket 0), else one
            cols = [len(self.fields) + j for j in range(self.max_multi)] if b == self.multi_field else [pos[b]]
            left += [pos[a]] * len(cols)
            right += cols
            salt += [k + 1] * len(cols)
            multi += [b == self.multi_field] * len(cols)
        return np.array(left, np.int64), np.array(right, np.int64), np.array(salt, np.uint64), np.array(multi, bool)

    def cross_linear(self, codes: np.ndarray, multi: np.ndarray) -> np.ndarray:
        """(n, C) uint64: the linear part of every cross's hash. Codes of disjoint fields add, and so do
        their parts (mod 2^64): the online ranker sums an item's part and a request's part."""
        left, right, _, _ = self._cross_plan
        return _cross_linear(codes[:, left], np.hstack([codes, multi])[:, right])

    def cross_present(self, multi: np.ndarray) -> np.ndarray:
        """(n, C) bool: False on the crosses with a padded slot of the multi-valued field (bucket 0)."""
        _, right, _, from_multi = self._cross_plan
        values = np.hstack([np.ones((len(multi), len(self.fields)), np.int64), multi])[:, right]
        return ~(from_multi & (values == 0))

    @property
    def cross_salt(self) -> np.ndarray:
        return _cross_salt(self._cross_plan[2])

    def cross_ids(self, codes: np.ndarray, multi: np.ndarray) -> np.ndarray:
        """(n, C) hashed cross buckets from per-field codes (n, F) and multi-valued codes (n, max_multi):
        ``hash_cross`` of each cross's pair (the online ranker's per-side sums are tested equal to this)."""
        if not self.crosses:
            return np.zeros((len(codes), 0), np.int64)
        left, right, salt, _ = self._cross_plan
        buckets = hash_cross(codes[:, left], np.hstack([codes, multi])[:, right], salt)
        return np.where(self.cross_present(multi), buckets, 0)

    def encode(self, codes: np.ndarray, multi: np.ndarray, dense_raw: np.ndarray) -> CtrBatch:
        """The model input from per-field codes (n, F), multi-valued codes (n, max_multi) and the raw dense
        values (n, D) in ``dense`` order (normalised here with the fitted statistics). ``transform`` and the
        online ranker both come through here, so training and serving encode alike."""
        sparse = codes + self.offsets
        n = len(codes)
        cross = self.cross_ids(codes, multi)
        mean = np.array([self.dense_stats[d][0] for d in self.dense], np.float64)
        std = np.array([self.dense_stats[d][1] for d in self.dense], np.float64)
        dense = ((np.asarray(dense_raw, np.float64).reshape(n, len(self.dense)) - mean) / std).astype(np.float32)
        return CtrBatch(torch.from_numpy(sparse), torch.from_numpy(multi), torch.from_numpy(cross),
                        torch.from_numpy(dense))  # fmt: skip


class _Inputs(nn.Module):
    """Embeddings of the sparse fields and the pooled multi-valued field (one table, so one sparse update per
    step), concatenated with the dense features."""

    def __init__(self, cardinalities: Sequence[int], multi_cardinality: int, n_dense: int, dim: int) -> None:
        super().__init__()
        self.n_fields = len(cardinalities)
        self.multi_base = int(sum(cardinalities))
        self.emb = nn.Embedding(self.multi_base + multi_cardinality, dim, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.01)
        self.out_dim = (self.n_fields + 1) * dim + n_dense

    def forward(self, b: CtrBatch) -> torch.Tensor:
        rows = self.emb(torch.cat([b.sparse, b.multi + self.multi_base], dim=1))
        mask = (b.multi > 0).unsqueeze(2).to(rows.dtype)
        e, m = rows[:, : self.n_fields], rows[:, self.n_fields :] * mask
        if self.training:  # the rows this batch looked up, for the embedding L2 penalty (no second lookup)
            self.looked_up = (e, m)
        pooled = m.sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.cat([e.flatten(1), pooled, b.dense], dim=1)


class _Wide(nn.Module):
    """A weight per sparse id, per multi-valued id and per cross bucket (one table), summed, plus a bias."""

    def __init__(self, n_sparse: int, multi_cardinality: int, buckets: int) -> None:
        super().__init__()
        self.multi_base = n_sparse
        self.cross_base = n_sparse + multi_cardinality
        self.table = nn.Embedding(self.cross_base + buckets, 1, sparse=True)
        nn.init.zeros_(self.table.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, b: CtrBatch) -> torch.Tensor:
        idx = torch.cat([b.sparse, b.multi + self.multi_base, b.cross + self.cross_base], dim=1)
        pad = torch.cat([torch.ones_like(b.sparse), b.multi > 0, b.cross > 0], dim=1).to(self.table.weight.dtype)
        # one fused gather-and-sum (the padding ids weigh 0); sparse gradient rows, as the table's own lookup
        summed = nn.functional.embedding_bag(idx, self.table.weight, mode="sum", per_sample_weights=pad,
                                             sparse=self.table.sparse)  # fmt: skip
        return summed.squeeze(1) + self.bias


def _mlp(sizes: Sequence[int], dropout: float, dropout_layers: int | None = None) -> nn.Sequential:
    """Linear + ReLU layers; dropout after the first ``dropout_layers`` of them (all by default)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0 and (dropout_layers is None or i < dropout_layers):
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class WideDeepConfig:
    dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.0  # measured on ml-100k: no better with 0.3 (and CPU dropout costs ~10 % of a step)
    dropout_layers: int | None = None
    cross_buckets: int = CROSS_BUCKETS


class WideDeep(nn.Module):
    def __init__(self, enc: CtrEncoder, cfg: WideDeepConfig = WideDeepConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.inputs = _Inputs(enc.cardinalities, enc.multi_cardinality, len(enc.dense), cfg.dim)
        self.wide = _Wide(int(sum(enc.cardinalities)), enc.multi_cardinality, cfg.cross_buckets)
        self.deep = _mlp([self.inputs.out_dim, *cfg.hidden], cfg.dropout, cfg.dropout_layers)
        self.head = nn.Linear(cfg.hidden[-1], 1)

    def forward(self, b: CtrBatch) -> dict[str, torch.Tensor]:
        return {"click": self.wide(b) + self.head(self.deep(self.inputs(b))).squeeze(1)}


@dataclass(frozen=True)
class MoEConfig:
    dim: int = 16
    tasks: tuple[str, ...] = ("click", "like")
    shared_experts: int = 1
    routed_experts: int = 4
    expert_hidden: tuple[int, ...] = (64, 32)  # ml-100k click AUC 0.8636 (256-128: 0.8639) at a fifth of the cost
    top_k: int | None = 2  # None: dense softmax gate over all routed experts (MMoE)
    tower_hidden: int = 64
    dropout: float = 0.0  # measured on ml-100k: 0.3 stops at epoch 2 with click AUC 0.860, 0.0 reaches 0.864
    bias_rate: float = 0.001  # auxiliary-loss-free balancing step (DeepSeek-V3's gamma)
    wide_task: str | None = "click"
    cross_buckets: int = CROSS_BUCKETS

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 (or None for a dense gate), got {self.top_k}")


class MoERanker(nn.Module):
    # declared for the type checker (nn.Module's attribute lookup types every attribute as Tensor | Module)
    cfg: MoEConfig
    shared: nn.ModuleList
    routed: nn.ModuleList
    gates: nn.ModuleDict
    towers: nn.ModuleDict
    wide: _Wide | None
    route_bias: torch.Tensor
    load: torch.Tensor
    weight_share: torch.Tensor

    def __init__(self, enc: CtrEncoder, cfg: MoEConfig = MoEConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.inputs = _Inputs(enc.cardinalities, enc.multi_cardinality, len(enc.dense), cfg.dim)
        d_in, d_out = self.inputs.out_dim, cfg.expert_hidden[-1]
        self.shared = nn.ModuleList(_mlp([d_in, *cfg.expert_hidden], cfg.dropout) for _ in range(cfg.shared_experts))
        self.routed = nn.ModuleList(_mlp([d_in, *cfg.expert_hidden], cfg.dropout) for _ in range(cfg.routed_experts))
        self.gates = nn.ModuleDict({t: nn.Linear(d_in, cfg.routed_experts) for t in cfg.tasks})
        self.towers = nn.ModuleDict({t: nn.Sequential(nn.Linear(d_out, cfg.tower_hidden), nn.ReLU(),
                                                      nn.Linear(cfg.tower_hidden, 1)) for t in cfg.tasks})  # fmt: skip
        self.wide = _Wide(int(sum(enc.cardinalities)), enc.multi_cardinality, cfg.cross_buckets) if cfg.wide_task else None
        self.register_buffer("route_bias", torch.zeros(len(cfg.tasks), cfg.routed_experts))
        self.register_buffer("load", torch.zeros(len(cfg.tasks), cfg.routed_experts))
        self.register_buffer("weight_share", torch.zeros(len(cfg.tasks), cfg.routed_experts))

    def _gate(self, j: int, task: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E) routing weights and (B, E) 0/1 selection of task ``task``."""
        scores = torch.softmax(self.gates[task](x), dim=1)
        k = self.cfg.top_k
        if k is None or k >= self.cfg.routed_experts:
            return scores, torch.ones_like(scores)
        chosen = torch.topk(scores + self.route_bias[j], k, dim=1).indices  # the bias steers selection only
        mask = torch.zeros_like(scores).scatter_(1, chosen, 1.0)
        weights = scores * mask
        return weights / weights.sum(1, keepdim=True).clamp(min=1e-9), mask

    def forward(self, b: CtrBatch) -> dict[str, torch.Tensor]:
        x = self.inputs(b)
        shared = sum(e(x) for e in self.shared) if len(self.shared) else 0.0
        routed = torch.stack([e(x) for e in self.routed], dim=1)  # (B, E, d)
        out: dict[str, torch.Tensor] = {}
        for j, task in enumerate(self.cfg.tasks):
            weights, mask = self._gate(j, task, x)
            h = shared + (weights.unsqueeze(2) * routed).sum(1)
            logit = self.towers[task](h).squeeze(1)
            if self.wide is not None and task == self.cfg.wide_task:
                logit = logit + self.wide(b)
            out[task] = logit
            if self.training:
                with torch.no_grad():
                    self.load[j] = mask.mean(0)
                    self.weight_share[j] = weights.mean(0)
        return out

    @torch.no_grad()
    def update_route_bias(self) -> None:
        """After an optimiser step: push each over-loaded expert's bias down, each under-loaded one up."""
        if self.cfg.top_k is None:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # every rank moves the bias by the global load
            dist.all_reduce(self.load)
            self.load /= dist.get_world_size()
        target = self.load.mean(1, keepdim=True)
        self.route_bias += self.cfg.bias_rate * torch.sign(target - self.load)

    def utilisation(self) -> dict[str, list[float]]:
        """Share of routed weight per expert for each task (last training batch)."""
        return {t: [round(float(v), 4) for v in self.weight_share[j]] for j, t in enumerate(self.cfg.tasks)}


class FusedMoE(nn.Module):
    """Inference form of a trained ``MoERanker``, same outputs, far fewer operators: the first layers of all
    experts (shared and routed) and the gates of all tasks are one matrix multiply, each deeper expert layer
    one batched multiply over the experts, each tower layer one batched multiply over the tasks. Over a
    request's few hundred candidates the per-operator overhead dominates the module's forward, so this is
    what the online ranker runs. Built once from frozen weights (a new model = a new one).

    ``first_layer`` / ``after_first`` split it after the first linear map of the input row, so a caller can
    assemble that product from parts (``online/ctr_ranker.py`` keeps the item side of it per item)."""

    def __init__(self, moe: MoERanker) -> None:
        super().__init__()
        cfg = moe.cfg
        self.cfg, self.inputs, self.wide = cfg, moe.inputs, moe.wide
        experts = [*moe.shared, *moe.routed]
        self.n_shared, self.n_experts, self.n_routed = len(moe.shared), len(experts), len(moe.routed)
        linears = [[m for m in e if isinstance(m, nn.Linear)] for e in experts]
        self.h0 = linears[0][0].out_features
        with torch.no_grad():
            gates: list[nn.Linear] = [moe.gates[t] for t in cfg.tasks]  # type: ignore[misc]
            first_w: list[torch.Tensor] = [*(ls[0].weight for ls in linears), *(g.weight for g in gates)]
            first_b: list[torch.Tensor] = [*(ls[0].bias for ls in linears), *(g.bias for g in gates)]
            self.w_first = torch.cat(first_w).t().contiguous()
            self.b_first = torch.cat(first_b)
            self.deeper = [(torch.stack([ls[i].weight.t() for ls in linears]).contiguous(),  # (E, h_{i-1}, h_i)
                            torch.stack([ls[i].bias for ls in linears]).unsqueeze(1))  # (E, 1, h_i)
                           for i in range(1, len(linears[0]))]  # fmt: skip
            towers = [[m for m in moe.towers[t] if isinstance(m, nn.Linear)] for t in cfg.tasks]  # type: ignore[attr-defined]
            self.tw = [(torch.stack([tw[i].weight.t() for tw in towers]).contiguous(),
                        torch.stack([tw[i].bias for tw in towers]).unsqueeze(1)) for i in range(len(towers[0]))]  # fmt: skip
            self.route_bias = moe.route_bias.clone()
        self.eval()

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(d_in, H) weight and (H,) bias of the first linear map (expert inputs, then gate logits)."""
        return self.w_first, self.b_first

    @torch.inference_mode()
    def after_first(self, first: torch.Tensor, wide: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The task logits from ``x @ w_first + b_first`` (B, H) and the wide part's logit (B,), if any."""
        n, cfg, split = first.shape[0], self.cfg, self.n_experts * self.h0
        h = torch.relu(first[:, :split]).view(n, self.n_experts, self.h0).transpose(0, 1)
        for w, bias in self.deeper:  # (E, B, h)
            h = torch.baddbmm(bias, h, w).relu_()
        shared = h[: self.n_shared].sum(0) if self.n_shared > 1 else h[0] if self.n_shared else None
        routed = h[self.n_shared :]  # (R, B, d)
        tasks, r = len(cfg.tasks), self.n_routed
        logits = first[:, split:].reshape(n, tasks, r)
        scores = (logits - logits.amax(2, keepdim=True)).exp_()  # softmax over the experts (B, T, R); this
        scores.div_(scores.sum(2, keepdim=True))  # is faster than torch.softmax on a last axis of ~4
        k = cfg.top_k
        if k is not None and k < r:  # as MoERanker._gate: the bias steers the selection only
            biased = scores + self.route_bias
            chosen = biased >= torch.topk(biased, k, dim=2).values[:, :, -1:]  # the k best (ties: measure zero)
            weights = scores.mul_(chosen)
            scores = weights.div_(weights.sum(2, keepdim=True).clamp_(min=1e-9))
        # (T, R, B, 1) * (1, R, B, d) summed over R: elementwise beats a batch of B tiny matrix products
        t = (scores.permute(1, 2, 0).unsqueeze(3) * routed.unsqueeze(0)).sum(1)  # (T, B, d)
        if shared is not None:
            t.add_(shared)
        for w, bias in self.tw[:-1]:
            t = torch.baddbmm(bias, t, w).relu_()
        w, bias = self.tw[-1]  # (T, h, 1): a product with one output column is a weighted sum
        out_logits = (t * w.transpose(1, 2)).sum(2) + bias.squeeze(2)  # (T, B)
        out = {task: out_logits[j] for j, task in enumerate(cfg.tasks)}
        if wide is not None and cfg.wide_task in out:
            out[cfg.wide_task] = out[cfg.wide_task] + wide
        return out

    @torch.inference_mode()
    def forward(self, b: CtrBatch) -> dict[str, torch.Tensor]:
        wide = self.wide(b) if self.wide is not None else None
        return self.after_first(torch.addmm(self.b_first, self.inputs(b), self.w_first), wide)


class FusedWideDeep(nn.Module):
    """Inference form of a trained ``WideDeep`` with the same ``first_layer`` / ``after_first`` split."""

    def __init__(self, wd: WideDeep) -> None:
        super().__init__()
        self.inputs, self.wide, self.head = wd.inputs, wd.wide, wd.head
        first = wd.deep[0]
        assert isinstance(first, nn.Linear)
        self.w_first, self.b_first = first.weight.detach().t().contiguous(), first.bias.detach()
        self.rest = wd.deep[1:]  # ReLU (dropout is inactive in eval), deeper layers
        self.eval()

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_first, self.b_first

    @torch.inference_mode()
    def after_first(self, first: torch.Tensor, wide: torch.Tensor | None) -> dict[str, torch.Tensor]:
        assert wide is not None
        return {"click": wide + self.head(self.rest(first)).squeeze(1)}

    @torch.inference_mode()
    def forward(self, b: CtrBatch) -> dict[str, torch.Tensor]:
        return self.after_first(torch.addmm(self.b_first, self.inputs(b), self.w_first), self.wide(b))


def fused(model: nn.Module) -> FusedMoE | FusedWideDeep:
    """The inference form of a trained ranker (``eval`` mode). It copies some weights and shares others
    (embeddings, wide table, biases) with ``model``: build it from a model that no longer trains."""
    model.eval()
    if isinstance(model, MoERanker):
        return FusedMoE(model)
    if isinstance(model, WideDeep):
        return FusedWideDeep(model)
    raise TypeError(f"no inference form for {type(model).__name__}")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The architecture of a ranker, as saved next to its weights (``build_ranker`` rebuilds it)."""
    from dataclasses import asdict

    return asdict(model.cfg)  # type: ignore[call-overload]


# Rankers saved before the architecture was stored with them were built with these.
_LEGACY: dict[str, WideDeepConfig | MoEConfig] = {
    "widedeep": WideDeepConfig(),
    "moe": MoEConfig(expert_hidden=(256, 128)),
}


def build_ranker(kind: str, enc: CtrEncoder, config: dict[str, Any] | None = None) -> nn.Module:
    """A ``widedeep`` / ``moe`` ranker of the architecture ``config`` (``model_config``'s dict; None: the
    current defaults)."""
    if kind not in ("widedeep", "moe"):
        raise ValueError(f"unknown ranker kind {kind!r} (widedeep or moe)")
    cls, cfg_cls = (WideDeep, WideDeepConfig) if kind == "widedeep" else (MoERanker, MoEConfig)
    if config is None:
        return cls(enc, cfg_cls())  # type: ignore[arg-type]
    cfg = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})  # type: ignore[arg-type]
    return cls(enc, cfg)  # type: ignore[arg-type]


def ranker_from_saved(saved: dict[str, Any]) -> nn.Module:
    """The model of a saved ranker dict (``kind``, ``encoder``, ``state`` and, since it is stored, ``config``)."""
    kind = saved["kind"]
    if kind not in _LEGACY:
        raise ValueError(f"unknown ranker kind {kind!r} (widedeep or moe)")
    config = saved.get("config")
    if config is None:
        from dataclasses import asdict

        config = asdict(_LEGACY[kind])
    net = build_ranker(kind, saved["encoder"], config)
    net.load_state_dict(saved["state"])
    return net


# -- training --------------------------------------------------------------------------------------------------
def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties share their average rank)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_l2: float = 1e-5  # on the embedding rows a batch looks up (as DeepCTR's l2_reg_embedding)
    patience: int = 2  # epochs without a better validation AUC before stopping
    task_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "like": 1.0})
    seed: int = 42


@dataclass
class TrainResult:
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float
    samples_seen: int

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


@torch.no_grad()
def predict(model: nn.Module, data: CtrBatch, batch_size: int = 8192) -> dict[str, np.ndarray]:
    model.eval()
    outs: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(data), batch_size):
        for task, logit in model(data.slice(slice(lo, lo + batch_size))).items():
            outs.setdefault(task, []).append(torch.sigmoid(logit).numpy())
    return {t: np.concatenate(v) for t, v in outs.items()}


def _embedding_penalty(model: nn.Module, b: CtrBatch) -> torch.Tensor:
    looked_up = getattr(getattr(model, "inputs", None), "looked_up", None)
    if looked_up is None:
        return torch.zeros(())
    e, m = looked_up
    return (e.pow(2).sum() + m.pow(2).sum()) / len(b)


class RowAdam(torch.optim.Optimizer):
    """Adam on the rows of embedding tables with sparse gradients ("lazy" Adam, as ``SparseAdam``): each step
    updates the moments and weights of the rows its batch looked up only.

    Duplicate lookups are summed without sorting: a per-table slot map (one int64 per row, kept in the state,
    -1 when free) gives every looked-up row one slot in O(lookups), where ``torch.unique`` sorts them (200 µs
    a step for the 10k lookups of a 1M-row cross table at batch 256, a fifth of the optimizer's time)."""

    def __init__(self, params: list[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:  # fmt: skip
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @staticmethod
    def touched(idx: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, inv): the distinct rows of ``idx`` and, per lookup, its row's position in ``rows``
        (``rows[inv] == idx``). ``slot`` (one entry per table row, all -1) is used as scratch and left all -1."""
        pos = torch.arange(len(idx), device=idx.device)
        slot[idx] = pos  # duplicates: one of their positions wins, whichever it is
        winner = slot[idx]
        first = winner == pos
        rows = idx[first]
        slot[rows] = torch.arange(len(rows), device=idx.device)
        inv = slot[idx]
        slot[rows] = -1
        return rows, inv

    @torch.no_grad()
    def step(self, closure: object = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["slot"] = torch.full((p.shape[0],), -1, dtype=torch.int64, device=p.device)
                state["step"] += 1
                rows, inv = self.touched(g._indices()[0], state["slot"])
                grad = torch.zeros(len(rows), p.shape[1], dtype=p.dtype, device=p.device).index_add_(0, inv, g._values())
                m = state["m"][rows].lerp_(grad, 1 - b1)
                v = state["v"][rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                state["m"].index_copy_(0, rows, m)
                state["v"].index_copy_(0, rows, v)
                t = state["step"]
                step = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
                # no ``alpha=``: index_add_ with one takes a ~20x slower path on CPU (440 against 20 µs here)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])).mul_(-step))


def optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam for the dense parameters; row-wise lazy Adam for the embedding tables (sparse gradients), so a
    step updates only the rows its batch looked up, not a million-row cross table."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [
        torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    ]
    if sparse:
        opts.append(RowAdam(sparse, lr=cfg.lr))
    return opts


def _shard() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed, (0, 1) outside it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_ctr(model: nn.Module, train: CtrBatch, labels: dict[str, np.ndarray], val: CtrBatch,
              val_labels: dict[str, np.ndarray], cfg: TrainConfig = TrainConfig(),
              progress: object = None) -> TrainResult:  # fmt: skip
    """Mini-batch Adam on the tasks the model outputs (BCE with logits, weighted per task); early stopping on
    the validation AUC of the first task; the best epoch's weights are restored.

    ``model`` may be wrapped in ``DistributedDataParallel``: every rank draws the same global batches (same
    seed) and trains on its slice ``batch[rank::world]``; DDP averages the gradients, so the update equals
    the single-process one on the whole batch (``train_ctr_ddp``)."""
    import copy
    import time

    inner: nn.Module = getattr(model, "module", model)  # the model itself when DDP-wrapped
    rank, world = _shard()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    y = {t: torch.from_numpy(np.asarray(v, np.float32)) for t, v in labels.items()}
    opts = optimizers(inner, cfg)
    loss_fn = nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    seconds, seen = 0.0, 0
    n = len(train)
    first_task = next(iter(labels))
    for epoch in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        # the epoch's order applied once, so that each batch is a slice (a view), not four gathers
        shuffled, y_shuffled = train.take(order), {t: v[order] for t, v in y.items()}
        total = 0.0
        for lo in range(0, n, cfg.batch_size):
            part = slice(lo + rank, lo + cfg.batch_size, world)
            b = shuffled.slice(part)
            out = model(b)
            loss = sum(cfg.task_weights.get(t, 1.0) * loss_fn(out[t], y_shuffled[t][part]) for t in y if t in out)
            if cfg.embedding_l2:
                loss = loss + cfg.embedding_l2 * _embedding_penalty(inner, b)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
            if isinstance(inner, MoERanker):
                inner.update_route_bias()
            total += float(loss.detach()) * len(b) * world
        seconds += time.perf_counter() - start
        seen += n
        preds = predict(inner, val)
        row = {"epoch": float(epoch), "loss": total / n}
        row.update({f"val_auc_{t}": auc(val_labels[t], preds[t]) for t in val_labels if t in preds})
        history.append(row)
        if callable(progress) and rank == 0:
            progress(f"epoch {epoch}: loss {row['loss']:.4f}, " + ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_")))  # fmt: skip
        score = row[f"val_auc_{first_task}"]
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(inner.state_dict())
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    if best_state is not None:
        inner.load_state_dict(best_state)
    return TrainResult(best_epoch, history, seconds, seen)


def _ddp_worker(rank: int, world: int, port: int, build: Any, data: tuple[Any, ...], cfg: TrainConfig,
                out: str) -> None:  # fmt: skip
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(cfg.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        model = build()
        ddp = DistributedDataParallel(model)
        train, labels, val, val_labels = data
        result = train_ctr(ddp, train, labels, val, val_labels, cfg)
        if rank == 0:
            torch.save({"state": model.state_dict(), "best_epoch": result.best_epoch,
                        "history": result.history, "seconds": result.train_seconds}, out)  # fmt: skip
    finally:
        dist.destroy_process_group()


def train_ctr_ddp(build: Any, train: CtrBatch, labels: dict[str, np.ndarray], val: CtrBatch,
                  val_labels: dict[str, np.ndarray], cfg: TrainConfig = TrainConfig(),
                  world: int = 2) -> tuple[nn.Module, TrainResult]:  # fmt: skip
    """Train ``build()`` with torch DDP on ``world`` processes on this machine (gloo on CPU, NCCL with GPUs)
    via ``torch.multiprocessing``; returns rank 0's model (with the best epoch's weights) and its result. On a
    cluster the same ``train_ctr`` runs under ``torchrun`` with the DDP-wrapped model."""
    import tempfile

    import torch.multiprocessing as mp
    from recstack.features.redis_local import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/rank0.pt"
        mp.spawn(_ddp_worker, args=(world, free_port(), build, (train, labels, val, val_labels), cfg, out),
                 nprocs=world, join=True)  # fmt: skip
        saved = torch.load(out, weights_only=False)
    model = build()
    model.load_state_dict(saved["state"])
    return model, TrainResult(saved["best_epoch"], saved["history"], saved["seconds"], 0)
