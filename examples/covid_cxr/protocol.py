"""The paper's protocol as constants: experiments, reported numbers and default settings.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for Covid-19 Detection
from an Imbalanced CXR Dataset", ACM SAC 2023 (https://doi.org/10.1145/3555776.3577825).
Nothing here runs anything; `reproduce.py` and its sibling modules read these values.

Example:
    >>> import protocol
    >>> protocol.EXPERIMENTS[:4]
    ('covid-net', 'covid-lite', 'inception-v3', 'resnet18-cwbce')
    >>> protocol.EXPERIMENTS[4:]
    ('finetune', 'freeze', 'stochastic', 'freeze+attention')
    >>> protocol.slug("freeze+attention")
    'freeze_attention'
    >>> protocol.PAPER_TABLE1["freeze+attention"]["f1"]
    0.95
"""

from __future__ import annotations

# The Kaggle COVID-19 Radiography Database's class folders, in the paper's label order, its
# folder name, its class sizes, and the label codes of the authors' fold lists.
CLASS_NAMES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
PAPER_COUNTS = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
AUTHOR_LABELS = {0: "COVID", 1: "Normal", 2: "Viral Pneumonia", 3: "Lung_Opacity"}
# Table 1's eight rows, in its order: four other architectures, then MobileNetV2's four.
EXPERIMENTS = (
    "covid-net",
    "covid-lite",
    "inception-v3",
    "resnet18-cwbce",
    "finetune",
    "freeze",
    "stochastic",
    "freeze+attention",
)
MOBILENET_EXPERIMENTS = ("finetune", "freeze", "stochastic", "freeze+attention")
# Experiment -> architecture of `models.MODELS` (MobileNetV2 is built by `backbone.py`).
ARCHITECTURES = {
    "covid-net": "covid-net",
    "covid-lite": "covid-lite",
    "inception-v3": "inception-v3",
    "resnet18-cwbce": "resnet18",
    **{e: "mobilenetv2" for e in MOBILENET_EXPERIMENTS},
}
# Published input side of each architecture (with --data-dir and no --image-size every model
# trains at its own); `models.MODELS[...].input_size` holds the same numbers, with sources.
INPUT_SIZES = {
    "covid-net": 480,
    "covid-lite": 224,
    "inception-v3": 299,
    "resnet18": 224,
    "mobilenetv2": 224,
}
# Smallest input side an architecture accepts (`models.MODELS[...].min_size`; Keras'
# InceptionV3 needs 75 px); the others take the example's minimum, 32.
MIN_SIZES = {"covid-lite": 64, "inception-v3": 75}
# Architectures with a MaxPooling2D layer (no deterministic GPU gradient in XLA or TensorFlow;
# see `experiment.check_deterministic`).
MAX_POOLING = ("covid-net", "covid-lite", "inception-v3", "resnet18")
# Architectures trained from ImageNet weights in the paper (the others from scratch).
PRETRAINED = ("inception-v3", "mobilenetv2")
# --feature-cache: the experiments whose frozen layers form a prefix (ordered freeze), the modes
# and the storage dtypes.
FEATURE_CACHE_EXPERIMENTS = ("freeze", "freeze+attention")
FEATURE_CACHE_MODES = ("auto", "on", "off")
FEATURE_CACHE_DTYPES = ("float16", "float32")
METRICS = ("f1", "accuracy", "precision", "recall", "auc")
# --precision: Keras dtype policies.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
METRIC_TITLES = {
    "f1": "F1 score",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "auc": "AUC",
}
EXPERIMENT_TITLES = {
    "covid-net": "Covid-Net (train from scratch)",
    "covid-lite": "Covid-Lite (train from scratch)",
    "inception-v3": "Inception-V3 (100% fine tuning)",
    "resnet18-cwbce": "ResNet-18 + CWBCE loss (train from scratch)",
    "finetune": "MobileNetV2 (100% fine tuning)",
    "freeze": "Mobile Freeze-Net (50% freeze)",
    "stochastic": "MobileNetV2 (50% stochastic fine tuning)",
    "freeze+attention": "Proposed: Mobile Freeze-Net + attention-based loss",
}
# Inception-V3's row label when it does not start from ImageNet weights (see `title`).
INCEPTION_RANDOM_TITLE = "Inception-V3 (random init, not ImageNet; 100% training)"
# Table 1 of the paper (macro average on the test set).
PAPER_TABLE1 = {
    "covid-net": {"f1": 0.87, "accuracy": 0.87, "precision": 0.88, "recall": 0.86, "auc": 0.88},
    "covid-lite": {"f1": 0.86, "accuracy": 0.85, "precision": 0.86, "recall": 0.87, "auc": 0.88},
    "inception-v3": {"f1": 0.78, "accuracy": 0.80, "precision": 0.77, "recall": 0.79, "auc": 0.80},
    "resnet18-cwbce": {
        "f1": 0.93,
        "accuracy": 0.92,
        "precision": 0.93,
        "recall": 0.94,
        "auc": 0.98,
    },
    "finetune": {"f1": 0.91, "accuracy": 0.89, "precision": 0.91, "recall": 0.91, "auc": 0.95},
    "freeze": {"f1": 0.94, "accuracy": 0.93, "precision": 0.93, "recall": 0.94, "auc": 0.98},
    "stochastic": {"f1": 0.93, "accuracy": 0.92, "precision": 0.94, "recall": 0.92, "auc": 0.98},
    "freeze+attention": {
        "f1": 0.95,
        "accuracy": 0.95,
        "precision": 0.96,
        "recall": 0.95,
        "auc": 0.99,
    },
}
# Table 2 of the paper (weighted average, mean and std over the 10 folds).
PAPER_TABLE2 = {
    "freeze": {
        "f1": (0.930, 0.006),
        "accuracy": (0.930, 0.006),
        "precision": (0.931, 0.005),
        "recall": (0.929, 0.006),
        "auc": (0.986, 0.002),
    },
    "freeze+attention": {
        "f1": (0.940, 0.004),
        "accuracy": (0.939, 0.004),
        "precision": (0.940, 0.004),
        "recall": (0.939, 0.004),
        "auc": (0.988, 0.002),
    },
}

