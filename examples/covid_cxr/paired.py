"""Paired comparisons of two experiments over the folds both ran (the report's statistics).

Three tests, each a few lines of NumPy / SciPy (formulas and references in their docstrings and
in docs/statistics.md):

* `corrected_t_test`: Nadeau & Bengio's corrected resampled t-test of the per-fold differences;
* `bayesian_correlated_t_test`: Benavoli et al.'s Bayesian correlated t-test with a region of
  practical equivalence (ROPE);
* `mcnemar`: McNemar's test on the pooled out-of-fold test predictions, paired by (fold, file).

`compare(by_exp)` applies them to the records: every Table 1 row against the proposed model
(``freeze+attention``) and against Mobile Freeze-Net (``freeze``), on macro and weighted F1.
A difference is always A - B, A being the reference model.

Example:
    >>> import paired
    >>> t = paired.corrected_t_test([0.01, 0.02, 0.03], test_over_train=1 / 9)
    >>> round(t.mean, 6), round(t.t, 6), round(t.p, 6)  # p = 1 - 3 / sqrt(11) (df = 2)
    (0.02, 3.0, 0.095466)
    >>> post = paired.bayesian_correlated_t_test([0.01, 0.02, 0.03], 1 / 9, rope=0.01)
    >>> round(post.p_left + post.p_rope + post.p_right, 12)
    1.0
    >>> paired.mcnemar([1, 1, 1, 0, 1], [1, 0, 0, 1, 1]).method
    'exact binomial'
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import protocol
from scipy import stats

# Fewer paired folds than this: no fold-level test, this text instead of its numbers.
MIN_FOLDS = 3
TOO_FEW = f"n < {MIN_FOLDS} paired folds"
# Half-width of the region of practical equivalence on F1 (Benavoli et al. 2017 use 0.01).
ROPE = 0.01
# Posterior probability above which the Bayesian test decides (Benavoli et al. 2017).
DECISIVE = 0.95
# McNemar: the exact binomial test below this many discordant pairs, else chi-square.
EXACT_BELOW = 25
# The references, in this order; each Table 1 row is compared with each (a pair once).
REFERENCES = ("freeze+attention", "freeze")
# (average, metric) pairs compared: macro F1 (Table 1) and weighted F1 (Table 2).
SCORES = (("macro", "f1"), ("weighted", "f1"))


@dataclasses.dataclass(frozen=True)
class TTest:
    """The corrected resampled t-test of k paired differences (`corrected_t_test`)."""

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
class Posterior:
    """The Bayesian correlated t-test's posterior of the mean difference and its three
    probabilities: A worse by more than the ROPE, practically equivalent, A better."""

    mean: float
    scale: float
    df: int
    rope: float
    p_left: float
    p_rope: float
    p_right: float


@dataclasses.dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired right / wrong outcomes (`mcnemar`)."""

    n: int
    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    method: str
    statistic: float | None
    p: float


def _differences(diffs):
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"Expected at least 2 finite paired differences. Received: {d.tolist()}")
    return d


def corrected_t_test(diffs, test_over_train, confidence=0.95) -> TTest:
    """Nadeau & Bengio's corrected resampled t-test of k paired per-fold differences.

    The folds' training sets overlap, so the differences d_1..d_k are correlated and the plain
    paired t-test's variance s^2 / k is too small. The corrected test uses

        t = mean(d) / sqrt((1/k + n_test/n_train) * s^2),    df = k - 1,

    s^2 the sample variance (ddof 1) of the d_j; p = 2 * P(T_{k-1} > |t|) and the interval is
    mean(d) -/+ t_{k-1, (1+confidence)/2} * sqrt((1/k + n_test/n_train) * s^2).
    With zero variance, t is 0 (p 1) when the mean is 0, else +/-inf (p 0).

    Reference: C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine
    Learning 52(3):239-281, 2003 (the "corrected resampled t-test" of Bouckaert & Frank 2004).

    Args:
        diffs: the k >= 2 per-fold differences A - B.
        test_over_train: n_test / n_train of the folds (see `test_over_train`).
        confidence: of the interval (default 0.95).

    Returns:
        A `TTest`.
    """
    d = _differences(diffs)
    k, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    var_factor = 1.0 / k + float(test_over_train)
    se = math.sqrt(var_factor) * sd
    if se > 0:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), k - 1))
    else:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return TTest(mean, sd, k, var_factor, se, t, k - 1, p, mean - half, mean + half)


