"""Class-folder image data sets: listing the files and decoding them to grayscale.

`list_class_images` is the one lister of the library: it reads the layout of
the COVID-19 Radiography Database (`<root>/<class>/images/*.png`, with a
`masks/` folder next to `images/`) and the plain `<root>/<class>/*.png`
layout of `keras.utils.image_dataset_from_directory`. The estimator
(`estimate_class_attention` on a directory) reads the files it lists, decoded
here with Pillow.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from keras_freeze import _validation as check

__all__ = ["IMAGE_EXTENSIONS", "ClassImages", "list_class_images"]

#: File extensions recognised as images (matched case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Files that operating systems drop into folders: skipped without a report.
_JUNK_FILES = ("desktop.ini", "thumbs.db", ".ds_store")


def _natural_key(name):
    """Sort key for natural order: "img2" < "img10", case-insensitive."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


@dataclasses.dataclass(frozen=True, eq=False)
class ClassImages:
    """The image files of a class-folder data set, from `list_class_images`.

    Attributes:
        root: The directory listed, as given (a str).
        class_names: Tuple of class names; `labels` index it.
        paths: Tuple of file paths (str), grouped by class in class order,
            natural order within a class.
        labels: Read-only int64 array, the class index of each path.
        skipped: Tuple of `(path, reason)` for entries of the class folders
            that are not used (non-image files, directories named like
            images). Hidden files and OS junk (`Thumbs.db`, `desktop.ini`)
            are left out silently.

    Example:

    >>> images = ClassImages("data", ("a", "b"), ("data/a/1.png", "data/b/1.png"), [0, 1])
    >>> len(images), images.counts()
    (2, {'a': 1, 'b': 1})
    """

    root: str
    class_names: tuple
    paths: tuple
    labels: np.ndarray
    skipped: tuple = ()

    def __post_init__(self):
        labels = np.array(self.labels, dtype=np.int64, copy=True).reshape(-1)
        labels.setflags(write=False)
        object.__setattr__(self, "root", os.fspath(self.root))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "paths", tuple(os.fspath(p) for p in self.paths))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "skipped", tuple((str(p), str(r)) for p, r in self.skipped))
        if len(labels) != len(self.paths):
            raise ValueError(
                "Expected one label per path. Received: "
                f"{len(self.paths)} paths and {len(labels)} labels."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(
                f"Expected labels in [0, {len(self.class_names) - 1}] (one per class name). "
                f"Received: labels in [{labels.min()}, {labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Number of images per class, in `class_names` order."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, counts, strict=True)}

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return (
            (self.root, self.class_names, self.paths, self.skipped)
            == (other.root, other.class_names, other.paths, other.skipped)
        ) and np.array_equal(self.labels, other.labels)

    __hash__ = None


def _class_folders(root, class_names):
    """The class names to read: all non-hidden sub-folders, or the checked `class_names`."""
    if not os.path.isdir(root):
        raise ValueError(
            "Expected an existing directory of class sub-folders. "
            f"Received: directory={root!r} (not a directory)"
        )
    try:
        with os.scandir(root) as entries:
            found = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise ValueError(f"Cannot read directory {root!r}: {e}") from e
    if class_names is None:
        names = found
    else:
        names = check.distinct_names(class_names)
        missing = [c for c in names if c not in found]
        if missing:
            raise ValueError(
                f"Expected a sub-folder per class name in {root!r}. Missing: {missing}; "
                f"found sub-folders: {found}"
            )
    if not names:
        raise ValueError(
            f"Expected class sub-folders in {root!r} (e.g. <root>/<class>/*.png or the "
            "Kaggle layout <root>/<class>/images/*.png). Received: no sub-folders "
            "(an empty directory or files only)."
        )
    return names


def _skip_reason(entry):
    """None for an image file to use, "" to skip silently, else the reason."""
    name = entry.name
    if name.startswith(".") or name.lower() in _JUNK_FILES:
        return ""  # hidden files, AppleDouble `._x.png`, OS junk
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        return "a directory" if entry.is_dir() else "not an image file"
    if not entry.is_file():
        kind = "a directory" if entry.is_dir() else "not a regular file"
        return f"{kind} named like an image"
    return None


