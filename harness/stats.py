"""Statistics over trials: medians, bootstrap intervals, variation, and the
tests behind every verdict (compare) and every rank (report).

Pure functions over lists of floats; no I/O. Bootstrap resampling uses a
fixed seed so that the same inputs always give the same intervals.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

BOOTSTRAP_N = 2000
CONFIDENCE = 0.95
UNSTABLE_CV = 0.10
SEED = 20261123


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def cv(xs: list[float]) -> float | None:
    """Coefficient of variation (sample stdev / mean); None below two values."""
    if len(xs) < 2:
        return None
    m = statistics.fmean(xs)
    if m == 0:
        return 0.0 if all(x == 0 for x in xs) else None
    return statistics.stdev(xs) / abs(m)


def _quantile(sorted_xs: list[float], q: float) -> float:
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_ci(xs: list[float], stat=statistics.median, n: int = BOOTSTRAP_N,
                 confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `stat`; a single value gives a zero-width interval."""
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0], xs[0]
    rng = random.Random(seed)
    k = len(xs)
    boots = sorted(stat([xs[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    a = (1 - confidence) / 2
    return _quantile(boots, a), _quantile(boots, 1 - a)


def ratio_ci(base: list[float], cur: list[float], n: int = BOOTSTRAP_N, confidence: float = CONFIDENCE,
             seed: int = SEED) -> tuple[float, float] | None:
    """Bootstrap interval of median(cur) / median(base) - 1 (relative change)."""
    if not base or not cur:
        return None
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = statistics.median([base[rng.randrange(len(base))] for _ in base])
        c = statistics.median([cur[rng.randrange(len(cur))] for _ in cur])
        if b == 0:
            continue
        out.append(c / b - 1)
    if not out:
        return None
    out.sort()
    a = (1 - confidence) / 2
    return _quantile(out, a), _quantile(out, 1 - a)


def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test.

    Exact (all rank splits enumerated) for small samples without ties, the
    normal approximation with tie correction otherwise.
    """
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return None
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(pooled)
    i = 0
    ties = []
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        r = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = r
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    r1 = sum(r for r, (_, g) in zip(ranks, pooled) if g == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    u = min(u1, n1 * n2 - u1)
    if not ties and n1 + n2 <= 16:
        from itertools import combinations
        total = 0
        count = 0
        for combo in combinations(range(1, n1 + n2 + 1), n1):
            total += 1
            uc = sum(combo) - n1 * (n1 + 1) / 2
            if min(uc, n1 * n2 - uc) <= u:
                count += 1
        return min(1.0, count / total)
    mu = n1 * n2 / 2
    tie_term = sum(t ** 3 - t for t in ties) / ((n1 + n2) * (n1 + n2 - 1)) if ties else 0.0
    sigma = math.sqrt(n1 * n2 / 12 * ((n1 + n2 + 1) - tie_term))
    if sigma == 0:
        return 1.0
    z = (abs(u - mu) - 0.5) / sigma
    return min(1.0, math.erfc(max(z, 0) / math.sqrt(2)))


@dataclass
class Summary:
    n: int
    median: float | None
    ci_low: float | None
    ci_high: float | None
    cv: float | None

    @property
    def unstable(self) -> bool:
        return self.cv is not None and self.cv > UNSTABLE_CV


def summarize(xs: list[float]) -> Summary:
    xs = [x for x in xs if x is not None]
    ci = bootstrap_ci(xs)
    return Summary(len(xs), median(xs), ci[0] if ci else None, ci[1] if ci else None, cv(xs))


MIN_TRIALS = 2          # fewer on either side: inconclusive


@dataclass
class Verdict:
    verdict: str        # regressed | improved | within noise | inconclusive
    change: float | None          # relative change of the medians (current / base - 1)
    ci: tuple[float, float] | None
    p_value: float | None
    reason: str


def compare_samples(base: list[float], cur: list[float], threshold: float, higher_is_better: bool) -> Verdict:
    """Call a change only when it is significant and larger than the threshold.

    Significant: Mann-Whitney U p < 0.05 (possible from 4 trials a side), or
    the bootstrap 95% interval of the relative change lying wholly beyond the
    threshold.
    """
    base = [x for x in base if x is not None]
    cur = [x for x in cur if x is not None]
    if len(base) < MIN_TRIALS or len(cur) < MIN_TRIALS:
        mb, mc = median(base), median(cur)
        change = (mc / mb - 1) if mb and mc is not None else None
        return Verdict("inconclusive", change, None, None,
                       f"too few trials ({len(base)} vs {len(cur)}; {MIN_TRIALS} needed a side)")
    mb, mc = median(base), median(cur)
    if not mb:
        return Verdict("inconclusive", None, None, None, "baseline median is zero")
    change = mc / mb - 1
    ci = ratio_ci(base, cur)
    p = mann_whitney_p(base, cur) if min(len(base), len(cur)) >= 4 else None
    beyond = ci is not None and (ci[0] > threshold or ci[1] < -threshold)
    significant = beyond or (p is not None and p < 0.05)
    if not significant or abs(change) <= threshold:
        return Verdict("within noise", change, ci, p,
                       "not significant" if not significant else f"change within {threshold:.0%}")
    worse = (change < 0) if higher_is_better else (change > 0)
    return Verdict("regressed" if worse else "improved", change, ci, p,
                   f"interval {ci[0]:+.1%}..{ci[1]:+.1%}" if ci else f"p = {p:.3f}")


def rank(groups: dict[str, list[float]], higher_is_better: bool = True) -> dict[str, int]:
    """Rank with ties: 1 + the number of others significantly better.

    Two samples differ significantly when the bootstrap interval of their
    ratio excludes 1 (or, from 4 trials a side, Mann-Whitney p < 0.05). A
    single trial a side is compared by value (no noise estimate).
    """
    names = list(groups)
    out = {}
    for a in names:
        better = 0
        for b in names:
            if a == b:
                continue
            va, vb = groups[a], groups[b]
            ma, mb = median(va), median(vb)
            if ma is None or mb is None:
                continue
            b_better = mb > ma if higher_is_better else mb < ma
            if not b_better:
                continue
            if len(va) < MIN_TRIALS or len(vb) < MIN_TRIALS:
                better += 1
                continue
            ci = ratio_ci(va, vb)
            p = mann_whitney_p(va, vb) if min(len(va), len(vb)) >= 4 else None
            if (ci is not None and (ci[0] > 0 or ci[1] < 0)) or (p is not None and p < 0.05):
                better += 1
        out[a] = better + 1
    return out
