"""Many Laplace fits of one two-level nested model ``(1|outer/inner)`` at once.

Power for the two-reader design fits ``y ~ x + (1|patient/vu)`` to hundreds of
simulated studies. :func:`~syndesmo.engines.native.multilevel.fit.fit_multilevel` fits
one study in about 0.3 s, almost all of it the fixed cost of many small array
operations. Here the rows of all studies of a block lie in one padded layout (study ×
outer node × inner node × row, a patient's inner nodes with the same rows stored once
and counted), every study has its own ``ψ = (β, θ_inner, θ_outer)``, and each step of
the fit is one call of a compiled kernel (``two_level_kernel``) over all of them.

The model and its Laplace approximation are those of ``laplace.py``, written out for
two nested scalar intercepts. With spherical effects ``b_j`` (inner node ``j``) and
``c_k`` (outer node ``k``), ``η_i = x_iβ + θ₁ b_j + θ₂ c_k``; the Hessian of the
penalised log density is an *arrow* per outer node::

    H_jj = 1 + θ₁² W_j,   H_kk = 1 + θ₂² Σ_j W_j,   H_jk = θ₁ θ₂ W_j,

(``W_j`` the sum of ``m μ (1 − μ)`` over the rows of ``j``), so solves, the log
determinant and the elements of ``H⁻¹`` the exact gradient needs are closed forms
through the Schur complement ``S_k = H_kk − Σ_j H_jk² / H_jj``.

The maximisation mirrors :func:`~syndesmo.engines.native.multilevel.fit.maximise`
step for step (see :func:`maximise`), the boundary θ = 0 included. A study that needs
what this path does not do — a saddle point to escape, a line search that fails — is
returned as *not done*, for the caller to fit alone by ``fit_multilevel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syndesmo.engines.native.multilevel.fit import (
    FD_STEP,
    REFRESH_ABOVE,
    REFRESH_EVERY,
    SNAP_TOL,
    first_trial,
    glm_start_many,
)
from syndesmo.engines.native.multilevel.laplace import MODE_TOL
from syndesmo.fitting.diagnostics import study_patterns

MAXITER = 200  # fit_multilevel's default maxiter


@dataclass
class Layout:
    """The rows of many studies in one padded array per quantity.

    Axes ``(R, K, J, T)``: study, outer node, inner node within the outer node, row
    within the inner node; ``X`` has the columns last. Inner nodes of an outer node
    with the same rows are stored once, ``w`` ``(R, K, J)`` times (0: no inner node),
    the stored ones first; outer nodes of a study with the same stored inner nodes
    and counts are computed once, ``wo`` ``(R, K)`` times (0 at the others, and at an
    outer node without rows). A slot with no row of the study's analysis has ``m = 0``
    (and ``y = 0``): it adds nothing to any sum, and an outer node without rows keeps
    its mode at 0 and adds 0 to the log determinant, exactly as if it were absent.
    """

    X: np.ndarray  # (R, K, J, T, p)
    y: np.ndarray  # (R, K, J, T)
    m: np.ndarray  # (R, K, J, T)
    w: np.ndarray  # (R, K, J)
    wo: np.ndarray  # (R, K)

    @property
    def n_rep(self) -> int:
        return self.y.shape[0]

    def subset(self, keep: np.ndarray) -> Layout:
        """The studies ``keep`` (indices or a mask) in a layout of their own."""
        return Layout(self.X[keep], self.y[keep], self.m[keep], self.w[keep], self.wo[keep])

    def row_counts(self) -> np.ndarray:
        """How many rows of the study each stored row stands for, ``(R, K, J, T)``
        (0 at an empty slot and at outer nodes counted at another)."""
        return (self.m > 0) * (self.w * self.wo[..., None])[..., None]


def slots(outer: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``(k, j, t)`` slot: outer node, inner node within it, row within that."""
    import pandas as pd

    k, _ = pd.factorize(outer, sort=True)
    pair, _ = pd.factorize(pd.MultiIndex.from_arrays([k, inner]), sort=True)
    first = np.full(int(k.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, k, pair)  # pairs are numbered in (outer, inner) order
    j = pair - first[k]
    order = np.argsort(pair, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(pair[order])) + 1]
    t = np.empty(len(pair), dtype=np.int64)
    t[order] = np.arange(len(pair)) - np.repeat(starts, np.diff(np.r_[starts, len(pair)]))
    return k, j, t


