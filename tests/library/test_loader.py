"""Tests of keras_freeze/_loader.py: ImageDataset, scan_images, predict_images, shuffle_order.

The tests of `ImageDataset` started as the covid_cxr example's tests of its `ImageSequence`
(tests/example/test_data.py), which this class replaces; every assertion of those is kept.
"""

import math
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import keras_freeze
from keras_freeze import ImageDataset
from keras_freeze import list_class_images
from keras_freeze import predict_images
from keras_freeze import scan_images
from keras_freeze import shuffle_order
from keras_freeze._loader import _decode_uint8

CLASSES = ("a", "b", "c", "d")


def _png(path, size=(20, 16), mode="L", value=None, rng=None):
    rng = rng or np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arr = (
        rng.integers(0, 256, shape, dtype=np.uint8)
        if value is None
        else np.full(shape, value, np.uint8)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return arr


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """40 gray 48x48 PNGs, 10 per class, in `<root>/<class>/images/` (the Kaggle layout)."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(3)
    for c in CLASSES:
        for i in range(10):
            _png(root / c / "images" / f"{c}-{i + 1}.png", size=(48, 48), rng=rng)
    return root, list_class_images(root)


def _oracle_decode(path, size):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        for got, want in zip(a[i], b[i], strict=True):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# Batches, decoding, preprocessing
# ----------------------------------------------------------------------------------------------
def test_image_dataset_shapes_onehot_and_rescale(small_tree):
    _, idx = small_tree
    seq = ImageDataset(idx.paths, idx.labels, image_size=24, batch_size=16)
    assert len(seq) == math.ceil(len(idx) / 16)
    x, y = seq[0]
    assert x.shape == (16, 24, 24, 3) and x.dtype == np.float32
    assert y.shape == (16, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[idx.labels[:16]])
    oracle = np.stack([_oracle_decode(p, 24) for p in idx.paths[:16]]) / 255.0
    np.testing.assert_allclose(x, oracle, rtol=0, atol=1e-6)
    xl, yl = seq[len(seq) - 1]
    assert xl.shape[0] == len(idx) - 16 * (len(seq) - 1)
    np.testing.assert_array_equal(seq[-1][1], yl)
    with pytest.raises(IndexError):
        seq[len(seq)]


def test_image_dataset_rgb_files_and_rectangular_size(tmp_path):
    paths = [tmp_path / f"rgb{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        _png(p, size=(40, 30), mode="RGB", rng=np.random.default_rng(i))
    seq = ImageDataset(
        paths, [0, 1, 2], num_classes=3, image_size=(10, 14), batch_size=3, preprocess=lambda x: x
    )
    x, _ = seq[0]
    assert x.shape == (3, 10, 14, 3)
    with Image.open(paths[1]) as im:
        ref = np.asarray(im.convert("RGB").resize((14, 10), Image.BILINEAR), np.float32)
    np.testing.assert_array_equal(x[1], ref)


def test_image_dataset_custom_preprocess_gets_0_255(small_tree):
    _, idx = small_tree
    seen = {}

    def pre(x):
        seen["max"], seen["dtype"] = float(x.max()), x.dtype
        return x - 127.5

    seq = ImageDataset(idx.paths[:4], idx.labels[:4], image_size=16, batch_size=4, preprocess=pre)
    x, _ = seq[0]
    assert seen["dtype"] == np.float32 and 128.0 < seen["max"] <= 255.0
    assert x.min() < 0
    # A preprocess returning float64 still gives float32 batches.
    x64, _ = ImageDataset(
        idx.paths[:4], idx.labels[:4], image_size=16, preprocess=lambda x: x.astype(np.float64)
    )[0]
    assert x64.dtype == np.float32 and float(x64.max()) > 1.0


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA", "LA", "1"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_decode_of_8_bit_files_equals_pillow_convert_and_resize(tmp_path, mode, interpolation):
    # Oracle: what the example did before sharing the library's decoder (Pillow only).
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode != "P" else rgb.quantize(64)
    image.save(tmp_path / "x.png")
    got = _decode_uint8(tmp_path / "x.png", (20, 24), interpolation)
    with Image.open(tmp_path / "x.png") as im:
        ref = im.convert("L" if im.mode in ("L", "1", "LA") else "RGB")
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[interpolation]
    want = np.asarray(ref.resize((24, 20), resample))
    if want.ndim == 3 and got.ndim == 2:  # a colour file that happens to be gray
        want = want[..., 0]
    np.testing.assert_array_equal(got, want)
    # The data set serves the same pixels, as three channels, / 255.
    seq = ImageDataset(
        [tmp_path / "x.png"],
        [0],
        num_classes=1,
        image_size=(20, 24),
        interpolation=interpolation,
        preprocess=lambda x: x,
    )
    x, _ = seq[0]
    rgb_want = want if want.ndim == 3 else np.repeat(want[..., None], 3, axis=-1)
    np.testing.assert_array_equal(x[0], rgb_want.astype(np.float32))


@pytest.mark.parametrize("bits", [16, 12])
def test_deep_pngs_are_scaled_by_their_bit_depth_not_clipped(tmp_path, bits):
    top = 2**bits - 1
    ramp16 = np.round(np.linspace(0, top, 256)).astype(np.uint16)
    Image.fromarray(np.tile(ramp16, (8, 1))).save(tmp_path / "deep.png")
    ramp8 = np.round(np.linspace(0, 255, 256)).astype(np.uint8)
    Image.fromarray(np.tile(ramp8, (8, 1))).save(tmp_path / "eight.png")
    deep = _decode_uint8(tmp_path / "deep.png", (8, 256), "bilinear")
    eight = _decode_uint8(tmp_path / "eight.png", (8, 256), "bilinear")
    assert (deep == 255).mean() < 0.01  # the old decoder: 99.6% (16-bit) / 93.8% (12-bit) white
    assert np.abs(deep.astype(int) - eight.astype(int)).max() <= 1
    # The same pixels reach the model through ImageDataset.
    seq = ImageDataset(
        [str(tmp_path / "deep.png")], [0], num_classes=2, image_size=(8, 256), batch_size=1
    )
    x, _ = seq[0]
    np.testing.assert_array_equal(x[0, ..., 0], deep.astype(np.float32) * np.float32(1 / 255))


def test_float_image_with_nan_is_dropped_and_named(tmp_path):
    pixels = np.full((8, 8), 0.5, np.float32)
    pixels[2, 3] = np.nan
    Image.fromarray(pixels).save(tmp_path / "nan.tif")
    good, bad = scan_images([str(tmp_path / "nan.tif")], full=True)
    assert len(good) == 0 and "nan.tif" in bad[0][0]
    with pytest.raises(ValueError, match="nan.tif"):
        _decode_uint8(tmp_path / "nan.tif", (8, 8), "bilinear")
    _png(tmp_path / "ok.png", size=(8, 8))
    seq = ImageDataset([tmp_path / "nan.tif", tmp_path / "ok.png"], [0, 1], image_size=8)
    assert seq[0][0].shape[0] == 1 and "finite" in seq.failed[str(tmp_path / "nan.tif")]


# ----------------------------------------------------------------------------------------------
# Order: shuffle_order, look-ahead, workers
# ----------------------------------------------------------------------------------------------
def test_image_dataset_shuffle_is_deterministic(small_tree):
    _, idx = small_tree
    kw = dict(image_size=8, batch_size=8, shuffle=True, seed=11)
    a = ImageDataset(idx.paths, idx.labels, **kw)
    b = ImageDataset(idx.paths, idx.labels, **kw)
    assert np.array_equal(a.order, b.order)
    assert np.array_equal(np.sort(a.order), np.arange(len(idx)))
    assert not np.array_equal(a.order, np.arange(len(idx)))
    np.testing.assert_array_equal(a[1][1], b[1][1])
    first = a.order.copy()
    a.on_epoch_end()
    b.on_epoch_end()
    assert not np.array_equal(first, a.order) and np.array_equal(a.order, b.order)
    np.testing.assert_array_equal(a[0][1], np.eye(4, dtype=np.float32)[idx.labels[a.order[:8]]])
    plain = ImageDataset(idx.paths, idx.labels, image_size=8)
    plain.on_epoch_end()
    assert np.array_equal(plain.order, np.arange(len(idx)))


@pytest.mark.parametrize("seed", [0, 11, 2**40])
def test_shuffled_order_is_shuffle_order_of_seed_and_epoch(small_tree, seed):
    _, idx = small_tree
    seq = ImageDataset(idx.paths, idx.labels, image_size=8, batch_size=8, shuffle=True, seed=seed)
    for epoch in range(4):
        assert seq.epoch == epoch
        np.testing.assert_array_equal(seq.order, shuffle_order(len(idx), seed, epoch))
        np.testing.assert_array_equal(
            seq[2][1], np.eye(4, dtype=np.float32)[idx.labels[seq.order[16:24]]]
        )
        seq.on_epoch_end()
    drawn = ImageDataset(idx.paths, idx.labels, shuffle=True)  # seed=None: fresh entropy, kept
    np.testing.assert_array_equal(drawn.order, shuffle_order(len(idx), drawn.seed, 0))


def test_shuffle_order_is_a_permutation_of_seed_and_epoch():
    a = shuffle_order(50, seed=3, epoch=0)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, np.random.default_rng([3, 0]).permutation(50))
    assert not np.array_equal(a, shuffle_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, shuffle_order(50, seed=4, epoch=0))


def test_image_dataset_cache_gives_same_batches(small_tree):
    _, idx = small_tree
    plain = ImageDataset(idx.paths, idx.labels, image_size=12, batch_size=8)
    cached = ImageDataset(idx.paths, idx.labels, image_size=12, batch_size=8, cache=True)
    for i in range(len(plain)):
        np.testing.assert_array_equal(plain[i][0], cached[i][0])
    assert len(cached._cache) == len(idx)
    np.testing.assert_array_equal(plain[2][0], cached[2][0])  # served from the cache


def test_image_dataset_look_ahead_serves_the_batches_of_its_epoch(small_tree):
    _, idx = small_tree
    kw = dict(image_size=8, batch_size=4, shuffle=True, seed=5)
    plain = ImageDataset(idx.paths, idx.labels, workers=1, **kw)
    ahead = ImageDataset(idx.paths, idx.labels, workers=4, **kw)
    for epoch in range(3):
        # Batch 0 starts the look-ahead (1, 2, 3); the epoch ends before all are read: what was
        # made ahead for the old order must never be served in the new one.
        for i in [0, 1] if epoch == 0 else range(len(plain)):
            for got, want in zip(ahead[i], plain[i], strict=True):
                np.testing.assert_array_equal(got, want)
        assert ahead._ahead or epoch > 0
        plain.on_epoch_end()
        ahead.on_epoch_end()
        assert ahead._ahead == {}
    with pytest.raises(ValueError, match="workers=0"):
        ImageDataset(idx.paths, idx.labels, workers=0)


@pytest.fixture(scope="module")
def tree_with_a_corrupt_file(small_tree, tmp_path_factory):
    _, idx = small_tree
    bad = tmp_path_factory.mktemp("bad") / "corrupt.png"
    bad.write_bytes(b"not a png at all")
    paths = list(idx.paths[:20])
    paths.insert(7, str(bad))
    labels = np.insert(idx.labels[:20], 7, 3)
    return paths, labels


def _epochs(seq, n_epochs=2):
    out = []
    for _ in range(n_epochs):
        out.append([seq[i] for i in range(len(seq))])
        seq.on_epoch_end()
    return out


@given(
    workers=st.integers(1, 4),
    decode_threads=st.integers(1, 4),
    batch_size=st.integers(2, 9),
    cache=st.booleans(),
)
def test_property_threads_and_batch_size_never_change_the_samples(
    tree_with_a_corrupt_file, workers, decode_threads, batch_size, cache
):
    paths, labels = tree_with_a_corrupt_file
    kw = dict(image_size=6, batch_size=batch_size, shuffle=True, seed=7)
    reference = ImageDataset(paths, labels, workers=1, decode_threads=1, **kw)
    threaded = ImageDataset(
        paths, labels, workers=workers, decode_threads=decode_threads, cache=cache, **kw
    )
    want, got = _epochs(reference), _epochs(threaded)
    for epoch_want, epoch_got in zip(want, got, strict=True):
        for (xw, yw), (xg, yg) in zip(epoch_want, epoch_got, strict=True):
            np.testing.assert_array_equal(xg, xw)
            np.testing.assert_array_equal(yg, yw)
    assert threaded.failed == reference.failed and len(threaded.failed) == 1
    # Whatever the batch size, an epoch is the same rows in the same order (batch size 2 or
    # more: no batch is all-corrupt, so none is refilled).
    whole = ImageDataset(paths, labels, image_size=6, batch_size=len(paths), shuffle=True, seed=7)
    for epoch_got, [(x_all, y_all)] in zip(got, _epochs(whole), strict=True):
        np.testing.assert_array_equal(np.concatenate([x for x, _ in epoch_got]), x_all)
        np.testing.assert_array_equal(np.concatenate([y for _, y in epoch_got]), y_all)


class _BatchRecorder(keras.layers.Layer):
    """Records the labels-carrying inputs of every eager training step (see below)."""

    def __init__(self, seen, **kwargs):
        super().__init__(**kwargs)
        self.record = seen.append  # a list attribute would be copied into a tracked list

    def call(self, x):
        try:  # eager steps only: the build's symbolic tensors have no values
            values = keras.ops.convert_to_numpy(x)
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            return x
        self.record(np.round(values.sum(axis=(1, 2, 3)), 3))
        return x


@pytest.mark.parametrize("workers", [2, 3])
def test_fit_trains_on_the_same_batches_whatever_the_workers(small_tree, workers):
    """Keras' own PyDataset workers carry batches read before an epoch ended (the build peek on
    JAX and PyTorch) into the next epoch; the data set's own look-ahead does not."""
    _, idx = small_tree

    def batches(w):
        seq = ImageDataset(
            idx.paths, idx.labels, image_size=8, batch_size=8, shuffle=True, seed=2, workers=w
        )
        seen = []
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                _BatchRecorder(seen),
                keras.layers.Flatten(),
                keras.layers.Dense(4, activation="softmax"),
            ]
        )
        model.compile("sgd", "categorical_crossentropy", run_eagerly=True)
        model.fit(seq, epochs=2, verbose=0, shuffle=False)
        return seen

    one, many = batches(1), batches(workers)
    assert len(one) == 2 * 5  # 40 images, batch 8, 2 epochs
    assert len(many) == len(one)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    # Each epoch visits every image once.
    for epoch in (one[:5], one[5:]):
        assert np.concatenate(epoch).shape == (40,)


