"""Tests for the callbacks GradualUnfreezing and ClassificationMetrics.

Oracles: an independent epoch-by-epoch walk of the schedule, the layer order of
the model itself, weights observed before/after each epoch (gradient flow), and
scikit-learn called directly on `model.predict` outputs.
"""

import csv
import json
import math
import warnings
from decimal import Decimal

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from keras_freeze import ClassificationMetrics
from keras_freeze import ClassificationReport
from keras_freeze import GradualUnfreezing
from keras_freeze import classification_metrics

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _mlp(n_layers=4, n_in=4, n_classes=3, width=6):
    """Sequential of `n_layers` Dense layers (flatten_layers == model.layers)."""
    layers = [keras.Input((n_in,))]
    for i in range(n_layers - 1):
        layers.append(keras.layers.Dense(width, activation="tanh", name=f"d{i}"))
    layers.append(keras.layers.Dense(n_classes, activation="softmax", name=f"d{n_layers - 1}"))
    return keras.Sequential(layers)


def _n_frozen(fraction, n):
    """floor(fraction * n), the fraction read as the decimal it prints as."""
    return math.floor(Decimal(repr(float(fraction))) * n)


def _data(n=32, n_in=4, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype("float32")
    y = np.arange(n) % n_classes  # every class present
    rng.shuffle(y)
    return x, y


def _reference_fraction(schedule, epoch):
    """Independent oracle: walk the epochs, switching at each key."""
    current = None
    for e in range(epoch + 1):
        if e in schedule:
            current = schedule[e]
    return current


class _WeightProbe(keras.callbacks.Callback):
    """Records, per epoch, which layers' weights changed during that epoch."""

    def __init__(self):
        super().__init__()
        self.changed = []
        self.trainable = []

    def _snapshot(self):
        return {
            layer.name: [np.array(w) for w in layer.get_weights()] for layer in self.model.layers
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._before = self._snapshot()
        self.trainable.append([layer.trainable for layer in self.model.layers])

    def on_epoch_end(self, epoch, logs=None):
        after = self._snapshot()
        self.changed.append(
            [
                any(
                    not np.array_equal(a, b)
                    for a, b in zip(self._before[name], after[name], strict=True)
                )
                for name in (layer.name for layer in self.model.layers)
            ]
        )


# --------------------------------------------------------------------------
# GradualUnfreezing: schedule
# --------------------------------------------------------------------------

_fractions = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.75, 0.9, 1.0])


@st.composite
def _schedules(draw):
    later = draw(st.dictionaries(st.integers(1, 12), _fractions, max_size=5))
    return {0: draw(_fractions), **later}


@given(schedule=_schedules())
def test_schedule_resolution_matches_epoch_walk(schedule):
    callback = GradualUnfreezing(schedule)
    for epoch in range(16):
        assert callback.fraction_for_epoch(epoch) == _reference_fraction(schedule, epoch)


@settings(max_examples=10)  # builds a model per example
@given(schedule=_schedules(), n_layers=st.integers(2, 5))
def test_flags_follow_schedule(schedule, n_layers):
    keras.utils.clear_session()
    model = _mlp(n_layers)
    callback = GradualUnfreezing(schedule)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(14):
        callback.on_epoch_begin(epoch)
        k = _n_frozen(_reference_fraction(schedule, epoch), n_layers)
        assert [layer.trainable for layer in model.layers] == [i >= k for i in range(n_layers)]
        logs = {}
        callback.on_epoch_end(epoch, logs)
        assert logs["frozen_fraction"] == _reference_fraction(schedule, epoch)
        assert logs["frozen_layers"] == k


def test_callable_schedule():
    model = _mlp(4)
    callback = GradualUnfreezing(lambda epoch: max(0.0, 0.75 - 0.25 * epoch))
    callback.set_model(model)
    callback.on_train_begin()
    seen = []
    for epoch in range(4):
        callback.on_epoch_begin(epoch)
        seen.append(sum(not layer.trainable for layer in model.layers))
    assert seen == [3, 2, 1, 0]


def test_callable_schedule_out_of_range_raises_at_epoch():
    callback = GradualUnfreezing(lambda epoch: 1.5)
    callback.set_model(_mlp(3))
    callback.on_train_begin()
    with pytest.raises(ValueError, match=r"schedule\(0\)=1.5"):
        callback.on_epoch_begin(0)


