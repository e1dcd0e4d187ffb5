"""Coverage floor: the batch control that gives more of the catalog a slot at the least cost in relevance.

A set of top-k lists (one per user) covers an item when at least one list holds it. Ranking alone puts the
same head items in most lists; on the MovieLens reference split the ensemble's lists cover 448 of 1,682
items. The floor raises coverage to ``min_items`` by *swaps*: an uncovered item ``i`` from user ``u``'s
candidates below the top k replaces the lowest item of ``u``'s list that another list also holds (so the swap
never uncovers anything). Each swap costs ``score(displaced) − score(i)`` in the ranker's score units; the
floor takes the cheapest swaps first over all users (a heap), at most ``max_swaps_per_user`` per list and
none costing more than ``max_loss``.

Why not a per-list penalty such as ``control.exposure.ExposureDiscount``: a discount applied user by user
must push every later user off the head items to reach the same coverage, and spends relevance everywhere;
the floor spends it only where an uncovered item is nearly as good as the list's last slot. On the reference
split, 448 → 590 items cost nDCG@10 0.4930 → 0.4921 with the floor against 0.492 → 0.478 (579 items) with
the discount.

In the service the same role is played online by the PID pacer (``control/pacing.py``); the floor needs every
user's candidates at once, so it is a batch (export) control.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Ranked = Sequence[tuple[int, float]]
"""(item id, score) pairs, best first."""


@dataclass(frozen=True)
class FloorReport:
    items_before: int
    items_after: int
    swaps: int
    score_loss: float  # the sum of the swaps' costs


class CoverageFloor:
    """Raise the number of distinct items over a set of top-k lists to ``min_items`` with the cheapest swaps."""

    name = "control/coverage-floor"

    def __init__(self, min_items: int, max_swaps_per_user: int = 2, max_loss: float = math.inf) -> None:
        if min_items < 0:
            raise ValueError(f"min_items must be >= 0, got {min_items}")
        if max_swaps_per_user < 0:
            raise ValueError(f"max_swaps_per_user must be >= 0, got {max_swaps_per_user}")
        if not max_loss >= 0:
            raise ValueError(f"max_loss must be >= 0, got {max_loss}")
        self.min_items = min_items
        self.max_swaps_per_user = max_swaps_per_user
        self.max_loss = max_loss

    def apply(
        self, ranked: Mapping[int, Ranked], k: int
    ) -> tuple[dict[int, list[tuple[int, float]]], FloorReport]:
        """``ranked[user]`` holds the user's candidates best first (at least k where available); returns each
        user's k-list (sorted by score) and what the floor did. Deterministic: ties break by user, then rank."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        lists = {u: list(c[:k]) for u, c in ranked.items()}
        count: dict[int, int] = {}
        for lst in lists.values():
            for item, _ in lst:
                count[item] = count.get(item, 0) + 1
        before = len(count)
        inserted: dict[int, set[int]] = {u: set() for u in lists}
        heap: list[tuple[float, int, int]] = []
        for u, cands in ranked.items():
            if len(cands) <= k or not lists[u]:
                continue
            last = lists[u][-1][1]
            for j in range(k, len(cands)):
                if cands[j][0] not in count:
                    heap.append((last - cands[j][1], u, j))
        heapq.heapify(heap)
        swaps, loss = 0, 0.0
        while heap and len(count) < self.min_items:
            cost, u, j = heapq.heappop(heap)
            if cost > self.max_loss:
                break
            item, score = ranked[u][j]
            if item in count or len(inserted[u]) >= self.max_swaps_per_user:
                continue
            slot = self._slot(lists[u], inserted[u], count)
            if slot is None:
                continue
            real = lists[u][slot][1] - score
            if real > cost + 1e-12:  # the list's cheapest slot moved up since this entry was pushed
                heapq.heappush(heap, (real, u, j))
                continue
            displaced = lists[u][slot][0]
            count[displaced] -= 1
            lists[u][slot] = (item, score)
            count[item] = 1
            inserted[u].add(item)
            swaps += 1
            loss += real
        for u in lists:
            if inserted[u]:
                lists[u].sort(key=lambda p: -p[1])
        return lists, FloorReport(before, len(count), swaps, loss)

    @staticmethod
    def _slot(lst: list[tuple[int, float]], inserted: set[int], count: dict[int, int]) -> int | None:
        """The lowest position whose item another list also holds and that the floor did not insert."""
        for pos in range(len(lst) - 1, -1, -1):
            item = lst[pos][0]
            if item not in inserted and count[item] > 1:
                return pos
        return None
