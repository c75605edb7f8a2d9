"""The merged rows of a stack of replicates (``layout._grid_patterns``), by counting keys
and by sorting them, against a plain dictionary of (replicate, group, covariate row)."""

from __future__ import annotations

import numpy as np
import pytest

from syndesmo.engines.native import layout


def _stack(seed: int, R: int = 7, G: int = 9, per: int = 5):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(G), per)
    n = groups.size
    X = np.stack(
        [np.ones((R, n)), rng.integers(0, 2, (R, n)), rng.integers(0, 4, (R, n))], axis=-1
    ).astype(float)
    Y = rng.integers(0, 2, (R, n)).astype(float)
    M = (rng.random((R, n)) < 0.7).astype(float)
    return X, Y, M, groups, G


def _by_dict(X, Y, M, groups, G):
    """Sums per (cell, covariate row) over the rows in use, in sorted order."""
    sums: dict[tuple, list[float]] = {}
    for r in range(X.shape[0]):
        for i in range(X.shape[1]):
            if M[r, i] > 0:
                key = (r * G + int(groups[i]), *X[r, i])
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += Y[r, i]
                acc[1] += M[r, i]
    keys = sorted(sums)
    cell = np.array([k[0] for k in keys])
    px = np.array([k[1:] for k in keys])
    y = np.array([sums[k][0] for k in keys])
    m = np.array([sums[k][1] for k in keys])
    return cell, px, y, m


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("count", [True, False])
def test_patterns_match_a_dictionary_by_counting_and_by_sorting(monkeypatch, seed, count):
    if not count:  # every key range is then too wide to count: the sort runs
        monkeypatch.setattr(layout, "COUNT_KEYS", -(2**62))
    X, Y, M, groups, G = _stack(seed)
    got = layout._grid_patterns(X, Y, M, groups, G)
    want = _by_dict(X, Y, M, groups, G)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_counting_and_sorting_give_the_same_bits():
    X, Y, M, groups, G = _stack(3, R=40, G=30, per=12)
    Y = Y * 0.1  # sums that round: the order of the additions shows in the last bits
    counted = layout._grid_patterns(X, Y, M, groups, G)
    saved = layout.COUNT_KEYS
    try:
        layout.COUNT_KEYS = -(2**62)
        sorted_ = layout._grid_patterns(X, Y, M, groups, G)
    finally:
        layout.COUNT_KEYS = saved
    for a, b in zip(counted, sorted_, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
