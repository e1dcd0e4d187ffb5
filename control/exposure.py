"""Exposure discount: a control stage that lowers an item's score the more it has already been shown.

``score' = score − λ · log(1 + exposures(item))``

Diminishing returns on exposure spread a batch of lists over more of the catalog (the head items that every
user's model ranks first give way, one slot at a time, to each user's next-best items). It is the batch
export's coverage control; in the service the same role is played by the Redis-backed PID pacer
(``control/pacing.py``), which tracks a target curve instead of a plain count. λ is in the ranker's score
units (the ensemble's scores are per-user standardised, so λ = 0.2 is a fifth of a standard deviation per
e-fold of exposures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recstack.online.recall import UserView


class ExposureDiscount:
    """``ControlStage``: score − λ·log1p(exposures) with in-process exposure counts (one batch job)."""

    name = "control/exposure-discount"

    def __init__(self, strength: float) -> None:
        if strength < 0:
            raise ValueError(f"exposure discount strength must be >= 0, got {strength}")
        self.strength = strength
        self.exposures: dict[int, int] = {}

    def apply(self, user: UserView, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        counts = np.fromiter((self.exposures.get(int(i), 0) for i in items.tolist()), np.float64, len(items))
        return scores - self.strength * np.log1p(counts)

    def record(self, items: np.ndarray) -> None:
        """Count one exposure of each of ``items`` (the list that was served)."""
        for i in items.tolist():
            self.exposures[int(i)] = self.exposures.get(int(i), 0) + 1
