"""``sy.anova``: the likelihood-ratio table of nested fits, as R's ``anova(m0, m1)``.

For fits ordered by their number of parameters (R orders them so too), each row gives
``npar``, ``AIC``, ``BIC``, ``logLik``, ``deviance`` (−2 logLik) and, from the second
row on, the likelihood-ratio statistic against the row above,
``Chisq = 2 · max(0, ΔlogLik)``, its degrees of freedom ``Df`` (the difference in
``npar``) and ``Pr(>Chisq)`` from the χ²(Df) distribution — the columns and numbers of
lme4's ``anova.merMod``.

When the larger model adds one variance component (a random-intercept SD; e.g. a
logistic regression against the GLMM with ``(1|patient)``), the null value σ = 0 lies
on the boundary of the parameter space and the χ²(Df) p-value is conservative: the
statistic follows a 50:50 mixture of χ²(Df) and χ²(Df − 1) (Self & Liang 1987, J Am
Stat Assoc 82:605; Stram & Lee 1994, Biometrics 50:1171). That p-value is given in
``Pr(>Chisq) boundary`` and the row's ``note`` says so; R's ``anova`` prints only the
χ²(Df) one.

Fits that cannot be compared are refused with one line: an engine without a
maximised likelihood (GEE, a posterior), conditional likelihoods beside full ones,
fits on different rows or outcomes, different ``nagq`` (a Laplace and a quadrature
log-likelihood are different approximations), different families, or a fit that did
not converge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.results import FitResult

#: Columns of the table, as R's ``anova`` (then the boundary p-value and the note).
ANOVA_COLUMNS = (
    "npar",
    "AIC",
    "BIC",
    "logLik",
    "deviance",
    "Chisq",
    "Df",
    "Pr(>Chisq)",
    "Pr(>Chisq) boundary",
    "note",
)
BOUNDARY_NOTE = (
    "one more variance component: boundary-corrected p, 50:50 mixture of chi2(Df) and chi2(Df-1)"
)


def anova(
    smaller: FitResult,
    larger: FitResult,
    *more: FitResult,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The likelihood-ratio table of nested fits, as R's ``anova(m0, m1, ...)``.

    Parameters
    ----------
    smaller, larger, *more : FitResult
        Converged fits of the same rows and outcome by engines with a maximised
        likelihood (``sy.available_engines()['likelihood']``), the same ``nagq``.
        They are ordered by their number of parameters, as R does.
    names : sequence of str, optional
        Row names, one per fit in the order given (default ``m0``, ``m1``, …).

    Returns
    -------
    pandas.DataFrame
        Indexed by the names, with ``formula``, ``engine`` and the columns of
        ``ANOVA_COLUMNS``; the first row's test columns are NaN.

    Raises
    ------
    ModelError
        Naming the fit and the reason when the fits cannot be compared.

    Examples
    --------
    >>> m0 = sy.fit("y ~ mri + (1|patient)", frame)            # doctest: +SKIP
    >>> m1 = sy.fit("y ~ mri + arm + (1|patient)", frame)      # doctest: +SKIP
    >>> sy.anova(m0, m1)                                       # doctest: +SKIP
    """
    fits = [smaller, larger, *more]
    if names is None:
        names = [f"m{i}" for i in range(len(fits))]
    names = [str(n) for n in names]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise ModelError(f"names must be {len(fits)} distinct names, one per fit; got {names}")
    for name, fit in zip(names, fits, strict=True):
        _check_one(name, fit)
    _check_comparable(names, fits)

    order = sorted(range(len(fits)), key=lambda i: fits[i].n_params)  # stable, as R's order
    rows = []
    previous: FitResult | None = None
    for i in order:
        fit = fits[i]
        row = {
            "formula": fit.formula,
            "engine": fit.engine,
            "npar": fit.n_params,
            "AIC": fit.aic,
            "BIC": fit.bic,
            "logLik": fit.loglik,
            "deviance": -2.0 * fit.loglik,
            "Chisq": math.nan,
            "Df": math.nan,
            "Pr(>Chisq)": math.nan,
            "Pr(>Chisq) boundary": math.nan,
            "note": "",
        }
        if previous is not None:
            chisq = 2.0 * max(0.0, fit.loglik - previous.loglik)
            df = fit.n_params - previous.n_params
            row["Chisq"] = chisq
            row["Df"] = df
            row["Pr(>Chisq)"] = float(stats.chi2.sf(chisq, df)) if df > 0 else math.nan
            if df > 0 and _one_more_variance(previous, fit):
                row["Pr(>Chisq) boundary"] = boundary_p(chisq, df)
                row["note"] = BOUNDARY_NOTE
        rows.append(row)
        previous = fit
    table = pd.DataFrame(rows, index=pd.Index([names[i] for i in order], name="model"))
    return table.astype({"npar": int, "Df": float})


