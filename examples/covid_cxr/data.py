"""Data side of the COVID CXR example: find, list, fold and load the images.

Reads the Kaggle "COVID-19 Radiography Database" layout (and the synthetic tree that `synthetic.py`
writes in the same layout)::

    COVID-19_Radiography_Dataset/
        COVID/images/COVID-1.png ...
        Lung_Opacity/images/Lung_Opacity-1.png ...
        Normal/images/Normal-1.png ...
        Viral Pneumonia/images/Viral Pneumonia-1.png ...

plus the authors' fold lists (``Fold1.csv`` .. ``Fold10.csv``, header ``FILE NAME,label``, label
codes 0 COVID, 1 Normal, 2 Viral Pneumonia, 3 Lung_Opacity), and splits them as the authors'
notebooks did: one fold is the test set, the other nine are concatenated and split 90/10,
stratified, with ``train_test_split(random_state=42)`` into train and validation.

`ImageSequence` is a `keras.utils.PyDataset` that decodes PNGs with Pillow (no TensorFlow needed, so
it runs on the tensorflow, torch and jax backends alike), decodes a batch's images on a thread pool,
can cache decoded images in memory, shuffles per epoch from a seed, and never crashes on a
corrupt or missing image: the image is dropped from its batch and recorded in
``ImageSequence.failed``.

Decisions (see docs/covid_cxr_data.md):

* Class indices are the Kaggle folder names in sorted order, `CLASS_NAMES` (also the paper's alpha
  order). Author label codes are mapped through `AUTHOR_LABELS`.
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
import dataclasses
import math
import os
import re
import threading
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from protocol import CLASS_NAMES

import keras_freeze

PAPER_COUNTS = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
AUTHOR_LABELS = {0: "COVID", 1: "Normal", 2: "Viral Pneumonia", 3: "Lung_Opacity"}
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"

__all__ = [
    "AUTHOR_LABELS",
    "CLASS_NAMES",
    "DATASET_DIRNAME",
    "PAPER_COUNTS",
    "FoldLists",
    "ImageIndex",
    "ImageSequence",
    "ResolvedFolds",
    "find_dataset_root",
    "list_images",
    "read_fold_lists",
    "resolve_folds",
    "scan",
    "split_fold",
    "stratified_folds",
]


def _check_class_names(class_names) -> tuple[str, ...]:
    class_names = tuple(class_names)
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"Expected a non-empty sequence of distinct class names. Received: {class_names!r}"
        )
    return class_names


# ----------------------------------------------------------------------------------------------
# Finding and listing
# ----------------------------------------------------------------------------------------------
def _has_class_dirs(path: Path, class_names) -> bool:
    return all((path / c).is_dir() for c in class_names)


def find_dataset_root(path, class_names=CLASS_NAMES) -> Path:
    """Returns the directory that holds the class folders.

    Accepts the dataset root itself (the directory containing ``COVID``, ``Lung_Opacity``,
    ``Normal``, ``Viral Pneumonia``) or its parent (containing ``COVID-19_Radiography_Dataset``).

    Args:
        path: Dataset root or its parent.
        class_names: Class folder names that must all be present.

    Returns:
        The dataset root as a `Path`.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If neither `path` nor `path/COVID-19_Radiography_Dataset` holds all class
            folders; the message lists what was found.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp())
        >>> for c in CLASS_NAMES:
        ...     (p / DATASET_DIRNAME / c / "images").mkdir(parents=True)
        >>> find_dataset_root(p) == find_dataset_root(p / DATASET_DIRNAME) == p / DATASET_DIRNAME
        True
    """
    class_names = _check_class_names(class_names)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Data directory does not exist. Received: data_dir={str(p)!r}")
    if not p.is_dir():
        raise ValueError(f"Expected a directory. Received: data_dir={str(p)!r}")
    for cand in (p, p / DATASET_DIRNAME):
        if cand.is_dir() and _has_class_dirs(cand, class_names):
            return cand
    found = sorted(d.name for d in p.iterdir() if d.is_dir())[:20]
    raise ValueError(
        f"Expected the dataset root (with class folders {list(class_names)}) or its parent "
        f"(with a {DATASET_DIRNAME!r} folder). Received: data_dir={str(p)!r}, which contains the "
        f"folders {found}. Point --data-dir at the unpacked Kaggle 'COVID-19 Radiography "
        "Database'."
    )


def _subfolders(path: Path) -> list:
    return sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _paper_root(p: Path):
    """The Kaggle root under ``p`` (``p`` itself or its ``DATASET_DIRNAME`` child), or None.

    A folder is taken for the Kaggle data set when it is named `DATASET_DIRNAME`, has such a
    child, or holds three or more of the paper's class folders; then all four must be there.
    """
    for cand in (p / DATASET_DIRNAME, p):
        if not cand.is_dir():
            continue
        present = [c for c in CLASS_NAMES if (cand / c).is_dir()]
        if len(present) == len(CLASS_NAMES):
            return cand
        if cand.name == DATASET_DIRNAME or len(present) >= 3:
            missing = [c for c in CLASS_NAMES if c not in present]
            raise ValueError(
                f"Expected the four class folders of the Kaggle COVID-19 Radiography Database "
                f"in {str(cand)!r}. Missing: {missing}; found: {_subfolders(cand)[:20]}."
            )
    return None


def find_class_folders(path) -> tuple:
    """The data set root and its class names, for any folder of class sub-folders.

    With the Kaggle layout (the four paper classes, in `path` or in its
    ``COVID-19_Radiography_Dataset`` child) the classes are `CLASS_NAMES`, in the paper's
    order. Otherwise every non-hidden sub-folder of `path` is a class, in sorted order; there
    must be two or more. Whether a class folder holds images is checked by `list_images`.

    Args:
        path: The ``--data-dir`` folder.

    Returns:
        ``(root, class_names)``: a `Path` and a tuple of str.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If `path` is not a folder, has fewer than two class folders, or looks like
            the Kaggle data set with class folders missing (the message names them).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp())
        >>> for c in ("dog", "cat", "fox"):
        ...     (p / c).mkdir()
        >>> find_class_folders(p)[1]
        ('cat', 'dog', 'fox')
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Data directory does not exist. Received: data_dir={str(p)!r}")
    if not p.is_dir():
        raise ValueError(f"Expected a directory. Received: data_dir={str(p)!r}")
    root = _paper_root(p)
    if root is not None:
        return root, tuple(CLASS_NAMES)
    found = _subfolders(p)
    if len(found) < 2:
        raise ValueError(
            "Expected a folder with two or more class sub-folders (<class>/*.png or "
            f"<class>/images/*.png) or the Kaggle COVID-19 Radiography Database. Received: "
            f"data_dir={str(p)!r}, which contains the folders {found[:20]}."
        )
    return p, tuple(found)


