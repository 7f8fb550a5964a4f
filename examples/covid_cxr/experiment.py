"""One experiment on one fold: build the model, train it, evaluate it, return its record.

`run_one(context, experiment, fold)` is the unit of work of `reproduce.py`. A `RunContext` holds
what every unit of a run shares (the settings, the data, the backbone factory, the record
store); `Unit` what one experiment needs (its architecture, input size, weights, scaling).
Everything the paper's method needs comes from ``keras_freeze``: freezing (`freeze_fraction`),
the attention loss (`AttentionWeightedCCE` with `estimate_class_attention`), the class-weighted
binary cross-entropy of the ResNet-18 row, validation metrics per epoch
(`ClassificationMetrics`) and the test metrics (`classification_metrics`). The four other
architectures of Table 1 come from `models.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import backbone
import cached_features
import data
import keras
import models
import numpy as np
import protocol
import records
import report
import settings

import keras_freeze

# Decimals of the stored test probabilities; the test metrics are computed from exactly these.
PROBABILITY_DECIMALS = 6


def log(msg=""):
    print(msg, flush=True)


def compute_device():
    """``"gpu"`` when Keras' backend computes on a GPU in this process, else ``"cpu"``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def check_deterministic(args, device=None):
    """Refuses ``--deterministic`` where a planned model cannot run deterministically.

    On a GPU, XLA (JAX) and TensorFlow have no deterministic gradient for MaxPooling2D and
    fail when they meet it; the architectures of `protocol.MAX_POOLING` use it.

    Args:
        args: the resolved command line.
        device: ``"gpu"`` or ``"cpu"``; default: `compute_device`.

    Raises:
        ValueError: naming the experiments and the ways out.
    """
    if not args.deterministic or keras.backend.backend() not in ("jax", "tensorflow"):
        return
    pooled = [e for e in args.experiments if protocol.ARCHITECTURES[e] in protocol.MAX_POOLING]
    if pooled and (device or compute_device()) == "gpu":
        raise ValueError(
            f"--deterministic on a GPU with {keras.backend.backend()}: MaxPooling2D, in "
            f"{', '.join(pooled)}, has no deterministic GPU gradient there. Leave "
            "them out with --experiments, run them without --deterministic, or use "
            "KERAS_BACKEND=torch (deterministic where PyTorch has the kernels, else a warning). "
            f"Received: experiments={list(args.experiments)}"
        )


class BackboneFactory:
    """Builds a fresh MobileNetV2 backbone (``backbone.mobilenet_v2``) for every run.

    The torchvision conversion and Keras' ImageNet download are cached on disk by
    ``backbone.py`` and Keras, so only the first build of a session pays for them.

    Args:
        weights: ``"imagenet"``, ``"torchvision"``, a weights file or ``None``.
    """

    def __init__(self, weights):
        self.weights = weights

    def __call__(self, image_size):
        shape = (image_size, image_size, 3)
        return backbone.mobilenet_v2(weights=self.weights, include_top=False, input_shape=shape)


def preprocessing_of(args, weights):
    """(callable, description) of the input scaling applied to the float32 0..255 batches.

    Args:
        args: the resolved command line (``--preprocessing``).
        weights: the initial weights of the model that reads the batches (``native``
            follows them; models trained from scratch get the paper's x/255).
    """
    mode = protocol.PREPROCESSING_MODES[args.preprocessing]
    chosen = backbone.preprocessing_for(weights, mode)
    fn = functools.partial(backbone.preprocess_input, weights=weights, mode=chosen)
    return fn, protocol.PREPROCESSING_TEXT.get(chosen, str(chosen))


