"""distinct_rows against a reference built on Python tuples.

The hashed grouping (one linear combination of the columns) must give what a plain
lexicographic grouping gives: the distinct rows in sorted order, the index of each
one's first row, and each row's index among them — also where two different rows
share the combination (a collision, resolved by the sort), for signed zeros, for more
columns than the hash has weights, and for non-finite combinations.
"""

from __future__ import annotations

import numpy as np
import pytest

from syndesmo.fitting import diagnostics
from syndesmo.fitting.diagnostics import distinct_rows


def _reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # -0.0 == 0.0 as rows compare; + 0.0 makes them one tuple key as well
    keys = [tuple(row + 0.0) for row in X]
    distinct = sorted(set(keys))
    index = {k: i for i, k in enumerate(distinct)}
    row = np.array([index[k] for k in keys], dtype=np.int64)
    first = np.array([keys.index(k) for k in distinct], dtype=np.int64)
    return first, row


@pytest.mark.parametrize("seed", range(40))
def test_equals_a_grouping_of_tuples(seed):
    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(1, 300)), int(rng.integers(1, 7))
    kind = seed % 4
    if kind == 0:
        X = rng.integers(0, 3, (n, p)).astype(float)
    elif kind == 1:
        X = rng.normal(size=(n, p)).round(1)
    elif kind == 2:
        X = np.where(rng.random((n, p)) < 0.5, -0.0, 0.0) + rng.integers(0, 2, (n, p))
    else:
        X = rng.integers(0, 2, (n, 70)).astype(float)  # more columns than hash weights
    first, row = distinct_rows(X)
    ref_first, ref_row = _reference(X)
    np.testing.assert_array_equal(first, ref_first)
    np.testing.assert_array_equal(row, ref_row)
    np.testing.assert_array_equal(X[first][row], X)


def test_rows_that_share_the_hash_are_told_apart():
    w = diagnostics._HASH_WEIGHTS
    # a·w0 = b·w1 with a ≠ b: the rows (a, 0) and (0, b) collide
    X = np.array([[w[1], 0.0], [0.0, w[0]], [w[1], 0.0], [0.0, w[0]]])
    assert X[0] @ w[:2] == X[1] @ w[:2]
    first, row = distinct_rows(X)
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(row, [1, 0, 1, 0])


def test_non_finite_combinations_fall_back_to_the_sort():
    X = np.array([[1e308, 1e308], [1.0, 2.0], [1e308, 1e308]])
    assert not np.isfinite(X[0] @ diagnostics._HASH_WEIGHTS[:2])
    first, row = distinct_rows(X)
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(row, [1, 0, 1])


def test_no_rows():
    first, row = distinct_rows(np.zeros((0, 3)))
    assert first.size == 0 and row.size == 0
