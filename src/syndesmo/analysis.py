"""The ASSERT-style analysis: the model ladder at the VU level and the patient layer.

van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) related MRI activity in a
vertebral unit (VU) to a new syndesmophyte in the same VU two years later, first
ignoring the clustering of VUs within patients, then with a multilevel model,
then adjusted for treatment and for confounders, and at the patient level beside
it. ``ladder`` fits that sequence for several exposures, with a GLMM (subject-
specific ORs) and GEE (population-averaged ORs) side by side; ``patient_level``
and ``compare_levels`` aggregate to one row per patient. Everything returns tidy
tables so that reports, plots and notebooks only format them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from syndesmo.errors import DeriveError, EngineUnavailableError, ModelError, SyndesmoError
from syndesmo.results import FitResult, Ledger

#: Steps of the ladder, as in van der Heijde et al. 2012: crude, multilevel,
#: + treatment, + confounders.
STEP_LABELS: dict[str, str] = {
    "a": "crude",
    "b": "+ patient clustering",
    "c": "+ treatment",
    "d": "+ confounders",
}
#: Engines with a patient random intercept (subject-specific, conditional ORs).
CONDITIONAL_ENGINES = ("native", "lme4", "bayes")
#: Engines giving population-averaged (marginal) ORs for clustered data.
MARGINAL_ENGINES = ("gee",)
#: The engine of step (a): logistic regression ignoring the clustering.
CRUDE_ENGINE = "logit"

#: Words for the exposures of ``syndesmo.derive`` (tables, plots, report).
EXPOSURE_LABELS: dict[str, str] = {
    "w0": "inflamed at baseline",
    "w24": "inflamed at week 24",
    "w102": "inflamed at week 102",
    "w0_and_w24": "inflamed at baseline and week 24",
    "w0_or_w24": "inflamed at baseline or week 24",
    "any": "inflamed at any time point",
    "all": "inflamed at every time point",
    "never": "never inflamed",
    "resolved": "inflamed at baseline, resolved later",
    "new": "not inflamed at baseline, inflamed later",
    "n_timepoints": "number of time points inflamed (per point)",
    "max_score": "maximum ASspiMRI-a score (per point)",
}
OUTCOME_LABELS: dict[str, str] = {
    "new_syndesmophyte": "new syndesmophyte",
    "growth": "growth of a syndesmophyte",
    "any_new": "any new syndesmophyte",
    "n_new": "number of new syndesmophytes",
    "msasss_progression": "mSASSS progression ≥ 2 units",
}

#: 16*sqrt(3)/(15*pi), squared: the constant of the logistic-normal approximation
#: beta_PA ~= beta_SS / sqrt(1 + c^2 sigma^2) (Zeger, Liang & Albert, Biometrics
#: 1988;44:1049-60).
ZEGER_C2 = (16.0 * math.sqrt(3.0) / (15.0 * math.pi)) ** 2

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
    "converged",
    "singular",
    "note",
]

#: How VU exposures are summed up per patient.
SUMMARY_WORDS = ("any", "count", "total")
_WEEK = re.compile(r"^w(\d+)$")

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
    intercept; (b) adds ``(1|group)``; (c) the treatment; (d) the confounders.
    """
    if step not in STEP_LABELS:
        raise ModelError(f"unknown ladder step {step!r}; steps are {', '.join(STEP_LABELS)}")
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
    """Engines fitted at a step: ``logit`` only at (a), every other engine at (b)-(d)."""
    if step == "a":
        return [CRUDE_ENGINE]
    return [e for e in engines if e != CRUDE_ENGINE]


