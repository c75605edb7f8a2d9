"""Monte Carlo error of a simulated proportion: the Wilson interval and an acceptance region.

A power simulation estimates a rejection rate from ``n`` replicates, so its answer
carries binomial Monte Carlo error. These two helpers state that error: the
interval reported beside every power, and the range of rejection counts a type I
error check accepts. They know nothing of models or cohorts.
"""

from __future__ import annotations

import math

from scipy import special


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (Wilson, JASA 1927)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = special.ndtri(0.5 + level / 2.0)  # normal quantile
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lower = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, not rounding noise
    upper = 1.0 if k == n else min(1.0, centre + half)
    return (lower, upper)


def binomial_acceptance_region(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """Counts ``[lo, hi]`` holding at least ``level`` of a Binomial(n, p) with equal tails.

    For a type I error check: with ``n`` replicates at nominal ``alpha = p``, a
    rejection count outside ``[lo, hi]`` has probability at most ``1 - level``.
    """
    from scipy import stats  # only here: importing scipy.stats costs a cold power run

    tail = (1.0 - level) / 2.0
    lo = int(stats.binom.ppf(tail, n, p))
    hi = int(stats.binom.isf(tail, n, p))
    if stats.binom.sf(hi, n, p) > tail:  # isf may round down: keep the upper tail <= tail
        hi += 1
    return lo, hi
