"""Class-folder image data sets: listing the files and decoding them to [0, 1].

`list_class_images` is the one lister of the library: it reads the layout of
the COVID-19 Radiography Database (`<root>/<class>/images/*.png`, with a
`masks/` folder next to `images/`) and the plain `<root>/<class>/*.png`
layout of `keras.utils.image_dataset_from_directory`. The estimator
(`estimate_class_attention` on a directory) reads the files it lists, decoded
by `decode_image`, the one decoder of the library (Pillow), which maps every
bit depth (8-bit, 12/16-bit radiographs, float TIFF) to float32 in [0, 1].
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from keras_freeze import _dicom
from keras_freeze import _validation as check

__all__ = ["IMAGE_EXTENSIONS", "ClassImages", "decode_image", "list_class_images"]

#: File extensions recognised as images (matched case-insensitively); `.dcm`
#: files are read with pydicom (the `dicom` extra), the others with Pillow.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm")
# Extensions of the files read with pydicom.
_DICOM_EXTENSIONS = (".dcm",)

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
        object.__setattr__(self, "root", os.fsdecode(self.root))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "paths", tuple(os.fsdecode(p) for p in self.paths))
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


def _path_argument(name, value):
    """`value` (str, bytes or path-like) as a str path; bytes via `os.fsdecode`."""
    try:
        return os.fsdecode(os.fspath(value))
    except TypeError:
        raise ValueError(
            f"Expected {name} to be a path (str, bytes or os.PathLike). "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        ) from None


def _is_dir(entry):
    """`entry.is_dir()`, False for an entry that cannot be read (e.g. a symlink loop)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _class_folders(root, class_names):
    """The class names to read: all non-hidden sub-folders, or the checked `class_names`."""
    if not os.path.isdir(root):
        raise ValueError(
            "Expected an existing directory of class sub-folders. "
            f"Received: directory={root!r} (not a directory)"
        )
    try:
        with os.scandir(root) as entries:
            found = sorted(e.name for e in entries if _is_dir(e) and not e.name.startswith("."))
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
    try:
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            return "a directory" if entry.is_dir() else "not an image file"
        if not entry.is_file():
            kind = "a directory" if entry.is_dir() else "not a regular file"
            return f"{kind} named like an image"
    except OSError as error:  # e.g. a symlink that points to itself (ELOOP)
        return f"cannot be read ({error.strerror or error})"
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
    and reported in `skipped`, as is an entry that cannot be read (a
    symbolic link that points to itself). Files are in natural order (`img2`
    before `img10`, case-insensitive). Nothing is decoded.

    Paths are str: a name that is not valid UTF-8 (on POSIX) is decoded with
    `os.fsdecode` (surrogate escapes), so `os.fsencode(path)` gives its bytes
    back and `decode_image(path)` opens it.

    Args:
        directory: The data set root (str, bytes or path).
        class_names: The class folders to read, in label order (a list of
            str, not one bare str). Defaults to `None`: every non-hidden
            sub-folder, sorted by name.

    Returns:
        A `ClassImages` with the paths, their labels and the skipped entries.

    Raises:
        ValueError: If `directory` is not a path or not a directory or has no
            sub-folders, or a class in `class_names` has no folder (the
            message lists the missing and the existing folders), or names
            repeat, or `class_names` is a bare string.

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
    root = _path_argument("directory", directory)
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
# Decoding: one decoder for the estimator and the examples
# --------------------------------------------------------------------------

#: `interpolation` names of `decode_image` (Pillow resampling filters).
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos", "box")
#: Bit depths tried, in order, for integer images deeper than 8 bits.
BIT_DEPTHS = (8, 10, 12, 14, 16)
# Pillow modes of integer images wider than 8 bits (one channel).
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# 8-bit (or 1-bit) modes without colour: decoded as one channel.
_GRAY_MODES = ("1", "L", "LA", "La")


