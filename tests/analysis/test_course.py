"""The MRI course (``sy.mri_course``, ``syndesmo course``) against direct counts,
statsmodels/scipy called directly, closed forms and lme4 (stored and live)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

import syndesmo as sy
from syndesmo.analysis.course import (
    EROSION_SCORE,
    cluster_robust_ci,
    course_frame,
    mri_course,
)
from syndesmo.cli.app import main
from syndesmo.errors import DeriveError, ModelError
from syndesmo.output import report
from syndesmo.output.course_plots import course_figure
from syndesmo.panel.tables import VUPanel
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort, write_cohort

REFERENCE = Path(__file__).resolve().parents[1] / "references" / "course"
FORMULA = "inflamed ~ C(week) * arm + (1|patient/vu)"
WEEKS = (0, 24, 102)


@pytest.fixture(scope="module")
def panel() -> VUPanel:
    """40 patients, 12 VUs, MRI at weeks 0/24/102; whole visits and single VUs missing."""
    sim = simulate_cohort(CohortSpec(n_patients=40, mri_missing_rate=0.05), seed=11)
    vu = sim.vu.copy()
    rng = np.random.default_rng(1)
    for w in WEEKS:  # a few single VU scores missing at every week
        vu.loc[rng.choice(len(vu), 6, replace=False), f"mri_w{w}"] = np.nan
    return VUPanel(vu, sim.patients)


@pytest.fixture(scope="module")
def course(panel):
    return mri_course(panel, nagq=3, lme4=False)


def direct_long(panel: VUPanel) -> pd.DataFrame:
    """The VU × week rows with a score, straight from the VU table, with pandas."""
    vu = panel.vu.merge(panel.patients[["patient", "arm"]], on="patient")
    parts = []
    for w in panel.mri_weeks:
        part = vu[["patient", "vu", "arm", f"mri_w{w}"]].rename(columns={f"mri_w{w}": "score"})
        parts.append(part.assign(week=w))
    long = pd.concat(parts, ignore_index=True)
    return long[long["score"].notna()]


# --------------------------------------------------------------------------- prevalences


def test_vu_prevalence_is_a_direct_count(panel, course):
    long = direct_long(panel)
    vp = course.vu_prevalence
    for measure, positive in (
        ("inflammation", long["score"] >= 1),
        ("active erosion", long["score"] >= 4),
    ):
        counts = long.assign(pos=positive).groupby(["arm", "week"])["pos"].agg(["sum", "size"])
        pooled = long.assign(pos=positive).groupby("week")["pos"].agg(["sum", "size"])
        for arm in ("placebo", "infliximab", "all"):
            for w in WEEKS:
                row = vp[vp["measure"].eq(measure) & vp["arm"].eq(arm) & vp["week"].eq(w)]
                assert len(row) == 1
                k, n = (pooled.loc[w] if arm == "all" else counts.loc[(arm, w)]).to_numpy()
                assert int(row["n_positive"].iloc[0]) == k
                assert int(row["n_vus"].iloc[0]) == n
                assert row["prevalence"].iloc[0] == pytest.approx(k / n, abs=1e-15)
                assert row["ci_low"].iloc[0] <= k / n <= row["ci_high"].iloc[0]
    vp0 = vp[vp["measure"].eq("inflammation") & vp["arm"].eq("infliximab")]
    counts_at = vp0.set_index("week")["prevalence"]
    assert course.reduction("inflammation", "infliximab") == pytest.approx(
        1 - counts_at[102] / counts_at[0]
    )


def test_patient_prevalence_is_a_direct_count_with_wilson_intervals(panel, course):
    long = direct_long(panel)
    pp = course.patient_prevalence
    per = long.groupby(["patient", "arm", "week"])["score"].max().reset_index()
    for measure, cut in (("inflammation", 1.0), ("active erosion", 4.0)):
        for (arm, w), sub in per.groupby(["arm", "week"]):
            k, n = int((sub["score"] >= cut).sum()), len(sub)
            row = pp[pp["measure"].eq(measure) & pp["arm"].eq(arm) & pp["week"].eq(w)].iloc[0]
            assert (row["n_positive"], row["n_patients"]) == (k, n)
            lo, hi = proportion_confint(k, n, method="wilson")
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_vu_interval_is_the_cluster_sandwich_on_the_logit_scale(panel):
    """Closed form of the independence-GEE intercept: var(logit p̂) = Σ_i (s_i − n_i p̂)² /
    (N p̂ (1 − p̂))², s_i and n_i the positive and scored VUs of patient i."""
    long = direct_long(panel)
    cell = long[long["week"].eq(0)]
    y = (cell["score"] >= 1).to_numpy(float)
    groups = cell["patient"].to_numpy()
    lo, hi, how = cluster_robust_ci(y, groups)
    assert "cluster-robust" in how
    p = y.mean()
    g = pd.DataFrame({"y": y, "g": groups}).groupby("g")["y"].agg(["sum", "size"])
    var = float(((g["sum"] - g["size"] * p) ** 2).sum()) / (len(y) * p * (1 - p)) ** 2
    z = stats.norm.ppf(0.975)
    logit = np.log(p / (1 - p))
    expected = (
        1 / (1 + np.exp(-(logit - z * np.sqrt(var)))),
        1 / (1 + np.exp(-(logit + z * np.sqrt(var)))),
    )
    assert (lo, hi) == pytest.approx(expected, rel=1e-8)
    # wider than the binomial interval that treats the clustered VUs as independent
    naive = proportion_confint(y.sum(), len(y), method="normal")
    assert hi - lo > naive[1] - naive[0]


def test_a_cell_without_positive_vus_gets_the_patient_clopper_pearson_interval(panel):
    vu = panel.vu.copy()
    vu["mri_w102"] = vu["mri_w102"].where(vu["mri_w102"].isna(), 0.0)
    flat = VUPanel(vu, panel.patients)
    res = mri_course(flat, model=False)
    row = res.vu_prevalence.query("measure == 'inflammation' and arm == 'all' and week == 102")
    n_patients = int(row["n_patients"].iloc[0])
    assert row["prevalence"].iloc[0] == 0 and row["ci_low"].iloc[0] == 0
    assert row["ci_high"].iloc[0] == pytest.approx(
        proportion_confint(0, n_patients, method="beta")[1]
    )
    assert "Clopper" in row["ci_method"].iloc[0]


# --------------------------------------------------------------------------- paired tests


def paired(panel: VUPanel, week: int) -> pd.DataFrame:
    """Per patient, over the VUs scored at weeks 0 and ``week``: statuses and totals."""
    vu = panel.vu.merge(panel.patients[["patient", "arm"]], on="patient")
    both = vu[vu["mri_w0"].notna() & vu[f"mri_w{week}"].notna()]
    g = both.groupby("patient")
    return pd.DataFrame(
        {
            "arm": g["arm"].first(),
            "infl0": g["mri_w0"].max() >= 1,
            "infl1": g[f"mri_w{week}"].max() >= 1,
            "ero0": g["mri_w0"].max() >= EROSION_SCORE,
            "ero1": g[f"mri_w{week}"].max() >= EROSION_SCORE,
            "t0": g["mri_w0"].sum(),
            "t1": g[f"mri_w{week}"].sum(),
        }
    )


def test_mcnemar_and_wilcoxon_equal_the_libraries(panel, course):
    for week in (24, 102):
        pairs = paired(panel, week)
        for arm in ("placebo", "infliximab", "all"):
            sub = pairs if arm == "all" else pairs[pairs["arm"].eq(arm)]
            for measure, a, b in (
                ("inflammation", "infl0", "infl1"),
                ("active erosion", "ero0", "ero1"),
            ):
                x, y = sub[a].to_numpy(), sub[b].to_numpy()
                table = [[np.sum(x & y), np.sum(x & ~y)], [np.sum(~x & y), np.sum(~x & ~y)]]
                discordant = table[0][1] + table[1][0]
                exact = discordant < 25
                want = mcnemar(np.array(table), exact=exact, correction=True)
                mc = course.mcnemar
                row = mc[mc["measure"].eq(measure) & mc["arm"].eq(arm) & mc["week"].eq(week)]
                row = row.iloc[0]
                assert row["n_patients"] == len(sub)
                assert (row["pos_to_neg"], row["neg_to_pos"]) == (table[0][1], table[1][0])
                assert row["statistic"] == pytest.approx(want.statistic, rel=1e-12)
                assert row["p"] == pytest.approx(want.pvalue, rel=1e-12)
                assert ("exact" in row["test"]) == exact
            want = stats.wilcoxon(sub["t1"].to_numpy(), sub["t0"].to_numpy())
            row = course.wilcoxon.query("arm == @arm and week == @week").iloc[0]
            assert row["n_patients"] == len(sub)
            assert row["statistic"] == pytest.approx(want.statistic, rel=1e-12)
            assert row["p"] == pytest.approx(want.pvalue, rel=1e-12)
            assert row["mean_change"] == pytest.approx((sub["t1"] - sub["t0"]).mean())


def test_ledger_counts_every_missing_score(panel, course):
    led = course.ledger.to_frame()
    for w in WEEKS:
        missing = int(panel.vu[f"mri_w{w}"].isna().sum())
        assert missing > 0
        entry = led[led["step"].eq(f"course: MRI week {w}")]
        assert int(entry["n_rows"].sum()) == missing
    n_rows = len(panel.vu) * len(WEEKS)
    dropped = int(led[led["step"].str.startswith("course: MRI week")]["n_rows"].sum())
    assert len(course.frame) == n_rows - dropped


def test_two_readers_mean_and_agree():
    panel = simulate_cohort(CohortSpec(n_patients=12, n_readers=2), seed=5)
    mean_frame, _ = course_frame(panel, readers="mean")
    agree_frame, _ = course_frame(panel, readers="agree")
    scores = panel.vu.groupby(["patient", "vu"])[["mri_w0"]]
    direct_mean = scores.mean()["mri_w0"]
    hit = panel.vu.assign(hit=panel.vu["mri_w0"] >= 1)
    direct_all = hit.groupby(["patient", "vu"])["hit"].all()
    base_mean = mean_frame[mean_frame["week"].eq(0)].set_index(["patient", "vu"])
    base_agree = agree_frame[agree_frame["week"].eq(0)].set_index(["patient", "vu"])
    np.testing.assert_allclose(base_mean["score"], direct_mean.reindex(base_mean.index))
    np.testing.assert_array_equal(
        base_mean["inflamed"].to_numpy(), (direct_mean.reindex(base_mean.index) >= 1).to_numpy()
    )
    np.testing.assert_array_equal(
        base_agree["inflamed"].to_numpy().astype(bool),
        direct_all.reindex(base_agree.index).to_numpy(),
    )
    assert base_agree["inflamed"].sum() <= base_mean["inflamed"].sum()


def test_bad_arguments(panel):
    with pytest.raises(DeriveError, match="threshold"):
        mri_course(panel, threshold=0, model=False)
    with pytest.raises(DeriveError, match="per_reader"):
        mri_course(panel, readers="per_reader", model=False)
    one_week = VUPanel(panel.vu.drop(columns=["mri_w24", "mri_w102"]), panel.patients)
    with pytest.raises(ModelError, match="two or more MRI weeks"):
        mri_course(one_week, lme4=False)


# --------------------------------------------------------------------------- the model


def reference_data() -> pd.DataFrame:
    d = pd.read_csv(REFERENCE / "data.csv")
    d["arm"] = pd.Categorical(d["arm"], categories=["placebo", "infliximab"])
    return d


def assert_matches_lme4(fit, ref: dict, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(fit.params.to_numpy(), list(ref["coef"].values()), atol=tol)
    np.testing.assert_allclose(fit.bse.to_numpy(), list(ref["se"].values()), atol=tol)
    sd = fit.varcorr.set_index("grp")["sdcor"]
    np.testing.assert_allclose(
        sd[list(ref["varcorr"]["grp"])].to_numpy(), ref["varcorr"]["sdcor"], atol=tol
    )
    assert fit.loglik == pytest.approx(ref["loglik"], abs=tol)


def test_course_model_matches_the_stored_lme4_laplace_fit():
    """The "course" reference: glmer(..., tolPwrss = 1e-12) by make_reference.R."""
    ref = json.loads((REFERENCE / "reference.json").read_text())
    assert ref["case"] == "course" and "lme4" in ref["versions"]
    fit = sy.fit(FORMULA, reference_data(), engine="native", nagq=1)
    assert fit.converged and list(fit.params.index) == [
        "Intercept",
        "C(week)[T.24]",
        "C(week)[T.102]",
        "arm[T.infliximab]",
        "C(week)[T.24]:arm[T.infliximab]",
        "C(week)[T.102]:arm[T.infliximab]",
    ]
    assert_matches_lme4(fit, ref["lme4"])
    # lme4 run with bobyqa to 1e-10 lands on the same maximum
    assert_matches_lme4(fit, ref["lme4_bobyqa"])


@pytest.mark.r
def test_course_model_vs_lme4_live(r_lme4, panel):
    res = mri_course(panel, nagq=1, lme4=True)
    assert list(res.fits) == ["native Laplace", "lme4 Laplace"]
    native, lme4 = res.fits["native Laplace"], res.fits["lme4 Laplace"]
    np.testing.assert_allclose(native.params, lme4.params, atol=1e-4)
    np.testing.assert_allclose(native.bse, lme4.bse, atol=1e-4)
    np.testing.assert_allclose(native.varcorr["sdcor"], lme4.varcorr["sdcor"], atol=1e-4)
    assert native.loglik == pytest.approx(lme4.loglik, abs=1e-4)
    ors = res.odds_ratios.pivot(index=["contrast", "arm", "week"], columns="fit", values="log_or")
    assert len(ors) == 7
    np.testing.assert_allclose(ors["native Laplace"], ors["lme4 Laplace"], atol=1e-4)


def test_odds_ratios_equal_the_refit_with_the_other_reference_arm(course):
    """The week-vs-baseline OR of the non-reference arm (a sum of two coefficients and
    its SE from the covariance) is the week coefficient of a refit with that arm as
    reference: the same likelihood, another parametrisation."""
    frame = course.frame.copy()
    frame["arm"] = frame["arm"].cat.reorder_categories(["infliximab", "placebo"])
    refit = sy.fit(FORMULA, frame, engine="native", nagq=3)
    ors = course.odds_ratios.query("fit == 'native AGQ 3' and contrast == 'week vs baseline'")
    for w in (24, 102):
        row = ors.query("arm == 'infliximab' and week == @w").iloc[0]
        assert row["log_or"] == pytest.approx(refit.params[f"C(week)[T.{w}]"], abs=1e-4)
        assert row["std_error"] == pytest.approx(refit.bse[f"C(week)[T.{w}]"], abs=1e-4)
    row = course.odds_ratios.query(
        "fit == 'native AGQ 3' and contrast == 'arm vs reference' and week == 0"
    ).iloc[0]
    assert row["log_or"] == pytest.approx(-refit.params["arm[T.placebo]"], abs=1e-4)


def test_agq_fit_is_a_better_likelihood_and_tables_are_tidy(course):
    fits = course.fits_table.set_index("fit")
    assert list(fits.index) == ["native Laplace", "native AGQ 3"]
    assert fits["converged"].all()
    assert set(course.model["fit"]) == set(fits.index)
    assert course.model.groupby("fit").size().eq(6).all()
    # 2 arms × 2 later weeks + 1 arm × 3 weeks, per fit
    assert course.odds_ratios.groupby("fit").size().eq(7).all()
    assert (course.odds_ratios["ci_low"] < course.odds_ratios["odds_ratio"]).all()


# --------------------------------------------------------------------------- output


def test_figure_has_four_panels(course, tmp_path):
    fig = course_figure(course.vu_prevalence, course.patient_prevalence)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    fig.savefig(tmp_path / "f.png", dpi=100)
    h, w = image.imread(tmp_path / "f.png").shape[:2]
    assert w == 720 and h == 500


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory, panel) -> tuple[Path, Path]:
    return write_cohort(panel, tmp_path_factory.mktemp("course_cohort"))


def test_cli_writes_tables_and_figure(cohort_files, tmp_path, capsys):
    vu, patients = cohort_files
    out = tmp_path / "course"
    argv = ["course", "--vu", str(vu), "--patients", str(patients), "--out", str(out)]
    assert main([*argv, "--nagq", "1", "--no-lme4"]) == 0
    printed = capsys.readouterr().out
    assert "# The MRI course" in printed and "McNemar" in printed
    names = {p.name for p in out.iterdir()}
    for t in ("vu_prevalence", "patient_prevalence", "mcnemar", "wilcoxon", "model", "ledger"):
        assert {f"{t}.csv", f"{t}.md"} <= names
    assert {"prevalence.png", "prevalence.pdf", "course.md", report.MARKER} <= names
    vp = pd.read_csv(out / "vu_prevalence.csv")
    assert len(vp) == 2 * 3 * 3
    # a directory of someone else's files is refused, one line, nothing written
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    argv[-1] = str(foreign)
    assert main([*argv, "--no-lme4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("syndesmo course: error: ")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_cli_bad_threshold_is_one_line(cohort_files, tmp_path, capsys):
    vu, patients = cohort_files
    argv = ["course", "--vu", str(vu), "--patients", str(patients), "--threshold", "9"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "threshold" in err
    assert not (tmp_path / "x").exists()
