"""The coverage floor: cheapest swaps first, never uncovering an item, within its limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from recstack.control.coverage import CoverageFloor


def _covered(lists: dict[int, list[tuple[int, float]]]) -> set[int]:
    return {i for lst in lists.values() for i, _ in lst}


def test_the_cheaper_user_gets_the_uncovered_item() -> None:
    ranked = {
        1: [(10, 5.0), (11, 4.0), (20, 3.9)],  # item 20 costs user 1 only 0.1
        2: [(10, 5.0), (11, 4.0), (20, 2.0)],  # ... and user 2 2.0
    }
    lists, report = CoverageFloor(min_items=3).apply(ranked, k=2)
    assert lists[1] == [(10, 5.0), (20, 3.9)] and lists[2] == [(10, 5.0), (11, 4.0)]
    assert (report.items_before, report.items_after, report.swaps) == (2, 3, 1)
    assert report.score_loss == pytest.approx(0.1)


def test_the_only_copy_of_an_item_is_never_displaced() -> None:
    ranked = {1: [(10, 5.0), (11, 4.0), (20, 3.9)], 2: [(10, 5.0), (12, 4.0), (21, 3.0)]}
    lists, report = CoverageFloor(min_items=10).apply(ranked, k=2)
    # 11 and 12 are held by one list each, so only the shared item 10 can give way; once user 1 (cheaper:
    # 1.1 against 2.0) has swapped it out, user 2 holds its only copy and keeps it
    assert lists == {1: [(11, 4.0), (20, 3.9)], 2: [(10, 5.0), (12, 4.0)]}
    assert (report.items_before, report.items_after, report.swaps) == (3, 4, 1)


def test_limits_per_user_and_loss_are_kept() -> None:
    ranked = {
        u: [(1, 9.0), (2, 8.0), (3, 7.0)] + [(100 + 10 * u + j, 6.0 - j) for j in range(5)] for u in range(4)
    }
    lists, report = CoverageFloor(min_items=100, max_swaps_per_user=1).apply(ranked, k=3)
    assert report.swaps == 4 and all(len(set(i for i, _ in lst) - {1, 2, 3}) == 1 for lst in lists.values())
    lists, report = CoverageFloor(min_items=100, max_swaps_per_user=5, max_loss=2.5).apply(ranked, k=3)
    assert report.swaps > 0 and report.score_loss <= 2.5 * report.swaps
    assert all(7.0 - s <= 2.5 for lst in lists.values() for i, s in lst if i >= 100)


def test_matches_brute_force_on_small_random_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        k, users, depth = 2, 3, 3
        ranked = {}
        for u in range(users):
            items = rng.choice(8, k + depth, replace=False).tolist()
            scores = np.sort(rng.normal(size=k + depth))[::-1].tolist()
            ranked[u] = list(zip(items, scores, strict=True))
        floor = CoverageFloor(min_items=8, max_swaps_per_user=1)
        lists, report = floor.apply(ranked, k)
        base = {u: c[:k] for u, c in ranked.items()}
        # every single-swap-per-user choice that never uncovers an item: the floor reaches the best coverage
        best = len(_covered(base))
        options = [[None] + [(s, j) for s in range(k) for j in range(k, k + depth)] for _ in range(users)]
        for choice in itertools.product(*options):
            trial = {u: list(base[u]) for u in base}
            for u, ch in enumerate(choice):
                if ch is not None:
                    trial[u][ch[0]] = ranked[u][ch[1]]
            if any(len({i for i, _ in lst}) < k for lst in trial.values()) or not _covered(base) <= _covered(
                trial
            ):
                continue
            best = max(best, len(_covered(trial)))
        assert report.items_after == len(_covered(lists))
        assert _covered(base) <= _covered(lists)  # nothing uncovered
        assert report.items_after >= best - 1  # greedy is within one item of the optimum here


def test_nothing_to_do_and_bad_settings() -> None:
    ranked = {1: [(1, 2.0), (2, 1.0), (3, 0.5)]}
    lists, report = CoverageFloor(min_items=1).apply(ranked, k=2)
    assert lists == {1: [(1, 2.0), (2, 1.0)]} and report.swaps == 0
    for bad in (
        {"min_items": -1},
        {"min_items": 1, "max_swaps_per_user": -1},
        {"min_items": 1, "max_loss": -1.0},
    ):
        with pytest.raises(ValueError):
            CoverageFloor(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be positive"):
        CoverageFloor(1).apply(ranked, k=0)
