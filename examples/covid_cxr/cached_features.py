"""``--feature-cache``: train the ordered-freeze experiments on cached frozen-prefix features.

With the first 50% of MobileNetV2 frozen (BatchNorm in inference mode) and no augmentation, the
frozen layers map each image to the same activations in every epoch, fold and experiment.
`prepare` cuts the compiled model with ``keras_freeze.split_frozen_prefix`` and computes those
activations once with ``keras_freeze.cache_features``, memory-mapped under
``<cache dir>/feature_cache/`` (``--cache-dir``, else ``--out``) and keyed by the library's
fingerprint (prefix weights, dtype, file list, preprocessing, image size): every fold and both
ordered-freeze experiments reuse it when the frozen weights are equal (pretrained weights).
The suffix then trains on the cached features; it shares the model's layers, so the model is
trained. The cache's training batches follow ``keras_freeze.shuffle_order``, as the uncached
`keras_freeze.ImageDataset` with the same seed does, so a float32 cache reproduces the uncached
run. Whether a unit uses the cache is decided by `Settings.feature_cache_for`.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from console import log

import keras_freeze

# Images per prefix call when the cache is built.
BUILD_BATCH = 64


def unused(reason: str) -> dict:
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


def _key(ctx, unit, usable):
    """What identifies the cached images: files (with size and time), scaling, image size."""
    files = []
    for i in usable:
        p = ctx.dataset.paths[i]
        st = os.stat(p)
        files.append([str(p), st.st_size, st.st_mtime_ns])
    return {
        "files": files,
        "preprocessing": [ctx.settings.preprocessing, str(unit.weights), unit.preprocess_text],
        "image_size": unit.image_size,
        "decoder": "keras_freeze.ImageDataset (Pillow RGB, bilinear)",
    }


def _build(ctx, unit, split, usable, prefix):
    """Runs ``keras_freeze.cache_features`` over the ``usable`` images, in index order."""
    settings = ctx.settings
    images = ctx.images(
        usable, image_size=unit.image_size, preprocess=unit.preprocess, batch_size=BUILD_BATCH
    )
    folder = settings.out if settings.cache_dir is None else settings.cache_dir.expanduser()
    cache = keras_freeze.cache_features(
        split,
        images,
        batch_size=BUILD_BATCH,
        dtype=settings.feature_cache_dtype,
        path=folder / "feature_cache",
        key=_key(ctx, unit, usable),
        verbose=1 if sys.stdout.isatty() else 0,  # a progress bar on a terminal
    )
    if len(cache) != len(usable) or images.failed:
        raise RuntimeError(
            f"The feature cache holds {len(cache)} rows for {len(usable)} images "
            f"({len(images.failed)} unreadable). Delete {cache.path} and rerun with "
            "--feature-cache off."
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
    use, reason = ctx.settings.feature_cache_for(unit.experiment)
    if not use:
        return None, unused(reason)
    try:
        split = keras_freeze.split_frozen_prefix(model)
    except ValueError as e:
        if ctx.settings.feature_cache == "on":
            raise
        reason = f"auto: split_frozen_prefix refused ({e})"
        log(f"{prefix} feature cache not used: {reason}")
        return None, unused(reason)
    log(f"{prefix} feature cache ({reason}): prefix cut at {', '.join(split.cut)}")
    # The data set's images in its folds (corrupt files left out), in index order.
    usable = np.sort(np.concatenate([np.asarray(f, dtype=np.int64) for f in ctx.dataset.folds]))
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
    """A unit's split and cache, and the data that feed its suffix.

    Args:
        split: the `keras_freeze.FrozenPrefixSplit` of the unit's model.
        cache: the `keras_freeze.FeatureCache` of the usable images of the data set.
        num_classes: one-hot depth of the labels.
        usable: the data-set indices of the cache's rows, in order.
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

    def _dataset(self, indices, labels, batch_size, seed=None):
        """``cache.dataset`` over ``indices`` with one-hot float32 labels; shuffled per epoch
        (`keras_freeze.shuffle_order`) when a seed is given."""
        rows = self.rows(indices)
        y = np.zeros((len(self.cache), self.num_classes), dtype="float32")
        y[rows] = np.eye(self.num_classes, dtype="float32")[np.asarray(labels, dtype=int)]
        return self.cache.dataset(
            rows, y=y, batch_size=batch_size, shuffle=seed is not None, seed=seed
        )

    def data(self, splits, labels, settings, fold):
        """``({"train", "validation", "test"} datasets, the suffix to fit)`` of one fold; the
        training set is shuffled with the uncached training images' seed."""
        names = ("train", "validation", "test")
        data = {
            name: self._dataset(
                idx,
                labels[idx],
                settings.batch_size,
                seed=settings.seed + fold if name == "train" else None,
            )
            for name, idx in zip(names, splits, strict=True)
        }
        return data, self.split.suffix

    def predict(self, indices, batch_size):
        """Probabilities of the suffix on the cached features of ``indices`` (inference mode)."""
        ds = self.cache.dataset(self.rows(indices), y=None, batch_size=batch_size, shuffle=False)
        suffix = self.split.suffix
        probs = [np.asarray(suffix.predict_on_batch(ds[b][0])) for b in range(len(ds))]
        return np.concatenate(probs, axis=0)
