"""The images of one run: found (or generated), checked, folded and split.

`prepare_data` turns the run's data settings into a `DataSet`: the usable images (corrupt ones
removed), their cross-validation folds and the counts the records report. `DataSet.split` gives
one fold's train / validation / test positions as the authors' notebooks did. Listing is
`kaggle.py`'s, fold lists and splits `folds.py`'s, decoding the library's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import folds as folds_module
import kaggle
import numpy as np
import protocol
import synthetic
from console import log
from settings import Settings

import keras_freeze


@dataclasses.dataclass
class DataSet:
    """The images of one run, their folds and the bookkeeping the records report.

    Attributes:
        root: dataset root (class folders, e.g. the Kaggle layout).
        synthetic: whether the data were generated (marker file of ``synthetic.py``).
        paths: usable image paths (str); ``labels``: their class indices (np.ndarray).
        folds: list of index arrays into ``paths`` (one per fold).
        info: dict of counts for the records (corrupt, missing, rejected, per class ...).
        class_names: the classes, in label order (the paper's four for the Kaggle layout,
            else the class folders' names, sorted).
    """

    root: Path
    synthetic: bool
    paths: list
    labels: np.ndarray
    folds: list
    info: dict
    class_names: tuple = protocol.CLASS_NAMES

    def fingerprint(self) -> str:
        """Short hash of the folds' files and labels (records are reused or merged only if equal).

        Files are named relative to the data root, so the same data set in another folder or
        on another machine (``--shard`` across a cluster) has the same fingerprint.
        """
        h = hashlib.sha1()
        h.update("|".join(self.class_names).encode())
        for f in self.folds:
            h.update(b"\n#fold")
            for i in sorted(int(i) for i in f):
                h.update(f"\n{self.relative(i)}:{int(self.labels[i])}".encode())
        return h.hexdigest()[:16]

    def relative(self, index) -> str:
        """Path of image ``index`` relative to the data root (as the records store it)."""
        return os.path.relpath(self.paths[index], self.root)

    def split(self, fold_number):
        """(train, val, test) index arrays for 1-based ``fold_number`` (val: 10%, seed 42)."""
        train, val, test = folds_module.split_fold(
            self.folds,
            fold_number - 1,
            val_fraction=protocol.VAL_FRACTION,
            seed=protocol.VAL_SEED,
            labels=self.labels,
        )
        return tuple(np.asarray(a, dtype=int) for a in (train, val, test))


def is_synthetic(root) -> bool:
    """Whether ``root`` is a tree written by ``synthetic.py`` (it holds a marker file)."""
    return (Path(root) / synthetic.MARKER_FILENAME).exists()


def _locate(settings: Settings):
    """(dataset root, class names, source description) of the run; generates the embedded
    default's data."""
    if not settings.embedded:
        root, class_names = kaggle.find_class_folders(settings.data_dir)
        return root, class_names, "directory"
    gen_size = 128 if (settings.image_size or 224) <= 128 else 256
    target = synthetic.default_cache_dir(settings.n_images, gen_size, settings.seed)
    if settings.cache_dir is not None:
        target = Path(settings.cache_dir) / target.name
    log(
        f"[data] embedded default: SYNTHETIC data set ({settings.n_images} images, {gen_size} px, "
        f"seed {settings.seed}) in {target}"
    )
    root = synthetic.generate_synthetic_cxr(
        target, n_total=settings.n_images, image_size=gen_size, seed=settings.seed
    )
    return kaggle.find_dataset_root(root), protocol.CLASS_NAMES, "synthetic (embedded default)"


def _scan(paths, workers):
    """Decodes every image once; returns (good_mask, [(path, reason)] of the unreadable ones)."""
    t0 = time.perf_counter()
    good, bad = keras_freeze.scan_images(paths, full=True, workers=max(1, workers))
    log(f"[data] decoded every image once to find corrupt files ({time.perf_counter() - t0:.1f} s)")
    mask = np.zeros(len(paths), dtype=bool)
    mask[np.asarray(good, dtype=int)] = True
    bad = [(str(p), str(r)) for p, r in bad]
    if bad:
        log(f"[data] {len(bad)} corrupt or unreadable image(s) skipped, e.g. {bad[:2]}")
    return mask, bad


def _base_info(source, root, is_synth, index, bad):
    """The records' data counts known before the folds are built."""
    if index.skipped:
        log(
            f"[data] {len(index.skipped)} file(s) in the class folders skipped (not images, "
            "duplicates, names not in UTF-8 or links leading outside the data directory), e.g. "
            f"{index.skipped[:2]}"
        )
    return {
        "source": source,
        "root": str(root),
        "synthetic": bool(is_synth),
        "n_listed": len(index.paths),
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


def _authors_folds(settings, index, info):
    """Folds from the authors' lists (``--folds-dir``) as index arrays, and the fold files.

    Fills the fold-list counts of ``info`` and logs what does not match."""
    # Names that would escape the data directory are rejected (counted, never opened).
    fold_lists = folds_module.read_fold_lists(
        settings.folds_dir, index.class_names, on_unsafe="skip"
    )
    resolved = folds_module.resolve_folds(index, fold_lists, warn=False)
    info["n_missing"] = len(resolved.missing)
    info["missing_examples"] = [str(name) for _, name in resolved.missing[:10]]
    info["n_rejected"] = len(fold_lists.rejected)
    info["rejected_examples"] = [str(r[2]) for r in fold_lists.rejected[:10]]
    info["n_label_mismatches"] = len(fold_lists.label_mismatches)
    if fold_lists.label_mismatches:
        file, line, name, code, from_name = fold_lists.label_mismatches[0]
        log(
            f"[data] fold lists: {len(fold_lists.label_mismatches)} label code(s) disagree with "
            f"the file name's class, e.g. {name!r} labelled {code} at {file}:{line} (its name "
            f"says {from_name}); the class folder's label is used"
        )
    info["n_unassigned"] = int(resolved.unassigned)
    info["folds_source"] = f"authors' fold lists ({len(fold_lists)} files in {settings.folds_dir})"
    if info["n_missing"] or info["n_rejected"]:
        log(
            f"[data] fold lists: {info['n_missing']} name(s) not found, "
            f"{info['n_rejected']} rejected (escaping the data directory)"
        )
    return [np.asarray(f, dtype=int) for f in resolved], list(fold_lists.files)


def _check_listed(index, root):
    """Every class folder must hold an image file; logs the classes of a non-paper set."""
    if index.missing:
        raise ValueError(
            f"Expected image files ({', '.join(keras_freeze.IMAGE_EXTENSIONS)}) in every "
            f"class folder <class>/ or <class>/images/ under {str(root)!r}. Received: no "
            f"image in the class folder(s) {index.missing}."
        )
    if tuple(index.class_names) != tuple(protocol.CLASS_NAMES):
        log(f"[data] classes (from the class folders): {', '.join(index.class_names)}")


def _check_readable(mask, labels, class_names, root):
    """Every class must keep at least one image once unreadable files are dropped."""
    kept = np.bincount(labels[mask], minlength=len(class_names))
    empty = [c for c, n in zip(class_names, kept, strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"Expected a readable image in every class folder under {str(root)!r}. Received: "
            f"every image of {empty} is corrupt or unreadable."
        )


def _check_classes(settings, class_names):
    """Options that only work with the paper's four classes, refused for other data sets."""
    if tuple(class_names) == tuple(protocol.CLASS_NAMES):
        return
    found = ", ".join(class_names)
    if settings.alpha == "paper":
        raise ValueError(
            "Expected --alpha estimate for a data set other than the paper's: the published "
            "alpha weights are for COVID, Lung_Opacity, Normal, Viral Pneumonia. Received: "
            f"--alpha paper with the classes {found}"
        )
    if settings.folds_dir is not None:
        raise ValueError(
            "Expected no --folds-dir for a data set other than the paper's: the authors' fold "
            "lists use its label codes and file names. Received: --folds-dir with the classes "
            f"{found}; omit it to draw stratified folds"
        )


def _check_fold_numbers(settings, n_folds):
    if settings.folds and max(settings.folds) > n_folds:
        raise ValueError(
            f"Expected fold numbers in 1..{n_folds}. Received: folds={list(settings.folds)}"
        )


def _check_folds(settings, folds, files=None, when="listed"):
    """Every fold to run must exist and hold images; ``files`` names the fold lists."""
    _check_fold_numbers(settings, len(folds))
    for k in settings.folds or range(1, len(folds) + 1):
        if len(folds[k - 1]) == 0:
            where = f" ({files[k - 1]})" if files else ""
            raise ValueError(
                f"Expected images in every test fold. Received: fold {k}{where} has no "
                f"{when} image; fix the fold list or choose other --folds"
            )


def _stratified_folds(settings, labels, mask, info):
    """Stratified folds drawn with ``--seed`` over the readable images."""
    good = np.flatnonzero(mask)
    sub = folds_module.stratified_folds(labels[good], n_folds=settings.n_folds, seed=settings.seed)
    info["folds_source"] = f"stratified, {settings.n_folds} folds, seed {settings.seed}"
    return [good[np.asarray(f, dtype=int)] for f in sub]


def _fold_counts(info, folds, labels, class_names):
    """Adds fold sizes and per-class counts of the images used to ``info``."""
    info["n_folds"] = len(folds)
    info["fold_sizes"] = [int(len(f)) for f in folds]
    used = np.zeros(len(labels), dtype=bool)
    for f in folds:
        used[np.asarray(f, dtype=int)] = True
    info["n_used"] = int(used.sum())
    info["class_counts"] = {
        name: int(((labels == c) & used).sum()) for c, name in enumerate(class_names)
    }
    per_class = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
    log(f"[data] {info['n_used']} images in {len(folds)} folds; per class: {per_class}")


def prepare_data(settings: Settings) -> DataSet:
    """Finds (or generates) the images, drops corrupt ones and builds the folds.

    Args:
        settings: the run's `Settings` (``data_dir``, ``folds_dir``, ``n_folds``, ``seed``,
            ``workers``, ``n_images``, ``cache_dir``, ``image_size``).

    Returns:
        A `DataSet`.
    """
    root, class_names, source = _locate(settings)
    _check_classes(settings, class_names)
    is_synth = is_synthetic(root)
    if is_synth and not settings.embedded:
        source = "directory (synthetic, generated by synthetic.py)"
    index = kaggle.list_images(root, class_names=class_names)
    all_paths = [str(p) for p in index.paths]
    all_labels = np.asarray(index.labels, dtype=int)
    log(f"[data] {len(all_paths)} images under {root}")
    _check_listed(index, root)
    fold_info, listed, files = {}, None, None
    if settings.folds_dir is None:
        _check_fold_numbers(settings, settings.n_folds)
    else:  # read and check the fold lists before decoding anything
        listed, files = _authors_folds(settings, index, fold_info)
        _check_folds(settings, listed, files)
    mask, bad = _scan(all_paths, settings.workers)
    info = _base_info(source, root, is_synth, index, bad)
    info.update(fold_info)
    _check_readable(mask, all_labels, class_names, root)
    if listed is not None:  # corrupt images dropped, indices into the full index
        folds = [f[mask[f]] for f in listed]
        _check_folds(settings, folds, files, when="readable")
    else:
        folds = _stratified_folds(settings, all_labels, mask, info)
    _fold_counts(info, folds, all_labels, class_names)
    return DataSet(root, bool(is_synth), all_paths, all_labels, folds, info, tuple(class_names))
