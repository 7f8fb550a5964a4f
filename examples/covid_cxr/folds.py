"""The authors' fold lists, stratified folds and a fold's train / validation / test split.

Decisions on names, labels and splits: docs/covid_cxr_data.md ("The authors' folds")."""

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
    """Folds of ``(name, class_index)``; ``.files``, ``.label_mismatches`` (``(file, line, name,
    code, class_from_name)``), ``.rejected`` (``(file, line, name, reason)``), ``.class_names``."""


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


def read_fold_lists(
    folds_dir, class_names=CLASS_NAMES, *, author_labels=None, on_unsafe: str = "raise"
) -> FoldLists:
    """Reads ``Fold1.csv`` .. ``FoldK.csv`` in fold order (docs/covid_cxr_data.md).

    ``author_labels`` (default `AUTHOR_LABELS`) maps label codes; an unsafe name raises
    `ValueError` or, with ``on_unsafe="skip"``, goes to ``rejected``.
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
    out.files, out.label_mismatches, out.rejected, out.class_names = [], [], [], class_names
    d = Path(folds_dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"Folds directory does not exist. Received: folds_dir={str(d)!r}")
    found = [(int(m.group(1)), f) for f in d.iterdir() if (m := _FOLD_RE.match(f.name))]
    found = sorted((k, f) for k, f in found if f.is_file())
    if not found:
        raise FileNotFoundError(
            f"Expected Fold1.csv .. Fold10.csv in folds_dir={str(d)!r}. Received: no Fold<k>.csv."
        )
    numbers = [k for k, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ValueError(
            f"Expected fold files numbered 1..K without gaps or repeats. Received: {numbers} "
            f"in {str(d)!r}."
        )
    seen = {}  # lower-cased name -> "file:line" of its first row
    for _, f in found:
        try:
            out.append(_read_fold(f, out, author_labels, on_unsafe, seen))
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
        out.files.append(str(f))
    return out


def _read_fold(f, out, author_labels, on_unsafe, seen):
    """The ``(name, class_index)`` rows of one fold file."""
    fold = []
    with open(f, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["file name", "label"]:
            raise ValueError(f"Expected the header 'FILE NAME,label' in {f}. Received: {header!r}")
        for line, row in enumerate(rows, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise ValueError(f"Expected 'name,label' at {f}:{line}. Received: {row!r}")
            name, code = row[0].strip(), row[1].strip()
            if name.lower().endswith(keras_freeze.IMAGE_EXTENSIONS):
                name = os.path.splitext(name)[0]
            reason = _unsafe_reason(name)
            if reason and on_unsafe == "raise":
                raise ValueError(
                    f"Expected a plain file name in {f}:{line}; it would escape the data "
                    f"directory ({reason}). Received: name={name!r}. Fix the fold list "
                    "or pass on_unsafe='skip'."
                )
            if reason:
                out.rejected.append((str(f), line, name, reason))
                continue
            try:
                cname = author_labels[int(code)]
            except (ValueError, KeyError):
                raise ValueError(
                    f"Expected a label code in {sorted(author_labels)} at {f}:{line}. "
                    f"Received: label={code!r}"
                ) from None
            if name.lower() in seen:
                raise ValueError(
                    f"Expected each name once across all folds. Received: {name!r} at "
                    f"{f}:{line}, already in {seen[name.lower()]}."
                )
            seen[name.lower()] = f"{f.name}:{line}"
            prefix = re.sub(r"[-_ ]?\(?\d+\)?$", "", name).strip().lower()  # class from the name
            from_name = next((c for c in out.class_names if prefix == c.lower()), None)
            if from_name is not None and from_name != cname:
                out.label_mismatches.append((str(f), line, name, int(code), from_name))
            fold.append((name, out.class_names.index(cname)))
    return fold


class ResolvedFolds(list):
    """`np.int64` index arrays (one per fold) into an `ImageIndex`; ``.labels`` (all images'),
    ``.missing`` (``(fold, name)`` that matched no image), ``.unassigned`` (images in no fold)."""


def resolve_folds(index: ImageIndex, fold_lists, *, warn: bool = True) -> ResolvedFolds:
    """Maps fold-list names (or ``(name, label)``) to `index` positions, case-insensitively."""
    lookup = index.name_to_index()
    out = ResolvedFolds()
    out.labels, out.missing = np.asarray(index.labels, dtype=np.int64), []
    used = np.zeros(len(index), dtype=bool)
    for k, fold in enumerate(fold_lists):
        names = [item[0] if isinstance(item, (tuple, list)) else item for item in fold]
        found = [lookup.get(str(name).lower()) for name in names]
        out.missing.extend((k, name) for name, i in zip(names, found, strict=True) if i is None)
        arr = np.asarray([i for i in found if i is not None], dtype=np.int64)
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
    """Stratified folds: the test parts of `StratifiedKFold(n_folds, shuffle=True, seed)`.

    >>> [len(f) for f in stratified_folds([0, 1] * 10, n_folds=5)]
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


def split_fold(folds, test_fold: int, val_fraction: float = 0.1, seed: int = 42, *, labels=None):
    """``(train, val, test)`` `np.int64` positions of 0-based ``test_fold`` (the notebooks' split).

    ``labels`` defaults to ``folds.labels``; unstratified, with a warning, where sklearn cannot
    stratify.
    """
    n = len(folds)
    bad = isinstance(test_fold, bool) or not isinstance(test_fold, (int, np.integer))
    if bad or not (0 <= test_fold < n):
        raise ValueError(
            f"Expected test_fold in [0, {n - 1}] (0-based). Received: test_fold={test_fold!r}"
        )
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            f"Expected val_fraction in (0, 1). Received: val_fraction={val_fraction!r}"
        )
    labels = getattr(folds, "labels", None) if labels is None else labels
    if labels is None:
        raise ValueError(
            "Expected labels to stratify the validation split. Received: labels=None and folds "
            "without a `.labels` attribute; pass labels=index.labels."
        )
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
