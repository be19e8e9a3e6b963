"""How far a proportion measured on few examples can be trusted: the Wilson score interval.

A validation accuracy of 5 out of 6 reads as 83%, but the notes could as well have come
from a classifier that is right 44% or 97% of the time. The Wilson interval stays inside
[0, 1] and keeps a sensible width at 0 or n successes, where the textbook
``p ± z·sqrt(p(1-p)/n)`` collapses to a single point.
"""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``total`` (e.g. notes classified correctly).

    Args:
        successes: how many of the ``total`` trials succeeded (0..total).
        total: trials (at least 1).
        confidence: the interval's coverage (0.95: a 95% interval, z = 1.96).

    Returns:
        (lower, upper) bounds of the proportion, within [0, 1].

    Raises:
        ValueError: ``total`` under 1, ``successes`` outside 0..total, or ``confidence`` outside (0, 1).
    """
    if total < 1:
        raise ValueError("a proportion needs at least one trial")
    if not 0 <= successes <= total:
        raise ValueError(f"successes must lie in 0..{total}, not {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / total
    z2_n = z * z / total
    centre = (share + z2_n / 2) / (1 + z2_n)
    half_width = z / (1 + z2_n) * math.sqrt(share * (1 - share) / total + z2_n / (4 * total))
    return max(0.0, centre - half_width), min(1.0, centre + half_width)
