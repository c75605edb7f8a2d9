"""The lme4 engine against glmer called directly in the same R.

Both sides run the same lme4, so agreement to 1e-6 checks the mapping: the design's
columns sent to R, coefficient names back, vcov, random-intercept SD, logLik and the
singular flag. R's reference uses its own copies of the data (``geepack::ohio``,
``lme4::cbpp``) and its own factor coding.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.engines import lme4 as lme4_engine
from syndesmo.errors import EngineUnavailableError, ModelError
from syndesmo.fitting.design import build_design

TOL = 1e-6

_GLMER = """
function(fit) list(
  beta = unname(lme4::fixef(fit)),
  vcov = unname(as.matrix(vcov(fit))),
  sigma = sqrt(as.numeric(lme4::VarCorr(fit)[[1]][1, 1])),
  loglik = as.numeric(logLik(fit)),
  singular = as.numeric(lme4::isSingular(fit)),
  ngrps = as.numeric(lme4::ngrps(fit)))
"""


def _glmer(call: str, data=None) -> dict[str, np.ndarray]:
    import rpy2.robjects as ro

    if data is not None:
        ro.globalenv["syndesmo_test_data"] = data
    fit = ro.r(f"suppressMessages({call})")
    out = ro.r(_GLMER)(fit)
    # np.array(list(...)) copies: a numpy view of R memory dies with the R object
    return {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names}


def _check(res, ref, names):
    p = len(names)
    assert list(res.params.index) == names
    np.testing.assert_allclose(res.params.to_numpy(), ref["beta"], rtol=0, atol=TOL)
    np.testing.assert_allclose(res.vcov.to_numpy(), ref["vcov"].reshape(p, p), rtol=0, atol=TOL)
    assert list(res.vcov.index) == names and list(res.vcov.columns) == names
    assert res.sigma == pytest.approx(float(ref["sigma"][0]), abs=TOL)
    assert res.loglik == pytest.approx(float(ref["loglik"][0]), abs=TOL)
    assert res.singular == bool(ref["singular"][0])
    assert res.n_groups == int(ref["ngrps"][0])
    assert res.details.r_seconds > 0


@pytest.mark.r
@pytest.mark.parametrize("nagq", [1, 9])
def test_ohio_matches_glmer(r_lme4, ohio, nagq):
    ref = _glmer(
        "lme4::glmer(resp ~ age + smoke + (1 | id), data = geepack::ohio, "
        f"family = binomial, nAGQ = {nagq})"
    )
    res = sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="lme4", nagq=nagq)
    _check(res, ref, ["Intercept", "age", "smoke"])
    assert res.nagq == nagq and res.n_obs == 2148 and res.converged


@pytest.mark.r
@pytest.mark.parametrize("nagq", [1, 5])
def test_cbpp_counts_match_glmer(r_lme4, cbpp, nagq):
    ref = _glmer(
        "lme4::glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), "
        f"data = lme4::cbpp, family = binomial, nAGQ = {nagq})"
    )
    names = ["Intercept", "period[T.2]", "period[T.3]", "period[T.4]"]
    by_trials = sy.fit(
        "incidence ~ period + (1|herd)", cbpp, engine="lme4", nagq=nagq, trials="size"
    )
    _check(by_trials, ref, names)
    by_cbind = sy.fit(
        "cbind(incidence, healthy) ~ period + (1|herd)", cbpp, engine="lme4", nagq=nagq
    )
    _check(by_cbind, ref, names)


@pytest.mark.r
def test_singular_fit_is_flagged_like_glmer(r_lme4):
    # No clustering in the truth (sigma = 0): glmer puts the SD on its boundary.
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(40), 4)
    x = rng.normal(size=g.size)
    y = (rng.random(g.size) < 1.0 / (1.0 + np.exp(-(0.5 * x - 0.3)))).astype(float)
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    import rpy2.robjects as ro

    r_df = ro.DataFrame(
        {"y": ro.FloatVector(y), "x": ro.FloatVector(x), "g": ro.FactorVector(ro.IntVector(g))}
    )
    ref = _glmer("lme4::glmer(y ~ x + (1 | g), data = syndesmo_test_data, family = binomial)", r_df)
    res = sy.fit("y ~ x + (1|g)", df, engine="lme4")
    _check(res, ref, ["Intercept", "x"])
    assert res.singular and res.sigma < 1e-4


def test_unavailable_rpy2_gives_install_instructions(monkeypatch, ohio):
    design = build_design("resp ~ age + smoke + (1|id)", ohio)
    monkeypatch.setattr(lme4_engine, "_r_fit_function", None)
    monkeypatch.setitem(sys.modules, "rpy2.robjects", None)  # makes the import fail
    with pytest.raises(EngineUnavailableError) as info:
        lme4_engine.fit_lme4(design)
    message = str(info.value)
    assert "apt-get install r-base-core r-cran-lme4" in message
    assert "pip install 'syndesmo[lme4]'" in message


@pytest.mark.r
@pytest.mark.filterwarnings("ignore:.*single observation:UserWarning")  # herd 8 has one row
def test_names_align_with_the_native_engine(r_lme4, cbpp):
    # Same design, two optimisers: names must match term by term; the values agree to
    # the optimisers' tolerances (lme4's bobyqa/Nelder-Mead stop earlier than Newton).
    kwargs = {"trials": "size", "nagq": 1}
    ours = sy.fit("incidence ~ period + (1|herd)", cbpp, engine="native", **kwargs)
    r = sy.fit("incidence ~ period + (1|herd)", cbpp, engine="lme4", **kwargs)
    assert list(ours.params.index) == list(r.params.index)
    np.testing.assert_allclose(ours.params, r.params, rtol=0, atol=5e-3)
    assert ours.loglik == pytest.approx(r.loglik, abs=1e-3)


@pytest.mark.r
def test_rank_deficient_column_is_refused_as_by_the_other_engines(r_lme4, ohio):
    # lme4 itself would drop the column with a message; every engine refuses it instead,
    # naming the term (issue 10: one behaviour).
    df = ohio.assign(age_again=ohio.age, one=1.0)
    for engine in ("lme4", "native", "gee"):
        with pytest.raises(ModelError, match=r"rank deficient: 'age_again'"):
            sy.fit("resp ~ age + age_again + smoke + (1|id)", df, engine=engine)
        with pytest.raises(ModelError, match=r"rank deficient: 'one'"):
            sy.fit("resp ~ age + one + smoke + (1|id)", df, engine=engine)


@pytest.mark.r
def test_convergence_problems_are_reported(r_lme4, ohio):
    # age in units of 1e-5 years: lme4's gradient check fails on the badly scaled problem.
    df = ohio.assign(big=ohio.age * 1e5)
    res = sy.fit("resp ~ big + smoke + (1|id)", df, engine="lme4")
    assert not res.converged
    assert "converge" in res.convergence_message
    assert any("different scales" in w for w in res.warnings)
