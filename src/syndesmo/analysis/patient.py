"""The patient level: VU exposures and outcomes summed up to one row per patient.

van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) reported a patient-level
analysis beside the VU-level models; it ignores where in the spine the
inflammation and the new bone are. ``patient_frame`` builds the one-row-per-patient
frame (with a ledger of the patients left out), ``patient_level`` fits a logistic
model or, for counts, a Poisson or negative binomial model with an offset
(``fit_count``); ``PatientLevel`` holds the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from syndesmo.derive.vu_tables import vu_exposures, vu_outcomes, vu_scores
from syndesmo.errors import DeriveError, EngineUnavailableError, ModelError, SyndesmoError
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult
from syndesmo.ledger import Ledger
from syndesmo.vocabulary import EXPOSURE_LABELS, OUTCOME_LABELS

#: How VU exposures are summed up per patient.
SUMMARY_WORDS = ("any", "count", "total")
_WEEK = re.compile(r"^w(\d+)$")


@dataclass(frozen=True)
class CountDetails(EngineDetails):
    """What a count model knows beyond the shared result.

    Parameters
    ----------
    alpha : float
        The negative binomial's dispersion (NB2: Var = μ + α μ²); NaN for Poisson.
    """

    alpha: float


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
        return "RR" if self.fit is not None and self.fit.engine in ("poisson", "negbin") else "OR"

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One row: exposure, outcome, model, estimate with CI and p, patients, events."""
        row = {
            "level": "patient",
            "outcome": self.outcome,
            "outcome_label": OUTCOME_LABELS.get(self.outcome, self.outcome),
            "exposure": self.exposure,
            "exposure_label": patient_exposure_label(self.exposure, self.summary),
            "summary": self.summary,
            "engine": self.fit.engine if self.fit is not None else "",
            "measure": self.measure,
        }
        if self.fit is None or "exposure" not in self.fit.params.index:
            est = dict.fromkeys(("estimate", "lower", "upper", "p"), math.nan)
        else:
            o = self.fit.odds_ratios(level).loc["exposure"]
            est = {"estimate": o["OR"], "lower": o["lower"], "upper": o["upper"], "p": o["p"]}
        y = self.frame["outcome"] if len(self.frame) else pd.Series(dtype=float)
        row.update(est)
        row.update(
            {
                "n_patients": len(self.frame),
                "events": int((y > 0).sum()),
                "note": self.note,
            }
        )
        return pd.DataFrame([row])


def patient_exposure_label(exposure: str, summary: str) -> str:
    """Words for a patient exposure, e.g. 'any VU inflamed at baseline'."""
    base = EXPOSURE_LABELS.get(exposure, exposure)
    if summary == "any":
        return f"any VU {base}"
    if summary == "count":
        return f"number of VUs {base} (per VU)"
    week = exposure.lstrip("w")
    return f"total ASspiMRI-a at week {week} (per point)"


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
) -> pd.DataFrame:
    """One row per patient: ``exposure`` (summed up by ``summary``), ``outcome``, ``adjust``.

    Exposure over the VUs of ``spine`` (``"all"`` 23 VUs, as the published totals;
    ``"msasss"`` the 12 VUs with x-ray scores): ``any`` VU with the exposure (0/1),
    ``count`` of such VUs, or ``total`` ASspiMRI-a at one week (0-138 over 23 VUs).
    Outcome: ``any_new`` new syndesmophyte in any VU at risk (0/1), ``n_new`` their
    number (with ``n_at_risk``, the VUs at risk, for an offset), or
    ``msasss_progression`` (mSASSS total change ≥ 2 units between the first and
    last x-ray). Patients without an outcome (no VU at risk, incomplete mSASSS) or
    with a missing covariate are left out and counted in ``frame.attrs["ledger"]``.
    """
    ledger = Ledger()
    exp = _patient_exposure(panel, exposure, summary, threshold, spine)
    out = _patient_outcome(panel, outcome, readers, ledger)
    pat = panel.patients.set_index("patient")
    missing = [c for c in adjust if c not in pat.columns]
    if missing:
        raise DeriveError(
            f"covariate(s) {missing} are not columns of the patient table; "
            f"patient columns are {[c for c in pat.columns]}"
        )
    frame = pd.DataFrame(index=pd.Index(panel.patient_ids, name="patient"))
    frame["exposure"] = exp.reindex(frame.index)
    frame = frame.join(out, how="left")
    for c in adjust:
        values = pat[c].reindex(frame.index)
        frame[c] = _control_first(values) if c == "arm" else values
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
    if adjust:
        incomplete = frame[list(adjust)].isna().any(axis=1).to_numpy()
        if incomplete.any():
            ledger.add(
                "patient level",
                f"missing covariate ({', '.join(adjust)})",
                int(incomplete.sum()),
                int(incomplete.sum()),
            )
            frame = frame.loc[~incomplete]
    frame = frame.reset_index(drop=True)
    frame.attrs["ledger"] = ledger
    return frame


def _control_first(values: pd.Series) -> pd.Series:
    """Treatment arm as a categorical with ``placebo`` as the reference level, as
    ``derive.analysis_frame`` codes it, so VU- and patient-level terms compare the
    same way round."""
    if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        return values
    levels = sorted(pd.unique(values.dropna()).tolist(), key=str)
    if "placebo" in levels:
        levels.remove("placebo")
        levels.insert(0, "placebo")
    return pd.Series(pd.Categorical(values, categories=levels), index=values.index)