#: The padded layout is used only while it holds at most this many slots per row
#: (a design with a few very large inner nodes would be mostly padding).
MAX_PADDING = 4


def build_layout(
    X: np.ndarray,
    Y: np.ndarray,
    m: np.ndarray,
    rows_in: np.ndarray,
    outer: np.ndarray,
    inner: np.ndarray,
) -> Layout | None:
    """The padded layout of ``R`` studies that share their rows' groups, or ``None``
    where it would hold more than ``MAX_PADDING`` slots per row.

    ``X`` ``(R, n, p)``, ``Y``, ``m`` and ``rows_in`` ``(R, n)`` (the rows of each
    study's analysis); ``outer`` and ``inner`` ``(n,)`` codes (an inner code names an
    inner node within its outer node). A patient's VUs with the same readings are
    stored once (a power design's 12 VUs hold about 3 distinct ones), and patients
    with the same stored VUs are counted at one of them (about 1 in 6 there).
    """
    from syndesmo.engines.native.multilevel.two_level_kernel import (
        merge_inner_nodes,
        merge_outer_nodes,
    )

    R, n, p = X.shape
    k, j, t = slots(np.asarray(outer), np.asarray(inner))
    if (k.max() + 1) * (j.max() + 1) * (t.max() + 1) > MAX_PADDING * n:
        return None
    shape = (R, int(k.max()) + 1, int(j.max()) + 1, int(t.max()) + 1)
    at = np.full(shape[1:], -1, dtype=np.int64)
    at[k, j, t] = np.arange(n)
    Xo, yo, mo = np.zeros((*shape, p)), np.zeros(shape), np.zeros(shape)
    w = np.zeros(shape[:3])
    top = max(
        int(
            merge_inner_nodes(  # C order and writeable: the one compiled signature
                np.require(X, float, ["C", "W"]),
                np.require(Y, float, ["C", "W"]),
                np.require(m, float, ["C", "W"]),
                np.require(rows_in, np.bool_, ["C", "W"]),
                at,
                Xo,
                yo,
                mo,
                w,
            )
        ),
        1,
    )
    stored = (slice(None), slice(None), slice(0, top))
    L = Layout(*(np.ascontiguousarray(a[stored]) for a in (Xo, yo, mo, w)), np.zeros(shape[:2]))
    merge_outer_nodes(L.X, L.y, L.m, L.w, L.wo)
    return L


# --------------------------------------------------------------------------------------
# Maximisation, all studies in step
# --------------------------------------------------------------------------------------


