"""Tests of examples/covid_cxr/reproduce.py and its modules, through the real command.

Each end-to-end test runs ``python examples/covid_cxr/reproduce.py ...`` in a subprocess on the
current Keras backend, on a tiny generated data set (80 images, 32 px, 2 folds, 1 epoch, random
init), and checks the outputs. The example computes no metric itself: a record's ``metrics`` must
equal ``keras_freeze.classification_metrics`` of the predictions the record stores (and
scikit-learn on the same values). pyproject.toml's pytest `pythonpath` puts examples/covid_cxr
on the path.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import experiment
import kaggle
import keras
import numpy as np
import protocol
import pytest
import records
import report
import reproduce
import synthetic
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PIL_Image
from sklearn import metrics as skm

import keras_freeze

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "covid_cxr"
SCRIPT = EXAMPLE / "reproduce.py"

MOBILENET = ["--experiments", "finetune", "freeze", "stochastic", "freeze+attention"]
# The MobileNetV2 experiments at 32 px (Inception-V3 needs 75 px; a later --experiments wins).
TINY = [*MOBILENET, "--image-size", "32", "--epochs", "1", "--weights", "none", "--workers", "2"]
METRICS = ("f1", "accuracy", "precision", "recall", "auc")


def run_cli(args, tmp_path, timeout=900):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = keras.backend.backend()
    env["KERAS_FREEZE_CACHE"] = str(tmp_path / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output[-6000:]}"
    return output


def make_tree(root, n_total=80):
    ds = synthetic.generate_synthetic_cxr(root, n_total=n_total, image_size=32, progress=False)
    return Path(ds)


# --------------------------------------------------------------------------------------
# Command line (no training)
# --------------------------------------------------------------------------------------
def test_help_explains_every_option():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for opt in (
        "--data-dir",
        "--folds-dir",
        "--out",
        "--experiments",
        "--folds",
        "--image-size",
        "--epochs",
        "--batch-size",
        "--weights",
        "--alpha",
        "--seed",
        "--feature-cache",
        "--feature-cache-dtype",
    ):
        assert opt in text, opt
    for word in (
        "SYNTHETIC",
        "imagenet",
        "torchvision",
        "estimate",
        "paper",
        "1e-5",
        "freeze+attention",
        "stochastic",
        "finetune",
    ):
        assert word in text, word


@pytest.mark.parametrize(
    "argv",
    [
        ["--image-size", "8"],
        ["--folds", "0"],
        ["--epochs", "0"],
        ["--experiments", "nope"],
        ["--n-folds", "1"],
        ["--bn-momentum", "1.5"],
        ["--bn-momentum", "fast"],
    ],
)
def test_invalid_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(argv)
    assert exc.value.code == 2
    assert "Received" in capsys.readouterr().err or argv[0] == "--experiments"


def test_unusable_data_folders_are_refused_before_training(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv in (
        ["--data-dir", str(tmp_path / "nope")],
        ["--data-dir", str(tmp_path / "empty")],
    ):
        with pytest.raises(SystemExit) as exc:
            reproduce.main([*argv, "--out", str(tmp_path / "out")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Received: data_dir=" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "records").exists()


def test_defaults_embedded_vs_protocol(tmp_path):
    emb = reproduce.parse_settings([])
    assert emb.embedded and emb.weights == "torchvision" and emb.folds == (1,)
    assert emb.batch_size == 8 and emb.lr == 1e-4 and emb.finetune_lr == 1e-5
    assert emb.bn_momentum == 0.9
    real = reproduce.parse_settings(["--data-dir", str(tmp_path)])
    assert not real.embedded
    assert (real.image_size, real.batch_size, real.n_folds, real.weights, real.folds) == (
        None,  # every model at its published input side
        8,
        10,
        "imagenet",
        None,
    )
    sizes = {e: real.image_size_for(e) for e in real.experiments}
    assert sizes == {
        "covid-net": 480,  # Wang et al. 2020, Sci. Rep.
        "covid-lite": 224,
        "inception-v3": 299,
        "resnet18-cwbce": 224,
        **{e: 224 for e in protocol.MOBILENET_EXPERIMENTS},  # the paper
    }
    assert emb.image_size == 80 and emb.experiments == tuple(protocol.EXPERIMENTS)
    assert len(emb.experiments) == 8 and emb.experiments[:4] == (
        "covid-net",
        "covid-lite",
        "inception-v3",
        "resnet18-cwbce",
    )
    assert real.patience == 5 and real.preprocessing == "rescale" and real.bn_momentum is None
    assert reproduce.parse_settings(["--weights", "none"]).weights is None


# --------------------------------------------------------------------------------------
# Records and metrics: the record's metrics are the library's, of the stored predictions
# --------------------------------------------------------------------------------------
# The keys of a record file, in order: the example's interface (issue 11 kept them as they were).
RECORD_KEYS = [
    "schema",
    "status",
    "experiment",
    "title",
    "fold",
    "synthetic",
    "note",
    "metrics",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "history",
    "train_images_per_s",
    "time_s",
    "alpha",
    "alpha_source",
    "loss",
    "optimizer",
    "freeze",
    "head",
    "weights",
    "preprocessing",
    "image_size",
    "batch_size",
    "max_epochs",
    "early_stopping",
    "split",
    "data",
    "protocol",
    "predictions",
    "backend",
    "keras_version",
    "python",
    "platform",
    "finished",
    "feature_cache",
    "precision",
    "model",
]
METRICS_KEYS = ["n", "macro", "weighted", "balanced_accuracy", "per_class", "confusion_matrix"]


def assert_same(a, b, path="metrics"):
    """Exact equality of two JSON-like trees, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


