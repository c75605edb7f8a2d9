"""``sy.from_long``: a long trial export gives the same panel and the same analysis
frames as the equivalent wide files (issue 13 part 1, issue 12 part 2)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from long_tables import (  # tests/long_tables.py
    MRI_WEEKS,
    READERS,
    SPELLING,
    XRAY_WEEKS,
    long_export,
    make_cohort,
    wide_tables,
)

import syndesmo as sy
from syndesmo.errors import DataNote, PanelError
from syndesmo.panel.longformat import from_long
from syndesmo.panel.spine import normalise_vu


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    patients, mri, xray = make_cohort()
    long = long_export(mri, xray)
    wide, pat = wide_tables(patients, mri, xray)
    d = tmp_path_factory.mktemp("wide")
    wide.to_csv(d / "vu.csv", index=False)
    pat.to_csv(d / "patients.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        wide_panel = sy.load_panel(d / "vu.csv", d / "patients.csv")
    return patients, long, wide_panel


def load_long(long: pd.DataFrame, patients: pd.DataFrame) -> sy.VUPanel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        return sy.from_long(
            long,
            patients=patients,
            patient="subj",
            vu="level",
            week="visit_wk",
            mri="asspimri",
            upper="msasss_up",
            lower="msasss_lo",
            reader="reader_id",
            arm="treatment",
        )


def frame_rows(frame) -> pd.DataFrame:
    keys = [k for k in ("patient", "vu", "reader") if k in frame.data.columns]
    return frame.data.sort_values(keys).reset_index(drop=True)


EXPOSURES = ["w0", "w12", "w52", "w0_and_w12", "w12_or_w52", "any", "never", "n_timepoints"]


@pytest.mark.parametrize("readers", ["mean", "agree", "per_reader"])
def test_long_export_gives_the_frames_of_the_wide_files(cohort, readers):
    """Rows, events and exposures of every analysis frame equal the wide files' ones."""
    patients, long, wide_panel = cohort
    panel = load_long(long, patients.rename(columns={"subject": "subj"}))
    assert panel.mri_weeks == list(MRI_WEEKS) and panel.xray_weeks == list(XRAY_WEEKS)
    assert panel.readers == list(READERS)
    for exposure in EXPOSURES:
        for outcome in ("new_syndesmophyte", "growth"):
            a = sy.analysis_frame(
                panel, outcome, exposure, covariates=["arm", "age"], readers=readers
            )
            b = sy.analysis_frame(
                wide_panel, outcome, exposure, covariates=["arm", "age"], readers=readers
            )
            ra, rb = frame_rows(a), frame_rows(b)
            pd.testing.assert_frame_equal(ra, rb)
            assert a.ledger.to_frame()["n_rows"].sum() > 0
            assert len(ra) > 50 and ra[outcome].sum() > 3  # a real comparison
            # no VU lost for "MRI missing" beyond the MRI truly not taken
            reasons = a.ledger.to_frame()
            mri_missing = reasons[reasons["reason"].str.startswith("MRI missing")]["n_rows"]
            assert mri_missing.sum() <= 0.1 * len(ra)


def test_mri_read_once_is_carried_and_said(cohort):
    """The single MRI reading is on both readers' rows; the notes and the ledger say so."""
    patients, long, wide_panel = cohort
    panel = load_long(long, patients.rename(columns={"subject": "subj"}))
    vu = panel.vu
    both = vu.groupby(["patient", "vu"])["mri_w0"].nunique(dropna=False)
    assert (both == 1).all()  # the same value on each reader's row
    assert any("MRI read once" in n and "carried" in n for n in panel.notes)
    # wide files: the second reader's rows had no MRI; derive carries it and says so
    frame = sy.analysis_frame(wide_panel, exposure="w12", readers="per_reader")
    assert any("MRI read once" in n for n in frame.ledger.notes)
    assert set(frame.data["reader"]) == set(READERS)
    n1, n2 = (int((frame.data["reader"] == r).sum()) for r in READERS)
    assert abs(n1 - n2) <= 0.2 * n1  # the second reader's rows are analysed too


