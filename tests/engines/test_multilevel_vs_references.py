"""Multilevel Laplace fits against lme4 and glmmTMB: stored references and live R.

Stored references (``tests/references/multilevel/<case>/reference.json``, written by
``make_references.R`` beside them) for four cases: mlmRev's Contraception with nested
``(1|district/urban)`` and correlated ``(urban|district)``, mlmRev's guImmun (children
within mothers within communities, ``(1|comm/mom)``) and a simulated VU panel with two
readers, ``(1|patient/vu)``. Tolerances (issue 11): fixed effects and random-effect
SDs within 1e-4 (absolute, relative beyond 1), correlations within 1e-3, log-likelihood
within 1e-3 — against glmmTMB and against lme4 with ``tolPwrss = 1e-12`` and a tight
bobyqa (``lme4_tight``). lme4 with its default optimiser settings (``tolPwrss = 1e-12``
only) stops short on two cases and says so itself (``Model failed to converge``); there
the test shows it: the native maximum is above the likelihood at lme4's estimates.

The fits go through the public path, ``sy.fit(formula, data, engine="native")``. The
tests marked ``r`` refit with lme4 and glmmTMB through rpy2 in the same run, and fit
the same formulas with ``engine="lme4"`` (each bar handed to R as its own columns).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from multilevel_cases import CASES, REFERENCES, simulate_vu_readers

import syndesmo as sy
from syndesmo.engines.lme4 import _NOT_CONVERGED as NOT_CONVERGED
from syndesmo.engines.native.multilevel import loglik_multilevel
from syndesmo.fitting.design import multilevel_design

TOL_PARAM = 1e-4
TOL_CORR = 1e-3
TOL_LOGLIK = 1e-3


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def _vc_rows(varcorr) -> dict[tuple[str, str, str | None], float]:
    cols = ["grp", "var1", "var2", "vcov", "sdcor"]
    if isinstance(varcorr[0], dict):
        frame = pd.DataFrame(varcorr)
    else:
        frame = pd.DataFrame(varcorr, columns=cols)
    if "var2" not in frame:
        frame["var2"] = None
    out = {}
    for _, r in frame.iterrows():
        missing = r["var2"] is None or pd.isna(r["var2"]) or str(r["var2"]) == "NA_character_"
        var2 = None if missing else str(r["var2"])
        out[(str(r["grp"]), str(r["var1"]), var2)] = float(r["sdcor"])
    return out


def disagreements(fit, ref: dict) -> list[str]:
    """What differs between a native fit and one reference fit beyond the tolerances."""
    issues = []
    for name, a, b in zip(fit.params.index, fit.params, ref["fixef"], strict=True):
        if not _close(a, b, TOL_PARAM):
            issues.append(f"{name}: native {a:.7f} vs {b:.7f}")
    ours = _vc_rows(fit.varcorr.to_dict("records"))
    theirs = _vc_rows(ref["varcorr"])
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    for key, b in theirs.items():
        a = ours[key]
        tol = TOL_PARAM if key[2] is None else TOL_CORR
        if not _close(a, b, tol):
            issues.append(f"{key}: native {a:.7f} vs {b:.7f}")
    if abs(fit.loglik - ref["loglik"]) > TOL_LOGLIK:
        issues.append(f"logLik: native {fit.loglik:.6f} vs {ref['loglik']:.6f}")
    return issues


@pytest.fixture(scope="module")
def fitted():
    out = {}
    for case, (load, formula) in CASES.items():
        data = load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[case] = (data, formula, sy.fit(formula, data, engine="native"))
    return out


def test_simulated_reference_data_is_reproduced():
    stored = pd.read_csv(REFERENCES / "vu_readers" / "data.csv")
    pd.testing.assert_frame_equal(simulate_vu_readers(), stored, check_dtype=False)


@pytest.mark.parametrize("case", list(CASES))
def test_laplace_agrees_with_glmmtmb_and_tight_lme4(fitted, case):
    data, formula, fit = fitted[case]
    ref = json.loads((REFERENCES / case / "reference.json").read_text())
    assert fit.converged, fit.convergence.message
    assert fit.n_obs == ref["n_obs"]
    assert disagreements(fit, ref["glmmTMB"]) == []
    assert disagreements(fit, ref["lme4_tight"]) == []
    # the same likelihood: at lme4's (tight) estimates the native Laplace value equals
    # lme4's logLik (lme4 evaluates it with the PIRLS weights of its last iteration)
    design, structure = multilevel_design(formula, data)
    tight = ref["lme4_tight"]
    at_tight = loglik_multilevel(
        design.X, design.y, design.trials, structure, tight["fixef"], tight["theta"]
    )
    assert at_tight == pytest.approx(tight["loglik"], abs=1e-4)
    assert fit.loglik >= at_tight - 1e-9


@pytest.mark.parametrize("case", list(CASES))
def test_default_lme4_agrees_or_stopped_short(fitted, case):
    data, formula, fit = fitted[case]
    ref = json.loads((REFERENCES / case / "reference.json").read_text())["lme4"]
    issues = disagreements(fit, ref)
    if issues:
        design, structure = multilevel_design(formula, data)
        at_lme4 = loglik_multilevel(
            design.X, design.y, design.trials, structure, ref["fixef"], ref["theta"]
        )
        assert fit.loglik > at_lme4 + 1e-7, issues
        assert ref["messages"], "lme4 stopped short without saying so"


def test_standard_errors_agree_with_glmmtmb(fitted):
    # Not a tolerance of the issue, but the SEs come from the same Hessian over (β, θ)
    for case, (_, _, fit) in fitted.items():
        ref = json.loads((REFERENCES / case / "reference.json").read_text())["glmmTMB"]
        np.testing.assert_allclose(fit.bse.to_numpy(), ref["se"], rtol=5e-4, err_msg=case)


def test_nested_varcorr_layout_is_lme4s(fitted):
    fit = fitted["contraception_slope"][2]
    vc = fit.varcorr
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert list(vc["grp"]) == ["district"] * 3
    assert list(vc["var1"]) == ["(Intercept)", "urbanY", "(Intercept)"]
    assert list(fit.details.theta_names) == [
        "district.(Intercept)",
        "district.urbanY.(Intercept)",
        "district.urbanY",
    ]
    nested = fitted["guimmun"][2].varcorr
    assert list(nested["grp"]) == ["mom:comm", "comm"]


# --------------------------------------------------------------------------------------
# Live R
# --------------------------------------------------------------------------------------


def _r_fit(df: pd.DataFrame, formula: str, factors: list[str]) -> dict:
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter
    from rpy2.robjects.packages import importr

    importr("lme4")
    importr("glmmTMB")
    with localconverter(ro.default_converter + pandas2ri.converter) as cv:
        ro.globalenv["syndesmo_ml"] = cv.py2rpy(df)
    for f in factors:
        ro.r(f"syndesmo_ml${f} <- factor(syndesmo_ml${f})")
    ro.r(
        f"syndesmo_m <- glmer({formula}, data = syndesmo_ml, family = binomial,"
        " control = glmerControl(tolPwrss = 1e-12, optimizer = 'bobyqa',"
        " optCtrl = list(rhoend = 1e-10, maxfun = 1e5)));"
        f"syndesmo_t <- glmmTMB({formula}, data = syndesmo_ml, family = binomial)"
    )

    def vc_frame(expr: str) -> pd.DataFrame:
        with localconverter(ro.default_converter + pandas2ri.converter) as cv:
            return cv.rpy2py(ro.r(expr))

    lme4 = {
        "fixef": np.array(ro.r("unname(fixef(syndesmo_m))")),
        "theta": np.array(ro.r("unname(getME(syndesmo_m, 'theta'))")),
        "varcorr": vc_frame("as.data.frame(VarCorr(syndesmo_m))"),
        "loglik": float(ro.r("as.numeric(logLik(syndesmo_m))")[0]),
    }
    tmb_vc = vc_frame(
        "do.call(rbind, lapply(names(VarCorr(syndesmo_t)$cond), function(g) {"
        " s <- VarCorr(syndesmo_t)$cond[[g]]; sd <- attr(s, 'stddev');"
        " out <- data.frame(grp = g, var1 = names(sd), var2 = NA_character_,"
        " vcov = sd^2, sdcor = sd);"
        " if (length(sd) > 1) { co <- attr(s, 'correlation'); ij <- which(upper.tri(co),"
        " arr.ind = TRUE); ij <- ij[order(ij[, 1], ij[, 2]), , drop = FALSE];"
        " out <- rbind(out, data.frame(grp = g, var1 = names(sd)[ij[, 1]],"
        " var2 = names(sd)[ij[, 2]], vcov = s[ij], sdcor = co[ij])) }; out }))"
    )
    tmb = {
        "fixef": np.array(ro.r("unname(fixef(syndesmo_t)$cond)")),
        "varcorr": tmb_vc,
        "loglik": float(ro.r("as.numeric(logLik(syndesmo_t))")[0]),
    }
    return {"lme4": lme4, "glmmTMB": tmb}


def _as_records(frame: pd.DataFrame) -> list[dict]:
    frame = frame.copy()
    frame["var2"] = [None if pd.isna(v) else v for v in frame["var2"]]
    return frame.to_dict("records")


@pytest.mark.r
def test_vu_panel_with_readers_live(r_lme4):
    df = simulate_vu_readers(n_patients=150, seed=11)
    formula = "y ~ mri + arm + reader + (1|patient/vu)"
    fit = sy.fit(formula, df, engine="native")
    ref = _r_fit(df, formula, ["patient", "vu"])
    for engine in ("lme4", "glmmTMB"):
        r = dict(ref[engine])
        r["varcorr"] = _as_records(r["varcorr"])
        assert disagreements(fit, r) == [], engine
    # the lme4 engine on the same formula: the same model as the direct glmer call
    via = sy.fit(formula, df, engine="lme4", tol_pwrss=1e-12)
    assert disagreements(fit, _engine_record(via)) == []


@pytest.mark.r
def test_correlated_slope_live(r_lme4):
    load, formula = CASES["contraception_slope"]
    df = load()
    fit = sy.fit(formula, df, engine="native")
    ref = _r_fit(df, formula, ["district"])
    for engine in ("lme4", "glmmTMB"):
        r = dict(ref[engine])
        r["varcorr"] = _as_records(r["varcorr"])
        assert disagreements(fit, r) == [], engine


def _engine_record(fit) -> dict:
    return {
        "fixef": list(fit.params),
        "varcorr": _as_records(fit.varcorr),
        "loglik": fit.loglik,
    }


@pytest.mark.r
@pytest.mark.parametrize("case", ["contraception_slope", "contraception_crossed"])
def test_lme4_engine_takes_the_same_formulas(fitted, case, r_lme4):
    data, formula, fit = fitted[case]
    via = sy.fit(formula, data, engine="lme4", tol_pwrss=1e-12)
    ref = json.loads((REFERENCES / case / "reference.json").read_text())
    # the engine's glmer under neutral names equals the direct glmer call (same
    # default optimiser), and agrees with the native fit where that call converged
    direct = ref["lme4"]
    assert list(via.varcorr["grp"]) == list(fit.varcorr["grp"])
    messages = direct["messages"]
    messages = [messages] if isinstance(messages, str) else list(messages or [])
    if any(NOT_CONVERGED.search(m) for m in messages):  # lme4 says it stopped short
        # the engine reports no numbers, only the last iterate
        assert not via.converged
        estimates, loglik = via.last_iterate["params"], via.last_iterate["loglik"]
    else:
        assert disagreements(fit, _engine_record(via)) == []
        estimates, loglik = via.params, via.loglik
    np.testing.assert_allclose(estimates.to_numpy(), direct["fixef"], rtol=1e-5, atol=1e-5)
    assert loglik == pytest.approx(direct["loglik"], abs=1e-5)


@pytest.mark.r
@pytest.mark.parametrize(
    "formula",
    ["y ~ mri + arm + reader + (1|patient/vu)", "y ~ mri + (1 + mri||patient)"],
)
def test_ranef_of_structures_is_lme4s(formula, r_lme4):
    # conditional modes and SDs of every term in lme4's layout, native vs glmer
    df = simulate_vu_readers(n_patients=40, seed=5)
    native = sy.fit(formula, df).ranef()
    r = sy.fit(formula, df, engine="lme4", tol_pwrss=1e-12).ranef()
    assert len(native) == len(r)
    both = native.merge(r, on=["grpvar", "term", "grp"], suffixes=("", "_r"))
    assert len(both) == len(native)
    np.testing.assert_allclose(both["condval"], both["condval_r"], atol=1e-4)
    np.testing.assert_allclose(both["condsd"], both["condsd_r"], atol=1e-4)
