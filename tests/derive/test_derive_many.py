"""``derive_many`` (stacked cohorts of one spec, as power runs derive them) equals
``derive_arrays`` cohort by cohort for every outcome, reader rule and exposure kind."""

from __future__ import annotations

import numpy as np
import pytest

from syndesmo.derive.frame import derive_arrays, derive_many
from syndesmo.panel.spine import VU_LABELS
from syndesmo.simulate.cohort import CohortSpec, simulate_many

SPECS = [
    CohortSpec(n_patients=20),
    CohortSpec(
        n_patients=15,
        n_readers=2,
        mri_missing_rate=0.15,
        xray_missing_rate=0.15,
        vus=tuple(VU_LABELS),
    ),
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("outcome", ["new_syndesmophyte", "growth"])
@pytest.mark.parametrize("readers", ["mean", "agree", "per_reader"])
@pytest.mark.parametrize("exposure", ["w0", "any", "max_score"])
def test_derive_many_equals_derive_arrays(spec, outcome, readers, exposure):
    sims = simulate_many(spec, np.random.SeedSequence(11).spawn(4))
    many = derive_many(sims, outcome, exposure, 1.0, readers)
    for arrays, got in zip(sims, many, strict=True):
        want = derive_arrays(arrays, outcome, exposure, 1.0, readers)
        assert list(got) == list(want)
        for key, value in want.items():
            assert got[key].dtype == value.dtype, key
            assert np.array_equal(got[key], value, equal_nan=True), key


def test_derive_many_falls_back_for_cohorts_with_other_rows():
    a = simulate_many(CohortSpec(n_patients=6), [1])[0]
    b = simulate_many(CohortSpec(n_patients=9), [2])[0]
    got = derive_many([a, b])
    assert [len(d["y"]) for d in got] == [len(a["patient"]), len(b["patient"])]
    assert np.array_equal(got[1]["y"], derive_arrays(b)["y"], equal_nan=True)
