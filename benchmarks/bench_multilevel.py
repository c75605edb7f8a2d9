"""Timing and accuracy of the native engine's random effects against lme4 and glmmTMB.

Not a test: ``python benchmarks/bench_multilevel.py [--sizes 187 2000] [--agq 7]
[--intercept-sizes 187 5000 100000] [--table-only]``. Native times are ``sy.fit``
from the data frame (formula, design, fit, standard errors), medians of repeats.

* One random intercept, ``y ~ mri + arm + (1|patient)``, 12 VUs per patient at 187,
  5 000 and 100 000 patients: native Laplace and AGQ (7 points) against lme4 and
  glmmTMB (R is not run at 100 000 patients); the peak memory of each native fit is
  measured in a fresh process (``ru_maxrss``).

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

import syndesmo as sy

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
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fit = sy.fit(formula, df, nagq=nagq)
        times.append(time.perf_counter() - t)
    return fit, float(np.median(times))


def intercept_panel(n: int, seed: int = 1):
    """``n`` patients × 12 VUs, one random intercept (SD 1), OR 2 for MRI."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(n), 12)
    u = rng.normal(0.0, 1.0, n)[p]
    mri = rng.binomial(1, 0.3, p.size)
    arm = rng.binomial(1, 0.5, n)[p]
    eta = -2.0 + np.log(2.0) * mri - 0.2 * arm + u
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    return pd.DataFrame({"patient": p, "mri": mri, "arm": arm, "y": y})


_MEMORY_CHILD = """
import resource, sys, time
sys.path.insert(0, {bench!r})
import syndesmo as sy
from bench_multilevel import intercept_panel
d = intercept_panel({n})
sy.fit("y ~ mri + arm + (1|patient)", d.iloc[:2400])  # imports, first-call costs
t = time.perf_counter()
fit = sy.fit("y ~ mri + arm + (1|patient)", d, nagq={nagq})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def native_in_fresh_process(n: int, nagq: int) -> tuple[float, float]:
    """Seconds and peak resident memory (GiB) of one fit in a new process."""
    code = _MEMORY_CHILD.format(bench=str(Path(__file__).parent), n=n, nagq=nagq)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def intercept_rows(sizes: list[int], agq: int) -> None:
    print(
        "| patients × 12 VUs | rows | native Laplace | native AGQ | peak memory (Laplace / AGQ) "
        "| lme4 Laplace | glmmTMB Laplace | logLik native / lme4 / glmmTMB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    formula = "y ~ mri + arm + (1|patient)"
    for n in sizes:
        df = intercept_panel(n)
        t_lap, mem_lap = native_in_fresh_process(n, 1)
        t_agq, mem_agq = native_in_fresh_process(n, agq)
        fit = sy.fit(formula, df)
        if n <= 5000:
            r = r_times(df, formula, ["patient"])
            r_cols = (
                f"{r['lme4']:.1f} s | {r['glmmTMB']:.1f} s | {fit.loglik:.3f} / "
                f"{r['ll_lme4']:.3f} / {r['ll_tmb']:.3f}"
            )
        else:
            r_cols = f"not run | not run | {fit.loglik:.3f}"
        print(
            f"| {n} | {len(df)} | {t_lap:.2f} s | {t_agq:.2f} s (nagq={agq}) | "
            f"{mem_lap:.2f} / {mem_agq:.2f} GiB | {r_cols} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[187, 2000])
    ap.add_argument("--intercept-sizes", type=int, nargs="*", default=[187, 5000, 100_000])
    ap.add_argument("--agq", type=int, default=7)
    ap.add_argument("--table-only", action="store_true", help="only the guImmun nagq table")
    ap.add_argument("--no-table", action="store_true", help="skip the guImmun nagq table")
    args = ap.parse_args()

    if not args.table_only and args.intercept_sizes:
        intercept_rows(args.intercept_sizes, args.agq)
        print()
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
    lme4 = sy.fit(formula, df, engine="lme4", tol_pwrss=1e-12)
    rows.append(("lme4 Laplace", lme4, lme4.details.r_seconds))
    names = list(rows[0][1].params.index)
    show = [nm for nm in names if nm in ("Intercept", "kid2p[T.Y]", "pcInd81")]
    head = " | ".join(show)
    print(f"| nagq | logLik | SD mom | SD comm | {head} | time |")
    print("|---|---|---|---|" + "---|" * len(show) + "---|")
    for k, fit, t in rows:
        ok = fit.converged
        params = fit.params if ok else fit.last_iterate["params"]
        comps = fit.varcomps if ok else fit.last_iterate["varcomps"]
        sd = {(c.grp, c.var1): c.sdcor for c in comps if c.var2 is None}
        loglik = fit.loglik if ok else fit.last_iterate["loglik"]
        est = " | ".join(f"{params[nm]:.4f}" for nm in show)
        note = "" if ok else " (not converged: " + fit.convergence.message[:60] + ")"
        print(
            f"| {k}{note} | {loglik:.4f} | {sd[('mom:comm', '(Intercept)')]:.4f} | "
            f"{sd[('comm', '(Intercept)')]:.4f} | {est} | {t:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
