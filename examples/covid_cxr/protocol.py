"""The paper's protocol as constants: experiments, reported numbers and default settings.

Roy & Khurana, ACM SAC 2023 (https://doi.org/10.1145/3555776.3577825). Nothing here runs.

>>> EXPERIMENTS[4:], slug("freeze+attention"), PAPER_TABLE1["freeze+attention"]["f1"]
(('finetune', 'freeze', 'stochastic', 'freeze+attention'), 'freeze_attention', 0.95)
"""

from __future__ import annotations

# The Kaggle data set's classes (paper's label order), folder, class sizes, authors' label codes.
CLASS_NAMES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
PAPER_COUNTS = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
AUTHOR_LABELS = {0: "COVID", 1: "Normal", 2: "Viral Pneumonia", 3: "Lung_Opacity"}
# Table 1's eight rows, in its order: four other architectures, then MobileNetV2's four.
MOBILENET_EXPERIMENTS = ("finetune", "freeze", "stochastic", "freeze+attention")
EXPERIMENTS = ("covid-net", "covid-lite", "inception-v3", "resnet18-cwbce", *MOBILENET_EXPERIMENTS)
# Experiment -> architecture of `models.MODELS` (MobileNetV2 is built by `backbone.py`).
ARCHITECTURES = {
    "covid-net": "covid-net",
    "covid-lite": "covid-lite",
    "inception-v3": "inception-v3",
    "resnet18-cwbce": "resnet18",
    **{e: "mobilenetv2" for e in MOBILENET_EXPERIMENTS},
}
# Published input side of each architecture (as `models.MODELS[...].input_size`).
INPUT_SIZES = {
    "covid-net": 480,
    "covid-lite": 224,
    "inception-v3": 299,
    "resnet18": 224,
    "mobilenetv2": 224,
}
# Smallest input side (`models.MODELS[...].min_size`) where above the example's minimum, 32.
MIN_SIZES = {"covid-lite": 64, "inception-v3": 75}
# Architectures with a MaxPooling2D layer (no deterministic GPU gradient in XLA or TensorFlow).
MAX_POOLING = ("covid-net", "covid-lite", "inception-v3", "resnet18")
# Architectures trained from ImageNet weights in the paper (the others from scratch).
PRETRAINED = ("inception-v3", "mobilenetv2")
# --feature-cache: the ordered-freeze experiments (a frozen prefix), the modes, storage dtypes.
FEATURE_CACHE_EXPERIMENTS = ("freeze", "freeze+attention")
FEATURE_CACHE_MODES = ("auto", "on", "off")
FEATURE_CACHE_DTYPES = ("float16", "float32")
METRICS = ("f1", "accuracy", "precision", "recall", "auc")
# --precision: Keras dtype policies.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
METRIC_TITLES = dict(
    zip(METRICS, ("F1 score", "Accuracy", "Precision", "Recall", "AUC"), strict=True)
)
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
# Inception-V3's row label when it does not start from ImageNet weights (the paper's did).
INCEPTION_RANDOM_TITLE = "Inception-V3 (random init, not ImageNet; 100% training)"
# Table 1 of the paper (macro average on the test set): f1, accuracy, precision, recall, auc.
PAPER_TABLE1 = {
    experiment: dict(zip(METRICS, values, strict=True))
    for experiment, values in (
        ("covid-net", (0.87, 0.87, 0.88, 0.86, 0.88)),
        ("covid-lite", (0.86, 0.85, 0.86, 0.87, 0.88)),
        ("inception-v3", (0.78, 0.80, 0.77, 0.79, 0.80)),
        ("resnet18-cwbce", (0.93, 0.92, 0.93, 0.94, 0.98)),
        ("finetune", (0.91, 0.89, 0.91, 0.91, 0.95)),
        ("freeze", (0.94, 0.93, 0.93, 0.94, 0.98)),
        ("stochastic", (0.93, 0.92, 0.94, 0.92, 0.98)),
        ("freeze+attention", (0.95, 0.95, 0.96, 0.95, 0.99)),
    )
}
# Table 2 of the paper (weighted average over the 10 folds): (mean, std) of each metric.
PAPER_TABLE2 = {
    experiment: dict(zip(METRICS, zip(means, stds, strict=True), strict=True))
    for experiment, means, stds in (
        ("freeze", (0.930, 0.930, 0.931, 0.929, 0.986), (0.006, 0.006, 0.005, 0.006, 0.002)),
        ("freeze+attention", (0.940, 0.939, 0.940, 0.939, 0.988), (0.004,) * 4 + (0.002,)),
    )
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
    """File-name form of an experiment name."""
    return experiment.replace("+", "_")


def head(n_classes):
    return HEAD.replace("Dense(4,", f"Dense({int(n_classes)},")


def learning_rate(experiment, lr, finetune_lr):
    return finetune_lr if experiment == "finetune" else lr


def weights_for(experiment, weights):
    """Initial weights of ``experiment``'s model under ``--weights weights`` (docs/covid_cxr.md)."""
    arch = ARCHITECTURES[experiment]
    if arch == "mobilenetv2":
        return weights
    if arch == "inception-v3" and str(weights).lower() == "imagenet":
        return "imagenet"
    return None


def title(experiment, weights):
    """Row label of ``experiment`` started from ``weights``."""
    if experiment == "inception-v3" and weights is None:
        return INCEPTION_RANDOM_TITLE
    return EXPERIMENT_TITLES[experiment]