def _list_folder(folder):
    """(image paths, skipped pairs) of one class folder, in natural order."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: _natural_key(e.name))
    except OSError as e:
        raise ValueError(f"Cannot read class folder {folder!r}: {e}") from e
    paths, skipped = [], []
    for entry in entries:
        reason = _skip_reason(entry)
        if reason is None:
            paths.append(os.path.join(folder, entry.name))
        elif reason:
            skipped.append((os.path.join(folder, entry.name), reason))
    return paths, skipped


def list_class_images(
    directory: str | os.PathLike, class_names: Sequence[str] | None = None
) -> ClassImages:
    """Lists the images of a data set stored as one sub-folder per class.

    Class `c`'s images are the files of `<directory>/<c>/images/` if that
    folder exists (the Kaggle layout of the COVID-19 Radiography Database,
    whose `<c>/masks/` is ignored), else of `<directory>/<c>/`. A file is an
    image when its extension is in `IMAGE_EXTENSIONS` (any case). Hidden
    files (including macOS `._x.png` companions) and OS junk (`Thumbs.db`,
    `desktop.ini`) are skipped silently; other entries that are not image
    files, such as a `notes.txt` or a directory named `x.png`, are skipped
    and reported in `skipped`. Files are in natural order (`img2` before
    `img10`, case-insensitive). Nothing is decoded.

    Args:
        directory: The data set root (str or path).
        class_names: The class folders to read, in label order. Defaults to
            `None`: every non-hidden sub-folder, sorted by name.

    Returns:
        A `ClassImages` with the paths, their labels and the skipped entries.

    Raises:
        ValueError: If `directory` is not a directory or has no sub-folders,
            or a class in `class_names` has no folder (the message lists the
            missing and the existing folders), or names repeat.

    Example:

    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for path in ["cat/images/img10.png", "cat/images/img2.png", "cat/masks/m.png",
    ...              "dog/a.JPG", "dog/notes.txt"]:
    ...     (root / path).parent.mkdir(parents=True, exist_ok=True)
    ...     (root / path).touch()
    >>> images = list_class_images(root)
    >>> images.class_names, images.counts()
    (('cat', 'dog'), {'cat': 2, 'dog': 1})
    >>> [pathlib.Path(p).name for p in images.paths], images.labels.tolist()
    (['img2.png', 'img10.png', 'a.JPG'], [0, 0, 1])
    >>> [(pathlib.Path(p).name, why) for p, why in images.skipped]
    [('notes.txt', 'not an image file')]
    """
    root = os.fspath(directory)
    names = _class_folders(root, class_names)
    paths, labels, skipped = [], [], []
    for index, name in enumerate(names):
        folder = os.path.join(root, name)
        if os.path.isdir(os.path.join(folder, "images")):
            folder = os.path.join(folder, "images")
        found, bad = _list_folder(folder)
        paths.extend(found)
        labels.extend([index] * len(found))
        skipped.extend(bad)
    return ClassImages(root, tuple(names), tuple(paths), labels, tuple(skipped))


# --------------------------------------------------------------------------
# Decoding (used by the attention estimator)
# --------------------------------------------------------------------------


def _pil_image():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - Pillow is a dependency
        raise ImportError(
            "keras_freeze needs Pillow to decode and resize images. "
            "Install it with `pip install Pillow`."
        ) from error
    return Image


def _load_gray(path):
    """Decodes one image file to a 2-D float32 grayscale array (PIL mode 'L')."""
    image = _pil_image()
    with image.open(path) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grayscale
            return np.asarray(im, dtype=np.float32)
        return np.asarray(im.convert("L"), dtype=np.float32)


def _resize_gray(img, size):
    """2-D float image -> float32 (size, size) with Pillow BILINEAR (antialiased)."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape == (size, size):
        return np.array(img, dtype=np.float32, copy=True)
    image = _pil_image()
    out = image.fromarray(np.ascontiguousarray(img), mode="F").resize(
        (size, size), image.Resampling.BILINEAR
    )
    return np.asarray(out, dtype=np.float32)


def _to_gray(img):
    """HxW, HxWx1 or HxWx3 array -> HxW float32 (ITU-R 601-2 luma, as PIL 'L')."""
    img = np.asarray(img)
    if img.ndim == 3:
        if img.shape[-1] == 1:
            img = img[..., 0]
        else:  # 3 channels (validated upstream)
            img = img.astype(np.float32)
            img = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    return img.astype(np.float32, copy=False)


def _decode_resized(path, image_size):
    """(image, None) for a readable file, else (None, the exception)."""
    try:
        return _resize_gray(_load_gray(path), image_size), None
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return None, e
