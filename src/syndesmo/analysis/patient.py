"""The patient level: VU exposures and outcomes summed up to one row per patient.

van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) reported a patient-level
analysis beside the VU-level models; it ignores where in the spine the
inflammation and the new bone are. ``patient_frame`` builds the one-row-per-patient
frame (with a ledger of the patients left out), ``patient_level`` fits, through
``sy.fit``, a logistic model or, for counts, a Poisson or negative binomial model with
an offset (the count engines of ``syndesmo.engines.counts``); ``PatientLevel`` holds
the result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from syndesmo.checks import check_choice
from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.derive.frame import arm_column, check_threshold
from syndesmo.derive.vu_tables import vu_exposures, vu_outcomes, vu_scores
from syndesmo.errors import DeriveError, EngineUnavailableError, ModelError, SyndesmoError
from syndesmo.fitting import registry
from syndesmo.fitting.api import fit as fit_model
from syndesmo.fitting.formula import covariate_columns
from syndesmo.fitting.results import FitResult
from syndesmo.ledger import Ledger
from syndesmo.panel.spine import MSASSS_VUS
from syndesmo.vocabulary import (
    ARM,
    COUNT_EXPOSURES,
    PATIENT_OUTCOMES,
    SUMMARIES,
    exposure_label,
    outcome_label,
    parse_exposure,
    week_words,
)

#: How VU exposures are summed up per patient (``syndesmo.vocabulary.SUMMARIES``).
SUMMARY_WORDS = SUMMARIES
#: Patient outcomes that are counts (modelled with an offset, as rate ratios).
COUNT_OUTCOMES = ("n_new",)


@dataclass
class PatientLevel:
    """A patient-level model: the fit, the one-row-per-patient frame and the ledger."""

    fit: FitResult | None
    frame: pd.DataFrame
    ledger: Ledger
    exposure: str
    summary: str
    outcome: str
    note: str = ""

    @property
    def measure(self) -> str:
        """``OR`` for logistic models, ``RR`` (rate ratio) for count models."""
        if self.fit is None:
            return registry.ODDS_RATIO
        return registry.get_engine(self.fit.engine).measure

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One row: exposure, outcome, model, estimate with CI and p, patients, events.

        A fit that did not converge gives NaN estimate, lower, upper and p, and a note
        starting ``"not converged"`` (with the optimiser's message where there is one).
        """
        row = {
            "level": "patient",
            "outcome": self.outcome,
            "outcome_label": outcome_label(self.outcome),
            "exposure": self.exposure,
            "exposure_label": patient_exposure_label(self.exposure, self.summary),
            "summary": self.summary,
            "engine": self.fit.engine if self.fit is not None else "",
            "measure": self.measure,
        }
        note = self.note
        if self.fit is None or "exposure" not in self.fit.params.index or not self.fit.converged:
            # never a number from a fit that did not converge
            est = dict.fromkeys(("estimate", "lower", "upper", "p"), math.nan)
        else:
            o = self.fit.odds_ratios(level).loc["exposure"]
            est = {"estimate": o["OR"], "lower": o["lower"], "upper": o["upper"], "p": o["p"]}
        if self.fit is not None and not self.fit.converged:
            why = self.fit.convergence_message
            said = f"not converged: {why}" if why else "not converged"
            note = "; ".join(x for x in (said, note) if x)
        y = self.frame["outcome"] if len(self.frame) else pd.Series(dtype=float)
        row.update(est)
        row.update(
            {
                "n_patients": len(self.frame),
                "events": int((y > 0).sum()),
                "note": note,
            }
        )
        return pd.DataFrame([row])


def patient_engines() -> tuple[str, ...]:
    """Engines for one row per patient: those that ignore clustering, 0/1 or counts."""
    return registry.engine_names(scale=registry.UNCLUSTERED)


def _binomial_engines() -> list[str]:
    return [e for e in patient_engines() if registry.get_engine(e).family == registry.BINOMIAL]


