"""Multilevel adaptive Gauss–Hermite quadrature for nested random effects.

The marginal likelihood of one top-level unit (a patient) of a three-level model is

    ∫ φ(u₁) ∏_VU [ ∫ φ(u₂) ∏_reading [ ∫ φ(u₃) ∏_rows p(y | η) du₃ ] du₂ ] du₁ .

Each integral is computed adaptively *inside* its parent's, at every node of the
parent: given the values of its ancestors, a unit's random effects and those of its
descendants are set to their joint conditional mode (penalised Newton on that subtree),
the unit's integral is centred at its conditional mode ``û`` and scaled by
``s = D^{-1/2}``, where ``D`` is the Schur complement of its subtree's Hessian (the
curvature of the conditional log density of ``u`` with its descendants profiled out),
and ``nagq`` Gauss–Hermite nodes ``û + s z_k`` are used per level:

    ∫ φ(u) f(u) du ≈ s Σ_k w_k exp(z_k²/2 − u_k²/2) f(u_k),   u_k = û + s z_k.

A grouping factor with a vector of ``d ≤ 2`` random effects (a correlated intercept and
slope, ``(1 + x|patient)``) is integrated by the product rule, ``nagq^d`` nodes
``û + R z`` with ``R Rᵀ = D⁻¹``.

With ``nagq = 1`` every node is the joint mode and the product of the scales is
``det(H)^{-1/2}``: exactly the Laplace approximation, on the same scale (same
normalising constants) for every ``nagq``. The cost is ``nagq^levels`` evaluations per
row (``nagq^(Σ d)`` with vector random effects) plus the conditional mode solves
(``nagq^(level-1)`` per row at each level).

This is the nested adaptive quadrature of Pinheiro & Chao (2006, JCGS 15:58–81) and
Rabe-Hesketh, Skrondal & Pickles (2005, J Econometrics 128:301–323), with the lower
levels re-centred at their conditional modes for every node of the level above.
"""

from __future__ import annotations

import numpy as np

from syndesmo.engines.native.multilevel.laplace import Data, solve_modes
from syndesmo.engines.native.multilevel.tree import selected_inverse, solve
from syndesmo.engines.native.quadrature import gauss_hermite, logistic
from syndesmo.errors import ModelError
from syndesmo.fitting.random_effects import ReStructure

CHUNK_ELEMENTS = 3_000_000  # rows × batch × nodes per chunk of parameter vectors
MODE_TOL = 1e-10
# Conditional modes inside the quadrature: after the last Newton step (taken in full)
# they are exact to ~tol², and the value depends on the centring only through the
# quadrature error, so a looser tolerance saves iterations without changing the result.
INNER_MODE_TOL = 1e-5
MAX_DIM = 2  # random effects per grouping factor integrated by the product rule


def check_agq_structure(structure: ReStructure) -> None:
    """ModelError unless adaptive quadrature covers ``structure``: nested grouping factors
    with at most ``MAX_DIM`` random effects each."""
    if structure.crossed:
        names = ", ".join(
            structure.terms[k].name for f in structure.crossed for k in structure.factors[f].terms
        )
        raise ModelError(
            f"adaptive quadrature (nagq > 1) needs nested random effects; {names} is crossed "
            "with the other grouping factors. Use nagq=1 (Laplace) for crossed random effects"
        )
    dims = [sum(structure.terms[k].q for k in structure.factors[f].terms) for f in structure.chain]
    if max(dims) > MAX_DIM:
        big = structure.factors[structure.chain[int(np.argmax(dims))]]
        names = ", ".join(structure.terms[k].name for k in big.terms)
        raise ModelError(
            f"adaptive quadrature (nagq > 1) integrates at most {MAX_DIM} random effects per "
            f"grouping factor (nagq^{MAX_DIM} nodes per unit); {names} has {max(dims)} "
            "columns. Use nagq=1 (Laplace)"
        )


def softplus(eta: np.ndarray) -> np.ndarray:
    """``log(1 + e^eta)`` without overflow."""
    return np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))


def _logsumexp(A: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(A, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(A - top), axis=axis)) + np.squeeze(top, axis=axis)


