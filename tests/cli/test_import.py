"""``syndesmo import``: a long export with a TOML mapping or flags → vu.csv and
patients.csv → ``load_panel`` gives the analysis frames of the equivalent wide files."""

from __future__ import annotations

import subprocess
import warnings

import pandas as pd
import pytest
from long_tables import long_export, make_cohort, wide_tables  # tests/long_tables.py

import syndesmo as sy
from syndesmo.cli import app as cli
from syndesmo.errors import DataNote

MAPPING = """\
patient = "subj"
vu = "level"
week = "visit_wk"
mri = "asspimri"
upper = "msasss_up"
lower = "msasss_lo"
reader = "reader_id"
arm = "treatment"
"""


def call(capsys, *args: str) -> subprocess.CompletedProcess:
    capsys.readouterr()
    rc = cli.main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(["syndesmo", *args], rc, cap.out, cap.err)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    patients, mri, xray = make_cohort(n_patients=30, seed=11)
    long = long_export(mri, xray)
    long.to_csv(d / "export.csv", index=False, sep=";")  # a semicolon export
    patients.rename(columns={"subject": "subj"}).to_csv(d / "demog.csv", index=False)
    (d / "trial.toml").write_text(MAPPING)
    wide, pat = wide_tables(patients, mri, xray)
    wide.to_csv(d / "vu_wide.csv", index=False)
    pat.to_csv(d / "patients_wide.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        wide_panel = sy.load_panel(d / "vu_wide.csv", d / "patients_wide.csv")
    return d, wide_panel


def _frames_equal(panel, wide_panel) -> None:
    for readers in ("mean", "per_reader"):
        for exposure in ("w0", "w12", "w12_or_w52", "any"):
            a = sy.analysis_frame(panel, exposure=exposure, covariates=["arm"], readers=readers)
            b = sy.analysis_frame(
                wide_panel, exposure=exposure, covariates=["arm"], readers=readers
            )
            keys = [k for k in ("patient", "vu", "reader") if k in a.data.columns]
            pd.testing.assert_frame_equal(
                a.data.sort_values(keys).reset_index(drop=True),
                b.data.sort_values(keys).reset_index(drop=True),
            )
            assert a.data["new_syndesmophyte"].sum() > 3


def test_import_with_a_mapping_file_then_load_panel(capsys, export):
    d, wide_panel = export
    out = d / "panel"
    proc = call(
        capsys,
        "import",
        str(d / "export.csv"),
        "--patients",
        str(d / "demog.csv"),
        "--mapping",
        str(d / "trial.toml"),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "MRI weeks [0, 12, 52], x-ray weeks [0, 104], readers ['R1', 'R2']" in proc.stdout
    assert "'C2-C3' read as 'C2/3'" in proc.stderr and "MRI read once" in proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = sy.load_panel(out / "vu.csv", out / "patients.csv")
    _frames_equal(panel, wide_panel)
    # a second run replaces its own files; a file it did not write is never replaced
    assert call(capsys, "import", str(d / "export.csv"), "--patients", str(d / "demog.csv"),
                "--mapping", str(d / "trial.toml"), "--out", str(out)).returncode == 0  # fmt: skip


def test_import_with_flags_overriding_the_file(capsys, export, tmp_path):
    d, wide_panel = export
    long = pd.read_csv(d / "export.csv", sep=";").rename(columns={"level": "spinal_level"})
    long.to_stata(tmp_path / "export.dta", write_index=False, version=118)
    proc = call(
        capsys,
        "import",
        str(tmp_path / "export.dta"),
        "--patients",
        str(d / "demog.csv"),
        "--mapping",
        str(d / "trial.toml"),
        "--vu",
        "spinal_level",
        "--out",
        str(tmp_path / "panel"),
    )
    assert proc.returncode == 0, proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        panel = sy.load_panel(tmp_path / "panel" / "vu.csv", tmp_path / "panel" / "patients.csv")
    _frames_equal(panel, wide_panel)


def test_import_refuses_foreign_files_and_bad_mappings(capsys, export, tmp_path):
    d, _ = export
    out = tmp_path / "mine"
    out.mkdir()
    (out / "vu.csv").write_text("not ours\n")
    proc = call(capsys, "import", str(d / "export.csv"), "--mapping", str(d / "trial.toml"),
                "--patients", str(d / "demog.csv"), "--out", str(out))  # fmt: skip
    assert proc.returncode == 2 and "vu.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "vu.csv").read_text() == "not ours\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('patient = "subj"\nlevel = "level"\n')
    proc = call(capsys, "import", str(d / "export.csv"), "--mapping", str(bad), "--out",
                str(tmp_path / "x"))  # fmt: skip
    assert proc.returncode == 2
    assert "unknown key(s) ['level']" in proc.stderr and "Traceback" not in proc.stderr
    proc = call(capsys, "import", str(d / "export.csv"), "--out", str(tmp_path / "y"))
    assert proc.returncode == 2
    assert "column(s) not found: patient='patient'" in proc.stderr
