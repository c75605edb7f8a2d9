"""Recognising the shipped synthetic cohort and simulated cohorts (``data_provenance``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from syndesmo.analysis.provenance import OBSERVED, SHIPPED, SIMULATED, data_provenance
from syndesmo.cli.app import main
from syndesmo.panel.tables import load_panel
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "synthetic"


def test_a_copy_of_the_shipped_cohort_is_recognised_with_its_truth(tmp_path):
    for name in ("vu.csv", "patients.csv"):
        shutil.copy(SHIPPED_DIR / name, tmp_path / name)
    panel = load_panel(tmp_path / "vu.csv", tmp_path / "patients.csv")
    for prov in (data_provenance(panel), data_provenance(panel, tmp_path / "patients.csv")):
        spec = CohortSpec.from_toml(SHIPPED_DIR / "assert_like.toml")
        assert prov.kind == SHIPPED and prov.synthetic
        assert prov.truth["or_new"] == spec.odds_ratio_new == 2.0
        assert prov.truth["exposure"] == "w0" and prov.truth["seed"] == spec.seed == 2019


def test_an_edited_cohort_is_not_called_shipped(tmp_path):
    pat = pd.read_csv(SHIPPED_DIR / "patients.csv")
    pat.loc[0, "age"] += 1
    pat.to_csv(tmp_path / "patients.csv", index=False)
    panel = load_panel(SHIPPED_DIR / "vu.csv", tmp_path / "patients.csv")
    assert data_provenance(panel).kind == OBSERVED
    assert data_provenance(panel, tmp_path / "patients.csv").kind == OBSERVED


def test_simulated_cohorts_carry_their_truth(tmp_path):
    panel = simulate_cohort(CohortSpec(n_patients=20, odds_ratio_new=3.0), seed=5)
    prov = data_provenance(panel)
    assert prov.kind == SIMULATED and prov.truth["or_new"] == 3.0 and prov.truth["seed"] == 5
    # written by `syndesmo simulate`: truth.json beside the files
    spec = tmp_path / "spec.toml"
    CohortSpec(n_patients=20, odds_ratio_new=1.5).to_toml(spec)
    assert main(["simulate", "--spec", str(spec), "--seed", "4", "--out", str(tmp_path)]) == 0
    read = load_panel(tmp_path / "vu.csv", tmp_path / "patients.csv")
    prov = data_provenance(read, tmp_path / "patients.csv")
    assert prov.kind == SIMULATED and prov.truth["or_new"] == 1.5 and prov.truth["seed"] == 4
