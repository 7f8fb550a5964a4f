"""Batches of class-folder images for `model.fit`, and the per-epoch shuffle order they share.

`ImageDataset` is a `keras.utils.PyDataset` that decodes image files with
`decode_image` (Pillow only, so it runs on the tensorflow, torch and jax
backends alike), decodes a batch's images on a thread pool, prepares the next
batches of the epoch while the model trains, can cache decoded images in
memory, shuffles per epoch with `shuffle_order`, and never crashes on a
corrupt or missing image: the image is dropped from its batch and recorded in
`ImageDataset.failed`. `scan_images` finds such files before training, and
`predict_images` predicts a data set keeping each row tied to its image.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from keras_freeze import _validation as check
from keras_freeze._images import INTERPOLATIONS
from keras_freeze._images import _pil_image
from keras_freeze._images import decode_image
from keras_freeze._images import list_class_images

__all__ = ["ImageDataset", "predict_images", "scan_images", "shuffle_order"]


def shuffle_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of epoch `epoch`: `default_rng([seed, epoch]).permutation(n)`.

    A function of `(seed, epoch)` only, so every data source of keras-freeze that shuffles
    (`ImageDataset`, `FeatureDataset`) visits samples in the same order for the same seed,
    whatever the number of loading threads, and a cached run sees the batches of the uncached one.

    Args:
        n: Number of samples.
        seed: Non-negative integer seed.
        epoch: 0-based epoch number.

    Returns:
        An int64 permutation of `range(n)`.

    Example:

    >>> shuffle_order(5, seed=0, epoch=0).tolist() == shuffle_order(5, 0, 0).tolist()
    True
    >>> sorted(shuffle_order(5, seed=0, epoch=1).tolist())
    [0, 1, 2, 3, 4]
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n)).astype(np.int64)


@functools.cache
def _decode_errors():
    """The exceptions that mean "this file is not a readable image" (Pillow imported lazily)."""
    image = _pil_image()
    return (OSError, ValueError, SyntaxError, image.DecompressionBombError, EOFError)


def _image_hw(image_size) -> tuple[int, int]:
    """`(height, width)` from an int or a pair of ints."""
    if check.is_integer(image_size):
        hw = (int(image_size), int(image_size))
    else:
        try:
            hw = tuple(int(v) for v in image_size)
        except TypeError:
            hw = ()
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(
            "Expected image_size as a positive int or (height, width), e.g. image_size=224. "
            f"Received: image_size={image_size!r}"
        )
    return hw


def _decode_uint8(path, hw, interpolation) -> np.ndarray:
    """One image as uint8, resized to `hw`: `(H, W)` if gray, else `(H, W, 3)`.

    The pixels come from `decode_image` (every bit depth to [0, 1], never clipped), rounded to
    8 bits and resized with Pillow's `interpolation` filter on the 8-bit image, as the paper's
    8-bit pipeline did: an 8-bit file gives exactly Pillow's `convert` then `resize`. A gray
    image is resized as one channel; replicating it afterwards equals `convert("RGB")` first.
    """
    image = _pil_image()
    h, w = hw
    unit = decode_image(path, None, mode="rgb")
    arr = np.rint(unit * np.float32(255.0)).astype(np.uint8)
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = np.ascontiguousarray(arr[..., 0])  # gray: resize one channel, not three
    if arr.shape[:2] != (h, w):
        resample = getattr(image.Resampling, interpolation.upper())
        arr = np.asarray(image.fromarray(arr).resize((w, h), resample))
    return arr


def _rescale_1_255(x):
    """The paper's preprocessing: `x / 255` (`ImageDataGenerator(rescale=1/255)`)."""
    return x * np.float32(1.0 / 255.0)


def scan_images(paths: Sequence[str], *, full: bool = False, workers: int = 4):
    """Checks image files before training, to drop unreadable ones up front.

    Args:
        paths: Image paths (str or path objects).
        full: If False (default), Pillow's `Image.verify` (headers and PNG chunk checksums,
            cheap). If True, decode every image with `decode_image`, the decoder of
            `ImageDataset` (catches everything the data set would, NaN pixels included;
            costs a decode).
        workers: Threads checking files at once. Defaults to 4.

    Returns:
        `(good, bad)`: int64 positions of the readable files, and a list of `(path, reason)`
        for the others.

    Example:

    >>> good, bad = scan_images(["/nonexistent.png"])
    >>> len(good), bad[0][0]
    (0, '/nonexistent.png')
    """
    errors = _decode_errors()
    image = _pil_image()

    def problem(path):
        try:
            if full:  # the data set's own decoder: also refuses NaN/inf and out-of-range pixels
                decode_image(path)
                return None
            with image.open(path) as im:
                im.verify()
            return None
        except errors as e:
            return f"{type(e).__name__}: {e}"

    paths = list(paths)
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        results = list(pool.map(problem, paths))
    good = np.asarray([i for i, r in enumerate(results) if r is None], dtype=np.int64)
    bad = [(str(p), r) for p, r in zip(paths, results, strict=True) if r is not None]
    return good, bad


