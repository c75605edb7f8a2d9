"""Marginal likelihood of a random-intercept logistic GLMM and its exact gradient.

The model: ``y_i ~ Binomial(m_i, expit(x_i·β + θ·u_g))`` with ``u_g ~ N(0, 1)`` for
the group ``g`` of row ``i`` (lme4's spherical random effects; the SD is ``|θ|``).
Groups are independent given ``(β, θ)``, so every quantity is a per-group sum. All
arrays are "rows first": ``(n, B)`` for ``B`` parameter vectors evaluated together
(Newton trial points, finite-difference points, replicates), so a group sum is one
sparse product ``Z @ a`` with the ``(G, n)`` group indicator and a per-batch scalar
broadcasts along the last axis.

For each group the integral ``∫ p(y_g | u) φ(u) du`` is approximated as lme4 does
(``glmer(..., nAGQ = K)``): find the conditional mode ``û`` of
``h(u) = log p(y_g | u) − u²/2`` by a safeguarded Newton iteration (lme4's PIRLS),
take ``s = (−h''(û))^{-1/2}`` and apply the K-point Gauss–Hermite rule for the
standard normal on the nodes ``û + s·z_k``. K = 1 is the Laplace approximation.

The gradient with respect to ``(β, θ)`` is exact for the approximation (not for the
integral): the mode ``û`` and the scale ``s`` depend on the parameters, so it adds
the implicit-function derivative of ``û`` and the derivative of ``s`` through the
curvature ``H = 1 + θ²·Σ m μ(1−μ)``. The binomial coefficients are left out here;
callers add the constant back on the scale they report.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

MODE_TOL = 1e-10
MODE_MAXITER = 100
CHUNK_ELEMENTS = 40_000  # rows × nodes × batch per block of the quadrature sums


@lru_cache(maxsize=64)
def gauss_hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``k``-point Gauss–Hermite rule for the standard normal.

    The weights sum to one, as in lme4's ``GHrule(k)``; ``k = 1`` gives the single node
    0 with weight 1 (the Laplace approximation).
    """
    if k == 1:
        z, w = np.zeros(1), np.ones(1)
    else:
        z, w = np.polynomial.hermite_e.hermegauss(k)
        w = w / w.sum()
    z.setflags(write=False)
    w.setflags(write=False)
    return z, w


