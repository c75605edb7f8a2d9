"""The within-patient VU effect (ladder step e) against R.

* Stored references (``tests/references/within``, made by ``within.R`` there from the
  confounded frame ``make_frame.py`` wrote): base R's ``ave()`` split of ``mri``,
  ``lme4::glmer`` of the hybrid model at ``tolPwrss = 1e-12`` by Laplace and 15-point
  AGQ with the Wald test of within = between from ``vcov``, and ``survival::clogit``
  (exact).
* Live R (marked ``r``): the ladder's step (e) rows on a fresh confounded cohort
  against ``glmer`` and ``clogit`` called through rpy2.

Tolerances: the split 1e-12; the hybrid GLMM's estimates, σ and the within − between
difference 1e-4 (absolute), SEs 1e-3 relative, log-likelihood 1e-3 (as
``tests/references/README.md``); clogit 1e-6.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.analysis.ladder import ladder_result
from syndesmo.analysis.within import within_equals_between, within_sentence

REFERENCE = Path(__file__).resolve().parents[1] / "references" / "within"
HYBRID = "new_syndesmophyte ~ mri_within + mri_between + infliximab + (1|patient)"
TOL_FIXED, TOL_SE_REL, TOL_LOGLIK, TOL_CLOGIT = 1e-4, 1e-3, 1e-3, 1e-6
R_TERMS = {"(Intercept)": "Intercept"}


def _frame() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "vu_frame.csv")


def _ref(case: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    ref = pd.read_csv(REFERENCE / "within.csv", keep_default_na=False)
    ref = ref[ref["case"].eq(case)]
    est = ref[ref["quantity"].eq("estimate")].set_index("term")["value"].rename(R_TERMS)
    se = ref[ref["quantity"].eq("se")].set_index("term")["value"].rename(R_TERMS)
    scalar = ref[ref["term"].eq("")].set_index("quantity")["value"]
    return est.astype(float), se.astype(float), scalar.astype(float)


def test_within_between_matches_r_ave():
    frame = sy.within_between(_frame(), ["mri"])
    r = pd.read_csv(REFERENCE / "within_between.csv")
    assert (frame["patient"] == r["patient"]).all()
    np.testing.assert_allclose(frame["mri_between"], r["mri_between"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame["mri_within"], r["mri_within"], rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*single observation")
@pytest.mark.parametrize("nagq", [1, 15])
def test_hybrid_glmm_matches_stored_glmer(nagq):
    est, se, scalar = _ref(f"hybrid_nagq{nagq}")
    fit = sy.fit(HYBRID, sy.within_between(_frame(), ["mri"]), engine="native", nagq=nagq)
    assert fit.converged and list(fit.params.index) == list(est.index)
    assert np.abs(fit.params - est).max() < TOL_FIXED
    np.testing.assert_allclose(fit.bse, se, rtol=TOL_SE_REL)
    assert fit.sigma == pytest.approx(scalar["sigma"], abs=TOL_FIXED)
    assert fit.loglik == pytest.approx(scalar["loglik"], abs=TOL_LOGLIK)
    test = within_equals_between(fit)
    assert test["difference"] == pytest.approx(scalar["difference"], abs=TOL_FIXED)
    assert test["se"] == pytest.approx(scalar["difference_se"], rel=TOL_SE_REL)
    assert test["p"] == pytest.approx(scalar["p_within_between"], rel=1e-2)
    # on this confounded frame (propensity correlation 0.6) within and between differ
    assert test["p"] < 0.01 and test["log_or_between"] > fit.params["mri_within"]


def test_clogit_matches_stored_survival_clogit_on_the_confounded_frame():
    est, se, scalar = _ref("clogit_exact")
    fit = sy.fit("new_syndesmophyte ~ mri + (1|patient)", _frame(), engine="clogit")
    assert abs(fit.params["mri"] - est["mri"]) < TOL_CLOGIT
    assert abs(fit.bse["mri"] - se["mri"]) < TOL_CLOGIT
    assert abs(fit.loglik - scalar["loglik"]) < TOL_CLOGIT
    assert abs(fit.details.loglik_null - scalar["loglik_null"]) < TOL_CLOGIT


# ---------------------------------------------------------------------------
# the ladder's step (e)


@pytest.fixture(scope="module")
def confounded():
    """A confounded cohort's ladder with step (e), its fits kept."""
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=160, propensity_correlation=0.6), seed=31)
    res = ladder_result(panel, exposures=["w0"], confounders=["baseline_corner"], keep_fits=True)
    return panel, res


