"""The ASSERT-style analysis: ladder, GEE beside GLMM, patient level, simulation checks.

References used here, independent of the code under test: statsmodels fitted by
hand on frames built by hand from the raw corner and MRI columns; numerical
integration with scipy.integrate.quad; simulated cohorts with a known truth.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import integrate, special, stats

from syndesmo.analysis import ladder as an
from syndesmo.analysis.levels import compare_levels
from syndesmo.analysis.marginal import (
    attenuation_table,
    marginal_log_or,
    marginal_params,
    zeger_attenuation,
)
from syndesmo.analysis.patient import patient_frame, patient_level
from syndesmo.analysis.specs import validate
from syndesmo.analysis.within import within_term
from syndesmo.derive.vu_tables import spine_profile
from syndesmo.derive.within import within_between
from syndesmo.errors import ModelError
from syndesmo.fitting.api import fit
from syndesmo.panel.spine import MSASSS_VUS, VU_LABELS
from syndesmo.panel.tables import VUPanel
from syndesmo.simulate import check as simcheck
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

#: Two-sided 99.9% normal quantile: acceptance regions of the simulation tests, so a
#: correct method fails a given check with probability 0.001.
Z_ACCEPT = stats.norm.ppf(0.9995)


@pytest.fixture(scope="module")
def panel() -> VUPanel:
    spec = CohortSpec(n_patients=90, vus=VU_LABELS, odds_ratio_new=2.5)
    return simulate_cohort(spec, seed=7)


def with_vu(panel: VUPanel, **changes) -> VUPanel:
    vu = panel.vu.copy()
    for col, value in changes.items():
        vu[col] = value
    return VUPanel(vu, panel.patients.copy(), source="modified")


def with_patients(panel: VUPanel, **changes) -> VUPanel:
    pat = panel.patients.copy()
    for col, value in changes.items():
        pat[col] = value(pat) if callable(value) else value
    return VUPanel(panel.vu.copy(), pat, source="modified")


# ---------------------------------------------------------------------------
# the ladder


def test_ladder_rows_steps_and_engines(panel):
    res = an.ladder_result(panel, "new_syndesmophyte", ["w0", "w24"], ["region", "baseline_corner"])
    table = res.table
    assert list(table.columns) == an.LADDER_COLUMNS
    per_exposure = [("a", "logit")] + [(s, e) for s in "bcd" for e in ("native", "gee")]
    per_exposure += [("e", "native"), ("e", "clogit")]  # within-patient (test_within.py)
    assert list(zip(table["step"], table["engine"], strict=True)) == per_exposure * 2
    assert table["step_label"].tolist()[:4] == [
        "crude",
        "+ patient clustering",
        "+ patient clustering",
        "+ treatment",
    ]
    assert table.loc[table["engine"].eq("native"), "scale"].eq("conditional").all()
    assert table.loc[table["engine"].isin(["gee", "logit"]), "scale"].eq("marginal").all()
    d = table[table["step"].eq("d")]["formula"].iloc[0]
    assert d == "new_syndesmophyte ~ mri + arm + region + baseline_corner + (1|patient)"
    # every step of one exposure on the same VUs; ledger of what was left out
    frame = an.build_frame(panel, "new_syndesmophyte", "w0", covariates=["arm"])
    w0 = table[table["exposure"].eq("w0")]
    assert (w0["n_vus"] == len(frame)).all()
    assert (w0["events"] == frame["new_syndesmophyte"].sum()).all()
    assert (w0["n_patients"] == frame["patient"].nunique()).all()
    assert res.ledgers["w0"] == frame.ledger
    ledger = res.ledgers["w0"].to_frame()
    assert ledger["n_rows"].sum() + len(frame) == len(panel.vu)
    assert ledger["reason"].str.contains("thoracic").any()
    glmm = table[table["engine"].eq("native")]
    assert (glmm["sigma"] > 0).all() and np.allclose(
        glmm["icc"], glmm["sigma"] ** 2 / (glmm["sigma"] ** 2 + math.pi**2 / 3)
    )


def test_ladder_rows_are_the_fits_of_their_formulas(panel):
    """Each row is ``fit(formula, frame, engine)``; the crude step is plain logistic
    regression (checked against statsmodels' Logit on a frame built here)."""
    table = an.ladder(panel, "new_syndesmophyte", ["w0"], ["region"])
    frame = an.build_frame(panel, "new_syndesmophyte", "w0", covariates=["arm", "region"])
    frame = within_between(frame, ["mri"])  # step (e): the hybrid GLMM's columns
    for row in table.itertuples():
        term = within_term(row.engine) if row.step == "e" else "mri"
        ref = fit(row.formula, frame, engine=row.engine).odds_ratios().loc[term]
        assert row.OR == pytest.approx(ref["OR"], rel=1e-10)
        assert row.lower == pytest.approx(ref["lower"], rel=1e-10)
        assert row.p == pytest.approx(ref["p"], rel=1e-8)
    X = sm.add_constant(frame["mri"].astype(float))
    logit = sm.Logit(frame["new_syndesmophyte"].astype(float), X).fit(disp=0)
    crude = table[table["step"].eq("a")].iloc[0]
    assert crude["log_or"] == pytest.approx(logit.params["mri"], rel=1e-6)
    assert crude["se"] == pytest.approx(logit.bse["mri"], rel=1e-5)


def test_no_variation_noted_in_ladder_and_strict_error(panel):
    flat = with_vu(panel, mri_w102=0.0)
    table = an.ladder(flat, "new_syndesmophyte", ["w0", "w102"])
    w102 = table[table["exposure"].eq("w102")]
    assert w102["OR"].isna().all()
    assert w102["note"].str.contains("'w102'").all()
    assert w102["note"].str.contains("does not vary").all()
    assert table.loc[table["exposure"].eq("w0"), "OR"].notna().all()
    with pytest.raises(ModelError, match="w102"):
        an.ladder(flat, "new_syndesmophyte", ["w0", "w102"], strict=True)


def test_failed_fit_is_a_noted_row_and_constant_covariate_is_left_out(panel):
    # 'arm01' duplicates the treatment: the step-d design is rank deficient
    bad = with_patients(
        panel, arm01=lambda p: (p["arm"] == "infliximab").astype(int), site="Leiden"
    )
    table = an.ladder(bad, "new_syndesmophyte", ["w0"], ["arm01", "site"], engines_beside=())
    d = table[table["step"].eq("d")].iloc[0]
    assert math.isnan(d["OR"]) and not d["converged"]
    assert "fit failed" in d["note"] and "rank deficient" in d["note"]
    assert "constant" in d["note"] and "site" in d["note"]
    # step (e) has the terms of (d): the hybrid GLMM fails too; clogit leaves the
    # patient-level arm01 out (constant within patients) and gives its estimate
    e = table[table["step"].eq("e")].set_index("engine")
    assert math.isnan(e.loc["native", "OR"]) and "rank deficient" in e.loc["native", "note"]
    assert np.isfinite(e.loc["clogit", "OR"]) and "arm01" in e.loc["clogit", "note"]
    assert table[~table["step"].isin(["d", "e"])]["OR"].notna().all()


def test_attenuation_table_uses_zeger_factor(panel):
    table = an.ladder(panel, "new_syndesmophyte", ["w0"])
    att = attenuation_table(table)
    assert list(att["step"]) == ["b", "c"]
    s = att["sigma"].to_numpy()
    factor = 1 / np.sqrt(1 + (16 * math.sqrt(3) / (15 * math.pi)) ** 2 * s**2)
    assert np.allclose(att["factor_predicted"], factor)
    glmm = table[table["engine"].eq("native")].set_index("step")
    gee = table[table["engine"].eq("gee")].set_index("step")
    for r in att.itertuples():
        assert r.OR_predicted_marginal == pytest.approx(
            math.exp(glmm.loc[r.step, "log_or"] * r.factor_predicted)
        )
        assert r.factor_observed == pytest.approx(
            gee.loc[r.step, "log_or"] / glmm.loc[r.step, "log_or"]
        )
    # step b has only the exposure: the implied marginal OR is the closed form
    fits = an.ladder_result(panel, "new_syndesmophyte", ["w0"], keep_fits=True).fits
    b = fits[("new_syndesmophyte", "w0", "b", "native")]
    exact = marginal_log_or(b.params["Intercept"], b.params["mri"], b.sigma)
    assert math.log(att.iloc[0]["OR_implied_marginal"]) == pytest.approx(exact, abs=1e-6)


# ---------------------------------------------------------------------------
# the marginal OR implied by the truth


def _quad_risk(a: float, sigma: float, weight=None) -> float:
    def f(u):
        w = stats.norm.pdf(u, scale=sigma) * (1.0 if weight is None else weight(u))
        return special.expit(a + u) * w

    def g(u):
        return stats.norm.pdf(u, scale=sigma) * (1.0 if weight is None else weight(u))

    num = integrate.quad(f, -12 * sigma, 12 * sigma, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    den = integrate.quad(g, -12 * sigma, 12 * sigma, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return num / den


@pytest.mark.parametrize(("a", "beta", "sigma"), [(-3.8, 0.69, 1.5), (0.0, 0.7, 1.0)])
def test_marginal_log_or_against_adaptive_quadrature(a, beta, sigma):
    exact = special.logit(_quad_risk(a + beta, sigma)) - special.logit(_quad_risk(a, sigma))
    assert marginal_log_or(a, beta, sigma) == pytest.approx(exact, abs=1e-9)

    def at_risk(u):
        return 1 - special.expit(-1.5 + u)

    tilted = special.logit(_quad_risk(a + beta, sigma, at_risk)) - special.logit(
        _quad_risk(a, sigma, at_risk)
    )
    got = marginal_log_or(a, beta, sigma, at_risk_intercept=-1.5)
    assert got == pytest.approx(tilted, abs=1e-9)
    # with one binary covariate the general version (logistic fit to marginal risks)
    # is the same saturated model
    X = np.column_stack([np.ones(4), [0, 1, 0, 1]])
    assert marginal_params(X, np.array([a, beta]), sigma)[1] == pytest.approx(
        marginal_log_or(a, beta, sigma), abs=1e-7
    )


def test_zeger_approximation_against_exact_attenuation():
    """The approximation is within 6% of the exact attenuation factor for outcomes
    that are not rare; for a rare outcome (intercept -3.8, ~2% risk) the exact
    attenuation is clearly weaker than the approximation says."""
    for a in (0.0, -1.0, -2.0):
        for sigma in (0.5, 1.0, 1.5):
            exact = marginal_log_or(a, 0.7, sigma) / 0.7
            approx = zeger_attenuation(0.7, sigma) / 0.7
            assert approx == pytest.approx(exact, rel=0.06), (a, sigma)
    assert marginal_log_or(-3.8, 0.69, 1.5) > zeger_attenuation(0.69, 1.5) + 0.04


# ---------------------------------------------------------------------------
# simulation checks with a known truth


def test_glmm_steps_b_c_d_unbiased_with_nominal_coverage():
    """500 simulated ASSERT-sized cohorts (187 patients, true conditional OR 2):
    the GLMM log-OR at ladder steps b, c, d is unbiased and its Wald 95% CI covers
    the truth at the nominal rate. Acceptance regions (99.9%): |bias| <= 3.29 Monte
    Carlo SEs; coverage in 0.95 ± 3.29 * sqrt(0.95 * 0.05 / 500) = [0.918, 0.982].
    benchmarks/ladder_coverage.py runs 2000 replicates (figures in its output)."""
    spec = CohortSpec(n_patients=187, odds_ratio_new=2.0)
    n_reps = 500
    sims = simcheck.simulation_check(
        spec,
        n_reps,
        2026,
        models={
            "b": (),
            "c": ("arm",),
            "d": ("arm", "lumbar", "baseline_corner", "crp", "age"),
        },
    )
    half = Z_ACCEPT * math.sqrt(0.95 * 0.05 / n_reps)
    for model, sub in sims.groupby("model"):
        s = simcheck.coverage_summary(sub)
        assert s["n_used"] >= 0.99 * n_reps, model
        assert abs(s["bias"]) <= Z_ACCEPT * s["bias_mcse"], (model, s)
        assert abs(s["coverage"] - 0.95) <= half, (model, s)
        # model-based SEs agree with the spread of the estimates (within 10%)
        assert s["mean_se"] == pytest.approx(s["emp_sd"], rel=0.10), (model, s)


def test_gee_estimates_the_implied_marginal_or():
    """GEE fitted to 80 simulated cohorts (no selection of VUs on the random effect)
    lands on the marginal log-OR implied by the truth, not the conditional one.
    Acceptance: |mean - marginal| <= 3.29 Monte Carlo SEs, and the mean is nearer the
    marginal than the conditional value (they differ by about 5 MC SEs)."""
    spec = CohortSpec(n_patients=187, odds_ratio_new=2.0, syndesmophyte_prevalence=0.001)
    seeds = np.random.SeedSequence(99).spawn(80)
    est = []
    for child in seeds:
        panel = simulate_cohort(spec, seed=int(child.generate_state(1)[0]))
        frame = an.build_frame(panel, "new_syndesmophyte", "w0")
        est.append(fit("new_syndesmophyte ~ mri + (1|patient)", frame, engine="gee").params["mri"])
    truth = panel.truth
    conditional = truth["log_or_new"]
    marginal = marginal_log_or(truth["intercept_new"], conditional, truth["sigma_syndesmophyte"])
    est = np.asarray(est)
    mcse = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - marginal) <= Z_ACCEPT * mcse
    assert abs(est.mean() - marginal) < abs(est.mean() - conditional)


# ---------------------------------------------------------------------------
# the patient level, against frames built by hand from the raw columns


def _hand_patient_frame(panel: VUPanel) -> pd.DataFrame:
    vu = panel.vu
    scored = vu[vu["vu"].isin(MSASSS_VUS)]
    base = scored[["msasss_upper_w0", "msasss_lower_w0"]].max(axis=1)
    follow = scored[["msasss_upper_w102", "msasss_lower_w102"]].max(axis=1)
    at_risk = base < 2
    new = (follow >= 2) & at_risk
    per = pd.DataFrame(
        {
            "any_inflamed": (vu["mri_w0"] >= 1).groupby(vu["patient"]).max().astype(float),
            "n_inflamed": (vu["mri_w0"] >= 1).groupby(vu["patient"]).sum().astype(float),
            "total": vu["mri_w0"].groupby(vu["patient"]).sum(),
            "n_new": new.groupby(scored["patient"]).sum().astype(float),
            "at_risk": at_risk.groupby(scored["patient"]).sum().astype(float),
        }
    )
    corners = ["msasss_upper_w0", "msasss_lower_w0"]
    later = ["msasss_upper_w102", "msasss_lower_w102"]
    delta = scored[later].sum(axis=1) - scored[corners].sum(axis=1)
    per["progression"] = (delta.groupby(scored["patient"]).sum() >= 2).astype(float)
    per["arm"] = panel.patients.set_index("patient")["arm"]
    return per


def test_patient_level_logistic_matches_hand_aggregation(panel):
    hand = _hand_patient_frame(panel)
    X = pd.DataFrame(
        {
            "const": 1.0,
            "exposure": hand["total"],
            "arm": (hand["arm"] == "placebo").astype(float),
        }
    )
    ref = sm.Logit((hand["n_new"] > 0).astype(float), X).fit(disp=0)
    pl = patient_level(panel, "w0", "any_new", summary="total")
    assert pl.fit.params["exposure"] == pytest.approx(ref.params["exposure"], rel=1e-6)
    assert pl.fit.bse["exposure"] == pytest.approx(ref.bse["exposure"], rel=1e-5)
    row = pl.to_frame().iloc[0]
    assert row["measure"] == "OR" and row["n_patients"] == len(hand)
    assert row["events"] == int((hand["n_new"] > 0).sum())

    prog = patient_level(panel, "w0", "msasss_progression", summary="count")
    frame = prog.frame.set_index("patient")
    assert np.array_equal(frame["outcome"], hand.loc[frame.index, "progression"])
    assert np.array_equal(frame["exposure"], hand.loc[frame.index, "n_inflamed"])
    anyf = patient_frame(panel, "w0", "any_new", summary="any").data.set_index("patient")
    assert np.array_equal(anyf["exposure"], hand.loc[anyf.index, "any_inflamed"])


def test_patient_level_count_models_use_the_vus_at_risk(panel):
    hand = _hand_patient_frame(panel)
    X = pd.DataFrame(
        {
            "const": 1.0,
            "exposure": hand["n_inflamed"],
            "arm": (hand["arm"] == "placebo").astype(float),
        }
    )
    pois = sm.GLM(hand["n_new"], X, family=sm.families.Poisson(), exposure=hand["at_risk"]).fit()
    got = patient_level(panel, "w0", "n_new", summary="count", engine="poisson")
    assert got.fit.params["exposure"] == pytest.approx(pois.params["exposure"], rel=1e-6)
    assert got.measure == "RR"
    nb = sm.NegativeBinomial(hand["n_new"], X, exposure=hand["at_risk"]).fit(disp=0, maxiter=200)
    got = patient_level(panel, "w0", "n_new", summary="count")
    assert got.fit.engine == "negbin"
    assert got.fit.params["exposure"] == pytest.approx(nb.params["exposure"], rel=1e-4)


def test_patient_level_ledger_and_bad_requests(panel):
    # a patient with every mSASSS VU bridged at baseline has no VU at risk
    vu = panel.vu.copy()
    first = panel.patient_ids[0]
    rows = vu["patient"].eq(first) & vu["vu"].isin(MSASSS_VUS)
    vu.loc[rows, ["msasss_upper_w0", "msasss_lower_w0", "msasss_upper_w102"]] = 3.0
    vu.loc[rows, "msasss_lower_w102"] = 3.0
    bridged = VUPanel(vu, panel.patients.copy())
    pl = patient_level(bridged, "w0", "any_new")
    assert first not in set(pl.frame["patient"])
    led = pl.ledger.to_frame()
    assert led["reason"].str.contains("no VU at risk").any()
    assert led["n_rows"].sum() == 1
    with pytest.raises(ModelError, match="count"):
        patient_level(panel, "w0", "n_new", engine="logit")
    with pytest.raises(ModelError, match="single week"):
        patient_level(panel, "any", "any_new", summary="total")


def test_compare_levels_puts_vu_and_patient_side_by_side(panel):
    table = compare_levels(panel, "w0")
    assert table["level"].tolist() == ["VU", "VU", "patient", "patient", "patient"]
    assert table["measure"].tolist() == ["OR", "OR", "OR", "RR", "OR"]
    ladder = an.ladder(panel, "new_syndesmophyte", ["w0"])
    c = ladder[ladder["step"].eq("c")].set_index("engine")
    vu = table[table["level"].eq("VU")].set_index("engine")
    assert vu.loc["native", "estimate"] == pytest.approx(c.loc["native", "OR"])
    assert vu.loc["gee", "estimate"] == pytest.approx(c.loc["gee", "OR"])
    pl = patient_level(panel, "w0", "any_new").to_frame().iloc[0]
    assert table.iloc[2]["estimate"] == pytest.approx(pl["estimate"])


# ---------------------------------------------------------------------------
# a spec fitted as written, and the spine profile


def test_fit_spec_vu_and_patient(panel):
    spec = validate(
        {"outcome": "new_syndesmophyte", "exposure": ["w0"], "covariates": ["arm", "region"]}
    )
    (res,) = an.fit_spec(panel, spec)
    frame = an.build_frame(panel, "new_syndesmophyte", "w0", covariates=["arm", "region"])
    ref = fit("new_syndesmophyte ~ mri + arm + region + (1|patient)", frame)
    assert res.fit.params["mri"] == pytest.approx(ref.params["mri"], rel=1e-10)
    assert "mri" in res.text and "Odds ratios" in res.text
    assert res.ledger.n_excluded == len(panel.vu) - len(frame)
    pspec = validate({"level": "patient", "outcome": "any_new", "exposure": "w0"})
    (pres,) = an.fit_spec(panel, pspec)
    assert "exposure" in pres.table["term"].tolist()
    with pytest.raises(ModelError, match=r"w102.*does not vary"):
        an.fit_spec(with_vu(panel, mri_w102=0.0), spec.with_options(exposures=["w102"]))


def test_fit_spec_refuses_a_fit_that_did_not_converge(panel, monkeypatch):
    """fit_spec is strict: a fit that did not converge raises, naming the spec, the
    exposure and the optimiser's message, instead of printing a table of NaN."""
    import dataclasses

    real = an.fit

    def not_converged(formula, frame, engine="native", **kwargs):
        res = real(formula, frame, engine=engine, **kwargs)
        conv = dataclasses.replace(res.convergence, converged=False, message="limit (forced)")
        return dataclasses.replace(res, convergence=conv)

    monkeypatch.setattr(an, "fit", not_converged)
    spec = validate({"outcome": "new_syndesmophyte", "exposure": ["w0"], "covariates": ["arm"]})
    with pytest.raises(ModelError, match=r"exposure 'w0': the fit did not converge: limit"):
        an.fit_spec(panel, spec)


def test_fit_spec_leaves_out_a_constant_covariate_and_says_so(panel):
    # Every VU at risk of growth has baseline_corner 2 here (bridging is scored on both
    # corners), so the covariate is constant; the fit goes on without it and says so.
    spec = validate(
        {"outcome": "growth", "exposure": ["w0"], "covariates": ["arm", "baseline_corner"]}
    )
    frame = an.build_frame(panel, "growth", "w0", covariates=["arm", "baseline_corner"])
    assert frame["baseline_corner"].nunique() == 1
    (res,) = an.fit_spec(panel, spec)
    assert "baseline_corner" not in res.fit.params.index
    assert any("constant in the analysis frame: baseline_corner" in w for w in res.fit.warnings)
    ref = fit("growth ~ mri + arm + (1|patient)", frame)
    assert res.fit.params["mri"] == pytest.approx(ref.params["mri"], rel=1e-10)


def test_spine_profile_counts(panel):
    prof = spine_profile(panel)
    assert prof["vu"].tolist() == list(VU_LABELS)
    vu = panel.vu
    for week in panel.mri_weeks:
        hand = (vu[f"mri_w{week}"] >= 1).groupby(vu["vu"]).mean()
        assert np.allclose(prof.set_index("vu")[f"inflamed_w{week}"], hand.reindex(VU_LABELS))
    frame = an.build_frame(panel, "new_syndesmophyte", "w0")
    per = frame.data.groupby("vu")["new_syndesmophyte"].agg(["size", "sum"])
    got = prof.set_index("vu").loc[list(MSASSS_VUS)]
    assert np.array_equal(got["at_risk"], per["size"].reindex(MSASSS_VUS))
    assert np.array_equal(got["new"], per["sum"].reindex(MSASSS_VUS))
    assert prof.loc[prof["region"].eq("thoracic"), "new_rate"].isna().all()


@pytest.mark.r
def test_ladder_with_lme4_beside_native(r_lme4, panel):
    """The ladder runs lme4's glmer as its GLMM engine; nAGQ = 5 agrees with the
    native engine to 1e-4 (relative) in OR, CI and random-intercept SD."""
    table = an.ladder(
        panel,
        "new_syndesmophyte",
        ["w0"],
        ["region"],
        engine="lme4",
        engines_beside=("native",),
        nagq=5,
    )
    lme4 = table[table["engine"].eq("lme4")].set_index("step")
    native = table[table["engine"].eq("native")].set_index("step")
    assert list(lme4.index) == ["b", "c", "d", "e"]  # e: the hybrid GLMM by lme4
    lme4 = lme4.drop(index="e")
    for col in ("OR", "lower", "upper", "sigma"):
        assert np.allclose(lme4[col], native[col], rtol=1e-4), col
