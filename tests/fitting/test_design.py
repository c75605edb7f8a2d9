"""build_design: formula → model matrices, names, groups, ledger.

Expected matrices are written out by hand from the data (treatment coding with the
first level as reference, products for interactions), independent of formulae.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.errors import ModelError
from syndesmo.fitting.design import build_design, fixed_formula
from syndesmo.ledger import Ledger


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "y": [0, 1, 0, 1, 1, 0, 1, 0],
            "mri": [0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 3.0],
            "arm": ["placebo", "infliximab"] * 4,
            "region": ["cervical", "cervical", "lumbar", "lumbar"] * 2,
            "patient": ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"],
            "n": [2, 3, 1, 4, 2, 2, 1, 5],
        }
    )


def test_categorical_treatment_coding_first_sorted_level_is_reference(frame):
    d = build_design("y ~ mri + arm + (1|patient)", frame)
    assert d.names == ["Intercept", "mri", "arm[T.placebo]"]
    expected = np.column_stack([np.ones(8), frame.mri, (frame.arm == "placebo").astype(float)])
    np.testing.assert_array_equal(d.X, expected)
    np.testing.assert_array_equal(d.y, frame.y.to_numpy(float))
    np.testing.assert_array_equal(d.trials, np.ones(8))
    assert d.response == "y"
    assert d.group == "patient"
    assert d.n_groups == 4
    np.testing.assert_array_equal(d.groups, [0, 0, 1, 1, 2, 2, 3, 3])
    assert list(d.group_labels) == ["p1", "p2", "p3", "p4"]
    assert d.fixed_formula == "y ~ mri + arm"
    assert len(d.ledger) == 0


def test_categorical_dtype_keeps_its_own_level_order_and_drops_unused(frame):
    frame["arm"] = pd.Categorical(
        frame.arm, categories=["placebo", "infliximab", "unused"], ordered=False
    )
    d = build_design("y ~ arm + (1|patient)", frame)
    assert d.names == ["Intercept", "arm[T.infliximab]"]
    np.testing.assert_array_equal(d.X[:, 1], (frame.arm == "infliximab").astype(float))


def test_interactions_star_and_colon(frame):
    d = build_design("y ~ mri*region + (1|patient)", frame)
    lumbar = (frame.region == "lumbar").astype(float).to_numpy()
    assert d.names == ["Intercept", "mri", "region[T.lumbar]", "mri:region[T.lumbar]"]
    np.testing.assert_array_equal(
        d.X, np.column_stack([np.ones(8), frame.mri, lumbar, frame.mri * lumbar])
    )
    d2 = build_design("y ~ mri + mri:arm + (1|patient)", frame)
    assert d2.names == ["Intercept", "mri", "mri:arm[T.placebo]"]
    np.testing.assert_array_equal(d2.X[:, 2], frame.mri * (frame.arm == "placebo"))


def test_full_rank_coding_without_intercept(frame):
    d = build_design("y ~ 0 + arm + (1|patient)", frame)
    assert d.names == ["arm[infliximab]", "arm[placebo]"]
    np.testing.assert_array_equal(d.X.sum(axis=1), np.ones(8))


def test_boolean_column_is_numeric_zero_one(frame):
    frame["active"] = frame.mri > 0
    d = build_design("y ~ active + (1|patient)", frame)
    assert d.names == ["Intercept", "active"]
    np.testing.assert_array_equal(d.X[:, 1], (frame.mri > 0).astype(float))


def test_missing_column_lists_available(frame):
    with pytest.raises(ModelError, match=r"'crp'.*available columns: y, mri, arm"):
        build_design("y ~ mri + crp + (1|patient)", frame)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ([0, 1, 2, 1, 0, 0, 1, 0], r"outcome 'y' must be 0/1; row 2 has 2"),
        ([0, 1, 0.5, 1, 0, 0, 1, 0], r"row 2 has 0.5"),
        ([-1, 1, 0, 1, 0, 0, 1, 0], r"row 0 has -1"),
        (["no", "yes"] * 4, r"outcome 'y' must be 0/1"),
    ],
)
def test_bad_response(frame, values, pattern):
    frame["y"] = values
    with pytest.raises(ModelError, match=pattern):
        build_design("y ~ mri + (1|patient)", frame)


def test_outcome_without_events(frame):
    frame["y"] = 0
    with pytest.raises(ModelError, match=r"outcome 'y' has no events among 8 rows"):
        build_design("y ~ mri + (1|patient)", frame)
    frame["y"] = 1
    with pytest.raises(ModelError, match=r"outcome 'y' has no non-events"):
        build_design("y ~ mri + (1|patient)", frame)


@pytest.mark.parametrize(
    ("formula", "kinds"),
    [
        ("y ~ mri + (mri|patient)", ("random slopes",)),
        ("y ~ mri + (0 + mri|patient)", ("random slopes",)),
        # each patient of this frame has one region: patients are nested in regions
        ("y ~ mri + (1|patient) + (1|region)", ("nested intercepts",)),
    ],
)
def test_any_bars_give_a_structure_and_no_single_group(frame, formula, kinds):
    d = build_design(formula, frame)
    assert d.groups is None and d.group is None and d.has_random
    assert d.random is not None and d.random.kinds == kinds
    assert d.random.n_rows == d.n_obs


def test_a_single_intercept_keeps_its_grouping_codes(frame):
    d = build_design("y ~ mri + (1|patient)", frame)
    assert d.random is None and d.group == "patient" and d.has_random


@pytest.mark.parametrize("engine", ["gee", "clogit", "bayes"])
def test_engines_of_one_bar_refuse_other_structures_naming_those_that_fit_them(frame, engine):
    import syndesmo as sy

    with pytest.raises(ModelError, match=r"has random slopes; engines that fit them: native, lme4"):
        sy.fit("y ~ mri + (mri|patient)", frame, engine=engine)


def test_missing_values_are_counted_in_the_ledger(frame):
    frame.loc[[1, 2], "mri"] = np.nan
    frame.loc[[2, 5], "arm"] = None
    d = build_design("y ~ mri + arm + (1|patient)", frame)
    assert d.n_obs == 5
    np.testing.assert_array_equal(d.rows, [0, 3, 4, 6, 7])
    entries = d.ledger.to_frame()
    assert len(entries) == 1
    row = entries.iloc[0]
    assert row.n_rows == 3  # rows 1, 2, 5 (row 2 misses both)
    assert row.n_patients == 3  # p1 (row 1), p2 (row 2), p3 (row 5)
    assert "mri (2 rows)" in row.reason and "arm (2 rows)" in row.reason


def test_ledger_given_is_prepended_and_copied(frame):
    prior = Ledger()
    prior.add("eligibility", "syndesmophyte at baseline", 7, 3)
    frame.loc[0, "y"] = np.nan
    for d in (
        build_design("y ~ mri + (1|patient)", frame, ledger=prior),
        build_design("y ~ mri + (1|patient)", AnalysisFrame(frame, prior)),
    ):
        assert [e["step"] for e in d.ledger] == ["eligibility", "design"]
        assert d.ledger.n_excluded == 8
        assert "y (1 row)" in list(d.ledger)[1]["reason"]
    assert len(prior) == 1  # the frame's own ledger is not changed
    with pytest.raises(ModelError, match="brings its own ledger"):
        build_design("y ~ mri + (1|patient)", AnalysisFrame(frame, prior), ledger=prior)
    frame.attrs["ledger"] = prior  # attrs are not read: pandas drops them on most operations
    assert len(build_design("y ~ mri + (1|patient)", frame).ledger) == 1


def test_trials_as_column_array_and_cbind(frame):
    frame["y"] = [0, 2, 1, 3, 0, 1, 1, 4]
    by_name = build_design("y ~ mri + (1|patient)", frame, trials="n")
    np.testing.assert_array_equal(by_name.trials, frame.n.to_numpy(float))
    np.testing.assert_array_equal(by_name.y, frame.y.to_numpy(float))
    by_array = build_design("y ~ mri + (1|patient)", frame, trials=frame.n.to_numpy())
    np.testing.assert_array_equal(by_array.trials, by_name.trials)
    frame["fail"] = frame.n - frame.y
    by_cbind = build_design("cbind(y, fail) ~ mri + (1|patient)", frame)
    np.testing.assert_array_equal(by_cbind.trials, by_name.trials)
    np.testing.assert_array_equal(by_cbind.X, by_name.X)
    assert by_cbind.response == "y"
    assert by_cbind.fixed_formula == "cbind(y, fail) ~ mri"


def test_trials_errors(frame):
    frame["y"] = [0, 4, 1, 3, 0, 1, 1, 4]  # row 1: 4 successes of 3 trials
    with pytest.raises(ModelError, match=r"row 1 has 4 \(trials 3\)"):
        build_design("y ~ mri + (1|patient)", frame, trials="n")
    with pytest.raises(ModelError, match="either as cbind"):
        build_design("cbind(y, n) ~ mri + (1|patient)", frame, trials="n")
    with pytest.raises(ModelError, match=r"cbind.*two columns.*trials="):
        build_design("cbind(y, n - y) ~ mri + (1|patient)", frame)
    with pytest.raises(ModelError, match="trials has 3 values but data has 8 rows"):
        build_design("y ~ mri + (1|patient)", frame, trials=np.array([1, 2, 3]))


def test_missing_trials_counted(frame):
    frame["n"] = frame.n.astype(float)
    frame.loc[3, "n"] = np.nan
    d = build_design("y ~ mri + (1|patient)", frame, trials="n")
    assert d.n_obs == 7
    assert "n (1 row)" in next(iter(d.ledger))["reason"]


def test_fixed_formula_strips_bars():
    assert fixed_formula("y ~ (1|patient) + mri + arm") == "y ~ mri + arm"
    assert fixed_formula("y ~ mri + (1 | patient) + arm") == "y ~ mri + arm"
    assert fixed_formula("y ~ (1|patient)") == "y ~ 1"


def test_unparseable_formula(frame):
    with pytest.raises(ModelError, match="cannot parse formula"):
        build_design("y ~ mri + + ) (1|patient)", frame)
