"""The result every engine returns: ``FitResult``.

Every engine (native, lme4, gee, logit, bayes) returns the same ``FitResult`` so
tables, plots and power simulations never need to know how a model was fitted.
Names follow statsmodels (``params``, ``bse``, ``conf_int()``, ``summary()``) and
the log-likelihood is on lme4's scale so numbers can be compared with R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from syndesmo.errors import ModelError
from syndesmo.ledger import Ledger


@dataclass
class FitResult:
    """One fitted model, whatever the engine.

    ``params`` are on the link (log-odds) scale; ``vcov`` is their covariance.
    ``sigma`` is the random-intercept SD (NaN for engines without one), and
    ``loglik`` the maximised log-likelihood on lme4's scale (NaN for GEE).

    A fit that did not converge (``converged=False``) reports no numbers, whatever the
    engine: ``params``, ``vcov``, ``sigma`` and ``loglik`` are NaN, so are the
    intervals, p-values and odds ratios derived from them, and ``summary()`` says why
    (``convergence_message``). Where the iteration stopped is kept for diagnosis in
    ``extra["last_iterate"]`` (``params``, ``bse``, ``sigma``, ``loglik``).
    """

    engine: str
    formula: str
    params: pd.Series
    vcov: pd.DataFrame
    n_obs: int
    loglik: float = math.nan
    n_groups: int | None = None
    group: str | None = None
    sigma: float = math.nan
    nagq: int | None = None
    converged: bool = True
    convergence_message: str = ""
    singular: bool = False
    ledger: Ledger = field(default_factory=Ledger)
    warnings: list[str] = field(default_factory=list)
    n_events: int | None = None
    idata: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.converged or "last_iterate" in self.extra:
            return
        self.extra["last_iterate"] = {
            "params": self.params.copy(),
            "bse": pd.Series(
                np.sqrt(np.abs(np.diag(self.vcov.to_numpy(dtype=float)))), index=self.params.index
            ),
            "sigma": self.sigma,
            "loglik": self.loglik,
        }
        self.params = pd.Series(np.nan, index=self.params.index, name=self.params.name)
        self.vcov = pd.DataFrame(np.nan, index=self.vcov.index, columns=self.vcov.columns)
        if not math.isnan(self.sigma):
            self.sigma = math.nan
        self.loglik = math.nan
        self.extra.pop("conf_int", None)  # an engine's own intervals: not from this fit

    @property
    def bse(self) -> pd.Series:
        """Standard errors of ``params`` (square root of the diagonal of ``vcov``)."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.params.index)

    @property
    def tvalues(self) -> pd.Series:
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald p-values (z test), as lme4's ``summary`` reports for glmer."""
        return pd.Series(2.0 * stats.norm.sf(np.abs(self.tvalues)), index=self.params.index)

    @property
    def n_params(self) -> int:
        """Number of estimated parameters: fixed effects plus the random-intercept SD."""
        return len(self.params) + (0 if math.isnan(self.sigma) else 1)

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.n_obs) * self.n_params

    @property
    def icc(self) -> float:
        """Latent-scale intraclass correlation sigma^2 / (sigma^2 + pi^2/3) for the logit link."""
        if math.isnan(self.sigma):
            return math.nan
        s2 = self.sigma**2
        return s2 / (s2 + math.pi**2 / 3.0)

    def conf_int(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Confidence intervals on the link scale, columns ``lower`` and ``upper``.

        ``method="wald"`` (the default, as DESIGN.md asks) or ``"profile"``: the
        profile-likelihood interval of lme4's ``confint(fit, method = "profile")``, by
        refitting (``syndesmo.engines.profile``; engines ``native`` and ``logit``).
        The random-intercept SD has its own :meth:`sigma_conf_int`.
        """
        _check_level(level)
        if _check_method(method) == "profile":
            if not self.converged:
                return pd.DataFrame({"lower": self.params, "upper": self.params})  # NaN
            from syndesmo.engines.profile import profile_conf_int

            return profile_conf_int(self, level)
        custom = self.extra.get("conf_int")
        if custom is not None:
            return custom(level)
        z = stats.norm.ppf(0.5 + level / 2.0)
        se = self.bse
        return pd.DataFrame({"lower": self.params - z * se, "upper": self.params + z * se})

    def sigma_conf_int(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Confidence interval of the random-intercept SD: one row ``sigma``.

        ``"wald"``: σ ± z·SE(σ) (SE from the Hessian, ``extra["theta_se"]``), cut at 0;
        NaN where that SE is unavailable (σ at 0). ``"profile"``: the profile-likelihood
        interval (lme4's ``.sig01`` row), with lower end 0 when σ = 0 is inside it.
        """
        _check_level(level)
        if _check_method(method) == "profile":
            from syndesmo.engines.profile import profile_sigma_conf_int

            return profile_sigma_conf_int(self, level)
        if not self.converged:
            return pd.DataFrame({"lower": [math.nan], "upper": [math.nan]}, index=["sigma"])
        if math.isnan(self.sigma):
            raise ModelError(f"engine {self.engine!r} has no random-intercept SD")
        se = self.extra.get("theta_se")
        se = math.nan if se is None else float(se)
        z = stats.norm.ppf(0.5 + level / 2.0)
        lower = max(self.sigma - z * se, 0.0) if not math.isnan(se) else math.nan
        return pd.DataFrame({"lower": [lower], "upper": [self.sigma + z * se]}, index=["sigma"])

    def odds_ratios(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Odds ratios with their confidence interval and p-value, one row per term.

        ``method`` chooses the interval as in :meth:`conf_int`; ``p`` is always the Wald
        p-value.
        """
        ci = self.conf_int(level, method=method)
        return pd.DataFrame(
            {
                "OR": np.exp(self.params),
                "lower": np.exp(ci["lower"]),
                "upper": np.exp(ci["upper"]),
                "p": self.pvalues,
            }
        )

    def summary(self) -> str:
        """A readable text summary in the style of lme4's and statsmodels' printouts."""
        lines = [
            f"syndesmo fit: engine={self.engine}"
            + (f", nAGQ={self.nagq}" if self.nagq is not None else ""),
            f"Formula: {self.formula}",
            f"Observations: {self.n_obs}"
            + (f", groups ({self.group}): {self.n_groups}" if self.n_groups else "")
            + (f", events: {self.n_events}" if self.n_events is not None else ""),
        ]
        if not math.isnan(self.loglik):
            lines.append(f"logLik: {self.loglik:.4f}   AIC: {self.aic:.2f}   BIC: {self.bic:.2f}")
        if not math.isnan(self.sigma):
            lines.append(
                f"Random intercept SD ({self.group}): {self.sigma:.4f}   ICC: {self.icc:.3f}"
            )
        ci = self.conf_int()
        table = pd.DataFrame(
            {
                "Estimate": self.params,
                "Std.Err": self.bse,
                "z": self.tvalues,
                "P>|z|": self.pvalues,
                "[0.025": ci["lower"],
                "0.975]": ci["upper"],
                "OR": np.exp(self.params),
            }
        )
        lines.append(table.to_string(float_format=lambda v: f"{v:.4f}"))
        status = "converged" if self.converged else f"NOT converged: {self.convergence_message}"
        lines.append(f"Status: {status}" + ("; singular fit (SD at 0)" if self.singular else ""))
        for w in self.warnings:
            lines.append(f"Warning: {w}")
        if len(self.ledger):
            lines.append("Rows left out:")
            lines.append(self.ledger.to_frame().to_string(index=False))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FitResult engine={self.engine} n_obs={self.n_obs} formula={self.formula!r}>"


def _check_method(method: str) -> str:
    if method not in ("wald", "profile"):
        raise ModelError(f"interval method must be 'wald' or 'profile', got {method!r}")
    return method


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