def patient_exposure_label(exposure: str, summary: str) -> str:
    """Words for a patient exposure, e.g. 'any VU inflamed at baseline'."""
    base = exposure_label(exposure)
    if summary == "any":
        return f"any VU {base}"
    if summary == "count":
        return f"number of VUs {base} (per VU)"
    week = int(exposure.lstrip("w"))
    return f"total ASspiMRI-a at {week_words(week)} (per point)"


def patient_frame(
    panel,
    exposure: str = "w0",
    outcome: str = "any_new",
    *,
    summary: str = "any",
    threshold: float = 1,
    readers: str = "mean",
    adjust: Sequence[str] = ("arm",),
    spine: str = "all",
    reference_arm: str | None = None,
) -> AnalysisFrame:
    """One row per patient: ``exposure`` (summed up by ``summary``), ``outcome``, ``adjust``.

    Exposure over the VUs of ``spine`` (``"all"`` 23 VUs, as the published totals;
    ``"msasss"`` the 12 VUs with x-ray scores): ``any`` VU with the exposure (0/1),
    ``count`` of such VUs, or ``total`` ASspiMRI-a at one week (0-138 over 23 VUs).
    Outcome: ``any_new`` new syndesmophyte in any VU at risk (0/1), ``n_new`` their
    number (with ``n_at_risk``, the VUs at risk, for an offset), or
    ``msasss_progression`` (mSASSS total change ≥ 2 units between the first and
    last x-ray). ``arm`` is coded with ``reference_arm`` (default the placebo-like
    arm) first, as in ``derive.analysis_frame``.

    Returns an ``AnalysisFrame``: patients without an outcome (no VU at risk,
    incomplete mSASSS) or with a missing covariate are left out and counted in its
    ``ledger``; its ``settings`` hold the arguments. ``threshold`` must be in (0, 6]
    (``DeriveError`` otherwise, as in ``derive.analysis_frame``).
    """
    threshold = check_threshold(threshold)
    ledger = Ledger()
    exp = _patient_exposure(panel, exposure, summary, threshold, spine)
    out = _patient_outcome(panel, outcome, readers, ledger)
    pat = panel.patients.set_index("patient")
    columns = covariate_columns(adjust)  # log(crp) reads crp
    missing = [c for c in columns if c not in pat.columns]
    if missing:
        raise DeriveError(
            f"covariate(s) {missing} are not columns of the patient table; "
            f"patient columns are {[c for c in pat.columns]}"
        )
    frame = pd.DataFrame(index=pd.Index(panel.patient_ids, name="patient"))
    frame["exposure"] = exp.reindex(frame.index)
    frame = frame.join(out, how="left")
    for c in columns:
        values = pat[c].reindex(frame.index)
        frame[c] = arm_column(values, reference_arm) if c == ARM else values
    frame = frame.reset_index()
    no_outcome = frame["outcome"].isna().to_numpy()
    # patients lacking the outcome were already counted with their reason
    frame = frame.loc[~no_outcome]
    no_exposure = frame["exposure"].isna().to_numpy()
    if no_exposure.any():
        ledger.add(
            "patient level",
            f"MRI score missing at a VU for the patient exposure {exposure!r} ({summary})",
            int(no_exposure.sum()),
            int(no_exposure.sum()),
        )
        frame = frame.loc[~no_exposure]
    if columns:
        incomplete = frame[columns].isna().any(axis=1).to_numpy()
        if incomplete.any():
            ledger.add(
                "patient level",
                f"missing covariate ({', '.join(adjust)})",
                int(incomplete.sum()),
                int(incomplete.sum()),
            )
            frame = frame.loc[~incomplete]
    frame = frame.reset_index(drop=True)
    settings = {
        "level": "patient",
        "outcome": outcome,
        "exposure": exposure,
        "summary": summary,
        "threshold": threshold,
        "readers": readers,
        "adjust": list(adjust),
        "spine": spine,
        "reference_arm": reference_arm,
    }
    return AnalysisFrame(frame, ledger, settings)


