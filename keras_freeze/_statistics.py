"""Paired tests of two models evaluated on the same cross-validation folds.

Three tests answer "is model A really better than model B?" from the per-fold
scores or the test predictions of a k-fold cross-validation:

* `corrected_t_test`: Nadeau & Bengio's corrected resampled t-test of the
  per-fold differences (the plain paired t-test ignores that the folds'
  training sets overlap and finds differences that are not there);
* `bayesian_correlated_t_test`: Benavoli et al.'s Bayesian correlated t-test,
  the posterior probabilities that A is worse, practically equivalent (within
  a region of practical equivalence, the ROPE) or better;
* `mcnemar`: McNemar's test of the images one model got right and the other
  wrong.

Everything is NumPy and the standard library: the values equal SciPy's
(`scipy.stats.t`, `binom`, `chi2`) and `baycomp.CorrelatedTTest`'s to about
1e-10 relative for up to ~1e5 degrees of freedom (far more folds than any
cross-validation has; the log-beta function loses digits beyond), which the
tests use as oracles, but neither is needed at run time. The binomial
p-value is exact (integer arithmetic).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_freeze import _validation as check

__all__ = [
    "McNemarResult",
    "PosteriorResult",
    "TTestResult",
    "bayesian_correlated_t_test",
    "corrected_t_test",
    "mcnemar",
]


@dataclasses.dataclass(frozen=True)
class TTestResult:
    """The corrected resampled t-test of k paired differences (`corrected_t_test`).

    Attributes:
        mean: mean of the differences.
        sd: their sample standard deviation (ddof 1).
        k: number of differences (folds).
        var_factor: ``1 / k + test_over_train``.
        se: ``sqrt(var_factor) * sd``, the corrected standard error.
        t: ``mean / se``.
        df: degrees of freedom, ``k - 1``.
        p: two-sided p-value.
        low: lower end of the confidence interval of the mean.
        high: upper end.
    """

    mean: float
    sd: float
    k: int
    var_factor: float
    se: float
    t: float
    df: int
    p: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class PosteriorResult:
    """The Bayesian correlated t-test's posterior (`bayesian_correlated_t_test`).

    Attributes:
        mean: location of the posterior of the mean difference.
        scale: its scale (0: a point mass).
        df: its degrees of freedom, ``k - 1``.
        rope: half-width of the region of practical equivalence.
        p_left: P(mean difference < -rope): B better.
        p_rope: P(-rope <= mean difference <= rope): practically equivalent.
        p_right: P(mean difference > rope): A better.
    """

    mean: float
    scale: float
    df: int
    rope: float
    p_left: float
    p_rope: float
    p_right: float


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired right / wrong outcomes (`mcnemar`).

    Attributes:
        n: number of paired outcomes.
        both_right: A and B right.
        a_only: A right, B wrong.
        b_only: B right, A wrong.
        both_wrong: both wrong.
        method: ``"exact binomial"`` or ``"chi-square, continuity corrected"``.
        statistic: the chi-square statistic (`None` for the exact test).
        p: two-sided p-value.
    """

    n: int
    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    method: str
    statistic: float | None
    p: float


# --------------------------------------------------------------------------
# Student's t distribution (integer degrees of freedom)
# --------------------------------------------------------------------------


def _beta_fraction(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) <= 2.3e-16:
            return h
    raise ArithmeticError(f"The incomplete beta function did not converge: a={a}, b={b}, x={x}")


def _betainc(a, b, x, y):
    """The regularized incomplete beta function I_x(a, b); ``y`` is 1 - x, given exactly."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, y, x)
    log_front = a * math.log(x) + b * math.log(y)
    log_front -= math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp(log_front) / a * _beta_fraction(a, b, x)


def _t_tail(x, df):
    """P(T > |x|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(x):
        return 0.0
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x), x * x / (df + x * x))


def _t_center(x, df):
    """P(0 < T < |x|), accurate when small."""
    return 0.5 * _betainc(0.5, df / 2.0, x * x / (df + x * x), df / (df + x * x))


def _t_cdf(x, df):
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    tail = _t_tail(x, df)
    return tail if x < 0 else 1.0 - tail


