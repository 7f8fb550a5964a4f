"""Training throughput of the example's input pipeline vs the authors' ImageDataGenerator.

Compares, on the same model and the same (generated, synthetic) images, in the same run:

* baseline: the notebooks' ``ImageDataGenerator(rescale=1/255).flow_from_directory(...)`` (Keras 3
  keeps it as ``keras.src.legacy.preprocessing.image.ImageDataGenerator``), as the notebooks used it
  (`model.fit(generator)`, default ``workers=1``);
* ours: the library's `keras_freeze.ImageDataset`, which the example trains on (thread-pool
  decoding, prefetching workers), without and with its in-memory cache.

The images are listed with the example's ``kaggle.list_images`` (``examples/covid_cxr``).

It prints training images/s for each and the ratios to the baseline. A pipeline-only pass (iterating
batches, no model) is printed too, to show how much of an epoch is input work.

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/input_pipeline.py --model mobilenetv2
    KERAS_BACKEND=torch python benchmarks/input_pipeline.py --model smallcnn

This is a benchmark, never run as a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "covid_cxr"))

import kaggle  # noqa: E402
import keras  # noqa: E402
import protocol  # noqa: E402
import synthetic  # noqa: E402

from keras_freeze import ImageDataset  # noqa: E402


def build_model(kind: str, size: int) -> keras.Model:
    """MobileNetV2 (weights=None) + GlobalMaxPooling2D + Dense(4), or a small CNN."""
    if kind == "mobilenetv2":
        base = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(size, size, 3)
        )
        x = keras.layers.GlobalMaxPooling2D()(base.output)
        out = keras.layers.Dense(4, activation="softmax")(x)
        model = keras.Model(base.input, out)
    elif kind == "smallcnn":
        layers = [keras.Input((size, size, 3))]
        for f in (16, 32, 64):
            layers += [keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")]
        layers += [keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(4, activation="softmax")]
        model = keras.Sequential(layers)
    else:
        raise ValueError(f"Expected model in ('mobilenetv2', 'smallcnn'). Received: {kind!r}")
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    return model


def timed_fit(model, init_weights, dataset, epochs: int, n_images: int) -> list[float]:
    """Trains `epochs` epochs from the same initial weights; returns images/s per epoch."""
    model.set_weights(init_weights)
    rates = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(n_images / (time.perf_counter() - self.t))

    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[Clock()], shuffle=False)
    return rates


def iterate(dataset, n_images: int) -> float:
    """Pipeline only: images/s of producing every batch once, no model."""
    t = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    if hasattr(dataset, "on_epoch_end"):
        dataset.on_epoch_end()
    return n_images / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2", choices=["mobilenetv2", "smallcnn"])
    ap.add_argument("--n-images", type=int, default=160, help="generated images (default 160)")
    ap.add_argument("--source-size", type=int, default=299, help="PNG side (Kaggle: 299)")
    ap.add_argument("--image-size", type=int, default=224, help="model input side (paper: 224)")
    ap.add_argument("--batch-size", type=int, default=8, help="paper: 8")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median)")
    ap.add_argument("--workers", type=int, default=2, help="ImageDataset prefetch threads")
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument("--data-root", default=None, help="where to generate (default: a temp dir)")
    args = ap.parse_args(argv)

    root = args.data_root or tempfile.mkdtemp(prefix="kf_bench_")
    ds_root = synthetic.generate_synthetic_cxr(
        root, n_total=args.n_images, image_size=args.source_size, progress=False
    )
    idx = kaggle.list_images(ds_root)
    n, s, b = len(idx), args.image_size, args.batch_size
    print(
        f"backend={keras.backend.backend()} model={args.model} images={n} (SYNTHETIC, generated "
        f"{args.source_size}x{args.source_size} PNG) input={s} batch={b} epochs={args.epochs} "
        f"repeats={args.repeats} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}"
    )

    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    def baseline():
        return ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
            str(ds_root),
            target_size=(s, s),
            batch_size=b,
            class_mode="categorical",
            classes=list(protocol.CLASS_NAMES),
            shuffle=True,
            seed=0,
        )

    def ours(cache):
        return ImageDataset(
            idx.paths,
            idx.labels,
            image_size=s,
            batch_size=b,
            shuffle=True,
            seed=0,
            workers=args.workers,
            decode_threads=args.decode_threads,
            cache=cache,
        )

    # pipeline only
    it_base = iterate(baseline(), n)
    it_ours = iterate(ours(False), n)
    print(
        f"pipeline only (no model): ImageDataGenerator {it_base:8.1f} img/s | "
        f"ImageDataset {it_ours:8.1f} img/s | ratio {it_ours / it_base:.2f}x"
    )

    keras.utils.set_random_seed(0)
    model = build_model(args.model, s)
    init = model.get_weights()
    # warm-up (compilation / tracing for this input signature), excluded from the timings:
    # one short fit through each pipeline kind, so that neither pays for tracing.
    warm = ImageDataset(
        idx.paths[: 2 * b], idx.labels[: 2 * b], image_size=s, batch_size=b, workers=1
    )
    model.fit(warm, epochs=1, verbose=0, shuffle=False)
    warm_base = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        str(ds_root),
        target_size=(s, s),
        batch_size=b,
        class_mode="categorical",
        classes=list(protocol.CLASS_NAMES),
    )
    model.fit(warm_base, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)

    results = {}
    runs = [
        ("ImageDataGenerator.flow_from_directory", baseline),
        ("ImageDataset", lambda: ours(False)),
        ("ImageDataset(cache=True)", lambda: ours(True)),
    ]
    for _ in range(args.repeats):  # interleaved, so that load changes hit every pipeline
        for name, make in runs:
            results.setdefault(name, []).append(timed_fit(model, init, make(), args.epochs, n))
    for name, reps in results.items():
        rates = [float(np.median([r[e] for r in reps])) for e in range(args.epochs)]
        results[name] = rates
        print(
            f"{name:40s} "
            + " ".join(f"epoch{i + 1} {r:7.1f} img/s" for i, r in enumerate(rates))
            + "  (median over repeats)"
        )
    base = np.mean(results["ImageDataGenerator.flow_from_directory"])
    for name, rates in results.items():
        last = rates[-1] / results["ImageDataGenerator.flow_from_directory"][-1]
        print(
            f"ratio vs baseline  {name:40s} mean {np.mean(rates) / base:5.2f}x   "
            f"last epoch {last:5.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