def boundary_p(chisq: float, df: int) -> float:
    """P-value of ``chisq`` under the 50:50 mixture of χ²(df) and χ²(df − 1).

    χ²(0) is a point mass at 0, so for ``df = 1`` this is half the χ²(1) p-value of a
    positive statistic (and 1 for a statistic of 0).

    Parameters
    ----------
    chisq : float
        The likelihood-ratio statistic, ≥ 0.
    df : int
        The difference in the number of parameters, ≥ 1.

    Returns
    -------
    float
        The p-value.
    """
    upper = float(stats.chi2.sf(chisq, df))
    lower = float(stats.chi2.sf(chisq, df - 1)) if df > 1 else (0.0 if chisq > 0 else 1.0)
    return 0.5 * upper + 0.5 * lower


def _one_more_variance(small: FitResult, large: FitResult) -> bool:
    """The larger model has exactly one more SD (and no more correlations)."""
    sd_small = sum(c.is_sd for c in small.varcomps)
    sd_large = sum(c.is_sd for c in large.varcomps)
    corr_small = len(small.varcomps) - sd_small
    corr_large = len(large.varcomps) - sd_large
    return sd_large - sd_small == 1 and corr_large == corr_small


def _check_one(name: str, fit: FitResult) -> None:
    if not isinstance(fit, FitResult):
        raise ModelError(f"anova: {name} is not a fit (got {type(fit).__name__})")
    engine = registry.get_engine(fit.engine)
    if not engine.likelihood:
        with_ll = ", ".join(registry.engine_names(likelihood=True))
        raise ModelError(
            f"anova: {name} ({fit.engine}) has no maximised likelihood "
            f"({engine.estimation}); likelihood-ratio tests need one of: {with_ll}"
        )
    if not fit.converged or not np.isfinite(fit.loglik):
        raise ModelError(f"anova: {name} did not converge ({fit.convergence_message})")


def _response(fit: FitResult) -> str:
    design = getattr(fit, "design", None)
    if design is not None:
        return str(design.response)
    return fit.formula.split("~", 1)[0].strip()


def _check_comparable(names: list[str], fits: list[FitResult]) -> None:
    first, base = names[0], fits[0]
    base_engine = registry.get_engine(base.engine)
    for name, fit in zip(names[1:], fits[1:], strict=True):
        engine = registry.get_engine(fit.engine)
        where = f"anova: {first} and {name}"
        if (engine.estimation == registry.CONDITIONAL_LIKELIHOOD) != (
            base_engine.estimation == registry.CONDITIONAL_LIKELIHOOD
        ):
            raise ModelError(
                f"{where} are not comparable: a conditional likelihood ({registry.WITHIN}) "
                "and a full likelihood are different functions"
            )
        if engine.family != base_engine.family:
            raise ModelError(
                f"{where} have different families ({base_engine.family}, {engine.family})"
            )
        if _response(fit) != _response(base):
            raise ModelError(
                f"{where} model different outcomes ({_response(base)!r}, {_response(fit)!r})"
            )
        if fit.n_obs != base.n_obs:
            raise ModelError(
                f"{where} were fitted on different rows ({base.n_obs} and {fit.n_obs}); "
                "fit both on the same complete rows"
            )
        rows_a = getattr(getattr(base, "design", None), "rows", None)
        rows_b = getattr(getattr(fit, "design", None), "rows", None)
        if rows_a is not None and rows_b is not None and not np.array_equal(rows_a, rows_b):
            raise ModelError(f"{where} were fitted on different rows of the data")
        if base.nagq is not None and fit.nagq is not None and base.nagq != fit.nagq:
            raise ModelError(
                f"{where} use different nagq ({base.nagq}, {fit.nagq}): their "
                "log-likelihoods are different approximations"
            )
