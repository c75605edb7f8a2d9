"""The engine registry: one description per engine, every list of engines derived from it.

Covers ``sy.available_engines()``, the engine contract (``fit(design, *, nagq=None,
offset=None, **options)``), a new engine added as one function and one registry line,
the lists derived from the registry (CLI choices, spec validation, plot styles,
report words), the count engines, and the conditional logit engine against R's
``survival::clogit`` — stored reference values (``tests/references/clogit``, made
by the R script there) and, where R is installed, live through rpy2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit

import syndesmo as sy
from syndesmo.analysis import reproduction, specs
from syndesmo.analysis.patient import patient_engines
from syndesmo.cli.commands import fit as fit_command
from syndesmo.cli.commands import power as power_command
from syndesmo.cli.commands import reproduce as reproduce_command
from syndesmo.engines.clogit import fit_clogit
from syndesmo.errors import EngineUnavailableError, ModelError, SpecError
from syndesmo.fitting import registry
from syndesmo.fitting.design import build_design
from syndesmo.fitting.registry import REGISTRY, Engine
from syndesmo.fitting.results import FitResult
from syndesmo.output import plots, report
from syndesmo.powersim import plan

SRC = Path(__file__).resolve().parents[2] / "src" / "syndesmo"
REFERENCE = Path(__file__).resolve().parents[1] / "references" / "clogit"
TOL = 1e-6


# ---------------------------------------------------------------------------
# the table


def test_available_engines_is_the_registry_as_a_table():
    table = sy.available_engines()
    assert list(table.index) == list(REGISTRY)
    for name in ("native", "lme4", "gee", "logit", "bayes", "clogit", "poisson", "negbin"):
        assert name in table.index
    for column in (
        "label",
        "scale",
        "needs_group",
        "nagq_max",
        "likelihood",
        "profile",
        "random_effects",
        "measure",
        "family",
        "entry",
        "extra",
        "installed",
    ):
        assert column in table.columns
    assert table.loc["native", "nagq_max"] == 25 and table.loc["lme4", "nagq_max"] == 25
    assert pd.isna(table.loc["gee", "nagq_max"])
    assert table.loc["clogit", "scale"] == "within" and table.loc["clogit", "needs_group"]
    assert table.loc["gee", "scale"] == "marginal" and not table.loc["gee", "likelihood"]
    assert table.loc["poisson", "measure"] == "RR" and table.loc["negbin", "family"] == (
        "negative binomial"
    )
    assert table.loc["native", "random_effects"] == (
        "scalar intercept, nested intercepts, random slopes, crossed intercepts"
    )
    assert table.loc["bayes", "random_effects"] == "scalar intercept"
    assert table.loc["lme4", "extra"] == "lme4" and table.loc["native", "installed"]
    assert "available_engines" in sy.__all__


def test_engine_names_filter_by_capability():
    assert registry.engine_names(takes_nagq=True) == ("native", "lme4")
    assert registry.engine_names(scale=registry.CONDITIONAL) == ("native", "lme4", "bayes")
    assert registry.engine_names(scale=registry.UNCLUSTERED) == ("logit", "poisson", "negbin")
    assert registry.engine_names(profile=True) == ("native", "logit")
    with pytest.raises(ModelError, match="unknown engine capability 'colour'"):
        registry.engine_names(colour="blue")


def test_every_engine_keeps_the_contract():
    for name, info in REGISTRY.items():
        fn = registry.load_engine(name)
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].name == "design", name
        by_name = {p.name: p for p in params}
        for arg in ("nagq", "offset"):
            assert by_name[arg].kind is inspect.Parameter.KEYWORD_ONLY, (name, arg)
            assert by_name[arg].default is None, (name, arg)
        assert info.scale in registry.SCALES and info.family in registry.FAMILIES
        assert info.measure in registry.MEASURE_WORDS
        assert not info.takes_nagq or info.random_effects, name
        assert info.needs_group == bool(info.group_role), name


def test_unknown_engine_and_one_nagq_check():
    frame = pd.DataFrame({"y": [0, 1, 0, 1], "x": [1.0, 2.0, 3.0, 4.0], "g": [1, 1, 2, 2]})
    with pytest.raises(ModelError, match=r"unknown engine 'glmmtmb'; choose one of: native"):
        sy.fit("y ~ x + (1|g)", frame, engine="glmmtmb")
    for name, info in REGISTRY.items():
        if info.takes_nagq:
            assert registry.check_nagq(name, None) == 1
            assert registry.check_nagq(name, np.int64(info.nagq_max)) == info.nagq_max
            with pytest.raises(ModelError, match=rf"from 1 \(Laplace\) to {info.nagq_max}"):
                registry.check_nagq(name, info.nagq_max + 1)
        else:
            assert registry.check_nagq(name, None) is None
            assert registry.check_nagq(name, 1) is None
            with pytest.raises(ModelError, match="nagq applies only to the engines native, lme4"):
                registry.check_nagq(name, 2)
        with pytest.raises(ModelError, match="nagq must be an integer"):
            registry.check_nagq(name, 1.5)


def test_a_missing_optional_dependency_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "syndesmo_test_needs_more.py").write_text(
        "import syndesmo_test_not_installed\n\ndef fit(design, *, nagq=None, offset=None):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    info = dataclasses.replace(
        REGISTRY["logit"], name="needs_more", entry="syndesmo_test_needs_more:fit", extra="more"
    )
    monkeypatch.setitem(REGISTRY, "needs_more", info)
    with pytest.raises(
        EngineUnavailableError, match=r"needs_more.*syndesmo_test_not_installed.*syndesmo\[more\]"
    ):
        registry.load_engine("needs_more")


# ---------------------------------------------------------------------------
# a new engine: one module, one registry line


_FAKE_ENGINE = """
import numpy as np
import pandas as pd

