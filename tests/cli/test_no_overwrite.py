"""Every command that writes files refuses to replace files it did not write.

A file of the same name that syndesmo did not write (no entry in the directory's
marker, or changed since) makes the command fail with one line and exit status 2,
before any work, and leaves the file as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syndesmo.cli.app import main

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "synthetic"
SPEC = SHIPPED / "assert_like.toml"
VU, PATIENTS = str(SHIPPED / "vu.csv"), str(SHIPPED / "patients.csv")


@pytest.mark.parametrize(
    ("command", "foreign", "argv"),
    [
        ("power", "power.csv", ["--spec", str(SPEC), "--sims", "1", "--patients", "20"]),
        ("simulate", "vu.csv", ["--spec", str(SPEC)]),
        ("describe", "notes.txt", ["--vu", VU, "--patients", PATIENTS]),
        ("reproduce", "notes.txt", ["--quiet"]),
    ],
)
def test_a_foreign_file_is_never_replaced(tmp_path, capsys, command, foreign, argv):
    out = tmp_path / "out"
    out.mkdir()
    (out / foreign).write_text("the user's own file\n", encoding="utf-8")
    assert main([command, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"syndesmo {command}: error: ") and "\n" not in err, err
    assert foreign in err
    assert (out / foreign).read_text(encoding="utf-8") == "the user's own file\n"
    assert sorted(p.name for p in out.iterdir()) == [foreign]
