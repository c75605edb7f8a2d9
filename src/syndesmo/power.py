"""Power by simulation: how often would a study of this design detect the MRI effect?

``power(spec, n_sims)`` simulates ``n_sims`` cohorts from a ``CohortSpec`` (the
data-generating model of ``syndesmo.simulate``), fits the chosen analyses to the
*same* replicates and reports, per analysis, the rejection rate of H0: OR = 1
(two-sided Wald test at ``alpha``) with its Monte Carlo 95% interval, the mean and
median estimated OR, the bias of the log OR, the coverage of the true OR by the
Wald CI and the rates of failed and singular fits. ``power_curve`` does the same
over a grid of spec values.

Analyses (all of ``new_syndesmophyte`` or ``growth`` on the VU exposure):

* ``"vu"``: the VU-level GLMM ``outcome ~ mri + arm + (1|patient)`` (``adjust``
  sets the covariates), by the native engine's vectorised ``fit_many`` (one call
  per chunk of replicates) or, with ``engine="lme4"``, one R ``glmer`` per replicate;
* ``"gee"``: the same model by GEE, exchangeable within patient
  (``syndesmo.engines.gee``, one statsmodels fit per replicate: slower);
* ``"patient"``: patient-level logistic regression of any new syndesmophyte (among
  the VUs at risk) on any VU with the exposure, adjusted for the patient-level
  covariates in ``adjust`` — the rules of ``syndesmo.analysis.patient_level``;
* ``"logit"``: the crude VU-level logistic regression that ignores clustering (to
  show how that inflates the type I error when both the exposure and the outcome
  cluster within patients).

``"patient"`` and ``"logit"`` are plain logistic regressions, fitted for all
replicates of a chunk at once by a batched Newton–Raphson (``logit_many``), the
batched form statsmodels lacks; a test checks it against ``statsmodels.Logit``.

Definitions used in the tables:

* **power** = (replicates whose fit converged and rejected H0) / ``n_sims``: a
  replicate whose fit failed (did not converge, no events, separation, a
  rank-deficient design) counts as a non-rejection, so failures lower the power
  rather than being dropped. Failed and singular (random-intercept SD at 0) rates
  are reported beside it; a singular GLMM fit is a valid ML fit and its Wald test
  is used as it is. ``seconds`` is the CPU time of fitting that analysis, summed
  over the tasks.
* the Monte Carlo interval of the power is the **Wilson score** 95% interval
  (``wilson_interval``);
* mean / median OR, bias of the log OR and coverage are over the converged fits;
  the true OR is the data-generating conditional OR for ``"vu"``; for ``"gee"``,
  ``"logit"`` and ``"patient"`` it is known only under the null (OR = 1), see
  ``_true_log_or``; it is unknown (NaN) for all when the analysed exposure or
  threshold differs from the spec's, or with several readers (reader error
  attenuates the OR).

Seeding: replicate ``i`` draws its cohort from
``numpy.random.SeedSequence(seed).spawn(n_sims)[i]``; ``power_curve`` first takes
child ``g`` of ``SeedSequence(seed).spawn(n_grid)`` for grid point ``g`` (grid
points in the row-major order of the cartesian product of the grid values) and
spawns the replicates from it. Each replicate's fits depend only on its own data
(the native engine's blocks are aligned on the replicate index, see
``FIT_BLOCK``), so results are identical whatever the backend, the number of
workers and the batch size (``power_exec`` runs the chunks).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from syndesmo import power_exec
from syndesmo.errors import ModelError, SpecError
from syndesmo.results import Ledger

#: The analyses ``power`` can run, with a short label for tables and plots.
ANALYSES: dict[str, str] = {
    "vu": "VU level, GLMM (1|patient)",
    "gee": "VU level, GEE exchangeable",
    "patient": "patient level, logistic",
    "logit": "VU level, crude logistic",
}
#: Engines that fit the ``"vu"`` GLMM.
VU_ENGINES = ("native", "lme4")
#: VU-level covariates an analysis may adjust for (besides patient covariates).
VU_COVARIATES = ("region", "baseline_corner")
#: Patient covariates: analysis name → key of ``simulate_arrays`` (``sex`` is 1 = male).
PATIENT_COVARIATES: dict[str, str] = {
    "arm": "patient_arm",
    "age": "patient_age",
    "sex": "patient_male",
    "symptom_duration": "patient_symptom_duration",
    "hla_b27": "patient_hla_b27",
    "crp": "patient_crp",
    "basdai": "patient_basdai",
    "msasss_baseline": "patient_msasss_baseline",
}
#: Method of the Monte Carlo interval of the power.
CI_METHOD = "wilson"
#: Name of the exposure term in every model (as in ``analysis_frame``).
TERM = "mri"
#: Default number of replicates per task (chunk).
DEFAULT_BATCH = 100
#: The native engine fits replicates in blocks of this many, aligned on the replicate
#: index. ``fit_many`` iterates the replicates of one call together, which moves the
#: last digits (~1e-12) of an estimate with the company it is fitted in; fixed,
#: aligned blocks make the results identical whatever the batch size or backend.
#: Batch sizes are therefore rounded up to a multiple of ``FIT_BLOCK``.
FIT_BLOCK = 10

_REASONS = {
    1: "thoracic VU (not scored by the mSASSS)",
    2: "not at risk at baseline",
    3: "x-ray missing",
    4: "MRI missing at a week the exposure needs",
}


# ---------------------------------------------------------------------------
# small statistics


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (Wilson, JASA 1927)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = stats.norm.ppf(0.5 + level / 2.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lower = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, not rounding noise
    upper = 1.0 if k == n else min(1.0, centre + half)
    return (lower, upper)


def binomial_acceptance_region(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """Counts ``[lo, hi]`` holding at least ``level`` of a Binomial(n, p) with equal tails.

    For a type I error check: with ``n`` replicates at nominal ``alpha = p``, a
    rejection count outside ``[lo, hi]`` has probability at most ``1 - level``.
    """
    tail = (1.0 - level) / 2.0
    lo = int(stats.binom.ppf(tail, n, p))
    hi = int(stats.binom.isf(tail, n, p))
    if stats.binom.sf(hi, n, p) > tail:  # isf may round down: keep the upper tail <= tail
        hi += 1
    return lo, hi


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


# ---------------------------------------------------------------------------
# the plan of a run and the work of one chunk


@dataclass(frozen=True)
class _Plan:
    """Everything a chunk needs besides its seeds (pickled to the workers)."""

    spec: Any
    analyses: tuple[str, ...]
    outcome: str
    exposure: str
    threshold: float
    adjust: tuple[str, ...]
    engine: str
    nagq: int


@dataclass(frozen=True)
class _Chunk:
    plan: _Plan
    point: int  # grid point (0 for a single power run)
    start: int  # index of the first replicate of the chunk
    seeds: tuple[np.random.SeedSequence, ...]


def _run_chunk(chunk: _Chunk) -> dict[str, Any]:
    """Simulate, derive and fit the replicates of one chunk; per-replicate arrays back."""
    from syndesmo.derive import derive_arrays
    from syndesmo.simulate import simulate_arrays

    plan = chunk.plan
    timing: dict[str, float] = {}
    t0 = time.process_time()
    sims = [simulate_arrays(plan.spec, np.random.default_rng(s)) for s in chunk.seeds]
    t1 = time.process_time()
    derived = [derive_arrays(a, plan.outcome, plan.exposure, plan.threshold, "mean") for a in sims]
    t2 = time.process_time()
    timing["simulate"] = t1 - t0
    timing["derive"] = t2 - t1

    reasons = np.stack([np.bincount(d["reason"], minlength=5) for d in derived])
    out: dict[str, Any] = {"timing": timing, "reasons": reasons.sum(axis=0), "fits": {}}
    vu = None
    if any(a in plan.analyses for a in ("vu", "gee", "logit")):
        t = time.process_time()
        vu = _vu_design(sims, derived, plan.adjust)
        timing["design"] = time.process_time() - t
        out["no_covariate"] = int(vu["no_covariate"].sum())
    for analysis in plan.analyses:
        t = time.process_time()
        if analysis == "vu":
            fits = _fit_vu(vu, plan)
        elif analysis == "gee":
            fits = _fit_each(vu, plan, "gee")
        elif analysis == "logit":
            fits = _from_logit(logit_many(vu["X"], vu["Y"], vu["mask"]), vu["names"])
        else:
            pat = _patient_design(sims, derived, plan.adjust)
            fits = _from_logit(logit_many(pat["X"], pat["Y"], pat["mask"]), pat["names"])
            fits["excluded"] = pat["excluded"]
        timing[f"fit:{analysis}"] = time.process_time() - t
        out["fits"][analysis] = fits
    return out


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
    Y = np.empty((R, n))
    mask = np.empty((R, n), dtype=bool)
    no_covariate = np.zeros(R, dtype=int)
    for r, (a, d) in enumerate(zip(sims, derived, strict=True)):
        X[r, :, 0] = 1.0
        X[r, :, 1] = d["x"]
        for j, cov in enumerate(adjust, start=2):
            X[r, :, j] = _vu_covariate(a, d, cov)
        keep = d["eligible"] & np.all(np.isfinite(X[r]), axis=1)
        no_covariate[r] = int((d["eligible"] & ~keep).sum())
        mask[r] = keep
        Y[r] = np.where(keep, d["y"], 0.0)
        X[r][~keep] = 0.0
    return {
        "X": X,
        "Y": Y,
        "mask": mask,
        "groups": first["patient"],
        "names": names,
        "no_covariate": no_covariate,
    }


def _vu_covariate(arrays, derived, cov: str) -> np.ndarray:
    if cov == "region":
        from syndesmo.derive import REGIONS

        return (derived["region"] == REGIONS.index("lumbar")).astype(float)
    if cov == "baseline_corner":
        return np.asarray(derived["baseline_corner"], dtype=float)
    return np.asarray(arrays[PATIENT_COVARIATES[cov]], dtype=float)[derived["patient"]]


def _patient_design(sims, derived, adjust: Sequence[str]) -> dict[str, Any]:
    """One row per patient: any event among VUs at risk ~ any VU exposed + covariates.

    A patient without a VU at risk, with a VU whose exposure is undefined (MRI
    missing) or with a missing covariate is left out (counted in ``excluded``), as
    in ``analysis.patient_level``. The simulator loses MRIs per patient and week, so
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