def test_stochastic_sets_are_nested_and_sized():
    model = _mlp(8)
    schedule = {0: 0.75, 1: 0.5, 2: 0.25, 3: 0.0}
    callback = GradualUnfreezing(schedule, mode="stochastic", seed=3)
    callback.set_model(model)
    callback.on_train_begin()
    previous = None
    for epoch in range(4):
        callback.on_epoch_begin(epoch)
        frozen = {layer.name for layer in model.layers if not layer.trainable}
        assert len(frozen) == _n_frozen(schedule[epoch], 8)
        if previous is not None:
            assert frozen <= previous
        previous = frozen
    # Not simply the ordered prefix for every seed: seed 3 picks another set.
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    stochastic = [layer.trainable for layer in model.layers]
    assert stochastic != [i >= 6 for i in range(8)]


def test_by_params_freezes_shortest_prefix_holding_the_fraction():
    model = _mlp(4, width=6)  # params per layer: 30, 42, 42, 21
    params = [layer.count_params() for layer in model.layers]
    callback = GradualUnfreezing({0: 0.5, 1: 0.2}, by="params")
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, fraction in ((0, 0.5), (1, 0.2)):
        callback.on_epoch_begin(epoch)
        k = next(i + 1 for i in range(4) if sum(params[: i + 1]) >= fraction * sum(params))
        assert [layer.trainable for layer in model.layers] == [i >= k for i in range(4)]


def test_target_confines_schedule_to_nested_model():
    base = _mlp(4, n_classes=5)
    base.name = "backbone"
    outer = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(2, name="head")])
    callback = GradualUnfreezing({0: 0.5}, target="backbone")
    callback.set_model(outer)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    assert [layer.trainable for layer in base.layers] == [False, False, True, True]
    assert outer.get_layer("head").trainable
    with pytest.raises(ValueError, match="target='nope'"):
        bad = GradualUnfreezing({0: 0.5}, target="nope")
        bad.set_model(outer)
        bad.on_train_begin()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": {1: 0.5}}, "key 0"),
        ({"schedule": {}}, "non-empty"),
        ({"schedule": {0: 0.5, -1: 0.2}}, "key -1"),
        ({"schedule": {0: 0.5, 2.0: 0.2}}, "key 2.0"),
        ({"schedule": {0: 0.5, True: 0.2}}, "key True"),
        ({"schedule": {0: 1.5}}, r"schedule\[0\]=1.5"),
        ({"schedule": {0: float("nan")}}, "nan"),
        ({"schedule": [0.5, 0.2]}, "dict"),
        ({"schedule": {0: 0.5}, "mode": "random"}, "mode='random'"),
        ({"schedule": {0: 0.5}, "by": "weights"}, "by='weights'"),
        ({"schedule": {0: 0.5}, "seed": 1}, "seed=1"),
        ({"schedule": {0: 0.5}, "mode": "stochastic", "seed": 1.5}, "seed=1.5"),
        ({"schedule": {0: 0.5}, "target": 3}, "target=3"),
    ],
)
def test_gradual_unfreezing_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradualUnfreezing(**kwargs)


# --------------------------------------------------------------------------
# GradualUnfreezing: gradient flow inside fit, on the active backend
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer, prefrozen",
    [
        (lambda: keras.optimizers.Adam(0.05), False),
        (lambda: keras.optimizers.Adam(0.05), True),
        (lambda: keras.optimizers.SGD(0.1, 0.9), False),
        (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.05)), False),
    ],
    ids=["adam", "adam-compiled-frozen", "sgd-momentum", "loss-scale-adam"],
)
def test_gradient_flow_follows_schedule(prefrozen, optimizer):
    """Layers unfrozen at epoch k change from epoch k on; frozen ones never do."""
    keras.utils.set_random_seed(1)
    model = _mlp(4)
    if prefrozen:  # the optimizer is then built for the head only
        for layer in model.layers[:3]:
            layer.trainable = False
    model.compile(optimizer(), "sparse_categorical_crossentropy")
    x, y = _data()
    schedule = {0: 0.75, 1: 0.5, 2: 0.25}
    probe = _WeightProbe()
    history = model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[GradualUnfreezing(schedule), probe]
    )
    expected = [[i >= _n_frozen(schedule[e], 4) for i in range(4)] for e in range(3)]
    assert probe.trainable == expected
    assert probe.changed == expected  # changed exactly where trainable
    assert not any(changed[0] for changed in probe.changed)  # layer 0 never moves
    assert history.history["frozen_fraction"] == [0.75, 0.5, 0.25]
    assert history.history["frozen_layers"] == [3.0, 2.0, 1.0]
    # The optimizer tracks exactly the trainable variables, and its step
    # counter carried over the rebuilds: 3 epochs x 4 batches.
    assert [v.path for v in model.optimizer._trainable_variables] == [
        v.path for v in model.trainable_variables
    ]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 12


