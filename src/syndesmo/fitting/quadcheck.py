"""Is the number of quadrature points enough? ``fit.check_quadrature()``, as Stata's ``quadchk``.

A GLMM's likelihood is an integral over the random effects. The Laplace approximation
(``nagq = 1``) and adaptive Gauss–Hermite quadrature with few points can land far from
the maximum likelihood when clusters are small and binary — two readings of a VU are
the extreme case. The check refits the same model (same design, same engine) at other
numbers of points, starting from the fit's estimates, and reports for every estimate
(fixed effects, then the random-effect SDs and correlations) its value at each number
of points and its largest relative change from the fit's own. Stata's rule of thumb
(``quadchk``, Rabe-Hesketh, Skrondal & Pickles 2005, J Econometrics 128:301) reads a
relative change below 1e-2 as enough points, and one above 1e-2 (for an estimate of a
size that matters) as a sign that the approximation drives the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError
from syndesmo.fitting import registry

if TYPE_CHECKING:
    from syndesmo.fitting.results import FitResult

#: Relative change of an estimate that ``quadchk`` reads as "too few points".
RELATIVE_CHANGE_TOL = 1e-2


def default_points(nagq: int, max_nagq: int) -> tuple[int, ...]:
    """More points than the fit used: about twice as many, and the most the engine takes.

    Parameters
    ----------
    nagq : int
        The points of the fit (1 = Laplace).
    max_nagq : int
        The most the engine takes.

    Returns
    -------
    tuple of int
        Increasing numbers of points, all above ``nagq``.
    """
    more = {min(max_nagq, max(2 * nagq + 1, 7)), min(max_nagq, max(4 * nagq + 1, 15))}
    return tuple(sorted(k for k in more if k > nagq))


def check_quadrature(fit: FitResult, points: Sequence[int] | None = None) -> pd.DataFrame:
    """Refit ``fit`` at other numbers of quadrature points and compare every estimate.

    Parameters
    ----------
    fit : FitResult
        A converged fit of an engine that integrates by quadrature and keeps its model
        object (the native engine).
    points : sequence of int, optional
        The numbers of points to refit at (default :func:`default_points`).

    Returns
    -------
    pandas.DataFrame
        One row per estimate (fixed effects by name, then ``sd <grp> <var1>`` and
        ``cor <grp> <var1>:<var2>`` rows of the variance components); a column
        ``nagq=<k>`` per number of points (the fit's own first), ``max_rel_change``
        (largest ``|value − fit's| / max(|fit's|, 1e-3)`` (absolute change for an
        estimate at 0) and ``enough`` (the change is below ``RELATIVE_CHANGE_TOL``).
        A last row ``logLik`` holds the log-likelihood at each number of points (on
        one scale, so they compare; Stata's ``quadchk`` reports it too) and its
        relative change.

    Raises
    ------
    ModelError
        For an engine without quadrature or a model object, a fit that did not
        converge, a structure quadrature does not cover (crossed factors), or a refit
        that fails.
    """
    info = registry.get_engine(fit.engine)
    if not info.takes_nagq or info.nagq_max is None:
        raise ModelError(f"engine {fit.engine!r} does not integrate by quadrature")
    design = getattr(fit.model, "design", None)
    if design is None:
        raise ModelError(
            f"this {fit.engine!r} fit keeps no model object to refit; refit it with "
            "sy.fit(..., engine='native') to check the quadrature"
        )
    if not fit.converged:
        raise ModelError("the fit did not converge, so there is nothing to check yet")
    nagq = int(fit.nagq or 1)
    if points is None:
        points = default_points(nagq, info.nagq_max)
    checked = []
    for k in points:
        k = registry.check_nagq(fit.engine, k)
        if k != nagq and k not in checked:
            checked.append(k)
    if not checked:
        raise ModelError(f"give numbers of points other than the fit's own ({nagq})")
    engine_fn = registry.load_engine(fit.engine)
    fits = {nagq: fit}
    for k in checked:
        refit = engine_fn(design, nagq=k, offset=design.offset, start=fit.model_params())
        if not refit.converged:
            raise ModelError(f"the refit at nagq={k} did not converge: {refit.convergence.message}")
        fits[k] = refit
    columns = {f"nagq={k}": _estimates(f) for k, f in fits.items()}
    table = pd.DataFrame(columns)
    base = table[f"nagq={nagq}"]
    scale = np.maximum(base.abs(), 1e-3)
    change = table.sub(base, axis=0).abs().div(scale, axis=0).max(axis=1)
    table["max_rel_change"] = change
    table["enough"] = change < RELATIVE_CHANGE_TOL
    return table


def _estimates(fit: FitResult) -> pd.Series:
    values = dict(fit.params.items())
    for c in fit.varcomps:
        if c.var2 is None:
            values[f"sd {c.grp} {c.var1}"] = c.sdcor
        else:
            values[f"cor {c.grp} {c.var1}:{c.var2}"] = (
                c.sdcor if not math.isnan(c.sdcor) else math.nan
            )
    values["logLik"] = fit.loglik
    return pd.Series(values, dtype=float)