@dataclasses.dataclass
class ImageIndex:
    """The images of a data set, one entry per file.

    Attributes:
        paths: File paths (str), grouped by class, natural order within a class.
        labels: `np.int64` array, index into `class_names`, taken from the class folder.
        names: File stems as in the Kaggle fold lists, e.g. ``"Normal-356"``.
        class_names: The class names the labels index.
        root: The dataset root.
        missing: Class names whose folder was absent or held no image.
        skipped: ``(path, reason)`` for files in the class folders that were not used (not an
            image file, a duplicate name up to case, or a link leading outside the root).
    """

    paths: list
    labels: np.ndarray
    names: list
    class_names: tuple = CLASS_NAMES
    root: str = ""
    missing: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict:
        """Images per class, in `class_names` order."""
        bc = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, bc, strict=True)}

    def name_to_index(self) -> dict:
        """Case-insensitive map from file stem to position."""
        return {n.lower(): i for i, n in enumerate(self.names)}


def list_images(root, class_names=CLASS_NAMES) -> ImageIndex:
    """Lists the images under a dataset root.

    The files are listed by `keras_freeze.list_class_images`: ``<root>/<class>/images/*`` (the
    Kaggle layout, which also holds ``masks/``) or, if a class has no ``images`` folder,
    ``<root>/<class>/*``, with the library's image extensions (any case), in natural order.
    On top of that this adds what is particular to the Kaggle data: the root may be given as
    its parent (`find_dataset_root`), each image gets the file stem the authors' fold lists
    use, and (for the paper's classes) a second file with the same stem (up to case) is
    skipped, as fold lists could not tell the two apart. A file that is a link leading outside
    the root is skipped (never read), as are the files of a class folder that is such a link.

    Args:
        root: Dataset root or its parent (passed through `find_dataset_root`).
        class_names: Class folders, in label order.

    Returns:
        An `ImageIndex`.

    Raises:
        ValueError: If no image is found at all (message names the root), or as
            `find_dataset_root`. Classes without an image are listed in ``missing``.

    Example:
        >>> import tempfile, synthetic
        >>> ds = synthetic.generate_synthetic_cxr(tempfile.mkdtemp(), n_total=8, image_size=32,
        ...                                       progress=False)
        >>> idx = list_images(ds)
        >>> idx.counts()
        {'COVID': 1, 'Lung_Opacity': 2, 'Normal': 4, 'Viral Pneumonia': 1}
    """
    class_names = _check_class_names(class_names)
    root = find_dataset_root(root, class_names)
    listed = keras_freeze.list_class_images(str(root), class_names=class_names)
    paths, labels, names = [], [], []
    skipped = list(listed.skipped)
    seen = {}
    inside = _InsideRoot(root)
    for path, label in zip(listed.paths, listed.labels.tolist(), strict=True):
        if not inside(path):
            skipped.append((path, "link leading outside the data directory"))
            continue
        stem = Path(path).stem
        # Fold lists name the paper's images by stem: a second file with it is skipped.
        key = stem.lower() if class_names == CLASS_NAMES else (label, path)
        if key in seen:
            skipped.append((path, f"duplicate name (case-insensitive) of {seen[key]}"))
            continue
        seen[key] = path
        paths.append(path)
        labels.append(label)
        names.append(stem)
    present = set(labels)
    missing = [c for i, c in enumerate(class_names) if i not in present]
    if not paths:
        raise ValueError(
            f"Expected images ({', '.join(keras_freeze.IMAGE_EXTENSIONS)}) under "
            f"{str(root)!r}/<class>/ or <class>/images/ for classes {list(class_names)}. "
            "Received: no image files."
        )
    return ImageIndex(
        paths, np.asarray(labels, dtype=np.int64), names, class_names, str(root), missing, skipped
    )


