"""Vectorised point-in-time kernels used inside the Spark jobs (one call per partition, via ``mapInArrow``).

Spark's sliding range frames re-aggregate the whole frame for every row, which is quadratic for a popular
item; these kernels sort once and answer every query with ``np.searchsorted``, O(n log n) per partition.
Rows of one entity (user or item) are always in one partition, so each answer is exact.

Keys: an entity's rows are ranked densely and combined with the timestamp into one sortable int64,
``rank << 42 | ts_ms`` (``ts_ms < 2**42`` holds until the year 2109; a partition holds fewer than ``2**21``
distinct entities).
"""

from __future__ import annotations

import numpy as np

_SHIFT = 42
_MAX_GROUPS = 1 << (63 - _SHIFT)


def dense_codes(*columns: np.ndarray) -> np.ndarray:
    """One int64 code per row such that rows are equal on every column iff their codes are equal."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(columns[::-1])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for col in columns:
        c = col[order]
        change[1:] |= c[1:] != c[:-1]
    codes = np.empty(n, dtype=np.int64)
    codes[order] = np.cumsum(change) - 1
    return codes


def _composite(group: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    if len(group) and int(group.max()) >= _MAX_GROUPS:
        raise ValueError(f"a partition holds more than {_MAX_GROUPS} groups: raise the number of partitions")
    return (group.astype(np.int64) << _SHIFT) + ts_ms.astype(np.int64)


def _joint_ranks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    return inv[: len(a)], inv[len(a) :]


def window_counts(
    q_group: np.ndarray, q_ts: np.ndarray, c_group: np.ndarray, c_ts: np.ndarray, windows_ms: list[int]
) -> np.ndarray:
    """For each query row: how many counted rows of the same group have ``q_ts - w <= ts < q_ts``.

    Returns int64 of shape (n_queries, len(windows_ms)).
    """
    qg, cg = _joint_ranks(q_group, c_group)
    qk = _composite(qg, q_ts)
    ck = np.sort(_composite(cg, c_ts))
    hi = np.searchsorted(ck, qk, side="left")
    out = np.empty((len(qk), len(windows_ms)), dtype=np.int64)
    for j, w in enumerate(windows_ms):
        out[:, j] = hi - np.searchsorted(ck, qk - w, side="left")
    return out


def recent_values(
    q_group: np.ndarray,
    q_ts: np.ndarray,
    c_group: np.ndarray,
    c_ts: np.ndarray,
    c_value: np.ndarray,
    window_ms: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The last ``k`` values of counted rows of the same group with ``q_ts - window_ms <= ts < q_ts``.

    Newest first; counted rows at the same time are ordered by value (the later one in that order is newer).
    Returns ``(offsets, values)`` of a list column: row i's values are ``values[offsets[i]:offsets[i+1]]``.
    """
    qg, cg = _joint_ranks(q_group, c_group)
    qk = _composite(qg, q_ts)
    ck = _composite(cg, c_ts)
    order = np.lexsort((c_value, ck))
    ck, vals = ck[order], c_value[order]
    hi = np.searchsorted(ck, qk, side="left")
    lo = np.searchsorted(ck, qk - window_ms, side="left")
    idx = hi[:, None] - 1 - np.arange(k)[None, :]
    valid = idx >= lo[:, None]
    picked = vals[np.clip(idx, 0, None)] if len(vals) else np.zeros(idx.shape, dtype=np.int64)
    offsets = np.zeros(len(qk) + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    return offsets, picked[valid].astype(np.int64)


def first_match_within(
    q_group: np.ndarray, q_ts: np.ndarray, c_group: np.ndarray, c_ts: np.ndarray, window_ms: int
) -> np.ndarray:
    """For each query: the earliest ``ts`` of a counted row of the same group with ``q_ts <= ts <= q_ts +
    window_ms`` (click attribution), or -1 where there is none."""
    qg, cg = _joint_ranks(q_group, c_group)
    qk = _composite(qg, q_ts)
    ck = np.sort(_composite(cg, c_ts))
    if len(ck) == 0:
        return np.full(len(qk), -1, dtype=np.int64)
    idx = np.minimum(np.searchsorted(ck, qk, side="left"), len(ck) - 1)
    cand = ck[idx]
    hit = ((cand >> _SHIFT) == (qk >> _SHIFT)) & (cand >= qk) & (cand - qk <= window_ms)
    return np.where(hit, cand & ((1 << _SHIFT) - 1), -1)


def group_max(q_group: np.ndarray, c_group: np.ndarray, c_value: np.ndarray) -> np.ndarray:
    """For each query: the max ``c_value`` over counted rows of the same group, or -1 where there is none."""
    qg, cg = _joint_ranks(q_group, c_group)
    best = np.full(int(max(qg.max(initial=-1), cg.max(initial=-1))) + 1, -1, dtype=np.int64)
    np.maximum.at(best, cg, c_value.astype(np.int64))
    return best[qg] if len(qg) else np.zeros(0, dtype=np.int64)


def first_per_group(group: np.ndarray, *tie_breaks: np.ndarray) -> np.ndarray:
    """Indices of the first row of each group in the order (tie_breaks[0], tie_breaks[1], ...)."""
    order = np.lexsort((*reversed(tie_breaks), group))
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return np.sort(order[first])
