"""syndesmo: multilevel longitudinal models of vertebral-unit panels.

MRI activity of the spine (ASspiMRI-a) at several time points, linked to
radiographic new bone (mSASSS syndesmophytes) at the same vertebral unit, with
mixed-effects logistic models for the correlation of VUs within a patient.
"""

from syndesmo.fitting import fit, fit_many
from syndesmo.results import FitResult, Ledger

__version__ = "0.1.0"

__all__ = ["FitResult", "Ledger", "__version__", "fit", "fit_many"]
