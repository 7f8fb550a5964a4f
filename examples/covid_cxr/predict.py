"""``reproduce.py predict``: classify new chest X-rays with a model saved by ``--save-models``.

Class sub-folders (among the model's classes) label their images, and the metrics are written;
unreadable images are skipped and named. The CSV's probabilities are rounded as the run's records
store them, so a fold's test files give the record's metrics.
"""

import csv
import io
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
    p = Parser(
        prog="reproduce.py predict",
        description="Classify images with a model saved by reproduce.py --save-models; with "
        "class folders, also the metrics.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="PATH", help="image files or folders.")
    p.add_argument("--model", type=Path, required=True, metavar="M.keras", help="saved model.")
    p.add_argument(
        "--out", type=Path, default="predictions.csv", help="CSV file (default: %(default)s)."
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
    """The image paths of ``inputs``, their true class (None: unlabelled), and the skipped."""
    paths, labels, skipped = [], [], []
    for item in (Path(i).expanduser() for i in inputs):
        if not (item.is_file() or item.is_dir()):
            raise ValueError(f"Expected image files or folders. Received: {str(item)!r} (missing)")
        entries = sorted(item.iterdir(), key=str) if item.is_dir() else []
        folders = [d.name for d in entries if d.is_dir() and d.name[0] != "."]
        if unknown := [f for f in folders if f not in class_names]:
            raise ValueError(
                f"Expected class folders among the model's classes {list(class_names)}. "
                f"Received: {unknown} in {str(item)!r}"
            )
        if not folders:  # an image, or a folder of images
            found = [str(p) for p in entries if p.suffix.lower() in keras_freeze.IMAGE_EXTENSIONS]
            found = found if item.is_dir() else [str(item)]
            paths += found
            labels += [None] * len(found)
            continue
        listed = keras_freeze.list_class_images(item, class_names=folders)
        paths += listed.paths
        labels += [class_names.index(folders[k]) for k in listed.labels.tolist()]
        skipped += listed.skipped
    if not paths:
        raise ValueError(f"Expected images in {[str(i) for i in inputs]}. Received: none")
    return paths, labels, skipped


def predict(model, info: saved.ModelInfo, paths, batch_size: int):
    """Stored-rounded probabilities of the readable ``paths``, their positions, the unreadable."""
    good, bad = keras_freeze.scan_images(paths, full=True)
    if len(good) == 0:
        raise ValueError(f"Expected a readable image. Received: none of {len(paths)} ({bad[:2]})")
    dataset = info.dataset([paths[i] for i in good], batch_size)
    probs, kept = keras_freeze.predict_images(model, dataset)
    return np.asarray(experiment.stored_probabilities(probs), dtype=np.float64), good[kept], bad


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
    paths, labels, names = [paths[i] for i in kept], [labels[i] for i in kept], info.class_names
    labelled = any(y is not None for y in labels)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "predicted", *(["true"] if labelled else []), *names])
    for path, row, y in zip(paths, probs, labels, strict=True):
        true = [names[y] if y is not None else ""] if labelled else []
        w.writerow([path, names[int(np.argmax(row))], *true, *(f"{p:.6f}" for p in row)])
    records.atomic_write_text(args.out, buf.getvalue())
    log(
        f"[predict] {len(kept)} image(s) classified, {len(bad) + len(skipped)} skipped "
        f"(unreadable or not images); {args.out}"
    )
    if labels and all(y is not None for y in labels):
        metrics = keras_freeze.classification_metrics(
            np.asarray(labels, dtype=int), probs, class_names=list(names), zero_division=0.0
        ).to_dict()
        path = args.out.with_suffix(".metrics.json")
        records.atomic_write_json(path, metrics)
        m = metrics["macro"]
        log(
            f"[predict] macro F1 {fmt(m['f1'])}, accuracy {fmt(m['accuracy'])}, precision "
            f"{fmt(m['precision'])}, recall {fmt(m['recall'])}, AUC {fmt(m['auc'])}; {path}"
        )
    if args.explain:
        for png in explain.write_galleries(
            args.out.parent, model, info, paths, labels, probs, tag="predict"
        ):
            log(f"[predict] Grad-CAM: {png}")
    return 0
