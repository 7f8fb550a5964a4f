"""The report's paired statistics (`paired.py`, `report.write_statistics`) and its figures.

Records are written by hand (no training): synthetic predictions per (experiment, fold), their
metrics from `keras_freeze.classification_metrics`, as `experiment.evaluate` computes them.
Every number is checked against a computation written out here from the papers' formulas; the
tests themselves (`keras_freeze.corrected_t_test` ...) against SciPy and `baycomp` in
tests/library/test_paired_statistics.py.
"""

import csv
import doctest
import math

import numpy as np
import paired
import protocol
import pytest
import records
import report
import reproduce
from scipy import stats

import keras_freeze

CLASSES = list(protocol.CLASS_NAMES)
SHARED = {"data": "synthetic-test", "epochs": 1}
SPLIT = {"train": 81, "validation": 9, "test": 10}  # n_test / n_train = 10 / 90 = 1 / 9


def _predictions(fold, accuracy, seed, n=40):
    """``n`` test images of ``fold``; about ``accuracy`` of them predicted right."""
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % 4
    files = [f"{CLASSES[c]}/images/f{fold}_{i}.png" for i, c in enumerate(y_true)]
    right = rng.random(n) < accuracy
    pred = np.where(right, y_true, (y_true + 1 + rng.integers(0, 3, n)) % 4)
    prob = rng.random((n, 4)) * 0.2
    prob[np.arange(n), pred] += 1.0
    prob = np.round(prob / prob.sum(axis=1, keepdims=True), 6)
    return {"files": files, "y_true": y_true.tolist(), "y_prob": prob.tolist()}


def _record(experiment, fold, predictions, split=SPLIT, alpha=None):
    """A complete record as `experiment._record` writes it, with what the report reads."""
    metrics = keras_freeze.classification_metrics(
        predictions["y_true"], predictions["y_prob"], class_names=CLASSES, zero_division=0.0
    ).to_dict()
    obj = {name: None for name in records.Record.__dataclass_fields__}
    obj.update(
        schema=protocol.RECORD_SCHEMA,
        status="complete",
        experiment=experiment,
        title=protocol.EXPERIMENT_TITLES[experiment],
        fold=fold,
        synthetic=True,
        metrics=metrics,
        epochs_run=1,
        history={p + k: [0.5] for k in ("loss", "accuracy", "macro_f1") for p in ("", "val_")},
        time_s={"total": 1.0},
        alpha=alpha,
        alpha_source=None if alpha is None else protocol.PAPER_ALPHA_SOURCE,
        freeze={},
        weights="none",
        preprocessing="rescale",
        image_size=32,
        batch_size=8,
        max_epochs=1,
        early_stopping={"patience": 5},
        split=dict(split),
        data={
            "source": "synthetic",
            "root": "/tmp",
            "n_used": 400,
            "folds_source": "stratified",
            "n_corrupt": 0,
            "n_missing": 0,
        },
        protocol={"shared": SHARED, "own": {}},
        predictions=predictions,
        backend="jax",
        keras_version="3",
    )
    return obj


ACCURACY = {"freeze+attention": 0.8, "freeze": 0.75, "covid-net": 0.6}
ALPHA = [1.0, 1.05, 1.09, 1.02]


def _write_run(folder, folds, experiments=tuple(ACCURACY)):
    """Writes the records of ``experiments`` x ``folds`` into ``folder``; returns them."""
    store = records.RecordStore(folder)
    written = []
    for k in folds:
        for e in experiments:
            seed = 100 * k + list(ACCURACY).index(e)
            alpha = [a * (1 + 0.01 * k) for a in ALPHA] if e == "freeze+attention" else None
            split = {**SPLIT, "test": SPLIT["test"] + k}  # per-fold sizes differ a little
            obj = _record(e, k, _predictions(k, ACCURACY[e], seed), split, alpha)
            records.atomic_write_json(store.path(e, k), obj)
            written.append(records.Record.from_dict(obj))
    return written