class _InsideRoot:
    """Whether a path, links resolved, stays inside the data set root."""

    def __init__(self, root):
        self.root = os.path.realpath(root)

    def __call__(self, path) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([self.root, real]) == self.root


# ----------------------------------------------------------------------------------------------
# Fold lists
# ----------------------------------------------------------------------------------------------
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
    class_names = _check_class_names(class_names)
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
        # sklearn cannot stratify this split; happens only for tiny data sets.
        warnings.warn(
            f"Cannot stratify a {n_val}-image validation split of {len(rest)} images with class "
            f"counts {present.tolist()}; splitting without stratification.",
            stacklevel=2,
        )
        stratify = None
    train, val = train_test_split(
        rest, test_size=val_fraction, stratify=stratify, random_state=seed
    )
    return np.asarray(train, np.int64), np.asarray(val, np.int64), test


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)
_RESAMPLE = {
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
}


def _as_hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    else:
        try:
            hw = tuple(int(v) for v in image_size)
        except TypeError:
            hw = ()
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(
            f"Expected image_size as a positive int or (height, width). Received: {image_size!r}"
        )
    return hw


def decode_image(path, image_size=224, interpolation: str = "bilinear") -> np.ndarray:
    """Decodes one image to uint8, resized to `image_size`.

    The pixels come from `keras_freeze.decode_image` (the library's one decoder: 8-bit images
    /255, 12- and 16-bit images scaled by their bit depth, never clipped; NaN/inf or out-of-range
    float pixels refused with the file named) and are rounded to 8 bits, then resized with
    Pillow's ``interpolation`` filter on the 8-bit image, as the paper's 8-bit pipeline did: an
    8-bit PNG gives exactly the pixels it gave before the shared decoder. Grayscale images stay
    one channel (``(H, W)``), everything else is RGB (``(H, W, 3)``); replicating the gray
    channel after resizing gives exactly ``convert("RGB")`` then resize.

    Raises:
        OSError, ValueError: If the file is missing or not a decodable image, or its pixels
            are not finite or out of range.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "ramp16.png")
        >>> ramp = np.tile(np.arange(0, 65536, 257, dtype=np.uint16), (4, 1))  # 16-bit ramp
        >>> Image.fromarray(ramp).save(path)
        >>> x = decode_image(path, (4, 256))
        >>> x.dtype, x.shape, int(x.min()), int(x.max()), int((x == 255).sum())
        (dtype('uint8'), (4, 256), 0, 255, 4)
    """
    h, w = _as_hw(image_size)
    if interpolation not in _RESAMPLE:
        raise ValueError(
            f"Expected interpolation in {sorted(_RESAMPLE)}. Received: {interpolation!r}"
        )
    unit = keras_freeze.decode_image(path, None, mode="rgb")
    arr = np.rint(unit * np.float32(255.0)).astype(np.uint8)
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = np.ascontiguousarray(arr[..., 0])  # gray: resize one channel, not three
    if arr.shape[:2] != (h, w):
        arr = np.asarray(Image.fromarray(arr).resize((w, h), _RESAMPLE[interpolation]))
    return arr