def test_ladder_step_e_rows(confounded):
    _, res = confounded
    table = res.table
    e = table[table["step"].eq("e")].set_index("engine")
    assert list(e.index) == ["native", "clogit"]
    assert set(e["step_label"]) == {"within-patient"}
    assert e.loc["native", "formula"] == (
        "new_syndesmophyte ~ mri_within + mri_between + arm + baseline_corner + (1|patient)"
    )
    assert e.loc["clogit", "formula"] == (
        "new_syndesmophyte ~ mri + arm + baseline_corner + (1|patient)"
    )
    assert e.loc["native", "scale"] == "conditional" and e.loc["clogit", "scale"] == "within"
    hybrid = res.fits[("new_syndesmophyte", "w0", "e", "native")]
    assert e.loc["native", "log_or"] == hybrid.params["mri_within"]
    assert e.loc["native", "log_or_between"] == hybrid.params["mri_between"]
    # the Wald test by hand from the covariance
    cov = hybrid.cov_params()
    diff = hybrid.params["mri_within"] - hybrid.params["mri_between"]
    var = cov.loc["mri_within", "mri_within"] + cov.loc["mri_between", "mri_between"]
    var -= 2 * cov.loc["mri_within", "mri_between"]
    p = math.erfc(abs(diff) / math.sqrt(var) / math.sqrt(2))
    assert e.loc["native", "p_within_between"] == pytest.approx(p, rel=1e-12)
    # clogit: the patient-level arm is not identifiable and is left out, with a note
    assert "arm" in e.loc["clogit", "note"] and np.isnan(e.loc["clogit", "p_within_between"])
    # the other steps carry no within/between numbers; all steps use the same VUs
    assert table.loc[table["step"].ne("e"), "log_or_between"].isna().all()
    assert table["n_vus"].nunique() == 1


def test_within_sentence_names_the_estimate_and_why(confounded):
    _, res = confounded
    text = within_sentence(res.table)
    e = res.table[res.table["step"].eq("e")].set_index("engine")
    assert e.loc["native", "p_within_between"] < 0.05  # confounded: they differ
    assert text.startswith("Within patients (step e)") and text.endswith(".")
    assert text.count(". ") == 0  # one sentence
    assert "conditional logistic regression (OR " in text and "hybrid GLMM" in text
    for engine in ("clogit", "native"):
        r = e.loc[engine]
        assert f"{r['OR']:.2f} ({r['lower']:.2f}–{r['upper']:.2f})" in text
    # between > within here (rho > 0), so the plain GLMM overstates the VU effect
    assert e.loc["native", "log_or_between"] > e.loc["native", "log_or"]
    assert "inflamed at baseline the between-patient association differed" in text
    assert "plain GLMM, which pools both comparisons, overstates" in text
    # without a detectable difference the sentence says the plain GLMM answers it too
    same = res.table.copy()
    same.loc[same["step"].eq("e"), "p_within_between"] = 0.4
    assert "answers it too" in within_sentence(same) and "p = 0.400" in within_sentence(same)
    assert within_sentence(res.table[res.table["step"].ne("e")]) == ""
    # several exposures: the range of the within ORs
    two = pd.concat([res.table, res.table.assign(exposure="any", exposure_label="x")])
    two.loc[two["exposure"].eq("any") & two["step"].eq("e"), "OR"] *= 1.5
    lo, hi = sorted([e.loc["clogit", "OR"], 1.5 * e.loc["clogit", "OR"]])
    assert f"conditional logistic regression (OR {lo:.2f} to {hi:.2f})" in within_sentence(two)
    # an estimate running off to infinity (separation) is left out of the range, and said
    two.loc[two["exposure"].eq("any") & two["engine"].eq("clogit"), ["OR", "se"]] = [1e12, 50.0]
    assert (
        f"conditional logistic regression (OR {e.loc['clogit', 'OR']:.2f} to "
        f"{e.loc['clogit', 'OR']:.2f}, 1 with possible separation not counted)"
    ) in within_sentence(two)


