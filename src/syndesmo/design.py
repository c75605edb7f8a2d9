"""From a formula and a data frame to model matrices: the first step of every fit.

lme4's design is followed: parse the formula → build the model matrices → (engine)
make a deviance function → optimise → wrap the results. This module does the first
two steps and nothing else, so each engine starts from the same ``Design``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from syndesmo.results import Ledger


@dataclass
class Design:
    """Model matrices for a binomial-logit model with at most one random intercept.

    ``y`` holds successes and ``trials`` the number of trials per row (all ones for a
    binary response). ``groups`` are integer codes 0..G-1 of the grouping factor named
    by the bar term ``(1|group)``, or ``None`` for a model without random effects.
    ``ledger`` counts the rows of the input that were left out and why.
    """

    formula: str
    response: str
    y: np.ndarray
    trials: np.ndarray
    X: np.ndarray
    names: list[str]
    group: str | None = None
    groups: np.ndarray | None = None
    group_labels: np.ndarray | None = None
    ledger: Ledger = field(default_factory=Ledger)
    fixed_formula: str = ""

    @property
    def n_obs(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_groups(self) -> int | None:
        return None if self.groups is None else int(self.groups.max()) + 1
