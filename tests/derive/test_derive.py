"""Outcomes, exposures, reader rules and the ledger of ``syndesmo.derive.frame``.

Every expected value is worked out by hand in the test from the mSASSS / ASspiMRI-a
rules (see the module docstring of ``syndesmo.derive.frame``), on small hand-built panels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from syndesmo.derive.frame import (
    analysis_frame,
    available_exposures,
    corner_outcome,
    derive_arrays,
    exposure_values,
    panel_arrays,
)
from syndesmo.errors import DeriveError
from syndesmo.panel.tables import VUPanel

NA = math.nan


def build_panel(rows, patients=None, mri_weeks=(0, 24, 102), xray_weeks=(0, 102)) -> VUPanel:
    """rows: (patient, vu, mri scores by week, upper corner by x-ray week, lower corner
    by x-ray week[, reader])."""
    records = []
    for row in rows:
        patient, vu, mri, upper, lower = row[:5]
        rec = {"patient": patient, "vu": vu}
        if len(row) > 5:
            rec["reader"] = row[5]
        rec.update({f"mri_w{w}": float(s) for w, s in zip(mri_weeks, mri, strict=True)})
        rec.update({f"msasss_upper_w{w}": float(s) for w, s in zip(xray_weeks, upper, strict=True)})
        rec.update({f"msasss_lower_w{w}": float(s) for w, s in zip(xray_weeks, lower, strict=True)})
        records.append(rec)
    vu = pd.DataFrame(records)
    if patients is None:
        ids = list(dict.fromkeys(vu["patient"]))
        patients = pd.DataFrame({"patient": ids, "arm": ["placebo"] * len(ids)})
    return VUPanel(vu, patients)


# --------------------------------------------------------------------- outcomes

#: (vu, upper w0, upper w102, lower w0, lower w102, MRI w0, expected) for
#: new_syndesmophyte with exposure w0; expected = event (0/1) or the reason left out.
NEW_CASES = [
    ("C2/3", 0, 0, 0, 2, 1, 1),  # syndesmophyte-free at baseline, lower corner → 2
    ("C3/4", 1, 1, 1, 1, 0, 0),  # corner scores 1 (erosion/squaring) stay 1: no event
    ("C4/5", 2, 2, 0, 0, 0, "not at risk"),  # a syndesmophyte at baseline
    ("C5/6", 0, 3, 1, 3, 2, 1),  # straight to a bridge: an event
    ("C6/7", 0, NA, 0, NA, 0, "x-ray"),  # follow-up x-ray missing
    ("C7/T1", NA, 0, NA, 0, 0, "x-ray"),  # baseline x-ray missing
    ("T1/2", NA, NA, NA, NA, 3, "thoracic"),  # not covered by the mSASSS
    ("T12/L1", 1, 1, 0, 1, NA, "mri"),  # no event, but MRI at week 0 missing
    ("L1/2", 3, 3, 3, 3, 0, "not at risk"),  # bridged
    ("L2/3", 2, 2, 0, NA, 0, "not at risk"),  # not at risk is known from the baseline
    ("L3/4", 1, 0, 0, 0, 4, 0),  # a score that goes down is no event
]


def _new_panel():
    rows = [
        ("P1", vu, (mri, 0, 0), (u0, u1), (l0, l1)) for vu, u0, u1, l0, l1, mri, _ in NEW_CASES[:6]
    ] + [
        ("P2", vu, (mri, 0, 0), (u0, u1), (l0, l1)) for vu, u0, u1, l0, l1, mri, _ in NEW_CASES[6:]
    ]
    return build_panel(rows)


def test_new_syndesmophyte_each_case_and_ledger_order():
    frame = analysis_frame(_new_panel(), "new_syndesmophyte", "w0")
    expected = {c[0]: c[6] for c in NEW_CASES if not isinstance(c[6], str)}
    got = dict(zip(frame["vu"], frame["new_syndesmophyte"], strict=True))
    assert got == expected
    assert frame["new_syndesmophyte"].dtype == np.int64
    # exposure: inflamed at week 0 (score ≥ 1) for C2/3 (1), C5/6 (2), L3/4 (4)
    assert dict(zip(frame["vu"], frame["mri"], strict=True)) == {
        "C2/3": 1,
        "C3/4": 0,
        "C5/6": 1,
        "L3/4": 1,
    }
    # baseline_corner: highest baseline corner score
    assert frame.data.set_index("vu")["baseline_corner"].to_dict() == {
        "C2/3": 0.0,
        "C3/4": 1.0,
        "C5/6": 1.0,
        "L3/4": 1.0,
    }
    assert list(frame["region"]) == ["cervical", "cervical", "cervical", "lumbar"]
    ledger = frame.ledger.to_frame()
    # order: thoracic, not at risk, x-ray missing, MRI missing; patients per reason
    assert ledger["reason"].str.split().str[0].tolist() == ["VU", "not", "x-ray", "MRI"]
    assert "thoracic" in ledger["reason"].iloc[0]
    assert ledger["n_rows"].tolist() == [1, 3, 2, 1]
    assert ledger["n_patients"].tolist() == [1, 2, 1, 1]
    assert frame.settings == {
        "outcome": "new_syndesmophyte",
        "exposure": "w0",
        "threshold": 1.0,
        "readers": "mean",
        "covariates": [],
        "reference_arm": None,
    }


#: (upper w0, upper w102, lower w0, lower w102, expected growth) — expected is the
#: event 0/1 or None for "not at risk".
GROWTH_CASES = [
    ((2, 3, 0, 0), 1),  # 2 → 3: bridging
    ((2, 2, 0, 2), 1),  # a second corner becomes a syndesmophyte
    ((2, 2, 1, 1), 0),  # no change
    ((2, 2, 2, 2), 0),  # two syndesmophytes, unchanged
    ((2, 3, 2, 3), 1),  # both bridge
    ((3, 3, 0, 0), 0),  # one bridged corner, the other can still form: at risk, no event
    ((3, 3, 0, 2), 1),  # … and it forms
    ((3, 3, 2, 3), 1),  # a 2 beside a 3 bridges
    ((3, 3, 3, 3), None),  # both bridged: cannot grow
    ((0, 2, 1, 1), None),  # no syndesmophyte at baseline
    ((1, 1, 1, 2), None),
    ((2, 1, 0, 0), 0),  # a reader's 2 read as 1 later is no growth
]


def test_growth_each_case():
    base = np.array([[c[0][0], c[0][2]] for c in GROWTH_CASES], dtype=float)
    last = np.array([[c[0][1], c[0][3]] for c in GROWTH_CASES], dtype=float)
    known_b, at_risk, known_f, event = corner_outcome(base, last, "growth")
    assert known_b.all() and known_f.all()
    assert at_risk.tolist() == [c[1] is not None for c in GROWTH_CASES]
    assert [int(e) for e, r in zip(event, at_risk, strict=True) if r] == [
        c[1] for c in GROWTH_CASES if c[1] is not None
    ]


def test_growth_frame_and_not_at_risk_reason():
    vus = ["C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1", "T12/L1", "L1/2", "L2/3", "L3/4"]
    cases = GROWTH_CASES[:10]
    rows = [
        ("P1", vu, (0, 0, 0), (c[0][0], c[0][1]), (c[0][2], c[0][3]))
        for vu, c in zip(vus, cases, strict=True)
    ]
    frame = analysis_frame(build_panel(rows), "growth", "w0")
    assert frame["growth"].tolist() == [c[1] for c in cases if c[1] is not None]
    ledger = frame.ledger.to_frame()
    assert ledger["n_rows"].tolist() == [2]
    assert "not at risk for growth" in ledger["reason"].iloc[0]


def test_new_syndesmophyte_with_three_xray_weeks_uses_first_and_last():
    rows = [
        ("P1", "C2/3", (1,), (0, 2, 2), (0, 0, 0)),  # event already at week 52
        ("P1", "C3/4", (0,), (0, 0, 2), (0, 0, 0)),  # event only at week 102
        ("P1", "C4/5", (0,), (0, 2, 1), (0, 0, 0)),  # seen at 52, not at 102: no event
        ("P1", "C5/6", (0,), (0, NA, 0), (0, NA, 0)),  # middle x-ray not needed
    ]
    panel = build_panel(rows, mri_weeks=(0,), xray_weeks=(0, 52, 102))
    frame = analysis_frame(panel, "new_syndesmophyte", "w0")
    assert frame["new_syndesmophyte"].tolist() == [1, 1, 0, 0]
    assert len(frame.ledger) == 0


# --------------------------------------------------------------------- exposures

WEEKS = (0, 24, 102)
#: MRI scores (w0, w24, w102) and the expected value of each exposure at threshold 1.
PATTERNS = {
    "a": (0, 0, 0),
    "b": (2, 0, 0),
    "c": (0, 1, 0),
    "d": (1, 1, 1),
    "e": (0, 0, 5),
    "f": (NA, 1, 0),
    "g": (3, NA, 0),
}
EXPECTED = {  # a, b, c, d, e, f, g
    "w0": (0, 1, 0, 1, 0, NA, 1),
    "w24": (0, 0, 1, 1, 0, 1, NA),
    "w102": (0, 0, 0, 1, 1, 0, 0),
    "w0_and_w24": (0, 0, 0, 1, 0, NA, NA),
    "w0_or_w24": (0, 1, 1, 1, 0, NA, NA),
    "w0_and_w102": (0, 0, 0, 1, 0, NA, 0),
    "w24_or_w102": (0, 0, 1, 1, 1, 1, NA),
    "any": (0, 1, 1, 1, 1, NA, NA),
    "all": (0, 0, 0, 1, 0, NA, NA),
    "never": (1, 0, 0, 0, 0, NA, NA),
    "resolved": (0, 1, 0, 0, 0, NA, NA),
    "new": (0, 0, 1, 0, 1, NA, NA),
    "n_timepoints": (0, 1, 1, 3, 1, NA, NA),
    "max_score": (0, 2, 1, 1, 5, NA, NA),
}


@pytest.mark.parametrize("exposure", list(EXPECTED))
def test_exposures_worked_by_hand(exposure):
    mri = np.array(list(PATTERNS.values()), dtype=float)
    got = exposure_values(mri, WEEKS, exposure, threshold=1)
    np.testing.assert_array_equal(got, np.array(EXPECTED[exposure], dtype=float))


def test_threshold_two():
    mri = np.array(list(PATTERNS.values()), dtype=float)
    # inflamed = score ≥ 2: b (2 at w0), e (5 at w102), g (3 at w0) only
    np.testing.assert_array_equal(
        exposure_values(mri, WEEKS, "any", threshold=2), [0, 1, 0, 0, 1, NA, NA]
    )
    np.testing.assert_array_equal(
        exposure_values(mri, WEEKS, "n_timepoints", threshold=2), [0, 1, 0, 0, 1, NA, NA]
    )
    # max_score ignores the threshold
    np.testing.assert_array_equal(
        exposure_values(mri, WEEKS, "max_score", threshold=2), [0, 2, 1, 1, 5, NA, NA]
    )


def test_exposure_types_in_frame_and_mri_missing_only_where_needed():
    rows = [
        ("P1", f"C{i}/{i + 1}", scores, (0, 0), (0, 0))
        for i, scores in zip(range(2, 7), [PATTERNS[k] for k in "abcef"], strict=True)
    ]
    panel = build_panel(rows)
    # w24 needs week 24 only, so pattern f (w0 missing) is kept
    f24 = analysis_frame(panel, exposure="w24")
    assert f24["mri"].tolist() == [0, 0, 1, 0, 1] and f24["mri"].dtype == np.int64
    assert len(f24.ledger) == 0
    fany = analysis_frame(panel, exposure="any")
    assert fany["mri"].tolist() == [0, 1, 1, 1]
    entry = fany.ledger.to_frame().iloc[0]
    assert entry["n_rows"] == 1 and "week 0, 24, 102" in entry["reason"]
    fmax = analysis_frame(panel, exposure="max_score")
    assert fmax["mri"].dtype == np.float64 and fmax["mri"].tolist() == [0, 2, 1, 5]
    fn = analysis_frame(panel, exposure="n_timepoints", threshold=1)
    assert fn["mri"].tolist() == [0, 1, 1, 1] and fn["mri"].dtype == np.int64


def test_unknown_exposure_lists_available():
    panel = _new_panel()
    with pytest.raises(DeriveError, match=r"unknown exposure 'w52'.*w0, w24, w102"):
        analysis_frame(panel, exposure="w52")
    with pytest.raises(DeriveError, match="w0_and_w24"):
        analysis_frame(panel, exposure="persistent")
    assert "resolved" not in available_exposures([0])
    assert available_exposures([0, 24])[:4] == ["w0", "w24", "w0_and_w24", "w0_or_w24"]


def test_bad_outcome_threshold_readers():
    panel = _new_panel()
    with pytest.raises(DeriveError, match=r"unknown outcome 'bridging'.*new_syndesmophyte"):
        analysis_frame(panel, outcome="bridging")
    for bad in (0, -1, 7, "1", True, math.nan):
        with pytest.raises(DeriveError, match="threshold"):
            analysis_frame(panel, threshold=bad)
    with pytest.raises(DeriveError, match=r"readers rule 'both'.*mean, agree, per_reader"):
        analysis_frame(panel, readers="both")


# --------------------------------------------------------------------- covariates


def test_covariates_from_patient_table_and_missing_ledger():
    rows = [
        ("P1", "C2/3", (1, 0, 0), (0, 0), (0, 2)),
        ("P1", "C3/4", (0, 0, 0), (0, 0), (0, 0)),
        ("P2", "C2/3", (0, 0, 0), (0, 0), (0, 0)),
        ("P2", "C3/4", (NA, 0, 0), (0, 0), (0, 0)),  # MRI missing: counted before crp
        ("P3", "C2/3", (2, 0, 0), (0, 2), (0, 0)),
        ("P3", "T4/5", (2, 0, 0), (NA, NA), (NA, NA)),
    ]
    patients = pd.DataFrame(
        {
            "patient": ["P1", "P2", "P3"],
            "arm": ["infliximab", "placebo", "infliximab"],
            "crp": [12.5, NA, 3.0],
            "age": [30.0, 40.0, NA],
        }
    )
    frame = analysis_frame(build_panel(rows, patients), covariates=["arm", "crp", "age", "region"])
    assert frame["patient"].tolist() == ["P1", "P1"]
    assert frame["crp"].tolist() == [12.5, 12.5] and frame["age"].tolist() == [30.0, 30.0]
    assert list(frame["arm"].cat.categories) == ["placebo", "infliximab"]
    assert frame["arm"].cat.ordered
    assert list(frame.columns) == [
        "patient",
        "vu",
        "region",
        "new_syndesmophyte",
        "mri",
        "baseline_corner",
        "arm",
        "crp",
        "age",
    ]
    led = frame.ledger.to_frame()
    assert led["reason"].tolist()[-2:] == ["covariate missing: crp", "covariate missing: age"]
    assert led["n_rows"].tolist() == [1, 1, 1, 1]  # thoracic, MRI, crp (P2), age (P3)
    assert frame.ledger.n_excluded + len(frame) == len(rows)


def test_unknown_covariate_lists_available():
    with pytest.raises(DeriveError, match=r"unknown covariate\(s\) \['crp'\].*arm, region"):
        analysis_frame(_new_panel(), covariates=["crp"])
    with pytest.raises(DeriveError, match="reader"):
        analysis_frame(_new_panel(), covariates=["reader"])  # only with per_reader


def test_no_eligible_vu_raises_with_ledger():
    rows = [
        ("P1", "C2/3", (1, 0, 0), (2, 2), (0, 0)),
        ("P1", "T3/4", (1, 0, 0), (NA, NA), (NA, NA)),
    ]
    with pytest.raises(DeriveError, match=r"no eligible VU.*not at risk"):
        analysis_frame(build_panel(rows))


def test_outcome_without_events_still_returns_frame():
    rows = [("P1", "C2/3", (1, 0, 0), (0, 0), (0, 0)), ("P1", "C3/4", (0, 0, 0), (0, 0), (0, 1))]
    frame = analysis_frame(build_panel(rows))
    assert frame["new_syndesmophyte"].sum() == 0 and len(frame) == 2


# --------------------------------------------------------------------- readers


def _reader_panel():
    """Two readers; per VU: reader 1 and 2 (upper w0, upper w102), (lower w0, lower w102)."""
    spec = {
        # VU: ((r1 upper), (r1 lower), (r2 upper), (r2 lower), (r1 mri w0, r2 mri w0))
        "C2/3": ((1, 2), (0, 0), (1, 1), (0, 0), (1, 0)),  # r1 event, r2 not
        "C3/4": ((2, 2), (0, 0), (1, 2), (0, 0), (2, 2)),  # r1 not at risk; mean 1.5 → 2
        "C4/5": ((0, 3), (0, 0), (0, 2), (0, 1), (0, 0)),  # both event
        "C5/6": ((0, 1), (0, 0), (0, 0), (1, 1), (1, 1)),  # neither
        "C6/7": ((0, NA), (0, NA), (0, 2), (0, 0), (0, 1)),  # r1's follow-up missing
    }
    rows = []
    for vu, (u1, l1, u2, l2, m) in spec.items():
        rows.append(("P1", vu, (m[0], 0, 0), u1, l1, 1))
        rows.append(("P1", vu, (m[1], 0, 0), u2, l2, 2))
    return build_panel(rows)


def test_readers_mean():
    frame = analysis_frame(_reader_panel(), readers="mean")
    # C2/3: mean upper w102 1.5 < 2 → no event; C3/4: baseline mean 1.5 (at risk),
    # follow-up 2 → event; C4/5 (2.5, 0.5) → event; C5/6 no; C6/7 NaN mean → x-ray
    assert frame.data.set_index("vu")["new_syndesmophyte"].to_dict() == {
        "C2/3": 0,
        "C3/4": 1,
        "C4/5": 1,
        "C5/6": 0,
    }
    # MRI mean: C2/3 0.5 (< 1 → 0), C3/4 2, C4/5 0, C5/6 1
    assert frame["mri"].tolist() == [0, 1, 0, 1]
    assert frame.data.set_index("vu")["baseline_corner"]["C3/4"] == 1.5
    assert "reader" not in frame.columns
    led = frame.ledger.to_frame()
    assert led["n_rows"].tolist() == [1] and "x-ray" in led["reason"][0]
    # a threshold of 0.5 makes the readers' mean 0.5 count as inflamed
    assert analysis_frame(_reader_panel(), threshold=0.5)["mri"].tolist()[0] == 1


def test_readers_agree():
    frame = analysis_frame(_reader_panel(), readers="agree")
    # C3/4: reader 1 sees a syndesmophyte at baseline → not at risk; C2/3 disagree → 0
    assert frame.data.set_index("vu")["new_syndesmophyte"].to_dict() == {
        "C2/3": 0,
        "C4/5": 1,
        "C5/6": 0,
    }
    led = frame.ledger.to_frame()
    assert led["n_rows"].tolist() == [1, 1]
    assert led["reason"][0].startswith("not at risk") and "x-ray" in led["reason"][1]


def test_readers_per_reader():
    frame = analysis_frame(_reader_panel(), readers="per_reader", covariates=["reader"])
    got = {(v, r): y for v, r, y in frame[["vu", "reader", "new_syndesmophyte"]].itertuples(False)}
    assert got == {
        ("C2/3", 1): 1,
        ("C2/3", 2): 0,
        ("C3/4", 2): 1,
        ("C4/5", 1): 1,
        ("C4/5", 2): 1,
        ("C5/6", 1): 0,
        ("C5/6", 2): 0,
        ("C6/7", 2): 1,
    }
    assert frame.data.loc[frame["vu"].eq("C2/3"), "mri"].tolist() == [1, 0]
    led = frame.ledger.to_frame()
    assert led["n_rows"].tolist() == [1, 1]  # C3/4 reader 1 not at risk; C6/7 reader 1 x-ray
    # "reader" is accepted as an alias (the analysis-spec spelling)
    alias = analysis_frame(_reader_panel(), readers="reader")
    pd.testing.assert_frame_equal(alias.data, frame.data)
    assert alias.ledger == frame.ledger


# --------------------------------------------------------------------- array core


def test_derive_arrays_matches_frame_on_a_simulated_panel():
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    spec = CohortSpec(n_patients=40, mri_missing_rate=0.1, xray_missing_rate=0.1)
    panel = simulate_cohort(spec, seed=3)
    for outcome, exposure in (("new_syndesmophyte", "w0_or_w24"), ("growth", "max_score")):
        frame = analysis_frame(panel, outcome, exposure)
        d = derive_arrays(panel_arrays(panel), outcome, exposure, 1)
        keep = d["eligible"]
        np.testing.assert_array_equal(d["y"][keep], frame[outcome].to_numpy())
        np.testing.assert_array_equal(d["x"][keep], frame["mri"].to_numpy(dtype=float))
        assert np.isnan(d["y"][~keep]).all()
        counts = np.bincount(d["reason"], minlength=5)[1:]
        assert counts[counts > 0].tolist() == frame.ledger.to_frame()["n_rows"].tolist()