def test_every_level_mapping_is_reported_once(cohort):
    patients, long, _ = cohort
    with pytest.warns(DataNote) as record:
        panel = sy.from_long(
            long,
            patients=patients.rename(columns={"subject": "subj"}),
            patient="subj",
            vu="level",
            week="visit_wk",
            mri="asspimri",
            upper="msasss_up",
            lower="msasss_lo",
            reader="reader_id",
            arm="treatment",
        )
    label_notes = [n for n in panel.notes if "read as" in n]
    changed = {s.strip() for v, s in SPELLING.items() if s.strip() != v}
    assert len(label_notes) == len(changed)
    for spelling in changed:
        assert sum(f"{spelling!r} read as" in n for n in label_notes) == 1
    assert len(record) >= len(label_notes)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("C2-C3", "C2/3"),
        ("c2/3", "C2/3"),
        ("C2/C3", "C2/3"),
        ("C2-3", "C2/3"),
        (" C2 / 3 ", "C2/3"),
        ("L5-S1", "L5/S1"),
        ("C7-T1", "C7/T1"),
        ("t12-l1", "T12/L1"),
        ("C2/3", "C2/3"),
        ("C2-C4", None),
        ("S1-L5", None),
        ("C23", None),
        ("L6-S1", None),
        (3, None),
    ],
)
def test_normalise_vu(label, expected):
    assert normalise_vu(label) == expected


def test_two_values_for_one_visit_are_an_error_naming_rows():
    long = pd.DataFrame(
        {
            "patient": ["P1"] * 4,
            "vu": ["C2/3"] * 4,
            "week": [0, 0, 0, 104],
            "mri": [1.0, 2.0, np.nan, np.nan],
            "msasss_upper": [np.nan, np.nan, 0, 1],
            "msasss_lower": [np.nan, np.nan, 0, 0],
            "arm": ["placebo"] * 4,
        }
    )
    with pytest.raises(PanelError, match=r"MRI readings share one patient × vu × week.*row 0"):
        from_long(long)
    long.loc[1, "mri"] = 1.0  # a copy of one reading is one reading
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = from_long(long)
    assert panel.vu["mri_w0"].tolist() == [1.0]
    assert panel.patients["arm"].tolist() == ["placebo"]


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("vu", "C2-C9", r"level in column 'vu'.*'C2-C9'.*row 2"),
        ("week", "week twelve", r"visit in column 'week'.*'week twelve'.*row 2"),
        ("mri", "high", r"non-numeric score in column 'mri'.*'high'"),
    ],
)
def test_bad_values_name_column_row_and_value(column, value, words):
    long = pd.DataFrame(
        {
            "patient": ["P1"] * 4,
            "vu": ["C2/3"] * 4,
            "week": [0, 12, 0, 104],
            "mri": [1.0, 0.0, np.nan, np.nan],
            "msasss_upper": [np.nan, np.nan, 0, 1],
            "msasss_lower": [np.nan, np.nan, 0, 0],
            "arm": ["placebo"] * 4,
        }
    ).astype(object)
    long.loc[2, column] = value
    with pytest.raises(PanelError, match=words):
        from_long(long)


def test_missing_mapped_column_is_named():
    long = pd.DataFrame({"patient": [1], "vu": ["C2/3"], "week": [0]})
    with pytest.raises(PanelError, match=r"mri='mri'.*upper='msasss_upper'.*columns"):
        from_long(long)


