"""The authors' fold lists, stratified folds, and the train / validation / test split of a fold.

Reads the authors' fold lists (``Fold1.csv`` .. ``Fold10.csv``, header ``FILE NAME,label``, label
codes 0 COVID, 1 Normal, 2 Viral Pneumonia, 3 Lung_Opacity) and splits a fold as the authors'
notebooks did: one fold is the test set, the other nine are concatenated and split 90/10,
stratified, with ``train_test_split(random_state=42)`` into train and validation.

Decisions (see docs/covid_cxr_data.md):

* Author label codes are mapped through `protocol.AUTHOR_LABELS`.
* A fold-list name that could escape the data directory (path separator, ``..``, absolute path,
  drive letter, NUL) makes `read_fold_lists` raise `ValueError` by default, before any training
  starts. ``on_unsafe="skip"`` skips and records such rows instead.
* A fold-list label that disagrees with the class prefix of its file name is recorded in
  ``FoldLists.label_mismatches``; the label used for training is always the class folder the file
  is in.
* Names in fold lists that match no image are counted, recorded in ``ResolvedFolds.missing`` and
  skipped. Images that are in no fold are counted in ``ResolvedFolds.unassigned`` (the authors'
  folds hold 9,275 of Kaggle's 10,192 Normal images).
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
from kaggle import ImageIndex
from kaggle import check_class_names
from protocol import AUTHOR_LABELS
from protocol import CLASS_NAMES

import keras_freeze


class FoldLists(list):
    """List of folds, each a list of ``(name, class_index)``; with what was noticed on reading.

    Attributes:
        files: The fold files read, in fold order.
        label_mismatches: ``(file, line, name, label_code, class_from_name)`` rows whose label
            code disagrees with the file name's class prefix.
        rejected: ``(file, line, name, reason)`` rows skipped with ``on_unsafe="skip"``.
        class_names: The class names the indices refer to.
    """

    files: list
    label_mismatches: list
    rejected: list
    class_names: tuple


_FOLD_RE = re.compile(r"^fold[ _-]?(\d+)\.csv$", re.IGNORECASE)
_UNSAFE_RE = re.compile(r"[/\\\x00:]")


def _unsafe_reason(name: str):
    if not name:
        return "empty name"
    if _UNSAFE_RE.search(name):
        return "path separator, drive letter or NUL in the name"
    if name in (".", "..") or name.startswith(".."):
        return "relative path component"
    if os.path.isabs(name):
        return "absolute path"
    return None


def _class_from_name(name: str, class_names) -> str | None:
    prefix = re.sub(r"[-_ ]?\(?\d+\)?$", "", name).strip().lower()
    for c in class_names:
        if prefix == c.lower():
            return c
    return None


def read_fold_lists(
    folds_dir, class_names=CLASS_NAMES, *, author_labels=None, on_unsafe: str = "raise"
) -> FoldLists:
    """Reads the authors' fold lists ``Fold1.csv`` .. ``FoldK.csv``.

    Each file has the header ``FILE NAME,label`` and one row per image, e.g. ``Normal-356,1``;
    label codes are mapped to our class indices through `AUTHOR_LABELS` (0 COVID, 1 Normal,
    2 Viral Pneumonia, 3 Lung_Opacity). Files are ordered by fold number (``Fold10`` after
    ``Fold9``); numbers must run 1..K without gaps. A trailing image extension (``.png``, any of
    ``keras_freeze.IMAGE_EXTENSIONS``) on a name is dropped.

    Args:
        folds_dir: Directory with the fold CSV files.
        class_names: Our class order (label indices).
        author_labels: Mapping author code -> class name; default `AUTHOR_LABELS`.
        on_unsafe: ``"raise"`` (default) or ``"skip"``: what to do with a name that would escape
            the data directory (path separators, ``..``, absolute paths).

    Returns:
        A `FoldLists` (a list of K lists of ``(name, class_index)``), with
        ``label_mismatches`` and ``rejected`` records.

    Raises:
        FileNotFoundError: If `folds_dir` does not exist or holds no ``Fold<k>.csv``.
        ValueError: On a bad header, an unknown label code, a gap in fold numbers, a name listed
            twice (it would leak test images into training), or an unsafe name with
            ``on_unsafe="raise"``. Messages name the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "Fold1.csv").write_text("FILE NAME,label\\nNormal-356,1\\nCOVID-1,0\\n")
        >>> read_fold_lists(d)
        [[('Normal-356', 2), ('COVID-1', 0)]]
    """
    class_names = check_class_names(class_names)
    if on_unsafe not in ("raise", "skip"):
        raise ValueError(f"Expected on_unsafe in ('raise', 'skip'). Received: {on_unsafe!r}")
    author_labels = dict(AUTHOR_LABELS if author_labels is None else author_labels)
    for code, cname in author_labels.items():
        if cname not in class_names:
            raise ValueError(
                f"Expected author label names in {list(class_names)}. Received: {code}->{cname!r}"
            )
    out = FoldLists()
    out.files, out.label_mismatches, out.rejected = [], [], []
    out.class_names = class_names
    reader = _FoldFileReader(out, class_names, author_labels, on_unsafe)
    for f in _fold_files(folds_dir):
        out.append(reader.read(f))
        out.files.append(str(f))
    return out


def _fold_files(folds_dir) -> list:
    """The ``Fold<k>.csv`` files of ``folds_dir`` in fold order; numbers must be 1..K."""
    d = Path(folds_dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"Folds directory does not exist. Received: folds_dir={str(d)!r}")
    found = []
    for f in d.iterdir():
        m = _FOLD_RE.match(f.name)
        if m and f.is_file():
            found.append((int(m.group(1)), f))
    if not found:
        raise FileNotFoundError(
            f"Expected Fold1.csv .. Fold10.csv in folds_dir={str(d)!r}. Received: no Fold<k>.csv."
        )
    found.sort()
    numbers = [k for k, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ValueError(
            f"Expected fold files numbered 1..K without gaps or repeats. Received: {numbers} "
            f"in {str(d)!r}."
        )
    return [f for _, f in found]


class _FoldFileReader:
    """Reads fold files one by one into a `FoldLists`, checking names across all of them."""

    def __init__(self, out, class_names, author_labels, on_unsafe):
        self.out = out
        self.class_names = class_names
        self.author_labels = author_labels
        self.on_unsafe = on_unsafe
        self.seen = {}

    def read(self, f) -> list:
        """The ``(name, class_index)`` rows of one fold file."""
        try:
            return self._read(f)
        except UnicodeDecodeError as e:
            raise ValueError(
                f"Expected a UTF-8 text file (CSV 'FILE NAME,label'). Received: {f} is not "
                f"UTF-8 (byte {e.object[e.start : e.start + 1]!r} at offset {e.start}); save it "
                "as UTF-8."
            ) from None
        except csv.Error as e:
            raise ValueError(
                f"Expected a CSV file. Received: {f} cannot be read as CSV ({e})"
            ) from None

    def _read(self, f) -> list:
        fold = []
        with open(f, newline="", encoding="utf-8-sig") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["file name", "label"]:
                raise ValueError(
                    f"Expected the header 'FILE NAME,label' in {f}. Received: {header!r}"
                )
            for line, row in enumerate(rows, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                entry = self._row(f, line, row)
                if entry is not None:
                    fold.append(entry)
        return fold

    def _row(self, f, line, row):
        if len(row) < 2:
            raise ValueError(f"Expected 'name,label' at {f}:{line}. Received: {row!r}")
        name, code = row[0].strip(), row[1].strip()
        if name.lower().endswith(keras_freeze.IMAGE_EXTENSIONS):
            name = os.path.splitext(name)[0]
        reason = _unsafe_reason(name)
        if reason:
            if self.on_unsafe == "raise":
                raise ValueError(
                    f"Expected a plain file name in {f}:{line}; it would escape the data "
                    f"directory ({reason}). Received: name={name!r}. Fix the fold list "
                    "or pass on_unsafe='skip'."
                )
            self.out.rejected.append((str(f), line, name, reason))
            return None
        try:
            cname = self.author_labels[int(code)]
        except (ValueError, KeyError):
            raise ValueError(
                f"Expected a label code in {sorted(self.author_labels)} at {f}:{line}. "
                f"Received: label={code!r}"
            ) from None
        key = name.lower()
        if key in self.seen:
            raise ValueError(
                f"Expected each name once across all folds. Received: {name!r} at "
                f"{f}:{line}, already in {self.seen[key]}."
            )
        self.seen[key] = f"{f.name}:{line}"
        from_name = _class_from_name(name, self.class_names)
        if from_name is not None and from_name != cname:
            self.out.label_mismatches.append((str(f), line, name, int(code), from_name))
        return (name, self.class_names.index(cname))


class ResolvedFolds(list):
    """List of `np.int64` index arrays (one per fold) into an `ImageIndex`.

    Attributes:
        labels: The index's full label array (so `split_fold` can stratify without it).
        missing: ``(fold, name)`` for fold-list names that matched no image (skipped).
        unassigned: Number of images that are in no fold.
    """

    labels: np.ndarray
    missing: list
    unassigned: int


def resolve_folds(index: ImageIndex, fold_lists, *, warn: bool = True) -> ResolvedFolds:
    """Maps fold-list names to positions in `index`, case-insensitively.

    ``"Normal-356"`` matches ``Normal-356.png`` and ``NORMAL-356.png``. Names that match no image
    are skipped and recorded; the label is the one of the image's class folder.

    Args:
        index: An `ImageIndex` from `list_images`.
        fold_lists: The output of `read_fold_lists` (or any list of lists of names or
            ``(name, label)`` tuples).
        warn: Emit a `UserWarning` with the number of missing names.

    Returns:
        A `ResolvedFolds`.

    Raises:
        ValueError: If no name of any fold matches an image.
    """
    lookup = index.name_to_index()
    out = ResolvedFolds()
    out.labels = np.asarray(index.labels, dtype=np.int64)
    out.missing = []
    used = np.zeros(len(index), dtype=bool)
    for k, fold in enumerate(fold_lists):
        idx = []
        for item in fold:
            name = item[0] if isinstance(item, (tuple, list)) else item
            i = lookup.get(str(name).lower())
            if i is None:
                out.missing.append((k, name))
            else:
                idx.append(i)
        arr = np.asarray(idx, dtype=np.int64)
        used[arr] = True
        out.append(arr)
    if not any(len(a) for a in out):
        raise ValueError(
            "Expected fold-list names to match image files. Received: none of "
            f"{sum(len(f) for f in fold_lists)} names matched an image under {index.root!r}."
        )
    out.unassigned = int((~used).sum())
    if warn and out.missing:
        warnings.warn(
            f"{len(out.missing)} fold-list names matched no image and were skipped "
            f"(first: {out.missing[:3]}).",
            stacklevel=2,
        )
    return out


def stratified_folds(labels, n_folds: int = 10, seed: int = 0) -> ResolvedFolds:
    """Splits positions into stratified folds (used when no fold lists are given).

    `sklearn.model_selection.StratifiedKFold(n_folds, shuffle=True, random_state=seed)`; fold k
    is the k-th split's test part.

    Args:
        labels: Integer class labels, one per image.
        n_folds: Number of folds (>= 2).
        seed: Shuffle seed.

    Returns:
        A `ResolvedFolds` of `n_folds` disjoint `np.int64` arrays covering all positions.

    Raises:
        ValueError: If `n_folds` < 2 or larger than the number of samples.

    Example:
        >>> folds = stratified_folds([0, 1] * 10, n_folds=5)
        >>> [len(f) for f in folds]
        [4, 4, 4, 4, 4]
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"Expected an integer n_folds >= 2. Received: n_folds={n_folds!r}")
    if n_folds > len(labels):
        raise ValueError(
            f"Expected n_folds <= number of samples ({len(labels)}). Received: n_folds={n_folds}"
        )
    skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    out = ResolvedFolds(
        np.asarray(test, dtype=np.int64) for _, test in skf.split(np.zeros(len(labels)), labels)
    )
    out.labels, out.missing, out.unassigned = labels, [], 0
    return out


