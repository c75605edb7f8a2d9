"""Words for the exposures and outcomes of ``syndesmo.derive.frame``.

One place for the labels that the ladder, the patient level, the reproduction
tables, the plots and the report all print, so a name reads the same everywhere.
"""

from __future__ import annotations

#: Words for the exposures of ``syndesmo.derive.frame`` (tables, plots, report).
EXPOSURE_LABELS: dict[str, str] = {
    "w0": "inflamed at baseline",
    "w24": "inflamed at week 24",
    "w102": "inflamed at week 102",
    "w0_and_w24": "inflamed at baseline and week 24",
    "w0_or_w24": "inflamed at baseline or week 24",
    "any": "inflamed at any time point",
    "all": "inflamed at every time point",
    "never": "never inflamed",
    "resolved": "inflamed at baseline, resolved later",
    "new": "not inflamed at baseline, inflamed later",
    "n_timepoints": "number of time points inflamed (per point)",
    "max_score": "maximum ASspiMRI-a score (per point)",
}
OUTCOME_LABELS: dict[str, str] = {
    "new_syndesmophyte": "new syndesmophyte",
    "growth": "growth of a syndesmophyte",
    "any_new": "any new syndesmophyte",
    "n_new": "number of new syndesmophytes",
    "msasss_progression": "mSASSS progression ≥ 2 units",
}