class Layout:
    """Response data of one or more replicates and the grouping of the rows.

    ``X`` is ``(n, p)`` when all replicates share one design, or ``(R, n, p)``; ``y``
    and ``m`` (successes and trials) are ``(R, n)``. Rows with ``m = 0`` contribute
    nothing (padding, or rows masked out of a replicate). ``gid`` ``(n,)`` holds group
    codes ``0..G-1``, every code used at least once. ``offset`` ``(n,)`` (optional, shared
    design only) is a known term added to every linear predictor, as lme4's ``offset``.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        m: np.ndarray,
        gid: np.ndarray,
        offset: np.ndarray | None = None,
    ) -> None:
        self.shared = X.ndim == 2
        # rows first: (n, p) shared, or (p, n, R) per replicate
        self.X = (
            np.ascontiguousarray(X) if self.shared else np.ascontiguousarray(X.transpose(2, 1, 0))
        )
        self.y = np.ascontiguousarray(np.asarray(y, dtype=float).T)  # (n, R)
        self.m = np.ascontiguousarray(np.asarray(m, dtype=float).T)
        self.gid = np.asarray(gid, dtype=np.int64)
        n = self.gid.size
        self.n_groups = int(self.gid.max()) + 1
        # rows sorted by group (as the layouts of ``layout`` are): rows per group, so a
        # group quantity is spread to its rows by ``np.repeat`` instead of a gather
        self._runs = (
            np.bincount(self.gid, minlength=self.n_groups)
            if n and np.all(self.gid[1:] >= self.gid[:-1])
            else None
        )
        self.Z = sp.csr_matrix((np.ones(n), (self.gid, np.arange(n))), shape=(self.n_groups, n))
        self.p = int(self.X.shape[1] if self.shared else self.X.shape[0])
        self.n_reps = int(self.y.shape[1])
        self.ysum = self.group_sum(self.y)  # (G, R)
        self.msum = self.group_sum(self.m)
        self._outer: np.ndarray | None = None
        self.offset = None if offset is None else np.asarray(offset, dtype=float).reshape(-1, 1)

    @property
    def n_params(self) -> int:
        return self.p + 1

    def group_sum(self, a: np.ndarray) -> np.ndarray:
        """Sum rows within groups: ``(n, ...) -> (G, ...)``."""
        if a.ndim == 2:
            return self.Z @ a
        return (self.Z @ a.reshape(a.shape[0], -1)).reshape((self.n_groups, *a.shape[1:]))

    def expand(self, a: np.ndarray) -> np.ndarray:
        """A group quantity on the rows of each group: ``(G, ...) -> (n, ...)``
        (``a[gid]``)."""
        if self._runs is None:
            return a[self.gid]
        return np.repeat(a, self._runs, axis=0)

    def gram(self, rep: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``Xᵀ diag(w_b) X`` for batch element ``b`` on replicate ``rep[b]``: (B, p, p).

        From cached row-wise outer products ``x_i x_iᵀ``, so it is one matrix product
        (shared design) or one two-operand contraction (one design per replicate).
        """
        p = self.p
        if self._outer is None:
            if self.shared:
                self._outer = (self.X[:, :, None] * self.X[:, None, :]).reshape(-1, p * p)
            else:
                self._outer = (self.X[:, None] * self.X[None, :]).reshape(p * p, *self.X.shape[1:])
        if self.shared:
            return (w.T @ self._outer).reshape(-1, p, p)
        return np.einsum("knb,nb->bk", self._outer[:, :, columns(rep)], w).reshape(-1, p, p)

    def eta(self, Xb: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Linear predictor ``X β`` (plus the offset) for a batch: (n, B)."""
        eta = linear_predictor(Xb, beta)
        return eta if self.offset is None else eta + self.offset

    def design(self, rep: np.ndarray) -> np.ndarray:
        """Design for batch element ``b`` on replicate ``rep[b]``: (n, p) or (p, n, B)."""
        return self.X if self.shared else self.X[:, :, columns(rep)]


def columns(rep: np.ndarray) -> slice | np.ndarray:
    """Index of the replicates ``rep`` along a last axis: a slice (a view, no copy) when
    they are a run ``a, a + 1, …, b`` (as when every replicate is still iterating),
    else ``rep`` itself."""
    n = rep.size
    if n and rep[-1] - rep[0] == n - 1 and (n < 3 or bool(np.all(np.diff(rep) == 1))):
        return slice(int(rep[0]), int(rep[-1]) + 1)
    return rep


def linear_predictor(Xb: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``X β`` for a batch: ``beta`` is ``(B, p)``; returns ``(n, B)``."""
    if Xb.ndim == 2:
        return Xb @ beta.T
    return np.einsum("pnb,bp->nb", Xb, beta)


def cross(Xb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Xᵀ w`` for a batch: ``w`` is ``(n, B)``; returns ``(B, p)``."""
    if Xb.ndim == 2:
        return (Xb.T @ w).T
    return np.einsum("pnb,nb->bp", Xb, w)


def logistic(eta: np.ndarray, with_softplus: bool = True):
    """``expit(eta)``, ``expit·(1 − expit)`` and ``log(1 + e^eta)`` from one exponential.

    scipy's ``expit`` and numpy's ``logaddexp`` are an order of magnitude slower than
    ``exp`` on large arrays; this is exact to rounding for any ``eta``.
    """
    e = np.abs(eta)
    np.negative(e, out=e)
    np.exp(e, out=e)
    inv = np.add(e, 1.0)
    np.divide(1.0, inv, out=inv)
    ei = np.multiply(e, inv)
    mu = np.where(eta >= 0, inv, ei)
    var = np.multiply(ei, inv, out=ei)
    if not with_softplus:
        return mu, var, None
    np.log1p(e, out=e)
    return mu, var, np.maximum(eta, 0.0) + e


@dataclass
class ModeState:
    """Conditional modes and the row/group quantities at the modes (one batch)."""

    u: np.ndarray  # (G, B) modes û
    eta: np.ndarray  # (n, B) linear predictor at the modes
    mu: np.ndarray  # (n, B) fitted probabilities at the modes
    r: np.ndarray  # (n, B) residuals y − m μ
    v: np.ndarray  # (n, B) weights m μ (1 − μ)
    R: np.ndarray  # (G, B) group sums of r
    W: np.ndarray  # (G, B) group sums of v
    H: np.ndarray  # (G, B) curvature 1 + θ² W
    f: np.ndarray  # (G, B) residual of the mode equation h'(û)
    converged: np.ndarray  # (B,) all modes of the batch element converged


def solve_modes(
    layout: Layout,
    eta0: np.ndarray,
    theta: np.ndarray,
    rep: np.ndarray,
    u0: np.ndarray,
) -> ModeState:
    """Conditional modes of all groups of all batch elements by safeguarded Newton.

    ``h'(u) = θ·Σ (y − m μ) − u`` is strictly decreasing, and its root lies in
    ``θ·[Σ(y − m), Σ y]``. As in Numerical Recipes' ``rtsafe``, a Newton step that
    leaves the current bracket, or is not at most half the step before last, is replaced
    by bisection, so the iteration converges from any start (Newton alone can cycle
    for groups whose responses are all 1 or all 0; lme4 halves PIRLS steps for the
    same reason).
    """
    cols = columns(rep)
    y = layout.y[:, cols]
    m = layout.m[:, cols]
    ys = layout.ysum[:, cols]
    a = theta * (ys - layout.msum[:, cols])
    b = theta * ys
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    u = np.clip(u0, lo, hi)
    dx = dxold = hi - lo  # the last two step lengths, as in rtsafe
    th2 = theta * theta
    done = False
    for _ in range(MODE_MAXITER):
        eta = eta0 + layout.expand(theta * u)
        mu, var, _ = logistic(eta, with_softplus=False)
        r = y - m * mu
        v = m * var
        R = layout.group_sum(r)
        W = layout.group_sum(v)
        f = theta * R - u
        H = 1.0 + th2 * W
        du = f / H
        if np.max(np.abs(du), initial=0.0) < MODE_TOL:
            done = True
            break
        lo = np.where(f > 0, u, lo)
        hi = np.where(f < 0, u, hi)
        un = u + du
        bisect = (un < lo) | (un > hi) | (2.0 * np.abs(du) > dxold)
        un = np.where(bisect, 0.5 * (lo + hi), un)
        dxold = dx
        dx = np.abs(un - u)
        u = un
    conv = np.full(u.shape[1], True) if done else np.max(np.abs(du), axis=0) < 1e3 * MODE_TOL
    return ModeState(u, eta, mu, r, v, R, W, H, f, conv)


def loglik_and_grad(
    layout: Layout,
    rep: np.ndarray,
    psi: np.ndarray,
    u0: np.ndarray,
    nagq: int,
    *,
    grad: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, ModeState]:
    """Approximate marginal log-likelihood (without binomial coefficients) and gradient.

    ``psi`` is ``(B, p + 1)``: fixed effects then θ; batch element ``b`` is evaluated on
    replicate ``rep[b]`` of ``layout`` with the modes warm-started at ``u0[:, b]``
    (``(G, B)``). Returns the values ``(B,)``, the gradients ``(B, p + 1)`` (or
    ``None``) and the modes.
    """
    Xb = layout.design(rep)
    beta = psi[:, :-1]
    theta = psi[:, -1]
    eta0 = layout.eta(Xb, beta)
    st = solve_modes(layout, eta0, theta, rep, u0)
    cols = columns(rep)
    y = layout.y[:, cols]
    m = layout.m[:, cols]
    s = 1.0 / np.sqrt(st.H)
    # h(û) per group: the Laplace term, and the reference for the quadrature sums
    lp0 = y * st.eta - m * (np.maximum(st.eta, 0.0) + np.log1p(np.exp(-np.abs(st.eta))))
    h0 = layout.group_sum(lp0) - 0.5 * st.u**2
    if nagq == 1:
        value = np.sum(h0 - 0.5 * np.log(st.H), axis=0)
        if not grad:
            return value, None, st
        rho = st.r
        E_theta = st.u * st.R
        D = st.f
        Dz = np.zeros_like(D)
    else:
        agq = _agq_sums(layout, eta0, theta, y, m, st.u, s, h0, nagq, grad)
        value = np.sum(np.log(s) + h0 + np.log(agq[0]), axis=0)
        if not grad:
            return value, None, st
        rho, E_theta, D, Dz = agq[1:]

    H = st.H
    vp = st.v * (1.0 - 2.0 * st.mu)  # d v / d eta
    T = layout.group_sum(vp)
    q = -0.5 * (1.0 + s * Dz) / H  # coefficient of dH in dℓ
    th2 = theta * theta
    # beta: dû/dβ = −θ Σ v x / H ; dH/dβ = θ² Σ v' x + θ³ T dû/dβ
    c1 = (D + q * th2 * theta * T) * (-theta / H)
    c2 = q * th2
    omega = rho + layout.expand(c1) * st.v + layout.expand(c2) * vp
    g_beta = cross(Xb, omega)
    # theta: dû/dθ = (R − θ û W)/H ; dH/dθ = 2θW + θ²(T û + θ T dû/dθ)
    du_dth = (st.R - theta * st.u * st.W) / H
    dH_dth = 2.0 * theta * st.W + th2 * T * (st.u + theta * du_dth)
    g_theta = np.sum(E_theta + D * du_dth + q * dH_dth, axis=0)
    return value, np.column_stack([g_beta, g_theta]), st


def _agq_sums(
    layout: Layout,
    eta0: np.ndarray,
    theta: np.ndarray,
    y: np.ndarray,
    m: np.ndarray,
    u: np.ndarray,
    s: np.ndarray,
    h0: np.ndarray,
    nagq: int,
    grad: bool,
) -> tuple[np.ndarray, ...]:
    """Quadrature sums over the nodes ``u_k = û + s z_k``, a few nodes at a time.

    With ``a_k = w_k exp(h(u_k) + z_k²/2 − h(û))`` (bounded by ``w_k e^{z_k²/2}``
    because ``û`` maximises ``h``, so no overflow) returns ``Σ a_k`` and, normalised by
    it, the node-weighted residuals per row, ``Σ π_k u_k R_k``, ``Σ π_k h'(u_k)`` and
    ``Σ π_k z_k h'(u_k)``. Working on a few nodes at a time keeps the temporaries
    small, which matters more for speed than the number of numpy calls.
    """
    z, w = gauss_hermite(nagq)
    n, B = eta0.shape
    gid = layout.gid
    step = max(1, min(nagq, CHUNK_ELEMENTS // max(1, n * B)))
    total = np.zeros_like(u)
    rho = np.zeros_like(eta0) if grad else None
    E_theta = np.zeros_like(u)
    D = np.zeros_like(u)
    Dz = np.zeros_like(u)
    yk = y[:, None, :]
    mk = m[:, None, :]
    for lo in range(0, nagq, step):
        zc = z[lo : lo + step][None, :, None]
        uk = u[:, None, :] + s[:, None, :] * zc  # (G, k, B)
        etak = eta0[:, None, :] + (theta * uk)[gid]  # (n, k, B)
        muk, _, spk = logistic(etak)
        A = layout.group_sum(yk * etak - mk * spk) - 0.5 * uk**2 + 0.5 * zc**2
        ak = w[lo : lo + step][None, :, None] * np.exp(A - h0[:, None, :])
        total += ak.sum(axis=1)
        if not grad:
            continue
        rk = yk - mk * muk
        Rk = layout.group_sum(rk)
        rho += np.einsum("nkb,nkb->nb", ak[gid], rk)
        E_theta += np.sum(ak * uk * Rk, axis=1)
        hk = theta * Rk - uk  # h'(u_k)
        D += np.sum(ak * hk, axis=1)
        Dz += np.sum(ak * hk * zc, axis=1)
    if not grad:
        return (total,)
    return total, rho / total[gid], E_theta / total, D / total, Dz / total
