"""``sy.fit``: one entry point from a formula and a frame to a ``FitResult``.

The formula is turned into a ``Design`` once (``syndesmo.fitting.design.build_design``) and
handed to the chosen engine, so every engine fits the same columns under the same
names and reports the same ledger of rows left out.

The engines and what each can do are listed once, in ``syndesmo.fitting.registry``
(``sy.available_engines()`` shows the table): random-intercept GLMMs (native, lme4,
Bayesian), GEE, conditional logistic regression within the bar's groups, and
unclustered logistic, Poisson and negative binomial regression. ``fit`` checks the
engine name, ``nagq``, the bar and the options against the registry, then calls the
engine as ``fit_xxx(design, nagq=..., offset=..., **options)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.derive.frame import looks_like_frame_rows
from syndesmo.errors import ModelError, warn_user
from syndesmo.fitting import registry
from syndesmo.fitting.design import build_design
from syndesmo.fitting.results import FitResult
from syndesmo.ledger import Ledger

#: The largest ``nagq`` of any engine (lme4's bound for one scalar random intercept).
MAX_NAGQ = registry.max_nagq()


def fit(
    formula: str,
    data: pd.DataFrame | AnalysisFrame,
    engine: str = registry.DEFAULT_ENGINE,
    nagq: int | None = None,
    *,
    trials: str | np.ndarray | None = None,
    offset: str | np.ndarray | pd.Series | None = None,
    ledger: Ledger | None = None,
    **engine_options: Any,
) -> FitResult:
    """Fit a model given by an lme4-style formula with one of the registered engines.

    Parameters
    ----------
    formula : str
        Like ``"new_syndesmophyte ~ mri + arm + (1|patient)"``. A formula is data:
        only column names, the formula operators and a closed set of transforms
        (``log(crp)``, ``scale(age)``, ``C(reader)``, ``I(age^2)``, ``offset(z)``, …)
        are accepted, see ``syndesmo.fitting.formula``. The bar names the
        random intercept, the GEE cluster or the conditional-logit strata, as the
        engine's ``group_role`` says; engines that ignore clustering note a bar and
        fit without it.
    data : pandas.DataFrame or AnalysisFrame
        The rows to fit; rows with a missing value in a used column are left out and
        counted in the result's ledger. An ``AnalysisFrame`` (``sy.analysis_frame``)
        brings the ledger of the rows left out before it; with a DataFrame made from
        ``frame.data`` (e.g. after merging covariates), pass ``ledger=frame.ledger`` so
        the fit still reports every row left out (such rows given without a ledger are
        fitted with a warning that the ledger was left behind).
    engine : str
        An engine of ``sy.available_engines()`` (default: the native GLMM).
    nagq : int, optional
        Adaptive Gauss–Hermite points (1 = Laplace, the default) for engines that
        integrate a random effect, up to the engine's ``nagq_max``; other engines
        accept only ``None`` or 1.
    trials : str or array, optional
        Binomial counts: a column name or an array aligned with the rows of ``data``.
    offset : str or array, optional
        A known term added to the linear predictor (e.g. log exposure time for counts):
        a column name or an array aligned with the rows of ``data``, as R's
        ``offset=``; with ``offset(...)`` terms in the formula too, their sum is used,
        as in R.
    ledger : Ledger, optional
        The rows left out before ``data`` when ``data`` is a plain DataFrame.
    **engine_options
        Passed to the engine (e.g. ``tol`` for native, ``corstr`` for gee).

    Returns
    -------
    FitResult
        The fitted model.

    Raises
    ------
    ModelError
        For an unknown engine, a bad ``nagq``, a missing bar, an option the engine does
        not take, or a formula or data the design refuses.
    EngineUnavailableError
        If the engine's optional dependencies are not installed.
    """
    info = registry.get_engine(engine)
    nagq = registry.check_call(engine, nagq, offset)
    if ledger is None and isinstance(data, pd.DataFrame) and looks_like_frame_rows(data):
        warn_user(
            "these rows look like an analysis frame's data but bring no ledger, so the fit "
            "cannot report the VUs left out before them: pass the AnalysisFrame itself, "
            "or ledger=frame.ledger"
        )
    design = build_design(
        formula, data, trials=trials, offset=offset, ledger=ledger, family=info.family
    )
    registry.check_call(engine, nagq, design.offset)  # offset() terms of the formula
    registry.check_group(engine, formula, design.has_random)
    registry.check_random(engine, formula, () if design.random is None else design.random.kinds)
    engine_fn = registry.load_engine(engine)
    _check_options(engine, engine_fn, engine_options)
    # offset() terms and offset=, summed by build_design
    result = engine_fn(design, nagq=nagq, offset=design.offset, **engine_options)
    # the design stays with the fit: predictions and residuals are built from it
    return dataclasses.replace(result, design=design) if result.design is None else result


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
) -> Any:
    """Fit many replicates of one random-intercept design with the native engine.

    Used by power simulations, where building a ``Design`` per replicate would cost
    more than the fit; the batched function comes from the registry's
    ``batch_entry`` of the default engine.

    Parameters
    ----------
    X : numpy.ndarray
        Fixed-effect matrix, ``(n, p)`` shared or ``(R, n, p)`` per replicate.
    Y : numpy.ndarray
        Responses ``(R, n)``.
    groups : numpy.ndarray
        Group codes ``0..G-1`` of the ``n`` rows.
    trials, mask : numpy.ndarray, optional
        Binomial trials and rows to use, ``(R, n)``.
    nagq : int
        Quadrature points, 1 (Laplace) to 25.
    names : list of str, optional
        Names of the columns of ``X``.
    **options
        Passed on (e.g. ``tol``), see ``syndesmo.engines.native.engine.fit_many``.

    Returns
    -------
    ManyFit
        Per-replicate estimates (``syndesmo.engines.native.engine.ManyFit``).

    Raises
    ------
    ModelError
        For a bad ``nagq`` or inconsistent shapes.
    """
    nagq = registry.check_nagq(registry.DEFAULT_ENGINE, nagq)
    batch_fn = registry.load_batch_engine(registry.DEFAULT_ENGINE)
    return batch_fn(X, Y, groups, trials=trials, mask=mask, nagq=nagq, names=names, **options)


def _check_options(engine: str, fn: Callable[..., FitResult], options: dict[str, Any]) -> None:
    """Reject engine options the engine does not take, naming the ones it does."""
    if not options:
        return
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    reserved = {"design", "nagq", "offset"}
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
