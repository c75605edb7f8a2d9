"""Reader reliability: ``sy.icc`` against R's psych::ICC, kappa against psych::cohen.kappa,
the unbalanced-data rule, ``sy.reliability`` on two- and three-reader panels, the
Bland–Altman figure and the ``syndesmo reliability`` command.

Stored references (``tests/references/reliability/``, made by ``make_references.R``
there with R 4.2.2 and psych 2.2.9) run without R; the tests marked ``r`` compute the
same numbers live through rpy2.
"""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.analysis.reliability import (
    ICC_COLUMNS,
    ICC_TYPES,
    _cohen,
    _fleiss,
    mean_squares,
    smallest_detectable_change,
)
from syndesmo.cli import app as cli
from syndesmo.errors import DeriveError
from syndesmo.panel.tables import VUPanel

REF = Path(__file__).resolve().parents[1] / "references" / "reliability"
#: Agreement with psych demanded by issue 12.
TOL = 1e-6
COMPARED = ["icc", "F", "p", "ci_low", "ci_high"]


# --------------------------------------------------------------------------- helpers


def wide_to_long(wide: pd.DataFrame, id_col: str = "patient") -> pd.DataFrame:
    """patient, reader_1, reader_2, … → one row per patient × reader (NaN kept)."""
    long = wide.melt(id_vars=id_col, var_name="reader", value_name="score")
    long["reader"] = long["reader"].str.replace("reader_", "").astype(int)
    return long


def assert_matches_psych(ours: pd.DataFrame, ref: pd.DataFrame, tol: float = TOL) -> None:
    ours = ours.set_index("type")
    ref = ref.set_index("type")
    assert list(ours.index) == list(ref.index) == list(ICC_TYPES)
    for col in COMPARED:
        np.testing.assert_allclose(ours[col], ref[col], rtol=0, atol=tol, err_msg=col)
    # p-values of reliable readers are tiny: compare them relatively as well
    np.testing.assert_allclose(ours["p"], ref["p"], rtol=tol, atol=0, err_msg="p (relative)")
    np.testing.assert_array_equal(ours["df1"], ref["df1"])
    np.testing.assert_array_equal(ours["df2"], ref["df2"])


def make_panel(n_readers: int, n_patients: int = 50, seed: int = 7, flip: float = 0.08):
    """A panel read by ``n_readers``: the simulator's true scores (one reader) moved
    by ±1 with probability ``flip`` per reader (reader 2 upwards more often)."""
    truth = sy.simulate_cohort(sy.CohortSpec(n_patients=n_patients, n_readers=1), seed=seed)
    rng = np.random.default_rng(seed)
    parts = []
    for r in range(1, n_readers + 1):
        vu = truth.vu.copy()
        vu.insert(2, "reader", r)
        for col in truth.score_columns:
            top = 6 if col.startswith("mri") else 3
            v = vu[col].to_numpy()
            move = rng.random(v.size) < flip
            up = rng.random(v.size) < (0.7 if r == 2 else 0.5)
            shifted = np.clip(v + np.where(up, 1, -1), 0, top)
            vu[col] = np.where(move & ~np.isnan(v), shifted, v)
        parts.append(vu)
    vu = pd.concat(parts, ignore_index=True)
    return VUPanel(vu, truth.patients, source=f"make_panel({n_readers} readers)")


def pandas_totals(panel, score: str, week: int) -> pd.DataFrame:
    """patients × readers totals by plain pandas (the readers' sums at ``week``)."""
    if score == "mri":
        cols = [f"mri_w{week}"]
    else:
        cols = [f"msasss_upper_w{week}", f"msasss_lower_w{week}"]
    vu = panel.vu.copy()
    vu["total"] = vu[cols].sum(axis=1, min_count=len(cols))
    return vu.pivot_table(index="patient", columns="reader", values="total", aggfunc="sum")


# --------------------------------------------------------------------------- sy.icc


def test_icc_matches_psych_three_readers():
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    ours = sy.icc(wide_to_long(wide), target="patient", rater="reader", rating="score")
    assert list(ours.table.columns) == list(ICC_COLUMNS)
    assert_matches_psych(ours.table, pd.read_csv(REF / "icc_three_readers.csv"))
    assert ours.n_targets == 40 and ours.n_raters == 3
    assert ours.excluded_targets == []
    # absolute agreement is below consistency when readers differ systematically
    by = ours.table.set_index("type")["icc"]
    assert by["ICC2"] < by["ICC3"]