def _t_ppf(q, df):
    """The ``q`` quantile (0.5 < q < 1) of Student's t, by bisection on whichever of the
    central or the tail probability is the smaller (both known to full relative precision)."""
    if q < 0.75:
        target, below = q - 0.5, lambda t: _t_center(t, df) < target
    else:
        target, below = 1.0 - q, lambda t: _t_tail(t, df) > target
    low, high = 0.0, 1.0
    while below(high):
        low, high = high, 2.0 * high
    for _ in range(2_000):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if below(mid) else (low, mid)
    return 0.5 * (low + high)


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def _differences(diffs):
    try:
        d = np.asarray(diffs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected diffs to be numbers (one per fold, A - B). Received: diffs={diffs!r}"
        ) from None
    if d.ndim != 1 or d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(
            "Expected a 1-D sequence of at least 2 finite paired differences (one per fold, "
            f"A - B). Received: diffs={d.tolist()}"
        )
    return d


def _outcomes(name, values):
    """A 1-D boolean array of right (1/True) and wrong (0/False) answers, else a ValueError."""
    v = np.asarray(values)
    if v.ndim != 1 or not (v.dtype == bool or np.isin(v, (0, 1)).all()):
        raise ValueError(
            f"Expected {name} to be a 1-D sequence of booleans or 0/1 (right or wrong, one per "
            f"image). Received: {name} of shape {v.shape} and dtype {v.dtype}"
        )
    return v.astype(bool)


def _test_over_train(value):
    return check.positive_float("test_over_train", value)


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


def corrected_t_test(diffs, test_over_train, confidence=0.95) -> TTestResult:
    """Nadeau & Bengio's corrected resampled t-test of k paired per-fold differences.

    The folds' training sets overlap, so the differences d_1..d_k of two
    models' scores are correlated and the plain paired t-test's variance
    s^2 / k is too small. The corrected test uses

        t = mean(d) / sqrt((1/k + n_test/n_train) * s^2),    df = k - 1,

    s^2 the sample variance (ddof 1) of the d_j; p = 2 * P(T_{k-1} > |t|) and
    the interval is mean(d) -/+ t_{k-1, (1+confidence)/2} * sqrt((1/k +
    n_test/n_train) * s^2). With zero variance, t is 0 (p 1) when the mean is
    0, else +/-inf (p 0).

    Reference: C. Nadeau and Y. Bengio, "Inference for the Generalization
    Error", Machine Learning 52(3):239-281, 2003 (the "corrected resampled
    t-test" of Bouckaert & Frank, PAKDD 2004).

    Args:
        diffs: the k >= 2 per-fold differences A - B of a score, finite.
        test_over_train: n_test / n_train of the folds, > 0: 1 / (k - 1) for
            k-fold cross-validation (n_train counts every image the model
            learnt from).
        confidence: of the interval, in (0, 1). Defaults to 0.95.

    Returns:
        A `TTestResult`.

    Raises:
        ValueError: fewer than 2 differences, a NaN or infinite one,
            ``test_over_train <= 0`` or a confidence outside (0, 1).

    Example:

    >>> import keras_freeze
    >>> t = keras_freeze.corrected_t_test([0.01, 0.02, 0.03], test_over_train=1 / 9)
    >>> round(t.mean, 6), round(t.t, 6), t.df
    (0.02, 3.0, 2)
    >>> round(t.p, 6)  # 2 df: p = 1 - 3 / sqrt(11)
    0.095466
    """
    d = _differences(diffs)
    ratio = _test_over_train(test_over_train)
    confidence = check.positive_float("confidence", confidence)
    if confidence >= 1:
        raise ValueError(f"Expected confidence in (0, 1). Received: confidence={confidence}")
    k, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    var_factor = 1.0 / k + ratio
    se = math.sqrt(var_factor) * sd
    if se > 0:
        t = mean / se
        p = float(2 * _t_tail(t, k - 1))
    else:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
    half = _t_ppf(0.5 + confidence / 2, k - 1) * se
    return TTestResult(mean, sd, k, var_factor, se, t, k - 1, p, mean - half, mean + half)


