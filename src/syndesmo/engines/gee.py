"""Generalised estimating equations with an exchangeable working correlation.

Population-averaged odds ratios (statsmodels ``GEE``, Binomial family, logit link),
with one exchangeable correlation shared by all pairs of rows in a cluster — the
cluster being the grouping factor of the formula's bar ``(1|patient)`` — and robust
(sandwich) standard errors, as in R's ``geepack::geeglm(..., corstr =
"exchangeable")``. There is no likelihood, so ``loglik`` is NaN; the estimated
working correlation is in ``extra["working_correlation"]``.

statsmodels collects each cluster's rows by the group codes, so rows need not be
sorted by cluster; the order of rows within a cluster does not matter for an
exchangeable structure.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from syndesmo.design import Design
from syndesmo.engines.separation import separated_terms
from syndesmo.errors import ModelError
from syndesmo.results import FitResult


def fit_gee(design: Design, maxiter: int = 100, ctol: float = 1e-8) -> FitResult:
    """Fit ``design`` by GEE with clusters given by ``design.groups``.

    ``ctol`` is statsmodels' convergence tolerance on the change in the estimates;
    the default is tighter than statsmodels' (1e-6) so results agree with geepack.
    """
    if design.groups is None:
        raise ModelError(
            "the gee engine needs a cluster: add a bar term such as (1|patient) to the formula"
        )
    if not np.all(design.trials == 1):
        raise ModelError(
            "the gee engine needs a 0/1 outcome; binomial counts (trials) are not supported"
        )
    model = sm.GEE(
        design.y,
        design.X,
        groups=design.groups,
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Exchangeable(),
    )
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit(maxiter=maxiter, ctol=ctol, cov_type="robust")
    converged = True
    message = ""
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
            message = str(w.message)
        elif not issubclass(w.category, DeprecationWarning):
            notes.append(str(w.message))

    sep = separated_terms(design.X, design.y, design.trials, design.names)
    if sep:
        notes.append(
            "separation: the outcome is perfectly predicted along "
            + ", ".join(sep)
            + "; those estimates are not finite"
        )
    names = design.names
    params = pd.Series(np.asarray(res.params), index=names, name="estimate")
    vcov = pd.DataFrame(np.asarray(res.cov_robust), index=names, columns=names)
    return FitResult(
        engine="gee",
        formula=design.formula,
        params=params,
        vcov=vcov,
        n_obs=design.n_obs,
        loglik=math.nan,
        n_groups=design.n_groups,
        group=design.group,
        sigma=math.nan,
        converged=converged,
        convergence_message=message,
        ledger=design.ledger.copy(),
        warnings=notes,
        n_events=round(float(design.y.sum())),
        extra={
            "working_correlation": float(model.cov_struct.dep_params),
            "scale": float(res.scale),
            "cov_naive": pd.DataFrame(np.asarray(res.cov_naive), index=names, columns=names),
            "separated_terms": sep,
        },
    )