def _pil_image():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - Pillow is a dependency
        raise ImportError(
            "keras_freeze needs Pillow to decode and resize images. "
            "Install it with `pip install Pillow`."
        ) from error
    return Image


def _target_size(image_size):
    """`None` or `(height, width)` from `image_size` (None, an int or a pair)."""
    if image_size is None:
        return None
    if check.is_integer(image_size):
        hw = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = tuple(image_size)
    else:
        hw = ()
    if len(hw) != 2 or not all(check.is_integer(v) and v >= 1 for v in hw):
        raise ValueError(
            "Expected image_size to be None, an int >= 1 or a (height, width) pair of ints "
            f">= 1. Received: image_size={image_size!r}"
        )
    return int(hw[0]), int(hw[1])


def _wide_int_to_unit(values, path):
    """Integer pixels (16-bit or `I` mode) -> float32 in [0, 1] by their bit depth."""
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high >= 2 ** BIT_DEPTHS[-1]:
        raise ValueError(
            f"Expected integer pixels in [0, 65535] (at most 16 bits) in image {path!r}. "
            f"Received: values in [{low}, {high}]. Convert the image to 8 or 16 bits "
            "(e.g. rescale to [0, 65535] and save as a 16-bit PNG)."
        )
    bits = next(b for b in BIT_DEPTHS if high < 2**b)
    return (values.astype(np.float64) / (2**bits - 1)).astype(np.float32)


def _float_to_unit(values, path):
    """Float pixels (mode `F`): used as they are when finite and in [0, 1]."""
    finite = np.isfinite(values)
    if not np.all(finite):
        bad = int(values.size - np.count_nonzero(finite))
        raise ValueError(
            f"Expected finite pixel values in image {path!r}. Received: {bad} pixel(s) of "
            f"{values.size} are NaN or infinite. Fix or remove the file."
        )
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"Expected float pixel values in [0, 1] in image {path!r}. Received: values in "
            f"[{low:.6g}, {high:.6g}]. Rescale the image to [0, 1] (e.g. divide by its "
            "maximum) or save it as an 8- or 16-bit integer image; float images are never "
            "rescaled or clipped silently."
        )
    return values.astype(np.float32, copy=False)


def _to_unit_array(im, mode, path):
    """A loaded Pillow image -> float32 array in [0, 1]: `(H, W)`, or `(H, W, 3)` for 8-bit RGB.

    Grayscale sources stay `(H, W)` (the caller replicates them to RGB after
    resizing, which equals converting first).
    """
    if im.mode in _WIDE_INT_MODES:
        return _wide_int_to_unit(np.asarray(im), path)
    if im.mode == "F":
        return _float_to_unit(np.asarray(im, dtype=np.float32), path)
    target = "L" if mode == "gray" or im.mode in _GRAY_MODES else "RGB"
    if im.mode != target:
        im = _convert(im, target, path)
    return np.asarray(im, dtype=np.float32) / np.float32(255.0)


def _convert(im, target, path):
    """`im.convert(target)`; "L" through "RGB" for modes Pillow turns into RGB only (LAB)."""
    try:
        try:
            return im.convert(target)
        except ValueError:  # "conversion from LAB to RGB not supported" (LAB -> L)
            if target != "L":
                raise
            return im.convert("RGB").convert("L")
    except (ValueError, OSError) as error:
        raise OSError(
            f"Cannot convert image file {path!r} (Pillow mode {im.mode!r}) to {target!r}: "
            f"{error}. Save it as grayscale or RGB (8 or 16 bits)."
        ) from error


def _resize(array, size, interpolation):
    """`(H, W)` or `(H, W, C)` float32 -> `size` = (height, width), per channel in float."""
    if array.shape[:2] == size:
        return array
    image = _pil_image()
    resample = getattr(image.Resampling, interpolation.upper())
    height, width = size

    def one(channel):
        resized = image.fromarray(np.ascontiguousarray(channel), mode="F").resize(
            (width, height), resample
        )
        return np.asarray(resized, dtype=np.float32)

    if array.ndim == 2:
        resized = one(array)
    else:
        resized = np.stack([one(array[..., c]) for c in range(array.shape[-1])], axis=-1)
    return resized


