"""The point-in-time kernels against brute force on random data with many ties (no Spark)."""

from __future__ import annotations

import numpy as np
from recstack.offline.jobs.windows import (
    dense_codes,
    first_match_within,
    first_per_group,
    group_max,
    recent_values,
    window_counts,
)

RNG = np.random.default_rng(3)
T0 = 1_767_225_600_000  # 2026-01-01 in ms


def _data(n_q: int = 300, n_c: int = 500) -> tuple[np.ndarray, ...]:
    qg, cg = RNG.integers(0, 12, n_q), RNG.integers(0, 12, n_c)
    # coarse times (multiples of 500 ms) so that equal timestamps and exact window edges are common
    qt, ct = T0 + RNG.integers(0, 40, n_q) * 500, T0 + RNG.integers(0, 40, n_c) * 500
    return qg, qt, cg, ct


def test_window_counts_are_strictly_before_and_include_the_lower_edge() -> None:
    qg, qt, cg, ct = _data()
    windows = [500, 2000, 7000]
    got = window_counts(qg, qt, cg, ct, windows)
    for i in range(len(qg)):
        for j, w in enumerate(windows):
            want = np.sum((cg == qg[i]) & (ct >= qt[i] - w) & (ct < qt[i]))
            assert got[i, j] == want


def test_recent_values_newest_first_within_the_window() -> None:
    qg, qt, cg, ct = _data()
    values = RNG.integers(100, 110, len(cg))
    offsets, vals = recent_values(qg, qt, cg, ct, values, 6000, 4)
    for i in range(len(qg)):
        m = (cg == qg[i]) & (ct >= qt[i] - 6000) & (ct < qt[i])
        order = np.lexsort((values[m], ct[m]))[::-1]  # newest first; equal times: larger value is newer
        assert vals[offsets[i] : offsets[i + 1]].tolist() == values[m][order][:4].tolist()


def test_first_match_within_and_group_max() -> None:
    qg, qt, cg, ct = _data()
    got = first_match_within(qg, qt, cg, ct, 1500)
    for i in range(len(qg)):
        m = (cg == qg[i]) & (ct >= qt[i]) & (ct <= qt[i] + 1500)
        assert got[i] == (ct[m].min() if m.any() else -1)
    labels = RNG.integers(0, 2, len(cg))
    best = group_max(qg, cg[:50], labels[:50])
    for i in range(len(qg)):
        m = cg[:50] == qg[i]
        assert best[i] == (labels[:50][m].max() if m.any() else -1)
    assert len(first_match_within(qg, qt, cg[:0], ct[:0], 10)) == len(qg)


def test_dense_codes_and_first_per_group() -> None:
    a, b = RNG.integers(0, 5, 1000), RNG.integers(-(2**62), 2**62, 1000) % 7
    codes = dense_codes(a, b)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    for i in range(0, 1000, 37):
        for j in range(0, 1000, 41):
            assert (codes[i] == codes[j]) == (pairs[i] == pairs[j])
    assert codes.max() + 1 == len(set(pairs))
    ts = RNG.integers(0, 3, 1000)
    first = first_per_group(codes, ts, b)
    assert len(first) == len(set(pairs))
    for k in first:
        same = codes == codes[k]
        assert ts[k] == ts[same].min()


def test_ids_outside_the_direct_range_are_coded_and_give_the_same_answers() -> None:
    """Ids that cannot be their own group code (negative, >= 2**21, or only some of them) get dense codes:
    every kernel answers as it does for the same groups under small ids."""
    qg, qt, cg, ct = _data()
    values = RNG.integers(100, 110, len(cg))
    for big in (lambda g: g * 10**12 + 7, lambda g: -g - 1, lambda g: np.where(g % 2 == 0, g, g + 2**40)):
        bq, bc = big(qg), big(cg)
        np.testing.assert_array_equal(
            window_counts(bq, qt, bc, ct, [500, 7000]), window_counts(qg, qt, cg, ct, [500, 7000])
        )
        for a, b in zip(
            recent_values(bq, qt, bc, ct, values, 6000, 4),
            recent_values(qg, qt, cg, ct, values, 6000, 4),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(
            first_match_within(bq, qt, bc, ct, 1500), first_match_within(qg, qt, cg, ct, 1500)
        )
        np.testing.assert_array_equal(group_max(bq, bc, values), group_max(qg, cg, values))


def test_dense_codes_of_wide_columns_recode_before_overflowing() -> None:
    """Three columns of up to 2**24 values would overflow a plain mixed-radix code (2**72); strings and
    negative numbers are coded too."""
    n = 2000
    a, b, c = (RNG.integers(0, 4, n) * (2**24 - 1) // 3 for _ in range(3))
    s = np.array(["x", "y", "z"], dtype=object)[RNG.integers(0, 3, n)]
    neg = -RNG.integers(0, 3, n)
    codes = dense_codes(a, b, c, s, neg)
    rows = list(zip(a.tolist(), b.tolist(), c.tolist(), s.tolist(), neg.tolist(), strict=True))
    assert codes.min() == 0 and codes.max() + 1 == len(set(rows))
    first: dict[tuple, int] = {}
    for row, code in zip(rows, codes.tolist(), strict=True):
        assert first.setdefault(row, code) == code
    assert len(set(first.values())) == len(first)


def test_dense_codes_keep_missing_values_apart() -> None:
    """NaN / None are values of their own: (1, NaN) is neither (0, 1.0) nor (1, 0.0)."""
    codes = dense_codes(np.array([1, 1, 0, 1]), np.array([0.0, np.nan, 1.0, np.nan]))
    assert codes.tolist() == [0, 1, 2, 1]
    obj = dense_codes(np.array([0, 0, 1]), np.array([None, "a", None], dtype=object))
    assert len(set(obj.tolist())) == 3
