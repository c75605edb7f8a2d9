"""Benchmark: a power simulation, cold and warm, in-process, on 2 workers and on Dask,
beside a loop of R's glmer extrapolated in the same run.

Not a test. Run from the repository root:

    python benchmarks/bench_power.py                  # 1000 studies, 3 repeats, 20 R fits
    python benchmarks/bench_power.py --sims 200 --repeats 1 --lme4-fits 5

Design: the default ``CohortSpec`` (187 patients × 12 VUs, OR 2), the VU-level GLMM
``new_syndesmophyte ~ mri + arm + (1|patient)`` by Laplace, ``syndesmo.power(spec,
n_sims, seed=1)``. Each timing is wall time:

* **cold**: a fresh interpreter, timed from before ``import syndesmo`` to the end of
  the first ``power`` call (so it includes importing the package and, with workers,
  starting the pool);
* **warm**: a second and third call in the same interpreter (the pool kept alive);
* in-process (``workers=None``), 2 worker processes, and the default
  ``workers="auto"`` (forked workers, one per CPU, for 400+ studies);
* **Dask**: a loopback ``LocalCluster`` of 2 single-threaded worker processes,
  started before the clock (its start time is printed separately); first and
  second call;
* **lme4**: the first ``--lme4-fits`` of the *same* replicates, one R ``glmer`` per
  study through ``syndesmo.fit(..., engine="lme4")``, extrapolated to ``--sims``
  (wall time seen from Python, and R's own ``system.time``).

Each configuration is repeated ``--repeats`` times and the median is reported, with
the load average before each run: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import syndesmo as sy
sims, workers = {sims}, {workers!r}
spec = sy.CohortSpec()
out = []
for k in range(3):
    t = time.perf_counter()
    res = sy.power(spec, n_sims=sims, seed=1, workers=workers, progress=False)
    out.append(time.perf_counter() - (t0 if k == 0 else t))
print(json.dumps({{"times": out, "power": res.power, "cpu": res.timing}}))
"""


def child_run(sims: int, workers: int | str | None, pycache: str | None = None) -> dict:
    code = CHILD.format(sims=sims, workers=workers)
    env = dict(os.environ)
    if pycache:  # compiled modules cached (as an installed package has them)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def dask_run(sims: int, repeats: int) -> tuple[float, list[list[float]]]:
    import distributed

    import syndesmo as sy

    spec = sy.CohortSpec()
    t0 = time.perf_counter()
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        start = time.perf_counter() - t0
        runs = []
        for _ in range(repeats):
            times = []
            for _ in range(2):
                t = time.perf_counter()
                sy.power(spec, n_sims=sims, seed=1, scheduler=client, progress=False)
                times.append(time.perf_counter() - t)
            runs.append(times)
    return start, runs


def lme4_run(n_fits: int, sims: int, seed: int = 1):
    """Fit the first ``n_fits`` replicates of ``power(seed=seed)`` with R's glmer."""
    from syndesmo.derive.frame import analysis_frame
    from syndesmo.fitting.api import fit
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    spec = CohortSpec()
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lme4-fits", type=int, default=20)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument(
        "--bytecode",
        action="store_true",
        help="run the children with a bytecode cache (a temporary PYTHONPYCACHEPREFIX, "
        "filled by one untimed run), as an installed package runs; by default they run "
        "as this interpreter does (with PYTHONDONTWRITEBYTECODE=1 every module is "
        "compiled again at each start)",
    )
    args = parser.parse_args()
    pycache = None
    if args.bytecode:
        pycache = tempfile.mkdtemp(prefix="bench_power_pycache_")
        child_run(50, None, pycache)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; bytecode "
        + ("cached" if pycache else "as this interpreter runs")
    )
    rows: dict[str, list[float]] = {}
    loads = []
    power = None
    cpu = {}
    for r in range(args.repeats):
        for label, workers in (
            ("in-process", None),
            ("2 workers", 2),
            ("default (workers='auto')", "auto"),
        ):
            loads.append(os.getloadavg()[0])
            got = child_run(args.sims, workers, pycache)
            power, cpu = got["power"], got["cpu"]
            rows.setdefault(f"{label}, cold (import + first call)", []).append(got["times"][0])
            rows.setdefault(f"{label}, warm", []).extend(got["times"][1:])
            print(
                f"  repeat {r + 1} {label}: {[round(t, 2) for t in got['times']]} s; CPU by "
                f"stage, last call: {', '.join(f'{k} {v:.2f}' for k, v in cpu.items())}",
                flush=True,
            )
    if not args.no_dask:
        loads.append(os.getloadavg()[0])
        start, runs = dask_run(args.sims, args.repeats)
        rows["Dask LocalCluster (2 workers), first call"] = [t[0] for t in runs]
        rows["Dask LocalCluster (2 workers), warm"] = [t[1] for t in runs]
        print(f"  Dask cluster start {start:.2f} s; calls {runs}", flush=True)
    print(
        f"\npower {power:.3f}; CPU seconds of the last run by stage: "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
    )
    print(f"\n| {args.sims} studies | median wall (s) | runs |\n| --- | --- | --- |")
    for label, times in rows.items():
        print(
            f"| {label} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |"
        )
    if args.lme4_fits > 0:
        walls, r_secs, _ = lme4_run(args.lme4_fits, args.sims)
        per_wall, per_r = float(np.median(walls)), float(np.nanmedian(r_secs))
        print(
            f"| lme4 loop from Python, {args.lme4_fits} fits extrapolated (1 core) | "
            f"{per_wall * args.sims:.0f} | median {per_wall:.3f} s/fit |"
        )
        print(
            f"| lme4, R's own glmer time, extrapolated | {per_r * args.sims:.0f} | "
            f"median {per_r:.3f} s/fit |"
        )
    print(
        f"\nload average (1 min) before the runs: {', '.join(f'{v:.1f}' for v in loads)}; "
        f"after: {os.getloadavg()[0]:.1f}"
    )
    if pycache:
        shutil.rmtree(pycache, ignore_errors=True)


if __name__ == "__main__":
    main()