# The paper's protocol, used with --data-dir.
PROTOCOL_DEFAULTS = {
    "image_size": None,  # every model at its published input side (INPUT_SIZES)
    "batch_size": 8,
    "epochs": 100,
    "n_folds": 10,
    "folds": None,  # all folds
    "weights": "imagenet",
    "bn_momentum": None,  # keep the backbone's (Keras: 0.999)
}
# The embedded default (no --data-dir): synthetic data and a budget for a 2-core CPU.
EMBEDDED_DEFAULTS = {
    "image_size": 80,  # one small side every architecture accepts (Inception-V3: >= 75)
    "batch_size": 8,
    "epochs": 6,
    "n_folds": 5,
    "folds": [1],
    "weights": "torchvision",
    "n_images": 600,
    "bn_momentum": 0.9,
}

# The authors' notebooks: the nine training folds are split 90/10 with random_state=42.
VAL_FRACTION = 0.1
VAL_SEED = 42
# Head of every model (as in the paper).
HEAD = "GlobalMaxPooling2D -> Dense(4, softmax)"
# Fraction of the backbone's layers frozen by freeze, stochastic and freeze+attention.
FREEZE_FRACTION = 0.5
# Where the attention loss's class weights come from (the records' ``alpha_source``).
PAPER_ALPHA_SOURCE = "paper (authors' published weights)"
ESTIMATED_ALPHA_SOURCE = "estimated on the training split (estimate_class_attention)"
# Image side at which estimate_class_attention reads the training split.
ATTENTION_IMAGE_SIZE = 64

RECORD_SCHEMA = 1
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: these numbers come from a generated, CXR-like toy data set "
    "(the embedded default), not from real chest X-rays; they say nothing about the "
    "paper's claims."
)

# --preprocessing choice -> backbone.preprocessing_for mode (None: the weights' own scaling).
PREPROCESSING_MODES = {"rescale": "rescale", "native": None, "torch": "torch", "tf": "tf"}
PREPROCESSING_TEXT = {
    "rescale": "rescale: x/255 (the paper's notebooks)",
    "torch": "torch: (x/255 - ImageNet mean) / std (torchvision's training inputs)",
    "tf": "tf: x/127.5 - 1 (Keras MobileNetV2's training inputs)",
}


def slug(experiment):
    """File-name form of an experiment name (``freeze+attention`` -> ``freeze_attention``)."""
    return experiment.replace("+", "_")


def head(n_classes):
    """The head's description for ``n_classes`` classes (`HEAD` for the paper's four)."""
    return HEAD.replace("Dense(4,", f"Dense({int(n_classes)},")


def learning_rate(experiment, lr, finetune_lr):
    """Adam learning rate of ``experiment``: ``finetune_lr`` for finetune, else ``lr``."""
    return finetune_lr if experiment == "finetune" else lr


def weights_for(experiment, weights):
    """Initial weights of ``experiment``'s model under ``--weights weights``.

    MobileNetV2 takes ``--weights`` as given. Inception-V3 starts from ImageNet only with
    ``--weights imagenet`` (Keras downloads them; no package ships them offline), else from
    random init. Covid-Net, Covid-Lite and ResNet-18 train from scratch, as in the paper.

    Example:
        >>> weights_for("freeze", "torchvision"), weights_for("inception-v3", "torchvision")
        ('torchvision', None)
    """
    arch = ARCHITECTURES[experiment]
    if arch == "mobilenetv2":
        return weights
    if arch == "inception-v3" and str(weights).lower() == "imagenet":
        return "imagenet"
    return None


def title(experiment, weights):
    """Row label of ``experiment`` whose model started from ``weights`` (see `weights_for`).

    Inception-V3 without ImageNet weights is labelled so: the paper fine-tuned ImageNet's.

    Example:
        >>> title("inception-v3", None)
        'Inception-V3 (random init, not ImageNet; 100% training)'
    """
    if experiment == "inception-v3" and weights is None:
        return INCEPTION_RANDOM_TITLE
    return EXPERIMENT_TITLES[experiment]
