"""Benchmark: fine-tuning recipes on the synthetic CXR set (class weights x learning rates).

Compares, on the example's synthetic 4-class chest-X-ray-like images (imbalanced in the
paper's class ratios), the loss weights `alpha` of `AttentionWeightedCCE`:

- the paper's published attention weights (`PAPER_ALPHA`),
- `class_weights(y, "balanced")` (scikit-learn's balanced weights),
- `class_weights(y, "effective_number", beta=0.999)` (Cui et al. 2019),

each with one learning rate for the whole network (Adam) and with discriminative learning
rates (`LayerwiseOptimizer(Adam, layerwise_decay(model, 0.5))`: the head at the base rate,
each layer below it at half the rate of the one above).

Protocol: a small CNN is pretrained on a balanced synthetic source set (another seed), then
for every recipe and seed it is fine-tuned from those weights (a fresh head) on the
imbalanced target training set and scored on a held-out stratified test set with
`keras_freeze.classification_metrics`. Prints mean and standard deviation over seeds of the
macro F1, the balanced accuracy (macro recall) and the recall of the rarest class (Viral
Pneumonia), and each recipe's macro F1 relative to the paper's recipe.

THE IMAGES ARE SYNTHETIC (see examples/covid_cxr/synthetic.py): the figures compare recipes on
this toy task only and say nothing about real radiographs.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/recipes.py [--n-total 1200] [--image-size 48]
        [--epochs 6] [--seeds 3]
        [--pretrain-epochs 6] [--source-per-class 250]

Not a test. Takes about 4.5 minutes on 2 CPU cores with the defaults (TensorFlow).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np

from keras_freeze import PAPER_ALPHA
from keras_freeze import AttentionWeightedCCE
from keras_freeze import LayerwiseOptimizer
from keras_freeze import class_weights
from keras_freeze import classification_metrics
from keras_freeze import layerwise_decay

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "covid_cxr"))
import synthetic  # noqa: E402  (the example's generator, imported as the example does)

CLASS_NAMES = list(synthetic.CLASS_NAMES)


def draw_set(counts, image_size, seed):
    """Images (n, s, s, 1) in [0, 1] and integer labels, drawn in memory."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, name in enumerate(CLASS_NAMES):
        for _ in range(counts[name]):
            images.append(synthetic.draw_cxr(name, rng, image_size))
            labels.append(k)
    x = np.stack(images)[..., None].astype("float32") / 255.0
    return (x - x.mean()) / x.std(), np.array(labels)  # standardised pixels


def stratified_split(y, test_share, seed):
    rng = np.random.default_rng(seed)
    test = []
    for k in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == k))
        test.extend(members[: max(1, round(test_share * len(members)))])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def build_backbone(image_size):
    inputs = keras.Input((image_size, image_size, 1))
    x = inputs
    for i, filters in enumerate((16, 32, 64, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)  # as the paper's head
    return keras.Model(inputs, x, name="backbone")


def classifier(backbone, seed):
    keras.utils.set_random_seed(seed)  # the same fresh head for every recipe of a seed
    head = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="head")
    return keras.Sequential([backbone, head])


def pretrain(x, y, image_size, epochs):
    keras.utils.set_random_seed(1234)
    backbone = build_backbone(image_size)
    model = keras.Sequential([backbone, keras.layers.Dense(len(CLASS_NAMES), activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return backbone.get_weights()


def run_recipe(alpha, discriminative, data, pretrained, args, seed):
    x_train, y_train, x_test, y_test = data
    backbone = build_backbone(args.image_size)
    backbone.set_weights(pretrained)
    model = classifier(backbone, seed)
    optimizer = keras.optimizers.Adam(1e-3)
    if discriminative:
        optimizer = LayerwiseOptimizer(optimizer, layerwise_decay(model, 0.5))
    model.compile(optimizer=optimizer, loss=AttentionWeightedCCE(alpha=alpha))
    keras.utils.set_random_seed(seed)
    y_one_hot = keras.utils.to_categorical(y_train, len(CLASS_NAMES))
    model.fit(x_train, y_one_hot, epochs=args.epochs, batch_size=32, verbose=0)
    report = classification_metrics(
        y_test, model.predict(x_test, verbose=0), class_names=CLASS_NAMES
    )
    return report["macro_f1"], report["macro_recall"], report["recall_Viral_Pneumonia"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-total", type=int, default=1200)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--source-per-class", type=int, default=250)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    source = draw_set({name: args.source_per_class for name in CLASS_NAMES}, args.image_size, 1)
    pretrained = pretrain(*source, args.image_size, args.pretrain_epochs)
    x, y = draw_set(synthetic.class_counts(args.n_total), args.image_size, seed=0)
    train, test = stratified_split(y, 0.3, seed=0)
    data = (x[train], y[train], x[test], y[test])

    alphas = {
        "paper attention": PAPER_ALPHA,
        "balanced": class_weights(y[train], "balanced"),
        "effective number (beta=0.999)": class_weights(y[train], "effective_number", beta=0.999),
    }
    print(
        f"backend {keras.backend.backend()}, train counts {np.bincount(y[train]).tolist()}, "
        f"test counts {np.bincount(y[test]).tolist()}, {args.epochs} epochs, {args.seeds} seeds"
    )
    for name, alpha in alphas.items():
        print(f"  alpha {name}: {[round(a, 5) for a in alpha]}")
    rows = []
    for name, alpha in alphas.items():
        for discriminative in (False, True):
            scores = [
                run_recipe(alpha, discriminative, data, pretrained, args, seed)
                for seed in range(args.seeds)
            ]
            rows.append((name, discriminative, scores))
    baseline = statistics.mean(s[0] for s in rows[0][2])
    print(
        f"{'alpha':32s} {'lr':14s} {'macro F1':>15s} {'bal. acc.':>15s} "
        f"{'recall VP':>15s} {'F1 / paper':>10s}"
    )
    for name, discriminative, scores in rows:
        cells = []
        for column in zip(*scores, strict=True):
            sd = statistics.stdev(column) if len(column) > 1 else 0.0
            cells.append(f"{statistics.mean(column):.3f} +- {sd:.3f}")
        ratio = statistics.mean(s[0] for s in scores) / baseline
        lr = "layer decay 0.5" if discriminative else "uniform"
        print(f"{name:32s} {lr:14s} {cells[0]:>15s} {cells[1]:>15s} {cells[2]:>15s} {ratio:10.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
