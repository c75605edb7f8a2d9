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
from syndesmo.engines.native.quadrature import gauss_hermite
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
