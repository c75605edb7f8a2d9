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
* Native engine: each ``ℓ_p(b)`` is a Newton maximisation of the same Laplace /
  adaptive Gauss–Hermite log-likelihood as the fit (same ``nagq``, same exact
  gradient and Hessian) over the free coordinates of ``(β, θ)`` with ψ_k held at b —
  equivalent to refitting with ``x_j·b`` as an offset, and for σ with θ held fixed.
  Each refit starts from the previous one, moved along the first-order path
  ``dψ_free/db = −H_ff⁻¹ H_fk``.
* σ: the lower end is 0 when the boundary σ = 0 (plain logistic regression) is
  inside the interval, as lme4 reports for ``.sig01``.
* Logit engine: ``ℓ_p(b)`` by refitting statsmodels' binomial GLM with ``x_j·b`` as an
  offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import optimize, stats

from syndesmo.engines.logit import ENGINE as LOGIT
from syndesmo.engines.native.engine import ENGINE as NATIVE
from syndesmo.errors import ModelError, warn_user
from syndesmo.fitting import registry

if TYPE_CHECKING:
    from syndesmo.fitting.results import FitResult

MAX_WIDEN = 10  # doublings of the Wald half-width before an endpoint is called infinite
XTOL = 1e-10  # brentq's absolute tolerance on an endpoint
NEWTON_TOL = 1e-11  # Newton decrement (≈ twice the log-likelihood still to gain)
NEWTON_MAXITER = 100
MIN_ALPHA = 1e-9
THETA_KICK = 1e-3  # θ = 0 is a stationary point of Newton: start a free θ away from it
CACHE_KEY = "profile_intervals"


# ---------------------------------------------------------------------------
# Public entry points (FitResult.conf_int / sigma_conf_int delegate here)
# ---------------------------------------------------------------------------


