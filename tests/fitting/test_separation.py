"""The linear-programming separation check against the likelihood itself.

Where ``separated_terms`` names a term, the log-likelihood must keep rising as that
term's coefficient runs off (from the other rows' maximum, along the direction named);
where it names none, statsmodels' maximum-likelihood fit must exist with finite
estimates. The
check keeps the patterns it found not separated; a pattern met again, with other row
counts, gets the same answer, and a separated pattern over the same rows is not
mistaken for it.
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from scipy.special import log_expit

from syndesmo.fitting.diagnostics import separated_terms

NAMES = ["(Intercept)", "a", "b"]


def _design(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.integers(0, 2, n)]).astype(float)


def _loglik(X: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    eta = X @ beta
    return float(np.sum(y * log_expit(eta) + (1 - y) * log_expit(-eta)))


def test_mixed_outcomes_in_every_cell_are_not_separated():
    X = _design(400, 1)
    y = (np.random.default_rng(2).random(400) < 0.3).astype(float)
    assert separated_terms(X, y, np.ones_like(y), NAMES) == []
    fit = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    assert fit.converged and np.all(np.abs(fit.params) < 5)


def test_a_term_whose_cells_all_fail_is_named_and_its_likelihood_keeps_rising():
    X = _design(400, 3)
    y = (np.random.default_rng(4).random(400) < 0.4).astype(float)
    y[X[:, 1] == 1] = 0.0  # every row with a = 1 fails
    assert separated_terms(X, y, np.ones_like(y), NAMES) == ["a"]
    others = X[:, 1] == 0
    start = sm.GLM(y[others], X[others][:, [0, 2]], family=sm.families.Binomial()).fit().params
    path = [_loglik(X, y, np.array([start[0], t, start[1]])) for t in (0.0, -2.0, -5.0, -10.0)]
    assert np.all(np.diff(path) > 0)


def test_a_pattern_met_again_gets_the_same_answer():
    X = _design(300, 5)
    y = (np.random.default_rng(6).random(300) < 0.3).astype(float)
    assert separated_terms(X, y, np.ones_like(y), NAMES) == []
    # the same pattern with each row three times: the same answer
    X3, y3 = np.repeat(X, 3, axis=0), np.repeat(y, 3)
    assert separated_terms(X3, y3, np.ones_like(y3), NAMES) == []
    # the same rows with the outcomes of a separated pattern: still found
    y_sep = y.copy()
    y_sep[X[:, 2] == 1] = 1.0  # every row with b = 1 succeeds
    assert separated_terms(X, y_sep, np.ones_like(y_sep), NAMES) == ["b"]


def test_a_stack_of_studies_gets_each_study_s_answer():
    """The power path's check (one table of distinct rows for a chunk of studies,
    ``separated_patterns`` per study) names what ``separated_terms`` names study by
    study: studies with and without separation, rows masked out."""
    from syndesmo.powersim.replicates import _separation

    R, n = 12, 200
    X = np.stack([_design(n, 10 + r) for r in range(R)])
    rng = np.random.default_rng(3)
    Y = (rng.random((R, n)) < 0.3).astype(float)
    Y[::3][X[::3, :, 1] == 1] = 1.0  # every third study: 'a' separates
    Y[1::4] = np.where(X[1::4, :, 2] == 1, 0.0, Y[1::4])  # some: 'b' separates
    mask = rng.random((R, n)) < 0.9
    mask[5, X[5, :, 1] == 1] = False  # a study without 'a' = 1 rows
    X = np.where(mask[..., None], X, 0.0)
    Y = np.where(mask, Y, 0.0)
    design = {"X": X, "Y": Y, "mask": mask, "names": NAMES}
    got = dict(_separation(design, np.arange(R)))
    named = 0
    for r in range(R):
        rows = mask[r]
        want = separated_terms(X[r, rows], Y[r, rows], np.ones(rows.sum()), NAMES)
        assert got[r] == want, r
        named += bool(want)
    assert 3 <= named < R
