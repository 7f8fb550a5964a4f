"""Grad-CAM galleries (``keras_freeze.grad_cam``) of a saved model, written by a run with
``--save-models`` (the unit's test fold) and by ``reproduce.py predict --explain``:
``gradcam_<experiment>_fold<k>[_<tag>].png`` (up to `PER_CLASS` images of each true class, else
predicted class) and ``..._mistakes.png`` (the `MISTAKES` most confident wrong predictions).
"""

import os
from pathlib import Path

import matplotlib
import numpy as np
import protocol

import keras_freeze

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

PER_CLASS = 3
MISTAKES = 6


def _gallery(path, model, info, items, title):
    """One PNG: each item's image in gray with its Grad-CAM map over it."""
    paths, labels, probs = items
    size = (info.image_size, info.image_size)
    x = info.dataset(paths, batch_size=len(paths))[0][0]
    maps = keras_freeze.upsample_heatmap(keras_freeze.grad_cam(model, x), size)
    cols = min(len(paths), 6)
    rows = -(-len(paths) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, p, y, prob, heat in zip(axes.ravel(), paths, labels, probs, maps, strict=False):
        ax.imshow(keras_freeze.decode_image(p, size, mode="gray"), cmap="gray")
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        true = "" if y is None else f"true {info.class_names[y]}\n"
        pred = info.class_names[int(np.argmax(prob))]
        ax.set_title(f"{true}pred {pred} ({np.max(prob):.2f})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_galleries(out, model, info, paths, labels, probs, *, tag="", synthetic=False):
    """Writes the galleries of ``paths`` (``labels``: true class index or None, ``probs``: the
    model's) into the folder ``out``, ``_<tag>`` after the names; returns the files written."""
    probs = np.asarray(probs)
    predicted = [int(np.argmax(p)) for p in probs]
    key = [p if y is None else y for y, p in zip(labels, predicted, strict=True)]
    by_class = {}  # true class, else predicted -> positions
    for i, k in enumerate(key):
        by_class.setdefault(k, []).append(i)
    shown = [i for c in sorted(by_class) for i in by_class[c][:PER_CLASS]]
    wrong = [i for i, y in enumerate(labels) if y is not None and y != predicted[i]]
    wrong = sorted(wrong, key=lambda i: -float(np.max(probs[i])))[:MISTAKES]
    stem = f"gradcam_{protocol.slug(info.experiment)}_fold{info.fold}" + (f"_{tag}" if tag else "")
    note = " [SYNTHETIC DATA]" if synthetic else ""
    written = []
    for name, picked, what in (
        (stem, shown, f"{PER_CLASS} images per class"),
        (f"{stem}_mistakes", wrong, "most confident mistakes"),
    ):
        if picked:
            items = ([paths[i] for i in picked], [labels[i] for i in picked], probs[picked])
            title = f"Grad-CAM, {info.experiment} fold {info.fold}: {what}{note}"
            written.append(_gallery(Path(out) / f"{name}.png", model, info, items, title))
    return written