def bayesian_correlated_t_test(diffs, test_over_train, rope=ROPE) -> Posterior:
    """Benavoli et al.'s Bayesian correlated t-test with a region of practical equivalence.

    With correlation rho = n_test / (n_test + n_train) between folds (so rho / (1 - rho) =
    n_test / n_train) and a flat prior, the posterior of the mean difference mu is Student's t

        mu ~ t(df = k - 1, loc = mean(d), scale = sqrt((1/k + rho/(1-rho)) * s^2)),

    and P(left) = P(mu < -rope) (B better), P(rope) = P(-rope <= mu <= rope) (practically
    equivalent), P(right) = P(mu > rope) (A better); they sum to 1. With zero variance the
    posterior is a point mass at mean(d).

    References: A. Benavoli, G. Corani, J. Demsar and M. Zaffalon, "Time for a change: a tutorial
    for comparing multiple classifiers through Bayesian analysis", JMLR 18(77):1-36, 2017;
    G. Corani and A. Benavoli, "A Bayesian approach for comparing cross-validated algorithms
    on multiple data sets", Machine Learning 100:285-304, 2015. `baycomp.CorrelatedTTest`
    implements the same posterior with rho = 1 / k.

    Args:
        diffs: the k >= 2 per-fold differences A - B.
        test_over_train: n_test / n_train of the folds.
        rope: half-width of the region of practical equivalence (default 0.01).

    Returns:
        A `Posterior`.
    """
    d = _differences(diffs)
    k, mean = d.size, float(d.mean())
    scale = math.sqrt(1.0 / k + float(test_over_train)) * float(d.std(ddof=1))
    if scale > 0:
        p_left = float(stats.t.cdf(-rope, k - 1, loc=mean, scale=scale))
        p_right = float(stats.t.sf(rope, k - 1, loc=mean, scale=scale))
    else:
        p_left, p_right = float(mean < -rope), float(mean > rope)
    return Posterior(mean, scale, k - 1, rope, p_left, 1.0 - p_left - p_right, p_right)