def bayesian_correlated_t_test(diffs, test_over_train, rope=0.01) -> PosteriorResult:
    """Benavoli et al.'s Bayesian correlated t-test with a region of practical equivalence.

    With correlation rho = n_test / (n_test + n_train) between folds (so
    rho / (1 - rho) = n_test / n_train) and a flat prior, the posterior of the
    mean difference mu is Student's t

        mu ~ t(df = k - 1, loc = mean(d), scale = sqrt((1/k + rho/(1-rho)) * s^2)),

    and P(left) = P(mu < -rope) (B better), P(rope) = P(-rope <= mu <= rope)
    (practically equivalent), P(right) = P(mu > rope) (A better); they sum to
    1. With zero variance the posterior is a point mass at mean(d).
    Benavoli et al. call a probability above 0.95 a decision.

    References: A. Benavoli, G. Corani, J. Demsar and M. Zaffalon, "Time for a
    change: a tutorial for comparing multiple classifiers through Bayesian
    analysis", JMLR 18(77):1-36, 2017; G. Corani and A. Benavoli, "A Bayesian
    approach for comparing cross-validated algorithms on multiple data sets",
    Machine Learning 100:285-304, 2015. `baycomp.CorrelatedTTest` computes the
    same posterior with rho = 1 / k.

    Args:
        diffs: the k >= 2 per-fold differences A - B of a score, finite.
        test_over_train: n_test / n_train of the folds, > 0.
        rope: half-width of the region of practical equivalence, >= 0, in the
            score's unit. Defaults to 0.01.

    Returns:
        A `PosteriorResult`.

    Raises:
        ValueError: fewer than 2 differences, a NaN or infinite one,
            ``test_over_train <= 0`` or ``rope < 0``.

    Example:

    >>> import keras_freeze
    >>> post = keras_freeze.bayesian_correlated_t_test(
    ...     [0.01, 0.02, 0.03], test_over_train=1 / 9, rope=0.01
    ... )
    >>> round(post.p_left, 3), round(post.p_rope, 3), round(post.p_right, 3)
    (0.023, 0.113, 0.864)
    >>> round(post.p_left + post.p_rope + post.p_right, 12)
    1.0
    """
    d = _differences(diffs)
    ratio = _test_over_train(test_over_train)
    rope = check.nonnegative_float("rope", rope)
    k, mean = d.size, float(d.mean())
    scale = math.sqrt(1.0 / k + ratio) * float(d.std(ddof=1))
    if scale > 0:
        p_left = float(_t_cdf((-rope - mean) / scale, k - 1))
        p_right = float(_t_cdf(-((rope - mean) / scale), k - 1))
    else:
        p_left, p_right = float(mean < -rope), float(mean > rope)
    return PosteriorResult(mean, scale, k - 1, rope, p_left, 1.0 - p_left - p_right, p_right)


def mcnemar(a_correct, b_correct, exact_below=25) -> McNemarResult:
    """McNemar's test of two classifiers on the same images.

    With b the images A got right and B wrong and c the reverse: when
    b + c < ``exact_below`` the exact binomial test,
    p = min(1, 2 * P(Bin(b + c, 1/2) <= min(b, c))) (p = 1 when b + c = 0);
    otherwise chi^2 = (|b - c| - 1)^2 / (b + c) with Edwards' continuity
    correction and p = P(chi^2_1 > chi^2). The result's ``method`` says which.
    The test pools images, not folds: it ignores the variation between
    training runs (Dietterich 1998), so read it beside the fold-level tests.

    References: Q. McNemar, Psychometrika 12(2):153-157, 1947; A. L. Edwards,
    Psychometrika 13:185-187, 1948; T. G. Dietterich, Neural Computation
    10(7):1895-1923, 1998.

    Args:
        a_correct: per image, whether A predicted its class (bools).
        b_correct: the same images in the same order, whether B did.
        exact_below: discordant pairs under which the exact test is used,
            an int >= 0. Defaults to 25.

    Returns:
        A `McNemarResult`.

    Raises:
        ValueError: no outcome, outcomes that are not 1-D booleans or 0/1,
            outcomes of different lengths or a bad ``exact_below``.

    Example:

    >>> import keras_freeze
    >>> mc = keras_freeze.mcnemar([1, 1, 1, 0, 1], [1, 0, 0, 1, 1])
    >>> mc.a_only, mc.b_only, mc.method, mc.p  # 2 * P(Bin(3, 1/2) <= 1)
    (2, 1, 'exact binomial', 1.0)
    """
    a, b = _outcomes("a_correct", a_correct), _outcomes("b_correct", b_correct)
    if a.shape != b.shape or not a.size:
        raise ValueError(
            "Expected one outcome of each model per image, at least one image, in the "
            f"same order. Received: {a.size} outcomes of A and {b.size} of B"
        )
    exact_below = check.integer("exact_below", exact_below, 0)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n_disc = a_only + b_only
    if n_disc < exact_below or n_disc == 0:
        method, statistic = "exact binomial", None
        tail = sum(math.comb(n_disc, i) for i in range(min(a_only, b_only) + 1))
        p = min(1.0, 2 * (tail / 2**n_disc))
    else:
        method = "chi-square, continuity corrected"
        statistic = (abs(a_only - b_only) - 1) ** 2 / n_disc
        p = math.erfc(math.sqrt(statistic / 2))
    both_right, both_wrong = int(np.sum(a & b)), int(np.sum(~a & ~b))
    return McNemarResult(a.size, both_right, a_only, b_only, both_wrong, method, statistic, p)
