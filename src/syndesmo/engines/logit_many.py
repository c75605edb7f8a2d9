"""Batched plain logistic regression: many replicates' fits in one Newton–Raphson.

A power simulation fits the same small logistic model to hundreds of replicates;
one statsmodels ``Logit`` per replicate spends most of its time in Python
overhead. ``logit_many`` stacks the replicates and iterates them together (the
batched form statsmodels lacks), freezing each replicate once its own step has
converged so that its result does not depend on the company it is fitted in. It
returns plain arrays, not ``FitResult`` objects; ``tests/test_power.py`` checks it
against ``statsmodels.Logit``.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def logit_many(
    X: np.ndarray,
    Y: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    maxiter: int = 50,
    tol: float = 1e-10,
    max_abs_beta: float = 30.0,
) -> dict[str, np.ndarray]:
    """Logistic regressions of many replicates at once by Newton–Raphson (= IRLS).

    ``X`` is ``(n, p)`` shared or ``(R, n, p)``; ``Y`` ``(R, n)`` 0/1; ``mask``
    ``(R, n)`` marks the rows in each replicate's analysis. Each replicate iterates
    until its own step is below ``tol`` (relative) and is then frozen, so its result
    does not depend on the other replicates in the batch. Returns ``params``,
    ``bse``, ``converged`` (False for no events / no non-events / a rank-deficient
    design / no convergence / separation, i.e. ``|β| > max_abs_beta``),
    ``n_obs``, ``n_events`` and ``message``.
    """
    Y = np.asarray(Y, dtype=float)
    R, n = Y.shape
    X = np.asarray(X, dtype=float)
    X = np.broadcast_to(X, (R, *X.shape)) if X.ndim == 2 else X
    p = X.shape[2]
    w = np.ones((R, n)) if mask is None else np.asarray(mask, dtype=bool).astype(float)
    Y = np.where(w > 0, Y, 0.0)
    n_obs = w.sum(axis=1)
    n_events = Y.sum(axis=1)
    message = np.array([""] * R, dtype=object)

    gram = np.einsum("rnp,rn,rnq->rpq", X, w, X)
    eig = np.linalg.eigvalsh(gram)
    full = eig[:, 0] > 1e-10 * np.maximum(eig[:, -1], 1e-300)
    message[n_events <= 0] = "no events"
    message[(n_events >= n_obs) & (n_events > 0)] = "no non-events"
    message[(message == "") & ~full] = "rank-deficient design on this replicate's rows"

    beta = np.zeros((R, p))
    converged = np.zeros(R, dtype=bool)
    active = message == ""
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        Xa, wa, b = X[idx], w[idx], beta[idx]
        mu = special.expit(np.einsum("rnp,rp->rn", Xa, b))
        score = np.einsum("rnp,rn->rp", Xa, wa * (Y[idx] - mu))
        info = np.einsum("rnp,rn,rnq->rpq", Xa, wa * mu * (1.0 - mu), Xa)
        step = _solve(info, score)
        bad = ~np.all(np.isfinite(step), axis=1)
        step[bad] = 0.0
        beta[idx] = b + step
        done = np.max(np.abs(step), axis=1) <= tol * (1.0 + np.max(np.abs(b), axis=1))
        diverged = np.max(np.abs(beta[idx]), axis=1) > max_abs_beta
        converged[idx[done & ~bad & ~diverged]] = True
        message[idx[bad]] = "singular information matrix"
        message[idx[diverged]] = f"separation: a coefficient beyond ±{max_abs_beta:g} (log odds)"
        active[idx[done | bad | diverged]] = False
    message[active] = f"no convergence in {maxiter} iterations"

    mu = special.expit(np.einsum("rnp,rp->rn", X, beta))
    info = np.einsum("rnp,rn,rnq->rpq", X, w * mu * (1.0 - mu), X)
    bse = np.full((R, p), np.nan)
    ok = np.flatnonzero(converged)
    if ok.size:
        bse[ok] = np.sqrt(np.diagonal(np.linalg.inv(info[ok]), axis1=1, axis2=2))
    params = np.where(converged[:, None], beta, np.nan)
    return {
        "params": params,
        "bse": bse,
        "converged": converged,
        "n_obs": n_obs.astype(int),
        "n_events": n_events.round().astype(int),
        "message": message,
    }


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve; replicates whose matrix is singular get NaN instead of an error."""
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(b.shape, np.nan)
        for i in range(A.shape[0]):
            try:
                out[i] = np.linalg.solve(A[i], b[i])
            except np.linalg.LinAlgError:
                pass
        return out