def mcnemar(a_correct, b_correct, exact_below=EXACT_BELOW) -> McNemar:
    """McNemar's test of two classifiers on the same images.

    With b the images A got right and B wrong and c the reverse: when b + c < ``exact_below``
    the exact binomial test, p = min(1, 2 * P(Bin(b + c, 1/2) <= min(b, c))) (p = 1 when
    b + c = 0); otherwise chi^2 = (|b - c| - 1)^2 / (b + c) with Edwards' continuity correction
    and p = P(chi^2_1 > chi^2). The result's ``method`` says which.

    References: Q. McNemar, Psychometrika 12(2):153-157, 1947; A. L. Edwards, Psychometrika
    13:185-187, 1948; T. G. Dietterich, Neural Computation 10(7):1895-1923, 1998.

    Args:
        a_correct: per image, whether A predicted its class.
        b_correct: the same images, whether B did.
        exact_below: discordant pairs under which the exact test is used (default 25).

    Returns:
        A `McNemar`.
    """
    a = np.asarray(a_correct, dtype=bool).ravel()
    b = np.asarray(b_correct, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Expected paired outcomes. Received: {a.size} and {b.size} images")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n_disc = a_only + b_only
    if n_disc < exact_below:
        method, statistic = "exact binomial", None
        p = min(1.0, 2 * float(stats.binom.cdf(min(a_only, b_only), n_disc, 0.5)))
    else:
        method = "chi-square, continuity corrected"
        statistic = (abs(a_only - b_only) - 1) ** 2 / n_disc
        p = float(stats.chi2.sf(statistic, 1))
    both_right, both_wrong = int(np.sum(a & b)), int(np.sum(~a & ~b))
    return McNemar(a.size, both_right, a_only, b_only, both_wrong, method, statistic, p)


# --------------------------------------------------------------------------------------
# The records' comparisons
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Comparison:
    """A against B on one score, over the folds both ran (A - B)."""

    reference: str
    a: str
    b: str
    average: str
    metric: str
    folds: tuple
    scores_a: tuple
    scores_b: tuple
    test_over_train: float
    t_test: TTest | None
    posterior: Posterior | None
    mcnemar: McNemar | None
    alpha_ratios: tuple

    @property
    def diffs(self):
        return tuple(x - y for x, y in zip(self.scores_a, self.scores_b, strict=True))

    def verdict(self) -> str:
        """One line: what the data support (the largest posterior probability)."""
        if self.posterior is None:
            return f"{TOO_FEW} ({len(self.folds)}): no fold-level test"
        post = self.posterior
        options = (
            (post.p_left, f"{self.b} better by more than {post.rope:g}", "P(B better)"),
            (post.p_rope, "practically equivalent", "P(ROPE)"),
            (post.p_right, f"{self.a} better by more than {post.rope:g}", "P(A better)"),
        )
        p, text, name = max(options, key=lambda o: o[0])
        note = "" if p >= DECISIVE else f" (below {DECISIVE:g}: not decisive)"
        return f"{text}: {name} = {p:.2f}{note}"


def paired_records(recs_a, recs_b):
    """(A's record, B's record) of every fold both ran, in fold order."""
    by_fold = {r.fold: r for r in recs_b}
    return [(r, by_fold[r.fold]) for r in sorted(recs_a, key=lambda r: r.fold) if r.fold in by_fold]


def n_test_over_n_train(recs) -> float:
    """Mean over ``recs`` of n_test / n_train, n_train the images the model learnt from
    (``split["train"] + split["validation"]``: the training and early-stopping images), so that
    for k-fold cross-validation it is 1 / (k - 1), as Nadeau & Bengio's n2 / n1."""
    ratios = [r.split["test"] / (r.split["train"] + r.split["validation"]) for r in recs]
    return float(np.mean(ratios))


def correct_pairs(pairs):
    """Whether A and B predicted each test image right, pooled over the paired folds and
    paired by (fold, file); images only one of the two records holds are left out."""
    a_right, b_right = [], []
    for ra, rb in pairs:
        b_by_file = _right_by_file(rb.predictions)
        for file, right in _right_by_file(ra.predictions).items():
            if file in b_by_file:
                a_right.append(right)
                b_right.append(b_by_file[file])
    return np.array(a_right, dtype=bool), np.array(b_right, dtype=bool)


def _right_by_file(predictions):
    """file -> whether ``argmax(y_prob)`` (the predicted class) equals ``y_true``."""
    pred = np.argmax(np.asarray(predictions["y_prob"], dtype=np.float64), axis=1)
    right = pred == np.asarray(predictions["y_true"])
    return dict(zip(predictions["files"], right.tolist(), strict=True))


def alpha_ratio(record):
    """max(alpha) / min(alpha) of a record's attention loss (``None`` without alpha)."""
    if not record.alpha:
        return None
    return max(record.alpha) / min(record.alpha)


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _compare_one(ref, a, b, pairs, average, metric, mc, rope):
    """One `Comparison`; the fold-level tests only over folds where both scores are finite."""
    pairs = [
        (ra, rb) for ra, rb in pairs if all(_finite(r.metrics[average][metric]) for r in (ra, rb))
    ]
    scores_a = tuple(float(ra.metrics[average][metric]) for ra, _ in pairs)
    scores_b = tuple(float(rb.metrics[average][metric]) for _, rb in pairs)
    ratio = n_test_over_n_train([r for pair in pairs for r in pair]) if pairs else math.nan
    t_test = posterior = None
    if len(pairs) >= MIN_FOLDS:
        diffs = np.subtract(scores_a, scores_b)
        t_test = corrected_t_test(diffs, ratio)
        posterior = bayesian_correlated_t_test(diffs, ratio, rope)
    attention = [r for pair in pairs for r in pair if r.experiment == "freeze+attention"]
    return Comparison(
        reference=ref,
        a=a,
        b=b,
        average=average,
        metric=metric,
        folds=tuple(ra.fold for ra, _ in pairs),
        scores_a=scores_a,
        scores_b=scores_b,
        test_over_train=ratio,
        t_test=t_test,
        posterior=posterior,
        mcnemar=mc,
        alpha_ratios=tuple(x for x in map(alpha_ratio, attention) if x is not None),
    )


def compare(by_exp, rope=ROPE):
    """Every Table 1 row against each of `REFERENCES`, on each of `SCORES`.

    Args:
        by_exp: experiment -> its records (`records.RecordStore.collect`).
        rope: half-width of the region of practical equivalence.

    Returns:
        A list of `Comparison`, by reference, then in Table 1's order, then by score; a pair of
        experiments once (``freeze+attention`` - ``freeze`` under the first reference), a pair
        with no fold in common left out. McNemar's test pools the paired test images of every
        paired fold; the fold-level tests need `MIN_FOLDS` folds.
    """
    result, done = [], set()
    for ref in REFERENCES:
        for other in protocol.EXPERIMENTS:
            pair = frozenset((ref, other))
            if other == ref or pair in done or not by_exp.get(ref) or not by_exp.get(other):
                continue
            done.add(pair)
            pairs = paired_records(by_exp[ref], by_exp[other])
            if not pairs:
                continue
            a_right, b_right = correct_pairs(pairs)
            mc = mcnemar(a_right, b_right) if a_right.size else None
            for average, metric in SCORES:
                result.append(_compare_one(ref, ref, other, pairs, average, metric, mc, rope))
    return result
