"""Training throughput with and without the frozen-prefix feature cache (issue 13).

The paper's ordered-freeze model (Mobile Freeze-Net): MobileNetV2 at 224 px (``weights=None``:
throughput does not depend on the weights' values) with ``freeze_fraction(base, 0.5)``, then
``GlobalMaxPooling2D`` and ``Dense(4, softmax)``, Adam 1e-4, batch 8. In the same run, from the same
initial weights, on the same images:

* uncached: ``model.fit`` on the images (the frozen prefix recomputed at every step);
* cached: ``split_frozen_prefix(model)``, ``cache_features`` once (batch 64), then
  ``split.suffix.fit`` on the cached features.

The two variants train in turn, one epoch each, so both see the same load on a shared machine (they
share the layer objects, which does not change the work per step). Training images/s are measured
per epoch; the median from epoch 2 on is reported (epoch 1 includes tracing).
Images are synthetic random arrays held in memory, so this measures compute only (no decoding: a
real pipeline that decodes every epoch gains more, as the cache also skips decoding). It also
prints the cache build time and memory, and projects the time saved over the paper's protocol
(10 folds x 2 ordered-freeze experiments, 21,165 images, one cache for all).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/feature_cache.py --images 256 --epochs 3

This is a benchmark, never run as a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402

from keras_freeze._feature_cache import cache_features  # noqa: E402
from keras_freeze._freeze import freeze_fraction  # noqa: E402
from keras_freeze._prefix import split_frozen_prefix  # noqa: E402


def build_model(size: int) -> keras.Model:
    """The paper's Mobile Freeze-Net: MobileNetV2 with base.layers[:77] frozen, GMP, Dense(4)."""
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    freeze_fraction(base, 0.5)
    return keras.Sequential(
        [base, keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(4, activation="softmax")]
    )


class EpochClock(keras.callbacks.Callback):
    """Training images/s of each epoch."""

    def __init__(self, n_images: int):
        super().__init__()
        self.n_images = n_images
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(self.n_images / (time.perf_counter() - self.start))


def steady(rates: list[float]) -> float:
    """Median images/s from epoch 2 on (epoch 1 when there is only one)."""
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256, help="synthetic training images (256)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant; rate from epoch 2")
    ap.add_argument("--image-size", type=int, default=224, help="paper: 224")
    ap.add_argument("--batch-size", type=int, default=8, help="paper: 8")
    ap.add_argument("--cache-batch-size", type=int, default=64, help="prefix batch when caching")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--protocol-images", type=int, default=21165, help="paper: 21,165")
    ap.add_argument("--folds", type=int, default=10, help="paper: 10")
    ap.add_argument("--experiments", type=int, default=2, help="freeze, freeze+attention")
    ap.add_argument("--protocol-epochs", type=int, default=100, help="paper: at most 100")
    args = ap.parse_args(argv)
    for name in ("images", "epochs", "image_size", "batch_size", "cache_batch_size", "folds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run(args):
    """Times both variants, one epoch of each in turn (so both see the same machine load)."""
    rng = np.random.default_rng(0)
    size, n = args.image_size, args.images
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 4, n), 4)
    model = build_model(size)
    split = split_frozen_prefix(model)
    cache = cache_features(split, x, batch_size=args.cache_batch_size, dtype=args.dtype, verbose=0)
    features = cache.dataset(y=y, batch_size=args.batch_size)
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    split.suffix.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    uncached, cached = EpochClock(n), EpochClock(n)
    for _ in range(args.epochs):
        model.fit(
            x,
            y,
            batch_size=args.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[uncached],
        )
        split.suffix.fit(features, epochs=1, shuffle=False, verbose=0, callbacks=[cached])
    return {
        "split": split,
        "cache": cache,
        "uncached": uncached.rates,
        "cached": cached.rates,
        "image_bytes": x.nbytes,
    }


def report(args, r) -> None:
    split, cache = r["split"], r["cache"]
    unc, cac = steady(r["uncached"]), steady(r["cached"])
    prefix_rate = len(cache) / cache.build_seconds
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs; SYNTHETIC random images in memory (compute only, no decoding)"
    )
    print(
        f"model: MobileNetV2 {args.image_size} px (weights=None), freeze_fraction(base, 0.5), "
        f"GMP + Dense(4); batch {args.batch_size}; {args.images} images x {args.epochs} epochs"
    )
    print(
        f"cut: {', '.join(split.cut)} {split.cut_shapes} = {split.values_per_sample:,} "
        f"values/image; prefix {len(split.prefix_layers)} layers, suffix "
        f"{len(split.suffix_layers)} layers"
    )
    print(
        f"cache build: {cache.build_seconds:.1f} s for {len(cache)} images "
        f"({prefix_rate:.1f} images/s, batch {args.cache_batch_size}); memory "
        f"{cache.nbytes / 1e6:.1f} MB ({args.dtype}) vs {r['image_bytes'] / 1e6:.1f} MB of "
        "float32 images"
    )
    print(
        "training images/s per epoch: uncached "
        + ", ".join(f"{v:.1f}" for v in r["uncached"])
        + "; cached "
        + ", ".join(f"{v:.1f}" for v in r["cached"])
    )
    print(
        f"training images/s from epoch 2 (median): uncached {unc:.1f}, cached {cac:.1f}, "
        f"ratio {cac / unc:.2f}x"
    )
    project(args, split, unc, cac, prefix_rate)


def project(args, split, uncached_rate, cached_rate, prefix_rate) -> None:
    """Projects the saving over the paper's protocol: one cache, every fold and experiment."""
    train = args.protocol_images * (args.folds - 1) / args.folds
    runs = args.folds * args.experiments
    per_epoch = runs * train * (1 / uncached_rate - 1 / cached_rate)
    build = args.protocol_images / prefix_rate
    cache_bytes = args.protocol_images * split.bytes_per_sample(args.dtype)
    uncached_h = runs * train / uncached_rate / 3600
    print(
        f"projection, paper's protocol ({args.protocol_images:,} images, {args.folds} folds x "
        f"{args.experiments} experiments = {runs} runs, {train:,.0f} training images per fold):"
    )
    print(
        f"  one cache of {cache_bytes / 1e9:.2f} GB ({args.dtype}), built once in "
        f"{build / 60:.1f} min; one epoch of all {runs} runs takes {uncached_h:.2f} h uncached, "
        f"{uncached_h - per_epoch / 3600:.2f} h cached: {per_epoch / 3600:.2f} h saved per epoch"
    )
    total = (args.protocol_epochs * per_epoch - build) / 3600
    print(
        f"  over {args.protocol_epochs} epochs per run (the paper's cap; EarlyStopping may stop "
        f"sooner): {total:.1f} h saved, net of the build"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    report(args, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
