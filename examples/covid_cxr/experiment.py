"""One experiment on one fold: build the model, train it, evaluate it, return its record.

`run_one(context, experiment, fold)` is the unit of work of `reproduce.py`. A `RunContext` holds
what every unit of a run shares (the settings, the data, the record store); `Unit` what one
experiment needs (its architecture, input size, weights, scaling); `Training` what training one
unit produced. Everything the paper's method needs comes from ``keras_freeze``: the MobileNetV2
backbone (`mobilenet_v2`, with torchvision's ImageNet weights offline), freezing
(`freeze_fraction`), the attention loss (`AttentionWeightedCCE` with `estimate_class_attention`),
the class-weighted loss of the ResNet-18 row, the input pipeline (`ImageDataset`), validation
metrics per epoch (`ClassificationMetrics`) and the test metrics (`classification_metrics`). The
four other architectures of Table 1 come from `models.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import cached_features
import explain
import keras
import models
import numpy as np
import protocol
import records
import saved
from console import fmt
from console import log
from data import DataSet
from settings import Settings

import keras_freeze

# Decimals of the stored test probabilities; the test metrics are computed from exactly these.
PROBABILITY_DECIMALS = 6
# Images per batch when estimating the class attention.
ATTENTION_BATCH = 64


def check_weights(settings: Settings):
    """Refuses, before any work, MobileNetV2 weights that cannot be loaded here: the offline
    package for ``torchvision``, a weights file's header (``imagenet``: `load_imagenet`).

    Raises:
        ValueError: one line naming the weights and the fix (the offline package to install,
            or another ``--weights``).
    """
    weights = settings.weights
    if weights is None or not settings.uses_mobilenet() or weights.lower() == "imagenet":
        return
    try:
        if weights.lower() == "torchvision":
            keras_freeze.torchvision_checkpoint()
        else:
            keras_freeze.check_weights_file(weights)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{' '.join(str(e).split())} (--weights {weights}); or choose "
            "--weights none|imagenet|PATH"
        ) from None


def load_imagenet(settings: Settings):
    """Builds each planned model that starts from ImageNet once, so that Keras downloads (or
    finds) its weights before training rather than in the middle of the run.

    Raises:
        ValueError: one line: the download failed, and ``--weights torchvision`` works offline.
    """
    for experiment in settings.experiments:
        if protocol.weights_for(experiment, settings.weights) != "imagenet":
            continue
        unit = Unit.of(settings, experiment)
        try:
            build_model(settings, unit, n_classes=2)
        except Exception as e:  # noqa: BLE001 - Keras' download raises a bare Exception
            raise ValueError(
                f"Keras could not load the ImageNet weights of {unit.title} ({type(e).__name__}: "
                f"{' '.join(str(e).split())}); without a network, --weights torchvision loads "
                "MobileNetV2's offline"
            ) from None
        keras.utils.clear_session()


@dataclasses.dataclass(frozen=True)
class Unit:
    """What one experiment trains: its architecture, input side, weights and input scaling.

    Attributes:
        experiment: one of `protocol.EXPERIMENTS`.
        architecture: ``"mobilenetv2"`` or a key of `models.MODELS`.
        image_size: input side in pixels (`Settings.image_size_for`).
        weights: initial weights (``None``: random init).
        title: the row label of its tables (says when Inception-V3 is not from ImageNet).
        preprocessing: input scaling of every float32 0..255 batch: ``"rescale"``, ``"torch"``
            or ``"tf"`` (`keras_freeze.preprocess_mobilenet_v2`).
        preprocess_text: its description for the records.
    """

    experiment: str
    architecture: str
    image_size: int
    weights: str | None
    title: str
    preprocessing: str
    preprocess_text: str

    @classmethod
    def of(cls, settings: Settings, experiment: str) -> Unit:
        """The `Unit` of ``experiment`` under ``settings``; models trained from scratch get
        the paper's x/255 under ``--preprocessing native``."""
        weights = protocol.weights_for(experiment, settings.weights)
        mode = protocol.PREPROCESSING_MODES[settings.preprocessing]
        chosen = keras_freeze.mobilenet_v2_preprocessing(weights, mode)
        return cls(
            experiment=experiment,
            architecture=protocol.ARCHITECTURES[experiment],
            image_size=settings.image_size_for(experiment),
            weights=weights,
            title=protocol.title(experiment, weights),
            preprocessing=chosen,
            preprocess_text=protocol.PREPROCESSING_TEXT.get(chosen, str(chosen)),
        )

    @property
    def preprocess(self):
        """The scaling of the float32 0..255 batches the model reads."""
        return functools.partial(
            keras_freeze.preprocess_mobilenet_v2, weights=self.weights, mode=self.preprocessing
        )

    def weights_text(self) -> str:
        """The record's ``weights``: the weights, or how the model was initialised."""
        if self.weights is not None:
            return str(self.weights)
        if self.architecture in protocol.PRETRAINED:
            return "none (random init)"
        return "none (trained from scratch, as in the paper)"

    def head_text(self, n_classes: int) -> str:
        """The record's ``head``: the paper's for MobileNetV2 and Inception-V3, else the model's."""
        if self.architecture in protocol.PRETRAINED:
            return protocol.head(n_classes)
        return f"{models.MODELS[self.architecture].title}: its published head, {n_classes} classes"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every (experiment, fold) unit of one run shares: settings, data, record store."""

    settings: Settings
    dataset: DataSet

    @property
    def store(self) -> records.RecordStore:
        """The `records.RecordStore` of the run's output folder."""
        return records.RecordStore(self.settings.out)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The data set's classes, in label order."""
        return tuple(self.dataset.class_names)

    def images(self, indices, *, image_size, preprocess, batch_size, seed=None):
        """A `keras_freeze.ImageDataset` over the images at ``indices``; shuffled per epoch
        from ``seed`` when one is given."""
        return keras_freeze.ImageDataset(
            [self.dataset.paths[i] for i in indices],
            self.dataset.labels[indices],
            num_classes=len(self.class_names),
            image_size=image_size,
            batch_size=batch_size,
            shuffle=seed is not None,
            seed=seed,
            preprocess=preprocess,
            workers=self.settings.workers,
        )


