"""The work of one chunk of a power simulation: simulate, derive, stack, fit each analysis.

``run_chunk`` is the task ``power_exec`` runs on a worker (a module-level function,
so it pickles to processes and Dask). It works on arrays, not data frames, because
a power run fits the same model thousands of times: ``simulate_arrays`` →
``derive_arrays`` → one design stack ``X (R, n, p)``, ``Y (R, n)``, ``mask`` for
the chunk's ``R`` replicates → per analysis:

* ``"vu"``: the native engine's vectorised ``fit_many`` on blocks of
  ``FIT_BLOCK`` replicates aligned on the replicate index (or one R ``glmer`` per
  replicate with ``engine="lme4"``);
* ``"gee"``: one ``syndesmo.engines.gee`` fit per replicate;
* ``"patient"`` and ``"logit"``: ``syndesmo.engines.logit_many``, all replicates
  at once.

Each analysis comes back as per-replicate arrays (``estimate``, ``se``,
``converged``, ``singular``, ``sigma``, ``n_obs``, ``n_events``, ``message``,
``status``, ``separation``) that ``syndesmo.powersim.api`` summarises. ``status``
says what became of the fit (``fit_status``): ``"ok"``, ``"not fitted"`` (no events,
no non-events or a rank-deficient design on the replicate's rows), ``"not
converged"`` or ``"error"`` (the engine raised); ``separation`` flags a fit whose
engine reported (possible) separation, converged or not. Each replicate's result
depends only on its own data.

With ``plan.nested`` set (``sample_size``), a replicate's cohort is
``syndesmo.powersim.nested.nested_cohort``: the first patients of an unbounded
sequence of blocks, so cohorts of n and n' > n patients from the same seed share
their first patients (common random numbers over the number of patients).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.derive.frame import derive_many
from syndesmo.engines.logit_many import logit_many
from syndesmo.errors import ModelError, SyndesmoError
from syndesmo.fitting import registry
from syndesmo.fitting.api import fit
from syndesmo.fitting.design import Design
from syndesmo.powersim.nested import nested_cohort
from syndesmo.powersim.plan import (
    CRUDE_ANALYSIS,
    FIT_BLOCK,
    GEE_ANALYSIS,
    PATIENT_COVARIATES,
    TERM,
    Chunk,
    Plan,
)
from syndesmo.simulate.cohort import calibrate, simulate_many
from syndesmo.simulate.covariates import covariate_values


def run_chunk(chunk: Chunk) -> dict[str, Any]:
    """Simulate, derive and fit the replicates of one chunk; per-replicate arrays back."""

    plan = chunk.plan
    timing: dict[str, float] = {}
    t0 = time.process_time()
    if plan.nested:
        sims = [nested_cohort(plan.spec, s, plan.nested) for s in chunk.seeds]
    else:
        sims = simulate_many(plan.spec, [np.random.default_rng(s) for s in chunk.seeds])
    t1 = time.process_time()
    derived = derive_many(sims, plan.outcome, plan.exposure, plan.threshold, "mean")
    t2 = time.process_time()
    timing["simulate"] = t1 - t0
    timing["derive"] = t2 - t1

    reasons = np.stack([np.bincount(d["reason"], minlength=5) for d in derived])
    out: dict[str, Any] = {"timing": timing, "reasons": reasons.sum(axis=0), "fits": {}}
    vu = None
    if any(a in plan.analyses for a in ("vu", GEE_ANALYSIS, CRUDE_ANALYSIS)):
        t = time.process_time()
        vu = _vu_design(sims, derived, plan.adjust)
        timing["design"] = time.process_time() - t
        out["no_covariate"] = int(vu["no_covariate"].sum())
    for analysis in plan.analyses:
        t = time.process_time()
        if analysis == "vu":
            fits = _fit_vu(vu, plan)
        elif analysis == GEE_ANALYSIS:
            fits = _fit_each(vu, plan, registry.MARGINAL_ENGINE)
        elif analysis == CRUDE_ANALYSIS:
            fits = _from_logit(logit_many(vu["X"], vu["Y"], vu["mask"]), vu["names"])
        else:
            pat = _patient_design(sims, derived, plan.adjust)
            fits = _from_logit(logit_many(pat["X"], pat["Y"], pat["mask"]), pat["names"])
            fits["excluded"] = pat["excluded"]
        timing[f"fit:{analysis}"] = time.process_time() - t
        fits["status"], fits["separation"] = fit_status(fits["converged"], fits["message"])
        out["fits"][analysis] = fits
    return out


def prepare(plan: Plan) -> None:
    """Load in this process what every chunk of ``plan`` needs first: the spec's
    calibration (and scipy.optimize with it) and the batch engine's modules. Called
    before worker processes are forked, so that they inherit these instead of each
    loading them again on its first chunk."""
    calibrate(plan.spec)
    if "vu" in plan.analyses and registry.get_engine(plan.engine).batch_entry is not None:
        registry.load_batch_engine(plan.engine)


#: What became of one fit (``fit_status``); every status but ``"ok"`` is a failed fit.
STATUSES = ("ok", "not fitted", "not converged", "error")
_NOT_FITTED = ("not fitted", "no events", "no non-events", "rank-deficient", "rank deficient")


def fit_status(converged: np.ndarray, message: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classify fits from the engines' ``converged`` flags and messages.

    ``"ok"``: converged; ``"error"``: the engine raised (the message is the
    exception, ``"Name: text"``, written by ``_fit_each``); ``"not fitted"``: the
    engine refused the data before fitting (no events, no non-events, a
    rank-deficient design: the messages of ``fit_many`` and ``logit_many``); else
    ``"not converged"``. ``separation`` is True where the message names
    (possible) separation: ``logit_many`` then marks the fit failed, while
    ``fit_many`` keeps a converged GLMM and appends the warning.
    """
    msg = np.array([str(m).lower() for m in message], dtype=object)
    status = np.full(len(msg), "not converged", dtype=object)
    status[[any(k in m for k in _NOT_FITTED) for m in msg]] = "not fitted"
    status[[m.startswith(ERROR_PREFIX.lower()) for m in msg]] = "error"
    status[np.asarray(converged, dtype=bool)] = "ok"
    separation = np.array(["separation" in m for m in msg], dtype=bool)
    return status, separation


