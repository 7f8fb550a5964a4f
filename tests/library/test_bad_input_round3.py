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
from test_callbacks import _Interrupt  # tests/library: the same interrupting callback

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


def test_estimator_lab_tiff_is_read_or_skipped_naming_the_file(tmp_path):
    root = _class_folders(tmp_path / "data", [4, 4])
    lab = root / "class0" / "lab.tif"
    Image.new("LAB", (8, 8), (50, 10, 10)).save(lab)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_class_attention(str(root), 10, image_size=8, seed=0)
    if str(lab) in res.skipped_files:  # a decoder that cannot convert LAB: named, left out
        assert res.counts.tolist() == [4, 4]
        assert any("lab.tif" in str(w.message) for w in caught)
    else:  # a decoder that reads it: counted
        assert res.counts.tolist() == [5, 4]


def test_estimator_image_failing_mid_estimate_is_skipped_naming_the_file(tmp_path, monkeypatch):
    # Any decoder failure that does not name the file (Pillow's "conversion from LAB to RGB not
    # supported" was one) leaves the file out with its name and the reason, never a raw error.
    from keras_freeze import _images

    root = _class_folders(tmp_path / "data", [4, 4])
    bad = str(root / "class1" / "2.png")
    decode = _images._decode_resized

    def failing(path, image_size):
        if str(path) == bad:
            raise ValueError("conversion from LAB to RGB not supported")
        return decode(path, image_size)

    monkeypatch.setattr(_images, "_decode_resized", failing)
    with pytest.warns(UserWarning, match=r"2\.png.*conversion from LAB to RGB not supported"):
        res = estimate_class_attention(str(root), 10, image_size=8, seed=0)
    assert res.skipped_files == (bad,)
    assert res.counts.tolist() == [4, 3]


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
    expected = rf"`from_logits` to be a bool. Received: from_logits={value!r}"
    with pytest.raises(ValueError, match=expected):
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


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------

_LOSS_CLASSES = [
    lambda **kw: keras_freeze.AttentionWeightedCCE([1.0, 2.0], **kw),
    lambda **kw: keras_freeze.SparseAttentionWeightedCCE([1.0, 2.0], **kw),
    lambda **kw: keras_freeze.CustomWeightedBalancedCCE(weights=[0.5, 0.5], **kw),
]


@pytest.mark.parametrize("make", _LOSS_CLASSES, ids=["awcce", "sparse", "cwbcce"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "uint8"])
def test_loss_non_float_dtype_is_refused(make, dtype):
    with pytest.raises(ValueError, match=rf"floating-point loss `dtype`.*dtype='{dtype}'"):
        make(dtype=dtype)


@pytest.mark.parametrize("alpha", [[3e38] * 4, [1.2e-38] * 4, [1e31, 1.0, 1.0, 1.0]])
def test_loss_alpha_out_of_the_batch_safe_range_is_refused(alpha):
    with pytest.raises(ValueError, match=r"\[1e-30, 1e\+30\].*vanish nor overflow.*index"):
        keras_freeze.AttentionWeightedCCE(alpha)
    with pytest.raises(ValueError, match=r"\[1e-30, 1e\+30\]"):
        keras_freeze.CustomWeightedBalancedCCE(weights=alpha)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_loss_at_the_alpha_bounds_is_finite_and_non_zero_in_float32(scale):
    # The worst cases the bounds allow: the smallest non-zero per-sample loss
    # (p = 1 - eps) at alpha = 1e-30, the largest (p = eps) at alpha = 1e30, summed over 8.
    y = np.tile(np.eye(4, dtype="float32")[:1], (8, 1))
    p = np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], "float32"), (8, 1))
    if scale > 1:
        p = np.tile(np.array([[0.0, 1.0, 0.0, 0.0]], "float32"), (8, 1))
    loss = keras_freeze.AttentionWeightedCCE([scale] * 4, reduction="sum")
    value = float(keras.ops.convert_to_numpy(loss(y, p)))
    expected = 8 * scale * (-np.log1p(-1e-7) if scale < 1 else -np.log(1e-7))
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(expected, rel=0.3)  # float32 rounding of 1 - eps


