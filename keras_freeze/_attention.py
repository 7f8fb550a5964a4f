"""Monte-Carlo class statistics and attention weights (eqs. 2-3 of the paper).

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for
Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825), derive each class's loss weight
from the data:

    alpha1_c = r_inter(c, c2) + beta * class_im(c) + gamma * sigma_intra(c)   (2)
    alpha_c  = n / (1 - alpha1_c ** q)                                       (3)

with beta=0.05, gamma=0.1, n=0.001, q=0.25, the statistics "computed by a
Monte-Carlo method". The authors never published that code; this module
defines the estimator precisely (see `docs/attention.md`).

Everything here is data statistics in NumPy (and Pillow for decoding and
resizing): no backend math, so the same seed gives the same result on every
Keras backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
import warnings
from collections.abc import Iterable

import numpy as np

__all__ = ["ClassAttention", "attention_weights", "estimate_class_attention"]

#: File extensions recognised as images in a directory data set.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Relative tolerance under which an image counts as constant (zero variance).
_CONSTANT_RTOL = 1e-5
# Pairs evaluated per vectorised chunk (bounds the temporary memory).
_PAIR_CHUNK = 512
# Images kept per class: 2 * mc_samples, so that one term's mc_samples pairs
# never reuse an image when the class is large enough.
_POOL_FACTOR = 2


# --------------------------------------------------------------------------
# Eq. (3)
# --------------------------------------------------------------------------


def _check_positive_float(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Expected `{name}` to be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def _check_nonneg_float(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"Expected `{name}` to be a finite number >= 0. Received: {name}={value!r}"
        )
    return float(value)


def attention_weights(alpha1, n=0.001, q=0.25):
    """Eq. (3) of the paper: `alpha_c = n / (1 - alpha1_c ** q)`.

    Maps the per-class statistic `alpha1` of eq. (2) to the loss weights of
    the attention-weighted categorical cross-entropy. The map is increasing:
    classes with a higher `alpha1` (more inter-class similarity) get more
    weight; `alpha1_c = 0` gives `alpha_c = n`, and the weight diverges as
    `alpha1_c -> 1`.

    Args:
        alpha1: Array-like of per-class values, each in `[0, 1)`.
        n: Normalisation factor, a finite number > 0. Defaults to `0.001`
            (the paper's value).
        q: Non-linearity exponent, a finite number > 0. Defaults to `0.25`
            (the paper's value).

    Returns:
        `np.ndarray` of float64 with the shape of `alpha1`.

    Raises:
        ValueError: if any `alpha1_c` is non-finite or outside `[0, 1)`
            (eq. 3 is then undefined: `alpha1_c >= 1` divides by zero or
            gives a negative weight, `alpha1_c < 0` has no real `q`-th
            power); the message names the class index and the value. Also
            if `n` or `q` is not a finite number > 0.

    Example:

    >>> import numpy as np
    >>> from keras_freeze import attention_weights
    >>> w = attention_weights([0.0, 0.5])
    >>> bool(w[0] == 0.001)
    True
    >>> round(float(w[1]), 6)
    0.006285
    """
    n = _check_positive_float("n", n)
    q = _check_positive_float("q", q)
    try:
        a = np.asarray(alpha1, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Expected `alpha1` to be an array of numbers in [0, 1). Received: alpha1={alpha1!r}"
        ) from e
    flat = a.reshape(-1)
    for i, v in enumerate(flat):
        if not np.isfinite(v) or v < 0.0 or v >= 1.0:
            idx = np.unravel_index(i, a.shape) if a.ndim > 1 else (i if a.ndim == 1 else ())
            raise ValueError(
                f"Expected every alpha1_c in [0, 1), but class index {idx} has "
                f"alpha1={float(v)!r}: eq. (3) alpha = n / (1 - alpha1**q) is undefined there "
                "(alpha1 >= 1 divides by zero or gives a negative weight; alpha1 < 0 has no "
                "real q-th power; NaN/inf are not statistics). Fix the statistic (e.g. smaller "
                f"beta/gamma or another similarity). Received: alpha1={a.tolist()!r}"
            )
    # Element-wise in Python floats (libm pow): K values, and bit-for-bit the
    # formula as written, with no SIMD pow rounding amplified near alpha1 -> 1.
    out = [n / (1.0 - math.pow(float(v), q)) for v in flat]
    return np.array(out, dtype=np.float64).reshape(a.shape)


# --------------------------------------------------------------------------
# Result object
# --------------------------------------------------------------------------

_VECTOR_FIELDS = (
    "alpha",
    "alpha1",
    "r_inter",
    "r_inter_se",
    "class_im",
    "sigma_intra",
    "sigma_intra_se",
)
_MATRIX_FIELDS = ("pair_similarity", "pair_similarity_se")


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ClassAttention:
    """Per-class statistics of eqs. (2)-(3) and the resulting loss weights.

    Returned by `estimate_class_attention`. Every array is in class order
    (`class_names`), float64 unless stated, and read-only.

    Attributes:
        class_names: Tuple of class names.
        alpha: Eq. (3) weights, `n / (1 - alpha1 ** q)`.
        alpha1: Eq. (2), `r_inter + beta * class_im + gamma * sigma_intra`.
        r_inter: Monte-Carlo mean similarity to the nearest other class.
        r_inter_se: Standard error of `r_inter` (as an estimate of the mean
            similarity to that class).
        class_im: `1 - counts / counts.max()` (exact, no sampling).
        sigma_intra: `1 -` Monte-Carlo mean similarity of pairs of distinct
            images of the class.
        sigma_intra_se: Standard error of `sigma_intra`.
        counts: int64 number of images per class.
        nearest: int64 index of the other class most similar to each class
            (ties go to the smallest class name).
        pair_similarity: `(K, K)` matrix of Monte-Carlo mean similarities;
            off-diagonal `[c, d]` between classes c and d (symmetric, one
            estimate per unordered pair), diagonal within class c.
        pair_similarity_se: Standard errors of `pair_similarity`.
        mc_samples: Pairs per Monte-Carlo term.
        seed: The integer seed actually used (drawn at random and recorded
            when `seed=None` was passed), so any result can be reproduced.
        beta, gamma, n, q: The eq. (2)-(3) constants used.
        image_size: Side of the square grayscale images compared.
        similarity: `"pearson"` or the name of the callable used.
        skipped_files: Paths of unreadable files skipped (directory input).

    Example:

    >>> import numpy as np
    >>> from keras_freeze import estimate_class_attention
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((12, 8, 8))
    >>> y = np.array([0, 1, 2] * 4)
    >>> res = estimate_class_attention((x, y), mc_samples=50, image_size=8, seed=0)
    >>> res.weights.shape, res.weights.dtype
    ((3,), dtype('float64'))
    >>> res == type(res).from_dict(res.to_dict())
    True
    """

    class_names: tuple
    alpha: np.ndarray
    alpha1: np.ndarray
    r_inter: np.ndarray
    r_inter_se: np.ndarray
    class_im: np.ndarray
    sigma_intra: np.ndarray
    sigma_intra_se: np.ndarray
    counts: np.ndarray
    nearest: np.ndarray
    pair_similarity: np.ndarray
    pair_similarity_se: np.ndarray
    mc_samples: int
    seed: int | None = None
    beta: float = 0.05
    gamma: float = 0.1
    n: float = 0.001
    q: float = 0.25
    image_size: int = 64
    similarity: str = "pearson"
    skipped_files: tuple = ()

    def __post_init__(self):
        names = tuple(str(c) for c in self.class_names)
        k = len(names)
        if k < 2:
            raise ValueError(f"Expected at least 2 classes. Received: class_names={names!r}")
        object.__setattr__(self, "class_names", names)
        for f in _VECTOR_FIELDS:
            a = _readonly(np.asarray(getattr(self, f), dtype=np.float64))
            if a.shape != (k,):
                raise ValueError(
                    f"Expected `{f}` of shape ({k},) (one value per class). Received: "
                    f"{f}.shape={a.shape}"
                )
            object.__setattr__(self, f, a)
        for f in ("counts", "nearest"):
            a = _readonly(np.asarray(getattr(self, f), dtype=np.int64))
            if a.shape != (k,):
                raise ValueError(f"Expected `{f}` of shape ({k},). Received: {f}.shape={a.shape}")
            object.__setattr__(self, f, a)
        if np.any((self.nearest < 0) | (self.nearest >= k)):
            raise ValueError(
                f"Expected `nearest` indices in [0, {k}). Received: nearest={self.nearest.tolist()}"
            )
        for f in _MATRIX_FIELDS:
            a = _readonly(np.asarray(getattr(self, f), dtype=np.float64))
            if a.shape != (k, k):
                raise ValueError(
                    f"Expected `{f}` of shape ({k}, {k}). Received: {f}.shape={a.shape}"
                )
            object.__setattr__(self, f, a)
        object.__setattr__(self, "mc_samples", int(self.mc_samples))
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))
        for f in ("beta", "gamma", "n", "q"):
            object.__setattr__(self, f, float(getattr(self, f)))
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "similarity", str(self.similarity))
        object.__setattr__(self, "skipped_files", tuple(str(p) for p in self.skipped_files))

    # -- contract with AttentionWeightedCCE -------------------------------
    @property
    def weights(self):
        """Loss weights `alpha` as a fresh float64 NumPy array (class order)."""
        return np.array(self.alpha, dtype=np.float64, copy=True)

    @property
    def nearest_names(self):
        """Name of the nearest other class, per class."""
        return tuple(self.class_names[i] for i in self.nearest)

    @property
    def num_classes(self):
        return len(self.class_names)

    # -- value semantics -------------------------------------------------
    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if a.shape != b.shape or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    def to_dict(self):
        """JSON-safe dict (lists of Python floats/ints); inverse of `from_dict`."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, config):
        """Rebuild a `ClassAttention` from `to_dict()` output (e.g. after JSON)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(
                f"Unknown keys for ClassAttention.from_dict: {sorted(unknown)}. "
                f"Expected keys among {sorted(names)}."
            )
        return cls(**config)

    # -- printing --------------------------------------------------------
    def to_markdown(self, digits=4):
        """Per-class Markdown table of every statistic of eqs. (2)-(3)."""
        d = int(digits)
        head = (
            "| class | count | nearest | r_inter | class_im | sigma_intra | alpha1 | alpha |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|"
        )
        rows = []
        for i, name in enumerate(self.class_names):
            rows.append(
                f"| {name} | {int(self.counts[i])} | {self.class_names[self.nearest[i]]} | "
                f"{self.r_inter[i]:.{d}f} ± {self.r_inter_se[i]:.{d}f} | "
                f"{self.class_im[i]:.{d}f} | "
                f"{self.sigma_intra[i]:.{d}f} ± {self.sigma_intra_se[i]:.{d}f} | "
                f"{self.alpha1[i]:.{d}f} | {self.alpha[i]:.{max(d, 6)}f} |"
            )
        foot = (
            f"\nmc_samples={self.mc_samples}, seed={self.seed}, similarity={self.similarity}, "
            f"image_size={self.image_size}, beta={self.beta}, gamma={self.gamma}, n={self.n}, "
            f"q={self.q}; ± is one Monte-Carlo standard error."
        )
        if self.skipped_files:
            foot += f" Skipped {len(self.skipped_files)} unreadable file(s)."
        return head + "\n" + "\n".join(rows) + "\n" + foot

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        alpha = ", ".join(f"{v:.6g}" for v in self.alpha)
        return (
            f"ClassAttention(class_names={self.class_names!r}, alpha=[{alpha}], "
            f"nearest={self.nearest_names!r}, counts={self.counts.tolist()}, "
            f"mc_samples={self.mc_samples}, seed={self.seed})"
        )


# --------------------------------------------------------------------------
# Image handling
# --------------------------------------------------------------------------


def _resize_gray(img, size):
    """2-D float image -> float32 (size, size) with Pillow BILINEAR (antialiased)."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape == (size, size):
        return np.array(img, dtype=np.float32, copy=True)
    from PIL import Image

    out = Image.fromarray(np.ascontiguousarray(img), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
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


def _check_image_batch(x, where):
    """Validate an array of images (N, H, W) or (N, H, W, C) with C in {1, 3}."""
    if x.dtype == bool or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise ValueError(
            f"Expected images as an integer or float array, {where}. Received: x.dtype={x.dtype}"
        )
    ok = (x.ndim == 3) or (x.ndim == 4 and x.shape[-1] in (1, 3))
    if not ok or x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(
            "Expected images of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3) with "
            f"H, W >= 2, {where}. Received: x.shape={x.shape}. Pass image arrays "
            "(not feature vectors); batch a per-image tf.data.Dataset with `.batch()`."
        )


def _load_gray(path):
    """Decode one image file to a 2-D float32 grayscale array (PIL mode 'L')."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grayscale
            return np.asarray(im, dtype=np.float32)
        return np.asarray(im.convert("L"), dtype=np.float32)


# --------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------


class _PearsonPool:
    """Standardised image vectors of one class, for vectorised Pearson correlation.

    Each image v (d pixels) is stored once as z = (v - mean) / std (population
    std), so corr(a, b) = mean(z_a * z_b). Constant images get z = 0 and a flag.
    """

    def __init__(self, images):
        v = images.reshape(len(images), -1)
        n = len(v)
        self.d = v.shape[1]
        self.level = np.empty(n)
        self.scale = np.empty(n)
        self.const = np.empty(n, dtype=bool)
        self.z = np.empty(v.shape, dtype=np.float32)
        # Chunked so the float64 temporaries stay small (memory ~ the float32 pool).
        for s in range(0, n, _PAIR_CHUNK):
            c = v[s : s + _PAIR_CHUNK].astype(np.float64)
            m = c.mean(axis=1)
            c -= m[:, None]
            sd = np.sqrt(np.mean(c * c, axis=1))
            self.level[s : s + _PAIR_CHUNK] = m
            sc = np.maximum(1.0, np.abs(v[s : s + _PAIR_CHUNK]).max(axis=1).astype(np.float64))
            self.scale[s : s + _PAIR_CHUNK] = sc
            const = sd <= _CONSTANT_RTOL * sc
            c /= np.where(const, 1.0, sd)[:, None]
            c[const] = 0.0
            self.z[s : s + _PAIR_CHUNK] = c
            self.const[s : s + _PAIR_CHUNK] = const


def _pearson_pairs(pool_a, ia, pool_b, ib):
    """Clipped Pearson similarities of pairs (pool_a[ia[k]], pool_b[ib[k]])."""
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), _PAIR_CHUNK):
        a = pool_a.z[ia[s : s + _PAIR_CHUNK]].astype(np.float64)
        b = pool_b.z[ib[s : s + _PAIR_CHUNK]].astype(np.float64)
        out[s : s + _PAIR_CHUNK] = np.einsum("ij,ij->i", a, b) / pool_a.d
    ca, cb = pool_a.const[ia], pool_b.const[ib]
    both = ca & cb
    if np.any(both):
        la, lb = pool_a.level[ia], pool_b.level[ib]
        tol = _CONSTANT_RTOL * np.maximum(pool_a.scale[ia], pool_b.scale[ib])
        equal = np.abs(la - lb) <= tol
        out[both] = np.where(equal[both], 1.0, 0.0)
    out[(ca | cb) & ~both] = 0.0
    return np.clip(out, 0.0, 1.0)


def _callable_pairs(fn, pool_a, ia, pool_b, ib):
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), _PAIR_CHUNK):
        a = pool_a[ia[s : s + _PAIR_CHUNK]]
        b = pool_b[ib[s : s + _PAIR_CHUNK]]
        r = np.asarray(fn(a, b), dtype=np.float64)
        if r.shape != (len(a),):
            raise ValueError(
                "Expected the `similarity` callable to be batch-wise: given a, b of shape "
                f"(m, image_size, image_size) it must return m values, shape ({len(a)},). "
                f"Received: output shape {r.shape}. Wrap a per-pair function as "
                "`lambda a, b: np.array([f(u, v) for u, v in zip(a, b)])`."
            )
        if not np.all(np.isfinite(r)):
            raise ValueError(
                "Expected finite similarities from the `similarity` callable. "
                f"Received: {r[~np.isfinite(r)][:5].tolist()}"
            )
        out[s : s + _PAIR_CHUNK] = r
    return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


def _name_key(name):
    """Stable 32-bit key of a class name (for per-class random streams)."""
    return int.from_bytes(hashlib.sha256(str(name).encode("utf-8")).digest()[:4], "little")


def _rng(seed, *key):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class _Reservoir:
    """Per-class reservoir sampling (Algorithm R) driven by one uniform per item.

    Item t (0-based, within its class) is kept in slot t while t < capacity,
    else it replaces slot floor(u * (t + 1)) when that is < capacity. One
    uniform is consumed per item in data order, whatever its class, so the
    kept set does not depend on batching nor on how the labels are named.
    """

    def __init__(self, capacity, seed):
        self.capacity = capacity
        self.rng = _rng(seed, 0)
        self.seen = {}
        self.slots = {}  # label -> list of payloads

    def offer(self, labels):
        """Return [(position_in_batch, label, slot)] of items to store."""
        u = self.rng.random(len(labels))
        keep = []
        cap = self.capacity
        for i, (lab, ui) in enumerate(zip(labels.tolist(), u.tolist(), strict=True)):
            t = self.seen.get(lab, 0)
            self.seen[lab] = t + 1
            if t < cap:
                keep.append((i, lab, t))
            else:
                j = int(ui * (t + 1))
                if j < cap:
                    keep.append((i, lab, j))
        return keep

    def store(self, lab, slot, payload):
        s = self.slots.setdefault(lab, [])
        if slot == len(s):
            s.append(payload)
        else:
            s[slot] = payload


def _labels_from_y(y, n_expected, num_classes, where):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(
                f"Expected one-hot labels with {num_classes} columns (len(class_names)), "
                f"{where}. Received: y.shape={y.shape}"
            )
        lab = np.argmax(y, axis=1)
        k = y.shape[1]
    elif y.ndim == 1:
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(
                    f"Expected integer class labels or one-hot rows, {where}. "
                    f"Received non-integer labels, e.g. {y[:5].tolist()}"
                )
        elif y.dtype.kind not in "iu":
            raise ValueError(
                f"Expected integer class labels or one-hot rows, {where}. "
                f"Received: y.dtype={y.dtype}"
            )
        lab = y.astype(np.int64)
        k = None
        if lab.size and lab.min() < 0:
            raise ValueError(f"Expected labels >= 0, {where}. Received: min label {lab.min()}")
        if num_classes is not None and lab.size and lab.max() >= num_classes:
            raise ValueError(
                f"Expected labels < {num_classes} (len(class_names)), {where}. "
                f"Received: label {int(lab.max())}"
            )
    else:
        raise ValueError(
            f"Expected y of shape (N,) integer labels or (N, K) one-hot, {where}. "
            f"Received: y.shape={y.shape}"
        )
    if len(lab) != n_expected:
        raise ValueError(
            f"Expected x and y of the same length, {where}. "
            f"Received: len(x)={n_expected}, len(y)={len(lab)}"
        )
    return lab.astype(np.int64), k


def _to_numpy(v):
    if isinstance(v, np.ndarray):
        return v
    try:
        return np.asarray(v)
    except Exception:  # e.g. a torch tensor on an accelerator
        if hasattr(v, "detach"):
            return v.detach().cpu().numpy()
        if hasattr(v, "numpy"):
            return v.numpy()
        raise


def _split_batch(batch, where):
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            f"Expected each batch to be a tuple (x, y) (or (x, y, sample_weight)), {where}. "
            f"Received: {type(batch).__name__}"
        )
    return _to_numpy(batch[0]), _to_numpy(batch[1])


def _iter_batches(dataset):
    """Yield (x, y) NumPy batches from tf.data, PyDataset or any iterable."""
    import keras

    if isinstance(dataset, keras.utils.PyDataset):
        nb = dataset.num_batches
        if nb is None:
            raise ValueError(
                "Expected a finite keras.utils.PyDataset. Received: num_batches=None "
                "(infinite); pass a finite one."
            )
        for i in range(nb):
            yield dataset[i]
        return
    mod = type(dataset).__module__ or ""
    if mod.startswith("tensorflow") and hasattr(dataset, "as_numpy_iterator"):
        spec = getattr(dataset, "element_spec", None)
        try:
            if spec[1].shape.rank == 0:  # unbatched (image, scalar label) elements
                dataset = dataset.batch(256)
        except (TypeError, IndexError, AttributeError):
            pass
        yield from dataset.as_numpy_iterator()
        return
    if not isinstance(dataset, Iterable):
        raise ValueError(
            "Expected a directory path, an (x, y) tuple of arrays, a tf.data.Dataset, a "
            "keras.utils.PyDataset or an iterable of (x, y) batches. "
            f"Received: dataset of type {type(dataset).__name__}"
        )
    yield from dataset


def _pool_image(image, image_size, where):
    """One image as kept in a pool: grayscale, finite, `image_size` square."""
    gray = _to_gray(image)
    if not np.all(np.isfinite(gray)):
        raise ValueError(f"Expected finite pixel values, {where}. Received NaN or inf.")
    return _resize_gray(gray, image_size)


def _pools_from_stream(batches, capacity, seed, image_size, class_names):
    """One pass of reservoir sampling; returns (pools dict label->array, counts dict, k)."""
    res = _Reservoir(capacity, seed)
    num_classes = None if class_names is None else len(class_names)
    k_onehot = None
    nbatch = 0
    for bi, batch in enumerate(batches):
        where = f"in batch {bi}"
        x, y = _split_batch(batch, where)
        x = np.asarray(x)
        if x.ndim < 1 or len(x) == 0:
            continue
        _check_image_batch(x, where)
        lab, k = _labels_from_y(y, len(x), num_classes, where)
        if k is not None:
            k_onehot = k
        for i, c, slot in res.offer(lab):
            res.store(c, slot, _pool_image(x[i], image_size, where))
        nbatch += 1
    if nbatch == 0:
        raise ValueError("Expected a non-empty data set. Received: no (non-empty) batches.")
    pools = {c: np.stack(v) for c, v in res.slots.items()}
    return pools, dict(res.seen), k_onehot


def _pools_from_arrays(x, y, capacity, seed, image_size, class_names):
    """Same selection as the stream path, but only the kept images are converted."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"Expected an array of images. Received: x.shape={x.shape}")
    y_arr = np.asarray(y)
    if y_arr.ndim >= 1 and len(x) != len(y_arr):
        raise ValueError(
            f"Expected x and y of the same length. Received: len(x)={len(x)}, len(y)={len(y_arr)}"
        )
    if len(x) == 0:
        raise ValueError("Expected a non-empty data set. Received: len(x)=0.")
    _check_image_batch(x, "in x")
    num_classes = None if class_names is None else len(class_names)
    lab, k = _labels_from_y(y_arr, len(x), num_classes, "in y")
    res = _Reservoir(capacity, seed)
    for i, c, slot in res.offer(lab):
        res.store(c, slot, i)
    pools = {
        c: np.stack([_pool_image(x[i], image_size, f"in x[{i}]") for i in idx])
        for c, idx in res.slots.items()
    }
    return pools, dict(res.seen), k


def _list_class_files(class_dir):
    """Image files of one class folder: `<class>/images/*` if present, else `<class>/*`."""
    sub = os.path.join(class_dir, "images")
    folder = sub if os.path.isdir(sub) else class_dir
    # Names only (no stat per file): listing stays cheap for large folders. A
    # non-file with an image extension fails to decode and is skipped as unreadable.
    with os.scandir(folder) as it:
        files = [e.path for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS)]
    files.sort()
    return files


def _decode_resized(path, image_size):
    try:
        return _resize_gray(_load_gray(path), image_size), None
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return None, e


def _decode_sample(files, order, capacity, image_size, executor):
    """Decode files in `order` until `capacity` readable images are collected.

    Files are decoded in parallel chunks but consumed strictly in `order`, so
    the result does not depend on thread timing.
    """
    want = min(capacity, len(order))
    pool = np.empty((want, image_size, image_size), dtype=np.float32)
    got, bad, pos = 0, [], 0
    while got < want and pos < len(order):
        chunk = [files[j] for j in order[pos : pos + want - got]]
        pos += len(chunk)
        results = executor.map(lambda p: _decode_resized(p, image_size), chunk)
        for path, (img, err) in zip(chunk, results, strict=True):
            if img is None:
                warnings.warn(
                    f"Skipping unreadable image {path!r}: {type(err).__name__}: {err}",
                    stacklevel=4,
                )
                bad.append(path)
            else:
                pool[got] = img
                got += 1
    return pool[:got], bad


def _pools_from_directory(root, capacity, seed, image_size, class_names):
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(
            "Expected `dataset` to be an existing directory of class sub-folders. "
            f"Received: dataset={root!r} (not a directory)"
        )
    try:
        subdirs = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
        )
    except OSError as e:
        raise ValueError(f"Cannot read directory dataset={root!r}: {e}") from e
    if class_names is None:
        names = subdirs
    else:
        names = list(class_names)
        missing = [c for c in names if c not in subdirs]
        if missing:
            raise ValueError(
                f"Expected a sub-folder per class name in {root!r}. Missing: {missing}; "
                f"found sub-folders: {subdirs}"
            )
    if not names:
        raise ValueError(
            f"Expected class sub-folders in {root!r} (e.g. <root>/<class>/*.png or the "
            "Kaggle layout <root>/<class>/images/*.png). Received: an empty directory."
        )
    pools, counts, skipped = {}, {}, []
    from concurrent.futures import ThreadPoolExecutor

    # Pillow releases the GIL while decoding: a few threads overlap I/O and decode.
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        ncpu = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=max(1, min(4, ncpu))) as ex:
        for ci, name in enumerate(names):
            files = _list_class_files(os.path.join(root, name))
            order = _rng(seed, 1, _name_key(name)).permutation(len(files))
            pool, bad = _decode_sample(files, order, capacity, image_size, ex)
            skipped.extend(bad)
            counts[ci] = len(files) - len(bad)
            if len(pool):
                pools[ci] = pool
    return pools, counts, names, skipped


