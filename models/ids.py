"""Id → row lookups used on the serving hot path."""

from __future__ import annotations

import numpy as np

DENSE_FACTOR = 8
"""A dense table is used while the largest id is at most this many times the number of ids (plus 1024)."""


class IdIndex:
    """Row of each id of ``ids`` (any order, unique): one array read per query when the ids are compact
    (a dense table), else a binary search over the sorted ids. Unknown ids give -1."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.size = len(ids)
        self._table: np.ndarray | None = None
        if self.size and int(ids.min()) >= 0 and int(ids.max()) <= DENSE_FACTOR * self.size + 1024:
            table = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
            table[ids] = np.arange(self.size)
            self._table = table
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted = ids[self._order]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        q = np.asarray(ids, dtype=np.int64)
        if self.size == 0:
            return np.full(len(q), -1, dtype=np.int64)
        if self._table is not None:
            inside = (q >= 0) & (q < len(self._table))
            return np.where(inside, self._table[np.where(inside, q, 0)], -1)
        pos = np.minimum(np.searchsorted(self._sorted, q), self.size - 1)
        return np.where(self._sorted[pos] == q, self._order[pos], -1)

    def row(self, item_id: int) -> int:
        if self._table is not None:
            return int(self._table[item_id]) if 0 <= item_id < len(self._table) else -1
        if self.size == 0:
            return -1
        pos = int(np.searchsorted(self._sorted, item_id))
        return int(self._order[pos]) if pos < self.size and self._sorted[pos] == item_id else -1
