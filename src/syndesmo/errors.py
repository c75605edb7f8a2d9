"""Errors a user can act on. The command line prints them as one line, no traceback."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any


class SyndesmoError(Exception):
    """Base class: bad input or a model that cannot be fitted, described for a user."""


class PanelError(SyndesmoError, ValueError):
    """The VU or patient table is not a valid panel (names file, row, column, value)."""


class DeriveError(SyndesmoError, ValueError):
    """An outcome or exposure cannot be derived from this panel (names what is missing)."""


class NoEligibleError(DeriveError):
    """No row is left to analyse; ``ledger`` (a ``syndesmo.ledger.Ledger``, or None;
    not imported: errors.py imports nothing of the package) counts the rows left out, with the
    reasons, so a caller that goes on can report them."""

    def __init__(self, message: str, ledger: Any = None) -> None:
        super().__init__(message)
        self.ledger = ledger

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.ledger))


class ModelError(SyndesmoError, ValueError):
    """A formula, design or engine option is invalid (names the term or column)."""


class SpecError(SyndesmoError, ValueError):
    """A TOML spec or a cohort spec has an unknown key or an invalid value."""


class EngineUnavailableError(SyndesmoError, ImportError):
    """An optional engine's dependencies (R and rpy2, PyMC, …) are not installed."""


class DataNote(UserWarning):
    """A change made to the input while reading it, said once: header names or labels
    stripped of spaces, labels differing only in case merged, missing-value codes read
    as missing. The command line prints each as one line ``note: …``."""


class ConvergenceWarning(UserWarning):
    """A fit finished but its diagnostics fail (e.g. MCMC R-hat, ESS or divergences).

    The fit is returned with ``converged=False`` and the reason; the warning names the
    diagnostic and the parameter so a user knows what to look at.
    """


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside syndesmo.

    Fits are reached through several layers (``sy.fit`` → engine → core); a warning
    should name the user's line, not ours.
    """
    package_dir = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
