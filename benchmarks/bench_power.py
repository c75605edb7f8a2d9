"""Benchmark: a power simulation with the native engine against a loop of R's glmer.

Not a test. Run from the repository root:

    python benchmarks/bench_power.py                 # 1000 studies, 2 workers, 20 R fits
    python benchmarks/bench_power.py --sims 200 --lme4-fits 5

Design: the default ``CohortSpec`` (187 patients × 12 VUs, OR 2), the VU-level GLMM
``new_syndesmophyte ~ mri + arm + (1|patient)`` by Laplace. The native run is
``syndesmo.powersim.api`` with ``workers`` local processes (wall time, including starting
the pool); its per-stage times (simulate, derive, build the design, fit) are summed
over the tasks, i.e. CPU-seconds spread over the workers. The lme4 run fits the
first ``--lme4-fits`` of the *same* replicates one by one through
``syndesmo.fit(..., engine="lme4")`` and extrapolates to ``--sims``: both the wall
time per fit seen from Python and R's own ``system.time`` of ``glmer``. The native
and R estimates of the same replicates are compared as a sanity check.

The machine's load average is printed: on a shared machine other jobs slow both sides.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def native_run(spec, sims: int, workers: int, seed: int):
    from syndesmo.powersim.api import power

    t0 = time.perf_counter()
    res = power(spec, n_sims=sims, analysis="vu", seed=seed, workers=workers, progress=False)
    return res, time.perf_counter() - t0


def lme4_run(spec, n_fits: int, sims: int, seed: int):
    """Fit the first ``n_fits`` replicates of ``power(seed=seed)`` with R's glmer."""
    from syndesmo.derive.frame import analysis_frame
    from syndesmo.fitting.api import fit
    from syndesmo.simulate.cohort import simulate_cohort

    kids = np.random.SeedSequence(seed).spawn(sims)[:n_fits]
    walls, r_secs, est = [], [], []
    for kid in kids:
        frame = analysis_frame(simulate_cohort(spec, seed=kid), covariates=["arm"])
        t0 = time.perf_counter()
        f = fit("new_syndesmophyte ~ mri + arm + (1|patient)", frame, engine="lme4")
        walls.append(time.perf_counter() - t0)
        r_secs.append(float(f.details.r_seconds))
        est.append(float(f.params["mri"]))
    return np.array(walls), np.array(r_secs), np.array(est)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lme4-fits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from syndesmo.simulate.cohort import CohortSpec

    spec = CohortSpec()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    res, wall = native_run(spec, args.sims, args.workers, args.seed)
    t = res.timing
    row = res.table.iloc[0]
    print(
        f"\nnative: {args.sims} replicates of {spec.n_patients} patients x {len(spec.vus)} VUs, "
        f"{args.workers} workers: {wall:.2f} s wall ({wall / args.sims * 1e3:.1f} ms/replicate)"
    )
    print(
        f"  power {row['power']:.3f} [{row['power_lower']:.3f}, {row['power_upper']:.3f}], "
        f"failed {int(row['failed'])}, singular {row['singular_rate']:.3f}"
    )
    stages = {k: v for k, v in t.items() if k != "wall"}
    total = sum(stages.values())
    print("  where the time goes (CPU seconds summed over tasks):")
    for k, v in stages.items():
        print(f"    {k:<12} {v:7.2f} s  {100 * v / total:5.1f} %")
    print(
        f"  CPU total {total:.2f} s: {total / args.workers:.2f} s of wall time on "
        f"{args.workers} idle cores, plus starting the pool"
    )
    print(f"  load average after: {os.getloadavg()[0]:.2f}")

    if args.lme4_fits > 0:
        walls, r_secs, est = lme4_run(spec, args.lme4_fits, args.sims, args.seed)
        native_est = res.replicates["log_or"].to_numpy()[: args.lme4_fits]
        per_wall, per_r = walls.mean(), np.nanmean(r_secs)
        print(
            f"\nlme4 (glmer, Laplace): {args.lme4_fits} fits timed, one at a time: "
            f"{per_wall:.3f} s/fit from Python, {per_r:.3f} s/fit in R (system.time)"
        )
        print(
            f"  extrapolated to {args.sims} fits: {per_wall * args.sims:.0f} s "
            f"({per_r * args.sims:.0f} s of glmer alone) on one core"
        )
        print(
            f"  speed-up of the native power run: {per_wall * args.sims / wall:.0f}x "
            f"(vs glmer alone: {per_r * args.sims / wall:.0f}x)"
        )
        print(
            f"  max |log OR native - lme4| on these replicates: "
            f"{np.max(np.abs(native_est - est)):.1e}"
        )


if __name__ == "__main__":
    main()
