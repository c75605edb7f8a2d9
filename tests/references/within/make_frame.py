"""Write ``vu_frame.csv``, the confounded VU frame behind the stored within-patient reference.

A simulated cohort in which the patients' inflammation and syndesmophyte propensities
are correlated (``CohortSpec.propensity_correlation = 0.6``; truth: conditional OR of
``mri`` 2), 150 patients, seed 2026; the analysis frame of new syndesmophytes by
inflammation at baseline, with the arm as a 0/1 column. The within/between columns
are *not* stored: R (``within.R``) and syndesmo (``sy.within_between``) each compute
them from ``mri``.

Run from the repository root: ``python tests/references/within/make_frame.py``; then
``Rscript tests/references/within/within.R``. The frame is stored, so the reference
does not move when the simulator changes.
"""

from __future__ import annotations

from pathlib import Path

import syndesmo as sy

#: The simulator's inflammation shares when the stored data were written (its
#: defaults until the 12 mSASSS VUs got their own: 15.8% / 5.63%); kept so this
#: script still writes the stored file.
SHARES_AT_THE_TIME = {"inflammation_prevalence": 0.337, "inflammation_prevalence_treated": 0.12}


HERE = Path(__file__).resolve().parent


def main() -> None:
    spec = sy.CohortSpec(n_patients=150, propensity_correlation=0.6, **SHARES_AT_THE_TIME)
    panel = sy.simulate_cohort(spec, seed=2026)
    frame = sy.analysis_frame(panel, outcome="new_syndesmophyte", exposure="w0", covariates=["arm"])
    out = frame[["patient", "new_syndesmophyte", "mri"]].copy()
    out["infliximab"] = (frame["arm"].astype(str) == "infliximab").astype(int)
    out.to_csv(HERE / "vu_frame.csv", index=False)


if __name__ == "__main__":
    main()
