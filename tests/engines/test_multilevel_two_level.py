"""(1|patient/vu) fitted to many studies at once equals fit_multilevel study by study.

The two-level path (``two_level`` and its compiled kernel) is a second implementation
of the Laplace likelihood for two nested random intercepts; the reference is the
general tree engine (``laplace.evaluate``, ``fit_multilevel``), itself checked against
lme4 in test_multilevel_vs_references.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from multilevel_cases import simulate_vu_readers
from scipy.special import expit

from syndesmo.engines.native.multilevel import two_level
from syndesmo.engines.native.multilevel.fit import (
    fit_multilevel,
    glm_start,
    glm_start_many,
    prepare,
)
from syndesmo.engines.native.multilevel.laplace import MODE_TOL, evaluate
from syndesmo.engines.native.multilevel.many import fit_many_structured
from syndesmo.engines.native.multilevel.two_level_kernel import evaluate_blocks
from syndesmo.fitting.random_effects import build_structure, parse_bars

BARS = parse_bars("y ~ (1|patient/vu)")


def _studies(seeds, sd_patient: float, n: int = 30, n_vu: int = 6):
    """Studies on one design of patients × VUs × 2 readings (MRI of the VU shared by
    its readings, a reader effect); each seed draws its own MRI and responses."""
    patient = np.repeat(np.arange(n), n_vu * 2)
    vu = np.tile(np.repeat(np.arange(n_vu), 2), n)
    reader = np.tile([0.0, 1.0], n * n_vu)
    X, Y = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        mri = np.repeat(rng.random(n * n_vu) < 0.3, 2).astype(float)
        b_vu = np.repeat(1.5 * rng.normal(size=n * n_vu), 2)
        b_pat = sd_patient * rng.normal(size=n)[patient]
        eta = -1.0 + 0.7 * mri + 0.3 * reader + b_vu + b_pat
        Y.append((rng.random(patient.size) < expit(eta)).astype(float))
        X.append(np.column_stack([np.ones_like(mri), mri, reader]))
    return np.stack(X), np.stack(Y), pd.DataFrame({"patient": patient, "vu": vu})


@pytest.fixture(scope="module")
def studies():
    """Eight studies with a patient SD of 0 (about half end at the boundary) and four
    with 0.8; study 9 leaves out patient 0 and one reading of every third VU; study 10
    has no events."""
    X0, Y0, groups = _studies(range(8), 0.0)
    X1, Y1, _ = _studies(range(100, 104), 0.8)
    X, Y = np.concatenate([X0, X1]), np.concatenate([Y0, Y1])
    mask = np.ones_like(Y, dtype=bool)
    mask[9, groups["patient"].to_numpy() == 0] = False
    mask[9, 1::6] = False
    Y[10] = 0.0
    return X, Y, mask, groups


def test_value_and_gradient_equal_the_general_laplace(studies):
    """The kernel's Laplace log-likelihood and exact gradient equal laplace.evaluate's
    on every study with rows (value 1e-9, gradient 1e-8), at parameters away from the
    optimum, with cold modes; and the modes' derivatives that predict warm starts."""
    X, Y, mask, groups = studies
    L = two_level.build_layout(
        X, Y, np.ones_like(Y), mask, groups["patient"].to_numpy(), groups["vu"].to_numpy()
    )
    # a patient's VUs with the same readings are stored once, counted by w, and
    # patients with the same stored VUs once, counted by wo
    assert L.w.max() > 1 and (L.w > 1).mean() > 0.1
    assert L.wo.max() > 1
    for r in range(len(Y)):
        kept = groups[mask[r]].drop_duplicates()
        assert (L.w[r] * L.wo[r][:, None]).sum() == len(kept)
        assert L.wo[r].sum() == kept["patient"].nunique()
        assert L.row_counts()[r].sum() == mask[r].sum()
    rng = np.random.default_rng(5)
    R = len(Y)
    psi = np.column_stack(
        [rng.normal(-1, 0.5, R), rng.normal(0, 0.5, (R, 2)), rng.uniform(0.2, 3, (R, 2))]
    )
    K, J = L.y.shape[1:3]
    value, grad, ok = np.empty(R), np.empty((R, 5)), np.empty(R, dtype=bool)

    def cold():  # the kernel's warm-start state before any evaluation
        nan = np.full((R, 5), np.nan)
        return [
            np.zeros((R, K, J)),
            np.zeros((R, K)),
            np.zeros((R, K, J, 5)),
            np.zeros((R, K, 5)),
            nan,
        ]

    def run(at, state, keep):
        evaluate_blocks(
            L.X,
            L.y,
            L.m,
            L.w,
            L.wo,
            np.arange(R),
            at,
            *state,
            MODE_TOL,
            True,
            keep,
            value,
            grad,
            ok,
        )

    state = cold()
    run(psi, state, keep=True)
    assert ok.all()
    for r in range(R):
        rows = np.flatnonzero(mask[r])
        data = prepare(
            X[r, rows], Y[r, rows], np.ones(rows.size), build_structure(BARS, groups.iloc[rows])
        )
        v_ref, g_ref, _ = evaluate(data, psi[r][None])
        assert value[r] == pytest.approx(v_ref[0], abs=1e-9)
        np.testing.assert_allclose(grad[r], g_ref[0], atol=1e-8)
    # the modes' derivatives over ψ (the warm starts' predictor) against central
    # differences of the modes themselves
    h = 1e-5
    for q in range(5):
        moved = []
        for sign in (1.0, -1.0):
            at = psi.copy()
            at[:, q] += sign * h
            found = [a.copy() for a in state]
            run(at, found, keep=True)
            moved.append(found)
        np.testing.assert_allclose(
            (moved[0][0] - moved[1][0]) / (2 * h), state[2][..., q], atol=1e-5
        )
        np.testing.assert_allclose(
            (moved[0][1] - moved[1][1]) / (2 * h), state[3][..., q], atol=1e-5
        )
    # a warm start ends at the same value as a cold one
    run(psi, cold(), keep=False)
    cold_value = value.copy()
    run(psi, moved[0], keep=False)
    np.testing.assert_allclose(value, cold_value, atol=1e-9)