def _patient_exposure(
    panel, exposure: str, summary: str, threshold: float, spine: str
) -> pd.Series:
    """Per patient: the exposure summed up over VUs; NaN if any VU lacks a needed score."""
    from syndesmo.derive.frame import COUNT_EXPOSURES
    from syndesmo.panel.spine import MSASSS_VUS

    if spine not in ("all", "msasss"):
        raise ModelError(f"spine = {spine!r}; choose 'all' (every VU) or 'msasss' (12 VUs)")
    if summary not in SUMMARY_WORDS:
        raise ModelError(f"summary = {summary!r}; choose one of {', '.join(SUMMARY_WORDS)}")
    if summary == "total":
        if not _WEEK.match(exposure):
            raise ModelError(
                f"summary 'total' sums the ASspiMRI-a at one week; exposure {exposure!r} "
                "is not a single week (use e.g. w0, w24 or w102)"
            )
        week = int(exposure[1:])
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
    raise ModelError(
        f"patient outcome {outcome!r} is unknown; choose any_new, n_new or msasss_progression"
    )


def msasss_total(panel, week: int) -> pd.Series:
    """Total mSASSS (0-72, 24 corners) per patient at an x-ray week, mean over readers.

    NaN for a patient with any of the 24 corners unscored at that week.
    """
    from syndesmo.panel.spine import MSASSS_VUS

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
) -> PatientLevel:
    """A patient-level model of ``outcome`` on the patient ``exposure``, adjusted.

    ``engine``: ``logit`` (default for 0/1 outcomes; statsmodels through
    ``syndesmo.fit``), ``poisson`` or ``negbin`` (default for ``n_new``; log link
    with offset log(VUs at risk), so the estimate is a rate ratio per VU at risk).
    See ``patient_frame`` for the exposures and outcomes. A model that cannot be
    fitted (no variation, no events) gives ``fit=None`` and the reason in ``note``.
    """
    if engine is None:
        engine = "negbin" if outcome == "n_new" else "logit"
    if engine not in ("logit", "poisson", "negbin"):
        raise ModelError(f"patient-level engine {engine!r}; choose logit, poisson or negbin")
    if engine == "logit" and outcome == "n_new":
        raise ModelError("outcome 'n_new' is a count: use engine 'poisson' or 'negbin'")
    if engine != "logit" and outcome != "n_new":
        raise ModelError(f"outcome {outcome!r} is 0/1: use engine 'logit'")
    frame = patient_frame(
        panel,
        exposure,
        outcome,
        summary=summary,
        threshold=threshold,
        readers=readers,
        adjust=adjust,
        spine=spine,
    )
    ledger = frame.attrs["ledger"]
    note = _patient_problem(frame, exposure, summary)
    fit: FitResult | None = None
    if not note:
        try:
            if engine == "logit":
                from syndesmo.fitting.api import fit as fit_model

                rhs = " + ".join(["exposure", *adjust])
                fit = fit_model(f"outcome ~ {rhs}", frame, engine="logit")
            else:
                fit = fit_count(frame, adjust, engine)
        except EngineUnavailableError:
            raise
        except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
            note = f"fit failed: {type(exc).__name__}: {exc}"
    return PatientLevel(
        fit=fit,
        frame=frame,
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


def fit_count(frame: pd.DataFrame, adjust: Sequence[str], engine: str) -> FitResult:
    """Poisson or negative-binomial regression of ``outcome`` (a count) on the exposure.

    Offset log(``n_at_risk``): the estimate is a rate ratio per VU at risk. The
    negative binomial (NB2) estimates its dispersion ``alpha`` by maximum likelihood
    (statsmodels ``NegativeBinomial``); ``alpha`` is ``fit.details.alpha`` (a
    :class:`CountDetails`).

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient with ``outcome``, ``exposure``, ``n_at_risk`` and the
        ``adjust`` columns.
    adjust : sequence of str
        Adjustment terms.
    engine : str
        ``"poisson"`` or ``"negbin"``.

    Returns
    -------
    FitResult
        Rate ratios on the log scale in ``params``; no variance components.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf
    from statsmodels.discrete.discrete_model import NegativeBinomial

    rhs = " + ".join(["exposure", *adjust])
    offset = np.log(frame["n_at_risk"].to_numpy(dtype=float))
    if engine == "poisson":
        model = smf.glm(f"outcome ~ {rhs}", frame, family=sm.families.Poisson(), offset=offset)
        res = model.fit()
        params, vcov = res.params, res.cov_params()
        converged, alpha, loglik = bool(res.converged), math.nan, float(res.llf)
        iterations = res.fit_history.get("iteration")
    else:
        base = smf.glm(f"outcome ~ {rhs}", frame, family=sm.families.Poisson(), offset=offset)
        exog = pd.DataFrame(base.exog, columns=base.exog_names)
        model = NegativeBinomial(base.endog, exog, loglike_method="nb2", offset=offset)
        res = model.fit(disp=0, maxiter=200)
        names = base.exog_names
        params = pd.Series(np.asarray(res.params)[: len(names)], index=names)
        cov = np.asarray(res.cov_params())[: len(names), : len(names)]
        vcov = pd.DataFrame(cov, index=names, columns=names)
        converged = bool(res.mle_retvals.get("converged", True))
        alpha, loglik = float(np.asarray(res.params)[-1]), float(res.llf)
        iterations = res.mle_retvals.get("iterations")
    return FitResult(
        engine=engine,
        formula=f"outcome ~ {rhs} + offset(log(n_at_risk))",
        params=pd.Series(params),
        vcov=pd.DataFrame(vcov),
        n_obs=len(frame),
        loglik=loglik,
        convergence=Convergence(
            converged=converged,
            message="" if converged else "optimiser did not converge",
            iterations=None if iterations is None else int(iterations),
        ),
        n_events=int(frame["outcome"].sum()),
        details=CountDetails(alpha=alpha),
    )
