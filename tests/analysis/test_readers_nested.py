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
