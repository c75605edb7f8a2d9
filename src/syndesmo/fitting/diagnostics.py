"""Detect (quasi-)complete separation in a binomial-logit design and name the terms.

With separation the maximum-likelihood estimate does not exist: some coefficient
runs off to ±infinity and optimisers stop wherever their tolerance says, often
without complaint (statsmodels' GLM reports "converged"). The check here is the
linear-programming test of Konis (2007, *Linear programming algorithms for detecting
separated data in binary logistic regression models*, DPhil thesis, Oxford; the
method of R's ``detectseparation``): the data are separated exactly when a direction
``d`` ≠ 0 exists with ``x_i·d ≥ 0`` for every all-success row, ``x_i·d ≤ 0`` for every
all-failure row and ``x_i·d = 0`` for rows with both, and some ``x_i·d`` ≠ 0. Along
``d`` the likelihood keeps increasing, so the terms with ``d_j`` ≠ 0 are the ones
that diverge.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import qr

from syndesmo.errors import ModelError

#: Patterns (distinct rows and their outcomes) the linear program found not separated.
_NOT_SEPARATED: set[tuple] = set()
_PATTERNS_KEPT = 4096


def separated_terms(
    X: np.ndarray, y: np.ndarray, trials: np.ndarray, names: list[str]
) -> list[str]:
    """Names of the terms along a direction of separation; ``[]`` when the MLE exists.

    Among all directions of separation the one with the smallest L1 norm (columns
    scaled to max |x| = 1, intercept-like constant columns not penalised) is taken,
    so only the terms that actually separate the outcome are named.
    """
    X = np.asarray(X, dtype=float)
    if X.shape[1] == 0:
        return []
    # Rows with the same x give the same constraint: one per distinct x, which is an
    # equality where that x has both outcomes (x·d >= 0 and <= 0).
    first, row = distinct_rows(X)
    n_succ = np.bincount(row, weights=y >= trials, minlength=len(first))
    n_fail = np.bincount(row, weights=y <= 0, minlength=len(first))
    n_rows = np.bincount(row, minlength=len(first))
    return separated_patterns(X[first], n_succ, n_fail, n_rows, names)


def separated_patterns(
    X: np.ndarray, n_succ: np.ndarray, n_fail: np.ndarray, n_rows: np.ndarray, names: list[str]
) -> list[str]:
    """:func:`separated_terms` from the distinct rows of ``X`` (sorted, as
    :func:`distinct_rows` gives them) and, per distinct row, how many rows it stands
    for (``n_rows``) and how many of those have only successes (``n_succ``) or only
    failures (``n_fail``).

    Parameters
    ----------
    X : numpy.ndarray
        ``(k, p)`` distinct rows.
    n_succ, n_fail, n_rows : numpy.ndarray
        ``(k,)`` counts.
    names : list of str
        The ``p`` column names.

    Returns
    -------
    list of str
        As :func:`separated_terms`.
    """
    p = X.shape[1]
    if p == 0:
        return []
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    constant = np.ptp(Xs, axis=0) == 0
    succ = n_succ == n_rows
    fail = n_fail == n_rows
    mixed = ~(succ | fail)
    # Whether a direction exists depends on the distinct rows and their outcomes only
    # (not on how many rows share them): designs of binary covariates, such as a
    # power simulation's studies, repeat these few patterns.
    pattern = (Xs.shape, Xs.tobytes(), succ.tobytes(), fail.tobytes())
    if pattern in _NOT_SEPARATED:
        return []
    # d = u - v with u, v >= 0; minimise the L1 norm of the non-constant part.
    weight = np.where(constant, 1e-6, 1.0)
    c = np.concatenate([weight, weight])
    signed = np.vstack([-Xs[succ], Xs[fail]])  # x·d >= 0 on successes, <= 0 on failures
    # sum |x·d| over the rows with one outcome (x·d = 0 on the others)
    g = n_rows[succ] @ Xs[succ] - n_rows[fail] @ Xs[fail]
    A_ub = np.vstack([np.hstack([signed, -signed]), np.concatenate([-g, g])[None, :]])
    b_ub = np.concatenate([np.zeros(signed.shape[0]), [-1.0]])  # and sum |x·d| >= 1
    A_eq = np.hstack([Xs[mixed], -Xs[mixed]]) if mixed.any() else None
    b_eq = np.zeros(int(mixed.sum())) if mixed.any() else None
    from scipy.optimize import linprog  # lazy: not loaded by power runs

    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:  # infeasible: no direction of separation, the MLE exists
        if len(_NOT_SEPARATED) >= _PATTERNS_KEPT:
            _NOT_SEPARATED.clear()
        _NOT_SEPARATED.add(pattern)
        return []
    d = res.x[:p] - res.x[p:]
    involved = np.abs(d) > 1e-9 * np.abs(d).max()
    return [name for name, k in zip(names, involved, strict=True) if k]


#: Weights of the linear combination that hashes rows in ``distinct_rows`` (fixed, so
#: the result is reproducible; irrational-looking, so that rows of small integers do
#: not collide).
_HASH_WEIGHTS = np.random.default_rng(20261130).uniform(0.5, 1.5, 64)


def distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``X`` in sorted order: where each first occurs, and which
    of them each row is.

    The rows are hashed by one linear combination of their columns and grouped by it
    (pandas' ``factorize``: time linear in the rows), the groups confirmed element
    by element and sorted; where two different rows share a combination, by a
    lexicographic sort of the columns (both much faster than ``np.unique(axis=0)``).

    Parameters
    ----------
    X : numpy.ndarray
        A ``(n, p)`` matrix.

    Returns
    -------
    tuple of numpy.ndarray
        ``first`` ``(k,)``, the index of the first row of each distinct row (so
        ``X[first]`` are the distinct rows, sorted), and ``row`` ``(n,)``, each row's
        index among them.
    """
    if len(X) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    import pandas as pd

    key = X @ _HASH_WEIGHTS[: X.shape[1]] if X.shape[1] <= len(_HASH_WEIGHTS) else None
    if key is not None and np.isfinite(key).all():
        code, _ = pd.factorize(key + 0.0)  # + 0.0: -0.0 and 0.0 as one
        seen = np.maximum.accumulate(code)  # codes are numbered by first appearance
        first = np.flatnonzero(np.r_[True, seen[1:] > seen[:-1]])
        if np.array_equal(X, X[first[code]]):
            order = np.lexsort(X[first].T[::-1])
            rank = np.empty(len(first), dtype=np.int64)
            rank[order] = np.arange(len(first))
            return first[order], rank[code]
    order = np.lexsort(X.T[::-1])
    ranked = X[order]
    new = np.r_[True, np.any(ranked[1:] != ranked[:-1], axis=1)]
    row = np.empty(len(X), dtype=np.int64)
    row[order] = np.cumsum(new) - 1
    return order[new], row