def test_optimizer_state_of_still_trainable_layers_survives_unfreezing():
    keras.utils.set_random_seed(2)
    model = _mlp(3)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    x, y = _data()
    seen = {}

    class Grab(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for v in self.model.optimizer.variables:
                if v.path.endswith("d2_kernel_momentum"):
                    seen[epoch] = np.array(keras.ops.convert_to_numpy(v))

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                for v in self.model.optimizer.variables:
                    if v.path.endswith("d2_kernel_momentum"):
                        seen["begin1"] = np.array(keras.ops.convert_to_numpy(v))

    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[GradualUnfreezing({0: 0.67, 1: 0.0}), Grab()],
    )
    assert np.any(seen[0] != 0)
    np.testing.assert_array_equal(seen["begin1"], seen[0])  # carried into the new optimizer


def test_fit_twice_and_save_load(tmp_path):
    model = _mlp(3)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    callback = GradualUnfreezing({0: 0.67, 1: 0.0})
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    # A second fit starts the schedule again from epoch 0.
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert history.history["frozen_fraction"] == [0.67]
    assert [layer.trainable for layer in model.layers] == [False, False, True]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [layer.trainable for layer in loaded.layers] == [False, False, True]
    # The optimizer state saved is that of the rebuilt optimizer: 3 epochs x 2 steps.
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 6


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_resume_with_backup_and_restore_equals_an_uninterrupted_run(tmp_path):
    """A new process (a fresh model and optimizer) resumes exactly where the schedule was.

    Interrupted at the start of epoch 1, the backup holds the state of epoch 0 (2 of 3
    layers frozen, Adam moments of the last layer only); the restarted script's model is
    fully trainable, and the schedule unfreezes one more layer at epoch 1.
    """
    stop_at = 1

    def optimizer():
        return keras.optimizers.Adam(0.05)

    keras.utils.set_random_seed(8)
    initial = _mlp(3).get_weights()
    x, y = _data()
    schedule = {0: 0.67, 1: 0.34, 3: 0.0}

    def run(callbacks, epochs=4):
        model = _mlp(3)
        model.set_weights(initial)
        model.compile(optimizer(), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    expected = run([GradualUnfreezing(schedule)])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, GradualUnfreezing(schedule), _Interrupt(stop_at)])
    # The callbacks in either order.
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    resumed = run([GradualUnfreezing(schedule), backup])
    for a, b in zip(resumed.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [layer.trainable for layer in resumed.layers] == [True] * 3

    def slots(model):  # variable names without the optimizer's and model's own names
        return [v.path.split("/")[-1].split("_", 2)[-1] for v in model.optimizer.variables]

    assert slots(resumed) == slots(expected)
    for a, b in zip(resumed.optimizer.variables, expected.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7
        )


def test_gradual_unfreezing_serialisation_round_trip():
    callback = GradualUnfreezing({0: 0.5, 3: 0.25, 6: 0.0}, mode="stochastic", seed=7)
    config = callback.get_config()
    assert GradualUnfreezing.from_config(config).get_config() == config
    payload = json.loads(json.dumps(keras.saving.serialize_keras_object(callback)))
    assert set(payload["config"]["schedule"]) == {"0", "3", "6"}  # JSON keys are strings
    restored = keras.saving.deserialize_keras_object(payload)
    assert isinstance(restored, GradualUnfreezing)
    assert restored.schedule == {0: 0.5, 3: 0.25, 6: 0.0}
    assert (restored.mode, restored.seed) == ("stochastic", 7)
    assert [restored.fraction_for_epoch(e) for e in range(8)] == [
        callback.fraction_for_epoch(e) for e in range(8)
    ]


def test_callable_schedule_is_not_serialisable():
    with pytest.raises(NotImplementedError, match="callable schedule cannot be serialised"):
        GradualUnfreezing(lambda epoch: 0.0).get_config()


# --------------------------------------------------------------------------
# ClassificationMetrics callback inside fit, on the active backend
# --------------------------------------------------------------------------


def _sklearn_reference(y, prob):
    pred = prob.argmax(axis=1)
    k = prob.shape[1]
    labels = list(range(k))
    ref = {"accuracy": skm.accuracy_score(y, pred)}
    for avg in ("macro", "weighted"):
        ref[f"{avg}_f1"] = skm.f1_score(y, pred, labels=labels, average=avg, zero_division=0)
        ref[f"{avg}_precision"] = skm.precision_score(
            y, pred, labels=labels, average=avg, zero_division=0
        )
        ref[f"{avg}_recall"] = skm.recall_score(
            y, pred, labels=labels, average=avg, zero_division=0
        )
        if k == 2:  # sklearn's binary form; both one-vs-rest AUCs equal it
            ref[f"{avg}_auc"] = skm.roc_auc_score(y, prob[:, 1])
        else:
            ref[f"{avg}_auc"] = skm.roc_auc_score(
                y, prob, multi_class="ovr", average=avg, labels=labels
            )
    return ref


_NAMES = ["COVID", "Lung Opacity", "Normal"]


def _fitted(callbacks, epochs=2, lr=0.05, compile_metrics=None, validation_data=None):
    keras.utils.set_random_seed(0)
    model = _mlp(2)
    model.compile(
        keras.optimizers.SGD(lr), "sparse_categorical_crossentropy", metrics=compile_metrics
    )
    x, y = _data()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=8,
        verbose=0,
        callbacks=callbacks,
        validation_data=validation_data,
    )
    return model, history