def _check_split(folds, test_fold, val_fraction, labels):
    """Checks `split_fold`'s arguments; returns the labels to stratify with."""
    n = len(folds)
    if (
        isinstance(test_fold, bool)
        or not isinstance(test_fold, (int, np.integer))
        or not (0 <= test_fold < n)
    ):
        raise ValueError(
            f"Expected test_fold in [0, {n - 1}] (0-based). Received: test_fold={test_fold!r}"
        )
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            f"Expected val_fraction in (0, 1). Received: val_fraction={val_fraction!r}"
        )
    if labels is None:
        labels = getattr(folds, "labels", None)
    if labels is None:
        raise ValueError(
            "Expected labels to stratify the validation split. Received: labels=None and folds "
            "without a `.labels` attribute; pass labels=index.labels."
        )
    return labels


def split_fold(folds, test_fold: int, val_fraction: float = 0.1, seed: int = 42, *, labels=None):
    """Train/validation/test positions for one fold, as the authors' notebooks split them.

    test = ``folds[test_fold]``; the other folds are concatenated (in fold order) and split with
    ``train_test_split(test_size=val_fraction, stratify=labels, random_state=seed)``.

    Args:
        folds: Output of `resolve_folds` or `stratified_folds` (which carry `.labels`), or any
            list of index arrays together with `labels`.
        test_fold: 0-based position of the test fold.
        val_fraction: Fraction of the remaining images used for validation, in (0, 1).
        seed: `random_state` of `train_test_split` (the notebooks used 42).
        labels: Full label array; default ``folds.labels``.

    Returns:
        ``(train_idx, val_idx, test_idx)``, `np.int64` arrays, pairwise disjoint.

    Raises:
        ValueError: If `test_fold` is out of range, `val_fraction` not in (0, 1), or no labels.

    Example:
        >>> folds = stratified_folds([0, 1] * 50, n_folds=10)
        >>> tr, va, te = split_fold(folds, 0)
        >>> len(tr), len(va), len(te)
        (81, 9, 10)
    """
    labels = _check_split(folds, test_fold, val_fraction, labels)
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels, dtype=np.int64)
    test = np.asarray(folds[test_fold], dtype=np.int64)
    rest = np.concatenate(
        [np.asarray(f, dtype=np.int64) for k, f in enumerate(folds) if k != test_fold]
        or [np.zeros(0, np.int64)]
    )
    rest_labels = labels[rest]
    if len(rest) < 2:
        raise ValueError(f"Expected at least 2 images outside the test fold. Received: {len(rest)}")
    present = np.bincount(rest_labels)
    present = present[present > 0]
    n_val = math.ceil(float(val_fraction) * len(rest))
    stratify = rest_labels
    if present.min() < 2 or n_val < len(present) or len(rest) - n_val < len(present):
        stratify = None  # sklearn cannot stratify this split; happens only for tiny data sets
    try:
        train, val = train_test_split(
            rest, test_size=val_fraction, stratify=stratify, random_state=seed
        )
    except ValueError:
        if stratify is None:
            raise
        stratify = None
        train, val = train_test_split(rest, test_size=val_fraction, random_state=seed)
    if stratify is None:
        warnings.warn(
            f"Cannot stratify a {n_val}-image validation split of {len(rest)} images with class "
            f"counts {present.tolist()}; splitting without stratification.",
            stacklevel=2,
        )
    return np.asarray(train, np.int64), np.asarray(val, np.int64), test