def test_float16_loss_bounds_alpha_so_the_value_cannot_overflow():
    with pytest.raises(ValueError, match=r"<= 4000 for a float16 loss.*65504"):
        keras_freeze.AttentionWeightedCCE([5000.0, 1.0], dtype="float16")
    loss = keras_freeze.AttentionWeightedCCE([4000.0, 1.0], dtype="float16")
    value = loss(np.array([[1.0, 0.0]] * 4), np.array([[0.0, 1.0]] * 4, "float16"))
    assert np.isfinite(float(keras.ops.convert_to_numpy(value)))


def test_cwbcce_counts_giving_a_zero_weight_are_refused_like_zero_weights():
    with pytest.raises(ValueError, match=r"\[1e-30, 1e\+30\]"):
        keras_freeze.CustomWeightedBalancedCCE(weights=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"counts=\[1e\+30, 1\.0\], giving weights \[0\.0, 1\.0\]"):
        keras_freeze.CustomWeightedBalancedCCE(counts=[10**30, 1])
    with pytest.raises(ValueError, match=r"class\(es\) \[0\] hold \(nearly\) every sample"):
        keras_freeze.cwbcce_weights([10**30, 1])


@pytest.mark.parametrize("labels", [np.array([["a", "b"]]), np.array([[b"a", b"b"]])])
def test_string_labels_to_the_losses_are_refused_clearly(labels):
    with pytest.raises(ValueError, match=r"numeric `y_true`.*StringLookup"):
        keras_freeze.attention_weighted_cce(labels, [[0.5, 0.5]], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"numeric `y_true`.*integer class indices"):
        keras_freeze.sparse_attention_weighted_cce(labels[0, :1], [[0.5, 0.5]], [1.0, 1.0])


def test_string_tf_tensor_labels_are_refused_clearly():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match=r"numeric `y_true`.*dtype string"):
        keras_freeze.attention_weighted_cce(tf.constant([["a", "b"]]), [[0.5, 0.5]], [1.0, 1.0])


def test_all_zero_prediction_row_gives_a_finite_loss():
    alpha = [1.0, 2.0, 3.0]
    y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "float32")
    p = np.array([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]], "float32")
    got = keras.ops.convert_to_numpy(keras_freeze.attention_weighted_cce(y, p, alpha))
    # Row 0: every p clipped to eps -> -2 * log(eps); row 1: the usual -3 * log(0.5).
    np.testing.assert_allclose(got, [-2 * np.log(1e-7), -3 * np.log(0.5)], rtol=1e-5)
    # Gradients stay finite too.
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda q: keras_freeze.attention_weighted_cce(y, q, alpha).sum())(p)
        assert np.all(np.isfinite(np.asarray(grad)))


# --------------------------------------------------------------------------
# Class weights
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 2**40}])
def test_class_weights_huge_label_or_class_count_is_refused_without_allocating(kwargs):
    labels = [0, 1, 2**40] if not kwargs else [0, 1, 1]
    with pytest.raises(
        ValueError, match=r"class\(es\) \[2, 3, 4\] and .* more among .*classes are empty"
    ):
        keras_freeze.class_weights(labels, **kwargs)


@pytest.mark.parametrize(
    "labels, shown",
    [
        (np.array([0, 1, 2**64 - 1], dtype=np.uint64), r"\[0, 18446744073709551615\]"),
        (np.array([0, 1, 2**63 + 5], dtype=np.uint64), r"\[0, 9223372036854775813\]"),
        (np.array([0.0, 1.0, 1e20]), r"\[0, 100000000000000000000\]"),
        (np.array([-1e20, 0.0, 1.0]), r"\[-100000000000000000000, 1\]"),
    ],
    ids=["uint64_max", "uint64_2_63", "float_big", "float_negative"],
)
def test_class_weights_label_range_messages_show_the_labels_as_given(labels, shown):
    with pytest.raises(
        ValueError,
        match=r"Expected integer labels (>= 0|below 2\*\*62).*Received: labels in " + shown,
    ):
        keras_freeze.class_weights(labels)


def test_class_weights_uint64_and_float_labels_in_range_still_work():
    for labels in (np.array([0, 0, 1], np.uint64), np.array([0.0, 0.0, 1.0])):
        assert keras_freeze.class_weights(labels).weights == (0.75, 1.5)