def test_week_text_is_read():
    long = pd.DataFrame(
        {
            "patient": [1, 1, 1, 1],
            "vu": ["C2-3"] * 4,
            "week": ["Baseline", "W12", "baseline", "Week 104"],
            "mri": [1.0, 2.0, np.nan, np.nan],
            "msasss_upper": [np.nan, np.nan, 0, 2],
            "msasss_lower": [np.nan, np.nan, 0, 0],
        }
    )
    pats = pd.DataFrame({"patient": [1, 2], "arm": ["placebo", "ifx"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = from_long(long, pats)
    assert panel.mri_weeks == [0, 12] and panel.xray_weeks == [0, 104]
    assert panel.patients_without_vu == [2]  # randomised, never imaged: kept, counted
    assert any("without VU rows" in e["reason"] for e in panel.ledger)


def test_score_out_of_range_names_the_long_row():
    long = pd.DataFrame(
        {
            "patient": ["P1"] * 4,
            "vu": ["C2/3"] * 4,
            "week": [0, 12, 0, 104],
            "mri": [1.0, 0.0, np.nan, np.nan],
            "msasss_upper": [np.nan, np.nan, 0, 7],
            "msasss_lower": [np.nan, np.nan, 0, 0],
            "arm": ["placebo"] * 4,
        }
    )
    with pytest.raises(
        PanelError, match=r"mSASSS corner range 0–3 in column 'msasss_upper'.*row 3"
    ):
        from_long(long)


def test_patient_columns_from_the_long_table():
    """Without patients=, the long table's columns with one value per patient make the
    patient table; a column varying within a patient is left out with a note."""
    long = pd.DataFrame(
        {
            "id": [7, 7, 7, 7, 9, 9, 9, 9],
            "vu": ["C2-3", "C2-3", "C2-3", "C2-3"] * 2,
            "week": [0, 24, 0, 102] * 2,
            "mri": [1.0, 0.0, np.nan, np.nan] * 2,
            "msasss_upper": [np.nan, np.nan, 0, 2] * 2,
            "msasss_lower": [np.nan, np.nan, 0, 0] * 2,
            "group": ["PBO"] * 4 + ["ETN"] * 4,
            "age": [30.0] * 4 + [41.0] * 4,
            "visit_date": [f"2020-0{i}" for i in range(1, 9)],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = from_long(long, patient="id", arm="group")
    assert panel.patients.to_dict("list") == {
        "patient": [7, 9],
        "arm": ["PBO", "ETN"],
        "age": [30.0, 41.0],
    }
    assert any("['visit_date'] vary within a patient" in n for n in panel.notes)
    assert panel.vu["vu"].tolist() == ["C2/3", "C2/3"]


def _two_reader_long(mri_on_reader_rows: bool) -> pd.DataFrame:
    """One level, MRI at 0/12, x-rays at 0/104 by readers A and B who agree."""
    rows = []
    for p in ("P1", "P2"):
        for r in ("A", "B"):
            rows.append((p, "C2/3", 0, r, 2.0 if mri_on_reader_rows else np.nan, 0, 0))
            rows.append((p, "C2/3", 104, r, np.nan, 2, 0))
        rows.append((p, "C2/3", 12, np.nan, 1.0, np.nan, np.nan))
        if not mri_on_reader_rows:
            rows.append((p, "C2/3", 0, np.nan, 2.0, np.nan, np.nan))
    cols = ["patient", "vu", "week", "reader", "mri", "msasss_upper", "msasss_lower"]
    long = pd.DataFrame(rows, columns=cols)
    long["arm"] = long["patient"].map({"P1": "placebo", "P2": "ifx"})
    return long


@pytest.mark.parametrize("mri_on_reader_rows", [False, True])
def test_agreeing_readers_are_kept_and_a_copied_mri_is_one_reading(mri_on_reader_rows):
    """Two x-ray readers who agree stay two readers; an MRI written onto both readers'
    rows at the shared visit (and without a reader at the others) is one reading."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = from_long(_two_reader_long(mri_on_reader_rows), reader="reader")
    assert panel.readers == ["A", "B"] and len(panel.vu) == 4
    assert panel.vu["mri_w0"].tolist() == [2.0] * 4 and panel.vu["mri_w12"].tolist() == [1.0] * 4
    assert any("MRI read once" in n for n in panel.notes)
