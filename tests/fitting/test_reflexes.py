"""lme4's reflexes against R: ranef, predict (new data, unseen groups, offsets), fitted,
residuals and anova.

Stored references: ``tests/references/reflexes/`` (made by ``reflexes.R`` there, from
``tests/references/data/vu.csv``). Predictions, fitted values and residuals are compared
at R's own estimates (the native fit with R's fixed effects and σ put in), so they test
the prediction code and not the optimiser: 1e-6. Conditional modes and SDs: 1e-4, at
R's estimates and at the native engine's own. The likelihood-ratio statistic and its
p-value: 1e-6. Live R (marked ``r``) repeats predict and anova with the lme4 engine.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.errors import ModelError
from syndesmo.fitting.anova import boundary_p
from syndesmo.fitting.design import build_design
from syndesmo.fitting.results import EngineDetails, FitResult, random_intercept

HERE = Path(__file__).resolve().parents[1] / "references"
REF = HERE / "reflexes"
TOL_PRED = 1e-6
TOL_RANEF = 1e-4
TOL_LRT = 1e-6

FORMULAS = {
    "vu": "new_syndesmophyte ~ mri + arm + region + scale(msasss_baseline) + (1|patient)",
    "vu_offset": "new_syndesmophyte ~ mri + arm + offset(msasss_baseline / 20) + (1|patient)",
}
CASES = [(case, nagq) for case in FORMULAS for nagq in (1, 15)]


def _vu() -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / "vu.csv")


def _new() -> pd.DataFrame:
    return pd.read_csv(REF / "new_rows.csv")


def _ref(case: str, nagq: int, what: str) -> pd.DataFrame:
    return pd.read_csv(REF / f"{case}_agq{nagq}_{what}.csv")


@cache
def _native(case: str, nagq: int):
    return sy.fit(FORMULAS[case], _vu(), nagq=nagq)


def _at_r_estimates(case: str, nagq: int):
    """The native fit with R's fixed effects and σ put in (same model object)."""
    fit = _native(case, nagq)
    est = _ref(case, nagq, "estimates").set_index("name")["value"]
    params = pd.Series(est.iloc[: len(fit.params)].to_numpy(), index=fit.params.index)
    return dataclasses.replace(
        fit, params=params, varcomps=random_intercept(fit.group, float(est["sigma"]))
    )


# --- stored references --------------------------------------------------------------


