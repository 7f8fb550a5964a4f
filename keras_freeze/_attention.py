"""Attention weights of the paper (eq. 3) and the per-class statistics behind them.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for
Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825), derive each class's loss weight
from the data:

    alpha1_c = r_inter(c, c2) + beta * class_im(c) + gamma * sigma_intra(c)   (2)
    alpha_c  = n / (1 - alpha1_c ** q)                                       (3)

with beta=0.05, gamma=0.1, n=0.001, q=0.25. `attention_weights` is eq. (3);
`ClassAttention` holds the statistics of eq. (2) and the weights, as estimated
by `estimate_class_attention` (`_estimator.py`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from keras_freeze import _validation as check

__all__ = ["ClassAttention", "attention_weights"]


# --------------------------------------------------------------------------
# Eq. (3)
# --------------------------------------------------------------------------


def attention_weights(alpha1: Any, n: float = 0.001, q: float = 0.25) -> np.ndarray:
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
    n = check.positive_float("n", n)
    q = check.positive_float("q", q)
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
        counts: int64 number of images per class (directory input: files
            whose image header reads, less sampled files that fail to
            decode; see `estimate_class_attention`).
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
        skipped_files: Paths of unreadable files left out of `counts`
            (directory input).

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
    def weights(self) -> np.ndarray:
        """Loss weights `alpha` as a fresh float64 NumPy array (class order)."""
        return np.array(self.alpha, dtype=np.float64, copy=True)

    @property
    def nearest_names(self) -> tuple[str, ...]:
        """Name of the nearest other class, per class."""
        return tuple(self.class_names[i] for i in self.nearest)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
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

    def to_dict(self) -> dict[str, Any]:
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
    def from_dict(cls, config: dict[str, Any]) -> ClassAttention:
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
    def to_markdown(self, digits: int = 4) -> str:
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
