"""One experiment on one fold: build the model, train it, evaluate it, return its record.

`run_one(context, experiment, fold)` is the unit of work of `reproduce.py`; what each experiment
trains (all from ``keras_freeze`` but the four models of `models.py`): docs/covid_cxr.md.
"""

from __future__ import annotations

import dataclasses
import functools
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

PROBABILITY_DECIMALS = 6  # of the stored test probabilities, from which the metrics are computed
ATTENTION_BATCH = 64  # images per batch when estimating the class attention


def check_weights(settings: Settings):
    """Raises a one-line ValueError, before any work, for MobileNetV2 weights not loadable here."""
    weights = settings.weights
    if weights is None or not settings.uses_mobilenet() or weights.lower() == "imagenet":
        return
    try:
        if weights.lower() == "torchvision":
            keras_freeze.torchvision_checkpoint()
        else:
            keras_freeze.check_weights_file(weights)
    except (OSError, ValueError) as e:
        message = " ".join(str(e).split())
        raise ValueError(
            f"{message} (--weights {weights}); or choose --weights none|imagenet|PATH"
        ) from None


def load_imagenet(settings: Settings):
    """Builds each planned ImageNet model once: Keras downloads its weights before training."""
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
    """What one experiment trains: architecture, input side, weights, title and input scaling."""

    experiment: str
    architecture: str
    image_size: int
    weights: str | None
    title: str
    preprocessing: str
    preprocess_text: str

    @classmethod
    def of(cls, settings: Settings, experiment: str) -> Unit:
        """The `Unit` of ``experiment`` (x/255 for models from scratch under ``native``)."""
        weights = protocol.weights_for(experiment, settings.weights)
        mode = protocol.PREPROCESSING_MODES[settings.preprocessing]
        chosen = keras_freeze.mobilenet_v2_preprocessing(weights, mode)
        arch, size = protocol.ARCHITECTURES[experiment], settings.image_size_for(experiment)
        title, text = protocol.title(experiment, weights), protocol.PREPROCESSING_TEXT.get(chosen)
        return cls(experiment, arch, size, weights, title, chosen, text or str(chosen))

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
        """A `keras_freeze.ImageDataset` of ``indices``, shuffled per epoch from ``seed`` if any."""
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


def _finish(model, info, momentum) -> dict:
    """Sets every BatchNormalization's momentum (``None``: keep); ``info`` with the counts."""
    if momentum is not None:
        for layer in keras_freeze.flatten_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    counts = {"trainable_params": trainable, "total_params": int(model.count_params())}
    return {**info, "bn_momentum": momentum, **counts}


def _freeze_info(f, mode):
    return dict(mode=mode, frozen=f.n_frozen, of=f.n_layers, frozen_layers=list(f.frozen))


def build_model(settings: Settings, unit: Unit, n_classes: int):
    """``(model, freeze_info)``: MobileNetV2 frozen as the experiment says, or a `models` one."""
    if unit.architecture != "mobilenetv2":
        build = models.MODELS[unit.architecture].build
        model = build(n_classes, unit.image_size, weights=unit.weights)
        layers = len(keras_freeze.flatten_layers(model))
        info = {"mode": "none (every layer trained)", "frozen": 0, "of": layers}
        return model, _finish(model, info, settings.bn_momentum)
    shape = (unit.image_size, unit.image_size, 3)
    base = keras_freeze.mobilenet_v2(weights=unit.weights, include_top=False, input_shape=shape)
    info = {"mode": "none", "frozen": 0, "of": len(base.layers)}
    fraction, seed = protocol.FREEZE_FRACTION, settings.seed
    if unit.experiment in protocol.FEATURE_CACHE_EXPERIMENTS:  # the ordered 50% freeze
        frozen = keras_freeze.freeze_fraction(base, fraction, mode="ordered")
        info = _freeze_info(frozen, "ordered 50%")
    elif unit.experiment == "stochastic":
        frozen = keras_freeze.freeze_fraction(base, fraction, mode="stochastic", seed=seed)
        info = _freeze_info(frozen, f"stochastic 50% (seed {seed})")
    inputs = keras.Input(shape, name="image")
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(base(inputs))
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"mobilenetv2_{protocol.slug(unit.experiment)}")
    return model, _finish(model, info, settings.bn_momentum)


