"""``load_panel`` reads every common file type of a trial's statistician: CSV with any
common separator, Parquet, Stata, SAS transport, SPSS and Excel (issue 13 part 1).

Each file is written here by pandas (or pyreadstat) from the same tables, and the panel
read back must equal the one read from the plain CSV files. SAS ``.sas7bdat`` has no
writer in pandas or pyreadstat, so only its refusal of a file that is not one is tested.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from panel_tables import make_tables  # tests/panel_tables.py

from syndesmo.errors import DataNote, PanelError
from syndesmo.panel.tables import load_panel

HAS_PYREADSTAT = importlib.util.find_spec("pyreadstat") is not None
HAS_OPENPYXL = importlib.util.find_spec("openpyxl") is not None


def tables():
    vu, pat = make_tables(patients=("P1", "P2", "P3", "P4"), seed=5)
    vu.loc[3, "mri_w24"] = np.nan
    return vu, pat


def quiet_load(*paths) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        return load_panel(*paths)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    vu, pat = tables()
    vu.to_csv(d / "vu.csv", index=False)
    pat.to_csv(d / "patients.csv", index=False)
    return quiet_load(d / "vu.csv", d / "patients.csv")


def same_panel(panel, reference) -> None:
    pd.testing.assert_frame_equal(panel.vu, reference.vu, check_dtype=False)
    pd.testing.assert_frame_equal(panel.patients, reference.patients, check_dtype=False)
    assert panel.mri_weeks == reference.mri_weeks and panel.xray_weeks == reference.xray_weeks


def _write_stata(df: pd.DataFrame, path: Path) -> None:
    df.to_stata(path, write_index=False, version=118)


def _write_xpt(df: pd.DataFrame, path: Path) -> None:
    import pyreadstat

    pyreadstat.write_xport(df, str(path), file_format_version=8)


def _write_sav(df: pd.DataFrame, path: Path) -> None:
    import pyreadstat

    pyreadstat.write_sav(df, str(path))


def _write_xlsx(df: pd.DataFrame, path: Path) -> None:
    df.to_excel(path, index=False)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


WRITERS = [
    pytest.param(".dta", _write_stata, id="stata"),
    pytest.param(".parquet", _write_parquet, id="parquet"),
    pytest.param(
        ".xpt",
        _write_xpt,
        id="sas-xport",
        marks=pytest.mark.skipif(not HAS_PYREADSTAT, reason="pyreadstat (extra 'formats')"),
    ),
    pytest.param(
        ".sav",
        _write_sav,
        id="spss",
        marks=pytest.mark.skipif(not HAS_PYREADSTAT, reason="pyreadstat (extra 'formats')"),
    ),
    pytest.param(
        ".xlsx",
        _write_xlsx,
        id="excel",
        marks=pytest.mark.skipif(not HAS_OPENPYXL, reason="openpyxl (extra 'formats')"),
    ),
]


@pytest.mark.parametrize(("suffix", "write"), WRITERS)
def test_typed_files_give_the_csv_panel(tmp_path, reference, suffix, write):
    vu, pat = tables()
    write(vu, tmp_path / f"vu{suffix}")
    write(pat, tmp_path / f"patients{suffix}")
    panel = quiet_load(tmp_path / f"vu{suffix}", tmp_path / f"patients{suffix}")
    same_panel(panel, reference)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_with_any_common_separator(tmp_path, reference, sep):
    vu, pat = tables()
    vu.to_csv(tmp_path / "vu.csv", index=False, sep=sep)
    pat.to_csv(tmp_path / "patients.csv", index=False, sep=sep)
    same_panel(quiet_load(tmp_path / "vu.csv", tmp_path / "patients.csv"), reference)


def test_semicolon_csv_with_decimal_commas_names_the_option(tmp_path):
    """A European export read without decimal=',' names the decimal comma (not a
    confusing message about columns); with it, the file reads."""
    vu, pat = tables()
    vu["mri_w0"] = vu["mri_w0"] / 2  # halves: 0,5 in a European export
    vu.to_csv(tmp_path / "vu.csv", index=False, sep=";", decimal=",")
    pat.to_csv(tmp_path / "patients.csv", index=False, sep=";", decimal=",")
    with pytest.raises(PanelError, match=r"vu\.csv.*'mri_w0'.*decimal comma.*decimal=','"):
        quiet_load(tmp_path / "vu.csv", tmp_path / "patients.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = load_panel(tmp_path / "vu.csv", tmp_path / "patients.csv", decimal=",")
    assert np.allclose(panel.vu["mri_w0"], vu["mri_w0"])


def test_one_typed_file_with_the_patient_columns(tmp_path, reference):
    vu, pat = tables()
    merged = vu.merge(pat, on="patient")
    merged.to_stata(tmp_path / "all.dta", write_index=False, version=118)
    panel = quiet_load(tmp_path / "all.dta")
    pd.testing.assert_frame_equal(
        panel.patients[reference.patients.columns], reference.patients, check_dtype=False
    )


def test_stata_value_labels_and_odd_level_labels(tmp_path):
    """Stata value labels come back as text; level spellings are read, each noted once."""
    vu, pat = tables()
    vu["vu"] = vu["vu"].str.replace("/", "-", regex=False)
    vu.to_stata(tmp_path / "vu.dta", write_index=False, version=118)
    pat["arm"] = pd.Categorical(pat["arm"])
    pat.to_stata(tmp_path / "patients.dta", write_index=False, version=118)
    with pytest.warns(DataNote, match=r"'C2-3' read as 'C2/3'"):
        panel = load_panel(tmp_path / "vu.dta", tmp_path / "patients.dta")
    assert set(panel.patients["arm"]) == {"placebo", "infliximab"}
    assert sum("'C2-3' read as" in n for n in panel.notes) == 1


def test_not_a_file_of_its_type_is_one_line(tmp_path):
    for suffix in (".dta", ".sas7bdat", ".xpt", ".parquet"):
        path = tmp_path / f"vu{suffix}"
        path.write_text("patient,vu\n1,C2/3\n")
        with pytest.raises(PanelError, match=rf"vu\{suffix}: cannot be read as"):
            load_panel(path)


def test_missing_reader_module_names_the_extra(tmp_path, monkeypatch):
    """Without openpyxl, an Excel file is refused with the extra to install."""
    path = tmp_path / "vu.xlsx"
    path.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import fails
    with pytest.raises(PanelError, match=r"openpyxl.*pip install 'syndesmo\[formats\]'"):
        load_panel(path)
