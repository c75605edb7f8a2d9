"""Tests of the Bayesian engine (``engine="bayes"``, ``syndesmo.engines.bayes``).

Tests that sample are marked ``bayes`` (excluded from the default run; CI runs
``pytest -m bayes``). Input checks run before PyMC is imported, so they are unmarked.

References: the native ML engine (itself checked against lme4) on simulated cohorts
with a known truth; ArviZ's own HDI; scipy's binomial log-pmf; closed forms for the
default prior scales.
"""

from __future__ import annotations

import math
import pickle
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from syndesmo.engines.bayes import (
    DEFAULT_SIGMA_SCALE,
    BayesFitResult,
    _aggregate,
    default_priors,
    resolve_priors,
)
from syndesmo.errors import ConvergenceWarning, ModelError
from syndesmo.fitting.api import fit
from syndesmo.fitting.design import build_design
from syndesmo.fitting.results import FitResult

FORMULA = "y ~ mri + arm + (1|patient)"


def simulate(
    n_patients: int,
    *,
    seed: int,
    n_vus: int = 12,
    intercept: float = -2.5,
    log_or: float = math.log(2.0),
    arm_effect: float = -0.3,
    sigma: float = 1.0,
    prevalence: float = 0.3,
) -> pd.DataFrame:
    """Random-intercept logistic cohort: VU-level 0/1 exposure ``mri``, patient-level arm."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), n_vus)
    u = rng.normal(0.0, sigma, n_patients)[pid]
    arm = np.repeat(rng.integers(0, 2, n_patients), n_vus)
    mri = rng.binomial(1, prevalence, pid.size)
    eta = intercept + log_or * mri + arm_effect * arm + u
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    return pd.DataFrame(
        {
            "y": y,
            "mri": mri,
            "arm": np.where(arm == 1, "infliximab", "placebo"),
            "patient": [f"P{i:03d}" for i in pid],
        }
    )


# ---------------------------------------------------------------------------
# Fast checks (no sampling)
# ---------------------------------------------------------------------------


def test_default_priors_are_the_stated_scales():
    df = simulate(30, seed=1)
    df["age"] = np.random.default_rng(0).normal(40.0, 9.0, len(df))
    design = build_design("y ~ mri + arm + age + (1|patient)", df)
    priors = default_priors(design)
    sd_age = float(np.std(df["age"].to_numpy(), ddof=1))
    assert priors["Intercept"].describe() == "Normal(mu=0, sigma=2.5)"
    # 0/1 columns: Normal(0, 2.5) on the log-OR, whatever their prevalence.
    assert priors["mri"].describe() == "Normal(mu=0, sigma=2.5)"
    assert priors["arm[T.placebo]"].describe() == "Normal(mu=0, sigma=2.5)"
    # Other columns: the same prior per two SDs (Gelman et al. 2008).
    assert priors["age"].dist == "Normal"
    assert dict(priors["age"].params)["sigma"] == pytest.approx(1.25 / sd_age, rel=1e-12)
    assert priors["sigma"].dist == "HalfNormal"
    assert dict(priors["sigma"].params) == {"sigma": DEFAULT_SIGMA_SCALE}


def test_prior_overrides_and_their_errors():
    design = build_design(FORMULA, simulate(30, seed=1))
    got = resolve_priors(
        design, {"mri": 1.0, "sigma": {"dist": "HalfStudentT", "nu": 3, "sigma": 2.5}}
    )
    assert got["mri"].describe() == "Normal(mu=0, sigma=1)"
    assert got["sigma"].describe() == "HalfStudentT(nu=3, sigma=2.5)"
    with pytest.raises(ModelError, match=r"unknown key 'crp'.*mri"):
        resolve_priors(design, {"crp": 1.0})
    with pytest.raises(ModelError, match=r"priors\['sigma'\].*'Normal'"):
        resolve_priors(design, {"sigma": {"dist": "Normal", "mu": 0, "sigma": 1}})
    with pytest.raises(ModelError, match=r"priors\['mri'\].*positive"):
        resolve_priors(design, {"mri": -1.0})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"draws": 0}, r"draws must be a whole number >= 1"),
        ({"target_accept": 1.0}, r"target_accept"),
        ({"seed": -3}, r"seed must be"),
        ({"hdi": "yes"}, r"hdi must be"),
        ({"nuts_sampler": "stan"}, r"nuts_sampler"),
        ({"warmup": 10}, r"does not take option\(s\) warmup"),
    ],
)
def test_bad_options_give_one_clear_error(options, message):
    with pytest.raises(ModelError, match=message):
        fit(FORMULA, simulate(30, seed=1), engine="bayes", **options)


def test_constant_covariate_is_named():
    df = simulate(30, seed=1).assign(crp=5.0)
    with pytest.raises(ModelError, match="'crp'"):
        fit("y ~ mri + crp + (1|patient)", df, engine="bayes")


def test_missing_pymc_is_one_clear_error(monkeypatch):
    from syndesmo.errors import EngineUnavailableError

    monkeypatch.setitem(sys.modules, "pymc", None)  # makes `import pymc` fail
    with pytest.raises(EngineUnavailableError, match=r"syndesmo\[bayes\]"):
        fit(FORMULA, simulate(30, seed=1), engine="bayes")


def test_merging_rows_keeps_the_binomial_likelihood():
    """The merged cells give the same log-likelihood up to the binomial constant."""
    design = build_design(FORMULA, simulate(40, seed=2))
    X, y, n, g = design.X, design.y, design.trials, design.groups
    cells = _aggregate(X, y, n, g)
    assert cells.y.sum() == y.sum() and cells.n.sum() == n.sum()
    assert cells.y.size < y.size
    rng = np.random.default_rng(0)
    beta, u = rng.normal(size=X.shape[1]), rng.normal(size=design.n_groups)

    def kernel(X, y, n, g):
        eta = X @ beta + u[g]
        return float(np.sum(y * eta - n * np.logaddexp(0.0, eta)))

    assert kernel(cells.X, cells.y, cells.n, cells.groups) == pytest.approx(
        kernel(X, y, n, g), rel=1e-12
    )


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

# Short runs for tests of mechanics (seeding, priors, storage), not of inference:
# their ESS is below the 400 the diagnostics ask for, so they warn by design.
QUICK = {"draws": 250, "tune": 250, "chains": 2}
quick_run = pytest.mark.filterwarnings("ignore::syndesmo.errors.ConvergenceWarning")


@pytest.fixture(scope="module")
def large():
    """200 patients × 12 VUs, true OR 2: Bayes (defaults) and ML (nAGQ 25) fits."""
    df = simulate(200, seed=11)
    return (
        fit(FORMULA, df, engine="bayes", seed=1),
        fit(FORMULA, df, engine="native", nagq=25),
    )


@pytest.fixture(scope="module")
def small():
    """22 patients × 12 VUs (the size of seed 001's MRI substudy), 4 rows missing mri.

    9 of the 22 patients have no event, which leaves a long posterior tail towards
    large σ: with target_accept 0.9 this cohort gives 3 divergent transitions, with
    the default 0.95 R-hat(σ) = 1.011; 0.99 (smaller steps) samples it cleanly.
    """
    df = simulate(22, seed=4, intercept=-3.0)
    df.loc[[3, 50, 51, 200], "mri"] = np.nan
    return (
        df,
        fit(FORMULA, df, engine="bayes", seed=1, target_accept=0.99),
        fit(FORMULA, df, engine="native", nagq=25),
    )


@pytest.mark.bayes
def test_large_cohort_posterior_agrees_with_ml_and_covers_truth(large):
    bayes, ml = large
    assert isinstance(bayes, FitResult) and isinstance(bayes, BayesFitResult)
    assert bayes.engine == "bayes" and bayes.converged, bayes.convergence_message
    assert list(bayes.params.index) == list(ml.params.index)
    # With 2400 rows the posterior is close to N(MLE, inverse information) and the
    # prior is weak (prior SD 5.5 vs SE 0.14 on the log-OR), so the posterior median
    # sits within a small fraction of an SE of the MLE and the posterior SD ≈ the SE.
    draws = bayes.beta_draws()
    for term in ml.params.index:
        assert abs(draws[term].median() - ml.params[term]) < 0.25 * ml.bse[term], term
        assert bayes.bse[term] / ml.bse[term] == pytest.approx(1.0, abs=0.10), term
    assert abs(bayes.sigma - ml.sigma) < 0.5 * ml.details.theta_se
    ors = bayes.odds_ratios()
    assert ors.loc["mri", "OR"] == pytest.approx(math.exp(draws["mri"].median()), rel=1e-12)
    assert ors.loc["mri", "lower"] < 2.0 < ors.loc["mri", "upper"]
    assert (
        bayes.conf_int().loc["mri", "lower"] < math.log(2.0) < bayes.conf_int().loc["mri", "upper"]
    )


@pytest.mark.bayes
def test_small_cohort_side_by_side_with_ml(small):
    df, bayes, ml = small
    assert bayes.converged, bayes.convergence_message
    assert bayes.n_obs == ml.n_obs == len(df) - 4
    assert bayes.n_groups == ml.n_groups == 22
    ledger = bayes.ledger.to_frame()
    assert ledger["n_rows"].sum() == 4 and "mri" in ledger["reason"].iloc[0]

    ci_ml, ci_b = ml.conf_int(), bayes.conf_int()
    sigma_lo, sigma_hi = np.quantile(bayes.sigma_draws(), [0.025, 0.975])
    table = pd.DataFrame(
        {
            "ML OR": np.exp(ml.params),
            "ML 95% CI": [f"{a:.2f}-{b:.2f}" for a, b in np.exp(ci_ml.to_numpy())],
            "Bayes OR": bayes.odds_ratios()["OR"],
            "Bayes 95% CrI": [f"{a:.2f}-{b:.2f}" for a, b in np.exp(ci_b.to_numpy())],
        }
    )
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"SD: ML {ml.sigma:.3f}; Bayes median {bayes.sigma:.3f} ({sigma_lo:.2f}-{sigma_hi:.2f})")
    # The prior is weak, so the point estimates stay close to the MLE (well within
    # one SE), each method's estimate lies in the other's interval, and the
    # likelihood's σ̂ lies in the posterior interval of σ.
    for term in ml.params.index:
        assert abs(bayes.beta_draws()[term].median() - ml.params[term]) < 0.5 * ml.bse[term]
        assert ci_b.loc[term, "lower"] < ml.params[term] < ci_b.loc[term, "upper"]
        assert ci_ml.loc[term, "lower"] < bayes.params[term] < ci_ml.loc[term, "upper"]
    assert sigma_lo < ml.sigma < sigma_hi


@pytest.mark.bayes
def test_summary_states_priors_and_diagnostics(small):
    _, bayes, _ = small
    text = bayes.summary()
    assert "Intercept ~ Normal(mu=0, sigma=2.5)" in text
    assert "sigma ~ HalfNormal(sigma=2.5)" in text
    assert "R-hat" in text and "Convergence: converged" in text and "Rows left out" in text
    assert math.isnan(bayes.loglik) and math.isnan(bayes.aic)
    record = bayes.convergence.diagnostics
    assert record["max_rhat"] <= 1.01 and record["min_ess_bulk"] >= 400
    assert record["divergences"] == bayes.details.divergences == 0
    assert list(bayes.varcorr["sdcor"]) == [bayes.sigma]
    copy = pickle.loads(pickle.dumps(bayes))  # power runs ship fits between processes
    assert isinstance(copy, BayesFitResult) and copy.odds_ratios().equals(bayes.odds_ratios())


@pytest.mark.bayes
def test_intervals_and_tail_probabilities_from_draws(small):
    import arviz as az

    _, bayes, _ = small
    beta = bayes.idata.posterior["beta"]
    stacked = beta.stack(sample=("chain", "draw")).transpose("sample", "term").to_numpy()
    eti = bayes.conf_int(0.9)
    np.testing.assert_allclose(eti["lower"], np.quantile(stacked, 0.05, axis=0), rtol=1e-12)
    np.testing.assert_allclose(eti["upper"], np.quantile(stacked, 0.95, axis=0), rtol=1e-12)
    hdi = bayes.conf_int(0.9, method="hdi")
    for j, term in enumerate(bayes.params.index):
        ref = az.hdi(stacked[:, j], hdi_prob=0.9)
        assert tuple(hdi.loc[term]) == pytest.approx(tuple(ref), rel=1e-12)
    tail = 2 * np.minimum((stacked > 0).mean(axis=0), (stacked < 0).mean(axis=0))
    np.testing.assert_allclose(bayes.tail_probability, tail)
    assert bayes.pvalues.isna().all() and bayes.odds_ratios()["p"].isna().all()
    with pytest.raises(ModelError, match="'eti' or 'hdi' for engine 'bayes', got 'wald'"):
        bayes.conf_int(method="wald")
    sigma = bayes.sigma_conf_int(0.9)
    draws = bayes.sigma_draws()
    assert tuple(sigma.loc["sigma"]) == pytest.approx(tuple(np.quantile(draws, [0.05, 0.95])))
    np.testing.assert_allclose(bayes.vcov, np.cov(stacked, rowvar=False), rtol=1e-10)


@pytest.mark.bayes
@quick_run
def test_hdi_option_and_pointwise_log_likelihood():
    import arviz as az

    df = simulate(25, seed=3)
    res = fit(FORMULA, df, engine="bayes", seed=2, hdi=True, log_likelihood=True, **QUICK)
    assert res.conf_int().equals(res.conf_int(method="hdi"))
    ll = res.idata.log_likelihood["y"].to_numpy()
    assert ll.shape == (2, 250, len(df))
    # One draw recomputed with scipy from that draw's β and patient effects.
    design = build_design(FORMULA, df)
    beta = res.idata.posterior["beta"].to_numpy()[1, 17]
    u = res.idata.posterior["u"].to_numpy()[1, 17]
    eta = design.X @ beta + u[design.groups]
    ref = stats.binom.logpmf(design.y, design.trials, 1.0 / (1.0 + np.exp(-eta)))
    np.testing.assert_allclose(ll[1, 17], ref, rtol=1e-10, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(az.loo(res.idata).elpd_loo)


@pytest.mark.bayes
@quick_run
def test_same_seed_same_draws():
    df = simulate(30, seed=5)
    a = fit(FORMULA, df, engine="bayes", seed=7, **QUICK)
    b = fit(FORMULA, df, engine="bayes", seed=7, **QUICK)
    c = fit(FORMULA, df, engine="bayes", seed=8, **QUICK)
    d = fit(FORMULA, df, engine="bayes", seed=np.random.SeedSequence(7), **QUICK)
    e = fit(FORMULA, df, engine="bayes", seed=np.random.SeedSequence(7), **QUICK)
    assert np.array_equal(a.beta_draws().to_numpy(), b.beta_draws().to_numpy())
    # QUICK chains are too short to pass the diagnostics, so params are NaN (no numbers
    # from a fit that did not converge): the draws themselves carry the determinism
    assert np.array_equal(a.sigma_draws(), b.sigma_draws())
    assert not np.array_equal(a.beta_draws().to_numpy(), c.beta_draws().to_numpy())
    assert np.array_equal(d.beta_draws().to_numpy(), e.beta_draws().to_numpy())


@pytest.mark.bayes
@quick_run
def test_user_priors_are_the_ones_sampled():
    """A very tight prior at log-OR 3 overrides the data (≈ log 2)."""
    df = simulate(30, seed=5)
    tight = {"mri": {"dist": "Normal", "mu": 3.0, "sigma": 0.01}}
    res = fit(FORMULA, df, engine="bayes", seed=1, priors=tight, **QUICK)
    assert res.beta_draws()["mri"].mean() == pytest.approx(3.0, abs=0.05)
    assert "mri ~ Normal(mu=3, sigma=0.01)" in res.summary()


def separated_cohort() -> pd.DataFrame:
    """A third of the VUs with the outcome carry the finding ``x_sep``, and no VU
    without the outcome does: complete separation along ``x_sep``."""
    df = simulate(40, seed=6)
    rng = np.random.default_rng(6)
    x = (rng.random(len(df)) < 0.3) & (df["y"] == 1)
    return df.assign(x_sep=x.astype(float))


@pytest.mark.bayes
def test_separation_is_bounded_by_the_default_prior_and_reported():
    df = separated_cohort()
    assert df["x_sep"].sum() >= 10
    # The likelihood pushes β(x_sep) to +∞ and the Normal(0, 2.5) prior holds it to a
    # few prior SDs: a proper posterior, but a long one-sided tail that gives 2
    # divergent transitions at target_accept 0.9 and none at the default 0.95. The tail
    # needs 4 × 2000 draws for R-hat of σ to stay under 1.01 (1000 gave 1.012, PyMC 5.28).
    res = fit(
        "y ~ mri + x_sep + (1|patient)",
        df,
        engine="bayes",
        seed=1,
        target_accept=0.95,
        draws=2000,
        tune=2000,
    )
    assert any("separation" in w and "'x_sep'" in w for w in res.warnings)
    assert res.converged, res.convergence_message
    assert 2.5 < res.params["x_sep"] < 3 * 2.5


@pytest.mark.bayes
def test_flat_prior_under_separation_fails_the_diagnostics_loudly():
    with pytest.warns(ConvergenceWarning, match=r"(R-hat|ESS|divergent).*'x_sep'"):
        res = fit(
            "y ~ mri + x_sep + (1|patient)",
            separated_cohort(),
            engine="bayes",
            seed=1,
            priors={"x_sep": {"dist": "Flat"}},
            **QUICK,
        )
    assert not res.converged
    assert "'x_sep'" in res.convergence_message
    assert "NOT converged" in res.summary()


@pytest.mark.bayes
def test_too_few_draws_fail_the_ess_check():
    # With 2 × 50 draws the ESS cannot reach 400 (ArviZ caps it at N·log10(N) = 200).
    with pytest.warns(ConvergenceWarning, match=r"bulk ESS \d+ < 400 for 'Intercept'"):
        res = fit(
            FORMULA, simulate(30, seed=5), engine="bayes", seed=1, draws=50, tune=50, chains=2
        )
    assert not res.converged and "ESS" in res.convergence_message


@pytest.mark.bayes
def test_ladder_and_forest_plot_put_bayes_beside_glmm_and_gee():
    import matplotlib

    matplotlib.use("Agg")
    from syndesmo.analysis.ladder import ladder
    from syndesmo.output.plots import forest_plot
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    panel = simulate_cohort(CohortSpec(n_patients=120, odds_ratio_new=2.0), seed=11)
    table = ladder(panel, exposures=["w0"], engines=["native", "gee", "bayes"])
    rows = table.set_index(["step", "engine"])
    for step in "bc":
        assert rows.loc[(step, "bayes"), "converged"]
        # a weak prior and ~1400 VUs: the posterior median OR sits on the ML estimate
        # within a quarter of the ML standard error (as in the large-cohort test above)
        log_ml = math.log(rows.loc[(step, "native"), "OR"])
        log_bayes = math.log(rows.loc[(step, "bayes"), "OR"])
        assert abs(log_bayes - log_ml) < 0.25 * rows.loc[(step, "native"), "se"]
    fig = forest_plot(table)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("Bayesian" in label for label in labels), labels


@pytest.mark.bayes
def test_ranef_are_the_posterior_means_and_sds_of_the_patient_effects():
    data = simulate(80, seed=8)
    res = fit(FORMULA, data, engine="bayes", seed=3, draws=1000, tune=1000, chains=2)
    assert res.converged, res.convergence_message
    table = res.ranef()
    u = res.details.idata.posterior["u"]
    draws = u.to_numpy().reshape(-1, u.shape[-1])
    assert list(table.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert list(table["grp"]) == [str(g) for g in sorted(data["patient"].unique())]
    np.testing.assert_allclose(table["condval"], draws.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(table["condsd"], draws.std(axis=0, ddof=1), atol=1e-12)
    # beside the ML conditional modes: the same ordering of patients, close values
    modes = fit(FORMULA, data).ranef()
    assert np.corrcoef(table["condval"], modes["condval"])[0, 1] > 0.95
    # predictions plug the posterior means in; a new patient gets 0
    new = data.head(2).assign(patient=["nobody", data["patient"].iloc[0]])
    eta = res.predict(new, type="link")
    assert eta.iloc[0] == pytest.approx(
        float(res.predict(new, conditional=False, type="link").iloc[0])
    )
