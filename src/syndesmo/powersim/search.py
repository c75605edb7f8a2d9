"""The planner's questions: how many patients, and how large an effect, for a given power.

``sample_size(spec, target=0.8)`` finds the smallest number of patients whose
simulated power reaches ``target``; ``detectable_effect(spec, n_patients=…,
target=0.8)`` the smallest conditional OR of the exposure (> 1) that reaches it.
Both answer for every analysis asked (e.g. the VU-level GLMM beside the
patient-level logistic regression), each with its own search. Every analysis of
``powersim.plan.ANALYSES`` can be searched over the number of patients — the
within-patient estimators (``hybrid``, ``clogit``), the readings nested in VUs
(``readers``, with ``n_readers >= 2``: nested cohorts keep each patient's VU ×
reader rows together) and the MRI course (``course``) included; over the OR every
analysis of the exposure (``course`` tests the arm, not the exposure, and is
refused there).

**Common random numbers.** Every evaluation of a search uses the *same* replicate
seeds (``SeedSequence(seed).spawn(n_sims)``, spawned once), so the simulated power
curve is a smooth, nearly monotone function of the value searched and the search
does not chase Monte Carlo noise:

* over the number of patients, replicate ``i``'s cohort of ``n`` patients is the
  first ``n`` patients of one unbounded nested cohort (``syndesmo.powersim.nested``):
  a cohort of ``n + step`` patients is the cohort of ``n`` plus ``step`` more;
* over the OR, replicate ``i`` is ``simulate_arrays(spec with that OR, seed_i)``:
  the simulator draws in a fixed order, so only the outcomes change with the OR,
  each from the same uniform draw (a larger OR can only add new syndesmophytes
  among exposed VUs). The power at an OR is therefore *exactly*
  ``power(spec.replace(odds_ratio_new=OR, n_patients=n), seed=seed)``'s.

**The search** (per analysis) runs on a grid: ``n = k · step`` patients (``k >= 1``)
or ``OR = 1 + k · step``. It starts at the spec's value rounded to the grid. If the
power there reaches the target it halves ``k`` until the power falls short (or ``k
= 1``); otherwise it doubles ``k`` until the power reaches the target (or the value
passes ``max_patients`` / ``max_odds_ratio``: then the target is *not reached* and
the result says so). This brackets a crossing between ``lo`` (short) and ``hi``
(reached); bisection on ``k`` then halves the bracket until ``hi − lo = 1``. The
answer is ``hi``: its power reaches the target and the power at ``hi − step`` (also
evaluated) falls short, so the answer's **resolution is ``step``**. On a monotone
CRN curve ``hi`` is the smallest grid value reaching the target; a test confirms it
against a brute-force grid. "Reaches" means the simulated power (a point estimate,
with its Wilson 95% Monte Carlo CI reported beside it) is at least the target.

Fit health travels with every point (``powersim.api``): failed fits count as
non-rejections, and an evaluation whose first ``check_first`` replicates failed
more than ``max_failed`` stops early; it then counts as falling short of the target
and its reason is in the tables.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.checks import MAX_SIMS, check_int, check_probability, check_sim_total
from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.powersim import executors as power_exec
from syndesmo.powersim.api import (
    CHECK_FIRST,
    FAILURE_RULE,
    HEALTH,
    MAX_FAILED,
    _summarise,
    check_stop,
    resolved_workers,
    run_points,
)
from syndesmo.powersim.nested import DEFAULT_BLOCK
from syndesmo.powersim.plan import (
    ANALYSES,
    NOT_EXPOSURE,
    check_analyses,
    check_counts,
    make_plan,
    root_seed,
)

#: Upper ends of the searches unless given.
MAX_PATIENTS, MAX_ODDS_RATIO = 2000, 10.0


@dataclass
class SearchResult:
    """The answer of ``sample_size`` or ``detectable_effect``.

    ``table``: one row per analysis — ``value`` (the number of patients or the OR
    found), its ``power`` with the Monte Carlo 95% CI (``power_lower``,
    ``power_upper``), ``below`` (``value − step``) and ``power_below``, ``reached``
    (False when the target was not reached within the search range), ``note`` and
    the fit-health rates at ``value``. ``evaluated``: every point the searches
    evaluated (``over`` column, ``analysis``, power, CI, health rates, ``stop_reason``),
    sorted. ``over`` is ``"n_patients"`` or ``"odds_ratio_new"``.
    """

    over: str
    target: float
    step: float
    n_sims: int
    alpha: float
    table: pd.DataFrame
    evaluated: pd.DataFrame
    seed: Any = None
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> float | dict[str, float]:
        """The value found: a number for one analysis, else a dict by analysis (NaN where
        the target was not reached)."""
        vals = {r.analysis: (r.value if r.reached else math.nan) for r in self.table.itertuples()}
        return next(iter(vals.values())) if len(vals) == 1 else vals

    def summary(self) -> str:
        """The answer as text, with how it was found."""
        what = "number of patients" if self.over == "n_patients" else "conditional OR"
        head = (
            f"Smallest {what} reaching power {self.target:g} (alpha {self.alpha:g}, two-sided "
            f"Wald; {self.n_sims} replicates per point, the same seeds at every point; "
            f"resolution {self.step:g}). Monte Carlo 95% CI: Wilson. Fit health: {FAILURE_RULE}."
        )
        cols = [
            "analysis",
            "value",
            "power",
            "power_lower",
            "power_upper",
            "below",
            "power_below",
            "reached",
            "failed_rate",
            "singular_rate",
            "separation_rate",
            "note",
        ]
        body = self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
        return head + "\n" + body

    def __repr__(self) -> str:
        return f"<SearchResult over={self.over} target={self.target:g} value={self.value!r}>"


def _evaluator(
    plans: dict[str, Any],
    seeds: Sequence[np.random.SeedSequence],
    over: str,
    alpha: float,
    run_kw: dict[str, Any],
) -> tuple[Callable[[str, float], pd.Series], dict[tuple[str, float], pd.Series]]:
    """A cached function (analysis, value) → that analysis' summary row at the value."""
    cache: dict[tuple[str, float], pd.Series] = {}

    def evaluate(analysis: str, value: float) -> pd.Series:
        key = (analysis, value)
        if key not in cache:
            base = plans[analysis]
            spec = base.spec.replace(**{over: value})
            plan = dataclasses.replace(base, spec=spec)
            [(results, stopped)] = run_points(
                [plan], [seeds], desc=f"{analysis} at {over}={value:g}", **run_kw
            )
            n_run = len(np.concatenate([r["fits"][analysis]["converged"] for r in results]))
            row = _summarise(results, plan, n_run, alpha)[0].iloc[0].copy()
            row[over] = value
            row["stopped_early"] = bool(stopped)
            row["stop_reason"] = stopped
            cache[key] = row
        return cache[key]

    return evaluate, cache


