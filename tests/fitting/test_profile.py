"""Profile-likelihood confidence intervals (``conf_int(method="profile")``).

References, each independent of the code under test:

* lme4's own ``confint(glmer_fit, method = "profile")`` on ``cbpp`` (binomial counts).
  lme4 evaluates the profile on a grid of points and interpolates the signed root
  deviance by splines, so its endpoints are accurate to a few 1e-3 at worst (in
  practice ~1e-4 here; its fits also stop at ``tolPwrss = 1e-7``): tolerance 2e-3.
* On ``ohio`` lme4 1.1-31's ``profile()`` stops with "Profiling over both the
  residual variance and fixed effects is not numerically consistent" (its internal
  ``devfun2`` at the optimum differs from ``-2 logLik`` by 0.04). The reference there
  is lme4's own deviance function (``glmer(..., devFunOnly = TRUE)``, tight
  ``tolPwrss``) profiled in R by ``minqa::bobyqa`` and ``uniroot``: exact up to the
  optimiser tolerances, but held to the same 2e-3 as lme4's confint.
* Without R: at every endpoint, ``2(ℓ̂ − ℓ_p) = χ²₁(level)`` to 1e-6, with ℓ_p
  evaluated by a fresh ``fit_native`` on the design without column j and ``x_j·b``
  as offset (for σ: scipy's BFGS over β at fixed σ on ``loglik_at``).
* Logit engine: R's ``confint(glm)`` (MASS's profile, also spline-interpolated: 2e-3).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import syndesmo as sy
from syndesmo.engines.native.engine import fit_many, fit_native, loglik_at
from syndesmo.errors import ModelError
from syndesmo.fitting.design import build_design
from syndesmo.fitting.results import FitResult

TOL_LME4 = 2e-3  # lme4 / MASS interpolate the profile by splines over a grid
TOL_CHI2 = 1e-6  # 2(ℓ̂ − ℓ_p) at the endpoints against χ²₁(level)


def _panel(seed: int, n: int = 187, k: int = 12, sigma: float = 1.0) -> pd.DataFrame:
    """A VU-like panel: n patients × k VUs, binary MRI by VU, arm by patient (known truth)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n), k)
    arm = np.repeat(rng.integers(0, 2, n), k)
    mri = rng.binomial(1, 0.3, n * k)
    eta = -2.0 + math.log(2.0) * mri - 0.3 * arm + sigma * np.repeat(rng.standard_normal(n), k)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "mri": mri, "arm": arm, "patient": pid})


def _r_list(code: str) -> dict[str, np.ndarray]:
    from syndesmo.engines.lme4 import import_robjects

    ro = import_robjects()
    out = ro.r(code)
    return {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names}


# --- against R ----------------------------------------------------------------------


@pytest.mark.r
def test_profile_matches_lme4_confint_on_cbpp(r_lme4, cbpp):
    ref = _r_list(
        """
        local({
          m <- lme4::glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                           data = lme4::cbpp, family = binomial, nAGQ = 1)
          ci <- suppressMessages(confint(m, method = "profile", level = 0.95))
          list(lower = unname(ci[, 1]), upper = unname(ci[, 2]))
        })
        """
    )
    fit = sy.fit("incidence ~ period + (1|herd)", cbpp, trials="size", nagq=1)
    ci = fit.conf_int(method="profile")
    sig = fit.sigma_conf_int(method="profile")
    ours_lo = np.r_[sig["lower"].to_numpy(), ci["lower"].to_numpy()]  # lme4: .sig01 first
    ours_hi = np.r_[sig["upper"].to_numpy(), ci["upper"].to_numpy()]
    print("cbpp |native − lme4| lower:", np.abs(ours_lo - ref["lower"]))
    print("cbpp |native − lme4| upper:", np.abs(ours_hi - ref["upper"]))
    np.testing.assert_allclose(ours_lo, ref["lower"], rtol=0, atol=TOL_LME4)
    np.testing.assert_allclose(ours_hi, ref["upper"], rtol=0, atol=TOL_LME4)
    assert list(ci.columns) == ["lower", "upper"] and list(ci.index) == list(fit.params.index)


