"""Any visit weeks (issue 13 part 2): specs accept every exposure the panel's MRI weeks
allow, and ``reproduce`` fits its default specs to the panel's own weeks and
covariates, saying which it used."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from syndesmo.analysis.reproduction import _week_map, adapt_specs, spec_weeks
from syndesmo.analysis.specs import default_spec_dir, load_specs, validate
from syndesmo.cli.app import main
from syndesmo.errors import DataNote
from syndesmo.panel.tables import load_panel
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort, write_cohort


def quiet_load(vu, pat):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        return load_panel(vu, pat)


@pytest.fixture(scope="module")
def weeks_0_12_52(tmp_path_factory) -> tuple[Path, Path]:
    """A simulated cohort with MRI at weeks 0/12/52 and x-rays at 0/104, without BASDAI."""
    out = tmp_path_factory.mktemp("w12")
    spec = CohortSpec(n_patients=60, mri_weeks=(0, 12, 52), xray_weeks=(0, 104))
    vu, pat = write_cohort(simulate_cohort(spec, seed=2), out)
    pd.read_csv(pat).drop(columns=["basdai"]).to_csv(pat, index=False)
    return vu, pat


@pytest.fixture(scope="module")
def assert_weeks(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("assert")
    return write_cohort(simulate_cohort(CohortSpec(n_patients=30), seed=4), out)


def test_shipped_specs_on_assert_weeks_are_unchanged(assert_weeks):
    specs = load_specs(default_spec_dir())
    adapted, notes = adapt_specs(quiet_load(*assert_weeks), specs)
    assert adapted == specs and notes == []
    assert spec_weeks(specs) == [0, 24, 102]


def test_shipped_specs_read_at_weeks_0_12_52(weeks_0_12_52):
    specs = load_specs(default_spec_dir())
    adapted, notes = adapt_specs(quiet_load(*weeks_0_12_52), specs)
    by_name = {s.name: s for s in adapted}
    assert by_name["new_syndesmophyte"].exposures == (
        "w0",
        "w12",
        "w52",
        "w0_and_w12",
        "w0_or_w12",
        "any",
    )
    assert "basdai" not in by_name["new_syndesmophyte"].covariates
    assert "crp" in by_name["new_syndesmophyte"].covariates
    assert by_name["patient_any_new"].exposures == ("w0", "w12", "any")
    assert by_name["patient_progression"].exposures == ("w0", "w12")
    assert by_name["patient_n_new"] == next(s for s in specs if s.name == "patient_n_new")
    assert any("week 24 → week 12" in n and "week 102 → week 52" in n for n in notes)
    assert any("new_syndesmophyte" in n and "basdai" in n for n in notes)


@pytest.mark.parametrize(
    ("weeks", "expected"),
    [
        ((0, 12, 52), {0: 0, 24: 12, 102: 52}),
        ((0, 52), {0: 0, 24: None, 102: 52}),
        ((0, 4, 12, 52), {0: 0, 24: 4, 102: 52}),
        ((0,), {0: 0, 24: None, 102: 0}),
    ],
)
def test_week_map(weeks, expected):
    assert _week_map([0, 24, 102], weeks) == expected


def test_two_mri_weeks_drop_what_they_cannot_give(weeks_0_12_52, tmp_path):
    """With MRI at 0 and 52 only, exposures naming a middle week are left out."""
    vu, pat = weeks_0_12_52
    pd.read_csv(vu).drop(columns=["mri_w12"]).to_csv(tmp_path / "vu.csv", index=False)
    panel = quiet_load(tmp_path / "vu.csv", pat)
    assert panel.mri_weeks == [0, 52]
    specs = load_specs(default_spec_dir())
    adapted, _ = adapt_specs(panel, specs)
    new = next(s for s in adapted if s.name == "new_syndesmophyte")
    assert new.exposures == ("w0", "w52", "any")


def test_a_spec_naming_week_12_is_accepted_and_fitted(weeks_0_12_52, tmp_path, capsys):
    spec = validate({"outcome": "new_syndesmophyte", "exposure": ["w12", "w12_or_w52"]})
    assert spec.exposures == ("w12", "w12_or_w52")
    path = tmp_path / "w12.toml"
    path.write_text(
        'outcome = "new_syndesmophyte"\nexposure = ["w12", "w12_or_w52"]\n'
        'covariates = ["arm"]\nbeside = []\n'
    )
    vu, pat = weeks_0_12_52
    assert main(["fit", str(path), "--vu", str(vu), "--patients", str(pat)]) == 0
    out = capsys.readouterr().out
    assert "inflamed at week 12" in out and "inflamed at week 12 or week 52" in out


def test_reproduce_runs_on_weeks_0_12_52_with_default_specs(weeks_0_12_52, tmp_path, capsys):
    vu, pat = weeks_0_12_52
    out = tmp_path / "rep"
    code = main(
        ["reproduce", "--vu", str(vu), "--patients", str(pat), "--out", str(out), "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "panel has MRI weeks [0, 12, 52]" in captured.err
    assert "basdai" in captured.err
    ladder = pd.read_csv(out / "ladder.csv")
    assert {"w0", "w12", "w52", "w0_and_w12", "any"} <= set(ladder["exposure"])
    assert "inflamed at week 12" in set(ladder["exposure_label"])
    assert (ladder["step"] == "d").any()
    report = (out / "report.md").read_text()
    # what was adapted is in the report, not only on the terminal; the results speak of
    # the panel's weeks only
    results, adapted = report.split("The shipped specs were adapted to this panel:")
    assert "panel has MRI weeks [0, 12, 52]" in adapted and "(were w0, w24, any)" in adapted
    assert "inflamed at week 52" in results and "week 24" not in results