@dataclasses.dataclass(frozen=True)
class Unit:
    """What one experiment trains: its architecture, input side, weights and input scaling.

    Attributes:
        experiment: one of `protocol.EXPERIMENTS`.
        architecture: ``"mobilenetv2"`` or a key of `models.MODELS`.
        image_size: input side in pixels (`settings.image_size_for`).
        weights: initial weights (``None``: random init).
        title: the row label of its tables (says when Inception-V3 is not from ImageNet).
        preprocess: input scaling of every batch (see `preprocessing_of`).
        preprocess_text: its description for the records.
    """

    experiment: str
    architecture: str
    image_size: int
    weights: object
    title: str
    preprocess: object
    preprocess_text: str

    @classmethod
    def of(cls, args, experiment):
        """The `Unit` of ``experiment`` under the command line ``args``."""
        weights = protocol.weights_for(experiment, args.weights)
        preprocess, text = preprocessing_of(args, weights)
        return cls(
            experiment=experiment,
            architecture=protocol.ARCHITECTURES[experiment],
            image_size=settings.image_size_for(args, experiment),
            weights=weights,
            title=protocol.title(experiment, weights),
            preprocess=preprocess,
            preprocess_text=text,
        )


@dataclasses.dataclass
class RunContext:
    """What every (experiment, fold) unit of one run shares.

    Attributes:
        args: the resolved command-line namespace.
        dataset: the run's `dataset.DataSet`.
        factory: a `BackboneFactory` (MobileNetV2).
        out: the output folder.
        store: the `records.RecordStore` of ``out``.
    """

    args: object
    dataset: object
    factory: BackboneFactory
    out: Path
    store: records.RecordStore

    @classmethod
    def of(cls, args, dataset):
        """The context of a run with the resolved settings ``args`` on ``dataset``."""
        return cls(
            args, dataset, BackboneFactory(args.weights), args.out, records.RecordStore(args.out)
        )

    def unit(self, experiment):
        """The `Unit` of ``experiment`` in this run."""
        return Unit.of(self.args, experiment)

    @property
    def class_names(self):
        """The data set's classes, in label order."""
        return tuple(self.dataset.class_names)

    def sequence(self, indices, *, image_size, shuffle, seed, preprocess, batch_size):
        """A `data.ImageSequence` over the dataset's images at ``indices``."""
        return data.ImageSequence(
            [self.dataset.paths[i] for i in indices],
            self.dataset.labels[indices],
            num_classes=len(self.class_names),
            image_size=image_size,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            preprocess=preprocess,
            workers=self.args.workers,
        )


def build_model(ctx, unit):
    """Builds the unit's model: MobileNetV2 frozen as the experiment says, or a `models` one.

    Returns:
        (model, freeze_info) where freeze_info is a JSON-able dict.
    """
    args, class_names = ctx.args, ctx.class_names
    if unit.architecture == "mobilenetv2":
        base = ctx.factory(unit.image_size)
        return _mobilenet_model(unit.experiment, base, args, unit.image_size, class_names)
    spec = models.MODELS[unit.architecture]
    model = spec.build(len(class_names), unit.image_size, weights=unit.weights)
    _set_bn_momentum(model, args.bn_momentum)
    info = {"mode": "none (every layer trained)", "frozen": 0}
    info["of"] = len(keras_freeze.flatten_layers(model))
    info["bn_momentum"] = args.bn_momentum
    info["trainable_params"] = int(sum(int(math.prod(w.shape)) for w in model.trainable_weights))
    info["total_params"] = int(model.count_params())
    return model, info


def _set_bn_momentum(model, momentum):
    """Sets every BatchNormalization's momentum (``None``: keep the model's)."""
    if momentum is None:
        return
    for layer in keras_freeze.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _mobilenet_model(experiment, base, args, image_size, class_names):
    """Freezes the MobileNetV2 backbone as the experiment says and adds the paper's head."""
    info = {"mode": "none", "frozen": 0, "of": len(base.layers)}
    if experiment in ("freeze", "freeze+attention"):
        frozen = keras_freeze.freeze_fraction(base, protocol.FREEZE_FRACTION, mode="ordered")
        info = _freeze_info(frozen, "ordered 50%")
    elif experiment == "stochastic":
        frozen = keras_freeze.freeze_fraction(
            base, protocol.FREEZE_FRACTION, mode="stochastic", seed=args.seed
        )
        info = _freeze_info(frozen, f"stochastic 50% (seed {args.seed})")
    _set_bn_momentum(base, args.bn_momentum)
    info["bn_momentum"] = args.bn_momentum
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = base(inputs)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"mobilenetv2_{protocol.slug(experiment)}")
    info["trainable_params"] = int(sum(int(math.prod(w.shape)) for w in model.trainable_weights))
    info["total_params"] = int(model.count_params())
    return model, info


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