def build_frame(
    panel,
    outcome: str,
    exposure: str,
    *,
    covariates: Sequence[str] = (),
    threshold: float = 1,
    readers: str = "mean",
) -> pd.DataFrame:
    """``derive.analysis_frame`` with every model column complete.

    Rows still missing a value in a model column are dropped and counted in the
    frame's ledger (``frame.attrs["ledger"]``), so all steps of a ladder use the
    same VUs.
    """
    from syndesmo.derive import analysis_frame

    frame = analysis_frame(
        panel,
        outcome=outcome,
        exposure=exposure,
        threshold=threshold,
        covariates=list(covariates),
        readers=readers,
    )
    ledger = frame.attrs.get("ledger")
    ledger = ledger.copy() if isinstance(ledger, Ledger) else Ledger()
    cols = [c for c in (outcome, "mri", *covariates) if c in frame.columns]
    missing_cols = [c for c in (outcome, "mri", *covariates) if c not in frame.columns]
    if missing_cols:
        raise DeriveError(
            f"the analysis frame has no column(s) {missing_cols}; "
            f"available columns: {list(frame.columns)}"
        )
    incomplete = frame[cols].isna().any(axis=1).to_numpy()
    if incomplete.any():
        gone = frame.loc[incomplete]
        which = [c for c in cols if frame[c].isna().any()]
        ledger.add(
            "analysis",
            f"missing value in {', '.join(which)}",
            int(incomplete.sum()),
            int(gone["patient"].nunique()),
        )
        frame = frame.loc[~incomplete].reset_index(drop=True)
    frame.attrs["ledger"] = ledger
    return frame


def constant_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns of ``frame`` with a single value: they cannot enter a model."""
    return [c for c in columns if c in frame.columns and frame[c].nunique(dropna=True) < 2]


def _step_terms(step: str, treatment: str, confounders: Sequence[str]) -> list[str]:
    return {"a": [], "b": [], "c": [treatment], "d": [treatment, *confounders]}[step]


def _fill_counts(row: dict, frame: pd.DataFrame, outcome: str) -> None:
    """Patients, VUs and events from the frame when the fit did not report them."""

    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    if missing(row["n_vus"]):
        row["n_vus"] = len(frame)
    if missing(row["n_patients"]):
        row["n_patients"] = int(frame["patient"].nunique()) if len(frame) else 0
    if missing(row["events"]):
        row["events"] = int(frame[outcome].sum()) if len(frame) else 0


def check_frame(frame: pd.DataFrame, outcome: str, exposure: str) -> str:
    """Why a frame cannot be modelled ('' if it can): no rows, no variation, no events."""
    if len(frame) == 0:
        return f"no VU is eligible for the outcome {outcome!r}"
    x = frame["mri"].to_numpy(dtype=float)
    if np.unique(x).size < 2:
        return (
            f"the exposure {exposure!r} ({EXPOSURE_LABELS.get(exposure, exposure)}) does not "
            f"vary: all {len(frame)} VUs have the value {x[0]:g}"
        )
    y = frame[outcome].to_numpy(dtype=float)
    events = int(y.sum())
    if events == 0:
        return f"no events of {outcome!r} among the {len(frame)} eligible VUs"
    if events == len(y):
        return f"every one of the {len(frame)} eligible VUs has the outcome {outcome!r}"
    return ""


# ---------------------------------------------------------------------------
# one fit → one row


def _safe_fit(formula: str, frame: pd.DataFrame, engine: str, nagq: int) -> FitResult | str:
    """The fit, or the reason it failed as a string; a missing engine is still raised.

    Python warnings raised while fitting are caught and kept in ``fit.warnings``
    (they end up in the ``note`` column instead of flooding the console).
    """
    from syndesmo.fitting import fit

    kwargs = {"nagq": nagq} if engine in ("native", "lme4") else {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(formula, frame, engine=engine, **kwargs)
    except EngineUnavailableError:
        raise
    except (SyndesmoError, ArithmeticError, np.linalg.LinAlgError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    for w in caught:
        message = str(w.message)
        if message not in result.warnings:
            result.warnings.append(message)
    return result


def fit_row(fit: FitResult | str, term: str = "mri", level: float = 0.95) -> dict:
    """Estimate of ``term`` and fit statistics of one model as a dict of table columns."""
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
            "converged": False,
            "singular": False,
            "note": f"fit failed: {fit}",
        }
    if term not in fit.params.index:
        raise ModelError(f"the fit has no term {term!r}; terms are {list(fit.params.index)}")
    ors = fit.odds_ratios(level).loc[term]
    notes = list(fit.warnings)
    if not fit.converged and fit.convergence_message:
        notes.insert(0, f"not converged: {fit.convergence_message}")
    se = float(fit.bse[term])
    if not np.isfinite(se) or se > 10:
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
        "n_patients": fit.n_groups if fit.n_groups is not None else fit.extra.get("n_patients"),
        "n_vus": fit.n_obs,
        "events": fit.n_events,
        "sigma": float(fit.sigma),
        "icc": float(fit.icc),
        "log_or_marginal": math.nan,
        "converged": bool(fit.converged),
        "singular": bool(fit.singular),
        "note": "; ".join(dict.fromkeys(notes)),
    }


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
    engine: str = "native",
    engines_beside: Sequence[str] = ("gee",),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    treatment: str = "arm",
    strict: bool = False,
    progress: Progress | None = None,
    keep_fits: bool = False,
    engines: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The model ladder for each exposure, as one tidy table (see ``LADDER_COLUMNS``).

    ``engines=["native", "gee", "bayes"]`` is shorthand for ``engine`` (the first)
    and ``engines_beside`` (the rest): every listed engine is fitted at steps b–d.

    Steps: (a) logistic regression ignoring clustering (engine ``logit``); (b) a
    patient random intercept (GLMM ``engine``) — and, beside it, every engine in
    ``engines_beside`` (GEE: exchangeable working correlation within patient); (c)
    + ``treatment``; (d) + ``confounders`` (left out when there are none). All steps
    of one exposure use the same VUs (complete cases on every model column).

    A fit that fails gives a row with NaN estimates and the reason in ``note``. An
    exposure that does not vary (or an outcome without events) gives noted rows —
    or, with ``strict=True``, a ``ModelError`` naming the exposure. The ledger of
    excluded VUs is in ``table.attrs["ledgers"]`` (exposure → ``Ledger``), the
    fits in ``table.attrs["fits"]`` with ``keep_fits=True``.
    """
    if engines is not None:
        engines = [e for e in engines if e != CRUDE_ENGINE]  # logit is step (a) anyway
        if not engines:
            raise ModelError("ladder: engines must name at least one engine besides 'logit'")
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
        strict=strict,
        progress=progress,
        keep_fits=keep_fits,
    )
    table = res.table
    table.attrs["ledgers"] = res.ledgers
    if keep_fits:
        table.attrs["fits"] = res.fits
    return table


