"""Maximum likelihood for logistic GLMMs with nested, correlated and crossed random effects.

Entry point :func:`fit_multilevel` (model matrices + a :class:`ReStructure` in, a plain
:class:`MultilevelFit` out) and :func:`loglik_multilevel` (the log-likelihood at given
parameters, on the same scale). The steps:

1. rows sorted along the nesting tree, identical rows of a finest-level node merged into
   one binomial row (exact: the binomial coefficients are added back from the
   original rows);
2. start: logistic regression for β (R's ``glm``), lme4's θ (1 on the diagonals);
3. quasi-Newton (BFGS from the finite-difference Hessian of the gradient) over
   ``(β, θ)``, the diagonal of every ``Λ`` bounded below by 0 as in lme4, verified by
   Newton steps on the recomputed Hessian until the Newton decrement is below ``tol``;
4. standard errors of β from that Hessian over ``(β, θ)``, as lme4's ``vcov()`` with
   ``use.hessian = TRUE``.

The Laplace gradient is exact (see ``laplace.py``). Adaptive quadrature (``nagq > 1``,
``agq.py``) differentiates its value numerically (central differences).

``loglik`` is the approximation of the marginal log-likelihood including the log
binomial coefficients, for every ``nagq`` — so fits at different ``nagq`` compare
directly (lme4 subtracts the saturated log-likelihood for ``nAGQ > 1``; for 0/1
responses the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.engines.native.core import constants
from syndesmo.engines.native.multilevel.laplace import Data, evaluate
from syndesmo.engines.native.multilevel.tree import build_tree, selected_inverse
from syndesmo.engines.native.quadrature import logistic
from syndesmo.errors import ModelError
from syndesmo.fitting.diagnostics import distinct_rows
from syndesmo.fitting.random_effects import ReStructure

SINGULAR_TOL = 1e-4  # lme4::isSingular(tol = 1e-4) on the diagonal of Λ
MAX_NAGQ = 25
SNAP_TOL = 1e-5  # |diagonal θ| below this at convergence: try the boundary θ = 0
FD_STEP = 1e-5  # central differences of the gradient (Hessian) / of the value (AGQ gradient)
# BFGS steps between Hessians recomputed (by forward differences of the exact gradient)
# to steer the ascent while the Newton decrement is above REFRESH_ABOVE: from lme4's
# start θ = 1 the quasi-Newton model alone needed about 40 steps on the two-reader
# power design, where the decrement lingers at 1e-1–1e-4, and 18 with the refresh.
# Nearer the optimum BFGS converges fast (decrements below 1e-7 by the 8th step on
# guImmun and the reader panel), and a refresh would only cost.
REFRESH_EVERY = 8
REFRESH_ABOVE = 1e-5
# The first trial of a step is at most STEP_GROWTH times as long (Euclidean, in ψ) as
# the last accepted step, or STEP_FLOOR: a trust radius that grows geometrically. A
# Hessian recomputed in a region where the log-likelihood is not concave (as after
# the quasi-Newton steps from θ = 1 on the two-reader power design, where the VU SD
# walks to ~25) gives a modified Newton step many times longer than the steps before
# it; halving it back cost about six evaluations per fit there, each with modes far
# from their warm start. With the cap: a fifth fewer Newton passes over the rows.
STEP_GROWTH = 2.0
STEP_FLOOR = 1.0
FD_STEP_VALUE_HESSIAN = 1e-4  # second differences of the value (AGQ Hessian)
BATCH_ELEMENTS = 2_000_000  # rows × points per batched evaluation of the Hessian


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass
class MultilevelFit:
    """A fitted multilevel logistic model (plain arrays; no pandas objects).

    ``varcorr`` holds lme4's ``as.data.frame(VarCorr(m))`` rows ``(grp, var1, var2,
    vcov, sdcor)``; ``hessian`` and ``gradient`` are over ``(β, θ)``; ``ranef`` maps a
    term name to ``(levels, condval (G, q), condsd (G, q))`` (conditional modes and
    SDs, lme4's ``ranef(m, condVar = TRUE)``).
    """

    names: list[str]
    params: np.ndarray
    vcov: np.ndarray
    theta: np.ndarray
    theta_names: list[str]
    theta_se: np.ndarray
    varcorr: list[tuple[str, str, str | None, float, float]]
    loglik: float
    nagq: int
    n_obs: int
    n_groups: dict[str, int]
    converged: bool
    message: str
    singular: bool
    singular_terms: list[str]
    gradient: np.ndarray
    hessian: np.ndarray
    n_iter: int
    n_eval: int
    structure: ReStructure = field(repr=False)
    ranef: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    convergence: dict[str, float] = field(default_factory=dict)

    @property
    def bse(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.vcov), 0.0, None))

    def varcorr_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.varcorr, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def sd(self) -> dict[tuple[str, str], float]:
        """Random-effect SDs by (group, column)."""
        return {(g, v1): sc for g, v1, v2, _, sc in self.varcorr if v2 is None}


# --------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------


def _merge_rows(
    X: np.ndarray,
    y: np.ndarray,
    m: np.ndarray,
    offset: np.ndarray | None,
    structure: ReStructure,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, ReStructure]:
    """Merge rows that share every node, every covariate and the offset."""
    cols = [structure.factors[f].codes.astype(float) for f in structure.chain]
    cols += [structure.factors[f].codes.astype(float) for f in structure.crossed]
    cols += [X] + [t.Z for t in structure.terms]
    if offset is not None:
        cols.append(offset)
    first, group = distinct_rows(np.column_stack(cols))
    if len(first) == len(y):
        return X, y, m, offset, structure
    ym = np.bincount(group, y)
    mm = np.bincount(group, m)
    off = None if offset is None else offset[first]
    return X[first], ym, mm, off, structure.take(first)


def prepare(
    X: np.ndarray,
    y: np.ndarray,
    m: np.ndarray,
    structure: ReStructure,
    offset: np.ndarray | None = None,
    merge: bool = True,
) -> Data:
    """Sorted (and merged) rows and the tree of ``structure``."""
    if merge:
        X, y, m, offset, structure = _merge_rows(X, y, m, offset, structure)
    tree = build_tree(structure)
    o = tree.order
    return Data(
        X=np.ascontiguousarray(X[o]),
        y=y[o].astype(float),
        m=m[o].astype(float),
        offset=None if offset is None else offset[o].astype(float),
        tree=tree,
        n_theta=structure.n_theta,
    )


def glm_start(X: np.ndarray, y: np.ndarray, m: np.ndarray, offset=None) -> np.ndarray:
    """Logistic regression by IRLS (R's ``glm``): lme4's start for β.

    Rows with the same covariates and offset are fitted as one binomial row (the same
    likelihood, so the same estimates; a design of a few binary covariates has a few
    such rows), by :func:`glm_start_many` for this one study.
    """
    keys = np.column_stack([X, np.zeros(len(y)) if offset is None else offset])
    first, row = distinct_rows(keys)
    y = np.bincount(row, weights=y, minlength=len(first))
    m = np.bincount(row, weights=m, minlength=len(first))
    off = None if offset is None else offset[first]
    return glm_start_many(X[first], y[None], m[None], off)[0]


def glm_start_many(
    X: np.ndarray, y: np.ndarray, m: np.ndarray, offset: np.ndarray | None = None
) -> np.ndarray:
    """Logistic regression by IRLS for many studies whose rows are among the same
    distinct rows, every study's steps at once.

    ``X`` ``(G, p)`` the distinct rows (and ``offset`` ``(G,)`` theirs), ``y`` and
    ``m`` ``(R, G)`` each study's successes and trials on them (``m = 0``: the row is
    not in the study). Returns ``(R, p)``.
    """
    R = y.shape[0]
    p = X.shape[1]
    off = 0.0 if offset is None else offset
    mu = np.where(m > 0, (y + 0.5) / (m + 1.0), 0.5)
    eta = np.log(mu / (1.0 - mu))
    beta = np.zeros((R, p))
    ridge = 1e-12 * np.eye(p)
    active = np.arange(R)
    for _ in range(50):
        ya, ma, mua = y[active], m[active], mu[active]
        w = ma * mua * (1.0 - mua)
        z = eta[active] - off + (ya - ma * mua) / np.maximum(w, 1e-300)
        xtw = X.T[None, :, :] * w[:, None, :]
        new = np.linalg.solve(xtw @ X + ridge, (xtw @ z[..., None]))[..., 0]
        change = np.max(np.abs(new - beta[active]), axis=1)
        done = change < 1e-12 * (1.0 + np.max(np.abs(new), axis=1))
        beta[active] = new
        eta[active] = new @ X.T + off
        mu[active] = logistic(eta[active], with_softplus=False)[0]
        active = active[~done]
        if active.size == 0:
            break
    return beta


# --------------------------------------------------------------------------------------
# Objective: value, gradient, Hessian, with warm-started modes
# --------------------------------------------------------------------------------------


class Objective:
    """The approximate log-likelihood of one model as a function of ``ψ = (β, θ)``."""

    def __init__(self, data: Data, nagq: int) -> None:
        from syndesmo.engines.native.multilevel.agq import scalar_tree

        self.data = data
        self.nagq = nagq
        # exact gradient: Laplace always, quadrature with one random effect per level
        self.exact = nagq == 1 or scalar_tree(data)
        # forward differences of the exact gradient for the Hessian where evaluations
        # are costly (quadrature); central differences for Laplace
        self.forward = nagq > 1
        self.u: list[np.ndarray] | None = None  # modes at the last accepted point
        self.n_eval = 0

    def _warm(self, B: int) -> list[np.ndarray] | None:
        if self.u is None:
            return None
        return [np.repeat(x[:, :1], B, axis=1) for x in self.u]

    def values(self, psi: np.ndarray) -> np.ndarray:
        """Values at a batch of points ``(B, P)``."""
        self.n_eval += psi.shape[0]
        if self.nagq == 1:
            val, _, _ = evaluate(self.data, psi, self._warm(psi.shape[0]), gradient=False)
            return val
        from syndesmo.engines.native.multilevel.agq import agq_value

        return agq_value(self.data, psi, self.nagq, self._warm(psi.shape[0]))

    def _grads(self, pts: np.ndarray) -> np.ndarray:
        """Exact gradients at a batch of points, in chunks of about BATCH_ELEMENTS."""
        B = pts.shape[0]
        self.n_eval += B
        step = max(1, BATCH_ELEMENTS // max(1, self.data.X.shape[0]))
        grads = np.empty_like(pts)
        for lo in range(0, B, step):
            sl = slice(lo, min(B, lo + step))
            warm = self._warm(sl.stop - sl.start)
            if self.nagq == 1:
                _, grads[sl], _ = evaluate(self.data, pts[sl], warm)
            else:
                from syndesmo.engines.native.multilevel.agq import agq_value_grad

                grads[sl] = agq_value_grad(self.data, pts[sl], self.nagq, warm)[1]
        return grads

    def value_grad(self, psi: np.ndarray, keep: bool = True) -> tuple[float, np.ndarray]:
        psi = np.asarray(psi, dtype=float)
        if self.nagq == 1:
            self.n_eval += 1
            val, grad, st = evaluate(self.data, psi[None], self._warm(1))
            if keep and np.isfinite(val[0]):
                self.u = st.u
            return float(val[0]), grad[0]
        if self.exact:
            from syndesmo.engines.native.multilevel.agq import agq_value_grad

            self.n_eval += 1
            val, grad = agq_value_grad(self.data, psi[None], self.nagq, self._warm(1))
            if keep and np.isfinite(val[0]):
                _, _, st = evaluate(self.data, psi[None], self._warm(1), gradient=False)
                self.u = st.u
            return float(val[0]), grad[0]
        P = psi.size
        h = FD_STEP * np.maximum(1.0, np.abs(psi))
        pts = np.concatenate([psi[None], psi + np.diag(h), psi - np.diag(h)])
        vals = self.values(pts)
        grad = (vals[1 : P + 1] - vals[P + 1 :]) / (2.0 * h)
        if keep and np.isfinite(vals[0]):
            _, _, st = evaluate(self.data, psi[None], self._warm(1), gradient=False)
            self.u = st.u
        return float(vals[0]), grad

    def hessian(
        self, psi: np.ndarray, grad: np.ndarray | None = None, forward: bool | None = None
    ) -> np.ndarray:
        """Hessian over ``ψ``: central differences of the exact gradient (Laplace, and
        quadrature with one random effect per level) or second differences of the value
        (quadrature with vector random effects). ``forward`` (default: the objective's
        own choice) asks for forward differences from ``grad``, half the evaluations."""
        P = psi.size
        forward = self.forward if forward is None else forward
        if self.exact:
            h = FD_STEP * np.maximum(1.0, np.abs(psi))
            if grad is not None and forward:
                # forward differences of the exact gradient: P evaluations, relative
                # error ~ h (1e-5) in the Hessian and the standard errors
                H = (self._grads(psi + np.diag(h)) - grad) / h[:, None]
            else:
                grads = self._grads(np.concatenate([psi + np.diag(h), psi - np.diag(h)]))
                H = (grads[:P] - grads[P:]) / (2.0 * h[:, None])
            return 0.5 * (H + H.T)
        h = FD_STEP_VALUE_HESSIAN * np.maximum(1.0, np.abs(psi))
        pts = [psi]
        idx = {}
        for i in range(P):
            for si in (1, -1):
                idx[(i, si)] = len(pts)
                pts.append(psi + si * h[i] * np.eye(P)[i])
        for i in range(P):
            for j in range(i + 1, P):
                for si in (1, -1):
                    for sj in (1, -1):
                        idx[(i, si, j, sj)] = len(pts)
                        pts.append(psi + si * h[i] * np.eye(P)[i] + sj * h[j] * np.eye(P)[j])
        f = self.values(np.array(pts))
        H = np.zeros((P, P))
        for i in range(P):
            H[i, i] = (f[idx[(i, 1)]] - 2 * f[0] + f[idx[(i, -1)]]) / h[i] ** 2
            for j in range(i + 1, P):
                s = (
                    f[idx[(i, 1, j, 1)]]
                    - f[idx[(i, 1, j, -1)]]
                    - f[idx[(i, -1, j, 1)]]
                    + f[idx[(i, -1, j, -1)]]
                )
                H[i, j] = H[j, i] = s / (4.0 * h[i] * h[j])
        return H


# --------------------------------------------------------------------------------------
# Maximisation
# --------------------------------------------------------------------------------------


def _positive(info: np.ndarray) -> np.ndarray:
    """``info`` with its eigenvalues replaced by their absolute values (floored)."""
    lam, V = np.linalg.eigh(0.5 * (info + info.T))
    floor = 1e-8 * max(float(np.max(np.abs(lam))), 1e-300) + 1e-12
    return (V * np.maximum(np.abs(lam), floor)) @ V.T


def _ascent_step(grad: np.ndarray, info: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Newton ascent step ``info⁻¹ grad`` on the free coordinates."""
    step = np.zeros_like(grad)
    if free.any():
        step[free] = np.linalg.solve(info[np.ix_(free, free)], grad[free])
    return step


def _bfgs(info: np.ndarray, s: np.ndarray, yv: np.ndarray) -> np.ndarray:
    """BFGS update of the negative Hessian (skipped unless the curvature sᵀy is positive)."""
    sy = float(s @ yv)
    Ns = info @ s
    sNs = float(s @ Ns)
    if sy <= 1e-12 * np.linalg.norm(s) * np.linalg.norm(yv) or sNs <= 0:
        return info
    return info - np.outer(Ns, Ns) / sNs + np.outer(yv, yv) / sy


def _snap_candidates(psi: np.ndarray, diag: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    return diag & ~fixed & (np.abs(psi) < SNAP_TOL)


def first_trial(size, last):
    """The line search's first step fraction: ``min(1, max(STEP_GROWTH · last,
    STEP_FLOOR) / size)`` for a step of length ``size`` after an accepted step of
    length ``last`` (``inf`` before the first); numbers or arrays."""
    radius = np.maximum(STEP_GROWTH * np.asarray(last, dtype=float), STEP_FLOOR)
    with np.errstate(divide="ignore"):
        return np.minimum(1.0, radius / np.asarray(size, dtype=float))


def steering_hessian(obj: Objective, psi: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """A Hessian that steers the ascent: forward differences of the exact gradient
    (``P`` evaluations; relative error ~``FD_STEP``, which only the steps see)."""
    return obj.hessian(psi, grad, forward=True)


def maximise(
    obj: Objective,
    psi0: np.ndarray,
    diag: np.ndarray,
    tol: float,
    maxiter: int,
    hess0: np.ndarray | None = None,
    held: np.ndarray | None = None,
) -> dict:
    """Quasi-Newton ascent, verified by Newton steps on the Hessian; θ unconstrained.

    The likelihood does not change when a column of a ``Λ`` changes sign (its random
    effects change sign with it), so θ is optimised without bounds and put in lme4's
    form (diagonal ≥ 0) afterwards; ``diag`` marks the diagonal elements. Steps are
    modified Newton steps (``|eigenvalues|`` of the Hessian), which move away from
    saddle points such as a zero SD instead of towards them, with step halving from
    at most twice the length of the step before (:func:`first_trial`).

    The first Hessian is ``hess0`` (e.g. the Laplace fit's, before quadrature) or the
    finite-difference Hessian at the start; BFGS updates it, and where the gradient is
    exact it is recomputed every ``REFRESH_EVERY`` steps while the Newton decrement
    ``gᵀ(−H)⁻¹g`` is above ``REFRESH_ABOVE``. When the decrement falls below ``tol``
    the Hessian is recomputed there and the iteration goes on until the decrement on
    the true Hessian is below ``tol`` too. These Hessians, which only steer, are
    forward differences of the exact gradient; the one returned, for the standard
    errors, is the objective's own (central for Laplace). A diagonal element that
    ends within ``SNAP_TOL`` of 0 is set to 0 (the boundary, where lme4's bounded
    optimiser ends too) and the others re-polished; where the Hessian shows a
    direction of increase at a stationary point, the iteration steps along it.
    ``held`` marks parameters kept at their values in ``psi0`` (profiles).
    """
    psi = np.asarray(psi0, dtype=float).copy()
    P = psi.size
    held = np.zeros(P, dtype=bool) if held is None else np.asarray(held, dtype=bool)
    fixed = held.copy()
    val, grad = obj.value_grad(psi)
    if not np.isfinite(val):
        raise ModelError("the log-likelihood is not finite at the starting values")
    hess = steering_hessian(obj, psi, grad) if hess0 is None else np.asarray(hess0, dtype=float)
    hess_at = psi.copy()
    info = _positive(-hess)
    exact = hess0 is None  # info is the true (modified) Hessian at psi
    n_iter = 0
    converged = False
    message = ""
    decrement = math.inf
    escapes = 0
    last_step = math.inf  # length of the last accepted step
    while True:
        free = ~fixed
        step = _ascent_step(grad, info, free)
        decrement = float(grad @ step)
        if decrement < tol:
            if not exact:
                hess, hess_at = steering_hessian(obj, psi, grad), psi.copy()
                info = _positive(-hess)
                exact = True
                continue
            trial = psi + step
            v_t, g_t = obj.value_grad(trial)
            if np.isfinite(v_t) and v_t >= val - 1e-12 * (1 + abs(val)):
                psi, val, grad = trial, v_t, g_t
            snap = _snap_candidates(psi, diag, fixed)
            if snap.any():
                trial = np.where(snap, 0.0, psi)
                v_t, g_t = obj.value_grad(trial)
                if np.isfinite(v_t) and v_t >= val - 1e-9 * (1 + abs(val)):
                    psi, val, grad = trial, v_t, g_t
                    fixed |= snap
                    hess, hess_at = steering_hessian(obj, psi, grad), psi.copy()
                    info = _positive(-hess)
                    continue
            # a stationary point that is not a maximum: step along the ascent direction
            hf = hess[np.ix_(free, free)]
            lam, V = np.linalg.eigh(0.5 * (hf + hf.T))
            if lam[-1] > 1e-6 * max(1.0, float(np.max(np.abs(lam)))) and escapes < 5:
                escapes += 1
                direction = np.zeros(P)
                direction[free] = V[:, -1]
                moved = False
                for t in (1.0, 0.3, 0.1, 0.03, 0.01):
                    for sign in (1.0, -1.0):
                        trial = psi + sign * t * direction
                        v_t, g_t = obj.value_grad(trial)
                        if np.isfinite(v_t) and v_t > val + 1e-9 * (1 + abs(val)):
                            moved = True
                            break
                    if moved:
                        break
                if moved:
                    fixed[:] = held
                    psi, val, grad = trial, v_t, g_t
                    hess, hess_at = steering_hessian(obj, psi, grad), psi.copy()
                    info = _positive(-hess)
                    continue
            converged = True
            break
        if n_iter >= maxiter:
            message = (
                f"iteration limit reached (maxiter={maxiter}), Newton decrement {decrement:.1e}"
            )
            break
        alpha = float(first_trial(np.linalg.norm(step), last_step))
        while alpha > 1e-10:
            trial = psi + alpha * step
            v_t, g_t = obj.value_grad(trial)
            if np.isfinite(v_t) and v_t >= val - 1e-12 * (1 + abs(val)):
                break
            alpha *= 0.5
        else:
            if not exact:  # a poor quasi-Newton model: restart from the true Hessian
                hess, hess_at = steering_hessian(obj, psi, grad), psi.copy()
                info = _positive(-hess)
                exact = True
                continue
            message = "line search failed: the log-likelihood could not be increased"
            break
        n_iter += 1
        last_step = float(np.linalg.norm(trial - psi))
        if obj.exact and n_iter % REFRESH_EVERY == 0 and decrement > REFRESH_ABOVE:
            hess, hess_at = steering_hessian(obj, trial, g_t), trial.copy()
            info = _positive(-hess)
            exact = True
        else:
            info = _bfgs(info, trial - psi, grad - g_t)
            exact = False
        psi, val, grad = trial, v_t, g_t
    # the Hessian for the standard errors: the objective's own kind, at the end point
    near = np.max(np.abs(hess_at - psi) / np.maximum(1.0, np.abs(psi))) < 1e-5
    if not (exact and near and obj.forward):
        hess = obj.hessian(psi, grad)
    if converged:
        message = (
            f"converged after {n_iter} iterations (Newton decrement {max(decrement, 0):.1e}, "
            f"max |gradient| {np.max(np.abs(grad[~fixed]), initial=0.0):.1e})"
        )
    return {
        "psi": psi,
        "value": val,
        "grad": grad,
        "hess": hess,
        "fixed": fixed,
        "converged": converged and np.isfinite(val),
        "message": message,
        "n_iter": n_iter,
        "decrement": decrement,
    }


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _check_inputs(X, y, trials, structure, offset, names):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ModelError(f"X must be a (rows, columns) matrix, got shape {X.shape}")
    n, p = X.shape
    y = np.asarray(y, dtype=float).reshape(-1)
    m = np.ones(n) if trials is None else np.asarray(trials, dtype=float).reshape(-1)
    if y.size != n or m.size != n or structure.n_rows != n:
        raise ModelError(
            f"rows disagree: X {n}, y {y.size}, trials {m.size}, random effects {structure.n_rows}"
        )
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y)) and np.all(np.isfinite(m))):
        raise ModelError("X, y and trials must be finite")
    if np.any(m < 1) or np.any(m != np.round(m)):
        raise ModelError("trials must be positive integers")
    if np.any((y < 0) | (y > m) | (y != np.round(y))):
        raise ModelError("y must count successes between 0 and trials")
    if y.sum() == 0 or y.sum() == m.sum():
        raise ModelError("the outcome needs both events and non-events")
    if offset is not None:
        offset = np.asarray(offset, dtype=float).reshape(-1)
        if offset.size != n or not np.all(np.isfinite(offset)):
            raise ModelError(f"offset must hold {n} finite numbers")
    names = [f"x{j}" for j in range(p)] if names is None else list(names)
    if len(names) != p:
        raise ModelError(f"{p} columns in X but {len(names)} names")
    return X, y, m, offset, names