@pytest.mark.parametrize(("case", "nagq"), CASES)
def test_ranef_matches_lme4(case, nagq):
    ref = _ref(case, nagq, "ranef")
    for fit in (_at_r_estimates(case, nagq), _native(case, nagq)):
        got = fit.ranef()
        assert list(got.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
        assert list(got["grp"]) == list(ref["grp"])
        assert set(got["grpvar"]) == {"patient"} and set(got["term"]) == {"(Intercept)"}
        np.testing.assert_allclose(got["condval"], ref["condval"], rtol=0, atol=TOL_RANEF)
        np.testing.assert_allclose(got["condsd"], ref["condsd"], rtol=0, atol=TOL_RANEF)


@pytest.mark.parametrize(("case", "nagq"), CASES)
def test_fitted_and_residuals_match_lme4(case, nagq):
    ref = _ref(case, nagq, "fitted")
    fit = _at_r_estimates(case, nagq)
    np.testing.assert_allclose(fit.fitted(), ref["response"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.fitted("link"), ref["link"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals(), ref["deviance"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals("pearson"), ref["pearson"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(
        fit.residuals("response"), ref["resid_response"], rtol=0, atol=TOL_PRED
    )


@pytest.mark.parametrize(("case", "nagq"), CASES)
def test_predict_new_rows_with_an_unseen_patient_matches_lme4(case, nagq):
    ref = _ref(case, nagq, "predict")
    new = _new()
    assert "P999" in set(new["patient"]) and "P999" not in set(_vu()["patient"])
    fit = _at_r_estimates(case, nagq)
    for col, kwargs in {
        "response": {},
        "link": {"type": "link"},
        "fixed_response": {"conditional": False},
        "fixed_link": {"type": "link", "conditional": False},
    }.items():
        got = fit.predict(new, **kwargs)
        assert list(got.index) == list(new.index)
        np.testing.assert_allclose(got, ref[col], rtol=0, atol=TOL_PRED, err_msg=col)
    unseen = (new["patient"] == "P999").to_numpy()  # random effect 0: the fixed part
    np.testing.assert_allclose(
        fit.predict(new)[unseen], fit.predict(new, conditional=False)[unseen], atol=1e-15
    )


def test_new_rows_are_coded_as_the_fitted_rows():
    """The fitted rows given as new data predict their fitted values: scale() keeps the
    constants of the fitted data, factor levels their coding, patients their modes."""
    fit = _native("vu", 1)
    rows = _vu().iloc[::7]
    np.testing.assert_allclose(fit.predict(rows), fit.fitted().loc[rows.index], atol=1e-12)


def test_anova_of_nested_fixed_effects_matches_lme4():
    ref = pd.read_csv(REF / "anova_fixed.csv")
    d = _vu()
    m0 = sy.fit("new_syndesmophyte ~ mri + (1|patient)", d, nagq=15)
    m1 = sy.fit("new_syndesmophyte ~ mri + arm + region + (1|patient)", d, nagq=15)
    table = sy.anova(m1, m0, names=["m1", "m0"])  # ordered by npar, as R
    assert list(table.index) == ["m0", "m1"]
    assert list(table["npar"]) == list(ref["npar"])
    for col in ("AIC", "BIC", "logLik", "deviance"):
        np.testing.assert_allclose(table[col], ref[col], rtol=0, atol=TOL_LRT, err_msg=col)
    assert table["Chisq"].iloc[1] == pytest.approx(ref["Chisq"].iloc[1], abs=TOL_LRT)
    assert table["Df"].iloc[1] == ref["Df"].iloc[1] == 2
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"].iloc[1], abs=TOL_LRT)
    assert np.isnan(table["Pr(>Chisq) boundary"]).all() and not table["note"].any()


def test_anova_of_a_variance_component_gives_the_boundary_p():
    ref = pd.read_csv(REF / "anova_variance.csv")
    d = _vu()
    g0 = sy.fit("new_syndesmophyte ~ mri + arm", d, engine="logit")
    g1 = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", d)
    table = sy.anova(g0, g1, names=["g0", "g1"])
    for col in ("npar", "logLik", "AIC", "BIC"):
        np.testing.assert_allclose(table[col], ref[col], rtol=0, atol=TOL_LRT, err_msg=col)
    assert table["Chisq"]["g1"] == pytest.approx(ref["Chisq"].iloc[1], abs=TOL_LRT)
    assert table["Pr(>Chisq)"]["g1"] == pytest.approx(ref["p"].iloc[1], rel=TOL_LRT)
    assert table["Pr(>Chisq) boundary"]["g1"] == pytest.approx(
        ref["p_boundary"].iloc[1], rel=TOL_LRT
    )
    assert "boundary" in table["note"]["g1"]


def test_boundary_p_is_the_chi_square_mixture():
    from scipy import stats

    assert boundary_p(3.0, 1) == pytest.approx(0.5 * stats.chi2.sf(3.0, 1))
    assert boundary_p(0.0, 1) == 1.0
    assert boundary_p(4.0, 3) == pytest.approx(
        0.5 * stats.chi2.sf(4.0, 3) + 0.5 * stats.chi2.sf(4.0, 2)
    )


# --- refusals and the engines without random effects ---------------------------------


def test_anova_refuses_what_cannot_be_compared():
    d = _vu()
    m1 = _native("vu", 1)
    base = sy.fit("new_syndesmophyte ~ mri + (1|patient)", d)
    with pytest.raises(ModelError, match="no maximised likelihood"):
        sy.anova(base, sy.fit("new_syndesmophyte ~ mri + (1|patient)", d, engine="gee"))
    with pytest.raises(ModelError, match="different nagq"):
        sy.anova(base, _native("vu", 15))
    with pytest.raises(ModelError, match="different rows"):
        sy.anova(base, sy.fit("new_syndesmophyte ~ mri + (1|patient)", d.iloc[:-5]))
    other = d.assign(y2=d["mri"])
    with pytest.raises(ModelError, match="different outcomes"):
        sy.anova(base, sy.fit("y2 ~ arm + (1|patient)", other))
    with pytest.raises(ModelError, match="conditional likelihood"):
        sy.anova(base, sy.fit("new_syndesmophyte ~ mri + (1|patient)", d, engine="clogit"))
    assert len(sy.anova(base, m1)) == 2


def test_predict_refuses_unknown_levels_and_missing_values():
    fit = _native("vu", 1)
    new = _new()
    with pytest.raises(ModelError, match="not fitted on"):
        fit.predict(new.assign(arm=["infliximab", "placebo", "etanercept", "placebo", "placebo"]))
    with pytest.raises(ModelError, match="missing value in row 2"):
        fit.predict(new.assign(mri=[1, 0, None, 0, 1]))
    with pytest.raises(ModelError, match="lack the column"):
        fit.predict(new.drop(columns="region"))
    with pytest.raises(ModelError, match="type must be one of"):
        fit.predict(new, type="probability")


def test_engines_without_random_effects_predict_the_fixed_part():
    d = _vu()
    new = _new()
    for engine in ("gee", "logit"):
        fit = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", d, engine=engine)
        X = np.column_stack([np.ones(len(new)), new["mri"], new["arm"] == "placebo"])
        eta = X @ fit.params.to_numpy()
        np.testing.assert_allclose(fit.predict(new, type="link"), eta, atol=1e-12)
        np.testing.assert_allclose(fit.predict(new), 1 / (1 + np.exp(-eta)), atol=1e-12)
        assert len(fit.residuals("pearson")) == fit.n_obs
        with pytest.raises(ModelError, match="no random effects"):
            fit.ranef()
    clr = sy.fit("new_syndesmophyte ~ mri + (1|patient)", d, engine="clogit")
    np.testing.assert_allclose(clr.predict(new, type="link"), new["mri"] * clr.params["mri"])
    with pytest.raises(ModelError, match="no intercept of its strata"):
        clr.fitted()


# --- live R ------------------------------------------------------------------------------

_R_PREDICT = """
function(d, new, formula, nagq) {
  d$patient <- factor(d$patient)
  m <- suppressMessages(lme4::glmer(stats::as.formula(formula), data = d,
                                    family = stats::binomial, nAGQ = nagq))
  re <- as.data.frame(lme4::ranef(m, condVar = TRUE))
  list(predict = predict(m, newdata = new, type = "response", allow.new.levels = TRUE),
       fitted = fitted(m), pearson = residuals(m, type = "pearson"),
       condval = re$condval, condsd = re$condsd)
}
"""


def _to_r(frame: pd.DataFrame):
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + pandas2ri.converter) as cv:
        return cv.py2rpy(frame)


@pytest.mark.r
@pytest.mark.parametrize("case", list(FORMULAS))
def test_lme4_engine_reflexes_match_r_live(r_lme4, case):
    import rpy2.robjects as ro

    d, new = _vu(), _new()
    fit = sy.fit(FORMULAS[case], d, engine="lme4")
    out = ro.r(_R_PREDICT)(_to_r(d), _to_r(new), FORMULAS[case].replace("(1|", "(1 | "), 1)
    got = {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names}
    re = fit.ranef()
    np.testing.assert_allclose(re["condval"], got["condval"], atol=TOL_RANEF)
    np.testing.assert_allclose(re["condsd"], got["condsd"], atol=TOL_RANEF)
    np.testing.assert_allclose(fit.predict(new), got["predict"], atol=TOL_PRED)
    np.testing.assert_allclose(fit.fitted(), got["fitted"], atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals("pearson"), got["pearson"], atol=TOL_PRED)


@pytest.mark.r
def test_anova_matches_r_live(r_lme4):
    import rpy2.robjects as ro

    d = _vu()
    f0 = "new_syndesmophyte ~ mri + (1 | patient)"
    f1 = "new_syndesmophyte ~ mri + arm + region + (1 | patient)"
    m0, m1 = (sy.fit(f, d, engine="lme4") for f in (f0, f1))
    out = ro.r(
        """function(d, f0, f1) {
          g <- function(f) suppressMessages(lme4::glmer(stats::as.formula(f), data = d,
                                                        family = stats::binomial))
          a <- anova(g(f0), g(f1))
          c(a$Chisq[2], a[["Pr(>Chisq)"]][2], a$AIC)
        }"""
    )(_to_r(d), f0, f1)
    chisq, p, aic0, aic1 = (float(v) for v in out)
    table = sy.anova(m0, m1)
    assert table["Chisq"].iloc[1] == pytest.approx(chisq, abs=TOL_LRT)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(p, abs=TOL_LRT)
    np.testing.assert_allclose(table["AIC"], [aic0, aic1], atol=TOL_LRT)


# --- nested and slope random effects: predict from the formula and lme4's table -------


@dataclasses.dataclass(frozen=True)
class _TableDetails(EngineDetails):
    """An engine's details holding a ranef table (as the lme4 engine's)."""

    table: pd.DataFrame

    def ranef_frame(self, group):
        return self.table


MULTILEVEL = {
    "nested": "use ~ age + I(age^2) + urban + ch + (1|district/urban)",
    "slope": "use ~ age + I(age^2) + urban + ch + (urban|district)",
}


@pytest.mark.parametrize("case", list(MULTILEVEL))
def test_predict_nested_and_slope_models_from_lme4s_ranef_table(case):
    """What the native engine's nested and slope fits will give: R's estimates and R's
    ranef table (grpvar ``urban:district``, labels ``Y:1``; terms ``(Intercept)`` and
    ``urbanY``) predict as R's ``predict``, new districts at 0."""
    formula = MULTILEVEL[case]
    data = pd.read_csv(REF / "contraception.csv", dtype={"district": str})
    new = pd.read_csv(REF / "contraception_new.csv", dtype={"district": str})
    design = _design_with_bars(formula, data)
    est = pd.read_csv(REF / f"contraception_{case}_estimates.csv")
    table = pd.read_csv(REF / f"contraception_{case}_ranef.csv", dtype={"grp": str})
    assert list(_r_names(design.names)) == list(est["name"])
    params = pd.Series(est["value"].to_numpy(), index=design.names)
    fit = FitResult(
        engine="native",
        formula=formula,
        params=params,
        vcov=pd.DataFrame(np.eye(len(params)), index=params.index, columns=params.index),
        n_obs=design.n_obs,
        details=_TableDetails(table),
        design=design,
    )
    pd.testing.assert_frame_equal(
        fit.ranef(), table.astype({"grpvar": object, "term": object}), check_dtype=False
    )
    fitted = pd.read_csv(REF / f"contraception_{case}_fitted.csv")
    np.testing.assert_allclose(fit.fitted("link"), fitted["link"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.fitted(), fitted["response"], rtol=0, atol=TOL_PRED)
    ref = pd.read_csv(REF / f"contraception_{case}_predict.csv")
    assert "999" not in set(data["district"])
    np.testing.assert_allclose(fit.predict(new, type="link"), ref["link"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.predict(new), ref["response"], rtol=0, atol=TOL_PRED)


def _design_with_bars(formula, data):
    """The design of a formula with nested or slope bars: ``build_design`` once it takes
    them, ``random_effects.multilevel_design`` before."""
    try:
        return build_design(formula, data)
    except ModelError:
        from syndesmo.fitting.random_effects import multilevel_design

        return multilevel_design(formula, data)[0]


def _r_names(names):
    """``urban[T.Y]`` → ``urbanY``, ``Intercept`` → ``(Intercept)``, as R names columns."""
    return [n.replace("Intercept", "(Intercept)").replace("[T.", "").rstrip("]") for n in names]


def test_a_ranef_table_whose_labels_match_no_fitted_row_is_refused():
    formula = MULTILEVEL["nested"]
    data = pd.read_csv(REF / "contraception.csv", dtype={"district": str})
    design = _design_with_bars(formula, data)
    table = pd.read_csv(REF / "contraception_nested_ranef.csv", dtype={"grp": str})
    swapped = table["grp"].str.split(":").map(lambda p: ":".join(reversed(p)))
    params = pd.Series(0.0, index=design.names)
    fit = FitResult(
        engine="native",
        formula=formula,
        params=params,
        vcov=pd.DataFrame(np.eye(len(params)), index=params.index, columns=params.index),
        n_obs=design.n_obs,
        details=_TableDetails(table.assign(grp=swapped)),
        design=design,
    )
    with pytest.raises(ModelError, match="match none of the fitted rows"):
        fit.fitted()


def test_offset_keyword_is_asked_for_or_read_from_new_data():
    d = _vu().assign(z=lambda f: f["msasss_baseline"] / 20)
    new = _new().assign(z=lambda f: f["msasss_baseline"] / 20)
    in_formula = sy.fit("new_syndesmophyte ~ mri + arm + offset(z) + (1|patient)", d)
    as_column = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", d, offset="z")
    as_array = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", d, offset=d["z"].to_numpy())
    expected = in_formula.predict(new)
    np.testing.assert_allclose(as_column.predict(new), expected, atol=1e-6)
    np.testing.assert_allclose(as_array.predict(new, offset=new["z"]), expected, atol=1e-6)
    with pytest.raises(ModelError, match="give predict"):
        as_array.predict(new)
    np.testing.assert_allclose(as_array.fitted(), in_formula.fitted(), atol=1e-6)


def test_anova_table_is_written_as_csv_and_markdown(tmp_path):
    from syndesmo.output.anova_text import write_anova
    from syndesmo.output.atomic import OutputError

    d = _vu()
    g0 = sy.fit("new_syndesmophyte ~ mri + arm", d, engine="logit")
    g1 = sy.fit("new_syndesmophyte ~ mri + arm + (1|patient)", d)
    table = sy.anova(g0, g1)
    paths = write_anova(table, tmp_path)
    assert [p.name for p in paths] == ["anova.csv", "anova.md"]
    back = pd.read_csv(tmp_path / "anova.csv")
    assert back["Chisq"].iloc[1] == pytest.approx(table["Chisq"].iloc[1], rel=1e-12)
    md = (tmp_path / "anova.md").read_text()
    assert "| Pr(>Chisq) boundary |" in md and "Note: one more variance component" in md
    write_anova(table, tmp_path)  # its own files: rewritten
    (tmp_path / "other.md").write_text("mine")
    with pytest.raises(OutputError):
        write_anova(table, tmp_path, name="other")


def test_poisson_fitted_values_and_residuals_match_glm():
    ref = pd.read_csv(REF / "poisson_cbpp_fitted.csv")
    cbpp = pd.read_csv(HERE / "data" / "cbpp.csv")
    fit = sy.fit("incidence ~ C(period) + offset(log(size))", cbpp, engine="poisson")
    np.testing.assert_allclose(fit.fitted(), ref["response"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.fitted("link"), ref["link"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals(), ref["deviance"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals("pearson"), ref["pearson"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(
        fit.residuals("response"), ref["resid_response"], rtol=0, atol=TOL_PRED
    )


def test_binomial_count_residuals_match_lme4():
    """Residuals of successes out of trials: the proportion's, weighted by the trials."""
    ref = pd.read_csv(REF / "cbpp_fitted.csv")
    est = pd.read_csv(REF / "cbpp_estimates.csv").set_index("name")["value"]
    cbpp = pd.read_csv(HERE / "data" / "cbpp.csv")
    fit = sy.fit("incidence ~ C(period) + (1|herd)", cbpp, trials="size")
    fit = dataclasses.replace(
        fit,
        params=pd.Series(est.iloc[:-1].to_numpy(), index=fit.params.index),
        varcomps=random_intercept(fit.group, float(est["sigma"])),
    )
    np.testing.assert_allclose(fit.fitted(), ref["response"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals(), ref["deviance"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(fit.residuals("pearson"), ref["pearson"], rtol=0, atol=TOL_PRED)
    np.testing.assert_allclose(
        fit.residuals("response"), ref["resid_response"], rtol=0, atol=TOL_PRED
    )
