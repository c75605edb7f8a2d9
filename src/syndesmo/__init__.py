"""syndesmo: multilevel longitudinal models of vertebral-unit panels.

MRI activity of the spine (ASspiMRI-a) at several time points, linked to
radiographic new bone (mSASSS syndesmophytes) at the same vertebral unit, with
mixed-effects logistic models for the correlation of VUs within a patient.

The public names (see DESIGN.md) are imported lazily, so ``import syndesmo`` and
the command line start fast and optional parts load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → module that defines it
_PUBLIC = {
    "FitResult": "syndesmo.results",
    "Ledger": "syndesmo.results",
    "VUPanel": "syndesmo.panel",
    "load_panel": "syndesmo.panel",
    "analysis_frame": "syndesmo.derive",
    "CohortSpec": "syndesmo.simulate",
    "simulate_cohort": "syndesmo.simulate",
    "fit": "syndesmo.fitting",
    "fit_many": "syndesmo.fitting",
    "ladder": "syndesmo.analysis",
    "patient_level": "syndesmo.patient",
    "compare_levels": "syndesmo.levels",
    "power": "syndesmo.power",
    "power_curve": "syndesmo.power",
    "PowerResult": "syndesmo.power",
    "SyndesmoError": "syndesmo.errors",
    "PanelError": "syndesmo.errors",
    "DeriveError": "syndesmo.errors",
    "ModelError": "syndesmo.errors",
    "SpecError": "syndesmo.errors",
}

__all__ = [
    "CohortSpec",
    "DeriveError",
    "FitResult",
    "Ledger",
    "ModelError",
    "PanelError",
    "PowerResult",
    "SpecError",
    "SyndesmoError",
    "VUPanel",
    "__version__",
    "analysis_frame",
    "compare_levels",
    "fit",
    "fit_many",
    "ladder",
    "load_panel",
    "patient_level",
    "power",
    "power_curve",
    "simulate_cohort",
]


# ``sy.power`` is a function living in the submodule ``syndesmo.power``: importing that
# submodule anywhere would rebind the package attribute to the module, so it is
# imported here, once, and the function bound over it.
from syndesmo.power import PowerResult, power, power_curve  # noqa: E402

for _name in ("power", "power_curve", "PowerResult"):
    _PUBLIC.pop(_name)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'syndesmo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from syndesmo.analysis import ladder
    from syndesmo.derive import analysis_frame
    from syndesmo.errors import DeriveError, ModelError, PanelError, SpecError, SyndesmoError
    from syndesmo.fitting import fit, fit_many
    from syndesmo.levels import compare_levels
    from syndesmo.panel import VUPanel, load_panel
    from syndesmo.patient import patient_level
    from syndesmo.results import FitResult, Ledger
    from syndesmo.simulate import CohortSpec, simulate_cohort
