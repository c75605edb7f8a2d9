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

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.design import build_design
from syndesmo.fitting.results import FitResult

#: The largest ``nagq`` of any engine (lme4's bound for one scalar random intercept).
MAX_NAGQ = registry.max_nagq()


def fit(
    formula: str,
    data: pd.DataFrame,
    engine: str = registry.DEFAULT_ENGINE,
    nagq: int | None = None,
    *,
    trials: str | np.ndarray | None = None,
    offset: str | np.ndarray | pd.Series | None = None,
    **engine_options: Any,
) -> FitResult:
    """Fit a model given by an lme4-style formula with one of the registered engines.

    Parameters
    ----------
    formula : str
        Like ``"new_syndesmophyte ~ mri + arm + (1|patient)"``. The bar names the
        random intercept, the GEE cluster or the conditional-logit strata, as the
        engine's ``group_role`` says; engines that ignore clustering note a bar and
        fit without it.
    data : pandas.DataFrame
        The rows to fit; rows with a missing value in a used column are left out and
        counted in the result's ledger.
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
        a column name or an array aligned with the rows of ``data``. Only for engines
        that take one.
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
    design = build_design(formula, data, trials=trials, family=info.family)
    registry.check_group(engine, formula, design.group is not None)
    engine_fn = registry.load_engine(engine)
    _check_options(engine, engine_fn, engine_options)
    return engine_fn(design, nagq=nagq, offset=_offset_used(offset, data, design), **engine_options)


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


def _offset_used(offset, data: pd.DataFrame, design) -> np.ndarray | None:
    """The offset at the rows the design kept, checked to be finite."""
    if offset is None:
        return None
    if isinstance(offset, str):
        if offset not in data.columns:
            raise ModelError(
                f"offset column {offset!r} is not in the data; "
                f"available columns: {', '.join(map(str, data.columns))}"
            )
        values = pd.to_numeric(data[offset], errors="coerce").to_numpy(dtype=float)
        name = repr(offset)
    else:
        values = np.asarray(offset, dtype=float).ravel()
        name = "offset"
        if values.shape[0] != len(data):
            raise ModelError(f"offset has {values.shape[0]} values but data has {len(data)} rows")
    used = values[design.rows] if design.rows is not None else values
    bad = ~np.isfinite(used)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = data.index[design.rows[i]] if design.rows is not None else data.index[i]
        raise ModelError(
            f"{name} must be a finite number in every row used; row {row} has {used[i]!r}"
        )
    return used