@dataclasses.dataclass
class Training:
    """One unit being trained: its model, what ``fit`` trains, its data, and the outcome."""

    unit: Unit
    model: object
    fit_model: object
    freeze_info: dict
    loss_desc: str
    lr: float
    attention: dict | None
    data: dict
    features: object
    feature_cache: dict
    history: dict = dataclasses.field(default_factory=dict)
    images_per_s: list = dataclasses.field(default_factory=list)
    fit_s: float = 0.0


def _count_params(model) -> dict:
    return {
        "trainable_params": int(sum(int(math.prod(w.shape)) for w in model.trainable_weights)),
        "total_params": int(model.count_params()),
    }


def _set_bn_momentum(model, momentum):
    """Sets every BatchNormalization's momentum (``None``: keep the model's)."""
    if momentum is None:
        return
    for layer in keras_freeze.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_model(settings: Settings, unit: Unit, n_classes: int):
    """Builds the unit's model: MobileNetV2 frozen as the experiment says, or a `models` one.

    Returns:
        ``(model, freeze_info)``, the latter a JSON-ready dict.
    """
    if unit.architecture != "mobilenetv2":
        model = models.MODELS[unit.architecture].build(
            n_classes, unit.image_size, weights=unit.weights
        )
        _set_bn_momentum(model, settings.bn_momentum)
        info = {"mode": "none (every layer trained)", "frozen": 0}
        info["of"] = len(keras_freeze.flatten_layers(model))
        info["bn_momentum"] = settings.bn_momentum
        return model, {**info, **_count_params(model)}
    shape = (unit.image_size, unit.image_size, 3)
    base = keras_freeze.mobilenet_v2(weights=unit.weights, include_top=False, input_shape=shape)
    info = {"mode": "none", "frozen": 0, "of": len(base.layers)}
    if unit.experiment in protocol.FEATURE_CACHE_EXPERIMENTS:  # the ordered 50% freeze
        frozen = keras_freeze.freeze_fraction(base, protocol.FREEZE_FRACTION, mode="ordered")
        info = _freeze_info(frozen, "ordered 50%")
    elif unit.experiment == "stochastic":
        frozen = keras_freeze.freeze_fraction(
            base, protocol.FREEZE_FRACTION, mode="stochastic", seed=settings.seed
        )
        info = _freeze_info(frozen, f"stochastic 50% (seed {settings.seed})")
    _set_bn_momentum(base, settings.bn_momentum)
    info["bn_momentum"] = settings.bn_momentum
    inputs = keras.Input(shape, name="image")
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(base(inputs))
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"mobilenetv2_{protocol.slug(unit.experiment)}")
    return model, {**info, **_count_params(model)}