def ladder_steps(confounders: Sequence[str]) -> list[str]:
    """Steps fitted: a-c always, d only when there are confounders."""
    return ["a", "b", "c", "d"] if confounders else ["a", "b", "c"]


def n_ladder_fits(n_exposures: int, engines: Sequence[str], confounders: Sequence[str]) -> int:
    """How many models a ladder fits (for progress bars)."""
    per = sum(len(engines_for_step(s, engines)) for s in ladder_steps(confounders))
    return n_exposures * per


def ladder_result(
    panel,
    outcome: str = "new_syndesmophyte",
    exposures: Sequence[str] = ("w0",),
    confounders: Sequence[str] = (),
    *,
    engine: str = "native",
    engines_beside: Sequence[str] = ("gee",),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    treatment: str = "arm",
    strict: bool = False,
    progress: Progress | None = None,
    keep_fits: bool = False,
) -> LadderResult:
    """``ladder`` returning a ``LadderResult`` (table, ledgers, fits)."""
    progress = progress or _noop
    if isinstance(exposures, str):
        exposures = [exposures]
    if engine == CRUDE_ENGINE:
        raise ModelError(
            f"engine {CRUDE_ENGINE!r} is step (a) of the ladder; give a GLMM engine "
            f"({', '.join(CONDITIONAL_ENGINES)}) as engine"
        )
    engines = list(dict.fromkeys([engine, *engines_beside]))
    confounders = [c for c in confounders if c != treatment]
    covariates = [treatment, *confounders]
    rows: list[dict] = []
    ledgers: dict[str, Ledger] = {}
    fits: dict[tuple[str, str, str, str], FitResult] = {}
    steps = ladder_steps(confounders)
    for exposure in exposures:
        frame = build_frame(
            panel, outcome, exposure, covariates=covariates, threshold=threshold, readers=readers
        )
        ledgers[exposure] = frame.attrs["ledger"]
        # per-reader rows: reader as a categorical term (several readers, not a slope)
        extra = ["C(reader)"] if "reader" in frame.columns else []
        problem = check_frame(frame, outcome, exposure)
        if problem and strict:
            raise ModelError(problem)
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
            if treatment in constant and step in ("c", "d"):
                formula = formula.replace(f" + {treatment}", "", 1)
            for eng in engines_for_step(step, engines):
                progress(f"{outcome} {exposure} ({step}) {eng}")
                if problem:
                    row = fit_row(problem)
                    row["note"] = problem
                else:
                    fitted = _safe_fit(formula, frame, eng, nagq)
                    row = fit_row(fitted)
                    if not isinstance(fitted, str) and eng in CONDITIONAL_ENGINES:
                        row["log_or_marginal"] = implied_marginal_log_or(fitted, frame)
                    if keep_fits and not isinstance(fitted, str):
                        fits[(outcome, exposure, step, eng)] = fitted
                if dropped and any(
                    c in constant for c in _step_terms(step, treatment, confounders)
                ):
                    row["note"] = "; ".join(x for x in (dropped, row["note"]) if x)
                _fill_counts(row, frame, outcome)
                rows.append(
                    {
                        "outcome": outcome,
                        "exposure": exposure,
                        "exposure_label": EXPOSURE_LABELS.get(exposure, exposure),
                        "step": step,
                        "step_label": STEP_LABELS[step],
                        "engine": eng,
                        "scale": "conditional" if eng in CONDITIONAL_ENGINES else "marginal",
                        "formula": formula,
                        **row,
                    }
                )
    table = pd.DataFrame(rows, columns=LADDER_COLUMNS)
    for col in ("n_patients", "n_vus", "events"):
        table[col] = table[col].astype("Int64")
    return LadderResult(table=table, ledgers=ledgers, fits=fits)


