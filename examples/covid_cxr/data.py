"""The images of one run: found (or generated), checked, folded and split.

`prepare_data` turns the command line's data options into a `DataSet`: the usable images
(corrupt ones removed), their cross-validation folds and the counts the records report.
`DataSet.split` gives one fold's train / validation / test positions as the authors'
notebooks did. The file-level work (listing, fold lists, decoding) is `data.py`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import data
import numpy as np
import protocol
import synthetic

import keras_freeze


def log(msg=""):
    print(msg, flush=True)


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
        try:
            train, val, test = data.split_fold(
                self.folds,
                fold_number - 1,
                val_fraction=protocol.VAL_FRACTION,
                seed=protocol.VAL_SEED,
                labels=self.labels,
            )
        except ValueError as e:
            # Tiny data sets only: 10% of the training folds is fewer images than classes, so
            # a stratified split is impossible. Fall back to an unstratified one (same seed).
            if "test_size" not in str(e):
                raise
            train, val, test = self._unstratified_split(fold_number)
        as_int = [np.asarray(a, dtype=int) for a in (train, val, test)]
        return tuple(as_int)

    def _unstratified_split(self, fold_number):
        from sklearn.model_selection import train_test_split

        test = np.asarray(self.folds[fold_number - 1], dtype=int)
        rest = np.concatenate(
            [np.asarray(f, dtype=int) for k, f in enumerate(self.folds) if k != fold_number - 1]
        )
        log(
            f"[data] fold {fold_number}: too few images for a stratified validation split; "
            "using an unstratified one"
        )
        train, val = train_test_split(
            rest, test_size=protocol.VAL_FRACTION, random_state=protocol.VAL_SEED
        )
        return train, val, test


def is_synthetic(root) -> bool:
    """Whether ``root`` is a tree written by ``synthetic.py`` (it holds a marker file)."""
    return (Path(root) / synthetic.MARKER_FILENAME).exists()


def _locate(args):
    """(dataset root, class names, source description) of the run; generates the embedded
    default's data."""
    if not args.embedded:
        root, class_names = data.find_class_folders(args.data_dir)
        return root, class_names, "directory"
    gen_size = 128 if (args.image_size or 224) <= 128 else 256
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
    return data.find_dataset_root(root), protocol.CLASS_NAMES, "synthetic (embedded default)"


def _scan(paths, workers):
    """Decodes every image once; returns (good_mask, [(path, reason)] of the unreadable ones)."""
    t0 = time.perf_counter()
    good, bad = data.scan(paths, full=True, workers=max(1, workers))
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
            "duplicates or links leading outside the data directory)"
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


def _authors_folds(args, index, info):
    """Folds from the authors' lists (``--folds-dir``) as index arrays, and the fold files.

    Fills the fold-list counts of ``info`` and logs what does not match."""
    # Names that would escape the data directory are rejected (counted, never opened).
    fold_lists = data.read_fold_lists(args.folds_dir, index.class_names, on_unsafe="skip")
    resolved = data.resolve_folds(index, fold_lists, warn=False)
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
    info["folds_source"] = f"authors' fold lists ({len(fold_lists)} files in {args.folds_dir})"
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


def _check_classes(args, class_names):
    """Options that only work with the paper's four classes, refused for other data sets."""
    if tuple(class_names) == tuple(protocol.CLASS_NAMES):
        return
    found = ", ".join(class_names)
    if args.alpha == "paper":
        raise ValueError(
            "Expected --alpha estimate for a data set other than the paper's: the published "
            "alpha weights are for COVID, Lung_Opacity, Normal, Viral Pneumonia. Received: "
            f"--alpha paper with the classes {found}"
        )
    if args.folds_dir is not None:
        raise ValueError(
            "Expected no --folds-dir for a data set other than the paper's: the authors' fold "
            "lists use its label codes and file names. Received: --folds-dir with the classes "
            f"{found}; omit it to draw stratified folds"
        )


def _check_fold_numbers(args, n_folds):
    if args.folds and max(args.folds) > n_folds:
        raise ValueError(f"Expected fold numbers in 1..{n_folds}. Received: folds={args.folds}")


def _check_folds(args, folds, files=None, when="listed"):
    """Every fold to run must exist and hold images; ``files`` names the fold lists."""
    _check_fold_numbers(args, len(folds))
    for k in args.folds or range(1, len(folds) + 1):
        if len(folds[k - 1]) == 0:
            where = f" ({files[k - 1]})" if files else ""
            raise ValueError(
                f"Expected images in every test fold. Received: fold {k}{where} has no "
                f"{when} image; fix the fold list or choose other --folds"
            )


def _stratified_folds(args, labels, mask, info):
    """Stratified folds drawn with ``--seed`` over the readable images."""
    good = np.flatnonzero(mask)
    sub = data.stratified_folds(labels[good], n_folds=args.n_folds, seed=args.seed)
    info["folds_source"] = f"stratified, {args.n_folds} folds, seed {args.seed}"
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


def prepare_data(args) -> DataSet:
    """Finds (or generates) the images, drops corrupt ones and builds the folds.

    Args:
        args: the resolved command-line namespace (``embedded``, ``data_dir``, ``folds_dir``,
            ``n_folds``, ``seed``, ``workers``, ``n_images``, ``cache_dir``, ``image_size``).

    Returns:
        A `DataSet`.
    """
    root, class_names, source = _locate(args)
    _check_classes(args, class_names)
    is_synth = is_synthetic(root)
    if is_synth and not args.embedded:
        source = "directory (synthetic, generated by synthetic.py)"
    index = data.list_images(root, class_names=class_names)
    all_paths = [str(p) for p in index.paths]
    all_labels = np.asarray(index.labels, dtype=int)
    log(f"[data] {len(all_paths)} images under {root}")
    _check_listed(index, root)
    fold_info, listed, files = {}, None, None
    if args.folds_dir is None:
        _check_fold_numbers(args, args.n_folds)
    else:  # read and check the fold lists before decoding anything
        listed, files = _authors_folds(args, index, fold_info)
        _check_folds(args, listed, files)
    mask, bad = _scan(all_paths, args.workers)
    info = _base_info(source, root, is_synth, index, bad)
    info.update(fold_info)
    _check_readable(mask, all_labels, class_names, root)
    if listed is not None:  # corrupt images dropped, indices into the full index
        folds = [f[mask[f]] for f in listed]
        _check_folds(args, folds, files, when="readable")
    else:
        folds = _stratified_folds(args, all_labels, mask, info)
    _fold_counts(info, folds, all_labels, class_names)
    return DataSet(root, bool(is_synth), all_paths, all_labels, folds, info, tuple(class_names))
