"""The ASSERT-style model ladder at the VU level, and one analysis spec as written.

van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) related MRI activity in a
vertebral unit (VU) to a new syndesmophyte in the same VU two years later, first
ignoring the clustering of VUs within patients, then with a multilevel model,
then adjusted for treatment and for confounders. ``ladder`` fits that sequence for
several exposures, with a GLMM (subject-specific ORs) and GEE (population-averaged
ORs) side by side, and returns a tidy table so that reports, plots and notebooks
only format it. ``fit_spec`` fits one ``ModelSpec`` as written (``syndesmo fit``).

Beside it: ``syndesmo.analysis.patient`` (the patient level), ``syndesmo.analysis.levels`` (VU level
beside patient level), ``syndesmo.analysis.marginal`` (GLMM vs GEE attenuation) and
``syndesmo.derive.vu_tables`` (per-VU tables and the spine profile).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.analysis.marginal import implied_marginal_log_or
from syndesmo.analysis.patient import patient_exposure_label, patient_level
from syndesmo.analysis.within import (
    WITHIN_LABEL,
    WITHIN_STEP,
    within_engines,
    within_equals_between,
    within_formula,
    within_term,
)
from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.derive.frame import analysis_frame, per_reader_rows
from syndesmo.derive.within import within_between
from syndesmo.errors import (
    DeriveError,
    EngineUnavailableError,
    ModelError,
    NoEligibleError,
    SyndesmoError,
)
from syndesmo.fitting import registry
from syndesmo.fitting.api import fit
from syndesmo.fitting.formula import check_term, covariate_columns
from syndesmo.fitting.results import FitResult
from syndesmo.ledger import Ledger
from syndesmo.vocabulary import exposure_label, outcome_label

#: Steps of the ladder, as in van der Heijde et al. 2012: crude, multilevel,
#: + treatment, + confounders; then (e) the within-patient estimators with the terms
#: of the last of (c)/(d) (``syndesmo.analysis.within``).
STEP_LABELS: dict[str, str] = {
    "a": "crude",
    "b": "+ patient clustering",
    "c": "+ treatment",
    "d": "+ confounders",
    WITHIN_STEP: WITHIN_LABEL,
}
#: The engine of step (a): logistic regression ignoring the clustering.
CRUDE_ENGINE = registry.CRUDE_ENGINE


def conditional_engines() -> tuple[str, ...]:
    """Engines with a patient random intercept (subject-specific, conditional ORs)."""
    return registry.engine_names(scale=registry.CONDITIONAL, family=registry.BINOMIAL)


def ladder_scale(engine: str) -> str:
    """The ``scale`` column of a ladder row: the registry's scale of the engine, except
    that the crude model's OR is called ``marginal`` (it estimates the population-
    averaged OR, as GEE with an independence working correlation does; only its
    standard error ignores the clustering)."""
    info = registry.REGISTRY.get(engine)
    if info is None:
        return ""
    return registry.MARGINAL if info.scale == registry.UNCLUSTERED else info.scale


LADDER_COLUMNS = [
    "outcome",
    "exposure",
    "exposure_label",
    "step",
    "step_label",
    "engine",
    "scale",
    "formula",
    "log_or",
    "se",
    "OR",
    "lower",
    "upper",
    "p",
    "n_patients",
    "n_vus",
    "events",
    "sigma",
    "icc",
    "log_or_marginal",
    "log_or_between",
    "p_within_between",
    "converged",
    "singular",
    "note",
]

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


# ---------------------------------------------------------------------------
# formulas and frames


def step_formula(
    outcome: str,
    step: str,
    *,
    treatment: str = "arm",
    confounders: Sequence[str] = (),
    extra: Sequence[str] = (),
    group: str = "patient",
) -> str:
    """The formula of one ladder step, e.g. ``new_syndesmophyte ~ mri + arm + (1|patient)``.

    ``extra`` terms (e.g. ``C(reader)``) enter every step. Step (a) has no random
    intercept; (b) adds ``(1|group)``; (c) the treatment; (d) the confounders; (e)
    is the hybrid GLMM with the terms of (d) (``within_formula`` gives the formula of
    a within engine).
    """
    if step not in STEP_LABELS:
        raise ModelError(f"unknown ladder step {step!r}; steps are {', '.join(STEP_LABELS)}")
    if step == WITHIN_STEP:
        terms = [*extra, treatment, *confounders]
        return within_formula(outcome, "", terms, group=group)
    terms = ["mri", *extra]
    if step in ("c", "d"):
        terms.append(treatment)
    if step == "d":
        terms.extend(confounders)
    rhs = " + ".join(terms)
    if step != "a":
        rhs += f" + (1|{group})"
    return f"{outcome} ~ {rhs}"


def engines_for_step(step: str, engines: Sequence[str]) -> list[str]:
    """Engines fitted at a step: ``logit`` only at (a), every other engine at (b)-(d);
    at (e) the first engine (the GLMM, as the hybrid model) and the within engines
    (``clogit``)."""
    if step == "a":
        return [CRUDE_ENGINE]
    glmms = [e for e in engines if e != CRUDE_ENGINE and e not in within_engines()]
    if step == WITHIN_STEP:
        return list(dict.fromkeys([*glmms[:1], *within_engines()]))
    return glmms


def build_frame(
    panel,
    outcome: str,
    exposure: str,
    *,
    covariates: Sequence[str] = (),
    threshold: float = 1,
    readers: str = "mean",
    reference_arm: str | None = None,
) -> AnalysisFrame:
    """``derive.analysis_frame`` with every model column complete.

    Rows still missing a value in a model column are dropped and counted in the
    frame's ledger (``frame.ledger``, step ``analysis``), so all steps of a ladder
    use the same VUs. A covariate is a column name or an allowed transform of one
    (``log(crp)`` reads ``crp``; see ``syndesmo.fitting.formula.check_term``).
    """
    columns = covariate_columns(covariates)
    frame = analysis_frame(
        panel,
        outcome=outcome,
        exposure=exposure,
        threshold=threshold,
        covariates=columns,
        readers=readers,
        reference_arm=reference_arm,
    )
    model_columns = [outcome, "mri", *columns]
    missing_cols = [c for c in model_columns if c not in frame.columns]
    if missing_cols:
        raise DeriveError(
            f"the analysis frame has no column(s) {missing_cols}; "
            f"available columns: {list(frame.columns)}"
        )
    return frame.dropna(model_columns, step="analysis")


def constant_columns(frame: pd.DataFrame | AnalysisFrame, columns: Sequence[str]) -> list[str]:
    """The covariates (columns, or transforms of one) that have a single value in
    ``frame``: they cannot enter a model."""
    out = []
    for term in columns:
        cols = covariate_columns([term])
        if all(c in frame.columns for c in cols) and any(
            frame[c].nunique(dropna=True) < 2 for c in cols
        ):
            out.append(term)
    return out


def _step_terms(step: str, treatment: str, confounders: Sequence[str]) -> list[str]:
    full = [treatment, *confounders]
    return {"a": [], "b": [], "c": [treatment], "d": full, WITHIN_STEP: full}[step]


def fill_counts(row: dict, frame: pd.DataFrame | AnalysisFrame, outcome: str) -> None:
    """Patients (``n_patients``), VUs (``n_vus``) and events of ``row`` from the frame,
    where the fit did not report them (a failed fit, an exposure not modelled)."""

    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    if missing(row["n_vus"]):
        row["n_vus"] = len(frame)
    if missing(row["n_patients"]):
        row["n_patients"] = int(frame["patient"].nunique()) if len(frame) else 0
    if missing(row["events"]):
        row["events"] = int(frame[outcome].sum()) if len(frame) else 0


def check_frame(frame: pd.DataFrame | AnalysisFrame, outcome: str, exposure: str) -> str:
    """Why a frame cannot be modelled ('' if it can): no rows, no variation, no events."""
    if len(frame) == 0:
        return f"no VU is eligible for the outcome {outcome!r}"
    x = frame["mri"].to_numpy(dtype=float)
    if np.unique(x).size < 2:
        return (
            f"the exposure {exposure!r} ({exposure_label(exposure)}) does not "
            f"vary: all {len(frame)} VUs have the value {x[0]:g}"
        )
    y = frame[outcome].to_numpy(dtype=float)
    events = int(y.sum())
    if events == 0:
        return f"no events of {outcome!r} among the {len(frame)} eligible VUs"
    if events == len(y):
        return f"every one of the {len(frame)} eligible VUs has the outcome {outcome!r}"
    return ""


def check_engine_names(engines: Sequence[str], where: str) -> None:
    """Raise ``ModelError`` naming every engine the registry does not know."""
    unknown = [e for e in dict.fromkeys(engines) if e not in registry.REGISTRY]
    if unknown:
        raise ModelError(
            f"{where}: unknown engine(s) {unknown}; choose from {', '.join(registry.REGISTRY)}"
        )


def check_binomial_engines(engines: Sequence[str], whose: str) -> None:
    """Raise ``ModelError`` for a known engine that does not model a 0/1 outcome."""
    for e in engines:
        info = registry.REGISTRY.get(e)
        if info is not None and info.family != registry.BINOMIAL:
            raise ModelError(
                f"engine {e!r} models a {info.family} outcome; {whose} outcomes are "
                f"0/1: choose from {', '.join(registry.engine_names(family=registry.BINOMIAL))}"
            )


# ---------------------------------------------------------------------------
# one fit → one row


def safe_fit(
    formula: str, frame: pd.DataFrame | AnalysisFrame, engine: str, nagq: int
) -> FitResult | str:
    """The fit, or the reason it failed as a string; a missing engine is still raised.

    Python warnings raised while fitting are caught and added to ``fit.warnings``
    of the returned copy (they end up in the ``note`` column instead of flooding the
    console).
    """
    info = registry.REGISTRY.get(engine)
    kwargs = {"nagq": nagq} if info is not None and info.takes_nagq else {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(formula, frame, engine=engine, **kwargs)
    except EngineUnavailableError:
        raise
    except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return result.with_warnings(*(str(w.message) for w in caught))


def fit_row(fit: FitResult | str, term: str = "mri", level: float = 0.95) -> dict:
    """Estimate of ``term`` and fit statistics of one model as a dict of table columns.

    A failed fit (the reason as a string) gives NaN everywhere and the note
    ``"fit failed: …"``. A fit that did not converge reports no estimate (a
    ``FitResult`` that did not converge holds NaN parameters, variance components
    and intervals) and its note starts ``"not converged"``.
    """
    if isinstance(fit, str):
        return {
            "log_or": math.nan,
            "se": math.nan,
            "OR": math.nan,
            "lower": math.nan,
            "upper": math.nan,
            "p": math.nan,
            "n_patients": math.nan,
            "n_vus": math.nan,
            "events": math.nan,
            "sigma": math.nan,
            "icc": math.nan,
            "log_or_marginal": math.nan,
            "log_or_between": math.nan,
            "p_within_between": math.nan,
            "converged": False,
            "singular": False,
            "note": f"fit failed: {fit}",
        }
    if term not in fit.params.index:
        raise ModelError(f"the fit has no term {term!r}; terms are {list(fit.params.index)}")
    ors = fit.odds_ratios(level).loc[term]
    notes = list(fit.warnings)
    if not fit.converged:
        why = fit.convergence_message
        notes.insert(0, f"not converged: {why}" if why else "not converged")
    se = float(fit.bse[term])
    # (a fit that did not converge has NaN standard errors: that is no sign of separation)
    if fit.converged and (not np.isfinite(se) or se > 10):
        notes.append("standard error huge or undefined: possible separation")
    if not fit.converged:
        # An estimate the engine did not reach is not reported as a number; the note
        # says why, and the fit itself stays available to the user.
        ors = pd.Series({"OR": math.nan, "lower": math.nan, "upper": math.nan, "p": math.nan})
        se = math.nan
    return {
        "log_or": float(fit.params[term]) if fit.converged else math.nan,
        "se": se,
        "OR": float(ors["OR"]),
        "lower": float(ors["lower"]),
        "upper": float(ors["upper"]),
        "p": float(ors["p"]),
        "n_patients": fit.n_groups,
        "n_vus": fit.n_obs,
        "events": fit.n_events,
        "sigma": _group_sd(fit),
        "icc": float(fit.icc),
        "log_or_marginal": math.nan,
        "log_or_between": math.nan,
        "p_within_between": math.nan,
        "converged": bool(fit.converged),
        "singular": bool(fit.singular),
        "note": "; ".join(dict.fromkeys(notes)),
    }


def _group_sd(fit: FitResult) -> float:
    """The random-intercept SD of the fit's top grouping factor (the patient): ``sigma``
    for one random intercept, that term's SD for readings nested in VUs."""
    if not math.isnan(fit.sigma):
        return float(fit.sigma)
    for c in fit.varcomps:
        if c.grp == fit.group and c.var2 is None:
            return float(c.sdcor)
    return math.nan