class _Objective:
    """Value and exact gradient of some studies of a layout, with warm-started modes.

    Each study keeps the modes at its last kept point and their derivatives over
    ``ψ``, from which the kernel predicts the modes elsewhere (see
    ``two_level_kernel.evaluate_blocks``).
    """

    def __init__(self, L: Layout, P: int) -> None:
        self.L = L
        R, K, J, _ = L.y.shape
        self.b = np.zeros((R, K, J))
        self.c = np.zeros((R, K))
        self.db = np.zeros((R, K, J, P))
        self.dc = np.zeros((R, K, P))
        self.at = np.full((R, P), np.nan)  # where the modes were found

    def evaluate(self, idx: np.ndarray, psi: np.ndarray, keep: bool, value: bool = True):
        """At ``psi`` ``(len(idx), P)`` for the studies ``idx``; with ``keep`` the modes
        found become the warm start of those studies (where they converged). Without
        ``value`` the values are NaN (a Hessian needs only gradients)."""
        from syndesmo.engines.native.multilevel.two_level_kernel import evaluate_blocks

        n, P = psi.shape
        out = np.empty(n)
        g = np.empty((n, P))
        ok = np.empty(n, dtype=np.bool_)
        L = self.L
        evaluate_blocks(
            L.X,
            L.y,
            L.m,
            L.w,
            L.wo,
            np.asarray(idx, dtype=np.int64),
            np.ascontiguousarray(psi),
            self.b,
            self.c,
            self.db,
            self.dc,
            self.at,
            MODE_TOL,
            value,
            keep,
            out,
            g,
            ok,
        )
        return out, g

    def hessian(self, idx: np.ndarray, psi: np.ndarray, grad: np.ndarray | None = None):
        """Differences of the exact gradient, ``(len(idx), P, P)``: central, or forward
        from ``grad`` (the gradient at ``psi``) to steer the steps (as
        ``fit.steering_hessian``)."""
        n, P = psi.shape
        h = FD_STEP * np.maximum(1.0, np.abs(psi))
        H = np.empty((n, P, P))
        for i in range(P):
            up = psi.copy()
            up[:, i] += h[:, i]
            _, g_up = self.evaluate(idx, up, keep=False, value=False)
            if grad is not None:
                H[:, i, :] = (g_up - grad) / h[:, i, None]
                continue
            dn = psi.copy()
            dn[:, i] -= h[:, i]
            _, g_dn = self.evaluate(idx, dn, keep=False, value=False)
            H[:, i, :] = (g_up - g_dn) / (2.0 * h[:, i, None])
        return 0.5 * (H + np.swapaxes(H, 1, 2))


def _positive(info: np.ndarray) -> np.ndarray:
    """Per study, ``info`` with its eigenvalues replaced by their absolute values."""
    lam, V = np.linalg.eigh(0.5 * (info + np.swapaxes(info, 1, 2)))
    top = np.max(np.abs(lam), axis=1, keepdims=True)
    floor = 1e-8 * np.maximum(top, 1e-300) + 1e-12
    return np.einsum("rij,rj,rkj->rik", V, np.maximum(np.abs(lam), floor), V)


