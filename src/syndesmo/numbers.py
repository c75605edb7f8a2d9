"""Numbers as text, as journals print them: p-values, ratios with intervals, percentages."""

from __future__ import annotations

import numpy as np


def fmt_p(p: float) -> str:
    """A p-value as journals print it: ``0.034``, ``<0.001``, ``—`` when missing."""
    if p is None or not np.isfinite(p):
        return "—"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def fmt_ratio(est: float, lower: float, upper: float, digits: int = 2) -> str:
    """``1.85 (1.21–2.83)``; ``—`` when the estimate is missing, ``>999 (no CI)`` when
    the interval is."""
    if est is None or not np.isfinite(est):
        return "—"
    if lower is None or upper is None or np.isnan(lower) or np.isnan(upper):
        return f"{one_value(est, digits)} (no CI)"
    return f"{one_value(est, digits)} ({one_value(lower, digits)}–{one_value(upper, digits)})"


def one_value(v: float, digits: int = 2) -> str:
    """One ratio of ``fmt_ratio``: ``1.85``, ``>999``, ``∞``."""
    if not np.isfinite(v):
        return "∞" if v > 0 else "—"
    if v >= 1000:
        return ">999"
    return f"{v:.{digits}f}"


def fmt_pct(num: float, den: float, digits: int = 1) -> str:
    """``12/340 (3.5%)``."""
    if not den:
        return f"{int(num)}/{int(den)} (—)"
    return f"{int(num)}/{int(den)} ({100.0 * num / den:.{digits}f}%)"
