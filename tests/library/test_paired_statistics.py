"""The paired tests of cross-validation results (`keras_freeze._statistics`).

Every number is checked against an independent oracle: SciPy (`ttest_rel`, Student's t,
`binomtest`, chi-square), closed forms written out from the papers' formulas, Monte Carlo
sampling, and `baycomp` (Benavoli et al.'s own implementation of the Bayesian test).
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import keras_freeze
from keras_freeze import _statistics

D10 = [0.012, 0.004, 0.019, -0.003, 0.008, 0.015, 0.001, 0.010, 0.006, 0.013]


# --------------------------------------------------------------------------------------
# The corrected resampled t-test
# --------------------------------------------------------------------------------------
def test_corrected_t_test_equals_the_closed_form_for_two_degrees_of_freedom():
    # d = (0.01, 0.02, 0.03): mean 0.02, s^2 = 1e-4; factor 1/3 + 1/9 = 4/9; t = 0.02 / (0.02/3)
    # = 3. Student's t with 2 df has F(t) = 1/2 + t / (2 sqrt(2 + t^2)) and the quantile
    # t_q = a sqrt(2 / (1 - a^2)), a = 2q - 1.
    t = keras_freeze.corrected_t_test([0.01, 0.02, 0.03], test_over_train=1 / 9)
    assert isinstance(t, keras_freeze.TTestResult)
    assert t.k == 3 and t.df == 2 and t.var_factor == pytest.approx(4 / 9, abs=1e-15)
    assert t.t == pytest.approx(3.0, abs=1e-12)
    assert t.p == pytest.approx(1 - 3 / math.sqrt(11), abs=1e-12)
    q = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    assert t.low == pytest.approx(0.02 - q * 0.02 / 3, abs=1e-12)
    assert t.high == pytest.approx(0.02 + q * 0.02 / 3, abs=1e-12)


@pytest.mark.parametrize("ratio", [1 / 9, 1 / 4, 0.5])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_corrected_t_test_is_scipys_paired_t_test_with_the_corrected_variance(ratio, confidence):
    # ttest_rel divides the mean by sqrt(s^2 / k); the corrected test by sqrt((1/k + r) s^2).
    rng = np.random.default_rng(3)
    for k in (2, 3, 5, 10, 30):
        b = rng.uniform(0.8, 0.9, k)
        a = b + rng.normal(0.01, 0.02, k)
        t = keras_freeze.corrected_t_test(a - b, ratio, confidence=confidence)
        naive = stats.ttest_rel(a, b)
        expected = naive.statistic * math.sqrt((1 / k) / (1 / k + ratio))
        assert t.t == pytest.approx(expected, rel=1e-12)
        assert t.p == pytest.approx(2 * stats.t.sf(abs(expected), k - 1), rel=1e-12)
        half = stats.t.ppf(0.5 + confidence / 2, k - 1) * t.se
        assert t.low == pytest.approx(t.mean - half, rel=1e-12, abs=1e-15)
        assert t.high == pytest.approx(t.mean + half, rel=1e-12, abs=1e-15)


@given(
    st.lists(st.floats(-0.2, 0.2, allow_subnormal=False), min_size=3, max_size=10),
    st.floats(0.01, 0.5),
)
def test_swapping_a_and_b_negates_the_difference_and_mirrors_the_posterior(d, ratio):
    t = keras_freeze.corrected_t_test(d, ratio)
    u = keras_freeze.corrected_t_test([-x for x in d], ratio)
    assert u.mean == pytest.approx(-t.mean, abs=1e-12) and u.p == pytest.approx(t.p, abs=1e-9)
    p, q = (keras_freeze.bayesian_correlated_t_test(x, ratio) for x in (d, [-x for x in d]))
    assert p.p_left + p.p_rope + p.p_right == pytest.approx(1.0, abs=1e-12)
    assert min(p.p_left, p.p_rope, p.p_right) >= -1e-12
    assert q.p_left == pytest.approx(p.p_right, abs=1e-9)
    assert q.p_rope == pytest.approx(p.p_rope, abs=1e-9)


def test_zero_variance_is_a_point_mass():
    same = keras_freeze.corrected_t_test([0.02, 0.02, 0.02], 0.1)
    assert same.p == 0.0 and same.low == same.high == pytest.approx(0.02)
    assert keras_freeze.corrected_t_test([0.0, 0.0, 0.0], 0.1).p == 1.0
    post = keras_freeze.bayesian_correlated_t_test([0.02, 0.02, 0.02], 0.1, rope=0.01)
    assert (post.p_left, post.p_rope, post.p_right) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 finite"):
        keras_freeze.corrected_t_test([0.1], 0.1)


# --------------------------------------------------------------------------------------
# Student's t, written without SciPy: against SciPy
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 99])
def test_student_t_matches_scipy(df):
    for x in (-40.0, -5.0, -1.5, -0.3, 0.0, 0.2, 1.0, 2.5, 8.0):
        assert _statistics._t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), rel=1e-13)
        assert _statistics._t_tail(x, df) == pytest.approx(stats.t.sf(abs(x), df), rel=1e-13)
    for q in (0.55, 0.75, 0.9, 0.95, 0.975, 0.995, 0.9999):
        assert _statistics._t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-13)


# --------------------------------------------------------------------------------------
# The Bayesian correlated t-test
# --------------------------------------------------------------------------------------
def test_bayesian_probabilities_match_the_formula_written_out():
    # Student's t with 2 df written out: F(x) = 1/2 + z / (2 sqrt(2 + z^2)), z = (x - loc)/scale.
    d, ratio, rope = [0.01, 0.02, 0.03], 1 / 9, 0.01
    post = keras_freeze.bayesian_correlated_t_test(d, ratio, rope)
    assert isinstance(post, keras_freeze.PosteriorResult)
    scale = math.sqrt((1 / 3 + ratio) * 1e-4)  # rho / (1 - rho) = n_test / n_train

    def cdf(x):
        z = (x - 0.02) / scale
        return 0.5 + z / (2 * math.sqrt(2 + z * z))

    assert post.p_left == pytest.approx(cdf(-rope), abs=1e-12)
    assert post.p_right == pytest.approx(1 - cdf(rope), abs=1e-12)
    assert post.p_rope == pytest.approx(cdf(rope) - cdf(-rope), abs=1e-12)
    assert post.p_left + post.p_rope + post.p_right == pytest.approx(1.0, abs=1e-15)


def test_bayesian_probabilities_match_scipys_student_t():
    post = keras_freeze.bayesian_correlated_t_test(D10, 1 / 9, rope=0.005)
    d = np.asarray(D10)
    scale = math.sqrt(1 / 10 + 1 / 9) * d.std(ddof=1)
    assert post.scale == pytest.approx(scale, rel=1e-15) and post.df == 9
    assert post.p_left == pytest.approx(stats.t.cdf(-0.005, 9, d.mean(), scale), rel=1e-12)
    assert post.p_right == pytest.approx(stats.t.sf(0.005, 9, d.mean(), scale), rel=1e-12)


def test_bayesian_probabilities_match_monte_carlo_sampling():
    post = keras_freeze.bayesian_correlated_t_test(D10, 1 / 9, rope=0.01)
    rng = np.random.default_rng(0)
    d = np.asarray(D10)
    scale = math.sqrt((1 / 10 + 1 / 9) * d.var(ddof=1))
    mu = d.mean() + scale * rng.standard_t(9, 400_000)
    sampled = [np.mean(mu < -0.01), np.mean(np.abs(mu) <= 0.01), np.mean(mu > 0.01)]
    assert [post.p_left, post.p_rope, post.p_right] == pytest.approx(sampled, abs=0.005)


def test_bayesian_probabilities_match_baycomp():
    baycomp = pytest.importorskip("baycomp")
    # baycomp's correlation is 1 / k (k folds of one cross-validation): n_test / n_train =
    # 1 / (k - 1); its difference is y - x, so x is B and y is A.
    b = np.linspace(0.90, 0.95, 10)
    a = b + np.asarray(D10)
    for rope in (0.005, 0.01, 0.02):
        post = keras_freeze.bayesian_correlated_t_test(a - b, 1 / 9, rope=rope)
        theirs = baycomp.CorrelatedTTest.probs(b, a, rope=rope)
        assert [post.p_left, post.p_rope, post.p_right] == pytest.approx(theirs, abs=1e-9)


# --------------------------------------------------------------------------------------
# McNemar's test
# --------------------------------------------------------------------------------------
def test_mcnemar_exact_and_chi_square_by_hand():
    a = [True] * 3 + [False] * 1 + [True] * 5
    b = [False] * 3 + [True] * 1 + [True] * 5
    mc = keras_freeze.mcnemar(a, b)  # b = 3, c = 1: 2 * P(Bin(4, 1/2) <= 1) = 2 * 5 / 16
    assert isinstance(mc, keras_freeze.McNemarResult)
    assert (mc.a_only, mc.b_only, mc.method, mc.p) == (3, 1, "exact binomial", 0.625)
    assert (mc.n, mc.both_right, mc.both_wrong) == (9, 5, 0)
    a = [True] * 30 + [False] * 10
    b = [False] * 30 + [True] * 10
    mc = keras_freeze.mcnemar(a, b)  # chi^2 = (|30 - 10| - 1)^2 / 40; P(chi^2_1 > x) = erfc(.)
    assert mc.method == "chi-square, continuity corrected" and mc.statistic == 361 / 40
    assert mc.p == pytest.approx(math.erfc(math.sqrt(361 / 80)), abs=1e-12)
    assert keras_freeze.mcnemar([True, False], [True, False]).p == 1.0  # no discordant pair
    assert keras_freeze.mcnemar([True, False], [True, False], exact_below=0).p == 1.0


def _outcomes(a_only, b_only, both_right=2, both_wrong=1):
    a = [True] * a_only + [False] * b_only + [True] * both_right + [False] * both_wrong
    b = [False] * a_only + [True] * b_only + [True] * both_right + [False] * both_wrong
    return a, b


@pytest.mark.parametrize("a_only", range(0, 25, 3))
@pytest.mark.parametrize("b_only", [0, 1, 5, 12, 24])
def test_mcnemar_equals_scipys_binomtest_and_chi_square(a_only, b_only):
    mc = keras_freeze.mcnemar(*_outcomes(a_only, b_only))
    n = a_only + b_only
    if n < 25:
        assert mc.method == "exact binomial" and mc.statistic is None
        expected = stats.binomtest(a_only, n, 0.5).pvalue if n else 1.0
        assert mc.p == pytest.approx(expected, rel=1e-13)
    else:
        statistic = (abs(a_only - b_only) - 1) ** 2 / n
        assert mc.statistic == pytest.approx(statistic, rel=1e-15)
        assert mc.p == pytest.approx(stats.chi2.sf(statistic, 1), rel=1e-12)
    exact = keras_freeze.mcnemar(*_outcomes(a_only, b_only), exact_below=10**6)
    expected = stats.binomtest(a_only, n, 0.5).pvalue if n else 1.0
    assert exact.method == "exact binomial" and exact.p == pytest.approx(expected, rel=1e-13)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("diffs", [[], [0.1], [0.1, float("nan")], [0.1, math.inf, 0.2]])
def test_too_few_or_non_finite_differences_are_refused(diffs):
    for test in (keras_freeze.corrected_t_test, keras_freeze.bayesian_correlated_t_test):
        with pytest.raises(ValueError, match=r"at least 2 finite paired differences.*diffs="):
            test(diffs, 0.1)


@pytest.mark.parametrize("ratio", [0, -0.1, math.nan, math.inf, "0.1", None])
def test_bad_test_over_train_is_refused(ratio):
    for test in (keras_freeze.corrected_t_test, keras_freeze.bayesian_correlated_t_test):
        with pytest.raises(ValueError, match="test_over_train"):
            test([0.1, 0.2, 0.3], ratio)


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.5, math.nan])
def test_bad_confidence_is_refused(confidence):
    with pytest.raises(ValueError, match=r"confidence"):
        keras_freeze.corrected_t_test([0.1, 0.2, 0.3], 0.1, confidence=confidence)


@pytest.mark.parametrize("rope", [-0.01, math.nan, math.inf])
def test_bad_rope_is_refused(rope):
    with pytest.raises(ValueError, match=r"Expected `rope` to be a finite number >= 0"):
        keras_freeze.bayesian_correlated_t_test([0.1, 0.2, 0.3], 0.1, rope=rope)


def test_mcnemar_refuses_unpaired_or_empty_outcomes_and_a_bad_threshold():
    with pytest.raises(ValueError, match="Received: 3 outcomes of A and 2 of B"):
        keras_freeze.mcnemar([True, False, True], [True, False])
    with pytest.raises(ValueError, match="at least one image"):
        keras_freeze.mcnemar([], [])
    with pytest.raises(ValueError, match="exact_below"):
        keras_freeze.mcnemar([True], [False], exact_below=-1)


@pytest.mark.parametrize("outcomes", [[1, 2, 0], [0.5, 1.0, 0.0], ["no", "yes", "no"], [[1, 0, 1]]])
def test_mcnemar_refuses_outcomes_that_are_not_right_or_wrong(outcomes):
    # Truthiness would read 2, 0.5 and "no" as right, and a 2-D array would be flattened.
    with pytest.raises(ValueError, match=r"a_correct to be a 1-D sequence of booleans or 0/1"):
        keras_freeze.mcnemar(outcomes, [True, False, True])


@pytest.mark.parametrize("diffs", [["a", "b"], [[0.1, 0.2], [0.3, 0.4]], [None, 0.1]])
def test_differences_that_are_not_a_1d_list_of_numbers_are_refused(diffs):
    with pytest.raises(ValueError, match=r"diffs"):
        keras_freeze.corrected_t_test(diffs, 0.1)
