"""Benchmark: train-step overhead of `AttentionWeightedCCE` vs `CategoricalCrossentropy`.

Two identical small CNNs (same initial weights, Adam 1e-4, batch 8 as in the
paper) are compiled, one with `keras.losses.CategoricalCrossentropy()` and one
with `AttentionWeightedCCE("paper")`. After a warm-up (tracing / compilation),
blocks of train steps of the two are interleaved in ABBA order for several
rounds, so that drift in machine load hits both alike. Prints the median
per-step time of each and the ratio ours / Keras (target: <= 1.03).
Random inputs: generated data, timing only.

Usage:
    KERAS_BACKEND=jax python benchmarks/loss_overhead.py [--rounds 30] [--steps 5] [--calls 200]

Not a test.
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_freeze import AttentionWeightedCCE


def build_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )


def time_block(model, x, y, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - t0) / steps


def time_calls(loss, y, p, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        keras.ops.convert_to_numpy(loss(y, p))
    return (time.perf_counter() - t0) / calls


def interleave(run_a, run_b, rounds):
    """ABBA-interleaved timings of two callables; returns the two lists."""
    a, b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            a.append(run_a())
            b.append(run_b())
        else:
            b.append(run_b())
            a.append(run_a())
    return a, b


def report(title, unit, scale, a, b):
    ratios = [tb / ta for ta, tb in zip(a, b, strict=True)]
    q = statistics.quantiles(ratios, n=4)
    print(title)
    print(
        f"  keras CategoricalCrossentropy   median {statistics.median(a) * scale:9.3f} {unit}, "
        f"min {min(a) * scale:9.3f} {unit}"
    )
    print(
        f"  AttentionWeightedCCE('paper')   median {statistics.median(b) * scale:9.3f} {unit}, "
        f"min {min(b) * scale:9.3f} {unit}"
    )
    print(
        f"  ratio ours/keras: medians {statistics.median(b) / statistics.median(a):.3f}, "
        f"mins {min(b) / min(a):.3f}, paired per round median {statistics.median(ratios):.3f} "
        f"(quartiles {q[0]:.3f} .. {q[2]:.3f})"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5, help="train steps per block")
    parser.add_argument("--calls", type=int, default=200, help="loss calls per block")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 64, 64, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, args.batch)]

    models = {}
    for label, loss in (
        ("keras CategoricalCrossentropy", keras.losses.CategoricalCrossentropy()),
        ("AttentionWeightedCCE('paper')", AttentionWeightedCCE("paper")),
    ):
        model = build_cnn()
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
        for _ in range(3):  # warm-up: trace / compile the train step
            model.train_on_batch(x, y)
        models[label] = model

    keras_model, our_model = models.values()
    a, b = interleave(
        lambda: time_block(keras_model, x, y, args.steps),
        lambda: time_block(our_model, x, y, args.steps),
        args.rounds,
    )
    print(f"backend: {keras.backend.backend()}  keras {keras.__version__}")
    report(
        f"train step ({args.rounds} rounds x {args.steps} steps, batch {args.batch}, 64x64x3 CNN):",
        "ms/step",
        1e3,
        a,
        b,
    )

    # The loss call alone (eager), on a batch of softmax outputs.
    p = keras.ops.softmax(rng.normal(size=(args.batch, 4)).astype("float32"))
    ref_loss, our_loss = keras.losses.CategoricalCrossentropy(), AttentionWeightedCCE("paper")
    time_calls(ref_loss, y, p, 5)  # warm-up
    time_calls(our_loss, y, p, 5)
    a, b = interleave(
        lambda: time_calls(ref_loss, y, p, args.calls),
        lambda: time_calls(our_loss, y, p, args.calls),
        args.rounds,
    )
    report(f"eager loss call ({args.rounds} rounds x {args.calls} calls):", "us/call", 1e6, a, b)


if __name__ == "__main__":
    main()
