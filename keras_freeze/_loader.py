"""Batches of class-folder images for `model.fit`, and the per-epoch shuffle order they share."""

from __future__ import annotations

import numpy as np


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
