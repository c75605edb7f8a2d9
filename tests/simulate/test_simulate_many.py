"""``simulate_many`` (the stacked simulator of power runs) equals ``simulate_arrays``
cohort by cohort, array for array, on the branches the simulator has."""

from __future__ import annotations

import numpy as np
import pytest

from syndesmo.panel.spine import VU_LABELS
from syndesmo.simulate.cohort import CohortSpec, simulate_arrays, simulate_many

SPECS = [
    {"n_patients": 30},
    {
        "n_patients": 21,
        "n_readers": 2,
        "mri_missing_rate": 0.1,
        "xray_missing_rate": 0.15,
        "vus": tuple(VU_LABELS),
    },
    {
        "n_patients": 17,
        "mri_weeks": (0, 52),
        "xray_weeks": (0, 52, 104),
        "exposure": "any",
        "odds_ratio_arm_new": 1.5,
        "propensity_correlation": 0.4,
    },
]


@pytest.mark.parametrize("fields", SPECS)
def test_simulate_many_equals_simulate_arrays(fields):
    spec = CohortSpec(**fields)
    seeds = np.random.SeedSequence(7).spawn(5)
    many = simulate_many(spec, [np.random.default_rng(s) for s in seeds])
    assert len(many) == len(seeds)
    for seed, got in zip(seeds, many, strict=True):
        want = simulate_arrays(spec, np.random.default_rng(seed))
        assert list(got) == list(want)
        for key, value in want.items():
            assert got[key].dtype == value.dtype, key
            assert got[key].shape == value.shape, key
            assert np.array_equal(got[key], value, equal_nan=True), key


def test_simulate_many_shares_constant_rows_read_only():
    spec = CohortSpec(n_patients=5)
    one, two = simulate_many(spec, [1, 2])
    assert one["patient"] is two["patient"]
    with pytest.raises(ValueError):
        one["patient"][0] = 3
    assert simulate_many(spec, []) == []