def _patient_exposure(
    panel, exposure: str, summary: str, threshold: float, spine: str
) -> pd.Series:
    """Per patient: the exposure summed up over VUs; NaN if any VU lacks a needed score."""

    check_choice(spine, ("all", "msasss"), "spine")
    check_choice(summary, SUMMARY_WORDS, "summary")
    if summary == "total":
        parsed = parse_exposure(exposure)
        if not parsed.single_week:
            weeks = ", ".join(f"w{w}" for w in panel.mri_weeks)
            raise ModelError(
                f"summary 'total' sums the ASspiMRI-a at one week; exposure {exposure!r} "
                f"is not a single week (use one of {weeks})"
            )
        week = parsed.weeks[0]
        if week not in panel.mri_weeks:
            raise DeriveError(
                f"the panel has no MRI at week {week}; MRI weeks are {panel.mri_weeks}"
            )
        values = vu_scores(panel, week)
    else:
        if exposure in COUNT_EXPOSURES:
            raise ModelError(
                f"summary {summary!r} counts VUs with a 0/1 exposure; {exposure!r} is a count "
                "or score (use summary 'total' with a week, or a 0/1 exposure)"
            )
        values = vu_exposures(panel, exposure, threshold)
    if spine == "msasss":
        values = values[values["vu"].isin(MSASSS_VUS)]
    grouped = values.groupby("patient", sort=False)["x"]
    complete = grouped.apply(lambda s: bool(s.notna().all()))
    agg = {"any": grouped.max(), "count": grouped.sum(), "total": grouped.sum()}[summary]
    return agg.where(complete)


def _patient_outcome(panel, outcome: str, readers: str, ledger: Ledger) -> pd.DataFrame:
    """Per patient: ``outcome`` (and ``n_at_risk`` for counts); ledger of patients without."""
    ids = pd.Index(panel.patient_ids, name="patient")
    if outcome in ("any_new", "n_new"):
        frame = vu_outcomes(panel, "new_syndesmophyte", readers)
        frame = frame[frame["at_risk"]]
        per = frame.groupby("patient", sort=False)["event"].agg(["sum", "size"])
        per = per.reindex(ids)
        none = per["size"].isna() | per["size"].eq(0)
        ledger.add(
            "patient level",
            "no VU at risk of a new syndesmophyte (all mSASSS VUs with a syndesmophyte "
            "at baseline or not scored)",
            int(none.sum()),
            int(none.sum()),
        )
        counts = per["sum"].where(~none)
        value = (counts > 0).astype(float).where(~none) if outcome == "any_new" else counts
        return pd.DataFrame({"outcome": value, "n_at_risk": per["size"].where(~none)})
    if outcome == "msasss_progression":
        delta, reason = msasss_change(panel)
        delta = delta.reindex(ids)
        gone = delta.isna()
        ledger.add("patient level", reason, int(gone.sum()), int(gone.sum()))
        return pd.DataFrame({"outcome": (delta >= 2).astype(float).where(~gone), "delta": delta})
    check_choice(outcome, PATIENT_OUTCOMES, "patient outcome")
    raise AssertionError(outcome)  # pragma: no cover - every outcome is handled above


def msasss_total(panel, week: int) -> pd.Series:
    """Total mSASSS (0-72, 24 corners) per patient at an x-ray week, mean over readers.

    NaN for a patient with any of the 24 corners unscored at that week.
    """

    up, lo = f"msasss_upper_w{week}", f"msasss_lower_w{week}"
    vu = panel.vu[panel.vu["vu"].isin(MSASSS_VUS)]
    keys = ["patient", "reader"] if "reader" in vu.columns else ["patient"]
    corners = vu[up] + vu[lo]
    complete = vu[up].notna() & vu[lo].notna()
    g = pd.DataFrame({k: vu[k] for k in keys}).assign(s=corners, ok=complete.astype(int), one=1)
    per = g.groupby(keys, sort=False).agg(s=("s", "sum"), ok=("ok", "sum"), n=("one", "size"))
    per["total"] = per["s"].where(per["ok"].eq(len(MSASSS_VUS)) & per["n"].eq(len(MSASSS_VUS)))
    return (
        per["total"]
        .groupby(level="patient", sort=False)
        .agg(lambda s: s.mean() if s.notna().all() else np.nan)
    )


