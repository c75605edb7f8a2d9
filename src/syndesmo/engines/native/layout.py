"""From row-level data to the compact, group-sorted ``Layout`` the likelihood works on.

Rows of one group with the same covariate row are merged into one binomial row
(successes and trials summed). The log-likelihood in ``(β, θ)`` changes only by the
binomial coefficients, which callers compute on the original rows, so the fit is
exact. VU panels have few distinct covariate rows per patient (a binary exposure and
patient-level covariates), so this shrinks the work several-fold; with continuous
covariates nothing merges and nothing is lost.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from syndesmo.engines.native.quadrature import Layout
from syndesmo.fitting.diagnostics import distinct_rows


def _patterns(groups: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(group, x)`` rows, sorted by group, and each row's pattern index."""
    keys = np.column_stack([groups.astype(float), X])
    first, inv = distinct_rows(keys)
    return keys[first], inv


def n_patterns(groups: np.ndarray, X: np.ndarray) -> int:
    """How many distinct ``(group, covariate row)`` rows there are: the rows of a layout."""
    return int(_patterns(groups, X)[0].shape[0])


def _starts(gcodes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, gcodes[1:] != gcodes[:-1]])


def compress_shared(
    X: np.ndarray,
    Y: np.ndarray,
    M: np.ndarray,
    groups: np.ndarray,
    offset: np.ndarray | None = None,
) -> tuple[Layout, np.ndarray]:
    """Layout for replicates sharing one design ``X`` (n, p); ``Y``, ``M`` are (R, n).

    ``offset`` (n,), if given, is part of what makes two rows the same. Returns the
    layout and the original code of each layout group.
    """
    keys = X if offset is None else np.column_stack([X, offset])
    uniq, inv = _patterns(groups, keys)
    to_pattern = sp.csr_matrix((np.ones(inv.size), (np.arange(inv.size), inv)))
    y = np.asarray(Y @ to_pattern)
    m = np.asarray(M @ to_pattern)
    codes, gid = np.unique(uniq[:, 0].astype(np.int64), return_inverse=True)
    p = X.shape[1]
    off = None if offset is None else uniq[:, 1 + p]
    Xc = np.ascontiguousarray(uniq[:, 1 : 1 + p])
    return Layout(Xc, y, m, gid.reshape(-1), off), codes


#: Keys below ``4 × rows + COUNT_KEYS`` are counted (``np.bincount``) rather than sorted.
COUNT_KEYS = 2**16


def _grid_patterns(
    X: np.ndarray, Y: np.ndarray, M: np.ndarray, groups: np.ndarray, G: int
) -> tuple[np.ndarray, ...] | None:
    """The distinct (replicate, group, covariate row) patterns of the rows in use, in
    the order of a lexicographic sort, from one integer key per cell of the (R, n)
    grid — when every covariate holds small whole numbers ≥ 0 on those rows (binary
    exposures, an arm); ``None`` otherwise. Returns each pattern's cell
    (replicate × G + group), covariate row and summed successes and trials.
    """
    R, n, p = X.shape
    rows = np.flatnonzero(M > 0)  # the rows in use (replicate × n + row), in order
    if rows.size == 0:
        return None
    groups = np.asarray(groups, dtype=np.int64)
    used = np.reshape(X, (R * n, p))[rows]
    key = (rows // n) * G + groups[rows % n]
    span = R * G
    for j in range(p):
        xj = used[:, j]
        lo, hi = float(xj.min()), float(xj.max())
        if lo == hi:
            continue  # the same on every row in use (the intercept): orders nothing
        if lo < 0 or hi > 2**20 or np.any(xj != np.floor(xj)):
            return None
        width = int(hi) + 1
        span *= width
        if span >= 2**62:
            return None
        key = key * width + xj.astype(np.int64)
    y_in, m_in = Y.ravel()[rows], M.ravel()[rows]
    if span <= 4 * rows.size + COUNT_KEYS:
        # few possible keys: count them instead of sorting (the same patterns, in key
        # order; each pattern's sums taken over its rows in row order, as after a
        # stable sort; ``at`` the first of its rows)
        ids = np.flatnonzero(np.bincount(key, minlength=span))
        y = np.bincount(key, y_in, minlength=span)[ids]
        m = np.bincount(key, m_in, minlength=span)[ids]
        first = np.full(span, rows.size, dtype=np.int64)
        np.minimum.at(first, key, np.arange(rows.size))
        at = first[ids]
    else:
        order = np.argsort(key, kind="stable")  # rows come nearly sorted
        key = key[order]
        new = np.ones(key.size, dtype=bool)
        new[1:] = key[1:] != key[:-1]
        pattern = np.cumsum(new) - 1
        y = np.bincount(pattern, y_in[order])
        m = np.bincount(pattern, m_in[order])
        at = order[new]
    rep, row = rows[at] // n, rows[at] % n
    return rep * G + groups[row], used[at], y, m


def compress_stacked(
    X: np.ndarray, Y: np.ndarray, M: np.ndarray, groups: np.ndarray
) -> tuple[Layout, np.ndarray]:
    """Layout for replicates with one design each: ``X`` (R, n, p), ``Y``, ``M`` (R, n).

    Each replicate is merged on its own; every group then gets as many rows as the
    replicate with the most distinct rows in it (the others are padded with rows of
    zero trials), so that row ``i`` belongs to the same group in every replicate.
    Rows masked out (``M = 0``) are dropped before merging. All replicates are
    merged in one lexicographic sort on (replicate, group, covariate row).
    """
    R, _, p = X.shape
    G = int(groups.max()) + 1
    grid = _grid_patterns(X, Y, M, groups, G)
    if grid is None:
        rep, row = np.nonzero(M > 0)
        cell = rep * G + np.asarray(groups, dtype=np.int64)[row]  # sorts as (replicate, group)
        xr = X[rep, row]  # (rows kept, p)
        order = np.lexsort((*xr.T[::-1], cell))
        cell, row, rep, xr = cell[order], row[order], rep[order], xr[order]
        new = np.ones(cell.size, dtype=bool)
        new[1:] = (cell[1:] != cell[:-1]) | np.any(xr[1:] != xr[:-1], axis=1)
        pattern = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        y = np.bincount(pattern, Y[rep, row])
        m = np.bincount(pattern, M[rep, row])
        cell, px = cell[first], xr[first]
    else:
        cell, px, y, m = grid
    prep, pg = cell // G, cell % G
    counts = np.bincount(cell, minlength=R * G).reshape(R, G)
    width = counts.max(axis=0)
    present = np.flatnonzero(width > 0)
    width = width[present]
    offset = np.full(G, -1, dtype=np.int64)
    offset[present] = np.r_[0, np.cumsum(width)[:-1]]
    total = int(width.sum())
    cell_start = np.r_[0, np.cumsum(counts.ravel())[:-1]]
    rank = np.arange(cell.size) - cell_start[cell]
    pos = offset[pg] + rank
    Xc = np.zeros((R, total, p))
    yc = np.zeros((R, total))
    mc = np.zeros((R, total))
    Xc[prep, pos] = px
    yc[prep, pos] = y
    mc[prep, pos] = m
    gid = np.repeat(np.arange(present.size), width)
    return Layout(Xc, yc, mc, gid), present