def profile_conf_int(fit: FitResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals of the fixed effects: ``lower``, ``upper`` by term."""
    key = ("beta", float(level))
    cache = fit.extra.setdefault(CACHE_KEY, {})
    if key not in cache:
        profiler = _profiler(fit)
        rows = [profiler.interval(k, level) for k in range(len(fit.params))]
        cache[key] = pd.DataFrame(rows, index=fit.params.index, columns=["lower", "upper"])
        _warn_unbounded(cache[key], level)
    return cache[key].copy()


def profile_sigma_conf_int(fit: FitResult, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood interval of the random-intercept SD: one row ``sigma``."""
    if fit.engine != NATIVE:
        _profiler(fit)  # raises the engine's own error first
        raise ModelError(f"engine {fit.engine!r} has no random-intercept SD to profile")
    key = ("sigma", float(level))
    cache = fit.extra.setdefault(CACHE_KEY, {})
    if key not in cache:
        profiler = _profiler(fit)
        lo, hi = profiler.interval(len(fit.params), level)
        cache[key] = pd.DataFrame({"lower": [lo], "upper": [hi]}, index=["sigma"])
        _warn_unbounded(cache[key], level)
    return cache[key].copy()


def _profiler(fit: FitResult) -> _NativeProfiler | _LogitProfiler:
    info = registry.REGISTRY.get(fit.engine)
    if info is not None and not info.likelihood:
        raise ModelError(f"profile intervals need a likelihood; engine {fit.engine!r} has none")
    if info is None or not info.profile or fit.engine not in (NATIVE, LOGIT):
        able = " and ".join(repr(e) for e in registry.engine_names(profile=True))
        raise ModelError(
            f"profile intervals are available for the engines {able}, not "
            f"{fit.engine!r}; refit with engine={registry.DEFAULT_ENGINE!r} "
            "(same model as lme4's glmer)"
        )
    if fit.extra.get("design") is None:
        raise ModelError(
            f"this {fit.engine} fit does not keep its design (e.g. a replicate of fit_many), "
            "so it cannot be refitted for profile intervals; refit it with sy.fit"
        )
    if fit.engine == NATIVE:
        return _NativeProfiler(fit)
    return _LogitProfiler(fit)


# ---------------------------------------------------------------------------
# Endpoint search, shared by the engines
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
            return float(optimize.brentq(f, min(prev_b, b), max(prev_b, b), xtol=XTOL))
        if b == lower_bound:
            return lower_bound
        prev_b, prev_f = b, fb
    return direction * math.inf


def _signed_root(delta: float, b: float, est: float) -> float:
    return math.copysign(math.sqrt(max(delta, 0.0)), b - est)


# ---------------------------------------------------------------------------
# Native GLMM
# ---------------------------------------------------------------------------


@dataclass
class _Point:
    """A (constrained) maximum: log-likelihood, parameters, modes, Hessian."""

    value: float
    psi: np.ndarray
    u: np.ndarray
    hess: np.ndarray


class _NativeProfiler:
    """Profiles of the native engine's log-likelihood over ``(β, θ)``."""

    def __init__(self, fit: FitResult) -> None:
        from syndesmo.engines.native.engine import _validate
        from syndesmo.engines.native.layout import compress_shared

        design = fit.extra["design"]
        X, y, m, groups, _ = _validate(design)
        self.layout, _ = compress_shared(X, y[None], m[None], groups, fit.extra.get("offset"))
        self.nagq = int(fit.nagq or 1)
        self.names = [*fit.params.index, "sigma"]
        self.rep = np.zeros(1, dtype=int)
        psi = np.r_[fit.params.to_numpy(float), fit.sigma]
        self.hat = self._solve(psi, np.zeros((self.layout.n_groups, 1)), None)
        self.hat.psi[-1] = abs(self.hat.psi[-1])
        se = np.r_[fit.bse.to_numpy(float), fit.extra.get("theta_se", math.nan)]
        self.se = np.where(np.isfinite(se) & (se > 0), se, np.nan)

    def _evaluate(self, psi: np.ndarray, u: np.ndarray):
        from syndesmo.engines.native.newton import _evaluate_hessian

        val, grad, hess, u = _evaluate_hessian(self.layout, self.rep, psi[None], u, self.nagq)
        return float(val[0]), grad[0], hess[0], u

    def _solve(self, psi0: np.ndarray, u0: np.ndarray, fixed: int | None) -> _Point:
        """Maximise over all coordinates but ``fixed`` (modified Newton, line search)."""
        from syndesmo.engines.native.newton import newton_direction

        P = psi0.size
        free = np.ones(P, dtype=bool)
        if fixed is not None:
            free[fixed] = False
        psi = psi0.astype(float).copy()
        if free[-1] and abs(psi[-1]) < THETA_KICK:
            psi[-1] = THETA_KICK
        val, grad, hess, u = self._evaluate(psi, u0)
        if not (np.isfinite(val) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))):
            raise _RefitError("the log-likelihood is not finite at the starting values")
        for _ in range(NEWTON_MAXITER):
            step, dec = newton_direction(grad[free][None], hess[np.ix_(free, free)][None])
            if dec[0] < NEWTON_TOL:
                return _Point(val, psi, u, hess)
            alpha = 1.0
            while True:
                trial = psi.copy()
                trial[free] += alpha * step[0]
                tv, tg, th, tu = self._evaluate(trial, u)
                ok = np.isfinite(tv) and np.all(np.isfinite(tg)) and np.all(np.isfinite(th))
                if ok and tv >= val - 1e-12 * (1.0 + abs(val)):
                    psi, val, grad, hess, u = trial, tv, tg, th, tu
                    break
                alpha *= 0.5
                if alpha < MIN_ALPHA:
                    raise _RefitError("the line search could not increase the log-likelihood")
        raise _RefitError(f"no convergence within {NEWTON_MAXITER} Newton iterations")

    def _predict(self, pt: _Point, k: int, b: float) -> np.ndarray:
        """Start for ψ_k = b from the maximum ``pt``: first-order path of the optimum."""
        psi = pt.psi.copy()
        delta = b - psi[k]
        psi[k] = b
        free = np.arange(psi.size) != k
        Hff = pt.hess[np.ix_(free, free)]
        if np.all(np.isfinite(Hff)) and np.linalg.eigvalsh(Hff)[-1] < 0:
            psi[free] -= delta * np.linalg.solve(Hff, pt.hess[free, k])
        return psi

    def interval(self, k: int, level: float) -> tuple[float, float]:
        """Profile interval of coordinate ``k`` of ``(β, θ)`` (``k = p`` is σ)."""
        z = math.sqrt(stats.chi2.ppf(level, 1))
        est = float(self.hat.psi[k])
        is_sigma = k == self.hat.psi.size - 1
        half = z * self.se[k] if np.isfinite(self.se[k]) else max(abs(est), 0.5)
        out = []
        for direction in (-1, 1):
            chain = [self.hat]

            def zeta(b: float, chain: list[_Point] = chain) -> float:
                near = min(chain[-2:], key=lambda p: abs(p.psi[k] - b))
                try:
                    pt = self._solve(self._predict(near, k, b), near.u, k)
                except _RefitError as exc:
                    raise ModelError(
                        f"profile of '{self.names[k]}': the refit at {b:.6g} failed: {exc}"
                    ) from exc
                chain.append(pt)
                return _signed_root(2.0 * (self.hat.value - pt.value), b, est)

            if is_sigma and direction < 0:
                if est <= 0.0:
                    out.append(0.0)
                    continue
                out.append(_endpoint(zeta, est, min(half, est), -1, z, lower_bound=0.0))
            else:
                out.append(_endpoint(zeta, est, half, direction, z))
        return out[0], out[1]


