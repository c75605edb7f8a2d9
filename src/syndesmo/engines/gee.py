"""Generalised estimating equations with an exchangeable working correlation.

Population-averaged odds ratios (statsmodels ``GEE``, Binomial family, logit link),
with one exchangeable correlation shared by all pairs of rows in a cluster — the
cluster being the grouping factor of the formula's bar ``(1|patient)`` — and robust
(sandwich) standard errors, as in R's ``geepack::geeglm(..., corstr =
"exchangeable")``. There is no likelihood, so ``loglik`` is NaN; the estimated
working correlation, the scale and the naive (model-based) covariance are in
``fit.details`` (a :class:`GeeDetails`).

The dependence parameter is estimated as geepack does: the Pearson scale is the
mean squared Pearson residual and the correlation the mean over within-cluster
pairs of the products of scaled residuals, with no degrees-of-freedom corrections
(statsmodels' ``ddof_scale=0``; its default subtracts the number of parameters from
both denominators). The iteration starts from the independence fit (a plain GLM, as
both statsmodels and geepack do) with the correlation at 0.

The moment estimate of an exchangeable correlation is not bounded by 1. When a few
large clusters carry most of the events (patients with many syndesmophytes that
grow together) the mean product of residual pairs can exceed the mean squared
residual at every mean estimate; the estimating equations then have no solution
with an admissible correlation and the iteration diverges — geepack's too. Such a
fit is reported with ``converged=False`` and the reason; it is never passed off
as converged. The independence working correlation (``corstr="independence"``)
always has a solution when the GLM does.

statsmodels collects each cluster's rows by the group codes, so rows need not be
sorted by cluster; the order of rows within a cluster does not matter for an
exchangeable structure.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning, IterationLimitWarning

from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design, resolve_offset
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_gee")

CORSTRS = ("exchangeable", "independence")

# A logit coefficient beyond ±30 is an odds ratio beyond e^30 ≈ 1e13 per unit: no
# real effect, only an iteration running off (divergence or separation).
MAX_ABS_LOGIT = 30.0


@dataclass(frozen=True)
class GeeDetails(EngineDetails):
    """What a GEE fit knows beyond the shared result.

    Parameters
    ----------
    corstr : str
        The working correlation structure (``"exchangeable"`` or ``"independence"``).
    working_correlation : float
        The estimated exchangeable correlation (NaN for independence, or when every
        cluster has one row).
    scale : float
        The Pearson scale (mean squared Pearson residual, as geepack).
    cov_naive : pandas.DataFrame
        The naive (model-based) covariance of the estimates; ``vcov`` is the robust one.
    """

    corstr: str
    working_correlation: float
    scale: float
    cov_naive: pd.DataFrame


@dataclass
class _Diagnosis:
    """Why a GEE fit is not to be trusted (``reasons``) and what else was seen."""

    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fit_gee(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    maxiter: int = 100,
    ctol: float = 1e-8,
    corstr: str = "exchangeable",
) -> FitResult:
    """Fit ``design`` by GEE with clusters given by ``design.groups``.

    ``corstr`` is the working correlation, ``"exchangeable"`` (default) or
    ``"independence"`` (the GLM estimates with cluster-robust standard errors), named
    as in geepack. ``ctol`` is statsmodels' convergence tolerance on the norm of the
    estimating function; the default is tighter than statsmodels' (1e-6) so results
    agree with geepack run to a tight ``epsilon``. ``converged`` is false, with the
    reason, when the iteration limit is hit, an estimate or standard error is not
    finite, the working correlation leaves its admissible range or a coefficient
    exceeds ±30 on the logit scale. ``offset`` (one number per row; default
    ``design.offset``) is a known term of the linear predictor, as geepack's ``offset``.
    ``nagq`` is part of the engine contract and must be left unset (or ``nagq=1``).

    Returns
    -------
    FitResult
        Robust covariance in ``vcov``, ``loglik`` NaN, no variance components;
        ``details`` is a :class:`GeeDetails`; ``convergence`` holds the iterations and
        the largest absolute value of the estimating function at the end.
    """
    check_call(ENGINE, nagq, offset)
    _check_inputs(design, maxiter, ctol, corstr)
    offset = resolve_offset(design, offset)
    check_rank(design.X, design.names)
    cov_struct = (
        sm.cov_struct.Exchangeable() if corstr == "exchangeable" else sm.cov_struct.Independence()
    )
    model = sm.GEE(
        design.y,
        design.X,
        groups=design.groups,
        family=sm.families.Binomial(),
        cov_struct=cov_struct,
        offset=offset,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit(maxiter=maxiter, ctol=ctol, cov_type="robust", ddof_scale=0)
    diagnosis = _diagnose_warnings(caught)

    names = design.names
    p = len(names)
    if res is None:  # statsmodels gives up when the sandwich's bread is singular
        params = np.full(p, np.nan)
        cov_robust = cov_naive = np.full((p, p), np.nan)
        scale = math.nan
    else:
        params = np.asarray(res.params, dtype=float)
        cov_robust = np.asarray(res.cov_robust, dtype=float)
        cov_naive = np.asarray(res.cov_naive, dtype=float)
        scale = float(res.scale)
    # the iterates; statsmodels keeps them on the model when it returns no results
    history = model._fit_history if res is None else res.fit_history
    iterations = len(history["params"])
    _check_iterations(history, ctol, iterations, diagnosis)
    _check_estimates(params, cov_robust, names, diagnosis)

    max_size = int(np.bincount(design.groups).max())
    alpha = math.nan
    if corstr == "exchangeable":
        alpha = _check_working_correlation(model, history, max_size, diagnosis)

    sep = separated_terms(design.X, design.y, design.trials, names)
    if sep:
        diagnosis.notes.append(
            "separation: the outcome is perfectly predicted along "
            + ", ".join(sep)
            + "; those estimates are not finite"
        )
    converged = not diagnosis.reasons
    message = "" if converged else "; ".join(dict.fromkeys(diagnosis.reasons))
    last_score = np.asarray(history["score"][-1], dtype=float) if history["score"] else None
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=pd.Series(params, index=names, name="estimate"),
        vcov=pd.DataFrame(cov_robust, index=names, columns=names),
        n_obs=design.n_obs,
        loglik=math.nan,
        n_groups=design.n_groups,
        group=design.group,
        convergence=Convergence(
            converged=converged,
            message=message,
            iterations=iterations,
            max_abs_gradient=(
                float(np.max(np.abs(last_score)))
                if last_score is not None and last_score.size
                else math.nan
            ),
            separated_terms=tuple(sep),
        ),
        ledger=design.ledger.copy(),
        warnings=tuple(dict.fromkeys(diagnosis.notes)),
        n_events=round(float(design.y.sum())),
        details=GeeDetails(
            corstr=corstr,
            working_correlation=alpha,
            scale=scale,
            cov_naive=pd.DataFrame(cov_naive, index=names, columns=names),
        ),
    )


def _check_inputs(design: Design, maxiter: int, ctol: float, corstr: str) -> None:
    if design.groups is None:
        raise ModelError(
            "the gee engine needs a cluster: add a bar term such as (1|patient) to the formula"
        )
    if not np.all(design.trials == 1):
        raise ModelError(
            "the gee engine needs a 0/1 outcome; binomial counts (trials) are not supported"
        )
    if corstr not in CORSTRS:
        raise ModelError(f"corstr must be one of {', '.join(CORSTRS)}; got {corstr!r}")
    n_clusters = len(np.unique(design.groups))
    if n_clusters < 2:
        raise ModelError(
            f"the gee engine needs two or more clusters of '{design.group}'; the rows used "
            f"hold {n_clusters}: the robust (sandwich) standard errors are estimated from "
            "the spread between clusters"
        )
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ModelError(f"maxiter must be a positive integer, got {maxiter!r}")
    if not (isinstance(ctol, int | float) and math.isfinite(ctol) and ctol > 0):
        raise ModelError(f"ctol must be a positive number, got {ctol!r}")


def _diagnose_warnings(caught: list[warnings.WarningMessage]) -> _Diagnosis:
    """Sort the warnings of a fit: convergence failures, numerical noise, the rest.

    numpy's overflow/invalid-value warnings come by the dozen from a diverging
    iteration; they are counted and summarised in one line.
    """
    diagnosis = _Diagnosis()
    numerical: Counter[str] = Counter()
    for w in caught:
        if issubclass(w.category, ConvergenceWarning | IterationLimitWarning):
            diagnosis.reasons.append(f"statsmodels: {w.message}")
        elif issubclass(w.category, RuntimeWarning):
            numerical[str(w.message)] += 1
        elif not issubclass(w.category, DeprecationWarning | FutureWarning):
            diagnosis.notes.append(str(w.message))
    if numerical:
        diagnosis.notes.append(
            "numerical warnings while fitting: "
            + ", ".join(f"{m} (x{n})" for m, n in numerical.most_common())
        )
    return diagnosis


def _check_iterations(
    history: dict[str, list], ctol: float, iterations: int, diagnosis: _Diagnosis
) -> None:
    """statsmodels' own stopping rule, made safe for NaN (NaN ≥ ctol is False there)."""
    if not history["score"]:
        diagnosis.reasons.append("no GEE iteration was completed")
        return
    last = float(np.sqrt(np.sum(np.asarray(history["score"][-1]) ** 2)))
    if not (math.isfinite(last) and last < ctol):
        diagnosis.reasons.append(
            f"no convergence in {iterations} iterations "
            f"(norm of the estimating function {last:.3g}, tolerance {ctol:g})"
        )