def check_metrics_of_record(rec, class_names=protocol.CLASS_NAMES):
    """The record's metrics equal the library's and scikit-learn's on its stored predictions."""
    pred = rec["predictions"]
    y, p = np.asarray(pred["y_true"]), np.asarray(pred["y_prob"], dtype=np.float64)
    m = rec["metrics"]
    assert list(m) == METRICS_KEYS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's note on a class absent from the fold
        lib = keras_freeze.classification_metrics(
            y, p, class_names=class_names, zero_division=0.0
        ).to_dict()
    assert_same(m, json.loads(json.dumps(lib)))
    # Independent oracle on the very same values: scikit-learn.
    labels = list(range(len(class_names)))
    y_hat = p.argmax(1)
    for avg in ("macro", "weighted"):
        assert m[avg]["f1"] == pytest.approx(
            skm.f1_score(y, y_hat, average=avg, labels=labels, zero_division=0), abs=1e-12
        )
        assert m[avg]["accuracy"] == pytest.approx(skm.accuracy_score(y, y_hat), abs=1e-12)
    for c, name in enumerate(class_names):
        auc = m["per_class"][name]["auc"]
        if 0 < (y == c).sum() < len(y):
            assert auc == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
        else:
            assert math.isnan(auc) and math.isnan(m["macro"]["auc"])
    assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y, y_hat, labels=labels))


@st.composite
def near_tied_predictions(draw):
    """Softmax-like rows whose values differ below the stored precision (1e-6), as an
    untrained model gives: rounding to 6 decimals turns them into ties."""
    n = draw(st.integers(4, 24))
    y = np.array([0, 1, 2, 3] + draw(st.lists(st.integers(0, 3), min_size=n - 4, max_size=n - 4)))
    jitter = draw(st.lists(st.integers(-40, 40), min_size=4 * n, max_size=4 * n))
    p = 0.25 + np.asarray(jitter, dtype=np.float64).reshape(n, 4) * 1e-8
    return y, np.asarray(p, dtype=np.float32)