def _freeze_info(frozen, mode):
    return {
        "mode": mode,
        "frozen": frozen.n_frozen,
        "of": frozen.n_layers,
        "frozen_layers": list(frozen.frozen),
    }


class TrainingProgress(keras.callbacks.Callback):
    """Prints one line per epoch with the logs and the training images/s.

    Args:
        prefix: start of every line, e.g. ``"[freeze | fold 1/5]"``.
        epochs: the maximum number of epochs (for ``epoch k/N``).
        n_train: number of training images (for images/s).
    """

    def __init__(self, prefix, epochs, n_train):
        super().__init__()
        self.prefix = prefix
        self.epochs = epochs
        self.n_train = n_train
        self.train_images_per_s = []
        self._t0 = None
        self._t_train = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._t_train = None

    def on_test_begin(self, logs=None):
        if self._t0 is not None and self._t_train is None:
            self._t_train = time.perf_counter() - self._t0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        total = time.perf_counter() - self._t0
        t_train = self._t_train or total
        ips = self.n_train / t_train if t_train > 0 else float("nan")
        self.train_images_per_s.append(ips)
        keys = ("loss", "val_loss", "val_accuracy", "val_macro_f1")
        parts = [f"{k} {logs[k]:.4f}" for k in keys if k in logs]
        log(
            f"{self.prefix} epoch {epoch + 1}/{self.epochs}: "
            + ", ".join(parts)
            + f" ({total:.1f} s, train {ips:.1f} images/s)"
        )


def class_attention_for_fold(ctx: RunContext, fold: int, train_idx) -> dict:
    """The attention loss's class weights of one fold, and where they come from.

    Estimated on the fold's training split, cached in the store's attention file with the
    settings it depends on and reused when they match; or the authors' published weights.

    Returns:
        dict with ``alpha`` (a `keras_freeze.ClassAttention`, or ``"paper"``), ``weights``
        (floats, class order), ``source`` and ``time_s``.
    """
    settings = ctx.settings
    if settings.alpha == "paper":
        weights = [float(a) for a in keras_freeze.PAPER_ALPHA]
        return {"alpha": "paper", "weights": weights, "source": protocol.PAPER_ALPHA_SOURCE}
    key = {
        "fold": fold,
        "mc_samples": settings.mc_samples,
        "seed": settings.seed,
        "data": ctx.dataset.fingerprint(),
        "n_train": int(len(train_idx)),
    }
    attention = ctx.store.attention_of(fold, key)
    if attention is not None:
        log(f"[attention] fold {fold}: reusing {ctx.store.attention_path(fold)}")
        elapsed = ctx.store.attention_seconds(fold)
    else:
        attention, elapsed = _estimate_attention(ctx, fold, train_idx)
        ctx.store.save_attention(fold, key, attention, elapsed)
    return {
        "alpha": attention,
        "weights": [float(a) for a in attention.weights],
        "source": protocol.ESTIMATED_ALPHA_SOURCE,
        "time_s": elapsed,
    }


