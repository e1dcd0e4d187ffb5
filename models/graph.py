"""Graphs in CSR form, weighted random walks and a mini-batch neighbour sampler, all vectorised in torch.

``pyg-lib`` and ``torch-sparse`` (PyG's compiled samplers) are optional in PyG and not installable everywhere,
so the walks and the sampler here use plain torch ops: one step of every walker at once is a ``searchsorted``
over the cumulative edge weights; one hop of the sampler draws for every frontier node at once.

Node ids are dense ``0..num_nodes-1``. A bipartite user–item graph is stored as one homogeneous graph with
users at ``0..U-1`` and items at ``U..U+I-1`` (see :func:`bipartite`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CSRGraph:
    """Out-neighbours of node ``v``: ``indices[indptr[v]:indptr[v+1]]`` with ``weights`` on the same slice."""

    indptr: torch.Tensor  # (N+1,) int64
    indices: torch.Tensor  # (E,) int64
    weights: torch.Tensor  # (E,) float64, all > 0

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_edges(self) -> int:
        return len(self.indices)

    def degree(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    @classmethod
    def from_edges(
        cls, src: np.ndarray | torch.Tensor, dst: np.ndarray | torch.Tensor, num_nodes: int,
        weight: np.ndarray | torch.Tensor | None = None, symmetric: bool = True,
    ) -> CSRGraph:  # fmt: skip
        """Build from an edge list; ``symmetric`` adds every reverse edge. Parallel edges are merged by
        summing their weights; self loops and non-positive or non-finite weights are rejected."""
        s = torch.as_tensor(np.asarray(src), dtype=torch.int64)
        d = torch.as_tensor(np.asarray(dst), dtype=torch.int64)
        w = (
            torch.ones(len(s), dtype=torch.float64)
            if weight is None
            else torch.as_tensor(np.asarray(weight), dtype=torch.float64)
        )
        if not (len(s) == len(d) == len(w)):
            raise ValueError("src, dst and weight must have the same length")
        if len(s) and (int(s.min()) < 0 or int(d.min()) < 0 or max(int(s.max()), int(d.max())) >= num_nodes):
            raise ValueError(f"edge endpoints must lie in [0, {num_nodes})")
        if len(w) and not (bool(torch.isfinite(w).all()) and bool((w > 0).all())):
            raise ValueError("edge weights must be finite and > 0")
        if symmetric:
            s, d, w = torch.cat([s, d]), torch.cat([d, s]), torch.cat([w, w])
        keep = s != d
        s, d, w = s[keep], d[keep], w[keep]
        key = s * num_nodes + d
        key, inverse = torch.unique(key, return_inverse=True)  # sorted by (src, dst)
        merged = torch.zeros(len(key), dtype=torch.float64).index_add_(0, inverse, w)
        src_sorted = key // num_nodes
        indptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(src_sorted, minlength=num_nodes), 0)
        return cls(indptr=indptr, indices=key % num_nodes, weights=merged)


def bipartite(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    num_users: int,
    num_items: int,
    weight: np.ndarray | None = None,
) -> CSRGraph:
    """The undirected user–item graph with items offset by ``num_users``."""
    return CSRGraph.from_edges(
        np.asarray(user_idx, np.int64),
        np.asarray(item_idx, np.int64) + num_users,
        num_users + num_items,
        weight,
    )


class WeightedWalker:
    """Weighted random walks: the next node is a neighbour drawn with probability proportional to the edge
    weight, the edge straight back to the previous node weighted ``1 / p`` (node2vec's return parameter
    ``return_p``, with q = 1: every other neighbour keeps its weight). ``return_p = 1`` is DeepWalk's
    first-order walk. On the user–item graph, which is bipartite, every other neighbour is at distance 2
    from the previous node, so ``p`` (relative to q) is all of node2vec there. All walks advance together,
    one ``searchsorted`` per step; a walk at a node without neighbours stops there (later positions hold
    ``-1``).

    The bias is sampled exactly with one uniform draw per step: only the back edge's weight changes, so
    the node's total becomes ``total - w_b + w_b / p`` and the draw is mapped through the back edge's
    shrunk (or stretched) interval onto the unchanged cumulative weights."""

    def __init__(self, graph: CSRGraph, return_p: float = 1.0) -> None:
        if not return_p > 0:
            raise ValueError(f"return_p must be positive, got {return_p}")
        self.graph = graph
        self.return_p = float(return_p)
        self.cum = torch.zeros(graph.num_edges + 1, dtype=torch.float64)
        self.cum[1:] = torch.cumsum(graph.weights, 0)
        if self.return_p != 1.0:  # (source, target) of every edge as one sorted key, to find a back edge
            src = torch.repeat_interleave(torch.arange(graph.num_nodes), graph.degree())
            self.edge_key = src * graph.num_nodes + graph.indices

    def walks(self, starts: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
        """(len(starts), length) node ids; column 0 is the start."""
        g = self.graph
        out = torch.full((len(starts), length), -1, dtype=torch.int64)
        cur = starts.to(torch.int64).clone()
        prev = torch.full_like(cur, -1)
        out[:, 0] = cur
        alive = g.degree()[cur] > 0
        for step in range(1, length):
            rows = alive.nonzero().squeeze(1)
            if len(rows) == 0:
                break
            node = cur[rows]
            lo, hi = g.indptr[node], g.indptr[node + 1]
            base, total = self.cum[lo], self.cum[hi] - self.cum[lo]
            u = torch.rand(len(rows), generator=generator, dtype=torch.float64)
            if self.return_p == 1.0 or step == 1:
                target = base + u * total
            else:  # the back edge (node -> previous node; the walk came along it, so it exists)
                back = torch.searchsorted(self.edge_key, node * g.num_nodes + prev[rows])
                b_lo, w_b = self.cum[back], self.cum[back + 1] - self.cum[back]
                short = w_b / self.return_p
                t = base + u * (total - w_b + short)  # a point on the node's reweighted line
                inside = (t >= b_lo) & (t < b_lo + short)
                after = t >= b_lo + short
                target = torch.where(after, t - short + w_b, t)
                target = torch.where(inside, b_lo + w_b / 2, target)  # the back edge's own interval
            edge = torch.searchsorted(self.cum, target, right=True) - 1
            edge = torch.minimum(torch.maximum(edge, lo), hi - 1)  # guard rounding at the slice ends
            nxt = g.indices[edge]
            prev[rows] = node
            cur[rows] = nxt
            out[rows, step] = nxt
            alive[rows] = g.degree()[nxt] > 0
        return out


@dataclass(frozen=True)
class Subgraph:
    """A sampled computation graph. ``n_id`` maps local → global node ids; ``edge_index`` (2, E) holds local
    ids with messages flowing ``edge_index[0] → edge_index[1]``; the first ``num_seeds`` local nodes are the
    distinct seeds, and ``seed_pos[k]`` is the local row of the k-th requested seed."""

    n_id: torch.Tensor
    edge_index: torch.Tensor
    num_seeds: int
    seed_pos: torch.Tensor


class NeighborSampler:
    """GraphSAGE's uniform neighbour sampling: for each hop, up to ``fanouts[h]`` distinct neighbours of every
    node added in the previous hop (all of them when the degree is at most the fan-out; -1 means all).

    Without-replacement draws give each candidate edge a random key and keep the ``k`` smallest per node,
    so the cost of one hop is the sum of the frontier's degrees, all in vectorised torch ops."""

    def __init__(self, graph: CSRGraph, fanouts: list[int]) -> None:
        if not fanouts or any(f == 0 or f < -1 for f in fanouts):
            raise ValueError(f"fanouts must be positive (or -1 for all), got {fanouts}")
        self.graph = graph
        self.fanouts = list(fanouts)
        self._local = torch.full((graph.num_nodes,), -1, dtype=torch.int64)

    def neighbors(
        self, nodes: torch.Tensor, k: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(target position in ``nodes``, neighbour global id) for up to ``k`` neighbours of each node."""
        g = self.graph
        lo, deg = g.indptr[nodes], g.degree()[nodes]
        owner = torch.repeat_interleave(torch.arange(len(nodes)), deg)
        offsets = torch.arange(len(owner)) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        edge = lo[owner] + offsets
        if k != -1 and len(edge) and bool((deg > k).any()):
            key = torch.rand(len(edge), generator=generator, dtype=torch.float64)
            order = torch.argsort(owner.to(torch.float64) * 2.0 + key)  # by owner, random inside each
            owner, edge = owner[order], edge[order]
            rank = torch.arange(len(owner)) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
            keep = rank < k
            owner, edge = owner[keep], edge[keep]
        return owner, g.indices[edge]

    def sample(self, seeds: torch.Tensor, generator: torch.Generator) -> Subgraph:
        seeds = seeds.to(torch.int64)
        uniq, seed_pos = torch.unique(seeds, return_inverse=True)
        local = self._local
        n_ids = [uniq]
        local[uniq] = torch.arange(len(uniq))
        count = len(uniq)
        frontier = torch.arange(len(uniq))
        src_parts, dst_parts = [], []
        try:
            for k in self.fanouts:
                if len(frontier) == 0:
                    break
                owner, nbr = self.neighbors(torch.cat(n_ids)[frontier], k, generator)
                dst_parts.append(frontier[owner])
                new = torch.unique(nbr[local[nbr] < 0])
                local[new] = torch.arange(count, count + len(new))
                src_parts.append(local[nbr])
                n_ids.append(new)
                frontier = torch.arange(count, count + len(new))
                count += len(new)
        finally:
            n_id = torch.cat(n_ids)
            local[n_id] = -1
        edge_index = (
            torch.stack([torch.cat(src_parts), torch.cat(dst_parts)])
            if src_parts
            else torch.empty(2, 0, dtype=torch.int64)
        )
        return Subgraph(n_id=n_id, edge_index=edge_index, num_seeds=len(uniq), seed_pos=seed_pos)