class _RefitError(Exception):
    """A constrained refit inside the profile failed (turned into a ModelError)."""


# ---------------------------------------------------------------------------
# Plain logistic regression (statsmodels)
# ---------------------------------------------------------------------------


class _LogitProfiler:
    """Profiles of the binomial log-likelihood, refitting statsmodels' GLM with offsets."""

    def __init__(self, fit: FitResult) -> None:
        design = fit.extra["design"]
        self.X = np.asarray(design.X, dtype=float)
        y = np.asarray(design.y, dtype=float)
        n = np.asarray(design.trials, dtype=float)
        self.endog = y if np.all(n == 1) else np.column_stack([y, n - y])
        self.y, self.n = y, n
        base = fit.extra.get("offset")  # the fit's own offset, if it had one
        self.base = np.zeros(self.X.shape[0]) if base is None else np.asarray(base, dtype=float)
        self.names = list(fit.params.index)
        self.est = fit.params.to_numpy(float)
        self.se = fit.bse.to_numpy(float)
        self.loglik_hat, _ = self._loglik(None, 0.0, self.est)

    def _loglik(self, k: int | None, b: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """Maximum log-likelihood with ``β_k = b`` (all free when ``k`` is None), and the
        estimates of the free coefficients."""
        import statsmodels.api as sm

        free = np.ones(self.X.shape[1], dtype=bool)
        offset = self.base
        if k is not None:
            free[k] = False
            offset = self.base + b * self.X[:, k]
        if not free.any():  # nothing left to fit: the binomial log-likelihood at the offset
            value = np.sum(self.y * offset - self.n * np.logaddexp(0.0, offset))
            return float(value), np.zeros(0)
        model = sm.GLM(self.endog, self.X[:, free], family=sm.families.Binomial(), offset=offset)
        res = model.fit(start_params=start[free], tol=1e-12, maxiter=200)
        # statsmodels adds the log binomial coefficients for counts: a constant here.
        return float(res.llf), np.asarray(res.params)

    def interval(self, k: int, level: float) -> tuple[float, float]:
        z = math.sqrt(stats.chi2.ppf(level, 1))
        est = float(self.est[k])
        half = z * self.se[k] if np.isfinite(self.se[k]) and self.se[k] > 0 else 1.0
        start = self.est.copy()

        def zeta(b: float) -> float:
            value, free_params = self._loglik(k, b, start)
            start[np.arange(start.size) != k] = free_params
            return _signed_root(2.0 * (self.loglik_hat - value), b, est)

        lo = _endpoint(zeta, est, half, -1, z)
        start[:] = self.est
        hi = _endpoint(zeta, est, half, 1, z)
        return lo, hi


def _warn_unbounded(table: pd.DataFrame, level: float) -> None:
    """Warn about endpoints where the profile never reached the level (separation)."""
    bad = [str(t) for t in table.index if not np.all(np.isfinite(table.loc[t]))]
    if bad:
        warn_user(
            f"the profile likelihood of {', '.join(bad)} does not fall by χ²₁({level:g})/2 "
            f"within {2**MAX_WIDEN} Wald half-widths of the estimate: that end of the "
            "interval is infinite (separation, or too little information)"
        )
