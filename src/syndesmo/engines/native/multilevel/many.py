"""Many replicates of one multilevel design: power for reader and visit designs.

:func:`fit_many_structured` fits ``(1|patient/vu)``-type models (any bars the native
engine takes) to many response vectors, one replicate after the other, and returns the
arrays a power simulation needs. Two nested random intercepts ``(1|outer/inner)``
by Laplace, the two-reader design, are fitted all at once by
:mod:`~syndesmo.engines.native.multilevel.two_level` (the same steps as
``fit_multilevel``, compiled); every other model, and every replicate that path
hands back (a saddle point, a failed line search), is a full
:func:`~syndesmo.engines.native.multilevel.fit.fit_multilevel` on its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.checks import check_nagq
from syndesmo.engines.native.core import constants
from syndesmo.engines.native.engine import ManyFit
from syndesmo.engines.native.multilevel.fit import (
    MAX_NAGQ,
    SINGULAR_TOL,
    covariances,
    fit_multilevel,
)
from syndesmo.engines.native.multilevel.two_level import fit_two_level_many, nested_pair
from syndesmo.errors import ModelError
from syndesmo.fitting.random_effects import build_structure, parse_bars


@dataclass
class ManyStructuredFit(ManyFit):
    """:class:`ManyFit` with every random-effect SD and correlation per replicate.

    ``sigma`` is the SD of the first variance component (lme4's order), ``sds`` all of
    them ``(R, k)`` named by ``sd_names`` (``"vu:patient (Intercept)"``, …).
    """

    sds: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    sd_names: list[str] = field(default_factory=list)


def fit_many_structured(
    X: np.ndarray,
    Y: np.ndarray,
    groups: pd.DataFrame,
    random: str,
    *,
    trials: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    nagq: int = 1,
    names: list[str] | None = None,
    tol: float = 1e-8,
) -> ManyStructuredFit:
    """Fit a GLMM with the random effects ``random`` to many replicates.

    Parameters
    ----------
    X : numpy.ndarray
        Fixed-effect matrix ``(n, p)`` shared by the replicates, or ``(R, n, p)``.
    Y : numpy.ndarray
        Responses ``(R, n)``.
    groups : pandas.DataFrame
        The grouping columns the bars name, ``n`` rows (e.g. ``patient``, ``vu``).
    random : str
        The bars, as in a formula: ``"(1|patient/vu)"``.
    trials, mask : numpy.ndarray, optional
        Binomial trials ``(n,)`` or ``(R, n)``; rows in each replicate's analysis.
    nagq : int
        1 (Laplace) or more adaptive Gauss–Hermite points per level.
    names : list of str, optional
        Names of the columns of ``X``.
    tol : float
        Bound on the Newton decrement of each fit.

    Returns
    -------
    ManyStructuredFit
        A replicate that cannot be fitted (no events, a single group, …) gets NaN
        estimates, ``converged = False`` and the reason in ``messages``.

    Raises
    ------
    ModelError
        For inconsistent shapes, a bad ``nagq`` or bars that name no column of
        ``groups``.
    """
    nagq = check_nagq(nagq, MAX_NAGQ)
    bars = parse_bars(f"y ~ {random}")
    if not bars:
        raise ModelError(f"random must hold bar terms such as (1|patient/vu), got {random!r}")
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    R, n = Y.shape
    X = np.asarray(X, dtype=float)
    X = np.broadcast_to(X, (R, *X.shape)) if X.ndim == 2 else X
    if X.shape[:2] != (R, n):
        raise ModelError(f"X must be ({n}, p) or ({R}, {n}, p), got {X.shape}")
    if len(groups) != n:
        raise ModelError(f"groups has {len(groups)} rows but Y has {n} columns")
    groups = groups.reset_index(drop=True)
    m = np.ones((R, n)) if trials is None else np.broadcast_to(np.asarray(trials, float), (R, n))
    rows_in = np.ones((R, n), dtype=bool) if mask is None else np.broadcast_to(mask, (R, n))
    p = X.shape[2]
    names = [f"x{j}" for j in range(p)] if names is None else list(names)

    out = {
        "params": np.full((R, p), np.nan),
        "bse": np.full((R, p), np.nan),
        "vcov": np.full((R, p, p), np.nan),
        "loglik": np.full(R, np.nan),
        "converged": np.zeros(R, dtype=bool),
        "singular": np.zeros(R, dtype=bool),
        "n_obs": rows_in.sum(axis=1),
        "n_events": np.where(rows_in, Y, 0.0).sum(axis=1),
        "n_groups": np.zeros(R, dtype=int),
    }
    sds: list[np.ndarray | None] = [None] * R
    sd_names: list[str] = []
    messages = [""] * R
    done = _two_level(X, Y, m, rows_in, groups, bars, nagq, tol, out, sds, messages)
    if done.any():
        short, long = sorted(bars, key=lambda b: len(b.factors))
        sd_names = [f"{long.name} (Intercept)", f"{short.name} (Intercept)"]
    for r in range(R):
        if done[r]:
            continue
        rows = np.flatnonzero(rows_in[r])
        try:
            structure = build_structure(bars, groups.iloc[rows])
            fit = fit_multilevel(
                X[r, rows], Y[r, rows], m[r, rows], structure, nagq=nagq, names=names, tol=tol
            )
        except ModelError as exc:
            messages[r] = str(exc)
            continue
        out["params"][r] = fit.params
        out["bse"][r] = fit.bse
        out["vcov"][r] = fit.vcov
        out["loglik"][r] = fit.loglik
        out["converged"][r] = fit.converged
        out["singular"][r] = fit.singular
        out["n_groups"][r] = min(fit.n_groups.values())
        comps = [(g, v1, sc) for g, v1, v2, _, sc in fit.varcorr if v2 is None]
        if not sd_names:
            sd_names = [f"{g} {v1}" for g, v1, _ in comps]
        sds[r] = np.array([sc for *_, sc in comps])
        messages[r] = "" if fit.converged else fit.message
    k = len(sd_names)
    sd_array = np.full((R, k), np.nan)
    for r, v in enumerate(sds):
        if v is not None and v.size == k:
            sd_array[r] = v
    return ManyStructuredFit(
        params=out["params"],
        bse=out["bse"],
        vcov=out["vcov"],
        sigma=sd_array[:, 0] if k else np.full(R, np.nan),
        loglik=out["loglik"],
        converged=out["converged"],
        singular=out["singular"],
        n_obs=out["n_obs"],
        n_events=out["n_events"],
        n_groups=out["n_groups"],
        names=names,
        nagq=nagq,
        messages=messages,
        sds=sd_array,
        sd_names=sd_names,
    )


def _two_level(X, Y, m, rows_in, groups, bars, nagq, tol, out, sds, messages) -> np.ndarray:
    """Fit the replicates :func:`fit_two_level_many` can (``(1|outer/inner)`` by
    Laplace), filling ``out``, ``sds`` and ``messages`` as ``fit_multilevel`` would;
    returns which replicates it fitted."""
    R = Y.shape[0]
    pair = nested_pair(bars) if nagq == 1 else None
    if pair is None or groups[[pair[0], *pair[1]]].isna().to_numpy().any():
        return np.zeros(R, dtype=bool)
    outer = pd.factorize(groups[pair[0]], sort=True)[0]
    inner = pd.factorize(groups[pair[1][1]], sort=True)[0]
    fast = fit_two_level_many(X, Y, m, rows_in, outer, inner, tol)
    p = X.shape[2]
    done = fast["done"]
    for r in np.flatnonzero(done):
        psi = fast["psi"][r]
        theta = psi[p:]
        rows = rows_in[r]
        logc, _ = constants(Y[r, rows], m[r, rows])
        vcov, _ = covariances(fast["hess"][r], p, theta <= 1e-12)
        out["params"][r] = psi[:p]
        out["vcov"][r] = vcov
        out["bse"][r] = np.sqrt(np.clip(np.diag(vcov), 0.0, None))
        out["loglik"][r] = float(fast["value"][r] + logc)
        out["converged"][r] = fast["converged"][r] and np.isfinite(fast["value"][r])
        out["singular"][r] = bool(np.any(theta < SINGULAR_TOL))
        out["n_groups"][r] = fast["n_outer"][r]
        sds[r] = theta.copy()
        if not fast["converged"][r]:
            messages[r] = (
                f"iteration limit reached (maxiter={fast['maxiter']}), "
                f"Newton decrement {fast['decrement'][r]:.1e}"
            )
    return done
