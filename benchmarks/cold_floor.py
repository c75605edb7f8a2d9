"""Benchmark: what a cold power call cannot go below on this machine.

Not a test. Run from the repository root:

    python benchmarks/cold_floor.py            # 5 fresh interpreters per row

A cold ``syndesmo.power`` call (a fresh interpreter, as every ``syndesmo power``
command is) must import the scientific stack before its first study and then do the
studies' work. This prints, each the median over fresh interpreters:

* the import of numpy, then pandas, then the scipy pieces a power run loads
  (special, linalg, sparse, optimize), each timed after the ones before it;
* numba's import and its first call of an already-cached compiled function (a
  one-line function compiled on the first run into a temporary directory): the
  fixed price any numba kernel adds to a cold call;
* the CPU seconds of a warm default call (1000 studies, in-process), by stage;

and the floor they imply on ``--cores`` cores: the imports (serial, before the
workers fork) plus the warm call's CPU spread perfectly over the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

STACK = """
import json, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import pandas
t2 = time.perf_counter()
import scipy.special, scipy.linalg, scipy.sparse, scipy.optimize
t3 = time.perf_counter()
print(json.dumps({"numpy": t1 - t0, "pandas": t2 - t1, "scipy": t3 - t2}))
"""

NUMBA = """
import json, sys, time
import numpy
sys.path.insert(0, {where!r})
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import one_line
one_line.f(1.0)
t2 = time.perf_counter()
print(json.dumps({{"numba import": t1 - t0, "numba first call": t2 - t1}}))
"""

ONE_LINE = """
from numba import njit


@njit(cache=True)
def f(x):
    return x + 1.0
"""

WARM = """
import json
import syndesmo as sy
spec = sy.CohortSpec()
sy.power(spec, n_sims=1000, seed=1, workers=None, progress=False)
res = sy.power(spec, n_sims=1000, seed=1, workers=None, progress=False)
print(json.dumps(res.timing))
"""


def run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def medians(code: str, repeats: int) -> dict[str, float]:
    runs = [run(code) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="fresh interpreters per row")
    ap.add_argument("--cores", type=int, default=2, help="cores the floor assumes")
    args = ap.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    stack = medians(STACK, args.repeats)
    with tempfile.TemporaryDirectory() as where:
        with open(os.path.join(where, "one_line.py"), "w") as fh:
            fh.write(ONE_LINE)
        run(NUMBA.format(where=where))  # compiles and caches the function
        numba = medians(NUMBA.format(where=where), args.repeats)
    warm = run(WARM)
    cpu = sum(v for k, v in warm.items() if k != "wall")

    print("| step | median s |\n| --- | --- |")
    for name, value in {**stack, **numba}.items():
        print(f"| {name} | {value:.3f} |")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in warm.items() if k != "wall")
    print(f"| warm call CPU, 1000 studies in-process ({stages}) | {cpu:.2f} |")
    imports = sum(stack.values())
    print(
        f"\nfloor on {args.cores} cores: imports {imports:.2f} s + work {cpu:.2f} / "
        f"{args.cores} = {imports + cpu / args.cores:.2f} s; with a numba kernel "
        f"add {sum(numba.values()):.2f} s before the first study"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