def _by_exp(recs):
    by_exp = {e: [] for e in protocol.EXPERIMENTS}
    for r in sorted(recs, key=lambda r: r.fold):
        by_exp[r.experiment].append(r)
    return by_exp


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_module_docstring_examples_run():
    result = doctest.testmod(paired, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------
# The corrected resampled t-test of the records (the tests themselves: tests/library)
# --------------------------------------------------------------------------------------
def test_corrected_t_test_equals_a_hand_computation_from_the_records(tmp_path):
    recs = _write_run(tmp_path, folds=(1, 2, 3, 4))
    by_exp = _by_exp(recs)
    comps = paired.compare(by_exp)
    c = next(c for c in comps if (c.a, c.b, c.average) == ("freeze+attention", "freeze", "macro"))
    a = [r.metrics["macro"]["f1"] for r in by_exp["freeze+attention"]]
    b = [r.metrics["macro"]["f1"] for r in by_exp["freeze"]]
    d = [x - y for x, y in zip(a, b, strict=True)]
    k = len(d)
    mean = sum(d) / k
    var = sum((x - mean) ** 2 for x in d) / (k - 1)
    pair_recs = by_exp["freeze+attention"] + by_exp["freeze"]
    ratio = sum(r.split["test"] / (r.split["train"] + r.split["validation"]) for r in pair_recs)
    ratio /= len(pair_recs)
    assert ratio == pytest.approx(np.mean([(10 + f) / 90 for f in (1, 2, 3, 4)]), abs=1e-15)
    se = math.sqrt((1 / k + ratio) * var)
    t = mean / se
    assert c.folds == (1, 2, 3, 4)
    assert c.t_test.mean == pytest.approx(mean, abs=1e-9)
    assert c.t_test.t == pytest.approx(t, abs=1e-9)
    assert c.t_test.p == pytest.approx(2 * stats.t.sf(abs(t), k - 1), abs=1e-9)
    half = stats.t.ppf(0.975, k - 1) * se
    assert c.t_test.low == pytest.approx(mean - half, abs=1e-9)
    assert c.t_test.high == pytest.approx(mean + half, abs=1e-9)


# --------------------------------------------------------------------------------------
# McNemar's test
# --------------------------------------------------------------------------------------
def _prediction_set(fold, rights):
    """Test predictions of the files ``f0..``: right or wrong as ``rights`` says."""
    y_true = [i % 4 for i in range(len(rights))]
    files = [f"{CLASSES[c]}/images/f{fold}_{i}.png" for i, c in enumerate(y_true)]
    y_prob = np.full((len(rights), 4), 0.1)
    predicted = [c if ok else (c + 1) % 4 for c, ok in zip(y_true, rights, strict=True)]
    y_prob[np.arange(len(rights)), predicted] = 0.7
    return {"files": files, "y_true": y_true, "y_prob": y_prob.tolist()}


def _reordered(pred, keep):
    """``pred`` with its images in reverse order, keeping those at ``keep``."""
    idx = [i for i in reversed(range(len(pred["files"]))) if i in keep]
    return {k: [pred[k][i] for i in idx] for k in pred}


def test_mcnemar_counts_equal_those_of_the_saved_predictions(tmp_path):
    # Fold 1: A right on 0-5, B right on 3-7 (image 9 only in A: B skipped it as unreadable).
    # Fold 2: A right on 0-2, B right on 1-4. Paired by (fold, file), B's order reversed.
    a1 = [True] * 6 + [False] * 4
    b1 = [False] * 3 + [True] * 5 + [False] * 2
    a2 = [True] * 3 + [False] * 3
    b2 = [False] + [True] * 4 + [False]
    store = records.RecordStore(tmp_path)
    for fold, ra, rb in ((1, a1, b1), (2, a2, b2)):
        pa, pb = _prediction_set(fold, ra), _prediction_set(fold, rb)
        pb = _reordered(pb, keep=set(range(len(rb))) - ({9} if fold == 1 else set()))
        for e, p in (("freeze+attention", pa), ("freeze", pb)):
            records.atomic_write_json(store.path(e, fold), _record(e, fold, p))
    # By hand: fold 1 (images 0-8): both right 3-5 (3), A only 0-2 (3), B only 6-7 (2),
    # both wrong 8 (1); fold 2: both right 1-2 (2), A only 0 (1), B only 3-4 (2), both wrong 5.
    by_exp = store.collect(SHARED)
    c = paired.compare(by_exp)[0]
    mc = c.mcnemar
    assert (mc.n, mc.both_right, mc.a_only, mc.b_only, mc.both_wrong) == (15, 5, 4, 4, 2)
    assert mc.method == "exact binomial"
    assert mc.p == pytest.approx(min(1, 2 * sum(math.comb(8, i) for i in range(5)) / 2**8))
    # The report's table and CSV say the same.
    report.write_statistics(tmp_path, by_exp, synthetic=True)
    row = _read_csv(tmp_path / "statistics.csv")[0]
    assert [row[f"mcnemar_{k}"] for k in ("n", "both_right", "a_only", "b_only")] == [
        "15",
        "5",
        "4",
        "4",
    ]
    assert row["mcnemar_method"] == "exact binomial" and row["mcnemar_statistic"] == ""
    assert "| 4 / 4 of 15 | 1.0000 (exact binomial) |" in (tmp_path / "statistics.md").read_text()


# --------------------------------------------------------------------------------------
# The report: statistics.md / .csv, results.csv, shards, too few folds, the figures
# --------------------------------------------------------------------------------------
STATISTICS_NUMBERS = ("mean_diff", "sd_diff", "t", "p_value", "ci_low", "ci_high", "p_left")
STATISTICS_NUMBERS += ("p_rope", "p_right", "n_test_over_n_train", "var_factor", "mcnemar_p")


def test_report_writes_statistics_that_recompute_from_results_csv(tmp_path):
    _write_run(tmp_path, folds=(1, 2, 3))
    by_exp = records.RecordStore(tmp_path).collect(SHARED)
    report.write_reports(tmp_path, SHARED, True, CLASSES)
    rows = _read_csv(tmp_path / "statistics.csv")
    # freeze+attention against freeze and covid-net, freeze against covid-net; two scores each.
    assert [(r["model_a"], r["model_b"], r["average"]) for r in rows] == [
        ("freeze+attention", "covid-net", "macro"),
        ("freeze+attention", "covid-net", "weighted"),
        ("freeze+attention", "freeze", "macro"),
        ("freeze+attention", "freeze", "weighted"),
        ("freeze", "covid-net", "macro"),
        ("freeze", "covid-net", "weighted"),
    ]
    results = _read_csv(tmp_path / "results.csv")
    for row in rows:
        a, b, avg = row["model_a"], row["model_b"], row["average"]
        score = {(r["experiment"], int(r["fold"])): (float(r[f"{avg}_f1"]), r) for r in results}
        # results.csv holds every digit: the same floats as the records.
        for e in (a, b):
            for r in by_exp[e]:
                assert score[(e, r.fold)][0] == r.metrics[avg]["f1"]
        d = [score[(a, k)][0] - score[(b, k)][0] for k in (1, 2, 3)]
        sizes = [score[(e, k)][1] for e in (a, b) for k in (1, 2, 3)]
        ratio = np.mean(
            [
                int(s["split_test"]) / (int(s["split_train"]) + int(s["split_validation"]))
                for s in sizes
            ]
        )
        assert float(row["n_test_over_n_train"]) == pytest.approx(ratio, abs=1e-12)
        t = np.mean(d) / math.sqrt((1 / 3 + ratio) * np.var(d, ddof=1))
        assert float(row["mean_diff"]) == pytest.approx(np.mean(d), abs=1e-4)
        assert float(row["t"]) == pytest.approx(t, abs=1e-4)
        assert float(row["p_value"]) == pytest.approx(2 * stats.t.sf(abs(t), 2), abs=1e-4)
        probs = [float(row[k]) for k in ("p_left", "p_rope", "p_right")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-12)
        for key in STATISTICS_NUMBERS:  # plain decimals, never an exponent
            assert "e" not in row[key] and float(row[key]) == float(row[key]), key
    attention = [r for r in rows if {r["model_a"], r["model_b"]} == {"freeze+attention", "freeze"}]
    ratios = [max(r.alpha) / min(r.alpha) for r in by_exp["freeze+attention"]]
    assert float(attention[0]["alpha_max_over_min"]) == pytest.approx(np.mean(ratios))
    md = (tmp_path / "statistics.md").read_text()
    assert "SYNTHETIC DATA" in md and "alpha max/min = 1.090" in md
    assert "published alpha 1.129" in md and paired.TOO_FEW not in md
    assert all(row["verdict"] in md for row in rows)


def test_report_over_shards_equals_report_over_one_folder(tmp_path):
    _write_run(tmp_path / "one", folds=(1, 2, 3))
    _write_run(tmp_path / "s1", folds=(1, 3))
    _write_run(tmp_path / "s2", folds=(2,))
    _write_run(tmp_path / "s2", folds=(3,), experiments=("covid-net",))  # also in s1: same
    for dirs, out in (([tmp_path / "one"], "a"), ([tmp_path / "s2", tmp_path / "s1"], "b")):
        assert reproduce.main(["report", *map(str, dirs), "--out", str(tmp_path / out)]) == 0
    for name in ("statistics.csv", "statistics.md", "results.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    assert len(_read_csv(tmp_path / "a" / "statistics.csv")) == 6


def test_fewer_than_three_paired_folds_give_the_text_not_a_number(tmp_path):
    _write_run(tmp_path, folds=(1, 2), experiments=("freeze+attention", "freeze"))
    by_exp = records.RecordStore(tmp_path).collect(SHARED)
    text = report.write_statistics(tmp_path, by_exp, synthetic=False)
    row = next(r for r in text.splitlines() if r.startswith("| freeze+attention − freeze"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:6] == ["n < 3 paired folds"] * 3 and cells[-1].startswith("n < 3 paired folds")
    (csv_row, _) = _read_csv(tmp_path / "statistics.csv")
    for key in ("mean_diff", "t", "p_value", "ci_low", "ci_high", "p_left", "p_rope", "p_right"):
        assert csv_row[key] == "", key
    assert csv_row["n_folds"] == "2" and csv_row["verdict"].startswith("n < 3 paired folds")
    assert csv_row["mcnemar_p"] != ""  # McNemar pools the images: any number of folds


def test_verdict_says_what_the_posterior_supports():
    def comparison(diffs):
        post = keras_freeze.bayesian_correlated_t_test(diffs, 1 / 9)
        fields = ("freeze", "freeze", "covid-net", "macro", "f1", (1, 2, 3), (), (), 1 / 9)
        c = paired.Comparison(*fields, t_test=None, posterior=post, mcnemar=None, alpha_ratios=())
        return c.verdict()

    assert comparison([0.001, -0.001, 0.0005]) == "practically equivalent: P(ROPE) = 1.00"
    assert comparison([0.2, 0.21, 0.19]) == "freeze better by more than 0.01: P(A better) = 1.00"
    assert comparison([-0.2, -0.21, -0.19]).startswith("covid-net better by more than 0.01")
    assert comparison([0.02, -0.01, 0.03]).endswith("(below 0.95: not decisive)")


def test_table1_figure_and_unclipped_confusion_titles(tmp_path):
    recs = _write_run(tmp_path, folds=(1, 2, 3))
    written = report.write_figures(tmp_path, _by_exp(recs), True, CLASSES)
    names = [p.name for p in written]
    assert "table1_macro.png" in names
    assert (tmp_path / "table1_macro.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_exp = _by_exp(recs)
    tag = " [SYNTHETIC DATA]"
    fig = report._confusion_figure("freeze+attention", by_exp["freeze+attention"] * 4, CLASSES, tag)
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    width = fig.get_figwidth() * fig.dpi
    assert 0 <= box.x0 and box.x1 <= width, (box, width)
    report.plt.close(fig)
    assert "statistics.md" in report.MAIN_FILES
