"""Shared test fixtures.

R-backed tests use the ``r_lme4`` fixture. Locally a missing R (or pymer4) skips
them; when ``SYNDESMO_REQUIRE_R=1`` (set by ``.ci/run``) a missing R is a failure,
so CI can never pass by silently skipping the comparisons with lme4.
"""

from __future__ import annotations

import os

import pytest


def _r_available() -> tuple[bool, str]:
    try:
        import rpy2.robjects as ro
        from rpy2.robjects.packages import importr

        importr("lme4")
        importr("geepack")
        ro.r("1")
    except Exception as exc:  # noqa: BLE001 - any failure means R is unusable
        return False, f"R with lme4 and geepack is not usable: {exc}"
    return True, ""


@pytest.fixture(scope="session")
def r_lme4():
    """Skip (locally) or fail (SYNDESMO_REQUIRE_R=1) when R/lme4/geepack are missing."""
    ok, why = _r_available()
    if not ok:
        if os.environ.get("SYNDESMO_REQUIRE_R") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return True