OHIO_PROFILE_R = """
local({
  d <- geepack::ohio; d$id <- factor(d$id)
  ctl <- lme4::glmerControl(tolPwrss = 1e-12)
  f <- resp ~ age + smoke + (1 | id)
  m <- lme4::glmer(f, data = d, family = binomial, nAGQ = 1, control = ctl)
  dev <- lme4::glmer(f, data = d, family = binomial, nAGQ = 1, control = ctl, devFunOnly = TRUE)
  par <- c(lme4::getME(m, "theta"), lme4::fixef(m)); dhat <- -2 * c(logLik(m))
  se <- sqrt(diag(solve(optimHess(par, dev) / 2)))
  z <- sqrt(qchisq(0.95, 1))
  lower <- c(0, rep(-Inf, length(par) - 1))
  last <- par
  zeta <- function(k, b) {
    free <- setdiff(seq_along(par), k)
    fn <- function(x) { p <- par; p[k] <- b; p[free] <- x; dev(p) }
    o <- minqa::bobyqa(last[free], fn, lower = lower[free],
                       control = list(rhobeg = 0.02, rhoend = 1e-8))
    last[free] <<- o$par
    sign(b - par[k]) * sqrt(max(o$fval - dhat, 0))
  }
  ends <- sapply(seq_along(par), function(k) sapply(c(-1, 1), function(s) {
    last <<- par
    if (k == 1 && s < 0 && zeta(1, 0) > -z) return(0)
    last <<- par
    uniroot(function(b) zeta(k, b) - s * z, sort(par[k] + s * z * se[k] * c(0.7, 1.3)),
            extendInt = "yes", tol = 1e-8)$root
  }))
  list(lower = ends[1, ], upper = ends[2, ])
})
"""


@pytest.mark.r
def test_profile_matches_lme4_deviance_profile_on_ohio(r_lme4, ohio):
    ref = _r_list(OHIO_PROFILE_R)  # sigma first, then the fixed effects
    fit = sy.fit("resp ~ age + smoke + (1|id)", ohio, nagq=1)
    ci = fit.conf_int(method="profile")
    sig = fit.sigma_conf_int(method="profile")
    ours_lo = np.r_[sig["lower"].to_numpy(), ci["lower"].to_numpy()]
    ours_hi = np.r_[sig["upper"].to_numpy(), ci["upper"].to_numpy()]
    print("ohio |native − lme4 devfun profile| lower:", np.abs(ours_lo - ref["lower"]))
    print("ohio |native − lme4 devfun profile| upper:", np.abs(ours_hi - ref["upper"]))
    np.testing.assert_allclose(ours_lo, ref["lower"], rtol=0, atol=TOL_LME4)
    np.testing.assert_allclose(ours_hi, ref["upper"], rtol=0, atol=TOL_LME4)


@pytest.mark.r
@pytest.mark.parametrize("which", ["ohio", "cbpp"])
def test_logit_profile_matches_r_confint_glm(r_lme4, which, ohio, cbpp):
    if which == "ohio":
        formula, data, trials = "resp ~ age + smoke", ohio, None
        r_model = "glm(resp ~ age + smoke, data = geepack::ohio, family = binomial)"
    else:
        formula, data, trials = "incidence ~ period", cbpp, "size"
        r_model = (
            "glm(cbind(incidence, size - incidence) ~ period, data = lme4::cbpp, family = binomial)"
        )
    ref = _r_list(
        f"""
        local({{
          ci <- suppressMessages(confint({r_model}, level = 0.9))
          list(lower = unname(ci[, 1]), upper = unname(ci[, 2]))
        }})
        """
    )
    ci = sy.fit(formula, data, engine="logit", trials=trials).conf_int(0.9, method="profile")
    print(
        which,
        "logit |ours − R| max:",
        np.max(np.abs(ci.to_numpy() - np.c_[ref["lower"], ref["upper"]])),
    )
    np.testing.assert_allclose(ci["lower"], ref["lower"], rtol=0, atol=TOL_LME4)
    np.testing.assert_allclose(ci["upper"], ref["upper"], rtol=0, atol=TOL_LME4)


