"""The multilevel Laplace kernel against a dense computation, for every structure.

The tree elimination (segment sums, no rows × groups matrix) must give the same
conditional modes, log-determinant and Laplace log-likelihood as the textbook dense
computation (modes by a generic optimiser, ``log det(I + Aᵀ W A)`` by numpy), and its
exact gradient must equal central differences of the value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from syndesmo.engines.native.multilevel.fit import prepare
from syndesmo.engines.native.multilevel.laplace import evaluate
from syndesmo.engines.native.multilevel.tree import build_tree, factorize, solve
from syndesmo.fitting.random_effects import build_structure, parse_bars

STRUCTURES = [
    ("y ~ (1|patient)", [0.8]),
    ("y ~ (1|patient/vu)", [0.7, 1.1]),
    ("y ~ (1|patient/vu/reader)", [0.5, 0.7, 1.1]),
    ("y ~ (1 + x|patient)", [0.9, 0.3, 0.6]),
    ("y ~ (1 + x||patient)", [0.9, 0.6]),
    ("y ~ (1|patient) + (1|reader)", [0.9, 0.6]),
    ("y ~ (1|patient) + (1|vu)", [0.9, 0.6]),
    ("y ~ (1 + x|patient) + (1|patient:vu)", [0.5, 0.9, 0.3, 0.6]),
    ("y ~ (1|patient/vu) + (1|reader)", [0.5, 0.9, 0.6]),
    ("y ~ (1 + x|reader) + (1|patient)", [0.5, 0.9, -0.3, 0.6]),
]


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(3)
    P, V, R = 7, 4, 2
    n = P * V * R
    df = pd.DataFrame(
        {
            "patient": np.repeat(np.arange(P), V * R),
            "vu": np.tile(np.repeat(np.arange(V), R), P),
            "reader": np.tile(np.arange(R), P * V),
            "x": rng.normal(size=n),
        }
    )
    b = rng.normal(size=P)[df["patient"]]
    df["y"] = rng.binomial(1, expit(-0.3 + 0.5 * df["x"] + b))
    return df


def _dense_laplace(df, structure, psi):
    n = len(df)
    X = np.column_stack([np.ones(n), df["x"]])
    beta, theta = psi[:2], psi[2:]
    blocks = []
    for t, lam in zip(structure.terms, structure.lambdas(theta), strict=True):
        A = np.zeros((n, t.n_levels * t.q))
        zl = t.Z @ lam
        for c in range(t.q):
            A[np.arange(n), t.codes * t.q + c] = zl[:, c]
        blocks.append(A)
    A = np.hstack(blocks)
    eta0 = X @ beta
    y = df["y"].to_numpy(float)

    def negh(u):
        eta = eta0 + A @ u
        return -(np.sum(y * eta - np.logaddexp(0, eta)) - 0.5 * u @ u), -(
            A.T @ (y - expit(eta)) - u
        )

    res = minimize(negh, np.zeros(A.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-12})
    mu = expit(eta0 + A @ res.x)
    H = np.eye(A.shape[1]) + A.T @ (A * (mu * (1 - mu))[:, None])
    return -res.fun - 0.5 * np.linalg.slogdet(H)[1], H


@pytest.mark.parametrize(("formula", "theta"), STRUCTURES)
def test_tree_laplace_equals_dense_and_gradient_is_exact(panel, formula, theta):
    s = build_structure(parse_bars(formula), panel)
    n = len(panel)
    X = np.column_stack([np.ones(n), panel["x"]])
    data = prepare(X, panel["y"].to_numpy(float), np.ones(n), s, merge=False)
    psi = np.r_[-0.2, 0.4, theta]
    value, grad, st = evaluate(data, psi[None])
    assert st.converged.all()
    dense, H = _dense_laplace(panel, s, psi)
    assert value[0] == pytest.approx(dense, abs=1e-7)
    assert st.F.logdet[0] == pytest.approx(np.linalg.slogdet(H)[1], abs=1e-8)
    h = 1e-6
    fd = []
    for j in range(psi.size):
        e = np.zeros(psi.size)
        e[j] = h
        up = evaluate(data, (psi + e)[None], gradient=False)[0][0]
        down = evaluate(data, (psi - e)[None], gradient=False)[0][0]
        fd.append((up - down) / (2 * h))
    np.testing.assert_allclose(grad[0], fd, atol=1e-7)


def test_tree_solve_and_batch(panel):
    # H x = r by the tree equals the dense solve; a batch of parameter vectors gives
    # the same values as one at a time.
    s = build_structure(parse_bars("y ~ (1 + x|patient) + (1|patient:vu)"), panel)
    tree = build_tree(s)
    n = len(panel)
    X = np.column_stack([np.ones(n), panel["x"]])
    data = prepare(X, panel["y"].to_numpy(float), np.ones(n), s, merge=False)
    psis = np.array([[-0.2, 0.4, 0.5, 0.9, 0.3, 0.6], [0.1, -0.3, 1.2, 0.4, -0.2, 0.3]])
    vals, grads, st = evaluate(data, psis)
    for b in range(2):
        v1, g1, _ = evaluate(data, psis[b : b + 1])
        assert vals[b] == pytest.approx(v1[0], abs=1e-10)
        np.testing.assert_allclose(grads[b], g1[0], atol=1e-9)
    rng = np.random.default_rng(0)
    a = st.a
    v = st.v
    F = factorize(tree, a, v)
    r = [rng.normal(size=(L.n_nodes, 2, L.d)) for L in tree.levels]
    x = solve(tree, F, r)
    # dense H for batch element 0, in the tree's level order
    cols = []
    for lev, L in enumerate(tree.levels):
        A = np.zeros((n, L.n_nodes * L.d))
        for c in range(L.d):
            A[np.arange(n), L.node * L.d + c] = a[lev][:, 0, c]
        cols.append(A)
    A = np.hstack(cols)
    H = np.eye(A.shape[1]) + A.T @ (A * v[:, 0, None])
    rhs = np.concatenate([r[lev][:, 0, :].reshape(-1) for lev in range(tree.depth)])
    got = np.concatenate([x[lev][:, 0, :].reshape(-1) for lev in range(tree.depth)])
    np.testing.assert_allclose(got, np.linalg.solve(H, rhs), atol=1e-10)


def test_merging_identical_rows_keeps_the_likelihood(panel):
    # two readers with the same covariates in a VU merge into one binomial row
    df = panel.copy()
    df["x"] = np.round(df["x"].groupby([df["patient"], df["vu"]]).transform("mean"), 6)
    s = build_structure(parse_bars("y ~ (1|patient/vu)"), df)
    n = len(df)
    X = np.column_stack([np.ones(n), df["x"]])
    y = df["y"].to_numpy(float)
    merged = prepare(X, y, np.ones(n), s, merge=True)
    plain = prepare(X, y, np.ones(n), s, merge=False)
    assert merged.X.shape[0] == n // 2
    psi = np.array([[-0.2, 0.4, 0.7, 1.1]])
    v1, g1, _ = evaluate(merged, psi)
    v2, g2, _ = evaluate(plain, psi)
    assert v1[0] == pytest.approx(v2[0], abs=1e-10)
    np.testing.assert_allclose(g1, g2, atol=1e-9)
