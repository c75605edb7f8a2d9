"""Bias and CI coverage of the plain GLMM, the hybrid GLMM and conditional logit
when a patient's inflammation and syndesmophyte propensities are correlated.

Not a test (about three minutes of CPU per correlation at 1000 replicates): the
larger version of ``tests/simulate/test_propensity_correlation.py``. For each
``propensity_correlation`` ρ, ``--reps`` ASSERT-sized cohorts (``CohortSpec``
defaults: 187 patients × 12 VUs, true conditional OR 2 of inflammation at baseline),
fitted by ``syndesmo.simulate.check.within_check``:

* ``glmm``: ``new_syndesmophyte ~ mri + (1|patient)`` (ladder step b, Laplace);
* ``hybrid``: ``new_syndesmophyte ~ mri_within + mri_between + (1|patient)``, the
  ``mri_within`` coefficient (Laplace);
* ``clogit``: conditional logistic regression with patients as strata.

Bias of the log-OR with its Monte Carlo SE, the empirical SD against the mean model
SE, and the coverage of the Wald 95% CI with its binomial Monte Carlo SE. Writes
``docs/within_patient.csv`` and the table of ``docs/within_patient.md`` (between the
markers), so the numbers there are this script's.

usage:  python benchmarks/within_patient.py [--reps 1000] [--rho 0,0.3,0.6] [--seed 2012]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from syndesmo.output.report import markdown_table
from syndesmo.simulate.check import coverage_summary, within_check
from syndesmo.simulate.cohort import CohortSpec

DOCS = Path(__file__).resolve().parents[1] / "docs"
BEGIN, END = "<!-- within_patient.py: begin -->", "<!-- within_patient.py: end -->"


def table(reps: int, rhos: list[float], seed: int) -> pd.DataFrame:
    rows = []
    for rho in rhos:
        start = time.perf_counter()
        sims = within_check(CohortSpec(propensity_correlation=rho), reps, seed)
        for model, sub in sims.groupby("model", sort=False):
            s = coverage_summary(sub)
            rows.append(
                {
                    "propensity_correlation": rho,
                    "model": model,
                    "replicates used": f"{s['n_used']}/{s['n_reps']}",
                    "mean log-OR": round(float(sub["log_or"].mean()), 4),
                    "bias": round(s["bias"], 4),
                    "bias MC SE": round(s["bias_mcse"], 4),
                    "empirical SD": round(s["emp_sd"], 4),
                    "mean SE": round(s["mean_se"], 4),
                    "coverage": round(s["coverage"], 4),
                    "coverage MC SE": round(s["coverage_mcse"], 4),
                }
            )
        print(f"rho = {rho}: {time.perf_counter() - start:.0f} s", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--rho", default="0,0.3,0.6", help="correlations, comma-separated")
    ap.add_argument("--seed", type=int, default=2012)
    args = ap.parse_args()
    rhos = [float(r) for r in args.rho.split(",")]
    out = table(args.reps, rhos, args.seed)
    print(out.to_string(index=False))
    out.to_csv(DOCS / "within_patient.csv", index=False)
    md = DOCS / "within_patient.md"
    text = md.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    note = f"{args.reps} replicates per correlation, seed {args.seed}, true log-OR log 2 = 0.6931."
    md.write_text(
        f"{head}{BEGIN}\n{note}\n\n{markdown_table(out, digits=4)}\n{END}{tail}", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
