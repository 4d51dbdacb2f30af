"""Statistics over trials: medians, intervals, variation, and the tests
behind every verdict (compare) and every rank (report).

Pure functions over lists of floats; no I/O. Verdicts and ranks use Welch's
t-test on the logarithms of the values (the effect is a ratio), with the
Student t distribution computed here (regularised incomplete beta function),
so that the false-positive rate holds at 3 trials a side. Below 3 trials a
side nothing is called significant. The percentile bootstrap and Mann-Whitney
U remain available as functions but decide no verdict: with 2-3 trials the
bootstrap interval of a median is just [min, max], and Mann-Whitney cannot
reach p < 0.05 below 4 trials a side.
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


# ------------------------------------------------------------ t distribution

def _ibeta(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularised incomplete beta function I_x(a, b); y = 1 - x when it is
    known more precisely than 1 - x. Continued fraction evaluated with the
    modified Lentz method, on the side where it converges fast."""
    if y is None:
        y = 1.0 - x
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _ibeta(b, a, y, x)
    log_front = (a * math.log(x) + b * math.log(y)
                 - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    tiny = 1e-300

    def step(value: float) -> float:
        return tiny if abs(value) < tiny else value

    # I_x(a,b) = front / a * 1 / (1 + d1 / (1 + d2 / (1 + ...)))
    c = 1.0
    d = 1.0 / step(1.0 - (a + b) * x / (a + 1.0))
    frac = d
    for m in range(1, 1000):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 / step(1.0 + even * d)
        c = step(1.0 + even / c)
        frac *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 / step(1.0 + odd * d)
        c = step(1.0 + odd / c)
        delta = d * c
        frac *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(log_front) * frac / a


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees
    of freedom (df may be fractional, as Welch's is)."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return min(1.0, _ibeta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2)))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = t_sf2(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the t with P(T <= t) = p (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must lie strictly between 0 and 1")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    z = statistics.NormalDist().inv_cdf(p)
    if df > 1e7:
        return z
    # Cornish-Fisher start, then Newton steps kept inside a bracket (bisection
    # when a step leaves it).
    t = z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)
    lo, hi = 0.0, max(2.0 * t, 10.0)
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 4.0
    for _ in range(200):
        f = t_cdf(t, df) - p
        if f > 0:
            hi = min(hi, t)
        else:
            lo = max(lo, t)
        dens = _t_pdf(t, df)
        nxt = t - f / dens if dens > 0 else (lo + hi) / 2
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - t) <= 1e-13 * max(1.0, abs(t)):
            return nxt
        t = nxt
    return t


# ------------------------------------------------------------ intervals and tests

ALPHA = 1 - CONFIDENCE
MIN_TRIALS = 3          # fewer on either side: too few trials (inconclusive, not ranked apart)


def _logs(xs: list[float]) -> list[float] | None:
    return [math.log(x) for x in xs] if xs and all(x > 0 for x in xs) else None


