"""Reviewer's regression tests: bad input found while trying syndesmo as a user would.

Each test failed before its fix. The references are the other engines' behaviour on
the same input (the native engine already refuses a rank-deficient design with a
ModelError naming the column) and plain counting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy


def _frame(n_patients: int = 40, vus: int = 6, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patient = np.repeat([f"P{i:03d}" for i in range(n_patients)], vus)
    mri = rng.integers(0, 2, patient.size)
    u = np.repeat(rng.normal(0, 1, n_patients), vus)
    y = rng.random(patient.size) < 1 / (1 + np.exp(-(-1.5 + 0.7 * mri + u)))
    return pd.DataFrame({"patient": patient, "mri": mri, "y": y.astype(int)})


@pytest.mark.parametrize("engine", ["logit", "gee"])
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"m2": lambda d: 2 * d["mri"]}, "m2"),  # collinear with mri
        ({"c": lambda d: np.ones(len(d))}, "c"),  # constant, collinear with the intercept
    ],
)
def test_rank_deficient_design_is_one_clear_error(engine, extra, named):
    """A collinear column gives a ModelError naming it, as the native engine does,
    not a LinAlgError (logit) or a 'fit' with estimates of ±1e12 (gee)."""
    data = _frame().assign(**extra)
    formula = f"y ~ mri + {named} + (1|patient)"
    with pytest.raises(sy.ModelError, match="rank deficient"):
        sy.fit(formula, data, engine="native")
    with pytest.raises(sy.ModelError, match=r"rank deficient: .*'(m2|c|mri|Intercept)'"):
        sy.fit(formula, data, engine=engine)


def test_logit_warnings_are_not_repeated():
    """statsmodels warns once per Newton step under separation; the fit reports the
    message once."""
    data = _frame()
    data["mri"] = data["y"]
    fit = sy.fit("y ~ mri", data, engine="logit")
    assert len(fit.warnings) == len(set(fit.warnings))
    assert any("separation" in w for w in fit.warnings)


@pytest.mark.parametrize("address", ["notanaddress", "tcp://host", "tcp://host:port"])
def test_scheduler_address_without_port_is_one_line_on_the_cli(address, capsys):
    """A malformed --scheduler is exit 2 and one line naming the address, before any
    Dask client exists (it used to be distributed's ValueError traceback, then a 60 s
    hang while the half-made client closed)."""
    from syndesmo.cli.app import main

    code = main(["power", "--scheduler", address, "--sims", "2", "--patients", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert address in err[0] and "host:8786" in err[0]


def test_spec_nagq_range_is_the_engines_range():
    """A spec's nagq is checked against the range the engines accept (1..25, lme4's
    nAGQ for one scalar random effect); the spec used to accept up to 100 and
    say so, then fail later inside the fit."""
    from syndesmo.analysis.specs import validate

    base = {"outcome": "new_syndesmophyte", "exposure": "w0"}
    assert validate({**base, "nagq": 25}).nagq == 25
    with pytest.raises(sy.SpecError, match=r"from 1 \(Laplace\) to 25 .*got 26"):
        validate({**base, "nagq": 26})


def test_report_words_a_zero_cell_crude_or_instead_of_nan():
    from syndesmo.analysis.reproduction import _crude_or_words

    assert _crude_or_words(float("nan")) == "crude OR not estimable (a zero cell)"
    assert _crude_or_words(float("inf")) == "crude OR not estimable (a zero cell)"
    assert _crude_or_words(2.114) == "crude OR 2.11"
