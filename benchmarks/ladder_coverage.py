"""Bias and CI coverage of the ladder on simulated cohorts with a known truth.

Not a test (it takes a few minutes): the larger version of the simulation checks in
tests/test_analysis.py, whose figures go into the report of the analysis layer.

1. GLMM, ladder steps b, c, d: ``--reps`` (default 2000) ASSERT-sized cohorts
   (187 patients × 12 VUs, true conditional OR 2, ``CohortSpec`` defaults), fitted
   with ``fit_many`` (Laplace). Bias of the log-OR with its Monte Carlo SE, the
   empirical SD against the mean model SE, and the coverage of the Wald 95% CI
   with its binomial Monte Carlo SE.
2. GEE: ``--gee-reps`` (default 300) cohorts, GEE (exchangeable) at step b; the mean
   estimate against the marginal log-OR implied by the truth, by Gauss-Hermite
   integration of the conditional model over the random-intercept distribution
   (``marginal.marginal_log_or``) — over all VUs, and weighted by the chance a VU
   is at risk (the simulator selects VUs at risk on the random effect) — and
   against the conditional log-OR. Once for the default spec and once with almost
   no baseline syndesmophytes (no selection).

usage:  python benchmarks/ladder_coverage.py [--reps 2000] [--gee-reps 300] [--seed 2026]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from syndesmo.analysis import ladder as an
from syndesmo.analysis.marginal import marginal_log_or, zeger_attenuation
from syndesmo.fitting.api import fit
from syndesmo.simulate import check as simcheck
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort, true_parameters

MODELS = {
    "b: + patient clustering": (),
    "c: + treatment": ("arm",),
    "d: + confounders": ("arm", "lumbar", "baseline_corner", "crp", "age"),
    # baseline mSASSS is a proxy of the random effect itself (the simulator sums the
    # baseline corners, which depend on it): shows what adjusting for it does
    "d + baseline mSASSS": ("arm", "lumbar", "baseline_corner", "crp", "age", "msasss_baseline"),
}


def glmm_table(spec: CohortSpec, reps: int, seed: int) -> pd.DataFrame:
    sims = simcheck.simulation_check(spec, reps, seed, models=MODELS)
    rows = []
    for model, sub in sims.groupby("model", sort=False):
        s = simcheck.coverage_summary(sub)
        rows.append(
            {
                "step": model,
                "replicates used": f"{s['n_used']}/{s['n_reps']}",
                "bias (MC SE)": f"{s['bias']:+.4f} ({s['bias_mcse']:.4f})",
                "empirical SD": f"{s['emp_sd']:.4f}",
                "mean SE": f"{s['mean_se']:.4f}",
                "coverage (MC SE)": f"{s['coverage']:.4f} ({s['coverage_mcse']:.4f})",
                "singular fits": s["singular"],
            }
        )
    return pd.DataFrame(rows)


def gee_row(spec: CohortSpec, reps: int, seed: int, label: str) -> dict:
    est = []
    for child in np.random.SeedSequence(seed).spawn(reps):
        panel = simulate_cohort(spec, seed=int(child.generate_state(1)[0]))
        frame = an.build_frame(panel, "new_syndesmophyte", spec.exposure)
        res = fit("new_syndesmophyte ~ mri + (1|patient)", frame, engine="gee")
        est.append(res.params["mri"])
    est = np.asarray(est)
    truth = true_parameters(spec)
    a, b, sigma = truth["intercept_new"], truth["log_or_new"], truth["sigma_syndesmophyte"]
    mean, mcse = est.mean(), est.std(ddof=1) / math.sqrt(len(est))
    all_vus = marginal_log_or(a, b, sigma)
    at_risk = marginal_log_or(
        a, b, sigma, at_risk_intercept=truth["intercept_baseline_syndesmophyte"]
    )
    return {
        "cohort": label,
        "replicates": len(est),
        "GEE mean log-OR (MC SE)": f"{mean:.4f} ({mcse:.4f})",
        "marginal target, VUs at risk": f"{at_risk:.4f} ({(mean - at_risk) / mcse:+.1f} MC SE)",
        "marginal target, all VUs": f"{all_vus:.4f} ({(mean - all_vus) / mcse:+.1f} MC SE)",
        "Zeger approximation": f"{float(zeger_attenuation(b, sigma)):.4f}",
        "conditional truth": f"{b:.4f} ({(mean - b) / mcse:+.1f} MC SE)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--gee-reps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    spec = CohortSpec(n_patients=187, odds_ratio_new=2.0)

    t0 = time.perf_counter()
    glmm = glmm_table(spec, args.reps, args.seed)
    t1 = time.perf_counter()
    print(f"## GLMM (native, Laplace), {args.reps} cohorts of 187 patients, true OR 2")
    print(f"({t1 - t0:.0f} s)\n")
    print(glmm.to_markdown(index=False) if _has_tabulate() else glmm.to_string(index=False))

    gee = pd.DataFrame(
        [
            gee_row(spec, args.gee_reps, args.seed + 1, "default (VUs at risk selected on u)"),
            gee_row(
                spec.replace(syndesmophyte_prevalence=0.001),
                args.gee_reps,
                args.seed + 2,
                "no selection (syndesmophyte_prevalence 0.001)",
            ),
        ]
    )
    t2 = time.perf_counter()
    print(f"\n## GEE (exchangeable), {args.gee_reps} cohorts each ({t2 - t1:.0f} s)\n")
    print(gee.T.to_string(header=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