def test_icc_matches_psych_on_shrout_fleiss_table_2():
    """Shrout & Fleiss (1979), Table 2 (6 targets × 4 judges), and the values they
    print in Table 4 (two decimals)."""
    sf = np.array(
        [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
        dtype=float,
    )
    long = pd.DataFrame(
        [(f"t{i}", f"j{j}", sf[i, j]) for i in range(6) for j in range(4)],
        columns=["target", "judge", "rating"],
    )
    ours = sy.icc(long, target="target", rater="judge", rating="rating")
    assert_matches_psych(ours.table, pd.read_csv(REF / "icc_shrout_fleiss.csv"))
    published = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62}
    published["ICC3k"] = 0.91
    got = ours.table.set_index("type")["icc"].round(2).to_dict()
    assert got == published


def test_icc_close_to_psych_default_lmer_on_balanced_data():
    """psych's default (lmer = TRUE) rebuilds the mean squares from REML variance
    components; on balanced data they are the ANOVA's up to lme4's convergence
    tolerance (here about 1e-5 relative), so agreement is close but not 1e-6."""
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    ours = sy.icc(wide_to_long(wide)).table.set_index("type")
    ref = pd.read_csv(REF / "icc_three_readers_lmer.csv").set_index("type")
    np.testing.assert_allclose(ours["icc"], ref["icc"], atol=1e-4)
    np.testing.assert_allclose(ours["F"], ref["F"], rtol=1e-4)


def test_icc_unbalanced_is_listwise_as_psych_na_omit():
    wide = pd.read_csv(REF / "ratings_unbalanced.csv")
    long = wide_to_long(wide)
    ours = sy.icc(long)
    assert_matches_psych(ours.table, pd.read_csv(REF / "icc_unbalanced.csv"))
    incomplete = wide.loc[wide.drop(columns="patient").isna().any(axis=1), "patient"].tolist()
    assert len(incomplete) == 4
    assert ours.excluded_targets == incomplete
    assert ours.n_targets == 36
    ledger = ours.ledger.to_frame()
    assert ledger["n_rows"].tolist() == [4]
    assert "listwise" in ledger["reason"].iloc[0]
    # the same numbers as the complete targets alone
    complete = sy.icc(long[~long["patient"].isin(incomplete)]).table
    pd.testing.assert_frame_equal(ours.table, complete, check_like=False)
    # and not psych's default, which fits all 40 patients' ratings by REML
    lmer = pd.read_csv(REF / "icc_unbalanced_lmer.csv").set_index("type")
    assert lmer["df1"].iloc[0] == 39
    assert abs(ours.table.set_index("type").loc["ICC2", "icc"] - lmer.loc["ICC2", "icc"]) > 1e-3


def test_icc_missing_rows_count_as_missing_ratings():
    """A rater with no row for a target is the same as a NaN rating."""
    wide = pd.read_csv(REF / "ratings_unbalanced.csv")
    long = wide_to_long(wide)
    dropped = long.dropna(subset=["score"])
    pd.testing.assert_frame_equal(sy.icc(long).table, sy.icc(dropped).table)


def test_icc_names_and_invariances():
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    long = wide_to_long(wide)
    base = sy.icc(long).table.set_index("type")
    assert base.index.tolist() == ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    assert "absolute agreement" in base.loc["ICC2", "description"]
    assert "consistency" in base.loc["ICC3", "description"]
    # row order does not matter
    shuffled = sy.icc(long.sample(frac=1.0, random_state=3)).table.set_index("type")
    np.testing.assert_allclose(shuffled[COMPARED], base[COMPARED], rtol=1e-12)
    # a reader's constant offset: consistency unchanged, absolute agreement lower
    shifted = long.assign(score=long["score"] - np.where(long["reader"].eq(1), 8.0, 0.0))
    moved = sy.icc(shifted).table.set_index("type")
    np.testing.assert_allclose(moved.loc["ICC3", "icc"], base.loc["ICC3", "icc"], rtol=1e-12)
    assert moved.loc["ICC2", "icc"] < base.loc["ICC2", "icc"] - 0.05
    # level: a 90% interval lies inside the 95% one
    narrow = sy.icc(long, level=0.90).table.set_index("type")
    assert (narrow["ci_low"] >= base["ci_low"]).all()
    assert (narrow["ci_high"] <= base["ci_high"]).all()


def test_icc_satterthwaite_form_equals_shrout_fleiss_form():
    """ICC(2,1)'s interval: McGraw & Wong's a/b form of Satterthwaite's degrees of
    freedom (used here) equals Shrout & Fleiss' F_J form (used by psych)."""
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    y = wide.drop(columns="patient").to_numpy(float)
    ms = mean_squares(y)
    n, k = ms.n, ms.k
    rho = (ms.msr - ms.mse) / (ms.msr + (k - 1) * ms.mse + k * (ms.msc - ms.mse) / n)
    fj = ms.msc / ms.mse
    num = (k - 1) * (n - 1) * (k * rho * fj + n * (1 + (k - 1) * rho) - k * rho) ** 2
    den = (n - 1) * k**2 * rho**2 * fj**2 + (n * (1 + (k - 1) * rho) - k * rho) ** 2
    v_sf = num / den
    a = k * rho / (n * (1 - rho))
    b = 1 + k * rho * (n - 1) / (n * (1 - rho))
    v_mw = (a * ms.msc + b * ms.mse) ** 2 / (
        (a * ms.msc) ** 2 / (k - 1) + (b * ms.mse) ** 2 / ((n - 1) * (k - 1))
    )
    assert v_mw == pytest.approx(v_sf, rel=1e-12)


def test_icc_perfect_consistency_and_no_variation():
    """Readers one point apart on every target: ICC(3,1) = 1 with F = ∞; ICC(2,1) and
    its limits as psych::ICC(cbind(c(1,4,2,8,3), c(2,5,3,9,4)), lmer = FALSE) prints
    them (0.9358974, 0.01597054 to 0.9944253). Identical constant ratings: NaN."""
    scores = np.array([1.0, 4, 2, 8, 3])
    long = pd.DataFrame(
        {
            "patient": np.repeat(np.arange(5), 2),
            "reader": [1, 2] * 5,
            "score": np.column_stack([scores, scores + 1]).ravel(),
        }
    )
    got = sy.icc(long).table.set_index("type")
    assert got.loc["ICC3", "icc"] == 1.0 and got.loc["ICC3", "F"] == np.inf
    assert got.loc["ICC3", ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    assert got.loc["ICC2", "icc"] == pytest.approx(0.9358974, abs=1e-7)
    assert got.loc["ICC2", "ci_low"] == pytest.approx(0.01597054, abs=1e-8)
    assert got.loc["ICC2", "ci_high"] == pytest.approx(0.9944253, abs=1e-7)
    same = sy.icc(long.assign(score=long["score"] * 0 + 2.0)).table
    assert same[COMPARED].isna().all().all()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (pd.DataFrame({"patient": [1, 2], "reader": [1, 1], "score": [1.0, 2.0]}), "two or more"),
        (
            pd.DataFrame({"patient": [1, 1, 1], "reader": [1, 1, 2], "score": [1.0, 2.0, 3.0]}),
            "repeat",
        ),
        (pd.DataFrame({"patient": [1, 1], "reader": [1, 2]}), "not in the data"),
        (
            pd.DataFrame({"patient": [1, 1], "reader": [1, 2], "score": ["a", "b"]}),
            "must be numbers",
        ),
        (
            pd.DataFrame(
                {"patient": [1, 1, 2, 2], "reader": [1, 2, 1, 2], "score": [1.0, 2.0, 3.0, None]}
            ),
            "complete",
        ),
    ],
)
def test_icc_bad_input_is_one_clear_error(data, words):
    with pytest.raises(DeriveError, match=words) as info:
        sy.icc(data)
    assert "\n" not in str(info.value)


def test_icc_bad_level():
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    with pytest.raises(DeriveError, match="level"):
        sy.icc(wide_to_long(wide), level=95)


# --------------------------------------------------------------------------- kappa


def test_cohen_kappa_matches_psych():
    k = pd.read_csv(REF / "kappa_binary.csv")
    ref = pd.read_csv(REF / "kappa_pairs.csv")
    for row in ref.itertuples(index=False):
        a = k[f"reader_{row.reader_a}"].to_numpy()
        b = k[f"reader_{row.reader_b}"].to_numpy()
        got = _cohen(a, b, 0.95)
        assert got["kappa"] == pytest.approx(row.kappa, abs=TOL)
        assert got["se"] ** 2 == pytest.approx(row.var_kappa, abs=TOL)
        assert got["ci_low"] == pytest.approx(row.ci_low, abs=TOL)
        assert got["ci_high"] == pytest.approx(row.ci_high, abs=TOL)


def test_fleiss_kappa_by_hand():
    """Fleiss (1971): P̄ = mean over subjects of agreeing rater pairs, P̄e = Σ p_j²."""
    k = pd.read_csv(REF / "kappa_binary.csv").to_numpy()
    m = k.shape[1]
    n1 = k.sum(axis=1)
    counts = np.column_stack([m - n1, n1])
    p_i = (np.sum(counts**2, axis=1) - m) / (m * (m - 1))
    p_j = counts.sum(axis=0) / counts.sum()
    expected = (p_i.mean() - np.sum(p_j**2)) / (1 - np.sum(p_j**2))
    assert _fleiss(k) == pytest.approx(expected, abs=1e-12)


def test_kappa_undefined_without_variation():
    same = np.zeros(20)
    got = _cohen(same, same, 0.95)
    assert np.isnan(got["kappa"]) and np.isnan(got["ci_low"])
    assert np.isnan(_fleiss(np.zeros((20, 3))))


# --------------------------------------------------------------------------- SDC


def test_smallest_detectable_change_formula():
    # Bruynesteyn et al. 2005: SDC = 1.96 × SD_Δ / (√2 × √k)
    assert smallest_detectable_change(2.0, 1, 0.95) == pytest.approx(1.959964 * 2 / np.sqrt(2))
    assert smallest_detectable_change(2.0, 2, 0.95) == pytest.approx(1.959964 * 2 / 2, rel=1e-6)
    assert smallest_detectable_change(2.0, 1, 0.80) == pytest.approx(1.281552 * 2 / np.sqrt(2))


# --------------------------------------------------------------------------- sy.reliability


@pytest.fixture(scope="module")
def two_readers():
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=60, n_readers=2), seed=11)
    return panel, sy.reliability(panel)


def test_reliability_two_readers_tables(two_readers):
    _, rel = two_readers
    assert rel.readers == [1, 2]
    measures = {
        "ASspiMRI-a total": [
            "status, week 0",
            "status, week 24",
            "status, week 102",
            "change, week 0 to 102",
        ],
        "mSASSS total": ["status, week 0", "status, week 102", "change, week 0 to 102"],
    }
    want = [(s, m) for s, ms in measures.items() for m in ms]
    got = list(rel.icc[["score", "measure"]].drop_duplicates().itertuples(index=False, name=None))
    assert got == want
    assert set(rel.icc["type"]) == {"ICC2", "ICC3"}
    assert rel.icc["description"].str.contains("absolute agreement|consistency").all()
    assert set(rel.icc["readers"]) == {"1 vs 2"}
    assert rel.kappa["method"].eq("Cohen's kappa").all()
    assert rel.kappa["status"].str.startswith("inflamed").sum() == 3
    assert rel.kappa["status"].str.startswith("syndesmophyte").sum() == 2
    assert len(rel.ledger) == 0


def test_reliability_icc_equals_icc_of_pandas_totals(two_readers):
    panel, rel = two_readers
    for score, name, week in (("mri", "ASspiMRI-a total", 24), ("x", "mSASSS total", 102)):
        totals = pandas_totals(panel, score, week)
        long = totals.reset_index().melt(id_vars="patient", value_name="score")
        direct = sy.icc(long).table.set_index("type")
        rows = rel.icc[rel.icc["score"].eq(name) & rel.icc["measure"].eq(f"status, week {week}")]
        rows = rows.set_index("type")
        for kind in ("ICC2", "ICC3"):
            for col in COMPARED:
                assert rows.loc[kind, col] == pytest.approx(direct.loc[kind, col], rel=1e-12)
        # Bland–Altman row equals numpy on the same differences
        d = totals[1] - totals[2]
        ag = rel.agreement.set_index(["score", "measure"]).loc[(name, f"status, week {week}")]
        assert ag["mean_difference"] == pytest.approx(d.mean())
        assert ag["sd_difference"] == pytest.approx(d.std(ddof=1))
        assert ag["loa_high"] == pytest.approx(d.mean() + 1.959964 * d.std(ddof=1), rel=1e-6)
        assert np.isnan(ag["sdc_95_one_reader"])  # status rows: no SDC