def class_attention_for_fold(ctx, fold, train_idx):
    """Alpha for the attention loss of one fold: estimated on its training split, cached.

    The estimate is cached in ``<out>/attention/fold<k>.json`` with the settings it depends
    on, and reused when they match.

    Returns:
        dict with ``alpha`` (list of floats, class order), ``source`` and, when estimated,
        the estimator's table (``estimate``) and the time it took.
    """
    args = ctx.args
    if args.alpha == "paper":
        return {
            "alpha": [float(a) for a in keras_freeze.PAPER_ALPHA],
            "source": "paper (authors' published weights)",
            "class_names": list(keras_freeze.PAPER_CLASS_NAMES),
        }
    key = {
        "fold": fold,
        "mc_samples": args.mc_samples,
        "seed": args.seed,
        "data": ctx.dataset.fingerprint(),
        "n_train": int(len(train_idx)),
    }
    path = ctx.out / "attention" / f"fold{fold}.json"
    cached = records.read_json(path) if path.exists() else None
    if isinstance(cached, dict) and cached.get("key") == key and "result" in cached:
        log(f"[attention] fold {fold}: reusing {path}")
        return cached["result"]
    result = _estimate_attention(ctx, fold, train_idx)
    records.atomic_write_json(path, {"key": key, "result": result})
    return result


def _estimate_attention(ctx, fold, train_idx):
    """Runs ``keras_freeze.estimate_class_attention`` on the fold's training images."""
    args = ctx.args
    size = protocol.ATTENTION_IMAGE_SIZE
    seq = ctx.sequence(
        train_idx, image_size=size, shuffle=False, seed=None, preprocess=None, batch_size=64
    )
    log(
        f"[attention] fold {fold}: estimate_class_attention on the {len(train_idx)} training "
        f"images ({args.mc_samples} Monte Carlo samples, {size} px)"
    )
    t0 = time.perf_counter()
    att = keras_freeze.estimate_class_attention(
        seq,
        mc_samples=args.mc_samples,
        image_size=size,
        seed=args.seed + fold,
        class_names=list(ctx.class_names),
    )
    elapsed = time.perf_counter() - t0
    result = {
        "alpha": [float(a) for a in att.weights],
        "source": "estimated on the training split (estimate_class_attention)",
        "class_names": list(att.class_names),
        "time_s": round(elapsed, 2),
        "estimate": att.to_dict(),
        "markdown": att.to_markdown(),
    }
    shown = ", ".join(f"{a:.5f}" for a in result["alpha"])
    log(f"[attention] fold {fold}: alpha = [{shown}] ({elapsed:.1f} s)")
    return result


def predict_sequence(model, seq):
    """Predicts every readable image of an (unshuffled) ``ImageSequence``.

    ``ImageSequence`` drops an image it cannot decode from its batch, so the rows of
    ``model.predict(seq)`` would no longer line up with the paths; this loop keeps track of
    which positions each batch holds.

    Returns:
        ``(y_prob, kept)``: probabilities ``(n_kept, C)`` and the positions they belong to.
    """
    probs, kept = [], []
    for b in range(len(seq)):
        pos = [int(i) for i in seq.order[b * seq.batch_size : (b + 1) * seq.batch_size]]
        x, _ = seq[b]
        ok = [i for i in pos if seq.paths[i] not in seq.failed]
        if len(ok) != len(x):  # the whole batch failed and was refilled: skip it
            continue
        probs.append(np.asarray(model.predict_on_batch(x)))
        kept.extend(ok)
    if not probs:
        raise RuntimeError(f"No readable test image; failures: {list(seq.failed.items())[:3]}")
    return np.concatenate(probs, axis=0), np.asarray(kept, dtype=int)


