"""The result every engine returns: ``FitResult``, a frozen core with typed parts.

Every engine (native, lme4, gee, logit, bayes, the count models) returns a
``FitResult`` so tables, plots and power simulations never need to know how a model
was fitted. Names follow two conventions: inference names follow statsmodels
(``params``, ``bse``, ``pvalues``, ``conf_int()``, ``cov_params()``, ``llf``,
``nobs``, ``summary()``), variance components follow lme4 (``varcorr`` is laid out
as ``as.data.frame(VarCorr(m))``); the log-likelihood is on lme4's scale, so numbers
can be compared with R.

The core is frozen: what a fit estimated cannot be overwritten by a reader. Its
parts are small frozen values of their own:

* :class:`Convergence` — how the optimum was reached (lme4's ``optinfo``, the
  ``OptSummary`` of MixedModels.jl): converged, message, iterations, max |gradient|,
  singular, separated terms, and a mapping of engine-specific diagnostics;
* :class:`VarComp` — one variance component (an SD or a correlation), one row of
  ``varcorr``; a fit holds a tuple of them, so several random-effect terms fit in;
* :class:`EngineDetails` — the base of each engine's typed details (the native
  engine's Hessian, GEE's working correlation, the Bayesian engine's draws, ...);
* ``model`` — the engine's model object where it has one (native, logit): it
  evaluates and maximises the likelihood, which is what profile intervals need
  (:mod:`syndesmo.fitting.profile`, through the :class:`ProfileModel` protocol).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError
from syndesmo.fitting import predict as _predict
from syndesmo.fitting.profile import (
    ProfileModel,
    profile_conf_int,
    profile_sd_conf_int,
    profile_sigma_conf_int,
    sd_rows,
)
from syndesmo.fitting.quadcheck import check_quadrature
from syndesmo.ledger import Ledger

#: Columns of ``FitResult.varcorr``, as lme4's ``as.data.frame(VarCorr(m))``.
VARCORR_COLUMNS = ("grp", "var1", "var2", "vcov", "sdcor")
#: lme4's name of a random intercept in ``VarCorr``.
INTERCEPT = "(Intercept)"


class _ReadOnlyDict(dict):
    """A dict that refuses changes (and still pickles): the diagnostics of a record."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("the diagnostics of a convergence record are read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class Convergence:
    """How a fit reached (or did not reach) its optimum.

    Parameters
    ----------
    converged : bool
        Whether the engine's own convergence criteria were met.
    message : str
        The engine's account of the optimisation (why it stopped, or why it failed).
    iterations : int or None
        Iterations of the optimiser (Newton, IRLS, GEE), where the engine counts them.
    max_abs_gradient : float
        Largest absolute gradient of the log-likelihood (of the estimating function for
        GEE) at the estimates, NaN where the engine does not give it.
    singular : bool
        A boundary fit: a variance component at zero (lme4's ``isSingular``).
    separated_terms : tuple of str
        Terms along a direction of complete or quasi-complete separation (their
        estimates are not finite); empty when none was found.
    diagnostics : mapping
        Engine-specific diagnostics by name (e.g. the largest R-hat of an MCMC run).
    """

    converged: bool = True
    message: str = ""
    iterations: int | None = None
    max_abs_gradient: float = math.nan
    singular: bool = False
    separated_terms: tuple[str, ...] = ()
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "separated_terms", tuple(self.separated_terms))
        object.__setattr__(self, "diagnostics", _ReadOnlyDict(self.diagnostics))

    def describe(self) -> list[str]:
        """The record as lines of text, for :meth:`FitResult.summary`."""
        status = "converged" if self.converged else "NOT converged"
        facts = []
        if self.iterations is not None:
            facts.append(f"{self.iterations} iterations")
        if not math.isnan(self.max_abs_gradient):
            facts.append(f"max |gradient| {self.max_abs_gradient:.2e}")
        if self.singular:
            facts.append("singular fit (a variance component at 0)")
        lines = [f"Convergence: {status}" + "".join(f"; {f}" for f in facts)]
        if self.message:
            lines.append(f"  {self.message}")
        if self.separated_terms:
            lines.append(f"  separation along: {', '.join(self.separated_terms)}")
        if self.diagnostics:
            lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.diagnostics.items()))
        return lines


