"""Write ``vu_frame.csv``, the simulated VU frame behind the stored clogit reference.

Run from the repository root: ``python tests/references/clogit/make_frame.py``; then
``Rscript tests/references/clogit/clogit.R`` writes ``clogit_exact.csv`` from it.
The frame is stored, so the reference does not move when the simulator changes.
"""

from __future__ import annotations

from pathlib import Path

import syndesmo as sy

HERE = Path(__file__).resolve().parent


def main() -> None:
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=120), seed=2024)
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
