"""Settings of a run: the command line's values completed by the mode's defaults and checked.

Without ``--data-dir`` unset options take the embedded default's values
(`protocol.EMBEDDED_DEFAULTS`), with it the paper's protocol (`protocol.PROTOCOL_DEFAULTS`).
Every value is checked here, before any data are read or any model is built.

Example:
    >>> import argparse, settings
    >>> args = argparse.Namespace(data_dir=None, image_size=None, batch_size=None, epochs=None,
    ...     n_folds=None, weights=None, bn_momentum="keep", folds=None, mc_samples=10,
    ...     patience=5, n_images=80, experiments=["freeze", "finetune"], workers=1, seed=0)
    >>> args = settings.resolve_settings(args)
    >>> args.embedded, args.image_size, args.bn_momentum, args.experiments
    (True, 80, None, ['finetune', 'freeze'])
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import scheduler
from protocol import ARCHITECTURES
from protocol import EMBEDDED_DEFAULTS
from protocol import EXPERIMENTS
from protocol import FEATURE_CACHE_DTYPES
from protocol import FEATURE_CACHE_EXPERIMENTS
from protocol import FEATURE_CACHE_MODES
from protocol import INPUT_SIZES
from protocol import MIN_SIZES
from protocol import PRECISIONS
from protocol import PROTOCOL_DEFAULTS

_MINIMUMS = (
    ("image_size", 32),
    ("batch_size", 1),
    ("epochs", 1),
    ("n_folds", 2),
    # estimate_class_attention compares pairs of sampled images: it needs two or more.
    ("mc_samples", 2),
    ("patience", 0),
    ("n_images", 8),
    ("seed", 0),
    ("workers", 1),
)
# Seeds go to NumPy, scikit-learn and Keras (seed + fold number must stay below 2**32).
_MAX_SEED = 2**31 - 1
# Keep in step with `mc_samples`' bound in keras_freeze.estimate_class_attention.
_MAX_MC_SAMPLES = 10**7
_WEIGHT_KEYWORDS = ("imagenet", "torchvision")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".h5")


def _parse_bn_momentum(value):
    """``--bn-momentum`` as a float in [0, 1) or ``None`` ('keep')."""
    if isinstance(value, str):
        if value.lower() == "keep":
            return None
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                "Expected --bn-momentum to be a number in [0, 1) or 'keep'. "
                f"Received: bn_momentum={value!r}"
            ) from None
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"Expected --bn-momentum in [0, 1). Received: bn_momentum={value}")
    return value


def _check_ranges(args):
    for key, low in _MINIMUMS:
        value = getattr(args, key, None)
        if value is not None and value < low:
            raise ValueError(
                f"Expected --{key.replace('_', '-')} >= {low}. Received: {key}={value}"
            )
    if args.folds is not None:
        if any(k < 1 for k in args.folds):
            raise ValueError(f"Expected 1-based fold numbers (>= 1). Received: folds={args.folds}")
        args.folds = sorted(set(args.folds))
    if getattr(args, "seed", 0) > _MAX_SEED:
        raise ValueError(f"Expected --seed in [0, {_MAX_SEED}]. Received: seed={args.seed}")
    if args.mc_samples > _MAX_MC_SAMPLES:
        raise ValueError(
            f"Expected --mc-samples <= {_MAX_MC_SAMPLES} (the estimate's error shrinks as "
            f"1/sqrt(N); 1000 is plenty). Received: mc_samples={args.mc_samples}"
        )
    for key in ("lr", "finetune_lr"):
        value = getattr(args, key, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"Expected {flag} > 0 and finite. Received: {key}={value}")


def _check_weights(weights):
    """A weights path must be an existing .pth/.pt/.h5 file (checked before any work)."""
    if weights is None or str(weights).lower() in _WEIGHT_KEYWORDS:
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            "Expected --weights to be imagenet, torchvision, none or an existing weights file "
            f"(.pth, .pt, .h5). Received: weights={str(weights)!r}, which {what}"
        )
    if not path.name.lower().endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            "Expected a weights file ending in .pth/.pt (torchvision checkpoint) or .h5 "
            f"(Keras .weights.h5). Received: weights={str(weights)!r}"
        )


def _check_folder(flag, value, *, must_exist):
    """``value`` must be a directory (or, if not ``must_exist``, a path one can create)."""
    if value is None:
        return
    path = Path(value).expanduser()
    received = f"Received: {flag[2:].replace('-', '_')}={str(value)!r}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"Expected {flag} to be a folder. {received}, which is a file")
    if not path.exists() and must_exist:
        raise ValueError(f"Expected {flag} to be an existing folder. {received} (does not exist)")
    # An output folder: it, or its first existing ancestor, must be a writable folder.
    target = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if not target.is_dir():
        raise ValueError(
            f"Expected {flag} to be a folder one can create. {received}, but {str(target)!r} "
            "is a file"
        )
    if not must_exist and not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"Expected {flag} in a writable place. {received} ({target} is read-only)")


def _check_feature_cache(args):
    """``--feature-cache`` and its dtype; ``on`` only with experiments that can use the cache.

    ``on`` with finetune or stochastic is refused here, up front (they have no frozen prefix:
    finetune trains every layer, stochastic freezes layers all through the network); ``auto``
    simply trains those without the cache.
    """
    args.feature_cache = getattr(args, "feature_cache", "auto")
    args.feature_cache_dtype = getattr(args, "feature_cache_dtype", "float32")
    if args.feature_cache not in FEATURE_CACHE_MODES:
        raise ValueError(
            f"Expected --feature-cache in {FEATURE_CACHE_MODES}. "
            f"Received: feature_cache={args.feature_cache!r}"
        )
    if args.feature_cache_dtype not in FEATURE_CACHE_DTYPES:
        raise ValueError(
            f"Expected --feature-cache-dtype in {FEATURE_CACHE_DTYPES}. "
            f"Received: feature_cache_dtype={args.feature_cache_dtype!r}"
        )
    bad = [e for e in args.experiments if e not in FEATURE_CACHE_EXPERIMENTS]
    if args.feature_cache == "on" and bad:
        raise ValueError(
            "Expected --feature-cache on only with the ordered-freeze experiments (freeze, "
            f"freeze+attention). Received: experiments {bad}, which have no frozen prefix to "
            "cache; use --feature-cache auto, or --experiments freeze freeze+attention"
        )


def image_size_for(args, experiment):
    """Input side of ``experiment``: ``--image-size`` if set, else its published input size.

    Example:
        >>> import argparse
        >>> image_size_for(argparse.Namespace(image_size=None), "covid-net")
        480
        >>> image_size_for(argparse.Namespace(image_size=96), "inception-v3")
        96
    """
    if args.image_size is not None:
        return args.image_size
    return INPUT_SIZES[ARCHITECTURES[experiment]]


def _check_sizes(args):
    """An explicit ``--image-size`` must suit every selected architecture."""
    for experiment in args.experiments:
        low = MIN_SIZES.get(ARCHITECTURES[experiment], 0)
        if image_size_for(args, experiment) < low:
            raise ValueError(
                f"Expected --image-size >= {low} for {experiment} (its smallest input). "
                f"Received: image_size={args.image_size}; drop {experiment} from --experiments "
                f"or use --image-size {low} or more"
            )


def _check_scale(args):
    """``--precision``, ``--jobs``, ``--threads``, ``--deterministic`` and ``--shard`` (parsed
    to ``(K, N)``)."""
    args.precision = getattr(args, "precision", "float32")
    if args.precision not in PRECISIONS:
        raise ValueError(
            f"Expected --precision in {PRECISIONS}. Received: precision={args.precision!r}"
        )
    args.jobs = getattr(args, "jobs", 1)
    if args.jobs < 1:
        raise ValueError(f"Expected --jobs >= 1. Received: jobs={args.jobs}")
    shard = getattr(args, "shard", None)
    args.shard = None if shard is None else scheduler.parse_shard(shard)
    args.threads = getattr(args, "threads", None)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"Expected --threads >= 1. Received: threads={args.threads}")
    args.deterministic = bool(getattr(args, "deterministic", False))
    if args.threads is None and args.deterministic:  # the thread count enters CPU float sums
        args.threads = 1
    if args.threads is None and args.jobs > 1:
        args.threads = scheduler.default_threads(args.jobs)


def check_paths(args):
    """Checks the paths of the command line before any data are read or generated.

    A ``--weights`` file must exist (.pth, .pt or .h5); ``--data-dir`` and ``--folds-dir``
    must be existing folders; ``--out`` and ``--cache-dir`` must be folders or creatable in a
    writable place (not files).

    Args:
        args: the namespace returned by `resolve_settings`.

    Raises:
        ValueError: naming the option, the path and what is wrong with it.
    """
    _check_weights(args.weights)
    _check_folder("--data-dir", getattr(args, "data_dir", None), must_exist=True)
    _check_folder("--folds-dir", getattr(args, "folds_dir", None), must_exist=True)
    _check_folder("--out", getattr(args, "out", None), must_exist=False)
    _check_folder("--cache-dir", getattr(args, "cache_dir", None), must_exist=False)


def resolve_settings(args):
    """Fills unset options from the protocol or the embedded default.

    Args:
        args: parsed ``argparse.Namespace``.

    Returns:
        The same namespace with ``embedded`` set and no option left ``None`` except
        ``folds`` (``None`` = all folds) and ``data_dir``.

    Raises:
        ValueError: if an option is out of range. Paths are checked by `check_paths`.
    """
    args.embedded = args.data_dir is None
    defaults = EMBEDDED_DEFAULTS if args.embedded else PROTOCOL_DEFAULTS
    for key in ("image_size", "batch_size", "epochs", "n_folds", "weights", "bn_momentum"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.bn_momentum = _parse_bn_momentum(args.bn_momentum)
    if args.folds is None:
        args.folds = None if defaults["folds"] is None else list(defaults["folds"])
    if str(args.weights).lower() in ("none", "null", "random"):
        args.weights = None
    _check_ranges(args)
    # Keep the order of EXPERIMENTS, drop duplicates.
    args.experiments = [e for e in EXPERIMENTS if e in set(args.experiments)]
    _check_feature_cache(args)
    _check_sizes(args)
    _check_scale(args)
    if args.workers is None:
        args.workers = max(1, min(8, os.cpu_count() or 1))
    return args
