"""Power by simulation (``syndesmo.powersim.api``): seeding, backends, references and type I error.

References used here: the frame path of the package (``analysis_frame`` → ``fit`` and
``patient.patient_level``) on the very cohorts the array path simulates;
statsmodels ``Logit`` for the batched logistic regression; statsmodels'
``proportion_confint`` for the Wilson interval; R's ``glmer`` for the power; and a
known truth (OR = 1, so the rejection rate must be alpha up to Monte Carlo error).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from power_cli import power_cli, refused_in_one_line
from scipy import stats

import syndesmo as sy
from syndesmo.analysis.patient import patient_level
from syndesmo.derive.frame import analysis_frame
from syndesmo.engines.logit_many import logit_many
from syndesmo.errors import ModelError, SpecError
from syndesmo.fitting.api import fit
from syndesmo.powersim.api import power, power_curve
from syndesmo.powersim.mcstats import binomial_acceptance_region, wilson_interval
from syndesmo.powersim.plan import grid_points
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

ALL = ["vu", "gee", "patient", "logit"]


def test_replicates_draw_from_spawned_seed_sequences():
    """Replicate i's cohort is the one simulate_cohort makes from SeedSequence(seed).spawn(n)[i]."""
    spec = CohortSpec(n_patients=30)
    res = power(spec, n_sims=4, analysis="logit", seed=11, progress=False, batch_size=3)
    kids = np.random.SeedSequence(11).spawn(4)
    for i in (0, 3):
        frame = analysis_frame(simulate_cohort(spec, seed=kids[i]), covariates=["arm"])
        f = fit("new_syndesmophyte ~ mri + arm", frame, engine="logit")
        row = res.replicates.iloc[i]
        assert row["replicate"] == i
        assert row["log_or"] == pytest.approx(f.params["mri"], abs=1e-10)


def test_array_path_equals_frame_path_for_every_analysis():
    """Each analysis of the fast array path gives what the package's frame path gives on
    the same cohort (missing MRIs and x-rays included), to 1e-8."""
    # a third of the VUs inflamed: with this seed one patient-level fit meets separation
    spec = CohortSpec(
        n_patients=70,
        mri_missing_rate=0.05,
        xray_missing_rate=0.05,
        inflammation_prevalence=0.337,
        inflammation_prevalence_treated=0.12,
    )
    res = power(spec, n_sims=2, analysis=ALL, seed=5, progress=False)
    rep = res.replicates.set_index(["analysis", "replicate"])
    separated = 0
    for i, kid in enumerate(np.random.SeedSequence(5).spawn(2)):
        panel = simulate_cohort(spec, seed=kid)
        frame = analysis_frame(panel, covariates=["arm"])
        for analysis, engine in (("vu", "native"), ("gee", "gee"), ("logit", "logit")):
            f = fit("new_syndesmophyte ~ mri + arm + (1|patient)", frame, engine=engine)
            row = rep.loc[(analysis, i)]
            assert row["n_obs"] == f.n_obs
            assert row["log_or"] == pytest.approx(f.params["mri"], abs=1e-8)
            assert row["se"] == pytest.approx(f.bse["mri"], abs=1e-8)
        pl = patient_level(panel, "w0", "any_new", adjust=("arm",))
        row = rep.loc[("patient", i)]
        assert row["n_obs"] == pl.fit.n_obs
        if pl.fit.convergence.separated_terms:  # no finite MLE: a failed fit, never a rejection
            separated += 1
            assert not row["converged"] and not row["reject"]
        else:
            assert row["log_or"] == pytest.approx(pl.fit.params["exposure"], abs=1e-8)
            assert row["se"] == pytest.approx(pl.fit.bse["exposure"], abs=1e-8)
    assert separated == 1  # this seed exercises both branches
    assert res.ledger.n_excluded > 0  # VUs not at risk / images missing were counted