def _check_arguments(paths, labels, num_classes, batch_size, workers, interpolation, preprocess):
    """Raises a `ValueError` for the first bad `ImageDataset` argument."""
    if len(paths) != len(labels):
        raise ValueError(
            "Expected one label per path. Received: "
            f"len(paths)={len(paths)}, len(labels)={len(labels)}"
        )
    if not paths:
        raise ValueError("Expected at least one image. Received: paths=[]")
    if int(num_classes) < 1:
        raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Expected labels in [0, {num_classes - 1}] (or a larger num_classes). Received: "
            f"labels in [{labels.min()}, {labels.max()}]"
        )
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}")
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(
            f"Expected workers >= 1 (1: no look-ahead). Received: workers={workers!r}"
        )
    check.one_of("interpolation", interpolation, INTERPOLATIONS)
    if preprocess is not None and not callable(preprocess):
        raise ValueError(
            f"Expected a callable preprocess, or None for x / 255. Received: {preprocess!r}"
        )


class ImageDataset(keras.utils.PyDataset):
    """Batches of decoded, resized images and one-hot labels, for `model.fit` on any backend.

    Each item is `(x, y)`: `x` float32 `(B, H, W, 3)` (NHWC) and `y` float32 one-hot
    `(B, num_classes)`. Each file is decoded by `decode_image` (every bit depth to [0, 1]),
    rounded to 8 bits and resized with Pillow's `interpolation` filter on the 8-bit image (an
    8-bit file gives exactly Pillow's `convert("RGB")` then `resize`); then `preprocess` is
    applied to the float32 0..255 batch (default `x / 255`).

    Speed: a batch's images are decoded on a thread pool (`decode_threads`; Pillow releases
    the GIL while decoding and resizing), `workers - 1` threads prepare the next batches of
    the epoch while the model trains on this one, grayscale files are decoded and resized as
    one channel, and `cache=True` keeps the resized uint8 images in memory so epochs after the
    first decode nothing. The look-ahead is the data set's own, not Keras' `PyDataset` workers:
    Keras' prefetch queue carries batches read before an epoch ended (as after the batch `fit`
    reads to build the model on JAX and PyTorch) into the next epoch. Here batch `i` of epoch
    `e` is a function of the seed, `e` and `i` only, whatever `workers` and `decode_threads`.

    Failed images: an image that cannot be read (missing, truncated, corrupt, NaN pixels) is
    dropped from its batch and recorded in `failed` (path -> reason); later batches skip it
    without retrying. If every image of a batch fails, the next readable images of the epoch's
    order fill the batch, so a batch is never empty. Run `scan_images` first to drop bad files.

    Shuffling: with `shuffle=True` epoch `e` visits the samples in `shuffle_order(n, seed, e)`,
    re-drawn in `on_epoch_end`. (`model.fit(shuffle=True)` also shuffles the order of
    *batches* with Python's `random`; pass `shuffle=False` to `fit` for an order that depends
    on the seed only.) The data set pickles without its threads and pending work.

    Args:
        paths: Image paths.
        labels: Integer class labels, one per path.
        num_classes: Number of classes (one-hot depth). Defaults to 4.
        image_size: Output side (int) or `(height, width)`. Defaults to 224.
        batch_size: Images per batch. Defaults to 8.
        shuffle: Shuffle samples every epoch. Defaults to False.
        seed: Shuffle seed; None (default) draws fresh entropy.
        preprocess: Callable on the float32 0..255 NHWC batch, returning the model input
            (e.g. `keras.applications.mobilenet_v2.preprocess_input`); None (default) for
            `x / 255`.
        workers: Batches being made at once: the requested one and `workers - 1` following
            ones, on threads. Defaults to 2.
        decode_threads: Threads decoding the images of one batch (1 disables the pool).
            Defaults to 2.
        cache: Keep decoded, resized uint8 images in memory. Defaults to False.
        interpolation: Pillow resize filter: "bilinear" (default), "nearest", "bicubic",
            "lanczos" or "box".

    Attributes:
        failed: Dict path -> reason of the images that could not be read so far.
        epoch: The current epoch (incremented by `on_epoch_end`).
        order: The sample positions of the current epoch, in order.
        class_names: The class folders' names when made by `from_folder`, else None.

    Raises:
        ValueError: On mismatched lengths, empty input, labels out of range or bad sizes.

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir()
    ...     for i in range(3):
    ...         Image.new("L", (32, 32), 40 * i).save(root / c / f"{i}.png")
    >>> ds = ImageDataset.from_folder(root, image_size=24, batch_size=4, shuffle=True, seed=0)
    >>> x, y = ds[0]
    >>> x.shape, y.shape, ds.class_names, float(x.max()) <= 1.0
    ((4, 24, 24, 3), (4, 2), ('cat', 'dog'), True)
    >>> model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2, activation="softmax")])
    >>> model.compile("sgd", "categorical_crossentropy")
    >>> model.fit(ds, epochs=1, shuffle=False, verbose=0).history["loss"][0] > 0
    True
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
        _check_arguments(
            self.paths, self.labels, num_classes, batch_size, workers, interpolation, preprocess
        )
        self.num_classes = int(num_classes)
        self.image_size = _image_hw(image_size)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.preprocess = preprocess if preprocess is not None else _rescale_1_255
        self.decode_threads = max(1, int(decode_threads))
        self.lookahead = int(workers) - 1
        self.cache = bool(cache)
        self.interpolation = interpolation
        self.class_names = None
        self.failed: dict[str, str] = {}
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}
        self._pool = None
        self._ahead_pool = None
        self._ahead: dict[tuple[int, int], Future] = {}  # (epoch, index) -> batch being made
        self._pool_lock = threading.Lock()
        self._state_lock = threading.Lock()  # epoch, order and look-ahead change together
        self._order = self._make_order()

    @classmethod
    def from_folder(cls, root, class_names=None, **kwargs) -> ImageDataset:
        """An `ImageDataset` of a data set stored as one sub-folder per class.

        The files are listed by `list_class_images` (the plain `<root>/<class>/*.png` layout
        and the Kaggle `<root>/<class>/images/*.png` one); labels index `class_names`.

        Args:
            root: The data set directory.
            class_names: The class folders to read, in label order; None (default) for every
                sub-folder, sorted by name.
            **kwargs: The other arguments of `ImageDataset` (not `num_classes`, which is the
                number of classes).

        Returns:
            An `ImageDataset` whose `class_names` is the tuple of class names.

        Raises:
            ValueError: As `list_class_images` does, if the class folders hold no image, or
                if `num_classes` is passed.
        """
        if "num_classes" in kwargs:
            raise ValueError(
                "from_folder counts the classes from the folders; leave num_classes out. "
                f"Received: num_classes={kwargs['num_classes']!r}"
            )
        images = list_class_images(root, class_names)
        if not images.paths:
            raise ValueError(
                f"Expected image files in the class folders {list(images.class_names)} of "
                f"{images.root!r}. Received: none (skipped: {list(images.skipped)[:3]})"
            )
        dataset = cls(
            images.paths, images.labels, num_classes=len(images.class_names), **kwargs
        )
        dataset.class_names = images.class_names
        return dataset

    # -- order -------------------------------------------------------------------------------
    def _make_order(self) -> np.ndarray:
        n = len(self.paths)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return shuffle_order(n, self.seed, self.epoch)

    @property
    def order(self) -> np.ndarray:
        """Sample positions in the order of the current epoch."""
        return self._order

    def kept_indices(self) -> np.ndarray:
        """Positions, in the current order, of the images not (yet) recorded as failed.

        After a `model.predict(dataset)` pass (with `shuffle=False`), `labels[kept_indices()]`
        are the true labels of the predicted rows, unless a whole batch failed (then it was
        filled with other images); `predict_images` handles both cases.
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
        """The thread pool in attribute `name` (`_pool`, `_ahead_pool`), made on first use."""
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
            arr = _decode_uint8(p, self.image_size, self.interpolation)
        except _decode_errors() as e:
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
        """Batch `index` of the epoch whose sample order is `order`."""
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
        if self.preprocess is _rescale_1_255:
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
                f"{list(self.failed.items())[:3]}. Run scan_images(paths, full=True) first."
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


