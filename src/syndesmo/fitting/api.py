"""``sy.fit``: one entry point from a formula and a frame to a ``FitResult``.

The formula is turned into a ``Design`` once (``syndesmo.fitting.design.build_design``) and
handed to the chosen engine, so every engine fits the same columns under the same
names and reports the same ledger of rows left out.

Engines:

- ``native``: random-intercept GLMM by Laplace / adaptive Gauss–Hermite (numpy/scipy);
- ``lme4``: R's ``lme4::glmer`` through rpy2 (optional extra ``syndesmo[lme4]``);
- ``gee``: statsmodels GEE, exchangeable within the bar's group, robust SEs;
- ``logit``: plain logistic regression, any bar ignored (with a warning);
- ``bayes``: Bayesian random-intercept model (optional).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.derive.frame import looks_like_frame_rows
from syndesmo.errors import EngineUnavailableError, ModelError, warn_user
from syndesmo.fitting.design import Design, build_design
from syndesmo.fitting.results import FitResult
from syndesmo.ledger import Ledger

if TYPE_CHECKING:
    from syndesmo.engines.native.engine import ManyFit

ENGINES = ("native", "lme4", "gee", "logit", "bayes")
NEEDS_RANDOM_INTERCEPT = ("native", "lme4", "bayes")
QUADRATURE_ENGINES = ("native", "lme4")
MAX_NAGQ = 25


def fit(
    formula: str,
    data: pd.DataFrame | AnalysisFrame,
    engine: str = "native",
    nagq: int = 1,
    *,
    trials: str | np.ndarray | None = None,
    ledger: Ledger | None = None,
    offset: str | np.ndarray | None = None,
    **engine_options: Any,
) -> FitResult:
    """Fit a binomial-logit model given by an lme4-style formula.

    ``formula`` is like ``"new_syndesmophyte ~ mri + arm + (1|patient)"``; the bar names
    the patient random intercept (``native``, ``lme4``, ``bayes``) or the GEE cluster
    (``gee``), and is ignored by ``logit``. A formula is data: only column names, the
    formula operators and a closed set of transforms (``log(crp)``, ``scale(age)``,
    ``C(reader)``, ``I(age^2)``, ``offset(z)``, …) are accepted, see
    ``syndesmo.fitting.formula``. ``nagq`` is the number of adaptive
    Gauss–Hermite points (1 = Laplace) for ``native`` and ``lme4``, from 1 to 25.
    ``trials`` gives binomial counts (a column name or an array). ``offset`` (a column
    name or an array aligned with the rows of ``data``) is a known term of the linear
    predictor, as R's ``offset=``; with ``offset(...)`` terms in the formula too, their
    sum is used, as in R. Every engine honours it. Remaining keyword options go to the
    engine. Raises ``ModelError`` for a bad formula, data or option.

    ``data`` is an ``AnalysisFrame`` (``sy.analysis_frame``, whose ledger of rows left
    out becomes the start of ``fit.ledger``) or a DataFrame; with a DataFrame made
    from ``frame.data`` (e.g. after merging covariates), pass ``ledger=frame.ledger``
    so that the fit still reports every row left out; such rows given without a
    ledger are fitted with a warning that the ledger was left behind.
    """
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    _check_nagq(engine, nagq)

    if ledger is None and isinstance(data, pd.DataFrame) and looks_like_frame_rows(data):
        warn_user(
            "these rows look like an analysis frame's data but bring no ledger, so the fit "
            "cannot report the VUs left out before them: pass the AnalysisFrame itself, "
            "or ledger=frame.ledger"
        )
    design = build_design(formula, data, trials=trials, offset=offset, ledger=ledger)
    if isinstance(data, AnalysisFrame):
        data = data.data
    if engine in NEEDS_RANDOM_INTERCEPT and design.group is None:
        raise ModelError(
            f"engine {engine!r} fits a random-intercept model but the formula {formula!r} "
            "has no bar term: add one such as (1|patient), or use engine='logit'"
        )
    if engine == "gee" and design.group is None:
        raise ModelError(
            f"engine 'gee' needs a cluster: add a bar term such as (1|patient) to {formula!r}"
        )
    engine_fn = _engine_function(engine)
    _check_options(engine, engine_fn, engine_options)

    if design.offset is not None:  # offset() terms and offset=, summed by build_design
        engine_options["offset"] = design.offset
    if engine == "native":
        return engine_fn(design, nagq=nagq, **engine_options)
    if engine == "lme4":
        return engine_fn(design, _rows_used(data, design), nagq=nagq, **engine_options)
    if engine == "bayes":
        return engine_fn(design, _rows_used(data, design), **engine_options)
    return engine_fn(design, **engine_options)


def fit_many(
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray,
    *,
    trials: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    nagq: int = 1,
    names: list[str] | None = None,
    **options: Any,
) -> ManyFit:
    """Fit many replicates of one random-intercept design with the native engine.

    A thin forward to ``syndesmo.engines.native.engine.fit_many`` (see there for shapes and
    for ``options`` such as ``tol``); used by power simulations, where building a
    ``Design`` per replicate would cost more than the fit.
    """
    _check_nagq("native", nagq)
    from syndesmo.engines.native.engine import fit_many as native_fit_many

    return native_fit_many(
        X, Y, groups, trials=trials, mask=mask, nagq=nagq, names=names, **options
    )


def _check_nagq(engine: str, nagq: int) -> None:
    if isinstance(nagq, bool) or not isinstance(nagq, int | np.integer):
        raise ModelError(f"nagq must be an integer from 1 to {MAX_NAGQ}, got {nagq!r}")
    if engine in QUADRATURE_ENGINES:
        if not 1 <= nagq <= MAX_NAGQ:
            raise ModelError(
                f"nagq must be from 1 (Laplace) to {MAX_NAGQ} quadrature points, got {nagq}"
            )
    elif nagq != 1:
        raise ModelError(
            f"nagq applies only to the engines {', '.join(QUADRATURE_ENGINES)}; "
            f"engine {engine!r} got nagq={nagq}"
        )


def _engine_function(engine: str) -> Callable[..., FitResult]:
    module_name, function_name = {
        "native": ("syndesmo.engines.native.engine", "fit_native"),
        "lme4": ("syndesmo.engines.lme4", "fit_lme4"),
        "gee": ("syndesmo.engines.gee", "fit_gee"),
        "logit": ("syndesmo.engines.logit", "fit_logit"),
        "bayes": ("syndesmo.engines.bayes", "fit_bayes"),
    }[engine]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise EngineUnavailableError(
            f"engine {engine!r} is not part of this installation ({module_name} is missing)"
        ) from exc
    return getattr(module, function_name)


def _check_options(engine: str, fn: Callable[..., FitResult], options: dict[str, Any]) -> None:
    """Reject engine options the engine does not take, naming the ones it does."""
    if not options:
        return
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    reserved = {"design", "data_used", "data", "nagq", "offset"}
    accepted = [
        n
        for n, p in params.items()
        if n not in reserved and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ModelError(
            f"engine {engine!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )


def _rows_used(data: pd.DataFrame, design: Design) -> pd.DataFrame:
    return data.iloc[design.rows] if design.rows is not None else data