def _ascent_steps(info: np.ndarray, grad: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Newton ascent steps ``info⁻¹ grad`` on each study's free coordinates."""
    if not fixed.any():
        return np.linalg.solve(info, grad[..., None])[..., 0]
    both = fixed[:, :, None] | fixed[:, None, :]
    eye = np.broadcast_to(np.eye(info.shape[1], dtype=bool), info.shape)
    A = np.where(both, np.where(eye, 1.0, 0.0), info)
    return np.linalg.solve(A, np.where(fixed, 0.0, grad)[..., None])[..., 0]


def _bfgs(info: np.ndarray, s: np.ndarray, yv: np.ndarray) -> np.ndarray:
    """BFGS updates of the negative Hessians (each skipped unless sᵀy > 0)."""
    sy = np.einsum("ri,ri->r", s, yv)
    Ns = np.einsum("rij,rj->ri", info, s)
    sNs = np.einsum("ri,ri->r", s, Ns)
    ok = (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(yv, axis=1)) & (sNs > 0)
    safe_sNs = np.where(ok, sNs, 1.0)
    safe_sy = np.where(ok, sy, 1.0)
    upd = (
        info
        - np.einsum("ri,rj->rij", Ns, Ns) / safe_sNs[:, None, None]
        + np.einsum("ri,rj->rij", yv, yv) / safe_sy[:, None, None]
    )
    return np.where(ok[:, None, None], upd, info)


@dataclass
class Result:
    """Per study of the layout: the optimum, the Hessian there, whether this path
    finished it (``done``) and converged; ``n_iter`` counts quasi-Newton steps."""

    psi: np.ndarray
    value: np.ndarray
    grad: np.ndarray
    hess: np.ndarray
    done: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    decrement: np.ndarray


def maximise(L: Layout, psi0: np.ndarray, tol: float, maxiter: int = MAXITER) -> Result:
    """Maximise the Laplace log-likelihood of every study of ``L`` from ``psi0``.

    Every study follows :func:`~syndesmo.engines.native.multilevel.fit.maximise`'s
    path (the same steps, to rounding): BFGS steps with step halving (from at most
    ``first_trial``'s fraction of the step) from the Hessian by forward differences
    of the exact gradient, recomputed every ``REFRESH_EVERY`` steps while the
    decrement is above ``REFRESH_ABOVE``, verified by Newton steps on a recomputed
    Hessian until the Newton decrement is below ``tol``, one last Newton step, and
    the Hessian there by central differences for the standard errors.

    A standard deviation that ends within ``SNAP_TOL`` of 0 is set to 0 and held
    there if the likelihood allows, as there. A study leaves this path (``done``
    False, for ``fit_multilevel`` alone) where ``fit.maximise`` would escape a saddle
    point or give up a line search; a study that reaches ``maxiter`` is done and not
    converged, as there.
    """
    R, P = psi0.shape
    p = P - 2
    obj = _Objective(L, P)
    every = np.arange(R)
    psi = psi0.copy()
    val, grad = obj.evaluate(every, psi, keep=True)
    active = np.isfinite(val)
    hess = np.full((R, P, P), np.nan)
    info = np.tile(np.eye(P), (R, 1, 1))
    first = np.flatnonzero(active)
    hess[first] = obj.hessian(first, psi[first], grad[first])
    info[first] = _positive(-hess[first])
    exact = np.ones(R, dtype=bool)
    done = np.zeros(R, dtype=bool)
    converged = np.zeros(R, dtype=bool)
    n_iter = np.zeros(R, dtype=int)
    decrement = np.full(R, np.inf)
    fixed = np.zeros((R, P), dtype=bool)  # standard deviations held at 0
    last_step = np.full(R, np.inf)  # length of the last accepted step
    while active.any():
        act = np.flatnonzero(active)
        step = np.zeros((R, P))
        step[act] = _ascent_steps(info[act], grad[act], fixed[act])
        decrement[act] = np.einsum("ri,ri->r", grad[act], step[act])
        small = active & (decrement < tol)
        refresh = np.flatnonzero(small & ~exact)
        finish = np.flatnonzero(small & exact)
        move = np.flatnonzero(active & ~small)
        if refresh.size:
            hess[refresh] = obj.hessian(refresh, psi[refresh], grad[refresh])
            info[refresh] = _positive(-hess[refresh])
            exact[refresh] = True
        if finish.size:
            trial = psi[finish] + step[finish]
            v_t, g_t = obj.evaluate(finish, trial, keep=True)
            vf = val[finish]
            better = np.isfinite(v_t) & (v_t >= vf - 1e-12 * (1 + np.abs(vf)))
            f = finish[better]
            psi[f], val[f], grad[f] = trial[better], v_t[better], g_t[better]
            snap = ~fixed[finish] & (np.abs(psi[finish]) < SNAP_TOL)
            snap[:, :p] = False
            snapped = np.zeros(finish.size, dtype=bool)
            rows = np.flatnonzero(snap.any(axis=1))
            if rows.size:
                at = finish[rows]
                trial = np.where(snap[rows], 0.0, psi[at])
                v_t, g_t = obj.evaluate(at, trial, keep=True)
                va = val[at]
                ok = np.isfinite(v_t) & (v_t >= va - 1e-9 * (1 + np.abs(va)))
                a = at[ok]
                psi[a], val[a], grad[a] = trial[ok], v_t[ok], g_t[ok]
                fixed[a] |= snap[rows[ok]]
                if a.size:
                    hess[a] = obj.hessian(a, psi[a], grad[a])
                    info[a] = _positive(-hess[a])
                    exact[a] = True
                snapped[rows[ok]] = True
            ended = finish[~snapped]
            active[ended] = False
            fx = fixed[ended]
            both = fx[:, :, None] | fx[:, None, :]
            eye = np.broadcast_to(np.eye(P, dtype=bool), both.shape)
            free_hess = np.where(both, np.where(eye, -1.0, 0.0), hess[ended])
            lam = np.linalg.eigvalsh(free_hess)
            top = np.maximum(1.0, np.max(np.abs(lam), axis=1))
            fine = lam[:, -1] <= 1e-6 * top  # not a saddle point (escaped there)
            done[ended[fine]] = True
            converged[ended[fine]] = True
        if move.size:
            alpha = first_trial(np.linalg.norm(step[move], axis=1), last_step[move])
            pending = np.ones(move.size, dtype=bool)
            accepted = np.zeros(move.size, dtype=bool)
            new_psi, new_val, new_grad = psi[move], val[move], grad[move]
            base_val = val[move]
            while pending.any():
                sel = np.flatnonzero(pending)
                studies = move[sel]
                trial = psi[studies] + alpha[sel, None] * step[studies]
                v_t, g_t = obj.evaluate(studies, trial, keep=True)
                bv = base_val[sel]
                ok = np.isfinite(v_t) & (v_t >= bv - 1e-12 * (1 + np.abs(bv)))
                good = sel[ok]
                new_psi[good], new_val[good], new_grad[good] = trial[ok], v_t[ok], g_t[ok]
                accepted[good] = True
                pending[good] = False
                alpha[sel[~ok]] *= 0.5
                failed = pending & (alpha <= 1e-10)
                if failed.any():
                    pending &= ~failed
                    fs = move[failed]
                    restart = fs[~exact[fs]]
                    if restart.size:  # a poor quasi-Newton model: the true Hessian
                        hess[restart] = obj.hessian(restart, psi[restart], grad[restart])
                        info[restart] = _positive(-hess[restart])
                        exact[restart] = True
                    active[fs[exact[fs] & ~np.isin(fs, restart)]] = False  # fitted alone
            a = move[accepted]
            if a.size:
                n_iter[a] += 1
                last_step[a] = np.linalg.norm(new_psi[accepted] - psi[a], axis=1)
                info[a] = _bfgs(info[a], new_psi[accepted] - psi[a], grad[a] - new_grad[accepted])
                exact[a] = False
                psi[a], val[a], grad[a] = new_psi[accepted], new_val[accepted], new_grad[accepted]
                due = a[(n_iter[a] % REFRESH_EVERY == 0) & (decrement[a] > REFRESH_ABOVE)]
                if due.size:
                    hess[due] = obj.hessian(due, psi[due], grad[due])
                    info[due] = _positive(-hess[due])
                    exact[due] = True
        limit = active & (n_iter >= maxiter)
        done |= limit
        active &= ~limit
    # the Hessian at the end point, for the standard errors: central differences (the
    # ones before only steered)
    ended = np.flatnonzero(done)
    if ended.size:
        hess[ended] = obj.hessian(ended, psi[ended])
    return Result(psi, val, grad, hess, done, converged, n_iter, decrement)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def nested_pair(bars) -> tuple[str, tuple[str, ...]] | None:
    """``(outer column, inner factor columns)`` when ``bars`` are exactly the two
    random intercepts of ``(1|outer/inner)``; ``None`` otherwise."""
    if len(bars) != 2 or any(b.lhs != "1" for b in bars):
        return None
    short, long = sorted(bars, key=lambda b: len(b.factors))
    if len(short.factors) != 1 or len(long.factors) != 2 or long.factors[0] != short.factors[0]:
        return None
    return short.factors[0], long.factors


def _row_patterns(L: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of ``X`` over all studies, ``(G, p)``, and each study's
    successes and trials on them, ``(R, G)`` (0 trials: not a row of the study)."""
    counts = L.row_counts()
    at = np.nonzero(counts > 0)
    X, (y, m) = study_patterns(L.X[at], at[0], L.n_rep, (counts * L.y)[at], (counts * L.m)[at])
    return X, y, m


def _eligible(L: Layout, X: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Studies this path fits: events and non-events, more inner than outer nodes
    (so ``θ`` is in lme4's order: inner first), at least 2 outer nodes, and ``X`` of
    full column rank (``X``, ``y``, ``m`` from :func:`_row_patterns`)."""
    events, trials = y.sum(axis=1), m.sum(axis=1)
    inner_nodes = np.einsum("rkj,rk->r", L.w, L.wo)
    outer_nodes = L.wo.sum(axis=1)
    ok = (events > 0) & (events < trials) & (inner_nodes > outer_nodes) & (outer_nodes >= 2)
    rank: dict[bytes, bool] = {}  # by the rows a study has
    for r in np.flatnonzero(ok):
        present = m[r] > 0
        key = present.tobytes()
        if key not in rank:
            rank[key] = np.linalg.matrix_rank(X[present]) == X.shape[1]
        ok[r] = rank[key]
    return ok


def load_kernel() -> None:
    """Compile the kernel (the first run on a machine) or load it from numba's cache,
    in this process, by fitting a tiny example through the same calls as
    :func:`fit_two_level_many`: called before worker processes are forked, so that
    they inherit it instead of each loading or compiling it again."""
    outer = np.repeat(np.arange(3), 4)
    inner = np.tile(np.repeat(np.arange(2), 2), 3)
    Y = np.array([[0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    fit_two_level_many(
        np.ones((1, 12, 1)), Y, np.ones_like(Y), np.ones_like(Y, dtype=bool), outer, inner, 1e-8
    )


def fit_two_level_many(
    X: np.ndarray,
    Y: np.ndarray,
    m: np.ndarray,
    rows_in: np.ndarray,
    outer: np.ndarray,
    inner: np.ndarray,
    tol: float,
) -> dict[str, np.ndarray]:
    """Laplace fits of ``(1|outer/inner)`` to ``R`` studies in one computation.

    Returns per study ``psi`` (β, θ_inner, θ_outer; θ ≥ 0 as in lme4), ``value``
    (the Laplace log-likelihood without binomial coefficients), ``hess`` over ``ψ``,
    ``grad``, ``n_outer``, ``n_iter``, ``decrement`` and ``done``: the studies it
    did not finish (see :func:`maximise`) or could not start (see ``_eligible``) are
    for ``fit_multilevel``.
    """
    full = build_layout(X, Y, m, rows_in, outer, inner)
    R, P = X.shape[0], X.shape[2] + 2
    out = {
        "psi": np.full((R, P), np.nan),
        "value": np.full(R, np.nan),
        "grad": np.full((R, P), np.nan),
        "hess": np.full((R, P, P), np.nan),
        "n_outer": np.zeros(R, dtype=int)
        if full is None
        else (full.m.sum(axis=(2, 3)) > 0).sum(axis=1),
        "n_iter": np.zeros(R, dtype=int),
        "decrement": np.full(R, np.nan),
        "done": np.zeros(R, dtype=bool),
        "converged": np.zeros(R, dtype=bool),
        "maxiter": MAXITER,
    }
    if full is None:
        return out
    rows_X, rows_y, rows_m = _row_patterns(full)
    keep = np.flatnonzero(_eligible(full, rows_X, rows_y, rows_m))
    if keep.size == 0:
        return out
    L = full.subset(keep)
    psi0 = np.empty((len(keep), P))
    psi0[:, : P - 2] = glm_start_many(rows_X, rows_y[keep], rows_m[keep])
    psi0[:, P - 2 :] = 1.0
    res = maximise(L, psi0, tol)
    signs = np.ones_like(res.psi)
    signs[:, P - 2 :] = np.where(res.psi[:, P - 2 :] < 0, -1.0, 1.0)
    out["psi"][keep] = signs * res.psi
    out["value"][keep] = res.value
    out["grad"][keep] = signs * res.grad
    out["hess"][keep] = res.hess * signs[:, :, None] * signs[:, None, :]
    out["n_iter"][keep] = res.n_iter
    out["decrement"][keep] = res.decrement
    out["done"][keep] = res.done
    out["converged"][keep] = res.converged
    return out
