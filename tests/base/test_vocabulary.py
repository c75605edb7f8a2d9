"""The words of ``syndesmo.vocabulary``: the exposure grammar read against a panel's
own MRI weeks, the labels, the reference arm and the covariates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.analysis.ladder import fit_spec
from syndesmo.analysis.patient import patient_frame
from syndesmo.analysis.reproduction import check_specs
from syndesmo.analysis.specs import load_spec, validate
from syndesmo.derive.frame import analysis_frame, exposure_values, needed_weeks
from syndesmo.errors import DeriveError, SpecError
from syndesmo.vocabulary import (
    COVARIATES,
    available_exposures,
    covariate,
    exposure_label,
    parse_exposure,
    reader_rule,
    reference_first,
)

# --------------------------------------------------------------------------- grammar


def test_exposure_grammar_reads_any_week():
    assert parse_exposure("w12") == parse_exposure("w12", [0, 12, 52])
    e = parse_exposure("w12_or_w52", [0, 12, 52])
    assert (e.kind, e.weeks, e.binary, e.single_week) == ("or", (12, 52), True, False)
    assert parse_exposure("w0_and_w12_and_w52").weeks == (0, 12, 52)
    assert parse_exposure("max_score").binary is False
    assert needed_weeks("any", [52, 0, 12]) == [0, 12, 52]
    assert needed_weeks("w12_and_w52", [0, 12, 52]) == [12, 52]
    for bad in ("w24_and_w0", "w0_and_w12_or_w52", "w012", "w0_and_w0", "persistent", 12):
        with pytest.raises(DeriveError, match="unknown exposure"):
            parse_exposure(bad)
    with pytest.raises(DeriveError, match=r"'w24' for MRI weeks \[0, 12, 52\].*w12_or_w52"):
        parse_exposure("w24", [0, 12, 52])
    with pytest.raises(DeriveError, match="'resolved' for MRI weeks"):
        parse_exposure("resolved", [0])
    assert "w12_or_w52" in available_exposures([0, 12, 52])


def test_exposure_values_of_several_weeks():
    mri = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 2], [1, np.nan, 1]], dtype=float)
    weeks = [0, 12, 52]
    np.testing.assert_array_equal(
        exposure_values(mri, weeks, "w0_and_w12_and_w52"), [0, 1, 0, np.nan]
    )
    np.testing.assert_array_equal(exposure_values(mri, weeks, "w12_or_w52"), [0, 1, 1, np.nan])
    np.testing.assert_array_equal(exposure_values(mri, weeks, "w0_or_w52"), [1, 1, 1, 1])


def test_labels_read_naturally_for_any_week():
    assert exposure_label("w0") == "inflamed at baseline"
    assert exposure_label("w12") == "inflamed at week 12"
    assert exposure_label("w0_and_w24") == "inflamed at baseline and week 24"
    assert exposure_label("w12_or_w52") == "inflamed at week 12 or week 52"
    assert exposure_label("w0_and_w12_and_w52") == "inflamed at baseline, week 12 and week 52"
    assert exposure_label("never") == "never inflamed"
    assert exposure_label("not-a-name") == "not-a-name"


def test_reader_rules_have_one_spelling():
    assert reader_rule("reader") == "per_reader"
    with pytest.raises(DeriveError, match=r"unknown readers rule 'both'; choose one of mean"):
        reader_rule("both")


@pytest.fixture(scope="module")
def panel_12_52():
    """A simulated cohort with MRI at weeks 0, 12 and 52."""
    spec = sy.CohortSpec(n_patients=120, mri_weeks=(0, 12, 52), exposure="w12")
    return sy.simulate_cohort(spec, seed=3)


def test_a_spec_naming_w12_loads_and_fits_on_a_panel_with_those_weeks(panel_12_52, tmp_path):
    path = tmp_path / "week12.toml"
    path.write_text(
        'outcome = "new_syndesmophyte"\nexposure = ["w12", "w12_or_w52"]\n'
        'covariates = ["arm"]\nengine = "native"\n',
        encoding="utf-8",
    )
    spec = load_spec(path)
    check_specs(panel_12_52, [spec])
    fits = fit_spec(panel_12_52, spec)
    assert [f.exposure for f in fits] == ["w12", "w12_or_w52"]
    assert fits[0].title.endswith("(inflamed at week 12)")
    for f in fits:
        assert f.fit.converged and np.isfinite(f.fit.params["mri"])
        # rows in + rows left out = panel rows
        assert f.fit.n_obs + f.fit.ledger.n_excluded == len(panel_12_52.vu)
    wrong = validate({"outcome": "new_syndesmophyte", "exposure": "w24"}, source="w24.toml")
    with pytest.raises(SpecError, match=r"w24\.toml: exposure\(s\) \['w24'\].*w12_or_w52"):
        check_specs(panel_12_52, [wrong])


def test_spec_total_summary_takes_any_single_week():
    base = {"level": "patient", "outcome": "any_new", "summary": "total"}
    assert validate({**base, "exposure": "w12"}).exposures == ("w12",)
    with pytest.raises(SpecError, match="not single weeks"):
        validate({**base, "exposure": "w12_or_w52"})


# --------------------------------------------------------------------------- the reference arm


def test_reference_arm_rule_is_case_insensitive_and_can_be_chosen():
    assert reference_first(["infliximab", "placebo"]) == ["placebo", "infliximab"]
    assert reference_first(["Infliximab", "Placebo", "Placebo"]) == ["Placebo", "Infliximab"]
    assert reference_first(["TNF", "PBO"]) == ["PBO", "TNF"]
    assert reference_first(["b", "a", None, float("nan")]) == ["a", "b"]  # no control: sorted
    assert reference_first(["infliximab", "placebo"], "infliximab") == ["infliximab", "placebo"]
    assert reference_first(["Infliximab", "Placebo"], "INFLIXIMAB") == ["Infliximab", "Placebo"]
    with pytest.raises(DeriveError, match=r"reference arm 'etanercept'.*infliximab, placebo"):
        reference_first(["infliximab", "placebo"], "etanercept")


def _capitalised(panel):
    patients = panel.patients.assign(arm=panel.patients["arm"].str.capitalize())
    return sy.VUPanel(panel.vu, patients, source="capitalised")


def test_reference_arm_in_frames_fits_and_specs(panel_12_52):
    panel = _capitalised(panel_12_52)
    frame = analysis_frame(panel, exposure="w12", covariates=["arm"])
    assert list(frame["arm"].cat.categories) == ["Placebo", "Infliximab"]
    fit = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", frame)
    assert "arm[T.Infliximab]" in fit.params.index
    chosen = analysis_frame(panel, exposure="w12", covariates=["arm"], reference_arm="infliximab")
    assert list(chosen["arm"].cat.categories) == ["Infliximab", "Placebo"]
    assert chosen.settings["reference_arm"] == "infliximab"
    pf = patient_frame(panel, "w12", "any_new", reference_arm="Infliximab")
    assert list(pf["arm"].cat.categories) == ["Infliximab", "Placebo"]
    assert patient_frame(panel, "w12")["arm"].cat.categories[0] == "Placebo"
    spec = validate(
        {"outcome": "new_syndesmophyte", "exposure": "w12", "reference_arm": "Infliximab"}
    )
    assert spec.with_options(engine="gee").reference_arm == "Infliximab"
    (res,) = fit_spec(panel, spec)
    assert "arm[T.Placebo]" in res.fit.params.index
    with pytest.raises(SpecError, match="reference arm 'TNF' is not an arm"):
        check_specs(panel, [spec.with_options(reference_arm="TNF")])
    with pytest.raises(SpecError, match="reference_arm must be the name of an arm"):
        validate({"outcome": "growth", "exposure": "w0", "reference_arm": 1})


def test_describe_orders_arms_by_the_same_rule(panel_12_52):
    from syndesmo.analysis.describe import inflammation_prevalence

    prev = inflammation_prevalence(_capitalised(panel_12_52))
    assert pd.unique(prev["arm"]).tolist() == ["Placebo", "Infliximab", "all"]


# --------------------------------------------------------------------------- covariates


def test_covariates_have_one_definition():
    assert covariate("lumbar") is COVARIATES["region"]
    assert covariate("male").simulated == "patient_male"
    assert "mg/L" in COVARIATES["crp"].scale
    with pytest.raises(DeriveError, match="unknown covariate 'bmi'; choose one of arm"):
        covariate("bmi")


def test_power_and_simulation_check_take_crp_on_the_same_scale():
    from syndesmo.derive.frame import derive_arrays
    from syndesmo.simulate.cohort import simulate_arrays
    from syndesmo.simulate.covariates import covariate_values

    spec = sy.CohortSpec(n_patients=30)
    arrays = simulate_arrays(spec, np.random.default_rng(1))
    d = derive_arrays(arrays)
    crp = covariate_values("crp", arrays, d)
    np.testing.assert_array_equal(crp, arrays["patient_crp"][d["patient"]])
    lumbar = covariate_values("lumbar", arrays, d)
    np.testing.assert_array_equal(lumbar, covariate_values("region", arrays, d))
