"""Settings of a run: the command line's values completed by the mode's defaults and checked.

Without ``--data-dir`` unset options take the embedded default's values
(`protocol.EMBEDDED_DEFAULTS`), with it the paper's protocol (`protocol.PROTOCOL_DEFAULTS`).
Every value is checked here, before any data are read or any model is built.

Example:
    >>> import argparse, settings
    >>> args = argparse.Namespace(data_dir=None, image_size=None, batch_size=None, epochs=None,
    ...     n_folds=None, weights=None, bn_momentum="keep", folds=None, mc_samples=10,
    ...     patience=5, n_images=80, experiments=["freeze", "finetune"], workers=1)
    >>> args = settings.resolve_settings(args)
    >>> args.embedded, args.image_size, args.bn_momentum, args.experiments
    (True, 64, None, ['finetune', 'freeze'])
"""

from __future__ import annotations

import os

from protocol import EMBEDDED_DEFAULTS
from protocol import EXPERIMENTS
from protocol import PROTOCOL_DEFAULTS

_MINIMUMS = (
    ("image_size", 32),
    ("batch_size", 1),
    ("epochs", 1),
    ("n_folds", 2),
    ("mc_samples", 1),
    ("patience", 0),
    ("n_images", 8),
)


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
        value = getattr(args, key)
        if value < low:
            raise ValueError(
                f"Expected --{key.replace('_', '-')} >= {low}. Received: {key}={value}"
            )
    if args.folds is not None:
        if any(k < 1 for k in args.folds):
            raise ValueError(f"Expected 1-based fold numbers (>= 1). Received: folds={args.folds}")
        args.folds = sorted(set(args.folds))


def resolve_settings(args):
    """Fills unset options from the protocol or the embedded default.

    Args:
        args: parsed ``argparse.Namespace``.

    Returns:
        The same namespace with ``embedded`` set and no option left ``None`` except
        ``folds`` (``None`` = all folds) and ``data_dir``.

    Raises:
        ValueError: if an option is out of range.
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
    if args.workers is None:
        args.workers = max(1, min(8, os.cpu_count() or 1))
    return args
