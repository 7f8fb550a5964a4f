"""The paper's protocol as constants: experiments, reported numbers and default settings.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for Covid-19 Detection
from an Imbalanced CXR Dataset", ACM SAC 2023 (https://doi.org/10.1145/3555776.3577825).
Nothing here runs anything; `reproduce.py` and its sibling modules read these values.

Example:
    >>> import protocol
    >>> protocol.EXPERIMENTS
    ('finetune', 'freeze', 'stochastic', 'freeze+attention')
    >>> protocol.slug("freeze+attention")
    'freeze_attention'
    >>> protocol.PAPER_TABLE1["freeze+attention"]["f1"]
    0.95
"""

from __future__ import annotations

# The Kaggle COVID-19 Radiography Database's class folders, in the paper's label order.
CLASS_NAMES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
EXPERIMENTS = ("finetune", "freeze", "stochastic", "freeze+attention")
METRICS = ("f1", "accuracy", "precision", "recall", "auc")
METRIC_TITLES = {
    "f1": "F1 score",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "auc": "AUC",
}
EXPERIMENT_TITLES = {
    "finetune": "MobileNetV2 (100% fine tuning)",
    "freeze": "Mobile Freeze-Net (50% freeze)",
    "stochastic": "MobileNetV2 (50% stochastic fine tuning)",
    "freeze+attention": "Proposed: Mobile Freeze-Net + attention-based loss",
}
# Table 1 of the paper (macro average on the test set), MobileNetV2 rows.
PAPER_TABLE1 = {
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
    "image_size": 224,
    "batch_size": 8,
    "epochs": 100,
    "n_folds": 10,
    "folds": None,  # all folds
    "weights": "imagenet",
    "bn_momentum": None,  # keep the backbone's (Keras: 0.999)
}
# The embedded default (no --data-dir): synthetic data and a budget for a 2-core CPU.
EMBEDDED_DEFAULTS = {
    "image_size": 64,
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