def test_logit_many_matches_statsmodels_and_flags_failures():
    rng = np.random.default_rng(3)
    R, n = 5, 300
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    Y = (rng.random((R, n)) < 1 / (1 + np.exp(-(-1 + 0.7 * X[:, 1])))).astype(float)
    mask = rng.random((R, n)) < 0.8
    Y[3] = 0.0  # no events
    Y[4] = (X[:, 1] > 0).astype(float)  # complete separation along column 1
    res = logit_many(X, Y, mask)
    for r in range(3):
        ref = sm.Logit(Y[r, mask[r]], X[mask[r]]).fit(disp=False)
        np.testing.assert_allclose(res["params"][r], ref.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(res["bse"][r], ref.bse, rtol=1e-6)
        assert res["converged"][r]
    assert not res["converged"][3] and res["message"][3] == "no events"
    assert not res["converged"][4] and "separation" in res["message"][4]
    # each replicate's result does not depend on the others in the batch
    alone = logit_many(X, Y[1:2], mask[1:2])
    assert np.array_equal(alone["params"][0], res["params"][1])


def test_wilson_interval_and_acceptance_region():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 50), (7, 200), (400, 400), (123, 1000)):
        lo, hi = wilson_interval(k, n)
        ref = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    lo, hi = binomial_acceptance_region(400, 0.05, 0.99)
    inside = stats.binom.cdf(hi, 400, 0.05) - stats.binom.cdf(lo - 1, 400, 0.05)
    assert inside >= 0.99
    assert stats.binom.cdf(lo - 1, 400, 0.05) <= 0.005 and stats.binom.sf(hi, 400, 0.05) <= 0.005


def test_type_one_error_of_the_glmm_is_alpha():
    """OR = 1: the GLMM's and the patient-level test's rejection rates over 400 studies of
    187 patients lie in the exact binomial 99% acceptance region around 0.05 (counts
    10…31 of 400); each fails with probability ≤ 1% if the test is exact, more often if
    it is not."""
    spec = CohortSpec(odds_ratio_new=1.0)
    res = power(
        spec,
        n_sims=400,
        alpha=0.05,
        analysis=["vu", "patient", "logit"],
        seed=2024,
        progress=False,
    )
    lo, hi = binomial_acceptance_region(400, 0.05, 0.99)
    pat = res.table.set_index("analysis").loc["patient"]  # the patient level too
    assert pat["failed_rate"] < 0.05 and lo <= pat["rejections"] <= hi, res.summary()
    row = res.table.set_index("analysis").loc["vu"]
    assert row["failed"] == 0
    assert lo <= row["rejections"] <= hi, res.summary()
    assert row["true_or"] == 1.0
    # under H0 the coverage of the truth is 1 - rejection rate for a Wald test
    assert row["coverage"] == pytest.approx(1 - row["power"])


def _pid(_task):
    import os

    return os.getpid()


def test_worker_pool_is_kept_for_the_session_and_shut_down_on_request():
    """(Before the Dask test, whose threads would make the pool spawn rather than fork.)"""
    from syndesmo.powersim import executors

    first = set(executors.run_tasks(_pid, range(4), workers=2, progress=False))
    pool = set(executors.pool_processes(2))
    assert len(pool) == 2 and first <= pool
    again = set(executors.run_tasks(_pid, range(4), workers=2, progress=False))
    assert again <= pool and set(executors.pool_processes(2)) == pool  # the same workers
    executors.shutdown_pools()
    assert executors.pool_processes(2) == []
    fresh = set(executors.run_tasks(_pid, range(4), workers=2, progress=False))
    assert fresh.isdisjoint(pool)
    executors.shutdown_pools()


