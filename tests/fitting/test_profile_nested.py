"""Intervals of a nested fit: profile intervals of the fixed effects and of both SDs
against lme4's ``confint(m, method = "profile")``, Wald intervals of the SDs.

The stored reference (``tests/references/multilevel/profile_nested/``, with the R script
that made it) is lme4 at ``tolPwrss = 1e-12`` and a tight bobyqa. lme4 finds its
endpoints by interpolating a spline through the profile at a few points, so endpoints
agree to about 1e-3; the native ones are roots found to 1e-10.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from multilevel_cases import CASES, REFERENCES

import syndesmo as sy

HERE = REFERENCES / "profile_nested"
FORMULA = "y ~ mri + arm + reader + (1|patient/vu)"
TOL_ENDPOINT = 2e-3


@pytest.fixture(scope="module")
def nested():
    data = pd.read_csv(HERE / "data.csv")
    return sy.fit(FORMULA, data)


@pytest.fixture(scope="module")
def reference():
    return json.loads((HERE / "reference.json").read_text())


def test_the_fit_is_lme4s(nested, reference):
    np.testing.assert_allclose(nested.params, reference["fixef"], atol=1e-4)
    np.testing.assert_allclose(nested.varcorr["sdcor"], reference["sd"], atol=1e-4)
    assert list(nested.varcorr["grp"]) == reference["sd_grp"]
    assert nested.loglik == pytest.approx(reference["loglik"], abs=1e-3)


def test_profile_intervals_agree_with_lme4(nested, reference):
    ci = dict(
        zip(
            reference["rows"], zip(reference["lower"], reference["upper"], strict=True), strict=True
        )
    )
    sds = nested.sd_conf_int(method="profile")
    # lme4 names the SDs .sig01, .sig02 in the order of VarCorr
    for j, label in enumerate(sds.index):
        lo, hi = ci[f".sig0{j + 1}"]
        assert sds.loc[label, "lower"] == pytest.approx(lo, abs=TOL_ENDPOINT)
        assert sds.loc[label, "upper"] == pytest.approx(hi, abs=TOL_ENDPOINT)
    fixed = nested.conf_int(method="profile")
    for name, r_name in zip(fixed.index, ["(Intercept)", "mri", "arm", "reader"], strict=True):
        lo, hi = ci[r_name]
        assert fixed.loc[name, "lower"] == pytest.approx(lo, abs=TOL_ENDPOINT)
        assert fixed.loc[name, "upper"] == pytest.approx(hi, abs=TOL_ENDPOINT)


def test_wald_intervals_of_the_sds_use_the_hessian(nested):
    wald = nested.sd_conf_int()
    se = nested.details.theta_se
    np.testing.assert_allclose(wald["upper"] - wald["estimate"], 1.959963984540054 * se)
    assert list(wald.index) == ["sd vu:patient (Intercept)", "sd patient (Intercept)"]


@pytest.fixture(scope="module")
def slope():
    load, formula = CASES["contraception_slope"]
    return sy.fit(formula, load())


def test_profile_intervals_of_slope_sds_agree_with_lme4(slope):
    # lme4 profiles the SDs of (urban|district) on its .sig/.cor scale; so does the
    # native engine, through the model in SDs and correlations (SdScaleModel)
    ref = json.loads((REFERENCES / "profile_slope" / "reference.json").read_text())
    np.testing.assert_allclose(slope.varcorr["sdcor"], ref["sdcor"], atol=1e-4)
    ci = dict(zip(ref["rows"], zip(ref["lower"], ref["upper"], strict=True), strict=True))
    ours = slope.sd_conf_int(method="profile")
    for label, r_name in (
        ("sd district (Intercept)", "sd_(Intercept)|district"),
        ("sd district urbanY", "sd_urbanY|district"),
    ):
        lo, hi = ci[r_name]
        assert ours.loc[label, "lower"] == pytest.approx(lo, abs=TOL_ENDPOINT)
        assert ours.loc[label, "upper"] == pytest.approx(hi, abs=TOL_ENDPOINT)


def test_sd_scale_is_the_same_model(slope):
    sd_model = slope.model.sd_scale()
    params = slope.model_params()
    phi = sd_model.to_sd_scale(params)
    p = len(slope.params)
    np.testing.assert_allclose(sd_model.to_theta(phi), params[p:], atol=1e-12)
    np.testing.assert_allclose(phi[p:], slope.varcorr["sdcor"], atol=1e-12)
    assert sd_model.loglik(phi) == pytest.approx(slope.loglik, abs=1e-9)
    # Wald SEs of the SDs by the delta method are finite and positive
    wald = slope.sd_conf_int()
    assert np.all(wald["upper"] > wald["estimate"]) and np.all(wald["lower"] >= 0)