def study_patterns(
    X: np.ndarray, study: np.ndarray, n_studies: int, *weights: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct rows of the rows of several studies, and per study the sums of
    ``weights`` over its rows on each of them.

    Parameters
    ----------
    X : numpy.ndarray
        ``(n, p)`` rows, of all studies together.
    study : numpy.ndarray
        ``(n,)`` the study of each row, ``0 … n_studies − 1``.
    n_studies : int
        How many studies.
    *weights : numpy.ndarray
        ``(n,)`` arrays to sum (counts, successes, trials).

    Returns
    -------
    tuple
        The distinct rows ``(G, p)``, sorted as :func:`distinct_rows` gives them, and
        one ``(n_studies, G)`` array of sums per weight array (0 where a study has no
        such row).
    """
    first, row = distinct_rows(X)
    G = len(first)
    key = np.asarray(study, dtype=np.int64) * G + row
    size = n_studies * G
    sums = [np.bincount(key, weights=w, minlength=size).reshape(n_studies, G) for w in weights]
    return X[first], sums


def check_rank(X: np.ndarray, names: list[str]) -> None:
    """ModelError naming the columns that are linear combinations of the others."""

    if X.shape[1] == 0:
        raise ModelError("the model has no fixed effects (not even an intercept)")
    _, R, piv = qr(X, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    rank = int(np.sum(d > d[0] * 1e-10 * max(X.shape)))
    if rank < X.shape[1]:
        dropped = [names[j] for j in piv[rank:]]
        raise ModelError(
            "the fixed-effects model matrix is rank deficient: "
            + ", ".join(f"'{t}'" for t in dropped)
            + " is a linear combination of the other terms (constant or collinear column)"
        )