@given(near_tied_predictions())
def test_metrics_are_computed_from_exactly_the_stored_predictions(pred):
    """The flaky-test root cause: metrics and stored values must be the same numbers."""
    y, p = pred
    stored = experiment.stored_probabilities(p)
    m = experiment.metrics_of(y, stored, protocol.CLASS_NAMES)
    # What a reader of the record file gets back, after JSON.
    reread = json.loads(json.dumps({"p": stored}))["p"]
    assert reread == stored
    predictions = {"y_true": y.tolist(), "y_prob": reread}
    rec = {"metrics": json.loads(json.dumps(m)), "predictions": predictions}
    check_metrics_of_record(rec)


def test_record_keys_are_the_interface(tmp_path):
    fields = {
        f.name: None for f in dataclasses.fields(records.Record) if f.default is dataclasses.MISSING
    }
    rec = records.Record(**{**fields, "experiment": "freeze", "fold": 2, "protocol": {}})
    assert list(rec.to_dict()) == RECORD_KEYS
    assert rec.schema == protocol.RECORD_SCHEMA and rec.status == "complete"
    store = records.RecordStore(tmp_path)
    path = store.save(rec)
    assert path == tmp_path / "records" / "freeze_fold2.json"
    assert list(json.loads(path.read_text())) == RECORD_KEYS
    assert store.load(path) == rec
    assert (
        rec.made_with({"shared": {}, "own": {}}) is False
        and records.Record.from_dict({"status": "x"}) is None
    )
    obj = json.loads(path.read_text())
    for broken in ({**obj, "status": "running"}, {**obj, "schema": 99}, {"schema": 1}):
        path.write_text(json.dumps(broken))
        assert store.load(path) is None
    path.write_text('{"schema": 1, "status": "compl')
    assert store.load(path) is None