#: EXIF Orientation values whose display swaps width and height (a quarter turn).
_QUARTER_TURNS = (5, 6, 7, 8)


def _exif_orientation(im):
    """The EXIF Orientation (1-8) of a Pillow image; 1 (as stored) when absent or invalid."""
    try:
        value = im.getexif().get(0x0112, 1)  # 0x0112: the Orientation tag
    except Exception:  # noqa: BLE001 - unreadable EXIF: use the pixels as stored
        return 1
    return value if check.is_integer(value) and 1 <= value <= 8 else 1


def _upright(im):
    """`im` turned as its EXIF Orientation says (a new image), or `im` itself."""
    if _exif_orientation(im) == 1:
        return im
    from PIL import ImageOps

    turned = ImageOps.exif_transpose(im)
    im.close()
    return turned


def _open_and_convert(path, mode, size):
    """Opens `path` and returns its pixels as float32 in [0, 1] (see `decode_image`)."""
    image = _pil_image()
    im = None
    try:
        im = image.open(path)
        if size is not None:  # JPEG: decode at the smallest DCT scale >= size
            turned = _exif_orientation(im) in _QUARTER_TURNS
            im.draft(None, size if turned else size[::-1])  # draft takes (width, height)
        im.load()
        im = _upright(im)
    except Exception as error:  # noqa: BLE001 - any decoder failure: not readable
        if im is not None:
            im.close()
        raise OSError(
            f"Cannot decode image file {path!r}: {type(error).__name__}: {error}"
        ) from error
    try:
        return _to_unit_array(im, mode, path)
    finally:
        im.close()