def test_reliability_change_scores_and_sdc(two_readers):
    panel, rel = two_readers
    change = pandas_totals(panel, "x", 102) - pandas_totals(panel, "x", 0)
    d = change[1] - change[2]
    ag = rel.agreement.set_index(["score", "measure"])
    ag = ag.loc[("mSASSS total", "change, week 0 to 102")]
    sd = d.std(ddof=1)
    assert ag["sd_difference"] == pytest.approx(sd)
    assert ag["sdc_95_one_reader"] == pytest.approx(1.959964 * sd / np.sqrt(2), rel=1e-6)
    assert ag["sdc_95_mean_of_readers"] == pytest.approx(1.959964 * sd / 2, rel=1e-6)
    assert ag["sdc_80_one_reader"] == pytest.approx(1.281552 * sd / np.sqrt(2), rel=1e-6)
    pts = rel.differences
    pts = pts[pts["score"].eq("mSASSS total") & pts["measure"].str.startswith("change")]
    np.testing.assert_allclose(np.sort(pts["difference"]), np.sort(d.to_numpy()))


def test_reliability_kappa_equals_direct_statsmodels(two_readers):
    from statsmodels.stats.inter_rater import cohens_kappa

    panel, rel = two_readers
    vu = panel.vu
    wide = vu.pivot_table(index=["patient", "vu"], columns="reader", values="mri_w0")
    a, b = (wide[1] >= 1).astype(int), (wide[2] >= 1).astype(int)
    table = pd.crosstab(a, b).to_numpy()
    direct = cohens_kappa(table)
    row = rel.kappa[rel.kappa["status"].str.startswith("inflamed") & rel.kappa["week"].eq(0)]
    assert row["kappa"].iloc[0] == pytest.approx(direct.kappa, rel=1e-12)
    assert row["n_vus"].iloc[0] == len(wide)
    assert row["pct_agreement"].iloc[0] == pytest.approx(100 * (a == b).mean())


def test_reliability_threshold_changes_inflamed_status(two_readers):
    panel, rel = two_readers
    rel3 = sy.reliability(panel, threshold=3)
    assert rel3.kappa["status"].iloc[0] == "inflamed (ASspiMRI-a ≥ 3)"
    first = rel.kappa["pct_positive"].iloc[0]
    assert rel3.kappa["pct_positive"].iloc[0] < first
    pd.testing.assert_frame_equal(rel3.icc, rel.icc)


def test_reliability_three_readers_pairs_and_fleiss():
    panel = make_panel(3, n_patients=40)
    rel = sy.reliability(panel)
    labels = ["all 3 (1, 2, 3)", "1 vs 2", "1 vs 3", "2 vs 3"]
    assert list(pd.unique(rel.icc["readers"])) == labels
    assert list(pd.unique(rel.agreement["readers"])) == labels
    kap = rel.kappa[rel.kappa["week"].eq(0) & rel.kappa["status"].str.startswith("inflamed")]
    assert kap["method"].tolist() == ["Fleiss' kappa"] + ["Cohen's kappa"] * 3
    # pairs: the ICC of the pair's totals alone
    totals = pandas_totals(panel, "mri", 0)
    for a, b in combinations([1, 2, 3], 2):
        long = totals[[a, b]].reset_index().melt(id_vars="patient", value_name="score")
        direct = sy.icc(long).table.set_index("type").loc["ICC2", "icc"]
        row = rel.icc[
            rel.icc["readers"].eq(f"{a} vs {b}")
            & rel.icc["score"].eq("ASspiMRI-a total")
            & rel.icc["measure"].eq("status, week 0")
            & rel.icc["type"].eq("ICC2")
        ]
        assert row["icc"].iloc[0] == pytest.approx(direct, rel=1e-12)
    # all readers: SD of a two-reader difference pooled as √(2·MSE), no limits
    ag = rel.agreement.set_index(["score", "measure", "readers"])
    row = ag.loc[("ASspiMRI-a total", "status, week 0", "all 3 (1, 2, 3)")]
    ms = mean_squares(totals.to_numpy())
    assert row["sd_difference"] == pytest.approx(np.sqrt(2 * ms.mse))
    assert np.isnan(row["loa_low"]) and np.isnan(row["mean_difference"])
    change = ag.loc[("mSASSS total", "change, week 0 to 102", "all 3 (1, 2, 3)")]
    assert change["sdc_95_mean_of_readers"] == pytest.approx(
        change["sdc_95_one_reader"] / np.sqrt(3)
    )
    # reader 2 reads higher: absolute agreement below consistency for its pairs
    pair = rel.icc[rel.icc["readers"].eq("1 vs 2") & rel.icc["measure"].eq("status, week 0")]
    mri = pair[pair["score"].eq("ASspiMRI-a total")].set_index("type")["icc"]
    assert mri["ICC2"] < mri["ICC3"]