def msasss_change(panel) -> tuple[pd.Series, str]:
    """Change of the total mSASSS from the first to the last x-ray week, per patient.

    Returns the change (NaN when a total is incomplete) and the ledger reason.
    """
    first, last = panel.xray_weeks[0], panel.xray_weeks[-1]
    delta = msasss_total(panel, last) - msasss_total(panel, first)
    return delta, f"mSASSS incomplete at week {first} or {last} (not all 24 corners scored)"


def patient_level(
    panel,
    exposure: str = "w0",
    outcome: str = "any_new",
    *,
    summary: str = "any",
    adjust: Sequence[str] = ("arm",),
    engine: str | None = None,
    threshold: float = 1,
    readers: str = "mean",
    spine: str = "all",
    reference_arm: str | None = None,
) -> PatientLevel:
    """A patient-level model of ``outcome`` on the patient ``exposure``, adjusted.

    One row per patient (:func:`patient_frame`), fitted through ``syndesmo.fit``
    with ``outcome ~ exposure + <adjust>``: a logistic model for a 0/1 outcome; for
    the count ``n_new`` a count model with offset log(VUs at risk), so the estimate
    is a rate ratio per VU at risk. A model that cannot be fitted (no patient with
    both exposure and outcome, an exposure or an outcome that does not vary) gives
    ``fit=None`` and the reason in ``note``; so does a fit that raises (the note
    starts ``fit failed:``). A fit that did not converge is kept in ``fit``, but
    ``to_frame()`` reports no estimate from it and says so in its note.

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    exposure : str, default "w0"
        A VU exposure of the grammar in ``syndesmo.vocabulary``, summed up per
        patient by ``summary``; with ``summary="total"``, one MRI week (``w0``).
    outcome : str, default "any_new"
        ``"any_new"`` (a new syndesmophyte in any VU at risk, 0/1), ``"n_new"``
        (their number) or ``"msasss_progression"`` (mSASSS total change >= 2 units
        between the first and last x-ray, 0/1).
    summary : str, default "any"
        How the VU exposure is summed up: ``"any"`` VU with the 0/1 exposure,
        ``"count"`` of such VUs, or ``"total"`` ASspiMRI-a at one week.
    adjust : sequence of str, default ("arm",)
        Patient-table columns, or an allowed transform of one (``log(crp)``), added
        to the model.
    engine : str, optional
        An engine of ``sy.available_engines()`` that ignores clustering, of the
        binomial family for 0/1 outcomes and of a count family for ``n_new``:
        ``logit`` (default for 0/1 outcomes), ``poisson`` or ``negbin`` (default for
        ``n_new``).
    threshold : float, default 1
        ASspiMRI-a score from which a VU counts as inflamed (for the 0/1 VU
        exposures), in (0, 6].
    readers : str, default "mean"
        ``"mean"``, ``"agree"`` or ``"per_reader"``: how readers' x-ray scores make
        the VU outcomes summed up by ``any_new`` and ``n_new``. With ``"per_reader"``
        every reading counts: ``n_new`` and ``n_at_risk`` count readings (a new
        syndesmophyte both readers see counts twice, so the count model's RR is per
        reading), and ``any_new`` is 1 when any reader sees one. The patient exposure
        is taken from the mean of readers' MRI scores and ``msasss_progression``
        from the mean of readers' totals, whatever ``readers`` is.
    spine : str, default "all"
        The VUs the exposure is summed over: ``"all"`` every VU of the panel (23 in
        a full ASspiMRI-a panel, as the published totals) or ``"msasss"`` the 12
        VUs with x-ray scores.
    reference_arm : str, optional
        The arm ``arm`` compares against (default the placebo-like arm, as in
        ``derive.analysis_frame``).

    Returns
    -------
    PatientLevel
        ``fit`` (a ``FitResult`` whose exposure term is ``exposure``, or None),
        ``frame`` (one row per patient: patient, exposure, outcome, then
        ``n_at_risk`` for ``any_new``/``n_new`` or ``delta`` (the mSASSS change) for
        ``msasss_progression``, then the columns ``adjust`` reads), ``ledger`` (the
        patients left out, with the reasons), ``exposure``, ``summary``,
        ``outcome`` and ``note``; ``measure`` is ``OR`` or ``RR`` and
        ``to_frame()`` gives the one-row table.

    Raises
    ------
    ModelError
        For an engine that is not one of the patient-level engines or does not
        suit the outcome (0/1 or count); an unknown outcome, summary or spine; the
        summary ``any`` or ``count`` of a count or score exposure (``n_timepoints``,
        ``max_score``); the summary ``total`` of an exposure that is not one week;
        an ``adjust`` term that is not a column name or an allowed transform of
        one.
    DeriveError
        For an unknown exposure or readers rule, a ``threshold`` outside (0, 6], an
        ``adjust`` column that is not in the patient table, ``total`` at a week
        without MRI, or an unknown reference arm.
    EngineUnavailableError
        If the engine's optional dependencies are not installed.

    See Also
    --------
    patient_frame : The one-row-per-patient frame, with its ledger.
    """
    check_choice(outcome, PATIENT_OUTCOMES, "patient outcome")  # before the engine suits it
    if isinstance(adjust, str):  # one name, not its letters
        adjust = [adjust]
    counts = outcome in COUNT_OUTCOMES
    if engine is None:
        engine = registry.COUNT_ENGINE if counts else registry.CRUDE_ENGINE
    allowed = patient_engines()
    if engine not in allowed:
        raise ModelError(f"patient-level engine {engine!r}; choose {', '.join(allowed)}")
    binomial = registry.get_engine(engine).family == registry.BINOMIAL
    if binomial and counts:
        count_engines = [e for e in allowed if e not in _binomial_engines()]
        raise ModelError(
            f"outcome {outcome!r} is a count: use engine {' or '.join(map(repr, count_engines))}"
        )
    if not binomial and not counts:
        raise ModelError(
            f"outcome {outcome!r} is 0/1: use engine {' or '.join(map(repr, _binomial_engines()))}"
        )
    frame = patient_frame(
        panel,
        exposure,
        outcome,
        summary=summary,
        threshold=threshold,
        readers=readers,
        adjust=adjust,
        spine=spine,
        reference_arm=reference_arm,
    )
    ledger = frame.ledger
    note = _patient_problem(frame.data, exposure, summary)
    fit: FitResult | None = None
    if not note:
        rhs = " + ".join(["exposure", *adjust])
        try:
            if counts:
                fit = fit_model(
                    f"outcome ~ {rhs}",
                    frame,
                    engine=engine,
                    offset=np.log(frame["n_at_risk"].to_numpy(dtype=float)),
                )
                # the offset is an argument, not a term: say so where the formula is shown
                fit = dataclasses.replace(fit, formula=f"{fit.formula} + offset(log(n_at_risk))")
            else:
                fit = fit_model(f"outcome ~ {rhs}", frame, engine=engine)
        except EngineUnavailableError:
            raise
        except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
            note = f"fit failed: {type(exc).__name__}: {exc}"
    return PatientLevel(
        fit=fit,
        frame=frame.data,
        ledger=ledger,
        exposure=exposure,
        summary=summary,
        outcome=outcome,
        note=note,
    )


def _patient_problem(frame: pd.DataFrame, exposure: str, summary: str) -> str:
    if len(frame) == 0:
        return "no patient has both exposure and outcome"
    if frame["exposure"].nunique() < 2:
        return (
            f"the patient exposure {patient_exposure_label(exposure, summary)!r} does not "
            f"vary: all {len(frame)} patients have {frame['exposure'].iloc[0]:g}"
        )
    y = frame["outcome"]
    if (y > 0).all() or (y == 0).all():
        return "the patient outcome does not vary"
    return ""
