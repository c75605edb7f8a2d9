"""Benchmark: power of the nested two-reader design, native beside an lme4 loop.

Not a test. Run from the repository root:

    python benchmarks/bench_nested_power.py                 # 200 studies, 10 lme4 fits
    python benchmarks/bench_nested_power.py --sims 50 --lme4-fits 3

Design: ``CohortSpec(n_readers=2)`` (187 patients × 12 VUs × 2 readers) and the
analysis ``"readers"`` of ``syndesmo.power``: every reading a row,
``new_syndesmophyte ~ mri + arm + C(reader) + (1|patient/vu)`` by Laplace, one
``fit_many_structured`` fit per study. Timed (wall seconds, extrapolated to 1000
studies, ``--repeats`` runs each): in-process, and on 2 worker processes (the
session's pool, started and given a first run of 200 studies before the clock, so
that each worker has loaded the compiled kernel); the CPU seconds of simulate,
derive and fit as ``PowerResult.timing`` reports them. lme4: the same model by
``engine="lme4"`` (one R ``glmer`` per study) on the first ``--lme4-fits`` of the
same studies, extrapolated. The 1-minute load average is printed before each stage:
the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import syndesmo as sy

SPEC = sy.CohortSpec(n_readers=2)


def timed_power(sims: int, **kw) -> tuple[float, sy.PowerResult]:
    t0 = time.perf_counter()
    res = sy.power(SPEC, n_sims=sims, analysis="readers", seed=1, progress=False, **kw)
    return time.perf_counter() - t0, res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--lme4-fits", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each row")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"{os.cpu_count()} cores")
    rows = []
    for label, kw in (("in-process", {"workers": 1}), ("2 workers", {"workers": 2})):
        if kw["workers"] == 2:  # the session's pool, each worker past its first chunk
            sy.power(SPEC, n_sims=200, analysis="readers", seed=2, progress=False, workers=2)
        walls = []
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            wall, res = timed_power(args.sims, **kw)
            walls.append(wall * 1000 / args.sims)
        row = res.table.iloc[0]
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in res.timing.items())
        runs = ", ".join(f"{w:.1f}" for w in walls)
        rows.append(
            f"| {label} | {statistics.median(walls):.1f} ({runs}) | "
            f"{statistics.median(walls):.1f} | {load:.1f} | power {row['power']:.3f}, "
            f"failed {row['failed_rate']:.3f}; CPU s of the last run: {cpu} |"
        )
        print(rows[-1], flush=True)
    if args.lme4_fits > 0:
        load = os.getloadavg()[0]
        wall, res = timed_power(args.lme4_fits, engine="lme4", workers=1)
        native = sy.power(
            SPEC, n_sims=args.lme4_fits, analysis="readers", seed=1, progress=False, workers=1
        )
        same = res.replicates["log_or"] - native.replicates["log_or"]
        rows.append(
            f"| lme4 loop, {args.lme4_fits} fits extrapolated | "
            f"{wall * 1000 / args.lme4_fits:.0f} | {wall / args.lme4_fits * 1e3:.0f} | "
            f"{load:.1f} | max abs log-OR difference from native {same.abs().max():.1e} |"
        )
        print(rows[-1], flush=True)
    print(
        f"\n{args.sims} studies of the 187 × 12 × 2-reader design\n\n"
        "| run | 1000 studies (s), median (runs) | ms per study | load | notes |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
