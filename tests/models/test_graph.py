"""CSR graphs, weighted walks and the neighbour sampler on hand-made graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recstack.models.graph import CSRGraph, NeighborSampler, WeightedWalker, bipartite
from scipy.stats import chisquare


def test_csr_merges_parallel_edges_and_is_symmetric() -> None:
    g = CSRGraph.from_edges(np.array([0, 0, 1]), np.array([1, 1, 2]), 4, np.array([1.0, 2.0, 5.0]))
    assert g.indptr.tolist() == [0, 1, 3, 4, 4]
    assert g.indices.tolist() == [1, 0, 2, 1]
    assert g.weights.tolist() == [3.0, 3.0, 5.0, 5.0]
    assert g.degree().tolist() == [1, 2, 1, 0]


@pytest.mark.parametrize(
    ("src", "dst", "w", "match"),
    [([0], [5], None, "endpoints"), ([0], [1], [0.0], "weights"), ([0], [1], [float("nan")], "weights"),
     ([0, 1], [1], None, "same length")],
)  # fmt: skip
def test_csr_rejects_bad_edges(src: list[int], dst: list[int], w: list[float] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CSRGraph.from_edges(np.array(src), np.array(dst), 3, None if w is None else np.array(w))


def test_walk_steps_follow_edge_weights() -> None:
    """From the centre of a star with weights 1:2:7, 30k steps land on the leaves in those proportions."""
    g = CSRGraph.from_edges(np.array([0, 0, 0]), np.array([1, 2, 3]), 4, np.array([1.0, 2.0, 7.0]))
    walks = WeightedWalker(g).walks(
        torch.zeros(30_000, dtype=torch.int64), 2, torch.Generator().manual_seed(1)
    )
    counts = np.bincount(walks[:, 1].numpy(), minlength=4)[1:]
    _, p = chisquare(counts, f_exp=np.array([0.1, 0.2, 0.7]) * counts.sum())
    assert p > 1e-3, counts
    # a heavily skewed graph is clearly distinguishable from uniform
    _, p_uniform = chisquare(counts)
    assert p_uniform < 1e-12


def test_walks_are_valid_paths_and_stop_at_dead_ends() -> None:
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    keep = src != dst
    g = CSRGraph.from_edges(src[keep], dst[keep], 31, rng.random(int(keep.sum())) + 0.1)  # node 30 isolated
    walks = WeightedWalker(g).walks(torch.arange(31), 12, torch.Generator().manual_seed(0))
    adj = {(int(a), int(b)) for a, b in zip(src[keep], dst[keep], strict=True)}
    adj |= {(b, a) for a, b in adj}
    for row in walks.tolist():
        steps = [v for v in row if v >= 0]
        assert all((a, b) in adj for a, b in zip(steps, steps[1:], strict=False))
    assert walks[30].tolist() == [30] + [-1] * 11


def test_walks_are_deterministic_with_a_seed() -> None:
    g = bipartite(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3, 3)
    w = WeightedWalker(g)
    a = w.walks(torch.arange(6), 8, torch.Generator().manual_seed(7))
    b = w.walks(torch.arange(6), 8, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("leaves", "return_p"), [(3, 4.0), (3, 0.25), (49, 0.05), (49, 20.0)])
def test_return_parameter_biases_only_the_step_back(leaves: int, return_p: float) -> None:
    """node2vec with q = 1: from the centre of a star entered from leaf 1 (edge weights 1, 1, 2, 1, 1, ...),
    the next step goes back to leaf 1 with weight 1/p, to the others with their own; exact for small and
    large p at a hub too. A leaf's only way is back, whatever p."""
    w = np.ones(leaves)
    w[2] = 2.0
    g = CSRGraph.from_edges(np.zeros(leaves, np.int64), np.arange(1, leaves + 1), leaves + 1, w)
    walks = WeightedWalker(g, return_p).walks(torch.ones(40_000, dtype=torch.int64), 4, torch.Generator().manual_seed(3))
    assert (walks[:, 1] == 0).all() and (walks[:, 3] == 0).all()
    counts = np.bincount(walks[:, 2].numpy(), minlength=leaves + 1)[1:]
    expected = w.copy()
    expected[0] /= return_p
    _, p = chisquare(counts, f_exp=expected / expected.sum() * counts.sum())
    assert p > 1e-3, counts[:4]
    _, p_plain = chisquare(counts, f_exp=w / w.sum() * counts.sum())
    assert p_plain < 1e-12  # distinguishable from the unbiased walk


