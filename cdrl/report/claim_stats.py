"""Statistics of the claims table (cdrl.report.claims): t-intervals over seeds, Welch, paired and
one-sample t-tests, ratios (of independent groups; of paired rounds, ``paired_ratio``, which
``cdrl bench`` also uses), and the verdict each gives against a claim's threshold.

Every rule is a two-sided test at level ``alpha`` written as a (1 - alpha) confidence interval
for the claim's effect; the verdict reads the interval against the claim's threshold:
``reproduced`` when it lies wholly on the claimed side, ``not reproduced`` when wholly on the
other, ``inconclusive`` when it covers the threshold or when a side has fewer than 2 values.

The Student-t distribution is computed here, so no SciPy is needed: the CDF through the
regularized incomplete beta function, ``P(|T| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2)``, by
the modified Lentz continued fraction (Numerical Recipes 6.4), quantiles by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["t_cdf", "t_ppf", "mean_ci", "welch", "Test", "one_group", "two_group", "ratio",
           "paired_ratio", "combine", "VERDICTS"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


# ------------------------------------------------------------------------- Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` (real, > 0) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on ``t_cdf`` to 1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def _p_two_sided(t: float, df: float) -> float:
    return 2.0 * t_cdf(-abs(t), df)


def _clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean_var(x: list[float]) -> tuple[float, float]:
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1) if len(x) > 1 else 0.0


def mean_ci(values, level: float = 0.95) -> tuple[float | None, float | None, float | None, int]:
    """``(mean, low, high, n)``: the t-interval of the mean over seeds (no interval if n < 2)."""
    x = _clean(values)
    if not x:
        return None, None, None, 0
    m, var = _mean_var(x)
    if len(x) < 2:
        return m, None, None, 1
    half = t_ppf(0.5 + level / 2.0, len(x) - 1) * math.sqrt(var / len(x))
    return m, m - half, m + half, len(x)


def welch(a, b) -> tuple[float, float, float, float]:
    """Welch's test of ``mean(a) - mean(b)``: ``(difference, standard error, df, t)``.
    Zero variance on both sides gives se = 0, t = +-inf (or 0 for equal means)."""
    a, b = _clean(a), _clean(b)
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    sa, sb = va / len(a), vb / len(b)
    se = math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1)) if se > 0 else \
        len(a) + len(b) - 2.0
    diff = ma - mb
    return diff, se, df, (diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf,
                                                                                          diff)))


# ------------------------------------------------------------------------- verdicts
@dataclass
class Test:
    """The effect's estimate and (1 - alpha) interval, the p-value against the threshold, the
    verdict and why."""
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    verdict: str = "inconclusive"
    reason: str = ""


def _side(low: float, high: float, target: float, better: str) -> str:
    """Verdict of an interval read against ``target`` (``better`` is the claimed side)."""
    above, below = low > target, high < target
    if not (above or below):
        return "inconclusive"
    return "reproduced" if (above if better == "higher" else below) else "not reproduced"


def _interval_test(est: float, se: float, df: float, target: float, better: str,
                   alpha: float) -> Test:
    half = t_ppf(1 - alpha / 2, df) * se
    t = (est - target) / se if se > 0 else (0.0 if est == target else math.inf)
    p = _p_two_sided(t, df)
    verdict = _side(est - half, est + half, target, better)
    why = "" if verdict != "inconclusive" else f"interval covers {target:g}"
    return Test(est, est - half, est + half, p, verdict, why)


def one_group(values, target: float, better: str, alpha: float) -> Test:
    """t-interval of one group's mean against ``target`` (one-sample test; also what a paired
    test runs on the differences)."""
    x = _clean(values)
    if len(x) < 2:
        return Test(x[0] if x else None, reason=f"{len(x)} seed(s): at least 2 needed")
    m, var = _mean_var(x)
    return _interval_test(m, math.sqrt(var / len(x)), len(x) - 1.0, target, better, alpha)


def two_group(a, b, better: str, rule: str, alpha: float) -> Test:
    """The claim ``a`` better than ``b`` (``better``: lower | higher), effect ``a - b``.
    ``paired`` takes ``a`` and ``b`` aligned by seed."""
    if rule == "paired":
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if _clean([x, y]) == [x, y]]
        return one_group([x - y for x, y in pairs], 0.0, better, alpha)
    a, b = _clean(a), _clean(b)
    if min(len(a), len(b)) < 2:
        est = (sum(a) / len(a) - sum(b) / len(b)) if a and b else None
        return Test(est, reason=f"{len(a)} vs {len(b)} seeds: at least 2 per side needed")
    if rule == "interval":
        (_, la, ha, _), (_, lb, hb, _) = mean_ci(a, 1 - alpha), mean_ci(b, 1 - alpha)
        diff = welch(a, b)[0]
        verdict = _side(la - hb, ha - lb, 0.0, better)
        return Test(diff, la - hb, ha - lb, None, verdict,
                    "intervals overlap" if verdict == "inconclusive" else "")
    diff, se, df, _ = welch(a, b)
    return _interval_test(diff, se, df, 0.0, better, alpha)


def ratio(a, b, min_ratio: float, rule: str, alpha: float) -> Test:
    """The claim ``mean(b) / mean(a) >= min_ratio`` for positive quantities (``a`` the faster):
    Welch on logs, estimate and interval as ratios of geometric means; ``interval`` instead
    bounds the ratio by the two sides' intervals."""
    a, b = _clean(a), _clean(b)
    if min(len(a), len(b)) < 2:
        est = (sum(b) / len(b)) / (sum(a) / len(a)) if a and b else None
        return Test(est, reason=f"{len(a)} vs {len(b)} seeds: at least 2 per side needed")
    if rule == "interval":
        (_, la, ha, _), (_, lb, hb, _) = mean_ci(a, 1 - alpha), mean_ci(b, 1 - alpha)
        low, high = lb / ha, (hb / la if la > 0 else math.inf)
        verdict = _side(low, high, min_ratio, "higher")
        return Test((sum(b) / len(b)) / (sum(a) / len(a)), low, high, None, verdict,
                    "" if verdict != "inconclusive" else f"interval covers {min_ratio:g}")
    diff, se, df, _ = welch([math.log(v) for v in b], [math.log(v) for v in a])
    t = _interval_test(diff, se, df, math.log(min_ratio), "higher", alpha)
    why = t.reason and f"interval covers {min_ratio:g}"
    return Test(math.exp(t.estimate), math.exp(t.low), math.exp(t.high), t.p_value, t.verdict,
                why)