def scan(paths: Sequence[str], *, full: bool = False, workers: int = 4):
    """Checks image files before training.

    Args:
        paths: Image paths.
        full: If False (default), `PIL.Image.verify` (headers and PNG chunk checksums, cheap). If
            True, decode every image with `keras_freeze.decode_image`, the loader's decoder
            (catches everything the loader would, NaN pixels included; costs a decode).
        workers: Threads.

    Returns:
        ``(good_indices, bad)``: `np.int64` positions of readable files, and ``(path, reason)`` for
        the others.

    Example:
        >>> good, bad = scan(["/nonexistent.png"])
        >>> len(good), bad[0][0]
        (0, '/nonexistent.png')
    """

    def check(p):
        try:
            if full:  # the loader's own decoder: also refuses NaN/inf and out-of-range pixels
                keras_freeze.decode_image(p)
                return None
            with Image.open(p) as im:
                im.verify()
            return None
        except _DECODE_ERRORS as e:
            return f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max(1, int(workers))) as ex:
        results = list(ex.map(check, list(paths)))
    good = np.asarray([i for i, r in enumerate(results) if r is None], dtype=np.int64)
    bad = [(str(p), r) for p, r in zip(paths, results, strict=True) if r is not None]
    return good, bad


def rescale_1_255(x):
    """The notebooks' preprocessing: ``x / 255`` (``ImageDataGenerator(rescale=1/255)``)."""
    return x * np.float32(1.0 / 255.0)


