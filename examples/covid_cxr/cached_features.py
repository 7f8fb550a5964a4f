"""``--feature-cache``: train the ordered-freeze experiments on cached frozen-prefix features.

With the first 50% of MobileNetV2 frozen (BatchNorm in inference mode) and no augmentation, the
frozen layers map each image to the same activations in every epoch, fold and experiment.
`prepare` cuts the compiled model with ``keras_freeze.split_frozen_prefix`` and computes those
activations once with ``keras_freeze.cache_features``, memory-mapped under
``<cache dir>/feature_cache/`` (``--cache-dir``, else ``--out``) and keyed by the library's
fingerprint (prefix weights, dtype, file list, preprocessing, image size): every fold and both
ordered-freeze experiments reuse it when the frozen weights are equal (pretrained weights).
The suffix then trains on the cached features; it shares the model's layers, so the model is
trained. `CachedTrainSequence` serves the training images in exactly the order of the uncached
`data.ImageSequence` with the same seed, so a float32 cache reproduces the uncached run.

Example:
    >>> wanted("auto", "freeze"), wanted("auto", "stochastic")[0], wanted("off", "freeze")[0]
    ((True, 'auto: ordered freeze, frozen prefix computed once'), False, False)
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import keras
import numpy as np
import protocol

import keras_freeze

ORDERED = protocol.FEATURE_CACHE_EXPERIMENTS
# Images per prefix call when the cache is built.
BUILD_BATCH = 64


def log(msg=""):
    print(msg, flush=True)


def wanted(mode, experiment):
    """Whether ``--feature-cache mode`` caches features for ``experiment``, and why.

    Returns:
        ``(use, reason)``.
    """
    if mode == "off":
        return False, "off: --feature-cache off"
    if experiment not in ORDERED:
        return False, f"{mode}: {experiment} has no frozen prefix (only freeze, freeze+attention)"
    return True, f"{mode}: ordered freeze, frozen prefix computed once"


def unused(reason):
    """The record's ``feature_cache`` of a unit trained without the cache."""
    return {
        "used": False,
        "reason": reason,
        "dtype": None,
        "bytes": 0,
        "build_s": 0.0,
        "reused": False,
        "cut": [],
    }


def cache_root(args, out):
    """Folder of the memory-mapped caches: ``<--cache-dir or --out>/feature_cache``."""
    base = getattr(args, "cache_dir", None)
    return (Path(base).expanduser() if base is not None else Path(out)) / "feature_cache"


def usable_indices(dataset):
    """The data set's images in its folds (corrupt files left out), in index order."""
    return np.sort(np.concatenate([np.asarray(f, dtype=np.int64) for f in dataset.folds]))


def _key(ctx, unit, usable):
    """What identifies the cached images: files (with size and time), scaling, image size."""
    files = []
    for i in usable:
        p = ctx.dataset.paths[i]
        st = os.stat(p)
        files.append([str(p), st.st_size, st.st_mtime_ns])
    return {
        "files": files,
        "preprocessing": [ctx.args.preprocessing, str(unit.weights), unit.preprocess_text],
        "image_size": unit.image_size,
        "decoder": "data.ImageSequence (Pillow RGB, bilinear)",
    }


def _build(ctx, unit, split, usable, prefix):
    """Runs ``keras_freeze.cache_features`` over the ``usable`` images, in index order."""
    n = len(usable)
    seq = ctx.sequence(
        usable,
        image_size=unit.image_size,
        shuffle=False,
        seed=None,
        preprocess=unit.preprocess,
        batch_size=BUILD_BATCH,
    )
    cache = keras_freeze.cache_features(
        split,
        seq,
        batch_size=BUILD_BATCH,
        dtype=ctx.args.feature_cache_dtype,
        path=cache_root(ctx.args, ctx.out),
        key=_key(ctx, unit, usable),
        verbose=1 if sys.stdout.isatty() else 0,  # a progress bar on a terminal
    )
    if len(cache) != n or seq.failed:
        raise RuntimeError(
            f"The feature cache holds {len(cache)} rows for {n} images ({len(seq.failed)} "
            f"unreadable). Delete {cache.path} and rerun with --feature-cache off."
        )
    log(f"{prefix} {cache.summary()}")
    return cache


