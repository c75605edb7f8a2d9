"""Per-reader rows: readings within VUs within patients, so no VU counts twice.

With ``readers="per_reader"`` the ladder fits the GLMM with ``(1|patient/vu)`` plus the
reader as a term; GEE keeps patient clusters with reader as a term (the model of
Machado et al., Ann Rheum Dis 2016). The nested native fit is checked against lme4's
``glmer`` on the same formula in a live R test.
"""

from __future__ import annotations

import numpy as np
import pytest

import syndesmo as sy
from syndesmo.analysis.ladder import ladder_result
from syndesmo.analysis.levels import compare_levels_result
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort


@pytest.fixture(scope="module")
def readers_ladder():
    panel = simulate_cohort(CohortSpec(n_patients=120, n_readers=2), seed=7)
    result = ladder_result(
        panel,
        outcome="new_syndesmophyte",
        exposures=["w0"],
        readers="per_reader",
        engine="native",
        engines_beside=["gee"],
        within=False,
        keep_fits=True,
    )
    return panel, result


def test_glmm_nests_readings_in_vus_and_gee_keeps_patient_clusters(readers_ladder):
    _, result = readers_ladder
    table = result.table
    native = table[(table["engine"] == "native") & (table["step"] == "b")].iloc[0]
    gee = table[(table["engine"] == "gee") & (table["step"] == "b")].iloc[0]
    assert native["formula"].endswith("+ C(reader) + (1|patient/vu)")
    assert gee["formula"].endswith("+ C(reader) + (1|patient)")
    fit = result.fits[("new_syndesmophyte", "w0", "b", "native")]
    assert list(fit.varcorr["grp"]) == ["vu:patient", "patient"]
    assert native["sigma"] == pytest.approx(fit.varcorr["sdcor"].iloc[1])
    assert native["n_patients"] == fit.n_groups == fit.details.groups["patient"]


@pytest.mark.r
def test_nested_per_reader_fit_equals_lme4(readers_ladder, r_lme4):
    panel, result = readers_ladder
    fit = result.fits[("new_syndesmophyte", "w0", "c", "native")]
    frame = sy.analysis_frame(
        panel,
        outcome="new_syndesmophyte",
        exposure="w0",
        covariates=["arm"],
        readers="per_reader",
    )
    r = sy.fit(fit.formula, frame, engine="lme4", tol_pwrss=1e-12)
    assert r.converged, r.convergence.message
    np.testing.assert_allclose(fit.params, r.params, atol=1e-4)
    np.testing.assert_allclose(fit.varcorr["sdcor"], r.varcorr["sdcor"], atol=1e-4)
    assert fit.loglik == pytest.approx(r.loglik, abs=1e-3)


def test_compare_levels_fits_per_reader_rows_as_the_ladder_does(readers_ladder):
    panel, result = readers_ladder
    res = compare_levels_result(
        panel, "w0", readers="per_reader", beside=("gee", "logit"), patient_models=()
    )
    vu = res.table.set_index("engine")
    assert vu.loc["native", "formula"].endswith("+ arm + C(reader) + (1|patient/vu)")
    assert vu.loc["gee", "formula"].endswith("+ arm + C(reader) + (1|patient)")
    assert vu.loc["logit", "formula"] == "new_syndesmophyte ~ mri + arm + C(reader)"
    # the same model as the ladder's step (c): the same odds ratio and counts
    ladder = result.table[result.table["step"].eq("c")].set_index("engine")
    for engine in ("native", "gee"):
        assert vu.loc[engine, "estimate"] == pytest.approx(ladder.loc[engine, "OR"], rel=1e-9)
        assert vu.loc[engine, "n_units"] == ladder.loc[engine, "n_vus"]
    frame = sy.analysis_frame(panel, exposure="w0", covariates=["arm"], readers="per_reader")
    assert vu.loc["native", "n_units"] == len(frame)  # readings, as documented


def test_noted_rows_of_an_exposure_without_vus_keep_the_reader_term(readers_ladder):
    panel, _ = readers_ladder
    vu = panel.vu.copy()
    vu["mri_w102"] = np.nan
    blind = sy.VUPanel(vu, panel.patients.copy(), source="modified")
    table = ladder_result(
        blind, "new_syndesmophyte", ["w102"], readers="per_reader", within=False
    ).table
    assert table["note"].str.startswith("no eligible VU").all()
    assert table["formula"].str.contains(r"C\(reader\)").all()
    assert table.loc[table["engine"].eq("native"), "formula"].str.endswith("(1|patient/vu)").all()


def test_patient_level_per_reader_counts_readings(readers_ladder):
    panel, _ = readers_ladder
    readings = sy.patient_level(panel, "w0", "n_new", readers="per_reader").frame
    readings = readings.set_index("patient")[["outcome", "n_at_risk"]]
    # each reader alone, as a one-reader panel: the per-reader counts are their sums
    alone = []
    for reader, vu in panel.vu.groupby("reader"):
        one = sy.VUPanel(vu.drop(columns="reader"), panel.patients.copy(), source=str(reader))
        pl = sy.patient_level(one, "w0", "n_new").frame.set_index("patient")
        alone.append(pl[["outcome", "n_at_risk"]])
    assert len(alone) == 2
    total = alone[0].add(alone[1], fill_value=0).reindex(readings.index)
    assert (readings == total).all().all()
    anyone = sy.patient_level(panel, "w0", "any_new", readers="per_reader").frame
    assert (anyone.set_index("patient")["outcome"] == (readings["outcome"] > 0)).all()
