"""The images of one run: found (or generated), checked, folded and split (`prepare_data`)."""

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
    """A run's images (``paths``, ``labels``), ``folds`` (indices) and records' counts."""

    root: Path
    synthetic: bool
    paths: list
    labels: np.ndarray
    folds: list
    info: dict
    class_names: tuple = protocol.CLASS_NAMES

    def fingerprint(self) -> str:
        """Short hash of the folds' files (relative to the root) and labels (records' key)."""
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
        args = (self.folds, fold_number - 1, protocol.VAL_FRACTION, protocol.VAL_SEED)
        splits = folds_module.split_fold(*args, labels=self.labels)
        return tuple(np.asarray(a, dtype=int) for a in splits)


def _locate(settings: Settings):
    """(root, class names, source) of the run; refuses paper-only options for other classes."""
    if not settings.embedded:
        root, class_names = kaggle.find_class_folders(settings.data_dir)
        other, found = tuple(class_names) != tuple(protocol.CLASS_NAMES), ", ".join(class_names)
        if other and settings.alpha == "paper":
            raise ValueError(
                "Expected --alpha estimate for a data set other than the paper's: the published "
                "alpha weights are for COVID, Lung_Opacity, Normal, Viral Pneumonia. Received: "
                f"--alpha paper with the classes {found}"
            )
        if other and settings.folds_dir is not None:
            raise ValueError(
                "Expected no --folds-dir for a data set other than the paper's: the authors' "
                "fold lists use its label codes and file names. Received: --folds-dir with the "
                f"classes {found}; omit it to draw stratified folds"
            )
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


def _scan(paths, workers, source, root, is_synth, index):
    """Decodes every image once: the readable ones' mask and the records' first data counts."""
    t0 = time.perf_counter()
    good, bad = keras_freeze.scan_images(paths, full=True, workers=max(1, workers))
    log(f"[data] decoded every image once to find corrupt files ({time.perf_counter() - t0:.1f} s)")
    mask = np.isin(np.arange(len(paths)), np.asarray(good, dtype=int))
    bad = [(str(p), str(r)) for p, r in bad]
    if bad:
        log(f"[data] {len(bad)} corrupt or unreadable image(s) skipped, e.g. {bad[:2]}")
    if index.skipped:
        log(
            f"[data] {len(index.skipped)} file(s) in the class folders skipped (not images, "
            "duplicates, names not in UTF-8 or links leading outside the data directory), e.g. "
            f"{index.skipped[:2]}"
        )
    corrupt, skipped = (
        [{"file": os.path.relpath(p, root), "reason": r} for p, r in items[:50]]
        for items in (bad, index.skipped)
    )
    return mask, {
        "source": source,
        "root": str(root),
        "synthetic": bool(is_synth),
        "n_listed": len(index.paths),
        "n_corrupt": len(bad),
        "corrupt_files": corrupt,
        "n_skipped_files": len(index.skipped),
        "skipped_files": skipped,
        "n_label_mismatches": 0,
        "n_unassigned": 0,
        "folds_source": None,
        "n_missing": 0,
        "n_rejected": 0,
        "missing_examples": [],
    }


def _authors_folds(settings, index, info):
    """Folds and files of the authors' lists (``--folds-dir``); fold-list counts into ``info``."""
    lists = folds_module.read_fold_lists(settings.folds_dir, index.class_names, on_unsafe="skip")
    resolved = folds_module.resolve_folds(index, lists, warn=False)
    info["n_missing"] = len(resolved.missing)
    info["missing_examples"] = [str(name) for _, name in resolved.missing[:10]]
    info["n_rejected"] = len(lists.rejected)
    info["rejected_examples"] = [str(r[2]) for r in lists.rejected[:10]]
    info["n_label_mismatches"] = len(lists.label_mismatches)
    if lists.label_mismatches:
        file, line, name, code, from_name = lists.label_mismatches[0]
        log(
            f"[data] fold lists: {len(lists.label_mismatches)} label code(s) disagree with "
            f"the file name's class, e.g. {name!r} labelled {code} at {file}:{line} (its name "
            f"says {from_name}); the class folder's label is used"
        )
    info["n_unassigned"] = int(resolved.unassigned)
    info["folds_source"] = f"authors' fold lists ({len(lists)} files in {settings.folds_dir})"
    if info["n_missing"] or info["n_rejected"]:
        log(
            f"[data] fold lists: {info['n_missing']} name(s) not found, "
            f"{info['n_rejected']} rejected (escaping the data directory)"
        )
    return [np.asarray(f, dtype=int) for f in resolved], list(lists.files)