def _check_nagq(nagq: int, structure: ReStructure) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, int | np.integer):
        raise ModelError(f"nagq must be an integer between 1 and {MAX_NAGQ}, got {nagq!r}")
    if not 1 <= nagq <= MAX_NAGQ:
        raise ModelError(f"nagq must be between 1 (Laplace) and {MAX_NAGQ}, got {nagq}")
    if nagq > 1:
        from syndesmo.engines.native.multilevel.agq import check_agq_structure

        check_agq_structure(structure)
    return int(nagq)


def covariances(hess: np.ndarray, p: int, at_bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """vcov of β and SEs of θ from the Hessian over (β, θ) (β block alone at the bound)."""
    info = -hess
    P = info.shape[0]
    theta_se = np.full(P - p, np.nan)
    if not at_bound.any():
        try:
            if np.linalg.eigvalsh(info)[0] > 0:
                inv = np.linalg.inv(info)
                theta_se = np.sqrt(np.abs(np.diag(inv)[p:]))
                v = inv[:p, :p]
                return 0.5 * (v + v.T), theta_se
        except np.linalg.LinAlgError:
            pass
    free = np.r_[np.ones(p, dtype=bool), ~at_bound]
    sub = info[np.ix_(free, free)]
    try:
        inv = np.linalg.inv(sub)
        v = inv[:p, :p]
        se = np.full(P - p, np.nan)
        se[~at_bound] = np.sqrt(np.abs(np.diag(inv)[p:]))
        return 0.5 * (v + v.T), se
    except np.linalg.LinAlgError:
        return np.full((p, p), np.nan), theta_se


def _ranef(data: Data, structure: ReStructure, theta: np.ndarray, st) -> dict:
    """Conditional modes ``b = Λ u`` and conditional SDs per term, in level order."""
    tree = data.tree
    lams = tree.lambdas(theta[None])
    S = selected_inverse(tree, st.F)
    out = {}
    for lev, L in enumerate(tree.levels):
        lam = lams[lev][0]
        b = st.u[lev][:, 0, :] @ lam.T  # (G, d)
        cov = np.einsum("rc,gcd,sd->grs", lam, S.diag[lev][:, 0], lam)
        sd = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        if L.codes is not None:
            for k, off in zip(L.terms, L.term_offsets, strict=True):
                t = structure.terms[k]
                G = t.n_levels
                vals = np.full((G, t.q), np.nan)
                sds = np.full((G, t.q), np.nan)
                vals[L.codes] = b[:, off : off + t.q]
                sds[L.codes] = sd[:, off : off + t.q]
                out[t.name] = (t.levels, vals, sds)
        else:  # dense block of crossed factors: factor by factor, level by level
            base = 0
            for f in structure.crossed:
                fac = structure.factors[f]
                width = sum(structure.terms[k].q for k in fac.terms)
                inner = 0
                for k in fac.terms:
                    t = structure.terms[k]
                    idx = base + np.arange(fac.n_levels)[:, None] * width + inner + np.arange(t.q)
                    out[t.name] = (t.levels, b[0][idx], sd[0][idx])
                    inner += t.q
                base += fac.n_levels * width
    return out


def fit_multilevel(
    X: np.ndarray,
    y: np.ndarray,
    trials: np.ndarray | None,
    structure: ReStructure,
    *,
    nagq: int = 1,
    offset: np.ndarray | None = None,
    names: list[str] | None = None,
    start: np.ndarray | None = None,
    tol: float = 1e-10,
    maxiter: int = 200,
    merge: bool = True,
    data: Data | None = None,
) -> MultilevelFit:
    """Fit a logistic GLMM with the random effects of ``structure`` by maximum likelihood.

    ``X`` ``(n, p)`` fixed-effects matrix, ``y`` successes, ``trials`` (default 1),
    ``structure`` from :func:`syndesmo.fitting.random_effects.build_structure` on the same
    rows. ``nagq = 1`` is the Laplace approximation; ``nagq > 1`` multilevel adaptive
    Gauss–Hermite quadrature with ``nagq`` points per level (nested random
    intercepts). ``start`` holds β then θ (lme4's order). ``tol`` bounds the final
    Newton decrement. ``data`` is the result of :func:`prepare` on the same arguments,
    when the caller keeps it (a model object).
    """
    X, y, m, offset, names = _check_inputs(X, y, trials, structure, offset, names)
    nagq = _check_nagq(nagq, structure)
    p = X.shape[1]
    if data is None:
        data = prepare(X, y, m, structure, offset, merge=merge)
    if start is None:
        psi0 = np.r_[glm_start(X, y, m, offset), structure.theta_start()]
    else:
        psi0 = np.asarray(start, dtype=float).reshape(-1)
        if psi0.size != p + structure.n_theta:
            raise ModelError(f"start must hold {p + structure.n_theta} numbers (β then θ)")
    diag = np.r_[np.zeros(p, dtype=bool), [r == c for _, r, c in structure.theta_index]]
    obj = Objective(data, 1)
    if nagq == 1:
        out = maximise(obj, psi0, diag, tol, maxiter)
    else:
        first = maximise(obj, psi0, diag, max(tol, 1e-6), maxiter)
        laplace_u = obj.u
        obj = Objective(data, nagq)
        obj.u = laplace_u
        obj.n_eval = 0
        out = maximise(obj, first["psi"], diag, tol, maxiter, hess0=first["hess"])
        out["n_iter"] += first["n_iter"]
    # lme4's form: every diagonal element of Λ non-negative (flip whole columns)
    signs = np.r_[np.ones(p), structure.column_signs(out["psi"][p:])]
    psi = signs * out["psi"]
    out["grad"] = signs * out["grad"]
    out["hess"] = out["hess"] * np.outer(signs, signs)
    theta = psi[p:]
    logc, _ = constants(y, m)
    loglik = float(out["value"] + logc)
    diag_idx = diag[p:]
    at_bound = diag_idx & (theta <= 1e-12)
    vcov, theta_se = covariances(out["hess"], p, at_bound)
    small = diag_idx & (theta < SINGULAR_TOL)
    singular_terms = sorted(
        {structure.terms[structure.theta_index[j][0]].name for j in np.flatnonzero(small)}
    )
    _, _, st = evaluate(data, psi[None], obj._warm(1), gradient=False)
    ranef = _ranef(data, structure, theta, st)
    grad = out["grad"]
    info = -out["hess"]
    free = np.r_[np.ones(p, dtype=bool), ~at_bound]
    try:
        scaled = np.linalg.solve(info[np.ix_(free, free)], grad[free])
        max_scaled = float(np.max(np.abs(scaled)))
    except np.linalg.LinAlgError:
        max_scaled = math.nan
    min_eig = float(np.linalg.eigvalsh(info[np.ix_(free, free)])[0])
    return MultilevelFit(
        names=names,
        params=psi[:p].copy(),
        vcov=vcov,
        theta=theta.copy(),
        theta_names=structure.theta_names(),
        theta_se=theta_se,
        varcorr=structure.varcorr(theta),
        loglik=loglik,
        nagq=nagq,
        n_obs=int(X.shape[0]),
        n_groups=structure.n_groups(),
        converged=bool(out["converged"]),
        message=out["message"],
        singular=bool(small.any()),
        singular_terms=singular_terms,
        gradient=grad,
        hessian=out["hess"],
        n_iter=int(out["n_iter"]),
        n_eval=int(obj.n_eval),
        structure=structure,
        ranef=ranef,
        convergence={
            "max_abs_gradient": float(np.max(np.abs(grad[free]))),
            "max_scaled_gradient": max_scaled,
            "min_eigen_information": min_eig,
            "newton_decrement": float(out["decrement"]),
        },
    )


def loglik_multilevel(
    X: np.ndarray,
    y: np.ndarray,
    trials: np.ndarray | None,
    structure: ReStructure,
    params: np.ndarray,
    theta: np.ndarray,
    *,
    nagq: int = 1,
    offset: np.ndarray | None = None,
) -> float:
    """The log-likelihood :func:`fit_multilevel` maximises, at given β and θ."""
    X, y, m, offset, _ = _check_inputs(X, y, trials, structure, offset, None)
    nagq = _check_nagq(nagq, structure)
    data = prepare(X, y, m, structure, offset)
    psi = np.r_[np.asarray(params, float).reshape(-1), np.asarray(theta, float).reshape(-1)]
    obj = Objective(data, nagq)
    value = obj.values(psi[None])[0]
    logc, _ = constants(y, m)
    return float(value + logc)
