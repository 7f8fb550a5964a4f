"""The report's paired comparisons: every Table 1 row against the proposed model
(``freeze+attention``) and Mobile Freeze-Net (``freeze``), on macro and weighted F1, over the
folds both ran, with the library's tests (docs/statistics.md). A difference is always A - B,
A being the reference.

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
# The ROPE's half-width on F1 and the posterior probability that decides (Benavoli et al. 2017).
ROPE, DECISIVE = 0.01, 0.95
# The references, in this order; each Table 1 row is compared with each (a pair once).
REFERENCES = ("freeze+attention", "freeze")
# (average, metric) pairs compared: macro F1 (Table 1) and weighted F1 (Table 2).
SCORES = (("macro", "f1"), ("weighted", "f1"))


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


def n_test_over_n_train(recs) -> float:
    """Mean n_test / n_train, n_train the training and early-stopping images: 1 / (k - 1)."""
    ratios = [r.split["test"] / (r.split["train"] + r.split["validation"]) for r in recs]
    return float(np.mean(ratios))


def correct_pairs(pairs):
    """Whether A and B predicted each test image right, paired by (fold, file)."""
    a_right, b_right = [], []
    for ra, rb in pairs:
        b_by_file = _right_by_file(rb.predictions)
        for file, right in _right_by_file(ra.predictions).items():
            if file in b_by_file:
                a_right.append(right)
                b_right.append(b_by_file[file])
    return np.array(a_right, dtype=bool), np.array(b_right, dtype=bool)


def _right_by_file(predictions):  # file -> whether argmax(y_prob) is y_true
    pred = np.argmax(np.asarray(predictions["y_prob"], dtype=np.float64), axis=1)
    right = pred == np.asarray(predictions["y_true"])
    return dict(zip(predictions["files"], right.tolist(), strict=True))


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _compare_one(ref, other, pairs, average, metric, mc, rope):
    """One `Comparison`; the fold-level tests only over folds where both scores are finite."""
    pairs = [p for p in pairs if all(_finite(r.metrics[average][metric]) for r in p)]
    scores_a = tuple(float(a.metrics[average][metric]) for a, _ in pairs)
    scores_b = tuple(float(b.metrics[average][metric]) for _, b in pairs)
    ratio = n_test_over_n_train([r for pair in pairs for r in pair]) if pairs else math.nan
    diffs = np.subtract(scores_a, scores_b)
    enough = len(pairs) >= MIN_FOLDS
    attention = [r for pair in pairs for r in pair if r.experiment == "freeze+attention"]
    return Comparison(
        reference=ref,
        a=ref,
        b=other,
        average=average,
        metric=metric,
        folds=tuple(a.fold for a, _ in pairs),
        scores_a=scores_a,
        scores_b=scores_b,
        test_over_train=ratio,
        t_test=keras_freeze.corrected_t_test(diffs, ratio) if enough else None,
        posterior=keras_freeze.bayesian_correlated_t_test(diffs, ratio, rope) if enough else None,
        mcnemar=mc,
        alpha_ratios=tuple(max(r.alpha) / min(r.alpha) for r in attention if r.alpha),
    )


def compare(by_exp, rope=ROPE):
    """Every Table 1 row against each of `REFERENCES` on each of `SCORES` (`Comparison` list,
    by reference, Table 1's order, score; a pair once, none without a common fold)."""
    result, done = [], set()
    for ref in REFERENCES:
        for other in protocol.EXPERIMENTS:
            pair = frozenset((ref, other))
            if other == ref or pair in done or not by_exp.get(ref) or not by_exp.get(other):
                continue
            done.add(pair)
            by_fold = {r.fold: r for r in by_exp[other]}  # (A, B) of each fold both ran
            ref_recs = sorted(by_exp[ref], key=lambda r: r.fold)
            pairs = [(r, by_fold[r.fold]) for r in ref_recs if r.fold in by_fold]
            if not pairs:
                continue
            a_right, b_right = correct_pairs(pairs)
            mc = keras_freeze.mcnemar(a_right, b_right) if a_right.size else None
            for average, metric in SCORES:
                result.append(_compare_one(ref, other, pairs, average, metric, mc, rope))
    return result
