"""Paired comparisons of two experiments over the folds both ran (the report's statistics).

The three tests are the library's (`keras_freeze.corrected_t_test`,
`keras_freeze.bayesian_correlated_t_test`, `keras_freeze.mcnemar`; docs/statistics.md).
`compare(by_exp)` applies them to the records: every Table 1 row against the proposed model
(``freeze+attention``) and against Mobile Freeze-Net (``freeze``), on macro and weighted F1.
A difference is always A - B, A being the reference model.

Example:
    >>> import keras_freeze, paired
    >>> post = keras_freeze.bayesian_correlated_t_test([0.01, 0.02, 0.03], 1 / 9, paired.ROPE)
    >>> round(post.p_left + post.p_rope + post.p_right, 12)
    1.0
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import protocol

import keras_freeze

# Fewer paired folds than this: no fold-level test, this text instead of its numbers.
MIN_FOLDS = 3
TOO_FEW = f"n < {MIN_FOLDS} paired folds"
# Half-width of the region of practical equivalence on F1 (Benavoli et al. 2017 use 0.01).
ROPE = 0.01
# Posterior probability above which the Bayesian test decides (Benavoli et al. 2017).
DECISIVE = 0.95
# The references, in this order; each Table 1 row is compared with each (a pair once).
REFERENCES = ("freeze+attention", "freeze")
# (average, metric) pairs compared: macro F1 (Table 1) and weighted F1 (Table 2).
SCORES = (("macro", "f1"), ("weighted", "f1"))


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
    t_test: keras_freeze.TTestResult | None
    posterior: keras_freeze.PosteriorResult | None
    mcnemar: keras_freeze.McNemarResult | None
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
        t_test = keras_freeze.corrected_t_test(diffs, ratio)
        posterior = keras_freeze.bayesian_correlated_t_test(diffs, ratio, rope)
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
            mc = keras_freeze.mcnemar(a_right, b_right) if a_right.size else None
            for average, metric in SCORES:
                result.append(_compare_one(ref, ref, other, pairs, average, metric, mc, rope))
    return result
