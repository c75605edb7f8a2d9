"""The planner's questions (``sy.sample_size``, ``sy.detectable_effect``) and fit health.

References: a brute-force grid of the same common-random-numbers power curve (the
search must find its first crossing of the target); ``sy.power`` itself for the
detectable OR (the power at an OR is ``power``'s with the same seed, exactly); a
known truth (OR = 1: rejection counts in the exact binomial 99% acceptance region);
and a spec whose outcome has almost no events (the failure rate is known to be
near 1, so the run must stop early and say why).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from power_cli import power_cli, refused_in_one_line

import syndesmo as sy
from syndesmo.powersim.mcstats import binomial_acceptance_region
from syndesmo.powersim.nested import arm_counts, nested_cohort
from syndesmo.powersim.plan import FIT_BLOCK
from syndesmo.powersim.search import crn_power
from syndesmo.simulate.cohort import CohortSpec


def test_nested_cohorts_share_their_first_patients_and_keep_the_arm_allocation():
    spec = CohortSpec(n_patients=50, mri_missing_rate=0.1)
    seed = np.random.SeedSequence(4).spawn(3)[2]
    small = nested_cohort(spec.replace(n_patients=50), seed, block=40)
    large = nested_cohort(spec.replace(n_patients=130), seed, block=40)
    for c, n in ((small, 50), (large, 130)):
        k_inf, _ = arm_counts(n, spec.p_infliximab)
        assert len(c["patient_u"]) == n and int(c["patient_arm"].sum()) == k_inf
        assert len(c["patient"]) == n * len(spec.vus)
        assert np.array_equal(c["arm"], np.repeat(c["patient_arm"], len(spec.vus)))
    # every patient of the small cohort is in the large one, with the same VU rows
    assert set(small["patient_u"]) <= set(large["patient_u"])
    j = int(np.flatnonzero(large["patient_u"] == small["patient_u"][7])[0])
    V = len(spec.vus)
    np.testing.assert_array_equal(small["mri"][7 * V : 8 * V], large["mri"][j * V : (j + 1) * V])
    # the same seed again gives the same cohort (the block seeds are not consumed)
    again = nested_cohort(spec.replace(n_patients=50), seed, block=40)
    np.testing.assert_array_equal(again["corners"], small["corners"])


def test_sample_size_is_the_first_crossing_of_a_brute_force_grid():
    """OR 3, 100 replicates, step 10: the n found reaches 0.8 (its CI covers or exceeds
    the target), n − 10 falls short, and a brute-force grid of the same curve at every
    multiple of 10 up to n crosses 0.8 first at n."""
    spec = CohortSpec(n_patients=60, odds_ratio_new=3.0)
    kw = {"n_sims": 100, "seed": 7, "progress": False}
    res = sy.sample_size(
        spec, target=0.8, analysis=["vu", "patient"], step=10, max_patients=160, **kw
    )
    row = res.table.set_index("analysis").loc["vu"]
    assert row["reached"] and row["power"] >= 0.8 and row["power_upper"] >= 0.8
    assert row["power_below"] < 0.8 and row["below"] == row["value"] - 10
    n = int(row["value"])
    grid = crn_power(spec, "n_patients", list(range(10, n + 1, 10)), "vu", **kw)
    short = grid["power"].to_numpy() < 0.8
    assert short[:-1].all() and not short[-1], grid[["n_patients", "power"]]
    # the search's points are the brute-force curve's, exactly (common random numbers)
    ev = res.evaluated[res.evaluated["analysis"] == "vu"].set_index("n_patients")["power"]
    bf = grid.set_index("n_patients")["power"]
    for m in ev.index.intersection(bf.index):
        assert ev[m] == bf[m]
    # the patient-level analysis is searched beside it and reported, reached or not
    pat = res.table.set_index("analysis").loc["patient"]
    assert pat["reached"] or "not reached" in pat["note"]
    assert {"failed_rate", "singular_rate", "separation_rate"} <= set(res.table.columns)


def test_detectable_effect_is_the_first_crossing_and_equals_power_at_that_or():
    """Step 0.5 at 80 patients: the OR found reaches 0.8 and OR − step does not;
    sy.power with the same seed at every OR of the grid (an independent call path) gives
    the same powers, and its first crossing is the OR found."""
    spec = CohortSpec(n_patients=80)
    kw = {"n_sims": 100, "seed": 3, "progress": False}
    res = sy.detectable_effect(spec, n_patients=80, target=0.8, step=0.5, **kw)
    assert res.over == "odds_ratio_new"
    row = res.table.iloc[0]
    assert row["reached"] and row["power"] >= 0.8 and row["power_below"] < 0.8
    found = float(row["value"])
    ors = np.round(np.arange(1.5, found + 1e-9, 0.5), 10)
    powers = [
        sy.power(spec.replace(odds_ratio_new=float(o)), analysis="vu", **kw).power for o in ors
    ]
    crossing = next(o for o, p in zip(ors, powers, strict=True) if p >= 0.8)
    assert crossing == pytest.approx(found)
    ev = res.evaluated.set_index("odds_ratio_new")["power"]
    for o, p in zip(ors, powers, strict=True):
        if o in ev.index:
            assert ev[o] == p


def test_type_one_error_of_the_nested_cohorts_is_alpha():
    """OR = 1 on the sample-size search's own cohorts (nested, 150 patients): the GLMM's
    and the patient-level test's rejections over 200 studies lie in the exact binomial
    99% acceptance region around 0.05 (each fails with probability <= 1% if exact)."""
    spec = CohortSpec(odds_ratio_new=1.0)
    lo, hi = binomial_acceptance_region(200, 0.05, 0.99)
    for analysis in ("vu", "patient"):
        row = crn_power(spec, "n_patients", [150], analysis, n_sims=200, seed=11, progress=False)
        row = row.iloc[0]
        assert row["failed_rate"] < 0.05
        assert lo <= row["rejections"] <= hi, (analysis, row["rejections"], (lo, hi))


def test_a_spec_whose_fits_fail_reports_the_rate_and_stops_early_with_the_reason():
    """20 patients and a new-syndesmophyte risk of 1e-4: most replicates have no event,
    so the fits are refused ('not fitted'); the run stops after its first 20 replicates,
    rounded up to a whole fitting block (50)."""
    spec = CohortSpec(n_patients=20, risk_new=1e-4)
    res = sy.power(
        spec,
        n_sims=200,
        analysis=["vu", "patient"],
        seed=1,
        progress=False,
        check_first=20,
        max_failed=0.5,
    )
    assert res.stopped and res.n_sims == FIT_BLOCK == 50
    assert "no events" in res.stopped and "'vu'" in res.stopped
    row = res.table.set_index("analysis").loc["vu"]
    assert row["failed_rate"] > 0.5 and row["not_fitted_rate"] == row["failed_rate"]
    assert row["stopped_early"] and row["stop_reason"] == res.stopped
    assert row["failure_rule"] == "failed fits count as non-rejections"
    assert "STOPPED EARLY" in res.summary() and "not_fitted_rate" in res.summary()
    # without the check every replicate runs and the rate is still reported
    full = sy.power(spec, n_sims=60, analysis="vu", seed=1, progress=False, max_failed=None)
    assert not full.stopped and full.n_sims == 60
    assert full.table["failed_rate"].iloc[0] > 0.5
    # the first 20 replicates are the same either way (stopping changes no result)
    first = full.replicates.iloc[:50].reset_index(drop=True)
    again = res.replicates[res.replicates["analysis"] == "vu"].reset_index(drop=True)
    np.testing.assert_array_equal(first["log_or"], again["log_or"])
    # a sample-size search meeting such points counts them as short and says so
    ss = sy.sample_size(
        spec,
        target=0.8,
        step=10,
        max_patients=20,
        n_sims=20,
        check_first=10,
        seed=1,
        progress=False,
    )
    assert not ss.table["reached"].iloc[0] and "stopped early" in ss.table["note"].iloc[0]


def test_cli_target_writes_the_answer_the_points_and_a_plot(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "ss"
    args = ["--target", "0.8", "--odds-ratio", "3", "--sims", "40", "--step", "20"]
    assert power_cli(out, *args, "--max-patients", "100", "--analysis", "vu") == 0
    answer = pd.read_csv(out / "search.csv")
    points = pd.read_csv(out / "power.csv")
    assert list(answer["analysis"]) == ["vu"] and {"failed_rate", "singular_rate"} <= set(answer)
    assert set(answer["value"]) <= set(points["n_patients"])
    assert "failed fits count as non-rejections" in (out / "search.md").read_text()
    assert "separation_rate" in (out / "power.md").read_text()
    assert (out / "power.png").stat().st_size > 10_000
    assert (out / "power.pdf").read_bytes().startswith(b"%PDF")
    assert "Smallest number of patients" in capsys.readouterr().out
    bad = ["--target", "0.8", "--patients", "50,60", "--out", str(out)]
    assert refused_in_one_line(capsys, "--patients", *bad)


def test_sample_size_is_the_same_on_two_workers():
    """The search's replicates (nested cohorts) depend only on their seeds: two worker
    processes find the same answer through the same points, exactly."""
    spec = CohortSpec(n_patients=60, odds_ratio_new=3.0)
    kw = {"n_sims": 100, "seed": 5, "progress": False, "step": 20, "max_patients": 100}
    here = sy.sample_size(spec, **kw)
    there = sy.sample_size(spec, workers=2, **kw)
    cols = [c for c in here.evaluated.columns if c != "seconds"]
    assert here.evaluated[cols].equals(there.evaluated[cols])
    assert here.table.equals(there.table)


def test_crn_power_takes_auto_workers():
    """``workers="auto"`` is decided before the run (here: too few studies to fork)."""
    spec = CohortSpec(n_patients=40)
    kw = dict(n_sims=20, seed=2, progress=False)
    here = crn_power(spec, "n_patients", [30, 40], "vu", workers=None, **kw)
    auto = crn_power(spec, "n_patients", [30, 40], "vu", workers="auto", **kw)
    cols = [c for c in here.columns if c != "seconds"]
    pd.testing.assert_frame_equal(here[cols], auto[cols], check_exact=True)
