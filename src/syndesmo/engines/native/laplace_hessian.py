"""Exact Hessian of the Laplace-approximated log-likelihood over ``(β, θ)``.

Per group the Laplace log-likelihood is ``φ(ψ) = F(û(ψ), ψ)`` with
``F(u, ψ) = h(u, ψ) − ½ log H(u, ψ)``, ``H = −h_uu`` and the mode ``û`` solving
``h_u = 0``. Differentiating twice, with ``û_ψ = h_uψ / H`` and ``û_ψψ'`` from the
second derivative of the mode equation (implicit function theorem):

    φ_ψψ' = F_ψψ' + F_uψ û_ψ' + û_ψ F_uψ' + F_uu û_ψ û_ψ' + F_u û_ψψ'.

Everything reduces to per-group sums of the first four derivatives of the binomial
log-likelihood in the linear predictor (``r``, ``−v``, ``−v'``, ``−v''``) times
``1``, ``x`` and ``x xᵀ``; the ``x xᵀ`` sums only ever appear multiplied by a group
scalar, so they fold into one weighted Gram matrix ``Xᵀ diag(ω) X`` per batch
element. One call costs about as much as two gradient evaluations, instead of the
``p + 1`` of a finite-difference Hessian.
"""

from __future__ import annotations

import numpy as np

from syndesmo.engines.native.quadrature import Layout, ModeState, cross


def _xsum(layout: Layout, Xb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-group sums of ``w_i x_i``: ``w`` (n, B) -> (G, B, p)."""
    if Xb.ndim == 2:
        wx = w[:, :, None] * Xb[:, None, :]
    else:
        wx = np.moveaxis(w[None, :, :] * Xb, 0, -1)
    return layout.group_sum(wx)


def _inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Σ_g a[g, b]ᵀ b[g, b]`` per batch element: (G, B, P) twice -> (B, P, P), as one
    stacked matrix product (einsum's loop over three operands is many times slower)."""
    return np.matmul(a.transpose(1, 2, 0), b.transpose(1, 0, 2))


def laplace_hessian(layout: Layout, rep: np.ndarray, psi: np.ndarray, st: ModeState) -> np.ndarray:
    """Hessian ``(B, p + 1, p + 1)`` of the Laplace log-likelihood at ``psi``.

    ``st`` must hold the converged conditional modes at ``psi`` (as returned by
    ``loglik_and_grad``).
    """
    Xb = layout.design(rep)
    p = layout.p
    th = psi[:, -1]
    th2, th3 = th * th, th * th * th
    u, H, W, R = st.u, st.H, st.W, st.R
    v = st.v
    v1 = v * (1.0 - 2.0 * st.mu)  # dv/dη
    v2 = v * (1.0 - 6.0 * st.mu * (1.0 - st.mu))  # d²v/dη²
    T = layout.group_sum(v1)
    Q = layout.group_sum(v2)
    S1 = _xsum(layout, Xb, v)
    T1 = _xsum(layout, Xb, v1)
    Q1 = _xsum(layout, Xb, v2)

    Hu = th3 * T  # ∂H/∂u
    Fu = -0.5 * Hu / H  # ∂F/∂u at the mode (h_u = 0 there)
    Fuu = -H - 0.5 * (th2 * th2 * Q / H - Hu**2 / H**2)
    kappa = Fu / H  # multiplies h_uψψ' (from F_u û_ψψ')

    def vec(beta_part: np.ndarray, theta_part: np.ndarray) -> np.ndarray:
        return np.concatenate([beta_part, theta_part[..., None]], axis=-1)  # (G, B, P)

    a = vec(-th[:, None] * S1, R - th * u * W)  # h_uψ
    Hpsi = vec(th2[:, None] * T1, 2.0 * th * W + th2 * u * T)  # H_ψ
    b = vec(th3[:, None] * Q1, 3.0 * th2 * T + th3 * u * Q)  # H_uψ
    # Σ_g of  ½/H² H_ψH_ψᵀ + e dᵀ + d eᵀ + c₂ d dᵀ  with  d = a/H  and
    # e = a − ½ b/H + (½ H_u/H² − κ) H_ψ,  regrouped as one symmetric product (L aᵀ + a Lᵀ)
    # and one for H_ψ: two stacked matrix products instead of three
    c2 = Fuu - kappa * th3 * T
    iH = 1.0 / H
    w_aa = iH + 0.5 * c2 * iH**2
    w_ab = -0.5 * iH**2
    w_ah = (0.5 * Hu * iH**2 - kappa) * iH
    L = w_aa[..., None] * a
    L += w_ab[..., None] * b
    L += w_ah[..., None] * Hpsi
    hess = _inner((0.5 * iH**2)[..., None] * Hpsi, Hpsi)
    la = _inner(L, a)
    hess += la + np.swapaxes(la, 1, 2)

    # Terms with second derivatives in ψ of h, H and h_u (h_ψψ', H_ψψ', h_uψψ').
    omega = -v - layout.expand(0.5 * th2 / H) * v2 - layout.expand(kappa * th) * v1
    hess[:, :p, :p] += layout.gram(rep, omega)
    # β–θ terms: Σ_g (c_S S₁ + c_T T₁ + c_Q Q₁) = Xᵀ (row weights), no per-group vectors
    c_s = -u - kappa
    c_t = -(th * iH) - kappa * th * u
    c_q = -0.5 * th2 * u * iH
    rows = layout.expand(c_s) * v
    rows += layout.expand(c_t) * v1
    rows += layout.expand(c_q) * v2
    bt = cross(Xb, rows)
    tt = (
        -(u**2) * W
        - 0.5 * (2.0 * W + 4.0 * th * u * T + th2 * u**2 * Q) / H
        + kappa * (-2.0 * u * W - th * u**2 * T)
    ).sum(axis=0)
    hess[:, :p, p] += bt
    hess[:, p, :p] += bt
    hess[:, p, p] += tt
    return hess