def test_patients_with_the_same_vus_are_counted_once_in_any_order():
    """merge_outer_nodes: a patient whose VUs are another's in another order is
    counted at that one; one differing in a single reading, or with one VU more, is
    not; a patient without rows counts 0."""
    n_vu = 4
    readings = np.array([[0, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    mri = np.array([0, 1, 1, 0], dtype=float)
    order = [0, 3, 1, 2]
    patients = [
        (readings, mri),
        (readings[order], mri[order]),  # the same VUs, another order
        (np.where(np.arange(n_vu)[:, None] == 2, [[1, 1]], readings), mri),  # one reading
        (readings, mri),  # the same again
    ]
    rows_Y, rows_X, patient, vu = [], [], [], []
    for k, (y, x) in enumerate(patients):
        for j in range(n_vu):
            for t in range(2):
                rows_Y.append(y[j, t])
                rows_X.append([1.0, x[j], float(t)])
                patient.append(k)
                vu.append(j)
    Y = np.array(rows_Y)[None].repeat(2, axis=0)
    X = np.array(rows_X)[None].repeat(2, axis=0)
    mask = np.ones_like(Y, dtype=bool)
    patient, vu = np.array(patient), np.array(vu)
    mask[1, patient == 3] = False  # study 1: patient 3 has no rows
    mask[1, (patient == 1) & (vu == 0)] = False  # and patient 1 one VU fewer
    L = two_level.build_layout(X, Y, np.ones_like(Y), mask, patient, vu)
    np.testing.assert_array_equal(L.wo[0], [3, 0, 1, 0])
    np.testing.assert_array_equal(L.wo[1], [1, 1, 1, 0])
    np.testing.assert_array_equal(L.row_counts().sum(axis=(1, 2, 3)), mask.sum(axis=1))


def test_the_shared_start_equals_glm_start_study_by_study(studies):
    """glm_start_many on the chunk's distinct rows gives each study's glm_start on its
    own rows (1e-10), the study that leaves out rows included."""
    X, Y, mask, groups = studies
    L = two_level.build_layout(
        X, Y, np.ones_like(Y), mask, groups["patient"].to_numpy(), groups["vu"].to_numpy()
    )
    rows_X, rows_y, rows_m = two_level._row_patterns(L)
    assert len(rows_X) == 4  # intercept, MRI, reader
    np.testing.assert_array_equal(rows_m.sum(axis=1), mask.sum(axis=1))
    np.testing.assert_array_equal(rows_y.sum(axis=1), (Y * mask).sum(axis=1))
    studies_with_both = [r for r in range(len(Y)) if 0 < rows_y[r].sum() < rows_m[r].sum()]
    many = glm_start_many(rows_X, rows_y[studies_with_both], rows_m[studies_with_both])
    for i, r in enumerate(studies_with_both):
        rows = mask[r]
        one = glm_start(X[r, rows], Y[r, rows], np.ones(rows.sum()))
        np.testing.assert_allclose(many[i], one, atol=1e-10)


def test_each_study_equals_fit_multilevel(studies):
    """fit_many_structured on the two-level path gives each study's fit_multilevel
    result: estimates and SDs 1e-8, log-likelihood 1e-9, SEs 1e-7 relative, the same
    convergence and singular flags. The boundary (patient SD 0) is handled on the
    path, not handed back; the study without events is refused as fit_multilevel
    refuses it."""
    X, Y, mask, groups = studies
    fast = two_level.fit_two_level_many(
        X,
        Y,
        np.ones_like(Y),
        mask,
        groups["patient"].to_numpy(),
        groups["vu"].to_numpy(),
        1e-8,
    )
    assert fast["done"].tolist() == [True] * 10 + [False, True]
    many = fit_many_structured(X, Y, groups, "(1|patient/vu)", mask=mask)
    boundary = 0
    for r in range(len(Y)):
        rows = np.flatnonzero(mask[r])
        if r == 10:
            assert not many.converged[r] and "events" in many.messages[r]
            continue
        ref = fit_multilevel(
            X[r, rows], Y[r, rows], None, build_structure(BARS, groups.iloc[rows]), tol=1e-8
        )
        np.testing.assert_allclose(many.params[r], ref.params, atol=1e-8)
        np.testing.assert_allclose(many.sds[r], ref.theta, atol=1e-8)
        np.testing.assert_allclose(many.bse[r], ref.bse, rtol=1e-7)
        assert many.loglik[r] == pytest.approx(ref.loglik, abs=1e-9)
        assert many.converged[r] == ref.converged and many.singular[r] == ref.singular
        assert many.n_groups[r] == min(ref.n_groups.values())
        boundary += ref.singular
    assert boundary >= 3
    assert many.sd_names == ["vu:patient (Intercept)", "patient (Intercept)"]


def test_the_reader_design_of_the_shared_cases():
    """The readers' design of multilevel_cases (300 patients × 12 VUs × 2 readers,
    both SDs away from 0): two studies, the second without its first 20 patients."""
    base = simulate_vu_readers(n_patients=300, seed=4)
    other = simulate_vu_readers(n_patients=300, seed=5)
    X = np.column_stack([np.ones(len(base)), base[["mri", "arm", "reader"]].to_numpy(float)])
    Y = np.stack([base["y"], other["y"]]).astype(float)
    mask = np.ones_like(Y, dtype=bool)
    mask[1, base["patient"].to_numpy() < 20] = False
    many = fit_many_structured(X, Y, base[["patient", "vu"]], "(1|patient/vu)", mask=mask)
    for r in range(2):
        rows = np.flatnonzero(mask[r])
        ref = fit_multilevel(
            X[rows], Y[r, rows], None, build_structure(BARS, base.iloc[rows]), tol=1e-8
        )
        np.testing.assert_allclose(many.params[r], ref.params, atol=1e-8)
        np.testing.assert_allclose(many.bse[r], ref.bse, rtol=1e-7)
        assert many.converged[r] and ref.converged


def test_a_design_that_would_be_mostly_padding_is_fitted_one_study_at_a_time():
    """One VU with 120 readings among VUs with two: the padded layout would hold more
    than MAX_PADDING slots per row, so every study goes to fit_multilevel (same
    answer, none lost)."""
    X, Y, groups = _studies([1, 2], 0.8)
    extra = 120
    rng = np.random.default_rng(3)
    groups = pd.concat(
        [groups, pd.DataFrame({"patient": [0] * extra, "vu": [0] * extra})], ignore_index=True
    )
    X = np.concatenate([X, np.broadcast_to([1.0, 0.0, 1.0], (2, extra, 3))], axis=1)
    Y = np.concatenate([Y, (rng.random((2, extra)) < 0.4).astype(float)], axis=1)
    mask = np.ones_like(Y, dtype=bool)
    fast = two_level.fit_two_level_many(
        X, Y, np.ones_like(Y), mask, groups["patient"].to_numpy(), groups["vu"].to_numpy(), 1e-8
    )
    assert not fast["done"].any()
    many = fit_many_structured(X, Y, groups, "(1|patient/vu)", mask=mask)
    for r in range(2):
        ref = fit_multilevel(X[r], Y[r], None, build_structure(BARS, groups), tol=1e-8)
        np.testing.assert_allclose(many.params[r], ref.params, atol=1e-8)


def test_load_kernel_compiles_what_the_fits_call():
    """load_kernel (run before workers fork) leaves every compiled function of the
    kernel with the signature a power fit then calls: a fit afterwards adds none."""
    code = """
import numpy as np
from syndesmo.engines.native.multilevel import two_level, two_level_kernel as k
functions = (k.evaluate_blocks, k.merge_inner_nodes, k.merge_outer_nodes)
two_level.load_kernel()
before = [list(f.signatures) for f in functions]
assert all(len(s) == 1 for s in before), before
import syndesmo as sy
sy.power(sy.CohortSpec(n_readers=2, n_patients=40), n_sims=3, analysis="readers",
         seed=1, progress=False, workers=1)
after = [list(f.signatures) for f in functions]
assert after == before, (before, after)
"""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
