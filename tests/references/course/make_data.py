"""Write the course reference data (data.csv) for make_reference.R.

A small simulated cohort (40 patients, 12 VUs, MRI at weeks 0, 24, 102; seed 3)
turned into the long VU × week frame of ``syndesmo.analysis.course.course_frame``
(threshold 1). The file is the input of both sides: R fits it, and the test fits the
same file, so a later change of the simulator does not move the reference.

Run from the repository root: ``python tests/references/course/make_data.py``.
"""

from __future__ import annotations

from pathlib import Path

from syndesmo.analysis.course import course_frame
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

#: The simulator's inflammation shares when the stored data were written (its
#: defaults until the 12 mSASSS VUs got their own: 15.8% / 5.63%); kept so this
#: script still writes the stored file.
SHARES_AT_THE_TIME = {"inflammation_prevalence": 0.337, "inflammation_prevalence_treated": 0.12}


HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    panel = simulate_cohort(CohortSpec(n_patients=40, **SHARES_AT_THE_TIME), seed=3)
    long, _ledger = course_frame(panel, threshold=1)
    cols = ["patient", "vu", "arm", "week", "inflamed"]
    out = long[cols].assign(inflamed=long["inflamed"].astype(int))
    out.to_csv(HERE / "data.csv", index=False, lineterminator="\n")
