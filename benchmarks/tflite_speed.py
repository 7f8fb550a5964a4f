"""CPU inference speed of the exported TFLite models (float32, int8) against Keras ``predict``.

The model is the example's Mobile Freeze-Net at 224 px: MobileNetV2 with the paper's head
(GlobalMaxPooling2D, Dense(4, softmax)), its backbone weights from
``keras_freeze.mobilenet_v2(weights="torchvision")`` when the offline checkpoint package is
installed, else ``weights=None`` (said in the output). The head is fitted in closed form (ridge
regression of the classes on the pooled features of the calibration images), a quick stand-in for
training: a random head on features that vary little between images would put most images near a
tie between two classes, and int8's argmax agreement would measure that, not the file. The
images are generated (``examples/covid_cxr/synthetic.py``, SYNTHETIC data), decoded and scaled as
in training (``keras_freeze.ImageDataset`` with the weights' preprocessing).

The TFLite files are written by the example's exporter (``export.convert``: Keras'
``model.export(format="litert")``; int8 calibrated on ``--calibration`` other generated images,
another seed) and run by ``export.tflite_predict`` (LiteRT/TFLite interpreter, ``--threads``
threads). Every model sees the same images in the same batches, in one run, after one warm-up
pass; the best of ``--repeats`` passes is kept. Prints images/s and the ratio to the Keras
baseline of this run.

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/tflite_speed.py --n-images 64

This is a benchmark, never run as a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "covid_cxr"))

import export  # noqa: E402
import kaggle  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import synthetic  # noqa: E402

import keras_freeze  # noqa: E402


def build_model(size: int):
    """``(model, weights, note)``: MobileNetV2 + the paper's head."""
    weights, note = "torchvision", "torchvision ImageNet weights (offline package)"
    try:
        base = keras_freeze.mobilenet_v2(weights=weights, input_shape=(size, size, 3))
    except FileNotFoundError:
        weights, note = None, "weights=None: the torchvision checkpoint package is not installed"
        base = keras_freeze.mobilenet_v2(weights=None, input_shape=(size, size, 3))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(base(inputs))
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs), weights, note


def fit_head(model, x, labels):
    """Sets the head to a ridge regression of one-hot ``labels`` on the pooled features."""
    f = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("gmp").output)(x))
    mean = f.mean(0)
    gram = (f - mean).T @ (f - mean)
    ridge = 0.1 * np.trace(gram) / len(gram) * np.eye(len(gram))
    w = np.linalg.solve(gram + ridge, (f - mean).T @ (6 * np.eye(4)[labels] - 1.5))
    model.get_layer("head").set_weights([w.astype("float32"), (-mean @ w).astype("float32")])


def images(root, n: int, size: int, weights, seed: int):
    """``n`` generated images, decoded and scaled as the example trains on them, and labels."""
    synthetic.generate_synthetic_cxr(root, n_total=n, image_size=size, seed=seed, progress=False)
    index = kaggle.list_images(root)
    dataset = keras_freeze.ImageDataset(
        list(index.paths),
        index.labels,
        image_size=size,
        batch_size=32,
        preprocess=lambda x: keras_freeze.preprocess_mobilenet_v2(x, weights=weights),
    )
    x = np.concatenate([dataset[i][0] for i in range(len(dataset))]).astype("float32")
    return x, np.asarray(index.labels)


def best_rate(fn, n: int, repeats: int):
    """``(images/s of the best of repeats passes, outputs)``, after one warm-up pass."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--calibration", type=int, default=64, help="int8 calibration images")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    model, weights, note = build_model(args.image_size)
    tmp = Path(tempfile.mkdtemp(prefix="tflite_speed_"))
    x, _ = images(tmp / "test", args.n_images, args.image_size, weights, seed=1)
    calibration, labels = images(tmp / "calib", args.calibration, args.image_size, weights, seed=2)
    fit_head(model, calibration, labels)
    print(f"MobileNetV2 {args.image_size} px + GMP + Dense(4): {note}")
    print(f"{len(x)} SYNTHETIC images, batch {args.batch_size}, {os.cpu_count()} CPU(s)")
    rate, reference = best_rate(
        lambda: model.predict(x, batch_size=args.batch_size, verbose=0), len(x), args.repeats
    )
    print(f"{'model':<16} {'MB':>6} {'images/s':>9} {'x Keras':>8} {'max |dp|':>9} {'argmax':>7}")
    print(f"{'Keras predict':<16} {'':>6} {rate:9.1f} {1:8.2f} {'':>9} {'':>7}")
    for quantize in ("none", "int8"):
        out = tmp / f"model_{quantize}.tflite"
        settings = export.ExportSettings(Path("bench.keras"), "tflite", quantize, out)
        start = time.perf_counter()
        export.convert(model, settings, calibration)
        convert_s = time.perf_counter() - start
        lite_rate, probs = best_rate(
            lambda out=out: export.tflite_predict(out, x, args.batch_size, args.threads),
            len(x),
            args.repeats,
        )
        a = export.agreement(reference, probs)
        name = f"TFLite {'float32' if quantize == 'none' else quantize}"
        print(
            f"{name:<16} {out.stat().st_size / 1e6:6.2f} {lite_rate:9.1f} {lite_rate / rate:8.2f} "
            f"{a['max_abs_dp']:9.2e} {100 * a['same_argmax']:6.1f}% ({convert_s:.0f} s)"
        )


if __name__ == "__main__":
    main()