def _fit_vu(vu: dict[str, Any], plan: _Plan) -> dict[str, np.ndarray]:
    if plan.engine != "native":
        return _fit_each(vu, plan, plan.engine)
    from syndesmo.engines.native import fit_many

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


def _fit_each(vu: dict[str, Any], plan: _Plan, engine: str) -> dict[str, np.ndarray]:
    """One fit per replicate through the package's engines (``gee``, ``lme4``)."""
    from syndesmo.design import Design
    from syndesmo.errors import SyndesmoError

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
            if engine == "gee":
                from syndesmo.engines.gee import fit_gee

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
                fit = fit_gee(design)
            else:
                fit = _fit_frame(vu, r, plan, formula, engine)
        except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
            out["message"][r] = f"{type(exc).__name__}: {exc}"
            continue
        est = float(fit.params[TERM])
        out["estimate"][r] = est
        out["se"][r] = float(fit.bse[TERM])
        out["converged"][r] = bool(fit.converged) and math.isfinite(est)
        out["singular"][r] = bool(fit.singular)
        out["sigma"][r] = float(fit.sigma)
        out["message"][r] = fit.convergence_message
    return out


def _fit_frame(vu: dict[str, Any], r: int, plan: _Plan, formula: str, engine: str):
    """Replicate ``r`` as a data frame through ``syndesmo.fit`` (e.g. R's glmer)."""
    from syndesmo.fitting import fit

    keep = vu["mask"][r]
    frame = pd.DataFrame(vu["X"][r, keep, 1:], columns=vu["names"][1:])
    frame.insert(0, plan.outcome, vu["Y"][r, keep].astype(int))
    frame.insert(0, "patient", vu["groups"][keep])
    return fit(formula, frame, engine=engine, nagq=plan.nagq)