def nest_readings(formula: str, engine: str, per_reader: bool) -> str:
    """With one row per reading (``readers="per_reader"``), readings within VUs within
    patients: ``(1|patient)`` → ``(1|patient/vu)`` for an engine that fits nested random
    effects, so no VU counts twice (GEE keeps patient clusters with reader as a term,
    the model of Machado et al., Ann Rheum Dis 2016; clogit keeps patient strata)."""
    info = registry.REGISTRY.get(engine)
    if not per_reader or info is None or registry.NESTED_INTERCEPTS not in info.random_effects:
        return formula
    return formula.replace("(1|patient)", "(1|patient/vu)")


# ---------------------------------------------------------------------------
# the ladder


@dataclass
class LadderResult:
    """A ladder as a tidy table plus what was left out (per exposure) and the fits."""

    table: pd.DataFrame
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    fits: dict[tuple[str, str, str, str], FitResult] = field(default_factory=dict)


def ladder(
    panel,
    outcome: str = "new_syndesmophyte",
    exposures: Sequence[str] = ("w0",),
    confounders: Sequence[str] = (),
    *,
    engine: str = registry.DEFAULT_ENGINE,
    engines_beside: Sequence[str] = (registry.MARGINAL_ENGINE,),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    treatment: str = "arm",
    reference_arm: str | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    engines: Sequence[str] | None = None,
    within: bool = True,
) -> pd.DataFrame:
    """The model ladder for each exposure, as one tidy table.

    The ladder of van der Heijde et al. (Ann Rheum Dis 2012;71:369-73), for each
    exposure: (a) logistic regression ignoring the clustering (engine ``logit``);
    (b) a patient random intercept (the GLMM ``engine``) and, beside it, every engine
    of ``engines_beside`` (GEE: exchangeable working correlation within patient);
    (c) + ``treatment``; (d) + ``confounders`` (left out when there are none); (e),
    with ``within=True``, the within-patient estimators with the terms of the last of
    (c)/(d): the hybrid GLMM ``outcome ~ mri_within + mri_between + … + (1|patient)``
    by ``engine`` (its row reports the within-patient OR, with ``log_or_between`` and
    the Wald test of within = between in ``p_within_between``) and conditional
    logistic regression (``clogit``). All steps of one exposure use the same VUs
    (complete cases on every model column).

    A fit that fails gives a row with NaN estimates and the reason in ``note``; a
    fit that did not converge gives NaN log_or, se, OR, lower, upper and p, and says
    so in ``note``. An exposure that does not vary (or an outcome without events, or
    with every VU an event) gives noted rows with NaN estimates, or, with
    ``strict=True``, a ``ModelError`` with the reason. An exposure for which no VU
    is eligible gives noted rows (n_vus 0; its ledger in ``ladder_result`` counts
    the VUs left out, with the reasons), or, with ``strict=True``, the
    ``DeriveError`` of ``derive.analysis_frame``. A covariate (or the
    treatment) with a single value among the eligible VUs is left out of the
    formulas and named in ``note``.

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    outcome : str, default "new_syndesmophyte"
        The VU outcome, ``"new_syndesmophyte"`` or ``"growth"``
        (``derive.analysis_frame``).
    exposures : sequence of str or str, default ("w0",)
        Exposures of the grammar in ``syndesmo.vocabulary`` (``w0``, ``w0_or_w24``,
        ``any``, …); one ladder each. A single string is one exposure.
    confounders : sequence of str, default ()
        Terms added at step (d): patient-table columns (or ``region``,
        ``baseline_corner``) or an allowed transform of one (``log(crp)``). A
        confounder equal to ``treatment`` is dropped (it enters at step (c)).
    engine : str, default "native"
        The GLMM of steps (b)-(d) and of the hybrid model at step (e): an engine of
        ``sy.available_engines()`` of the binomial family other than ``logit``.
    engines_beside : sequence of str or str, default ("gee",)
        Engines fitted beside ``engine`` at steps (b)-(d). A single string is one
        engine.
    nagq : int, default 1
        Adaptive Gauss-Hermite points (1 = Laplace), passed to the engines that take
        it.
    threshold : float, default 1
        ASspiMRI-a score from which a VU counts as inflamed, in (0, 6].
    readers : str, default "mean"
        ``"mean"``, ``"agree"`` or ``"per_reader"`` (``derive.analysis_frame``). With
        one row per reading, ``C(reader)`` enters every step and, for an engine that
        fits nested random effects, ``(1|patient)`` becomes ``(1|patient/vu)``.
    treatment : str, default "arm"
        The treatment term of steps (c)-(e).
    reference_arm : str, optional
        The arm the treatment term compares against (default the placebo-like arm,
        ``syndesmo.vocabulary.reference_first``).
    strict : bool, default False
        Raise instead of writing noted rows for an exposure that cannot be modelled.
    progress : callable, optional
        Called with a short text (``"<outcome> <exposure> (<step>) <engine>"``)
        before each fit.
    engines : sequence of str or str, optional
        Shorthand for ``engine`` (the first) and ``engines_beside`` (the rest),
        which it overrides: ``engines=["native", "gee", "bayes"]`` fits every listed
        engine at steps (b)-(d). A single string is one engine (``engines="gee"``
        is ``engine="gee", engines_beside=()``). ``logit`` in it is ignored (it is
        step (a) anyway).
    within : bool, default True
        Fit step (e).

    Returns
    -------
    pandas.DataFrame
        One row per exposure, step and engine, with the columns of
        ``LADDER_COLUMNS``: outcome, exposure, exposure_label, step, step_label,
        engine, scale (the registry's scale of the engine: ``conditional``,
        ``marginal`` or ``within``; the crude model's is ``marginal``), formula,
        log_or, se, OR, lower, upper, p (of ``mri``, or of the within-patient term
        at step (e)), n_patients, n_vus, events, sigma (the patient
        random-intercept SD), icc, log_or_marginal (the population-averaged log-OR
        implied by a conditional fit at steps (b)-(d)), log_or_between and
        p_within_between (hybrid GLMM only), converged, singular, note.

    Raises
    ------
    ModelError
        For an empty ``exposures``; an unknown engine, ``logit`` as ``engine`` or
        an engine whose family is not binomial; ``engines`` naming no engine
        besides ``logit``; an ``outcome``, ``treatment`` or confounder that is not a
        column name or an allowed transform of one; and, with ``strict=True``, an
        exposure that cannot be modelled.
    DeriveError
        From ``derive.analysis_frame``: an unknown outcome, exposure, covariate,
        readers rule or reference arm, a threshold outside (0, 6]; and, with
        ``strict=True``, an exposure for which no VU is eligible
        (``NoEligibleError``).
    EngineUnavailableError
        If an engine's optional dependencies are not installed.

    See Also
    --------
    ladder_result : The same ladder with the ledger of each exposure and the fits.
    """
    if isinstance(engines_beside, str):
        engines_beside = (engines_beside,)
    if engines is not None:
        if isinstance(engines, str):
            engines = [engines]
        engines = [e for e in engines if e != CRUDE_ENGINE]  # logit is step (a) anyway
        if not engines:
            raise ModelError(
                f"ladder: engines must name at least one engine besides {CRUDE_ENGINE!r}"
            )
        engine, engines_beside = engines[0], tuple(engines[1:])
    res = ladder_result(
        panel,
        outcome,
        exposures,
        confounders,
        engine=engine,
        engines_beside=engines_beside,
        nagq=nagq,
        threshold=threshold,
        readers=readers,
        treatment=treatment,
        reference_arm=reference_arm,
        strict=strict,
        progress=progress,
        within=within,
    )
    return res.table


