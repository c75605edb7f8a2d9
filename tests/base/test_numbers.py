"""Numbers as a manuscript prints them."""

from __future__ import annotations

import math

from syndesmo.numbers import fmt_p, fmt_ratio


def test_ratio_with_interval_and_without():
    assert fmt_ratio(1.854, 1.2149, 2.8301) == "1.85 (1.21–2.83)"
    assert fmt_ratio(2500.0, 3.1, math.inf) == ">999 (3.10–∞)"
    # an estimate whose interval could not be computed says so, not "(—–—)"
    assert fmt_ratio(2500.0, math.nan, math.nan) == ">999 (no CI)"
    assert fmt_ratio(1.5, math.nan, 2.0) == "1.50 (no CI)"
    assert fmt_ratio(math.nan, 1.0, 2.0) == "—"


def test_p_values():
    assert fmt_p(0.0341) == "0.034" and fmt_p(0.0002) == "<0.001" and fmt_p(math.nan) == "—"