# ---------------------------------------------------------------------------
# results


@dataclass
class PowerResult:
    """The outcome of ``power``: one summary row per analysis and every replicate.

    ``table`` has one row per analysis (see the module docstring for definitions);
    ``replicates`` one row per replicate × analysis with ``log_or``, ``se``, ``p``,
    the Wald CI ``lower``/``upper``, ``reject``, ``converged``, ``singular``,
    ``sigma``, ``n_obs``, ``n_events`` and the fit ``message``. ``ledger`` totals
    the VUs left out of the VU-level analyses over all replicates; ``timing`` the
    CPU seconds spent simulating, deriving, building designs and fitting each
    analysis (``time.process_time`` summed over tasks, so robust to other load on
    the machine) and the ``wall`` time of the whole run.
    """

    spec: Any
    n_sims: int
    alpha: float
    analyses: tuple[str, ...]
    table: pd.DataFrame
    replicates: pd.DataFrame
    timing: dict[str, float] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    backend: str = "in-process"
    seed: Any = None

    @property
    def power(self) -> float | dict[str, float]:
        """The power: a float for one analysis, else a dict by analysis."""
        values = dict(zip(self.table["analysis"], self.table["power"].astype(float), strict=True))
        if len(values) == 1:
            return next(iter(values.values()))
        return values

    def summary(self) -> str:
        """The table as text, with the definitions a reader needs."""
        cols = [
            "analysis",
            "power",
            "power_lower",
            "power_upper",
            "mean_or",
            "median_or",
            "true_or",
            "bias_log_or",
            "coverage",
            "failed_rate",
            "singular_rate",
            "seconds",
        ]
        head = (
            f"Power by simulation: {self.n_sims} replicates, alpha {self.alpha:g} "
            f"(two-sided Wald), {self.backend}; Monte Carlo 95% CI: {CI_METHOD}.\n"
            "Failed fits count as non-rejections; OR summaries, bias and coverage are over "
            "converged fits."
        )
        body = self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
        return head + "\n" + body

    def __repr__(self) -> str:
        return f"<PowerResult n_sims={self.n_sims} power={self.power!r}>"