def product_rule(nagq: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``(nagq^d, d)`` and log weights of the ``d``-dimensional product rule."""
    z, w = gauss_hermite(nagq)
    grids = np.meshgrid(*([z] * d), indexing="ij")
    wgrids = np.meshgrid(*([np.log(w)] * d), indexing="ij")
    nodes = np.stack([g.reshape(-1) for g in grids], axis=1)
    logw = np.sum([g.reshape(-1) for g in wgrids], axis=0)
    return nodes, logw


def _sqrt_inverse(Dinv: np.ndarray) -> np.ndarray:
    """``R`` with ``R Rᵀ = D⁻¹`` (lower-triangular Cholesky factor of ``D⁻¹``)."""
    if Dinv.shape[-1] == 1:
        return np.sqrt(Dinv)
    return np.linalg.cholesky(Dinv)


def _integrate(
    data: Data,
    lev: int,
    a: list[np.ndarray],
    eta_off: np.ndarray,
    u0: list,
    nagq: int,
) -> np.ndarray:
    """Log integral of every node of level ``lev`` given the linear predictor of its
    ancestors' values (``eta_off`` ``(n, C)``): ``(G_lev, C)``.

    A node's ``d`` random effects are integrated by the product rule: nodes
    ``u_k = û + R z_k`` with ``R Rᵀ = D⁻¹`` (``D`` the Schur-complement curvature), so
    ``log |det R| = −½ log det D``.
    """
    tree = data.tree
    depth = tree.depth
    z, logw = product_rule(nagq, tree.levels[lev].d)  # (K, d), (K,)
    K = z.shape[0]
    free = range(lev, depth)
    tol = MODE_TOL if lev == 0 else INNER_MODE_TOL
    st = solve_modes(tree, eta_off, a, data.y, data.m, u0, levels=free, tol=tol)
    if not st.converged.all():
        return np.full((tree.levels[lev].n_nodes, eta_off.shape[1]), np.nan)
    R = _sqrt_inverse(st.F.Dinv[lev])  # (G, C, d, d)
    shift = np.einsum("gcij,kj->gcki", R, z)  # (G, C, K, d): u_k − û
    uk = st.u[lev][:, :, None, :] + shift
    base = logw + 0.5 * np.sum(z * z, axis=1) - 0.5 * np.sum(uk * uk, axis=-1)  # (G, C, K)
    contrib = np.einsum("ncd,nckd->nck", a[lev], tree.to_rows(lev, uk))  # (n, C, K)
    eta = eta_off[:, :, None] + contrib
    if lev == depth - 1:
        ll = data.y[:, None, None] * eta - data.m[:, None, None] * softplus(eta)
        A = base + tree.seg_rows(lev, ll)
    else:
        n, C = eta_off.shape
        a_next = [None if x is None else np.repeat(x, K, axis=1) for x in a]
        # warm start of the descendants' conditional modes at every node: the joint
        # mode shifted as the Gaussian approximation predicts (δ_k = −Σ E_kj δ_j)
        shifts = {lev: shift}
        u_next = [None] * depth
        for k in range(lev + 1, depth):
            d = 0.0
            for j in range(lev, k):
                Ekj = st.F.E[k][j][:, :, None]  # (G_k, C, 1, d_k, d_j)
                d = d - (Ekj @ tree.to_nodes(k, j, shifts[j])[..., None])[..., 0]
            shifts[k] = d
            u_next[k] = (st.u[k][:, :, None] + d).reshape(st.u[k].shape[0], C * K, -1)
        child = _integrate(data, lev + 1, a_next, eta.reshape(n, C * K), u_next, nagq)
        G1 = child.shape[0]
        child = tree.seg_nodes(lev + 1, lev, child.reshape(G1, C, K))
        A = base + child
    return _logsumexp(A, axis=2) - 0.5 * st.F.logdet_nodes[lev]


def agq_value(
    data: Data, psi: np.ndarray, nagq: int, u0: list[np.ndarray] | None = None
) -> np.ndarray:
    """Multilevel AGQ log-likelihood (without binomial coefficients) for a batch of
    ``psi`` ``(B, p + n_theta)``; ``u0`` warm-starts the joint modes."""
    psi = np.atleast_2d(np.asarray(psi, dtype=float))
    tree = data.tree
    B = psi.shape[0]
    nodes = nagq ** sum(L.d for L in tree.levels)
    per = max(1, data.X.shape[0] * nodes)
    step = max(1, CHUNK_ELEMENTS // per)
    out = np.empty(B)
    p = data.p
    for lo in range(0, B, step):
        sl = slice(lo, min(B, lo + step))
        sub = psi[sl]
        a = tree.row_factors(tree.lambdas(sub[:, p:]))
        warm = None if u0 is None else [x[:, sl] for x in u0]
        if warm is None:
            warm = [np.zeros((L.n_nodes, sub.shape[0], L.d)) for L in tree.levels]
        top = _integrate(data, 0, a, data.eta_fixed(sub[:, :p]), warm, nagq)
        out[sl] = top.sum(axis=0)
    return out


# --------------------------------------------------------------------------------------
# Exact gradient (scalar random effects at every level)
# --------------------------------------------------------------------------------------


def scalar_tree(data: Data) -> bool:
    """Whether the exact AGQ gradient applies: one random effect per level, no dense block."""
    return all(L.d == 1 and L.codes is not None for L in data.tree.levels)


def _integrate_grad(
    data: Data,
    lev: int,
    a: list[np.ndarray],
    eta_off: np.ndarray,
    u0: list,
    nagq: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_integrate` for scalar levels, with its exact derivatives.

    Returns ``F`` ``(G, C)`` (log integral of every node of level ``lev``), ``S`` ``(n, C)``
    with ``S_i = dF_{g(i)}/dω_i`` (the sensitivity to the row's offset from the ancestors,
    which also gives the derivatives in β and in the ancestors' θ) and ``T``
    ``(G, C, depth)`` with ``dF_g/dθ_m`` for the levels ``m ≥ lev``.

    With ``π_k`` the normalised node weights, ``C_k`` the children's (or rows') log
    integrand at node ``k``, ``γ = Σπ_k(C'_k − u_k)``, ``κ = Σπ_k(C'_k − u_k) z_k r``:
    ``dF = Σπ_k ∂C_k + γ dû − ½(1 + κ) d log D``. The mode and curvature terms become
    one adjoint solve on the subtree, ``λ = H⁻¹(γ e_g − ζ Σ_i v'_i t_i² a_i)`` with
    ``t_i = (H⁻¹a_i)_g`` and ``ζ = ½(1 + κ)/Σ_gg`` (``Σ = H⁻¹``), since
    ``d log D = (Σ_i dv_i t_i² + 2 v_i t_i (H⁻¹ da_i)_g)/Σ_gg``.
    """
    tree = data.tree
    depth = tree.depth
    z, w = gauss_hermite(nagq)
    logw = np.log(w)
    K = z.size
    free = range(lev, depth)
    n, C = eta_off.shape
    G = tree.levels[lev].n_nodes
    tol = MODE_TOL if lev == 0 else INNER_MODE_TOL
    st = solve_modes(tree, eta_off, a, data.y, data.m, u0, levels=free, tol=tol)
    if not st.converged.all():
        nan = np.full((G, C), np.nan)
        return nan, np.full((n, C), np.nan), np.full((G, C, depth), np.nan)
    sig = st.F.Dinv[lev][..., 0, 0]  # Σ_gg = 1/D_g
    r = np.sqrt(sig)
    uk = st.u[lev][..., 0][:, :, None] + r[:, :, None] * z  # (G, C, K)
    al = a[lev][..., 0]  # (n, C)
    uk_rows = tree.to_rows(lev, uk)
    eta = eta_off[:, :, None] + al[:, :, None] * uk_rows  # (n, C, K)
    base = logw + 0.5 * z * z - 0.5 * uk * uk
    T = np.zeros((G, C, depth))
    if lev == depth - 1:
        mu, _, sp = logistic(eta)
        y = data.y[:, None, None]
        m = data.m[:, None, None]
        A = base + tree.seg_rows(lev, y * eta - m * sp)
        Sk = y - m * mu  # ∂C_k/∂ω_i: the rows' residuals at node k
        Tk = None
    else:
        a_next = [None if x is None else np.repeat(x, K, axis=1) for x in a]
        shift = (r[:, :, None] * z)[..., None]  # (G, C, K, 1)
        shifts = {lev: shift}
        u_next = [None] * depth
        for k in range(lev + 1, depth):
            d = 0.0
            for j in range(lev, k):
                Ekj = st.F.E[k][j][:, :, None]
                d = d - (Ekj @ tree.to_nodes(k, j, shifts[j])[..., None])[..., 0]
            shifts[k] = d
            u_next[k] = (st.u[k][:, :, None] + d).reshape(st.u[k].shape[0], C * K, -1)
        Fc, Sc, Tc = _integrate_grad(data, lev + 1, a_next, eta.reshape(n, C * K), u_next, nagq)
        G1 = Fc.shape[0]
        A = base + tree.seg_nodes(lev + 1, lev, Fc.reshape(G1, C, K))
        Sk = Sc.reshape(n, C, K)
        Tk = tree.seg_nodes(lev + 1, lev, Tc.reshape(G1, C, K, depth))
    top = np.max(A, axis=2, keepdims=True)
    ex = np.exp(A - top)
    tot = ex.sum(axis=2, keepdims=True)
    F = np.log(tot[..., 0]) + top[..., 0] - 0.5 * st.F.logdet_nodes[lev]
    pi = ex / tot  # (G, C, K)
    pi_rows = tree.to_rows(lev, pi)
    resid = tree.seg_rows(lev, Sk * al[:, :, None]) - uk  # C'_k − u_k
    gamma = np.sum(pi * resid, axis=2)
    kappa = np.sum(pi * resid * z, axis=2) * r
    zeta = 0.5 * (1.0 + kappa) / sig
    # Σ_k π_k ∂C_k at fixed nodes
    S = np.sum(pi_rows * Sk, axis=2)
    zcol = [tree.levels[k].Z[:, 0][:, None] for k in range(depth)]
    T[..., lev] += tree.seg_rows(lev, zcol[lev] * np.sum(pi_rows * uk_rows * Sk, axis=2))
    if Tk is not None:
        T += np.sum(pi[..., None] * Tk, axis=2)
    # the conditional mode and curvature of the node: one adjoint solve on the subtree
    Sinv = selected_inverse(tree, st.F, free)
    sig_rows = {lev: tree.to_rows(lev, Sinv.diag[lev][..., 0, 0])}
    for k in range(lev + 1, depth):
        sig_rows[k] = tree.to_rows(k, Sinv.off[k][lev][..., 0, 0])  # Σ_{g, node_k(i)}
    t = sum(sig_rows[k] * a[k][..., 0] for k in free)  # (H⁻¹ a_i)_g
    vp = st.v * (1.0 - 2.0 * st.mu)
    wt = tree.to_rows(lev, zeta) * vp * t * t
    rhs: list = [None] * depth
    for k in free:
        rhs[k] = -tree.seg_rows(k, wt * a[k][..., 0])[..., None]
    rhs[lev] = rhs[lev] + gamma[..., None]
    lam = solve(tree, st.F, rhs, free)
    lam_rows = {k: tree.to_rows(k, lam[k][..., 0]) for k in free}
    a_lam = sum(a[k][..., 0] * lam_rows[k] for k in free)
    S = S - st.v * a_lam - wt
    zeta_rows = tree.to_rows(lev, zeta)
    for k in free:
        uk_mode = tree.to_rows(k, st.u[k][..., 0])
        contrib = zcol[k] * (
            st.r * lam_rows[k]
            - st.v * uk_mode * a_lam
            - zeta_rows * (vp * t * t * uk_mode + 2.0 * st.v * t * sig_rows[k])
        )
        T[..., k] += tree.seg_rows(lev, contrib)
    return F, S, T


def agq_value_grad(
    data: Data, psi: np.ndarray, nagq: int, u0: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multilevel AGQ log-likelihood and its exact gradient over ``(β, θ)`` for a batch
    ``psi`` ``(B, p + n_theta)``; scalar random effects at every level (``scalar_tree``)."""
    psi = np.atleast_2d(np.asarray(psi, dtype=float))
    tree = data.tree
    B = psi.shape[0]
    p = data.p
    per = max(1, data.X.shape[0] * nagq**tree.depth)
    step = max(1, CHUNK_ELEMENTS // per)
    values = np.empty(B)
    grads = np.zeros((B, psi.shape[1]))
    theta_index = [int(L.theta_map[0][0]) for L in tree.levels]
    for lo in range(0, B, step):
        sl = slice(lo, min(B, lo + step))
        sub = psi[sl]
        a = tree.row_factors(tree.lambdas(sub[:, p:]))
        warm = None if u0 is None else [x[:, sl] for x in u0]
        if warm is None:
            warm = [np.zeros((L.n_nodes, sub.shape[0], L.d)) for L in tree.levels]
        F, S, T = _integrate_grad(data, 0, a, data.eta_fixed(sub[:, :p]), warm, nagq)
        values[sl] = F.sum(axis=0)
        grads[sl, :p] = S.T @ data.X
        Tsum = T.sum(axis=0)  # (B, depth)
        for lev, j in enumerate(theta_index):
            grads[sl, p + j] += Tsum[:, lev]
    return values, grads