def test_mean_std_and_atomic_write(tmp_path):
    mu, sd = report.mean_std([0.9, 0.92, 0.95, float("nan")])
    assert mu == pytest.approx(np.mean([0.9, 0.92, 0.95]))
    assert sd == pytest.approx(np.std([0.9, 0.92, 0.95], ddof=1))
    assert report.mean_std([0.5]) == (0.5, 0.0)
    target = tmp_path / "sub" / "r.json"
    records.atomic_write_json(target, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": [0, 1]}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temporary left


def test_example_has_no_metric_code_and_no_sys_path_edits():
    for path in EXAMPLE.glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text.replace("examples/covid_cxr on sys.path", ""), path.name
        assert "sklearn.metrics" not in text and "from sklearn import metrics" not in text, path


# --------------------------------------------------------------------------------------
# End to end, through the command
# --------------------------------------------------------------------------------------
def _write_fold_csvs(folds_dir, index):
    """Two fold lists in the authors' format, with a missing and an unsafe name."""
    code = {"COVID": 0, "Normal": 1, "Viral Pneumonia": 2, "Lung_Opacity": 3}
    folds = {1: [], 2: []}
    for i, (name, label) in enumerate(zip(index.names, index.labels, strict=True)):
        cls = protocol.CLASS_NAMES[label]
        if cls == "Normal" and i % 3 == 0:
            name = name.upper()  # "NORMAL-7": names are matched case-insensitively
        folds[1 + i % 2].append((name, code[cls]))
    folds[1].append(("COVID-99999", 0))  # listed but absent: counted as missing
    folds[2].append(("../../etc/passwd", 0))  # would escape the data directory: rejected
    folds_dir.mkdir()
    for k, rows in folds.items():
        lines = ["FILE NAME,label"] + [f"{n},{c}" for n, c in rows]
        (folds_dir / f"Fold{k}.csv").write_text("\n".join(lines) + "\n")
    return folds


@pytest.mark.slow  # trains 4 tiny models in a second interpreter: ~1-3 min
def test_end_to_end_folds_dir_corrupt_files_and_outputs(tmp_path):
    ds = make_tree(tmp_path / "data")
    # Two corrupt images: random bytes, and a truncated PNG.
    (ds / "COVID" / "images" / "COVID-901.png").write_bytes(os.urandom(300))
    good = next((ds / "Normal" / "images").iterdir()).read_bytes()
    (ds / "Normal" / "images" / "Normal-902.png").write_bytes(good[: len(good) // 3])
    index = kaggle.list_images(ds)
    folds = _write_fold_csvs(tmp_path / "folds", index)
    out = tmp_path / "out"
    log = run_cli(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--folds-dir",
            str(tmp_path / "folds"),
            "--out",
            str(out),
            *TINY,
            "--experiments",
            "freeze",
            "freeze+attention",
            "--folds",
            "1",
            "2",
            "--mc-samples",
            "20",
        ],
        tmp_path,
    )
    assert "epoch 1/1" in log

    records = sorted((out / "records").glob("*.json"))
    assert [p.name for p in records] == [
        "freeze_attention_fold1.json",
        "freeze_attention_fold2.json",
        "freeze_fold1.json",
        "freeze_fold2.json",
    ]
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["status"] == "complete" and rec["synthetic"] is True
        assert "SYNTHETIC" in rec["note"]
        assert rec["backend"] == keras.backend.backend()
        d = rec["data"]
        assert (d["n_corrupt"], d["n_missing"], d["n_rejected"]) == (2, 1, 1)
        assert {c["file"].split("/")[-1] for c in d["corrupt_files"]} == {
            "COVID-901.png",
            "Normal-902.png",
        }
        # Test set = the fold's listed names that exist and decode.
        listed = {n.lower() for n, _ in folds[rec["fold"]]}
        corrupt = {"covid-901", "normal-902"}
        expected = sum(1 for n in index.names if n.lower() in listed - corrupt)
        assert rec["split"]["test"] == expected == rec["metrics"]["n"]
        assert rec["freeze"]["frozen"] == 77 and rec["freeze"]["of"] == 154
        assert rec["epochs_run"] == 1 and rec["weights"].startswith("none")
        # Validation metrics per epoch come from keras_freeze.ClassificationMetrics.
        h = rec["history"]
        assert len(h["val_macro_f1"]) == len(h["val_auc_COVID"]) == rec["epochs_run"]
        assert 0.0 <= h["val_macro_f1"][0] <= 1.0 and 0.0 <= h["val_accuracy"][0] <= 1.0
        # Metrics: the library's, of exactly the stored predictions (no machine-dependent
        # rounding between the two), and scikit-learn's on the same values.
        assert list(rec) == RECORD_KEYS
        pred = rec["predictions"]
        assert len(pred["y_true"]) == expected and np.shape(pred["y_prob"]) == (expected, 4)
        check_metrics_of_record(rec)
        assert np.asarray(rec["metrics"]["confusion_matrix"]).sum() == expected
        if rec["experiment"] == "freeze+attention":
            assert len(rec["alpha"]) == 4 and all(a > 0.001 for a in rec["alpha"])
            assert "training split" in rec["alpha_source"]
        else:
            assert rec["alpha"] is None

    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and all(",True," in r for r in rows[1:])
    t1 = (out / "table1_macro.md").read_text()
    t2 = (out / "table2_weighted.md").read_text()
    for text in (t1, t2):
        assert "SYNTHETIC DATA" in text
    assert "| Mobile Freeze-Net (50% freeze) | paper | - | 0.94 | 0.93 | 0.93 | 0.94 | 0.98 |" in t1
    assert "0.940 ± 0.004" in t2 and "0.986 ± 0.002" in t2
    attention = json.loads((out / "attention.json").read_text())
    assert attention["synthetic"] is True and set(attention["folds"]) == {"1", "2"}
    assert "SYNTHETIC" in (out / "attention.md").read_text()
    for name in (
        "confusion_freeze.png",
        "curves_freeze.png",
        "confusion_freeze_attention.png",
        "curves_freeze_attention.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow  # trains 2 tiny models in a second interpreter: ~1 min
def test_embedded_default_resumes_after_interruption(tmp_path):
    out = tmp_path / "out"
    common = [
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--n-images",
        "80",
        "--n-folds",
        "2",
        *TINY,
        "--experiments",
        "stochastic",
    ]
    log = run_cli([*common, "--folds", "1"], tmp_path)
    assert "EMBEDDED DEFAULT: SYNTHETIC DATA" in log
    first = out / "records" / "stochastic_fold1.json"
    before = first.read_bytes()
    assert json.loads(before)["synthetic"] is True
    # Simulate a run killed while fold 2 was being written: a half-written record and a
    # temporary file left behind.
    second = out / "records" / "stochastic_fold2.json"
    second.write_text('{"schema": 1, "status": "compl')
    (out / "records" / ".stochastic_fold2.json.4242.tmp").write_text("{")

    log = run_cli([*common, "--folds", "1", "2"], tmp_path)
    assert "stochastic fold 1: already complete" in log
    assert "1 run(s), 1 skipped" in log
    assert first.read_bytes() == before  # the completed fold was not redone
    rec = json.loads(second.read_text())
    assert rec["status"] == "complete" and rec["fold"] == 2
    assert rec["freeze"]["mode"].startswith("stochastic") and rec["freeze"]["frozen"] == 77
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["stochastic", "1"], ["stochastic", "2"]]
    assert "SYNTHETIC DATA" in (out / "table1_macro.md").read_text()


# --------------------------------------------------------------------------------------
# Any class-folder data set
# --------------------------------------------------------------------------------------
def _class_folder_tree(root, sub):
    """cat/ dog/ fox/ with 6 tiny PNGs each, flat (``sub=""``) or under images/ (+ masks/)."""
    rng = np.random.default_rng(0)
    for k, c in enumerate(("cat", "dog", "fox")):
        d = root / c / sub
        d.mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(60 + 60 * k, 30, (32, 32)), 0, 255).astype(np.uint8)
            PIL_Image.fromarray(pixels).save(d / f"img{i}.png")  # same names in every class
        if sub:
            (root / c / "masks").mkdir()
            PIL_Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / c / "masks" / "m.png")
    return root


