"""Conditional against marginal odds ratios: GLMM (subject-specific) vs GEE.

A random-intercept logistic model estimates odds ratios conditional on the
patient; GEE estimates population-averaged ones, which are smaller by a factor
that grows with the random-intercept SD. This module holds that attenuation: the
Zeger-Liang-Albert approximation (``zeger_attenuation``), the exact marginal
coefficients by integrating over the random intercept (``marginal_params``,
``marginal_log_or``, ``implied_marginal_log_or``), and ``attenuation_table``, which
sets the GLMM and GEE rows of a ladder side by side. Kept apart from the ladder so
simulation checks and benchmarks can use the math without fitting anything.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import special

from syndesmo.errors import SyndesmoError
from syndesmo.fitting import registry
from syndesmo.fitting.results import FitResult

#: 16*sqrt(3)/(15*pi), squared: the constant of the logistic-normal approximation
#: beta_PA ~= beta_SS / sqrt(1 + c^2 sigma^2) (Zeger, Liang & Albert, Biometrics
#: 1988;44:1049-60).
ZEGER_C2 = (16.0 * math.sqrt(3.0) / (15.0 * math.pi)) ** 2


def zeger_attenuation(log_or: float | np.ndarray, sigma: float | np.ndarray):
    """Population-averaged log-OR implied by a subject-specific one (approximation).

    beta_PA ~= beta_SS / sqrt(1 + c^2 sigma^2) with c^2 = (16 sqrt(3) / (15 pi))^2
    ~= 0.346 (Zeger, Liang & Albert, Biometrics 1988;44:1049-60).
    """
    return np.asarray(log_or) / np.sqrt(1.0 + ZEGER_C2 * np.asarray(sigma) ** 2)


def marginal_params(
    X: np.ndarray,
    beta: np.ndarray,
    sigma: float,
    n_nodes: int = 64,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """Population-averaged coefficients implied by a random-intercept logistic model.

    The marginal probability of each row, p_i = E_b[expit(x_i' beta + b)] with
    b ~ N(0, sigma^2), is integrated exactly (Gauss-Hermite, ``n_nodes`` points);
    the logistic regression of these p_i on X (the estimating equations of GEE with
    an independence working correlation, at their population values) gives the
    coefficients a GEE fitted to this design estimates. This is the exact target
    that ``zeger_attenuation`` approximates. ``offset`` (one number per row) is a
    known part of the linear predictor in both models.
    """
    import statsmodels.api as sm

    X = np.asarray(X, dtype=float)
    eta = X @ np.asarray(beta, dtype=float)
    if offset is not None:
        eta = eta + offset
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    b = math.sqrt(2.0) * sigma * nodes
    p = special.expit(eta[:, None] + b[None, :]) @ weights / math.sqrt(math.pi)
    model = sm.GLM(p, X, family=sm.families.Binomial(), offset=offset)
    with warnings.catch_warnings():
        # fractional responses near 0/1 trip statsmodels' separation check
        warnings.simplefilter("ignore")
        return np.asarray(model.fit(tol=1e-12).params)


def marginal_log_or(
    intercept: float,
    log_or: float,
    sigma: float,
    *,
    at_risk_intercept: float | None = None,
    n_nodes: int = 80,
) -> float:
    """The population-averaged log-OR of a binary exposure implied by the GLMM truth.

    For logit P(y = 1 | x, u) = ``intercept`` + ``log_or`` x + u, u ~ N(0, sigma^2),
    the marginal risks p_x = E_u[expit(intercept + log_or x + u)] are integrated by
    Gauss-Hermite quadrature and the marginal log-OR is logit(p_1) - logit(p_0);
    with one binary exposure the marginal model is saturated, so this is exactly the
    parameter GEE estimates. ``at_risk_intercept`` weights u by the chance that a VU
    is at risk, 1 - expit(at_risk_intercept + u) (the simulator's baseline
    syndesmophytes select VUs on u), giving the VU-weighted target over VUs at risk.
    """
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    u = math.sqrt(2.0) * sigma * nodes
    w = weights / math.sqrt(math.pi)
    if at_risk_intercept is not None:
        w = w * (1.0 - special.expit(at_risk_intercept + u))
    w = w / w.sum()
    p0 = float(w @ special.expit(intercept + u))
    p1 = float(w @ special.expit(intercept + log_or + u))
    return float(special.logit(p1) - special.logit(p0))


def implied_marginal_log_or(fit: FitResult, frame: pd.DataFrame, term: str = "mri") -> float:
    """The population-averaged log-OR of ``term`` that a fitted GLMM implies.

    ``marginal_params`` on the fit's own design matrix: the conditional model with
    the fitted coefficients and random-intercept SD, integrated over the normal
    random intercept, then summarised by a logistic regression over the analysed
    rows. NaN when it cannot be computed (no SD, a failed fit).
    """
    from syndesmo.fitting.design import build_design

    if not np.isfinite(fit.sigma) or not np.all(np.isfinite(fit.params)):
        return math.nan
    try:
        design = build_design(fit.formula, frame)
        beta = fit.params.reindex(design.names).to_numpy(dtype=float)
        out = marginal_params(design.X, beta, float(fit.sigma), offset=design.offset)
        return float(out[design.names.index(term)])
    except (SyndesmoError, ValueError, np.linalg.LinAlgError):
        return math.nan


def attenuation_table(table: pd.DataFrame, glmm_engine: str | None = None) -> pd.DataFrame:
    """GLMM beside GEE for each outcome × exposure × step of a ladder table.

    Columns: the GLMM OR and random-intercept SD, the population-averaged OR the
    Zeger-Liang-Albert approximation predicts from them (``OR_predicted_marginal``),
    the one the fitted GLMM implies exactly (``OR_implied_marginal``, see
    ``implied_marginal_log_or``), the GEE OR, and the ratio of the GEE log-OR to the
    GLMM log-OR against the approximate factor 1/sqrt(1 + 0.346 sigma^2).
    """
    cond = table[table["scale"].eq("conditional") & table["step"].ne("a")]
    if glmm_engine is not None:
        cond = cond[cond["engine"].eq(glmm_engine)]
    # engines giving population-averaged (marginal) ORs for clustered data
    marg = table[table["engine"].isin(registry.engine_names(scale=registry.MARGINAL))]
    keys = ["outcome", "exposure", "exposure_label", "step", "step_label"]
    merged = cond[[*keys, "engine", "log_or", "OR", "sigma", "log_or_marginal"]].merge(
        marg[[*keys, "log_or", "OR"]], on=keys, suffixes=("_glmm", "_gee")
    )
    factor = 1.0 / np.sqrt(1.0 + ZEGER_C2 * merged["sigma"].to_numpy(dtype=float) ** 2)
    out = pd.DataFrame(
        {
            **{k: merged[k] for k in keys},
            "glmm_engine": merged["engine"],
            "OR_glmm": merged["OR_glmm"],
            "sigma": merged["sigma"],
            "OR_predicted_marginal": _odds_ratio(merged["log_or_glmm"].to_numpy(float) * factor),
            "OR_implied_marginal": _odds_ratio(merged["log_or_marginal"].to_numpy(float)),
            "OR_gee": merged["OR_gee"],
            "factor_predicted": factor,
            "factor_observed": merged["log_or_gee"] / merged["log_or_glmm"],
        }
    )
    return out.reset_index(drop=True)


def _odds_ratio(log_or: np.ndarray) -> np.ndarray:
    """exp of a log OR; inf beyond float range (a fit the data do not bound), no warning."""
    with np.errstate(over="ignore"):
        return np.exp(log_or)