def _true_log_or(spec, plan: _Plan, analysis: str) -> tuple[float, str]:
    """The true log OR an analysis estimates and what it is (NaN and "" when unknown).

    The GLMM estimates the data-generating conditional OR. For the other analyses
    the target is a population-averaged or patient-level OR among the VUs / patients
    at risk, which the selection of VUs at risk by the patient propensity moves away
    from the Zeger et al. (1988) attenuation formula, so it is not known in closed
    form — except under the null: when the exposure has no effect given the patient
    propensity, and the propensity is independent of the exposure (as in the
    data-generating model), every analysis targets OR = 1. A data-generating effect
    other than the exposure's (arm, region, baseline corner 1) that the analysis
    does not adjust for makes the target unknown too (confounding by arm for
    post-baseline exposures, non-collapsibility otherwise).
    """
    if (
        plan.exposure != spec.exposure
        or float(plan.threshold) != float(spec.threshold)
        or int(spec.n_readers) != 1
    ):
        return math.nan, ""
    if plan.outcome == "new_syndesmophyte":
        ratio = spec.odds_ratio_new
        others = {
            "arm": spec.odds_ratio_arm_new,
            "region": spec.odds_ratio_lumbar_new,
            "baseline_corner": spec.odds_ratio_corner1_new,
        }
    else:
        ratio = spec.odds_ratio_growth
        others = {"arm": spec.odds_ratio_arm_growth}
    if any(value != 1.0 and cov not in plan.adjust for cov, value in others.items()):
        return math.nan, ""
    if analysis == "vu":
        return math.log(ratio), "conditional (data-generating)"
    if ratio == 1.0:
        return 0.0, "null (no association at any level)"
    return math.nan, ""


