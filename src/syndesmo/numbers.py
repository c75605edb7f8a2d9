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
    """``1.85 (1.21–2.83)``; ``—`` when the estimate is missing."""
    if est is None or not np.isfinite(est):
        return "—"

    def one(v: float) -> str:
        if not np.isfinite(v):
            return "∞" if v > 0 else "—"
        if v >= 1000:
            return ">999"
        return f"{v:.{digits}f}"

    return f"{one(est)} ({one(lower)}–{one(upper)})"


def fmt_pct(num: float, den: float, digits: int = 1) -> str:
    """``12/340 (3.5%)``."""
    if not den:
        return f"{int(num)}/{int(den)} (—)"
    return f"{int(num)}/{int(den)} ({100.0 * num / den:.{digits}f}%)"