def test_callback_metrics_equal_sklearn_on_predictions():
    xv, yv = _data(24, seed=5)
    callback = ClassificationMetrics((xv, yv), class_names=_NAMES, batch_size=5)
    model, history = _fitted([callback])
    prob = model.predict(xv, verbose=0)
    ref = _sklearn_reference(yv, prob)
    for key, value in ref.items():
        assert history.history[f"val_{key}"][-1] == pytest.approx(value, abs=1e-6), key
    recall = skm.recall_score(yv, prob.argmax(1), average=None, zero_division=0)
    assert history.history["val_recall_Lung_Opacity"][-1] == pytest.approx(recall[1])
    assert len(history.history["val_macro_f1"]) == 2
    np.testing.assert_array_equal(
        callback.confusion_matrix, skm.confusion_matrix(yv, prob.argmax(1), labels=[0, 1, 2])
    )


def test_callback_keeps_the_full_report_of_the_last_epoch():
    xv, yv = _data(24, seed=5)
    callback = ClassificationMetrics((xv, yv), class_names=_NAMES)
    model, _ = _fitted([callback], epochs=1)
    report = callback.last_report
    assert isinstance(report, ClassificationReport)
    assert dict(report) == callback.last_metrics
    assert report.class_names == tuple(_NAMES) and report.n == 24
    expected = classification_metrics(yv, model.predict(xv, verbose=0), _NAMES)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
    callback.confusion_matrix[0, 0] += 1  # the callback's copy is writable, the report's is not
    assert callback.confusion_matrix[0, 0] == report.confusion_matrix[0, 0] + 1


def test_callback_accepts_batches_and_pydataset():
    xv, yv = _data(24, seed=5)
    onehot = np.eye(3)[yv]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return xv[8 * i : 8 * i + 8], onehot[8 * i : 8 * i + 8]

    as_arrays = ClassificationMetrics((xv, yv))
    as_list = ClassificationMetrics([(xv[:10], yv[:10]), (xv[10:], yv[10:])], prefix="l_")
    as_pydataset = ClassificationMetrics(Batches(), prefix="p_")
    _fitted([as_arrays, as_list, as_pydataset], epochs=1)
    for other in (as_list, as_pydataset):
        for key, value in as_arrays.last_metrics.items():
            assert other.last_metrics[key] == pytest.approx(value, abs=1e-6), key


def test_callback_accepts_tf_data():
    tf = pytest.importorskip("tensorflow")
    xv, yv = _data(24, seed=5)
    as_arrays = ClassificationMetrics((xv, yv))
    as_tf = ClassificationMetrics(
        tf.data.Dataset.from_tensor_slices((xv, yv)).batch(7), prefix="t_"
    )
    _fitted([as_arrays, as_tf], epochs=1)
    for key, value in as_arrays.last_metrics.items():
        assert as_tf.last_metrics[key] == pytest.approx(value, abs=1e-6), key


def test_early_stopping_monitors_macro_f1():
    """With lr=0 the metric never improves: patience=1 stops after epoch 2 of 3."""
    xv, yv = _data(24, seed=5)
    stop = keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max", patience=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = _fitted([ClassificationMetrics((xv, yv)), stop], epochs=3, lr=0.0)
    assert not [w for w in caught if "not available" in str(w.message)]
    assert len(history.history["val_macro_f1"]) == 2
    assert stop.stopped_epoch == 1


def test_early_stopping_listed_first_does_not_see_the_metric():
    """Negative control for the documented order rule."""
    xv, yv = _data(24, seed=5)
    stop = keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max", patience=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = _fitted([stop, ClassificationMetrics((xv, yv))], epochs=3, lr=0.0)
    assert [w for w in caught if "not available" in str(w.message)]
    assert len(history.history["val_macro_f1"]) == 3  # never stopped


