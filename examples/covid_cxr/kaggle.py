"""The Kaggle "COVID-19 Radiography Database" layout, and any folder of class sub-folders.

Layout, class order and what is skipped when listing: docs/covid_cxr_data.md."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from protocol import CLASS_NAMES
from protocol import DATASET_DIRNAME

import keras_freeze


def check_class_names(class_names) -> tuple[str, ...]:
    """``class_names`` as a tuple; `ValueError` if empty or not distinct.

    >>> check_class_names(["b", "a"])
    ('b', 'a')
    """
    class_names = tuple(class_names)
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"Expected a non-empty sequence of distinct class names. Received: {class_names!r}"
        )
    return class_names


def _existing_dir(path) -> Path:
    """``path`` (``~`` expanded) if it is a directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Data directory does not exist. Received: data_dir={str(p)!r}")
    if not p.is_dir():
        raise ValueError(f"Expected a directory. Received: data_dir={str(p)!r}")
    return p


def find_dataset_root(path, class_names=CLASS_NAMES) -> Path:
    """``path`` or its `DATASET_DIRNAME` child, whichever holds all ``class_names`` folders."""
    class_names = check_class_names(class_names)
    p = _existing_dir(path)
    for cand in (p, p / DATASET_DIRNAME):
        if cand.is_dir() and all((cand / c).is_dir() for c in class_names):
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


def find_class_folders(path) -> tuple:
    """``(root, class_names)``: `CLASS_NAMES` for the Kaggle layout (in `path` or its
    `DATASET_DIRNAME` child), else the two or more non-hidden sub-folders of `path`, sorted.

    A folder named `DATASET_DIRNAME` or with three of the paper's class folders must hold all four.
    """
    p = _existing_dir(path)
    for cand in (p / DATASET_DIRNAME, p):
        if not cand.is_dir():
            continue
        present = [c for c in CLASS_NAMES if (cand / c).is_dir()]
        if len(present) == len(CLASS_NAMES):
            return cand, tuple(CLASS_NAMES)
        if cand.name == DATASET_DIRNAME or len(present) >= 3:
            missing = [c for c in CLASS_NAMES if c not in present]
            raise ValueError(
                f"Expected the four class folders of the Kaggle COVID-19 Radiography Database "
                f"in {str(cand)!r}. Missing: {missing}; found: {_subfolders(cand)[:20]}."
            )
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
    """Whether ``name`` (from ``os.fsdecode``) came from valid UTF-8: no lone surrogate."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name)


@dataclasses.dataclass
class ImageIndex:
    """A data set's images in natural order; ``names``: stems as in fold lists, ``missing``:
    empty classes, ``skipped``: (path, reason)."""

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
        bc = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, bc, strict=True)}

    def name_to_index(self) -> dict:
        """Lower-cased file stem -> position."""
        return {n.lower(): i for i, n in enumerate(self.names)}


def list_images(root, class_names=CLASS_NAMES) -> ImageIndex:
    """A dataset root's (or its parent's) images as an `ImageIndex`; `ValueError` if none."""
    class_names = check_class_names(class_names)
    root = find_dataset_root(root, class_names)
    listed = keras_freeze.list_class_images(str(root), class_names=class_names)
    paths, labels, names, seen = [], [], [], {}
    skipped = list(listed.skipped)
    real_root = os.path.realpath(root)
    for path, label in zip(listed.paths, listed.labels.tolist(), strict=True):
        stem = Path(path).stem
        key = stem.lower() if class_names == CLASS_NAMES else (label, path)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            skipped.append((path, "link leading outside the data directory"))
        elif not _is_utf8(path):  # records, logs and fold lists name files in UTF-8
            skipped.append((path, "name is not valid UTF-8 (rename the file)"))
        elif key in seen:
            skipped.append((path, f"duplicate name (case-insensitive) of {seen[key]}"))
        else:
            seen[key] = path
            paths.append(path)
            labels.append(label)
            names.append(stem)
    if not paths:
        raise ValueError(
            f"Expected images ({', '.join(keras_freeze.IMAGE_EXTENSIONS)}) under "
            f"{str(root)!r}/<class>/ or <class>/images/ for classes {list(class_names)}. "
            "Received: no image files."
        )
    labels = np.asarray(labels, dtype=np.int64)
    missing = [c for i, c in enumerate(class_names) if i not in labels]
    return ImageIndex(paths, labels, names, class_names, str(root), missing, skipped)