def prepare(ctx, unit, model, prefix):
    """The unit's `Features` (or ``None``) and the record's ``feature_cache`` dict.

    Args:
        ctx: the run's `experiment.RunContext`.
        unit: the `experiment.Unit` (experiment, input size, scaling).
        model: the compiled model of the unit (frozen as the experiment says).
        prefix: start of the log lines.

    Raises:
        ValueError: with ``--feature-cache on`` when the model has no cacheable prefix
            (under ``auto`` the unit falls back to the uncached path and logs why).
    """
    mode = ctx.args.feature_cache
    use, reason = wanted(mode, unit.experiment)
    if not use:
        return None, unused(reason)
    try:
        split = keras_freeze.split_frozen_prefix(model)
    except ValueError as e:
        if mode == "on":
            raise
        reason = f"auto: split_frozen_prefix refused ({e})"
        log(f"{prefix} feature cache not used: {reason}")
        return None, unused(reason)
    log(f"{prefix} feature cache ({reason}): prefix cut at {', '.join(split.cut)}")
    usable = usable_indices(ctx.dataset)
    cache = _build(ctx, unit, split, usable, prefix)
    info = {
        "used": True,
        "reason": reason,
        "dtype": cache.dtype,
        "bytes": int(cache.nbytes),
        "build_s": round(float(cache.build_seconds), 2),
        "reused": bool(cache.reused),
        "cut": list(split.cut),
    }
    return Features(split, cache, len(ctx.class_names), usable), info


class Features:
    """A unit's split and cache, and the datasets that feed its suffix.

    Args:
        split: the `keras_freeze.FrozenPrefixSplit` of the unit's model.
        cache: the `keras_freeze.FeatureCache` of the usable images of the data set.
        num_classes: one-hot depth of the labels.
        usable: the data-set indices of the cache's rows, in order (`usable_indices`).
    """

    def __init__(self, split, cache, num_classes, usable):
        self.split = split
        self.cache = cache
        self.num_classes = int(num_classes)
        self.usable = np.asarray(usable, dtype=np.int64)

    def rows(self, indices):
        """Cache rows of data-set ``indices`` (each must be a usable image)."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = np.searchsorted(self.usable, indices)
        if np.any(rows >= len(self.usable)) or np.any(
            self.usable[rows.clip(0, len(self.usable) - 1)] != indices
        ):
            raise ValueError(f"Expected indices of cached images. Received: {indices[:5]}...")
        return rows

    def one_hot(self, labels):
        """Float32 one-hot rows of ``labels`` (as `data.ImageSequence` yields them)."""
        return np.eye(self.num_classes, dtype="float32")[np.asarray(labels, dtype=int)]

    def train(self, indices, labels, *, batch_size, seed):
        """The training data: `CachedTrainSequence` in the ImageSequence's order."""
        y = self.one_hot(labels)
        return CachedTrainSequence(
            self.cache, self.rows(indices), y, batch_size=batch_size, seed=seed
        )

    def evaluation(self, indices, labels, *, batch_size):
        """Validation or test data, in index order: ``cache.dataset`` with one-hot labels."""
        rows = self.rows(indices)
        y = np.zeros((len(self.cache), self.num_classes), dtype="float32")
        y[rows] = self.one_hot(labels)
        return self.cache.dataset(rows, y=y, batch_size=batch_size, shuffle=False)

    def predict(self, indices, batch_size):
        """Probabilities of the suffix on the cached features of ``indices`` (inference mode)."""
        ds = self.cache.dataset(self.rows(indices), y=None, batch_size=batch_size, shuffle=False)
        suffix = self.split.suffix
        probs = [np.asarray(suffix.predict_on_batch(ds[b][0])) for b in range(len(ds))]
        return np.concatenate(probs, axis=0)


class CachedTrainSequence(keras.utils.PyDataset):
    """Cached features and one-hot labels of training images, in ImageSequence's order.

    Epoch ``e`` visits the positions ``default_rng([seed, e]).permutation(n)`` of
    ``indices``, as `data.ImageSequence(shuffle=True, seed=seed)` does, so that with the same
    seed (and ``fit(shuffle=False)``, as the example trains) the cached run sees the same batches
    as the uncached one.

    Args:
        cache: a `keras_freeze.FeatureCache` of the whole data set.
        indices: cache rows of the training images.
        y: one-hot labels of those images, in ``indices`` order.
        batch_size: images per batch.
        seed: shuffle seed (the ImageSequence's).
    """

    def __init__(self, cache, indices, y, *, batch_size, seed):
        super().__init__()  # no Keras workers: they would reorder batches (`data.ImageSequence`)
        self.arrays = cache.arrays
        self.dtypes = cache.input_dtypes
        self.indices = np.asarray(indices, dtype=np.int64)
        self.y = np.asarray(y, dtype="float32")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.order = self._make_order()

    def _make_order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, index):
        pos = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rows = self.indices[pos]
        x = [np.asarray(a[rows], dtype=d) for a, d in zip(self.arrays, self.dtypes, strict=True)]
        return (x[0] if len(x) == 1 else tuple(x)), self.y[pos]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._make_order()