def test_reliability_unscored_vus_leave_patients_out_with_a_ledger():
    panel = make_panel(2, n_patients=30)
    vu = panel.vu.copy()
    p1, p2 = panel.patient_ids[:2]
    # reader 2 did not score one VU of patient 1 at week 0; nobody imaged patient 2 at week 24
    vu.loc[vu["patient"].eq(p1) & vu["reader"].eq(2) & vu["vu"].eq("C3/4"), "mri_w0"] = np.nan
    vu.loc[vu["patient"].eq(p2), "mri_w24"] = np.nan
    rel = sy.reliability(VUPanel(vu, panel.patients))
    icc = rel.icc.set_index(["score", "measure", "type"])
    assert icc.loc[("ASspiMRI-a total", "status, week 0", "ICC2"), "n_patients"] == 29
    assert icc.loc[("ASspiMRI-a total", "status, week 24", "ICC2"), "n_patients"] == 29
    assert icc.loc[("ASspiMRI-a total", "status, week 102", "ICC2"), "n_patients"] == 30
    # change week 0 → 102: patient 1 lacks a reader-2 change of C3/4
    assert icc.loc[("ASspiMRI-a total", "change, week 0 to 102", "ICC2"), "n_patients"] == 29
    ledger = rel.ledger.to_frame()
    rows = ledger.set_index("step")
    week0 = rows.loc["ASspiMRI-a total, status, week 0"]
    assert (
        week0["reason"] == "a reader lacks a score of a VU another reader scored (patient left out)"
    )
    assert week0["n_rows"] == 1 and week0["n_patients"] == 1
    week24 = rows.loc["ASspiMRI-a total, status, week 24"]
    assert week24["reason"] == "no reader scored this patient at this visit"
    assert week24["n_rows"] == 1
    kap = rel.kappa.set_index(["status", "week"])
    assert kap.loc[("inflamed (ASspiMRI-a ≥ 1)", 0), "n_vus"] == 30 * 12 - 1
    assert kap.loc[("inflamed (ASspiMRI-a ≥ 1)", 24), "n_vus"] == 29 * 12
    assert any(ledger["reason"].eq("VU not scored by every reader"))


def test_reliability_second_reader_reads_a_sample():
    """The usual design: every patient read by reader 1, a sample also by reader 2."""
    panel = make_panel(2, n_patients=30)
    sample = panel.patient_ids[:12]
    vu = panel.vu[panel.vu["reader"].eq(1) | panel.vu["patient"].isin(sample)]
    rel = sy.reliability(VUPanel(vu, panel.patients))
    assert set(rel.icc["n_patients"]) == {12}
    assert set(rel.kappa["n_vus"]) == {12 * 12}
    ledger = rel.ledger.to_frame()
    totals = ledger[ledger["reason"].str.startswith("not read by every reader")]
    assert len(totals) == 7 and set(totals["n_rows"]) == {18}
    vus = ledger[ledger["step"].str.startswith("kappa")]
    assert set(vus["n_rows"]) == {18 * 12} and set(vus["n_patients"]) == {18}


def test_reliability_needs_readers():
    one = sy.simulate_cohort(sy.CohortSpec(n_patients=10), seed=1)
    with pytest.raises(DeriveError, match="no 'reader' column") as info:
        sy.reliability(one)
    assert "\n" not in str(info.value)
    vu = one.vu.copy()
    vu.insert(2, "reader", "A")
    with pytest.raises(DeriveError, match="one reader"):
        sy.reliability(VUPanel(vu, one.patients))


# --------------------------------------------------------------------------- figure


