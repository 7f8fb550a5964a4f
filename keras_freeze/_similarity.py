"""Pairwise image similarity for the estimator: Pearson correlation, vectorised.

The similarity of two grayscale images is the Pearson correlation of their
pixel intensities, clipped to [0, 1]. A constant image (standard deviation
at most 1e-5 times its largest absolute pixel value) has correlation 0 with a
non-constant one; two constant images have similarity 1 if equal (to the same
relative tolerance), else 0. A user callable may replace it (see
`estimate_class_attention`).
"""

from __future__ import annotations

import numpy as np

# An image counts as constant (zero variance) when its standard deviation is at
# most CONSTANT_RTOL times its largest absolute pixel value (relative, so the
# rule does not depend on the intensity scale: 0..1, 0..255 or 1e-8 units).
CONSTANT_RTOL = 1e-5
# Pairs evaluated per vectorised chunk (bounds the temporary memory).
PAIR_CHUNK = 512


class PearsonPool:
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
        for s in range(0, n, PAIR_CHUNK):
            self._standardise(v[s : s + PAIR_CHUNK], slice(s, s + PAIR_CHUNK))

    def _standardise(self, raw, where):
        c = raw.astype(np.float64)
        m = c.mean(axis=1)
        c -= m[:, None]
        sd = np.sqrt(np.mean(c * c, axis=1))
        self.level[where] = m
        # The image's own scale (largest |pixel|): the rule is the same for
        # an image and for that image times any positive factor.
        scale = np.abs(raw).max(axis=1).astype(np.float64)
        self.scale[where] = scale
        const = sd <= CONSTANT_RTOL * scale
        c /= np.where(const, 1.0, sd)[:, None]
        c[const] = 0.0
        self.z[where] = c
        self.const[where] = const


def pearson_pairs(pool_a, ia, pool_b, ib):
    """Clipped Pearson similarities of pairs (pool_a[ia[k]], pool_b[ib[k]])."""
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), PAIR_CHUNK):
        a = pool_a.z[ia[s : s + PAIR_CHUNK]].astype(np.float64)
        b = pool_b.z[ib[s : s + PAIR_CHUNK]].astype(np.float64)
        out[s : s + PAIR_CHUNK] = np.einsum("ij,ij->i", a, b) / pool_a.d
    ca, cb = pool_a.const[ia], pool_b.const[ib]
    both = ca & cb
    if np.any(both):
        la, lb = pool_a.level[ia], pool_b.level[ib]
        tol = CONSTANT_RTOL * np.maximum(pool_a.scale[ia], pool_b.scale[ib])
        equal = np.abs(la - lb) <= tol
        out[both] = np.where(equal[both], 1.0, 0.0)
    out[(ca | cb) & ~both] = 0.0
    return np.clip(out, 0.0, 1.0)


def callable_pairs(fn, pool_a, ia, pool_b, ib):
    """Similarities of pairs from a user's batch-wise callable, clipped to [0, 1]."""
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), PAIR_CHUNK):
        a = pool_a[ia[s : s + PAIR_CHUNK]]
        b = pool_b[ib[s : s + PAIR_CHUNK]]
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
        out[s : s + PAIR_CHUNK] = r
    return np.clip(out, 0.0, 1.0)


def similarity_name(similarity):
    """The recorded name of `similarity`: "pearson" or the callable's name."""
    if isinstance(similarity, str) and similarity == "pearson":
        return "pearson"
    if callable(similarity):
        return getattr(similarity, "__qualname__", None) or type(similarity).__name__
    raise ValueError(
        "Expected `similarity` to be 'pearson' or a batch-wise callable (a, b) -> array. "
        f"Received: similarity={similarity!r}"
    )


class PairSimilarity:
    """Similarities of sampled pairs between the image pools of the classes.

    Args:
        pools: Dict class index -> float32 array `(m, size, size)` of images;
            emptied for `"pearson"` (the standardised copies replace it).
        similarity: `"pearson"` or a batch-wise callable `f(a, b)`.
    """

    def __init__(self, pools, similarity):
        if isinstance(similarity, str):  # "pearson" (checked by `similarity_name`)
            # Each raw pool is dropped from `pools` once standardised (peak memory).
            self._pools = {c: PearsonPool(pools.pop(c)) for c in list(pools)}
            self._fn = None
        else:
            self._pools = dict(pools)
            self._fn = similarity

    def __call__(self, a, ia, b, ib):
        """Similarities of the pairs (image ia[k] of class a, image ib[k] of class b)."""
        if self._fn is None:
            return pearson_pairs(self._pools[a], ia, self._pools[b], ib)
        return callable_pairs(self._fn, self._pools[a], ia, self._pools[b], ib)
