"""The Monte-Carlo estimator of eq. (2) of the paper, and its input adapters.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for
Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825), compute the per-class statistics of
eq. (2) "by a Monte-Carlo method" and never published that code;
`estimate_class_attention` defines the estimator precisely (see
`docs/attention.md`). It runs in four steps:

1. check the arguments (`_Options`);
2. keep up to `2 * mc_samples` images per class from the input, uniformly at
   random (`_collect`: a directory, arrays, or a stream of batches);
3. estimate the mean similarity of `mc_samples` random pairs within each
   class and between every two classes (`_similarity_matrix`);
4. combine them into eqs. (2)-(3) (`_class_attention`).

Everything is data statistics in NumPy (Pillow decodes and resizes): no
backend math, so the same seed gives the same result on every Keras backend.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from keras_freeze import _images
from keras_freeze import _sampling
from keras_freeze import _validation as check
from keras_freeze._attention import ClassAttention
from keras_freeze._attention import attention_weights
from keras_freeze._similarity import PairSimilarity
from keras_freeze._similarity import similarity_name

__all__ = ["estimate_class_attention"]

# Images kept per class: 2 * mc_samples, so that one term's mc_samples pairs
# never reuse an image when the class is large enough.
_POOL_FACTOR = 2
# Decoding threads for a directory (Pillow releases the GIL while decoding).
_MAX_DECODE_THREADS = 4
#: Largest `mc_samples`: the pair indices of a term take 16 bytes per pair, and
#: 10**7 pairs already give a Monte-Carlo standard error below 0.0003.
MAX_MC_SAMPLES = 10**7
#: Default `max_samples`: samples read from a stream of unknown length.
DEFAULT_MAX_SAMPLES = 1_000_000
#: Largest `image_size`: a chest radiograph is at most about 4,000 pixels a side,
#: so a larger side only upscales, and one 4096 x 4096 float32 image already
#: takes 64 MiB (a pool of 2 * mc_samples of them, more).
MAX_IMAGE_SIZE = 4096
#: `alpha1` must stay this far below 1. Closer, the class is indistinguishable
#: from its nearest class up to Monte-Carlo noise and float rounding (identical
#: images give alpha1 = 1 - 1e-7), and eq. (3) would give it a weight above
#: 4000 * n (q = 0.25), hundreds of times any other class's.
ALPHA1_MARGIN = 1e-3


# --------------------------------------------------------------------------
# Step 1: arguments
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Options:
    """The checked arguments of `estimate_class_attention`."""

    mc_samples: int
    beta: float
    gamma: float
    n: float
    q: float
    image_size: int
    similarity: Any
    similarity_name: str
    seed: int
    class_names: list | None
    max_samples: int | None

    @classmethod
    def checked(
        cls, mc_samples, beta, gamma, n, q, image_size, similarity, seed, class_names, max_samples
    ):
        mc_samples = check.integer(
            "mc_samples",
            mc_samples,
            2,
            maximum=MAX_MC_SAMPLES,
            why=" (a standard error needs 2 pairs; more than 10**7 pairs only costs memory)",
        )
        seed = check.seed(seed)
        return cls(
            mc_samples=mc_samples,
            beta=check.nonnegative_float("beta", beta),
            gamma=check.nonnegative_float("gamma", gamma),
            n=check.positive_float("n", n),
            q=check.positive_float("q", q),
            image_size=check.integer(
                "image_size",
                image_size,
                2,
                maximum=MAX_IMAGE_SIZE,
                why=" (a radiograph has at most about 4,000 pixels a side; a larger side only "
                "upscales, at 64 MiB per image already at 4096)",
            ),
            similarity=similarity,
            similarity_name=similarity_name(similarity),
            seed=_sampling.new_seed() if seed is None else seed,
            class_names=None if class_names is None else check.distinct_names(class_names),
            max_samples=check.integer("max_samples", max_samples, 1, allow_none=True),
        )

    @property
    def capacity(self):
        return _POOL_FACTOR * self.mc_samples


# --------------------------------------------------------------------------
# Step 2: image pools, from arrays, streams or a directory
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Pools:
    """The images kept per class and the class sizes.

    Attributes:
        names: Class names, in class order.
        counts: int64 number of (readable) images per class.
        images: Dict class index -> float32 `(m, size, size)` kept images.
        skipped: Unreadable files (directory input).
    """

    names: list
    counts: np.ndarray
    images: dict
    skipped: tuple = ()

    @property
    def sizes(self):
        """Images kept per class (int64)."""
        return np.array([len(self.images.get(c, ())) for c in range(len(self.names))])

    def check(self):
        """Raises unless there are 2 classes or more, each with 2 images or more."""
        if len(self.names) < 2:
            raise ValueError(
                "Expected at least 2 classes (r_inter compares a class with the others). "
                f"Received: {len(self.names)} class(es) {self.names}"
            )
        for c, size in enumerate(self.sizes):
            if size < 2:
                raise ValueError(
                    f"Expected at least 2 readable images per class, but class "
                    f"{self.names[c]!r} (index {c}) has {int(self.counts[c])}. Add images or "
                    "remove the class (pass `class_names` to choose the classes)."
                )


def _check_image_batch(x, where):
    """Validates an array of images (N, H, W) or (N, H, W, C) with C in {1, 3}."""
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


def _pool_image(image, image_size, where):
    """One image as kept in a pool: grayscale, finite, `image_size` square."""
    gray = _images._to_gray(image)
    if not np.all(np.isfinite(gray)):
        raise ValueError(f"Expected finite pixel values, {where}. Received NaN or inf.")
    return _images._resize_gray(gray, image_size)


def _split_batch(batch, where):
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            f"Expected each batch to be a tuple (x, y) (or (x, y, sample_weight)), {where}. "
            f"Received: {type(batch).__name__}"
        )
    return np.asarray(check.to_numpy(batch[0])), check.to_numpy(batch[1])


# tf.data cardinality codes (`tf.data.INFINITE_CARDINALITY`, `UNKNOWN_CARDINALITY`).
_TF_INFINITE, _TF_UNKNOWN = -1, -2


def _tf_batches(dataset):
    """(NumPy batches, finite) of a tf.data.Dataset; refuses an endless one."""
    cardinality = int(dataset.cardinality())
    if cardinality == _TF_INFINITE:
        raise ValueError(
            "Expected a finite tf.data.Dataset (the estimator reads it once, to the end). "
            "Received: a dataset of infinite cardinality (e.g. `.repeat()` without a "
            "count). Pass the dataset before `.repeat()`, or `dataset.take(n)`."
        )
    spec = dataset.element_spec
    if isinstance(spec, dict) or not isinstance(spec, (tuple, list)) or len(spec) < 2:
        keys = f" with keys {sorted(spec)}" if isinstance(spec, dict) else ""
        raise ValueError(
            "Expected a tf.data.Dataset of (x, y) elements (or (x, y, sample_weight)). "
            f"Received: elements of type {type(spec).__name__}{keys}. Map them to tuples "
            "first, e.g. `dataset.map(lambda d: (d['image'], d['label']))`."
        )
    try:
        if spec[1].shape.rank == 0:  # unbatched (image, label) elements
            dataset = dataset.batch(256)
    except (TypeError, IndexError, AttributeError):
        pass
    return dataset.as_numpy_iterator(), cardinality != _TF_UNKNOWN


def _batch_source(dataset):
    """(iterable of batches, finite) of a tf.data.Dataset, a PyDataset or any iterable.

    `finite` is True when the number of batches is known (a PyDataset, a
    tf.data.Dataset of known cardinality, a sized iterable such as a list).
    """
    import keras

    if isinstance(dataset, keras.utils.PyDataset):
        if dataset.num_batches is None:
            raise ValueError(
                "Expected a finite keras.utils.PyDataset (the estimator reads it once, to "
                "the end). Received: num_batches=None (infinite); pass a finite one."
            )
        return (dataset[i] for i in range(dataset.num_batches)), True
    module = type(dataset).__module__ or ""
    if module.startswith("tensorflow") and hasattr(dataset, "as_numpy_iterator"):
        return _tf_batches(dataset)
    if not isinstance(dataset, Iterable):
        raise ValueError(
            "Expected a directory path, an (x, y) tuple of arrays, a tf.data.Dataset, a "
            "keras.utils.PyDataset or an iterable of (x, y) batches. "
            f"Received: dataset of type {type(dataset).__name__}"
        )
    return dataset, hasattr(dataset, "__len__")


class _Stream:
    """The (x, y) NumPy batches of a data set, read once.

    A stream of unknown length (a generator, a tf.data.Dataset of unknown
    cardinality) is read up to `max_samples` samples; `truncated` tells
    whether it had more.
    """

    def __init__(self, dataset, max_samples):
        self.batches, finite = _batch_source(dataset)
        self.cap = None if finite else max_samples
        self.truncated = False

    def __iter__(self):
        total = 0
        for i, batch in enumerate(self.batches):
            if self.cap is not None and total >= self.cap:
                self.truncated = True
                return
            x, y = _split_batch(batch, f"in batch {i}")
            if x.ndim >= 1 and self.cap is not None and total + len(x) > self.cap:
                keep = self.cap - total
                x, y = x[:keep], (y[:keep] if y.ndim >= 1 else y)
            total += len(x) if x.ndim >= 1 else 0
            yield i, x, y


def _labels(y, n_images, num_classes, where):
    labels, k = check.class_labels(y, num_classes, where=f", {where}")
    if len(labels) != n_images:
        raise ValueError(
            f"Expected x and y of the same length, {where}. "
            f"Received: len(x)={n_images}, len(y)={len(labels)}"
        )
    return labels, k


def _pools_from_stream(dataset, options):
    """One pass of reservoir sampling; returns (pools, counts, number of one-hot columns)."""
    stream = _Stream(dataset, options.max_samples)
    reservoir = _sampling.Reservoir(options.capacity, options.seed)
    num_classes = None if options.class_names is None else len(options.class_names)
    k_onehot, n_batches = None, 0
    for i, x, y in stream:
        where = f"in batch {i}"
        if x.ndim < 1 or len(x) == 0:
            continue
        _check_image_batch(x, where)
        labels, k = _labels(y, len(x), num_classes, where)
        k_onehot = k if k is not None else k_onehot
        for j, c, slot in reservoir.offer(labels):
            reservoir.store(c, slot, _pool_image(x[j], options.image_size, f"in batch {i}, x[{j}]"))
        n_batches += 1
    if n_batches == 0:
        raise ValueError("Expected a non-empty data set. Received: no (non-empty) batches.")
    if stream.truncated:
        warnings.warn(
            f"Stopped reading the data set after max_samples={stream.cap} samples: it did "
            "not end there (an endless generator?), so `counts` and `class_im` describe "
            "those samples only. Pass a finite data set, or a larger `max_samples` (None "
            "reads to the end).",
            stacklevel=5,
        )
    pools = {c: np.stack(v) for c, v in reservoir.slots.items()}
    return pools, dict(reservoir.seen), k_onehot


def _pools_from_arrays(x, y, options):
    """The stream's selection on arrays, converting only the kept images."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1:
        raise ValueError(f"Expected an array of images. Received: x.shape={x.shape}")
    if y.ndim >= 1 and len(x) != len(y):
        raise ValueError(
            f"Expected x and y of the same length. Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    if len(x) == 0:
        raise ValueError("Expected a non-empty data set. Received: len(x)=0.")
    _check_image_batch(x, "in x")
    num_classes = None if options.class_names is None else len(options.class_names)
    labels, k = _labels(y, len(x), num_classes, "in y")
    reservoir = _sampling.Reservoir(options.capacity, options.seed)
    for i, c, slot in reservoir.offer(labels):
        reservoir.store(c, slot, i)
    pools = {
        c: np.stack([_pool_image(x[i], options.image_size, f"in x[{i}]") for i in kept])
        for c, kept in reservoir.slots.items()
    }
    return pools, dict(reservoir.seen), k


def _check_no_empty_classes(k, counts):
    """Refuses labels 0..k-1 with classes absent, before building k class names.

    A stray label such as 2**40 would otherwise make 2**40 class names.
    """
    missing = k - len(counts)
    if missing <= 0:
        return
    first = []
    for c in range(k):  # ends after len(counts) + 3 steps at most
        if c not in counts:
            first.append(c)
            if len(first) == 3:
                break
    more = f" and {missing - len(first):_} more" if missing > len(first) else ""
    raise ValueError(
        f"Expected integer labels 0..K-1 with every class present (each class needs 2 "
        f"images). Received: labels up to {k - 1:_} but {missing:_} of these {k:_} classes "
        f"are empty: {first}{more}. Labels out of range? Relabel the classes to 0..K-1, or "
        "pass `class_names` to fix K (labels outside it are then refused)."
    )


def _labelled_pools(dataset, options):
    """`_Pools` of arrays or a stream of batches (labels 0..K-1)."""
    if (
        isinstance(dataset, (tuple, list))
        and len(dataset) == 2
        and all(hasattr(v, "shape") for v in dataset)
    ):
        pools, counts, k = _pools_from_arrays(dataset[0], dataset[1], options)
    else:
        pools, counts, k = _pools_from_stream(dataset, options)
    if options.class_names is not None:
        names = list(options.class_names)
    else:
        k = k if k is not None else (max(counts) + 1 if counts else 0)
        _check_no_empty_classes(k, counts)
        names = [str(i) for i in range(k)]
    counts = np.array([counts.get(c, 0) for c in range(len(names))], dtype=np.int64)
    return _Pools(names, counts, pools)


def _decode_or_reason(path, image_size):
    """`_images._decode_resized`, with any failure that does not name the file turned
    into a skip reason (e.g. Pillow's "conversion from LAB to RGB not supported").

    A `ValueError` naming the file (non-finite or out-of-range pixels) still raises:
    the file is an image with bad values, which the user must fix.
    """
    try:
        return _images._decode_resized(path, image_size)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure: not usable
        if isinstance(error, ValueError) and repr(str(path)) in str(error):
            raise
        return None, ValueError(
            f"cannot convert image file {str(path)!r} to grayscale: {type(error).__name__}: {error}"
        )


def _decode_sample(files, order, capacity, image_size, executor):
    """Decodes files in `order` until `capacity` readable images are collected.

    Files are decoded in parallel chunks but consumed strictly in `order`, so
    the result does not depend on thread timing. Returns the pool and the
    `(path, reason)` of the files that failed to decode.
    """
    want = min(capacity, len(order))
    pool = np.empty((want, image_size, image_size), dtype=np.float32)
    decode = functools.partial(_decode_or_reason, image_size=image_size)
    got, bad, pos = 0, [], 0
    while got < want and pos < len(order):
        chunk = [files[j] for j in order[pos : pos + want - got]]
        pos += len(chunk)
        for path, (img, err) in zip(chunk, executor.map(decode, chunk), strict=True):
            if img is None:
                cause = err.__cause__ or err
                bad.append((path, f"{type(cause).__name__}: {cause}"))
            else:
                pool[got] = img
                got += 1
    return pool[:got], bad


def _warn_skipped(skipped, listing):
    """One warning for every file of the class folders left out (not one per file)."""
    parts = []
    if skipped:
        shown = "; ".join(f"{path!r} ({why})" for path, why in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        parts.append(
            f"Skipped {len(skipped)} unreadable image file(s), not counted in `counts`: "
            f"{shown}{more}. All are listed in `ClassAttention.skipped_files`."
        )
    if listing.skipped:
        path, why = listing.skipped[0]
        parts.append(
            f"Ignored {len(listing.skipped)} entr{'y' if len(listing.skipped) == 1 else 'ies'} "
            f"of the class folders that are not image files (e.g. {path!r}: {why}); see "
            "`keras_freeze.list_class_images(...).skipped`."
        )
    if parts:
        warnings.warn(" ".join(parts), stacklevel=5)


def _decode_threads():
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        ncpu = os.cpu_count() or 1
    return max(1, min(_MAX_DECODE_THREADS, ncpu))


def _directory_pools(root, options):
    """`_Pools` of a class-folder directory: decodes only a random sample per class.

    Every listed file's header is read (cheap) so that `counts` leaves out
    files that are not images; the sampled files are fully decoded, and one
    that fails is left out too. A file with a valid header but corrupt pixel
    data is only found (and left out) when it is sampled.
    """
    listing = _images.list_class_images(root, options.class_names)
    names = list(listing.class_names)
    paths = np.array(listing.paths, dtype=object)
    pools, counts = {}, np.zeros(len(names), dtype=np.int64)
    with ThreadPoolExecutor(max_workers=_decode_threads()) as executor:
        problems = list(executor.map(_images.header_problem, listing.paths))
        skipped = [(p, why) for p, why in zip(listing.paths, problems, strict=True) if why]
        readable = np.array([why is None for why in problems], dtype=bool)
        for c, name in enumerate(names):
            files = paths[(listing.labels == c) & readable].tolist()
            stream = _sampling.rng(
                options.seed, _sampling.DIRECTORY_ORDER, _sampling.name_key(name)
            )
            order = stream.permutation(len(files))
            pool, bad = _decode_sample(files, order, options.capacity, options.image_size, executor)
            skipped.extend(bad)
            counts[c] = len(files) - len(bad)
            if len(pool):
                pools[c] = pool
    _warn_skipped(skipped, listing)
    return _Pools(names, counts, pools, tuple(path for path, _ in skipped))


def _collect(dataset, options):
    if isinstance(dataset, bytes):  # a bytes path, never a stream of bytes
        dataset = os.fsdecode(dataset)
    if isinstance(dataset, (str, os.PathLike)):
        pools = _directory_pools(dataset, options)
    else:
        pools = _labelled_pools(dataset, options)
    pools.check()
    return pools


# --------------------------------------------------------------------------
# Step 3: Monte-Carlo similarities
# --------------------------------------------------------------------------


def _similarity_matrix(pools, options):
    """`(K, K)` mean similarities (diagonal: within a class) and their standard errors."""
    k, m, seed = len(pools.names), options.mc_samples, options.seed
    sizes = pools.sizes
    full = sizes >= pools.counts  # the pool holds every (readable) image of the class
    keys = [_sampling.name_key(c) for c in pools.names]
    pair_similarity = PairSimilarity(pools.images, options.similarity)
    sim, sim_se = np.zeros((k, k)), np.zeros((k, k))
    for c in range(k):
        generator = _sampling.rng(seed, _sampling.INTRA_PAIRS, keys[c])
        ia, ib = _sampling.draw_intra(generator, int(sizes[c]), bool(full[c]), m)
        sim[c, c], sim_se[c, c] = _sampling.mean_se(pair_similarity(c, ia, c, ib))
    for c in range(k):
        for d in range(c + 1, k):
            # Orient the pair by name so the draws do not depend on class order.
            a, b = (c, d) if pools.names[c] <= pools.names[d] else (d, c)
            generator = _sampling.rng(seed, _sampling.INTER_PAIRS, keys[a], keys[b])
            ia = _sampling.draw_indices(generator, int(sizes[a]), bool(full[a]), m)
            ib = _sampling.draw_indices(generator, int(sizes[b]), bool(full[b]), m)
            mean, se = _sampling.mean_se(pair_similarity(a, ia, b, ib))
            sim[c, d] = sim[d, c] = mean
            sim_se[c, d] = sim_se[d, c] = se
    return sim, sim_se


# --------------------------------------------------------------------------
# Step 4: eqs. (2)-(3)
# --------------------------------------------------------------------------


def _nearest(sim, names):
    """Index of the most similar other class; ties go to the smallest class name.

    The tie rule (e.g. all pairs clipped to 0) makes relabelling classes
    permute the result.
    """
    k = len(names)
    nearest = np.empty(k, dtype=np.int64)
    for c in range(k):
        others = [d for d in range(k) if d != c]
        best = max(sim[c, d] for d in others)
        nearest[c] = min((d for d in others if sim[c, d] == best), key=lambda d: names[d])
    return nearest


def _check_alpha1(alpha1, r_inter, class_im, sigma_intra, nearest, names, options):
    """Raises, naming the class of largest alpha1, if any alpha1 is within the margin of 1."""
    worst = np.where(np.isnan(alpha1), np.inf, alpha1)
    for c in np.argsort(-worst, kind="stable")[:1]:
        if not alpha1[c] <= 1.0 - ALPHA1_MARGIN:
            raise ValueError(
                f"Expected alpha1 <= 1 - {ALPHA1_MARGIN:g} for every class (eq. 3 alpha = n / "
                f"(1 - alpha1**q) grows without bound as alpha1 nears 1). Received: alpha1 "
                f"reaches 1 for class {names[c]!r} (index {c}), to within {ALPHA1_MARGIN:g}: "
                "alpha1="
                f"{alpha1[c]:.6g} = r_inter {r_inter[c]:.6g} (nearest class "
                f"{names[nearest[c]]!r}) + beta*class_im {options.beta * class_im[c]:.6g} + "
                f"gamma*sigma_intra {options.gamma * sigma_intra[c]:.6g}. Eq. (3) alpha = n / "
                "(1 - alpha1**q) is undefined for alpha1 >= 1: the class is (nearly) "
                "indistinguishable from its nearest class under this similarity (identical "
                "images give alpha1 = 1 up to rounding). Check for "
                "duplicated classes, lower beta/gamma, or use another similarity."
            )


def _class_attention(pools, sim, sim_se, options):
    names = pools.names
    nearest = _nearest(sim, names)
    idx = np.arange(len(names))
    r_inter = sim[idx, nearest]
    sigma_intra = 1.0 - np.diag(sim)
    class_im = 1.0 - pools.counts / pools.counts.max()
    alpha1 = r_inter + options.beta * class_im + options.gamma * sigma_intra
    _check_alpha1(alpha1, r_inter, class_im, sigma_intra, nearest, names, options)
    return ClassAttention(
        class_names=tuple(names),
        alpha=attention_weights(alpha1, n=options.n, q=options.q),
        alpha1=alpha1,
        r_inter=r_inter,
        r_inter_se=sim_se[idx, nearest],
        class_im=class_im,
        sigma_intra=sigma_intra,
        sigma_intra_se=np.diag(sim_se).copy(),
        counts=pools.counts,
        nearest=nearest,
        pair_similarity=sim,
        pair_similarity_se=sim_se,
        mc_samples=options.mc_samples,
        seed=options.seed,
        beta=options.beta,
        gamma=options.gamma,
        n=options.n,
        q=options.q,
        image_size=options.image_size,
        similarity=options.similarity_name,
        skipped_files=pools.skipped,
    )


def estimate_class_attention(
    dataset: Any,
    mc_samples: int = 1000,
    *,
    beta: float = 0.05,
    gamma: float = 0.1,
    n: float = 0.001,
    q: float = 0.25,
    image_size: int = 64,
    similarity: str | Callable[[np.ndarray, np.ndarray], np.ndarray] = "pearson",
    seed: int | None = None,
    class_names: Sequence[str] | None = None,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> ClassAttention:
    """Estimates eqs. (2)-(3) of the paper by Monte Carlo and returns the weights.

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

    Up to `2 * mc_samples` images per class are kept, uniformly at random
    (only those files of a directory are decoded); the standard errors are
    `std / sqrt(mc_samples)`. Constant images (standard deviation <= 1e-5
    times the largest |pixel|) correlate 0 with others, 1 with an equal one.
    A directory's `counts` are the files whose image header Pillow reads,
    less sampled files that fail to decode (a corrupt file that is not
    sampled is counted unverified); one warning lists the files left out.
    See `docs/attention.md` for these rules.

    Args:
        dataset: One of: a directory (str or path) of class sub-folders, read
            with `list_class_images` (`<class>/*.png` or the Kaggle layout
            `<class>/images/*.png`; `masks/` is ignored); a tuple `(x, y)` of
            arrays, x `(N, H, W)`, `(N, H, W, 1)` or `(N, H, W, 3)` (uint8 or
            float), y integer `(N,)` or one-hot `(N, K)` (rows with a single
            1, zeros elsewhere); a `tf.data.Dataset`, a `keras.utils.PyDataset`
            or any iterable of `(x, y)` batches (one pass; an infinite
            `tf.data.Dataset` or `PyDataset` is refused, see `max_samples`).
        mc_samples: Pairs per Monte-Carlo term, an int in [2, 10**7].
            Defaults to 1000.
        beta: Weight of `class_im` in eq. (2). Defaults to 0.05.
        gamma: Weight of `sigma_intra` in eq. (2). Defaults to 0.1.
        n: Normalisation factor of eq. (3). Defaults to 0.001.
        q: Exponent of eq. (3). Defaults to 0.25.
        image_size: Side of the square grayscale images compared (Pillow
            BILINEAR, antialiased). Defaults to 64.
        similarity: `"pearson"` or a batch-wise callable `f(a, b)` of two
            float32 `(m, image_size, image_size)` grayscale arrays (as given,
            or in [0, 1] for a directory) returning `m` similarities, clipped
            to [0, 1].
        seed: Int seed, or None to draw one (recorded in the result).
        class_names: Optional class names; for a directory, the sub-folders
            to use in this order; for arrays/streams, names of labels
            `0..K-1` (also fixes K).
        max_samples: The most samples read from a stream of unknown length
            (a generator, a `tf.data.Dataset` of unknown cardinality), so an
            endless one cannot hang; a warning says when it had more. `None`
            reads to the end; sized inputs are always read whole. Defaults to
            1,000,000.

    Returns:
        A `ClassAttention`; `AttentionWeightedCCE(result)` uses its
        `.weights`.

    Raises:
        ValueError: for a class with fewer than 2 (readable) images, a single
            class, x / y length mismatch, non-image arrays, bad labels or
            rows that are not one-hot, non-finite pixels (naming the file or
            sample), an empty or missing directory, an infinite input,
            invalid arguments, or `alpha1` within 0.001 of 1 (eq. 3 undefined or
            unbounded: the class is indistinguishable from its nearest class).

    Example:

    >>> import numpy as np
    >>> from keras_freeze import estimate_class_attention
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, size=(30, 16, 16), dtype=np.uint8)
    >>> y = np.arange(30) % 3
    >>> res = estimate_class_attention((x, y), mc_samples=100, image_size=16, seed=1)
    >>> res.class_names, bool(np.all(res.weights > 0.001))
    (('0', '1', '2'), True)

    Reference: Roy & Khurana, ACM SAC 2023, eqs. (2)-(3).
    """
    options = _Options.checked(
        mc_samples, beta, gamma, n, q, image_size, similarity, seed, class_names, max_samples
    )
    pools = _collect(dataset, options)
    sim, sim_se = _similarity_matrix(pools, options)
    return _class_attention(pools, sim, sim_se, options)
