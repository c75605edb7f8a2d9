"""The native GLMM engine against references that need no R.

References: closed forms (σ = 0 reduces the model to logistic regression, checked
against statsmodels' Logit), brute-force numerical integration of the marginal
likelihood (scipy.integrate.quad), finite differences of the likelihood, and the
engine's own single-fit path for the batched ``fit_many``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import integrate
from scipy.special import expit, gammaln

from syndesmo.engines.native.engine import ManyFit, fit_many, fit_native, loglik_at
from syndesmo.engines.native.laplace_hessian import laplace_hessian
from syndesmo.engines.native.quadrature import Layout, loglik_and_grad
from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.results import FitResult
from syndesmo.ledger import Ledger


def vu_panel(
    seed: int,
    n_patients: int = 187,
    sigma: float = 1.2,
    beta: tuple[float, float, float] = (-2.5, 0.7, -0.3),
) -> Design:
    """A VU-like panel: 8–12 rows per patient, binary MRI exposure, patient-level arm."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 13, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    n = groups.size
    arm = rng.integers(0, 2, n_patients)[groups]
    activity = rng.normal(size=n_patients)[groups]
    mri = (rng.random(n) < expit(-0.7 + 0.8 * activity)).astype(float)
    X = np.column_stack([np.ones(n), mri, arm])
    b = sigma * rng.normal(size=n_patients)
    y = rng.binomial(1, expit(X @ np.asarray(beta) + b[groups])).astype(float)
    return Design(
        formula="y ~ mri + arm + (1|patient)",
        response="y",
        y=y,
        trials=np.ones(n),
        X=X,
        names=["Intercept", "mri", "arm"],
        group="patient",
        groups=groups,
        group_labels=np.array([f"P{i:03d}" for i in range(n_patients)]),
        ledger=Ledger(),
    )


