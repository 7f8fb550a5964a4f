"""``reproduce.py predict``: classify new chest X-rays with a model saved by ``--save-models``.

Takes image files and folders. A folder of class sub-folders (names among the model's classes; a
test set may lack some) gives each image its true class, and the metrics
(``keras_freeze.classification_metrics``) are printed and written; any other folder is read as
unlabelled images. Decoding and scaling are the training's (`saved.ModelInfo`,
``keras_freeze.ImageDataset``). Unreadable files are skipped, counted and named, never dropped
silently. Writes one CSV row per readable image: ``path``, ``predicted``, ``true`` (class folders
only), then one probability column per class, rounded as the run's records store them, so the
metrics of a fold's test files equal the record's.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import experiment
import explain
import numpy as np
import records
import saved
from console import Parser
from console import fmt
from console import log

import keras_freeze


def build_parser() -> Parser:
    """The parser of ``reproduce.py predict``."""
    p = Parser(
        prog="reproduce.py predict",
        description="Classify images with a model saved by reproduce.py --save-models; with "
        "class folders, also the metrics.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="PATH", help="image files or folders.")
    p.add_argument("--model", type=Path, required=True, metavar="M.keras", help="saved model.")
    p.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="CSV file (default: %(default)s)."
    )
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="default: %(default)s.")
    p.add_argument(
        "--explain",
        action="store_true",
        help="also write Grad-CAM galleries (gradcam_<experiment>_fold<k>_predict*.png) beside "
        "--out: images of each class, and the most confident mistakes.",
    )
    return p


def gather(inputs, class_names) -> tuple[list[str], list[int | None], list]:
    """The image paths of ``inputs``, their true class (``None``: unlabelled), and what was
    skipped while listing.

    Raises:
        ValueError: a path that does not exist, a class folder the model does not know, or no
            image at all.
    """
    paths, labels, skipped = [], [], []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_file():
            paths.append(str(item))
            labels.append(None)
            continue
        if not item.is_dir():
            raise ValueError(f"Expected image files or folders. Received: {str(item)!r} (missing)")
        folders = sorted(d.name for d in item.iterdir() if d.is_dir() and d.name[0] != ".")
        unknown = [f for f in folders if f not in class_names]
        if folders and unknown:
            raise ValueError(
                f"Expected class folders among the model's classes {list(class_names)}. "
                f"Received: {unknown} in {str(item)!r}"
            )
        listed = keras_freeze.list_class_images(item, class_names=folders) if folders else None
        if listed is None:  # a folder of images
            found = sorted(
                str(p) for p in item.iterdir() if p.suffix.lower() in keras_freeze.IMAGE_EXTENSIONS
            )
            paths += found
            labels += [None] * len(found)
            continue
        paths += listed.paths
        labels += [class_names.index(folders[k]) for k in listed.labels.tolist()]
        skipped += listed.skipped
    if not paths:
        raise ValueError(f"Expected images in {[str(i) for i in inputs]}. Received: none")
    return paths, labels, skipped


def predict(model, info: saved.ModelInfo, paths, batch_size: int):
    """Probabilities of the readable ``paths`` (rounded as records store them), their
    positions, and ``(path, reason)`` of the unreadable ones."""
    good, bad = keras_freeze.scan_images(paths, full=True)
    if len(good) == 0:
        raise ValueError(f"Expected a readable image. Received: none of {len(paths)} ({bad[:2]})")
    dataset = keras_freeze.ImageDataset(
        [paths[i] for i in good],
        np.zeros(len(good), dtype=int),
        num_classes=len(info.class_names),
        image_size=info.image_size,
        batch_size=batch_size,
        preprocess=info.preprocess,
    )
    probs, kept = keras_freeze.predict_images(model, dataset)
    stored = experiment.stored_probabilities(probs)  # as the records store them
    return np.asarray(stored, dtype=np.float64), good[kept], bad


def _csv(paths, rows, labels, class_names) -> str:
    labelled = any(label is not None for label in labels)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "predicted", *(["true"] if labelled else []), *class_names])
    for path, probs, label in zip(paths, rows, labels, strict=True):
        true = [class_names[label] if label is not None else ""] if labelled else []
        w.writerow([path, class_names[int(np.argmax(probs))], *true, *(f"{p:.6f}" for p in probs)])
    return buf.getvalue()


def main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"Expected --batch-size >= 1. Received: {args.batch_size}")
        model, info = saved.load(args.model)
        paths, labels, skipped = gather(args.images, info.class_names)
        probs, kept, bad = predict(model, info, paths, args.batch_size)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    for path, reason in [*skipped, *bad]:
        log(f"[predict] skipped {path}: {reason}")
    kept_paths = [paths[i] for i in kept]
    kept_labels = [labels[i] for i in kept]
    records.atomic_write_text(args.out, _csv(kept_paths, probs, kept_labels, info.class_names))
    log(
        f"[predict] {len(kept)} image(s) classified, {len(bad) + len(skipped)} skipped "
        f"(unreadable or not images); {args.out}"
    )
    if kept_labels and all(label is not None for label in kept_labels):
        _write_metrics(args.out, kept_labels, probs, info.class_names)
    if args.explain:
        folder = Path(args.out).parent
        for png in explain.write_galleries(
            folder, model, info, kept_paths, kept_labels, probs, tag="predict"
        ):
            log(f"[predict] Grad-CAM: {png}")
    return 0


def _write_metrics(out: Path, labels, probs, class_names):
    """Prints and writes (``<out>.metrics.json``) the metrics of labelled images."""
    report = keras_freeze.classification_metrics(
        np.asarray(labels, dtype=int), probs, class_names=list(class_names), zero_division=0.0
    )
    metrics = report.to_dict()
    path = Path(out).with_suffix(".metrics.json")
    records.atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    m = metrics["macro"]
    log(
        f"[predict] macro F1 {fmt(m['f1'])}, accuracy {fmt(m['accuracy'])}, precision "
        f"{fmt(m['precision'])}, recall {fmt(m['recall'])}, AUC {fmt(m['auc'])}; {path}"
    )
