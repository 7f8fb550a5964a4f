"""Bad and unusual input to the library (issue 12): one test per case.

Each test is named after the case of the issue it covers and fails on the
code before the fix (a silent wrong answer, a crash with an unclear message
or a hang). The suite runs per backend (KERAS_BACKEND), so every test here
runs on tensorflow, torch and jax.
"""

import contextlib
import signal
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import keras_freeze
from keras_freeze import estimate_class_attention


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _noise(seed, shape, high=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


@contextlib.contextmanager
def _no_hang(seconds=30):
    """Turns a hang (the old behaviour of some cases) into a failure."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - Windows
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _write_classes(root, counts, side=8, dtype=np.uint8, scale=1):
    """`root/<class>/<i>.png` noise images; returns the uint8 images per class."""
    images = {}
    for c, (name, count) in enumerate(counts.items()):
        images[name] = []
        for i in range(count):
            img = _noise(100 * c + i, (side, side))
            _save(root / name / f"{i}.png", (img.astype(dtype) * scale).astype(dtype))
            images[name].append(img)
    return images


# --------------------------------------------------------------------------
# Case 1: 16-bit images are scaled by their bit depth, in one shared decoder
# --------------------------------------------------------------------------


def test_case1_16bit_png_is_scaled_by_its_bit_depth_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    x = keras_freeze.decode_image(_save(tmp_path / "ramp16.png", ramp), mode="gray")
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x, ramp / 65535.0, rtol=0, atol=1e-7)
    assert np.mean(x == 1.0) < 0.001  # the old example decoder: 99.6% white


def test_case1_12bit_data_in_16bit_png_maps_to_unit_range(tmp_path):
    ramp = np.linspace(0, 4095, 64 * 64).astype(np.uint16).reshape(64, 64)
    x = keras_freeze.decode_image(_save(tmp_path / "ramp12.png", ramp), mode="gray")
    np.testing.assert_allclose(x, ramp / 4095.0, rtol=0, atol=1e-7)
    rgb = keras_freeze.decode_image(tmp_path / "ramp12.png")
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 1], x)


def test_case1_estimator_gives_16bit_pngs_the_statistics_of_their_8bit_versions(tmp_path):
    _write_classes(tmp_path / "u8", {"a": 6, "b": 5, "c": 4})
    _write_classes(tmp_path / "u16", {"a": 6, "b": 5, "c": 4}, dtype=np.uint16, scale=257)
    kwargs = dict(mc_samples=30, image_size=6, seed=3)
    r8 = estimate_class_attention(tmp_path / "u8", **kwargs)
    r16 = estimate_class_attention(tmp_path / "u16", **kwargs)
    np.testing.assert_allclose(r16.alpha, r8.alpha, rtol=1e-6)
    np.testing.assert_allclose(r16.pair_similarity, r8.pair_similarity, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# Case 4: non-finite pixels name the file (or the sample) and the problem
# --------------------------------------------------------------------------


def test_case4_nan_pixels_in_a_directory_image_name_the_file(tmp_path):
    _write_classes(tmp_path, {"a": 4, "b": 4})
    bad = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    bad[2, 3] = np.nan
    _save(tmp_path / "a" / "nan.tif", bad)
    with pytest.raises(ValueError, match=r"nan\.tif.*1 pixel\(s\) of 64 are NaN or infinite"):
        estimate_class_attention(tmp_path, mc_samples=20, image_size=8, seed=0)


def test_case4_float_image_out_of_range_is_refused_not_rescaled(tmp_path):
    path = _save(tmp_path / "f.tif", np.linspace(-1, 5, 64, dtype=np.float32).reshape(8, 8))
    with pytest.raises(ValueError, match=r"f\.tif.*Received: values in \[-1, 5\]"):
        keras_freeze.decode_image(path)


def test_case4_nan_pixels_in_an_array_name_the_sample_index():
    x = np.random.default_rng(0).random((8, 6, 6)).astype(np.float32)
    x[5, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"x\[5\]"):
        estimate_class_attention((x, np.arange(8) % 2), mc_samples=4, image_size=6, seed=0)


# --------------------------------------------------------------------------
# Case 2: counts are exact; one summary warning
# --------------------------------------------------------------------------

# The header of a macOS AppleDouble file (`._name.png` next to `name.png`).
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def test_case2_appledouble_companions_are_not_counted(tmp_path):
    _write_classes(tmp_path, {"a": 40, "b": 40})
    for i in range(40):
        (tmp_path / "a" / f"._{i}.png").write_bytes(_APPLEDOUBLE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped silently: OS junk, not data
        res = estimate_class_attention(tmp_path, mc_samples=5, image_size=8, seed=0)
    assert res.counts.tolist() == [40, 40]  # was [71, 40] (unsampled companions counted)
    assert res.skipped_files == ()


def test_case2_unreadable_files_are_never_counted_sampled_or_not(tmp_path):
    _write_classes(tmp_path, {"a": 10, "b": 12})
    junk = [tmp_path / "a" / f"junk{i}.png" for i in range(5)]
    for path in junk:
        path.write_bytes(b"not an image")
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning) as record:
        res = estimate_class_attention(tmp_path, mc_samples=2, image_size=8, seed=0)
    assert res.counts.tolist() == [10, 12]  # not 16 - (junk files that happened to be sampled)
    assert sorted(res.skipped_files) == sorted(map(str, [*junk, tmp_path / "a" / "empty.jpg"]))
    assert len(record) == 1  # one summary, not one warning per file
    assert "Skipped 6 unreadable image file(s)" in str(record[0].message)
    assert "and 3 more" in str(record[0].message)


# --------------------------------------------------------------------------
# Case 3: endless inputs are refused or read up to a cap, never a hang
# --------------------------------------------------------------------------


def test_case3_infinite_tf_data_is_refused():
    tf = pytest.importorskip("tensorflow")
    x, y = _noise(0, (8, 6, 6)), np.arange(8) % 2
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    with _no_hang(), pytest.raises(ValueError, match="infinite cardinality"):
        estimate_class_attention(endless, mc_samples=4, image_size=6, seed=0)


def test_case3_infinite_pydataset_is_refused():
    class Endless(keras.utils.PyDataset):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            return _noise(index, (4, 6, 6)), np.arange(4) % 2

    with _no_hang(), pytest.raises(ValueError, match="num_batches=None"):
        estimate_class_attention(Endless(), mc_samples=4, image_size=6, seed=0)


def _batches(limit):
    """Batches of 8 images, 2 classes; fails the test if read past `limit` batches."""
    for i in range(limit):
        yield _noise(i, (8, 6, 6)), np.arange(8) % 2
    raise AssertionError(f"the estimator read past {limit} batches of an endless stream")


def test_case3_endless_generator_is_read_up_to_max_samples_with_a_warning():
    with _no_hang(), pytest.warns(UserWarning, match=r"after max_samples=60 samples"):
        res = estimate_class_attention(
            _batches(1000), mc_samples=4, image_size=6, seed=0, max_samples=60
        )
    assert res.counts.tolist() == [30, 30]


def test_case3_generator_ending_at_the_cap_is_read_whole_without_warning():
    def exactly_64():
        yield from (b for _, b in zip(range(8), _batches(8), strict=False))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = estimate_class_attention(
            exactly_64(), mc_samples=4, image_size=6, seed=0, max_samples=64
        )
    assert res.counts.tolist() == [32, 32]


def test_case3_max_samples_is_checked_and_defaults_to_a_documented_cap():
    import inspect

    default = inspect.signature(estimate_class_attention).parameters["max_samples"].default
    assert default == 1_000_000
    with pytest.raises(ValueError, match=r"Expected `max_samples` to be an int >= 1 or None"):
        estimate_class_attention(_batches(2), max_samples=0)


# --------------------------------------------------------------------------
# Case 12 (library): estimator bounds
# --------------------------------------------------------------------------


def test_case12_mc_samples_is_bounded_instead_of_a_memory_error():
    x, y = _noise(0, (8, 6, 6)), np.arange(8) % 2
    with pytest.raises(ValueError, match=r"mc_samples.*in \[2, 10_000_000\].*10000000000000"):
        estimate_class_attention((x, y), mc_samples=10**13, image_size=6, seed=0)


# --------------------------------------------------------------------------
# Case 5: loss weights must be positive and finite in float32
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1e39, 1e-50, 1e-40], ids=["overflow", "underflow", "subnormal"])
def test_case5_loss_weights_not_representable_in_float32_are_refused(weight):
    alpha = [weight, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"finite number > 0 in float32.*out of range at index"):
        keras_freeze.AttentionWeightedCCE(alpha)
    with pytest.raises(ValueError, match=r"in float32"):
        keras_freeze.SparseAttentionWeightedCCE(alpha)
    with pytest.raises(ValueError, match=r"in float32"):
        keras_freeze.attention_weighted_cce(np.eye(4)[:2], np.full((2, 4), 0.25), alpha)


def test_case5_small_but_normal_float32_weights_still_work():
    alpha = [1e-30, 1.0, 1.0, 1.0]
    loss = keras_freeze.AttentionWeightedCCE(alpha, reduction=None)(
        np.eye(4)[:1], np.full((1, 4), 0.25, np.float32)
    )
    value = float(keras.ops.convert_to_numpy(loss)[0])
    assert value == pytest.approx(1e-30 * np.log(4.0), rel=1e-5) and value > 0


# --------------------------------------------------------------------------
# Case 6: sparse labels out of range raise (eager) or give NaN (traced)
# --------------------------------------------------------------------------

_PROBS = np.full((3, 4), 0.25, np.float32)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "backend_tensor"])
@pytest.mark.parametrize(
    "labels, bad",
    [
        ([0, 7, 1], r"y_true\[1\]=7"),
        ([0, 1, -1], r"y_true\[2\]=-1"),
        ([0, 1.5, 2], r"y_true\[1\]=1\.5"),
    ],
    ids=["too_large", "negative", "not_whole"],
)
def test_case6_invalid_sparse_labels_raise_in_eager_calls(labels, bad, as_tensor):
    y = np.array(labels)
    y = keras.ops.convert_to_tensor(y) if as_tensor else y
    expected = r"Expected integer class labels in \[0, 3\] .*Received: " + bad
    with pytest.raises(ValueError, match=expected):
        keras_freeze.SparseAttentionWeightedCCE([1.0, 2.0, 3.0, 4.0])(y, _PROBS)
    with pytest.raises(ValueError, match=bad):
        keras_freeze.sparse_attention_weighted_cce(y, _PROBS, [1.0, 2.0, 3.0, 4.0])


def test_case6_whole_float_labels_are_accepted():
    alpha = [1.0, 2.0, 3.0, 4.0]
    got = keras_freeze.sparse_attention_weighted_cce(np.array([0.0, 3.0, 1.0]), _PROBS, alpha)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), np.log(4.0) * np.array([1.0, 4.0, 2.0]), rtol=1e-6
    )


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_case6_fit_with_out_of_range_labels_is_never_a_silent_zero(run_eagerly):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    loss = keras_freeze.SparseAttentionWeightedCCE([1.0] * 4)
    model.compile("sgd", loss, run_eagerly=run_eagerly)
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    y = np.full((8,), 7)  # every label out of range: the old loss was exactly 0.0
    try:
        history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    except ValueError as error:  # eager steps (run_eagerly, torch) raise
        assert "Expected integer class labels in [0, 3]" in str(error)
        return
    assert not run_eagerly, "an eager step must raise"
    assert np.isnan(history.history["loss"][0])


# --------------------------------------------------------------------------
# Case 7: one-hot rows are checked (estimator, metrics); losses refuse negatives
# --------------------------------------------------------------------------


def _one_hot_with(row, index=3, n=8, k=3):
    y = np.eye(k)[np.arange(n) % k]
    y[index] = row
    return y


@pytest.mark.parametrize(
    "row",
    [[0, 0, 0], [1, 1, 0], [-1, 1, 1], [0.1, 0.9, 0]],
    ids=["all_zero", "multi_hot", "negative", "soft"],
)
def test_case7_rows_that_are_not_one_hot_are_refused_by_the_estimator(row):
    x = _noise(0, (8, 6, 6))
    with pytest.raises(ValueError, match=r"Expected one-hot rows.*Received: row 3 = "):
        estimate_class_attention((x, _one_hot_with(row)), mc_samples=4, image_size=6, seed=0)


def test_case7_rows_that_are_not_one_hot_are_refused_by_the_metrics():
    y_prob = np.full((8, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"Expected one-hot rows.*row 3 = \[0\.0, 0\.0, 0\.0\]"):
        keras_freeze.classification_metrics(_one_hot_with([0, 0, 0]), y_prob)


def test_case7_losses_keep_soft_labels_weighted_per_class_and_refuse_negatives():
    alpha = np.array([1.0, 2.0, 3.0])
    soft = np.array([[0.2, 0.8, 0.0], [0.0, 0.5, 0.5]])
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3]])
    got = keras_freeze.attention_weighted_cce(soft, probs, alpha)
    expected = -np.sum(alpha * soft * np.log(probs), axis=1)  # eq. (1) with soft targets
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-6)
    negative = np.array([[1.2, -0.2, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"Expected targets >= 0.*y_true\[0, 1\]=-0\.2"):
        keras_freeze.AttentionWeightedCCE(alpha)(keras.ops.convert_to_tensor(negative), probs)


# --------------------------------------------------------------------------
# Case 8: FreezeReport counts a shared layer once
# --------------------------------------------------------------------------


def test_case8_freeze_report_counts_a_shared_layer_once():
    shared = keras.layers.Dense(3, name="shared")
    first = keras.Sequential([keras.Input((3,)), shared, keras.layers.Dense(3, name="own")])
    second = keras.Sequential([keras.Input((3,)), shared])
    inputs = keras.Input((3,))
    model = keras.Model(inputs, second(first(inputs)))
    for fraction in (0.0, 0.5, 0.7, 1.0):
        report = keras_freeze.freeze_fraction(model, fraction)
        names = report.frozen + report.trainable
        assert len(names) == len(set(names)) == report.n_layers == 3
        assert shared.trainable == ("shared" in report.trainable)


# --------------------------------------------------------------------------
# Case 9: the constant-image tolerance is relative to the image's scale
# --------------------------------------------------------------------------


def test_case9_images_scaled_by_1e_8_are_not_constant():
    x = np.random.default_rng(0).random((12, 6, 6))
    y = np.arange(12) % 3
    kwargs = dict(mc_samples=20, image_size=6, seed=0)
    reference = estimate_class_attention((x, y), **kwargs)
    tiny = estimate_class_attention((x * 1e-8, y), **kwargs)
    np.testing.assert_allclose(tiny.pair_similarity, reference.pair_similarity, atol=1e-6)
    np.testing.assert_allclose(tiny.alpha, reference.alpha, rtol=1e-6)


# --------------------------------------------------------------------------
# Case 12 (library): freezing
# --------------------------------------------------------------------------


def _mlp(n=6):
    return keras.Sequential(
        [keras.Input((3,))] + [keras.layers.Dense(3, name=f"d{i}") for i in range(n)]
    )


def test_case12_freeze_fraction_negative_seed_is_our_error():
    expected = r"Expected `seed` to be an int >= 0 or None\. Received: seed=-1"
    with pytest.raises(ValueError, match=expected):
        keras_freeze.freeze_fraction(_mlp(), 0.5, "stochastic", seed=-1)


def test_case12_stochastic_freeze_without_seed_records_the_seed_drawn():
    report = keras_freeze.freeze_fraction(_mlp(20), 0.5, "stochastic")
    assert isinstance(report.seed, int) and report.seed >= 0
    again = keras_freeze.freeze_fraction(_mlp(20), 0.5, "stochastic", seed=report.seed)
    assert again.frozen == report.frozen and f"seed={report.seed}" in report.summary()


def test_case12_freezing_a_compiled_model_warns_to_recompile():
    model = _mlp()
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match=r"takes effect at the next `model.compile"):
        keras_freeze.freeze_fraction(model, 0.5)
    with pytest.warns(UserWarning, match=r"unfreeze changed which layers"):
        keras_freeze.unfreeze(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_freeze.freeze_fraction(_mlp(), 0.5)  # not compiled: no warning
        model.compile("sgd", "mse")
        keras_freeze.unfreeze(model)  # nothing changes: no warning


def test_case12_gradual_unfreezing_does_not_warn_about_compiled_models():
    model = _mlp()
    model.compile("sgd", "mse")
    x = np.zeros((4, 3), "float32")
    callback = keras_freeze.GradualUnfreezing({0: 0.5, 1: 0.0})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, x, epochs=2, verbose=0, callbacks=[callback])
    assert not [w for w in record if "next `model.compile" in str(w.message)]
    assert [epoch for epoch, _ in callback.reports] == [0, 1]
