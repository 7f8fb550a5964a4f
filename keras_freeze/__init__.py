"""keras-freeze: partial freezing and attention-weighted losses for Keras 3.

Implements Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss
Function for Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825) as drop-in Keras pieces.
"""

from keras_freeze._attention import ClassAttention
from keras_freeze._attention import attention_weights
from keras_freeze._attention import estimate_class_attention
from keras_freeze._callbacks import ClassificationMetrics
from keras_freeze._callbacks import GradualUnfreezing
from keras_freeze._callbacks import classification_metrics
from keras_freeze._freeze import FreezeReport
from keras_freeze._freeze import flatten_layers
from keras_freeze._freeze import freeze_fraction
from keras_freeze._freeze import unfreeze
from keras_freeze._losses import PAPER_ALPHA
from keras_freeze._losses import PAPER_CLASS_NAMES
from keras_freeze._losses import AttentionWeightedCCE
from keras_freeze._losses import SparseAttentionWeightedCCE
from keras_freeze._losses import attention_weighted_cce
from keras_freeze._losses import sparse_attention_weighted_cce
from keras_freeze._version import __version__

__all__ = [
    "PAPER_ALPHA",
    "PAPER_CLASS_NAMES",
    "AttentionWeightedCCE",
    "ClassAttention",
    "ClassificationMetrics",
    "FreezeReport",
    "GradualUnfreezing",
    "SparseAttentionWeightedCCE",
    "__version__",
    "attention_weighted_cce",
    "attention_weights",
    "classification_metrics",
    "estimate_class_attention",
    "flatten_layers",
    "freeze_fraction",
    "sparse_attention_weighted_cce",
    "unfreeze",
]
