"""Bad and unusual input to the library, round 3 (issue 26): one test per case.

Each test fails on the code before the fix (a silent wrong answer, a raw
error that names neither the value nor the fix, or a hang). The suite runs
per backend (KERAS_BACKEND).
"""

import decimal
import fractions
import json
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import keras_freeze
from keras_freeze import estimate_class_attention


def _noise(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _noise_classes(counts, side=8):
    x = np.concatenate([_noise(i, (n, side, side)) for i, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return x, y


def _class_folders(root, counts, side=8):
    for c, n in enumerate(counts):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_noise(100 * c + i, (side, side))).save(folder / f"{i}.png")
    return root


# --------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4097, 10**6])
def test_estimator_image_size_has_an_upper_bound(size):
    x, y = _noise_classes([4, 4])
    with pytest.raises(ValueError, match=rf"image_size.*in \[2, 4_096\].*image_size={size}"):
        estimate_class_attention((x, y), 10, image_size=size, seed=0)


def test_estimator_image_size_4096_is_still_accepted():
    # The bound is inclusive: checked on arguments only (no 4096 decode here).
    from keras_freeze._estimator import _Options

    options = _Options.checked(10, 0.05, 0.1, 0.001, 0.25, 4096, "pearson", 0, None, None)
    assert options.image_size == 4096


def test_estimator_huge_label_is_refused_as_empty_classes_without_building_names():
    x, y = _noise_classes([3, 3])
    y = y.astype(np.int64)
    y[-1] = 2**40
    with pytest.raises(
        ValueError,
        match=r"labels up to 1_099_511_627_776 but 1_099_511_627_774 .* are empty: \[2, 3, 4\]"
        r" and 1_099_511_627_771 more\. Labels out of range\?",
    ):
        estimate_class_attention((x, y), 10, image_size=8, seed=0)


def test_estimator_gap_in_labels_is_refused_as_empty_classes():
    x, y = _noise_classes([3, 3])
    y = np.where(y == 1, 2, 0)  # labels 0 and 2: class 1 empty
    with pytest.raises(ValueError, match=r"1 of these 3 classes are empty: \[1\]\."):
        estimate_class_attention((x, y), 10, image_size=8, seed=0)


def test_estimator_tf_data_of_dicts_is_refused_clearly():
    tf = pytest.importorskip("tensorflow")
    x, y = _noise_classes([4, 4])
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(4)
    with pytest.raises(
        ValueError, match=r"\(x, y\) elements.*dict with keys \['image', 'label'\].*map"
    ):
        estimate_class_attention(ds, 10, image_size=8, seed=0)


def test_estimator_lab_tiff_is_skipped_naming_the_file(tmp_path):
    root = _class_folders(tmp_path / "data", [4, 4])
    lab = root / "class0" / "lab.tif"
    Image.new("LAB", (8, 8), (50, 10, 10)).save(lab)
    with pytest.warns(UserWarning, match=r"lab\.tif.*conversion from LAB"):
        res = estimate_class_attention(str(root), 10, image_size=8, seed=0)
    assert str(lab) in res.skipped_files
    assert res.counts.tolist() == [4, 4]


def test_estimator_bytes_path_is_read_as_a_directory(tmp_path):
    root = _class_folders(tmp_path / "data", [3, 3])
    from_bytes = estimate_class_attention(os.fsencode(root), 10, image_size=8, seed=0)
    from_str = estimate_class_attention(str(root), 10, image_size=8, seed=0)
    assert from_bytes == from_str
    assert from_bytes.class_names == ("class0", "class1")


def test_estimator_identical_classes_are_refused_not_given_huge_alpha():
    # Every image is the same noise image: r_inter = 1 - 1e-7 (rounding), sigma_intra ~ 0.
    x = np.stack([_noise(0, (8, 8))] * 8)
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match=r"alpha1 <= 1 - 0\.001.*indistinguishable"):
        estimate_class_attention((x, y), 10, image_size=8, seed=0)


@pytest.mark.parametrize("names", ["abc", b"ab"])
def test_estimator_bare_string_class_names_are_refused(names, tmp_path):
    x, y = _noise_classes([3, 3, 3])
    with pytest.raises(ValueError, match=r"list of strings.*bare string.*class_names="):
        estimate_class_attention((x, y), 10, image_size=8, seed=0, class_names=names)
    root = _class_folders(tmp_path / "data", [3, 3])
    with pytest.raises(ValueError, match=r"list of strings.*bare string"):
        keras_freeze.list_class_images(root, "abc")


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def test_metrics_bare_string_class_names_are_refused():
    y = np.array([0, 1, 2])
    p = np.eye(3)
    with pytest.raises(ValueError, match=r"list of strings.*class_names='abc'"):
        keras_freeze.classification_metrics(y, p, class_names="abc")
    with pytest.raises(ValueError, match=r"list of strings.*class_names='abc'"):
        keras_freeze.ClassificationMetrics((p, y), class_names="abc")


@pytest.mark.parametrize("value", ["False", 0, 1, None])
def test_metrics_from_logits_must_be_a_bool(value):
    y = np.array([0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match=rf"`from_logits` to be a bool. Received: from_logits={value!r}"):
        keras_freeze.classification_metrics(y, p, from_logits=value)
    with pytest.raises(ValueError, match=r"`from_logits` to be a bool"):
        keras_freeze.ClassificationMetrics((p, y), from_logits=value)


def test_metrics_binary_scores_outside_unit_range_suggest_from_logits():
    y = np.array([0, 1, 1, 0])
    scores = np.array([-2.0, 3.0, 0.7, 0.2])
    with pytest.raises(ValueError, match=r"in \[0, 1\].*\[-2, 3\].*from_logits=True"):
        keras_freeze.classification_metrics(y, scores)
    # The same scores as logits are fine, and sigmoid probabilities too.
    report = keras_freeze.classification_metrics(y, scores, from_logits=True)
    assert report.macro["accuracy"] == 0.75
    probs = 1.0 / (1.0 + np.exp(-scores))
    assert keras_freeze.classification_metrics(y, probs).macro["accuracy"] == 0.75


def test_classification_metrics_refuses_an_endless_tf_data():
    tf = pytest.importorskip("tensorflow")
    x = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    keras_freeze.ClassificationMetrics(ds)  # finite: fine
    with pytest.raises(ValueError, match=r"infinite cardinality.*\.repeat\(\).*take\(n\)"):
        keras_freeze.ClassificationMetrics(ds.repeat())