@pytest.mark.slow  # trains 1-2 tiny models in a second interpreter: ~30-60 s
@pytest.mark.parametrize(
    "sub, experiments", [("", ["freeze+attention"]), ("images", ["freeze", "finetune"])]
)
def test_end_to_end_on_any_class_folder_data_set(tmp_path, sub, experiments):
    root = _class_folder_tree(tmp_path / "pets", sub)
    out = tmp_path / "out"
    args = ["--data-dir", str(root), "--out", str(out), "--n-folds", "2", "--folds", "1"]
    log = run_cli([*args, *TINY, "--mc-samples", "20", "--experiments", *experiments], tmp_path)
    assert "classes (from the class folders): cat, dog, fox" in log
    for exp in experiments:
        rec = json.loads((out / "records" / f"{protocol.slug(exp)}_fold1.json").read_text())
        assert list(rec["metrics"]["per_class"]) == ["cat", "dog", "fox"]
        assert len(rec["metrics"]["confusion_matrix"]) == 3
        assert rec["data"]["class_counts"] == {"cat": 6, "dog": 6, "fox": 6}  # masks ignored
        check_metrics_of_record(rec, ("cat", "dog", "fox"))
    for table in ("table1_macro.md", "table2_weighted.md"):
        text = (out / table).read_text()
        assert "cat, dog, fox" in text
        assert "| paper |" not in text and "Roy & Khurana" not in text
    if "freeze+attention" in experiments:
        att = json.loads((out / "attention.json").read_text())
        assert att["class_names"] == ["cat", "dog", "fox"] and att["paper_alpha"] is None
        assert "| Fold | Source | cat | dog | fox |" in (out / "attention.md").read_text()
        assert "authors' published weights" not in (out / "attention.md").read_text()