#: Messages of fits whose engine raised start with this (``_fit_each``).
ERROR_PREFIX = "error: "


def _vu_design(sims, derived, adjust: Sequence[str]) -> dict[str, Any]:
    """Stack the VU-level model of each replicate: X (R, n, p), Y (R, n), mask, groups."""
    first = derived[0]
    n = len(first["y"])
    for d in derived[1:]:
        if len(d["y"]) != n or not np.array_equal(d["patient"], first["patient"]):
            raise ModelError("replicates of one spec must have the same rows (patients × VUs)")
    names = ["Intercept", TERM, *adjust]
    R = len(sims)
    X = np.empty((R, n, len(names)))
    X[:, :, 0] = 1.0
    X[:, :, 1] = np.stack([d["x"] for d in derived])
    for r, (a, d) in enumerate(zip(sims, derived, strict=True)):
        for j, cov in enumerate(adjust, start=2):
            X[r, :, j] = covariate_values(cov, a, d)
    eligible = np.stack([d["eligible"] for d in derived])
    mask = eligible.copy()
    for j in range(1, len(names)):  # column by column: rows with every value finite
        mask &= np.isfinite(X[:, :, j])
    no_covariate = (eligible & ~mask).sum(axis=1).astype(int)
    Y = np.where(mask, np.stack([d["y"] for d in derived]), 0.0)
    X[~mask] = 0.0
    return {
        "X": X,
        "Y": Y,
        "mask": mask,
        "groups": first["patient"],
        "names": names,
        "no_covariate": no_covariate,
    }


def _patient_design(sims, derived, adjust: Sequence[str]) -> dict[str, Any]:
    """One row per patient: any event among VUs at risk ~ any VU exposed + covariates.

    A patient without a VU at risk, with a VU whose exposure is undefined (MRI
    missing) or with a missing covariate is left out (counted in ``excluded``), as
    in ``patient.patient_level``. The simulator loses MRIs per patient and week, so
    a VU left out of ``derived`` for a missing MRI belongs to a patient left out
    anyway: the VUs at risk are the eligible ones.
    """
    R = len(sims)
    P = len(sims[0]["patient_arm"])
    names = ["Intercept", TERM, *adjust]
    X = np.zeros((R, P, len(names)))
    Y = np.zeros((R, P))
    mask = np.zeros((R, P), dtype=bool)
    excluded = np.zeros(R, dtype=int)
    for r, (a, d) in enumerate(zip(sims, derived, strict=True)):
        pid = d["patient"]
        at_risk = d["eligible"]
        n_risk = np.bincount(pid, weights=at_risk, minlength=P)
        events = np.bincount(
            pid, weights=np.where(at_risk, np.nan_to_num(d["y"]), 0.0), minlength=P
        )
        x = d["x"]
        exposed = np.bincount(pid, weights=np.nan_to_num(x), minlength=P) > 0
        complete = np.bincount(pid, weights=np.isnan(x), minlength=P) == 0
        X[r, :, 0] = 1.0
        X[r, :, 1] = exposed
        for j, cov in enumerate(adjust, start=2):
            X[r, :, j] = np.asarray(a[PATIENT_COVARIATES[cov]], dtype=float)
        keep = (n_risk > 0) & complete & np.all(np.isfinite(X[r]), axis=1)
        mask[r] = keep
        Y[r] = np.where(keep, events > 0, 0.0)
        X[r][~keep] = 0.0
        excluded[r] = P - int(keep.sum())
    return {"X": X, "Y": Y, "mask": mask, "names": names, "excluded": excluded}


