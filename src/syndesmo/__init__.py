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
    "AnalysisFrame": "syndesmo.derive.aframe",
    "FitResult": "syndesmo.fitting.results",
    "Ledger": "syndesmo.ledger",
    "VUPanel": "syndesmo.panel.tables",
    "load_panel": "syndesmo.panel.tables",
    "from_long": "syndesmo.panel.longformat",
    "analysis_frame": "syndesmo.derive.frame",
    "within_between": "syndesmo.derive.within",
    "CohortSpec": "syndesmo.simulate.cohort",
    "simulate_cohort": "syndesmo.simulate.cohort",
    "fit": "syndesmo.fitting.api",
    "anova": "syndesmo.fitting.anova",
    "available_engines": "syndesmo.fitting.registry",
    "fit_many": "syndesmo.fitting.api",
    "ladder": "syndesmo.analysis.ladder",
    "patient_level": "syndesmo.analysis.patient",
    "compare_levels": "syndesmo.analysis.levels",
    "mri_course": "syndesmo.analysis.course",
    "CourseResult": "syndesmo.analysis.course",
    "icc": "syndesmo.analysis.reliability",
    "reliability": "syndesmo.analysis.reliability",
    "power": "syndesmo.powersim.api",
    "power_curve": "syndesmo.powersim.api",
    "PowerResult": "syndesmo.powersim.api",
    "sample_size": "syndesmo.powersim.search",
    "detectable_effect": "syndesmo.powersim.search",
    "SearchResult": "syndesmo.powersim.search",
    "SyndesmoError": "syndesmo.errors",
    "PanelError": "syndesmo.errors",
    "DeriveError": "syndesmo.errors",
    "ModelError": "syndesmo.errors",
    "SpecError": "syndesmo.errors",
}

__all__ = [
    "AnalysisFrame",
    "CohortSpec",
    "CourseResult",
    "DeriveError",
    "FitResult",
    "Ledger",
    "ModelError",
    "PanelError",
    "PowerResult",
    "SearchResult",
    "SpecError",
    "SyndesmoError",
    "VUPanel",
    "__version__",
    "analysis_frame",
    "anova",
    "available_engines",
    "compare_levels",
    "detectable_effect",
    "fit",
    "fit_many",
    "from_long",
    "icc",
    "ladder",
    "load_panel",
    "mri_course",
    "patient_level",
    "power",
    "power_curve",
    "reliability",
    "sample_size",
    "simulate_cohort",
    "within_between",
]


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
    from syndesmo.analysis.course import CourseResult, mri_course
    from syndesmo.analysis.ladder import ladder
    from syndesmo.analysis.levels import compare_levels
    from syndesmo.analysis.patient import patient_level
    from syndesmo.analysis.reliability import icc, reliability
    from syndesmo.derive.aframe import AnalysisFrame
    from syndesmo.derive.frame import analysis_frame
    from syndesmo.derive.within import within_between
    from syndesmo.errors import DeriveError, ModelError, PanelError, SpecError, SyndesmoError
    from syndesmo.fitting.anova import anova
    from syndesmo.fitting.api import fit, fit_many
    from syndesmo.fitting.registry import available_engines
    from syndesmo.fitting.results import FitResult
    from syndesmo.ledger import Ledger
    from syndesmo.panel.longformat import from_long
    from syndesmo.panel.tables import VUPanel, load_panel
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort
