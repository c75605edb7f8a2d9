"""Multilevel logistic GLMMs: nested, correlated and (few-level) crossed random effects.

``fit_multilevel(X, y, trials, structure, nagq=, offset=)`` is the entry point on model
matrices; :func:`fit_formula` builds them from an lme4 formula and a data frame.
"""

from __future__ import annotations

import pandas as pd

from syndesmo.engines.native.multilevel.fit import (
    MultilevelFit,
    fit_multilevel,
    loglik_multilevel,
)
from syndesmo.fitting.design import multilevel_design

__all__ = ["MultilevelFit", "fit_formula", "fit_multilevel", "loglik_multilevel"]


def fit_formula(
    formula: str, data: pd.DataFrame, *, nagq: int = 1, trials=None, **options
) -> MultilevelFit:
    """Fit ``formula`` (lme4 syntax, any number of bars) to ``data``."""
    design, structure = multilevel_design(formula, data, trials=trials)
    return fit_multilevel(
        design.X, design.y, design.trials, structure, nagq=nagq, names=design.names, **options
    )