def stored_probabilities(y_prob):
    """The test probabilities as the record stores them (Python floats, 6 decimals)."""
    return [[round(float(p), PROBABILITY_DECIMALS) for p in row] for row in y_prob]


def metrics_of(y_true, stored_prob, class_names):
    """The record's ``metrics``: ``keras_freeze.classification_metrics`` of the stored values.

    Computed from exactly the probabilities the record stores, so anyone can recompute them
    from the record alone and get the same numbers.
    """
    result = keras_freeze.classification_metrics(
        np.asarray(y_true, dtype=int),
        np.asarray(stored_prob, dtype=np.float64),
        class_names=list(class_names),
        zero_division=0.0,
    )
    return result.to_dict()


@dataclasses.dataclass
class _Trained:
    """What training one unit produced (internal to `run_one`)."""

    unit: Unit
    model: object
    freeze_info: dict
    loss_desc: str
    lr: float
    alpha_info: dict | None
    history: dict
    progress: TrainingProgress
    sequences: dict
    fit_s: float
    features: object = None
    feature_cache: dict | None = None


def _loss_for(experiment, alpha_info, train_labels, n_classes):
    """(loss, description) of the experiment: CCE, the attention loss, or the ResNet-18 CWBCE."""
    if alpha_info is not None:
        return keras_freeze.AttentionWeightedCCE(alpha_info["alpha"]), "AttentionWeightedCCE(alpha)"
    if experiment == "resnet18-cwbce":
        counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=n_classes)
        loss = keras_freeze.CustomWeightedBalancedCCE(counts=counts)
        return loss, f"CustomWeightedBalancedCCE(counts={counts.tolist()}, the training split)"
    return keras.losses.CategoricalCrossentropy(), "CategoricalCrossentropy"


def _sequences(ctx, unit, fold, splits):
    """Train (shuffled per epoch), validation and test sequences of one fold."""
    args = ctx.args
    sequences = {}
    for name, indices in zip(("train", "validation", "test"), splits, strict=True):
        shuffle = name == "train"
        sequences[name] = ctx.sequence(
            indices,
            image_size=unit.image_size,
            shuffle=shuffle,
            seed=args.seed + fold if shuffle else None,
            preprocess=unit.preprocess,
            batch_size=args.batch_size,
        )
    return sequences


def _compile(ctx, unit, fold, alpha_info, splits, prefix):
    """Builds and compiles the experiment's model; returns (model, freeze_info, loss, lr)."""
    args, experiment = ctx.args, unit.experiment
    keras.utils.clear_session()
    keras.utils.set_random_seed(args.seed * 1000 + fold)
    keras.config.set_dtype_policy(args.precision)  # reset by run_one when the unit ends
    model, freeze_info = build_model(ctx, unit)
    lr = protocol.learning_rate(experiment, args.lr, args.finetune_lr)
    train_labels = ctx.dataset.labels[splits[0]]
    loss, loss_desc = _loss_for(experiment, alpha_info, train_labels, len(ctx.class_names))
    # Validation accuracy, F1, precision, recall and AUC come from the library's
    # ClassificationMetrics callback (see _train), so no compiled metrics.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    log(
        f"{prefix} {unit.title}: {unit.image_size} px, weights {_weights_text(unit)}, "
        f"{freeze_info['frozen']}/{freeze_info['of']} layers frozen, "
        f"{freeze_info['trainable_params']:,} trainable parameters, Adam lr {lr:g}, "
        f"loss {loss_desc}"
    )
    return model, freeze_info, (loss, loss_desc), lr


def _head_text(unit, n_classes):
    """The record's ``head``: the paper's for MobileNetV2 and Inception-V3, else the model's."""
    if unit.architecture in protocol.PRETRAINED:
        return protocol.head(n_classes)
    return f"{models.MODELS[unit.architecture].title}: its published head, {n_classes} classes"


def _weights_text(unit):
    """The record's ``weights``: the weights, or how the model was initialised."""
    if unit.weights is not None:
        return str(unit.weights)
    if unit.architecture in protocol.PRETRAINED:
        return "none (random init)"
    return "none (trained from scratch, as in the paper)"