def _from_logit(res: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    j = names.index(TERM)
    R = len(res["converged"])
    return {
        "estimate": res["params"][:, j],
        "se": res["bse"][:, j],
        "converged": res["converged"],
        "singular": np.zeros(R, dtype=bool),
        "sigma": np.full(R, np.nan),
        "n_obs": res["n_obs"],
        "n_events": res["n_events"],
        "message": res["message"],
    }


def _fit_vu(vu: dict[str, Any], plan: Plan) -> dict[str, np.ndarray]:
    if registry.get_engine(plan.engine).batch_entry is None:
        return _fit_each(vu, plan, plan.engine)
    fit_many = registry.load_batch_engine(plan.engine)

    j = vu["names"].index(TERM)
    parts = []
    for lo in range(0, vu["Y"].shape[0], FIT_BLOCK):  # chunks start on a block boundary
        block = slice(lo, lo + FIT_BLOCK)
        many = fit_many(
            vu["X"][block],
            vu["Y"][block],
            vu["groups"],
            mask=vu["mask"][block],
            nagq=plan.nagq,
            names=vu["names"],
        )
        parts.append(
            {
                "estimate": many.params[:, j],
                "se": many.bse[:, j],
                "converged": many.converged & np.isfinite(many.params[:, j]),
                "singular": many.singular,
                "sigma": many.sigma,
                "n_obs": np.asarray(many.n_obs),
                "n_events": np.asarray(many.n_events),
                "message": np.array(many.messages or [""] * len(many), dtype=object),
            }
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _fit_each(vu: dict[str, Any], plan: Plan, engine: str) -> dict[str, np.ndarray]:
    """One fit per replicate through the package's engines: those with quadrature
    (``lme4``) from a data frame through ``syndesmo.fit``, the others (``gee``) from
    the replicate's design directly."""

    R = vu["Y"].shape[0]
    out = {
        "estimate": np.full(R, np.nan),
        "se": np.full(R, np.nan),
        "converged": np.zeros(R, dtype=bool),
        "singular": np.zeros(R, dtype=bool),
        "sigma": np.full(R, np.nan),
        "n_obs": np.zeros(R, dtype=int),
        "n_events": np.zeros(R, dtype=int),
        "message": np.array([""] * R, dtype=object),
    }
    names = vu["names"]
    formula = f"{plan.outcome} ~ {' + '.join(names[1:])} + (1|patient)"
    for r in range(R):
        keep = vu["mask"][r]
        y = vu["Y"][r, keep]
        out["n_obs"][r] = int(keep.sum())
        out["n_events"][r] = int(y.sum())
        try:
            if not registry.get_engine(engine).takes_nagq:
                _, groups = np.unique(vu["groups"][keep], return_inverse=True)
                design = Design(
                    formula=formula,
                    response=plan.outcome,
                    y=y,
                    trials=np.ones_like(y),
                    X=vu["X"][r, keep],
                    names=names,
                    group="patient",
                    groups=groups,
                )
                fit = registry.load_engine(engine)(design)
            else:
                fit = _fit_frame(vu, r, plan, formula, engine)
        except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
            out["message"][r] = f"{ERROR_PREFIX}{type(exc).__name__}: {exc}"
            continue
        est = float(fit.params[TERM])
        out["estimate"][r] = est
        out["se"][r] = float(fit.bse[TERM])
        out["converged"][r] = bool(fit.converged) and math.isfinite(est)
        out["singular"][r] = bool(fit.singular)
        out["sigma"][r] = float(fit.sigma)
        out["message"][r] = fit.convergence_message
    return out


def _fit_frame(vu: dict[str, Any], r: int, plan: Plan, formula: str, engine: str):
    """Replicate ``r`` as a data frame through ``syndesmo.fit`` (e.g. R's glmer)."""

    keep = vu["mask"][r]
    frame = pd.DataFrame(vu["X"][r, keep, 1:], columns=vu["names"][1:])
    frame.insert(0, plan.outcome, vu["Y"][r, keep].astype(int))
    frame.insert(0, "patient", vu["groups"][keep])
    return fit(formula, frame, engine=engine, nagq=plan.nagq)
