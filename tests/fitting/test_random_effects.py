"""Random-effect structures from lme4 bar syntax: parsing, codes, nesting, θ layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from syndesmo.errors import ModelError
from syndesmo.fitting.design import multilevel_design
from syndesmo.fitting.random_effects import BarTerm, build_structure, parse_bars


def _panel(n_patients: int = 5, n_vu: int = 4, n_readers: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_patients * n_vu * n_readers
    return pd.DataFrame(
        {
            "patient": np.repeat([f"p{i}" for i in range(n_patients)], n_vu * n_readers),
            "vu": np.tile(np.repeat(np.arange(n_vu), n_readers), n_patients),  # 0..3 reused
            "reader": np.tile(["A", "B"][:n_readers], n_patients * n_vu),
            "x": rng.normal(size=n),
            "arm": rng.choice(["placebo", "ifx"], size=n),
            "y": rng.integers(0, 2, n),
        }
    )


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("y ~ x + (1|patient)", [BarTerm("1", ("patient",), "patient")]),
        (
            "y ~ x + (1|patient/vu)",
            [BarTerm("1", ("patient",), "patient"), BarTerm("1", ("patient", "vu"), "vu:patient")],
        ),
        (
            "y ~ (1|patient) + (1|patient:vu)",
            [BarTerm("1", ("patient",), "patient"), BarTerm("1", ("patient", "vu"), "patient:vu")],
        ),
        (
            "y ~ (1 | patient/vu/reader)",
            [
                BarTerm("1", ("patient",), "patient"),
                BarTerm("1", ("patient", "vu"), "vu:patient"),
                BarTerm("1", ("patient", "vu", "reader"), "reader:vu:patient"),
            ],
        ),
        ("y ~ (1 + x|patient)", [BarTerm("1 + x", ("patient",), "patient")]),
        (
            "y ~ (1|patient) + (0 + x|patient)",
            [BarTerm("1", ("patient",), "patient"), BarTerm("0 + x", ("patient",), "patient")],
        ),
        (
            "y ~ (1 + x||patient)",
            [BarTerm("1", ("patient",), "patient"), BarTerm("0 + x", ("patient",), "patient")],
        ),
        ("y ~ (0 + x||patient)", [BarTerm("0 + x", ("patient",), "patient")]),
        (
            "y ~ mri + (1|patient) + (1|reader)",
            [BarTerm("1", ("patient",), "patient"), BarTerm("1", ("reader",), "reader")],
        ),
    ],
)
def test_parse_bars_expands_as_lme4(formula, expected):
    assert parse_bars(formula) == expected


@pytest.mark.parametrize(
    "formula",
    ["y ~ (1|)", "y ~ (|g)", "y ~ (1|a+b)", "y ~ (1|a/)", "y ~ (1|g", "y ~ (x - z|g)"],
)
def test_parse_bars_rejects_malformed_terms(formula):
    with pytest.raises(ModelError):
        parse_bars(formula)


def test_nested_structure_codes_and_chain():
    df = _panel()
    s = build_structure(parse_bars("y ~ (1|patient/vu/reader)"), df)
    # lme4's order: most levels first
    assert [t.name for t in s.terms] == ["reader:vu:patient", "vu:patient", "patient"]
    assert [t.n_levels for t in s.terms] == [40, 20, 5]
    assert s.nested and s.scalar and s.crossed == ()
    # chain from the coarsest to the finest factor
    assert [s.factors[f].n_levels for f in s.chain] == [5, 20, 40]
    # codes follow pandas.factorize on sorted labels; no rows x groups matrix anywhere
    t = s.terms[2]
    assert t.codes.shape == (len(df),) and t.Z.shape == (len(df), 1)
    assert list(t.levels) == ["p0", "p1", "p2", "p3", "p4"]
    assert s.terms[1].levels[0] == "p0:0"
    assert s.theta_names() == [
        "reader:vu:patient.(Intercept)",
        "vu:patient.(Intercept)",
        "patient.(Intercept)",
    ]
    # explicit interaction is the same partition as the slash form
    s2 = build_structure(parse_bars("y ~ (1|patient) + (1|patient:vu)"), df)
    assert [t.name for t in s2.terms] == ["patient:vu", "patient"]
    assert np.array_equal(s2.terms[0].codes, s.terms[1].codes)


def test_reused_lower_level_labels_are_crossed_not_nested():
    # vu labels 0..3 repeat in every patient: (1|vu) is crossed with (1|patient), as in lme4
    df = _panel()
    s = build_structure(parse_bars("y ~ (1|patient) + (1|vu)"), df)
    assert not s.nested
    assert {s.factors[f].n_levels for f in s.crossed} | {
        s.factors[f].n_levels for f in s.chain
    } == {4, 5}


def test_crossed_readers_go_to_the_dense_block():
    df = _panel()
    s = build_structure(parse_bars("y ~ (1|patient/vu) + (1|reader)"), df)
    assert [s.factors[f].n_levels for f in s.chain] == [5, 20]
    assert [s.factors[f].n_levels for f in s.crossed] == [2]


def test_many_level_crossed_factors_are_refused_clearly():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.integers(0, 100, 2000), "b": rng.integers(0, 100, 2000)})
    with pytest.raises(ModelError, match="crossed random effects with many levels"):
        build_structure(parse_bars("y ~ (1|a) + (1|b)"), df)


def test_correlated_slope_theta_layout_and_varcorr():
    df = _panel()
    s = build_structure(parse_bars("y ~ (1 + x|patient)"), df)
    (t,) = s.terms
    assert t.columns == ("(Intercept)", "x") and t.q == 2
    np.testing.assert_array_equal(t.Z[:, 0], 1.0)
    np.testing.assert_array_equal(t.Z[:, 1], df["x"].to_numpy())
    assert s.theta_names() == ["patient.(Intercept)", "patient.x.(Intercept)", "patient.x"]
    np.testing.assert_array_equal(s.theta_start(), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(s.theta_lower(), [0.0, -np.inf, 0.0])
    vc = s.varcorr_frame(np.array([2.0, 0.6, 0.8]))  # Λ = [[2, 0], [0.6, 0.8]]
    assert list(vc["grp"]) == ["patient"] * 3
    assert list(vc["var1"]) == ["(Intercept)", "x", "(Intercept)"]
    assert vc["var2"].iloc[2] == "x" and pd.isna(vc["var2"].iloc[0])
    np.testing.assert_allclose(vc["vcov"], [4.0, 1.0, 1.2])
    np.testing.assert_allclose(vc["sdcor"], [2.0, 1.0, 0.6])


def test_double_bar_gives_lme4_unique_names_and_one_factor():
    df = _panel()
    s = build_structure(parse_bars("y ~ (1 + x||patient)"), df)
    assert [t.name for t in s.terms] == ["patient", "patient.1"]
    assert [t.columns for t in s.terms] == [("(Intercept)",), ("x",)]
    assert len(s.factors) == 1 and s.factors[0].terms == (0, 1)
    assert s.theta_names() == ["patient.(Intercept)", "patient.1.x"]


def test_categorical_slope_columns_use_r_names():
    df = _panel()
    s = build_structure(parse_bars("y ~ (arm|patient)"), df)
    assert s.terms[0].columns == ("(Intercept)", "armplacebo")
    s0 = build_structure(parse_bars("y ~ (0 + arm|patient)"), df)
    assert s0.terms[0].columns == ("armifx", "armplacebo")


def test_single_level_grouping_factor_is_refused():
    df = _panel().assign(site="one")
    with pytest.raises(ModelError, match="single level"):
        build_structure(parse_bars("y ~ (1|site)"), df)


def test_multilevel_design_drops_rows_missing_a_grouping_value():
    df = _panel()
    df.loc[[3, 7], "vu"] = np.nan
    design, s = multilevel_design("y ~ x + (1|patient/vu)", df)
    assert design.n_obs == len(df) - 2 and s.n_rows == len(df) - 2
    assert design.names == ["Intercept", "x"]
    (entry,) = list(design.ledger)
    assert entry["n_rows"] == 2 and "vu" in entry["reason"]
    assert 3 not in design.rows and 7 not in design.rows
