"""How many seeds a two-run comparison needs, from a pilot's spread over seeds.

    python scripts/power_seeds.py --a 45.1 47.9 --b 60.2 58.0 --effect 0.10 --power 0.8

The claims' ``welch`` rule (``cdrl.report.claim_stats``) compares two runs over their seeds. For
``n`` seeds a side with a common standard deviation ``sd`` (pooled from the pilot), the
difference of means has standard error ``sd * sqrt(2 / n)`` and, approximately, ``2n - 2``
degrees of freedom. Two numbers follow:

* **power**: the probability that the two-sided test at ``alpha`` finds a true difference of
  ``delta``: ``P(|T'| > t_(1 - alpha/2))`` for ``T'`` noncentral t with ``2n - 2`` degrees of
  freedom and noncentrality ``delta / se`` (SciPy's ``nct``; the pooled-variance test's exact
  power, which Welch's matches closely for equal n);
* **width**: the full width of the (1 - alpha) interval, ``2 t_(1 - alpha/2) se``. A claim
  decided "inconclusive" is still informative when that width is small against the FID.

``seeds_needed`` returns the smallest ``n`` (at least ``min_n``) meeting both a power target for
``delta`` and a width target, so a run is planned before its seeds are spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cdrl.report.claim_stats import t_ppf

__all__ = ["pooled_sd", "power", "ci_width", "seeds_needed", "SeedPlan"]


def pooled_sd(*groups) -> float:
    """The pooled standard deviation of groups of values (each with at least 2)."""
    num = den = 0
    for g in groups:
        x = [float(v) for v in g]
        if len(x) < 2:
            raise ValueError(f"a pilot group needs at least 2 values, got {x}")
        m = sum(x) / len(x)
        num += sum((v - m) ** 2 for v in x)
        den += len(x) - 1
    return math.sqrt(num / den)


def _se_df(sd: float, n: int) -> tuple[float, float]:
    return sd * math.sqrt(2.0 / n), 2.0 * n - 2.0


def power(sd: float, delta: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided test at ``alpha`` for a true difference ``delta``, n seeds a side."""
    from scipy.stats import nct, norm

    se, df = _se_df(sd, n)
    if se == 0:
        return 1.0
    crit, nc = t_ppf(1 - alpha / 2, df), abs(delta) / se
    p = float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))
    # SciPy's noncentral t gives NaN far in its tail (large nc); there the power is the normal
    # approximation's, which is 1 to many digits.
    return p if math.isfinite(p) else float(norm.sf(crit - nc))


def ci_width(sd: float, n: int, alpha: float = 0.05) -> float:
    """Full width of the (1 - alpha) interval of the difference of means, n seeds a side."""
    se, df = _se_df(sd, n)
    return 2.0 * t_ppf(1 - alpha / 2, df) * se


@dataclass(frozen=True)
class SeedPlan:
    n: int            # seeds per side
    power: float      # at delta
    width: float      # full (1 - alpha) interval width of the difference
    by: str           # which target set n ("power", "width" or "minimum")


def seeds_needed(sd: float, delta: float, max_width: float | None = None, alpha: float = 0.05,
                 target_power: float = 0.8, min_n: int = 5, max_n: int = 200) -> SeedPlan:
    """The smallest n >= ``min_n`` with power >= ``target_power`` at ``delta`` and interval
    width <= ``max_width`` (if given)."""
    if sd < 0 or delta <= 0:
        raise ValueError(f"need sd >= 0 and delta > 0, got sd={sd}, delta={delta}")
    for n in range(max(2, min_n), max_n + 1):
        p, w = power(sd, delta, n, alpha), ci_width(sd, n, alpha)
        if p >= target_power and (max_width is None or w <= max_width):
            by = "minimum" if n == min_n else (
                "power" if power(sd, delta, n - 1, alpha) < target_power else "width")
            return SeedPlan(n, p, w, by)
    raise ValueError(f"more than {max_n} seeds a side would be needed (sd {sd:.4g}, delta "
                     f"{delta:.4g}, max width {max_width}): the pilot spread is too large")
