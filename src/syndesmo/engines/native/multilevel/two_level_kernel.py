"""The compiled inner loop of :mod:`two_level`: Laplace value and exact gradient of
``(1|outer/inner)`` models, one outer node (patient) at a time.

For one study and parameters ``ψ = (β, θ₁, θ₂)`` the outer nodes are independent
blocks: each has its own spherical effects ``(b_1 … b_J, c)`` and its own *arrow*
Hessian (``two_level``'s docstring gives the algebra). So the conditional modes, the
log determinant and the gradient's terms are all computed block by block, in a loop
that touches each row a few times: Newton for the modes with step halving (as
``laplace.solve_modes`` halves per block), then the closed forms of ``H⁻¹``.

Arrays are ``(R, K, J, T)`` (study, outer node, inner node within it, row within
that), ``X`` ``(R, K, J, T, p)``; a slot with ``m = 0`` is no row. Inner nodes of one
outer node with the same rows are stored once, with their number ``w`` ``(R, K, J)``
(:func:`merge_inner_nodes`): their modes are equal, so each sum over inner nodes
counts a stored node ``w`` times, and the nodes with ``w > 0`` come first. Outer nodes
of one study with the same inner nodes and counts are likewise computed once and
counted ``wo`` ``(R, K)`` times (:func:`merge_outer_nodes`; ``wo = 0`` for the
others). Compiled with numba (``cache=True``: the machine code is kept beside this
file after the first call).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from syndesmo.engines.native.multilevel.laplace import MIN_HALVING, MODE_MAXITER

# A Newton step in the modes that moves no linear predictor by more than this is taken
# without checking that the log density rose, which saves the logarithms of a pass: it
# always rises. With A = −∇²h (positive definite) and the step d = A⁻¹∇h, the rise is
# dᵀA(0)d − ∫₀¹ (1 − s) dᵀA(s)d ds. A row's weight μ(1 − μ) changes by at most a
# factor e^{|Δη|} along the step (|d log μ(1 − μ)/dη| = |1 − 2μ| ≤ 1), and the
# prior's part not at all, so the integral is at most ∫₀¹ (1 − s) e^{s} ds = e − 2
# ≈ 0.72 times dᵀA(0)d when |Δη| ≤ 1.
UNCHECKED_ETA = 1.0


@njit(cache=True, error_model="numpy", inline="always")
def _rows(eta0, y, m, w, nj, b, c, t1, t2, W, R, mu, v, res, with_ll, store):
    """Rows of the first ``nj`` inner nodes of one block at modes ``(b, c)``: per inner
    node the sums ``W_j`` of the weights ``m μ (1 − μ)`` and ``R_j`` of the residuals
    ``y − m μ``; with ``store`` each row's ``μ``, weight and residual too. Returns ``h``,
    the log density of the block (NaN without ``with_ll``, which saves the
    logarithms)."""
    T = eta0.shape[1]
    h = -0.5 * c * c
    for j in range(nj):
        hj = -0.5 * b[j] * b[j]
        Wj = 0.0
        Rj = 0.0
        for t in range(T):
            if m[j, t] == 0.0:
                if store:
                    mu[j, t] = 0.0
                    v[j, t] = 0.0
                    res[j, t] = 0.0
                continue
            eta = eta0[j, t] + t1 * b[j] + t2 * c
            e = math.exp(-abs(eta))
            inv = 1.0 / (1.0 + e)
            ei = e * inv
            mu_t = inv if eta >= 0 else ei
            v_t = m[j, t] * (ei * inv)
            r_t = y[j, t] - m[j, t] * mu_t
            Wj += v_t
            Rj += r_t
            if store:
                mu[j, t] = mu_t
                v[j, t] = v_t
                res[j, t] = r_t
            if with_ll:
                hj += y[j, t] * eta - m[j, t] * (max(eta, 0.0) + math.log1p(e))
        W[j] = Wj
        R[j] = Rj
        h += w[j] * hj
    return h if with_ll else np.nan


@njit(cache=True, error_model="numpy", inline="always")
def _arrow(W, w, nj, t1, t2, D, C):
    """``D_j = H_jj`` and ``C_j = H_jk`` from the weight sums ``W_j``, in place;
    returns the Schur complement."""
    Wk = 0.0
    cc = 0.0
    for j in range(nj):
        D[j] = 1.0 + t1 * t1 * W[j]
        C[j] = t1 * t2 * W[j]
        Wk += w[j] * W[j]
        cc += w[j] * C[j] * C[j] / D[j]
    return 1.0 + t2 * t2 * Wk - cc


@njit(cache=True, error_model="numpy", inline="always")
def _mode_derivatives(Xk, mk, wk, nj, v, res, bk, ck, t1, t2, W, D, C, S, dbk, dck, rhs, rhs_c):
    """``dû/dψ`` of one block at its modes: ``H⁻¹`` times ``∂g/∂ψ`` for each ψ_q,
    through the arrow's Schur complement (``dbk`` ``(J, P)``, ``dck`` ``(P,)``;
    ``rhs`` ``(J, P)`` and ``rhs_c`` ``(P,)`` are scratch)."""
    J, T = v.shape
    p = Xk.shape[2]
    P = p + 2
    rhs[:] = 0.0
    rhs_c[:] = 0.0
    Wk = 0.0
    Rk = 0.0
    Wb = 0.0
    for j in range(nj):
        Rj = 0.0
        for t in range(T):
            if mk[j, t] == 0.0:
                continue
            Rj += res[j, t]
            for q in range(p):
                vx = v[j, t] * Xk[j, t, q]
                rhs[j, q] -= t1 * vx
                rhs_c[q] -= wk[j] * t2 * vx
        rhs[j, p] = Rj - t1 * W[j] * bk[j]
        rhs[j, p + 1] = -t1 * W[j] * ck
        Wk += wk[j] * W[j]
        Rk += wk[j] * Rj
        Wb += wk[j] * W[j] * bk[j]
    rhs_c[p] = -t2 * Wb
    rhs_c[p + 1] = Rk - t2 * Wk * ck
    for q in range(P):
        num = rhs_c[q]
        for j in range(nj):
            num -= wk[j] * C[j] * rhs[j, q] / D[j]
        d2 = num / S
        dck[q] = d2
        for j in range(nj):
            dbk[j, q] = (rhs[j, q] - C[j] * d2) / D[j]
        for j in range(nj, J):
            dbk[j, q] = 0.0


@njit(cache=True, inline="always")
def _rescale(old, new):
    """``old / new`` where both are of one sign, else 1 (see ``evaluate_blocks``)."""
    if math.isnan(old) or old * new <= 0.0:
        return 1.0
    return min(max(old / new, 1.0 / MAX_RESCALE), MAX_RESCALE)


#: Bound on the factor by which the predicted change of the modes is rescaled.
MAX_RESCALE = 4.0


@njit(cache=True, error_model="numpy")
def evaluate_blocks(
    X, y, m, w, wo, idx, psi, B, Cm, DB, DC, AT, tol, want_value, keep, value, grad, ok
):
    """Laplace log-likelihood (no binomial coefficients) and its exact gradient.

    For the studies ``idx`` with parameters ``psi[i]`` (β, θ₁, θ₂), fills
    ``grad[i]``, ``value[i]`` (NaN unless ``want_value``: a Hessian by differences of
    the gradient saves the logarithms of the last pass) and ``ok[i]`` (False where a
    block's modes did not converge). ``w`` counts the inner nodes each stored one
    stands for, ``wo`` the outer nodes (0: computed with another one, whose state
    entries it keeps at 0).

    The warm start of study ``r = idx[i]`` is its state: the modes ``B[r]`` ``(K, J)``,
    ``Cm[r]`` ``(K,)`` found at ``AT[r]`` (NaN: none yet) and their derivatives over
    ``ψ``, ``DB[r]`` ``(K, J, P)`` and ``DC[r]`` ``(K, P)``; Newton starts from a
    prediction of the modes at ``ψ``, which saves a pass or two (the modes it ends at
    are the same, to the mode tolerance). The prediction is first order in the
    random effects on the scale of the linear predictor, ``θ₁ b`` and ``θ₂ c``, not
    in the spherical ``b`` and ``c``: ``θ₁ b̂ ≈ θ₁' b̂' + (d(θ₁ b̂)/dψ)(ψ − ψ')``
    gives ``b̂ ≈ b̂' + (θ₁'/θ₁)(db̂/dψ)(ψ − ψ')``. Where the data pin a VU's effect on
    the logit (large θ₁, the effect hardly moving as θ₁ does) it is nearly exact,
    while the plain first-order prediction in ``b`` overshoots by ``Δθ₁/θ₁``; on the
    two-reader power design it saved about one Newton pass in eight. With ``keep`` a
    study
    whose modes converged gets a new state: the modes found,
    their derivatives ``dû/dψ = H⁻¹ ∂g/∂ψ`` (``g`` the gradient of a block's log
    density in its modes) and ``psi[i]``.
    """
    K, J, T = y.shape[1], y.shape[2], y.shape[3]
    p = X.shape[4]
    eta0 = np.empty((J, T))
    mu = np.empty((J, T))
    v = np.empty((J, T))
    res = np.empty((J, T))
    W_t = np.empty(J)
    R_t = np.empty(J)
    W = np.empty(J)
    D = np.empty(J)
    C = np.empty(J)
    d1 = np.empty(J)
    bt = np.empty(J)
    Rj = np.empty(J)
    tj = np.empty(J)
    tk = np.empty(J)
    lev = np.empty(J)
    c1 = np.empty(J)
    rhs = np.empty((J, p + 2))
    rhs_c = np.empty(p + 2)
    P = p + 2
    shift = np.empty(P)
    b = np.empty((K, J))
    c = np.empty(K)
    db = np.empty((K, J, P))
    dc = np.empty((K, P))
    for i in range(len(idx)):
        r = idx[i]
        t1 = psi[i, p]
        t2 = psi[i, p + 1]
        for q in range(P):
            shift[q] = 0.0 if math.isnan(AT[r, q]) else psi[i, q] - AT[r, q]
        rescale1 = _rescale(AT[r, p], t1)
        rescale2 = _rescale(AT[r, p + 1], t2)
        val = 0.0
        g = np.zeros(P)
        study_ok = True
        for k in range(K):
            ow = wo[r, k]
            if ow == 0.0:  # computed with another outer node, or without rows
                b[k] = 0.0
                c[k] = 0.0
                db[k] = 0.0
                dc[k] = 0.0
                continue
            yk = y[r, k]
            mk = m[r, k]
            wk = w[r, k]
            nj = 0
            while nj < J and wk[nj] > 0.0:
                nj += 1
            for j in range(nj):
                s = 0.0
                for q in range(P):
                    s += DB[r, k, j, q] * shift[q]
                b[k, j] = B[r, k, j] + rescale1 * s
            b[k, nj:] = 0.0
            s = 0.0
            for q in range(P):
                s += DC[r, k, q] * shift[q]
            c[k] = Cm[r, k] + rescale2 * s
            anyrow = False
            for j in range(nj):
                for t in range(T):
                    if mk[j, t] != 0.0:
                        anyrow = True
                        s = 0.0
                        for q in range(p):
                            s += X[r, k, j, t, q] * psi[i, q]
                        eta0[j, t] = s
                    else:
                        eta0[j, t] = 0.0
            bk = b[k]
            if not anyrow:  # an outer node without rows: modes 0, adds nothing
                bk[:] = 0.0
                c[k] = 0.0
                db[k] = 0.0
                dc[k] = 0.0
                continue
            ck = c[k]
            h = _rows(eta0, yk, mk, wk, nj, bk, ck, t1, t2, W, Rj, mu, v, res, False, False)
            converged = False
            S = 1.0
            for _ in range(MODE_MAXITER):
                S = _arrow(W, wk, nj, t1, t2, D, C)
                g2 = -ck
                for j in range(nj):
                    g2 += t2 * wk[j] * Rj[j]
                num = g2
                for j in range(nj):
                    num -= wk[j] * C[j] * (t1 * Rj[j] - bk[j]) / D[j]
                d2 = num / S
                big = abs(d2)
                moves = 0.0  # the largest change of a linear predictor
                for j in range(nj):
                    d1[j] = (t1 * Rj[j] - bk[j] - C[j] * d2) / D[j]
                    big = max(big, abs(d1[j]))
                    moves = max(moves, abs(t1 * d1[j] + t2 * d2))
                if not math.isfinite(big):
                    break
                if big < tol:  # the last full step, then every row there
                    for j in range(nj):
                        bk[j] += d1[j]
                    ck += d2
                    h = _rows(
                        eta0, yk, mk, wk, nj, bk, ck, t1, t2, W, Rj, mu, v, res, want_value, True
                    )
                    S = _arrow(W, wk, nj, t1, t2, D, C)
                    converged = True
                    break
                if moves <= UNCHECKED_ETA:
                    for j in range(nj):
                        bk[j] += d1[j]
                    ck += d2
                    h = _rows(eta0, yk, mk, wk, nj, bk, ck, t1, t2, W, Rj, mu, v, res, False, False)
                    continue
                if math.isnan(h):
                    h = _rows(eta0, yk, mk, wk, nj, bk, ck, t1, t2, W, Rj, mu, v, res, True, False)
                alpha = 1.0
                while True:
                    for j in range(nj):
                        bt[j] = bk[j] + alpha * d1[j]
                    ct = ck + alpha * d2
                    h_t = _rows(
                        eta0, yk, mk, wk, nj, bt, ct, t1, t2, W_t, R_t, mu, v, res, True, False
                    )
                    if h_t >= h - 1e-12 * (1.0 + abs(h)):
                        break
                    alpha *= 0.5
                    if alpha < MIN_HALVING:
                        break
                bk[:nj] = bt[:nj]
                ck = ct
                h = h_t
                W, W_t = W_t, W
                Rj, R_t = R_t, Rj
            c[k] = ck
            if not converged:
                study_ok = False
                break
            if want_value:  # h(û) − ½ log det H, log det H = Σ_j log D_j + log S
                hk = h - 0.5 * math.log(S)
                for j in range(nj):
                    hk -= 0.5 * wk[j] * math.log(D[j])
                val += ow * hk
            # exact gradient (laplace.py's formula) with the arrow's H⁻¹ in closed form
            h_kk = 1.0 / S
            lev_vp = 0.0
            s_num = 0.0
            for j in range(nj):
                q = C[j] / D[j]
                h_jk = -q * h_kk
                h_jj = 1.0 / D[j] + q * q * h_kk
                tj[j] = h_jj * t1 + h_jk * t2
                tk[j] = h_jk * t1 + h_kk * t2
                lev[j] = t1 * tj[j] + t2 * tk[j]
                vpj = 0.0
                for t in range(T):
                    vpj += v[j, t] * (1.0 - 2.0 * mu[j, t])
                c1[j] = t1 * lev[j] * vpj
                lev_vp += wk[j] * lev[j] * vpj
                s_num -= wk[j] * C[j] * c1[j] / D[j]
            s2 = (t2 * lev_vp + s_num) / S
            for j in range(nj):
                s1 = (c1[j] - C[j] * s2) / D[j]
                a_s = t1 * s1 + t2 * s2
                Pj = 0.0
                for t in range(T):
                    if mk[j, t] == 0.0:
                        continue
                    vp = v[j, t] * (1.0 - 2.0 * mu[j, t])
                    rho = res[j, t] - 0.5 * vp * lev[j] + 0.5 * v[j, t] * a_s
                    for q in range(p):
                        g[q] += ow * wk[j] * rho * X[r, k, j, t, q]
                    Pj += rho
                g[p] += ow * wk[j] * (Pj * bk[j] - W[j] * tj[j] - 0.5 * Rj[j] * s1)
                g[p + 1] += ow * wk[j] * (Pj * ck - W[j] * tk[j] - 0.5 * Rj[j] * s2)
            if keep:
                _mode_derivatives(
                    X[r, k],
                    mk,
                    wk,
                    nj,
                    v,
                    res,
                    bk,
                    ck,
                    t1,
                    t2,
                    W,
                    D,
                    C,
                    S,
                    db[k],
                    dc[k],
                    rhs,
                    rhs_c,
                )
        ok[i] = study_ok
        value[i] = val if study_ok and want_value else np.nan
        for q in range(P):
            grad[i, q] = g[q] if study_ok else np.nan
        if keep and study_ok:
            B[r] = b
            Cm[r] = c
            DB[r] = db
            DC[r] = dc
            AT[r] = psi[i]


@njit(cache=True, inline="always")
def _slot_row(rows_in, at, r, k, j, t):
    """The row of study ``r`` in slot ``(k, j, t)``, or -1 (no row there, or not one
    of the study's rows)."""
    i = at[k, j, t]
    if i >= 0 and rows_in[r, i]:
        return i
    return -1


@njit(cache=True)
def merge_inner_nodes(X, y, m, rows_in, at, Xo, yo, mo, w):
    """The layout's inner nodes from the studies' rows, each distinct one stored once.

    Reads ``X`` ``(R, n, p)``, ``y``, ``m`` and ``rows_in`` ``(R, n)`` (the rows of
    each study's analysis) and ``at`` ``(K, J, T)``, the row in each slot (-1: none).
    Writes the distinct inner nodes of each outer node of each study, in order of
    first appearance, to the front of ``Xo``, ``yo``, ``mo`` (``(R, K, J, T[, p])``,
    zeros on entry; a slot without a row stays 0) with their number in ``w``
    ``(R, K, J)``; inner nodes without rows are left out. Returns the largest number
    of distinct inner nodes of an outer node.
    """
    R = X.shape[0]
    K, J, T = at.shape
    p = X.shape[2]
    top = 0
    for r in range(R):
        for k in range(K):
            n = 0
            for j in range(J):
                empty = True
                for t in range(T):
                    if _slot_row(rows_in, at, r, k, j, t) >= 0:
                        empty = False
                if empty:
                    continue
                found = -1
                for u in range(n):
                    same = True
                    for t in range(T):
                        i = _slot_row(rows_in, at, r, k, j, t)
                        if i < 0:
                            same = mo[r, k, u, t] == 0.0
                        elif y[r, i] != yo[r, k, u, t] or m[r, i] != mo[r, k, u, t]:
                            same = False
                        else:
                            for q in range(p):
                                if X[r, i, q] != Xo[r, k, u, t, q]:
                                    same = False
                                    break
                        if not same:
                            break
                    if same:
                        found = u
                        break
                if found >= 0:
                    w[r, k, found] += 1.0
                    continue
                for t in range(T):
                    i = _slot_row(rows_in, at, r, k, j, t)
                    if i >= 0:
                        yo[r, k, n, t] = y[r, i]
                        mo[r, k, n, t] = m[r, i]
                        for q in range(p):
                            Xo[r, k, n, t, q] = X[r, i, q]
                w[r, k, n] = 1.0
                n += 1
            top = max(top, n)
    return top


@njit(cache=True, inline="always")
def _same_inner_nodes(X, y, m, w, r, k, u):
    """Whether outer nodes ``k`` and ``u`` of study ``r`` hold the same inner nodes
    with the same counts, in any order (the stored inner nodes of one outer node are
    distinct, so matching each of ``k``'s to one of ``u``'s decides it)."""
    J, T = y.shape[2], y.shape[3]
    p = X.shape[4]
    for j in range(J):
        if (w[r, k, j] == 0.0) != (w[r, u, j] == 0.0):
            return False  # not as many inner nodes
    for j in range(J):
        if w[r, k, j] == 0.0:
            break
        found = False
        for v in range(J):
            if w[r, u, v] == 0.0:
                break
            if w[r, u, v] != w[r, k, j]:
                continue
            same = True
            for t in range(T):
                if y[r, k, j, t] != y[r, u, v, t] or m[r, k, j, t] != m[r, u, v, t]:
                    same = False
                    break
                for q in range(p):
                    if X[r, k, j, t, q] != X[r, u, v, t, q]:
                        same = False
                        break
                if not same:
                    break
            if same:
                found = True
                break
        if not found:
            return False
    return True


@njit(cache=True)
def merge_outer_nodes(X, y, m, w, wo):
    """Count the outer nodes of each study that hold the same inner nodes once.

    Reads the output of :func:`merge_inner_nodes` and writes ``wo`` ``(R, K)`` (zeros
    on entry): for each set of outer nodes of a study with the same inner nodes and
    counts, their number at one of them and 0 at the others; 0 at an outer node
    without rows. Candidates are found by a key that does not depend on the order of
    the inner nodes (an integer sum over them, exact in any order) and confirmed
    element by element. Returns the number of outer nodes counted at another.
    """
    R, K, J, T = y.shape
    p = X.shape[4]
    key = np.zeros(K, dtype=np.int64)
    merged = 0
    for r in range(R):
        for k in range(K):
            s = 0
            for j in range(J):
                if w[r, k, j] == 0.0:
                    break
                node = w[r, k, j]
                for t in range(T):
                    node = node * 1.618033988749895 + y[r, k, j, t] + 3.0 * m[r, k, j, t]
                    for q in range(p):
                        node = node * 1.324717957244746 + X[r, k, j, t, q]
                s += np.int64(math.sin(node) * 2.0**40)
            key[k] = s
        order = np.argsort(key)
        start = 0
        while start < K:
            end = start + 1
            while end < K and key[order[end]] == key[order[start]]:
                end += 1
            for a in range(start, end):
                k = order[a]
                if w[r, k, 0] == 0.0:
                    continue  # no rows
                wo[r, k] = 1.0
                for b in range(start, a):
                    u = order[b]
                    if wo[r, u] > 0.0 and _same_inner_nodes(X, y, m, w, r, k, u):
                        wo[r, u] += 1.0
                        wo[r, k] = 0.0
                        merged += 1
                        break
            start = end
    return merged
