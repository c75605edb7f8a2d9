"""The designs trials run, as stacks of replicate designs for ``run_chunk``.

Each builder turns the simulated arrays (``simulate_arrays``) and their derived
outcomes (``derive_arrays``) of one chunk's ``R`` replicates into one model stack —
``X (R, n, p)``, ``Y (R, n)``, ``mask (R, n)``, the grouping of the rows, the column
``names`` and the ``term`` whose coefficient is tested:

* :func:`reader_design` — **two or more readers**: every reading is a row, nested in
  its VU within its patient: ``y ~ mri + arm + C(reader) + (1|patient/vu)``. The
  readers' readings of one VU share the VU's true state, so the rows of one VU are
  correlated beyond the patient; the per-reading model with ``(1|patient)`` alone
  treats them as independent and its Wald CI is too narrow (coverage 0.615 against
  0.95 in ``benchmarks/coverage_readers_results.md``).
  In ``CohortSpec``'s reader model a reading is the true score moved by one step with
  a small probability (``reader_mri_error``, ``reader_corner_error``), so two
  readings of a VU nearly always agree on the outcome: the VU-within-patient SD is
  large and poorly determined (often estimated at a boundary), and the fixed effects
  are on the scale conditional on that VU effect, larger in magnitude than the
  patient-conditional OR of the spec. So with several readers the true OR of the
  fit is known only under the null (OR 1). There its Wald test is valid but
  **conservative** where readers rarely disagree: the log OR rests on the few VUs
  whose two readings disagree. Measured at OR 1, 400 studies of 187 patients: 2
  rejections with 5% corner misreads and 3 with 15% (MRI reader error 0.1), below
  the exact 99% region (10–32) around alpha 0.05; 17 with 30% misreads of MRI and
  corner scores, inside it (``tests/powersim/test_designs.py`` checks both sides).
  Earlier, 200 studies each: 4 rejections at 50 patients and 1 at 120
  (``benchmarks/power_designs_results.md``), the VU SD estimated around 25 and the
  SE about twice the empirical SD of the estimates (30 studies of 120 patients: SD
  0.55, median SE 1.14; nAGQ 5 gave 0.59 and 1.05). Its power on these readings is
  near 0 even when readers disagree often: at 187 patients and OR 2 (40 studies),
  0%, 2.5% and 2.5% with corner misreads of 5%, 15% and 30%, against 63%, 55% and
  48% for ``"vu"`` on the readers' mean. A binary true state read twice is not a
  normal VU effect: the fit puts the VU SD at 15–30 (one such fit: SE 0.51 against
  0.23 for the mean model).
* :func:`hybrid_design` — the **within–between GLMM** (Neuhaus & Kalbfleisch,
  Biometrics 1998;54:638–45; ``syndesmo.derive.within``):
  ``y ~ mri_within + mri_between + arm + (1|patient)``, the patient means taken over
  each replicate's eligible VUs. Its ``mri_within`` coefficient is the within-patient
  OR, which a patient-level confounder (``CohortSpec.propensity_correlation``) does
  not bias.
* :func:`course_design` — the **MRI course**: does treatment lower VU inflammation?
  See :func:`course_design` for the model and why.

``clogit`` needs no stack of its own: it is fitted per replicate to the rows of the
VU-level stack (``syndesmo.engines.clogit`` drops the patient-level columns, which
the conditional likelihood cannot estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.derive.frame import combine_readers
from syndesmo.errors import ModelError
from syndesmo.simulate.covariates import covariate_values

#: Name of the exposure term (as in ``analysis_frame``) and the arm term.
TERM, ARM_TERM = "mri", "arm"
#: The within and between parts of the exposure in the hybrid GLMM.
WITHIN_TERM, BETWEEN_TERM = "mri_within", "mri_between"
#: Bars of the nested reader model.
READER_BARS = "(1|patient/vu)"
#: Name of the baseline-inflammation column of the course model.
BASELINE_TERM = "inflamed_baseline"


def reader_names(n_readers: int) -> list[str]:
    """Dummy columns of ``C(reader)`` as ``sy.fit`` names them for readers 1 … n
    (``simulate_cohort`` numbers readers from 1; reader 1 is the reference)."""
    return [f"C(reader)[T.{k}]" for k in range(2, int(n_readers) + 1)]


def reader_design(
    sims: Sequence[dict], derived: Sequence[dict], adjust: Sequence[str], n_readers: int
) -> dict[str, Any]:
    """Stack the per-reading model of each replicate, readings nested in VUs.

    ``derived`` must come from ``derive_arrays(..., readers="per_reader")``: one row
    per VU × reader, each with the reader's own outcome, exposure and eligibility.
    Columns: intercept, ``mri``, the covariates ``adjust``, then one dummy per reader
    after the first. ``groups`` is a frame of ``patient`` and ``vu`` codes for the
    bars ``(1|patient/vu)``.
    """
    first = derived[0]
    n = len(first["y"])
    for d in derived[1:]:
        if len(d["y"]) != n or not np.array_equal(d["patient"], first["patient"]):
            raise ModelError("replicates of one spec must have the same rows (VUs × readers)")
    dummies = reader_names(n_readers)
    names = ["Intercept", TERM, *adjust, *dummies]
    R = len(sims)
    X = np.zeros((R, n, len(names)))
    reader = np.asarray(first["reader"])
    X[:, :, 0] = 1.0
    X[:, :, 1] = np.stack([d["x"] for d in derived])
    for r, (a, d) in enumerate(zip(sims, derived, strict=True)):
        for j, cov in enumerate(adjust, start=2):
            X[r, :, j] = covariate_values(cov, a, d)
    for k, _ in enumerate(dummies, start=1):
        X[:, :, 1 + len(adjust) + k] = reader == k
    mask = np.stack([d["eligible"] for d in derived]) & np.isfinite(X).all(axis=2)
    Y = np.where(mask, np.stack([d["y"] for d in derived]), 0.0)
    X[~mask] = 0.0
    groups = pd.DataFrame({"patient": first["patient"], "vu": first["vu"]})
    return {"X": X, "Y": Y, "mask": mask, "groups": groups, "names": names, "term": TERM}


def group_means(x: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's patient mean of ``x`` over the rows in ``mask`` (0 where none), per
    replicate: ``x`` and ``mask`` are ``(R, n)``, ``groups`` ``(n,)`` codes."""
    G = int(groups.max()) + 1
    R = x.shape[0]
    idx = (np.arange(R)[:, None] * G + groups[None, :]).ravel()
    w = mask.astype(float).ravel()
    n = np.bincount(idx, weights=w, minlength=R * G)
    total = np.bincount(idx, weights=np.where(mask, x, 0.0).ravel(), minlength=R * G)
    mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0).reshape(R, G)
    return np.take_along_axis(mean, np.broadcast_to(groups, x.shape), axis=1)


