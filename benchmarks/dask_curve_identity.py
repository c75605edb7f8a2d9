"""A power curve of 10 grid points × 2000 studies, in-process and on a Dask cluster:
the same results, exactly.

Not a test (about two minutes on 2 cores). Run from the repository root:

    python benchmarks/dask_curve_identity.py [--sims 2000]

Grid: the default ``CohortSpec`` at 60, 80, …, 240 patients, the VU-level GLMM
(``analysis="vu"``), seed 2026. The same call runs in-process and on a loopback
``LocalCluster`` of 2 single-threaded worker processes (started before the clock). It
prints both wall times and whether every column of the two tables other than
``seconds`` is identical, and exits with 1 if not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

import syndesmo as sy

GRID = {"n_patients": list(range(60, 241, 20))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    kw = {"n_sims": args.sims, "analysis": "vu", "seed": 2026, "progress": False, **GRID}
    spec = sy.CohortSpec()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    here = sy.power_curve(spec, **kw)
    t_here = time.perf_counter() - t
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        t = time.perf_counter()
        on_dask = sy.power_curve(spec, scheduler=client, **kw)
        t_dask = time.perf_counter() - t
    cols = [c for c in here.columns if c != "seconds"]
    try:
        pd.testing.assert_frame_equal(here[cols], on_dask[cols], check_exact=True)
        same = True
    except AssertionError as exc:
        same = False
        print(exc)
    studies = len(GRID["n_patients"]) * args.sims
    print(f"{studies} studies: in-process {t_here:.1f} s, Dask (2 workers) {t_dask:.1f} s")
    print("identical (every column but seconds):", same)
    print(
        here[["n_patients", "power", "power_lower", "power_upper", "failed_rate"]].to_string(
            index=False
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
