"""VUPanel: validation of every kind of bad input, and save/load round trips.

Bad inputs are small CSV files written in ``tmp_path``; each test checks that the
message names the file, the line (header = line 1), the column and the value.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from panel_tables import make_tables  # tests/panel_tables.py

from syndesmo.derive.frame import analysis_frame
from syndesmo.errors import DataNote, PanelError
from syndesmo.panel.spine import MSASSS_VUS
from syndesmo.panel.tables import VUPanel, load_panel


def write(tmp_path: Path, vu: pd.DataFrame, pat: pd.DataFrame | None = None):
    vu_path = tmp_path / "vu.csv"
    vu.to_csv(vu_path, index=False)
    if pat is None:
        return vu_path, None
    pat_path = tmp_path / "patients.csv"
    pat.to_csv(pat_path, index=False)
    return vu_path, pat_path


def load_error(tmp_path: Path, vu: pd.DataFrame, pat: pd.DataFrame | None) -> str:
    vu_path, pat_path = write(tmp_path, vu, pat)
    with pytest.raises(PanelError) as info:
        load_panel(vu_path, pat_path)
    return str(info.value)


def row_of(vu: pd.DataFrame, patient, label: str) -> int:
    return int(np.flatnonzero((vu["patient"] == patient) & (vu["vu"] == label))[0])


# --------------------------------------------------------------------------- valid panels


def test_valid_panel_attributes_and_dtypes():
    vu, pat = make_tables()
    vu.loc[5, "mri_w24"] = np.nan  # missing MRI is allowed
    vu.loc[0, "msasss_upper_w102"] = np.nan  # a missing x-ray is allowed
    vu.loc[1, "mri_w0"] = 2.5  # MRI may be a reader mean
    panel = VUPanel(vu, pat)
    assert panel.mri_weeks == [0, 24, 102]
    assert panel.xray_weeks == [0, 102]
    assert panel.readers is None
    assert panel.patient_ids == ["P1", "P2", "P3"]
    assert len(panel.vu) == len(vu) == 3 * 23  # nothing dropped
    assert panel.vu["vu"].tolist() == vu["vu"].tolist()  # order kept
    for col in panel.score_columns:
        assert panel.vu[col].dtype == np.float64
    assert np.isnan(panel.vu.loc[5, "mri_w24"])
    assert panel.vu.loc[1, "mri_w0"] == 2.5
    assert panel.truth is None


def test_weeks_sorted_numerically_and_twelve_vu_panel():
    vu, pat = make_tables(vus=MSASSS_VUS)
    vu = vu.rename(columns={"mri_w102": "mri_w52"})
    vu = vu[["patient", "vu", "mri_w52", "mri_w24", "mri_w0", *vu.columns[5:]]]
    panel = VUPanel(vu, pat, truth={"or_new": 2.0})
    assert panel.mri_weeks == [0, 24, 52]
    assert panel.truth == {"or_new": 2.0}


def test_readers_and_integer_patient_ids():
    vu, pat = make_tables(patients=(7, 3), readers=("A", "B"))
    panel = VUPanel(vu, pat)
    assert panel.readers == ["A", "B"]
    assert panel.patient_ids == [7, 3]
    assert len(panel.vu) == 2 * 23 * 2


def test_input_frames_not_modified():
    vu, pat = make_tables()
    before = vu.copy()
    VUPanel(vu, pat)
    pd.testing.assert_frame_equal(vu, before)


# --------------------------------------------------------------------------- column errors


def test_missing_patient_column(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.drop(columns="patient"), pat)
    assert "vu.csv" in msg and "'patient'" in msg and "missing required column" in msg


def test_missing_vu_column(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.drop(columns="vu"), pat)
    assert "vu.csv" in msg and "'vu'" in msg


def test_missing_arm_column(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu, pat.drop(columns="arm"))
    assert "patients.csv" in msg and "'arm'" in msg


def test_no_mri_column(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.drop(columns=["mri_w0", "mri_w24", "mri_w102"]), pat)
    assert "vu.csv" in msg and "no MRI score column" in msg and "mri_w" in msg


def test_xray_week_without_its_pair(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.drop(columns="msasss_lower_w102"), pat)
    assert "vu.csv" in msg and "msasss_upper_w102" in msg and "msasss_lower_w102" in msg


def test_fewer_than_two_xray_weeks(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.drop(columns=["msasss_upper_w102", "msasss_lower_w102"]), pat)
    assert "vu.csv" in msg and "two or more x-ray weeks" in msg and "[0]" in msg


def test_misnamed_score_column(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu.rename(columns={"mri_w24": "mri_week24"}), pat)
    assert "vu.csv" in msg and "'mri_week24'" in msg


def test_same_week_twice(tmp_path):
    vu, pat = make_tables()
    vu["mri_w024"] = vu["mri_w24"]
    msg = load_error(tmp_path, vu, pat)
    assert "'mri_w24'" in msg and "'mri_w024'" in msg and "week 24" in msg


def test_column_in_both_tables(tmp_path):
    vu, pat = make_tables()
    vu["arm"] = vu["patient"].map(dict(zip(pat["patient"], pat["arm"], strict=True)))
    msg = load_error(tmp_path, vu, pat)
    assert "'arm'" in msg and "vu.csv" in msg and "patients.csv" in msg


# --------------------------------------------------------------------------- row errors


def test_unknown_vu_label(tmp_path):
    vu, pat = make_tables()
    i = row_of(vu, "P2", "T5/6")
    vu.loc[i, "vu"] = "T5-7"  # not two neighbouring vertebrae
    msg = load_error(tmp_path, vu, pat)
    assert "vu.csv" in msg and f"line {i + 2} " in msg and "'vu'" in msg and "'T5-7'" in msg
    assert "1 row " in msg


def test_vu_label_spelling_is_read_with_a_note(tmp_path):
    """A trial's spelling of a level (T5-6) is read as the spine's label, with a note."""
    vu, pat = make_tables()
    i = row_of(vu, "P2", "T5/6")
    vu.loc[i, "vu"] = "T5-6"
    vu_path, pat_path = write(tmp_path, vu, pat)
    with pytest.warns(DataNote, match="'T5-6' read as 'T5/6'"):
        panel = load_panel(vu_path, pat_path)
    assert panel.vu.loc[i, "vu"] == "T5/6"
    assert sum("'T5-6'" in n for n in panel.notes) == 1


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("mri_w24", 7, "outside ASspiMRI-a range 0–6"),
        ("mri_w0", -1, "outside ASspiMRI-a range 0–6"),
        ("msasss_lower_w0", 4, "outside mSASSS corner range 0–3"),
        ("msasss_upper_w102", 1.5, "non-integer mSASSS"),
        ("mri_w102", "x", "non-numeric"),
    ],
)
def test_bad_score(tmp_path, column, value, words):
    vu, pat = make_tables()
    vu[column] = vu[column].astype(object)
    i = row_of(vu, "P3", "L2/3")
    vu.loc[i, column] = value
    msg = load_error(tmp_path, vu, pat)
    assert "vu.csv" in msg and f"line {i + 2} " in msg and f"'{column}'" in msg
    assert words in msg
    assert re.search(rf"= '?{re.escape(str(value))}'?", msg), msg
    assert "patient 'P3', vu 'L2/3'" in msg


def test_many_bad_rows_first_few_and_total(tmp_path):
    vu, pat = make_tables()
    bad = np.flatnonzero(vu["vu"].isin(MSASSS_VUS).to_numpy())[:8]
    vu.loc[bad, "msasss_upper_w0"] = 9
    msg = load_error(tmp_path, vu, pat)
    assert "8 rows" in msg and "and 3 more" in msg
    for i in bad[:5]:
        assert f"line {i + 2} " in msg
    assert f"line {bad[5] + 2} " not in msg


def test_xray_score_on_thoracic_vu(tmp_path):
    vu, pat = make_tables()
    i = row_of(vu, "P1", "T8/9")
    vu.loc[i, "msasss_lower_w102"] = 0
    msg = load_error(tmp_path, vu, pat)
    assert "vu.csv" in msg and f"line {i + 2} " in msg and "'msasss_lower_w102'" in msg
    assert "thoracic" in msg and "= 0" in msg


def test_duplicate_patient_vu(tmp_path):
    vu, pat = make_tables()
    vu = pd.concat([vu, vu.iloc[[4]]], ignore_index=True)
    msg = load_error(tmp_path, vu, pat)
    assert "vu.csv" in msg and "2 rows" in msg and "patient × vu" in msg
    assert "line 6 " in msg and f"line {len(vu) + 1} " in msg


def test_duplicate_patient_vu_reader(tmp_path):
    vu, pat = make_tables(readers=("A", "B"))
    VUPanel(vu, pat)  # two readers per VU is fine
    vu.loc[1, "reader"] = "A"
    msg = load_error(tmp_path, vu, pat)
    assert "patient × vu × reader" in msg and "line 2 " in msg and "line 3 " in msg


def test_missing_patient_value(tmp_path):
    vu, pat = make_tables()
    vu.loc[10, "patient"] = np.nan
    msg = load_error(tmp_path, vu, pat)
    assert "vu.csv" in msg and "line 12 " in msg and "'patient'" in msg and "missing" in msg


def test_patient_not_in_patient_table(tmp_path):
    vu, pat = make_tables()
    msg = load_error(tmp_path, vu, pat[pat["patient"] != "P2"])
    assert "vu.csv" in msg and "23 rows" in msg and "patients.csv" in msg and "'P2'" in msg
    assert f"line {row_of(vu, 'P2', 'C2/3') + 2} " in msg


def test_patient_without_vu_rows_is_kept_and_counted(tmp_path):
    """A patient randomised but never imaged stays in the patient table, in no analysis,
    and the ledger counts them (issue 13)."""
    vu, pat = make_tables()
    vu_path, pat_path = write(tmp_path, vu[vu["patient"] != "P3"], pat)
    panel = load_panel(vu_path, pat_path)
    assert panel.patients["patient"].tolist() == ["P1", "P2", "P3"]
    assert panel.patients_without_vu == ["P3"]
    entry = [e for e in panel.ledger if "without VU rows" in e["reason"]]
    assert len(entry) == 1 and entry[0]["n_patients"] == 1 and "'P3'" in entry[0]["reason"]
    frame = analysis_frame(panel, exposure="w0")
    assert "P3" not in set(frame.data["patient"])
    assert any("without VU rows" in e["reason"] for e in frame.ledger)


def test_id_type_mismatch_hint():
    vu, pat = make_tables(patients=(1, 2))
    pat["patient"] = pat["patient"].astype(str)
    with pytest.raises(PanelError, match="match as text"):
        VUPanel(vu, pat)


def test_duplicate_patient_in_patient_table(tmp_path):
    vu, pat = make_tables()
    pat = pd.concat([pat, pat.iloc[[0]]], ignore_index=True)
    msg = load_error(tmp_path, vu, pat)
    assert "patients.csv" in msg and "line 2 " in msg and "line 5 " in msg and "'P1'" in msg


def test_missing_arm_value(tmp_path):
    vu, pat = make_tables()
    pat.loc[1, "arm"] = np.nan
    msg = load_error(tmp_path, vu, pat)
    assert "patients.csv" in msg and "line 3 " in msg and "'arm'" in msg and "'P2'" in msg


def test_line_numbers_count_blank_lines(tmp_path):
    """A blank line in the file shifts the line numbers of the rows after it."""
    vu, pat = make_tables()
    vu.loc[30, "mri_w0"] = 8
    vu_path, pat_path = write(tmp_path, vu, pat)
    lines = vu_path.read_text().split("\n")
    lines.insert(10, "")  # a blank line 11
    vu_path.write_text("\n".join(lines))
    with pytest.raises(PanelError, match=r"vu\.csv: 1 row .*line 33 "):
        load_panel(vu_path, pat_path)


def test_in_memory_rows_are_zero_based():
    vu, pat = make_tables()
    vu.index = vu.index + 100  # positions, not index labels, are reported
    vu.iloc[4, vu.columns.get_loc("mri_w0")] = 9
    with pytest.raises(PanelError) as info:
        VUPanel(vu, pat, source="my cohort")
    msg = str(info.value)
    assert msg.startswith("my cohort (rows counted from 0): 1 row")
    assert "row 4 " in msg and "= 9" in msg


def test_parquet_rows_are_zero_based(tmp_path):
    vu, pat = make_tables()
    vu.loc[6, "msasss_upper_w0"] = 2.5
    vu.to_parquet(tmp_path / "vu.parquet", index=False)
    pat.to_parquet(tmp_path / "patients.parquet", index=False)
    with pytest.raises(PanelError) as info:
        load_panel(tmp_path / "vu.parquet", tmp_path / "patients.parquet")
    msg = str(info.value)
    assert "vu.parquet (rows counted from 0)" in msg and "row 6 " in msg and "= 2.5" in msg


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    vu, pat = make_tables()
    vu_path, _ = write(tmp_path, vu, pat)
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_panel(vu_path, tmp_path / "nope.csv")


def test_unknown_suffix_and_empty_file(tmp_path):
    (tmp_path / "vu.xlsx").write_text("x")
    with pytest.raises(PanelError, match=r"vu\.xlsx: cannot be read as Excel"):
        load_panel(tmp_path / "vu.xlsx")
    (tmp_path / "vu.docx").write_text("x")
    with pytest.raises(PanelError, match=r"vu\.docx: unknown file type '\.docx'.*\.dta"):
        load_panel(tmp_path / "vu.docx")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PanelError, match=r"empty\.csv: cannot be read as CSV"):
        load_panel(tmp_path / "empty.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("ids", [("P1", "P2", "P3"), (11, 5, 8)])
def test_round_trip_two_files(tmp_path, suffix, ids):
    vu, pat = make_tables(patients=ids)
    vu.loc[3, "mri_w24"] = np.nan
    vu.loc[2, "mri_w0"] = 1.5
    panel = VUPanel(vu, pat)
    panel.save(tmp_path / f"vu{suffix}", tmp_path / f"patients{suffix}")
    back = load_panel(tmp_path / f"vu{suffix}", tmp_path / f"patients{suffix}")
    pd.testing.assert_frame_equal(back.vu, panel.vu)
    pd.testing.assert_frame_equal(back.patients, panel.patients)
    assert back.patient_ids == list(ids)
    assert back.source == str(tmp_path / f"vu{suffix}")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_one_file(tmp_path, suffix):
    vu, pat = make_tables(readers=("A", "B"))
    panel = VUPanel(vu, pat)
    panel.save(tmp_path / f"all{suffix}")
    merged = pd.read_csv(tmp_path / "all.csv") if suffix == ".csv" else None
    if merged is not None:
        assert list(merged.columns[:6]) == ["patient", "vu", "reader", "arm", "age", "sex"]
    back = load_panel(tmp_path / f"all{suffix}")
    pd.testing.assert_frame_equal(back.vu, panel.vu)
    pd.testing.assert_frame_equal(back.patients, panel.patients)
    assert back.readers == ["A", "B"]


def test_one_file_arm_must_be_constant_within_patient(tmp_path):
    vu, pat = make_tables()
    merged = VUPanel(vu, pat).merged()
    merged.loc[40, "arm"] = "placebo"  # P2 is on infliximab elsewhere
    merged.to_csv(tmp_path / "all.csv", index=False)
    with pytest.raises(PanelError) as info:
        load_panel(tmp_path / "all.csv")
    msg = str(info.value)
    assert "all.csv" in msg and "'arm'" in msg and "line 25 " in msg and "'P2'" in msg


def test_one_file_without_arm(tmp_path):
    vu, _ = make_tables()
    vu.to_csv(tmp_path / "vu.csv", index=False)
    with pytest.raises(PanelError, match=r"vu\.csv: no 'arm' column"):
        load_panel(tmp_path / "vu.csv")


def test_one_file_vu_level_columns_stay(tmp_path):
    vu, pat = make_tables()
    vu["note"] = np.arange(len(vu))  # varies within patient: a VU-level column
    panel = VUPanel(vu, pat)
    panel.save(tmp_path / "all.csv")
    back = load_panel(tmp_path / "all.csv")
    assert "note" in back.vu.columns and "note" not in back.patients.columns
    assert list(back.patients.columns) == ["patient", "arm", "age", "sex", "hla_b27"]


def test_one_file_error_in_patient_part_names_file_line(tmp_path):
    vu, pat = make_tables()
    merged = VUPanel(vu, pat).merged()
    merged.loc[merged["patient"] == "P3", "arm"] = np.nan
    merged.to_csv(tmp_path / "all.csv", index=False)
    with pytest.raises(PanelError) as info:
        load_panel(tmp_path / "all.csv")
    msg = str(info.value)
    assert "all.csv: 1 row " in msg and "line 48 " in msg and "'arm'" in msg


def test_csv_output_is_deterministic_and_plain(tmp_path):
    vu, pat = make_tables()
    vu.loc[0, "mri_w24"] = np.nan
    panel = VUPanel(vu, pat)
    panel.save(tmp_path / "a.csv", tmp_path / "pa.csv")
    panel.save(tmp_path / "b.csv", tmp_path / "pb.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "pa.csv").read_bytes() == (tmp_path / "pb.csv").read_bytes()
    text = (tmp_path / "a.csv").read_text()
    assert "\r" not in text
    first = text.split("\n")[1].split(",")
    # whole-number scores are written as integers, a missing score as an empty field
    assert first[:2] == ["P1", "C2/3"] and "." not in "".join(first[2:]) and first[3] == ""


def test_covariates_named_like_scores_are_not_scores(tmp_path):
    """``msasss_baseline`` (a patient covariate) is fine, in either table and in the
    one-file form; ``msasss_w102`` is a near miss of a score column and an error."""
    vu, pat = make_tables()
    pat["msasss_baseline"] = [3.0, 10.0, 0.0]
    vu["mri_total_note"] = 1
    panel = VUPanel(vu, pat)
    panel.save(tmp_path / "all.csv")
    back = load_panel(tmp_path / "all.csv")
    assert back.patients["msasss_baseline"].tolist() == [3.0, 10.0, 0.0]
    assert "mri_total_note" in back.patients.columns  # constant within patient
    msg = load_error(tmp_path, vu.rename(columns={"msasss_upper_w0": "msasss_w0"}), pat)
    assert "'msasss_w0'" in msg and "looks like a score column" in msg
    assert "syndesmo import" in msg and "from_long" in msg  # a long export: the way in
