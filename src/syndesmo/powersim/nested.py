"""Nested cohorts: one seed gives cohorts of every size, each the first patients of the next.

A sample-size search compares the power at several numbers of patients. With
common random numbers (the same replicate seeds at every n) the comparison is
sharp only if the cohorts themselves are shared: the cohort of n patients should
be the first n patients of the cohort of n' > n. ``simulate_arrays`` draws each
variable for all patients at once, so the same seed at two sizes gives unrelated
cohorts. ``nested_cohort`` therefore builds a cohort from *blocks*:

* block ``b`` of replicate seed ``s`` is ``simulate_arrays(spec with n_patients =
  block, SeedSequence(s.entropy, spawn_key=s.spawn_key + (b,)))``, so blocks are
  independent and a block never changes when more are drawn;
* the cohort of ``n`` patients takes the first ``round(n · p_infliximab)``
  infliximab patients and the first ``n − round(n · p_infliximab)`` placebo
  patients of blocks 0, 1, 2, … (drawing as many blocks as needed), in block order.

Why this is a cohort of the data-generating model of ``n`` patients: in
``syndesmo.simulate.cohort`` every patient's draws (random effects, MRI, x-rays,
covariates, readers, missing images) are independent of the other patients' given
the patient's arm, and identically distributed given the arm; only the arm
allocation ties patients together (exactly ``round(n · p)`` on infliximab). Taking
the first k patients of each arm from independent blocks gives k independent
patients of that arm, so the cohort has the model's distribution up to the order of
the patients, which no analysis here depends on. It is not the cohort
``simulate_arrays`` makes from the same seed (that one draws differently), so the
power at n agrees with ``power(spec.replace(n_patients=n))`` in distribution, not
replicate by replicate.
"""

from __future__ import annotations

import math

import numpy as np

from syndesmo.errors import ModelError
from syndesmo.simulate.cohort import simulate_arrays

#: Patients per block (default of ``sample_size``): large enough that the fixed cost
#: of one ``simulate_arrays`` call is small, small enough that little is wasted.
DEFAULT_BLOCK = 100

#: Keys of ``simulate_arrays`` that are the same for every block.
_SHARED = ("mri_weeks", "xray_weeks")


def block_seed(seed: np.random.SeedSequence, b: int) -> np.random.SeedSequence:
    """The seed of block ``b`` of a replicate: the ``b``-th child of ``seed``, made
    without touching ``seed``'s spawn counter (so it is the same however often asked)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, b))


def arm_counts(n: int, p_infliximab: float) -> tuple[int, int]:
    """(infliximab, placebo) patients of a cohort of ``n``: as ``simulate_arrays``."""
    k = round(n * p_infliximab)
    return k, n - k


def nested_cohort(spec, seed: np.random.SeedSequence, block: int = DEFAULT_BLOCK) -> dict:
    """The cohort of ``spec.n_patients`` patients for replicate ``seed``, in the layout of
    ``simulate_arrays`` (rows patient × VU × reader; ``patient_*`` arrays per patient).

    Raises ``ModelError`` if a block of ``block`` patients has no patient of an arm
    the cohort needs (``p_infliximab`` too close to 0 or 1 for the block size).
    """
    need = arm_counts(int(spec.n_patients), float(spec.p_infliximab))
    per_block = arm_counts(int(block), float(spec.p_infliximab))
    for arm, (k, m) in enumerate(zip(need, per_block, strict=True)):
        if k > 0 and m == 0:
            raise ModelError(
                f"nested cohorts: a block of {block} patients has no "
                f"{'infliximab' if arm == 0 else 'placebo'} patient at p_infliximab "
                f"{spec.p_infliximab:g}; use a larger block"
            )
    n_blocks = max(math.ceil(k / m) if k > 0 else 0 for k, m in zip(need, per_block, strict=True))
    block_spec = spec.replace(n_patients=int(block))
    blocks = [
        simulate_arrays(block_spec, np.random.default_rng(block_seed(seed, b)))
        for b in range(max(n_blocks, 1))
    ]
    return _take_first(blocks, need)


def _take_first(blocks: list[dict], need: tuple[int, int]) -> dict:
    """Concatenate the blocks and keep the first ``need[0]`` infliximab and ``need[1]``
    placebo patients, in block order."""
    arm = np.concatenate([b["patient_arm"] for b in blocks])
    P = len(arm)
    order = np.arange(P)
    inf = order[arm == 1][: need[0]]
    pla = order[arm == 0][: need[1]]
    keep = np.sort(np.concatenate([inf, pla]))
    rows_per = len(blocks[0]["patient"]) // len(blocks[0]["patient_arm"])  # VUs × readers
    rows = (keep[:, None] * rows_per + np.arange(rows_per)[None, :]).ravel()
    out: dict[str, np.ndarray] = {}
    for key, first in blocks[0].items():
        if key in _SHARED:
            out[key] = first
        elif key == "patient":
            continue
        else:
            out[key] = np.concatenate([b[key] for b in blocks])[
                keep if key.startswith("patient_") else rows
            ]
    out["patient"] = np.repeat(np.arange(len(keep), dtype=np.int64), rows_per)
    return out