# dashboard_address=None still serves Dask's HTTP routes, on another port if 8787 is taken
@pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")
def test_results_identical_in_process_with_workers_and_on_dask():
    """Same seed → the same replicates whatever the backend and batch size. (GEE is left
    out for speed: it is fitted one replicate at a time, so batching cannot touch it.)"""
    distributed = pytest.importorskip("distributed")
    spec = CohortSpec(n_patients=50)
    kw = {"n_sims": 25, "analysis": ["vu", "patient", "logit"], "seed": 9, "progress": False}
    base = power(spec, batch_size=30, **kw)  # one task
    local = power(spec, workers=2, batch_size=10, **kw)  # three tasks
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_dask = power(spec, scheduler=client, batch_size=20, **kw)  # two tasks
        by_address = power(spec, scheduler=cluster.scheduler_address, batch_size=10, **kw)
        assert client.status == "running"  # a client passed in is left open for its owner
        curve_kw = {"n_patients": [30, 50], "n_sims": 20, "analysis": ["vu", "patient"]}
        curve_dask = power_curve(spec, scheduler=client, seed=4, progress=False, **curve_kw)
    curve_here = power_curve(spec, seed=4, progress=False, **curve_kw)
    cols = [c for c in curve_here.columns if c != "seconds"]
    pd.testing.assert_frame_equal(curve_here[cols], curve_dask[cols], check_exact=True)
    assert base.backend == "in-process" and on_dask.backend.startswith("dask(tcp://127.0.0.1")
    for other in (local, on_dask, by_address):
        pd.testing.assert_frame_equal(base.replicates, other.replicates, check_exact=True)
        cols = [c for c in base.table.columns if c != "seconds"]
        pd.testing.assert_frame_equal(base.table[cols], other.table[cols], check_exact=True)


def test_power_curve_seeds_each_grid_point_from_its_own_child():
    spec = CohortSpec(n_patients=40)
    curve = power_curve(
        spec,
        n_patients=[40, 60],
        odds_ratio_new=[2.0],
        n_sims=6,
        analysis=["vu", "patient"],
        seed=3,
        progress=False,
    )
    assert list(curve.columns[:3]) == ["n_patients", "odds_ratio_new", "analysis"]
    assert len(curve) == 4
    child = np.random.SeedSequence(3).spawn(2)[1]
    alone = power(
        spec.replace(n_patients=60),
        n_sims=6,
        analysis=["vu", "patient"],
        seed=child,
        progress=False,
    )
    got = curve[curve["n_patients"] == 60].drop(columns=["n_patients", "odds_ratio_new"])
    cols = [c for c in alone.table.columns if c != "seconds"]
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True), alone.table[cols], check_exact=True
    )


def test_power_rises_with_sample_size_and_effect():
    """A sanity check with a known direction: 60 studies per point, OR 2.5 vs 1.2."""
    curve = power_curve(
        CohortSpec(),
        n_patients=[60, 187],
        odds_ratio_new=[1.2, 2.5],
        n_sims=60,
        seed=1,
        progress=False,
    ).set_index(["n_patients", "odds_ratio_new"])["power"]
    assert curve[(187, 2.5)] > curve[(60, 2.5)]
    assert curve[(187, 2.5)] > curve[(187, 1.2)]
    assert curve[(187, 2.5)] > 0.8


def test_grid_and_argument_errors_name_the_problem():
    spec = CohortSpec(n_patients=30)
    with pytest.raises(SpecError, match="'n_patient' is not a CohortSpec field"):
        grid_points(spec, {"n_patient": [1, 2]})
    assert grid_points(spec, {"mri_weeks": [(0, 24), (0, 24, 102)]}) == [
        {"mri_weeks": (0, 24)},
        {"mri_weeks": (0, 24, 102)},
    ]
    with pytest.raises(ModelError, match="unknown analysis 'glmm'"):
        power(spec, n_sims=2, analysis="glmm", progress=False)
    with pytest.raises(ModelError, match="n_sims"):
        power(spec, n_sims=0, progress=False)
    with pytest.raises(ModelError, match="engine 'gee' cannot fit the 'vu' GLMM"):
        power(spec, n_sims=2, engine="gee", progress=False)
    with pytest.raises(ModelError, match="VU-level covariate"):
        power(spec, n_sims=2, analysis="patient", adjust=["region"], progress=False)
    with pytest.raises(ModelError, match="either workers"):
        power(spec, n_sims=2, workers=2, scheduler="tcp://127.0.0.1:1", progress=False)


