"""Maximum-likelihood random-intercept logistic GLMM: Laplace and adaptive quadrature.

The numpy/scipy counterpart of lme4's ``glmer(y ~ x + (1 | g), family = binomial,
nAGQ = k)``, built the way lme4 is built: model matrices (``Design``) → conditional
modes by penalised Newton for all groups at once → the Laplace (``nagq = 1``) or
adaptive Gauss–Hermite (``nagq > 1``) marginal likelihood → joint maximisation over
``(β, θ)`` → standard errors from the Hessian over ``(β, θ)`` at the optimum, as
lme4's ``vcov()`` does (``use.hessian = TRUE``).

Conventions copied from lme4 1.1 so numbers can be compared digit by digit:

* θ is the random-intercept SD (``σ = θ ≥ 0``); ``singular`` is lme4's
  ``isSingular``: θ < 1e-4.
* ``loglik`` is ``logLik(fit)``. With ``nagq = 1`` it is the Laplace approximation of
  the log-likelihood including the log binomial coefficients. With ``nagq > 1`` lme4
  reports the quadrature approximation *minus the saturated model's log-likelihood*
  (its AGQ deviance is built from deviance residuals); this is identical for 0/1
  responses but not for binomial counts, and ``loglik`` follows lme4 there too. The
  approximation of the log-likelihood itself is ``fit.details.loglik_marginal``.
* The conditional modes are solved to 1e-10, where lme4 stops its PIRLS when the
  penalised deviance changes by less than ``tolPwrss = 1e-7`` (relative). Its Laplace
  log-likelihood, estimates and finite-difference standard errors therefore carry
  errors of that order (on lme4's ``cbpp`` example: 3e-4 in logLik, 6e-4 in the fixed
  effects, 1% in one SE); with ``glmerControl(tolPwrss = 1e-12)`` lme4 agrees with
  this engine to about 1e-5 (``tests/test_native_vs_lme4.py``).

:func:`fit_many` fits many response vectors (power-simulation replicates) in one
vectorised computation and returns a :class:`ManyFit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from syndesmo.checks import check_nagq
from syndesmo.engines.native.core import constants, fit_core, lme4_loglik
from syndesmo.engines.native.layout import compress_shared, compress_stacked, n_patterns
from syndesmo.engines.native.model import (
    MAX_NAGQ,
    SEPARATION_BETA,
    SINGULAR_TOL,
    NativeDetails,
    NativeModel,
)
from syndesmo.engines.native.multilevel.model import fit_structured
from syndesmo.engines.native.quadrature import columns
from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.registry import name_for
from syndesmo.fitting.results import Convergence, FitResult, random_intercept

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_native")


def fit_native(
    design: Design,
    *,
    nagq: int | None = None,
    start: np.ndarray | list[float] | FitResult | None = None,
    tol: float = 1e-10,
    maxiter: int = 100,
    offset: np.ndarray | None = None,
) -> FitResult:
    """Fit a binomial-logit GLMM with one random intercept by maximum likelihood.

    Builds a :class:`~syndesmo.engines.native.model.NativeModel` (the design checked
    and compressed once) and fits it; the result keeps the model as ``fit.model``.

    ``nagq = 1`` (or ``None``) is the Laplace approximation. ``offset`` defaults to
    ``design.offset`` (the formula's ``offset()`` terms and ``offset=`` of ``sy.fit``).

    Parameters
    ----------
    design : Design
        Model matrices with a grouping factor.
    nagq : int
        1 for the Laplace approximation, ``k > 1`` for adaptive Gauss–Hermite
        quadrature with ``k`` nodes (lme4's ``nAGQ``, up to 25).
    start : array-like or FitResult, optional
        The fixed effects then σ (default: logistic regression and σ = 1, as lme4).
    tol : float
        Bound on the Newton decrement (twice the log-likelihood still to gain) at
        convergence.
    maxiter : int
        Most Newton iterations of each stage (Laplace, then quadrature).
    offset : array-like, optional
        One number per row of the design: a known term added to the linear predictor,
        as lme4's ``offset=``.

    Returns
    -------
    FitResult
        ``details`` is a :class:`~syndesmo.engines.native.model.NativeDetails`: SE of σ
        from the same Hessian (NaN at σ = 0), the marginal log-likelihood (see the
        module docstring), and the Hessian and gradient over (fixed effects, σ) at the
        estimates. ``convergence`` holds the Newton iterations and max |gradient|.

    Raises
    ------
    ModelError
        For an unusable design, option or start, naming the problem.
    """
    if design.random is not None:  # nested, slopes, several bars
        return fit_structured(
            design, nagq=nagq, start=start, tol=tol, maxiter=max(maxiter, 200), offset=offset
        )
    model = NativeModel(design, nagq, offset=offset)
    return model.fit(start=start, tol=tol, maxiter=maxiter)


def loglik_at(
    design: Design,
    params,
    sigma: float,
    nagq: int = 1,
    *,
    marginal: bool = False,
    offset: np.ndarray | None = None,
) -> float:
    """Log-likelihood of ``design`` at given fixed effects and σ.

    The function :func:`fit_native` maximises, on lme4's scale (``logLik``), so
    estimates from another program (lme4) can be compared on it.

    Parameters
    ----------
    design : Design
        Model matrices with a grouping factor.
    params : array-like
        The fixed effects.
    sigma : float
        The random-intercept SD.
    nagq : int
        Quadrature points, as in :func:`fit_native`.
    marginal : bool
        Give the approximation of the log-likelihood itself (differs from lme4's
        scale only for ``nagq > 1`` with binomial counts, see the module docstring).
    offset : array-like, optional
        As in :func:`fit_native`.

    Returns
    -------
    float
        The log-likelihood.
    """
    model = NativeModel(design, nagq, offset=offset)
    psi = np.r_[np.asarray(params, dtype=float).reshape(-1), float(sigma)]
    return model.loglik(psi, marginal=marginal)


# ---------------------------------------------------------------------------
# Many replicates: fit_many
# ---------------------------------------------------------------------------


@dataclass
class ManyFit:
    """Fits of many replicates of one model; arrays have one row per replicate."""

    params: np.ndarray  # (R, p)
    bse: np.ndarray  # (R, p)
    vcov: np.ndarray  # (R, p, p)
    sigma: np.ndarray  # (R,)
    loglik: np.ndarray  # (R,)
    converged: np.ndarray  # (R,)
    singular: np.ndarray  # (R,)
    n_obs: np.ndarray  # (R,)
    n_events: np.ndarray  # (R,)
    n_groups: np.ndarray  # (R,)
    names: list[str]
    nagq: int = 1
    theta_se: np.ndarray | None = None
    messages: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def tvalues(self) -> np.ndarray:
        return self.params / self.bse

    def pvalues(self) -> np.ndarray:
        """Two-sided Wald p-values, (R, p)."""
        from scipy import stats  # lazy: not loaded by power runs

        return 2.0 * stats.norm.sf(np.abs(self.tvalues))

    def conf_int(self, level: float = 0.95) -> np.ndarray:
        """Wald intervals, (R, p, 2) with lower and upper bounds on the link scale."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"confidence level must be between 0 and 1, got {level}")
        from scipy import stats  # lazy: not loaded by power runs

        z = stats.norm.ppf(0.5 + level / 2.0)
        return np.stack([self.params - z * self.bse, self.params + z * self.bse], axis=-1)

    def result(self, i: int, formula: str = "", group: str | None = None) -> FitResult:
        """Replicate ``i`` as a :class:`FitResult`."""
        warn = []
        if self.singular[i]:
            warn.append("boundary (singular) fit: random-intercept SD estimated at 0")
        if not self.converged[i]:
            warn.append(f"model did not converge: {self.messages[i]}")
        return FitResult(
            engine=ENGINE,
            formula=formula,
            params=pd.Series(self.params[i], index=self.names, name="estimate"),
            vcov=pd.DataFrame(self.vcov[i], index=self.names, columns=self.names),
            n_obs=int(self.n_obs[i]),
            loglik=float(self.loglik[i]),
            n_groups=int(self.n_groups[i]),
            group=group,
            varcomps=random_intercept(group or "group", float(self.sigma[i])),
            nagq=self.nagq,
            convergence=Convergence(
                converged=bool(self.converged[i]),
                message=self.messages[i] if self.messages else "",
                singular=bool(self.singular[i]),
            ),
            warnings=tuple(warn),
            n_events=int(self.n_events[i]),
            details=NativeDetails(
                theta_se=math.nan if self.theta_se is None else float(self.theta_se[i])
            ),
        )


def _many_inputs(X, Y, groups, trials, mask):
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[None, :]
    if Y.ndim != 2:
        raise ModelError(f"Y must be (replicates, rows), got shape {Y.shape}")
    R, n = Y.shape
    X = np.asarray(X, dtype=float)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3 or X.shape[1] != n or X.shape[0] not in (1, R):
        raise ModelError(f"X must be ({n}, p) or ({R}, {n}, p), got shape {X.shape}")
    groups = np.asarray(groups)
    if groups.shape != (n,) or groups.dtype.kind not in "iu":
        raise ModelError(f"groups must be {n} integer codes, got shape {groups.shape}")
    m = np.ones((R, n)) if trials is None else np.broadcast_to(np.asarray(trials, float), (R, n))
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), (R, n))
        m = np.where(mask, m, 0.0)
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y[m > 0]))):
        raise ModelError("X and Y must be finite on the rows in the analysis")
    if mask is None and np.any((Y < 0) | (Y > m) | (Y != np.round(Y))):
        raise ModelError("Y must count successes between 0 and trials (0/1 when binary)")
    Y = np.where(m > 0, Y, 0.0)
    if np.any((Y < 0) | (Y > m) | (Y != np.round(Y))):
        raise ModelError("Y must count successes between 0 and trials (0/1 when binary)")
    return X, Y, np.ascontiguousarray(m), groups


