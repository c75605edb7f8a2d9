"""Timing of the native GLMM engine against R's lme4, measured in one run.

Not a test: ``python benchmarks/bench_engines.py [--reps 1000] [--no-write]``.

* One fit of a 187-patient × 12-VU random-intercept logistic model (binary MRI
  exposure and treatment arm, simulated with a fixed seed), nAGQ 1 and 15: median
  wall time of the native engine over repeated fits, and of ``lme4::glmer`` timed
  *inside R* with ``system.time`` around each call (the rpy2 bridge is excluded).
  A second design adds a continuous covariate, so no rows can be merged.
* A power-simulation workload: ``--reps`` replicates with the exposure, the outcome
  and the at-risk rows simulated anew each time, fitted by ``fit_many`` in one call;
  lme4's time for the same number of fits is extrapolated from a timed subset of 20
  replicates looped inside R.

Prints a Markdown table and writes it into ``benchmarks/README.md`` (section
"Engines").
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from syndesmo.engines.native.engine import fit_many, fit_native
from syndesmo.fitting.design import Design

N_PATIENTS = 187
N_VU = 12
SEED = 20240517
README = Path(__file__).with_name("README.md")


def simulate_design(rng: np.random.Generator, continuous: bool = False) -> Design:
    """One VU panel: 187 patients × 12 VUs, σ = 1.2, OR(MRI) = 2 (illustrative values)."""
    patient = np.repeat(np.arange(N_PATIENTS), N_VU)
    n = patient.size
    arm = rng.integers(0, 2, N_PATIENTS)[patient].astype(float)
    mri = (rng.random(n) < expit(-0.7 + 0.8 * rng.normal(size=N_PATIENTS)[patient])).astype(float)
    cols, names = [np.ones(n), mri, arm], ["Intercept", "mri", "arm"]
    beta = [-2.5, np.log(2.0), -0.3]
    if continuous:
        cols.append(np.round(rng.normal(size=n), 4))
        names.append("z")
        beta.append(0.2)
    X = np.column_stack(cols)
    b = 1.2 * rng.normal(size=N_PATIENTS)
    y = rng.binomial(1, expit(X @ np.asarray(beta) + b[patient])).astype(float)
    formula = "y ~ " + " + ".join(names[1:]) + " + (1|patient)"
    return Design(formula, "y", y, np.ones(n), X, names, "patient", patient)


def design_frame(d: Design) -> pd.DataFrame:
    df = pd.DataFrame(d.X[:, 1:], columns=d.names[1:])
    df["y"] = d.y
    df["patient"] = d.groups
    return df


def time_native(d: Design, nagq: int, repeats: int) -> tuple[float, object]:
    fit = fit_native(d, nagq=nagq)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fit = fit_native(d, nagq=nagq)
        times.append(time.perf_counter() - t)
    return statistics.median(times), fit


def r_session():
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter
    from rpy2.robjects.packages import importr

    importr("lme4")

    def put(name: str, df: pd.DataFrame) -> None:
        with localconverter(ro.default_converter + pandas2ri.converter) as cv:
            ro.globalenv[name] = cv.py2rpy(df)

    return ro, put


def time_lme4(d: Design, nagq: int, repeats: int) -> tuple[float, np.ndarray, float]:
    """Median seconds per glmer call measured inside R, and lme4's estimates."""
    ro, put = r_session()
    put("bench_d", design_frame(d))
    rhs = " + ".join(d.names[1:])
    ro.r(
        f"""
        bench_d$patient <- factor(bench_d$patient)
        bench_f <- function() glmer(y ~ {rhs} + (1|patient), data = bench_d,
                                    family = binomial, nAGQ = {nagq})
        bench_m <- bench_f()
        bench_t <- replicate({repeats}, system.time(bench_f())[["elapsed"]])
        """
    )
    seconds = float(np.median(np.array(ro.r("bench_t"))))
    beta = np.array(ro.r("unname(fixef(bench_m))"))
    sigma = float(ro.r("attr(VarCorr(bench_m)[[1]], 'stddev')")[0])
    return seconds, beta, sigma


def simulate_replicates(rng: np.random.Generator, reps: int):
    """Exposure, outcome and at-risk rows simulated anew in every replicate."""
    patient = np.repeat(np.arange(N_PATIENTS), N_VU)
    n = patient.size
    X = np.empty((reps, n, 3))
    Y = np.empty((reps, n))
    mask = np.empty((reps, n), dtype=bool)
    for r in range(reps):
        arm = rng.integers(0, 2, N_PATIENTS)[patient]
        mri = rng.random(n) < expit(-0.7 + 0.8 * rng.normal(size=N_PATIENTS)[patient])
        X[r] = np.column_stack([np.ones(n), mri, arm])
        b = 1.2 * rng.normal(size=N_PATIENTS)
        Y[r] = rng.binomial(1, expit(X[r] @ [-2.5, np.log(2.0), -0.3] + b[patient]))
        mask[r] = rng.random(n) < 0.85  # VUs at risk (no syndesmophyte at baseline)
    return X, Y, patient, mask