def small_counts(seed: int = 3, n_groups: int = 25) -> tuple[Design, np.ndarray]:
    """Binomial counts with a continuous covariate (nothing merges); also returns b."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), 6)
    n = groups.size
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    m = rng.integers(1, 5, n).astype(float)
    b = 0.9 * rng.normal(size=n_groups)
    y = rng.binomial(m.astype(int), expit(X @ [-0.4, 0.6, 0.3] + b[groups])).astype(float)
    d = Design(
        formula="cbind(y, m - y) ~ x + z + (1|g)",
        response="y",
        y=y,
        trials=m,
        X=X,
        names=["Intercept", "x", "z"],
        group="g",
        groups=groups,
    )
    return d, b


# --------------------------------------------------------------------------------------
# The likelihood and its derivatives
# --------------------------------------------------------------------------------------


def test_agq_marginal_likelihood_of_one_group_equals_numerical_integral():
    rng = np.random.default_rng(11)
    n = 12
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    beta, sigma = np.array([-0.3, 0.8]), 1.7
    y = rng.binomial(1, expit(X @ beta + 0.9)).astype(float)
    d = Design("y ~ x + (1|g)", "y", y, np.ones(n), X, ["Intercept", "x"], "g", np.zeros(n, int))

    def integrand(b: float) -> float:
        eta = X @ beta + b
        loglik = np.sum(y * eta - np.logaddexp(0.0, eta))
        return (
            math.exp(loglik) * math.exp(-0.5 * (b / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        )

    exact = math.log(integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-13)[0])
    assert loglik_at(d, beta, sigma, nagq=25) == pytest.approx(exact, abs=1e-8)
    # the Laplace approximation is visibly different: the check has teeth
    assert abs(loglik_at(d, beta, sigma, nagq=1) - exact) > 1e-4


def test_binomial_counts_loglik_includes_binomial_coefficients():
    # For nagq = 1 lme4's logLik is the full log-likelihood, log C(m, y) included.
    d, _ = small_counts()
    beta, sigma = np.array([-0.4, 0.6, 0.3]), 0.9
    total = 0.0
    for g in range(d.n_groups):
        sel = d.groups == g
        Xg, yg, mg = d.X[sel], d.y[sel], d.trials[sel]
        logc = np.sum(gammaln(mg + 1) - gammaln(yg + 1) - gammaln(mg - yg + 1))

        def integrand(b, Xg=Xg, yg=yg, mg=mg, logc=logc):
            eta = Xg @ beta + b
            ll = logc + np.sum(yg * eta - mg * np.logaddexp(0.0, eta))
            return math.exp(ll - 0.5 * (b / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))

        total += math.log(integrate.quad(integrand, -np.inf, np.inf, epsrel=1e-12)[0])
    assert loglik_at(d, beta, sigma, nagq=25, marginal=True) == pytest.approx(total, abs=1e-7)
    # Laplace is only approximate (error ~0.2 here), but far closer than the log
    # binomial coefficients it must include
    logc_all = np.sum(gammaln(d.trials + 1) - gammaln(d.y + 1) - gammaln(d.trials - d.y + 1))
    assert logc_all > 10
    assert loglik_at(d, beta, sigma, nagq=1) == pytest.approx(total, abs=0.5)
    # lme4's AGQ logLik drops the saturated model's log-likelihood (its deviance is
    # built from deviance residuals); fit_native follows lme4 on that scale.
    p = d.y / d.trials
    saturated = np.sum(
        gammaln(d.trials + 1)
        - gammaln(d.y + 1)
        - gammaln(d.trials - d.y + 1)
        + d.y * np.log(np.where(p > 0, p, 1))
        + (d.trials - d.y) * np.log(np.where(p < 1, 1 - p, 1))
    )
    assert loglik_at(d, beta, sigma, nagq=25) == pytest.approx(total - saturated, abs=1e-7)


@pytest.mark.parametrize("nagq", [1, 7])
@pytest.mark.parametrize("shared", [True, False])
def test_analytic_gradient_matches_finite_differences(nagq, shared):
    d, _ = small_counts(seed=5)
    rng = np.random.default_rng(2)
    X = d.X if shared else d.X[None]
    layout = Layout(X, d.y[None], d.trials[None], d.groups)
    psi = np.r_[rng.normal(scale=0.5, size=3), 1.3][None, :]
    rep = np.zeros(1, dtype=int)
    u0 = np.zeros((layout.n_groups, 1))
    _, grad, st = loglik_and_grad(layout, rep, psi, u0, nagq)
    fd = np.empty(4)
    for j in range(4):
        e = np.zeros((1, 4))
        e[0, j] = 1e-5
        vp, _, _ = loglik_and_grad(layout, rep, psi + e, st.u, nagq, grad=False)
        vm, _, _ = loglik_and_grad(layout, rep, psi - e, st.u, nagq, grad=False)
        fd[j] = (vp[0] - vm[0]) / 2e-5
    np.testing.assert_allclose(grad[0], fd, atol=1e-6, rtol=0)


@pytest.mark.parametrize("theta", [1.4, -0.6, 0.0])
def test_laplace_hessian_matches_finite_differences_of_gradient(theta):
    d, _ = small_counts(seed=8)
    layout = Layout(d.X, d.y[None], d.trials[None], d.groups)
    psi = np.array([[-0.2, 0.4, 0.1, theta]])
    rep = np.zeros(1, dtype=int)
    _, _, st = loglik_and_grad(layout, rep, psi, np.zeros((layout.n_groups, 1)), 1)
    exact = laplace_hessian(layout, rep, psi, st)[0]
    fd = np.empty((4, 4))
    for j in range(4):
        e = np.zeros((1, 4))
        e[0, j] = 1e-5
        _, gp, _ = loglik_and_grad(layout, rep, psi + e, st.u, 1)
        _, gm, _ = loglik_and_grad(layout, rep, psi - e, st.u, 1)
        fd[j] = (gp[0] - gm[0]) / 2e-5
    np.testing.assert_allclose(exact, fd, atol=1e-5 * np.abs(fd).max(), rtol=0)


def test_modes_converge_for_groups_with_all_events():
    # Plain Newton cycles on the mode equation of an all-ones group with a large SD.
    n = 4
    X = np.column_stack([np.ones(n), np.arange(n) - 2.0])
    layout = Layout(X, np.ones((1, n)), np.ones((1, n)), np.zeros(n, dtype=int))
    psi = np.array([[-3.37, -0.18, 2.34]])
    _, _, st = loglik_and_grad(layout, np.zeros(1, int), psi, np.zeros((1, 1)), 1)
    assert st.converged.all()
    assert abs(st.f).max() < 1e-8


# --------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------


def test_fit_fills_fit_result():
    d = vu_panel(seed=1)
    fit = fit_native(d, nagq=1)
    assert isinstance(fit, FitResult)
    assert fit.engine == "native" and fit.formula == d.formula and fit.nagq == 1
    assert list(fit.params.index) == d.names and list(fit.vcov.columns) == d.names
    assert fit.converged and not fit.singular and fit.warnings == ()
    assert fit.n_obs == d.n_obs and fit.n_groups == 187 and fit.group == "patient"
    assert fit.n_events == int(d.y.sum())
    assert 0.5 < fit.sigma < 2.5 and fit.details.theta_se > 0
    assert "max |gradient|" in fit.convergence_message
    # the estimate maximises the likelihood it reports
    assert fit.loglik == pytest.approx(loglik_at(d, fit.params, fit.sigma, 1), abs=1e-9)
    for step in ([1e-3, 0, 0], [0, -1e-3, 0], [0, 0, 1e-3]):
        assert loglik_at(d, fit.params + step, fit.sigma, 1) < fit.loglik
    assert loglik_at(d, fit.params, fit.sigma * 1.01, 1) < fit.loglik


def test_recovers_known_truth_on_a_large_simulation():
    d = vu_panel(seed=4, n_patients=1500, sigma=1.0, beta=(-1.5, 0.7, -0.3))
    fit = fit_native(d, nagq=5)
    truth = np.array([-1.5, 0.7, -0.3])
    z = (fit.params.to_numpy() - truth) / fit.bse.to_numpy()
    assert np.all(np.abs(z) < 4)
    assert abs(fit.sigma - 1.0) < 4 * fit.details.theta_se


def test_nagq_25_and_15_nearly_identical_and_differ_from_laplace():
    d = vu_panel(seed=2)
    f15, f25 = fit_native(d, nagq=15), fit_native(d, nagq=25)
    f1 = fit_native(d, nagq=1)
    np.testing.assert_allclose(f25.params, f15.params, atol=1e-5)
    assert f25.sigma == pytest.approx(f15.sigma, abs=1e-5)
    assert f25.loglik == pytest.approx(f15.loglik, abs=1e-4)
    np.testing.assert_allclose(f25.bse, f15.bse, rtol=1e-4)
    assert abs(f1.sigma - f25.sigma) > 1e-4  # quadrature matters at all


def test_singular_fit_equals_statsmodels_logit():
    # Every group is the same block of rows, so the group sums of the logistic
    # residuals are all zero and σ = 0 is the maximum: no clustering at all.
    rng = np.random.default_rng(7)
    block = 10
    x = rng.normal(size=block)
    yb = (rng.random(block) < expit(0.3 + 0.8 * x)).astype(float)
    n_groups = 60
    X = np.column_stack([np.ones(block * n_groups), np.tile(x, n_groups)])
    y = np.tile(yb, n_groups)
    groups = np.repeat(np.arange(n_groups), block)
    d = Design("y ~ x + (1|g)", "y", y, np.ones(y.size), X, ["Intercept", "x"], "g", groups)
    ref = sm.Logit(y, X).fit(disp=False)
    for nagq in (1, 5):
        fit = fit_native(d, nagq=nagq)
        assert fit.singular and fit.sigma < 1e-4
        assert any("singular" in w for w in fit.warnings)
        np.testing.assert_allclose(fit.params, ref.params, atol=1e-7)
        np.testing.assert_allclose(fit.bse, ref.bse, rtol=1e-6)
        assert fit.loglik == pytest.approx(ref.llf, abs=1e-7)


def test_not_converged_is_reported_with_gradient_norm():
    d = vu_panel(seed=1)
    fit = fit_native(d, nagq=1, maxiter=1)
    assert not fit.converged
    assert "maxiter=1" in fit.convergence_message
    assert "gradient" in fit.convergence_message
    assert any("did not converge" in w for w in fit.warnings)


def test_separation_is_warned_naming_the_term():
    d = vu_panel(seed=3)
    sep = np.zeros(d.n_obs)
    sep[::9] = 1.0
    y = d.y.copy()
    y[sep == 1] = 0.0  # every row with sep = 1 is a non-event: quasi-complete separation
    X = np.column_stack([d.X, sep])
    d2 = Design(d.formula, "y", y, d.trials, X, [*d.names, "sep"], d.group, d.groups)
    fit = fit_native(d2, nagq=1)
    text = " ".join(fit.warnings)
    assert "separation" in text and "'sep'" in text
    assert "'mri'" not in text
    assert fit.params["sep"] < -8


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_all_zero_outcome_is_an_error():
    d = vu_panel(seed=1)
    d.y = np.zeros_like(d.y)
    with pytest.raises(ModelError, match="outcome has no events"):
        fit_native(d)


def test_non_binary_response_is_an_error():
    d = vu_panel(seed=1)
    d.y = d.y.copy()
    d.y[5] = 2.0
    with pytest.raises(ModelError, match=r"must be 0/1 .* value\(s\) 2 \(first in row 5\)"):
        fit_native(d)


def test_no_random_intercept_is_an_error():
    d = vu_panel(seed=1)
    d.groups = None
    with pytest.raises(
        ModelError, match=r"native engine needs a random-intercept term \(1\|group\)"
    ):
        fit_native(d)


def test_single_group_is_an_error():
    d = vu_panel(seed=1, n_patients=30)
    d.groups = np.zeros_like(d.groups)
    with pytest.raises(ModelError, match="single level"):
        fit_native(d)


def test_rank_deficient_design_names_the_term():
    d = vu_panel(seed=1)
    d.X = np.column_stack([d.X, d.X[:, 1]])
    d.names = [*d.names, "mri_copy"]
    with pytest.raises(ModelError, match="rank deficient: 'mri"):
        fit_native(d)


@pytest.mark.parametrize("nagq", [0, 26, 1.5])
def test_bad_nagq_is_an_error(nagq):
    with pytest.raises(ModelError, match="nagq"):
        fit_native(vu_panel(seed=1), nagq=nagq)


def test_group_with_one_observation_warns_but_fits():
    d = vu_panel(seed=1, n_patients=60)
    keep = np.ones(d.n_obs, dtype=bool)
    first_of_p7 = np.flatnonzero(d.groups == 7)
    keep[first_of_p7[1:]] = False
    d2 = Design(
        d.formula,
        "y",
        d.y[keep],
        d.trials[keep],
        d.X[keep],
        d.names,
        d.group,
        d.groups[keep],
        d.group_labels,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a note in the summary, not a warning
        fit = fit_native(d2)
    assert fit.converged and fit.n_groups == 60
    note = "1 group(s) of 'patient' have a single observation (e.g. P007)"
    assert sum(note in w for w in fit.warnings) == 1
    assert fit.summary().count(note) == 1


# --------------------------------------------------------------------------------------
# Many replicates at once
# --------------------------------------------------------------------------------------


def _replicates(seed: int, R: int, n_patients: int = 50, per: int = 12):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per)
    n = groups.size
    arm = rng.integers(0, 2, n_patients)[groups]
    X = np.empty((R, n, 3))
    Y = np.empty((R, n))
    for r in range(R):
        mri = (rng.random(n) < 0.35).astype(float)
        X[r] = np.column_stack([np.ones(n), mri, arm])
        b = rng.normal(size=n_patients)
        Y[r] = rng.binomial(1, expit(X[r] @ [-1.8, 0.7, -0.3] + b[groups]))
    mask = rng.random((R, n)) > 0.25
    return X, Y, groups, mask


def _single(X, y, groups, keep) -> Design:
    return Design(
        "y ~ mri + arm + (1|g)",
        "y",
        y[keep],
        np.ones(keep.sum()),
        X[keep],
        ["Intercept", "mri", "arm"],
        "g",
        groups[keep],
    )


@pytest.mark.parametrize("nagq", [1, 3])
def test_fit_many_matches_fit_native_per_replicate(nagq):
    X, Y, groups, mask = _replicates(seed=9, R=8)
    mf = fit_many(X, Y, groups, mask=mask, nagq=nagq, names=["Intercept", "mri", "arm"], chunk=3)
    assert isinstance(mf, ManyFit) and len(mf) == 8 and mf.converged.all()
    for r in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = fit_native(_single(X[r], Y[r], groups, mask[r]), nagq=nagq)
        np.testing.assert_allclose(mf.params[r], one.params, atol=1e-5)
        np.testing.assert_allclose(mf.bse[r], one.bse, rtol=1e-5)
        assert mf.sigma[r] == pytest.approx(one.sigma, abs=1e-5)
        assert mf.loglik[r] == pytest.approx(one.loglik, abs=1e-6)
        assert mf.n_obs[r] == one.n_obs and mf.n_events[r] == one.n_events
        res = mf.result(r, formula="y ~ mri + arm + (1|g)", group="g")
        np.testing.assert_allclose(res.params, one.params, atol=1e-5)
        assert res.pvalues.to_numpy() == pytest.approx(mf.pvalues()[r])


def test_fit_many_shared_design_and_unfittable_replicate():
    X, Y, groups, _ = _replicates(seed=4, R=4)
    Y[2] = 0.0  # no events: reported, not raised
    trials = np.ones(Y.shape[1])
    mf = fit_many(X[0], Y, groups, trials=trials, names=["Intercept", "mri", "arm"])
    assert not mf.converged[2] and np.isnan(mf.params[2]).all()
    assert "no events" in mf.messages[2]
    for r in (0, 1, 3):
        keep = np.ones(Y.shape[1], dtype=bool)
        one = fit_native(_single(X[0], Y[r], groups, keep))
        np.testing.assert_allclose(mf.params[r], one.params, atol=1e-5)
    ci = mf.conf_int(0.9)
    assert ci.shape == (4, 3, 2) and np.all(ci[[0, 1, 3], :, 0] < ci[[0, 1, 3], :, 1])


def test_fit_many_rejects_bad_shapes():
    X, Y, groups, _ = _replicates(seed=1, R=2)
    with pytest.raises(ModelError, match="X must be"):
        fit_many(X[:, :10], Y, groups)
    with pytest.raises(ModelError, match="successes"):
        fit_many(X, Y * 2, groups)


def test_fallback_when_newton_breaks_down(monkeypatch):
    # Force the batched Newton iteration to report a line-search failure: the fit must
    # recover through the L-BFGS-B fallback and land on the same maximum.
    import syndesmo.engines.native.core as core

    d = vu_panel(seed=6, n_patients=80)
    expected = fit_native(d, nagq=1)
    real = core.newton_maximise
    calls = {"n": 0}

    def broken(*args, **kwargs):
        res = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            res.failed[:] = True
            res.converged[:] = False
        return res

    monkeypatch.setattr(core, "newton_maximise", broken)
    fit = fit_native(d, nagq=1)
    assert fit.converged and "L-BFGS-B fallback" in fit.convergence_message
    np.testing.assert_allclose(fit.params, expected.params, atol=1e-6)
    assert fit.sigma == pytest.approx(expected.sigma, abs=1e-6)