def _check_estimates(
    params: np.ndarray, cov: np.ndarray, names: list[str], diagnosis: _Diagnosis
) -> None:
    se = np.sqrt(np.abs(np.diag(cov)))
    bad = [
        n
        for n, b, s in zip(names, params, se, strict=True)
        if not (np.isfinite(b) and np.isfinite(s))
    ]
    if bad:
        diagnosis.reasons.append("estimates or standard errors not finite: " + ", ".join(bad))
    huge = [
        f"{n} = {b:.3g}"
        for n, b in zip(names, params, strict=True)
        if np.isfinite(b) and abs(b) > MAX_ABS_LOGIT
    ]
    if huge:
        diagnosis.reasons.append(
            f"possible separation or divergence: |estimate| > {MAX_ABS_LOGIT:g} on the logit "
            "scale for " + ", ".join(huge)
        )


def _check_working_correlation(
    model: sm.GEE, history: dict[str, list], max_size: int, diagnosis: _Diagnosis
) -> float:
    """The final exchangeable correlation, checked against its admissible range.

    An exchangeable correlation matrix of size m is positive definite exactly for
    -1/(m-1) < alpha < 1, so the largest cluster sets the lower bound.
    """
    alpha = float(np.asarray(model.cov_struct.dep_params, dtype=float))
    if max_size < 2:
        diagnosis.notes.append(
            "every cluster has a single row: the working correlation is not identified "
            "and the fit is the independence GEE"
        )
        return math.nan
    lower = -1.0 / (max_size - 1)
    if not math.isfinite(alpha):
        diagnosis.reasons.append("working correlation not finite")
    elif not lower <= alpha < 1.0:
        diagnosis.reasons.append(
            f"working correlation {alpha:.4g} outside its admissible range "
            f"[{lower:.4g}, 1) for clusters of up to {max_size} rows"
        )
    # history["dep_params"][k] is the estimate made after iteration k (0: the start)
    trail = np.append(np.asarray(history["dep_params"], dtype=float), alpha)
    outside = np.flatnonzero(np.isfinite(trail) & ((trail < lower) | (trail >= 1.0)))
    if outside.size and diagnosis.reasons:
        first = int(outside[0])
        diagnosis.reasons.append(
            f"the moment estimate of the exchangeable correlation left [{lower:.4g}, 1) "
            f"(reached {trail[first]:.4g} after iteration {first}) and the iteration "
            "diverged: the data may have no admissible exchangeable solution (typical "
            "when a few large clusters carry most events); consider "
            "corstr='independence' or a random-intercept model"
        )
    return alpha