def _estimate_attention(ctx: RunContext, fold: int, train_idx):
    """``keras_freeze.estimate_class_attention`` on the fold's training images."""
    settings, size = ctx.settings, protocol.ATTENTION_IMAGE_SIZE
    images = ctx.images(train_idx, image_size=size, preprocess=None, batch_size=ATTENTION_BATCH)
    log(
        f"[attention] fold {fold}: estimate_class_attention on the {len(train_idx)} training "
        f"images ({settings.mc_samples} Monte Carlo samples, {size} px)"
    )
    t0 = time.perf_counter()
    attention = keras_freeze.estimate_class_attention(
        images,
        mc_samples=settings.mc_samples,
        image_size=size,
        seed=settings.seed + fold,
        class_names=list(ctx.class_names),
    )
    elapsed = round(time.perf_counter() - t0, 2)
    shown = ", ".join(f"{a:.5f}" for a in attention.weights)
    log(f"[attention] fold {fold}: alpha = [{shown}] ({elapsed:.1f} s)")
    return attention, elapsed


def _loss_for(experiment, attention, train_labels, n_classes):
    """(loss, description) of the experiment: CCE, the attention loss, or the ResNet-18 CWBCE."""
    if attention is not None:
        return keras_freeze.AttentionWeightedCCE(attention["alpha"]), "AttentionWeightedCCE(alpha)"
    if experiment == "resnet18-cwbce":
        counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=n_classes)
        loss = keras_freeze.CustomWeightedBalancedCCE(counts=counts)
        return loss, f"CustomWeightedBalancedCCE(counts={counts.tolist()}, the training split)"
    return keras.losses.CategoricalCrossentropy(), "CategoricalCrossentropy"


def compile_model(settings: Settings, unit: Unit, fold: int, loss, n_classes: int):
    """A fresh session seeded for the fold, the model built under ``--precision`` (reset by
    `run_one` when the unit ends) and compiled with Adam.

    Returns:
        ``(model, freeze_info, learning_rate)``.
    """
    keras.utils.clear_session()
    keras.utils.set_random_seed(settings.seed * 1000 + fold)
    keras.config.set_dtype_policy(settings.precision)
    model, freeze_info = build_model(settings, unit, n_classes)
    lr = protocol.learning_rate(unit.experiment, settings.lr, settings.finetune_lr)
    # Validation metrics come from ClassificationMetrics (see `train`): no compiled metrics.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    return model, freeze_info, lr


def prepare_fit(ctx: RunContext, unit: Unit, fold: int, splits, prefix: str) -> Training:
    """Estimates alpha if needed, builds and compiles the model, and chooses its data.

    With a feature cache (`cached_features.prepare`) ``fit_model`` is the suffix, which shares
    the model's layers, compiled like the model, and the data are the cached features;
    otherwise it is the model on `keras_freeze.ImageDataset` batches.
    """
    settings, n_classes = ctx.settings, len(ctx.class_names)
    attention = None
    if unit.experiment == "freeze+attention":
        attention = class_attention_for_fold(ctx, fold, splits[0])
    train_labels = ctx.dataset.labels[splits[0]]
    loss, loss_desc = _loss_for(unit.experiment, attention, train_labels, n_classes)
    model, freeze_info, lr = compile_model(settings, unit, fold, loss, n_classes)
    log(
        f"{prefix} {unit.title}: {unit.image_size} px, weights {unit.weights_text()}, "
        f"{freeze_info['frozen']}/{freeze_info['of']} layers frozen, "
        f"{freeze_info['trainable_params']:,} trainable parameters, Adam lr {lr:g}, "
        f"loss {loss_desc}"
    )
    features, cache_info = cached_features.prepare(ctx, unit, model, prefix)
    if features is None:
        data, fit_model = _image_data(ctx, unit, fold, splits), model
    else:  # train the suffix (it shares the model's layers) on the cached features
        data, fit_model = features.data(splits, ctx.dataset.labels, settings, fold)
        fit_model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    return Training(
        unit, model, fit_model, freeze_info, loss_desc, lr, attention, data, features, cache_info
    )


def _image_data(ctx: RunContext, unit: Unit, fold: int, splits) -> dict:
    """Train (shuffled per epoch from seed + fold), validation and test images of one fold."""
    settings = ctx.settings
    return {
        name: ctx.images(
            indices,
            image_size=unit.image_size,
            preprocess=unit.preprocess,
            batch_size=settings.batch_size,
            seed=settings.seed + fold if name == "train" else None,
        )
        for name, indices in zip(("train", "validation", "test"), splits, strict=True)
    }