# ----------------------------------------------------------------------------------------------
# Unreadable files: scan_images, failed, refill, predict_images
# ----------------------------------------------------------------------------------------------
def test_corrupt_and_missing_images_are_dropped_and_recorded(tmp_path):
    good = [tmp_path / f"ok{i}.png" for i in range(3)]
    for p in good:
        _png(p)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    truncated = tmp_path / "trunc.png"
    _png(truncated, size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing = tmp_path / "gone.png"
    paths = [good[0], garbage, good[1], truncated, missing, good[2]]
    labels = [0, 1, 2, 3, 1, 2]

    good_idx, bad = scan_images(paths, full=True)
    assert list(good_idx) == [0, 2, 5] and good_idx.dtype == np.int64
    assert {Path(p).name for p, _ in bad} == {"garbage.png", "trunc.png", "gone.png"}
    good_fast, _ = scan_images(paths)
    assert set(good_fast) >= {0, 2, 5} and 1 not in good_fast and 4 not in good_fast

    seq = ImageDataset(paths, labels, image_size=8, batch_size=3)
    x0, y0 = seq[0]
    assert x0.shape[0] == 2 and list(y0.argmax(1)) == [0, 2]
    x1, y1 = seq[1]
    assert x1.shape[0] == 1 and list(y1.argmax(1)) == [2]
    assert set(map(lambda p: Path(p).name, seq.failed)) == {"garbage.png", "trunc.png", "gone.png"}
    assert list(seq.kept_indices()) == [0, 2, 5]
    # a batch whose images all fail is filled from readable images, never empty
    allbad = ImageDataset(
        [garbage, missing, good[0], good[1]], [1, 1, 0, 2], image_size=8, batch_size=2
    )
    xb, yb = allbad[0]
    assert xb.shape[0] == 2 and list(yb.argmax(1)) == [0, 2]
    with pytest.raises(RuntimeError, match="No readable image"):
        ImageDataset([garbage, missing], [0, 1], image_size=8)[0]


def _probe_model(size, num_classes=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    return model


def test_predict_images_keeps_rows_aligned_around_a_corrupt_file(tree_with_a_corrupt_file):
    paths, labels = tree_with_a_corrupt_file  # paths[7] is corrupt
    model = _probe_model(8)
    seq = ImageDataset(paths, labels, image_size=8, batch_size=4)
    probs, positions = predict_images(model, seq)
    assert list(seq.failed) == [paths[7]] and "corrupt.png" in paths[7]
    assert positions.tolist() == [i for i in range(len(paths)) if i != 7]
    assert probs.shape == (len(paths) - 1, 4)
    # Each row is the prediction of the image at its position, alone.
    for row, i in zip(probs, positions, strict=True):
        x, _ = ImageDataset([paths[i]], [labels[i]], image_size=8, batch_size=1)[0]
        np.testing.assert_allclose(row, model.predict_on_batch(x)[0], rtol=1e-5, atol=1e-6)


def test_predict_images_skips_a_refilled_batch(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        if i in (2, 3):  # batch 1 (batch_size 2) is all bad: refilled, so not predicted
            paths[-1].write_bytes(b"bad")
        else:
            _png(paths[-1], size=(8, 8), rng=np.random.default_rng(i))
    seq = ImageDataset(paths, [0, 1, 2, 3, 0, 1], image_size=8, batch_size=2)
    probs, positions = predict_images(_probe_model(8), seq)
    assert positions.tolist() == [0, 1, 4, 5] and probs.shape == (4, 4)
    assert set(seq.failed) == {str(paths[2]), str(paths[3])}
    with pytest.raises(RuntimeError, match="No readable image"):
        predict_images(_probe_model(8), ImageDataset(paths[2:4], [0, 1], image_size=8))


# ----------------------------------------------------------------------------------------------
# from_folder, pickling, validation, training
# ----------------------------------------------------------------------------------------------
def test_from_folder_lists_with_list_class_images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ["cat/img10.png", "cat/img2.png", "dog/images/d1.png", "dog/masks/m.png"]:
        _png(tmp_path / name, size=(12, 10), rng=rng)
    (tmp_path / "dog" / "images" / "notes.txt").write_text("not an image")
    ds = ImageDataset.from_folder(tmp_path, image_size=8, batch_size=2)
    listed = list_class_images(tmp_path)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.paths == list(listed.paths) and ds.labels.tolist() == [0, 0, 1]
    assert [Path(p).name for p in ds.paths] == ["img2.png", "img10.png", "d1.png"]
    x, y = ds[0]
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [[1, 0], [1, 0]]
    assert ds[1][1].tolist() == [[0, 1]]
    reordered = ImageDataset.from_folder(tmp_path, class_names=["dog", "cat"], image_size=8)
    assert reordered.class_names == ("dog", "cat") and reordered.labels.tolist() == [0, 1, 1]
    assert ImageDataset(ds.paths, ds.labels, num_classes=2).class_names is None
    with pytest.raises(ValueError, match="num_classes=3"):
        ImageDataset.from_folder(tmp_path, num_classes=3)
    with pytest.raises(ValueError, match="Missing"):
        ImageDataset.from_folder(tmp_path, class_names=["cat", "bird"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="Expected image files"):
        ImageDataset.from_folder(tmp_path / "empty")


def test_image_dataset_pickles_without_threads(small_tree):
    _, idx = small_tree
    paths = list(idx.paths[:12]) + ["/nonexistent/gone.png"]
    labels = np.append(idx.labels[:12], 1)
    kw = dict(image_size=8, batch_size=4, shuffle=True, seed=9, workers=3, cache=True)
    seq = ImageDataset(paths, labels, **kw)
    seq[0], seq[1]  # threads started, look-ahead pending, cache and failures filled
    seq.on_epoch_end()
    seq[0]
    copy = pickle.loads(pickle.dumps(seq))
    assert copy.epoch == seq.epoch == 1 and copy.failed == seq.failed
    assert copy._pool is None and copy._ahead == {}
    np.testing.assert_array_equal(copy.order, seq.order)
    _assert_same_batches(copy, seq)
    copy.on_epoch_end()
    seq.on_epoch_end()
    _assert_same_batches(copy, seq)
    fresh = ImageDataset.from_folder(small_tree[0], image_size=8)
    assert pickle.loads(pickle.dumps(fresh)).class_names == CLASSES


def test_image_dataset_validation(small_tree):
    _, idx = small_tree
    with pytest.raises(ValueError, match="one label per path"):
        ImageDataset(idx.paths, idx.labels[:-1])
    with pytest.raises(ValueError, match="labels in"):
        ImageDataset(idx.paths, idx.labels + 3)
    with pytest.raises(ValueError, match="image_size"):
        ImageDataset(idx.paths, idx.labels, image_size=(3,))
    with pytest.raises(ValueError, match="batch_size"):
        ImageDataset(idx.paths, idx.labels, batch_size=0)
    with pytest.raises(ValueError, match="interpolation"):
        ImageDataset(idx.paths, idx.labels, interpolation="cubic-ish")
    with pytest.raises(ValueError, match="paths=\\[\\]"):
        ImageDataset([], [])
    with pytest.raises(ValueError, match="num_classes=0"):
        ImageDataset(idx.paths, idx.labels, num_classes=0)
    with pytest.raises(ValueError, match="callable preprocess"):
        ImageDataset(idx.paths, idx.labels, preprocess="x / 255")


def test_image_dataset_trains_a_model(small_tree):
    """model.fit / evaluate on the current backend, with prefetching worker threads."""
    _, idx = small_tree
    seq = ImageDataset(
        idx.paths[:16],
        idx.labels[:16],
        image_size=16,
        batch_size=8,
        shuffle=True,
        seed=0,
        workers=2,
        cache=True,
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile("adam", "categorical_crossentropy")
    hist = model.fit(seq, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.all(np.isfinite(hist.history["loss"]))
    assert seq.epoch >= 2
    pred = model.predict(
        ImageDataset(idx.paths[:5], idx.labels[:5], image_size=16, batch_size=4), verbose=0
    )
    assert pred.shape == (5, 4)


def test_public_names():
    for name in ("ImageDataset", "predict_images", "scan_images", "shuffle_order"):
        assert name in keras_freeze.__all__ and getattr(keras_freeze, name) is not None


@pytest.mark.slow  # a second interpreter importing keras: ~10 s
def test_image_dataset_does_not_need_tensorflow(small_tree):
    """List, load and fit with `import tensorflow` made impossible."""
    root, _ = small_tree
    backend = keras.backend.backend()
    if backend == "tensorflow":
        backend = "jax"
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import keras, keras_freeze\n"
        "seq = keras_freeze.ImageDataset.from_folder(sys.argv[1], image_size=8, batch_size=4,"
        " shuffle=True, seed=0, workers=2)\n"
        "m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),"
        " keras.layers.Dense(4, activation='softmax')])\n"
        "m.compile('sgd', 'categorical_crossentropy')\n"
        "m.fit(seq, epochs=1, verbose=0)\n"
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    env = dict(os.environ, KERAS_BACKEND=backend)
    with warnings.catch_warnings():
        out = subprocess.run(
            [sys.executable, "-c", code, str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
