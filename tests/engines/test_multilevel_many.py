"""fit_many_structured: many replicates of a nested design equal one fit each."""

from __future__ import annotations

import numpy as np
import pytest
from multilevel_cases import simulate_vu_readers

import syndesmo as sy
from syndesmo.engines.native.multilevel.many import fit_many_structured

FORMULA = "y ~ mri + arm + reader + (1|patient/vu)"


@pytest.fixture(scope="module")
def replicates():
    panels = [simulate_vu_readers(n_patients=40, seed=s) for s in (1, 2, 3)]
    base = panels[0]
    # the same rows and covariates, three response vectors; the third has no events
    Y = np.stack([panels[0]["y"], panels[1]["y"], np.zeros(len(base))]).astype(float)
    X = np.column_stack([np.ones(len(base)), base[["mri", "arm", "reader"]].to_numpy(float)])
    mask = np.ones_like(Y, dtype=bool)
    mask[1, :48] = False  # replicate 1 leaves out the first patients' rows
    return base, X, Y, mask


def test_each_replicate_equals_its_own_fit(replicates):
    base, X, Y, mask = replicates
    many = fit_many_structured(
        X,
        Y,
        base[["patient", "vu"]],
        "(1|patient/vu)",
        mask=mask,
        names=["Intercept", "mri", "arm", "reader"],
    )
    for r in (0, 1):
        data = base.assign(y=Y[r])[mask[r]]
        fit = sy.fit(FORMULA, data)
        np.testing.assert_allclose(many.params[r], fit.params, atol=1e-6)
        np.testing.assert_allclose(many.bse[r], fit.bse, rtol=1e-4)
        np.testing.assert_allclose(many.sds[r], fit.varcorr["sdcor"], atol=1e-6)
        assert many.loglik[r] == pytest.approx(fit.loglik, abs=1e-6)
        assert many.converged[r] and many.n_obs[r] == fit.n_obs
    assert many.sd_names == ["vu:patient (Intercept)", "patient (Intercept)"]
    assert not many.converged[2] and np.isnan(many.params[2]).all()
    assert "events" in many.messages[2]