def hybrid_design(vu: dict[str, Any]) -> dict[str, Any]:
    """The within–between GLMM's stack from the VU-level stack (``_vu_design``):
    ``mri`` is split into ``mri_within`` (the VU's deviation from its patient's mean
    over the VUs analysed) and ``mri_between`` (that mean); other columns stay."""
    names = list(vu["names"])
    j = names.index(TERM)
    x, mask = vu["X"][..., j], vu["mask"]
    between = group_means(x, mask, vu["groups"])
    within = np.where(mask, x - between, 0.0)
    between = np.where(mask, between, 0.0)
    X = np.concatenate(
        [vu["X"][..., :j], within[..., None], between[..., None], vu["X"][..., j + 1 :]], axis=-1
    )
    names = [*names[:j], WITHIN_TERM, BETWEEN_TERM, *names[j + 1 :]]
    return {**vu, "X": X, "names": names, "term": WITHIN_TERM}


def course_week(spec) -> int:
    """The MRI week at which the course analysis compares the arms.

    The last MRI week after baseline (the first MRI week) at which the arms still
    differ in treatment: the last one at or before ``crossover_week`` (placebo
    patients start infliximab after it), or the last MRI week if none is after the
    crossover. In ASSERT (MRI weeks 0, 24, 102; crossover 24) that is week 24: at
    week 102 both arms are on infliximab, so the last week's arm contrast would test
    nothing the trial randomised.

    Raises ``ModelError`` if no MRI week after baseline is at or before the crossover.
    """
    weeks = [int(w) for w in spec.mri_weeks]
    later = [w for w in weeks[1:] if w <= int(spec.crossover_week)]
    if len(weeks) < 2 or not later:
        raise ModelError(
            f"the course analysis needs an MRI week after baseline (week {weeks[0]}) at or "
            f"before the crossover (week {spec.crossover_week}); MRI weeks: "
            f"{', '.join(map(str, weeks))}"
        )
    return later[-1]


