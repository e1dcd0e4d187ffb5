"""Ranking metrics on hand-computed examples, splits and the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from recstack.models.evaluation import (
    Interactions,
    TopK,
    evaluate,
    popularity_topk,
    time_split,
    topk_from_scores,
)


def _inter(users: list[int], items: list[int], ts: list[int] | None = None) -> Interactions:
    n = len(users)
    return Interactions(np.array(users), np.array(items), np.array(ts or list(range(n))), np.ones(n))


def test_metrics_match_hand_computation() -> None:
    test = _inter([1, 1, 1, 2, 3], [10, 20, 30, 40, 50])
    train = _inter([1, 2, 2, 3], [11, 10, 11, 11])
    recs = TopK(users=np.array([1, 2]), items=np.array([[20, 99, 10], [98, 97, 40]]))  # user 3: no list
    m = evaluate(recs, test, train, k=3)
    d = [1 / math.log2(r + 2) for r in range(3)]
    ndcg1 = (d[0] + d[2]) / (d[0] + d[1] + d[2])
    ndcg2 = d[2] / d[0]
    assert m["ndcg@3"] == pytest.approx((ndcg1 + ndcg2 + 0) / 3)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 3)
    assert m["recall@3"] == pytest.approx((2 / 3 + 1) / 3)
    assert m["hit_rate@3"] == pytest.approx(2 / 3)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 3) / 1) / 3)
    assert m["coverage_items"] == 6
    assert m["users"] == 3
    # items 10 (1 train interaction) and 11 (3) recommended: 10 once, others unseen in train
    catalog = len({10, 11, 20, 30, 40, 50})
    assert m["popularity_bias"] == pytest.approx((1 / 6) / (4 / catalog))


def test_topk_excludes_seen_items_and_unknown_users() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    recs = topk_from_scores(lambda rows: scores[torch.as_tensor(rows)], np.array([7, 8, 9]), np.array([0, 1, -1]),
                            np.array([100, 101, 102, 103]), {7: np.array([0])}, k=2)  # fmt: skip
    assert recs.items.tolist() == [[101, 103], [103, 102], [-1, -1]]


def test_time_split_is_temporal_and_drops_cold_users() -> None:
    data = _inter([1, 1, 2, 1, 3], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    train, test = time_split(data, 0.4)
    assert train.ts.max() < test.ts.min()
    assert 3 not in test.users.tolist()  # user 3 only appears after the cut
    with pytest.raises(ValueError):
        time_split(data, 1.5)


def test_popularity_skips_seen() -> None:
    train = _inter([1, 2, 3, 1], [5, 5, 6, 7])
    recs = popularity_topk(train, np.array([1, 4]), 2)
    assert recs.items[0].tolist() == [6, -1]
    assert recs.items[1].tolist()[0] == 5