def time_lme4_loop(X, Y, patient, mask, nagq: int, subset: int) -> float:
    """Seconds for ``subset`` glmer fits of distinct replicates, looped inside R."""
    ro, put = r_session()
    frames = []
    for r in range(subset):
        keep = mask[r]
        frames.append(
            pd.DataFrame(
                {
                    "rep": r,
                    "y": Y[r, keep],
                    "mri": X[r, keep, 1],
                    "arm": X[r, keep, 2],
                    "patient": patient[keep],
                }
            )
        )
    put("bench_many", pd.concat(frames, ignore_index=True))
    ro.r(
        f"""
        bench_many$patient <- factor(bench_many$patient)
        bench_parts <- split(bench_many, bench_many$rep)
        bench_loop <- system.time(for (p in bench_parts)
            glmer(y ~ mri + arm + (1|patient), data = p, family = binomial, nAGQ = {nagq}))
        """
    )
    return float(ro.r("bench_loop[['elapsed']]")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000, help="replicates for fit_many")
    parser.add_argument("--repeats", type=int, default=7, help="timed fits per engine")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    rng = np.random.default_rng(SEED)
    rows = []
    checks = []
    for label, continuous in (("mri + arm", False), ("mri + arm + continuous z", True)):
        d = simulate_design(rng, continuous=continuous)
        for nagq in (1, 15):
            t_nat, fit = time_native(d, nagq, repeats=max(args.repeats, 51))
            t_r, beta, sigma = time_lme4(d, nagq, repeats=args.repeats)
            diff = max(np.max(np.abs(fit.params.to_numpy() - beta)), abs(fit.sigma - sigma))
            checks.append(f"{label}, nAGQ={nagq}: max |native − lme4| = {diff:.1e}")
            rows.append(
                (
                    f"one fit, {label}",
                    nagq,
                    f"{t_nat * 1e3:.1f} ms",
                    f"{t_r * 1e3:.0f} ms",
                    f"{t_r / t_nat:.0f}×",
                )
            )

    X, Y, patient, mask = simulate_replicates(rng, args.reps)
    subset = min(20, args.reps)
    for nagq in (1, 15):
        t0 = time.perf_counter()
        many = fit_many(X, Y, patient, mask=mask, nagq=nagq, names=["Intercept", "mri", "arm"])
        t_many = time.perf_counter() - t0
        t_loop = time_lme4_loop(X, Y, patient, mask, nagq, subset) * args.reps / subset
        ok = int(many.converged.sum())
        rows.append(
            (
                f"{args.reps} replicates, fit_many ({ok} converged)",
                nagq,
                f"{t_many:.1f} s",
                f"{t_loop:.0f} s (from {subset})",
                f"{t_loop / t_many:.0f}×",
            )
        )

    header = "| workload | nAGQ | native | lme4 (inside R) | speed-up |\n|---|---|---|---|---|\n"
    table = header + "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    import scipy

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    env = (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"load average at the end {load} (other jobs were running on the machine)"
    )
    print(table)
    print()
    for c in checks:
        print(c)
    if not args.no_write:
        write_readme(table, checks, env, args)


def write_readme(table: str, checks: list[str], env: str, args) -> None:
    def para(text: str) -> str:
        return textwrap.fill(text, width=88)

    section = "\n\n".join(
        [
            "## Engines",
            para(
                "Native random-intercept GLMM (`syndesmo.engines.native.engine`) against "
                "`lme4::glmer` on a simulated 187-patient × 12-VU panel "
                f"(`python benchmarks/bench_engines.py --reps {args.reps}`, seed {SEED}). "
                "lme4 is timed inside R (`system.time` around each `glmer` call), so the "
                "rpy2 bridge is not counted; native times are medians of repeated fits "
                "and include validation, row merging, the fit and the standard errors. "
                "The fit_many rows simulate the exposure, the outcome and the at-risk "
                "rows anew in every replicate; lme4's time is its loop over 20 of the "
                "same replicates, extrapolated."
            ),
            table,
            para(
                "Agreement with lme4 on the benchmark data (largest difference in a fixed "
                "effect or σ): " + "; ".join(checks) + ". The Laplace differences come from "
                "lme4, whose penalised IRLS stops at a relative deviance change of 1e-7 "
                "(`tolPwrss`); with `tolPwrss = 1e-12` it agrees to ~1e-5 "
                "(tests/test_native_vs_lme4.py)."
            ),
            para(f"Measured on: {env}."),
        ]
    )
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    pattern = re.compile(r"## Engines\n.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