def mean_ci_t(xs: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student t interval of the arithmetic mean; None below two values."""
    if len(xs) < 2:
        return None
    m = statistics.fmean(xs)
    half = t_ppf(1 - (1 - confidence) / 2, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m - half, m + half


def geomean_ci(xs: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Interval of one group's figure that means something at 3 trials: the
    Student t interval of the mean of the logarithms, back-transformed (an
    interval of the geometric mean). Values that are all equal give a
    zero-width interval; where some value is zero or negative (errors, idle
    CPU) no logarithm exists and the t interval of the arithmetic mean is
    used. None below two values."""
    if len(xs) < 2:
        return None
    if all(x == xs[0] for x in xs):
        return xs[0], xs[0]
    logs = _logs(xs)
    if logs is None:
        return mean_ci_t(xs, confidence)
    lo, hi = mean_ci_t(logs, confidence)
    return math.exp(lo), math.exp(hi)


@dataclass
class Welch:
    """Welch's t-test on log values: current against base."""
    change: float                  # geometric mean of cur / geometric mean of base - 1
    ci: tuple[float, float]        # its 95% interval (t distribution, Welch-Satterthwaite df)
    p_value: float                 # two-sided
    df: float | None               # None when both groups have no spread

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def welch_log(base: list[float], cur: list[float], confidence: float = CONFIDENCE) -> Welch | None:
    """Welch's t-test on the logarithms of two samples (2 or more values each,
    all positive); None when it cannot be computed."""
    lb, lc = _logs(base), _logs(cur)
    if lb is None or lc is None or len(lb) < 2 or len(lc) < 2:
        return None
    d = statistics.fmean(lc) - statistics.fmean(lb)
    vb, vc = statistics.variance(lb) / len(lb), statistics.variance(lc) / len(lc)
    se2 = vb + vc
    if se2 <= 0.0:
        # no spread on either side: the difference is exact
        r = math.exp(d) - 1
        return Welch(r, (r, r), 1.0 if d == 0 else 0.0, None)
    df = se2 * se2 / (vb * vb / (len(lb) - 1) + vc * vc / (len(lc) - 1))
    se = math.sqrt(se2)
    half = t_ppf(1 - (1 - confidence) / 2, df) * se
    return Welch(math.exp(d) - 1, (math.exp(d - half) - 1, math.exp(d + half) - 1), t_sf2(d / se, df), df)


@dataclass
class Summary:
    n: int
    median: float | None
    ci_low: float | None          # 95% interval of the geometric mean (see geomean_ci)
    ci_high: float | None
    cv: float | None

    @property
    def unstable(self) -> bool:
        return self.cv is not None and self.cv > UNSTABLE_CV


def summarize(xs: list[float]) -> Summary:
    xs = [x for x in xs if x is not None]
    ci = geomean_ci(xs)
    return Summary(len(xs), median(xs), ci[0] if ci else None, ci[1] if ci else None, cv(xs))


@dataclass
class Verdict:
    verdict: str        # regressed | improved | within noise | inconclusive | broken | missing
    change: float | None          # relative change of the medians (current / base - 1)
    ci: tuple[float, float] | None  # 95% interval of the ratio of geometric means - 1 (Welch, on logs)
    p_value: float | None         # Welch's t-test on logs, two-sided
    reason: str


def bh_adjust(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input's order.

    Calling every test with q < 0.05 significant keeps the expected share of
    false calls among all calls at or under 5% (independent or positively
    dependent tests, which metrics of one level are). q_i = min over j with
    rank(p_j) >= rank(p_i) of p_j * m / rank(p_j), capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    q = [1.0] * m
    running = 1.0
    for k in range(m - 1, -1, -1):          # from the largest p down
        i = order[k]
        running = min(running, ps[i] * m / (k + 1))
        q[i] = min(1.0, running)
    return q


def _too_few(base: list[float], cur: list[float]) -> bool:
    return len(base) < MIN_TRIALS or len(cur) < MIN_TRIALS


def compare_samples(base: list[float], cur: list[float], threshold: float, higher_is_better: bool,
                    q_value: float | None = None, tests: int = 1) -> Verdict:
    """Call a change only when it is significant and larger than the threshold.

    Significant: Welch's t-test on the logarithms gives p < 0.05 (the 95%
    interval of the ratio of geometric means excludes 1), or, when this test
    is one of `tests` made together, its Benjamini-Hochberg q-value (given by
    the caller, see bh_adjust) is < 0.05; possible only from MIN_TRIALS (3)
    trials a side. Larger than the threshold: the change of the medians (the
    reported figure) is beyond it, in the interval's direction.
    """
    base = [x for x in base if x is not None]
    cur = [x for x in cur if x is not None]
    mb, mc = median(base), median(cur)
    change = (mc / mb - 1) if mb and mc is not None else None
    if _too_few(base, cur):
        return Verdict("inconclusive", change, None, None,
                       f"too few trials ({len(base)} vs {len(cur)}; {MIN_TRIALS} needed a side)")
    if not mb:
        return Verdict("inconclusive", None, None, None, "baseline median is zero")
    w = welch_log(base, cur)
    if w is None:
        if all(x == base[0] for x in base + cur):
            return Verdict("within noise", change, None, None, "identical values")
        return Verdict("inconclusive", change, None, None, "zero or negative values: no ratio to test")
    if not w.significant:
        return Verdict("within noise", change, w.ci, w.p_value, f"not significant (p = {w.p_value:.2f})")
    if q_value is not None and q_value >= ALPHA:
        return Verdict("within noise", change, w.ci, w.p_value,
                       f"not significant over {tests} tests (p = {w.p_value:.3f}, false-discovery q = {q_value:.2f})")
    if abs(change) <= threshold:
        return Verdict("within noise", change, w.ci, w.p_value, f"change within {threshold:.0%}")
    if (change > 0) != (w.ci[0] > 0):
        return Verdict("inconclusive", change, w.ci, w.p_value,
                       "the medians and the geometric means moved in opposite directions")
    worse = (change < 0) if higher_is_better else (change > 0)
    return Verdict("regressed" if worse else "improved", change, w.ci, w.p_value,
                   f"interval {w.ci[0]:+.1%}..{w.ci[1]:+.1%}, "
                   + (f"p = {w.p_value:.3f}" if w.p_value >= 0.001 else "p < 0.001")
                   + (f", q = {q_value:.3f} over {tests} tests" if q_value is not None else ""))


def rank(groups: dict[str, list[float]], higher_is_better: bool = True) -> dict[str, int]:
    """Rank with ties: 1 + the number of others significantly better.

    Every pair of groups with MIN_TRIALS (3) or more values a side is tested
    once (Welch's t-test on the logarithms); the pairs of one ranking are one
    family, so b is significantly better than a when its median is better,
    the test points the same way and the pair's Benjamini-Hochberg q-value
    over the family is < 0.05. Below MIN_TRIALS trials a side two groups are
    never ranked apart.
    """
    names = list(groups)
    vals = {n: [x for x in groups[n] if x is not None] for n in names}
    pairs: list[tuple[str | None, Welch]] = []    # (the worse of a pair that can be ranked apart, its test)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            va, vb = vals[a], vals[b]
            if _too_few(va, vb):
                continue
            w = welch_log(va, vb)                   # b relative to a
            if w is None:
                continue
            ma, mb = median(va), median(vb)
            worse = None
            if mb != ma and (w.change > 0) == (mb > ma):   # medians and means agree on the direction
                worse = a if ((mb > ma) == higher_is_better) else b
            pairs.append((worse, w))
    qs = bh_adjust([w.p_value for _, w in pairs])
    out = {n: 1 for n in names}
    for (worse, _), q in zip(pairs, qs):
        if worse is not None and q < ALPHA:
            out[worse] += 1
    return out