def fit_many(
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray,
    *,
    trials: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    nagq: int = 1,
    names: list[str] | None = None,
    tol: float = 1e-10,
    maxiter: int = 100,
    chunk: int | None = None,
) -> ManyFit:
    """Fit the random-intercept GLMM to many response vectors at once.

    ``X`` is one design ``(n, p)`` shared by all replicates or one per replicate
    ``(R, n, p)``; ``Y`` is ``(R, n)``; ``groups`` ``(n,)`` integer codes; ``trials``
    ``(n,)`` or ``(R, n)`` (default 1); ``mask`` ``(R, n)`` marks the rows in the
    analysis of each replicate (others contribute nothing). Replicates are processed
    ``chunk`` at a time (default: sized so arrays stay around a megabyte); within a
    chunk the modes of all groups of all replicates and the Newton iterations over
    ``(β, θ)`` run together.
    Results equal :func:`fit_native` replicate by replicate. A replicate that cannot
    be fitted (no events, no non-events, a rank-deficient design) gets NaN estimates,
    ``converged = False`` and a message.
    """
    nagq = check_nagq(nagq, MAX_NAGQ)
    X, Y, M, groups = _many_inputs(X, Y, groups, trials, mask)
    R = Y.shape[0]
    p = X.shape[2]
    names = list(names) if names is not None else [f"x{j}" for j in range(p)]
    if len(names) != p:
        raise ModelError(f"{p} columns in X but {len(names)} names")

    logc, sat = constants(Y, M)
    n_obs = (M > 0).sum(axis=1)
    n_events = Y.sum(axis=1)
    G = int(groups.max()) + 1
    member = sp.csr_matrix(
        (np.ones(groups.size), (np.arange(groups.size), groups)), (groups.size, G)
    )
    n_groups = (np.asarray((M > 0).astype(float) @ member) > 0).sum(axis=1)  # groups in use

    out = {
        "params": np.full((R, p), np.nan),
        "vcov": np.full((R, p, p), np.nan),
        "sigma": np.full(R, np.nan),
        "loglik": np.full(R, np.nan),
        "converged": np.zeros(R, dtype=bool),
        "theta_se": np.full(R, np.nan),
    }
    messages = [""] * R
    fittable = _fittable(X, Y, M, messages)
    idx_all = np.flatnonzero(fittable)

    if chunk is None:
        chunk = _default_chunk(X, Y, M, groups, nagq)
    for lo in range(0, idx_all.size, chunk):
        idx = idx_all[lo : lo + chunk]
        take = columns(idx)  # a slice (no copies) when the replicates are a run
        if X.shape[0] == 1:
            layout, _ = compress_shared(X[0], Y[take], M[take], groups)
        else:
            layout, _ = compress_stacked(X[take], Y[take], M[take], groups)
        core = fit_core(layout, nagq, None, tol, maxiter)
        out["params"][idx] = core.psi[:, :p]
        out["sigma"][idx] = core.psi[:, p]
        out["vcov"][idx] = core.vcov
        out["theta_se"][idx] = core.theta_se
        out["loglik"][idx] = lme4_loglik(core.value, logc[idx], sat[idx], nagq)
        out["converged"][idx] = core.converged
        beyond = np.max(np.abs(core.psi[:, :p]), axis=1) > SEPARATION_BETA
        for k, i in enumerate(idx):
            messages[i] = core.message[k]
            if beyond[k]:
                messages[i] += (
                    f"; an estimate exceeds {SEPARATION_BETA:g} in absolute value "
                    "(possible separation)"
                )

    bse = np.sqrt(np.clip(np.diagonal(out["vcov"], axis1=1, axis2=2), 0.0, None))
    bse[~np.isfinite(out["params"])] = np.nan
    return ManyFit(
        params=out["params"],
        bse=bse,
        vcov=out["vcov"],
        sigma=out["sigma"],
        loglik=out["loglik"],
        converged=out["converged"],
        singular=out["sigma"] < SINGULAR_TOL,
        n_obs=n_obs,
        n_events=n_events.round().astype(int),
        n_groups=n_groups,
        names=names,
        nagq=nagq,
        theta_se=out["theta_se"],
        messages=messages,
    )


