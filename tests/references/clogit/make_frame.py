"""Write ``vu_frame.csv``, the simulated VU frame behind the stored clogit reference.

Run from the repository root: ``python tests/references/clogit/make_frame.py``; then
``Rscript tests/references/clogit/clogit.R`` writes ``clogit_exact.csv`` from it.
The frame is stored, so the reference does not move when the simulator changes.
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
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=120, **SHARES_AT_THE_TIME), seed=2024)
    frame = sy.analysis_frame(
        panel,
        outcome="new_syndesmophyte",
        exposure="w0",
        covariates=["arm", "region", "baseline_corner"],
    )
    out = frame[["patient", "new_syndesmophyte", "mri", "baseline_corner"]].copy()
    out["lumbar"] = (frame["region"] == "lumbar").astype(int)
    out["infliximab"] = (frame["arm"].astype(str) == "infliximab").astype(int)
    out.to_csv(HERE / "vu_frame.csv", index=False)


if __name__ == "__main__":
    main()