def test_csv_logger_and_checkpoint_see_the_keys(tmp_path):
    xv, yv = _data(24, seed=5)
    csv_path = tmp_path / "log.csv"
    ckpt = tmp_path / "best.keras"
    _fitted(
        [
            ClassificationMetrics((xv, yv), class_names=_NAMES),
            keras.callbacks.CSVLogger(str(csv_path)),
            keras.callbacks.ModelCheckpoint(
                str(ckpt), monitor="val_macro_f1", mode="max", save_best_only=True
            ),
        ]
    )
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"val_macro_f1", "val_weighted_auc", "val_recall_COVID"} <= set(rows[0])
    assert float(rows[-1]["val_macro_f1"]) >= 0.0
    assert ckpt.exists()


def test_absent_validation_class_warns_once_and_logs_nan():
    xv, yv = _data(24, seed=5)
    keep = yv != 2
    callback = ClassificationMetrics((xv[keep], yv[keep]), class_names=_NAMES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = _fitted([callback], epochs=2)
    auc_warnings = [w for w in caught if "AUC is undefined" in str(w.message)]
    assert len(auc_warnings) == 1 and "Normal" in str(auc_warnings[0].message)
    assert all(math.isnan(v) for v in history.history["val_auc_Normal"])
    assert all(math.isnan(v) for v in history.history["val_macro_auc"])
    assert not any(math.isnan(v) for v in history.history["val_weighted_auc"])


def test_existing_log_keys_are_not_overwritten():
    xv, yv = _data(24, seed=5)
    other_x, other_y = _data(24, seed=9)
    with pytest.warns(UserWarning, match="already in the logs"):
        _, history = _fitted(
            [ClassificationMetrics((other_x, other_y))],
            compile_metrics=["accuracy"],
            validation_data=(xv, yv),
            epochs=1,
        )
    assert "val_macro_f1" in history.history
    assert len(history.history["val_accuracy"]) == 1  # Keras' own value, kept


def test_classification_metrics_callback_serialisation():
    xv, yv = _data(8)
    callback = ClassificationMetrics((xv, yv), class_names=_NAMES, batch_size=4, prefix="v_")
    config = callback.get_config()
    assert "validation_data" not in config
    json.dumps(config)
    restored = ClassificationMetrics.from_config({**config, "validation_data": (xv, yv)})
    assert restored.get_config() == config
    payload = json.loads(json.dumps(keras.saving.serialize_keras_object(callback)))
    assert payload["registered_name"] == "keras_freeze>ClassificationMetrics"
    with pytest.raises(ValueError, match="validation_data"):
        ClassificationMetrics.from_config(config)


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        ((x for x in []), {}, "one-shot iterator"),
        ((np.zeros((2, 4)), np.zeros(2), np.ones(2)), {}, "length 3"),
        ((np.zeros((2, 4)), np.zeros(3)), {}, "same non-zero length"),
        (np.zeros((2, 4)), {}, "tuple"),
        ((np.zeros((2, 4)), np.zeros(2)), {"batch_size": 0}, "batch_size=0"),
        ((np.zeros((2, 4)), np.zeros(2)), {"zero_division": "warn"}, "zero_division"),
    ],
)
def test_classification_metrics_callback_validation(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassificationMetrics(data, **kwargs)


def test_schedule_reads_numpy_floats_as_printed():
    # np.float32(0.29) is 0.28999999165534973 in binary; as in freeze_fraction,
    # the schedule reads it as 0.29, so 29 of 100 layers are frozen, not 28.
    callback = GradualUnfreezing({0: np.float32(0.29), 1: np.float64(0.0)})
    assert callback.fraction_for_epoch(0) == 0.29
    model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(2) for _ in range(100)])
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    assert sum(not layer.trainable for layer in model.layers) == 29


def test_resume_hook_never_outlives_the_call(tmp_path):
    """After fit, evaluate or predict, load_weights loads the optimizer state as usual."""
    model = _mlp(3)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    x, y = _data()
    callback = GradualUnfreezing({0: 0.0})
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    model.save_weights(tmp_path / "w.weights.h5")
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    model.evaluate(x, y, verbose=0, callbacks=[callback])
    model.predict(x, verbose=0, callbacks=[callback])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    model.load_weights(tmp_path / "w.weights.h5")
    for variable, value in zip(model.optimizer.variables, saved, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    assert "load_own_variables" not in vars(model.optimizer)