@dataclass(frozen=True)
class VarComp:
    """One variance component: a row of lme4's ``as.data.frame(VarCorr(m))``.

    An SD row has ``var2`` None, ``vcov`` the variance and ``sdcor`` the SD; a
    correlation row names both terms, ``vcov`` is the covariance and ``sdcor`` the
    correlation.
    """

    grp: str
    var1: str
    var2: str | None
    vcov: float
    sdcor: float

    @property
    def is_sd(self) -> bool:
        """True for an SD row, False for a correlation."""
        return self.var2 is None


def random_intercept(group: str | None, sd: float) -> tuple[VarComp, ...]:
    """The variance components of one random intercept of SD ``sd`` by ``group``.

    Parameters
    ----------
    group : str or None
        The grouping factor (the bar's right-hand side).
    sd : float
        The random-intercept SD; NaN for a model without one.

    Returns
    -------
    tuple of VarComp
        One SD row, or empty when there is no group or ``sd`` is NaN.
    """
    if group is None or sd is None or math.isnan(sd):
        return ()
    sd = float(sd)
    return (VarComp(str(group), INTERCEPT, None, sd * sd, sd),)


@dataclass(frozen=True)
class EngineDetails:
    """Base of the engine-specific details of a fit (engines subclass it)."""


@runtime_checkable
class _HasThetaSE(Protocol):
    """Details that carry the standard error of the random-intercept SD."""

    theta_se: float