def _reaches(row: pd.Series, target: float) -> bool:
    return not row["stopped_early"] and float(row["power"]) >= target


def _search(
    reach: Callable[[int], bool], k_start: int, k_max: int
) -> tuple[int | None, int | None]:
    """Bracket and bisect a crossing on the grid 1 … k_max: (hi, lo) with ``reach(hi)``
    and not ``reach(lo)``, ``hi − lo = 1``; lo None when hi = 1; hi None when even
    k_max falls short."""
    k = min(max(1, k_start), k_max)
    if reach(k):
        hi, lo = k, None
        while lo is None:
            if hi == 1:
                return 1, None
            k = max(1, hi // 2)
            if reach(k):
                hi = k
            else:
                lo = k
    else:
        lo, hi = k, None
        while hi is None:
            if lo >= k_max:
                return None, lo
            k = min(2 * lo, k_max)
            if reach(k):
                hi = k
            else:
                lo = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reach(mid):
            hi = mid
        else:
            lo = mid
    return hi, lo


def _solve(
    spec,
    over: str,
    grid_value: Callable[[int], float],
    k_start: int,
    k_max: int,
    *,
    target: float,
    step: float,
    n_sims: int,
    alpha: float,
    analysis: str | Sequence[str],
    engine: str,
    nagq: int,
    seed: Any,
    workers: int | str | None,
    scheduler: Any,
    progress: bool,
    batch_size: int | None,
    outcome: str,
    exposure: str | None,
    threshold: float | None,
    adjust: Sequence[str],
    max_sims: int,
    check_first: int | None,
    max_failed: float | None,
    nested: int | None,
    limit_note: str,
) -> SearchResult:
    check_counts(n_sims, alpha, batch_size)
    check_sim_total(n_sims, 1, max_sims)
    target = check_probability(target, "target")
    if target <= alpha:
        raise ModelError(f"target {target:g} must be above alpha {alpha:g}")
    power_exec.check_backend(workers, scheduler)
    first, max_share = check_stop(check_first, max_failed)
    analyses = check_analyses(analysis)
    make_plan(spec, analyses, outcome, exposure, threshold, adjust, engine, nagq)  # checks
    plans = {
        a: dataclasses.replace(
            make_plan(spec, (a,), outcome, exposure, threshold, adjust, engine, nagq),
            nested=nested,
        )
        for a in analyses
    }
    root = root_seed(seed)
    seeds = root.spawn(int(n_sims))  # once: the same seeds at every point
    run_kw = {
        "workers": resolved_workers(workers, scheduler, engine, int(n_sims)),
        "scheduler": scheduler,
        "progress": progress,
        "batch_size": batch_size,
        "check_first": first,
        "max_failed": max_share,
    }
    evaluate, cache = _evaluator(plans, seeds, over, float(alpha), run_kw)
    t0 = time.perf_counter()
    rows = []
    for a in analyses:

        def reach(k: int, a: str = a) -> bool:
            return _reaches(evaluate(a, grid_value(k)), target)

        hi, lo = _search(reach, k_start, k_max)
        at = evaluate(a, grid_value(hi if hi is not None else lo))
        below = evaluate(a, grid_value(lo)) if lo is not None and hi is not None else None
        if hi is None:
            note = f"target not reached: power {at['power']:.3f} at the {limit_note}"
            if at["stopped_early"]:
                note += f" (stopped early: {at['stop_reason']})"
        elif below is None:
            note = "reached at the smallest value of the grid"
        else:
            note = ""
        rows.append(
            {
                "analysis": a,
                "label": ANALYSES[a],
                "over": over,
                "target": target,
                "step": step,
                "value": at[over],
                "power": at["power"],
                "power_lower": at["power_lower"],
                "power_upper": at["power_upper"],
                "below": below[over] if below is not None else math.nan,
                "power_below": below["power"] if below is not None else math.nan,
                "reached": hi is not None,
                "n_sims": int(n_sims),
                "alpha": float(alpha),
                **{h: at[h] for h in HEALTH},
                "failure_rule": FAILURE_RULE,
                "note": note,
            }
        )
    evaluated = pd.DataFrame([r for r in cache.values()])
    front = [over, "analysis"]
    evaluated = evaluated[front + [c for c in evaluated.columns if c not in front]]
    evaluated = evaluated.sort_values(
        ["analysis", over], key=lambda s: s.map(list(analyses).index) if s.name == "analysis" else s
    ).reset_index(drop=True)
    return SearchResult(
        over=over,
        target=target,
        step=step,
        n_sims=int(n_sims),
        alpha=float(alpha),
        table=pd.DataFrame(rows),
        evaluated=evaluated,
        seed=root,
        timing={"wall": time.perf_counter() - t0},
    )


def sample_size(
    spec,
    target: float = 0.8,
    analysis: str | Sequence[str] = "vu",
    *,
    n_sims: int = 500,
    alpha: float = 0.05,
    step: int = 10,
    max_patients: int = MAX_PATIENTS,
    start: int | None = None,
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
    block: int = DEFAULT_BLOCK,
) -> SearchResult:
    """The smallest number of patients whose simulated power reaches ``target``.

    Parameters
    ----------
    spec : CohortSpec
        The design and the true effect (``odds_ratio_new``); ``n_patients`` is where
        the search starts (unless ``start``).
    target : float
        Power to reach, above ``alpha``.
    analysis : str or sequence of str
        ``"vu"`` (GLMM), ``"patient"``, ``"gee"``, ``"logit"``: each gets its own
        search, reported side by side.
    n_sims : int
        Replicates per evaluated point (the same seeds at every point).
    step : int
        Resolution: the numbers of patients tried are multiples of ``step``.
    max_patients : int
        Largest number of patients tried; beyond it the target counts as not reached.
    start : int, optional
        First number of patients tried (default ``spec.n_patients``).
    block : int
        Patients per block of the nested cohorts (``syndesmo.powersim.nested``).
    check_first, max_failed
        Early stop of an evaluation whose first replicates mostly fail (it then
        counts as short of the target); see ``syndesmo.powersim.api.power``.
    alpha, engine, nagq, seed, workers, scheduler, progress, batch_size
        As in ``syndesmo.powersim.api.power``; the searches run in-process unless
        given ``workers`` (``"auto"`` decides for one point's ``n_sims`` studies).
    outcome, exposure, threshold, adjust, max_sims
        As in ``syndesmo.powersim.api.power`` (``max_sims`` bounds the studies of
        the whole search).

    Returns
    -------
    SearchResult
        ``value`` is the number of patients (an int per analysis), with the power
        there, the power at ``value − step`` and every point evaluated.

    Notes
    -----
    Bracketing (halving or doubling from the start) and then bisection on the grid
    of multiples of ``step``, on a common-random-numbers power curve over nested
    cohorts; see the module docstring.
    """
    check_int(step, "step", low=2)
    check_int(max_patients, "max_patients", low=2)
    check_int(block, "block", low=2)
    begin = spec.n_patients if start is None else check_int(start, "start", low=2)
    return _solve(
        spec,
        "n_patients",
        lambda k: int(k * step),
        round(begin / step),
        max(1, max_patients // step),
        target=target,
        step=step,
        n_sims=n_sims,
        alpha=alpha,
        analysis=analysis,
        engine=engine,
        nagq=nagq,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        batch_size=batch_size,
        outcome=outcome,
        exposure=exposure,
        threshold=threshold,
        adjust=adjust,
        max_sims=max_sims,
        check_first=check_first,
        max_failed=max_failed,
        nested=int(block),
        limit_note=f"largest number of patients tried ({max_patients})",
    )


def detectable_effect(
    spec,
    n_patients: int | None = None,
    target: float = 0.8,
    analysis: str | Sequence[str] = "vu",
    *,
    n_sims: int = 500,
    alpha: float = 0.05,
    step: float = 0.05,
    max_odds_ratio: float = MAX_ODDS_RATIO,
    start: float | None = None,
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
) -> SearchResult:
    """The smallest conditional OR of the exposure (> 1) detected with power ``target``.

    The OR searched is the spec's ``odds_ratio_new`` (``odds_ratio_growth`` for
    ``outcome="growth"``).

    Parameters
    ----------
    spec : CohortSpec
        The design; ``odds_ratio_new`` is where the search starts (unless ``start``).
    n_patients : int, optional
        Patients per study (default ``spec.n_patients``).
    target : float
        Power to reach, above ``alpha``.
    step : float
        Resolution: the ORs tried are ``1 + k · step``.
    max_odds_ratio : float
        Largest OR tried; beyond it the target counts as not reached.
    start : float, optional
        First OR tried (default ``spec.odds_ratio_new``, or ``1 + step`` if that is ≤ 1).
    analysis, n_sims, alpha, check_first, max_failed
        As in :func:`sample_size` (``analysis`` not ``"course"``: it tests the arm).
    engine, nagq, seed, workers, scheduler, progress, batch_size
        As in ``syndesmo.powersim.api.power``; in-process unless given ``workers``
        (``"auto"`` decides for one point's ``n_sims`` studies).
    outcome, exposure, threshold, adjust, max_sims
        As in ``syndesmo.powersim.api.power`` (``max_sims`` bounds the studies of
        the whole search).

    Returns
    -------
    SearchResult
        ``value`` is the OR found (per analysis), with its power, the power at
        ``value − step`` and every point evaluated. The power at an OR equals
        ``power(spec.replace(odds_ratio_new=OR, n_patients=n_patients), seed=seed)``'s.

    Notes
    -----
    Bracketing and bisection on the grid ``1 + k · step`` with the same replicate
    seeds at every OR (common random numbers); see the module docstring.
    """
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
        raise ModelError(f"step must be a positive number, got {step!r}")
    for a in check_analyses(analysis):
        if a in NOT_EXPOSURE:
            raise ModelError(
                f"analysis {a!r} tests the arm's effect on inflammation, not the exposure OR: "
                "search it with sample_size, or vary inflammation_prevalence_treated with "
                "power_curve"
            )
    if not max_odds_ratio > 1 + step:
        raise ModelError(f"max_odds_ratio must exceed 1 + step, got {max_odds_ratio!r}")
    if n_patients is not None:
        spec = spec.replace(n_patients=check_int(n_patients, "n_patients", low=2))
    current = spec.odds_ratio_new if outcome == "new_syndesmophyte" else spec.odds_ratio_growth
    begin = current if start is None else float(start)
    if begin <= 1.0:
        begin = 1.0 + step

    def grid_value(k: int) -> float:
        return round(1.0 + k * step, 10)

    return _solve(
        spec,
        "odds_ratio_new" if outcome == "new_syndesmophyte" else "odds_ratio_growth",
        grid_value,
        max(1, round((begin - 1.0) / step)),
        max(1, math.floor((max_odds_ratio - 1.0) / step + 1e-9)),
        target=target,
        step=float(step),
        n_sims=n_sims,
        alpha=alpha,
        analysis=analysis,
        engine=engine,
        nagq=nagq,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        batch_size=batch_size,
        outcome=outcome,
        exposure=exposure,
        threshold=threshold,
        adjust=adjust,
        max_sims=max_sims,
        check_first=check_first,
        max_failed=max_failed,
        nested=None,
        limit_note=f"largest OR tried ({max_odds_ratio:g})",
    )


def crn_power(
    spec,
    over: str,
    values: Sequence[float],
    analysis: str = "vu",
    *,
    n_sims: int = 500,
    alpha: float = 0.05,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    engine: str = registry.DEFAULT_ENGINE,
    nagq: int = 1,
    workers: int | str | None = None,
    scheduler: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    adjust: Sequence[str] = ("arm",),
    check_first: int | None = CHECK_FIRST,
    max_failed: float | None = MAX_FAILED,
    block: int = DEFAULT_BLOCK,
) -> pd.DataFrame:
    """The power curve the searches walk on, at any ``values`` of ``over``
    (``"n_patients"``: nested cohorts of ``block``; any other spec field: the spec's
    cohorts), with the same seeds at every value — e.g. to check a search against a
    brute-force grid. One row per value, as ``SearchResult.evaluated``."""
    check_counts(n_sims, alpha, batch_size)
    first, max_share = check_stop(check_first, max_failed)
    (a,) = check_analyses(analysis)
    plan = make_plan(spec, (a,), "new_syndesmophyte", None, None, adjust, engine, nagq)
    if over == "n_patients":
        plan = dataclasses.replace(plan, nested=check_int(block, "block", low=2))
    seeds = root_seed(seed).spawn(int(n_sims))
    run_kw = {
        "workers": resolved_workers(workers, scheduler, engine, int(n_sims)),
        "scheduler": scheduler,
        "progress": progress,
        "batch_size": batch_size,
        "check_first": first,
        "max_failed": max_share,
    }
    evaluate, _ = _evaluator({a: plan}, seeds, over, float(alpha), run_kw)
    return pd.DataFrame([evaluate(a, v) for v in values]).reset_index(drop=True)