def predict_images(model, dataset: ImageDataset):
    """Predicts every readable image of an `ImageDataset`, each row tied to its position.

    `ImageDataset` drops an image it cannot decode from its batch, so the rows of
    `model.predict(dataset)` would no longer line up with `dataset.paths`; this loop keeps
    track of which positions each batch holds. A batch whose images all failed (and which the
    data set filled with other images) is skipped. Use an unshuffled data set.

    Args:
        model: A Keras model (anything with `predict_on_batch`).
        dataset: The `ImageDataset` to predict.

    Returns:
        `(probabilities, positions)`: the model's outputs `(n_kept, C)` and the int positions
        in `dataset.paths` they belong to; unreadable images are in `dataset.failed`.

    Raises:
        RuntimeError: If no image of the data set is readable.

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> paths = [folder / f"{i}.png" for i in range(3)]
    >>> for p in paths:
    ...     Image.new("L", (8, 8), 100).save(p)
    >>> paths[1].write_bytes(b"not a png")
    9
    >>> ds = ImageDataset(paths, [0, 1, 0], num_classes=2, image_size=8, batch_size=2)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2, activation="softmax")])
    >>> probabilities, positions = predict_images(model, ds)
    >>> probabilities.shape, positions.tolist(), list(ds.failed) == [str(paths[1])]
    ((2, 2), [0, 2], True)
    """
    probs, kept = [], []
    for b in range(len(dataset)):
        pos = [int(i) for i in dataset.order[b * dataset.batch_size : (b + 1) * dataset.batch_size]]
        x, _ = dataset[b]
        ok = [i for i in pos if dataset.paths[i] not in dataset.failed]
        if len(ok) != len(x):  # the whole batch failed and was refilled: skip it
            continue
        probs.append(np.asarray(model.predict_on_batch(x)))
        kept.extend(ok)
    if not probs:
        raise RuntimeError(
            f"No readable image to predict; failures: {list(dataset.failed.items())[:3]}"
        )
    return np.concatenate(probs, axis=0), np.asarray(kept, dtype=int)
