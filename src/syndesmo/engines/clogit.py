"""Conditional logistic regression within the levels of the formula's grouping factor.

The within-patient odds ratio: for ``y ~ mri + (1|patient)`` each patient is a
stratum with its own intercept, and the likelihood is conditioned on the number of
events in each stratum, so the intercepts drop out (Breslow & Day, *Statistical
Methods in Cancer Research I*, IARC 1980, ch. 7). Only comparisons of VUs of the same
patient inform the estimate, so patient-level confounders that shift a patient's
risk cannot bias it — the question of ``DOMAIN.md``'s "Within-patient versus
between-patient".

The likelihood, its score and the strata bookkeeping are statsmodels'
``ConditionalLogit``, which computes the exact conditional likelihood of each
stratum (the sum over all ways of placing its events, by the recursion of Gail,
Lubin & Rubinstein, Biometrika 1981;68:703). That is R's
``survival::clogit(y ~ x + strata(patient), method = "exact")`` — ``clogit``'s
default — for any number of events per stratum; with one event per stratum
(1:m matching) R's ``"approximate"``/``"breslow"`` and ``"efron"`` give the same
numbers, with more they do not. The maximum is found here by Newton's method with
step halving from β = 0 (as ``coxph``), and the standard errors come from the
observed information: the Jacobian of statsmodels' analytic score by central
differences (statsmodels' own ``fit`` uses forward differences of the score).

Rules, stated once:

* A binary outcome only (one row per trial): binomial counts are refused.
* The intercept is not identifiable (each stratum has its own) and is dropped
  silently, as ``clogit``'s formula has none.
* Any other column constant within every informative stratum (a patient-level
  covariate such as treatment arm) is not identifiable either. It is **dropped with
  a warning naming it**, the counterpart of R's ``NA`` coefficient, so that a ladder
  adjusted for treatment still gives the within-patient OR of the exposure; a model
  left with no column is refused. Collinear within-stratum columns are refused.
* Strata in which every row or no row has the event carry no information; they stay
  in ``n_obs`` and ``n_groups`` (as in R's ``n``), and ``details`` (a
  :class:`ClogitDetails`) counts the informative ones (``informative_strata``,
  ``informative_rows``), with a note in ``warnings``.
* ``loglik`` is the conditional log-likelihood at the estimates (R's
  ``fit$loglik[2]``); ``details.loglik_null`` is its value at β = 0
  (``fit$loglik[1]``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.discrete.conditional_models import ConditionalLogit
from statsmodels.tools.numdiff import approx_fprime

from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.diagnostics import check_rank
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_clogit")

#: A column is constant within a stratum when it varies by less than this (relative).
CONSTANT_TOL = 1e-10
#: |β| beyond this (odds ratio e^10) with an SE beyond ``SEPARATION_SE`` is read as an
#: estimate running off to infinity (the outcome predicted perfectly within strata).
SEPARATION_BETA = 10.0
SEPARATION_SE = 10.0


@dataclass(frozen=True)
class ClogitDetails(EngineDetails):
    """What a conditional-logit fit knows beyond the shared result.

    Parameters
    ----------
    informative_strata : int
        Strata with both events and non-events (the others carry no information).
    informative_rows : int
        Rows in those strata.
    dropped_terms : tuple of str
        Terms constant within every informative stratum, left out (R gives them NA).
    loglik_null : float
        The conditional log-likelihood at β = 0 (R's ``fit$loglik[1]``).
    """

    informative_strata: int
    informative_rows: int
    dropped_terms: tuple[str, ...]
    loglik_null: float


def fit_clogit(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    maxiter: int = 50,
    tol: float = 1e-12,
) -> FitResult:
    """Fit a conditional logistic regression with the bar's levels as strata.

    Parameters
    ----------
    design : Design
        Model matrices with a bar ``(1|stratum)`` and a 0/1 outcome.
    nagq : None
        Part of the engine contract; there is no random effect to integrate.
    offset : numpy.ndarray, optional
        Known term of the linear predictor, one number per row of the design.
    maxiter : int
        Newton iterations at most.
    tol : float
        Convergence when the Newton decrement (twice the log-likelihood still to
        gain) is below ``tol``.

    Returns
    -------
    FitResult
        Log odds ratios within strata (no intercept), ``loglik`` the conditional
        log-likelihood, ``n_groups`` the number of strata; ``details`` holds
        ``informative_strata``, ``informative_rows``, ``dropped_terms``,
        ``loglik_null`` and ``iterations``.

    Raises
    ------
    ModelError
        Without a bar, for binomial counts, when no stratum has both events and
        non-events, when no column varies within a stratum, for collinear columns, or
        for an invalid argument.
    """
    check_call(ENGINE, nagq, offset)
    if design.groups is None:
        raise ModelError(
            f"engine {ENGINE!r} needs strata: add a bar such as (1|patient) to the formula "
            f"{design.formula!r}"
        )
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ModelError(f"maxiter must be a positive integer, got {maxiter!r}")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise ModelError(f"tol must be a positive number, got {tol!r}")
    y = np.asarray(design.y, dtype=float)
    if not np.all(design.trials == 1):
        raise ModelError(
            f"engine {ENGINE!r} needs a 0/1 outcome with one row per trial; "
            f"{design.response!r} is given as binomial counts"
        )
    groups = np.asarray(design.groups, dtype=np.int64)
    offset = _check_offset(offset, y.size)

    informative = _informative_strata(y, groups)
    rows = informative[groups]
    n_strata = int(informative.sum())
    if n_strata == 0:
        raise ModelError(
            f"no stratum of {design.group!r} has both events and non-events of "
            f"{design.response!r}: the conditional likelihood carries no information"
        )
    X = np.asarray(design.X, dtype=float)
    names = list(design.names)
    keep, within_constant = _identifiable_columns(X, names, rows, groups)
    if not keep:
        raise ModelError(
            f"no term of {design.formula!r} varies within a stratum of {design.group!r}; "
            "conditional logistic regression estimates within-stratum effects only "
            f"(constant within strata: {', '.join(within_constant) or 'none'})"
        )
    kept_names = [names[j] for j in keep]
    Xk = X[np.ix_(rows, keep)]
    gk = groups[rows]
    check_rank(_centre_within(Xk, gk), kept_names)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' intercept/variance notes: handled here
        model = ConditionalLogit(
            y[rows], Xk, groups=gk, **({} if offset is None else {"offset": offset[rows]})
        )
    beta, converged, iterations, message = _newton(model, len(keep), maxiter, tol)
    hess = _hessian(model, beta)
    try:
        vcov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        vcov = np.full_like(hess, np.nan)
        converged = False
        message = message or "the observed information is singular at the estimates"
    loglik = float(model.loglike(beta))
    loglik_null = float(model.loglike(np.zeros(len(keep))))

    notes = _notes(design, within_constant, informative, rows)
    bse = np.sqrt(np.clip(np.diag(vcov), 0.0, None))
    off = (np.abs(beta) > SEPARATION_BETA) & (~np.isfinite(bse) | (bse > SEPARATION_SE))
    if off.any():
        notes.append(
            "estimates not finite: the outcome is (almost) perfectly predicted within "
            "strata along " + ", ".join(f"'{kept_names[j]}'" for j in np.flatnonzero(off))
        )
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=pd.Series(beta, index=kept_names, name="estimate"),
        vcov=pd.DataFrame(vcov, index=kept_names, columns=kept_names),
        n_obs=design.n_obs,
        loglik=loglik,
        n_groups=design.n_groups,
        group=design.group,
        convergence=Convergence(converged=converged, message=message, iterations=iterations),
        ledger=design.ledger.copy(),
        warnings=tuple(notes),
        n_events=round(float(y.sum())),
        details=ClogitDetails(
            informative_strata=n_strata,
            informative_rows=int(rows.sum()),
            dropped_terms=tuple(within_constant),
            loglik_null=loglik_null,
        ),
    )


def _check_offset(offset, n: int) -> np.ndarray | None:
    if offset is None:
        return None
    arr = np.asarray(offset, dtype=float).ravel()
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ModelError(
            f"offset must hold {n} finite numbers (one per row of the design), got {arr.size}"
        )
    return arr


def _informative_strata(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per stratum: has both an event and a non-event."""
    size = np.bincount(groups)
    events = np.bincount(groups, weights=y)
    return (events > 0) & (events < size)


def _centre_within(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``X`` minus its stratum means."""
    codes, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((codes.size, X.shape[1]))
    np.add.at(sums, inverse, X)
    count = np.bincount(inverse, minlength=codes.size).astype(float)
    return X - (sums / count[:, None])[inverse]


def _identifiable_columns(
    X: np.ndarray, names: list[str], rows: np.ndarray, groups: np.ndarray
) -> tuple[list[int], list[str]]:
    """Columns varying within some informative stratum; the names of the others
    (the intercept is left out of both)."""
    if X.shape[1] == 0:
        return [], []
    centred = _centre_within(X[rows], groups[rows])
    spread = np.abs(centred).max(axis=0)
    size = np.maximum(np.abs(X[rows]).max(axis=0), 1.0)
    varies = spread > CONSTANT_TOL * size
    keep, constant = [], []
    for j, name in enumerate(names):
        if varies[j]:
            keep.append(j)
        elif not (name == "Intercept" and np.all(X[:, j] == 1.0)):
            constant.append(name)
    return keep, constant


def _newton(
    model: ConditionalLogit, p: int, maxiter: int, tol: float
) -> tuple[np.ndarray, bool, int, str]:
    """Maximise the conditional log-likelihood from β = 0 by Newton with step halving."""
    beta = np.zeros(p)
    value = model.loglike(beta)
    for iteration in range(1, maxiter + 1):
        grad = model.score(beta)
        hess = _hessian(model, beta)
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            return beta, False, iteration, "the observed information is singular"
        decrement = float(grad @ step)
        if not math.isfinite(decrement):
            return beta, False, iteration, "the Newton step is not finite"
        if decrement < tol:
            return beta, True, iteration, ""
        t = 1.0
        while True:
            trial = beta + t * step
            new = model.loglike(trial)
            if math.isfinite(new) and new >= value - 1e-12 * max(1.0, abs(value)):
                break
            t /= 2.0
            if t < 1e-10:
                return beta, False, iteration, "step halving failed to increase the likelihood"
        beta, value = trial, new
    return beta, False, maxiter, f"Newton's method stopped after {maxiter} iterations"


def _hessian(model: ConditionalLogit, beta: np.ndarray) -> np.ndarray:
    """Second derivatives: central differences of the analytic score, symmetrised."""
    h = np.atleast_2d(approx_fprime(beta, model.score, centered=True))
    return (h + h.T) / 2.0


def _notes(
    design: Design, dropped: list[str], informative: np.ndarray, rows: np.ndarray
) -> list[str]:
    notes = []
    if dropped:
        notes.append(
            f"left out, constant within every informative stratum of {design.group} (not "
            f"identifiable in the conditional likelihood): {', '.join(dropped)}"
        )
    n_strata, n_all = int(informative.sum()), int(informative.size)
    if n_strata < n_all:
        notes.append(
            f"{n_strata} of {n_all} strata of {design.group} ({int(rows.sum())} of "
            f"{rows.size} rows) have both events and non-events; the others carry no "
            "information in the conditional likelihood"
        )
    return notes