# ---------------------------------------------------------------------------
# GLMM vs GEE: the attenuation of population-averaged ORs


def zeger_attenuation(log_or: float | np.ndarray, sigma: float | np.ndarray):
    """Population-averaged log-OR implied by a subject-specific one (approximation).

    beta_PA ~= beta_SS / sqrt(1 + c^2 sigma^2) with c^2 = (16 sqrt(3) / (15 pi))^2
    ~= 0.346 (Zeger, Liang & Albert, Biometrics 1988;44:1049-60).
    """
    return np.asarray(log_or) / np.sqrt(1.0 + ZEGER_C2 * np.asarray(sigma) ** 2)


def marginal_params(X: np.ndarray, beta: np.ndarray, sigma: float, n_nodes: int = 64) -> np.ndarray:
    """Population-averaged coefficients implied by a random-intercept logistic model.

    The marginal probability of each row, p_i = E_b[expit(x_i' beta + b)] with
    b ~ N(0, sigma^2), is integrated exactly (Gauss-Hermite, ``n_nodes`` points);
    the logistic regression of these p_i on X (the estimating equations of GEE with
    an independence working correlation, at their population values) gives the
    coefficients a GEE fitted to this design estimates. This is the exact target
    that ``zeger_attenuation`` approximates.
    """
    import statsmodels.api as sm

    X = np.asarray(X, dtype=float)
    eta = X @ np.asarray(beta, dtype=float)
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    b = math.sqrt(2.0) * sigma * nodes
    p = special.expit(eta[:, None] + b[None, :]) @ weights / math.sqrt(math.pi)
    model = sm.GLM(p, X, family=sm.families.Binomial())
    with warnings.catch_warnings():
        # fractional responses near 0/1 trip statsmodels' separation check
        warnings.simplefilter("ignore")
        return np.asarray(model.fit(tol=1e-12).params)


def marginal_log_or(
    intercept: float,
    log_or: float,
    sigma: float,
    *,
    at_risk_intercept: float | None = None,
    n_nodes: int = 80,
) -> float:
    """The population-averaged log-OR of a binary exposure implied by the GLMM truth.

    For logit P(y = 1 | x, u) = ``intercept`` + ``log_or`` x + u, u ~ N(0, sigma^2),
    the marginal risks p_x = E_u[expit(intercept + log_or x + u)] are integrated by
    Gauss-Hermite quadrature and the marginal log-OR is logit(p_1) - logit(p_0);
    with one binary exposure the marginal model is saturated, so this is exactly the
    parameter GEE estimates. ``at_risk_intercept`` weights u by the chance that a VU
    is at risk, 1 - expit(at_risk_intercept + u) (the simulator's baseline
    syndesmophytes select VUs on u), giving the VU-weighted target over VUs at risk.
    """
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    u = math.sqrt(2.0) * sigma * nodes
    w = weights / math.sqrt(math.pi)
    if at_risk_intercept is not None:
        w = w * (1.0 - special.expit(at_risk_intercept + u))
    w = w / w.sum()
    p0 = float(w @ special.expit(intercept + u))
    p1 = float(w @ special.expit(intercept + log_or + u))
    return float(special.logit(p1) - special.logit(p0))


