"""Pictures of what a model looks at: Grad-CAM galleries (``keras_freeze.grad_cam``).

`write_galleries` draws, for a saved model and some labelled (or unlabelled) images, the
Grad-CAM heat map over the last convolutional block on each image: up to ``per_class`` images
of each true class, and a second gallery of the most confident mistakes. Written by a run with
``--save-models`` (the unit's test fold) and by ``reproduce.py predict --explain``; the files
are ``gradcam_<experiment>_fold<k>[_<tag>].png`` and ``..._mistakes.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import protocol

import keras_freeze

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# Images per class, and mistakes, in the galleries.
PER_CLASS = 3
MISTAKES = 6


def _rows(labels, probs, per_class):
    """Positions shown: up to ``per_class`` images of each true (else predicted) class."""
    key = [int(np.argmax(p)) if y is None else y for y, p in zip(labels, probs, strict=True)]
    shown = []
    for c in sorted(set(key)):
        shown += [i for i, k in enumerate(key) if k == c][:per_class]
    return shown


def _mistakes(labels, probs, n):
    """Positions of the ``n`` most confident wrong predictions (labelled images only)."""
    wrong = [
        i
        for i, (y, p) in enumerate(zip(labels, probs, strict=True))
        if y is not None and int(np.argmax(p)) != y
    ]
    return sorted(wrong, key=lambda i: -float(np.max(probs[i])))[:n]


def _gallery(path, model, info, items, title):
    """One PNG: each item's image in gray with its Grad-CAM map over it."""
    paths, labels, probs = items
    images = keras_freeze.ImageDataset(  # decoded and scaled as in training
        paths,
        np.zeros(len(paths), dtype=int),
        num_classes=len(info.class_names),
        image_size=info.image_size,
        batch_size=len(paths),
        preprocess=info.preprocess,
    )
    size = (info.image_size, info.image_size)
    maps = keras_freeze.upsample_heatmap(keras_freeze.grad_cam(model, images[0][0]), size)
    cols = min(len(paths), 6)
    rows = -(-len(paths) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, p, y, prob, heat in zip(axes.ravel(), paths, labels, probs, maps, strict=False):
        ax.imshow(keras_freeze.decode_image(p, size, mode="gray"), cmap="gray")
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        pred = info.class_names[int(np.argmax(prob))]
        true = "" if y is None else f"true {info.class_names[y]}\n"
        ax.set_title(f"{true}pred {pred} ({np.max(prob):.2f})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_galleries(out, model, info, paths, labels, probs, *, tag="", synthetic=False):
    """Writes the Grad-CAM galleries of ``paths``; returns the files written.

    Args:
        out: the folder of the PNGs.
        model: the saved model (`saved.load`).
        info: its `saved.ModelInfo`.
        paths: image files; ``labels``: their true class index or ``None``; ``probs``: the
            model's probabilities for them.
        tag: appended to the file names (``_<tag>``).
        synthetic: whether the images are generated (said in the titles).
    """
    stem = f"gradcam_{protocol.slug(info.experiment)}_fold{info.fold}" + (f"_{tag}" if tag else "")
    note = " [SYNTHETIC DATA]" if synthetic else ""
    probs = np.asarray(probs)
    written = []
    for name, picked, what in (
        (stem, _rows(labels, probs, PER_CLASS), f"{PER_CLASS} images per class"),
        (f"{stem}_mistakes", _mistakes(labels, probs, MISTAKES), "most confident mistakes"),
    ):
        if picked:
            items = ([paths[i] for i in picked], [labels[i] for i in picked], probs[picked])
            title = f"Grad-CAM, {info.experiment} fold {info.fold}: {what}{note}"
            written.append(_gallery(Path(out) / f"{name}.png", model, info, items, title))
    return written
