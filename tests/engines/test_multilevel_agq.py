"""Multilevel adaptive Gauss–Hermite quadrature against an independent exact computation.

The reference integrates the nested random intercepts by brute force: a non-adaptive
Gauss–Hermite rule with many nodes at every level (``u = z``, standard-normal weights),
written here directly with numpy on a full grid of nodes, its accuracy checked by
raising the number of nodes. Small data sets with small clusters (two readings per VU,
few VUs per patient), where Laplace is far from the exact likelihood.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from multilevel_cases import CASES
from numpy.polynomial.hermite_e import hermegauss
from scipy.optimize import minimize
from scipy.special import expit

from syndesmo.engines.native.engine import fit_native, loglik_at
from syndesmo.engines.native.multilevel import fit_multilevel, loglik_multilevel
from syndesmo.errors import ModelError
from syndesmo.fitting.design import build_design, multilevel_design
from syndesmo.fitting.random_effects import build_structure, parse_bars

LEVELS2 = ["patient", "vu"]
LEVELS3 = ["patient", "vu", "reader"]


def _panel(n_patients, n_vu, n_readers, n_rep, sds, seed):
    rng = np.random.default_rng(seed)
    shape = (n_patients, n_vu, n_readers, n_rep)
    idx = np.indices(shape).reshape(4, -1)
    df = pd.DataFrame(
        {"patient": idx[0], "vu": idx[0] * n_vu + idx[1], "reader": idx[2], "rep": idx[3]}
    )
    df["reading"] = df["vu"] * n_readers + df["reader"]
    df["x"] = rng.normal(size=len(df))
    eta = -0.3 + 0.5 * df["x"].to_numpy()
    for sd, col in zip(sds, ["patient", "vu", "reading"], strict=False):
        codes = df[col].to_numpy()
        eta = eta + sd * rng.normal(size=codes.max() + 1)[codes]
    df["y"] = rng.binomial(1, expit(eta))
    return df


def brute_loglik(df: pd.DataFrame, cols: list[str], beta, sds, n_nodes: int) -> float:
    """log ∫…∫ p(y | u) φ(u) du by a product Gauss–Hermite rule at every level.

    ``cols`` name the node of every row at each level (coarsest first); the grid holds
    every combination of one node per level, ``rows × n_nodes^levels`` numbers.
    """
    z, w = hermegauss(n_nodes)
    logw = np.log(w / w.sum())
    L = len(cols)
    X = np.column_stack([np.ones(len(df)), df["x"]])
    y = df["y"].to_numpy(float)
    eta = (X @ np.asarray(beta)).reshape((-1,) + (1,) * L)
    for lev, sd in enumerate(sds):
        shape = [1] * (L + 1)
        shape[lev + 1] = n_nodes
        eta = eta + sd * z.reshape(shape)
    ll = y.reshape((-1,) + (1,) * L) * eta - np.logaddexp(0.0, eta)  # (n, K, …, K)
    codes = [pd.factorize(df[c])[0] for c in cols]
    # integrate the finest level first: sum rows within a node, then log-sum over its nodes
    cur = ll
    node = codes[-1]  # what is summed (rows, then nodes) → its node at level ``lev``
    for lev in range(L - 1, -1, -1):
        G = codes[lev].max() + 1
        flat = cur.reshape(cur.shape[0], -1)
        summed = np.zeros((G, flat.shape[1]))
        np.add.at(summed, node, flat)
        summed = summed.reshape((G, *cur.shape[1:]))
        a = summed + logw.reshape((1,) * (summed.ndim - 1) + (-1,))
        top = a.max(axis=-1, keepdims=True)
        cur = np.log(np.exp(a - top).sum(axis=-1)) + top[..., 0]
        if lev > 0:
            # parent of every node at this level
            parent = np.zeros(G, dtype=np.int64)
            parent[codes[lev]] = codes[lev - 1]
            node = parent
    return float(cur.sum())


def _inputs(df, formula):
    s = build_structure(parse_bars(formula), df)
    X = np.column_stack([np.ones(len(df)), df["x"]])
    return X, df["y"].to_numpy(float), s


@pytest.fixture(scope="module")
def two_level():
    return _panel(25, 4, 2, 1, (1.2, 1.0), seed=5)


@pytest.fixture(scope="module")
def three_level():
    return _panel(12, 3, 2, 2, (1.0, 1.0, 1.0), seed=3)


def test_nagq_one_is_laplace_on_the_same_scale(two_level, three_level):
    for df, formula, theta in [
        (two_level, "y ~ (1|patient/vu)", [1.0, 1.3]),
        (three_level, "y ~ (1|patient/vu/reader)", [0.9, 0.8, 1.0]),
    ]:
        X, y, s = _inputs(df, formula)
        lap = loglik_multilevel(X, y, None, s, [-0.4, 0.5], theta, nagq=1)
        # nagq = 1 through the quadrature code (not the Laplace code) gives the same
        from syndesmo.engines.native.multilevel.agq import agq_value
        from syndesmo.engines.native.multilevel.fit import prepare

        data = prepare(X, y, np.ones(len(y)), s)
        agq1 = agq_value(data, np.r_[-0.4, 0.5, theta][None], 1)[0]
        assert agq1 == pytest.approx(lap, abs=1e-9)


def test_two_level_agq_converges_to_the_exact_likelihood(two_level):
    df = two_level
    X, y, s = _inputs(df, "y ~ (1|patient/vu)")
    beta, sd_vu, sd_patient = [-0.4, 0.5], 1.0, 1.3
    exact = brute_loglik(df, LEVELS2, beta, [sd_patient, sd_vu], 60)
    assert brute_loglik(df, LEVELS2, beta, [sd_patient, sd_vu], 90) == pytest.approx(
        exact, abs=1e-10
    )
    values = {
        k: loglik_multilevel(X, y, None, s, beta, [sd_vu, sd_patient], nagq=k)
        for k in (1, 3, 7, 15, 25)
    }
    assert abs(values[1] - exact) > 0.5  # Laplace is far off with two readings per VU
    errors = [abs(values[k] - exact) for k in (3, 7, 15, 25)]
    assert errors == sorted(errors, reverse=True)
    assert values[15] == pytest.approx(exact, abs=1e-6)
    assert values[25] == pytest.approx(exact, abs=1e-8)


def test_three_level_agq_converges_to_the_exact_likelihood(three_level):
    df = three_level
    X, y, s = _inputs(df, "y ~ (1|patient/vu/reader)")
    beta = [-0.3, 0.5]
    sds = [1.0, 0.8, 0.9]  # patient, vu, reading
    exact = brute_loglik(df, ["patient", "vu", "reading"], beta, sds, 30)
    assert brute_loglik(df, ["patient", "vu", "reading"], beta, sds, 40) == pytest.approx(
        exact, abs=1e-10
    )
    theta = sds[::-1]  # lme4's order: reading, vu, patient
    lap = loglik_multilevel(X, y, None, s, beta, theta, nagq=1)
    k15 = loglik_multilevel(X, y, None, s, beta, theta, nagq=15)
    assert abs(lap - exact) > 0.5
    assert k15 == pytest.approx(exact, abs=1e-6)


def test_two_level_agq_maximum_is_the_exact_maximum(two_level):
    df = two_level
    X, y, s = _inputs(df, "y ~ (1|patient/vu)")
    fit = fit_multilevel(X, y, None, s, nagq=15)
    assert fit.converged, fit.message
    lap = fit_multilevel(X, y, None, s, nagq=1)

    def negll(q):
        return -brute_loglik(df, LEVELS2, q[:2], [abs(q[3]), abs(q[2])], 40)

    start = np.r_[lap.params, lap.theta]
    res = minimize(negll, start, method="BFGS", options={"gtol": 1e-8})
    est = np.r_[res.x[:2], np.abs(res.x[2:])]
    np.testing.assert_allclose(np.r_[fit.params, fit.theta], est, atol=1e-4)
    assert fit.loglik == pytest.approx(-res.fun, abs=1e-6)
    # and Laplace's maximum is not the exact one here
    assert np.max(np.abs(np.r_[lap.params, lap.theta] - est)) > 1e-2


def test_three_level_agq_maximum_is_the_exact_maximum(three_level):
    df = three_level
    X, y, s = _inputs(df, "y ~ (1|patient/vu/reader)")
    fit = fit_multilevel(X, y, None, s, nagq=9)
    assert fit.converged, fit.message
    assert fit.theta.min() > 0.4  # an interior maximum
    cols = ["patient", "vu", "reading"]

    def negll(q):
        return -brute_loglik(df, cols, q[:2], np.abs(q[2:][::-1]), 20)

    # started at the native estimate: BFGS on the exact likelihood moves away from it
    # unless it is (to 1e-4) the exact maximum.
    start = np.r_[fit.params, fit.theta]
    res = minimize(negll, start, method="BFGS", options={"gtol": 1e-7})
    est = np.r_[res.x[:2], np.abs(res.x[2:])]
    np.testing.assert_allclose(np.r_[fit.params, fit.theta], est, atol=1e-4)


def test_single_level_agq_equals_the_random_intercept_engine():
    # one grouping factor: the multilevel quadrature is lme4's nAGQ, as fit_native's
    df = _panel(40, 3, 2, 1, (1.5,), seed=3)
    X, y, s = _inputs(df, "y ~ (1|patient)")
    design = build_design("y ~ x + (1|patient)", df)
    for k in (1, 5, 11):
        ours = loglik_multilevel(X, y, None, s, [-0.2, 0.4], [1.3], nagq=k)
        theirs = loglik_at(design, [-0.2, 0.4], 1.3, k)
        assert ours == pytest.approx(theirs, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fit_native(design, nagq=5)
    fit = fit_multilevel(X, y, None, s, nagq=5)
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), atol=1e-6)
    assert fit.theta[0] == pytest.approx(ref.sigma, abs=1e-6)
    assert fit.loglik == pytest.approx(ref.loglik, abs=1e-8)
    np.testing.assert_allclose(fit.bse, ref.bse.to_numpy(), rtol=1e-4)


def test_quadrature_refuses_structures_it_does_not_cover(two_level):
    df = two_level.assign(x2=lambda d: d["x"] ** 2)
    X, y, s = _inputs(df, "y ~ (1|patient) + (1|reader)")
    with pytest.raises(ModelError, match="crossed"):
        fit_multilevel(X, y, None, s, nagq=5)
    X, y, s = _inputs(df, "y ~ (1 + x + x2|patient)")
    with pytest.raises(ModelError, match="at most 2 random effects"):
        fit_multilevel(X, y, None, s, nagq=5)


# --------------------------------------------------------------------------------------
# Vector random effects in one grouping factor: intercept and slope, product rule
# --------------------------------------------------------------------------------------


def brute_loglik_slope(df: pd.DataFrame, beta, lam: np.ndarray, n_nodes: int) -> float:
    """Exact log-likelihood of ``(1 + x|patient)``: a 2-d product Gauss–Hermite rule."""
    z, w = hermegauss(n_nodes)
    logw = np.log(w / w.sum())
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    U = np.stack([Z1.ravel(), Z2.ravel()])  # (2, N²) standard normal nodes
    LW = (logw[:, None] + logw[None, :]).ravel()
    b = lam @ U  # (2, N²) random intercept and slope
    total = 0.0
    for _, g in df.groupby("patient"):
        x = g["x"].to_numpy()
        eta = (beta[0] + beta[1] * x)[:, None] + b[0][None, :] + x[:, None] * b[1][None, :]
        ll = (g["y"].to_numpy()[:, None] * eta - np.logaddexp(0.0, eta)).sum(axis=0) + LW
        top = ll.max()
        total += np.log(np.exp(ll - top).sum()) + top
    return float(total)


@pytest.fixture(scope="module")
def slope_panel():
    rng = np.random.default_rng(26)
    n_pat, per = 40, 8
    df = pd.DataFrame({"patient": np.repeat(np.arange(n_pat), per)})
    df["x"] = rng.normal(size=len(df))
    b0 = 1.2 * rng.normal(size=n_pat)
    b1 = 0.4 * b0 + 0.8 * rng.normal(size=n_pat)
    eta = -0.2 + 0.6 * df["x"] + b0[df["patient"]] + b1[df["patient"]] * df["x"]
    df["y"] = rng.binomial(1, expit(eta))
    return df


def test_slope_agq_converges_to_the_exact_likelihood(slope_panel):
    df = slope_panel
    X, y, s = _inputs(df, "y ~ (1 + x|patient)")
    beta, theta = [-0.2, 0.6], [1.1, 0.3, 0.7]  # Λ = [[1.1, 0], [0.3, 0.7]]
    lam = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    exact = brute_loglik_slope(df, beta, lam, 80)
    assert brute_loglik_slope(df, beta, lam, 120) == pytest.approx(exact, abs=1e-10)
    lap = loglik_multilevel(X, y, None, s, beta, theta, nagq=1)
    values = {k: loglik_multilevel(X, y, None, s, beta, theta, nagq=k) for k in (3, 7, 15, 25)}
    assert abs(lap - exact) > 0.05
    errors = [abs(values[k] - exact) for k in (3, 7, 15, 25)]
    assert errors == sorted(errors, reverse=True)
    assert values[15] == pytest.approx(exact, abs=1e-6)


def test_slope_agq_maximum_is_the_exact_maximum(slope_panel):
    df = slope_panel
    X, y, s = _inputs(df, "y ~ (1 + x|patient)")
    fit = fit_multilevel(X, y, None, s, nagq=21)
    assert fit.converged, fit.message
    assert fit.theta[0] > 0.3 and fit.theta[2] > 0.1  # an interior maximum

    def negll(q):
        lam = np.array([[q[2], 0.0], [q[3], q[4]]])
        return -brute_loglik_slope(df, q[:2], lam, 60)

    start = np.r_[fit.params, fit.theta]
    res = minimize(negll, start, method="BFGS", options={"gtol": 1e-7})
    # compare covariances (Λ is unique only up to the signs of its columns)
    lam = np.array([[res.x[2], 0.0], [res.x[3], res.x[4]]])
    cov = lam @ lam.T
    vc = fit.varcorr_frame()
    np.testing.assert_allclose(fit.params, res.x[:2], atol=1e-4)
    np.testing.assert_allclose(vc["sdcor"].iloc[:2], np.sqrt(np.diag(cov)), atol=1e-4)
    corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert vc["sdcor"].iloc[2] == pytest.approx(corr, abs=1e-3)
    assert fit.loglik == pytest.approx(-res.fun, abs=1e-6)


def test_guimmun_agq_converges_to_the_exact_likelihood():
    # mlmRev's guImmun: 2159 children of 1595 mothers in 161 communities, about 1.35
    # children per mother and a mothers' SD near 2.3 — where Laplace fails worst. The
    # exact value at fixed parameters by a 60-point product rule at both levels (the
    # same to 1e-11 with 100 or 140 points), at parameters near the ML estimates.
    load, formula = CASES["guimmun"]
    df = load()
    design, s = multilevel_design(formula, df)
    beta = np.array(
        [
            -1.2362,
            1.7174,
            -0.2168,
            -0.2615,
            0.1787,
            0.4309,
            -0.1712,
            -0.0821,
            0.4323,
            0.4194,
            0.5389,
            0.5052,
            -0.0072,
            0.3893,
            -0.8880,
            -1.1512,
        ][: design.X.shape[1]]
    )
    theta = [2.3171, 1.0249]  # mom:comm, comm
    y = design.y
    eta0 = design.X @ beta
    mom = pd.factorize(df["mom"])[0]
    comm = pd.factorize(df["comm"])[0]
    z, w = hermegauss(60)
    logw = np.log(w / w.sum())
    eta = eta0[:, None, None] + theta[1] * z[None, :, None] + theta[0] * z[None, None, :]
    ll = y[:, None, None] * eta - np.logaddexp(0.0, eta)
    per_mom = np.zeros((mom.max() + 1, 60, 60))
    np.add.at(per_mom, mom, ll)
    a = per_mom + logw
    top = a.max(axis=-1, keepdims=True)
    i_mom = np.log(np.exp(a - top).sum(axis=-1)) + top[..., 0]
    mom_comm = np.zeros(mom.max() + 1, dtype=np.int64)
    mom_comm[mom] = comm
    per_comm = np.zeros((comm.max() + 1, 60))
    np.add.at(per_comm, mom_comm, i_mom)
    a = per_comm + logw
    top = a.max(axis=-1, keepdims=True)
    exact = float((np.log(np.exp(a - top).sum(axis=-1)) + top[..., 0]).sum())

    values = {
        k: loglik_multilevel(design.X, y, design.trials, s, beta, theta, nagq=k)
        for k in (1, 7, 15, 25)
    }
    errors = [abs(values[k] - exact) for k in (1, 7, 15, 25)]
    assert errors[0] > 5.0  # Laplace
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-4  # 25 points per level: 2e-5 (slow convergence on these data)


@pytest.mark.parametrize(
    ("formula", "levels", "psi"),
    [
        ("y ~ (1|patient)", 1, [-0.4, 0.5, 1.3]),
        ("y ~ (1|patient/vu)", 2, [-0.4, 0.5, 1.0, 1.3]),
        ("y ~ (1|patient/vu/reader)", 3, [-0.1, 0.3, 0.5, 0.5, 1.1]),
    ],
)
@pytest.mark.parametrize("nagq", [1, 3, 7])
def test_agq_gradient_is_exact(formula, levels, psi, nagq):
    from syndesmo.engines.native.multilevel.agq import agq_value, agq_value_grad
    from syndesmo.engines.native.multilevel.fit import prepare

    df = _panel(12, 3, 2, 2, (1.0, 1.0, 1.0), seed=3)
    X, y, s = _inputs(df, formula)
    data = prepare(X, y, np.ones(len(y)), s)
    psi = np.array(psi)
    value, grad = agq_value_grad(data, psi[None], nagq)
    assert value[0] == pytest.approx(agq_value(data, psi[None], nagq)[0], abs=1e-10)
    h = 1e-6
    fd = [
        (
            agq_value(data, (psi + h * e)[None], nagq)[0]
            - agq_value(data, (psi - h * e)[None], nagq)[0]
        )
        / (2 * h)
        for e in np.eye(psi.size)
    ]
    np.testing.assert_allclose(grad[0], fd, atol=5e-8)
