"""Seeded random streams and the sampling of images and pairs for the estimator.

Every random choice of `estimate_class_attention` comes from a stream keyed by
the seed, the step and the class names involved (never the class order), so
that relabelling or reordering classes permutes the result and the same seed
gives the same numbers on every Keras backend.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

# Stream keys: one per step of the estimator.
RESERVOIR, DIRECTORY_ORDER, INTRA_PAIRS, INTER_PAIRS = 0, 1, 2, 3


def new_seed():
    """A fresh random seed in [0, 2**63), to be recorded with the result."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


def name_key(name):
    """Stable 32-bit key of a class name (for per-class random streams)."""
    return int.from_bytes(hashlib.sha256(str(name).encode("utf-8")).digest()[:4], "little")


def rng(seed, *key):
    """The random stream of `seed` for one step (and class names) `key`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class Reservoir:
    """Per-class reservoir sampling (Algorithm R) driven by one uniform per item.

    Item t (0-based, within its class) is kept in slot t while t < capacity,
    else it replaces slot floor(u * (t + 1)) when that is < capacity. One
    uniform is consumed per item in data order, whatever its class, so the
    kept set does not depend on batching nor on how the labels are named.
    """

    def __init__(self, capacity, seed):
        self.capacity = capacity
        self.rng = rng(seed, RESERVOIR)
        self.seen = {}
        self.slots = {}  # label -> list of payloads

    def offer(self, labels):
        """Returns [(position_in_batch, label, slot)] of the items to store."""
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


def draw_indices(generator, pool_len, full, m):
    """m indices into a pool: iid if the pool is the whole class, else distinct."""
    if full:
        return generator.integers(0, pool_len, size=m)
    return generator.permutation(pool_len)[:m]


def draw_intra(generator, pool_len, full, m):
    """m pairs of distinct images: iid ordered pairs i != j, or disjoint pairs."""
    if full:
        i = generator.integers(0, pool_len, size=m)
        j = (i + 1 + generator.integers(0, pool_len - 1, size=m)) % pool_len
        return i, j
    p = generator.permutation(pool_len)[: 2 * m]
    return p[0::2], p[1::2]


def mean_se(values):
    """Mean and standard error of the mean of per-pair similarities."""
    if values.max() == values.min():  # all pairs agree (e.g. a 2-image class): no spread
        return float(values[0]), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
