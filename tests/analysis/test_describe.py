"""Descriptive tables of ``syndesmo.analysis.describe`` on a hand-built panel whose counts are
worked out in the comments, plus consistency checks on a simulated cohort."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from syndesmo.analysis.describe import (
    events_by_inflammation,
    events_table,
    inflammation_prevalence,
    report_tables,
    share_in_uninflamed,
)
from syndesmo.derive.frame import analysis_frame
from syndesmo.errors import DeriveError
from syndesmo.panel.tables import VUPanel

NA = math.nan

#: patient, vu, MRI (w0, w24, w102), upper corner (w0, w102), lower corner (w0, w102)
ROWS = [
    ("P1", "C2/3", (1, 1, 0), (0, 2), (0, 0)),  # new, inflamed w0 and w24
    ("P1", "C3/4", (0, 0, 0), (0, 0), (0, 0)),
    ("P1", "C4/5", (2, 0, NA), (0, 0), (0, 1)),  # MRI missing at w102
    ("P1", "T5/6", (3, 0, 0), (NA, NA), (NA, NA)),  # thoracic: MRI only
    ("P2", "C2/3", (0, 0, 0), (0, 2), (0, 0)),  # new, never inflamed
    ("P2", "C3/4", (0, 1, 0), (2, 2), (0, 0)),  # not at risk
    ("P2", "L4/5", (1, 0, 0), (0, 0), (0, 2)),  # new, inflamed w0
    ("P3", "C2/3", (0, 0, 1), (0, 0), (1, 1)),
    ("P3", "L5/S1", (NA, 0, 0), (0, 3), (0, 3)),  # new (bridge), MRI missing at w0
]


def hand_panel() -> VUPanel:
    records = []
    for patient, vu, mri, up, lo in ROWS:
        rec = {"patient": patient, "vu": vu}
        rec.update({f"mri_w{w}": float(s) for w, s in zip((0, 24, 102), mri, strict=True)})
        rec.update({f"msasss_upper_w{w}": float(s) for w, s in zip((0, 102), up, strict=True)})
        rec.update({f"msasss_lower_w{w}": float(s) for w, s in zip((0, 102), lo, strict=True)})
        records.append(rec)
    patients = pd.DataFrame(
        {"patient": ["P1", "P2", "P3"], "arm": ["placebo", "infliximab", "infliximab"]}
    )
    return VUPanel(pd.DataFrame(records), patients)


def test_inflammation_prevalence_by_week_and_arm():
    table = inflammation_prevalence(hand_panel(), threshold=1)
    assert list(table.columns) == [
        "week",
        "arm",
        "n_patients",
        "n_vus",
        "n_vus_inflamed",
        "pct_vus_inflamed",
        "n_patients_inflamed",
        "pct_patients_inflamed",
    ]
    # (week, arm): (patients with MRI, VUs scored, VUs inflamed, patients inflamed)
    expected = {
        (0, "placebo"): (1, 4, 3, 1),  # P1: 1, 0, 2, 3 (thoracic VUs count)
        (0, "infliximab"): (2, 4, 1, 1),  # P2: 0, 0, 1; P3: 0 (L5/S1 not scored)
        (0, "all"): (3, 8, 4, 2),
        (24, "placebo"): (1, 4, 1, 1),
        (24, "infliximab"): (2, 5, 1, 1),
        (24, "all"): (3, 9, 2, 2),
        (102, "placebo"): (1, 3, 0, 0),  # C4/5 missing
        (102, "infliximab"): (2, 5, 1, 1),  # P3 C2/3
        (102, "all"): (3, 8, 1, 1),
    }
    got = {
        (r.week, r.arm): (r.n_patients, r.n_vus, r.n_vus_inflamed, r.n_patients_inflamed)
        for r in table.itertuples()
    }
    assert got == expected
    assert list(table["arm"][:3]) == ["placebo", "infliximab", "all"]  # control first
    np.testing.assert_allclose(
        table["pct_vus_inflamed"], 100 * table["n_vus_inflamed"] / table["n_vus"]
    )
    # threshold 2: only the scores 2 and 3 at week 0 count
    t2 = inflammation_prevalence(hand_panel(), threshold=2)
    assert t2.loc[(t2["week"] == 0) & (t2["arm"] == "all"), "n_vus_inflamed"].item() == 2


def test_events_by_inflammation_two_by_two():
    table = events_by_inflammation(hand_panel(), threshold=1)
    got = {(r.exposure, r.mri): (r.n_vus, r.n_events, r.n_no_event) for r in table.itertuples()}
    assert got == {
        # w0 (L5/S1 left out, MRI missing): inflamed P1 C2/3 (new), P1 C4/5, P2 L4/5 (new);
        # not inflamed P1 C3/4, P2 C2/3 (new), P3 C2/3
        ("w0", "inflamed"): (3, 2, 1),
        ("w0", "not inflamed"): (3, 1, 2),
        ("w24", "inflamed"): (1, 1, 0),
        ("w24", "not inflamed"): (6, 3, 3),
        ("w102", "inflamed"): (1, 0, 1),  # P3 C2/3; P1 C4/5 left out
        ("w102", "not inflamed"): (5, 4, 1),
    }
    rr = table.groupby("exposure", sort=False)["risk_ratio"].first()
    orr = table.groupby("exposure", sort=False)["odds_ratio"].first()
    assert rr["w0"] == pytest.approx((2 / 3) / (1 / 3))  # 2
    assert orr["w0"] == pytest.approx((2 * 2) / (1 * 1))  # 4
    assert rr["w24"] == pytest.approx(1 / (3 / 6)) and math.isnan(orr["w24"])  # a zero cell
    assert rr["w102"] == 0 and orr["w102"] == 0
    np.testing.assert_allclose(table["pct_events"], 100 * table["n_events"] / table["n_vus"])
    ledgers = events_table(hand_panel(), threshold=1).ledgers
    assert ledgers["w102"].n_excluded == 3  # thoracic, not at risk, MRI
    never = events_by_inflammation(hand_panel(), exposures=["never"])
    assert never["mri"].tolist() == ["never inflamed", "inflamed at some week"]
    assert never["n_vus"].tolist() == [2, 3] and never["n_events"].tolist() == [1, 2]
    with pytest.raises(DeriveError, match="counts or scores"):
        events_by_inflammation(hand_panel(), exposures=["max_score"])


def test_share_of_new_syndesmophytes_in_uninflamed_vus():
    table = share_in_uninflamed(hand_panel())
    assert table["vus"].tolist() == [
        "not inflamed at baseline",
        "not inflamed at week 24",
        "not inflamed at week 102",
        "never inflamed (all MRI weeks)",
    ]
    # w0: 3 events (P1 C2/3, P2 C2/3, P2 L4/5), 1 not inflamed at w0 (P2 C2/3)
    # w24: 4 events (+ P3 L5/S1), 3 not inflamed; w102: 4 events, all not inflamed
    # never: needs all weeks (P3 L5/S1 out): 3 events, 1 never inflamed (P2 C2/3)
    assert table["n_events"].tolist() == [3, 4, 4, 3]
    assert table["n_events_uninflamed"].tolist() == [1, 3, 4, 1]
    np.testing.assert_allclose(table["pct_events_uninflamed"], [100 / 3, 75, 100, 100 / 3])


def test_two_readers_mean_or_per_reader():
    rows = []
    for reader, score in ((1, 1.0), (2, 0.0)):
        rows.append(
            {
                "patient": "P1",
                "vu": "C2/3",
                "reader": reader,
                "mri_w0": score,
                "msasss_upper_w0": 0.0,
                "msasss_upper_w102": 0.0,
                "msasss_lower_w0": 0.0,
                "msasss_lower_w102": 0.0,
            }
        )
    panel = VUPanel(pd.DataFrame(rows), pd.DataFrame({"patient": ["P1"], "arm": ["placebo"]}))
    mean = inflammation_prevalence(panel, readers="mean")
    assert mean["n_vus"].tolist() == [1, 1] and mean["n_vus_inflamed"].tolist() == [0, 0]
    per = inflammation_prevalence(panel, readers="per_reader")
    assert per["reader"].tolist() == [1, 1, 2, 2]
    assert per["n_vus_inflamed"].tolist() == [1, 1, 0, 0]


def test_tables_agree_with_the_analysis_frame_on_a_simulated_cohort():
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    panel = simulate_cohort(CohortSpec(n_patients=120, mri_missing_rate=0.05), seed=4)
    tables = report_tables(panel, exposures=["w0", "any", "n_timepoints"])
    assert set(tables) == {"inflammation", "events", "share_uninflamed"}
    assert all(t.title for t in tables.values())
    events, share = tables["events"].table, tables["share_uninflamed"].table
    assert events["exposure"].unique().tolist() == ["w0", "any"]  # counts left out
    for exposure in ("w0", "any"):
        frame = analysis_frame(panel, exposure=exposure)
        rows = events[events["exposure"] == exposure]
        assert rows["n_vus"].sum() == len(frame)
        assert rows["n_events"].sum() == frame["new_syndesmophyte"].sum()
    not_w0 = events[(events["exposure"] == "w0") & (events["mri"] == "not inflamed")]
    assert share.loc[0, "n_events_uninflamed"] == not_w0["n_events"].item()
    prev = tables["inflammation"].table
    treated = prev[(prev["week"] == 24) & (prev["arm"] == "infliximab")]["pct_vus_inflamed"]
    placebo = prev[(prev["week"] == 24) & (prev["arm"] == "placebo")]["pct_vus_inflamed"]
    assert treated.item() < placebo.item()  # infliximab lowers inflammation by week 24