def test_cli_writes_table_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "pw"
    args = ["--patients", "40,60", "--odds-ratio", "2", "--sims", "8", "--analysis", "vu,patient"]
    assert power_cli(out, *args) == 0
    table = pd.read_csv(out / "power.csv")
    assert len(table) == 4 and set(table["analysis"]) == {"vu", "patient"}
    assert (out / "power.md").read_text().count("\n| ") >= 5
    assert (out / "power.png").stat().st_size > 10_000
    assert (out / "power.pdf").read_bytes().startswith(b"%PDF")
    assert "power" in capsys.readouterr().out
    assert refused_in_one_line(capsys, "--patients", "--patients", "4x", "--out", str(out))
    for bad in ("0", "two", "-1"):
        assert refused_in_one_line(capsys, "--workers", "--workers", bad, "--out", str(out))


@pytest.mark.r
def test_native_power_agrees_with_lme4_replicate_by_replicate(r_lme4):
    """30 studies of 100 patients: R's glmer and the native engine reject on the same
    replicates, except where a p-value lies within 0.002 of alpha (a tie). Estimates
    agree to 1e-3 on the log-OR scale: glmer's default optimiser stops a few 1e-4 short
    of the optimum on some replicates."""
    spec = CohortSpec(n_patients=100, odds_ratio_new=1.6)
    kw = {"n_sims": 30, "analysis": "vu", "seed": 17, "progress": False}
    native = power(spec, engine="native", **kw).replicates
    lme4 = power(spec, engine="lme4", **kw).replicates
    assert native["converged"].all() and lme4["converged"].all()
    np.testing.assert_allclose(native["log_or"], lme4["log_or"], atol=1e-3)
    np.testing.assert_allclose(native["se"], lme4["se"], rtol=5e-3)
    tie = (np.abs(native["p"] - 0.05) < 0.002) | (np.abs(lme4["p"] - 0.05) < 0.002)
    assert (native["reject"] == lme4["reject"])[~tie].all()
    assert 0 < native["reject"].sum() < 30  # the comparison is not vacuous


def test_a_huge_number_of_replicates_is_refused_before_anything_runs():
    import time

    spec = sy.CohortSpec(n_patients=50)
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"1,000,000,000,000 simulated studies.*max_sims="):
        sy.power(spec, n_sims=10**12, progress=False)
    with pytest.raises(ModelError, match=r"n_sims 600000 x 2 grid point\(s\) = 1,200,000"):
        sy.power_curve(spec, n_sims=600_000, n_patients=[50, 60], progress=False)
    assert time.monotonic() - t0 < 5


def test_power_plot_legend_never_rounds_a_failure_rate_down_to_zero():
    from syndesmo.output.plots import power_curve_plot

    rows = []
    for n, failed in ((100, 0.0), (200, 0.003)):
        for analysis, rate in (("vu", failed), ("patient", 0.0)):
            rows.append(
                {
                    "n_patients": n,
                    "analysis": analysis,
                    "power": 0.5,
                    "power_lower": 0.4,
                    "power_upper": 0.6,
                    "alpha": 0.05,
                    "n_sims": 1000,
                    "failed_rate": rate,
                    "singular_rate": 0.0,
                    "separation_rate": 0.012,
                }
            )
    fig = power_curve_plot(pd.DataFrame(rows))
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    vu = next(t for t in labels if t.startswith("VU level"))
    patient = next(t for t in labels if t.startswith("patient level"))
    assert "failed up to 0.3%" in vu and "singular 0%" in vu
    assert "failed 0%" in patient and "separation up to 1.2%" in patient
    from matplotlib.text import Text

    assert any("(Wilson)" in t.get_text() for t in fig.findobj(Text))