from syndesmo.fitting.results import FitResult


def fit_fake(design, *, nagq=None, offset=None, shift=0.0):
    names = list(design.names)
    return FitResult(
        engine="fake",
        formula=design.formula,
        params=pd.Series(np.full(len(names), shift), index=names),
        vcov=pd.DataFrame(np.eye(len(names)), index=names, columns=names),
        n_obs=design.n_obs,
        n_groups=design.n_groups,
        group=design.group,
        ledger=design.ledger.copy(),
        warnings=(f"nagq={nagq}", f"offset rows={None if offset is None else len(offset)}"),
    )
"""


@pytest.fixture
def fake_engine(tmp_path, monkeypatch) -> str:
    """A new engine: a module with its fit function and one registry line."""
    (tmp_path / "syndesmo_test_fake_engine.py").write_text(textwrap.dedent(_FAKE_ENGINE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        REGISTRY,
        "fake",
        Engine(
            name="fake",
            label="fake model",
            short="Fake",
            description="a test engine",
            scale=registry.WITHIN,
            needs_group=True,
            group_role="stratification factor",
            nagq_max=None,
            likelihood=False,
            profile=False,
            random_effects=(),
            measure=registry.ODDS_RATIO,
            family=registry.BINOMIAL,
            estimation=registry.MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo_test_fake_engine:fit_fake",
        ),
    )
    return "fake"


def test_a_new_engine_is_one_module_and_one_registry_line(fake_engine):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"y": rng.integers(0, 2, 40), "x": rng.normal(size=40), "g": np.repeat(range(10), 4)}
    )
    frame.loc[3, "x"] = np.nan
    res = sy.fit("y ~ x + (1|g)", frame, engine=fake_engine, shift=0.5, offset=np.ones(40))
    assert isinstance(res, FitResult) and res.engine == "fake"
    assert res.n_obs == 39 and res.ledger.n_excluded == 1
    assert list(res.params) == [0.5, 0.5]
    assert res.warnings == ("nagq=None", "offset rows=39")
    with pytest.raises(ModelError, match=r"'fake' does not take option\(s\) tol; it takes: shift"):
        sy.fit("y ~ x + (1|g)", frame, engine=fake_engine, tol=1)
    with pytest.raises(ModelError, match="'fake' needs a stratification factor"):
        sy.fit("y ~ x", frame, engine=fake_engine)
    assert "fake" in sy.available_engines().index
    # the lists that derive from the registry take it in without another edit
    _check_lists_cover("fake")
    spec = specs.validate({"outcome": "new_syndesmophyte", "exposure": "w0", "engine": "fake"})
    assert spec.engine == "fake"


# ---------------------------------------------------------------------------
# every list of engines derives from the registry


def _choices(module, dest: str = "engine") -> tuple[str, ...]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == dest]
    return tuple(action.choices)


def _check_lists_cover(name: str) -> None:
    info = REGISTRY[name]
    assert name in _choices(fit_command)
    label, colour, marker = plots.engine_style(name)
    assert label == info.words and (colour, marker) != plots._UNKNOWN_STYLE
    words = report.model_words(name, "Laplace approximation")
    assert words.startswith(info.label) and "{" not in words
    assert reproduction._model_words(name).startswith(info.label)
    assert reproduction._engine_short(name) == info.short


def test_cli_specs_plots_and_report_cover_every_engine():
    for name, info in REGISTRY.items():
        _check_lists_cover(name)
        if info.family == registry.BINOMIAL:
            spec = specs.validate(
                {"outcome": "new_syndesmophyte", "exposure": "w0", "engine": name}
            )
            assert spec.engine == name
            if info.needs_group:
                specs.validate({"outcome": "growth", "exposure": "w0", "beside": [name]})
        if info.scale == registry.UNCLUSTERED:
            spec = specs.validate(
                {"level": "patient", "outcome": "n_new", "exposure": "w0", "engine": name}
            )
            assert name in patient_engines()
        else:
            with pytest.raises(SpecError, match="engine"):
                specs.validate(
                    {"level": "patient", "outcome": "n_new", "exposure": "w0", "engine": name}
                )
    glmms = registry.engine_names(scale=registry.CONDITIONAL, family=registry.BINOMIAL)
    assert _choices(reproduce_command) == glmms == ("native", "lme4", "bayes")
    assert _choices(power_command) == plan.VU_ENGINES == ("native", "lme4")
    assert set(plots.SCALE_STYLE) == set(registry.SCALES) == set(report.MODEL_WORDS)


def test_no_engine_name_is_written_outside_the_registry():
    names = set(REGISTRY)
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "fitting" / "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "engine names written outside the registry:\n" + "\n".join(found)


def test_engine_modules_take_their_names_from_the_registry():
    from syndesmo.engines import bayes, clogit, counts, gee, lme4, logit
    from syndesmo.engines.native import engine as native

    assert [native.ENGINE, lme4.ENGINE, gee.ENGINE, logit.ENGINE, bayes.ENGINE] == list(REGISTRY)[
        :5
    ]
    assert (clogit.ENGINE, counts.POISSON_ENGINE, counts.NEGBIN_ENGINE) == (
        "clogit",
        "poisson",
        "negbin",
    )


# ---------------------------------------------------------------------------
# count engines


@pytest.fixture
def counts() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 150
    at_risk = rng.integers(1, 13, n)
    x = rng.integers(0, 6, n).astype(float)
    arm = rng.choice(["placebo", "infliximab"], n)
    mu = at_risk * np.exp(-2.0 + 0.15 * x + 0.3 * (arm == "placebo"))
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
    return pd.DataFrame({"y": y, "x": x, "arm": arm, "at_risk": at_risk, "g": np.arange(n) // 3})


def test_count_engines_match_statsmodels_with_an_offset(counts):
    X = np.column_stack(
        [np.ones(len(counts)), counts["x"], (counts["arm"] == "placebo").astype(float)]
    )
    off = np.log(counts["at_risk"].to_numpy(dtype=float))
    pois = sm.GLM(counts["y"], X, family=sm.families.Poisson(), offset=off).fit()
    got = sy.fit("y ~ x + arm", counts, engine="poisson", offset=off)
    assert got.params.index.tolist() == ["Intercept", "x", "arm[T.placebo]"]
    np.testing.assert_array_equal(got.params.to_numpy(), pois.params)
    np.testing.assert_array_equal(got.bse.to_numpy(), pois.bse)
    assert got.loglik == pois.llf and got.n_events == counts["y"].sum()
    nb = sm.NegativeBinomial(counts["y"], X, loglike_method="nb2", offset=off).fit(
        disp=0, maxiter=200
    )
    got = sy.fit("y ~ x + arm", counts.assign(lo=off), engine="negbin", offset="lo")
    nb_params = np.asarray(nb.params)
    np.testing.assert_array_equal(got.params.to_numpy(), nb_params[:3])
    assert got.details.alpha == nb_params[-1] and got.loglik == nb.llf
    assert sy.fit("y ~ x + (1|g)", counts, engine="poisson").warnings == (
        "clustering by g ignored: rows are treated as independent",
    )


def test_count_engines_check_their_outcome(counts):
    bad = counts.assign(y=counts["y"].astype(float))
    bad.loc[7, "y"] = 1.5
    with pytest.raises(ModelError, match=r"'y' must be a whole number >= 0.*row 7 has 1.5"):
        sy.fit("y ~ x", bad, engine="poisson")
    bad.loc[7, "y"] = -1
    with pytest.raises(ModelError, match=r"row 7 has -1"):
        sy.fit("y ~ x", bad, engine="negbin")
    with pytest.raises(ModelError, match="no events"):
        sy.fit("y ~ x", counts.assign(y=0), engine="poisson")
    with pytest.raises(ModelError, match="do not apply to the poisson family"):
        sy.fit("y ~ x", counts, engine="poisson", trials="at_risk")
    # the binomial engines keep their own outcome check
    with pytest.raises(ModelError, match="must be 0/1"):
        sy.fit("y ~ x", counts, engine="logit")
    with pytest.raises(ModelError, match="offset has 3 values but data has 150 rows"):
        sy.fit("y ~ x", counts, engine="poisson", offset=[0.0, 1.0, 2.0])
    with pytest.raises(ModelError, match="unknown family 'gamma'"):
        build_design("y ~ x", counts, family="gamma")


# ---------------------------------------------------------------------------
# clogit


def _reference() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_csv(REFERENCE / "vu_frame.csv")
    ref = pd.read_csv(REFERENCE / "clogit_exact.csv", keep_default_na=False, na_values=["NA"])
    return frame, ref


CLOGIT_FORMULA = "new_syndesmophyte ~ mri + lumbar + baseline_corner + infliximab + (1|patient)"


def test_clogit_matches_stored_survival_clogit_exact():
    frame, ref = _reference()
    fit = sy.fit(CLOGIT_FORMULA, frame, engine="clogit")
    est = ref[ref["quantity"].eq("estimate")].set_index("term")["value"]
    se = ref[ref["quantity"].eq("se")].set_index("term")["value"]
    scalar = ref[ref["term"].eq("")].set_index("quantity")["value"]
    assert fit.converged and list(fit.params.index) == list(est.index)
    assert np.abs(fit.params - est).max() < TOL
    assert np.abs(fit.bse - se).max() < TOL
    assert abs(fit.loglik - scalar["loglik"]) < TOL
    assert abs(fit.details.loglik_null - scalar["loglik_null"]) < TOL
    assert fit.n_obs == scalar["n"] and fit.n_events == scalar["nevent"]
    # R gives the within-patient constant term NA; syndesmo leaves it out and says so
    (not_estimated,) = ref.loc[ref["quantity"].eq("not_estimated"), "term"]
    assert list(fit.details.dropped_terms) == [not_estimated]
    assert any(not_estimated in w and "constant within" in w for w in fit.warnings)
    strata = frame.groupby("patient")["new_syndesmophyte"].agg(["sum", "size"])
    informative = strata["sum"].gt(0) & strata["sum"].lt(strata["size"])
    assert fit.n_groups == len(strata) and fit.details.informative_strata == informative.sum()
    assert fit.details.informative_rows == strata.loc[informative, "size"].sum()
    assert fit.odds_ratios().loc["mri", "OR"] == pytest.approx(np.exp(est["mri"]))
    assert np.isnan(fit.sigma) and "Intercept" not in fit.params.index


def test_clogit_needs_a_bar():
    frame, _ = _reference()
    with pytest.raises(ModelError, match=r"^engine 'clogit' needs a stratification factor.*no bar"):
        sy.fit("new_syndesmophyte ~ mri", frame, engine="clogit")
    with pytest.raises(ModelError, match="needs strata"):
        fit_clogit(build_design("new_syndesmophyte ~ mri", frame))


def test_clogit_refusals_and_offset():
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(60), 5)
    x = rng.normal(size=g.size)
    z = rng.normal(size=g.size)
    u = rng.normal(size=60)[g]
    y = rng.binomial(1, expit(-1 + 0.7 * x - 0.4 * z + u))
    df = pd.DataFrame({"y": y, "x": x, "z": z, "g": g, "w": (g % 2).astype(float)})
    full = sy.fit("y ~ x + z + (1|g)", df, engine="clogit")
    shifted = sy.fit("y ~ x + z + (1|g)", df, engine="clogit", offset=0.3 * z)
    assert shifted.params["z"] == pytest.approx(full.params["z"] - 0.3, abs=1e-8)
    assert shifted.params["x"] == pytest.approx(full.params["x"], abs=1e-8)
    assert shifted.loglik == pytest.approx(full.loglik, abs=1e-9)
    with pytest.raises(ModelError, match=r"no term of .* varies within a stratum.*w"):
        sy.fit("y ~ w + (1|g)", df, engine="clogit")
    with pytest.raises(ModelError, match="no stratum of 'g' has both events and non-events"):
        sy.fit("y ~ x + (1|g)", df.assign(y=(df["g"] < 30).astype(int)), engine="clogit")
    with pytest.raises(ModelError, match="needs a 0/1 outcome"):
        sy.fit("cbind(y, f) ~ x + (1|g)", df.assign(y=2, f=1), engine="clogit")
    with pytest.raises(ModelError, match="rank deficient"):
        sy.fit("y ~ x + x2 + (1|g)", df.assign(x2=2 * df["x"] + df["w"]), engine="clogit")
    with pytest.raises(ModelError, match="nagq applies only"):
        sy.fit("y ~ x + (1|g)", df, engine="clogit", nagq=3)


def _r_clogit(df: pd.DataFrame, rhs: str, method: str) -> dict[str, np.ndarray]:
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter
    from rpy2.robjects.packages import importr

    importr("survival")
    with localconverter(ro.default_converter + pandas2ri.converter) as cv:
        ro.globalenv["syndesmo_cl"] = cv.py2rpy(df)
    ro.r(
        f"syndesmo_m <- clogit(new_syndesmophyte ~ {rhs} + strata(patient), "
        f"data = syndesmo_cl, method = '{method}')"
    )
    return {
        "beta": np.array(ro.r("unname(coef(syndesmo_m))")),
        "se": np.array(ro.r("unname(sqrt(diag(vcov(syndesmo_m))))")),
        "loglik": np.array(ro.r("syndesmo_m$loglik")),
    }


@pytest.fixture(scope="module")
def r_survival(r_lme4):
    """R's survival package: skip locally without it, fail with SYNDESMO_REQUIRE_R=1."""
    try:
        from rpy2.robjects.packages import importr

        importr("survival")
    except Exception as exc:  # any failure means the package is unusable
        if os.environ.get("SYNDESMO_REQUIRE_R") == "1":
            pytest.fail(f"R package survival is not usable: {exc}")
        pytest.skip(f"R package survival is not usable: {exc}")
    return True