@pytest.mark.r
def test_offset_matches_glmer_offset(r_lme4, ohio):
    ref = _r_list(
        """
        local({
          m <- lme4::glmer(resp ~ age + offset(0.4 * smoke) + (1 | id), data = geepack::ohio,
                           family = binomial, control = lme4::glmerControl(tolPwrss = 1e-12))
          list(beta = unname(lme4::fixef(m)), sigma = unname(lme4::getME(m, "theta")),
               loglik = as.numeric(logLik(m)))
        })
        """
    )
    design = build_design("resp ~ age + (1|id)", ohio)
    fit = fit_native(design, offset=0.4 * ohio["smoke"].to_numpy())
    np.testing.assert_allclose(fit.params.to_numpy(), ref["beta"], rtol=0, atol=1e-4)
    assert fit.sigma == pytest.approx(ref["sigma"][0], abs=1e-4)
    assert fit.loglik == pytest.approx(ref["loglik"][0], abs=1e-3)


# --- without R ----------------------------------------------------------------------


def _drop_column(design, j: int):
    keep = [i for i in range(design.X.shape[1]) if i != j]
    names = [design.names[i] for i in keep]
    return dataclasses.replace(design, X=design.X[:, keep], names=names)


@pytest.mark.parametrize(
    ("seed", "nagq", "sigma", "level"), [(3, 1, 1.0, 0.95), (3, 5, 1.0, 0.9), (2, 1, 0.0, 0.95)]
)
def test_endpoints_sit_on_the_chi2_level(seed, nagq, sigma, level):
    """2(ℓ̂ − ℓ_p(b)) = χ²₁(level) at each endpoint, with ℓ_p from an independent refit.

    The third case has no clustering (σ̂ at the boundary, a singular fit).
    """
    df = _panel(seed, n=60, k=10, sigma=sigma)
    design = build_design("y ~ mri + arm + (1|patient)", df)
    fit = fit_native(design, nagq=nagq)
    assert fit.singular == (sigma == 0.0)
    target = stats.chi2.ppf(level, 1)
    ll_hat = fit.details.loglik_marginal
    ci = fit.conf_int(level, method="profile")
    for j, term in enumerate(fit.params.index):
        reduced = _drop_column(design, j)
        for b in ci.loc[term]:
            refit = fit_native(reduced, nagq=nagq, offset=b * design.X[:, j])
            dev = 2.0 * (ll_hat - refit.details.loglik_marginal)
            assert dev == pytest.approx(target, abs=TOL_CHI2), (term, b)
        assert ci.loc[term, "lower"] < fit.params[term] < ci.loc[term, "upper"]

    sig = fit.sigma_conf_int(level, method="profile")
    lo, hi = sig.loc["sigma"]
    for s in (lo, hi):

        def neg(beta, s=s):
            return -loglik_at(design, beta, s, nagq, marginal=True)

        opt = optimize.minimize(neg, fit.params.to_numpy(), method="BFGS", options={"gtol": 1e-9})
        dev = 2.0 * (ll_hat + opt.fun)
        if s == 0.0:  # boundary inside the interval: the deviance at σ = 0 is below the level
            assert dev <= target + TOL_CHI2
        else:
            assert dev == pytest.approx(target, abs=TOL_CHI2), s
    assert lo <= fit.sigma < hi
    if fit.singular:
        assert lo == 0.0


def test_singular_fit_interval_contains_logit_profile_interval():
    """At σ̂ = 0 both models have the same maximum; the GLMM can only add likelihood
    away from it (σ free), so its profile interval contains plain logistic regression's."""
    df = _panel(2, n=60, k=10, sigma=0.0)
    fit = sy.fit("y ~ mri + arm + (1|patient)", df)
    assert fit.singular
    native = fit.conf_int(method="profile")
    logit = sy.fit("y ~ mri + arm", df, engine="logit").conf_int(method="profile")
    assert np.all(native["lower"] <= logit["lower"] + 1e-8)
    assert np.all(native["upper"] >= logit["upper"] - 1e-8)


def test_offset_at_the_estimate_reproduces_the_fit():
    """Fixing β_j at its estimate through the offset gives back the full maximum."""
    df = _panel(5, n=80, k=8)
    design = build_design("y ~ mri + arm + (1|patient)", df)
    full = fit_native(design)
    j = 1
    part = fit_native(_drop_column(design, j), offset=full.params.iloc[j] * design.X[:, j])
    assert part.loglik == pytest.approx(full.loglik, abs=1e-8)
    np.testing.assert_allclose(part.params.to_numpy(), full.params.drop("mri"), atol=1e-5)
    assert part.sigma == pytest.approx(full.sigma, abs=1e-5)
    zero = fit_native(design, offset=np.zeros(design.n_obs))
    assert zero.loglik == full.loglik
    with pytest.raises(ModelError, match="offset has 3 values"):
        fit_native(design, offset=[0.0, 1.0, 2.0])


