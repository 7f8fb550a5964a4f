"""A cache of a frozen prefix's features: compute the frozen half once, train only the rest.

`cache_features` runs `split.prefix` (from `split_frozen_prefix`) once over a
data set, at a large batch and in inference mode, and keeps the features in
memory or in memory-mapped files keyed by a fingerprint of the prefix weights
and the data's identity, so a rerun and every cross-validation fold reuse
them. `FeatureCache.dataset` feeds them to `split.suffix.fit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_freeze import _validation as check
from keras_freeze._loader import shuffle_order
from keras_freeze._prefix import FrozenPrefixSplit
from keras_freeze._prefix import _dtype_bytes
from keras_freeze._prefix import split_frozen_prefix  # noqa: F401  (docstring example)

# 2: meta.json, written last, holds every file's size and SHA-256.
_FORMAT = 2
_META = "meta.json"


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureCache:
    """Features computed by a frozen prefix, one row per sample, in memory or memory-mapped.

    Build one with `cache_features`. Index it by sample (the order of the
    data it was built from), e.g. a cross-validation fold's indices, through
    `dataset(...)`.

    Attributes:
        arrays: One NumPy array (or read-only `np.memmap`) per cut tensor,
            shaped `(n_samples, *cut_shape)`, in `split.cut` order.
        labels: The labels read from `(x, y)` batches (a NumPy array), or `None`
            when the data gave no labels.
        dtype: `"float16"` or `"float32"`, the storage dtype.
        cut: Names of the cut tensors (`split.cut`).
        input_dtypes: The dtype of each suffix input; `dataset` casts to it.
        fingerprint: Hex SHA-256 of the prefix (weights, layers, input shape),
            `dtype` and the data's identity; `None` for an unkeyed iterable.
        path: Directory holding the memory-mapped files, or `None` (in memory).
        build_seconds: Seconds the prefix took to compute the features (for
            a reused cache, the time its first build took).
        reused: `True` if the features were loaded from `path` rather than
            computed by this call.
    """

    arrays: tuple
    labels: np.ndarray | None
    dtype: str
    cut: tuple
    input_dtypes: tuple
    fingerprint: str | None
    path: str | None
    build_seconds: float
    reused: bool

    def __len__(self):
        return int(self.arrays[0].shape[0])

    @property
    def n_samples(self):
        """Number of cached samples."""
        return len(self)

    @property
    def nbytes(self):
        """Bytes taken by the cached features (labels not counted)."""
        return int(sum(a.nbytes for a in self.arrays))

    @property
    def features(self):
        """The features as `suffix` takes them: one array, or a list for several cut tensors."""
        return self.arrays[0] if len(self.arrays) == 1 else list(self.arrays)

    def dataset(
        self, indices=None, y=None, *, sample_weight=None, batch_size=32, shuffle=False, seed=None
    ):
        """A `keras.utils.PyDataset` of cached features for `split.suffix.fit` / `evaluate`.

        Args:
            indices: Sample indices to serve, in order (e.g. a fold's training
                indices); `None` for every sample.
            y: Labels for **every** cached sample (length `len(cache)`), indexed
                by `indices` like the features. Defaults to `labels`, the ones
                read from the data's `(x, y)` batches; with neither, batches
                hold features only (for `predict`).
            sample_weight: Optional per-sample weights for every cached sample,
                indexed like `y`.
            batch_size: Samples per batch. Defaults to `32`.
            shuffle: Whether to shuffle `indices` at the start of each epoch
                (a bool; `"False"` is refused). Epoch `e` serves
                `indices[shuffle_order(len(indices), seed, e)]`, the order of
                the uncached `ImageDataset` with the same seed.
            seed: Int seed (>= 0) of the shuffle, or `None` to draw one when
                the dataset is made (kept in its `.seed`).

        Returns:
            A `FeatureDataset` yielding `x`, `(x, y)` or `(x, y, sample_weight)`,
            with `x` cast to the suffix's input dtype.
        """
        y = self.labels if y is None else y
        return FeatureDataset(
            self.arrays,
            y=y,
            sample_weight=sample_weight,
            indices=indices,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            dtypes=self.input_dtypes,
        )

    def summary(self):
        """Returns a one-line account of the cache, as a string."""
        shapes = " + ".join("x".join(map(str, a.shape[1:])) for a in self.arrays)
        where = f"memory-mapped in {self.path}" if self.path else "in memory"
        how = "reused" if self.reused else "built"
        return (
            f"Feature cache: {len(self):,} samples x {shapes} values ({self.dtype}) = "
            f"{_format_bytes(self.nbytes)} {where}; {how}, build took {self.build_seconds:.1f} s"
        )

    def __str__(self):
        return self.summary()


def _format_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


class FeatureDataset(keras.utils.PyDataset):
    """Batches of cached features (and labels), in order or shuffled each epoch.

    Made by `FeatureCache.dataset`; see there for the arguments. `dtypes`
    gives the dtype each feature array is cast to (the suffix's input dtypes).
    """

    def __init__(
        self,
        arrays,
        y=None,
        *,
        sample_weight=None,
        indices=None,
        batch_size=32,
        shuffle=False,
        seed=None,
        dtypes=None,
    ):
        super().__init__()
        self.arrays = tuple(arrays)
        n = int(self.arrays[0].shape[0])
        self.y = _full_length(y, n, "y")
        self.sample_weight = _full_length(sample_weight, n, "sample_weight")
        if sample_weight is not None and y is None:
            raise ValueError("sample_weight needs labels: pass y as well.")
        self.indices = _check_indices(indices, n)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Expected batch_size to be a positive int. Received: {batch_size!r}")
        self.batch_size = batch_size
        self.shuffle = check.boolean("shuffle", shuffle)
        self.dtypes = tuple(dtypes) if dtypes is not None else ("float32",) * len(self.arrays)
        # The order of epoch e is `shuffle_order(n, seed, e)`, as `ImageDataset`'s: a cached
        # run then sees the batches of the uncached one with the same seed.
        seed = check.seed(seed)
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index {index} out of range [0, {len(self)}).")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x = [np.asarray(a[rows], dtype=d) for a, d in zip(self.arrays, self.dtypes, strict=True)]
        x = x[0] if len(x) == 1 else tuple(x)
        if self.y is None:
            return (x,)  # a 1-tuple: Keras reads a bare tuple of inputs as (x, y)
        if self.sample_weight is None:
            return x, self.y[rows]
        return x, self.y[rows], self.sample_weight[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._epoch_order()

    def _epoch_order(self):
        if not self.shuffle:
            return self.indices
        return self.indices[shuffle_order(len(self.indices), self.seed, self.epoch)]


def _full_length(values, n, name):
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape[:1] != (n,):
        raise ValueError(
            f"Expected {name} for every cached sample, length {n} (index it with `indices`). "
            f"Received: {name} of shape {values.shape}."
        )
    return values


def _check_indices(indices, n):
    if indices is None:
        return np.arange(n)
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"Expected indices as a 1-D array of ints. Received: shape {indices.shape}, "
            f"dtype {indices.dtype}."
        )
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise ValueError(
            f"Expected indices in [0, {n}) for a cache of {n} samples. Received: "
            f"min {indices.min()}, max {indices.max()}."
        )
    return indices % n if indices.size else indices


# Reading the data: NumPy arrays, PyDatasets and iterables of batches.


def _as_array(data):
    """`data` as a NumPy array if it is an array or a backend tensor, else unchanged."""
    if isinstance(data, keras.utils.PyDataset) or isinstance(data, np.ndarray):
        return data
    if hasattr(data, "__array__") and hasattr(data, "shape") and hasattr(data, "dtype"):
        return np.asarray(data)
    return data


def _split_batch(batch):
    """(x, y) of one batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`."""
    if isinstance(batch, dict):
        raise ValueError(
            "cache_features reads batches `x`, `(x, y)` or `(x, y, sample_weight)` for a "
            f"one-input prefix. Received: a dict batch with keys {sorted(batch)}."
        )
    if isinstance(batch, (tuple, list)):
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                "Expected a batch `x`, `(x, y)` or `(x, y, sample_weight)`. Received: a "
                f"{type(batch).__name__} of length {len(batch)}."
            )
        return np.asarray(batch[0]), (None if len(batch) < 2 else np.asarray(batch[1]))
    return np.asarray(batch), None


def _input_batches(data, batch_size):
    """Yields (x, y, progress units) from `data`; units count samples or input batches."""
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            x = data[start : start + batch_size]
            yield x, None, len(x)
        return
    if isinstance(data, keras.utils.PyDataset):
        for index in range(len(data)):
            yield *_split_batch(data[index]), 1
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise ValueError(
            "Expected data as a NumPy array, a keras.utils.PyDataset or an iterable of "
            f"batches. Received: data of type {type(data).__name__}."
        ) from None
    for batch in iterator:
        yield *_split_batch(batch), 1


def _rebatch(batches, batch_size):
    """Regroups (x, y, units) batches into batches of exactly `batch_size` (the last: fewer)."""
    xs, ys, units, count = [], [], 0, 0
    for x, y, n_units in batches:
        if ys and (y is None) != (ys[0] is None):
            raise ValueError("Expected every batch to have labels, or none. Received: a mix.")
        xs.append(x)
        ys.append(y)
        units += n_units
        count += len(x)
        while count >= batch_size:
            x_all = np.concatenate(xs) if len(xs) > 1 else xs[0]
            y_all = None if ys[0] is None else (np.concatenate(ys) if len(ys) > 1 else ys[0])
            yield x_all[:batch_size], None if y_all is None else y_all[:batch_size], units
            xs, units, count = [x_all[batch_size:]], 0, count - batch_size
            ys = [None if y_all is None else y_all[batch_size:]]
    if count:
        y_all = None if ys[0] is None else np.concatenate(ys)
        yield np.concatenate(xs), y_all, units


def _progress_target(data):
    """(target, unit) for the progress bar: samples for an array, else input batches."""
    if isinstance(data, np.ndarray):
        return len(data), "sample"
    try:
        return len(data), "batch"
    except TypeError:
        return None, "batch"


# The fingerprint: what the features depend on.


def _key_default(value):
    """JSON stand-in for what `json` cannot encode in a `key`, by full content.

    A NumPy array is hashed whole: `str()` abbreviates one of more than 1,000
    values with `...`, so two lists of 3,000 paths differing in one would
    otherwise give the same key.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":  # paths, strings, objects: by their JSON text
            content = json.dumps(value.tolist(), default=_key_default).encode()
        else:
            content = np.ascontiguousarray(value).view(np.uint8)
        digest = hashlib.sha256(content).hexdigest()
        return {"ndarray": digest, "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):  # only reached for their unencodable items
        return list(value)
    return repr(value)


def _data_identity(data, key, path):
    """What identifies the data in the fingerprint, or None when nothing does."""
    if key is not None:
        return {"key": json.dumps(key, sort_keys=True, default=_key_default)}
    if isinstance(data, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(data).view(np.uint8)).hexdigest()
        return {"array": digest, "shape": list(data.shape), "dtype": str(data.dtype)}
    if path is not None:
        raise ValueError(
            "A cache on disk is reused by its fingerprint, which needs the data's identity. "
            f"Received: data of type {type(data).__name__} with key=None and path={path!r}. "
            "Pass key= describing the data and its preprocessing, e.g. "
            "key={'files': paths, 'preprocessing': 'rescale 1/255', 'image_size': 224}."
        )
    return None


def _layer_description(layer):
    try:
        config = dict(layer.get_config())
    except NotImplementedError:
        config = {}
    config.pop("name", None)
    return json.dumps(
        [type(layer).__name__, config], sort_keys=True, default=lambda o: type(o).__name__
    )


def _fingerprint(split, dtype, data_identity):
    """Hex SHA-256 of the prefix (layers, weights, input shape), `dtype` and the data."""
    digest = hashlib.sha256()
    header = {
        "format": _FORMAT,
        "dtype": dtype,
        "cut_shapes": [list(shape) for shape in split.cut_shapes],
        "inputs": [[list(t.shape[1:]), str(t.dtype)] for t in split.prefix.inputs],
        "data": data_identity,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for layer in split.prefix.layers:
        digest.update(_layer_description(layer).encode())
        for weight in layer.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(f"{value.shape}{value.dtype}".encode())
            digest.update(value.view(np.uint8))
    return digest.hexdigest()


# Storage: in memory, or memory-mapped files in a directory named by the fingerprint.


class _MemoryWriter:
    """Collects feature batches in memory."""

    def __init__(self):
        self.chunks = None
        self.labels = []

    def add(self, features, labels):
        if self.chunks is None:
            self.chunks = [[] for _ in features]
        for chunks, feature in zip(self.chunks, features, strict=True):
            chunks.append(feature)
        self.labels.append(labels)

    def finish(self, meta):
        arrays = tuple(np.concatenate(chunks) for chunks in self.chunks)
        return arrays, _join_labels(self.labels)

    def abort(self):
        self.chunks = None


class _DiskWriter:
    """Streams feature batches to raw files in a temporary directory, then renames it."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.tmp = self.directory.parent / f".{self.directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.files = None
        self.labels = []

    def add(self, features, labels):
        if self.files is None:
            self.files = [open(self.tmp / f"x{i}.bin", "wb") for i in range(len(features))]
        for file, feature in zip(self.files, features, strict=True):
            file.write(np.ascontiguousarray(feature).tobytes())
        self.labels.append(labels)

    def finish(self, meta):
        for file in self.files:
            file.close()
        labels = _join_labels(self.labels)
        if labels is not None:
            np.save(self.tmp / "labels.npy", labels)
        # The checksums go into meta.json, written last: a folder whose meta.json
        # is missing, or whose files do not match it, is a damaged entry.
        meta = {
            **meta,
            "files": {name: _file_record(self.tmp / name) for name in _data_files(self.tmp)},
        }
        (self.tmp / _META).write_text(json.dumps(meta, indent=1))
        try:
            os.replace(self.tmp, self.directory)
        except OSError:  # another process finished the same cache first: use that one
            shutil.rmtree(self.tmp, ignore_errors=True)
        return _open(self.directory)

    def abort(self):
        for file in self.files or ():
            file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _join_labels(labels):
    if not labels or labels[0] is None:
        return None
    return np.concatenate(labels)


def _data_files(directory):
    """The data files of a cache folder: the feature files and, if any, the labels."""
    return sorted(p.name for p in directory.iterdir() if p.name != _META)


def _file_record(path):
    """`{"bytes": size, "sha256": digest}` of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _damage(directory, meta):
    """Why the finished cache folder does not match its `meta.json`, or None if it does."""
    records = meta.get("files")
    if not isinstance(records, dict):
        return "meta.json lists no file checksums"
    itemsize = np.dtype(meta["dtype"]).itemsize
    for i, shape in enumerate(meta["shapes"]):
        name = f"x{i}.bin"
        expected = meta["n_samples"] * math.prod(shape) * itemsize
        if records.get(name, {}).get("bytes") != expected:
            return f"meta.json gives {name} a size other than {expected:,} bytes"
    present = _data_files(directory)
    if sorted(records) != present:
        return f"the folder holds {present}, meta.json lists {sorted(records)}"
    for name, record in records.items():
        size = (directory / name).stat().st_size
        if size != record.get("bytes"):
            return f"{name} has {size:,} bytes, meta.json says {record.get('bytes'):,}"
    for name, record in records.items():
        if _file_record(directory / name)["sha256"] != record.get("sha256"):
            return f"{name} does not match its SHA-256 checksum in meta.json"
    return None


def _open(directory):
    """(arrays, labels) of a finished cache directory, the arrays memory-mapped read-only."""
    meta = json.loads((directory / _META).read_text())
    arrays = tuple(
        np.memmap(
            directory / f"x{i}.bin",
            dtype=meta["dtype"],
            mode="r",
            shape=(meta["n_samples"], *shape),
        )
        for i, shape in enumerate(meta["shapes"])
    )
    labels_path = directory / "labels.npy"
    labels = np.load(labels_path) if labels_path.exists() else None
    return arrays, labels


_META_KEYS = ("format", "fingerprint", "dtype", "n_samples", "shapes", "build_seconds", "files")


def _read_meta(directory, fingerprint):
    """The metadata of a sound finished cache with this fingerprint in `directory`, or None.

    A folder that is not such a cache (no or truncated `meta.json`, files whose
    sizes or checksums differ from it, another format or fingerprint) is
    removed, with a warning naming it unless it is merely stale, so the caller
    rebuilds it.
    """
    if not directory.exists():
        return None
    try:
        meta = json.loads((directory / _META).read_text())
        if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
            raise ValueError("meta.json lacks some of " + ", ".join(_META_KEYS))
    except (OSError, ValueError) as error:  # missing, truncated or not JSON
        return _discard(directory, f"{type(error).__name__}: {error}")
    if meta["format"] != _FORMAT or meta["fingerprint"] != fingerprint:
        shutil.rmtree(directory, ignore_errors=True)  # stale: another format
        return None
    try:
        why = _damage(directory, meta)
    except (OSError, ValueError, TypeError, KeyError) as error:
        why = f"{type(error).__name__}: {error}"
    return meta if why is None else _discard(directory, why)


def _discard(directory, why):
    warnings.warn(
        f"The feature cache folder {str(directory)!r} is damaged ({why}); it is deleted and "
        "the features are computed again. (A cache folder is written whole, then renamed; "
        "damage means it was changed or truncated afterwards.)",
        stacklevel=4,
    )
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise ValueError(
            f"Expected a feature cache folder that can be rebuilt. Received: the damaged "
            f"folder {str(directory)!r} ({why}), which could not be deleted. Delete it by hand."
        )
    return None


# Building the cache.


def _resolve_verbose(verbose):
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in ('auto', 0, 1, 2). Received: verbose={verbose!r}")
    return verbose


def _check_arguments(split, batch_size, dtype):
    if not isinstance(split, FrozenPrefixSplit):
        raise ValueError(
            "Expected split from keras_freeze.split_frozen_prefix(model). Received: "
            f"split of type {type(split).__name__}."
        )
    if len(split.prefix.inputs) != 1:
        raise ValueError(
            "cache_features supports models with one input. Received: a prefix with "
            f"{len(split.prefix.inputs)} inputs."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be a positive int. Received: {batch_size!r}")
    _dtype_bytes(dtype)
    return str(dtype)


def _check_input_shape(x, expected, first):
    """Refuses a batch whose sample shape the prefix's input does not take."""
    shape = tuple(x.shape[1:])
    if len(shape) == len(expected) and all(
        e is None or e == d for e, d in zip(expected, shape, strict=True)
    ):
        return
    hint = ""
    same_but_channels = len(shape) == len(expected) and all(
        e is None or e == d for e, d in zip(expected[:-1], shape[:-1], strict=True)
    )
    if same_but_channels:
        hint = (
            f" The channel count differs ({shape[-1]} given, {expected[-1]} expected): "
            "e.g. repeat a grayscale channel 3 times for an RGB model "
            "(np.repeat(x, 3, axis=-1)), or decode with the model's colour mode."
        )
    raise ValueError(
        f"Expected samples of shape {expected} (the prefix's input, None = any). Received: "
        f"a batch of shape {tuple(x.shape)} (samples {first}-{first + len(x) - 1}).{hint}"
    )


def _run_prefix(prefix, data, batch_size, dtype, writer, verbose):
    """Runs `prefix` over `data` in inference mode into `writer`; returns the sample count."""
    target, unit = _progress_target(data)
    progbar = keras.utils.Progbar(target, verbose=verbose, unit_name=unit) if verbose else None
    n, done, overflow = 0, 0, 0
    expected = tuple(prefix.inputs[0].shape[1:])
    for x, y, units in _rebatch(_input_batches(data, batch_size), batch_size):
        _check_input_shape(x, expected, n)
        outputs = prefix.predict_on_batch(x)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        with np.errstate(over="ignore"):  # counted below, one warning for the whole cache
            features = [np.asarray(o).astype(dtype, copy=False) for o in outputs]
        if dtype == "float16":
            overflow += sum(
                int(np.sum(~np.isfinite(f) & np.isfinite(o)))
                for f, o in zip(features, outputs, strict=True)
            )
        writer.add(features, y)
        n, done = n + len(x), done + units
        if progbar is not None:
            progbar.update(done)
    if progbar is not None:
        progbar.update(done, finalize=True)
    if overflow:
        warnings.warn(
            f"{overflow} feature values overflowed float16 (|x| > 65504) and are stored as "
            "inf. Use dtype='float32'.",
            stacklevel=3,
        )
    return n


def cache_features(
    split, data, *, batch_size=64, dtype="float16", path=None, key=None, verbose="auto"
):
    """Computes a frozen prefix's features once over a data set, for training the suffix.

    Runs `split.prefix` in inference mode over `data`, `batch_size` samples
    per call whatever the data's own batching, and stores the features as
    `dtype`, in memory or (with `path`) in memory-mapped files
    `path/features-<fingerprint>/`. The fingerprint hashes the prefix's
    layers and weights, its input shape, `dtype` and the data's identity (the
    array's bytes, or `key`): a later call with the same fingerprint (a rerun,
    another fold, the other ordered-freeze experiment) loads the files
    instead of running the prefix. `data` is a NumPy array (or backend
    tensor), a `keras.utils.PyDataset` (read in index order) or any iterable
    of batches `x`, `(x, y)` or `(x, y, sample_weight)`; labels are kept,
    sample weights are not. It must not shuffle or augment: row `i` of the
    cache is the `i`-th sample read.

    Args:
        split: A `FrozenPrefixSplit` from `split_frozen_prefix(model)`.
        data: The inputs, as above.
        batch_size: Samples per prefix call. Defaults to `64`.
        dtype: `"float16"` (default, half the memory) or `"float32"` (the
            features of an uncached forward pass, bit for bit).
        path: Directory for memory-mapped files, or `None` (in memory).
        key: JSON-serialisable identity of the data and its preprocessing
            (file list, preprocessing, image size); required with `path`
            unless `data` is an array, whose bytes are hashed otherwise.
        verbose: `"auto"` (1 on a terminal, else 2), `0`, `1` (progress bar)
            or `2` (one line); unless `0`, a summary gives size and build time.

    Returns:
        A `FeatureCache`, whose `dataset(...)` feeds `split.suffix.fit`.

    Raises:
        ValueError: If an argument is invalid, `data` is empty or of another
            kind or mixes labelled batches, or `path` lacks a needed `key`.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 3))
    >>> frozen = keras.layers.Conv2D(4, 3, strides=2, trainable=False)(inputs)
    >>> flat = keras.layers.Flatten(name="flat")(frozen)
    >>> split = split_frozen_prefix(keras.Model(inputs, keras.layers.Dense(2)(flat)))
    >>> images = np.random.default_rng(0).random((10, 8, 8, 3), dtype="float32")
    >>> cache = cache_features(split, images, dtype="float32", verbose=0)
    >>> cache.features.shape, cache.nbytes
    ((10, 36), 1440)
    """
    dtype = _check_arguments(split, batch_size, dtype)
    verbose = _resolve_verbose(verbose)
    data = _as_array(data)
    identity = _data_identity(data, key, path)
    fingerprint = None if identity is None else _fingerprint(split, dtype, identity)
    directory = None if path is None else Path(path) / f"features-{fingerprint[:24]}"
    meta = None if directory is None else _read_meta(directory, fingerprint)
    if meta is None:
        return _build(split, data, batch_size, dtype, fingerprint, directory, verbose)
    return _finish(split, _open(directory), meta, directory, reused=True, verbose=verbose)


def _build(split, data, batch_size, dtype, fingerprint, directory, verbose):
    """Runs the prefix over `data` into memory or `directory`; returns the `FeatureCache`."""
    writer = _MemoryWriter() if directory is None else _DiskWriter(directory)
    start = time.perf_counter()
    try:
        n = _run_prefix(split.prefix, data, batch_size, dtype, writer, verbose)
        if n == 0:
            raise ValueError("Expected data with at least one sample. Received: empty data.")
    except BaseException:
        writer.abort()
        raise
    meta = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "dtype": dtype,
        "n_samples": n,
        "shapes": [list(shape) for shape in split.cut_shapes],
        "cut": list(split.cut),
        "build_seconds": time.perf_counter() - start,
    }
    return _finish(split, writer.finish(meta), meta, directory, reused=False, verbose=verbose)


def _finish(split, arrays_labels, meta, directory, *, reused, verbose):
    arrays, labels = arrays_labels
    cache = FeatureCache(
        arrays=arrays,
        labels=labels,
        dtype=meta["dtype"],
        cut=split.cut,
        input_dtypes=tuple(str(t.dtype) for t in split.suffix.inputs),
        fingerprint=meta["fingerprint"],
        path=None if directory is None else str(directory),
        build_seconds=float(meta["build_seconds"]),
        reused=reused,
    )
    if verbose:
        print(cache.summary())
    return cache