# --------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------


def _draw_indices(rng, pool_len, full, m):
    """m indices into a pool: iid if the pool is the whole class, else distinct."""
    if full:
        return rng.integers(0, pool_len, size=m)
    return rng.permutation(pool_len)[:m]


def _draw_intra(rng, pool_len, full, m):
    """m pairs of distinct images: iid ordered pairs i != j, or disjoint pairs."""
    if full:
        i = rng.integers(0, pool_len, size=m)
        j = (i + 1 + rng.integers(0, pool_len - 1, size=m)) % pool_len
        return i, j
    p = rng.permutation(pool_len)[: 2 * m]
    return p[0::2], p[1::2]


def _mean_se(s):
    if s.max() == s.min():  # all pairs agree (e.g. a 2-image class): exactly no spread
        return float(s[0]), 0.0
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s)))


def estimate_class_attention(
    dataset,
    mc_samples=1000,
    *,
    beta=0.05,
    gamma=0.1,
    n=0.001,
    q=0.25,
    image_size=64,
    similarity="pearson",
    seed=None,
    class_names=None,
):
    """Estimate eqs. (2)-(3) of the paper by Monte Carlo and return the weights.

    For each class c (images compared as `image_size` x `image_size`
    grayscale, similarity = Pearson correlation of pixel intensities clipped
    to [0, 1]):

    - `r_inter(c) = max_{d != c} S(c, d)`, `S(c, d)` the Monte-Carlo mean
      similarity of `mc_samples` random (image of c, image of d) pairs;
      the arg-max is `nearest[c]`;
    - `sigma_intra(c) = 1 - S(c, c)`, `S(c, c)` over `mc_samples` random
      pairs of distinct images of c;
    - `class_im(c) = 1 - n_c / max_d n_d`;
    - `alpha1 = r_inter + beta * class_im + gamma * sigma_intra` (eq. 2),
      `alpha = n / (1 - alpha1 ** q)` (eq. 3).

    Sampling: up to `2 * mc_samples` images per class are kept (uniformly at
    random; reservoir sampling in one pass for streams, random files for a
    directory, so only those are decoded). When a class has more images, a
    term's pairs never reuse an image; otherwise pairs are drawn with
    replacement from all pairs of the class. Either way the `mc_samples`
    per-pair similarities are exchangeable draws and the reported standard
    error `std / sqrt(mc_samples)` is exact (with replacement) or slightly
    conservative (without). See `docs/attention.md`.

    Constant images (zero variance): their correlation with a non-constant
    image is 0; two constant images have similarity 1 if equal, else 0.

    Args:
        dataset: One of: a directory (str or path) of class sub-folders,
            `<class>/*.png` or the Kaggle layout `<class>/images/*.png`
            (other sub-folders such as `masks/` are ignored); a tuple
            `(x, y)` of arrays, x `(N, H, W)`, `(N, H, W, 1)` or
            `(N, H, W, 3)` (uint8 or float), y integer `(N,)` or one-hot
            `(N, K)`; a `tf.data.Dataset`, a `keras.utils.PyDataset` or any
            iterable of `(x, y)` batches (one pass).
        mc_samples: Pairs per Monte-Carlo term, an int >= 2. Defaults to 1000.
        beta: Weight of `class_im` in eq. (2). Defaults to 0.05.
        gamma: Weight of `sigma_intra` in eq. (2). Defaults to 0.1.
        n: Normalisation factor of eq. (3). Defaults to 0.001.
        q: Exponent of eq. (3). Defaults to 0.25.
        image_size: Side of the square grayscale images compared (Pillow
            BILINEAR, antialiased). Defaults to 64.
        similarity: `"pearson"` or a batch-wise callable `f(a, b)` taking two
            float32 arrays of shape `(m, image_size, image_size)` (raw
            grayscale intensities) and returning `m` similarities; outputs
            are clipped to [0, 1].
        seed: Int seed, or None to draw one (recorded in the result).
        class_names: Optional class names; for a directory, the sub-folders
            to use in this order; for arrays/streams, names of labels
            `0..K-1` (also fixes K).

    Returns:
        A `ClassAttention`; `AttentionWeightedCCE(result)` uses its
        `.weights`.

    Raises:
        ValueError: for a class with fewer than 2 (readable) images, a single
            class, x / y length mismatch, non-image arrays, an empty,
            missing or unreadable directory, invalid arguments, or `alpha1`
            reaching 1 for some class (eq. 3 undefined).

    Example:

    >>> import numpy as np
    >>> from keras_freeze import estimate_class_attention
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, size=(30, 16, 16), dtype=np.uint8)
    >>> y = np.arange(30) % 3
    >>> res = estimate_class_attention((x, y), mc_samples=100, image_size=16, seed=1)
    >>> res.class_names
    ('0', '1', '2')
    >>> bool(np.all(res.weights > 0.001))
    True

    Reference: Roy & Khurana, ACM SAC 2023, eqs. (2)-(3).
    """
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, numbers.Integral):
        raise ValueError(f"Expected `mc_samples` to be an int >= 2. Received: {mc_samples!r}")
    mc_samples = int(mc_samples)
    if mc_samples < 2:
        raise ValueError(
            f"Expected `mc_samples` >= 2 (a standard error needs 2 pairs). "
            f"Received: mc_samples={mc_samples}"
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, numbers.Integral)
        or image_size < 2
    ):
        raise ValueError(f"Expected `image_size` to be an int >= 2. Received: {image_size!r}")
    image_size = int(image_size)
    beta = _check_nonneg_float("beta", beta)
    gamma = _check_nonneg_float("gamma", gamma)
    n = _check_positive_float("n", n)
    q = _check_positive_float("q", q)
    if isinstance(similarity, str) and similarity == "pearson":
        sim_name, sim_fn = "pearson", None
    elif callable(similarity):
        sim_fn = similarity
        sim_name = getattr(similarity, "__qualname__", None) or type(similarity).__name__
    else:
        raise ValueError(
            "Expected `similarity` to be 'pearson' or a batch-wise callable (a, b) -> array. "
            f"Received: similarity={similarity!r}"
        )
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0 or None. Received: seed={seed!r}")
    seed = int(seed)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"Expected distinct class names. Received: {class_names}")

    capacity = _POOL_FACTOR * mc_samples
    skipped = []
    if isinstance(dataset, (str, os.PathLike)):
        pools, counts, names, skipped = _pools_from_directory(
            dataset, capacity, seed, image_size, class_names
        )
    else:
        if (
            isinstance(dataset, (tuple, list))
            and len(dataset) == 2
            and all(hasattr(v, "shape") for v in dataset)
        ):
            pools, counts, k = _pools_from_arrays(
                dataset[0], dataset[1], capacity, seed, image_size, class_names
            )
        else:
            pools, counts, k = _pools_from_stream(
                _iter_batches(dataset), capacity, seed, image_size, class_names
            )
        if class_names is not None:
            names = list(class_names)
        else:
            num = k if k is not None else (max(counts) + 1 if counts else 0)
            names = [str(i) for i in range(num)]

    num_classes = len(names)
    if num_classes < 2:
        raise ValueError(
            "Expected at least 2 classes (r_inter compares a class with the others). "
            f"Received: {num_classes} class(es) {names}"
        )
    counts_arr = np.array([counts.get(c, 0) for c in range(num_classes)], dtype=np.int64)
    pool_len = np.array(
        [len(pools[c]) if c in pools else 0 for c in range(num_classes)], dtype=np.int64
    )
    for c in range(num_classes):
        if pool_len[c] < 2:
            raise ValueError(
                f"Expected at least 2 readable images per class, but class {names[c]!r} "
                f"(index {c}) has {int(counts_arr[c])}. Add images or remove the class "
                "(pass `class_names` to choose the classes)."
            )
    full = pool_len >= counts_arr  # pool holds every (readable) image of the class

    if sim_fn is None:
        prepared = {}
        for c in range(num_classes):
            prepared[c] = _PearsonPool(pools.pop(c))  # drop each raw pool once standardised

        def pair_sims(a, ia, b, ib):
            return _pearson_pairs(prepared[a], ia, prepared[b], ib)
    else:

        def pair_sims(a, ia, b, ib):
            return _callable_pairs(sim_fn, pools[a], ia, pools[b], ib)

    keys = [_name_key(c) for c in names]
    sim = np.zeros((num_classes, num_classes))
    sim_se = np.zeros((num_classes, num_classes))
    for c in range(num_classes):
        rng = _rng(seed, 2, keys[c])
        ia, ib = _draw_intra(rng, int(pool_len[c]), bool(full[c]), mc_samples)
        sim[c, c], sim_se[c, c] = _mean_se(pair_sims(c, ia, c, ib))
    for c in range(num_classes):
        for d in range(c + 1, num_classes):
            # Orient the pair by name so the draws do not depend on class order.
            a, b = (c, d) if names[c] <= names[d] else (d, c)
            rng = _rng(seed, 3, keys[a], keys[b])
            ia = _draw_indices(rng, int(pool_len[a]), bool(full[a]), mc_samples)
            ib = _draw_indices(rng, int(pool_len[b]), bool(full[b]), mc_samples)
            m, se = _mean_se(pair_sims(a, ia, b, ib))
            sim[c, d] = sim[d, c] = m
            sim_se[c, d] = sim_se[d, c] = se

    # nearest[c]: arg-max over the other classes; ties (e.g. all pairs clipped to 0)
    # go to the smallest class name, so relabelling classes permutes the result.
    nearest = np.empty(num_classes, dtype=np.int64)
    for c in range(num_classes):
        others = [d for d in range(num_classes) if d != c]
        best = max(sim[c, d] for d in others)
        nearest[c] = min((d for d in others if sim[c, d] == best), key=lambda d: names[d])
    idx = np.arange(num_classes)
    r_inter = sim[idx, nearest]
    r_inter_se = sim_se[idx, nearest]
    sigma_intra = 1.0 - np.diag(sim)
    sigma_intra_se = np.diag(sim_se).copy()
    class_im = 1.0 - counts_arr / counts_arr.max()
    alpha1 = r_inter + beta * class_im + gamma * sigma_intra
    for c in range(num_classes):
        if not alpha1[c] < 1.0:
            raise ValueError(
                f"alpha1 reaches 1 for class {names[c]!r} (index {c}): alpha1="
                f"{alpha1[c]:.6g} = r_inter {r_inter[c]:.6g} (nearest class "
                f"{names[nearest[c]]!r}) + beta*class_im {beta * class_im[c]:.6g} + "
                f"gamma*sigma_intra {gamma * sigma_intra[c]:.6g}. Eq. (3) alpha = n / "
                "(1 - alpha1**q) is undefined for alpha1 >= 1: the class is (nearly) "
                "indistinguishable from its nearest class under this similarity. Check for "
                "duplicated classes, lower beta/gamma, or use another similarity."
            )
    alpha = attention_weights(alpha1, n=n, q=q)
    return ClassAttention(
        class_names=tuple(names),
        alpha=alpha,
        alpha1=alpha1,
        r_inter=r_inter,
        r_inter_se=r_inter_se,
        class_im=class_im,
        sigma_intra=sigma_intra,
        sigma_intra_se=sigma_intra_se,
        counts=counts_arr,
        nearest=nearest,
        pair_similarity=sim,
        pair_similarity_se=sim_se,
        mc_samples=mc_samples,
        seed=seed,
        beta=beta,
        gamma=gamma,
        n=n,
        q=q,
        image_size=image_size,
        similarity=sim_name,
        skipped_files=tuple(skipped),
    )
