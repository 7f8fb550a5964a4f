"""The settings of a run: one frozen, typed `Settings`, built once from the command line.

`Settings.create(**options)` takes the command line's values (``None`` = not given), fills the
unset ones from the paper's protocol (with ``data_dir``) or the embedded default (without it),
normalises them (experiments in Table 1's order, folds sorted, ``--shard K/N`` parsed) and checks
every one before any data are read or any model is built. Every decision that depends on them
(input sizes, the feature cache, thread counts, what a record's result depends on) is a method
here, made in one place. Nothing downstream reads the command line.

Example:
    >>> s = Settings.create(experiments=["freeze", "finetune"], n_images=80)
    >>> s.embedded, s.image_size, s.bn_momentum, s.experiments
    (True, 80, 0.9, ('finetune', 'freeze'))
    >>> s.feature_cache_for("freeze")
    (True, 'auto: ordered freeze, frozen prefix computed once')
    >>> parse_shard("2/3")
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import protocol
from protocol import EMBEDDED_DEFAULTS
from protocol import EXPERIMENTS
from protocol import PROTOCOL_DEFAULTS

# Smallest value of each integer option.
_MINIMUMS = {
    "image_size": 32,
    "batch_size": 1,
    "epochs": 1,
    "n_folds": 2,
    "mc_samples": 2,  # estimate_class_attention compares pairs of sampled images
    "patience": 0,
    "n_images": 8,
    "seed": 0,
    "workers": 1,
    "jobs": 1,
    "threads": 1,
}
# Largest value of each integer option, and why: seeds go to NumPy, scikit-learn and Keras
# (seed + fold must stay below 2**32); mc_samples as in keras_freeze.estimate_class_attention.
_MAXIMUMS = {
    "seed": (2**31 - 1, ""),
    "mc_samples": (10**7, " (the estimate's error shrinks as 1/sqrt(N); 1000 is plenty)"),
    "image_size": (2048, " (the Kaggle images are 299 px; larger sides only exhaust memory)"),
}
_WEIGHT_KEYWORDS = ("imagenet", "torchvision")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".h5")
_MODE_DEFAULTS = (
    "image_size",
    "batch_size",
    "epochs",
    "n_folds",
    "folds",
    "weights",
    "bn_momentum",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a run, checked (see `create`); the fields are the command's options."""

    data_dir: Path | None = None
    folds_dir: Path | None = None
    out: Path = Path("runs/covid_cxr")
    cache_dir: Path | None = None
    n_images: int = EMBEDDED_DEFAULTS["n_images"]
    experiments: tuple[str, ...] = EXPERIMENTS
    folds: tuple[int, ...] | None = None  # None: every fold
    n_folds: int = EMBEDDED_DEFAULTS["n_folds"]
    image_size: int | None = EMBEDDED_DEFAULTS["image_size"]  # None: each model's published side
    epochs: int = EMBEDDED_DEFAULTS["epochs"]
    batch_size: int = EMBEDDED_DEFAULTS["batch_size"]
    weights: str | None = EMBEDDED_DEFAULTS["weights"]  # None: random init
    preprocessing: str = "rescale"
    bn_momentum: float | None = EMBEDDED_DEFAULTS["bn_momentum"]  # None: keep the model's
    alpha: str = "estimate"
    mc_samples: int = 1000
    lr: float = 1e-4
    finetune_lr: float = 1e-5
    patience: int = 5
    seed: int = 0
    workers: int = 1
    feature_cache: str = "auto"
    feature_cache_dtype: str = "float32"
    precision: str = "float32"
    jobs: int = 1
    threads: int | None = None  # None: the backends' own default
    deterministic: bool = False
    shard: tuple[int, int] | None = None
    verbose: bool = False

    @classmethod
    def create(cls, **options) -> Settings:
        """The settings of a run from the command line's values (``None``: not given).

        Raises:
            ValueError: naming the option, the value received and what is expected.
        """
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Expected options of Settings. Received unknown: {unknown}")
        mode = PROTOCOL_DEFAULTS if given.get("data_dir") is not None else EMBEDDED_DEFAULTS
        for key in _MODE_DEFAULTS:
            given.setdefault(key, mode[key])
        given["bn_momentum"] = _bn_momentum(given["bn_momentum"])
        given["weights"] = _weights(given["weights"])
        given["experiments"] = _experiments(given.get("experiments", EXPERIMENTS))
        if given["folds"] is not None:
            given["folds"] = tuple(sorted(set(given["folds"])))
        if isinstance(given.get("shard"), str):
            given["shard"] = parse_shard(given["shard"])
        given.setdefault("workers", max(1, min(8, os.cpu_count() or 1)))
        _check_numbers(given)
        given["threads"] = _threads(given)
        settings = cls(**given)
        settings.check()
        return settings

    @property
    def embedded(self) -> bool:
        """Whether this is the embedded default (no ``--data-dir``: generated data)."""
        return self.data_dir is None

    def check(self):
        """Checks the choices, sizes, feature cache and paths (see `create`)."""
        _check_choices(self)
        for experiment in self.experiments:
            low = protocol.MIN_SIZES.get(protocol.ARCHITECTURES[experiment], 0)
            if self.image_size_for(experiment) < low:
                raise ValueError(
                    f"Expected --image-size >= {low} for {experiment} (its smallest input). "
                    f"Received: image_size={self.image_size}; drop {experiment} from "
                    f"--experiments or use --image-size {low} or more"
                )
        bad = [e for e in self.experiments if e not in protocol.FEATURE_CACHE_EXPERIMENTS]
        if self.feature_cache == "on" and bad:
            raise ValueError(
                "Expected --feature-cache on only with the ordered-freeze experiments (freeze, "
                f"freeze+attention). Received: experiments {bad}, which have no frozen prefix to "
                "cache; use --feature-cache auto, or --experiments freeze freeze+attention"
            )
        _check_weights_path(self.weights)
        _check_folder("--data-dir", self.data_dir, must_exist=True)
        _check_folder("--folds-dir", self.folds_dir, must_exist=True)
        _check_folder("--out", self.out, must_exist=False)
        _check_folder("--cache-dir", self.cache_dir, must_exist=False)

    def image_size_for(self, experiment: str) -> int:
        """Input side of ``experiment``: ``--image-size`` if set, else its published side."""
        if self.image_size is not None:
            return self.image_size
        return protocol.INPUT_SIZES[protocol.ARCHITECTURES[experiment]]

    def feature_cache_for(self, experiment: str) -> tuple[bool, str]:
        """Whether ``experiment`` trains on cached frozen-prefix features, and why."""
        if self.feature_cache == "off":
            return False, "off: --feature-cache off"
        if experiment not in protocol.FEATURE_CACHE_EXPERIMENTS:
            return False, (
                f"{self.feature_cache}: {experiment} has no frozen prefix "
                "(only freeze, freeze+attention)"
            )
        return True, f"{self.feature_cache}: ordered freeze, frozen prefix computed once"

    def uses_mobilenet(self) -> bool:
        """Whether a planned experiment builds MobileNetV2 (and so needs ``weights``)."""
        return any(protocol.ARCHITECTURES[e] == "mobilenetv2" for e in self.experiments)

    def for_child(self) -> Settings:
        """The settings of one of ``jobs`` unit processes: the decoding threads shared out."""
        return dataclasses.replace(self, workers=max(1, self.workers // self.jobs))

    def record_key(self, experiment: str, data_fingerprint: str) -> dict:
        """What decides a record's result: a record is reused or merged only when it matches.

        Returns:
            ``{"shared": settings common to every experiment, "own": the experiment's}``.
        """
        shared = {
            "data": data_fingerprint,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "patience": self.patience,
            "weights": self.weights,
            "preprocessing": self.preprocessing,
            "bn_momentum": self.bn_momentum,
            "precision": self.precision,
            "seed": self.seed,
            "val_fraction": protocol.VAL_FRACTION,
            "val_seed": protocol.VAL_SEED,
        }
        if self.deterministic:  # other kernels; absent from earlier records
            shared["deterministic"] = True
        own = {
            "lr": protocol.learning_rate(experiment, self.lr, self.finetune_lr),
            "image_size": self.image_size_for(experiment),
            "weights": protocol.weights_for(experiment, self.weights),
        }
        # A float32 cache gives the uncached run's records; a float16 one does not.
        if self.feature_cache_for(experiment)[0] and self.feature_cache_dtype == "float16":
            own["feature_cache_dtype"] = "float16"
        if experiment == "freeze+attention":
            own["alpha"] = self.alpha
            if self.alpha == "estimate":
                own["mc_samples"] = self.mc_samples
        return {"shared": shared, "own": own}

    def to_json(self) -> dict:
        """The settings as a JSON-ready dict (for ``run_config.json``)."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }


def parse_shard(text) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``.

    Raises:
        ValueError: naming the value and the expected form.
    """
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise ValueError(
            "Expected --shard K/N with 1 <= K <= N (e.g. 2/4 for the second of four machines). "
            f"Received: shard={text!r}"
        )
    return k, n


def default_threads(jobs: int, cpus: int | None = None) -> int:
    """CPU threads of each of ``jobs`` concurrent units: the CPUs shared out (at least 1)."""
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


def _threads(given) -> int | None:
    """``--threads``, or 1 with ``--deterministic`` (the thread count enters CPU float sums),
    or the CPUs shared out with ``--jobs N``, or ``None`` (the backends' default)."""
    if given.get("threads") is not None:
        return given["threads"]
    if given.get("deterministic"):
        return 1
    jobs = given.get("jobs", 1)
    return default_threads(jobs) if jobs > 1 else None


def _bn_momentum(value):
    """``--bn-momentum`` as a float in [0, 1), or ``None`` for 'keep'."""
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


def _weights(value):
    """``--weights``: ``None`` for none/null/random, else the keyword or path as a string."""
    if value is None or str(value).lower() in ("none", "null", "random"):
        return None
    return str(value)


def _experiments(names) -> tuple[str, ...]:
    """Table 1's order, duplicates dropped, unknown names refused."""
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown or not names:
        raise ValueError(f"Expected experiments among {list(EXPERIMENTS)}. Received: {unknown}")
    return tuple(e for e in EXPERIMENTS if e in set(names))


def _check_numbers(given):
    for key, low in _MINIMUMS.items():
        value = given.get(key)
        if value is not None and value < low:
            raise ValueError(
                f"Expected --{key.replace('_', '-')} >= {low}. Received: {key}={value}"
            )
    for key, (high, why) in _MAXIMUMS.items():
        value = given.get(key)
        if value is not None and value > high:
            flag = f"--{key.replace('_', '-')}"
            expected = f"{flag} in [0, {high}]" if key == "seed" else f"{flag} <= {high}"
            raise ValueError(f"Expected {expected}{why}. Received: {key}={value}")
    if given["folds"] is not None and given["folds"][0] < 1:
        raise ValueError(f"Expected 1-based fold numbers (>= 1). Received: folds={given['folds']}")
    for key in ("lr", "finetune_lr"):
        value = given.get(key)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"Expected {flag} > 0 and finite. Received: {key}={value}")


def _check_choices(s: Settings):
    for key, choices in (
        ("feature_cache", protocol.FEATURE_CACHE_MODES),
        ("feature_cache_dtype", protocol.FEATURE_CACHE_DTYPES),
        ("precision", protocol.PRECISIONS),
        ("preprocessing", tuple(protocol.PREPROCESSING_MODES)),
        ("alpha", ("estimate", "paper")),
    ):
        if getattr(s, key) not in choices:
            raise ValueError(
                f"Expected --{key.replace('_', '-')} in {choices}. "
                f"Received: {key}={getattr(s, key)!r}"
            )


def _check_weights_path(weights):
    """A weights path must be an existing .pth/.pt/.h5 file (its content: `experiment`)."""
    if weights is None or weights.lower() in _WEIGHT_KEYWORDS:
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            "Expected --weights to be imagenet, torchvision, none or an existing weights file "
            f"(.pth, .pt, .h5). Received: weights={weights!r}, which {what}"
        )
    if not path.name.lower().endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            "Expected a weights file ending in .pth/.pt (torchvision checkpoint) or .h5 "
            f"(Keras .weights.h5). Received: weights={weights!r}"
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
