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
* ``"readers"`` (two or more readers): the per-reading stack of
  ``designs.reader_design`` and the nested ``fit_many_structured`` fit (``"vu"`` and
  the other VU-level analyses use the mean of the readers' scores);
* ``"hybrid"`` and ``"course"``: the stacks of ``designs.hybrid_design`` and
  ``designs.course_design``, by ``fit_many`` as ``"vu"``;
* ``"clogit"``: one ``syndesmo.engines.clogit`` fit per replicate of the VU stack.

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
from syndesmo.fitting.diagnostics import separated_patterns, study_patterns
from syndesmo.powersim.designs import (
    ARM_TERM,
    READER_BARS,
    WITHIN_TERM,
    course_design,
    hybrid_design,
    reader_design,
)
from syndesmo.powersim.nested import nested_cohort
from syndesmo.powersim.plan import (
    CLOGIT_ANALYSIS,
    COURSE_ANALYSIS,
    CRUDE_ANALYSIS,
    FIT_BLOCK,
    GEE_ANALYSIS,
    HYBRID_ANALYSIS,
    PATIENT_COVARIATES,
    READERS_ANALYSIS,
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
    needs_vu = ("vu", GEE_ANALYSIS, CRUDE_ANALYSIS, HYBRID_ANALYSIS, CLOGIT_ANALYSIS)
    if any(a in plan.analyses for a in needs_vu):
        t = time.process_time()
        vu = _vu_design(sims, derived, plan.adjust)
        timing["design"] = time.process_time() - t
        out["no_covariate"] = int(vu["no_covariate"].sum())
    for analysis in plan.analyses:
        t = time.process_time()
        if analysis == READERS_ANALYSIS:
            fits = _fit_readers(sims, plan)
        elif analysis == "vu":
            fits = _fit_batched(vu, plan, TERM)
        elif analysis == GEE_ANALYSIS:
            fits = _fit_each(vu, plan, registry.MARGINAL_ENGINE)
        elif analysis == CRUDE_ANALYSIS:
            fits = _from_logit(logit_many(vu["X"], vu["Y"], vu["mask"]), vu["names"])
        elif analysis == HYBRID_ANALYSIS:
            fits = _fit_batched(hybrid_design(vu), plan, WITHIN_TERM)
        elif analysis == CLOGIT_ANALYSIS:
            fits = _fit_each(vu, plan, CLOGIT_ANALYSIS)
        elif analysis == COURSE_ANALYSIS:
            course = course_design(sims, plan.spec, plan.threshold)
            fits = _fit_batched(course, plan, ARM_TERM)
            fits["excluded"] = course["excluded"]
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
    if READERS_ANALYSIS in plan.analyses and plan.engine == registry.DEFAULT_ENGINE:
        from syndesmo.engines.native.multilevel.two_level import load_kernel

        load_kernel()


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


def _fit_batched(vu: dict[str, Any], plan: Plan, term: str) -> dict[str, np.ndarray]:
    """A random-intercept GLMM ``(1|patient)`` on a stack, reporting ``term``: by the
    engine's batched ``fit_many`` in blocks of ``FIT_BLOCK`` replicates, or one fit
    per replicate for an engine without one (``lme4``)."""
    if registry.get_engine(plan.engine).batch_entry is None:
        return _fit_each(vu, plan, plan.engine, term)
    fit_many = registry.load_batch_engine(plan.engine)

    j = vu["names"].index(term)
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
            _term_arrays(many, j, np.array(many.messages or [""] * len(many), dtype=object))
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _empty_fits(R: int) -> dict[str, np.ndarray]:
    return {
        "estimate": np.full(R, np.nan),
        "se": np.full(R, np.nan),
        "converged": np.zeros(R, dtype=bool),
        "singular": np.zeros(R, dtype=bool),
        "sigma": np.full(R, np.nan),
        "n_obs": np.zeros(R, dtype=int),
        "n_events": np.zeros(R, dtype=int),
        "message": np.array([""] * R, dtype=object),
    }


def _record(out: dict[str, np.ndarray], r: int, fit: Any, term: str) -> None:
    """Put replicate ``r``'s fit of ``term`` into the per-replicate arrays."""
    est = float(fit.params[term])
    out["estimate"][r] = est
    out["se"][r] = float(fit.bse[term])
    out["converged"][r] = bool(fit.converged) and math.isfinite(est)
    out["singular"][r] = bool(fit.singular)
    out["sigma"][r] = float(fit.sigma)
    out["message"][r] = fit.convergence_message


#: Exceptions of one replicate's fit that count as a failed fit (status "error").
_FIT_ERRORS = (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError)


def _fit_each(
    vu: dict[str, Any], plan: Plan, engine: str, term: str = TERM
) -> dict[str, np.ndarray]:
    """One fit per replicate through the package's engines: those with quadrature
    (``lme4``) from a data frame through ``syndesmo.fit``, the others (``gee``,
    ``clogit``) from the replicate's design directly. ``clogit`` leaves out the
    columns constant within every informative patient (``arm``) and the patients
    without variation in the outcome, which contribute nothing to its likelihood."""

    R = vu["Y"].shape[0]
    out = _empty_fits(R)
    names = vu["names"]
    response = plan.outcome if term != ARM_TERM else "inflamed"
    formula = f"{response} ~ {' + '.join(names[1:])} + (1|patient)"
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
                    response=response,
                    y=y,
                    trials=np.ones_like(y),
                    X=vu["X"][r, keep],
                    names=names,
                    group="patient",
                    groups=groups,
                )
                fit = registry.load_engine(engine)(design)
            else:
                fit = _fit_frame(vu, r, plan, formula, engine, response)
        except _FIT_ERRORS as exc:
            out["message"][r] = f"{ERROR_PREFIX}{type(exc).__name__}: {exc}"
            continue
        _record(out, r, fit, term)
    return out


def _fit_frame(vu: dict[str, Any], r: int, plan: Plan, formula: str, engine: str, response: str):
    """Replicate ``r`` as a data frame through ``syndesmo.fit`` (e.g. R's glmer)."""

    keep = vu["mask"][r]
    frame = pd.DataFrame(vu["X"][r, keep, 1:], columns=vu["names"][1:])
    frame.insert(0, response, vu["Y"][r, keep].astype(int))
    frame.insert(0, "patient", vu["groups"][keep])
    return fit(formula, frame, engine=engine, nagq=plan.nagq)


def reader_frame(design: dict[str, Any], r: int, outcome: str) -> pd.DataFrame:
    """Replicate ``r`` of a reader stack (``designs.reader_design``) as a data frame
    with ``patient``, ``vu``, ``reader`` (1, 2, …), the outcome, ``mri`` and the
    covariates: what ``sy.fit`` takes with ``reader_formula``."""
    keep = design["mask"][r]
    names = design["names"]
    dummies = [k for k, n in enumerate(names) if n.startswith("C(reader)")]
    covs = [n for k, n in enumerate(names[1:], start=1) if k not in dummies]
    frame = pd.DataFrame(design["X"][r, keep][:, 1 : 1 + len(covs)], columns=covs)
    reader = np.ones(int(keep.sum()), dtype=int)
    for j, k in enumerate(dummies, start=2):
        reader[design["X"][r, keep, k] == 1.0] = j
    frame.insert(0, outcome, design["Y"][r, keep].astype(int))
    frame.insert(0, "reader", reader)
    frame.insert(0, "vu", design["groups"]["vu"].to_numpy()[keep])
    frame.insert(0, "patient", design["groups"]["patient"].to_numpy()[keep])
    return frame


def reader_formula(outcome: str, design: dict[str, Any]) -> str:
    """The nested reader model's formula: ``outcome ~ mri + covariates + C(reader) +
    (1|patient/vu)``."""
    covs = [n for n in design["names"][1:] if not n.startswith("C(reader)")]
    return f"{outcome} ~ {' + '.join(covs)} + C(reader) + {READER_BARS}"


def reader_stack(sims, plan: Plan) -> dict[str, Any]:
    """The per-reading stack of a chunk's cohorts (``derive``'s ``"per_reader"`` rule)."""
    derived = derive_many(sims, plan.outcome, plan.exposure, plan.threshold, "per_reader")
    return reader_design(sims, derived, plan.adjust, int(plan.spec.n_readers))


def _fit_readers(sims, plan: Plan) -> dict[str, np.ndarray]:
    """The ``"readers"`` analysis: every reading a row, readings nested
    in VUs in patients, by the native engine's ``fit_many_structured`` (one nested fit
    per replicate) or, for another engine, ``syndesmo.fit`` per replicate. ``sigma`` is
    the SD of the first variance component in lme4's order (VU within patient);
    ``singular`` flags a fit with any variance component at 0."""
    # the multilevel engine loads only for this analysis (a power run of the other
    # analyses does not import it)
    from syndesmo.engines.native.multilevel.many import fit_many_structured
    from syndesmo.engines.native.multilevel.model import SEPARATION_BETA, SEPARATION_SE

    design = reader_stack(sims, plan)
    names = design["names"]
    if plan.engine != registry.DEFAULT_ENGINE:
        R = design["Y"].shape[0]
        out = _empty_fits(R)
        formula = reader_formula(plan.outcome, design)
        for r in range(R):
            out["n_obs"][r] = int(design["mask"][r].sum())
            out["n_events"][r] = int(design["Y"][r].sum())
            try:
                frame = reader_frame(design, r, plan.outcome)
                res = fit(formula, frame, engine=plan.engine, nagq=plan.nagq)
            except _FIT_ERRORS as exc:
                out["message"][r] = f"{ERROR_PREFIX}{type(exc).__name__}: {exc}"
                continue
            _record(out, r, res, TERM)
        return out
    many = fit_many_structured(
        design["X"],
        design["Y"],
        design["groups"],
        READER_BARS,
        mask=design["mask"],
        nagq=plan.nagq,
        names=names,
    )
    j = names.index(TERM)
    message = np.array(many.messages or [""] * len(many), dtype=object)
    # as sy.fit does for a multilevel model: an estimate or SE beyond the engine's
    # bounds (or no convergence) triggers the check, which names the separated terms
    with np.errstate(invalid="ignore"):
        suspect = (
            ~many.converged
            | (np.nanmax(np.abs(many.params), axis=1, initial=0.0) > SEPARATION_BETA)
            | np.any(~np.isfinite(many.bse) | (many.bse > SEPARATION_SE), axis=1)
        )
    for r, sep in _separation(design, np.flatnonzero(suspect & (np.asarray(many.n_obs) > 0))):
        if sep:
            words = ", ".join(f"'{t}'" for t in sep)
            note = f"complete or quasi-complete separation along {words}"
            message[r] = f"{message[r]}; {note}" if message[r] else note
    # singular: any variance component (patient or VU within patient) at 0
    out = _term_arrays(many, j, message)
    out["n_events"] = out["n_events"].astype(int)
    return out


def _separation(design: dict[str, Any], studies: np.ndarray):
    """``(r, separated_terms(...))`` for the studies ``r`` of a stack of binary rows,
    from one table of the distinct rows of all of them (a chunk's studies share a few
    covariate patterns)."""
    if studies.size == 0:
        return
    X, Y, mask = design["X"], design["Y"], design["mask"]
    y = Y[mask]
    rows, (n_rows, n_succ, n_fail) = study_patterns(
        X[mask], np.nonzero(mask)[0], len(Y), np.ones_like(y), y >= 1, y <= 0
    )
    for r in studies:
        here = n_rows[r] > 0
        yield (
            r,
            separated_patterns(
                rows[here], n_succ[r, here], n_fail[r, here], n_rows[r, here], design["names"]
            ),
        )


def _term_arrays(many, j: int, message: np.ndarray) -> dict[str, np.ndarray]:
    """Per-replicate arrays of term ``j`` of a ``ManyFit`` (the analyses' common form)."""
    return {
        "estimate": many.params[:, j],
        "se": many.bse[:, j],
        "converged": many.converged & np.isfinite(many.params[:, j]),
        "singular": many.singular,
        "sigma": many.sigma,
        "n_obs": np.asarray(many.n_obs),
        "n_events": np.asarray(many.n_events),
        "message": message,
    }