def ladder_steps(confounders: Sequence[str], within: bool = True) -> list[str]:
    """Steps fitted: a-c always, d only when there are confounders, e with ``within``."""
    steps = ["a", "b", "c", "d"] if confounders else ["a", "b", "c"]
    return [*steps, WITHIN_STEP] if within else steps


def n_ladder_fits(
    n_exposures: int, engines: Sequence[str], confounders: Sequence[str], within: bool = True
) -> int:
    """How many models a ladder fits (for progress bars)."""
    per = sum(len(engines_for_step(s, engines)) for s in ladder_steps(confounders, within))
    return n_exposures * per


def ladder_result(
    panel,
    outcome: str = "new_syndesmophyte",
    exposures: Sequence[str] = ("w0",),
    confounders: Sequence[str] = (),
    *,
    engine: str = registry.DEFAULT_ENGINE,
    engines_beside: Sequence[str] = (registry.MARGINAL_ENGINE,),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    treatment: str = "arm",
    reference_arm: str | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    keep_fits: bool = False,
    within: bool = True,
) -> LadderResult:
    """The model ladder with the ledger of each exposure and, if asked, the fits.

    Fits what :func:`ladder` fits (see there for the steps and the rows); unlike
    ``ladder`` it takes ``engine`` and ``engines_beside`` only (no ``engines``
    shorthand).

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    outcome : str, default "new_syndesmophyte"
        The VU outcome, ``"new_syndesmophyte"`` or ``"growth"``.
    exposures : sequence of str or str, default ("w0",)
        Exposures of the grammar in ``syndesmo.vocabulary``; one ladder each. A
        single string is one exposure.
    confounders : sequence of str, default ()
        Terms added at step (d); one equal to ``treatment`` is dropped.
    engine : str, default "native"
        The GLMM of steps (b)-(d) and of the hybrid model at step (e).
    engines_beside : sequence of str or str, default ("gee",)
        Engines fitted beside ``engine`` at steps (b)-(d). A single string is one
        engine.
    nagq : int, default 1
        Adaptive Gauss-Hermite points (1 = Laplace), for the engines that take it.
    threshold : float, default 1
        ASspiMRI-a score from which a VU counts as inflamed, in (0, 6].
    readers : str, default "mean"
        ``"mean"``, ``"agree"`` or ``"per_reader"``.
    treatment : str, default "arm"
        The treatment term of steps (c)-(e).
    reference_arm : str, optional
        The arm the treatment term compares against (default the placebo-like arm).
    strict : bool, default False
        Raise instead of writing noted rows for an exposure that cannot be modelled.
    progress : callable, optional
        Called with a short text before each fit.
    keep_fits : bool, default False
        Keep every fit in the result's ``fits``.
    within : bool, default True
        Fit step (e).

    Returns
    -------
    LadderResult
        ``table``: the table :func:`ladder` returns. ``ledgers``: exposure → the
        ``Ledger`` of its analysis frame (the VUs left out, with the reasons).
        ``fits``: with ``keep_fits=True``, every ``FitResult`` keyed by (outcome,
        exposure, step, engine), failed fits and exposures that could not be
        modelled excepted; empty otherwise.

    Raises
    ------
    ModelError
        For an empty ``exposures``; an unknown engine, ``logit`` as ``engine`` or
        an engine whose family is not binomial; an ``outcome``, ``treatment`` or
        confounder that is not a column name or an allowed transform of one; and,
        with ``strict=True``, an exposure that cannot be modelled.
    DeriveError
        From ``derive.analysis_frame``: an unknown outcome, exposure, covariate,
        readers rule or reference arm, a threshold outside (0, 6]; and, with
        ``strict=True``, an exposure for which no VU is eligible
        (``NoEligibleError``).
    EngineUnavailableError
        If an engine's optional dependencies are not installed.

    See Also
    --------
    ladder : The table alone.
    """
    progress = progress or _noop
    if isinstance(exposures, str):
        exposures = [exposures]
    if isinstance(confounders, str):  # one name, not its letters
        confounders = [confounders]
    exposures = list(exposures)
    if not exposures:
        raise ModelError("ladder: exposures is empty; name one or more exposures, e.g. ['w0']")
    if isinstance(engines_beside, str):
        engines_beside = [engines_beside]
    check_engine_names([engine, *engines_beside], "ladder")
    if engine == CRUDE_ENGINE:
        raise ModelError(
            f"engine {CRUDE_ENGINE!r} is step (a) of the ladder; give a GLMM engine "
            f"({', '.join(conditional_engines())}) as engine"
        )
    engines = list(dict.fromkeys([engine, *engines_beside]))
    # every name that becomes formula text is checked as a term before anything runs
    check_term(outcome, "outcome")
    check_term(treatment, "treatment")
    covariate_columns(confounders, "confounder")
    check_binomial_engines(engines, "the ladder's")
    confounders = [c for c in confounders if c != treatment]
    covariates = [treatment, *confounders]
    rows: list[dict] = []
    ledgers: dict[str, Ledger] = {}
    fits: dict[tuple[str, str, str, str], FitResult] = {}
    steps = ladder_steps(confounders, within)
    for exposure in exposures:
        try:
            frame = build_frame(
                panel,
                outcome,
                exposure,
                covariates=covariates,
                threshold=threshold,
                readers=readers,
                reference_arm=reference_arm,
            )
        except NoEligibleError as exc:
            if strict:
                raise
            # noted rows for this exposure (its ledger says why), and on to the next
            ledgers[exposure] = exc.ledger if exc.ledger is not None else Ledger()
            frame = pd.DataFrame({"patient": [], outcome: [], "mri": []})
            problem = str(exc)
        else:
            ledgers[exposure] = frame.ledger
            if within:
                frame = within_between(frame, ["mri"], group="patient")
            problem = check_frame(frame, outcome, exposure)
            if problem and strict:
                raise ModelError(problem)
        # per-reader rows: reader as a categorical term (several readers, not a slope);
        # from the rule, so the noted rows of an exposure without VUs show it too
        extra = ["C(reader)"] if per_reader_rows(panel, readers) else []
        constant = constant_columns(frame, covariates)
        dropped = (
            f"left out, constant in the analysis frame: {', '.join(constant)}" if constant else ""
        )
        for step in steps:
            formula = step_formula(
                outcome,
                step,
                treatment=treatment,
                confounders=[c for c in confounders if c not in constant],
                extra=extra,
            )
            if treatment in constant and step in ("c", "d", WITHIN_STEP):
                formula = formula.replace(f" + {treatment}", "", 1)
            for eng in engines_for_step(step, engines):
                progress(f"{outcome} {exposure} ({step}) {eng}")
                eng_formula = formula
                if step == WITHIN_STEP:
                    terms = [*extra, treatment, *confounders]
                    eng_formula = within_formula(
                        outcome, eng, [t for t in terms if t not in constant]
                    )
                eng_formula = nest_readings(eng_formula, eng, bool(extra))
                if problem:
                    row = fit_row(problem)
                    row["note"] = problem
                elif step == WITHIN_STEP:
                    fitted = safe_fit(eng_formula, frame, eng, nagq)
                    row = _within_row(fitted, eng)
                    if keep_fits and not isinstance(fitted, str):
                        fits[(outcome, exposure, step, eng)] = fitted
                else:
                    fitted = safe_fit(eng_formula, frame, eng, nagq)
                    row = fit_row(fitted)
                    if not isinstance(fitted, str) and eng in conditional_engines():
                        row["log_or_marginal"] = implied_marginal_log_or(fitted, frame)
                    if keep_fits and not isinstance(fitted, str):
                        fits[(outcome, exposure, step, eng)] = fitted
                if dropped and any(
                    c in constant for c in _step_terms(step, treatment, confounders)
                ):
                    row["note"] = "; ".join(x for x in (dropped, row["note"]) if x)
                fill_counts(row, frame, outcome)
                rows.append(
                    {
                        "outcome": outcome,
                        "exposure": exposure,
                        "exposure_label": exposure_label(exposure),
                        "step": step,
                        "step_label": STEP_LABELS[step],
                        "engine": eng,
                        "scale": ladder_scale(eng),
                        "formula": eng_formula,
                        **row,
                    }
                )
    table = pd.DataFrame(rows, columns=LADDER_COLUMNS)
    for col in ("n_patients", "n_vus", "events"):
        table[col] = table[col].astype("Int64")
    return LadderResult(table=table, ledgers=ledgers, fits=fits)