@dataclasses.dataclass
class FitSetup:
    """A unit ready to train: its model, what ``fit`` trains, and the data (see `prepare_fit`)."""

    model: object
    fit_model: object
    freeze_info: dict
    loss_desc: str
    lr: float
    alpha_info: dict | None
    sequences: dict
    features: object
    feature_cache: dict


def prepare_fit(ctx, unit, fold, splits, prefix):
    """Estimates alpha if needed, builds and compiles the model, and chooses its data.

    With a feature cache (`cached_features.prepare`) ``fit_model`` is the suffix, which shares
    the model's layers, compiled like the model, and the data are the cached features;
    otherwise it is the model on `data.ImageSequence` batches.
    """
    alpha_info = None
    if unit.experiment == "freeze+attention":
        alpha_info = class_attention_for_fold(ctx, fold, splits[0])
    model, freeze_info, (loss, loss_desc), lr = _compile(
        ctx, unit, fold, alpha_info, splits, prefix
    )
    features, cache_info = cached_features.prepare(ctx, unit, model, prefix)
    fit_model = model
    if features is None:
        seqs = _sequences(ctx, unit, fold, splits)
    else:  # train the suffix (it shares the model's layers) on the cached features
        seqs = _cached_data(ctx, fold, splits, features)
        fit_model = features.split.suffix
        fit_model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    return FitSetup(
        model, fit_model, freeze_info, loss_desc, lr, alpha_info, seqs, features, cache_info
    )


def _train(ctx, unit, fold, splits, prefix):
    """Prepares the unit (`prepare_fit`) and fits it with EarlyStopping."""
    args = ctx.args
    setup = prepare_fit(ctx, unit, fold, splits, prefix)
    seqs = setup.sequences
    progress = TrainingProgress(prefix, args.epochs, len(splits[0]))
    val_metrics = keras_freeze.ClassificationMetrics(
        seqs["validation"], class_names=ctx.class_names, keep_confusion_matrix=False
    )
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=args.patience, restore_best_weights=True
    )
    t_fit = time.perf_counter()
    history = setup.fit_model.fit(
        seqs["train"],
        validation_data=seqs["validation"],
        epochs=args.epochs,
        # The training sequence draws its own sample order from (seed, epoch); fit's batch
        # shuffle (Python's `random`, in a prefetch thread when workers > 1) would make the order
        # depend on the decoding threads, and so on --jobs.
        shuffle=False,
        callbacks=[val_metrics, early, progress],  # metrics first: the others read its keys
        verbose=2 if args.verbose else 0,
    )
    fit_s = time.perf_counter() - t_fit
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return _Trained(
        unit,
        setup.model,
        setup.freeze_info,
        setup.loss_desc,
        setup.lr,
        setup.alpha_info,
        hist,
        progress,
        seqs,
        fit_s,
        setup.features,
        setup.feature_cache,
    )


def _cached_data(ctx, fold, splits, features):
    """Train, validation and test data of one fold from the feature cache (as `_sequences`)."""
    labels, batch = ctx.dataset.labels, ctx.args.batch_size
    seed = ctx.args.seed + fold  # the uncached training ImageSequence's seed
    train = features.train(splits[0], labels[splits[0]], batch_size=batch, seed=seed)
    return {
        "train": train,
        "validation": features.evaluation(splits[1], labels[splits[1]], batch_size=batch),
        "test": features.evaluation(splits[2], labels[splits[2]], batch_size=batch),
    }