class ImageSequence(keras.utils.PyDataset):
    """Batches of decoded, resized images and one-hot labels, for `model.fit` on any backend.

    Each item is ``(x, y)``: ``x`` float32 ``(B, H, W, 3)`` (NHWC), made by decoding PNG/JPEG files
    with Pillow (``convert("RGB")``, resize with BILINEAR), then ``preprocess`` applied to the
    float32 0..255 batch (default ``x / 255``, the authors' rescale); ``y`` float32 one-hot
    ``(B, num_classes)``.

    Speed: a batch's images are decoded on a thread pool (`decode_threads`; Pillow releases the GIL
    while decoding and resizing), ``workers - 1`` threads prepare the next batches of the epoch
    while the model trains on this one, grayscale files are decoded and resized as one channel,
    and ``cache=True`` keeps the resized uint8 images in memory so epochs after the first decode
    nothing.
    The look-ahead is the sequence's own, not Keras' ``PyDataset`` workers: Keras' prefetch queue
    carries batches read before an epoch ended (as after the batch ``fit`` reads to build the
    model on JAX and PyTorch) into the next epoch, so the batches a shuffled sequence gives would
    depend on ``workers`` and on timing. Here batch ``i`` of epoch ``e`` is a function of the seed,
    ``e`` and ``i`` only, whatever ``workers``.

    Failure handling: an image that cannot be read (missing, truncated, corrupt) is dropped from its
    batch and recorded in ``self.failed`` (path -> reason); later batches skip it without retrying.
    If every image of a batch fails, the next readable images of the sequence fill the batch, so a
    batch is never empty. Use `scan` before training to remove bad files up front.

    Shuffling: with ``shuffle=True`` the sample order is a permutation drawn from
    ``default_rng([seed, epoch])``, re-drawn in `on_epoch_end`; equal seeds give equal orders.
    (`model.fit(shuffle=True)` additionally shuffles the order of *batches* with Python's `random`,
    in a prefetch thread when ``workers > 1``, so the order then depends on ``workers``; pass
    ``shuffle=False`` to fit, as the example does, for an order that depends on the seed only.)

    Args:
        paths: Image paths.
        labels: Integer class labels, one per path.
        num_classes: Number of classes (one-hot depth).
        image_size: Output side (int) or ``(height, width)``.
        batch_size: Images per batch.
        shuffle: Shuffle samples every epoch.
        seed: Shuffle seed (None: fresh entropy).
        preprocess: Callable on the float32 0..255 NHWC batch, returning the model input
            (e.g. ``functools.partial(backbone.preprocess_input, weights="torchvision")``);
            default `rescale_1_255`.
        workers: Batches being made at once: the requested one and ``workers - 1`` following
            ones, on threads; > 1 overlaps decoding with training.
        decode_threads: Threads decoding the images of one batch (1 disables the pool).
        cache: Keep decoded, resized uint8 images in memory.
        interpolation: Pillow resize filter: "bilinear" (default), "nearest" (what
            `flow_from_directory` uses by default), "bicubic", "lanczos", "box".

    Raises:
        ValueError: On mismatched lengths, empty input, labels out of range or bad sizes.

    Example:
        >>> import tempfile, synthetic
        >>> ds = synthetic.generate_synthetic_cxr(tempfile.mkdtemp(), n_total=8, image_size=32,
        ...                                       progress=False)
        >>> idx = list_images(ds)
        >>> seq = ImageSequence(idx.paths, idx.labels, image_size=24, batch_size=4)
        >>> x, y = seq[0]
        >>> x.shape, y.shape, float(x.max()) <= 1.0
        ((4, 24, 24, 3), (4, 4), True)

        Training: ``model.fit(seq, validation_data=ImageSequence(...), epochs=...)``.
    """

    def __init__(
        self,
        paths,
        labels,
        *,
        num_classes: int = 4,
        image_size=224,
        batch_size: int = 8,
        shuffle: bool = False,
        seed=None,
        preprocess: Callable | None = None,
        workers: int = 2,
        decode_threads: int = 2,
        cache: bool = False,
        interpolation: str = "bilinear",
    ):
        super().__init__()  # Keras' own workers would reorder batches (see above)
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.paths) != len(self.labels):
            raise ValueError(
                "Expected one label per path. Received: "
                f"len(paths)={len(self.paths)}, len(labels)={len(self.labels)}"
            )
        if not self.paths:
            raise ValueError("Expected at least one image. Received: paths=[]")
        if int(num_classes) < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
        if self.labels.min() < 0 or self.labels.max() >= num_classes:
            raise ValueError(
                f"Expected labels in [0, {num_classes - 1}]. Received: labels in "
                f"[{self.labels.min()}, {self.labels.max()}]"
            )
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}")
        if isinstance(workers, bool) or int(workers) < 1:
            raise ValueError(f"Expected workers >= 1. Received: workers={workers!r}")
        if interpolation not in _RESAMPLE:
            raise ValueError(
                f"Expected interpolation in {sorted(_RESAMPLE)}. Received: {interpolation!r}"
            )
        if preprocess is not None and not callable(preprocess):
            raise ValueError(f"Expected a callable preprocess. Received: {preprocess!r}")
        self.num_classes = int(num_classes)
        self.image_size = _as_hw(image_size)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.preprocess = preprocess if preprocess is not None else rescale_1_255
        self.decode_threads = max(1, int(decode_threads))
        self.lookahead = int(workers) - 1
        self.cache = bool(cache)
        self.interpolation = interpolation
        self.failed: dict[str, str] = {}
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}
        self._pool = None
        self._ahead_pool = None
        self._ahead: dict[tuple[int, int], Future] = {}  # (epoch, index) -> batch being made
        self._pool_lock = threading.Lock()
        self._state_lock = threading.Lock()  # epoch, order and look-ahead change together
        self._order = self._make_order()

    # -- order -------------------------------------------------------------------------------
    def _make_order(self) -> np.ndarray:
        n = len(self.paths)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([int(self.seed), int(self.epoch)]).permutation(n)

    @property
    def order(self) -> np.ndarray:
        """Sample positions in the order of the current epoch."""
        return self._order

    def kept_indices(self) -> np.ndarray:
        """Positions, in the current order, of the images not (yet) recorded as failed.

        After a `model.predict(seq)` pass (with ``shuffle=False``), ``labels[kept_indices()]`` are
        the true labels of the predicted rows, unless a whole batch failed (then it was filled with
        other images). Running `scan` first and dropping bad files avoids both cases.
        """
        bad = self.failed
        return np.asarray([i for i in self._order if self.paths[i] not in bad], dtype=np.int64)

    def on_epoch_end(self):
        with self._state_lock:
            self.epoch += 1
            self._order = self._make_order()
            stale, self._ahead = self._ahead, {}  # batches of the old order are never served
        for future in stale.values():
            future.cancel()

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    # -- decoding ----------------------------------------------------------------------------
    def _executor(self, name, threads):
        """The thread pool in attribute ``name`` (``_pool``, ``_ahead_pool``), made on first use."""
        if getattr(self, name) is None:
            with self._pool_lock:
                if getattr(self, name) is None:
                    setattr(self, name, ThreadPoolExecutor(threads))
        return getattr(self, name)

    def _load(self, i: int):
        """Returns the uint8 image at position i, or None (and records why) if unreadable."""
        arr = self._cache.get(i)
        if arr is not None:
            return arr
        p = self.paths[i]
        if p in self.failed:
            return None
        try:
            arr = decode_image(p, self.image_size, self.interpolation)
        except _DECODE_ERRORS as e:
            self.failed[p] = f"{type(e).__name__}: {e}"
            return None
        if self.cache:
            self._cache[i] = arr
        return arr

    def _load_many(self, positions):
        if self.decode_threads > 1 and len(positions) > 1:
            return list(self._executor("_pool", self.decode_threads).map(self._load, positions))
        return [self._load(i) for i in positions]

    def __getitem__(self, index):
        n_batches = len(self)
        if index < 0:
            index += n_batches
        if not 0 <= index < n_batches:
            raise IndexError(f"Batch index {index} out of range [0, {n_batches}).")
        with self._state_lock:
            epoch, order = self.epoch, self._order
            future = self._ahead.pop((epoch, index), None)
        batch = future.result() if future is not None else self._batch(order, index)
        if self.lookahead:  # the next batches of this epoch, while the model trains on this one
            with self._state_lock:
                ahead = range(index + 1, min(index + 1 + self.lookahead, n_batches))
                for j in ahead if self.epoch == epoch else ():
                    if (epoch, j) not in self._ahead:
                        made = self._executor("_ahead_pool", self.lookahead).submit(
                            self._batch, order, j
                        )
                        self._ahead[(epoch, j)] = made
        return batch

    def _batch(self, order, index):
        """Batch ``index`` of the epoch whose sample order is ``order``."""
        pos = order[index * self.batch_size : (index + 1) * self.batch_size]
        imgs = self._load_many(pos)
        keep = [(i, a) for i, a in zip(pos, imgs, strict=True) if a is not None]
        if not keep:
            keep = self._fill(order, index, len(pos))
        h, w = self.image_size
        x = np.empty((len(keep), h, w, 3), dtype=np.uint8)
        for j, (_, a) in enumerate(keep):
            x[j] = a[..., None] if a.ndim == 2 else a
        y = np.zeros((len(keep), self.num_classes), dtype=np.float32)
        y[np.arange(len(keep)), self.labels[[i for i, _ in keep]]] = 1.0
        xf = x.astype(np.float32)
        if self.preprocess is rescale_1_255:
            xf *= np.float32(1.0 / 255.0)  # in place: one pass less over the batch
        else:
            xf = self.preprocess(xf)
        if isinstance(xf, np.ndarray) and xf.dtype != np.float32:
            xf = xf.astype(np.float32)
        return xf, y

    def _fill(self, order, index, k):
        """All images of batch `index` failed: take the next readable ones (wrapping around)."""
        n = len(self.paths)
        start = ((index + 1) * self.batch_size) % n
        out = []
        for step in range(n):
            i = int(order[(start + step) % n])
            a = self._load(i)
            if a is not None:
                out.append((i, a))
                if len(out) == k:
                    break
        if not out:
            raise RuntimeError(
                f"No readable image among {n} paths; first failures: "
                f"{list(self.failed.items())[:3]}"
            )
        return out

    def __del__(self):
        for name in ("_pool", "_ahead_pool"):
            pool = getattr(self, name, None)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def __getstate__(self):  # picklable (to another process): without threads or pending work
        state = self.__dict__.copy()
        state.update(_pool=None, _ahead_pool=None, _ahead={}, _pool_lock=None, _state_lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
        self._state_lock = threading.Lock()