def _within_row(fitted: FitResult | str, engine: str) -> dict:
    """The row of a step-(e) fit: the within-patient estimate, and for the hybrid GLMM
    the between-patient log-OR and the Wald test of within = between."""
    # conditional logit separates where a patient's VUs split perfectly by exposure: its
    # upper limit is then e^(huge) = inf, noted by fit_row as possible separation
    with np.errstate(over="ignore"):
        row = fit_row(fitted, term=within_term(engine))
    if isinstance(fitted, str) or engine in within_engines():
        return row
    test = within_equals_between(fitted)
    row["log_or_between"] = test["log_or_between"]
    row["p_within_between"] = test["p"]
    return row


# ---------------------------------------------------------------------------
# one spec, as written (``syndesmo fit``)


@dataclass
class SpecFit:
    """The fit of one exposure of an analysis spec, with its printable summary."""

    exposure: str
    title: str
    fit: FitResult
    table: pd.DataFrame
    ledger: Ledger
    text: str


def vu_formula(outcome: str, covariates: Sequence[str], engine: str, per_reader: bool) -> str:
    """``outcome ~ mri + covariates [+ C(reader)] + (1|patient)``; no bar for an engine
    that ignores clustering (``logit``)."""
    terms = ["mri", *covariates, *(["C(reader)"] if per_reader else [])]
    rhs = " + ".join(terms)
    info = registry.REGISTRY.get(engine)
    bar = info is None or info.needs_group
    return nest_readings(
        f"{outcome} ~ {rhs}" + (" + (1|patient)" if bar else ""), engine, per_reader
    )