def train(ctx: RunContext, unit: Unit, fold: int, splits, prefix: str) -> Training:
    """Prepares the unit (`prepare_fit`) and fits it with EarlyStopping."""
    settings = ctx.settings
    training = prepare_fit(ctx, unit, fold, splits, prefix)
    progress = TrainingProgress(prefix, settings.epochs, len(splits[0]))
    val_metrics = keras_freeze.ClassificationMetrics(
        training.data["validation"], class_names=ctx.class_names, keep_confusion_matrix=False
    )
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    t_fit = time.perf_counter()
    history = training.fit_model.fit(
        training.data["train"],
        validation_data=training.data["validation"],
        epochs=settings.epochs,
        # The training data draw their own order from (seed, epoch); fit's batch shuffle would
        # make the order depend on the decoding threads, and so on --jobs.
        shuffle=False,
        callbacks=[val_metrics, early, progress],  # metrics first: the others read its keys
        verbose=2 if settings.verbose else 0,
    )
    training.fit_s = time.perf_counter() - t_fit
    training.history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    training.images_per_s = progress.train_images_per_s
    return training


def evaluate(ctx: RunContext, training: Training, test_idx) -> dict:
    """Test-set predictions (as stored: 6 decimals) and the metrics computed from exactly
    them, so that anyone can recompute the metrics from the record alone."""
    if training.features is None:
        y_prob, kept = keras_freeze.predict_images(training.model, training.data["test"])
    else:  # the suffix on the cached test features: the model in inference mode
        y_prob = training.features.predict(test_idx, ctx.settings.batch_size)
        kept = np.arange(len(test_idx))
    y_true = ctx.dataset.labels[test_idx][kept]
    stored = stored_probabilities(y_prob)
    predictions = {  # per test image: file (relative to the data root), true class, probabilities
        "files": [ctx.dataset.relative(i) for i in test_idx[kept]],
        "y_true": [int(v) for v in y_true],
        "y_prob": stored,
    }
    return {"metrics": metrics_of(y_true, stored, ctx.class_names), "predictions": predictions}


def stored_probabilities(y_prob) -> list:
    """The test probabilities as the record stores them (Python floats, 6 decimals)."""
    return [[round(float(p), PROBABILITY_DECIMALS) for p in row] for row in y_prob]


def metrics_of(y_true, stored_prob, class_names) -> dict:
    """The record's ``metrics``: ``keras_freeze.classification_metrics`` of the stored values."""
    result = keras_freeze.classification_metrics(
        np.asarray(y_true, dtype=int),
        np.asarray(stored_prob, dtype=np.float64),
        class_names=list(class_names),
        zero_division=0.0,
    )
    return result.to_dict()