def test_odds_ratios_with_profile_intervals():
    df = _panel(7, n=80, k=8)
    fit = sy.fit("y ~ mri + arm + (1|patient)", df)
    ci = fit.conf_int(0.9, method="profile")
    table = fit.odds_ratios(0.9, method="profile")
    np.testing.assert_allclose(table["lower"], np.exp(ci["lower"]), rtol=1e-12)
    np.testing.assert_allclose(table["upper"], np.exp(ci["upper"]), rtol=1e-12)
    wald = fit.odds_ratios(0.9)
    pd.testing.assert_series_equal(table["OR"], wald["OR"])
    pd.testing.assert_series_equal(table["p"], wald["p"])
    assert not np.allclose(table["lower"], wald["lower"])  # a different interval indeed


def test_profile_results_pickle_and_wald_stays_default():
    df = _panel(8, n=60, k=8)
    fit = sy.fit("y ~ mri + arm + (1|patient)", df)
    wald = fit.conf_int()
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(wald["upper"], fit.params + z * fit.bse)
    clone = pickle.loads(pickle.dumps(fit))
    pd.testing.assert_frame_equal(clone.conf_int(method="profile"), fit.conf_int(method="profile"))
    assert isinstance(pickle.loads(pickle.dumps(fit)), FitResult)  # cached tables pickle too
    s = fit.sigma_conf_int()
    se = fit.details.theta_se
    assert s.loc["sigma", "upper"] == pytest.approx(fit.sigma + z * se)


def test_engines_without_a_profile_give_one_clear_error(ohio):
    gee = sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="gee")
    with pytest.raises(
        ModelError, match="profile intervals need a likelihood; engine 'gee' has none"
    ):
        gee.conf_int(method="profile")
    with pytest.raises(ModelError, match="'gee' has none"):
        gee.odds_ratios(method="profile")
    native = sy.fit("resp ~ age + smoke + (1|id)", ohio)
    with pytest.raises(ModelError, match="'wald' or 'profile'"):
        native.conf_int(method="score")
    logit = sy.fit("resp ~ age + smoke", ohio, engine="logit")
    with pytest.raises(ModelError, match="no random-intercept SD"):
        logit.sigma_conf_int(method="profile")
    design = build_design("resp ~ age + smoke + (1|id)", ohio)
    rep = fit_many(design.X, design.y[None], design.groups, names=design.names).result(0)
    with pytest.raises(ModelError, match="'native' fit keeps no model object to refit"):
        rep.conf_int(method="profile")
    other = dataclasses.replace(native, engine="lme4", model=None)  # as the lme4 engine
    with pytest.raises(ModelError, match=r"'lme4' fit keeps no model object.*engine='native'"):
        other.conf_int(method="profile")


def test_separated_term_gets_an_infinite_endpoint():
    df = _panel(9, n=60, k=8)
    df["rare"] = 0
    first = df.index[df["y"] == 1][:3]
    df.loc[first, "rare"] = 1  # every row with rare = 1 is an event: quasi-separation
    fit = sy.fit("y ~ mri + rare + (1|patient)", df)
    with pytest.warns(UserWarning, match="does not fall"):
        ci = fit.conf_int(method="profile")
    assert ci.loc["rare", "upper"] == math.inf
    assert np.isfinite(ci.loc["rare", "lower"]) and np.isfinite(ci.loc["mri"]).all()


def test_speed_187_patients_by_12_vus():
    """Profile intervals of 3 fixed effects on a 187 × 12 panel (timed, not asserted)."""
    df = _panel(1)
    fit = sy.fit("y ~ mri + arm + (1|patient)", df)
    t0 = time.perf_counter()
    ci = fit.conf_int(method="profile")
    t_beta = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit.sigma_conf_int(method="profile")
    t_sigma = time.perf_counter() - t0
    print(f"profile CIs, 187x12 panel, 3 fixed effects: {t_beta:.3f} s (β), {t_sigma:.3f} s (σ)")
    assert np.all(ci["lower"] < fit.params) and np.all(fit.params < ci["upper"])
