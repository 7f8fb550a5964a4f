"""Tests for classification_metrics and ClassificationReport.

Oracle: scikit-learn (`precision_recall_fscore_support`, `accuracy_score`,
`roc_auc_score`, `confusion_matrix`) called directly; scikit-learn is a test
dependency only, the library computes in NumPy.
"""

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from keras_freeze import ClassificationReport
from keras_freeze import classification_metrics

NAN = float("nan")


def _same(a, b, tol=1e-12):
    """Equal to `tol`, NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _sklearn_report(y, prob, zero_division):
    """The documented numbers, from scikit-learn calls (the AUC rule on top)."""
    n, k = prob.shape
    labels = list(range(k))
    pred = prob.argmax(axis=1)
    ref = {"accuracy": skm.accuracy_score(y, pred)}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=average, zero_division=zero_division
        )
        ref[f"{average}_precision"], ref[f"{average}_recall"], ref[f"{average}_f1"] = p, r, f
    p, r, f, support = skm.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=zero_division
    )
    aucs = [skm.roc_auc_score(y == c, prob[:, c]) if 0 < support[c] < n else NAN for c in labels]
    ref["macro_auc"] = NAN if any(map(math.isnan, aucs)) else float(np.mean(aucs))
    present = [c for c in labels if support[c] > 0]
    weighted = [aucs[c] for c in present]
    ref["weighted_auc"] = (
        NAN
        if any(map(math.isnan, weighted))
        else float(np.average(weighted, weights=support[present]))
    )
    for c in labels:
        ref[f"recall_{c}"] = r[c]
    for c in labels:
        ref[f"auc_{c}"] = aucs[c]
    per_class = {
        str(c): {"precision": p[c], "recall": r[c], "f1": f[c], "auc": aucs[c]} for c in labels
    }
    return ref, per_class, support, skm.confusion_matrix(y, pred, labels=labels)


@st.composite
def _labels_and_probs(draw):
    """Any labels (classes may be absent), probabilities on a coarse grid (ties)."""
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    y = rng.integers(0, draw(st.integers(1, k)), size=n)  # often leaves classes out
    levels = draw(st.integers(1, 4))  # 1: every score tied
    prob = rng.integers(1, levels + 1, size=(n, k)).astype(np.float64)
    prob /= prob.sum(axis=1, keepdims=True)
    return y, prob


@given(_labels_and_probs(), st.sampled_from([0.0, 1.0, NAN]))
def test_equals_sklearn(data, zero_division):
    y, prob = data
    report = _quiet(classification_metrics, y, prob, zero_division=zero_division)
    ref, per_class, support, matrix = _quiet(_sklearn_report, y, prob, zero_division)
    assert set(report) == set(ref)
    for key, value in ref.items():
        assert _same(report[key], value), (key, report[key], value)
    for name, values in per_class.items():
        for metric, value in values.items():
            assert _same(report.per_class[name][metric], value), (name, metric)
        assert report.per_class[name]["support"] == support[int(name)]
    np.testing.assert_array_equal(report.confusion_matrix, matrix)
    assert report.confusion_matrix.dtype == np.int64
    assert _same(report.balanced_accuracy, ref["macro_recall"])
    assert report.n == len(y)
    for average in ("macro", "weighted"):
        assert report.__getattribute__(average)["accuracy"] == report.accuracy


@given(_labels_and_probs())
def test_auc_equals_sklearn_multiclass_when_every_class_is_present(data):
    y, prob = data
    k = prob.shape[1]
    y = np.concatenate([np.arange(k), y])  # every class present, with negatives
    prob = np.concatenate([np.full((k, k), 1.0 / k), prob])
    report = classification_metrics(y, prob)
    for average in ("macro", "weighted"):
        if k == 2:  # scikit-learn's binary form; both one-vs-rest AUCs equal it
            expected = skm.roc_auc_score(y, prob[:, 1])
        else:
            expected = skm.roc_auc_score(y, prob, multi_class="ovr", average=average)
        assert report[f"{average}_auc"] == pytest.approx(expected, abs=1e-12)


@given(_labels_and_probs())
def test_one_hot_labels_and_logits_give_the_same_report(data):
    y, grid = data
    k = grid.shape[1]
    # Continuous scores: softmax(log p) may round tied grid values apart.
    prob = np.random.default_rng(len(y)).dirichlet(np.ones(k), size=len(y))
    plain = _quiet(classification_metrics, y, prob)
    again = _quiet(classification_metrics, np.eye(k)[y], np.log(prob), from_logits=True)
    for key, value in plain.items():
        assert _same(again[key], value, tol=1e-9), key


def test_hand_computed():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    m = classification_metrics(y, p, class_names=["a", "b", "c"])
    # predictions 0, 1, 2, 0: precision (1/2, 1, 1), recall (1, 1, 1/2), support (1, 1, 2)
    assert m["accuracy"] == 0.75
    assert m["macro_precision"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert m["weighted_precision"] == pytest.approx((0.5 + 1 + 2) / 4)
    assert m["weighted_recall"] == pytest.approx(0.75)
    assert (m["recall_a"], m["recall_b"], m["recall_c"]) == (1.0, 1.0, 0.5)
    # class a: positive score 0.8 beats the negatives 0.2, 0.1 and 0.5 -> AUC 1
    assert m["auc_a"] == 1.0
    assert m.confusion_matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m.per_class["c"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "auc": 1.0,
        "support": 2,
    }
    assert m.balanced_accuracy == pytest.approx(2.5 / 3)


def test_tied_scores_count_one_half():
    # Positive scores (0.5, 0.5) against negatives (0.5, 0.2): pairs 1/2, 1, 1/2, 1 -> 3/4.
    y = np.array([1, 1, 0, 0])
    p1 = np.array([0.5, 0.5, 0.5, 0.2])
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1))
    assert m["auc_1"] == 0.75 and m["auc_0"] == 0.75


def test_sigmoid_column_is_two_classes():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.9, 0.4, 0.1, 0.8])
    m = classification_metrics(y, p)
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p > 0.5))
    assert m.class_names == ("0", "1")


# --------------------------------------------------------------------------
# The report: Mapping, attributes, to_dict
# --------------------------------------------------------------------------


def _report(**kwargs):
    y = np.array([0, 1, 2, 2, 1, 0])
    rng = np.random.default_rng(3)
    prob = rng.dirichlet(np.ones(3), size=6)
    return classification_metrics(y, prob, **kwargs)


def test_report_is_a_read_only_mapping():
    m = _report(class_names=["COVID", "Lung Opacity", "Normal"])
    assert isinstance(m, Mapping) and isinstance(m, ClassificationReport)
    assert list(m)[:9] == [
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "weighted_f1",
        "weighted_precision",
        "weighted_recall",
        "macro_auc",
        "weighted_auc",
    ]
    assert list(m)[9:] == [
        "recall_COVID",
        "recall_Lung_Opacity",
        "recall_Normal",
        "auc_COVID",
        "auc_Lung_Opacity",
        "auc_Normal",
    ]
    assert len(m) == 15 and dict(m) == {key: m[key] for key in m}
    assert all(type(value) is float for value in m.values())
    assert m["macro_f1"] == m.macro["f1"] and m["weighted_auc"] == m.weighted["auc"]
    assert m["recall_Lung_Opacity"] == m.per_class["Lung Opacity"]["recall"]
    with pytest.raises(KeyError):
        m["f1"]
    with pytest.raises(TypeError):
        m["accuracy"] = 1.0
    m.macro["f1"] = -1.0  # a copy: the report does not change
    m.per_class["COVID"]["recall"] = -1.0
    assert m.macro["f1"] == m["macro_f1"] != -1.0
    assert m.per_class["COVID"]["recall"] == m["recall_COVID"] != -1.0
    with pytest.raises(ValueError):
        m.confusion_matrix[0, 0] = 5
    with pytest.raises(AttributeError):
        m.accuracy = 1.0
    assert "ClassificationReport(n=6" in repr(m)


def test_attributes():
    m = _report(class_names=["a", "b", "c"])
    assert m.class_names == ("a", "b", "c")
    assert m.n == 6 and isinstance(m.n, int)
    assert list(m.macro) == ["f1", "accuracy", "precision", "recall", "auc"]
    assert list(m.weighted) == ["f1", "accuracy", "precision", "recall", "auc"]
    assert m.macro["accuracy"] == m.weighted["accuracy"] == m.accuracy
    assert list(m.per_class) == ["a", "b", "c"]
    for values in m.per_class.values():
        assert list(values) == ["precision", "recall", "f1", "auc", "support"]
        assert type(values["support"]) is int
    assert _report().class_names == ("0", "1", "2")


def test_to_dict_structure_and_json_round_trip():
    y = np.array([0, 1, 0, 1, 0, 1])
    prob = np.array([[0.9, 0.1, 0.0]] * 3 + [[0.1, 0.2, 0.7]] * 3)
    with pytest.warns(UserWarning, match="undefined"):
        m = classification_metrics(y, prob, class_names=["x", "y", "z"])
    d = m.to_dict()
    assert list(d) == [
        "n",
        "macro",
        "weighted",
        "balanced_accuracy",
        "per_class",
        "confusion_matrix",
    ]
    assert type(d["n"]) is int and type(d["balanced_accuracy"]) is float
    assert list(d["macro"]) == ["f1", "accuracy", "precision", "recall", "auc"]
    assert all(type(v) is float for v in d["macro"].values())
    assert d["per_class"]["z"]["support"] == 0 and math.isnan(d["per_class"]["z"]["auc"])
    assert d["confusion_matrix"] == [[2, 0, 1], [1, 0, 2], [0, 0, 0]]
    assert all(type(v) is int for row in d["confusion_matrix"] for v in row)
    back = json.loads(json.dumps(d))  # NaN survives as float('nan')
    assert math.isnan(back["macro"]["auc"]) and math.isnan(d["macro"]["auc"])
    assert json.dumps(back, sort_keys=True) == json.dumps(d, sort_keys=True)


def test_to_dict_matches_the_example_record_layout():
    """Field for field what the covid_cxr example stored as `metrics` (every class present)."""
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 2, 2])
    prob = np.random.default_rng(7).dirichlet(np.ones(4), size=10)
    names = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    d = classification_metrics(y, prob, names).to_dict()
    pred = prob.argmax(1)
    p, r, f, support = skm.precision_recall_fscore_support(
        y, pred, labels=range(4), zero_division=0
    )
    aucs = [skm.roc_auc_score(y == c, prob[:, c]) for c in range(4)]
    assert d["n"] == 10
    assert d["balanced_accuracy"] == pytest.approx(r.mean(), abs=1e-12)
    assert d["weighted"]["f1"] == pytest.approx((f * support).sum() / support.sum(), abs=1e-12)
    assert d["macro"]["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    for i, name in enumerate(names):
        assert d["per_class"][name] == {
            "precision": pytest.approx(p[i], abs=1e-12),
            "recall": pytest.approx(r[i], abs=1e-12),
            "f1": pytest.approx(f[i], abs=1e-12),
            "auc": pytest.approx(aucs[i], abs=1e-12),
            "support": int(support[i]),
        }
    assert d["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(4)).tolist()


# --------------------------------------------------------------------------
# The absent-class rule
# --------------------------------------------------------------------------


def test_absent_class_gives_nan_auc_and_warns():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 0, 1, 0, 1, 3, 3])  # class 2 absent
    prob = rng.dirichlet(np.ones(4), size=8)
    with pytest.warns(UserWarning, match=r"undefined for class\(es\) \['Lung_Opacity'\]"):
        m = classification_metrics(y, prob, class_names=["COVID", "Normal", "Lung Opacity", "V"])
    assert math.isnan(m["auc_Lung_Opacity"]) and math.isnan(m.per_class["Lung Opacity"]["auc"])
    assert math.isnan(m["macro_auc"]) and math.isnan(m.macro["auc"])
    present = [0, 1, 3]
    aucs = [skm.roc_auc_score(y == c, prob[:, c]) for c in present]
    support = [np.sum(y == c) for c in present]
    assert m["weighted_auc"] == pytest.approx(np.average(aucs, weights=support), abs=1e-12)
    assert m["auc_COVID"] == pytest.approx(aucs[0], abs=1e-12)
    # precision / recall / F1 follow zero_division: 0 by default, NaN on request
    # (then left out of the averages).
    assert m["recall_Lung_Opacity"] == 0.0 and m.per_class["Lung Opacity"]["support"] == 0
    with pytest.warns(UserWarning):
        m_nan = classification_metrics(y, prob, zero_division=float("nan"))
    assert math.isnan(m_nan["recall_2"])
    pred = prob.argmax(1)
    expected = skm.recall_score(y, pred, labels=present, average="macro", zero_division=0)
    assert m_nan["macro_recall"] == pytest.approx(expected, abs=1e-12)
    assert m_nan.balanced_accuracy == pytest.approx(expected, abs=1e-12)


def test_single_class_labels_make_all_auc_nan():
    prob = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    # class 1 has no negatives, class 0 no positives: both undefined, both named.
    with pytest.warns(UserWarning, match=r"class\(es\) \['0', '1'\]"):
        m = classification_metrics(np.array([1, 1, 1]), prob)
    assert math.isnan(m["macro_auc"]) and math.isnan(m["weighted_auc"])


def test_no_warning_when_every_auc_is_defined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _report()


# --------------------------------------------------------------------------
# Errors and packaging
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0, 1], [[0.5, 0.5]]), {}, "as many labels"),
        (([0, 3], [[0.5, 0.5], [0.1, 0.9]]), {}, r"labels in \[0, 1\]"),
        (([0, -1], [[0.5, 0.5], [0.1, 0.9]]), {}, r"labels in \[0, 1\]"),
        (([0, 0.5], [[0.5, 0.5], [0.1, 0.9]]), {}, "non-integer labels"),
        (([0, 1], [[0.5, 0.5], [0.1, np.nan]]), {}, "finite"),
        (([0, 1], np.zeros((2, 2, 2))), {}, "shape"),
        (([[1, 0, 0], [0, 1, 0]], [[0.5, 0.5], [0.1, 0.9]]), {}, "2 columns"),
        (([0, 1], [[0.5, 0.5], [0.1, 0.9]]), {"class_names": ["a"]}, "2 class names"),
        (([0, 1], [[0.5, 0.5], [0.1, 0.9]]), {"class_names": ["a b", "a-b"]}, "distinct"),
        (([0, 1], [[0.5, 0.5], [0.1, 0.9]]), {"zero_division": "warn"}, "zero_division"),
        (([0, 1], [[0.5, 0.5], [0.1, 0.9]]), {"zero_division": 0.5}, "zero_division"),
    ],
)
def test_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(*args, **kwargs)


def test_no_scikit_learn_at_run_time():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "import keras_freeze\n"
        "m = keras_freeze.classification_metrics([0, 1, 1], [[.9, .1], [.4, .6], [.7, .3]])\n"
        "print(round(m['macro_auc'], 6))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "1.0"