def implied_marginal_log_or(fit: FitResult, frame: pd.DataFrame, term: str = "mri") -> float:
    """The population-averaged log-OR of ``term`` that a fitted GLMM implies.

    ``marginal_params`` on the fit's own design matrix: the conditional model with
    the fitted coefficients and random-intercept SD, integrated over the normal
    random intercept, then summarised by a logistic regression over the analysed
    rows. NaN when it cannot be computed (no SD, a failed fit).
    """
    from syndesmo.design import build_design

    if not np.isfinite(fit.sigma) or not np.all(np.isfinite(fit.params)):
        return math.nan
    try:
        design = build_design(fit.formula, frame)
        beta = fit.params.reindex(design.names).to_numpy(dtype=float)
        out = marginal_params(design.X, beta, float(fit.sigma))
        return float(out[design.names.index(term)])
    except (SyndesmoError, ValueError, np.linalg.LinAlgError):
        return math.nan


def attenuation_table(table: pd.DataFrame, glmm_engine: str | None = None) -> pd.DataFrame:
    """GLMM beside GEE for each outcome × exposure × step of a ladder table.

    Columns: the GLMM OR and random-intercept SD, the population-averaged OR the
    Zeger-Liang-Albert approximation predicts from them (``OR_predicted_marginal``),
    the one the fitted GLMM implies exactly (``OR_implied_marginal``, see
    ``implied_marginal_log_or``), the GEE OR, and the ratio of the GEE log-OR to the
    GLMM log-OR against the approximate factor 1/sqrt(1 + 0.346 sigma^2).
    """
    cond = table[table["scale"].eq("conditional") & table["step"].ne("a")]
    if glmm_engine is not None:
        cond = cond[cond["engine"].eq(glmm_engine)]
    marg = table[table["engine"].isin(MARGINAL_ENGINES)]
    keys = ["outcome", "exposure", "exposure_label", "step", "step_label"]
    merged = cond[[*keys, "engine", "log_or", "OR", "sigma", "log_or_marginal"]].merge(
        marg[[*keys, "log_or", "OR"]], on=keys, suffixes=("_glmm", "_gee")
    )
    factor = 1.0 / np.sqrt(1.0 + ZEGER_C2 * merged["sigma"].to_numpy(dtype=float) ** 2)
    out = pd.DataFrame(
        {
            **{k: merged[k] for k in keys},
            "glmm_engine": merged["engine"],
            "OR_glmm": merged["OR_glmm"],
            "sigma": merged["sigma"],
            "OR_predicted_marginal": np.exp(merged["log_or_glmm"].to_numpy(dtype=float) * factor),
            "OR_implied_marginal": np.exp(merged["log_or_marginal"].to_numpy(dtype=float)),
            "OR_gee": merged["OR_gee"],
            "factor_predicted": factor,
            "factor_observed": merged["log_or_gee"] / merged["log_or_glmm"],
        }
    )
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------
# the patient level


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


def vu_exposures(panel, exposure: str, threshold: float = 1) -> pd.DataFrame:
    """The exposure of every VU of the panel (all VUs, eligible or not), readers averaged.

    Columns ``patient``, ``vu``, ``x`` (NaN where a needed MRI week is missing); the
    rules are those of ``syndesmo.derive`` (``exposure_values`` on the readers' mean).
    """
    from syndesmo import derive

    arrays = derive.panel_arrays(panel)
    units = derive.combine_readers(arrays, "mean")
    x = derive.exposure_values(units["mri"], panel.mri_weeks, exposure, threshold)
    rows = panel.vu.iloc[units["row"]]
    return pd.DataFrame(
        {"patient": rows["patient"].to_numpy(), "vu": rows["vu"].to_numpy(), "x": x}
    )