@pytest.mark.parametrize(
    "beta",
    [fractions.Fraction(1, 2), decimal.Decimal("0.5"), np.array(0.5), np.float32(0.5), 0.5],
    ids=["Fraction", "Decimal", "0-d array", "float32", "float"],
)
def test_class_weights_beta_accepts_any_real_number_type(beta):
    got = keras_freeze.class_weights([0, 0, 1], "effective_number", beta=beta)
    # Independent computation: (1 - b) / (1 - b**n_c), normalised to sum to K = 2.
    raw = np.array([(1 - 0.5) / (1 - 0.5**2), (1 - 0.5) / (1 - 0.5**1)])
    np.testing.assert_allclose(got.weights, raw / raw.sum() * 2, rtol=1e-12)
    assert got.beta == 0.5


@pytest.mark.parametrize("beta", [True, fractions.Fraction(3, 2), "0.5", np.array([0.5])])
def test_class_weights_beta_refuses_bools_and_non_reals(beta):
    with pytest.raises(ValueError, match=r"beta in \[0, 1\), a real number.*not a bool"):
        keras_freeze.class_weights([0, 0, 1], "effective_number", beta=beta)


# --------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------


def _mlp(depth=4):
    layers = [keras.Input((3,))] + [keras.layers.Dense(3) for _ in range(depth)]
    return keras.Sequential(layers)


@pytest.mark.parametrize(
    "fraction",
    [decimal.Decimal("0.5"), np.array(0.5), fractions.Fraction(1, 2), np.float64(0.5), 0.5],
    ids=["Decimal", "0-d array", "Fraction", "float64", "float"],
)
def test_freeze_fraction_accepts_any_real_number_type(fraction):
    model = _mlp()
    report = keras_freeze.freeze_fraction(model, fraction)
    assert report.fraction == 0.5
    assert [layer.trainable for layer in model.layers] == [False, False, True, True]


@pytest.mark.parametrize(
    "fraction", [True, np.True_, np.array(True), np.array([0.5]), "0.5", 0.5j, [0.5]]
)
def test_freeze_fraction_refuses_bools_and_non_scalars(fraction):
    with pytest.raises(ValueError, match=r"fraction to be a real number in \[0, 1\].*not a bool"):
        keras_freeze.freeze_fraction(_mlp(), fraction)


# --------------------------------------------------------------------------
# Layer-wise decay
# --------------------------------------------------------------------------


def test_layerwise_decay_that_underflows_is_refused_naming_the_smallest_decay():
    model = _mlp(depth=4)  # 4 layers with weights: the input block gets decay**3
    smallest = 1e-30 ** (1 / 3)  # 1e-10
    with pytest.raises(
        ValueError, match=r"decay >= 1e-10 for this model.*decay\*\*3.*decay=1e-300"
    ):
        keras_freeze.layerwise_decay(model, 1e-300)
    factors = keras_freeze.layerwise_decay(model, smallest * 1.0001)
    assert min(factors.values()) >= 1e-30 and all(f > 0 for f in factors.values())
    # A one-block model has only the factor 1: any decay in (0, 1] is fine.
    single = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert list(keras_freeze.layerwise_decay(single, 1e-300).values()) == [1.0]


# --------------------------------------------------------------------------
# GradualUnfreezing resume
# --------------------------------------------------------------------------


def _resume_run(
    tmp_path, seed_first, seed_second, record=False, reshaped=False, between=None, stop=1
):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), np.arange(16) % 3
    schedule = {0: 0.5, 2: 0.25, 4: 0.0}

    backup = str(tmp_path / "backup")
    callbacks_made = []

    def run(seed, stop=None, extra=()):
        # Equal-shaped layers: any frozen set of the same size fits the backed-up state.
        model = keras.Sequential(
            [keras.Input((4,)), *extra]
            + [keras.layers.Dense(4) for _ in range(3)]
            + [keras.layers.Dense(3)]
        )
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        unfreezing = keras_freeze.GradualUnfreezing(
            schedule, mode="stochastic", seed=seed, backup_dir=backup if record else None
        )
        callbacks_made.append(unfreezing)
        callbacks = [keras.callbacks.BackupAndRestore(backup), unfreezing]
        if stop is not None:
            callbacks.append(_Interrupt(stop))
        model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=callbacks)
        return model

    with pytest.raises(RuntimeError, match="interrupted"):
        run(seed_first, stop=stop)
    if between is not None:
        between(tmp_path / "backup")
    # `reshaped`: a weightless layer in front, so weights load but layer positions shift.
    model = run(seed_second, extra=[keras.layers.Dropout(0.0)] if reshaped else [])
    return model, callbacks_made