@pytest.mark.r
@pytest.mark.parametrize("seed", [2024, 7])
def test_clogit_matches_live_survival_clogit(r_survival, seed):
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=120), seed=seed)
    frame = sy.analysis_frame(
        panel, outcome="new_syndesmophyte", exposure="w0", covariates=["region", "arm"]
    )
    df = pd.DataFrame(
        {
            "patient": frame["patient"].astype(str),
            "new_syndesmophyte": frame["new_syndesmophyte"].astype(int),
            "mri": frame["mri"].astype(float),
            "lumbar": (frame["region"] == "lumbar").astype(float),
        }
    )
    fit = sy.fit("new_syndesmophyte ~ mri + lumbar + (1|patient)", df, engine="clogit")
    exact = _r_clogit(df, "mri + lumbar", "exact")
    assert np.abs(fit.params.to_numpy() - exact["beta"]).max() < TOL
    assert np.abs(fit.bse.to_numpy() - exact["se"]).max() < TOL
    assert abs(fit.loglik - exact["loglik"][1]) < TOL
    assert abs(fit.details.loglik_null - exact["loglik"][0]) < TOL
    # with several events in a stratum the approximate methods are other likelihoods
    assert df.groupby("patient")["new_syndesmophyte"].sum().max() >= 2
    breslow = _r_clogit(df, "mri + lumbar", "approximate")
    assert abs(fit.loglik - breslow["loglik"][1]) > 1e-3
