"""``--feature-cache``: frozen-prefix features cached once (docs/covid_cxr.md, feature cache)."""

from __future__ import annotations

import os
import sys

import numpy as np
from console import log

import keras_freeze

BUILD_BATCH = 64  # images per prefix call when the cache is built


def unused(reason: str) -> dict:
    """The record's ``feature_cache`` of a unit trained without the cache."""
    return dict(used=False, reason=reason, dtype=None, bytes=0, build_s=0.0, reused=False, cut=[])


def prepare(ctx, unit, model, prefix):
    """The unit's `Features` (or ``None``) and the record's ``feature_cache`` dict.

    Raises `ValueError` with ``--feature-cache on`` when the compiled ``model`` has no cacheable
    prefix (under ``auto`` the unit falls back to the uncached path and logs why). The cache is
    keyed by the files (with size and time), the scaling and the image size.
    """
    settings = ctx.settings
    use, reason = settings.feature_cache_for(unit.experiment)
    if not use:
        return None, unused(reason)
    try:
        split = keras_freeze.split_frozen_prefix(model)
    except ValueError as e:
        if settings.feature_cache == "on":
            raise
        reason = f"auto: split_frozen_prefix refused ({e})"
        log(f"{prefix} feature cache not used: {reason}")
        return None, unused(reason)
    log(f"{prefix} feature cache ({reason}): prefix cut at {', '.join(split.cut)}")
    # The data set's images in its folds (corrupt files left out), in index order.
    usable = np.sort(np.concatenate([np.asarray(f, dtype=np.int64) for f in ctx.dataset.folds]))
    images = ctx.images(
        usable, image_size=unit.image_size, preprocess=unit.preprocess, batch_size=BUILD_BATCH
    )
    folder = settings.out if settings.cache_dir is None else settings.cache_dir.expanduser()
    paths = [ctx.dataset.paths[i] for i in usable]
    key = {
        "files": [[str(p), (st := os.stat(p)).st_size, st.st_mtime_ns] for p in paths],
        "preprocessing": [settings.preprocessing, str(unit.weights), unit.preprocess_text],
        "image_size": unit.image_size,
        "decoder": "keras_freeze.ImageDataset (Pillow RGB, bilinear)",
    }
    cache = keras_freeze.cache_features(
        split,
        images,
        batch_size=BUILD_BATCH,
        dtype=settings.feature_cache_dtype,
        path=folder / "feature_cache",
        key=key,
        verbose=1 if sys.stdout.isatty() else 0,  # a progress bar on a terminal
    )
    if len(cache) != len(usable) or images.failed:
        raise RuntimeError(
            f"The feature cache holds {len(cache)} rows for {len(usable)} images "
            f"({len(images.failed)} unreadable). Delete {cache.path} and rerun with "
            "--feature-cache off."
        )
    log(f"{prefix} {cache.summary()}")
    info = dict(unused(reason), used=True, dtype=cache.dtype, bytes=int(cache.nbytes))
    info.update(build_s=round(float(cache.build_seconds), 2), reused=bool(cache.reused))
    info["cut"] = list(split.cut)
    return Features(split, cache, len(ctx.class_names), usable), info


class Features:
    """A unit's `keras_freeze.FrozenPrefixSplit` and `FeatureCache` (rows: the data-set indices
    ``usable``, in order), and the data that feed its suffix."""

    def __init__(self, split, cache, num_classes, usable):
        self.split = split
        self.cache = cache
        self.num_classes = int(num_classes)
        self.usable = np.asarray(usable, dtype=np.int64)

    def rows(self, indices):
        """Cache rows of data-set ``indices`` (each must be a usable image)."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = np.searchsorted(self.usable, indices)
        found = self.usable[rows.clip(0, len(self.usable) - 1)]
        if np.any(rows >= len(self.usable)) or np.any(found != indices):
            raise ValueError(f"Expected indices of cached images. Received: {indices[:5]}...")
        return rows

    def data(self, splits, labels, settings, fold):
        """``({"train", "validation", "test"} datasets, the suffix to fit)`` of one fold: one-hot
        labels; train shuffled per epoch with the uncached training images' seed."""
        data, seeds = {}, (settings.seed + fold, None, None)
        for name, idx, seed in zip(("train", "validation", "test"), splits, seeds, strict=True):
            labels_idx, rows = labels[idx], self.rows(idx)
            y = np.zeros((len(self.cache), self.num_classes), dtype="float32")
            y[rows] = np.eye(self.num_classes, dtype="float32")[np.asarray(labels_idx, dtype=int)]
            data[name] = self.cache.dataset(
                rows, y=y, batch_size=settings.batch_size, shuffle=seed is not None, seed=seed
            )
        return data, self.split.suffix

    def predict(self, indices, batch_size):
        """Probabilities of the suffix on the cached features of ``indices`` (inference mode)."""
        ds = self.cache.dataset(self.rows(indices), y=None, batch_size=batch_size, shuffle=False)
        suffix = self.split.suffix
        probs = [np.asarray(suffix.predict_on_batch(ds[b][0])) for b in range(len(ds))]
        return np.concatenate(probs, axis=0)
