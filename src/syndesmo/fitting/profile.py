"""Profile-likelihood confidence intervals: lme4's ``confint(fit, method = "profile")``.

For a parameter ψ_k (a fixed effect β_j, or the random-intercept SD σ) the profile
log-likelihood is ``ℓ_p(b) = max ℓ(ψ)`` over the other parameters with ψ_k = b, and
the interval is ``{b : 2(ℓ̂ − ℓ_p(b)) ≤ χ²₁(level)}`` (Venzon & Moolgavkar 1988,
Appl Stat 37:87; lme4's ``profile.merMod``). Wald intervals on the log-odds scale are
poor when a cohort is small or an odds ratio far from 1; these follow the likelihood.

How it is computed here:

* The endpoints are roots of the signed square-root deviance
  ``ζ(b) = sign(b − ψ̂_k)·√(2(ℓ̂ − ℓ_p(b)))`` at ``∓√χ²₁(level)`` (ζ is nearly linear in
  b, so few refits are needed). Each root is bracketed starting from the Wald
  endpoint and doubling its distance from the estimate until ζ crosses the level,
  then found by :func:`scipy.optimize.brentq`. A profile that never crosses within
  2^MAX_WIDEN Wald half-widths (separation) gives an infinite endpoint and a warning.
* Each ``ℓ_p(b)`` is a constrained maximisation by the fit's own model object
  (``fit.model``), which this module reaches only through the :class:`ProfileModel`
  protocol: parameter names, lower bounds, the log-likelihood and a maximiser with
  parameters held fixed. Each refit starts from the nearer of the two previous ones,
  moved along the first-order path ``dψ_free/db = −H_ff⁻¹ H_fk`` where the model
  returns the Hessian, and warm-started from the model's own state (the native
  engine's conditional modes). The native model maximises the same Laplace /
  adaptive Gauss–Hermite log-likelihood as the fit (same ``nagq``, exact gradient and
  Hessian) — equivalent to refitting with ``x_j·b`` as an offset, and for σ with θ
  held fixed; the logit model refits statsmodels' binomial GLM with ``x_j·b`` as an
  offset.
* A parameter with a finite lower bound (σ ≥ 0): the lower end is the bound when it
  is inside the interval, as lme4 reports for ``.sig01``.
* Engines without a model object (GEE has no likelihood; lme4's model lives in R;
  replicates of ``fit_many`` keep no design) give a clear ModelError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError, warn_user

if TYPE_CHECKING:
    from syndesmo.fitting.results import FitResult

MAX_WIDEN = 10  # doublings of the Wald half-width before an endpoint is called infinite
XTOL = 1e-10  # brentq's absolute tolerance on an endpoint


# ---------------------------------------------------------------------------
# The protocol a model object offers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Maximum:
    """A (constrained) maximum of a model's log-likelihood.

    Parameters
    ----------
    params : numpy.ndarray
        All parameters at the maximum, in the model's ``param_names`` order (the held
        ones at their fixed values).
    loglik : float
        The log-likelihood there, on the scale of the model's ``loglik``.
    hessian : numpy.ndarray or None
        Hessian of the log-likelihood over all parameters, where the model computes it
        (it lets the profile predict the next refit's start).
    state : object
        The model's own warm start for a nearby maximisation (e.g. conditional modes).
    """

    params: np.ndarray
    loglik: float
    hessian: np.ndarray | None = None
    state: Any = None


def parameter_vector(params: Sequence[float] | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``params`` as a flat float array of one finite number per name, else ModelError.

    Parameters
    ----------
    params : array-like
        All parameters of a model.
    names : sequence of str
        The model's parameter names (``param_names``).

    Returns
    -------
    numpy.ndarray
    """
    psi = np.asarray(params, dtype=float).reshape(-1)
    if psi.size != len(names) or not np.all(np.isfinite(psi)):
        raise ModelError(
            f"parameters must be {len(names)} finite numbers ({', '.join(names)}), got {psi.size}"
        )
    return psi


@runtime_checkable
class ProfileModel(Protocol):
    """What profiling needs of a model object (``fit.model``).

    The first parameters are the fixed effects, in the order of ``fit.params``; any
    further ones are the SDs of the variance components, in the order of
    ``fit.varcomps``.
    """

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of all parameters of the likelihood."""
        ...

    @property
    def lower_bounds(self) -> tuple[float, ...]:
        """Lower bound of each parameter (``-inf`` if none; 0 for an SD)."""
        ...

    def loglik(self, params: Sequence[float] | np.ndarray) -> float:
        """Log-likelihood at ``params`` (all parameters), on lme4's scale."""
        ...

    def maximise(
        self,
        fixed: Mapping[int, float] | None = None,
        start: Sequence[float] | np.ndarray | None = None,
        *,
        warm: Maximum | None = None,
    ) -> Maximum:
        """Maximise over all parameters but the ``fixed`` ones (index → value).

        Raises ModelError when the maximisation fails.
        """
        ...


# ---------------------------------------------------------------------------
# Public entry points (FitResult.conf_int / sigma_conf_int delegate here)
# ---------------------------------------------------------------------------


def profile_conf_int(fit: FitResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals of the fixed effects.

    Parameters
    ----------
    fit : FitResult
        A fit whose ``model`` follows :class:`ProfileModel`.
    level : float
        Coverage, between 0 and 1.

    Returns
    -------
    pandas.DataFrame
        Columns ``lower`` and ``upper``, one row per term of ``fit.params``.

    Raises
    ------
    ModelError
        When the fit has no model object, or a refit fails.
    """
    profiler = _Profiler(fit)
    rows = [profiler.interval(k, level) for k in range(len(fit.params))]
    table = pd.DataFrame(rows, index=fit.params.index, columns=["lower", "upper"])
    _warn_unbounded(table, level)
    return table


def profile_sigma_conf_int(fit: FitResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood interval of the random-intercept SD.

    Parameters
    ----------
    fit : FitResult
        A single-random-intercept fit whose ``model`` follows :class:`ProfileModel`.
    level : float
        Coverage, between 0 and 1.

    Returns
    -------
    pandas.DataFrame
        Columns ``lower`` and ``upper``, index ``["sigma"]``.

    Raises
    ------
    ModelError
        When the fit has no model object or no random-intercept SD.
    """
    model = _model_of(fit)  # the engine's own error first
    if math.isnan(fit.sigma) or len(model.param_names) != len(fit.params) + 1:
        raise ModelError(f"engine {fit.engine!r} has no random-intercept SD to profile")
    lo, hi = _Profiler(fit).interval(len(fit.params), level)
    table = pd.DataFrame({"lower": [lo], "upper": [hi]}, index=["sigma"])
    _warn_unbounded(table, level)
    return table


def sd_rows(fit: FitResult) -> list[tuple[str, int]]:
    """Labels of the random-effect SDs and their indices on the SD/correlation scale.

    The parameters after the fixed effects are the rows of ``fit.varcorr`` (SDs and
    correlations, lme4's order). For scalar random-effect terms (random intercepts,
    nested or crossed) they are also the model's own parameters (θ of lme4 for a
    binomial GLMM); for vector terms the model offers them through ``sd_scale()``.
    """
    p = len(fit.params)
    return [(f"sd {c.grp} {c.var1}", p + j) for j, c in enumerate(fit.varcomps) if c.is_sd]


def sd_scale_model(fit: FitResult) -> tuple[ProfileModel, np.ndarray]:
    """The fit's model with the SDs and correlations as its parameters, and the estimates.

    For scalar structures that is the model itself. Otherwise the model's
    ``sd_scale()`` (a :class:`ProfileModel` whose parameters are the fixed effects then
    the ``fit.varcorr`` rows) and its ``to_sd_scale(params)``.

    Raises
    ------
    ModelError
        When the model has no such parameterisation.
    """
    model = _model_of(fit)
    if all(c.is_sd for c in fit.varcomps):
        return model, fit.model_params()
    scale = getattr(model, "sd_scale", None)
    if scale is None:
        raise ModelError(
            f"the model of engine {fit.engine!r} cannot be profiled on the SD/correlation "
            "scale of its correlated random effects"
        )
    sd_model = scale()
    return sd_model, sd_model.to_sd_scale(fit.model_params())


def profile_sd_conf_int(fit: FitResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals of every random-effect SD (lme4's ``.sig01``, …).

    Parameters
    ----------
    fit : FitResult
        A fit with scalar random-effect terms whose ``model`` follows
        :class:`ProfileModel`.
    level : float
        Coverage, between 0 and 1.

    Returns
    -------
    pandas.DataFrame
        Columns ``lower`` and ``upper``, index ``sd <grp> <var1>`` in the order of
        ``fit.varcomps``; a lower end of 0 where SD = 0 is inside the interval.

    Raises
    ------
    ModelError
        Without a model object, for vector random effects, or when a refit fails.
    """
    rows = sd_rows(fit)
    model, start = sd_scale_model(fit)
    profiler = _Profiler(fit, model=model, start=start)
    table = pd.DataFrame(
        [profiler.interval(k, level) for _, k in rows],
        index=[label for label, _ in rows],
        columns=["lower", "upper"],
    )
    _warn_unbounded(table, level)
    return table


def _model_of(fit: FitResult) -> ProfileModel:
    """``fit.model`` if it can be profiled, else one clear ModelError."""
    model = fit.model
    if model is None:
        if math.isnan(fit.loglik):
            raise ModelError(f"profile intervals need a likelihood; engine {fit.engine!r} has none")
        raise ModelError(
            f"this {fit.engine!r} fit keeps no model object to refit (the lme4 engine's "
            "model lives in R; replicates of fit_many keep no design), so it has no profile "
            "intervals; refit it with sy.fit and engine='native' (the model of lme4's "
            "glmer) or 'logit'"
        )
    if not isinstance(model, ProfileModel):
        raise ModelError(
            f"the model object of engine {fit.engine!r} ({type(model).__name__}) cannot "
            "be profiled: it lacks param_names, lower_bounds, loglik or maximise"
        )
    return model


# ---------------------------------------------------------------------------
# Endpoint search
# ---------------------------------------------------------------------------


def _endpoint(
    zeta: Callable[[float], float],
    est: float,
    half: float,
    direction: int,
    z: float,
    lower_bound: float | None = None,
) -> float:
    """Root of ``ζ(b) = direction·z`` on one side of ``est``.

    Brackets from ``est + direction·half`` (the Wald endpoint), doubling the distance;
    ``lower_bound`` caps the search (σ ≥ 0) and is returned when ζ does not reach the
    level before it. Returns ±inf when the profile never reaches the level.
    """
    target = direction * z

    def f(b: float) -> float:
        return zeta(b) - target

    prev_b, prev_f = est, -target
    for i in range(MAX_WIDEN + 1):
        b = est + direction * half * 2.0**i
        if lower_bound is not None and b <= lower_bound:
            b = lower_bound
        fb = f(b)
        if fb * prev_f <= 0.0:
            if fb == 0.0:
                return b
            from scipy import optimize  # lazy: not loaded by power runs

            return float(optimize.brentq(f, min(prev_b, b), max(prev_b, b), xtol=XTOL))
        if b == lower_bound:
            return lower_bound
        prev_b, prev_f = b, fb
    return direction * math.inf


def _signed_root(delta: float, b: float, est: float) -> float:
    return math.copysign(math.sqrt(max(delta, 0.0)), b - est)


class _Profiler:
    """Profiles of one fit's log-likelihood through its model object."""

    def __init__(
        self,
        fit: FitResult,
        model: ProfileModel | None = None,
        start: np.ndarray | None = None,
    ) -> None:
        self.model = _model_of(fit) if model is None else model
        names = tuple(self.model.param_names)
        p = len(fit.params)
        if names[:p] != tuple(fit.params.index):
            raise ModelError(
                f"the model's parameters {list(names)} do not start with the fit's terms "
                f"{list(fit.params.index)}"
            )
        on_model = start is None
        start = fit.model_params() if start is None else np.asarray(start, dtype=float)
        if len(names) != start.size:
            raise ModelError(
                f"the model has {len(names)} parameters but the fit {p} fixed effects and "
                f"{start.size - p} variance parameters"
            )
        self.names = names
        self.bounds = np.asarray(self.model.lower_bounds, dtype=float)
        self.hat = self.model.maximise(start=start)
        theta_se = getattr(fit.details, "theta_se", None)
        if not on_model:  # another parameterisation: no SEs, start from the estimate
            se_var = [math.nan] * (start.size - p)
        elif theta_se is not None and np.ndim(theta_se) > 0:
            se_var = np.atleast_1d(np.asarray(theta_se, dtype=float))
        else:
            se_var = [fit.sigma_se] * (start.size - p)
        se = np.r_[fit.bse.to_numpy(float), se_var]
        self.se = np.where(np.isfinite(se) & (se > 0), se, np.nan)

    def _predict(self, pt: Any, k: int, b: float) -> np.ndarray:
        """Start for ψ_k = b from the maximum ``pt``: first-order path of the optimum."""
        psi = np.asarray(pt.params, dtype=float).copy()
        delta = b - psi[k]
        psi[k] = b
        if pt.hessian is None:
            return psi
        free = np.arange(psi.size) != k
        Hff = pt.hessian[np.ix_(free, free)]
        if np.all(np.isfinite(Hff)) and np.linalg.eigvalsh(Hff)[-1] < 0:
            psi[free] -= delta * np.linalg.solve(Hff, pt.hessian[free, k])
        return psi

    def interval(self, k: int, level: float) -> tuple[float, float]:
        """Profile interval of parameter ``k`` of the model."""
        from scipy import stats  # lazy: not loaded by power runs

        z = math.sqrt(stats.chi2.ppf(level, 1))
        est = float(self.hat.params[k])
        bound = float(self.bounds[k])
        half = z * self.se[k] if np.isfinite(self.se[k]) else max(abs(est), 0.5)
        out = []
        for direction in (-1, 1):
            chain = [self.hat]

            def zeta(b: float, chain: list[Maximum] = chain) -> float:
                near = min(chain[-2:], key=lambda p: abs(p.params[k] - b))
                try:
                    pt = self.model.maximise(
                        fixed={k: b}, start=self._predict(near, k, b), warm=near
                    )
                except ModelError as exc:
                    raise ModelError(
                        f"profile of '{self.names[k]}': the refit at {b:.6g} failed: {exc}"
                    ) from exc
                chain.append(pt)
                return _signed_root(2.0 * (self.hat.loglik - pt.loglik), b, est)

            if math.isfinite(bound) and direction < 0:
                if est <= bound:
                    out.append(bound)
                    continue
                out.append(_endpoint(zeta, est, min(half, est - bound), -1, z, lower_bound=bound))
            else:
                out.append(_endpoint(zeta, est, half, direction, z))
        return out[0], out[1]


def _warn_unbounded(table: pd.DataFrame, level: float) -> None:
    """Warn about endpoints where the profile never reached the level (separation)."""
    bad = [str(t) for t in table.index if not np.all(np.isfinite(table.loc[t]))]
    if bad:
        warn_user(
            f"the profile likelihood of {', '.join(bad)} does not fall by χ²₁({level:g})/2 "
            f"within {2**MAX_WIDEN} Wald half-widths of the estimate: that end of the "
            "interval is infinite (separation, or too little information)"
        )
