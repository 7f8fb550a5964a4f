"""End-to-end tests of examples/covid_cxr/reproduce.py, through the real command.

Each end-to-end test runs ``python examples/covid_cxr/reproduce.py ...`` in a subprocess on the
current Keras backend, on a tiny generated data set (80 images, 32 px, 2 folds, 1 epoch, random
init), and checks the outputs. The metric helpers are checked against scikit-learn directly.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "covid_cxr"
SCRIPT = EXAMPLE / "reproduce.py"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import data  # noqa: E402
import synthetic  # noqa: E402

TINY = ["--image-size", "32", "--epochs", "1", "--weights", "none", "--workers", "2"]
METRICS = ("f1", "accuracy", "precision", "recall", "auc")


def _load_reproduce():
    spec = importlib.util.spec_from_file_location("covid_cxr_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce = _load_reproduce()


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


def test_defaults_embedded_vs_protocol():
    parser = reproduce.build_parser()
    emb = reproduce.resolve_settings(parser.parse_args([]))
    assert emb.embedded and emb.weights == "torchvision" and emb.folds == [1]
    assert emb.batch_size == 8 and emb.lr == 1e-4 and emb.finetune_lr == 1e-5
    assert emb.bn_momentum == 0.9
    real = reproduce.resolve_settings(parser.parse_args(["--data-dir", "x"]))
    assert not real.embedded
    assert (real.image_size, real.batch_size, real.n_folds, real.weights, real.folds) == (
        224,
        8,
        10,
        "imagenet",
        None,
    )
    assert real.patience == 5 and real.preprocessing == "rescale" and real.bn_momentum is None
    assert reproduce.resolve_settings(parser.parse_args(["--weights", "none"])).weights is None


# --------------------------------------------------------------------------------------
# Metrics against scikit-learn
# --------------------------------------------------------------------------------------
@st.composite
def predictions(draw):
    n_extra = draw(st.integers(0, 20))
    y = np.array(
        [0, 1, 2, 3] + draw(st.lists(st.integers(0, 3), min_size=n_extra, max_size=n_extra))
    )
    raw = draw(st.lists(st.floats(0.01, 1.0), min_size=4 * len(y), max_size=4 * len(y)))
    p = np.asarray(raw).reshape(len(y), 4)
    return y, p / p.sum(axis=1, keepdims=True)


@given(predictions())
def test_compute_metrics_matches_sklearn(pred):
    y, p = pred
    m = reproduce.compute_metrics(y, p, data.CLASS_NAMES)
    y_hat = p.argmax(1)
    for avg in ("macro", "weighted"):
        assert m[avg]["f1"] == pytest.approx(
            skm.f1_score(y, y_hat, average=avg, labels=[0, 1, 2, 3], zero_division=0)
        )
        assert m[avg]["precision"] == pytest.approx(
            skm.precision_score(y, y_hat, average=avg, labels=[0, 1, 2, 3], zero_division=0)
        )
        assert m[avg]["recall"] == pytest.approx(
            skm.recall_score(y, y_hat, average=avg, labels=[0, 1, 2, 3], zero_division=0)
        )
        assert m[avg]["accuracy"] == pytest.approx(skm.accuracy_score(y, y_hat))
        assert m[avg]["auc"] == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", average=avg, labels=[0, 1, 2, 3])
        )
    assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y, y_hat, labels=range(4)))


def test_compute_metrics_with_a_class_absent_from_the_test_set():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.2, 0.5, 0.2, 0.1],
            [0.1, 0.8, 0.05, 0.05],
            [0.3, 0.3, 0.3, 0.1],
            [0.1, 0.1, 0.7, 0.1],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    m = reproduce.compute_metrics(y, p, data.CLASS_NAMES)
    per_class = [skm.roc_auc_score(y == c, p[:, c]) for c in range(3)]
    assert m["macro"]["auc"] == pytest.approx(np.mean(per_class))
    assert np.isnan(m["per_class"]["Viral Pneumonia"]["auc"])
    assert m["per_class"]["Viral Pneumonia"]["support"] == 0


def test_mean_std_and_atomic_write(tmp_path):
    mu, sd = reproduce.mean_std([0.9, 0.92, 0.95, float("nan")])
    assert mu == pytest.approx(np.mean([0.9, 0.92, 0.95]))
    assert sd == pytest.approx(np.std([0.9, 0.92, 0.95], ddof=1))
    assert reproduce.mean_std([0.5]) == (0.5, 0.0)
    target = tmp_path / "sub" / "r.json"
    reproduce.atomic_write_json(target, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": [0, 1]}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temporary left


# --------------------------------------------------------------------------------------
# End to end, through the command
# --------------------------------------------------------------------------------------
def _write_fold_csvs(folds_dir, index):
    """Two fold lists in the authors' format, with a missing and an unsafe name."""
    code = {"COVID": 0, "Normal": 1, "Viral Pneumonia": 2, "Lung_Opacity": 3}
    folds = {1: [], 2: []}
    for i, (name, label) in enumerate(zip(index.names, index.labels, strict=True)):
        cls = data.CLASS_NAMES[label]
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


def test_end_to_end_folds_dir_corrupt_files_and_outputs(tmp_path):
    ds = make_tree(tmp_path / "data")
    # Two corrupt images: random bytes, and a truncated PNG.
    (ds / "COVID" / "images" / "COVID-901.png").write_bytes(os.urandom(300))
    good = next((ds / "Normal" / "images").iterdir()).read_bytes()
    (ds / "Normal" / "images" / "Normal-902.png").write_bytes(good[: len(good) // 3])
    index = data.list_images(ds)
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
            "--experiments",
            "freeze",
            "freeze+attention",
            "--folds",
            "1",
            "2",
            "--mc-samples",
            "20",
            *TINY,
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
        # Metrics recomputed from the stored predictions with scikit-learn.
        pred = rec["predictions"]
        y, p = np.asarray(pred["y_true"]), np.asarray(pred["y_prob"])
        assert len(y) == expected and p.shape == (expected, 4)
        m = rec["metrics"]
        assert m["macro"]["f1"] == pytest.approx(
            skm.f1_score(y, p.argmax(1), average="macro", labels=[0, 1, 2, 3], zero_division=0)
        )
        assert m["weighted"]["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
        if len(set(y.tolist())) == 4:
            assert m["macro"]["auc"] == pytest.approx(
                skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
            )
        assert np.asarray(m["confusion_matrix"]).sum() == expected
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
        "--experiments",
        "stochastic",
        *TINY,
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