def vu_outcomes(panel, outcome: str = "new_syndesmophyte", readers: str = "mean") -> pd.DataFrame:
    """At-risk status and event of every VU for ``outcome``, whatever its MRI.

    Columns ``patient``, ``vu``, ``region``, ``at_risk`` (eligible: scored by the
    mSASSS, at risk at baseline, both x-rays present) and ``event`` (0/1, NaN where
    not at risk). Uses ``derive.derive_arrays`` with the MRI set aside, because a
    VU's outcome does not depend on its MRI.
    """
    from syndesmo import derive

    arrays = dict(derive.panel_arrays(panel))
    arrays["mri"] = np.zeros_like(arrays["mri"])
    d = derive.derive_arrays(arrays, outcome, f"w{panel.mri_weeks[0]}", 1, readers)
    rows = panel.vu.iloc[d["row"]]
    return pd.DataFrame(
        {
            "patient": rows["patient"].to_numpy(),
            "vu": rows["vu"].to_numpy(),
            "region": [derive.REGIONS[r] for r in d["region"]],
            "at_risk": d["eligible"],
            "event": d["y"],
        }
    )


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
    from syndesmo.derive import COUNT_EXPOSURES
    from syndesmo.spine import MSASSS_VUS

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
        values = _vu_scores(panel, week)
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


def _vu_scores(panel, week: int) -> pd.DataFrame:
    """ASspiMRI-a at ``week`` of every VU (mean over readers): patient, vu, x."""
    from syndesmo import derive

    arrays = derive.panel_arrays(panel)
    units = derive.combine_readers(arrays, "mean")
    j = list(panel.mri_weeks).index(week)
    rows = panel.vu.iloc[units["row"]]
    return pd.DataFrame(
        {
            "patient": rows["patient"].to_numpy(),
            "vu": rows["vu"].to_numpy(),
            "x": np.asarray(units["mri"], dtype=float)[:, j],
        }
    )


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
    from syndesmo.spine import MSASSS_VUS

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
                from syndesmo.fitting import fit as fit_model

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
    (statsmodels ``NegativeBinomial``); ``alpha`` is in ``fit.extra``.
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
    return FitResult(
        engine=engine,
        formula=f"outcome ~ {rhs} + offset(log(n_at_risk))",
        params=pd.Series(params),
        vcov=pd.DataFrame(vcov),
        n_obs=len(frame),
        loglik=loglik,
        converged=converged,
        convergence_message="" if converged else "optimiser did not converge",
        n_events=int(frame["outcome"].sum()),
        extra={"alpha": alpha},
    )


# ---------------------------------------------------------------------------
# VU level beside patient level