def _summarise(
    point_results: list[dict[str, Any]], plan: _Plan, n_sims: int, alpha: float, level: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], Ledger]:
    z = stats.norm.ppf(0.5 + level / 2.0)
    rows, reps = [], []
    timing: dict[str, float] = {}
    for res in point_results:
        for k, v in res["timing"].items():
            timing[k] = timing.get(k, 0.0) + v
    for analysis in plan.analyses:
        parts = [res["fits"][analysis] for res in point_results]
        f = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        est, se = f["estimate"], f["se"]
        conv = f["converged"] & np.isfinite(est) & np.isfinite(se) & (se > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pval = np.where(conv, 2.0 * stats.norm.sf(np.abs(est / se)), np.nan)
        reject = conv & (pval < alpha)
        lower, upper = est - z * se, est + z * se
        truth, truth_kind = _true_log_or(plan.spec, plan, analysis)
        covers = conv & (lower <= truth) & (truth <= upper)
        k = int(reject.sum())
        lo, hi = wilson_interval(k, n_sims)
        n_conv = int(conv.sum())
        eo = est[conv]
        rows.append(
            {
                "analysis": analysis,
                "label": ANALYSES[analysis],
                "engine": _engine_label(plan, analysis),
                "n_sims": n_sims,
                "alpha": alpha,
                "rejections": k,
                "power": k / n_sims,
                "power_lower": lo,
                "power_upper": hi,
                "ci_method": CI_METHOD,
                "true_or": math.exp(truth) if math.isfinite(truth) else math.nan,
                "truth": truth_kind,
                "mean_or": float(np.mean(np.exp(eo))) if n_conv else math.nan,
                "median_or": float(np.median(np.exp(eo))) if n_conv else math.nan,
                "bias_log_or": float(np.mean(eo) - truth) if n_conv else math.nan,
                "coverage": float(covers.sum() / n_conv)
                if n_conv and math.isfinite(truth)
                else math.nan,
                "failed": n_sims - n_conv,
                "failed_rate": (n_sims - n_conv) / n_sims,
                "singular_rate": float(f["singular"].mean()),
                "mean_n_obs": float(np.mean(f["n_obs"])),
                "mean_n_events": float(np.mean(f["n_events"])),
                "seconds": timing.get(f"fit:{analysis}", math.nan),
            }
        )
        reps.append(
            pd.DataFrame(
                {
                    "replicate": np.arange(n_sims),
                    "analysis": analysis,
                    "log_or": est,
                    "se": se,
                    "p": pval,
                    "lower": lower,
                    "upper": upper,
                    "reject": reject,
                    "converged": conv,
                    "singular": f["singular"],
                    "sigma": f["sigma"],
                    "n_obs": f["n_obs"],
                    "n_events": f["n_events"],
                    "message": f["message"],
                }
            )
        )
    ledger = Ledger()
    reasons = sum(res["reasons"] for res in point_results)
    for code, text in _REASONS.items():
        ledger.add(
            "power (VU level)", f"{text}; total over {n_sims} replicates", int(reasons[code])
        )
    if "patient" in plan.analyses:
        excl = sum(int(res["fits"]["patient"]["excluded"].sum()) for res in point_results)
        ledger.add(
            "power (patient level)",
            f"no VU at risk, MRI or covariate missing; total over {n_sims} replicates",
            excl,
        )
    return pd.DataFrame(rows), pd.concat(reps, ignore_index=True), timing, ledger


def _engine_label(plan: _Plan, analysis: str) -> str:
    if analysis == "vu":
        return plan.engine + (f" (nAGQ={plan.nagq})" if plan.nagq > 1 else "")
    return {"gee": "gee (statsmodels)", "patient": "logit (batched)", "logit": "logit (batched)"}[
        analysis
    ]


# ---------------------------------------------------------------------------
# checking the arguments


def _check_analyses(analysis: str | Sequence[str]) -> tuple[str, ...]:
    items = [analysis] if isinstance(analysis, str) else list(analysis)
    items = [a.strip() for item in items for a in str(item).split(",") if a.strip()]
    if not items:
        raise ModelError(f"no analysis given; choose from {', '.join(ANALYSES)}")
    unknown = [a for a in items if a not in ANALYSES]
    if unknown:
        raise ModelError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    return tuple(dict.fromkeys(items))


def _make_plan(spec, analyses, outcome, exposure, threshold, adjust, engine, nagq) -> _Plan:
    from syndesmo.derive import OUTCOMES, check_threshold, needed_weeks

    if outcome not in OUTCOMES:
        raise ModelError(f"unknown outcome {outcome!r}; choose from {', '.join(OUTCOMES)}")
    if "patient" in analyses and outcome != "new_syndesmophyte":
        raise ModelError("the patient-level analysis is of any new syndesmophyte only")
    exposure = spec.exposure if exposure is None else exposure
    threshold = check_threshold(spec.threshold if threshold is None else threshold)
    needed_weeks(exposure, spec.mri_weeks)
    adjust = (adjust,) if isinstance(adjust, str) else tuple(adjust)
    allowed = (*PATIENT_COVARIATES, *VU_COVARIATES)
    for cov in adjust:
        if cov not in allowed:
            raise ModelError(
                f"unknown covariate {cov!r} in adjust; choose from {', '.join(allowed)}"
            )
        if cov in VU_COVARIATES and "patient" in analyses:
            raise ModelError(
                f"covariate {cov!r} is a VU-level covariate: the patient-level analysis "
                "can only adjust for patient covariates"
            )
    if engine not in VU_ENGINES:
        raise ModelError(
            f"engine {engine!r} cannot fit the 'vu' GLMM; choose {' or '.join(VU_ENGINES)} "
            "(GEE and the crude logit are the analyses 'gee' and 'logit')"
        )
    if isinstance(nagq, bool) or not isinstance(nagq, int | np.integer) or not 1 <= nagq <= 25:
        raise ModelError(f"nagq must be an integer from 1 (Laplace) to 25, got {nagq!r}")
    return _Plan(spec, analyses, outcome, exposure, float(threshold), adjust, engine, int(nagq))


def _root_seed(seed: int | np.random.SeedSequence | np.random.Generator) -> np.random.SeedSequence:
    """The ``SeedSequence`` the replicates are spawned from.

    An int ``s`` gives ``SeedSequence(s)``; a ``SeedSequence`` is used as it is; a
    ``Generator`` gives ``SeedSequence(g.integers(2**63))`` (it consumes one draw).
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2**63)))
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0:
        return np.random.SeedSequence(int(seed))
    raise ModelError(f"seed must be a non-negative int, SeedSequence or Generator, got {seed!r}")


def _check_counts(n_sims: int, alpha: float, batch_size: int | None) -> None:
    if isinstance(n_sims, bool) or not isinstance(n_sims, int | np.integer) or n_sims < 1:
        raise ModelError(f"n_sims must be a whole number >= 1, got {n_sims!r}")
    if not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise ModelError(f"alpha must be between 0 and 1, got {alpha!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ModelError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def _batch(n_sims: int, batch_size: int | None, workers: int | None) -> int:
    """Replicates per task: ``batch_size`` or a default giving each worker >= 2 tasks,
    rounded up to a multiple of ``FIT_BLOCK``."""
    if batch_size is None:
        lanes = workers if workers and workers > 1 else 1
        batch_size = min(DEFAULT_BATCH, math.ceil(n_sims / (2 * lanes)))
    return FIT_BLOCK * max(1, math.ceil(batch_size / FIT_BLOCK))


def _chunks(plan: _Plan, point: int, root: np.random.SeedSequence, n_sims: int, size: int):
    children = root.spawn(n_sims)
    return [
        _Chunk(plan, point, lo, tuple(children[lo : lo + size])) for lo in range(0, n_sims, size)
    ]


# ---------------------------------------------------------------------------
# public entry points


def power(
    spec,
    n_sims: int = 1000,
    alpha: float = 0.05,
    analysis: str | Sequence[str] = "vu",
    engine: str = "native",
    nagq: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    *,
    outcome: str = "new_syndesmophyte",
    exposure: str | None = None,
    threshold: float | None = None,
    adjust: Sequence[str] = ("arm",),
) -> PowerResult:
    """Power of the chosen analyses for cohorts like ``spec``, by simulation.

    ``analysis``: one of ``"vu"``, ``"gee"``, ``"patient"``, ``"logit"`` or a list
    (all fitted to the same replicates). ``engine``/``nagq`` fit the ``"vu"`` GLMM
    (``native`` vectorised, or ``lme4`` one R fit per replicate). ``exposure`` and
    ``threshold`` default to the spec's (the exposure that carries the true OR);
    ``adjust`` are the covariates beside the exposure. ``workers=N`` runs chunks of
    ``batch_size`` replicates (rounded up to a multiple of ``FIT_BLOCK``) in N local
    processes; ``scheduler`` (an address or a ``dask.distributed.Client``) runs them
    on a Dask cluster. See the module docstring for the definitions and the seeding.
    """
    _check_counts(n_sims, alpha, batch_size)
    power_exec.check_backend(workers, scheduler)
    analyses = _check_analyses(analysis)
    plan = _make_plan(spec, analyses, outcome, exposure, threshold, adjust, engine, nagq)
    root = _root_seed(seed)
    chunks = _chunks(plan, 0, root, int(n_sims), _batch(int(n_sims), batch_size, workers))
    t0 = time.perf_counter()
    results = power_exec.run_tasks(
        _run_chunk,
        chunks,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        desc="power",
        unit_sizes=[len(c.seeds) for c in chunks],
    )
    wall = time.perf_counter() - t0
    table, reps, timing, ledger = _summarise(results, plan, int(n_sims), float(alpha))
    timing["wall"] = wall
    return PowerResult(
        spec=spec,
        n_sims=int(n_sims),
        alpha=float(alpha),
        analyses=analyses,
        table=table,
        replicates=reps,
        timing=timing,
        ledger=ledger,
        backend=power_exec.backend_name(workers, scheduler),
        seed=root,
    )


def grid_points(spec, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` (spec field → values), in row-major order.

    Raises ``SpecError`` for a name that is not a ``CohortSpec`` field or an
    empty list of values.
    """
    names = [f.name for f in dataclasses.fields(spec)]
    axes = {}
    for key, values in grid.items():
        if key not in names:
            raise SpecError(f"{key!r} is not a CohortSpec field; fields: {', '.join(names)}")
        current = getattr(spec, key)
        if isinstance(current, tuple):
            values = [tuple(v) for v in values] if _is_seq_of_seqs(values) else [tuple(values)]
        elif isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
            values = [values]
        if len(values) == 0:
            raise SpecError(f"grid axis {key!r} has no values")
        axes[key] = list(values)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _is_seq_of_seqs(values: Any) -> bool:
    return (
        isinstance(values, Sequence)
        and len(values) > 0
        and all(isinstance(v, Sequence) and not isinstance(v, str) for v in values)
    )


def power_curve(
    spec,
    *,
    n_sims: int = 1000,
    alpha: float = 0.05,
    analysis: str | Sequence[str] = "vu",
    engine: str = "native",
    nagq: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    outcome: str = "new_syndesmophyte",
    exposure: str | None = None,
    threshold: float | None = None,
    adjust: Sequence[str] = ("arm",),
    **grid: Sequence[Any],
) -> pd.DataFrame:
    """Power over a grid of spec values: ``power_curve(spec, n_patients=[50, 100],
    odds_ratio_new=[1.5, 2])``.

    Every other keyword that names a ``CohortSpec`` field is a grid axis (a list of
    values; for tuple fields such as ``mri_weeks`` a list of tuples). Returns a tidy
    table: the grid columns, then the columns of ``PowerResult.table``, one row per
    grid point × analysis. Grid point ``g`` (row-major order) uses child ``g`` of
    ``SeedSequence(seed).spawn(n_grid)``. All chunks of all points run in one pool.
    """
    _check_counts(n_sims, alpha, batch_size)
    power_exec.check_backend(workers, scheduler)
    analyses = _check_analyses(analysis)
    points = grid_points(spec, grid)
    plans = [
        _make_plan(
            spec.replace(**pt) if hasattr(spec, "replace") else dataclasses.replace(spec, **pt),
            analyses,
            outcome,
            exposure,
            threshold,
            adjust,
            engine,
            nagq,
        )
        for pt in points
    ]
    roots = _root_seed(seed).spawn(len(points))
    size = _batch(int(n_sims) * len(points), batch_size, workers)
    chunks = [
        c for g, plan in enumerate(plans) for c in _chunks(plan, g, roots[g], int(n_sims), size)
    ]
    results = power_exec.run_tasks(
        _run_chunk,
        chunks,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        desc=f"power curve ({len(points)} points)",
        unit_sizes=[len(c.seeds) for c in chunks],
    )
    tables = []
    for g, (pt, plan) in enumerate(zip(points, plans, strict=True)):
        mine = [r for c, r in zip(chunks, results, strict=True) if c.point == g]
        table = _summarise(mine, plan, int(n_sims), float(alpha))[0]
        for j, (key, value) in enumerate(pt.items()):
            table.insert(j, key, [value] * len(table))
        tables.append(table)
    out = pd.concat(tables, ignore_index=True)
    out.attrs["grid"] = list(grid)
    return out
