"""Power for the designs trials run (``syndesmo.powersim.designs``): readings nested in VUs,
the within-patient estimators, other MRI weeks and the MRI course.

References: the package's frame path (``simulate_cohort`` → ``analysis_frame`` →
``sy.fit``) on the very cohort a replicate simulates, for each new analysis; a known
truth — OR 1 (the rejection rate must be alpha) and the spec's conditional OR (the
Wald CI must cover it 95% of the time) — checked against the exact binomial 99%
acceptance region (scipy.stats.binom, ``mcstats.binomial_acceptance_region``): a
correct test fails with probability at most 1%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from power_cli import power_cli

import syndesmo as sy
from syndesmo.derive.frame import analysis_frame
from syndesmo.derive.within import within_between
from syndesmo.errors import ModelError
from syndesmo.fitting.api import fit
from syndesmo.powersim.api import power
from syndesmo.powersim.designs import course_week
from syndesmo.powersim.mcstats import binomial_acceptance_region
from syndesmo.powersim.plan import ANALYSES
from syndesmo.powersim.search import crn_power
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

NESTED = "new_syndesmophyte ~ mri + arm + C(reader) + (1|patient/vu)"


def test_nested_reader_fit_equals_sy_fit_on_the_replicates_frame():
    """Two readers: the 'readers' analysis fits every reading nested in its VU; replicate r's
    estimate and SE equal sy.fit's of the nested model on replicate r's frame (the
    panel simulate_cohort writes, read per reader by analysis_frame) to 1e-6."""
    spec = CohortSpec(n_patients=40, n_readers=2, reader_mri_error=0.1)
    res = power(spec, n_sims=2, analysis="readers", seed=3, progress=False, check_first=None)
    row = res.table.iloc[0]
    assert "nested" in row["engine"] and row["failed"] == 0
    for r, kid in enumerate(np.random.SeedSequence(3).spawn(2)):
        panel = simulate_cohort(spec, seed=kid)
        frame = analysis_frame(panel, covariates=["arm"], readers="per_reader")
        f = fit(NESTED, frame)
        rep = res.replicates.iloc[r]
        assert rep["n_obs"] == f.n_obs
        assert rep["log_or"] == pytest.approx(f.params["mri"], abs=1e-6)
        assert rep["se"] == pytest.approx(f.bse["mri"], abs=1e-6)


@pytest.mark.r
def test_nested_reader_power_by_lme4_agrees_with_native(r_lme4):
    """Two readers, engine lme4: one glmer of the nested model per study (through the
    replicate's frame) gives the native nested fit's estimates to 1e-3 (glmer's default
    optimiser stops a few 1e-4 short of the optimum). Readers who disagree on a corner
    15% of the time keep the VU SD moderate; on near-copy readings (5%) glmer can stop
    far short (seen: log OR 0.76 vs 0.65, its logLik 0.16 below the native optimum)."""
    spec = CohortSpec(n_patients=40, n_readers=2, reader_mri_error=0.1, reader_corner_error=0.15)
    kw = {"n_sims": 2, "analysis": "readers", "seed": 3, "progress": False, "check_first": None}
    native = power(spec, engine="native", **kw).replicates
    lme4 = power(spec, engine="lme4", **kw).replicates
    assert native["converged"].all() and lme4["converged"].all(), lme4["message"].tolist()
    np.testing.assert_allclose(native["log_or"], lme4["log_or"], atol=1e-3)
    np.testing.assert_allclose(native["se"], lme4["se"], rtol=5e-3)


def test_hybrid_clogit_and_course_equal_sy_fit_on_the_replicates_frame():
    """Each new analysis of the array path gives what sy.fit gives on the same cohort's
    frame (missing MRIs and x-rays included), to 1e-6: the hybrid GLMM on
    derive.within's columns, clogit by the clogit engine, and the course model on the
    panel's MRI columns at weeks 0 and 12 (MRI weeks 0, 12, 52)."""
    spec = CohortSpec(
        n_patients=60,
        mri_weeks=(0, 12, 52),
        propensity_correlation=0.5,
        mri_missing_rate=0.05,
        xray_missing_rate=0.05,
    )
    res = power(
        spec, n_sims=2, analysis="hybrid,clogit,course", seed=8, progress=False, check_first=None
    )
    rep = res.replicates.set_index(["analysis", "replicate"])
    for r, kid in enumerate(np.random.SeedSequence(8).spawn(2)):
        panel = simulate_cohort(spec, seed=kid)
        frame = within_between(analysis_frame(panel, covariates=["arm"]), "mri")
        hyb = fit("new_syndesmophyte ~ mri_within + mri_between + arm + (1|patient)", frame)
        cl = fit("new_syndesmophyte ~ mri + arm + (1|patient)", frame, engine="clogit")
        vu = panel.vu.merge(panel.patients[["patient", "arm"]], on="patient")
        vu = vu.dropna(subset=["mri_w0", "mri_w12"])
        course = pd.DataFrame(
            {
                "patient": vu["patient"],
                "inflamed": (vu["mri_w12"] >= 1).astype(int),
                "arm": (vu["arm"] == "infliximab").astype(float),
                "inflamed_baseline": (vu["mri_w0"] >= 1).astype(float),
            }
        )
        co = fit("inflamed ~ arm + inflamed_baseline + (1|patient)", course)
        for analysis, f, term in (
            ("hybrid", hyb, "mri_within"),
            ("clogit", cl, "mri"),
            ("course", co, "arm"),
        ):
            row = rep.loc[(analysis, r)]
            assert row["n_obs"] == f.n_obs, analysis
            assert row["log_or"] == pytest.approx(f.params[term], abs=1e-6), analysis
            assert row["se"] == pytest.approx(f.bse[term], abs=1e-6), analysis


def test_every_analysis_runs_on_other_mri_weeks():
    """MRI weeks 0, 12, 52 (crossover 24): every analysis runs, with exposures w0 and
    w12_or_w52, one reader and two (readings nested); the course compares week 12."""
    for readers, exposure in ((1, "w0"), (1, "w12_or_w52"), (2, "w0")):
        spec = CohortSpec(n_patients=50, mri_weeks=(0, 12, 52), n_readers=readers)
        analyses = [a for a in ANALYSES if readers > 1 or a != "readers"]
        res = power(
            spec,
            n_sims=3,
            analysis=analyses,
            exposure=exposure,
            seed=1,
            progress=False,
            check_first=None,
        )
        table = res.table.set_index("analysis")
        assert list(table.index) == analyses
        for a in analyses:
            if a == "patient":
                continue
            assert table.loc[a, "failed"] == 0, (readers, exposure, res.summary())
    assert course_week(spec) == 12
    assert course_week(CohortSpec()) == 24  # ASSERT: at week 102 both arms are treated
    assert course_week(CohortSpec(crossover_week=200)) == 102
    with pytest.raises(ModelError, match="course analysis needs an MRI week"):
        power(CohortSpec(crossover_week=10), n_sims=2, analysis="course", progress=False)


@pytest.mark.slow  # about 20-25 s: one conditional-logit fit per study
def test_type_one_error_of_the_within_patient_estimators_and_the_course():
    """OR 1 with correlated propensities (0.5) and a treatment that leaves inflammation
    unchanged: over 300 studies of 60 patients the rejections of hybrid, clogit and
    course lie in the exact binomial 99% region around 0.05, while the plain GLMM's lie
    above it (the patient-level confounding its random intercept ignores)."""
    spec = CohortSpec(
        n_patients=60,
        odds_ratio_new=1.0,
        propensity_correlation=0.5,
        inflammation_prevalence_treated=CohortSpec().inflammation_prevalence,
    )
    res = power(spec, n_sims=300, analysis="vu,hybrid,clogit,course", seed=21, progress=False)
    lo, hi = binomial_acceptance_region(300, 0.05, 0.99)
    t = res.table.set_index("analysis")
    for a in ("hybrid", "clogit", "course"):
        assert t.loc[a, "failed_rate"] < 0.05, res.summary()
        assert lo <= t.loc[a, "rejections"] <= hi, (a, res.summary())
        assert t.loc[a, "true_or"] == 1.0
    assert t.loc["vu", "rejections"] > hi, res.summary()


@pytest.mark.slow  # about 45 s: one conditional-logit fit per study
def test_within_patient_estimators_cover_the_true_or_under_correlated_propensities():
    """OR 2, propensity correlation 0.5, 150 studies of 100 patients: the Wald CIs of
    hybrid and clogit cover log 2 a number of times inside the exact binomial 99% region
    around 0.95; the plain GLMM, biased upwards, covers it less often."""
    spec = CohortSpec(n_patients=100, odds_ratio_new=2.0, propensity_correlation=0.5)
    res = power(spec, n_sims=150, analysis="vu,hybrid,clogit", seed=5, progress=False)
    t = res.table.set_index("analysis")
    for a in ("hybrid", "clogit"):
        n = 150 - int(t.loc[a, "failed"])
        lo, hi = binomial_acceptance_region(n, 0.95, 0.99)
        covered = round(t.loc[a, "coverage"] * n)
        assert n >= 142 and lo <= covered <= hi, (a, res.summary())
        assert t.loc[a, "true_or"] == 2.0
    assert t.loc["vu", "bias_log_or"] > 0.1, res.summary()
    n = 150 - int(t.loc["vu", "failed"])
    assert round(t.loc["vu", "coverage"] * n) < binomial_acceptance_region(n, 0.95, 0.99)[0]


@pytest.mark.slow  # about 25 s: one GEE per study
def test_type_one_error_of_gee_and_the_crude_logit():
    """OR 1, 300 studies of 120 patients: GEE (exchangeable, robust SEs) and the crude
    VU-level logit reject inside the exact binomial 99% region around 0.05 (6-25).
    Measured: 15 and 12. (The crude logit's SEs ignore the clustering; with
    independent propensities at OR 1 a VU's inflammation and its new bone are
    independent given the arm, which both models adjust for, so it holds its level
    here.)"""
    spec = CohortSpec(n_patients=120, odds_ratio_new=1.0)
    res = power(spec, n_sims=300, analysis=["gee", "logit"], seed=7, progress=False)
    lo, hi = binomial_acceptance_region(300, 0.05, 0.99)
    for _, row in res.table.iterrows():
        assert row["failed"] == 0 and row["true_or"] == 1.0
        assert lo <= row["rejections"] <= hi, res.summary()


def test_type_one_error_of_the_nested_reader_design_is_at_most_alpha():
    """OR 1, two readers (MRI reader error 0.1): the nested GLMM of the readings rejects
    at most as often as the upper end of the exact binomial 99% region around 0.05 (100
    studies of 40 patients); the true OR is known (1) under the null even with reader
    error. One-sided on purpose: with readers who rarely disagree the test is
    conservative. Two readings of a VU almost always agree, so the VU-within-patient
    SD is estimated around 15-30 and the log OR rests on the few VUs whose readings
    disagree (measured, 400 studies of 187 patients at OR 1: 2/400 rejections with 5%
    corner misreads, 3/400 with 15%, below the region 10-32; see the next test for
    readers who disagree often)."""
    spec = CohortSpec(n_patients=40, n_readers=2, reader_mri_error=0.1, odds_ratio_new=1.0)
    res = power(spec, n_sims=100, analysis="readers", seed=17, progress=False)
    _, hi = binomial_acceptance_region(100, 0.05, 0.99)
    row = res.table.iloc[0]
    assert row["failed_rate"] < 0.05, res.summary()
    assert row["rejections"] <= hi, res.summary()
    assert row["true_or"] == 1.0


@pytest.mark.slow  # about 10 s: 400 nested fits
def test_type_one_error_of_the_nested_reader_design_with_readers_who_disagree_often():
    """OR 1, readers who misread 30% of MRI scores and of corner scores: the nested
    GLMM's rejections of 400 studies of 60 patients lie inside the exact binomial 99%
    region around 0.05 (two-sided). Measured: 19/400 here, 17/400 at 187 patients."""
    spec = CohortSpec(
        n_patients=60,
        n_readers=2,
        reader_mri_error=0.3,
        reader_corner_error=0.3,
        odds_ratio_new=1.0,
    )
    res = power(spec, n_sims=400, analysis="readers", seed=11, progress=False)
    lo, hi = binomial_acceptance_region(400, 0.05, 0.99)
    row = res.table.iloc[0]
    assert row["failed_rate"] < 0.02, res.summary()
    assert lo <= row["rejections"] <= hi, res.summary()


def test_true_or_with_readers_is_unknown_off_the_null():
    spec = CohortSpec(n_patients=30, n_readers=2, odds_ratio_new=2.0)
    kw = {"n_sims": 1, "seed": 1, "progress": False, "check_first": None}
    res = power(spec, analysis="vu,readers,hybrid", **kw)
    assert res.table["true_or"].isna().all()
    with pytest.raises(ModelError, match="needs a spec with n_readers >= 2"):
        power(spec.replace(n_readers=1), analysis="readers", **kw)


def test_sample_size_searches_the_new_analyses_on_common_random_numbers():
    """The course's sample size (CRN over nested cohorts) is the first crossing of a
    brute-force grid of the same curve; detectable_effect refuses the course, which
    does not test the exposure."""
    spec = CohortSpec(
        n_patients=40, inflammation_prevalence=0.337, inflammation_prevalence_treated=0.2
    )
    kw = {"n_sims": 100, "seed": 4, "progress": False}
    res = sy.sample_size(spec, target=0.8, analysis="course", step=10, max_patients=200, **kw)
    row = res.table.iloc[0]
    assert row["reached"] and row["power"] >= 0.8 and row["power_below"] < 0.8
    n = int(row["value"])
    grid = crn_power(spec, "n_patients", list(range(10, n + 1, 10)), "course", **kw)
    short = grid["power"].to_numpy() < 0.8
    assert short[:-1].all() and not short[-1], grid[["n_patients", "power"]]
    ev = res.evaluated.set_index("n_patients")["power"]
    bf = grid.set_index("n_patients")["power"]
    for m in ev.index.intersection(bf.index):
        assert ev[m] == bf[m]
    with pytest.raises(ModelError, match="not the exposure OR"):
        sy.detectable_effect(spec, analysis="course", **kw)


def test_detectable_effect_of_the_hybrid_glmm_and_nested_readers_on_crn_cohorts():
    """The hybrid GLMM's detectable OR reaches 0.8 and OR - step does not, and the powers
    at both equal sy.power's at those ORs with the same seed (common random numbers);
    the nested reader design runs on the sample-size search's nested cohorts."""
    spec = CohortSpec(n_patients=80)
    kw = {"n_sims": 60, "seed": 9, "progress": False}
    res = sy.detectable_effect(spec, target=0.8, analysis="hybrid", step=0.5, **kw)
    row = res.table.iloc[0]
    assert row["reached"] and row["power"] >= 0.8 and row["power_below"] < 0.8
    for odds, p in ((row["value"], row["power"]), (row["below"], row["power_below"])):
        again = sy.power(spec.replace(odds_ratio_new=float(odds)), analysis="hybrid", **kw)
        assert again.power == p
    two = CohortSpec(n_patients=30, n_readers=2)
    grid = crn_power(two, "n_patients", [30], "readers", n_sims=2, seed=1, progress=False)
    assert grid.loc[0, "failed"] == 0 and "nested" in grid.loc[0, "engine"]


def test_cli_accepts_the_new_analyses_and_tuple_grids(tmp_path):
    out = tmp_path / "pw"
    args = ["--patients", "40", "--sims", "3", "--analysis", "hybrid,clogit,course"]
    grid = ["--grid", "mri_weeks=0/12/52,0/24/102", "--max-failed", "1"]
    assert power_cli(out, *args, *grid) == 0
    table = pd.read_csv(out / "power.csv")
    assert set(table["analysis"]) == {"hybrid", "clogit", "course"} and len(table) == 6
    assert {"failed_rate", "singular_rate"} <= set(table.columns)
