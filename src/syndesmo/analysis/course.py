"""The course of spinal MRI inflammation and erosions over the MRI weeks of a panel.

What Baraliakos et al. report for patients under TNF blockade over two years
(J Rheumatol 2013;40:1891–6, seed ``001_…``), for any panel and any MRI weeks:

* the prevalence of **inflammation** (ASspiMRI-a ≥ ``threshold``) and of **active
  erosions** (ASspiMRI-a 4–6: "erosions surrounded by inflammation (active erosions,
  range 4–6)", Methods; Table 1 footnote) at each MRI week and in each arm, per VU and
  per patient (a patient is positive when any scored VU is);
* the change from baseline at the patient level with the paired tests of the paper
  ("The McNemar test was used to compare paired proportions over time"; the Wilcoxon
  test for paired scores): McNemar for the proportions of patients, Wilcoxon
  signed-rank for the ASspiMRI-a totals;
* the multilevel model of the course, ``inflamed ~ C(week) * arm + (1|patient/vu)``
  (visits within VUs within patients), by the native engine (Laplace and multilevel
  adaptive Gauss–Hermite quadrature) with lme4's Laplace fit beside it, and the odds
  ratios of each week against baseline within each arm and of each arm against the
  reference arm at each week.

Inactive erosions (erosions without inflammation) score 0 on the ASspiMRI-a, so the
seed's "erosions (any)" cannot be derived from the score; only active erosions are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from syndesmo.checks import check_nagq
from syndesmo.derive.frame import check_threshold
from syndesmo.errors import DeriveError, EngineUnavailableError, ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.api import fit as fit_model
from syndesmo.ledger import Ledger
from syndesmo.panel.tables import mri_column
from syndesmo.vocabulary import ARM, reference_first

#: The model of the course (lme4 syntax): visits within VUs within patients.
COURSE_FORMULA = "inflamed ~ C(week) * arm + (1|patient/vu)"
#: ASspiMRI-a scores 4–6 are inflammation with erosion ("active erosions",
#: Baraliakos et al., J Rheumatol 2013;40:1891–6, Methods).
EROSION_SCORE = 4.0
#: The label of the rows that pool every arm.
ALL_ARMS = "all"
#: The measures of the prevalence tables, in order.
MEASURES = ("inflammation", "active erosion")
#: Reader rules the course takes (see ``mri_course``).
COURSE_READERS = ("mean", "agree")
#: Fewer discordant pairs than this: McNemar's exact (binomial) test.
MCNEMAR_EXACT_BELOW = 25

VU_PREVALENCE_COLUMNS = (
    "measure",
    "arm",
    "week",
    "n_patients",
    "n_vus",
    "n_positive",
    "prevalence",
    "ci_low",
    "ci_high",
    "ci_method",
    "relative_change",
)
PATIENT_PREVALENCE_COLUMNS = (
    "measure",
    "arm",
    "week",
    "n_patients",
    "n_positive",
    "prevalence",
    "ci_low",
    "ci_high",
)
MCNEMAR_COLUMNS = (
    "measure",
    "arm",
    "baseline_week",
    "week",
    "n_patients",
    "positive_baseline",
    "positive_week",
    "pos_to_neg",
    "neg_to_pos",
    "statistic",
    "p",
    "test",
)
WILCOXON_COLUMNS = (
    "arm",
    "baseline_week",
    "week",
    "n_patients",
    "mean_baseline",
    "mean_week",
    "mean_change",
    "median_baseline",
    "median_week",
    "statistic",
    "p",
    "test",
)
MODEL_COLUMNS = (
    "fit",
    "engine",
    "nagq",
    "term",
    "estimate",
    "std_error",
    "odds_ratio",
    "ci_low",
    "ci_high",
    "p",
)
FIT_COLUMNS = (
    "fit",
    "engine",
    "nagq",
    "converged",
    "loglik",
    "sd_patient",
    "sd_vu_in_patient",
    "n_obs",
    "n_patients",
    "n_vus",
    "seconds",
    "note",
)
OR_COLUMNS = (
    "fit",
    "contrast",
    "arm",
    "week",
    "versus",
    "log_or",
    "std_error",
    "odds_ratio",
    "ci_low",
    "ci_high",
    "p",
)


@dataclass
class CourseResult:
    """The MRI course of a panel: prevalences, paired tests and the multilevel model.

    Attributes
    ----------
    vu_prevalence : pandas.DataFrame
        Per measure, arm (and ``"all"``) and MRI week: VUs scored, VUs positive, the
        prevalence with a cluster-robust CI and the relative change from baseline.
    patient_prevalence : pandas.DataFrame
        The same per patient (positive: any scored VU positive), Wilson CIs.
    mcnemar : pandas.DataFrame
        Paired proportions of patients, each week against baseline (McNemar).
    wilcoxon : pandas.DataFrame
        Paired ASspiMRI-a totals, each week against baseline (Wilcoxon signed-rank).
    model : pandas.DataFrame
        The fixed effects of every fit of ``COURSE_FORMULA`` (tidy, one row per term).
    fits_table : pandas.DataFrame
        One row per fit: engine, points, log-likelihood, random-effect SDs, counts.
    odds_ratios : pandas.DataFrame
        Per fit: OR of each week against baseline within each arm, and of each arm
        against the reference arm at each week (Wald CIs from the fit's covariance).
    frame : pandas.DataFrame
        The long VU × week frame the model was fitted to.
    fits : dict
        The ``FitResult`` of each fit, by the label of ``fits_table``.
    ledger : Ledger
        VU × week rows and patients left out, and why.
    """

    vu_prevalence: pd.DataFrame
    patient_prevalence: pd.DataFrame
    mcnemar: pd.DataFrame
    wilcoxon: pd.DataFrame
    model: pd.DataFrame
    fits_table: pd.DataFrame
    odds_ratios: pd.DataFrame
    frame: pd.DataFrame
    fits: dict[str, Any]
    ledger: Ledger
    threshold: float
    readers: str
    weeks: list[int]
    arms: list
    level: float
    notes: list[str] = field(default_factory=list)

    #: Titles of the tables of :meth:`tables`, by name.
    TITLES: ClassVar[dict[str, str]] = {
        "vu_prevalence": "Prevalence of inflammation and active erosions per VU, by week and arm",
        "patient_prevalence": "Patients with inflammation and active erosions, by week and arm",
        "mcnemar": "Change from baseline in the proportion of patients (McNemar)",
        "wilcoxon": "Change from baseline in the ASspiMRI-a total (Wilcoxon signed-rank)",
        "model_fits": "The multilevel model of the course, each fit",
        "model": "The multilevel model of the course: fixed effects",
        "odds_ratios": "Odds ratios of inflammation per week and arm",
        "ledger": "VU × week rows left out of the course, and why",
    }

    def tables(self) -> dict[str, pd.DataFrame]:
        """The result tables by name (the keys of ``TITLES``)."""
        return {
            "vu_prevalence": self.vu_prevalence,
            "patient_prevalence": self.patient_prevalence,
            "mcnemar": self.mcnemar,
            "wilcoxon": self.wilcoxon,
            "model_fits": self.fits_table,
            "model": self.model,
            "odds_ratios": self.odds_ratios,
            "ledger": self.ledger.to_frame(),
        }

    def reduction(self, measure: str = "inflammation", arm: object = None) -> float:
        """Relative fall of the VU prevalence from baseline to the last week (0.645 = 64.5%)."""
        arm = self.arms[-1] if arm is None else arm
        sub = self.vu_prevalence[
            self.vu_prevalence["measure"].eq(measure) & self.vu_prevalence["arm"].eq(arm)
        ]
        return float(-sub.sort_values("week")["relative_change"].iloc[-1])

    def __repr__(self) -> str:
        return (
            f"<CourseResult weeks {self.weeks}, arms {self.arms}: "
            f"{len(self.fits)} fits; {self.ledger.n_excluded} rows left out>"
        )


# --------------------------------------------------------------------------- the long frame


def _check_readers(readers: object) -> str:
    if readers not in COURSE_READERS:
        raise DeriveError(
            f"readers={readers!r} is not a rule of the MRI course; choose one of "
            f"{', '.join(COURSE_READERS)}"
        )
    return str(readers)


def course_frame(panel: Any, threshold: float = 1, readers: str = "mean") -> tuple:
    """The long VU × week frame of a panel's MRI scores, and its ledger.

    Parameters
    ----------
    panel : VUPanel
        The panel; MRI scores in its ``mri_w{week}`` columns.
    threshold : float
        ASspiMRI-a score that counts as inflamed (score ≥ threshold), in (0, 6].
    readers : {"mean", "agree"}
        With a ``reader`` column: ``"mean"`` takes each VU's mean score over its
        readers (missing if a reader of the VU has none) and applies the threshold
        to it; ``"agree"`` counts a VU inflamed (eroded) only when every reader
        scores it so, the score being the readers' mean.

    Returns
    -------
    tuple of (pandas.DataFrame, Ledger)
        Columns ``patient, vu, arm, week, score, inflamed, erosion`` (0/1 floats),
        one row per VU and MRI week with a score; ``arm`` a Categorical, the
        reference arm first. The ledger counts rows without a score by week, and
        patients without an arm.
    """
    threshold = check_threshold(threshold)
    readers = _check_readers(readers)
    ledger = Ledger()
    weeks = list(panel.mri_weeks)
    if not weeks:
        raise DeriveError("the VU table has no MRI score columns (mri_w{week})")
    cols = [mri_column(w) for w in weeks]
    vu = panel.vu[["patient", "vu", *cols] + (["reader"] if "reader" in panel.vu else [])]
    if "reader" in vu.columns and vu["reader"].nunique() > 1:
        scores = vu[cols]
        key = [vu["patient"], vu["vu"]]
        mean = scores.groupby(key, sort=False).mean()
        gaps = scores.isna().groupby(key, sort=False).any()
        mean = mean.mask(gaps)  # a reader without a score: the VU has none at that week
        infl = (scores >= threshold).groupby(key, sort=False).all().mask(gaps)
        eros = (scores >= EROSION_SCORE).groupby(key, sort=False).all().mask(gaps)
        wide = mean.reset_index()
    else:
        wide = vu[["patient", "vu", *cols]].reset_index(drop=True)
        infl = eros = None
    long = wide.melt(
        id_vars=["patient", "vu"], value_vars=cols, var_name="week", value_name="score"
    )
    long["week"] = long["week"].map(dict(zip(cols, weeks, strict=True))).astype(int)
    if readers == "agree" and infl is not None:
        status = {}
        for name, table in (("inflamed", infl), ("erosion", eros)):
            t = table.copy()
            t.columns = weeks
            s = t.stack(future_stack=True).astype(float)
            s.index = s.index.set_names(["patient", "vu", "week"])
            status[name] = s
        idx = pd.MultiIndex.from_frame(long[["patient", "vu", "week"]])
        long["inflamed"] = status["inflamed"].reindex(idx).to_numpy()
        long["erosion"] = status["erosion"].reindex(idx).to_numpy()
    else:
        long["inflamed"] = (long["score"] >= threshold).astype(float)
        long["erosion"] = (long["score"] >= EROSION_SCORE).astype(float)
    missing = long["score"].isna().to_numpy()
    for w in weeks:
        sel = missing & long["week"].eq(w).to_numpy()
        ledger.add(
            f"course: MRI week {w}",
            "no ASspiMRI-a score at this week (from every reader of the VU)",
            int(sel.sum()),
            int(long.loc[sel, "patient"].nunique()),
        )
    long = long[~missing]
    arms = panel.patients.set_index("patient")[ARM]
    long.insert(2, ARM, long["patient"].map(arms))
    no_arm = long[ARM].isna().to_numpy()
    ledger.add(
        "course: patients",
        "no treatment arm",
        int(no_arm.sum()),
        int(long.loc[no_arm, "patient"].nunique()),
    )
    long = long[~no_arm]
    levels = reference_first(long[ARM])
    long[ARM] = pd.Categorical(long[ARM], categories=levels)
    long = long.sort_values(["patient", "vu", "week"], kind="stable").reset_index(drop=True)
    return long, ledger


# --------------------------------------------------------------------------- prevalences


def _groups(long: pd.DataFrame, arms: list):
    """(arm label, rows) for each arm and, with more than one arm, all arms pooled."""
    for arm in arms:
        yield arm, long[long[ARM].eq(arm).to_numpy()]
    if len(arms) > 1:
        yield ALL_ARMS, long


def cluster_robust_ci(y: np.ndarray, groups: np.ndarray, level: float = 0.95) -> tuple:
    """CI of a proportion of clustered 0/1 rows (VUs in patients).

    The proportion is the intercept of a logistic GEE with an independence working
    correlation (statsmodels ``GEE``), whose estimate is the plain proportion and
    whose robust (sandwich) SE treats patients as the independent units; the
    interval is the Wald interval on the logit scale, back-transformed. When every
    row is 0 (or 1) the sandwich is degenerate: the Clopper–Pearson interval of 0
    (or all) of the patients is given instead, which counts each patient as one
    unit (conservative).

    Returns
    -------
    tuple of (float, float, str)
        Lower and upper limit and the method in words.
    """
    import statsmodels.api as sm
    from statsmodels.stats.proportion import proportion_confint

    y = np.asarray(y, dtype=float)
    k, n = float(y.sum()), len(y)
    n_groups = len(pd.unique(groups))
    alpha = 1 - level
    if k == 0 or k == n:
        lo, hi = proportion_confint(0 if k == 0 else n_groups, n_groups, alpha=alpha, method="beta")
        return float(lo), float(hi), "Clopper–Pearson over patients (no variation)"
    model = sm.GEE(
        y,
        np.ones((n, 1)),
        groups=groups,
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Independence(),
    )
    res = model.fit()
    z = stats.norm.ppf(1 - alpha / 2)
    b, se = float(res.params[0]), float(res.bse[0])
    lo, hi = b - z * se, b + z * se
    return float(_expit(lo)), float(_expit(hi)), "GEE logit, cluster-robust (patients)"


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _status_column(measure: str) -> str:
    return "inflamed" if measure == "inflammation" else "erosion"


def vu_prevalence(long: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """VU-level prevalence per measure, arm and week, with cluster-robust CIs.

    See :func:`cluster_robust_ci`; ``relative_change`` is (week − baseline) / baseline
    of the prevalence (−0.645 is a fall by 64.5%, as the seed reports).
    """
    arms = list(long[ARM].cat.categories)
    weeks = sorted(long["week"].unique())
    rows = []
    for measure in MEASURES:
        col = _status_column(measure)
        for arm, sub in _groups(long, arms):
            base = None
            for w in weeks:
                cell = sub[sub["week"].eq(w).to_numpy()]
                y = cell[col].to_numpy()
                n = len(y)
                if n == 0:
                    continue
                k = int(y.sum())
                prev = k / n
                lo, hi, how = cluster_robust_ci(y, cell["patient"].to_numpy(), level)
                base = prev if base is None else base
                rows.append(
                    {
                        "measure": measure,
                        "arm": arm,
                        "week": int(w),
                        "n_patients": int(cell["patient"].nunique()),
                        "n_vus": n,
                        "n_positive": k,
                        "prevalence": prev,
                        "ci_low": lo,
                        "ci_high": hi,
                        "ci_method": how,
                        "relative_change": (prev - base) / base if base > 0 else math.nan,
                    }
                )
    return pd.DataFrame(rows, columns=list(VU_PREVALENCE_COLUMNS))


def patient_status(long: pd.DataFrame) -> pd.DataFrame:
    """Per patient and week: arm, VUs scored, any VU inflamed / eroded, ASspiMRI-a total."""
    g = long.groupby(["patient", "week"], sort=True, observed=True)
    out = g.agg(
        arm=(ARM, "first"),
        n_vus=("score", "size"),
        inflammation=("inflamed", "max"),
        erosion=("erosion", "max"),
        total=("score", "sum"),
    ).reset_index()
    return out.rename(columns={"erosion": "active erosion"})


def patient_prevalence(long: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Patients with any VU inflamed (eroded) among their scored VUs, per arm and week.

    Patients are independent, so the CI is Wilson's score interval (statsmodels
    ``proportion_confint(method="wilson")``).
    """
    from statsmodels.stats.proportion import proportion_confint

    arms = list(long[ARM].cat.categories)
    status = patient_status(long)
    rows = []
    for measure in MEASURES:
        for arm, sub in _groups(status, arms):
            for w, cell in sub.groupby("week", sort=True):
                n, k = len(cell), int(cell[measure].sum())
                lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
                rows.append(
                    {
                        "measure": measure,
                        "arm": arm,
                        "week": int(w),
                        "n_patients": n,
                        "n_positive": k,
                        "prevalence": k / n,
                        "ci_low": float(lo),
                        "ci_high": float(hi),
                    }
                )
    return pd.DataFrame(rows, columns=list(PATIENT_PREVALENCE_COLUMNS))


# --------------------------------------------------------------------------- paired tests


def paired_status(long: pd.DataFrame, week: int, baseline: int) -> pd.DataFrame:
    """Per patient, status and total at ``baseline`` and ``week`` over the VUs scored at both.

    Columns ``patient, arm``, then ``<measure>_0`` / ``<measure>_1`` for each measure
    and ``total_0`` / ``total_1`` (ASspiMRI-a sums over the same VUs); patients with
    no VU scored at both weeks are not in it.
    """
    a = long[long["week"].eq(baseline).to_numpy()]
    b = long[long["week"].eq(week).to_numpy()].drop(columns=[ARM])
    both = a.merge(b, on=["patient", "vu"], how="inner", suffixes=("_0", "_1"))
    both = both.rename(columns={ARM: f"{ARM}_0"})
    g = both.groupby("patient", sort=True, observed=True)
    return pd.DataFrame(
        {
            "arm": g[f"{ARM}_0"].first(),
            "inflammation_0": g["inflamed_0"].max(),
            "inflammation_1": g["inflamed_1"].max(),
            "active erosion_0": g["erosion_0"].max(),
            "active erosion_1": g["erosion_1"].max(),
            "total_0": g["score_0"].sum(),
            "total_1": g["score_1"].sum(),
        }
    ).reset_index()


def mcnemar_test(before: np.ndarray, after: np.ndarray) -> dict:
    """McNemar's test of paired 0/1 statuses (statsmodels ``mcnemar``).

    Exact (binomial) when fewer than ``MCNEMAR_EXACT_BELOW`` pairs are discordant,
    else the χ² statistic with continuity correction.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    before = np.asarray(before).astype(bool)
    after = np.asarray(after).astype(bool)
    table = np.array(
        [
            [np.sum(before & after), np.sum(before & ~after)],
            [np.sum(~before & after), np.sum(~before & ~after)],
        ]
    )
    discordant = int(table[0, 1] + table[1, 0])
    exact = discordant < MCNEMAR_EXACT_BELOW
    res = mcnemar(table, exact=exact, correction=True)
    return {
        "pos_to_neg": int(table[0, 1]),
        "neg_to_pos": int(table[1, 0]),
        "statistic": float(res.statistic),
        "p": float(res.pvalue),
        "test": "McNemar exact (binomial)" if exact else "McNemar χ², continuity-corrected",
    }


def wilcoxon_test(before: np.ndarray, after: np.ndarray) -> dict:
    """Wilcoxon signed-rank test of paired totals (``scipy.stats.wilcoxon``, its defaults:
    zero differences dropped, exact distribution for small samples without ties)."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if not np.any(d != 0):
        return {"statistic": math.nan, "p": 1.0, "test": "Wilcoxon signed-rank (no change)"}
    res = stats.wilcoxon(after, before)
    return {
        "statistic": float(res.statistic),
        "p": float(res.pvalue),
        "test": "Wilcoxon signed-rank",
    }


def paired_tests(long: pd.DataFrame, ledger: Ledger | None = None) -> tuple:
    """McNemar and Wilcoxon tables: each later week against the first, per arm and pooled.

    Returns
    -------
    tuple of (pandas.DataFrame, pandas.DataFrame)
        ``MCNEMAR_COLUMNS`` and ``WILCOXON_COLUMNS`` tables.
    """
    arms = list(long[ARM].cat.categories)
    weeks = sorted(long["week"].unique())
    base = int(weeks[0])
    mc_rows, wx_rows = [], []
    patients = long["patient"].nunique()
    for w in weeks[1:]:
        pairs = paired_status(long, int(w), base)
        if ledger is not None:
            n_out = patients - len(pairs)
            ledger.add(
                f"course: paired tests, week {w} vs {base}",
                "no VU scored at both weeks",
                n_out,
                n_out,
            )
        for arm, sub in _groups(pairs, arms):
            if sub.empty:
                continue
            for measure in MEASURES:
                before, after = sub[f"{measure}_0"], sub[f"{measure}_1"]
                mc_rows.append(
                    {
                        "measure": measure,
                        "arm": arm,
                        "baseline_week": base,
                        "week": int(w),
                        "n_patients": len(sub),
                        "positive_baseline": int(before.sum()),
                        "positive_week": int(after.sum()),
                        **mcnemar_test(before.to_numpy(), after.to_numpy()),
                    }
                )
            t0, t1 = sub["total_0"].to_numpy(), sub["total_1"].to_numpy()
            wx_rows.append(
                {
                    "arm": arm,
                    "baseline_week": base,
                    "week": int(w),
                    "n_patients": len(sub),
                    "mean_baseline": float(t0.mean()),
                    "mean_week": float(t1.mean()),
                    "mean_change": float((t1 - t0).mean()),
                    "median_baseline": float(np.median(t0)),
                    "median_week": float(np.median(t1)),
                    **wilcoxon_test(t0, t1),
                }
            )
    return (
        pd.DataFrame(mc_rows, columns=list(MCNEMAR_COLUMNS)),
        pd.DataFrame(wx_rows, columns=list(WILCOXON_COLUMNS)),
    )


# --------------------------------------------------------------------------- the model


def course_formula(n_arms: int) -> str:
    """``COURSE_FORMULA``, without the arm terms for a panel of one arm."""
    return COURSE_FORMULA if n_arms > 1 else "inflamed ~ C(week) + (1|patient/vu)"


def _fit_plan(nagq: int, lme4: bool | None) -> list[tuple[str, str, int, dict]]:
    native, reference = registry.DEFAULT_ENGINE, registry.REFERENCE_ENGINE
    plan = [(f"{native} Laplace", native, 1, {})]
    if nagq > 1:
        plan.append((f"{native} AGQ {nagq}", native, nagq, {}))
    if lme4 is not False:
        plan.append((f"{reference} Laplace", reference, 1, {"tol_pwrss": 1e-12}))
    return plan


def _sd(fit: Any, grp: str) -> float:
    vc = fit.varcorr
    sel = vc[vc["grp"].eq(grp) & vc["var2"].isna()]
    return float(sel["sdcor"].iloc[0]) if len(sel) else math.nan


def fit_course(
    long: pd.DataFrame,
    nagq: int = 7,
    lme4: bool | None = None,
    level: float = 0.95,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Fit ``COURSE_FORMULA`` by the native engine (Laplace and ``nagq``-point AGQ) and lme4.

    ``lme4=None`` fits lme4 when R and lme4 are usable and notes it otherwise;
    ``True`` makes a missing lme4 an error; ``False`` leaves it out. lme4 runs at
    ``glmerControl(tolPwrss = 1e-12)`` (its default PIRLS tolerance can stop short).

    Returns
    -------
    tuple
        (fits by label, fits table, tidy fixed effects, odds ratios, notes).
    """
    arms = list(long[ARM].cat.categories)
    formula = course_formula(len(arms))
    data = long[["patient", "vu", ARM, "week", "inflamed"]]
    fits: dict[str, Any] = {}
    fit_rows, model_rows, or_rows, notes = [], [], [], []
    z = stats.norm.ppf(1 - (1 - level) / 2)
    for label, engine, k, options in _fit_plan(nagq, lme4):
        start = time.perf_counter()
        try:
            res = fit_model(formula, data, engine=engine, nagq=k, **options)
        except (EngineUnavailableError, ImportError, ModelError) as exc:
            if engine == registry.REFERENCE_ENGINE and lme4 is None:
                notes.append(f"lme4 not fitted: {' '.join(str(exc).split())}")
                continue
            raise
        seconds = time.perf_counter() - start
        fits[label] = res
        fit_rows.append(
            {
                "fit": label,
                "engine": engine,
                "nagq": k,
                "converged": bool(res.converged),
                "loglik": float(res.loglik),
                "sd_patient": _sd(res, "patient"),
                "sd_vu_in_patient": _sd(res, "vu:patient"),
                "n_obs": int(res.nobs),
                "n_patients": int(long["patient"].nunique()),
                "n_vus": int(long[["patient", "vu"]].drop_duplicates().shape[0]),
                "seconds": seconds,
                "note": "" if res.converged else str(res.convergence.message),
            }
        )
        if not res.converged:  # never a number from a fit that did not converge
            message = " ".join(str(res.convergence.message).split())
            notes.append(f"{label} did not converge ({message}): its estimates are left out.")
            continue
        ci = res.conf_int(level)
        for term in res.params.index:
            model_rows.append(
                {
                    "fit": label,
                    "engine": engine,
                    "nagq": k,
                    "term": term,
                    "estimate": float(res.params[term]),
                    "std_error": float(res.bse[term]),
                    "odds_ratio": math.exp(res.params[term]),
                    "ci_low": math.exp(ci.loc[term].iloc[0]),
                    "ci_high": math.exp(ci.loc[term].iloc[1]),
                    "p": float(res.pvalues[term]),
                }
            )
        or_rows += _contrasts(res, label, sorted(long["week"].unique()), arms, z)
    return (
        fits,
        pd.DataFrame(fit_rows, columns=list(FIT_COLUMNS)),
        pd.DataFrame(model_rows, columns=list(MODEL_COLUMNS)),
        pd.DataFrame(or_rows, columns=list(OR_COLUMNS)),
        notes,
    )


def _term(names: pd.Index, name: str) -> int:
    where = np.flatnonzero(names == name)
    if len(where) != 1:
        raise ModelError(f"the course model has no term {name!r}; terms: {', '.join(names)}")
    return int(where[0])


def _contrasts(res: Any, label: str, weeks: Sequence, arms: list, z: float) -> list[dict]:
    """Log-ORs of each week vs baseline within each arm and each arm vs reference per week."""
    names = res.params.index
    beta = res.params.to_numpy()
    cov = res.cov_params().loc[names, names].to_numpy()
    base, ref = int(weeks[0]), arms[0]

    def week_t(w):
        return f"C(week)[T.{w}]"

    def arm_t(a):
        return f"{ARM}[T.{a}]"

    rows = []

    def add(contrast: str, arm, week, versus: str, terms: list[str]) -> None:
        c = np.zeros(len(names))
        for t in terms:
            c[_term(names, t)] = 1.0
        est = float(c @ beta)
        se = float(math.sqrt(c @ cov @ c))
        rows.append(
            {
                "fit": label,
                "contrast": contrast,
                "arm": arm,
                "week": int(week),
                "versus": versus,
                "log_or": est,
                "std_error": se,
                "odds_ratio": math.exp(est),
                "ci_low": math.exp(est - z * se),
                "ci_high": math.exp(est + z * se),
                "p": float(2 * stats.norm.sf(abs(est) / se)),
            }
        )

    for arm in arms:
        for w in weeks[1:]:
            terms = [week_t(w)]
            if arm != ref:
                terms.append(f"{week_t(w)}:{arm_t(arm)}")
            add("week vs baseline", arm, w, f"week {base}", terms)
    for arm in arms[1:]:
        for w in weeks:
            terms = [arm_t(arm)] + ([f"{week_t(w)}:{arm_t(arm)}"] if w != base else [])
            add("arm vs reference", arm, w, str(ref), terms)
    return rows


# --------------------------------------------------------------------------- the workflow


def _check_level(level: Any) -> float:
    if not isinstance(level, float | int) or isinstance(level, bool) or not 0 < level < 1:
        raise DeriveError(f"level must be a number between 0 and 1, got {level!r}")
    return float(level)


def mri_course(
    panel: Any,
    threshold: float = 1,
    readers: str = "mean",
    *,
    nagq: int = 7,
    lme4: bool | None = None,
    model: bool = True,
    level: float = 0.95,
) -> CourseResult:
    """The course of MRI inflammation and active erosions over a panel's MRI weeks.

    As Baraliakos et al. (J Rheumatol 2013;40:1891–6) report it for two years of TNF
    blockade (33.7% → 12.0% of all 23 VUs inflamed, 100% → 64% of patients), for any MRI
    weeks and by arm.

    **Status.** A VU is *inflamed* at a week when its ASspiMRI-a is ≥ ``threshold``
    and shows an *active erosion* when it is 4–6 (the ASspiMRI-a's "inflammation
    with erosion", the seed's "active erosions: erosions surrounded by
    inflammation"). A patient is positive when any of their scored VUs is.

    **Prevalence CIs.** VUs of a patient are correlated, so the VU-level CI is a
    cluster-robust one: the intercept of a logistic GEE with independence working
    correlation and patients as clusters (statsmodels ``GEE``; its estimate is the
    plain proportion, its sandwich SE counts patients as the independent units),
    Wald on the logit scale; for a cell with no (or only) positive VUs, the
    Clopper–Pearson interval over patients. Patient-level CIs are Wilson's.

    **Paired tests** (each later week against the first, per arm and pooled), over
    the patients and VUs scored at both weeks: McNemar (statsmodels ``mcnemar``,
    exact binomial when fewer than 25 pairs are discordant, else χ² with continuity
    correction) for the proportion of patients inflamed / with active erosions, and
    the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of the ASspiMRI-a totals.

    **Model.** ``inflamed ~ C(week) * arm + (1|patient/vu)``, visits within VUs
    within patients, by the native engine (Laplace, and multilevel adaptive
    Gauss–Hermite quadrature with ``nagq`` points: the exact likelihood as the
    points grow) and lme4's Laplace (``tolPwrss = 1e-12``) beside it; odds ratios of
    each week against baseline within each arm, and of each arm against the
    reference arm (placebo/control if present) at each week, Wald CIs.

    Parameters
    ----------
    panel : VUPanel
        The panel (``mri_w{week}`` columns; the ``arm`` of each patient).
    threshold : float
        ASspiMRI-a score that counts as inflamed (score ≥ threshold), in (0, 6].
    readers : {"mean", "agree"}
        How two or more readers are combined (see :func:`course_frame`).
    nagq : int
        Quadrature points of the native AGQ fit (1: Laplace only).
    lme4 : bool or None
        Fit lme4 beside: ``None`` when R and lme4 are usable, ``True`` always (an
        error without R), ``False`` never.
    model : bool
        Fit the multilevel model at all (``False``: prevalences and tests only).
    level : float
        Confidence level of every interval.

    Returns
    -------
    CourseResult
        Tables ``vu_prevalence``, ``patient_prevalence``, ``mcnemar``, ``wilcoxon``,
        ``model``, ``fits_table``, ``odds_ratios``; the long ``frame``, the ``fits``
        and the ``ledger``.

    Raises
    ------
    DeriveError
        A bad threshold, readers rule or level; a panel without MRI scores.
    ModelError
        A model that cannot be fitted (e.g. one MRI week only).
    """
    threshold = check_threshold(threshold)
    level = _check_level(level)
    nagq = check_nagq(
        nagq, registry.get_engine(registry.DEFAULT_ENGINE).nagq_max or 1, error=DeriveError
    )
    long, ledger = course_frame(panel, threshold=threshold, readers=readers)
    if long.empty:
        raise DeriveError("the panel has no ASspiMRI-a score at any MRI week")
    mcn, wil = paired_tests(long, ledger)
    fits: dict[str, Any] = {}
    empty = (
        pd.DataFrame(columns=list(FIT_COLUMNS)),
        pd.DataFrame(columns=list(MODEL_COLUMNS)),
        pd.DataFrame(columns=list(OR_COLUMNS)),
    )
    fits_table, model_table, ors = empty
    notes: list[str] = []
    weeks = sorted(int(w) for w in long["week"].unique())
    if model:
        if len(weeks) < 2:
            raise ModelError(f"the course model needs two or more MRI weeks, the panel has {weeks}")
        fits, fits_table, model_table, ors, notes = fit_course(long, nagq, lme4, level)
    notes = [
        f"Inflamed: ASspiMRI-a ≥ {threshold:g}; active erosion: ASspiMRI-a 4–6 (Baraliakos et "
        "al., J Rheumatol 2013;40:1891–6). Inactive erosions score 0 and are not counted.",
        "VU-level CIs: logistic GEE, independence working correlation, sandwich SE with "
        "patients as clusters; patient-level CIs: Wilson.",
        "McNemar exact (binomial) below 25 discordant pairs, else χ² with continuity "
        "correction; Wilcoxon signed-rank of the ASspiMRI-a totals over the VUs scored at "
        "both weeks.",
        *notes,
    ]
    return CourseResult(
        vu_prevalence=vu_prevalence(long, level),
        patient_prevalence=patient_prevalence(long, level),
        mcnemar=mcn,
        wilcoxon=wil,
        model=model_table,
        fits_table=fits_table,
        odds_ratios=ors,
        frame=long,
        fits=fits,
        ledger=ledger,
        threshold=threshold,
        readers=readers,
        weeks=weeks,
        arms=list(long[ARM].cat.categories),
        level=level,
        notes=notes,
    )


def reproduction_course(panel: Any, threshold: float = 1, readers: str = "mean") -> CourseResult:
    """The MRI course for ``syndesmo reproduce``'s report: the native fits only.

    ``readers`` rules the course does not take (``"per_reader"``) fall back to
    ``"mean"``; lme4 is left out to keep the reproduction fast (``syndesmo course``
    fits it beside). A panel with one MRI week gets no model.
    """
    rule = readers if readers in COURSE_READERS else "mean"
    return mri_course(
        panel,
        threshold=threshold,
        readers=rule,
        lme4=False,
        model=len(panel.mri_weeks) > 1,
    )