def spec_patient_level(panel, spec, exposure: str):
    """``patient_level`` of one exposure of a patient-level ``ModelSpec``."""
    return patient_level(
        panel,
        exposure,
        spec.outcome,
        summary=spec.summary,
        adjust=spec.covariates,
        engine=spec.engine,
        threshold=spec.threshold,
        readers=spec.readers,
        reference_arm=spec.reference_arm,
    )


def fit_spec(panel, spec) -> list[SpecFit]:
    """Fit a ``ModelSpec`` as written, one model per exposure.

    Unlike ``ladder`` this is strict: an exposure without variation, an outcome
    without events, a failed fit or a fit that did not converge raises
    ``ModelError`` naming the exposure.
    """
    out = []
    for exposure in spec.exposures:
        title = f"{outcome_label(spec.outcome)} by {exposure} " + (
            f"({exposure_label(exposure)})"
            if spec.level == "vu"
            else f"({patient_exposure_label(exposure, spec.summary)})"
        )
        if spec.level == "vu":
            frame = build_frame(
                panel,
                spec.outcome,
                exposure,
                covariates=list(spec.covariates),
                threshold=spec.threshold,
                readers=spec.readers,
                reference_arm=spec.reference_arm,
            )
            problem = check_frame(frame, spec.outcome, exposure)
            if problem:
                raise ModelError(f"{spec.name}: {problem}")
            # As in the ladder: a covariate with one value among the eligible VUs (e.g.
            # baseline_corner among VUs at risk of growth) carries no information.
            constant = constant_columns(frame, list(spec.covariates))
            covariates = [c for c in spec.covariates if c not in constant]
            formula = vu_formula(spec.outcome, covariates, spec.engine, "reader" in frame.columns)
            fitted = safe_fit(formula, frame, spec.engine, spec.nagq)
            if isinstance(fitted, str):
                raise ModelError(f"{spec.name}, exposure {exposure!r}: {fitted}")
            if constant:
                fitted = fitted.with_warnings(
                    f"left out, constant in the analysis frame: {', '.join(constant)}"
                )
            ledger = fitted.ledger  # starts from the frame's ledger (build_design)
            term = "mri"
        else:
            pl = spec_patient_level(panel, spec, exposure)
            if pl.fit is None:
                raise ModelError(f"{spec.name}, exposure {exposure!r}: {pl.note}")
            fitted, ledger, term = pl.fit, pl.ledger, "exposure"
            if not len(fitted.ledger):
                fitted = dataclasses.replace(fitted, ledger=ledger)
        if not fitted.converged:
            why = fitted.convergence_message
            raise ModelError(
                f"{spec.name}, exposure {exposure!r}: the fit did not converge"
                + (f": {why}" if why else "")
            )
        table = fitted.odds_ratios().rename_axis("term").reset_index()
        measure = registry.get_engine(fitted.engine).measure
        table = table.rename(columns={"OR": measure})
        shown = table.assign(
            **{
                measure: table[measure].map(lambda v: f"{v:.3f}"),
                "lower": table["lower"].map(lambda v: f"{v:.3f}"),
                "upper": table["upper"].map(lambda v: f"{v:.3f}"),
                "p": table["p"].map(_fmt_p),
            }
        )
        text = (
            fitted.summary()
            + f"\n\n{'Odds' if measure == 'OR' else 'Rate'} ratios (95% CI); "
            + f"the exposure is the term {term!r}:\n"
            + shown.to_string(index=False)
        )
        out.append(SpecFit(exposure, title, fitted, table, ledger, text))
    return out


def _fmt_p(p: float) -> str:
    """A p-value for a text table: ``<0.001``, ``0.034``, ``—`` when not reported."""
    if not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
