"""Checking the ladder's GLMM on simulated cohorts with a known truth.

``simulation_check`` simulates many ASSERT-like cohorts (``syndesmo.simulate.cohort``)
and fits the GLMM of ladder steps b-d to all of them at once (``fit_many``);
``within_check`` fits, to the same kind of cohorts, the plain GLMM beside the two
within-patient estimators of ladder step (e) — the hybrid GLMM and conditional
logistic regression — to show their bias under a patient-level confounder
(``CohortSpec.propensity_correlation``). ``coverage_summary`` turns the estimates
into bias, standard errors and CI coverage with their Monte Carlo errors. Used by
tests/test_analysis.py, tests/simulate/test_within.py, benchmarks/ladder_coverage.py and
benchmarks/within_patient.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from syndesmo.checks import as_seed_sequence, check_choice
from syndesmo.derive.frame import derive_arrays
from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.api import fit, fit_many
from syndesmo.simulate.cohort import simulate_arrays, true_parameters
from syndesmo.simulate.covariates import covariate_values
from syndesmo.vocabulary import COVARIATE_ALIASES, COVARIATES

#: Terms ``simulation_check`` can add: the covariates of ``syndesmo.vocabulary``
#: (``lumbar`` and ``male`` are ``region`` and ``sex`` under their model-term names).
SIMULATION_TERMS = (*COVARIATES, *COVARIATE_ALIASES)


def simulation_check(
    spec,
    n_reps: int,
    seed: int | np.random.SeedSequence | np.random.Generator,
    *,
    models: Mapping[str, Sequence[str]] | None = None,
    exposure: str | None = None,
    nagq: int = 1,
    level: float = 0.95,
) -> pd.DataFrame:
    """Fit GLMMs to ``n_reps`` simulated cohorts with a known truth (fast path).

    Each replicate is ``simulate_arrays(spec, child seed)`` (independent children of
    ``seed``) turned into new_syndesmophyte / exposure by ``derive.derive_arrays``.
    All replicates share the patient × VU rows, so one ``fit_many`` call per model
    fits new_syndesmophyte ~ mri + terms + (1|patient) to all of them, with the
    ineligible VUs masked out. ``models`` maps a name to its terms (default
    ``{"b": ()}``, the ladder's step b); terms come from ``SIMULATION_TERMS``
    (``lumbar`` = lumbar region; each enters on the scale of
    ``syndesmo.simulate.covariates``, as in the power simulation). Every model is fitted
    to the same replicates. Returns one row per model × replicate: model, rep,
    log_or, se, lower, upper, covered (truth inside the Wald CI), sigma, converged,
    singular, n_obs, events, truth (the true conditional log-OR).
    """

    models = dict(models or {"b": ()})
    needed = list(dict.fromkeys(t for terms in models.values() for t in terms))
    for t in needed:
        check_choice(t, SIMULATION_TERMS, "term")
    if spec.n_readers != 1:
        raise ModelError("simulation_check needs a one-reader spec (n_readers = 1)")
    exposure = exposure or spec.exposure
    ss = as_seed_sequence(seed)
    cols: dict[str, list[np.ndarray]] = {t: [] for t in ["mri", *needed]}
    Ys, masks, groups = [], [], None
    for child in ss.spawn(n_reps):
        arrays = simulate_arrays(spec, np.random.default_rng(child))
        d = derive_arrays(arrays, "new_syndesmophyte", exposure, spec.threshold)
        if groups is None:
            groups = d["patient"]
        elif not np.array_equal(groups, d["patient"]):
            raise ModelError("simulated replicates do not share their patient × VU rows")
        ok = d["eligible"]
        cols["mri"].append(np.where(ok, d["x"], 0.0))
        for t in needed:
            cols[t].append(np.where(ok, np.nan_to_num(covariate_values(t, arrays, d)), 0.0))
        Ys.append(np.where(ok, d["y"], 0.0))
        masks.append(ok)
    Y, M = np.stack(Ys), np.stack(masks)
    truth = true_parameters(spec)["log_or_new"] if exposure == spec.exposure else math.nan
    z = stats.norm.ppf(0.5 + level / 2.0)
    out = []
    for name, terms in models.items():
        X = np.stack([np.ones_like(Y), *(np.stack(cols[t]) for t in ["mri", *terms])], axis=-1)
        many = fit_many(X, Y, groups, mask=M, nagq=nagq, names=["Intercept", "mri", *terms])
        est, se = many.params[:, 1], many.bse[:, 1]
        out.append(
            pd.DataFrame(
                {
                    "model": name,
                    "rep": np.arange(n_reps),
                    "log_or": est,
                    "se": se,
                    "lower": est - z * se,
                    "upper": est + z * se,
                    "covered": (est - z * se <= truth) & (truth <= est + z * se),
                    "sigma": many.sigma,
                    "converged": many.converged,
                    "singular": many.singular,
                    "n_obs": many.n_obs,
                    "events": many.n_events,
                    "truth": truth,
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def coverage_summary(sims: pd.DataFrame, level: float = 0.95) -> dict[str, float]:
    """Bias, empirical SD, mean SE and CI coverage of ``simulation_check`` output,
    with Monte Carlo standard errors; replicates that did not converge are left out
    (and counted)."""
    ok = sims[sims["converged"] & np.isfinite(sims["log_or"])]
    r = len(ok)
    err = ok["log_or"] - ok["truth"]
    cov = float(ok["covered"].mean()) if r else math.nan
    return {
        "n_reps": len(sims),
        "n_used": r,
        "bias": float(err.mean()),
        "bias_mcse": float(err.std(ddof=1) / math.sqrt(r)) if r > 1 else math.nan,
        "emp_sd": float(ok["log_or"].std(ddof=1)),
        "mean_se": float(ok["se"].mean()),
        "coverage": cov,
        "coverage_mcse": math.sqrt(level * (1 - level) / r) if r else math.nan,
        "singular": int(ok["singular"].sum()),
    }


#: The conditional-logit engine (the registry's within-cluster engine).
WITHIN_ENGINE = registry.engine_names(scale=registry.WITHIN, family=registry.BINOMIAL)[0]
#: The models ``within_check`` fits, in its output's ``model`` column.
WITHIN_MODELS = ("glmm", "hybrid", WITHIN_ENGINE)


def _group_means(x: np.ndarray, ok: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's group mean of ``x`` over the rows where ``ok`` (0 where none)."""
    n = np.bincount(groups, weights=ok.astype(float))
    total = np.bincount(groups, weights=np.where(ok, x, 0.0))
    mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
    return mean[groups]


def within_check(
    spec,
    n_reps: int,
    seed: int | np.random.SeedSequence | np.random.Generator,
    *,
    nagq: int = 1,
    level: float = 0.95,
) -> pd.DataFrame:
    """The plain GLMM, the hybrid GLMM and conditional logit on simulated cohorts.

    Each replicate is ``simulate_arrays(spec, child seed)`` (independent children of
    ``seed``, as in ``simulation_check``), with the exposure ``spec.exposure`` and the
    outcome new_syndesmophyte among eligible VUs. Fitted to every replicate:

    * ``glmm``: ``y ~ mri + (1|patient)`` (ladder step b; batched native fit);
    * ``hybrid``: ``y ~ mri_within + mri_between + (1|patient)``, the patient means
      taken over the eligible VUs (as ``syndesmo.derive.within`` on an analysis
      frame; batched native fit), reporting the ``mri_within`` coefficient;
    * ``clogit``: ``y ~ mri + (1|patient)`` by conditional logistic regression
      (one fit per replicate; a replicate whose fit fails counts as not converged).

    Returns the columns of ``simulation_check`` (model, rep, log_or, se, lower,
    upper, covered, sigma, converged, singular, n_obs, events, truth), one row per
    model × replicate; ``truth`` is the DGM's conditional log-OR, which all three
    estimate when ``propensity_correlation`` is 0 and only the within-patient ones
    otherwise.
    """
    if spec.n_readers != 1:
        raise ModelError("within_check needs a one-reader spec (n_readers = 1)")
    ss = as_seed_sequence(seed)
    Xs, Ys, masks, groups = [], [], [], None
    clogit_rows: list[dict] = []
    for child in ss.spawn(n_reps):
        arrays = simulate_arrays(spec, np.random.default_rng(child))
        d = derive_arrays(arrays, "new_syndesmophyte", spec.exposure, spec.threshold)
        if groups is None:
            groups = d["patient"]
        elif not np.array_equal(groups, d["patient"]):
            raise ModelError("simulated replicates do not share their patient × VU rows")
        ok = d["eligible"]
        x = np.where(ok, d["x"], 0.0)
        y = np.where(ok, d["y"], 0.0)
        between = _group_means(x, ok, groups)
        Xs.append(np.stack([x, np.where(ok, x - between, 0.0), between], axis=-1))
        Ys.append(y)
        masks.append(ok)
        frame = pd.DataFrame({"y": y[ok], "mri": x[ok], "patient": groups[ok]})
        try:
            cl = fit("y ~ mri + (1|patient)", frame, engine=WITHIN_ENGINE)
        except (ModelError, ArithmeticError, np.linalg.LinAlgError, ValueError):
            cl = None
        ok_fit = cl is not None and cl.converged
        clogit_rows.append(
            {
                "log_or": float(cl.params["mri"]) if ok_fit else math.nan,
                "se": float(cl.bse["mri"]) if ok_fit else math.nan,
                "converged": ok_fit,
                "n_obs": int(ok.sum()),
                "events": int(y[ok].sum()),
            }
        )
    Y, M, XX = np.stack(Ys), np.stack(masks), np.stack(Xs)
    truth = true_parameters(spec)["log_or_new"]
    z = stats.norm.ppf(0.5 + level / 2.0)
    ones = np.ones_like(Y)[..., None]

    def table(name, est, se, **cols) -> pd.DataFrame:
        est, se = np.asarray(est, dtype=float), np.asarray(se, dtype=float)
        return pd.DataFrame(
            {
                "model": name,
                "rep": np.arange(n_reps),
                "log_or": est,
                "se": se,
                "lower": est - z * se,
                "upper": est + z * se,
                "covered": (est - z * se <= truth) & (truth <= est + z * se),
                **cols,
                "truth": truth,
            }
        )

    out = []
    for name, X, names in (
        ("glmm", np.concatenate([ones, XX[..., :1]], axis=-1), ["Intercept", "mri"]),
        (
            "hybrid",
            np.concatenate([ones, XX[..., 1:]], axis=-1),
            ["Intercept", "mri_within", "mri_between"],
        ),
    ):
        many = fit_many(X, Y, groups, mask=M, nagq=nagq, names=names)
        out.append(
            table(
                name,
                many.params[:, 1],
                many.bse[:, 1],
                sigma=many.sigma,
                converged=many.converged,
                singular=many.singular,
                n_obs=many.n_obs,
                events=many.n_events,
            )
        )
    cl = pd.DataFrame(clogit_rows)
    out.append(
        table(
            WITHIN_ENGINE,
            cl["log_or"],
            cl["se"],
            sigma=math.nan,
            converged=cl["converged"].to_numpy(),
            singular=False,
            n_obs=cl["n_obs"].to_numpy(),
            events=cl["events"].to_numpy(),
        )
    )
    return pd.concat(out, ignore_index=True)
