"""Timing and accuracy of the multilevel engine against lme4 and glmmTMB, in one run.

Not a test: ``python benchmarks/bench_multilevel.py [--sizes 187 2000] [--agq 7]
[--table-only]``.

* Nested VU panel with two readers, ``y ~ mri + arm + reader + (1|patient/vu)``
  (simulated as in ``tests/multilevel_cases.py``): native Laplace and multilevel AGQ
  against ``lme4::glmer`` (``tolPwrss = 1e-12``) and ``glmmTMB`` (Laplace), both timed
  inside R with ``system.time`` (R is started once per workload through ``Rscript``;
  its start-up and reading the data are not counted).
* mlmRev's guImmun (children within mothers within communities, ``(1|comm/mom)``) and
  Contraception with a correlated slope ``(urban|district)``.
* On guImmun, the estimates at nagq = 1 (Laplace), 3, 7, 15, 25: how far Laplace lands
  from the exact maximum likelihood on small clusters.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from multilevel_cases import CASES, simulate_vu_readers

from syndesmo.engines.native.multilevel import fit_multilevel
from syndesmo.fitting.random_effects import multilevel_design

R_SCRIPT = r"""
suppressMessages({library(lme4); library(glmmTMB)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
for (f in strsplit(args[3], ",")[[1]]) if (nchar(f)) d[[f]] <- factor(d[[f]])
f <- as.formula(args[2])
t1 <- system.time(m <- glmer(f, data = d, family = binomial,
                             control = glmerControl(tolPwrss = 1e-12)))[["elapsed"]]
t2 <- system.time(mt <- glmmTMB(f, data = d, family = binomial))[["elapsed"]]
cat(jsonlite::toJSON(list(lme4 = t1, glmmTMB = t2, ll_lme4 = as.numeric(logLik(m)),
                          ll_tmb = as.numeric(logLik(mt))), digits = NA, auto_unbox = TRUE))
"""


def r_times(df, formula: str, factors: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        script = Path(tmp) / "t.R"
        df.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        out = subprocess.run(
            ["Rscript", str(script), str(csv), formula, ",".join(factors)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def native(df, formula: str, nagq: int, repeats: int = 1):
    design, structure = multilevel_design(formula, df)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fit = fit_multilevel(
            design.X, design.y, design.trials, structure, nagq=nagq, names=design.names
        )
        times.append(time.perf_counter() - t)
    return fit, float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[187, 2000])
    ap.add_argument("--agq", type=int, default=7)
    ap.add_argument("--table-only", action="store_true", help="only the guImmun nagq table")
    ap.add_argument("--no-table", action="store_true", help="skip the guImmun nagq table")
    args = ap.parse_args()

    if not args.table_only:
        print(
            "| workload | rows | native Laplace | native AGQ | lme4 | glmmTMB |"
            " logLik native / lme4 / glmmTMB |"
        )
        print("|---|---|---|---|---|---|---|")
        workloads = []
        for n in args.sizes:
            workloads.append(
                (
                    f"VU panel, 2 readers, (1\\|patient/vu), {n} patients",
                    simulate_vu_readers(n_patients=n, seed=1),
                    "y ~ mri + arm + reader + (1|patient/vu)",
                    ["patient", "vu"],
                    True,
                )
            )
        load, formula = CASES["guimmun"]
        workloads.append(("mlmRev guImmun, (1\\|comm/mom)", load(), formula, ["comm", "mom"], True))
        load, formula = CASES["contraception_slope"]
        workloads.append(
            ("mlmRev Contraception, (urban\\|district)", load(), formula, ["district"], True)
        )
        for name, df, formula, factors, agq in workloads:
            fit, t_lap = native(df, formula, 1, repeats=3 if len(df) < 10_000 else 1)
            t_agq = "–"
            if agq:
                try:
                    _, t = native(df, formula, args.agq)
                    t_agq = f"{t:.1f} s (nagq={args.agq})"
                except Exception as exc:  # structure not covered: say so
                    t_agq = f"n/a ({type(exc).__name__})"
            r = r_times(df, formula, factors)
            print(
                f"| {name} | {len(df)} | {t_lap:.2f} s | {t_agq} | {r['lme4']:.1f} s | "
                f"{r['glmmTMB']:.1f} s | {fit.loglik:.3f} / {r['ll_lme4']:.3f} / "
                f"{r['ll_tmb']:.3f} |",
                flush=True,
            )

    if args.no_table:
        return
    load, formula = CASES["guimmun"]
    df = load()
    print()
    print("guImmun, (1|comm/mom): estimates by nagq (nagq = 1 is Laplace)")
    print()
    rows = []
    for k in (1, 3, 7, 15, 25):
        fit, t = native(df, formula, k)
        rows.append((k, fit, t))
    names = rows[0][1].names
    show = [j for j, nm in enumerate(names) if nm in ("Intercept", "kid2p[T.Y]", "pcInd81")]
    head = " | ".join(names[j] for j in show)
    print(f"| nagq | logLik | SD mom | SD comm | {head} | time |")
    print("|---|---|---|---|" + "---|" * len(show) + "---|")
    for k, fit, t in rows:
        sd = fit.sd()
        est = " | ".join(f"{fit.params[j]:.4f}" for j in show)
        print(
            f"| {k} | {fit.loglik:.4f} | {sd[('mom:comm', '(Intercept)')]:.4f} | "
            f"{sd[('comm', '(Intercept)')]:.4f} | {est} | {t:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
