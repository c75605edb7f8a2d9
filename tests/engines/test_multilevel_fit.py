"""fit_multilevel: offset, boundary fits, conditional modes, inputs, convergence record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from multilevel_cases import CASES, simulate_vu_readers

from syndesmo.engines.native.multilevel import fit_formula, fit_multilevel
from syndesmo.errors import ModelError
from syndesmo.fitting.design import multilevel_design


@pytest.fixture(scope="module")
def panel():
    return simulate_vu_readers(n_patients=80, seed=3)


@pytest.fixture(scope="module")
def nested(panel):
    design, s = multilevel_design("y ~ mri + arm + (1|patient/vu)", panel)
    fit = fit_multilevel(design.X, design.y, design.trials, s, names=design.names)
    return design, s, fit


def test_offset_shifts_the_coefficient(panel, nested):
    design, s, fit = nested
    mri = panel["mri"].to_numpy(float)
    shifted = fit_multilevel(design.X, design.y, None, s, offset=0.5 * mri, names=design.names)
    np.testing.assert_allclose(shifted.params[1], fit.params[1] - 0.5, atol=1e-6)
    np.testing.assert_allclose(shifted.theta, fit.theta, atol=1e-6)
    assert shifted.loglik == pytest.approx(fit.loglik, abs=1e-8)


def test_merged_rows_give_the_same_fit(nested):
    # readers share the covariates of their VU, so their rows merge into binomial rows
    design, s, fit = nested
    plain = fit_multilevel(design.X, design.y, None, s, names=design.names, merge=False)
    np.testing.assert_allclose(plain.params, fit.params, atol=1e-7)
    np.testing.assert_allclose(plain.theta, fit.theta, atol=1e-7)
    np.testing.assert_allclose(plain.bse, fit.bse, rtol=1e-5)
    assert plain.loglik == pytest.approx(fit.loglik, abs=1e-8)


def test_fit_record(nested):
    design, _, fit = nested
    assert fit.converged and not fit.singular and fit.singular_terms == []
    assert fit.names == ["Intercept", "mri", "arm"]
    assert fit.n_obs == len(design.y)
    assert fit.n_groups == {"vu:patient": 80 * 12, "patient": 80}
    assert fit.theta_names == ["vu:patient.(Intercept)", "patient.(Intercept)"]
    assert fit.convergence["max_abs_gradient"] < 1e-6
    assert fit.convergence["max_scaled_gradient"] < 1e-6  # lme4's checkConv quantity
    assert fit.convergence["min_eigen_information"] > 0
    assert fit.vcov.shape == (3, 3) and np.all(np.isfinite(fit.theta_se))
    # conditional modes and SDs per term, lme4's ranef(condVar = TRUE) content
    levels, modes, sds = fit.ranef["patient"]
    assert modes.shape == (80, 1) and sds.shape == (80, 1) and len(levels) == 80
    assert np.all(sds > 0) and np.all(sds < fit.theta[1])
    assert fit.ranef["vu:patient"][1].shape == (960, 1)


def test_boundary_fit_is_singular_with_an_exact_zero():
    # Contraception with crossed district and number-of-children random intercepts: lme4
    # puts the livch SD at its boundary 0 (a singular fit); so does the native fit
    load, formula = CASES["contraception_crossed"]
    fit = fit_formula(formula, load())
    assert fit.converged, fit.message
    sd = fit.sd()
    assert sd[("livch", "(Intercept)")] == 0.0
    assert sd[("district", "(Intercept)")] == pytest.approx(0.52399, abs=1e-4)
    assert fit.singular and fit.singular_terms == ["livch"]
    assert np.all(np.isfinite(fit.bse))
    assert np.isnan(fit.theta_se[1]) and np.isfinite(fit.theta_se[0])


def test_start_values_and_bad_inputs(nested):
    design, s, fit = nested
    again = fit_multilevel(
        design.X, design.y, None, s, names=design.names, start=np.r_[fit.params, fit.theta]
    )
    np.testing.assert_allclose(again.params, fit.params, atol=1e-7)
    with pytest.raises(ModelError, match="start must hold"):
        fit_multilevel(design.X, design.y, None, s, start=[0.0, 1.0])
    with pytest.raises(ModelError, match="rows disagree"):
        fit_multilevel(design.X[:-1], design.y[:-1], None, s)
    with pytest.raises(ModelError, match="events"):
        fit_multilevel(design.X, np.zeros_like(design.y), None, s)
    with pytest.raises(ModelError, match="nagq"):
        fit_multilevel(design.X, design.y, None, s, nagq=0)


def test_binomial_counts_equal_binary_rows(panel):
    # the two readings of a VU as one binomial row (successes out of 2) give the same fit
    # and the same log-likelihood (binomial coefficients included)
    binary = fit_formula("y ~ mri + arm + (1|patient/vu)", panel)
    counts = (
        panel.groupby(["patient", "vu", "mri", "arm"], as_index=False)["y"]
        .agg(["sum", "count"])
        .reset_index()
    )
    counts = pd.DataFrame(counts)
    binom = fit_formula(
        "sum ~ mri + arm + (1|patient/vu)", counts, trials=counts["count"].to_numpy()
    )
    np.testing.assert_allclose(binom.params, binary.params, atol=1e-7)
    np.testing.assert_allclose(binom.theta, binary.theta, atol=1e-7)
    # binary rows: log C(1, y) = 0; counts: Σ log C(2, y) added
    extra = float(np.sum(np.log([1.0, 2.0, 1.0])[counts["sum"].to_numpy()]))
    assert binom.loglik == pytest.approx(binary.loglik + extra, abs=1e-7)
