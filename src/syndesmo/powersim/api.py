"""Power by simulation: how often would a study of this design detect the MRI effect?

``power(spec, n_sims)`` simulates ``n_sims`` cohorts from a ``CohortSpec`` (the
data-generating model of ``syndesmo.simulate.cohort``), fits the chosen analyses to the
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
  covariates in ``adjust`` — the rules of ``syndesmo.analysis.patient.patient_level``;
* ``"logit"``: the crude VU-level logistic regression that ignores clustering (to
  show how that inflates the type I error when both the exposure and the outcome
  cluster within patients).
* ``"hybrid"``: the within–between GLMM ``outcome ~ mri_within + mri_between +
  adjust + (1|patient)`` (batched ``fit_many``), testing ``mri_within``;
* ``"clogit"``: conditional logistic regression within patient (the registry's
  within-cluster engine, one statsmodels fit per replicate; the patient-level
  covariates and the patients without both outcomes drop out of its likelihood).
  These two estimate the within-patient OR, which a correlation of the patient
  propensities (``CohortSpec.propensity_correlation``) does not bias — unlike
  ``"vu"``, whose bias and coverage then show it;
* ``"course"``: the MRI course — does treatment lower VU inflammation? The arm's
  log OR in ``inflamed at week w ~ arm + inflamed at baseline + (1|patient)``, ``w``
  the last MRI week at or before the crossover (``designs.course_design`` says why
  this model rather than the three-level ``C(week) * arm`` GLMM of ``sy.mri_course``).

**Readers.** With ``spec.n_readers >= 2``, ``"vu"`` and the other VU-level analyses
take the mean of the readers' scores (``derive``'s ``"mean"`` rule, the default of
``reproduce``), and ``"readers"`` fits every reading as a row, nested in its VU:
``outcome ~ mri + adjust + C(reader) + (1|patient/vu)`` (``fit_many_structured``;
``sy.fit`` per replicate for another engine). The readings of one VU share its true
state, so a per-reading model with ``(1|patient)`` alone is anti-conservative
(coverage 0.615 in ``benchmarks/coverage_readers_results.md``). On the simulator's
readings (one true state per VU, misread now and then) the nested model's VU SD is
large and its Wald test conservative (``designs`` gives the numbers): its power is
near 0 where ``"vu"``'s is not.

**MRI weeks.** Any ``spec.mri_weeks`` work, with any exposure defined on them
(``"w0"``, ``"w12_or_w52"``, …).

``"patient"`` and ``"logit"`` are plain logistic regressions, fitted for all
replicates of a chunk at once by a batched Newton–Raphson
(``syndesmo.engines.logit_many``), the batched form statsmodels lacks; a test checks
it against ``statsmodels.Logit``.

Definitions used in the tables:

* **power** = (replicates whose fit converged and rejected H0) / ``n_sims``: a
  replicate whose fit failed (did not converge, no events, separation, a
  rank-deficient design) counts as a non-rejection, so failures lower the power
  rather than being dropped (``FAILURE_RULE``, printed with every table). A
  singular GLMM fit is a valid ML fit and its Wald test is used as it is.
  ``seconds`` is the CPU time of fitting that analysis, summed over the tasks.
* **fit health**, never silent, per analysis: ``failed_rate`` (share of replicates
  without a usable Wald test) = ``not_fitted_rate`` (no events, no non-events, a
  rank-deficient design: the engine refused the data) + ``nonconverged_rate``
  (fitted, did not converge, including ``logit_many``'s separation) +
  ``error_rate`` (the engine raised) + ``no_se_rate`` (converged without a finite
  positive SE); beside it ``singular_rate`` (random-intercept SD at 0) and
  ``separation_rate`` (the engine reported (possible) separation, converged or
  not; see ``replicates.fit_status``).
* **stopping early**: with ``check_first = K`` and ``max_failed = f``, the first
  K replicates (rounded up to a multiple of ``FIT_BLOCK``, at least one block per
  worker) run first; if more than
  a share f of them failed for any analysis, the run stops there and
  ``PowerResult.stopped`` (and the table's ``stop_reason``) says why. The table
  then summarises the K replicates run (``n_sims`` = K).
* the Monte Carlo interval of the power is the **Wilson score** 95% interval
  (``syndesmo.powersim.mcstats.wilson_interval``);
* mean / median OR, bias of the log OR and coverage are over the converged fits;
  the true OR is the data-generating conditional OR for ``"vu"``, ``"hybrid"`` and
  ``"clogit"``; for ``"gee"``, ``"logit"`` and ``"patient"`` it is known only under
  the null (OR = 1) with independent propensities, for ``"course"`` only under its
  null (equal prevalences), see ``_true_log_or``; it is unknown (NaN) when the
  analysed exposure or threshold differs from the spec's, and with several readers
  except under the null (reader error attenuates the OR).

Seeding: replicate ``i`` draws its cohort from
``numpy.random.SeedSequence(seed).spawn(n_sims)[i]``; ``power_curve`` first takes
child ``g`` of ``SeedSequence(seed).spawn(n_grid)`` for grid point ``g`` (grid
points in the row-major order of the cartesian product of the grid values) and
spawns the replicates from it. Each replicate's fits depend only on its own data
(the native engine's blocks are aligned on the replicate index, see
``power_plan.FIT_BLOCK``), so results are identical whatever the backend, the
number of workers and the batch size.

The modules behind it: ``power_plan`` checks the arguments and cuts the seeded
replicates into chunks; ``power_replicates.run_chunk`` simulates and fits one
chunk; ``power_exec`` runs the chunks in-process, in local processes or on Dask;
this module summarises the per-replicate results into ``PowerResult``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from syndesmo.checks import MAX_SIMS, check_int, check_probability, check_sim_total
from syndesmo.fitting import registry
from syndesmo.ledger import Ledger
from syndesmo.powersim import executors as power_exec
from syndesmo.powersim.designs import course_week
from syndesmo.powersim.mcstats import wilson_interval
from syndesmo.powersim.plan import (
    ANALYSES,
    CLOGIT_ANALYSIS,
    COURSE_ANALYSIS,
    CRUDE_ANALYSIS,
    FIT_BLOCK,
    GEE_ANALYSIS,
    HYBRID_ANALYSIS,
    READERS_ANALYSIS,
    Plan,
    check_analyses,
    check_counts,
    chunk_size,
    cut_chunks,
    grid_points,
    make_plan,
    root_seed,
)
from syndesmo.powersim.replicates import prepare, run_chunk

#: Method of the Monte Carlo interval of the power.
CI_METHOD = "wilson"
#: How a failed fit enters the power (printed with every table).
FAILURE_RULE = "failed fits count as non-rejections"
#: Defaults of the early stop: check the first CHECK_FIRST replicates and stop when
#: more than MAX_FAILED of them failed for an analysis.
CHECK_FIRST, MAX_FAILED = 50, 0.5
#: Fit-health columns of the tables (shares of the replicates run).
HEALTH = [
    "failed_rate",
    "not_fitted_rate",
    "nonconverged_rate",
    "error_rate",
    "no_se_rate",
    "singular_rate",
    "separation_rate",
]

_REASONS = {
    1: "thoracic VU (not scored by the mSASSS)",
    2: "not at risk at baseline",
    3: "x-ray missing",
    4: "MRI missing at a week the exposure needs",
}


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
    #: Why the run stopped after its first replicates ("" when it ran to the end).
    stopped: str = ""

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
            *HEALTH,
            "seconds",
        ]
        head = (
            f"Power by simulation: {self.n_sims} replicates, alpha {self.alpha:g} "
            f"(two-sided Wald), {self.backend}; Monte Carlo 95% CI: {CI_METHOD}.\n"
            f"Fit health: {FAILURE_RULE}; OR summaries, bias and coverage are over "
            "converged fits."
        )
        if self.stopped:
            head += f"\nSTOPPED EARLY: {self.stopped}"
        body = self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
        return head + "\n" + body

    def __repr__(self) -> str:
        return f"<PowerResult n_sims={self.n_sims} power={self.power!r}>"


def _true_log_or(spec, plan: Plan, analysis: str) -> tuple[float, str]:
    """The true log OR an analysis estimates and what it is (NaN and "" when unknown).

    * ``"vu"`` estimates the data-generating conditional OR — also under a
      correlation of the patient propensities (``propensity_correlation``), where
      its estimate is biased, as its coverage then shows.
    * ``"hybrid"`` and ``"clogit"`` estimate the within-patient OR, which is the
      data-generating conditional OR whatever the correlation of the propensities.
    * For ``"gee"``, ``"logit"`` and ``"patient"`` the target is a population-averaged
      or patient-level OR among the VUs / patients at risk, which the selection of VUs
      at risk by the patient propensity moves away from the Zeger et al. (1988)
      attenuation formula, so it is not known in closed form — except under the null
      with independent propensities: when the exposure has no effect given the
      patient propensity and the propensity is independent of the exposure, every
      analysis targets OR = 1.
    * ``"course"`` estimates the arm's OR on inflammation at the course week, known
      only under the null (``inflammation_prevalence_treated ==
      inflammation_prevalence``): 1.

    A data-generating effect other than the exposure's (arm, region, baseline corner
    1) that the analysis does not adjust for makes the target unknown (confounding
    by arm for post-baseline exposures, non-collapsibility otherwise); ``"clogit"``
    needs no adjustment for the arm, a patient-level term its strata absorb. With
    several readers the exposure and outcome are read with error, which attenuates
    the OR by an amount not known in closed form, so the target is known only under
    the null (OR 1). It is unknown when the analysed exposure or threshold differs
    from the spec's.
    """
    if analysis == COURSE_ANALYSIS:
        if float(spec.inflammation_prevalence_treated) == float(spec.inflammation_prevalence):
            return 0.0, "null (treatment does not change inflammation)"
        return math.nan, ""
    if plan.exposure != spec.exposure or float(plan.threshold) != float(spec.threshold):
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
    if analysis == CLOGIT_ANALYSIS:
        others.pop("arm")
    if any(value != 1.0 and cov not in plan.adjust for cov, value in others.items()):
        return math.nan, ""
    conditional = analysis in ("vu", READERS_ANALYSIS, HYBRID_ANALYSIS, CLOGIT_ANALYSIS)
    independent = float(spec.propensity_correlation) == 0.0
    if ratio == 1.0 and (conditional or independent):
        return 0.0, "null (no association given the patient)" if not independent else (
            "null (no association at any level)"
        )
    if int(spec.n_readers) != 1:
        return math.nan, ""
    if analysis == "vu":
        return math.log(ratio), "conditional (data-generating)"
    if conditional:
        return math.log(ratio), "within-patient = conditional (data-generating)"
    return math.nan, ""


def _summarise(
    point_results: list[dict[str, Any]], plan: Plan, n_sims: int, alpha: float, level: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], Ledger]:
    z = special.ndtri(0.5 + level / 2.0)  # the normal quantile (scipy.stats is not loaded)
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
        status = np.where(f["converged"] & ~conv, "no SE", f["status"])
        with np.errstate(invalid="ignore", divide="ignore"):
            pval = np.where(conv, 2.0 * special.ndtr(-np.abs(est / se)), np.nan)
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
                "not_fitted_rate": float(np.mean(status == "not fitted")),
                "nonconverged_rate": float(np.mean(status == "not converged")),
                "error_rate": float(np.mean(status == "error")),
                "no_se_rate": float(np.mean(status == "no SE")),
                "singular_rate": float(f["singular"].mean()),
                "separation_rate": float(f["separation"].mean()),
                "failure_rule": FAILURE_RULE,
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
                    "status": status,
                    "singular": f["singular"],
                    "separation": f["separation"],
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
    if COURSE_ANALYSIS in plan.analyses:
        excl = sum(int(res["fits"][COURSE_ANALYSIS]["excluded"].sum()) for res in point_results)
        ledger.add(
            "power (MRI course)",
            f"VU without an MRI at baseline or week {course_week(plan.spec)}; total over "
            f"{n_sims} replicates",
            excl,
        )
    if "patient" in plan.analyses:
        excl = sum(int(res["fits"]["patient"]["excluded"].sum()) for res in point_results)
        ledger.add(
            "power (patient level)",
            f"no VU at risk, MRI or covariate missing; total over {n_sims} replicates",
            excl,
        )
    return pd.DataFrame(rows), pd.concat(reps, ignore_index=True), timing, ledger


def _engine_label(plan: Plan, analysis: str) -> str:
    quad = f" (nAGQ={plan.nagq})" if plan.nagq > 1 else ""
    if analysis == READERS_ANALYSIS:
        return f"{plan.engine}, readings nested (1|patient/vu){quad}"
    if analysis in ("vu", HYBRID_ANALYSIS, COURSE_ANALYSIS):
        return plan.engine + quad
    batched = f"{registry.CRUDE_ENGINE} (batched)"
    return {
        GEE_ANALYSIS: f"{registry.MARGINAL_ENGINE} (statsmodels)",
        CLOGIT_ANALYSIS: f"{CLOGIT_ANALYSIS} (statsmodels)",
        "patient": batched,
        CRUDE_ANALYSIS: batched,
    }[analysis]


def check_stop(check_first: int | None, max_failed: float | None) -> tuple[int, float]:
    """Validated early-stop arguments: (replicates checked first, largest failed share);
    ``(0, 1.0)`` when either is None (no early stop)."""
    if check_first is None or max_failed is None:
        return 0, 1.0
    check_int(check_first, "check_first", low=1)
    check_probability(max_failed, "max_failed", closed=True)
    return FIT_BLOCK * math.ceil(int(check_first) / FIT_BLOCK), float(max_failed)


def _failure_reason(results: list[dict[str, Any]], plan: Plan, max_failed: float) -> str:
    """The reason to stop when more than ``max_failed`` of these replicates failed for an
    analysis ("" otherwise), naming the analysis, the share and the commonest message."""
    for analysis in plan.analyses:
        fits = [r["fits"][analysis] for r in results]
        conv = np.concatenate([f["converged"] & np.isfinite(f["se"]) for f in fits])
        share = 1.0 - float(conv.mean())
        if share > max_failed:
            msgs = np.concatenate([f["message"] for f in fits])[~conv]
            values, counts = np.unique([str(m) or "(no message)" for m in msgs], return_counts=True)
            common = values[np.argmax(counts)]
            return (
                f"{int((~conv).sum())} of the first {len(conv)} fits of analysis "
                f"{analysis!r} failed ({share:.0%} > max_failed {max_failed:g}); commonest: "
                f"{common}"
            )
    return ""


def run_points(
    plans: Sequence[Plan],
    seeds: Sequence[Sequence[np.random.SeedSequence]],
    *,
    workers: int | None,
    scheduler: Any,
    progress: bool,
    batch_size: int | None,
    check_first: int,
    max_failed: float,
    desc: str,
) -> list[tuple[list[dict[str, Any]], str]]:
    """Run the replicates of every point (``plans[g]`` with ``seeds[g]``) and return, per
    point, the chunk results in replicate order and the reason it stopped early ("").

    With ``check_first > 0`` the first ``check_first`` replicates of every point run
    first (in chunks that split them over the workers); points where more than
    ``max_failed`` of them failed for an analysis stop there, the others run the rest.
    Chunks stay on ``FIT_BLOCK`` boundaries, so the results are those of one pass.
    """
    total = sum(len(s) for s in seeds)
    size = chunk_size(total, batch_size, workers)
    lanes = workers if workers and workers > 1 else 1
    # at least one block per worker, so the check keeps every worker busy
    first = max(check_first, FIT_BLOCK * lanes) if check_first and max_failed < 1.0 else 0
    first_size = chunk_size(first * len(plans), batch_size, lanes) if first else None
    chunks = [
        cut_chunks(plan, g, s, size, first=first, first_size=first_size)
        for g, (plan, s) in enumerate(zip(plans, seeds, strict=True))
    ]
    done: list[dict[int, Any]] = [{} for _ in plans]
    if scheduler is None and lanes > 1:
        for plan in plans:  # loaded once here, inherited by the forked workers
            prepare(plan)

    def run(todo: list[Any], label: str) -> None:
        res = power_exec.run_tasks(
            run_chunk,
            todo,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
            desc=label,
            unit_sizes=[len(c.seeds) for c in todo],
        )
        for c, r in zip(todo, res, strict=True):
            done[c.point][c.start] = r

    reasons = [""] * len(plans)
    if first:
        run([c for cs in chunks for c in cs if c.start < first], f"{desc} (first {first})")
        for g, plan in enumerate(plans):
            reasons[g] = _failure_reason(list(done[g].values()), plan, max_failed)
    rest = [
        c for g, cs in enumerate(chunks) if not reasons[g] for c in cs if c.start not in done[g]
    ]
    if rest:
        run(rest, desc)
    return [([d[k] for k in sorted(d)], reasons[g]) for g, d in enumerate(done)]


def power(
    spec,
    n_sims: int = 1000,
    alpha: float = 0.05,
    analysis: str | Sequence[str] = "vu",
    engine: str = registry.DEFAULT_ENGINE,
    nagq: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    workers: int | str | None = "auto",
    scheduler: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    *,
    outcome: str = "new_syndesmophyte",
    exposure: str | None = None,
    threshold: float | None = None,
    adjust: Sequence[str] = ("arm",),
    max_sims: int = MAX_SIMS,
    check_first: int | None = CHECK_FIRST,
    max_failed: float | None = MAX_FAILED,
) -> PowerResult:
    """Power of the chosen analyses for cohorts like ``spec``, by simulation.

    ``n_sims`` cohorts are drawn from ``spec`` (replicate ``i`` from child ``i`` of
    ``SeedSequence(seed)``), each analysis is fitted to every cohort, and the power
    is the share of Wald tests of the exposure at level ``alpha`` that reject. The
    results do not depend on where the replicates run. See the module docstring for
    the definitions, the fit-health rates and the seeding.

    Parameters
    ----------
    spec : CohortSpec
        The cohorts to simulate (patients, VUs, readers, MRI weeks, true ORs, …).
    n_sims : int, default 1000
        Replicates (simulated studies).
    alpha : float, default 0.05
        Level of each test.
    analysis : str or sequence of str, default "vu"
        One of ``"vu"``, ``"readers"``, ``"hybrid"``, ``"clogit"``, ``"course"``,
        ``"gee"``, ``"patient"``, ``"logit"`` (the table in the README says what
        each fits), a comma list or a sequence; all are fitted to the same replicates.
    engine : str, default "native"
        Engine of the GLMMs (``"vu"``, ``"readers"``, ``"hybrid"``, ``"course"``):
        ``"native"`` (many replicates in one computation) or ``"lme4"`` (one R fit
        per replicate).
    nagq : int, default 1
        Quadrature points of the GLMMs (1 is the Laplace approximation).
    seed : int, SeedSequence or Generator, default 0
        Root of the replicates' seeds.
    workers : int, "auto" or None, default "auto"
        ``N`` runs chunks in ``N`` local processes (a pool kept alive for the session,
        see ``executors``); ``"auto"`` forks one worker per CPU for runs of at least
        ``executors.AUTO_MIN_SIMS`` (400) replicates with the native engine where
        forking is safe, else runs in-process; ``None`` or 1 run in-process.
    scheduler : str or dask.distributed.Client, optional
        Run the chunks on a Dask cluster (an address or a client) instead.
    progress : bool, default True
        Show a progress bar.
    batch_size : int, optional
        Replicates per chunk (rounded up to a multiple of ``FIT_BLOCK``); by default
        enough chunks for every worker to get at least two.
    outcome : str, default "new_syndesmophyte"
        The VU outcome (``"growth"`` for growth of an existing syndesmophyte).
    exposure : str, optional
        The MRI exposure (default the spec's, the one that carries the true OR).
    threshold : float, optional
        MRI score at or above which a VU counts as inflamed (default the spec's).
    adjust : sequence of str, default ("arm",)
        Covariates beside the exposure (patient covariates, or VU covariates for the
        VU-level analyses).
    max_sims : int, default ``syndesmo.checks.MAX_SIMS``
        More replicates than this are refused before anything runs.
    check_first : int or None, default 50
        The first ``check_first`` replicates run first; ``None`` turns the check off.
    max_failed : float or None, default 0.5
        If more than this share of the first replicates failed for an analysis, the
        run stops there with the reason in ``PowerResult.stopped``; ``None`` turns
        the check off.

    Returns
    -------
    PowerResult
        ``table`` (one row per analysis: power with its Monte Carlo CI, the true OR,
        bias and coverage where the truth is known, the fit-health rates),
        ``replicates`` (one row per replicate × analysis), ``ledger``, ``timing``,
        ``backend``, ``seed`` and ``stopped``.

    Raises
    ------
    ModelError
        For a bad count, level, analysis, engine, covariate, backend or stopping
        rule, an analysis the spec cannot support (``"readers"`` with one reader,
        ``"course"`` without an MRI week before the crossover), or more than
        ``max_sims`` replicates — all before anything runs.

    See Also
    --------
    power_curve : power over a grid of spec values.
    sample_size, detectable_effect : the planner's questions, on common random numbers.
    """
    check_counts(n_sims, alpha, batch_size)
    check_sim_total(n_sims, 1, max_sims)
    power_exec.check_backend(workers, scheduler)
    first, max_share = check_stop(check_first, max_failed)
    analyses = check_analyses(analysis)
    plan = make_plan(spec, analyses, outcome, exposure, threshold, adjust, engine, nagq)
    workers = resolved_workers(workers, scheduler, plan.engine, int(n_sims))
    root = root_seed(seed)
    t0 = time.perf_counter()
    [(results, stopped)] = run_points(
        [plan],
        [root.spawn(int(n_sims))],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        batch_size=batch_size,
        check_first=first,
        max_failed=max_share,
        desc="power",
    )
    wall = time.perf_counter() - t0
    return _result(spec, plan, results, stopped, float(alpha), wall, workers, scheduler, root)


def resolved_workers(
    workers: int | str | None, scheduler: Any, engine: str, n_studies: int
) -> int | None:
    """``workers`` with ``"auto"`` decided (``executors.resolve_workers``) for a run of
    ``n_studies``: never worker processes for an engine other than the native one (R
    is not forked by default)."""
    if engine != registry.DEFAULT_ENGINE and workers == power_exec.AUTO:
        return None
    return power_exec.resolve_workers(workers, scheduler, n_studies)


def _result(spec, plan, results, stopped, alpha, wall, workers, scheduler, root) -> PowerResult:
    n_run = sum(len(r["fits"][plan.analyses[0]]["converged"]) for r in results)
    table, reps, timing, ledger = _summarise(results, plan, n_run, alpha)
    table["stopped_early"] = bool(stopped)
    table["stop_reason"] = stopped
    timing["wall"] = wall
    return PowerResult(
        spec=spec,
        n_sims=n_run,
        alpha=alpha,
        analyses=plan.analyses,
        table=table,
        replicates=reps,
        timing=timing,
        ledger=ledger,
        backend=power_exec.backend_name(workers, scheduler),
        seed=root,
        stopped=stopped,
    )


def power_curve(
    spec,
    *,
    n_sims: int = 1000,
    alpha: float = 0.05,
    analysis: str | Sequence[str] = "vu",
    engine: str = registry.DEFAULT_ENGINE,
    nagq: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    workers: int | str | None = None,
    scheduler: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    outcome: str = "new_syndesmophyte",
    exposure: str | None = None,
    threshold: float | None = None,
    adjust: Sequence[str] = ("arm",),
    max_sims: int = MAX_SIMS,
    check_first: int | None = CHECK_FIRST,
    max_failed: float | None = MAX_FAILED,
    **grid: Sequence[Any],
) -> pd.DataFrame:
    """Power over a grid of spec values: ``power_curve(spec, n_patients=[50, 100],
    odds_ratio_new=[1.5, 2])``.

    Grid point ``g`` (row-major order) uses child ``g`` of
    ``SeedSequence(seed).spawn(n_grid)``; all chunks of all points run in one pool.
    The results are the same in-process, on workers and on a Dask cluster.

    Parameters
    ----------
    spec : CohortSpec
        The cohorts; the grid replaces some of its fields.
    n_sims, alpha, analysis, engine, nagq, seed, scheduler, progress, batch_size
        As in :func:`power`, per grid point.
    workers : int, "auto" or None, default None
        Local worker processes (in-process by default); ``"auto"`` decides as
        :func:`power` does, for all the grid's studies together.
    outcome, exposure, threshold, adjust
        As in :func:`power`.
    max_sims : int, default ``syndesmo.checks.MAX_SIMS``
        More studies in all (replicates × grid points) are refused before anything runs.
    check_first, max_failed
        As in :func:`power`, per grid point: a point whose first replicates failed
        too often stops there, the others go on.
    **grid : sequence
        Every other keyword names a ``CohortSpec`` field and lists its values (for
        tuple fields such as ``mri_weeks``, a list of tuples).

    Returns
    -------
    pandas.DataFrame
        A tidy table: the grid columns (in the order given), then the columns of
        ``PowerResult.table`` (the fit-health rates, ``stopped_early`` and
        ``stop_reason`` included), one row per grid point × analysis.

    Raises
    ------
    ModelError
        As :func:`power` — before anything runs.
    SpecError
        For a grid keyword that is not a ``CohortSpec`` field or a value the spec
        refuses — before anything runs.

    See Also
    --------
    power, sample_size, detectable_effect
    """
    check_counts(n_sims, alpha, batch_size)
    power_exec.check_backend(workers, scheduler)
    first, max_share = check_stop(check_first, max_failed)
    analyses = check_analyses(analysis)
    points = grid_points(spec, grid)
    check_sim_total(n_sims, len(points), max_sims)
    plans = [
        make_plan(
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
    workers = resolved_workers(workers, scheduler, engine, int(n_sims) * len(points))
    roots = root_seed(seed).spawn(len(points))
    runs = run_points(
        plans,
        [r.spawn(int(n_sims)) for r in roots],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        batch_size=batch_size,
        check_first=first,
        max_failed=max_share,
        desc=f"power curve ({len(points)} points)",
    )
    tables = []
    for pt, plan, (mine, stopped) in zip(points, plans, runs, strict=True):
        n_run = sum(len(r["fits"][analyses[0]]["converged"]) for r in mine)
        table = _summarise(mine, plan, n_run, float(alpha))[0]
        table["stopped_early"] = bool(stopped)
        table["stop_reason"] = stopped
        for j, (key, value) in enumerate(pt.items()):
            table.insert(j, key, [value] * len(table))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
