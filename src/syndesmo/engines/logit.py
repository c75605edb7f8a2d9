"""Plain logistic regression that ignores clustering (statsmodels).

The crude model a biostatistician fits first to show why clustering matters: VUs of
one patient are treated as independent, so standard errors are too small. A bar term
in the formula is ignored with a note in ``FitResult.warnings``.

Binary outcomes use ``statsmodels.Logit`` (Newton–Raphson); binomial counts use
``statsmodels.GLM`` with the Binomial family and a (successes, failures) response.
Both log-likelihoods equal R's ``logLik(glm(..., family = binomial))``, including the
log binomial coefficients for counts.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from syndesmo.fitting.design import Design, resolve_offset
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import FitResult

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_logit")


def fit_logit(
    design: Design, *, nagq: int | None = None, offset: np.ndarray | None = None, maxiter: int = 100
) -> FitResult:
    """Fit ``design`` by maximum likelihood, ignoring any grouping factor.

    Parameters
    ----------
    design : Design
        The model matrices (``syndesmo.fitting.design.build_design``).
    nagq : None
        Part of the engine contract: this engine has no quadrature (``nagq`` 1 or
        ``None``).
    offset : numpy.ndarray, optional
        A known term of the linear predictor, one number per row (default
        ``design.offset``), as R's ``glm(..., offset = )``.
    maxiter : int
        Newton (0/1 outcome) or IRLS (binomial counts) iterations at most.

    Returns
    -------
    FitResult
        With ``loglik`` as R's ``logLik(glm(..., family = binomial))``.

    Raises
    ------
    ModelError
        For ``nagq`` above 1 or rank-deficient columns.
    """
    check_call(ENGINE, nagq, offset)
    X, y, n = design.X, design.y, design.trials
    offset = resolve_offset(design, offset)
    check_rank(X, design.names)
    binary = bool(np.all(n == 1))
    notes: list[str] = []
    if design.group is not None:
        notes.append(f"clustering by {design.group} ignored: rows are treated as independent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if binary:
            res = sm.Logit(y, X, offset=offset).fit(method="newton", maxiter=maxiter, disp=False)
            converged = bool(res.mle_retvals.get("converged", False))
            iterations = res.mle_retvals.get("iterations")
        else:
            endog = np.column_stack([y, n - y])
            res = sm.GLM(endog, X, family=sm.families.Binomial(), offset=offset).fit(
                maxiter=maxiter
            )
            converged = bool(res.converged)
            iterations = res.fit_history.get("iteration")
    message = "" if converged else f"optimiser stopped after {iterations} iterations"
    for w in caught:
        if issubclass(w.category, ConvergenceWarning) and not converged:
            message = f"{message}; {w.message}"
        elif not issubclass(w.category, ConvergenceWarning | DeprecationWarning):
            if str(w.message) not in notes:  # statsmodels repeats one per Newton step
                notes.append(str(w.message))

    sep = separated_terms(X, y, n, design.names)
    if sep:
        notes.append(
            "separation: the outcome is perfectly predicted along "
            + ", ".join(sep)
            + "; those estimates are not finite (the optimiser stopped at a large value)"
        )

    names = design.names
    params = pd.Series(np.asarray(res.params), index=names, name="estimate")
    vcov = pd.DataFrame(np.asarray(res.cov_params()), index=names, columns=names)
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=params,
        vcov=vcov,
        n_obs=design.n_obs,
        loglik=float(res.llf),
        sigma=math.nan,
        converged=converged,
        convergence_message=message.strip("; "),
        ledger=design.ledger.copy(),
        warnings=notes,
        n_events=round(float(y.sum())),
        extra={
            "separated_terms": sep,
            "iterations": iterations,
            "design": design,
            "offset": offset,
        },
    )
