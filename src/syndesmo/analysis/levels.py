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

from syndesmo.analysis.ladder import LadderResult, build_frame, check_frame, fit_row, safe_fit
from syndesmo.analysis.patient import patient_level
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

    The table of :func:`compare_levels_result` (see there for the arguments and the
    columns), which also returns the ledgers of what was left out.
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

    VU level: new syndesmophyte ~ exposure + ``adjust`` + (1|patient) with ``engine``
    and each engine of ``beside``. Patient level: each (outcome, summary) pair of
    ``patient_models`` (see ``patient_level``), adjusted for ``adjust``. Columns:
    level, outcome, exposure, engine, measure (OR or RR), estimate, lower, upper, p,
    n_patients, n_units, events, note. ``reference_arm`` is the arm ``arm`` compares
    against (default the placebo-like arm).

    Returns a ``LadderResult`` whose ``table`` is that table and whose ``ledgers``
    say what was left out (``"VU level"``, ``"patient level: <outcome>"``).
    """
    rows = []
    ledgers: dict[str, Ledger] = {}
    frame = build_frame(
        panel,
        "new_syndesmophyte",
        exposure,
        covariates=list(adjust),
        threshold=threshold,
        readers=readers,
        reference_arm=reference_arm,
    )
    ledgers["VU level"] = frame.ledger
    problem = check_frame(frame, "new_syndesmophyte", exposure)
    rhs = " + ".join(["mri", *adjust])
    formula = f"new_syndesmophyte ~ {rhs} + (1|patient)"
    for eng in dict.fromkeys([engine, *beside]):
        fitted = problem or safe_fit(formula, frame, eng, nagq)
        r = fit_row(fitted)
        rows.append(
            {
                "level": "VU",
                "outcome": "new_syndesmophyte",
                "outcome_label": outcome_label("new_syndesmophyte"),
                "exposure": exposure,
                "exposure_label": exposure_label(exposure),
                "engine": eng,
                "measure": registry.ODDS_RATIO,
                "estimate": r["OR"],
                "lower": r["lower"],
                "upper": r["upper"],
                "p": r["p"],
                "n_patients": r["n_patients"] if problem == "" else frame["patient"].nunique(),
                "n_units": r["n_vus"] if problem == "" else len(frame),
                "events": r["events"] if problem == "" else int(frame["new_syndesmophyte"].sum()),
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
        ledgers[f"patient level: {outcome}"] = pl.ledger
        r = pl.to_frame().iloc[0].to_dict()
        rows.append(
            {
                "level": "patient",
                "outcome": outcome,
                "outcome_label": r["outcome_label"],
                "exposure": exposure,
                "exposure_label": r["exposure_label"],
                "engine": r["engine"],
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