def paired_ratio(a, b, min_ratio: float = 1.0, alpha: float = 0.05) -> Test:
    """The claim ``b / a >= min_ratio`` from paired measurements of positive quantities
    (``a[i]`` and ``b[i]`` taken side by side, e.g. one round of ``cdrl bench``): the estimate
    is the geometric mean of the ratios ``b[i] / a[i]``, the interval the (1 - alpha)
    t-interval of the mean log ratio (n - 1 degrees of freedom) exponentiated back, the p-value
    the one-sample t-test of the log ratios against ``log(min_ratio)``. Pairs with a missing,
    non-finite or non-positive side are left out; fewer than 2 pairs are inconclusive."""
    logs = [math.log(y / x) for x, y in zip(a, b, strict=True)
            if _clean([x, y]) == [x, y] and x > 0 and y > 0]
    if len(logs) < 2:
        return Test(math.exp(logs[0]) if logs else None,
                    reason=f"{len(logs)} paired round(s): at least 2 needed")
    t = one_group(logs, math.log(min_ratio), "higher", alpha)
    return Test(math.exp(t.estimate), math.exp(t.low), math.exp(t.high), t.p_value, t.verdict,
                t.reason and f"interval covers {min_ratio:g}")


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its parts (a conjunction): any part refuted refutes it."""
    if not verdicts:
        return "inconclusive"
    if "not reproduced" in verdicts:
        return "not reproduced"
    return "inconclusive" if "inconclusive" in verdicts else "reproduced"