class TrainingProgress(keras.callbacks.Callback):
    """Prints one line per epoch: the logs and the training images/s (of ``n_train`` images)."""

    def __init__(self, prefix, epochs, n_train):
        super().__init__()
        self.prefix, self.epochs, self.n_train = prefix, epochs, n_train
        self.train_images_per_s, self._t0, self._t_train = [], None, None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0, self._t_train = time.perf_counter(), None

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
            f"{self.prefix} epoch {epoch + 1}/{self.epochs}: {', '.join(parts)} "
            f"({total:.1f} s, train {ips:.1f} images/s)"
        )


def class_attention_for_fold(ctx: RunContext, fold: int, train_idx) -> dict:
    """The attention loss's ``alpha`` (a `keras_freeze.ClassAttention` estimated on the fold's
    training split and cached, or ``"paper"``), its ``weights``, ``source`` and ``time_s``."""
    settings, store, size = ctx.settings, ctx.store, protocol.ATTENTION_IMAGE_SIZE
    if settings.alpha == "paper":
        weights = [float(a) for a in keras_freeze.PAPER_ALPHA]
        return {"alpha": "paper", "weights": weights, "source": protocol.PAPER_ALPHA_SOURCE}
    mc, names = settings.mc_samples, list(ctx.class_names)
    key = {"fold": fold, "mc_samples": mc, "seed": settings.seed}
    key.update(data=ctx.dataset.fingerprint(), n_train=int(len(train_idx)))
    attention = store.attention_of(fold, key)
    if attention is not None:
        log(f"[attention] fold {fold}: reusing {store.attention_path(fold)}")
        elapsed = store.attention_seconds(fold)
    else:
        images = ctx.images(train_idx, image_size=size, preprocess=None, batch_size=ATTENTION_BATCH)
        log(
            f"[attention] fold {fold}: estimate_class_attention on the {len(train_idx)} training "
            f"images ({mc} Monte Carlo samples, {size} px)"
        )
        t0 = time.perf_counter()
        attention = keras_freeze.estimate_class_attention(
            images, mc_samples=mc, image_size=size, seed=settings.seed + fold, class_names=names
        )
        elapsed = round(time.perf_counter() - t0, 2)
        shown = ", ".join(f"{a:.5f}" for a in attention.weights)
        log(f"[attention] fold {fold}: alpha = [{shown}] ({elapsed:.1f} s)")
        store.save_attention(fold, key, attention, elapsed)
    weights, source = [float(a) for a in attention.weights], protocol.ESTIMATED_ALPHA_SOURCE
    return {"alpha": attention, "weights": weights, "source": source, "time_s": elapsed}


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
    """``(model, freeze_info, lr)``: built in a fresh seeded session under ``--precision``, Adam."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(settings.seed * 1000 + fold)
    keras.config.set_dtype_policy(settings.precision)
    model, freeze_info = build_model(settings, unit, n_classes)
    lr = protocol.learning_rate(unit.experiment, settings.lr, settings.finetune_lr)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    return model, freeze_info, lr


def prepare_fit(ctx: RunContext, unit: Unit, fold: int, splits, prefix: str) -> Training:
    """Estimates alpha if needed, builds and compiles the model, and chooses its data: the
    cached features and the suffix (`cached_features.prepare`), or the model on images."""
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
    if features is None:  # train (shuffled per epoch from seed + fold), validation, test images
        names, seeds = ("train", "validation", "test"), (settings.seed + fold, None, None)
        size, batch = unit.image_size, settings.batch_size
        data = {
            n: ctx.images(i, image_size=size, preprocess=unit.preprocess, batch_size=batch, seed=s)
            for n, i, s in zip(names, splits, seeds, strict=True)
        }
        fit_model = model
    else:  # the suffix shares the model's layers
        data, fit_model = features.data(splits, ctx.dataset.labels, settings, fold)
        fit_model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    return Training(
        unit, model, fit_model, freeze_info, loss_desc, lr, attention, data, features, cache_info
    )


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
        shuffle=False,  # the data draw their order from (seed, epoch), whatever the threads
        callbacks=[val_metrics, early, progress],  # metrics first: the others read its keys
        verbose=2 if settings.verbose else 0,
    )
    training.fit_s = time.perf_counter() - t_fit
    training.history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    training.images_per_s = progress.train_images_per_s
    return training


def evaluate(ctx: RunContext, training: Training, test_idx) -> dict:
    """Test predictions as stored (`stored_probabilities`) and the metrics of exactly them."""
    if training.features is None:
        y_prob, kept = keras_freeze.predict_images(training.model, training.data["test"])
    else:  # the suffix on the cached test features: the model in inference mode
        y_prob = training.features.predict(test_idx, ctx.settings.batch_size)
        kept = np.arange(len(test_idx))
    y_true = ctx.dataset.labels[test_idx][kept]
    stored = stored_probabilities(y_prob)
    files = [ctx.dataset.relative(i) for i in test_idx[kept]]
    predictions = {"files": files, "y_true": [int(v) for v in y_true], "y_prob": stored}
    return {"metrics": metrics_of(y_true, stored, ctx.class_names), "predictions": predictions}


def stored_probabilities(y_prob) -> list:
    """The test probabilities as the record stores them (Python floats, 6 decimals)."""
    return [[round(float(p), PROBABILITY_DECIMALS) for p in row] for row in y_prob]


def metrics_of(y_true, stored_prob, class_names) -> dict:
    """The record's ``metrics``: ``keras_freeze.classification_metrics`` of the stored values."""
    y_true, y_prob = np.asarray(y_true, dtype=int), np.asarray(stored_prob, dtype=np.float64)
    return keras_freeze.classification_metrics(
        y_true, y_prob, class_names=list(class_names), zero_division=0.0
    ).to_dict()