def _check_folds(settings, n_folds, folds=None, files=None, when="listed"):
    """``--folds`` must be in 1..``n_folds`` and, given ``folds``, hold images."""
    if settings.folds and max(settings.folds) > n_folds:
        raise ValueError(
            f"Expected fold numbers in 1..{n_folds}. Received: folds={list(settings.folds)}"
        )
    for k in settings.folds or range(1, n_folds + 1):
        if folds is not None and len(folds[k - 1]) == 0:
            where = f" ({files[k - 1]})" if files else ""
            raise ValueError(
                f"Expected images in every test fold. Received: fold {k}{where} has no "
                f"{when} image; fix the fold list or choose other --folds"
            )


def prepare_data(settings: Settings) -> DataSet:
    """The run's `DataSet`: images found (or generated), corrupt ones dropped, folds built."""
    root, class_names, source = _locate(settings)
    is_synth = (Path(root) / synthetic.MARKER_FILENAME).exists()  # written by synthetic.py
    if is_synth and not settings.embedded:
        source = "directory (synthetic, generated by synthetic.py)"
    index = kaggle.list_images(root, class_names=class_names)
    all_paths = [str(p) for p in index.paths]
    all_labels = np.asarray(index.labels, dtype=int)
    log(f"[data] {len(all_paths)} images under {root}")
    if index.missing:
        raise ValueError(
            f"Expected image files ({', '.join(keras_freeze.IMAGE_EXTENSIONS)}) in every "
            f"class folder <class>/ or <class>/images/ under {str(root)!r}. Received: no "
            f"image in the class folder(s) {index.missing}."
        )
    if tuple(index.class_names) != tuple(protocol.CLASS_NAMES):
        log(f"[data] classes (from the class folders): {', '.join(index.class_names)}")
    fold_info, listed, files = {}, None, None
    if settings.folds_dir is None:
        _check_folds(settings, settings.n_folds)
    else:  # read and check the fold lists before decoding anything
        listed, files = _authors_folds(settings, index, fold_info)
        _check_folds(settings, len(listed), listed, files)
    mask, info = _scan(all_paths, settings.workers, source, root, is_synth, index)
    info.update(fold_info)
    kept = np.bincount(all_labels[mask], minlength=len(class_names))
    empty = [c for c, n in zip(class_names, kept, strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"Expected a readable image in every class folder under {str(root)!r}. Received: "
            f"every image of {empty} is corrupt or unreadable."
        )
    if listed is not None:  # corrupt images dropped, indices into the full index
        folds = [f[mask[f]] for f in listed]
        _check_folds(settings, len(folds), folds, files, when="readable")
    else:  # stratified folds drawn with --seed over the readable images
        good = np.flatnonzero(mask)
        sub = folds_module.stratified_folds(all_labels[good], settings.n_folds, settings.seed)
        info["folds_source"] = f"stratified, {settings.n_folds} folds, seed {settings.seed}"
        folds = [good[np.asarray(f, dtype=int)] for f in sub]
    info["n_folds"] = len(folds)
    info["fold_sizes"] = [int(len(f)) for f in folds]
    used = np.zeros(len(all_labels), dtype=bool)
    used[np.concatenate([np.asarray(f, dtype=int) for f in folds])] = True
    info["n_used"] = int(used.sum())
    counts = np.bincount(all_labels[used], minlength=len(class_names))
    info["class_counts"] = {name: int(n) for name, n in zip(class_names, counts, strict=True)}
    per_class = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
    log(f"[data] {info['n_used']} images in {len(folds)} folds; per class: {per_class}")
    return DataSet(root, bool(is_synth), all_paths, all_labels, folds, info, tuple(class_names))
