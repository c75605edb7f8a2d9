"""The native random-intercept GLMM as a model object: data checked and compressed once.

:class:`NativeModel` holds one ``Design`` (validated: finite, full rank, a 0/1 or
binomial response, at least one event and one non-event) compressed into the
group-sorted ``Layout`` the likelihood works on, with ``nagq`` and an optional offset.
It offers what lme4 builds with ``mkGlmerDevfun`` and what MixedModels.jl's model
object offers before ``fit!``:

* :meth:`NativeModel.loglik` — the log-likelihood at given parameters (fixed effects
  then σ) on lme4's scale;
* :meth:`NativeModel.maximise` — the maximum with some parameters held fixed (what
  profile intervals refit; :class:`syndesmo.fitting.profile.ProfileModel`);
* :meth:`NativeModel.fit` — the fit as a ``FitResult``, which keeps the model as
  ``fit.model``.

:func:`syndesmo.engines.native.engine.fit_native` builds the model and calls ``fit``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from syndesmo.checks import check_nagq
from syndesmo.engines.native.core import THETA_START, constants, fit_core, glm_irls, lme4_loglik
from syndesmo.engines.native.layout import compress_shared
from syndesmo.engines.native.newton import evaluate_hessian, newton_direction
from syndesmo.engines.native.quadrature import loglik_and_grad
from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.profile import Maximum, parameter_vector
from syndesmo.fitting.registry import name_for
from syndesmo.fitting.results import (
    Convergence,
    EngineDetails,
    FitResult,
    random_intercept,
)

MAX_NAGQ = 25  # lme4's documented range for nAGQ with one scalar random effect
#: This engine's name, as the registry lists it.
ENGINE = name_for("syndesmo.engines.native.engine:fit_native")
SINGULAR_TOL = 1e-4  # lme4::isSingular(tol = 1e-4)
SEPARATION_BETA = 10.0  # |β| beyond this (odds ratio e^10) triggers the separation check
SEPARATION_SE = 10.0


NEWTON_TOL = 1e-11  # maximise(): Newton decrement (≈ twice the log-likelihood still to gain)
NEWTON_MAXITER = 100
MIN_ALPHA = 1e-9
THETA_KICK = 1e-3  # θ = 0 is a stationary point of Newton: start a free θ away from it


# ---------------------------------------------------------------------------
# Checks of the design and the options
# ---------------------------------------------------------------------------


def _check_nagq(nagq: int | None) -> int:
    return check_nagq(1 if nagq is None else nagq, MAX_NAGQ)


def _row(design: Design, i: int) -> str:
    """Row ``i`` of the model matrices, named by its 0-based position in the input data."""
    rows = getattr(design, "rows", None)
    return f"row {int(rows[i]) if rows is not None else int(i)}"


def _validate(design: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Arrays of a usable design, or one ModelError naming the problem."""
    if design.groups is None:
        raise ModelError("native engine needs a random-intercept term (1|group) in the formula")
    X = np.asarray(design.X, dtype=float)
    y = np.asarray(design.y, dtype=float).reshape(-1)
    m = np.asarray(design.trials, dtype=float).reshape(-1)
    groups = np.asarray(design.groups).reshape(-1)
    n = X.shape[0]
    resp = design.response or "response"
    if X.ndim != 2 or y.size != n or m.size != n or groups.size != n:
        raise ModelError(
            f"design arrays disagree in length: X has {n} rows, y {y.size}, "
            f"trials {m.size}, groups {groups.size}"
        )
    if n == 0:
        raise ModelError("the model frame has no rows")
    if len(design.names) != X.shape[1]:
        raise ModelError(f"{X.shape[1]} model-matrix columns but {len(design.names)} names")
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ModelError(f"term '{design.names[j]}' is not finite in {_row(design, i)} ({X[i, j]})")
    for what, arr in ((resp, y), ("trials", m)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(f"{what} is not finite in {_row(design, i)} ({arr[i]})")
    if np.any(m < 1) or np.any(m != np.round(m)):
        i = int(np.flatnonzero((m < 1) | (m != np.round(m)))[0])
        raise ModelError(f"trials must be positive integers: {_row(design, i)} has {m[i]:g}")
    binary = bool(np.all(m == 1))
    badv = (y < 0) | (y > m) | (y != np.round(y))
    if badv.any():
        i = int(np.flatnonzero(badv)[0])
        if binary:
            values = ", ".join(f"{v:g}" for v in np.unique(y[badv])[:5])
            raise ModelError(
                f"response '{resp}' must be 0/1 for a binary model: found value(s) {values} "
                f"(first in {_row(design, i)}); use successes with trials for binomial counts"
            )
        raise ModelError(
            f"response '{resp}' must count successes between 0 and trials: "
            f"{_row(design, i)} has {y[i]:g} of {m[i]:g}"
        )
    if y.sum() == 0:
        raise ModelError(
            f"outcome has no events: '{resp}' is 0 in all {n} rows, so no model can be fitted"
        )
    if y.sum() == m.sum():
        raise ModelError(
            f"outcome has no non-events: '{resp}' is a success in all {n} rows, "
            "so no model can be fitted"
        )
    if groups.dtype.kind not in "iu" or groups.min() < 0:
        raise ModelError(f"group codes of '{design.group}' must be integers 0..G-1")
    check_rank(X, design.names)

    notes = []
    codes, groups = np.unique(groups, return_inverse=True)
    sizes = np.bincount(groups, weights=m)  # observations = trials (1 per row if binary)
    single = np.flatnonzero(sizes == 1)
    if single.size:
        labels = design.group_labels
        shown = [
            str(labels[codes[g]])
            if labels is not None and codes[g] < len(labels)
            else str(codes[g])
            for g in single[:3]
        ]
        notes.append(
            f"{single.size} group(s) of '{design.group}' have a single observation "
            f"(e.g. {', '.join(shown)}); they are kept, as lme4 does, but say little "
            "about the random-intercept SD"
        )
    return X, y, m, groups, notes


def _check_offset(offset, n: int) -> np.ndarray | None:
    """The offset as a float array of the design's length, or ModelError."""
    if offset is None:
        return None
    arr = np.asarray(offset, dtype=float).reshape(-1)
    if arr.size != n:
        raise ModelError(f"offset has {arr.size} values but the design has {n} rows")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(f"offset is not finite in row {i} ({arr[i]})")
    return arr


def _start_vector(start, p: int, names: list[str]) -> np.ndarray | None:
    if start is None:
        return None
    if isinstance(start, FitResult):
        return np.r_[start.params.reindex(names).to_numpy(float), start.sigma]
    arr = np.asarray(start, dtype=float).reshape(-1)
    if arr.size != p + 1 or not np.all(np.isfinite(arr)):
        raise ModelError(
            f"start must hold {p + 1} finite numbers (fixed effects {names} then σ), got {arr.size}"
        )
    return arr


# ---------------------------------------------------------------------------
# The details of a native fit and the model object
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NativeDetails(EngineDetails):
    """What the native engine knows beyond the shared result.

    Parameters
    ----------
    theta_se : float
        SE of σ from the Hessian over (fixed effects, σ); NaN at σ = 0.
    loglik_marginal : float
        The approximation of the log-likelihood itself (differs from ``loglik``, lme4's
        scale, only for ``nagq > 1`` with binomial counts).
    hessian : numpy.ndarray or None
        Hessian of the log-likelihood over (fixed effects, σ) at the estimates.
    gradient : numpy.ndarray or None
        Its gradient there.
    """

    theta_se: float = math.nan
    loglik_marginal: float = math.nan
    hessian: np.ndarray | None = None
    gradient: np.ndarray | None = None


class NativeModel:
    """A binomial-logit GLMM with one random intercept, ready to evaluate and fit.

    Parameters
    ----------
    design : Design
        Model matrices with a grouping factor (``(1|group)``).
    nagq : int
        1 for the Laplace approximation, ``k > 1`` for adaptive Gauss–Hermite
        quadrature with ``k`` nodes (lme4's ``nAGQ``, up to 25).
    offset : array-like, optional
        A known term added to the linear predictor, one number per row (lme4's
        ``offset=``).

    Raises
    ------
    ModelError
        For an unusable design, ``nagq`` or offset, naming the problem.

    Notes
    -----
    The parameters are the fixed effects (in ``design.names`` order) then σ, the
    random-intercept SD; the likelihood is even in σ, so its lower bound 0 is a
    boundary of the reported SD, not of the optimiser. The object keeps numpy arrays
    and the design only, so it pickles with the result.
    """

    def __init__(
        self, design: Design, nagq: int | None = 1, *, offset: np.ndarray | None = None
    ) -> None:
        self.nagq = _check_nagq(nagq)
        X, y, m, groups, notes = _validate(design)
        self.design = design
        self.offset = _check_offset(design.offset if offset is None else offset, X.shape[0])
        self.notes = tuple(notes)
        self.layout, self._layout_codes = compress_shared(X, y[None], m[None], groups, self.offset)
        self._logc, self._sat = constants(y, m)
        self.n_obs = int(X.shape[0])
        self.n_groups = int(groups.max()) + 1
        self.n_events = round(float(y.sum()))

    @property
    def param_names(self) -> tuple[str, ...]:
        """The fixed effects' names, then ``"sigma"``."""
        return (*self.design.names, "sigma")

    @property
    def lower_bounds(self) -> tuple[float, ...]:
        """``-inf`` for every fixed effect, 0 for σ."""
        return (-math.inf,) * len(self.design.names) + (0.0,)

    def _params(self, params: Sequence[float] | np.ndarray) -> np.ndarray:
        return parameter_vector(params, self.param_names)

    def _scale(self, value: float, marginal: bool) -> float:
        """From the approximation without binomial coefficients to lme4's scale."""
        if marginal:
            return float(value + self._logc)
        return float(lme4_loglik(np.array([value]), self._logc, self._sat, self.nagq)[0])

    def ranef(self, params: Sequence[float] | np.ndarray) -> pd.DataFrame:
        """Conditional modes of the random intercepts and their conditional SDs.

        At ``params`` (fixed effects then σ), each group's mode b̂ maximises the joint
        density of its responses and its intercept; its conditional SD is
        σ / sqrt(1 + σ² Σ wᵢ), wᵢ = mᵢ μᵢ (1 − μᵢ) at the mode — the Laplace
        curvature, as lme4's ``ranef(m, condVar = TRUE)`` reports for any ``nAGQ``.

        Parameters
        ----------
        params : array-like
            The fixed effects then σ (the estimates of a fit).

        Returns
        -------
        pandas.DataFrame
            lme4's ``as.data.frame(ranef(m, condVar = TRUE))``: columns ``grpvar,
            term, grp, condval, condsd``, one row per group in the order of its labels.

        Raises
        ------
        ModelError
            For the wrong number of parameters, or modes that do not converge.
        """
        psi = self._params(params)[None, :]
        layout = self.layout
        _, _, st = loglik_and_grad(
            layout, np.zeros(1, dtype=int), psi, np.zeros((layout.n_groups, 1)), 1, grad=False
        )
        if not st.converged.all():
            raise ModelError("conditional modes did not converge at these parameters")
        sigma = float(psi[0, -1])
        mu = st.mu[:, 0]
        weight = np.bincount(layout.gid, weights=layout.m[:, 0] * mu * (1.0 - mu))
        condsd = sigma / np.sqrt(1.0 + sigma**2 * weight)
        codes = np.unique(np.asarray(self.design.groups))[self._layout_codes]
        labels = self.design.group_labels
        grp = labels[codes] if labels is not None else codes
        return pd.DataFrame(
            {
                "grpvar": self.design.group,
                "term": "(Intercept)",
                "grp": grp,
                "condval": sigma * st.u[:, 0],
                "condsd": condsd,
            }
        )

    def loglik(self, params: Sequence[float] | np.ndarray, *, marginal: bool = False) -> float:
        """Log-likelihood at ``params`` (fixed effects then σ), on lme4's scale.

        Parameters
        ----------
        params : array-like
            The fixed effects then σ.
        marginal : bool
            Give the approximation of the log-likelihood itself rather than lme4's
            ``logLik`` (they differ only for ``nagq > 1`` with binomial counts).

        Returns
        -------
        float
            The log-likelihood.

        Raises
        ------
        ModelError
            For the wrong number of parameters, or conditional modes that do not
            converge.
        """
        psi = self._params(params)[None, :]
        value, _, st = loglik_and_grad(
            self.layout,
            np.zeros(1, dtype=int),
            psi,
            np.zeros((self.layout.n_groups, 1)),
            self.nagq,
            grad=False,
        )
        if not st.converged.all():
            raise ModelError("conditional modes did not converge at these parameters")
        return self._scale(float(value[0]), marginal)

    def _evaluate(self, psi: np.ndarray, u: np.ndarray):
        val, grad, hess, u = evaluate_hessian(
            self.layout, np.zeros(1, dtype=int), psi[None], u, self.nagq
        )
        return float(val[0]), grad[0], hess[0], u

    def maximise(
        self,
        fixed: Mapping[int, float] | None = None,
        start: Sequence[float] | np.ndarray | None = None,
        *,
        warm: Maximum | None = None,
        tol: float = NEWTON_TOL,
        maxiter: int = NEWTON_MAXITER,
    ) -> Maximum:
        """Maximise the log-likelihood over all parameters but the ``fixed`` ones.

        A modified Newton iteration with the exact gradient and Hessian (finite
        differences of the exact gradient for ``nagq > 1``) and a backtracking line
        search.

        Parameters
        ----------
        fixed : mapping of int to float, optional
            Parameter index (in :attr:`param_names`) → value held fixed.
        start : array-like, optional
            Starting values of all parameters (default: logistic regression and σ = 1,
            as lme4); the fixed ones are replaced by their values.
        warm : Maximum, optional
            A nearby maximum whose conditional modes start the inner iterations.
        tol : float
            Bound on the Newton decrement (≈ twice the log-likelihood still to gain).
        maxiter : int
            Most Newton iterations.

        Returns
        -------
        Maximum
            Parameters, log-likelihood (lme4's scale), Hessian over all parameters and
            the conditional modes (``state``). With nothing fixed σ is reported ≥ 0.

        Raises
        ------
        ModelError
            When the log-likelihood cannot be evaluated at the start, the line search
            fails or ``maxiter`` is reached.
        """
        P = len(self.param_names)
        if start is None:
            psi = np.r_[glm_irls(self.layout)[0], THETA_START]
        else:
            psi = self._params(start).copy()
        free = np.ones(P, dtype=bool)
        for k, value in (fixed or {}).items():
            if not 0 <= int(k) < P:
                raise ModelError(f"fixed parameter index {k} is outside 0..{P - 1}")
            psi[int(k)] = float(value)
            free[int(k)] = False
        u0 = np.zeros((self.layout.n_groups, 1)) if warm is None else warm.state
        if free[-1] and abs(psi[-1]) < THETA_KICK:
            psi[-1] = THETA_KICK
        val, grad, hess, u = self._evaluate(psi, u0)
        if not (np.isfinite(val) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))):
            raise ModelError("the log-likelihood is not finite at the starting values")
        for _ in range(maxiter):
            if not free.any():
                break
            step, dec = newton_direction(grad[free][None], hess[np.ix_(free, free)][None])
            if dec[0] < tol:
                break
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
                    raise ModelError("the line search could not increase the log-likelihood")
        else:
            raise ModelError(f"no convergence within {maxiter} Newton iterations")
        if fixed is None and psi[-1] < 0:  # the likelihood is even in θ, the modes odd
            psi, u = psi.copy(), -u
            psi[-1] = -psi[-1]
        return Maximum(psi, self._scale(val, False), hess, u)

    def fit(
        self,
        *,
        start: np.ndarray | Sequence[float] | FitResult | None = None,
        tol: float = 1e-10,
        maxiter: int = 100,
    ) -> FitResult:
        """Fit the model by maximum likelihood.

        Parameters
        ----------
        start : array-like or FitResult, optional
            The fixed effects then σ (default: logistic regression and σ = 1, as lme4).
        tol : float
            Bound on the Newton decrement (twice the log-likelihood still to gain) at
            convergence.
        maxiter : int
            Most Newton iterations of each stage (Laplace, then quadrature).

        Returns
        -------
        FitResult
            With ``details`` a :class:`NativeDetails` and ``model`` this object.

        Raises
        ------
        ModelError
            For a grouping factor with a single level, or a bad ``start``.
        """
        design = self.design
        if self.n_groups == 1:
            raise ModelError(
                f"the grouping factor '{design.group}' has a single level: a random "
                "intercept needs at least two groups (lme4 refuses this too)"
            )
        names = list(design.names)
        p = len(names)
        psi_start = _start_vector(start, p, names)
        layout = self.layout
        core = fit_core(layout, self.nagq, psi_start, tol, maxiter)
        loglik = float(lme4_loglik(core.value, self._logc, self._sat, self.nagq)[0])

        beta = core.psi[0, :p]
        sigma = float(core.psi[0, p])
        vcov = core.vcov[0]
        singular = sigma < SINGULAR_TOL
        # notes on the data (single-observation groups) go into the summary once, as
        # lme4 says nothing about them: not a Python warning on every fit
        fit_warnings = list(self.notes)
        if singular:
            fit_warnings.append(
                f"boundary (singular) fit: the random-intercept SD of '{design.group}' is "
                f"estimated at {sigma:.2g} (< {SINGULAR_TOL:g}, lme4's isSingular tolerance); "
                "the model reduces to ordinary logistic regression"
            )
        if not core.converged[0]:
            fit_warnings.append(f"model did not converge: {core.message[0]}")
        bse = np.sqrt(np.clip(np.diag(vcov), 0.0, None))
        sep: list[str] = []
        if (
            (not core.converged[0])
            or np.any(np.abs(beta) > SEPARATION_BETA)
            or np.any(~np.isfinite(bse) | (bse > SEPARATION_SE))
        ):
            sep = separated_terms(layout.X, layout.y[:, 0], layout.m[:, 0], names)
            if sep:
                shown = ", ".join(
                    f"'{t}' (estimate {beta[names.index(t)]:.3g}, SE {bse[names.index(t)]:.3g})"
                    for t in sep
                )
                fit_warnings.append(
                    "complete or quasi-complete separation: the outcome is perfectly "
                    f"predicted along {shown}; these estimates are not finite and their "
                    "Wald tests are meaningless"
                )

        grad = core.grad[0]
        return FitResult(
            engine=ENGINE,
            formula=design.formula,
            params=pd.Series(beta, index=names, name="estimate"),
            vcov=pd.DataFrame(vcov, index=names, columns=names),
            n_obs=self.n_obs,
            loglik=loglik,
            n_groups=self.n_groups,
            group=design.group,
            varcomps=random_intercept(design.group, sigma),
            nagq=self.nagq,
            convergence=Convergence(
                converged=bool(core.converged[0]),
                message=core.message[0],
                iterations=int(core.n_iter[0]),
                max_abs_gradient=(
                    float(np.max(np.abs(grad))) if np.all(np.isfinite(grad)) else math.inf
                ),
                singular=bool(singular),
                separated_terms=tuple(sep),
            ),
            ledger=design.ledger.copy(),
            warnings=tuple(fit_warnings),
            n_events=self.n_events,
            details=NativeDetails(
                theta_se=float(core.theta_se[0]),
                loglik_marginal=float(core.value[0] + self._logc),
                hessian=core.hess[0],
                gradient=grad,
            ),
            model=self,
        )