def course_design(sims: Sequence[dict], spec, threshold: float) -> dict[str, Any]:
    """The MRI-course model's stack: ``inflamed_w ~ arm + inflamed_baseline + (1|patient)``.

    One row per VU with an MRI at baseline and at week ``w = course_week(spec)``;
    a VU is inflamed when its ASspiMRI-a score (the mean of the readers' scores with
    several readers, as ``derive``'s ``"mean"`` rule) is at least ``threshold``. The
    tested term is ``arm`` (infliximab vs placebo): its log OR is below 0 when
    treatment lowers inflammation.

    **Why this model and not the full course GLMM.** ``sy.mri_course`` fits
    ``inflamed ~ C(week) * arm + (1|patient/vu)`` over all MRI weeks; the treatment
    question is its ``C(week)[T.w]:arm`` interaction. With two weeks, baseline and
    ``w``, the randomised comparison is the same question asked as an ANCOVA: the arm
    effect on inflammation at ``w`` given the VU's baseline state. Randomisation
    makes the arm independent of everything at baseline, so the test holds its size
    whatever the model's fit to the baseline dependence (the null, equal prevalences,
    gives arm log OR 0 exactly); adjusting for the baseline state takes out much of the
    VU-level persistence (``inflammation_persistence``) and gains precision, as
    ANCOVA does for a continuous outcome (Vickers & Altman, BMJ 2001;323:1123-4).
    With one post-baseline row per VU the VU level of ``(1|patient/vu)`` is the
    residual, so ``(1|patient)`` is the whole structure, and the model is a
    random-intercept GLMM that the batched ``fit_many`` fits for all replicates at
    once — two orders of magnitude faster than one three-level fit per replicate.
    The course analysis ignores ``outcome``, ``exposure`` and ``adjust``.
    """
    week = course_week(spec)
    weeks = [int(w) for w in spec.mri_weeks]
    j0, jw = 0, weeks.index(week)
    names = ["Intercept", ARM_TERM, BASELINE_TERM]
    units = [combine_readers(a, "mean") for a in sims]
    n = len(units[0]["patient"])
    R = len(sims)
    X = np.zeros((R, n, 3))
    Y = np.zeros((R, n))
    mask = np.zeros((R, n), dtype=bool)
    excluded = np.zeros(R, dtype=int)
    for r, (a, u) in enumerate(zip(sims, units, strict=True)):
        mri = np.asarray(u["mri"], dtype=float)
        keep = np.isfinite(mri[:, j0]) & np.isfinite(mri[:, jw])
        X[r, :, 0] = 1.0
        X[r, :, 1] = np.asarray(a["patient_arm"])[u["patient"]]
        X[r, :, 2] = np.where(keep, mri[:, j0] >= threshold, 0.0)
        Y[r] = np.where(keep, mri[:, jw] >= threshold, 0.0)
        X[r][~keep] = 0.0
        mask[r] = keep
        excluded[r] = n - int(keep.sum())
    return {
        "X": X,
        "Y": Y,
        "mask": mask,
        "groups": np.asarray(units[0]["patient"]),
        "names": names,
        "term": ARM_TERM,
        "excluded": excluded,
        "week": week,
    }
