"""``syndesmo.checks``: one wording for every argument check, and one seed conversion."""

from __future__ import annotations

import numpy as np
import pytest

from syndesmo.checks import (
    as_generator,
    as_int_seed,
    as_seed_sequence,
    check_choice,
    check_int,
    check_level,
    check_nagq,
    check_number,
    check_probability,
)
from syndesmo.errors import ModelError, SpecError


def test_integers_in_a_range():
    assert check_int(np.int64(3), "n_sims", low=1) == 3
    assert type(check_int(np.int64(3), "n_sims", low=1)) is int
    with pytest.raises(ModelError, match=r"^n_sims must be a whole number >= 1, got 0$"):
        check_int(0, "n_sims", low=1)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ModelError, match="must be a whole number"):
            check_int(bad, "n_sims", low=1)
    with pytest.raises(SpecError, match=r"^s\.toml: k must be a whole number from 1 to 3, got 4$"):
        check_int(4, "k", low=1, high=3, error=SpecError, where="s.toml")


def test_numbers_probabilities_and_levels():
    assert check_number(6, "threshold", low=0, high=6, low_open=True) == 6.0
    with pytest.raises(ModelError, match=r"^threshold must be a number in \(0, 6\], got 0$"):
        check_number(0, "threshold", low=0, high=6, low_open=True)
    for bad in (float("nan"), float("inf"), "1", False):
        with pytest.raises(ModelError, match="must be a number"):
            check_number(bad, "x", low=0)
    assert check_probability(0.05, "alpha") == 0.05
    with pytest.raises(ModelError, match=r"^alpha must be a number in \(0, 1\), got 1$"):
        check_probability(1, "alpha")
    assert check_probability(1, "rate", closed=True) == 1.0
    assert check_level(0.9) == 0.9
    with pytest.raises(ModelError, match=r"level must be a number in \(0, 1\).*0\.95\)"):
        check_level(95)


def test_choices_say_choose_one_of():
    assert check_choice("gee", ("vu", "gee"), "analysis") == "gee"
    assert check_choice("reader", ("mean", "per_reader"), "rule", aliases={"reader": "per_reader"})
    with pytest.raises(ModelError, match=r"^unknown analysis 'glmm'; choose one of vu, gee$"):
        check_choice("glmm", ("vu", "gee"), "analysis")
    with pytest.raises(SpecError, match=r"^a\.toml: unknown level 3; choose one of vu$"):
        check_choice(3, ("vu",), "level", error=SpecError, where="a.toml")


def test_nagq():
    assert check_nagq(np.int32(15), 25) == 15
    with pytest.raises(ModelError, match=r"^nagq must be from 1 \(Laplace\) to 25 .*got 26$"):
        check_nagq(26, 25)
    with pytest.raises(ModelError, match=r"^nagq must be an integer from 1 \(Laplace\) to 25"):
        check_nagq(1.0, 25)
    with pytest.raises(SpecError, match=r"^x\.toml: nagq must be from 1"):
        check_nagq(0, 25, error=SpecError, where="x.toml")


def test_seed_conversions_keep_the_streams():
    """Each conversion is the one the simulator, the power run and the Bayesian engine
    used before they shared it, so the same seed gives the same numbers."""
    assert as_generator(7).random() == np.random.default_rng(7).random()
    ss = np.random.SeedSequence(7)
    assert as_generator(ss).random() == np.random.default_rng(np.random.SeedSequence(7)).random()
    g = np.random.default_rng(3)
    assert as_generator(g) is g
    assert as_seed_sequence(7).entropy == 7
    assert as_seed_sequence(ss) is ss
    expected = np.random.default_rng(5).integers(2**63)
    assert as_seed_sequence(np.random.default_rng(5)).entropy == expected
    assert as_int_seed(11) == 11
    assert as_int_seed(np.random.default_rng(5)) == np.random.default_rng(5).integers(0, 2**31 - 1)
    state = np.random.SeedSequence(4).generate_state(1, dtype=np.uint32)[0]
    assert as_int_seed(np.random.SeedSequence(4)) == state % (2**31 - 1)
    for bad in (-1, 1.5, True, "1", None):
        with pytest.raises(ModelError, match="seed must be a non-negative int, a numpy Seed"):
            as_generator(bad)
    with pytest.raises(SpecError, match="seed must be"):
        as_seed_sequence(-3, error=SpecError)
