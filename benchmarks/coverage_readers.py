"""Coverage of the VU-level MRI log OR when two readers score every VU.

Not a test: ``python benchmarks/coverage_readers.py [--reps 1000] [--patients 187]``.
Each replicate simulates patients × 12 VUs × 2 readers (``tests/multilevel_cases.py``:
MRI activity of the VU shared by both readings, patient SD 1.0, VU SD 1.2, true
conditional log OR 0.7) and fits the readings within VUs within patients
(``(1|patient/vu)``, Laplace and multilevel AGQ with 7 points per level) and the
per-reader model without the VU level (``(1|patient)``), which counts each VU twice.
Prints a Markdown table: mean estimate, bias, empirical SD, mean model SE and coverage
of the Wald 95% CI with its Monte Carlo SE.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from multilevel_cases import VU_TRUTH, reader_coverage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--patients", type=int, default=187)
    ap.add_argument("--seed", type=int, default=20261129)
    args = ap.parse_args()
    t = time.perf_counter()
    runs = reader_coverage(args.reps, args.patients, args.seed)
    took = time.perf_counter() - t
    truth = VU_TRUTH["mri"]
    print(
        f"{args.reps} replicates, {args.patients} patients × 12 VUs × 2 readers, "
        f"true log OR {truth}; {took:.0f} s\n"
    )
    print(
        "| model | converged | mean log OR | bias (MC SE) | empirical SD | mean SE "
        "| coverage (MC SE) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, g in runs.groupby("estimator", sort=False):
        ok = g[g["converged"]]
        n = len(ok)
        cover = ok["covered"].mean()
        print(
            f"| {label} | {n}/{len(g)} | {ok['estimate'].mean():.4f} | "
            f"{ok['estimate'].mean() - truth:+.4f} ({ok['estimate'].std() / np.sqrt(n):.4f}) | "
            f"{ok['estimate'].std():.4f} | {ok['se'].mean():.4f} | "
            f"{cover:.3f} ({np.sqrt(cover * (1 - cover) / n):.3f}) |"
        )


if __name__ == "__main__":
    main()
