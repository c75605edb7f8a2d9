"""Two readers per VU: the nested fit's interval covers, the per-reader fit's is too narrow.

A seeded, small version of ``benchmarks/coverage_readers.py`` (1000 replicates there,
with the table in ``benchmarks/README.md``). Here 30 replicates of 60 patients × 12 VUs
× 2 readers (true conditional log OR 0.7, patient SD 1.0, VU SD 1.2):

* the nested fit by multilevel AGQ (exact ML) covers the truth as often as a 95%
  interval should: at least 25 of 30 (the lower 1% quantile of Binomial(30, 0.95));
* the per-reader fit without the VU level, which counts each VU twice, gives a smaller
  SE than the nested fit on the same data in nearly every replicate, and an estimate
  pulled towards 0 (it averages over the VU effect it leaves out).
"""

from __future__ import annotations

import numpy as np
import pytest
from multilevel_cases import reader_coverage
from scipy import stats

NESTED = "nested (1|patient/vu), AGQ 7"
PER_READER = "per reader, (1|patient) only"
N_REPS = 30


@pytest.fixture(scope="module")
def runs():
    estimators = {
        NESTED: ("y ~ mri + arm + reader + (1|patient/vu)", 7),
        PER_READER: ("y ~ mri + arm + reader + (1|patient)", 1),
    }
    return reader_coverage(N_REPS, 60, seed=20261129, estimators=estimators)


def test_nested_interval_covers_like_a_95_percent_interval(runs):
    nested = runs[runs["estimator"] == NESTED]
    assert nested["converged"].all()
    floor = stats.binom.ppf(0.01, N_REPS, 0.95)
    assert nested["covered"].sum() >= floor


def test_per_reader_interval_is_too_narrow_and_attenuated(runs):
    nested = runs[runs["estimator"] == NESTED].set_index("rep")
    per_reader = runs[runs["estimator"] == PER_READER].set_index("rep")
    narrower = (per_reader["se"] < nested["se"]).mean()
    assert narrower >= 0.9
    shift = per_reader["estimate"] - nested["estimate"]
    assert shift.mean() < 0 and np.mean(shift < 0) >= 0.8
