"""Performance edits to ``simulate_arrays`` must not change a single draw.

The digests below were computed with the simulator before its performance edits
(numpy's PCG64 streams), over every array it returns, for three specs that walk its
branches: no missing images and only mSASSS VUs; two readers, missing MRIs and
x-rays and thoracic VUs; other MRI weeks, another exposure and an arm effect. The
shipped cohort's byte-for-byte test (``test_simulate.py``) covers the default path.
The digests were made with the inflammation shares of the time (33.7% untreated,
12.0% treated), which ``OLD_SHARES`` keeps fixed.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from syndesmo.panel.spine import VU_LABELS
from syndesmo.simulate.cohort import CohortSpec, simulate_arrays

OLD_SHARES = {"inflammation_prevalence": 0.337, "inflammation_prevalence_treated": 0.12}

CASES = [
    (
        {"n_patients": 40},
        "d26466ac49024de53064e678f030a20ed103e47afd9efd0360a29dc407a8a08e",
    ),
    (
        {
            "n_patients": 33,
            "n_readers": 2,
            "mri_missing_rate": 0.1,
            "xray_missing_rate": 0.1,
            "vus": tuple(VU_LABELS),
        },
        "ac36ef9d7b02c82057485b639c6ce6b24be5d1c9ec4649fd4447c7e79845b0d2",
    ),
    (
        {"n_patients": 25, "mri_weeks": (0, 52), "exposure": "any", "odds_ratio_arm_new": 1.5},
        "3d9ea78f5b263939a5ea0fb71c2caa4dc6fdfc8bf67377fe25aee699884db9c0",
    ),
]


@pytest.mark.parametrize(("fields", "digest"), CASES)
def test_simulate_arrays_draws_are_unchanged(fields, digest):
    arrays = simulate_arrays(
        CohortSpec(**OLD_SHARES, **fields), np.random.default_rng(np.random.SeedSequence(99))
    )
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
        h.update(str(arrays[key].dtype).encode())
    assert h.hexdigest() == digest
