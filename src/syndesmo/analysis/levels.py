"""The VU level beside the patient level, for the same exposure.

The VU-level GLMM (and GEE) of a new syndesmophyte and the patient-level models
of ``syndesmo.analysis.patient`` answer the same question at two levels; ``compare_levels``
fits both and returns them as one tidy table (its patient rows can go beside
the ladder in ``plots.forest_plot``). Kept apart because it is the one place that
needs both the ladder's machinery and the patient level.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from syndesmo.analysis.ladder import (
    CRUDE_ENGINE,
    LadderResult,
    build_frame,
    check_binomial_engines,
    check_engine_names,
    check_frame,
    fill_counts,
    fit_row,
    safe_fit,
    vu_formula,
)
from syndesmo.analysis.patient import patient_level
from syndesmo.derive.frame import per_reader_rows
from syndesmo.errors import ModelError, NoEligibleError
from syndesmo.fitting import registry
from syndesmo.ledger import Ledger
from syndesmo.vocabulary import exposure_label, outcome_label


def compare_levels(
    panel,
    exposure: str = "w0",
    *,
    adjust: Sequence[str] = ("arm",),
    engine: str = registry.DEFAULT_ENGINE,
    beside: Sequence[str] = (registry.MARGINAL_ENGINE,),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    patient_models: Sequence[tuple[str, str]] = (
        ("any_new", "any"),
        ("n_new", "count"),
        ("msasss_progression", "any"),
    ),
    reference_arm: str | None = None,
) -> pd.DataFrame:
    """VU-level and patient-level estimates for the same exposure, side by side.

    The table of :func:`compare_levels_result`, which also returns the ledgers of
    what was left out; see there for the models.

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    exposure : str, default "w0"
        An exposure of the grammar in ``syndesmo.vocabulary`` (``w0``, ``any``, …).
    adjust : sequence of str, default ("arm",)
        Terms every model is adjusted for: patient-table columns or an allowed
        transform of one (``log(crp)``).
    engine : str, default "native"
        The VU-level GLMM.
    beside : sequence of str or str, default ("gee",)
        Engines fitted beside ``engine`` at the VU level. A single string is one
        engine.
    nagq : int, default 1
        Adaptive Gauss-Hermite points (1 = Laplace), for the VU-level engines that
        take it.
    threshold : float, default 1
        ASspiMRI-a score from which a VU counts as inflamed, in (0, 6].
    readers : str, default "mean"
        ``"mean"``, ``"agree"`` or ``"per_reader"``.
    patient_models : sequence of (str, str), optional
        The (outcome, summary) pairs of the patient level; default
        ``(("any_new", "any"), ("n_new", "count"), ("msasss_progression", "any"))``.
    reference_arm : str, optional
        The arm ``arm`` compares against (default the placebo-like arm).

    Returns
    -------
    pandas.DataFrame
        The ``table`` of :func:`compare_levels_result`: one row per VU-level engine,
        then one per patient model.

    Raises
    ------
    DeriveError, ModelError, EngineUnavailableError
        As :func:`compare_levels_result`.

    See Also
    --------
    compare_levels_result : The same table with the ledgers.
    """
    return compare_levels_result(
        panel,
        exposure,
        adjust=adjust,
        engine=engine,
        beside=beside,
        nagq=nagq,
        threshold=threshold,
        readers=readers,
        patient_models=patient_models,
        reference_arm=reference_arm,
    ).table


def compare_levels_result(
    panel,
    exposure: str = "w0",
    *,
    adjust: Sequence[str] = ("arm",),
    engine: str = registry.DEFAULT_ENGINE,
    beside: Sequence[str] = (registry.MARGINAL_ENGINE,),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    patient_models: Sequence[tuple[str, str]] = (
        ("any_new", "any"),
        ("n_new", "count"),
        ("msasss_progression", "any"),
    ),
    reference_arm: str | None = None,
) -> LadderResult:
    """VU-level and patient-level estimates for the same exposure, side by side.

    VU level: ``new_syndesmophyte ~ mri + <adjust> + (1|patient)`` (``mri`` is the
    exposure) on the VUs at risk with every model column complete, with ``engine``
    and each engine of ``beside`` (an engine named twice is fitted once; ``logit``
    in ``beside`` fits the crude model without the random intercept). With
    ``readers="per_reader"`` every reading is a row and the models are those of the
    ladder: ``+ C(reader)``, and readings nested in VUs, ``(1|patient/vu)``, for an
    engine that fits nested intercepts (GEE keeps patient clusters). A fit
    that fails gives a row with NaN estimates, the reason in ``note`` and the
    counts of the analysed VUs; a fit that did not converge gives NaN estimates and
    says so in ``note``; an exposure that does not vary, an outcome without
    events, or no eligible VU, gives rows with the reason in ``note`` (the
    ``"VU level"`` ledger counts the VUs left out). Patient level: each
    (outcome, summary) pair of ``patient_models`` fitted by :func:`patient_level`
    with its default engine (``logit`` for 0/1 outcomes, ``negbin`` for ``n_new``),
    adjusted for ``adjust``.

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    exposure : str, default "w0"
        An exposure of the grammar in ``syndesmo.vocabulary`` (``w0``, ``any``, …),
        for both levels (summed up per patient at the patient level).
    adjust : sequence of str, default ("arm",)
        Terms every model is adjusted for: patient-table columns or an allowed
        transform of one (``log(crp)``).
    engine : str, default "native"
        The VU-level GLMM, an engine of ``sy.available_engines()`` of the binomial
        family other than ``logit`` (which ignores the clustering: put it in
        ``beside``).
    beside : sequence of str or str, default ("gee",)
        Engines fitted beside ``engine`` at the VU level. A single string is one
        engine.
    nagq : int, default 1
        Adaptive Gauss-Hermite points (1 = Laplace), for the VU-level engines that
        take it.
    threshold : float, default 1
        ASspiMRI-a score from which a VU counts as inflamed, in (0, 6]; both levels.
    readers : str, default "mean"
        ``"mean"``, ``"agree"`` or ``"per_reader"``: how the readings of several
        readers are combined (``derive.analysis_frame``). At the patient level it
        applies to the new-syndesmophyte outcomes only (the patient exposure and
        the mSASSS totals are means over readers).
    patient_models : sequence of (str, str), optional
        The (outcome, summary) pairs of the patient level, as ``patient_level``'s
        ``outcome`` and ``summary``; default
        ``(("any_new", "any"), ("n_new", "count"), ("msasss_progression", "any"))``.
    reference_arm : str, optional
        The arm ``arm`` compares against (default the placebo-like arm).

    Returns
    -------
    LadderResult
        ``table``: one row per VU-level engine, then one per patient model, with
        the columns level (``"VU"`` or ``"patient"``), outcome, outcome_label,
        exposure, exposure_label, engine, formula (the model fitted; empty for a
        patient model that was not fitted), measure (OR or RR), estimate, lower,
        upper, p, n_patients, n_units (VUs at the VU level — readings with
        ``readers="per_reader"`` — and patients at the patient level), events (VUs
        with a new syndesmophyte, or readings that show one; patients with the
        outcome), note. ``ledgers``: what was left out, under ``"VU level"`` and, for each
        patient model, ``"patient level: <outcome> (<summary>)"``. ``fits`` is
        empty.

    Raises
    ------
    DeriveError
        From ``derive.analysis_frame``: an unknown exposure, covariate, readers
        rule or reference arm, or a threshold outside (0, 6]; from the patient
        level, an ``adjust`` column that is not in the patient table (e.g.
        ``region``).
    ModelError
        For an engine the registry does not know or that does not model a 0/1
        outcome, or ``logit`` as ``engine`` (before anything is fitted); an
        (outcome, summary) pair listed twice in ``patient_models``; an ``adjust``
        term that is not a column name or an allowed transform of one; a patient
        model with an unknown outcome or summary, or a summary that does not suit
        the exposure (see :func:`patient_level`).
    EngineUnavailableError
        If a VU-level engine's optional dependencies are not installed.

    See Also
    --------
    compare_levels : The table alone.
    patient_level : One patient-level model.
    """
    if isinstance(beside, str):
        beside = [beside]
    if isinstance(adjust, str):  # one name, not its letters
        adjust = [adjust]
    engines = list(dict.fromkeys([engine, *beside]))
    check_engine_names(engines, "compare_levels")
    if engine == CRUDE_ENGINE:
        raise ModelError(
            f"compare_levels: engine {CRUDE_ENGINE!r} ignores the clustering; give a GLMM "
            f"engine as engine and {CRUDE_ENGINE!r} in beside for the crude VU-level OR"
        )
    check_binomial_engines(engines, "the VU level's")
    patient_models = [tuple(m) for m in patient_models]
    twice = [m for m in dict.fromkeys(patient_models) if patient_models.count(m) > 1]
    if twice:
        raise ModelError(
            f"compare_levels: patient model(s) {twice} listed more than once; "
            "give each (outcome, summary) pair once"
        )
    rows = []
    ledgers: dict[str, Ledger] = {}
    try:
        frame = build_frame(
            panel,
            "new_syndesmophyte",
            exposure,
            covariates=list(adjust),
            threshold=threshold,
            readers=readers,
            reference_arm=reference_arm,
        )
    except NoEligibleError as exc:
        # noted VU rows (the ledger says why); the patient level goes on
        ledgers["VU level"] = exc.ledger if exc.ledger is not None else Ledger()
        frame = pd.DataFrame({"patient": [], "new_syndesmophyte": [], "mri": []})
        problem = str(exc)
    else:
        ledgers["VU level"] = frame.ledger
        problem = check_frame(frame, "new_syndesmophyte", exposure)
    per_reader = per_reader_rows(panel, readers)
    for eng in engines:
        formula = vu_formula("new_syndesmophyte", list(adjust), eng, per_reader)
        fitted = problem or safe_fit(formula, frame, eng, nagq)
        r = fit_row(fitted)
        fill_counts(r, frame, "new_syndesmophyte")  # a failed fit reports none
        rows.append(
            {
                "level": "VU",
                "outcome": "new_syndesmophyte",
                "outcome_label": outcome_label("new_syndesmophyte"),
                "exposure": exposure,
                "exposure_label": exposure_label(exposure),
                "engine": eng,
                "formula": formula,
                "measure": registry.ODDS_RATIO,
                "estimate": r["OR"],
                "lower": r["lower"],
                "upper": r["upper"],
                "p": r["p"],
                "n_patients": r["n_patients"],
                "n_units": r["n_vus"],
                "events": r["events"],
                "note": problem or r["note"],
            }
        )
    for outcome, summary in patient_models:
        pl = patient_level(
            panel,
            exposure,
            outcome,
            summary=summary,
            adjust=adjust,
            threshold=threshold,
            readers=readers,
            reference_arm=reference_arm,
        )
        ledgers[f"patient level: {outcome} ({summary})"] = pl.ledger
        r = pl.to_frame().iloc[0].to_dict()
        rows.append(
            {
                "level": "patient",
                "outcome": outcome,
                "outcome_label": r["outcome_label"],
                "exposure": exposure,
                "exposure_label": r["exposure_label"],
                "engine": r["engine"],
                "formula": pl.fit.formula if pl.fit is not None else "",
                "measure": r["measure"],
                "estimate": r["estimate"],
                "lower": r["lower"],
                "upper": r["upper"],
                "p": r["p"],
                "n_patients": r["n_patients"],
                "n_units": r["n_patients"],
                "events": r["events"],
                "note": r["note"],
            }
        )
    return LadderResult(table=pd.DataFrame(rows), ledgers=ledgers)
