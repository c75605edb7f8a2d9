"""sy.fit / sy.fit_many: engine dispatch and the errors a user can act on.

Engine calls are recorded with monkeypatched stand-ins, so these tests check what
``fit`` hands each engine (design, rows used, nagq, options), not the engines' maths.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
import syndesmo.fitting.api
from syndesmo.errors import ModelError
from syndesmo.fitting.results import FitResult


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 60
    df = pd.DataFrame(
        {
            "patient": np.repeat([f"p{i}" for i in range(15)], 4),
            "mri": rng.integers(0, 2, n),
            "arm": np.repeat(["placebo", "infliximab"] * 8, 4)[:n],
        }
    )
    df["y"] = (rng.random(n) < 0.3 + 0.2 * df.mri).astype(int)
    return df


class Recorder:
    """Stands in for an engine function and remembers its arguments."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, design, *args, **kwargs) -> FitResult:
        self.calls.append(((design, *args), kwargs))
        names = design.names
        return FitResult(
            engine=self.engine,
            formula=design.formula,
            params=pd.Series(np.zeros(len(names)), index=names),
            vcov=pd.DataFrame(np.eye(len(names)), index=names, columns=names),
            n_obs=design.n_obs,
        )


def test_fit_is_exported():
    assert sy.fit is syndesmo.fitting.api.fit
    assert sy.fit_many is syndesmo.fitting.api.fit_many


def test_unknown_engine_lists_the_engines(frame):
    with pytest.raises(
        ModelError, match=r"unknown engine 'glmmtmb'.*native, lme4, gee, logit, bayes"
    ):
        sy.fit("y ~ mri + (1|patient)", frame, engine="glmmtmb")


@pytest.mark.parametrize("engine", ["native", "lme4", "bayes"])
def test_random_intercept_engines_need_a_bar(frame, engine):
    with pytest.raises(ModelError, match=r"no bar term.*\(1\|patient\)"):
        sy.fit("y ~ mri + arm", frame, engine=engine)


def test_gee_needs_a_bar(frame):
    with pytest.raises(ModelError, match="'gee' needs a cluster"):
        sy.fit("y ~ mri + arm", frame, engine="gee")


@pytest.mark.parametrize("nagq", [0, 26, -1])
def test_nagq_out_of_range(frame, nagq):
    with pytest.raises(ModelError, match=rf"nagq must be from 1 \(Laplace\) to 25.*got {nagq}"):
        sy.fit("y ~ mri + (1|patient)", frame, engine="native", nagq=nagq)


@pytest.mark.parametrize("nagq", [2.5, True, "7"])
def test_nagq_must_be_an_integer(frame, nagq):
    with pytest.raises(ModelError, match="nagq must be an integer"):
        sy.fit("y ~ mri + (1|patient)", frame, engine="lme4", nagq=nagq)


def test_nagq_only_for_quadrature_engines(frame):
    with pytest.raises(ModelError, match="nagq applies only to the engines native, lme4"):
        sy.fit("y ~ mri + (1|patient)", frame, engine="gee", nagq=5)


def test_unknown_engine_option_is_named(frame):
    with pytest.raises(
        ModelError, match=r"'gee' does not take option\(s\) robust; it takes: maxiter"
    ):
        sy.fit("y ~ mri + (1|patient)", frame, engine="gee", robust=True)


def test_native_gets_the_design_nagq_and_options(frame, monkeypatch):
    import syndesmo.engines.native.engine as native

    rec = Recorder("native")
    monkeypatch.setattr(native, "fit_native", rec)
    sy.fit("y ~ mri + arm + (1|patient)", frame, engine="native", nagq=7, tol=1e-8)
    (design,), kwargs = rec.calls[0]
    assert design.names == ["Intercept", "mri", "arm[T.placebo]"]
    assert design.group == "patient" and design.n_groups == 15
    assert kwargs == {"nagq": 7, "offset": None, "tol": 1e-8}


def test_lme4_and_bayes_get_the_rows_used(frame, monkeypatch):
    # one engine contract: the rows used travel in the design, not as a second argument
    frame = frame.copy()
    frame.loc[[4, 9], "mri"] = np.nan
    rec_lme4 = Recorder("lme4")
    import syndesmo.engines.lme4 as lme4_engine

    monkeypatch.setattr(lme4_engine, "fit_lme4", rec_lme4)
    res = sy.fit("y ~ mri + (1|patient)", frame, engine="lme4", nagq=3)
    (design,), kwargs = rec_lme4.calls[0]
    assert kwargs == {"nagq": 3, "offset": None}
    assert design.n_obs == 58 and design.ledger.n_excluded == 2
    used = design.data
    assert len(used) == 58 and not used.mri.isna().any()
    pd.testing.assert_frame_equal(used, frame.drop(index=[4, 9]))
    assert res.n_obs == 58

    rec_bayes = Recorder("bayes")
    fake = types.ModuleType("syndesmo.engines.bayes")
    fake.fit_bayes = rec_bayes
    monkeypatch.setitem(sys.modules, "syndesmo.engines.bayes", fake)
    sy.fit("y ~ mri + (1|patient)", frame, engine="bayes", draws=10)
    (design,), kwargs = rec_bayes.calls[0]
    assert kwargs == {"nagq": None, "offset": None, "draws": 10} and len(design.data) == 58


def test_logit_notes_ignored_clustering(frame):
    res = sy.fit("y ~ mri + (1|patient)", frame, engine="logit")
    assert any("clustering by patient ignored" in w for w in res.warnings)
    assert res.group is None and np.isnan(res.sigma)


def test_fit_many_forwards_to_native(monkeypatch):
    import syndesmo.engines.native.engine as native

    seen = {}

    def fake_fit_many(X, Y, groups, **kwargs):
        seen.update(X=X, Y=Y, groups=groups, **kwargs)
        return "many"

    monkeypatch.setattr(native, "fit_many", fake_fit_many)
    X = np.ones((4, 1))
    Y = np.zeros((2, 4))
    g = np.array([0, 0, 1, 1])
    assert sy.fit_many(X, Y, g, nagq=3, names=["Intercept"], tol=1e-9) == "many"
    assert seen["X"] is X and seen["groups"] is g
    assert seen["nagq"] == 3 and seen["names"] == ["Intercept"]
    assert seen["trials"] is None and seen["mask"] is None and seen["tol"] == 1e-9
    with pytest.raises(ModelError, match="nagq"):
        sy.fit_many(X, Y, g, nagq=30)