def _record(ctx: RunContext, fold: int, splits, training: Training, evaluation, times):
    """The `records.Record` of one unit."""
    settings, dataset, unit = ctx.settings, ctx.dataset, training.unit
    hist, attention = training.history, training.attention or {}
    epochs_run, val_losses = len(hist.get("loss", [])), hist.get("val_loss", [])
    n_split = dict(zip(("train", "validation", "test"), map(len, splits), strict=True))
    stopping = {"monitor": "val_loss", "patience": settings.patience, "restore_best_weights": True}
    failed = {name: len(getattr(d, "failed", ())) for name, d in training.data.items()}
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
        early_stopping=stopping,
        split={**n_split, "val_fraction": protocol.VAL_FRACTION, "val_seed": protocol.VAL_SEED},
        data={**dataset.info, "failed_during_run": failed},
        protocol=settings.record_key(unit.experiment, dataset.fingerprint()),
        predictions=evaluation["predictions"],
        **records.environment(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        feature_cache=training.feature_cache,
        precision=settings.precision,
    )


def run_one(ctx: RunContext, experiment: str, fold: int) -> records.Record:
    """Trains and tests ``experiment`` on the 1-based ``fold``; writes and returns its record."""
    prefix = f"[{experiment} | fold {fold}/{len(ctx.dataset.folds)}]"
    unit, t_start = Unit.of(ctx.settings, experiment), time.perf_counter()
    splits = ctx.dataset.split(fold)
    n = [len(s) for s in splits]
    log(f"{prefix} train {n[0]}, validation {n[1]}, test {n[2]} images")
    try:
        training = train(ctx, unit, fold, splits, prefix)
        t_test = time.perf_counter()
        evaluation = evaluate(ctx, training, splits[2])
        test_s = time.perf_counter() - t_test
    finally:
        keras.config.set_dtype_policy("float32")
    total = round(time.perf_counter() - t_start, 2)
    times = {"total": total, "fit": round(training.fit_s, 2), "test": round(test_s, 2)}
    record = _record(ctx, fold, splits, training, evaluation, times)
    if ctx.settings.save_models:
        record = _save_model(ctx, record, training.model, unit, splits)
    ctx.store.save(record)
    m, name = record.metrics["macro"], record.constant_class()
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


def _save_model(ctx: RunContext, record, model, unit: Unit, splits):
    """Saves the model, its `saved.ModelInfo` and Grad-CAM galleries; the record names it."""
    dataset, out, fold = ctx.dataset, ctx.settings.out, record.fold
    info = saved.ModelInfo(
        experiment=unit.experiment,
        fold=fold,
        class_names=ctx.class_names,
        image_size=unit.image_size,
        weights=unit.weights,
        preprocessing=unit.preprocessing,
        data_root=str(dataset.root),
        train_files=tuple(dataset.relative(i) for i in splits[0]),
        test_files=tuple(dataset.relative(i) for i in splits[2]),
    )
    path = saved.save(out, model, info)
    preds = record.predictions
    files = [str(Path(info.data_root) / f) for f in preds["files"]]
    for png in explain.write_galleries(
        out, model, info, files, preds["y_true"], preds["y_prob"], synthetic=record.synthetic
    ):
        log(f"[{info.experiment} | fold {info.fold}] Grad-CAM: {png}")
    return dataclasses.replace(record, model=str(path.relative_to(out)))