CHUNK_ELEMENTS = 100_000  # rows × batch elements per array in fit_many


def _default_chunk(
    X: np.ndarray, Y: np.ndarray, M: np.ndarray, groups: np.ndarray, nagq: int
) -> int:
    """Replicates per chunk so that the Newton batch arrays hold ~CHUNK_ELEMENTS numbers."""
    x0 = X[0] if X.shape[0] == 1 else X[0][M[0] > 0]
    g0 = groups if X.shape[0] == 1 else groups[M[0] > 0]
    rows = max(1, n_patterns(g0, x0))
    per_rep = rows * (X.shape[2] + 2) * (1 if nagq == 1 else 2)
    return int(np.clip(CHUNK_ELEMENTS // per_rep, 1, 512))


def _fittable(X: np.ndarray, Y: np.ndarray, M: np.ndarray, messages: list[str]) -> np.ndarray:
    """Replicates with events, non-events and a full-rank design on their rows."""
    R = Y.shape[0]
    ev = Y.sum(axis=1)
    tot = M.sum(axis=1)
    ok = (ev > 0) & (ev < tot)
    used = (M > 0).astype(float)
    if X.shape[0] == 1:
        gram = np.einsum(
            "rn,nk->rk", used, (X[0][:, :, None] * X[0][:, None, :]).reshape(X.shape[1], -1)
        )
        gram = gram.reshape(R, X.shape[2], X.shape[2])
    else:
        gram = np.matmul(np.swapaxes(X, 1, 2) * used[:, None, :], X)
    eig = np.linalg.eigvalsh(gram)
    full = eig[:, 0] > 1e-10 * np.maximum(eig[:, -1], 1e-300)
    for i in range(R):
        if ev[i] == 0:
            messages[i] = "not fitted: outcome has no events"
        elif ev[i] >= tot[i]:
            messages[i] = "not fitted: outcome has no non-events"
        elif not full[i]:
            messages[i] = "not fitted: design matrix is rank deficient on this replicate's rows"
    return ok & full