def compare_levels(
    panel,
    exposure: str = "w0",
    *,
    adjust: Sequence[str] = ("arm",),
    engine: str = "native",
    beside: Sequence[str] = ("gee",),
    nagq: int = 1,
    threshold: float = 1,
    readers: str = "mean",
    patient_models: Sequence[tuple[str, str]] = (
        ("any_new", "any"),
        ("n_new", "count"),
        ("msasss_progression", "any"),
    ),
) -> pd.DataFrame:
    """VU-level and patient-level estimates for the same exposure, side by side.

    VU level: new syndesmophyte ~ exposure + ``adjust`` + (1|patient) with ``engine``
    and each engine of ``beside``. Patient level: each (outcome, summary) pair of
    ``patient_models`` (see ``patient_level``), adjusted for ``adjust``. Columns:
    level, outcome, exposure, engine, measure (OR or RR), estimate, lower, upper, p,
    n_patients, n_units, events, note; ``attrs["ledgers"]`` holds what was left out.
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
    )
    ledgers["VU level"] = frame.attrs["ledger"]
    problem = check_frame(frame, "new_syndesmophyte", exposure)
    rhs = " + ".join(["mri", *adjust])
    formula = f"new_syndesmophyte ~ {rhs} + (1|patient)"
    for eng in dict.fromkeys([engine, *beside]):
        fitted = problem or _safe_fit(formula, frame, eng, nagq)
        r = fit_row(fitted)
        rows.append(
            {
                "level": "VU",
                "outcome": "new_syndesmophyte",
                "outcome_label": OUTCOME_LABELS["new_syndesmophyte"],
                "exposure": exposure,
                "exposure_label": EXPOSURE_LABELS.get(exposure, exposure),
                "engine": eng,
                "measure": "OR",
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
    out = pd.DataFrame(rows)
    out.attrs["ledgers"] = ledgers
    return out


# ---------------------------------------------------------------------------
# along the spine


def spine_profile(panel, threshold: float = 1, readers: str = "mean") -> pd.DataFrame:
    """Per VU along the spine (all 23, C2/3 … L5/S1): inflammation and new bone.

    Columns: ``vu``, ``region``, ``inflamed_w{week}`` (share of the VU's scored MRIs
    with ASspiMRI-a >= ``threshold``, readers averaged; NaN where not scored),
    ``n_mri_w{week}``, ``at_risk`` (VUs at risk of a new syndesmophyte), ``new`` and
    ``new_rate`` (NaN for VUs without x-ray scores: the thoracic spine).
    """
    from syndesmo.spine import VU_LABELS, VU_REGION

    out = pd.DataFrame({"vu": list(VU_LABELS), "region": [VU_REGION[v] for v in VU_LABELS]})
    for week in panel.mri_weeks:
        scores = _vu_scores(panel, week)
        flag = (scores["x"] >= threshold).astype(float).where(scores["x"].notna())
        g = flag.groupby(scores["vu"])
        out[f"inflamed_w{week}"] = out["vu"].map(g.mean())
        out[f"n_mri_w{week}"] = out["vu"].map(g.count()).fillna(0).astype(int)
    outcomes = vu_outcomes(panel, "new_syndesmophyte", readers)
    risk = outcomes[outcomes["at_risk"]]
    at_risk = risk.groupby("vu")["event"].size()
    new = risk.groupby("vu")["event"].sum()
    out["at_risk"] = out["vu"].map(at_risk).fillna(0).astype(int)
    out["new"] = out["vu"].map(new).fillna(0).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = out["new"] / out["at_risk"].where(out["at_risk"] > 0)
    out["new_rate"] = rate
    return out


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
    """``outcome ~ mri + covariates [+ C(reader)] + (1|patient)``; no bar for ``logit``."""
    terms = ["mri", *covariates, *(["C(reader)"] if per_reader else [])]
    rhs = " + ".join(terms)
    return f"{outcome} ~ {rhs}" + ("" if engine == CRUDE_ENGINE else " + (1|patient)")


def fit_spec(panel, spec) -> list[SpecFit]:
    """Fit a ``ModelSpec`` as written, one model per exposure.

    Unlike ``ladder`` this is strict: an exposure without variation, an outcome
    without events or a failed fit raises ``ModelError`` naming the exposure.
    """
    out = []
    for exposure in spec.exposures:
        title = f"{OUTCOME_LABELS.get(spec.outcome, spec.outcome)} by {exposure} " + (
            f"({EXPOSURE_LABELS.get(exposure, exposure)})"
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
            )
            problem = check_frame(frame, spec.outcome, exposure)
            if problem:
                raise ModelError(f"{spec.name}: {problem}")
            # As in the ladder: a covariate with one value among the eligible VUs (e.g.
            # baseline_corner among VUs at risk of growth) carries no information.
            constant = constant_columns(frame, list(spec.covariates))
            covariates = [c for c in spec.covariates if c not in constant]
            formula = vu_formula(spec.outcome, covariates, spec.engine, "reader" in frame.columns)
            fitted = _safe_fit(formula, frame, spec.engine, spec.nagq)
            if isinstance(fitted, str):
                raise ModelError(f"{spec.name}, exposure {exposure!r}: {fitted}")
            if constant:
                fitted.warnings.append(
                    f"left out, constant in the analysis frame: {', '.join(constant)}"
                )
            ledger = fitted.ledger  # starts from the frame's ledger (build_design)
            term = "mri"
        else:
            pl = patient_level(
                panel,
                exposure,
                spec.outcome,
                summary=spec.summary,
                adjust=spec.covariates,
                engine=spec.engine,
                threshold=spec.threshold,
                readers=spec.readers,
            )
            if pl.fit is None:
                raise ModelError(f"{spec.name}, exposure {exposure!r}: {pl.note}")
            fitted, ledger, term = pl.fit, pl.ledger, "exposure"
            if not len(fitted.ledger):
                fitted.ledger = ledger
        table = fitted.odds_ratios().rename_axis("term").reset_index()
        measure = "RR" if fitted.engine in ("poisson", "negbin") else "OR"
        table = table.rename(columns={"OR": measure})
        shown = table.assign(
            **{
                measure: table[measure].map(lambda v: f"{v:.3f}"),
                "lower": table["lower"].map(lambda v: f"{v:.3f}"),
                "upper": table["upper"].map(lambda v: f"{v:.3f}"),
                "p": table["p"].map(lambda v: "<0.001" if v < 0.001 else f"{v:.3f}"),
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