def test_gradual_unfreezing_stochastic_resume_without_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"cannot resume a stochastic schedule with seed=None"):
        _resume_run(tmp_path, None, None)


def test_gradual_unfreezing_stochastic_resume_with_the_same_seed_still_works(tmp_path):
    # Without backup_dir nothing records the seed: the resume works and says it cannot check.
    with pytest.warns(UserWarning, match=r"seed=3.*without a record.*Pass backup_dir="):
        model, _ = _resume_run(tmp_path, 3, 3)
    assert all(layer.trainable for layer in model.layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # with the record: checked, no warning
        _resume_run(tmp_path / "recorded", 3, 3, record=True)


def test_gradual_unfreezing_resume_with_another_seed_is_refused_when_recorded(tmp_path):
    with pytest.raises(ValueError, match=r"seed=3 then, seed=4 now"):
        _resume_run(tmp_path, 3, 4, record=True)


def test_gradual_unfreezing_recorded_seed_none_resumes_with_the_recorded_seed(tmp_path):
    model, (first, second) = _resume_run(tmp_path, None, None, record=True)
    drawn = first.reports[0][1].seed  # the seed the interrupted run drew (its FreezeReport)
    assert isinstance(drawn, int)
    # The resumed run re-applied epoch 1's frozen set with that seed, then went on with it.
    assert [report.seed for _, report in second.reports] == [drawn] * len(second.reports)
    first_frozen = {e: report.frozen for e, report in first.reports}
    assert len(second.reports[0][1].frozen) == len(first_frozen[0])
    assert all(layer.trainable for layer in model.layers)


def test_gradual_unfreezing_resume_into_another_model_is_refused_when_recorded(tmp_path):
    # Same seed and the same weights, but one more layer: the same seed freezes other layers.
    with pytest.raises(ValueError, match=r"interrupted run froze 2 layers, this model 2"):
        _resume_run(tmp_path, 3, 3, record=True, reshaped=True)
    # Without the record the mismatch goes unseen (the documented limit) or the shapes refuse.
    _resume_run(tmp_path / "unrecorded", 3, 3, reshaped=True)


@pytest.mark.parametrize("text", ['{"seed": 3', "5", '[{"a": 1}]', "BROKEN_SETS"])
def test_gradual_unfreezing_damaged_record_is_refused_naming_it(tmp_path, text):
    def damage(backup):
        record = json.loads((backup / "gradual_unfreezing.json").read_text())
        assert record["seed"] == 3
        broken = json.dumps({**record, "frozen_sets": [[0.5, "x"]]})
        (backup / "gradual_unfreezing.json").write_text(broken if text == "BROKEN_SETS" else text)

    with pytest.raises(ValueError, match=r"gradual_unfreezing.json' is damaged"):
        _resume_run(tmp_path, 3, 3, record=True, between=damage)


def test_gradual_unfreezing_checks_the_set_before_a_change_of_fraction(tmp_path):
    # Interrupted as epoch 2 began (the fraction goes 0.5 -> 0.25 there): the backup holds the
    # optimizer state of epoch 1's set (0.5), while the record was last written for 0.25.
    with pytest.raises(ValueError, match=r"at frozen fraction 0.5 the interrupted run froze 2"):
        _resume_run(tmp_path, 3, 3, record=True, reshaped=True, stop=2)
    model, _ = _resume_run(tmp_path / "same", 3, 3, record=True, stop=2)  # same model: resumes
    assert all(layer.trainable for layer in model.layers)


def test_gradual_unfreezing_backup_dir_without_a_record_says_so(tmp_path):
    def lose(backup):
        (backup / "gradual_unfreezing.json").unlink()

    with pytest.warns(UserWarning, match=r"No record was found in backup_dir="):
        _resume_run(tmp_path, 3, 3, record=True, between=lose)


def test_gradual_unfreezing_backup_dir_is_checked_and_serialised(tmp_path):
    with pytest.raises(ValueError, match=r"backup_dir=3"):
        keras_freeze.GradualUnfreezing({0: 0.5}, backup_dir=3)
    callback = keras_freeze.GradualUnfreezing({0: 0.5}, backup_dir=tmp_path)
    config = callback.get_config()
    assert config["backup_dir"] == str(tmp_path)
    assert keras_freeze.GradualUnfreezing.from_config(config).backup_dir == str(tmp_path)