def _record(ctx, experiment, fold, splits, trained, evaluation, times):
    """Assembles the `records.Record` of one unit."""
    args, dataset = ctx.args, ctx.dataset
    shared, own = records.settings_of(args, dataset.fingerprint(), experiment)
    hist = trained.history
    epochs_run = len(hist.get("loss", []))
    val_losses = hist.get("val_loss", [])
    alpha_info = trained.alpha_info
    seqs = trained.sequences
    return records.Record(
        experiment=experiment,
        title=trained.unit.title,
        fold=fold,
        synthetic=dataset.synthetic,
        note=protocol.SYNTHETIC_BANNER if dataset.synthetic else "real data",
        metrics=evaluation["metrics"],
        epochs_run=epochs_run,
        best_epoch=int(np.argmin(val_losses)) + 1 if val_losses else epochs_run,
        stopped_early=epochs_run < args.epochs,
        history=hist,
        train_images_per_s=[round(x, 2) for x in trained.progress.train_images_per_s],
        time_s={**times, "attention": (alpha_info or {}).get("time_s")},
        alpha=None if alpha_info is None else alpha_info["alpha"],
        alpha_source=None if alpha_info is None else alpha_info["source"],
        loss=trained.loss_desc,
        optimizer={"name": "Adam", "learning_rate": trained.lr},
        freeze=trained.freeze_info,
        head=_head_text(trained.unit, len(ctx.class_names)),
        weights=_weights_text(trained.unit),
        preprocessing=trained.unit.preprocess_text,
        image_size=trained.unit.image_size,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        early_stopping={
            "monitor": "val_loss",
            "patience": args.patience,
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
            "failed_during_run": {name: len(getattr(s, "failed", ())) for name, s in seqs.items()},
        },
        protocol={"shared": shared, "own": own},
        predictions=evaluation["predictions"],
        **records.environment(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        feature_cache=trained.feature_cache,
        precision=args.precision,
    )


def _evaluate(ctx, trained, test_idx):
    """Test-set predictions (as stored) and the metrics computed from them."""
    if trained.features is None:
        y_prob, kept = predict_sequence(trained.model, trained.sequences["test"])
    else:  # the suffix on the cached test features: the model in inference mode
        y_prob = trained.features.predict(test_idx, ctx.args.batch_size)
        kept = np.arange(len(test_idx))
    y_true = ctx.dataset.labels[test_idx][kept]
    stored = stored_probabilities(y_prob)
    # Per test image: file (relative to the data root), true class, probabilities.
    predictions = {
        "files": [ctx.dataset.relative(i) for i in test_idx[kept]],
        "y_true": [int(v) for v in y_true],
        "y_prob": stored,
    }
    return {"metrics": metrics_of(y_true, stored, ctx.class_names), "predictions": predictions}


def run_one(ctx: RunContext, experiment: str, fold: int) -> records.Record:
    """Trains and tests one experiment on one fold; writes and returns its record.

    Args:
        ctx: the run's `RunContext`.
        experiment: one of `protocol.EXPERIMENTS`.
        fold: 1-based test fold.

    Returns:
        The `records.Record`, also written to ``<out>/records/<slug>_fold<k>.json``.
    """
    prefix = f"[{experiment} | fold {fold}/{len(ctx.dataset.folds)}]"
    unit = ctx.unit(experiment)
    t_start = time.perf_counter()
    splits = ctx.dataset.split(fold)
    log(
        f"{prefix} train {len(splits[0])}, validation {len(splits[1])}, "
        f"test {len(splits[2])} images"
    )
    try:
        trained = _train(ctx, unit, fold, splits, prefix)
        t_test = time.perf_counter()
        evaluation = _evaluate(ctx, trained, splits[2])
        test_s = time.perf_counter() - t_test
    finally:
        keras.config.set_dtype_policy("float32")
    times = {
        "total": round(time.perf_counter() - t_start, 2),
        "fit": round(trained.fit_s, 2),
        "test": round(test_s, 2),
    }
    record = _record(ctx, experiment, fold, splits, trained, evaluation, times)
    ctx.store.save(record)
    m = record.metrics["macro"]
    fmt = report.fmt
    log(
        f"{prefix} done in {times['total']:.0f} s, {record.epochs_run} epoch(s): macro F1 "
        f"{fmt(m['f1'])}, accuracy {fmt(m['accuracy'])}, AUC {fmt(m['auc'])}"
        + ("  [SYNTHETIC DATA]" if ctx.dataset.synthetic else "")
    )
    del trained
    return record