def _record(ctx: RunContext, fold: int, splits, training: Training, evaluation, times):
    """Assembles the `records.Record` of one unit."""
    settings, dataset, unit = ctx.settings, ctx.dataset, training.unit
    hist, attention = training.history, training.attention or {}
    epochs_run = len(hist.get("loss", []))
    val_losses = hist.get("val_loss", [])
    return records.Record(
        experiment=unit.experiment,
        title=unit.title,
        fold=fold,
        synthetic=dataset.synthetic,
        note=protocol.SYNTHETIC_BANNER if dataset.synthetic else "real data",
        metrics=evaluation["metrics"],
        epochs_run=epochs_run,
        best_epoch=int(np.argmin(val_losses)) + 1 if val_losses else epochs_run,
        stopped_early=epochs_run < settings.epochs,
        history=hist,
        train_images_per_s=[round(x, 2) for x in training.images_per_s],
        time_s={**times, "attention": attention.get("time_s")},
        alpha=attention.get("weights"),
        alpha_source=attention.get("source"),
        loss=training.loss_desc,
        optimizer={"name": "Adam", "learning_rate": training.lr},
        freeze=training.freeze_info,
        head=unit.head_text(len(ctx.class_names)),
        weights=unit.weights_text(),
        preprocessing=unit.preprocess_text,
        image_size=unit.image_size,
        batch_size=settings.batch_size,
        max_epochs=settings.epochs,
        early_stopping={
            "monitor": "val_loss",
            "patience": settings.patience,
            "restore_best_weights": True,
        },
        split={
            "train": int(len(splits[0])),
            "validation": int(len(splits[1])),
            "test": int(len(splits[2])),
            "val_fraction": protocol.VAL_FRACTION,
            "val_seed": protocol.VAL_SEED,
        },
        data={
            **dataset.info,
            "failed_during_run": {
                name: len(getattr(d, "failed", ())) for name, d in training.data.items()
            },
        },
        protocol=settings.record_key(unit.experiment, dataset.fingerprint()),
        predictions=evaluation["predictions"],
        **records.environment(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        feature_cache=training.feature_cache,
        precision=settings.precision,
    )


def run_one(ctx: RunContext, experiment: str, fold: int) -> records.Record:
    """Trains and tests one experiment on one fold; writes and returns its record.

    Args:
        ctx: the run's `RunContext`.
        experiment: one of `protocol.EXPERIMENTS`.
        fold: 1-based test fold.

    Returns:
        The `records.Record`, also written to the run's record store.
    """
    prefix = f"[{experiment} | fold {fold}/{len(ctx.dataset.folds)}]"
    unit = Unit.of(ctx.settings, experiment)
    t_start = time.perf_counter()
    splits = ctx.dataset.split(fold)
    log(
        f"{prefix} train {len(splits[0])}, validation {len(splits[1])}, "
        f"test {len(splits[2])} images"
    )
    try:
        training = train(ctx, unit, fold, splits, prefix)
        t_test = time.perf_counter()
        evaluation = evaluate(ctx, training, splits[2])
        test_s = time.perf_counter() - t_test
    finally:
        keras.config.set_dtype_policy("float32")
    times = {
        "total": round(time.perf_counter() - t_start, 2),
        "fit": round(training.fit_s, 2),
        "test": round(test_s, 2),
    }
    record = _record(ctx, fold, splits, training, evaluation, times)
    if ctx.settings.save_models:
        record = _save_model(ctx, record, training.model, _model_info(ctx, unit, fold, splits))
    ctx.store.save(record)
    m = record.metrics["macro"]
    name = record.constant_class()
    note = name and (
        f"NOTE: predicts {name} for every test image (a constant model; too little data or "
        "training for it to learn, see docs/covid_cxr.md)"
    )
    log(
        f"{prefix} done in {times['total']:.0f} s, {record.epochs_run} epoch(s): macro F1 "
        f"{fmt(m['f1'])}, accuracy {fmt(m['accuracy'])}, AUC {fmt(m['auc'])}"
        + ("  [SYNTHETIC DATA]" if ctx.dataset.synthetic else "")
        + (f"\n{prefix} {note}" if note else "")
    )
    return record


def _save_model(ctx: RunContext, record, model, info: saved.ModelInfo):
    """Saves the unit's model and its Grad-CAM galleries on the test fold; the record says
    where the model is."""
    out = ctx.settings.out
    path = saved.save(out, model, info)
    preds = record.predictions
    files = [str(Path(info.data_root) / f) for f in preds["files"]]
    for png in explain.write_galleries(
        out, model, info, files, preds["y_true"], preds["y_prob"], synthetic=record.synthetic
    ):
        log(f"[{info.experiment} | fold {info.fold}] Grad-CAM: {png}")
    return dataclasses.replace(record, model=str(path.relative_to(out)))


def _model_info(ctx: RunContext, unit: Unit, fold: int, splits) -> saved.ModelInfo:
    """What a later prediction with the unit's saved model needs (`saved.ModelInfo`)."""
    return saved.ModelInfo(
        experiment=unit.experiment,
        fold=fold,
        class_names=ctx.class_names,
        image_size=unit.image_size,
        weights=unit.weights,
        preprocessing=unit.preprocessing,
        data_root=str(ctx.dataset.root),
        train_files=tuple(ctx.dataset.relative(i) for i in splits[0]),
        test_files=tuple(ctx.dataset.relative(i) for i in splits[2]),
    )
