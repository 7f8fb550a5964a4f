"""The Kaggle "COVID-19 Radiography Database" layout, and any folder of class sub-folders.

Finds the data set root and its classes and lists the images (on `keras_freeze.list_class_images`)::

    COVID-19_Radiography_Dataset/
        COVID/images/COVID-1.png ...
        Lung_Opacity/images/Lung_Opacity-1.png ...
        Normal/images/Normal-1.png ...
        Viral Pneumonia/images/Viral Pneumonia-1.png ...

Class indices are the Kaggle folder names in sorted order, `protocol.CLASS_NAMES` (also the
paper's alpha order). Any other folder of two or more class sub-folders works too, its classes
named by the folders. Fold lists and splits are `folds.py`'s.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from protocol import CLASS_NAMES
from protocol import DATASET_DIRNAME

import keras_freeze


def check_class_names(class_names) -> tuple[str, ...]:
    class_names = tuple(class_names)
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"Expected a non-empty sequence of distinct class names. Received: {class_names!r}"
        )
    return class_names


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
    class_names = check_class_names(class_names)
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
    odd = [name for name in found if not _is_utf8(name)]
    if odd:
        raise ValueError(
            f"Expected class folder names in UTF-8 (they name the classes in every output). "
            f"Received: {odd[:3]} in {str(p)!r}; rename the folders"
        )
    return p, tuple(found)


def _is_utf8(name: str) -> bool:
    """Whether ``name`` (listed with ``os.fsdecode``) came from valid UTF-8 bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    class_names = check_class_names(class_names)
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
        if not _is_utf8(path):  # records, logs and fold lists name files in UTF-8
            skipped.append((path, "name is not valid UTF-8 (rename the file)"))
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
