"""GraphSAGE (Hamilton et al., 2017) with PyG's ``SAGEConv``, trained unsupervised by link prediction.

Input of node ``v``: a learned id embedding plus a linear projection of its features (``node_features``).
While training, ``id_dropout`` of the nodes in each batch use the shared "unknown" embedding instead of their
own, so the network learns to embed a node from its features and neighbours alone; that is what makes it
inductive: a user or item unseen in training is embedded from its features and its interactions, with no
retraining (:meth:`SageModel.embed_new`).

Layers run on sampled neighbourhoods (:class:`~recstack.models.graph.NeighborSampler`) in mini-batches of
positive edges, each with uniformly drawn negative nodes, and a BPR loss
``-log σ(h_u·h_pos - h_u·h_neg)``. The output of a node is the mean of its layer outputs (input included), as
in LightGCN, which keeps the layer-0 (id) signal that collaborative filtering depends on.

Inference is layer-wise over the full graph in node chunks (each layer sees every neighbour), so memory is
``O(nodes × dim)`` per layer, never a dense adjacency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from recstack.models.graph import CSRGraph, NeighborSampler
from torch import nn
from torch_geometric.nn import SAGEConv


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class SageConfig:
    dim: int = 64
    layers: int = 2
    fanouts: tuple[int, ...] = (10, 10)
    batch_size: int = 2048
    epochs: int = 30
    lr: float = 0.01
    l2: float = 1e-4
    negatives: int = 1
    loss: str = "bpr"
    exclude_targets: bool = True
    temperature: float = 1.0
    normalize: bool = False
    id_dropout: float = 0.1
    activation: bool = False
    seed: int = 42
    device: str = "auto"
    infer_chunk: int = 8192

    def __post_init__(self) -> None:
        if len(self.fanouts) != self.layers:
            raise ValueError(f"fanouts {self.fanouts} must give one fan-out per layer ({self.layers})")
        if self.dim <= 0 or self.epochs <= 0 or self.batch_size <= 0 or self.negatives <= 0:
            raise ValueError("dim, epochs, batch_size and negatives must be positive")
        if not 0 <= self.id_dropout < 1:
            raise ValueError("id_dropout must be in [0, 1)")


class SageEncoder(nn.Module):
    def __init__(self, num_nodes: int, feat_dim: int, dim: int, layers: int, activation: bool) -> None:
        super().__init__()
        self.unknown = num_nodes
        self.emb = nn.Embedding(num_nodes + 1, dim)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.proj = nn.Linear(feat_dim, dim, bias=False) if feat_dim else None
        self.convs = nn.ModuleList([SAGEConv(dim, dim, aggr="mean") for _ in range(layers)])
        self.activation = activation

    def inputs(self, rows: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        x = self.emb(rows)
        if self.proj is not None and feats is not None:
            x = x + self.proj(feats)
        return x

    def step(
        self, layer: int, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor], edge_index: torch.Tensor
    ) -> torch.Tensor:
        out = self.convs[layer](x, edge_index)
        if self.activation and layer < len(self.convs) - 1:
            out = F.relu(out)
        return out

    def forward(
        self, rows: torch.Tensor, feats: torch.Tensor | None, edge_index: torch.Tensor
    ) -> torch.Tensor:
        x = self.inputs(rows, feats)
        total = x
        for layer in range(len(self.convs)):
            x = self.step(layer, x, edge_index)
            total = total + x
        return total / (len(self.convs) + 1)


@dataclass
class SageModel:
    """A trained encoder with the per-layer representations of every node of its graph."""

    encoder: SageEncoder
    graph: CSRGraph
    features: torch.Tensor | None
    config: SageConfig
    id_mask: torch.Tensor | None = None
    layer_x: list[torch.Tensor] = field(default_factory=list)
    embeddings: torch.Tensor | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def infer(self) -> torch.Tensor:
        """Embeddings of all nodes, layer by layer with full neighbourhoods; cached on the model."""
        enc = self.encoder.eval().cpu()
        n, chunk = self.graph.num_nodes, self.config.infer_chunk
        rows = torch.arange(n)
        if self.id_mask is not None:
            rows[~self.id_mask] = enc.unknown
        x = torch.cat([
            enc.inputs(rows[lo : lo + chunk], None if self.features is None else self.features[lo : lo + chunk])
            for lo in range(0, n, chunk)
        ]) if n else torch.empty(0, enc.emb.embedding_dim)  # fmt: skip
        self.layer_x = [x]
        total = x.clone()
        sampler = NeighborSampler(self.graph, [-1])
        gen = torch.Generator().manual_seed(0)
        for layer in range(len(enc.convs)):
            nxt = torch.empty_like(x)
            for lo in range(0, n, chunk):
                nodes = torch.arange(lo, min(lo + chunk, n))
                owner, nbr = sampler.neighbors(nodes, -1, gen)
                nxt[nodes] = enc.step(layer, (x, x[nodes]), torch.stack([nbr, owner]))
            x = nxt
            self.layer_x.append(x)
            total += x
        self.embeddings = self._finish(total / (len(enc.convs) + 1))
        return self.embeddings

    def _finish(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=-1) if self.config.normalize else h

    @torch.no_grad()
    def embed_new(self, neighbors: list[np.ndarray], features: np.ndarray | None) -> torch.Tensor:
        """Inductive embeddings for nodes that are not in the graph, from their neighbour node ids (in this
        graph) and their feature rows; a node with no neighbours is embedded from its features alone."""
        if not self.layer_x:
            self.infer()
        enc = self.encoder.eval().cpu()
        b = len(neighbors)
        feats = None if features is None else torch.as_tensor(np.asarray(features, np.float32)).reshape(b, -1)
        x = enc.inputs(torch.full((b,), enc.unknown, dtype=torch.int64), feats)
        lens = torch.tensor([len(a) for a in neighbors], dtype=torch.int64)
        src = torch.as_tensor(
            np.concatenate([np.asarray(a, np.int64) for a in neighbors]) if b else np.empty(0, np.int64)
        )
        if len(src) and (int(src.min()) < 0 or int(src.max()) >= self.graph.num_nodes):
            raise ValueError("neighbour ids must be nodes of the training graph")
        edge_index = torch.stack([src, torch.repeat_interleave(torch.arange(b), lens)])
        total = x.clone()
        for layer in range(len(enc.convs)):
            x = enc.step(layer, (self.layer_x[layer], x), edge_index)
            total += x
        return self._finish(total / (len(enc.convs) + 1))


def train_link_sage(
    graph: CSRGraph, features: np.ndarray | None, pos_src: np.ndarray, pos_dst: np.ndarray,
    neg_range: tuple[int, int], cfg: SageConfig, progress: Callable[[str], None] | None = None,
    with_ids: np.ndarray | None = None,
) -> SageModel:  # fmt: skip
    """Train on positive edges ``pos_src[k] → pos_dst[k]`` with negatives drawn uniformly from the node range
    ``[neg_range[0], neg_range[1])`` (the item block for user–item graphs, all users for user–user).
    ``with_ids`` (bool per node) limits the id embeddings to some nodes; the others are always embedded from
    features and neighbours (fully inductive, e.g. users as the aggregate of their items)."""
    if len(pos_src) == 0:
        raise ValueError("no positive edges to train on")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    feats = (
        None
        if features is None or features.shape[1] == 0
        else torch.as_tensor(np.asarray(features, np.float32))
    )
    enc = SageEncoder(
        graph.num_nodes, 0 if feats is None else feats.shape[1], cfg.dim, cfg.layers, cfg.activation
    ).to(device)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr)
    sampler = NeighborSampler(graph, list(cfg.fanouts))
    src = torch.as_tensor(np.asarray(pos_src, np.int64))
    dst = torch.as_tensor(np.asarray(pos_dst, np.int64))
    lo, hi = neg_range
    id_mask = None if with_ids is None else torch.as_tensor(np.asarray(with_ids, bool))
    model = SageModel(encoder=enc, graph=graph, features=feats, config=cfg, id_mask=id_mask)
    batches = math.ceil(len(src) / cfg.batch_size)
    for epoch in range(cfg.epochs):
        t0, total = time.perf_counter(), 0.0
        enc.train()
        perm = torch.randperm(len(src), generator=gen)
        for b in range(batches):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            u, p = src[idx], dst[idx]
            n_neg = len(idx) * cfg.negatives if cfg.loss == "bpr" else cfg.negatives
            n = torch.randint(lo, hi, (n_neg,), generator=gen)
            sg = sampler.sample(torch.cat([u, p, n]), gen)
            edge_index = sg.edge_index
            if cfg.exclude_targets:  # a positive edge must not carry its own answer as a message
                n_nodes = graph.num_nodes
                key = sg.n_id[edge_index[0]] * n_nodes + sg.n_id[edge_index[1]]
                targets = torch.cat([u * n_nodes + p, p * n_nodes + u])
                edge_index = edge_index[:, ~torch.isin(key, targets)]
            rows = sg.n_id.clone()
            if cfg.id_dropout:
                rows[torch.rand(len(rows), generator=gen) < cfg.id_dropout] = enc.unknown
            if id_mask is not None:
                rows[~id_mask[sg.n_id]] = enc.unknown
            x_feats = None if feats is None else feats[sg.n_id].to(device)
            h = enc(rows.to(device), x_feats, edge_index.to(device))[sg.seed_pos.to(device)]
            if cfg.normalize:
                h = F.normalize(h, dim=-1)
            hu, hp, hn = h[: len(idx)], h[len(idx) : 2 * len(idx)], h[2 * len(idx) :]
            pos = (hu * hp).sum(-1)
            if cfg.loss == "bpr":
                neg = (hu.repeat(cfg.negatives, 1) * hn).sum(-1)
                loss = -F.logsigmoid(pos.repeat(cfg.negatives) - neg).mean()
            else:  # sampled softmax over the positive and a pool of shared negatives
                logits = torch.cat([pos[:, None], hu @ hn.T], 1) / cfg.temperature
                loss = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.int64, device=device))
            loss = loss + cfg.l2 * (
                hu.pow(2).sum() + hp.pow(2).sum() + hn.pow(2).sum() * len(idx) / len(hn)
            ) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        model.history.append(
            {"epoch": epoch + 1, "loss": total / batches, "seconds": time.perf_counter() - t0}
        )
        if progress:
            progress(f"graphsage epoch {epoch + 1}/{cfg.epochs}: loss {total / batches:.4f} "
                     f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    model.infer()
    return model


def config_params(cfg: SageConfig) -> dict[str, object]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