def test_first_order_walks_are_unchanged() -> None:
    """``return_p = 1`` draws exactly what the walker drew before the parameter existed (pinned)."""
    g = bipartite(np.array([0, 0, 1, 2, 2, 3]), np.array([0, 1, 1, 2, 0, 3]), 4, 4, np.array([1.0, 2, 1, 3, 1, 2]))
    walks = WeightedWalker(g).walks(torch.arange(8), 7, torch.Generator().manual_seed(11))
    assert walks.tolist() == [[0, 4, 2, 6, 2, 4, 0], [1, 5, 0, 4, 2, 4, 2], [2, 6, 2, 6, 2, 6, 2],
                              [3, 7, 3, 7, 3, 7, 3], [4, 2, 6, 2, 4, 2, 4], [5, 0, 5, 1, 5, 0, 5],
                              [6, 2, 4, 2, 6, 2, 4], [7, 3, 7, 3, 7, 3, 7]]  # fmt: skip
    biased = WeightedWalker(g, 3.0).walks(torch.arange(8), 7, torch.Generator().manual_seed(11))
    edges = {(n, int(g.indices[e])) for n in range(g.num_nodes) for e in range(int(g.indptr[n]), int(g.indptr[n + 1]))}
    assert all((a, b) in edges for row in biased.tolist() for a, b in zip(row, row[1:], strict=False))
    assert not torch.equal(biased, walks)
    with pytest.raises(ValueError, match="return_p"):
        WeightedWalker(g, 0.0)


def _hand_graph() -> CSRGraph:
    # 0 - {1, 2, 3, 4, 5}; 1 - {6}; 2 - {7, 8}; 9 isolated
    edges = [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 6), (2, 7), (2, 8)]
    s, d = zip(*edges, strict=True)
    return CSRGraph.from_edges(np.array(s), np.array(d), 10)


def test_sampler_full_neighbourhoods_on_hand_graph() -> None:
    g = _hand_graph()
    sg = NeighborSampler(g, [-1, -1]).sample(torch.tensor([1, 9]), torch.Generator().manual_seed(0))
    glob = {(int(sg.n_id[a]), int(sg.n_id[b])) for a, b in sg.edge_index.T.tolist()}
    # hop 1: neighbours of 1 (0, 6); 9 has none. hop 2: neighbours of 0 and 6 (message source -> target)
    assert glob == {(0, 1), (6, 1), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (1, 6)}
    assert sg.n_id[: sg.num_seeds].tolist() == [1, 9]
    assert sg.n_id[sg.seed_pos].tolist() == [1, 9]
    assert sorted(sg.n_id.tolist()) == [0, 1, 2, 3, 4, 5, 6, 9]


def test_sampler_fanout_draws_distinct_true_neighbours_uniformly() -> None:
    g = _hand_graph()
    sampler = NeighborSampler(g, [2])
    gen = torch.Generator().manual_seed(3)
    counts = np.zeros(10)
    for _ in range(3000):
        sg = sampler.sample(torch.tensor([0, 0, 2]), gen)
        targets = sg.n_id[sg.edge_index[1]]
        sources = sg.n_id[sg.edge_index[0]]
        from_zero = sources[targets == 0].tolist()
        assert len(from_zero) == 2 and len(set(from_zero)) == 2 and set(from_zero) <= {1, 2, 3, 4, 5}
        assert sorted(sources[targets == 2].tolist()) in ([0, 7], [0, 8], [7, 8])
        assert sg.seed_pos.tolist()[0] == sg.seed_pos.tolist()[1]  # duplicate seeds share a row
        counts[from_zero] += 1
    _, p = chisquare(counts[1:6])
    assert p > 1e-3, counts


def test_sampler_rejects_bad_fanouts() -> None:
    with pytest.raises(ValueError, match="fanouts"):
        NeighborSampler(_hand_graph(), [0])