def test_ladder_without_step_e():
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=60), seed=3)
    table = sy.ladder(panel, exposures=["w0"], within=False)
    assert set(table["step"]) == {"a", "b", "c"}


# ---------------------------------------------------------------------------
# live R


@pytest.fixture(scope="module")
def r_survival(r_lme4):
    try:
        from rpy2.robjects.packages import importr

        importr("survival")
    except Exception as exc:  # any failure means the package is unusable
        if os.environ.get("SYNDESMO_REQUIRE_R") == "1":
            pytest.fail(f"R package survival is not usable: {exc}")
        pytest.skip(f"R package survival is not usable: {exc}")
    return True


def _r_within(df: pd.DataFrame) -> dict[str, np.ndarray]:
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + pandas2ri.converter) as cv:
        ro.globalenv["syndesmo_wb"] = cv.py2rpy(df)
    out = ro.r(
        """local({
        d <- syndesmo_wb
        d$mri_between <- ave(d$mri, d$patient)
        d$mri_within <- d$mri - d$mri_between
        m <- suppressMessages(lme4::glmer(
            new_syndesmophyte ~ mri_within + mri_between + infliximab + (1 | patient),
            data = d, family = binomial, nAGQ = 1,
            control = lme4::glmerControl(tolPwrss = 1e-12)))
        V <- as.matrix(vcov(m)); k <- c(0, 1, -1, 0); b <- lme4::fixef(m)
        cl <- survival::clogit(new_syndesmophyte ~ mri + strata(patient), data = d,
                               method = "exact")
        list(beta = unname(b), se = unname(sqrt(diag(V))),
             sigma = attr(lme4::VarCorr(m)$patient, "stddev"),
             diff = sum(k * b), diff_se = sqrt(drop(t(k) %*% V %*% k)),
             clogit = unname(coef(cl)), clogit_se = unname(sqrt(diag(vcov(cl)))))
        })"""
    )
    return {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names}


@pytest.mark.r
def test_ladder_step_e_matches_live_glmer_and_clogit(r_survival):
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=140, propensity_correlation=0.5), seed=77)
    res = ladder_result(panel, exposures=["w0"], keep_fits=True)
    frame = sy.analysis_frame(panel, exposure="w0", covariates=["arm"])
    df = pd.DataFrame(
        {
            "patient": frame["patient"].astype(str),
            "new_syndesmophyte": frame["new_syndesmophyte"].astype(int),
            "mri": frame["mri"].astype(float),
            "infliximab": (frame["arm"].astype(str) == "infliximab").astype(float),
        }
    )
    r = _r_within(df)
    hybrid = res.fits[("new_syndesmophyte", "w0", "e", "native")]
    assert list(hybrid.params.index) == [
        "Intercept",
        "mri_within",
        "mri_between",
        "arm[T.infliximab]",
    ]
    assert np.abs(hybrid.params.to_numpy() - r["beta"]).max() < TOL_FIXED
    np.testing.assert_allclose(hybrid.bse.to_numpy(), r["se"], rtol=TOL_SE_REL)
    assert hybrid.sigma == pytest.approx(r["sigma"][0], abs=TOL_FIXED)
    test = within_equals_between(hybrid)
    assert test["difference"] == pytest.approx(r["diff"][0], abs=TOL_FIXED)
    assert test["se"] == pytest.approx(r["diff_se"][0], rel=TOL_SE_REL)
    e = res.table[res.table["step"].eq("e")].set_index("engine")
    assert e.loc["clogit", "log_or"] == pytest.approx(r["clogit"][0], abs=TOL_CLOGIT)
    assert e.loc["clogit", "se"] == pytest.approx(r["clogit_se"][0], abs=TOL_CLOGIT)