def decode_image(
    path: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    *,
    mode: str = "rgb",
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Decodes an image file to float32 pixels in [0, 1], optionally resized.

    The one decoder of keras-freeze (the attention estimator reads directory
    images with it). Pixel values are mapped to [0, 1] by this rule, so that
    every bit depth gives the same picture and no stored value is ever
    clipped:

    - 8-bit images (`L`, `RGB`, palette, `LA`, `RGBA`, `CMYK`, ...) are
      converted by Pillow to `L` or `RGB` (alpha dropped) and divided by 255;
      1-bit images give {0, 1}. A `LAB` TIFF goes to `L` through `RGB`; a
      mode Pillow cannot convert raises an `OSError` naming the file.
    - Integer images deeper than 8 bits (`I;16`, `I;16B`, `I`; 16-bit PNG or
      TIFF radiographs) are divided by `2**b - 1`, where `b` is the smallest
      of 8, 10, 12, 14, 16 with `max value < 2**b`. So 12-bit data stored in
      16 bits maps onto [0, 1] as 12-bit data, and a 16-bit copy of an 8-bit
      image decodes exactly as the 8-bit image. Negative values or values of
      2**16 and more raise a `ValueError`.
    - Float images (`F`, e.g. a float TIFF) are used as they are when every
      pixel is finite and in [0, 1]; a NaN / infinite pixel or any other
      range raises a `ValueError` naming the file, the problem and the fix
      (never a silent rescale or clip).
    - DICOM files (`.dcm`, read with pydicom: `pip install
      "keras-freeze[dicom]"`) go through the DICOM display pipeline: the
      Modality LUT (or Rescale Slope / Intercept), then the VOI LUT (or the
      first Window Center / Width), then `(v - low) / (high - low)`, where
      `[low, high]` is the output range of that last step (the VOI LUT's
      `[0, 2**bits - 1]`; for a window or no VOI, the Modality LUT output of
      every storable value), so a window maps to exactly [0, 1]; MONOCHROME1
      is inverted (`1 - x`) so that 1 is white. Colour DICOM is divided by
      `2**BitsStored - 1`.

    An EXIF Orientation tag (a phone or scanner JPEG turned 90 degrees) is
    applied, so the pixels are as a viewer shows them. Resizing is done in
    float32, channel by channel, with Pillow's filter (antialiased when
    shrinking), then clipped to [0, 1] (bicubic and Lanczos overshoot at
    sharp edges); a JPEG is first decoded at the smallest scale not below
    the target size (Pillow's `draft`).

    Args:
        path: The image file (str, bytes or path).
        image_size: `None` (default) to keep the file's size, an int for a
            square image, or a `(height, width)` pair.
        mode: `"rgb"` (default) for `(H, W, 3)` pixels (a grayscale image is
            replicated to three channels), or `"gray"` for `(H, W)` pixels
            (colour images are converted with ITU-R 601-2 luma, Pillow's).
        interpolation: One of `"bilinear"` (default), `"nearest"`,
            `"bicubic"`, `"lanczos"`, `"box"`.

    Returns:
        A float32 NumPy array with values in [0, 1], shape `(H, W, 3)` or
        `(H, W)`.

    Raises:
        OSError: If the file is missing or cannot be decoded (the message
            names the file), including a compressed DICOM file whose
            pixel-data decoder is not installed (the message names the
            package) and a multi-frame DICOM file.
        ValueError: If the pixels cannot be mapped to [0, 1] by the rule
            above (non-finite or out-of-range float pixels, integers beyond
            16 bits), or an argument is invalid.
        ImportError: For a `.dcm` file without pydicom (the message gives
            the `pip install` command).

    Example:

    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ramp12.png"
    >>> ramp = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)  # 12-bit data
    >>> Image.fromarray(ramp).save(path)  # stored as a 16-bit PNG
    >>> x = decode_image(path, mode="gray")
    >>> x.dtype, x.shape, float(x.min()), float(x.max())
    (dtype('float32'), (8, 8), 0.0, 1.0)
    >>> decode_image(path, (4, 6)).shape
    (4, 6, 3)
    """
    size = _target_size(image_size)
    check.one_of("mode", mode, ("rgb", "gray"))
    check.one_of("interpolation", interpolation, INTERPOLATIONS)
    path = _path_argument("path", path)
    if path.lower().endswith(_DICOM_EXTENSIONS):
        array = _dicom.decode(path)
        if mode == "gray" and array.ndim == 3:
            array = _to_gray(array)
    else:
        array = _open_and_convert(path, mode, size)
    if size is not None:
        # Bicubic and Lanczos overshoot at sharp edges (e.g. -0.1 or 1.1): back into [0, 1].
        array = np.clip(_resize(array, size, interpolation), 0.0, 1.0)
    if mode == "rgb" and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return array


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


def _resize_gray(img, size):
    """2-D float image -> float32 (size, size) with Pillow BILINEAR (antialiased)."""
    return np.array(_resize(np.asarray(img, dtype=np.float32), (size, size), "bilinear"))


def header_problem(path):
    """None if Pillow can read the image header of `path`, else why not (a str).

    Cheap (no pixel data is decoded): used to count the images of a class
    without decoding them all. A `.dcm` file is read with pydicom up to its
    pixel data, and a compressed one whose decoder is not installed is named
    with the package to install.
    """
    if os.fspath(path).lower().endswith(_DICOM_EXTENSIONS):
        return _dicom.header_problem(path)
    image = _pil_image()
    try:
        with image.open(path) as im:
            width, height = im.size
    except Exception as error:  # noqa: BLE001 - any failure: not an image
        return f"{type(error).__name__}: {error}"
    if width < 1 or height < 1:
        return f"empty image ({width}x{height})"
    return None


def _decode_resized(path, image_size):
    """(image, None) for a readable file, else (None, the OSError); pixel errors raise."""
    try:
        return decode_image(path, image_size, mode="gray"), None
    except OSError as e:
        return None, e
