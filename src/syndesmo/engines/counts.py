"""Count models: Poisson and negative binomial (NB2) regression with a log link.

The patient-level counts of the package (new syndesmophytes per patient, with the
VUs at risk as exposure: ``offset = log(n_at_risk)``) are modelled as

- ``fit_poisson``: statsmodels ``GLM`` with the Poisson family (IRLS), as R's
  ``glm(y ~ x + offset(log(n)), family = poisson)``;
- ``fit_negbin``: statsmodels ``NegativeBinomial`` with ``loglike_method="nb2"``
  (variance μ + αμ²), α estimated by maximum likelihood beside the coefficients, as
  R's ``MASS::glm.nb`` (which reports θ = 1/α); α is ``fit.details.alpha``.

``exp(coef)`` is a rate ratio. Rows are treated as independent: a bar in the formula
is ignored with a note, as the ``logit`` engine does. The outcome must be whole
numbers ≥ 0 with at least one event; the design (``family`` from the registry) only
checks that it is numeric.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.discrete.discrete_model import NegativeBinomial
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.diagnostics import check_rank
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult

#: The engines' names, as the registry lists them.
POISSON_ENGINE = name_for(f"{__name__}:fit_poisson")
NEGBIN_ENGINE = name_for(f"{__name__}:fit_negbin")


@dataclass(frozen=True)
class CountDetails(EngineDetails):
    """What a count model knows beyond the shared result.

    Parameters
    ----------
    alpha : float
        The negative binomial's dispersion (NB2: Var = μ + α μ²); NaN for Poisson.
    """

    alpha: float


def fit_poisson(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    maxiter: int = 100,
) -> FitResult:
    """Poisson regression of a count by maximum likelihood (IRLS), log link.

    Parameters
    ----------
    design : Design
        Model matrices built for a count family (``build_design(family="poisson")``).
    nagq : None
        Part of the engine contract; there is no quadrature.
    offset : numpy.ndarray, optional
        Known term of the linear predictor per row, e.g. ``log(n_at_risk)``.
    maxiter : int
        IRLS iterations at most.

    Returns
    -------
    FitResult
        Coefficients on the log scale (``exp`` = rate ratio), ``loglik`` as R's
        ``logLik(glm(..., family = poisson))``.

    Raises
    ------
    ModelError
        If the outcome is not a count with events, the columns are rank deficient, or
        an argument is invalid.
    """
    check_call(POISSON_ENGINE, nagq, offset)
    y, X, offset, notes = _inputs(design, offset, POISSON_ENGINE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sm.GLM(y, X, family=sm.families.Poisson(), offset=offset).fit(maxiter=maxiter)
    converged = bool(res.converged)
    message = "" if converged else f"IRLS stopped after {maxiter} iterations"
    notes += _other_warnings(caught)
    return _result(
        POISSON_ENGINE,
        design,
        np.asarray(res.params),
        np.asarray(res.cov_params()),
        float(res.llf),
        converged,
        message,
        notes,
    )


def fit_negbin(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    maxiter: int = 200,
) -> FitResult:
    """Negative binomial (NB2) regression of a count by maximum likelihood, log link.

    Parameters
    ----------
    design : Design
        Model matrices built for a count family.
    nagq : None
        Part of the engine contract; there is no quadrature.
    offset : numpy.ndarray, optional
        Known term of the linear predictor per row, e.g. ``log(n_at_risk)``.
    maxiter : int
        Newton iterations at most (statsmodels ``NegativeBinomial.fit``).

    Returns
    -------
    FitResult
        Coefficients on the log scale (``exp`` = rate ratio); the dispersion α
        (variance μ + αμ²) in ``details.alpha`` (a :class:`CountDetails`); ``vcov`` of
        the coefficients only.

    Raises
    ------
    ModelError
        If the outcome is not a count with events, the columns are rank deficient, or
        an argument is invalid.
    """
    check_call(NEGBIN_ENGINE, nagq, offset)
    y, X, offset, notes = _inputs(design, offset, NEGBIN_ENGINE)
    p = X.shape[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = NegativeBinomial(y, X, loglike_method="nb2", offset=offset)
        res = model.fit(disp=0, maxiter=maxiter)
    converged = bool(res.mle_retvals.get("converged", True))
    message = "" if converged else f"optimiser stopped after {maxiter} iterations"
    notes += _other_warnings(caught)
    params = np.asarray(res.params)
    cov = np.asarray(res.cov_params())
    return _result(
        NEGBIN_ENGINE,
        design,
        params[:p],
        cov[:p, :p],
        float(res.llf),
        converged,
        message,
        notes,
        alpha=float(params[-1]),
    )


def _inputs(
    design: Design, offset: np.ndarray | None, engine: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Outcome checked to be counts, the fixed effects, the offset and the notes."""
    y = np.asarray(design.y, dtype=float)
    if not np.all(design.trials == 1):
        raise ModelError(f"engine {engine!r} models a count per row; binomial trials do not apply")
    bad = ~np.isfinite(y) | (y < 0) | (y != np.round(y))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = design.data.index[i] if design.data is not None else i
        raise ModelError(
            f"outcome {design.response!r} must be a whole number >= 0 for engine {engine!r}; "
            f"row {row} has {y[i]:g} ({int(bad.sum())} bad row{'s' if bad.sum() != 1 else ''})"
        )
    if y.sum() == 0:
        raise ModelError(f"outcome {design.response!r} has no events among {y.size} rows")
    X = np.asarray(design.X, dtype=float)
    check_rank(X, list(design.names))
    if offset is not None:
        offset = np.asarray(offset, dtype=float).ravel()
        if offset.shape[0] != y.size or not np.all(np.isfinite(offset)):
            raise ModelError(
                f"offset must hold {y.size} finite numbers (one per row of the design), "
                f"got {offset.shape[0]}"
            )
    notes = []
    if design.group is not None:
        notes.append(f"clustering by {design.group} ignored: rows are treated as independent")
    return y, X, offset, notes


def _other_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return list(
        dict.fromkeys(
            str(w.message)
            for w in caught
            if not issubclass(w.category, ConvergenceWarning | DeprecationWarning)
        )
    )


def _result(
    engine: str,
    design: Design,
    params: np.ndarray,
    cov: np.ndarray,
    loglik: float,
    converged: bool,
    message: str,
    notes: list[str],
    alpha: float = math.nan,
) -> FitResult:
    names = list(design.names)
    return FitResult(
        engine=engine,
        formula=design.formula,
        params=pd.Series(params, index=names, name="estimate"),
        vcov=pd.DataFrame(cov, index=names, columns=names),
        n_obs=design.n_obs,
        loglik=loglik,
        convergence=Convergence(converged=converged, message=message),
        ledger=design.ledger.copy(),
        warnings=tuple(notes),
        n_events=round(float(design.y.sum())),
        details=CountDetails(alpha=alpha),
    )