@dataclass(frozen=True, eq=False)
class FitResult:
    """One fitted model, whatever the engine.

    ``params`` are on the link (log-odds) scale and ``vcov`` is their covariance;
    ``loglik`` is the maximised log-likelihood on lme4's scale (NaN for GEE and for a
    posterior). ``varcomps`` are the variance components (see :attr:`varcorr`;
    :attr:`sigma` is the single-intercept shorthand). ``convergence`` is the
    :class:`Convergence` record, ``details`` the engine's typed details (or None) and
    ``model`` the engine's model object (or None).

    Instances are frozen: use :func:`dataclasses.replace` or :meth:`with_warnings`
    for a changed copy.

    A fit that did not converge (``converged=False``) reports no numbers, whatever the
    engine: ``params``, ``vcov``, the variance components and ``loglik`` are NaN, so
    are the intervals, p-values and odds ratios derived from them, and ``summary()``
    says why (``convergence_message``). Where the iteration stopped is kept for
    diagnosis in ``last_iterate`` (``params``, ``bse``, ``sigma``, ``loglik``).
    """

    #: Interval methods of ``conf_int(method=...)``; the first is the default.
    INTERVAL_METHODS: ClassVar[tuple[str, ...]] = ("wald", "profile")

    engine: str
    formula: str
    params: pd.Series
    vcov: pd.DataFrame
    n_obs: int
    loglik: float = math.nan
    n_groups: int | None = None
    group: str | None = None
    varcomps: tuple[VarComp, ...] = ()
    nagq: int | None = None
    convergence: Convergence = field(default_factory=Convergence)
    ledger: Ledger = field(default_factory=Ledger)
    warnings: tuple[str, ...] = ()
    n_events: int | None = None
    details: EngineDetails | None = None
    model: ProfileModel | None = field(default=None, repr=False)
    last_iterate: dict[str, Any] | None = field(default=None, repr=False)
    #: The ``Design`` the fit was made from (kept by ``sy.fit``; None otherwise):
    #: what predictions, fitted values and residuals are built from.
    design: Any = field(default=None, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "varcomps", tuple(self.varcomps))
        if self.converged or self.last_iterate is not None:
            return
        bse = np.sqrt(np.abs(np.diag(self.vcov.to_numpy(dtype=float))))
        last = {
            "params": self.params.copy(),
            "bse": pd.Series(bse, index=self.params.index),
            "sigma": self.sigma,
            "varcomps": self.varcomps,
            "loglik": self.loglik,
        }
        nan_params = pd.Series(np.nan, index=self.params.index, name=self.params.name)
        nan_vcov = pd.DataFrame(np.nan, index=self.vcov.index, columns=self.vcov.columns)
        nan_comps = tuple(
            dataclasses.replace(c, vcov=math.nan, sdcor=math.nan) for c in self.varcomps
        )
        for name, value in (
            ("last_iterate", last),
            ("params", nan_params),
            ("vcov", nan_vcov),
            ("varcomps", nan_comps),
            ("loglik", math.nan),
        ):
            object.__setattr__(self, name, value)

    # -- convergence -----------------------------------------------------------------

    @property
    def converged(self) -> bool:
        """Whether the fit converged (``convergence.converged``)."""
        return self.convergence.converged

    @property
    def singular(self) -> bool:
        """A boundary fit with a variance component at 0 (``convergence.singular``)."""
        return self.convergence.singular

    @property
    def convergence_message(self) -> str:
        """The optimiser's message (``convergence.message``)."""
        return self.convergence.message

    def with_warnings(self, *messages: str) -> FitResult:
        """A copy with ``messages`` added to ``warnings`` (repeats left out).

        Parameters
        ----------
        *messages : str
            Notes to add, e.g. Python warnings caught while fitting.

        Returns
        -------
        FitResult
            The same fit (same class, same model) with the longer ``warnings``.
        """
        merged = tuple(dict.fromkeys([*self.warnings, *map(str, messages)]))
        if merged == self.warnings:
            return self
        return dataclasses.replace(self, warnings=merged)

    # -- variance components ---------------------------------------------------------

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components laid out as lme4's ``as.data.frame(VarCorr(m))``.

        Columns ``grp, var1, var2, vcov, sdcor``: one row per SD (``var2`` NaN, ``vcov``
        the variance, ``sdcor`` the SD) and one per correlation (``vcov`` the covariance,
        ``sdcor`` the correlation); no rows for a model without random effects.
        """
        rows = [
            (c.grp, c.var1, np.nan if c.var2 is None else c.var2, c.vcov, c.sdcor)
            for c in self.varcomps
        ]
        frame = pd.DataFrame(rows, columns=list(VARCORR_COLUMNS))
        return frame.astype(
            {"grp": object, "var1": object, "var2": object, "vcov": float, "sdcor": float}
        )

    # -- lme4's reflexes: ranef, predict, fitted, residuals (syndesmo.fitting.predict) --

    def ranef(self) -> pd.DataFrame:
        """Conditional modes of the random effects, as lme4's ``ranef(m, condVar = TRUE)``.

        Returns
        -------
        pandas.DataFrame
            Columns ``grpvar, term, grp, condval, condsd`` (lme4's
            ``as.data.frame(ranef(...))``): one row per group and random-effect term.
            Native and lme4: conditional modes and SDs; Bayes: posterior means and SDs.

        Raises
        ------
        ModelError
            For an engine without random effects (GEE, logit, clogit, counts), a fit
            that keeps no modes, or a fit that did not converge.
        """
        return _predict.ranef_table(self)

    def check_quadrature(self, points: Sequence[int] | None = None) -> pd.DataFrame:
        """Refit at more quadrature points and show how much each estimate moves.

        Stata's ``quadchk``: a relative change above 1e-2 says the Laplace
        approximation or ``nagq`` points are not enough for that estimate.

        Parameters
        ----------
        points : sequence of int, optional
            Numbers of points to refit at (default: about twice the fit's and 15).

        Returns
        -------
        pandas.DataFrame
            One row per estimate (fixed effects, SDs, correlations), a column per
            number of points, ``max_rel_change`` and ``enough``; a last row
            ``logLik``. See ``syndesmo.fitting.quadcheck``.

        Raises
        ------
        ModelError
            For an engine without quadrature or model object, a fit that did not
            converge or a structure quadrature does not cover.
        """
        return check_quadrature(self, points)

    def model_params(self) -> np.ndarray:
        """All parameters of the likelihood, in ``fit.model.param_names`` order.

        The fixed effects, then the random-effect parameters: θ (lme4's
        ``getME(m, "theta")``) where the engine reports it, else the random-intercept SD.

        Returns
        -------
        numpy.ndarray
        """
        theta = getattr(self.details, "theta", None)
        tail = np.atleast_1d(np.asarray(theta, dtype=float)) if theta is not None else []
        if theta is None and not math.isnan(self.sigma):
            tail = [self.sigma]
        return np.r_[self.params.to_numpy(dtype=float), tail]

    def predict(
        self,
        data: pd.DataFrame | None = None,
        type: str = "response",
        conditional: bool = True,
        offset: Any = None,
    ) -> pd.Series:
        """Predictions for the fitted rows or new ones, as lme4's ``predict``.

        Unseen groups get a random effect of 0 (``allow.new.levels = TRUE``); engines
        without random effects give the fixed part (GEE: marginal); conditional
        logistic regression only ``type="link"``. See
        :func:`syndesmo.fitting.predict.predict` for the parameters.
        """
        return _predict.predict(self, data, type=type, conditional=conditional, offset=offset)

    def fitted(self, type: str = "response") -> pd.Series:
        """Fitted values (conditional where the engine has random effects), as lme4's
        ``fitted``; see :func:`syndesmo.fitting.predict.fitted`."""
        return _predict.fitted(self, type)

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Deviance, Pearson or response residuals, as lme4's ``residuals(m, type)``;
        see :func:`syndesmo.fitting.predict.residuals`."""
        return _predict.residuals(self, type)

    @property
    def sigma(self) -> float:
        """The random-intercept SD of a single-intercept model; NaN otherwise."""
        if len(self.varcomps) == 1:
            only = self.varcomps[0]
            if only.is_sd and only.var1 == INTERCEPT:
                return float(only.sdcor)
        return math.nan

    @property
    def sigma_se(self) -> float:
        """Standard error of :attr:`sigma` where the engine gives one (native: from the
        Hessian over fixed effects and σ), else NaN."""
        if isinstance(self.details, _HasThetaSE) and self.details.theta_se is not None:
            return float(self.details.theta_se)
        return math.nan

    @property
    def icc(self) -> float:
        """Latent-scale intraclass correlation sigma^2 / (sigma^2 + pi^2/3) for the logit link."""
        if math.isnan(self.sigma):
            return math.nan
        s2 = self.sigma**2
        return s2 / (s2 + math.pi**2 / 3.0)

    # -- statsmodels names -----------------------------------------------------------

    @property
    def nobs(self) -> int:
        """Number of observations (statsmodels' name for ``n_obs``)."""
        return self.n_obs

    @property
    def llf(self) -> float:
        """Maximised log-likelihood (statsmodels' name for ``loglik``)."""
        return self.loglik

    def cov_params(self) -> pd.DataFrame:
        """Covariance of the fixed effects (statsmodels' name for ``vcov``).

        Returns
        -------
        pandas.DataFrame
            A copy of ``vcov``, indexed by term on both axes.
        """
        return self.vcov.copy()

    # -- inference -------------------------------------------------------------------

    @property
    def bse(self) -> pd.Series:
        """Standard errors of ``params`` (square root of the diagonal of ``vcov``); NaN
        where that variance is negative or not finite (a fit without usable information)."""
        var = np.diag(self.vcov.to_numpy()).astype(float)
        se = np.full(var.shape, np.nan)
        usable = np.isfinite(var) & (var >= 0)
        se[usable] = np.sqrt(var[usable])
        return pd.Series(se, index=self.params.index)

    @property
    def tvalues(self) -> pd.Series:
        """Wald z statistics, ``params / bse``."""
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald p-values (z test), as lme4's ``summary`` reports for glmer."""
        from scipy import stats  # lazy: not loaded by power runs

        return pd.Series(2.0 * stats.norm.sf(np.abs(self.tvalues)), index=self.params.index)

    @property
    def n_params(self) -> int:
        """Number of estimated parameters: fixed effects plus variance components."""
        return len(self.params) + len(self.varcomps)

    @property
    def aic(self) -> float:
        """Akaike's information criterion, ``-2 loglik + 2 n_params``."""
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion, ``-2 loglik + log(n_obs) n_params``."""
        return -2.0 * self.loglik + math.log(self.n_obs) * self.n_params

    def conf_int(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Confidence intervals of the fixed effects on the link scale.

        Parameters
        ----------
        level : float
            Coverage, between 0 and 1.
        method : str, optional
            One of :attr:`INTERVAL_METHODS`: ``"wald"`` (the default) or ``"profile"``,
            the profile-likelihood interval of lme4's ``confint(fit, method =
            "profile")`` (:mod:`syndesmo.fitting.profile`; needs ``fit.model``).

        Returns
        -------
        pandas.DataFrame
            Columns ``lower`` and ``upper``, one row per term.

        Raises
        ------
        ModelError
            For a method this result does not offer, or a profile without a model.
        """
        _check_level(level)
        method = self._interval_method(method)
        cache_key = ("beta", method, float(level))
        if cache_key in self._cache:
            return self._cache[cache_key].copy()
        table = self._interval(level, method)
        if method != "wald":  # refits or draws: worth keeping
            self._cache[cache_key] = table
        return table.copy()

    def sigma_conf_int(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Confidence interval of the random-intercept SD: one row ``sigma``.

        Parameters
        ----------
        level : float
            Coverage, between 0 and 1.
        method : str, optional
            ``"wald"`` (default): σ ± z·SE(σ) with SE from the Hessian
            (:attr:`sigma_se`), cut at 0, NaN where that SE is unavailable (σ at 0).
            ``"profile"``: the profile-likelihood interval (lme4's ``.sig01`` row), with
            lower end 0 when σ = 0 is inside it.

        Returns
        -------
        pandas.DataFrame
            Columns ``lower`` and ``upper``, index ``["sigma"]``.

        Raises
        ------
        ModelError
            For a model without a random-intercept SD, or a method not offered.
        """
        _check_level(level)
        method = self._interval_method(method)
        cache_key = ("sigma", method, float(level))
        if cache_key in self._cache:
            return self._cache[cache_key].copy()
        table = self._sigma_interval(level, method)
        if method != "wald":
            self._cache[cache_key] = table
        return table.copy()

    def sd_conf_int(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Confidence intervals of every random-effect SD (one, nested, crossed or slopes).

        Parameters
        ----------
        level : float
            Coverage, between 0 and 1.
        method : str, optional
            ``"wald"`` (default): SD ± z·SE with the SE from the Hessian over (fixed
            effects, θ) (by the delta method for correlated terms), cut at 0, NaN
            where the SD is at 0. ``"profile"``: the profile-likelihood interval
            (lme4's ``confint(m, parm = "theta_")``), on the SD/correlation scale for
            correlated terms.

        Returns
        -------
        pandas.DataFrame
            Columns ``estimate``, ``lower``, ``upper``; index ``sd <grp> <var1>`` in
            the order of :attr:`varcorr`.

        Raises
        ------
        ModelError
            For an engine without a model to profile, or a method not offered.
        """
        _check_level(level)
        method = self._interval_method(method)
        rows = sd_rows(self)
        estimate = [c.sdcor for c in self.varcomps if c.is_sd]
        labels = [r for r, _ in rows]
        if not self.converged:
            ci = pd.DataFrame(np.nan, index=labels, columns=["lower", "upper"])
        elif method == "profile":
            key = ("sd", method, float(level))
            if key not in self._cache:
                self._cache[key] = profile_sd_conf_int(self, level)
            ci = self._cache[key].copy()
        else:
            se = self._sd_se()
            from scipy import stats  # lazy: not loaded by power runs

            z = stats.norm.ppf(0.5 + level / 2.0)
            est = np.asarray(estimate, dtype=float)
            ci = pd.DataFrame(
                {"lower": np.maximum(est - z * se, 0.0), "upper": est + z * se}, index=labels
            )
        ci.insert(0, "estimate", estimate)
        return ci

    def _sd_se(self) -> np.ndarray:
        """SEs of the SDs: from θ's SEs for scalar terms, by the delta method from the
        Hessian over (β, θ) for vector terms; NaN where there are none."""
        n_sd = sum(c.is_sd for c in self.varcomps)
        theta_se = getattr(self.details, "theta_se", None)
        if all(c.is_sd for c in self.varcomps):
            if theta_se is not None and np.ndim(theta_se) > 0:
                return np.asarray(theta_se, dtype=float)
            return np.array([self.sigma_se] * n_sd)
        hessian = getattr(self.details, "hessian", None)
        scale = getattr(self.model, "sd_scale", None)
        if hessian is None or scale is None:
            return np.full(n_sd, np.nan)
        return scale().sd_standard_errors(self.model_params(), hessian)

    def odds_ratios(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Odds ratios with their confidence interval and p-value, one row per term.

        Parameters
        ----------
        level : float
            Coverage of the interval.
        method : str, optional
            The interval, as in :meth:`conf_int`.

        Returns
        -------
        pandas.DataFrame
            Columns ``OR``, ``lower``, ``upper`` and ``p`` (always the Wald p-value;
            NaN where the engine reports none).
        """
        ci = self.conf_int(level, method=method)
        with np.errstate(over="ignore"):  # beyond float range is inf: the data do not bound it
            return pd.DataFrame(
                {
                    "OR": np.exp(self.params),
                    "lower": np.exp(ci["lower"]),
                    "upper": np.exp(ci["upper"]),
                    "p": self.pvalues,
                }
            )

    # -- hooks of the interval methods (subclasses with other methods override them) --

    @property
    def default_interval(self) -> str:
        """The interval method used when none is named."""
        return self.INTERVAL_METHODS[0]

    def _interval_method(self, method: str | None) -> str:
        method = self.default_interval if method is None else method
        if method not in self.INTERVAL_METHODS:
            offered = " or ".join(repr(m) for m in self.INTERVAL_METHODS)
            raise ModelError(
                f"interval method must be {offered} for engine {self.engine!r}, got {method!r}"
            )
        return method

    def _interval(self, level: float, method: str) -> pd.DataFrame:
        if not self.converged:  # no numbers from a fit that did not converge
            return pd.DataFrame({"lower": self.params, "upper": self.params})
        if method == "profile":
            return profile_conf_int(self, level)
        from scipy import stats  # lazy: not loaded by power runs

        z = stats.norm.ppf(0.5 + level / 2.0)
        se = self.bse
        return pd.DataFrame({"lower": self.params - z * se, "upper": self.params + z * se})

    def _sigma_interval(self, level: float, method: str) -> pd.DataFrame:
        if not self.converged and self.varcomps:
            return pd.DataFrame({"lower": [math.nan], "upper": [math.nan]}, index=["sigma"])
        if method == "profile":
            return profile_sigma_conf_int(self, level)
        if math.isnan(self.sigma):
            raise ModelError(f"engine {self.engine!r} has no random-intercept SD")
        se = self.sigma_se
        from scipy import stats  # lazy: not loaded by power runs

        z = stats.norm.ppf(0.5 + level / 2.0)
        lower = max(self.sigma - z * se, 0.0) if not math.isnan(se) else math.nan
        return pd.DataFrame({"lower": [lower], "upper": [self.sigma + z * se]}, index=["sigma"])

    # -- text ------------------------------------------------------------------------

    def _header(self) -> list[str]:
        return [
            f"syndesmo fit: engine={self.engine}"
            + (f", nAGQ={self.nagq}" if self.nagq is not None else ""),
            f"Formula: {self.formula}",
            f"Observations: {self.n_obs}"
            + (f", groups: {self._groups_text()}" if self.n_groups else "")
            + (f", events: {self.n_events}" if self.n_events is not None else ""),
        ]

    def _groups_text(self) -> str:
        """``patient 187`` or, for several factors, ``vu:patient 2244; patient 187``."""
        groups = getattr(self.details, "groups", None)
        if isinstance(groups, Mapping) and groups:
            return "; ".join(f"{g} {n}" for g, n in groups.items())
        return f"{self.group} {self.n_groups}"

    def _varcorr_lines(self) -> list[str]:
        if not self.varcomps:
            return []
        table = self.varcorr.fillna({"var2": ""})
        return [
            "Random effects (varcorr, as lme4's as.data.frame(VarCorr())):",
            table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        ]

    def _tail_lines(self) -> list[str]:
        lines = [f"Warning: {w}" for w in self.warnings]
        if len(self.ledger):
            lines.append("Rows left out:")
            lines.append(self.ledger.to_frame().to_string(index=False))
        return lines

    def summary(self) -> str:
        """A readable text summary in the style of lme4's and statsmodels' printouts.

        Returns
        -------
        str
            Model, fit statistics, variance components (from :attr:`varcorr`), the
            fixed-effects table with Wald intervals and odds ratios, the convergence
            record, warnings and the rows left out.
        """
        lines = self._header()
        if not math.isnan(self.loglik):
            lines.append(f"logLik: {self.loglik:.4f}   AIC: {self.aic:.2f}   BIC: {self.bic:.2f}")
        lines += self._varcorr_lines()
        if not math.isnan(self.sigma):
            lines.append(
                f"Random intercept SD ({self.group}): {self.sigma:.4f}   ICC: {self.icc:.3f}"
            )
        ci = self.conf_int(method="wald")
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
        lines += self.convergence.describe()
        lines += self._tail_lines()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} engine={self.engine} n_obs={self.n_obs} "
            f"formula={self.formula!r}>"
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