def test_bland_altman_figure_draws_labelled_limits(two_readers, tmp_path):
    from syndesmo.output.reliability_plots import bland_altman_figure

    _, rel = two_readers
    fig = bland_altman_figure(rel.differences, rel.agreement)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6  # two scores × (first status, last status, change)
    ag = rel.agreement.set_index(["score", "measure"])
    for ax in axes:
        score, measure = ax.get_title(loc="left").split(" (n =")[0].split("\n")
        row = ag.loc[(score, measure)]
        ys = sorted(line.get_ydata()[0] for line in ax.get_lines())
        for value in (row["loa_low"], row["mean_difference"], row["loa_high"]):
            assert any(abs(y - value) < 1e-12 for y in ys)
        texts = " ".join(t.get_text() for t in ax.texts)
        assert "+1.96 SD" in texts and "−1.96 SD" in texts and "mean" in texts
        assert "reader 1 − reader 2" in ax.get_ylabel()
    for suffix in ("png", "pdf"):
        fig.savefig(tmp_path / f"ba.{suffix}")
        assert (tmp_path / f"ba.{suffix}").stat().st_size > 1000


# --------------------------------------------------------------------------- command line


def test_cli_reliability_writes_tables_and_figures(tmp_path, capsys):
    panel = make_panel(3, n_patients=25)
    panel.save(tmp_path / "vu.csv", tmp_path / "patients.csv")
    out = tmp_path / "rel"
    rc = cli.main(
        [
            "reliability",
            "--vu",
            str(tmp_path / "vu.csv"),
            "--patients",
            str(tmp_path / "patients.csv"),
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "ICC(2,1), absolute agreement" in text and "ICC(3,1), consistency" in text
    assert "Fleiss' kappa" in text and "SDC 95%" in text
    names = {p.name for p in out.iterdir()}
    for table in ("icc", "agreement", "kappa", "ledger"):
        assert {f"{table}.csv", f"{table}.md"} <= names
    assert {"reliability.md", "differences.csv", ".syndesmo-output"} <= names
    for a, b in ((1, 2), (1, 3), (2, 3)):
        assert {f"bland_altman_{a}_vs_{b}.png", f"bland_altman_{a}_vs_{b}.pdf"} <= names
    icc = pd.read_csv(out / "icc.csv")
    assert icc.columns[:3].tolist() == ["score", "measure", "readers"]
    assert not any(p.name.startswith(".rel.tmp") for p in tmp_path.iterdir())


def test_cli_reliability_reads_a_european_export_with_missing_codes(tmp_path, capsys):
    """The input options every panel command has: ';'-separated fields with decimal
    commas, and -99 for an unread image."""
    panel = make_panel(2, n_patients=20)
    vu = panel.vu.copy()
    vu.loc[vu.index[:3], "mri_w0"] = np.nan
    vu.to_csv(tmp_path / "vu.csv", sep=";", decimal=",", index=False, na_rep="-99")
    panel.patients.to_csv(tmp_path / "patients.csv", sep=";", decimal=",", index=False)
    args = ["reliability", "--vu", str(tmp_path / "vu.csv")]
    args += ["--patients", str(tmp_path / "patients.csv"), "--decimal", ","]
    assert cli.main([*args, "--missing-codes=-99", "--out", str(tmp_path / "rel")]) == 0
    capsys.readouterr()
    got = pd.read_csv(tmp_path / "rel" / "icc.csv")
    expected = sy.reliability(VUPanel(vu, panel.patients.copy(), source="in memory")).icc
    assert len(got) == len(expected)
    np.testing.assert_allclose(got["icc"], expected["icc"], rtol=1e-6)
    # without the code, -99 is refused, not read as a score
    assert cli.main([*args]) == 2
    assert "-99" in capsys.readouterr().err


def test_cli_reliability_help_is_complete(capsys):
    assert cli.main(["reliability", "--help"]) == 0
    out = capsys.readouterr().out
    for words in (
        "--vu",
        "--patients",
        "--threshold",
        "--level",
        "--out",
        "ICC(2,1)",
        "ICC(3,1)",
        "smallest",
        "Cohen's kappa",
        "Fleiss' kappa",
        "Bland-Altman",
        "example:",
    ):
        assert words in out, words


def test_cli_reliability_one_reader_is_one_line(tmp_path, capsys):
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=10), seed=1)
    panel.save(tmp_path / "vu.csv", tmp_path / "patients.csv")
    rc = cli.main(
        ["reliability", "--vu", str(tmp_path / "vu.csv"), "--patients", str(tmp_path / "p.csv")]
    )
    assert rc == 2  # missing patient file
    capsys.readouterr()
    rc = cli.main(
        [
            "reliability",
            "--vu",
            str(tmp_path / "vu.csv"),
            "--patients",
            str(tmp_path / "patients.csv"),
            "--out",
            str(tmp_path / "rel"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("syndesmo reliability: error: reader reliability needs two or more")
    assert not (tmp_path / "rel").exists()


# --------------------------------------------------------------------------- live R


@pytest.fixture(scope="module")
def r_psych():
    """R with psych through rpy2: skip locally, fail when SYNDESMO_REQUIRE_R=1."""
    try:
        from syndesmo.engines.lme4 import import_robjects

        ro = import_robjects()  # restores LD_LIBRARY_PATH after R starts
        from rpy2.robjects.packages import importr

        importr("psych")
    except Exception as exc:  # any failure means R or psych is unusable
        if os.environ.get("SYNDESMO_REQUIRE_R") == "1":
            pytest.fail(f"R with psych is not usable: {exc}")
        pytest.skip(f"R with psych is not usable: {exc}")
    return ro


def _psych_icc(ro, y: np.ndarray) -> pd.DataFrame:
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + numpy2ri.converter):
        ro.globalenv["syndesmo_y"] = np.asarray(y, dtype=float)
    ro.r("syndesmo_r <- psych::ICC(syndesmo_y, lmer = FALSE)$results")
    cols = {"type": "type", "ICC": "icc", "F": "F", "df1": "df1", "df2": "df2", "p": "p"}
    out = pd.DataFrame({new: list(ro.r(f"syndesmo_r${old}")) for old, new in cols.items()})
    out["ci_low"] = list(ro.r('syndesmo_r[["lower bound"]]'))
    out["ci_high"] = list(ro.r('syndesmo_r[["upper bound"]]'))
    return out


@pytest.mark.r
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_icc_matches_psych_live(r_psych, seed):
    """Fresh three-reader data each seed, including a small n and a reader with a bias."""
    rng = np.random.default_rng(seed)
    n = (12, 40, 150)[seed - 1]
    truth = rng.normal(20, 6, n)
    y = np.column_stack([truth + b + rng.normal(0, 2.0, n) for b in (0.0, 1.5, -1.0)])
    y = np.round(y)
    long = pd.DataFrame(
        {"patient": np.repeat(np.arange(n), 3), "reader": np.tile([1, 2, 3], n), "score": y.ravel()}
    )
    assert_matches_psych(sy.icc(long).table, _psych_icc(r_psych, y))


@pytest.mark.r
def test_icc_matches_psych_live_on_stored_data_and_reliability_totals(r_psych):
    wide = pd.read_csv(REF / "ratings_three_readers.csv")
    y = wide.drop(columns="patient").to_numpy(float)
    assert_matches_psych(sy.icc(wide_to_long(wide)).table, _psych_icc(r_psych, y))
    # the totals sy.reliability compares, three readers
    panel = make_panel(3, n_patients=40, seed=5)
    totals = pandas_totals(panel, "x", 102)
    rel = sy.reliability(panel)
    ref = _psych_icc(r_psych, totals.to_numpy()).set_index("type")
    rows = rel.icc[
        rel.icc["readers"].eq("all 3 (1, 2, 3)")
        & rel.icc["score"].eq("mSASSS total")
        & rel.icc["measure"].eq("status, week 102")
    ].set_index("type")
    for kind in ("ICC2", "ICC3"):
        for col in COMPARED:
            assert rows.loc[kind, col] == pytest.approx(ref.loc[kind, col], abs=TOL)


@pytest.mark.r
def test_cohen_kappa_matches_psych_live(r_psych):
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import localconverter

    rng = np.random.default_rng(4)
    truth = rng.random(500) < 0.25
    a = np.where(rng.random(500) < 0.08, ~truth, truth).astype(float)
    b = np.where(rng.random(500) < 0.12, ~truth, truth).astype(float)
    with localconverter(r_psych.default_converter + numpy2ri.converter):
        r_psych.globalenv["syndesmo_ab"] = np.column_stack([a, b])
    r_psych.r("syndesmo_k <- psych::cohen.kappa(syndesmo_ab)")
    got = _cohen(a, b, 0.95)
    assert got["kappa"] == pytest.approx(r_psych.r("syndesmo_k$kappa")[0], abs=TOL)
    assert got["se"] ** 2 == pytest.approx(r_psych.r("syndesmo_k$var.kappa")[0], abs=TOL)
    assert got["ci_low"] == pytest.approx(r_psych.r("syndesmo_k$confid[1, 1]")[0], abs=TOL)
    assert got["ci_high"] == pytest.approx(r_psych.r("syndesmo_k$confid[1, 3]")[0], abs=TOL)
