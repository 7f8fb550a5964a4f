"""keras-freeze: partial freezing and attention-weighted losses for Keras 3.

Implements Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss
Function for Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825) as drop-in Keras pieces.
"""

from keras_freeze._attention import ClassAttention
from keras_freeze._attention import attention_weights
from keras_freeze._class_weights import ClassWeights
from keras_freeze._class_weights import class_weights
from keras_freeze._estimator import estimate_class_attention
from keras_freeze._feature_cache import FeatureCache
from keras_freeze._feature_cache import FeatureDataset
from keras_freeze._feature_cache import cache_features
from keras_freeze._freeze import FreezeReport
from keras_freeze._freeze import flatten_layers
from keras_freeze._freeze import freeze
from keras_freeze._freeze import freeze_fraction
from keras_freeze._freeze import unfreeze
from keras_freeze._gradcam import grad_cam
from keras_freeze._gradcam import upsample_heatmap
from keras_freeze._images import IMAGE_EXTENSIONS
from keras_freeze._images import ClassImages
from keras_freeze._images import decode_image
from keras_freeze._images import list_class_images
from keras_freeze._layerwise import LayerwiseOptimizer
from keras_freeze._layerwise import ScaledSchedule
from keras_freeze._layerwise import layerwise_decay
from keras_freeze._loader import ImageDataset
from keras_freeze._loader import predict_images
from keras_freeze._loader import scan_images
from keras_freeze._loader import shuffle_order
from keras_freeze._losses import PAPER_ALPHA
from keras_freeze._losses import PAPER_CLASS_NAMES
from keras_freeze._losses import AttentionWeightedCCE
from keras_freeze._losses import CustomWeightedBalancedCCE
from keras_freeze._losses import SparseAttentionWeightedCCE
from keras_freeze._losses import attention_weighted_cce
from keras_freeze._losses import custom_weighted_balanced_cce
from keras_freeze._losses import cwbcce_weights
from keras_freeze._losses import sparse_attention_weighted_cce
from keras_freeze._metrics import ClassificationMetrics
from keras_freeze._metrics import ClassificationReport
from keras_freeze._metrics import classification_metrics
from keras_freeze._prefix import FrozenPrefixSplit
from keras_freeze._prefix import split_frozen_prefix
from keras_freeze._statistics import McNemarResult
from keras_freeze._statistics import PosteriorResult
from keras_freeze._statistics import TTestResult
from keras_freeze._statistics import bayesian_correlated_t_test
from keras_freeze._statistics import corrected_t_test
from keras_freeze._statistics import mcnemar
from keras_freeze._torchvision import SymmetricPaddingConv2D
from keras_freeze._torchvision import check_weights_file
from keras_freeze._torchvision import convert_torchvision_state_dict
from keras_freeze._torchvision import mobilenet_v2
from keras_freeze._torchvision import mobilenet_v2_preprocessing
from keras_freeze._torchvision import preprocess_mobilenet_v2
from keras_freeze._torchvision import read_torch_state_dict
from keras_freeze._torchvision import torchvision_checkpoint
from keras_freeze._unfreezing import GradualUnfreezing
from keras_freeze._version import __version__

__all__ = [
    "IMAGE_EXTENSIONS",
    "PAPER_ALPHA",
    "PAPER_CLASS_NAMES",
    "AttentionWeightedCCE",
    "ClassAttention",
    "ClassImages",
    "ClassWeights",
    "ClassificationMetrics",
    "ClassificationReport",
    "CustomWeightedBalancedCCE",
    "FeatureCache",
    "FeatureDataset",
    "FreezeReport",
    "FrozenPrefixSplit",
    "GradualUnfreezing",
    "ImageDataset",
    "LayerwiseOptimizer",
    "McNemarResult",
    "PosteriorResult",
    "ScaledSchedule",
    "SparseAttentionWeightedCCE",
    "SymmetricPaddingConv2D",
    "TTestResult",
    "__version__",
    "attention_weighted_cce",
    "attention_weights",
    "bayesian_correlated_t_test",
    "cache_features",
    "check_weights_file",
    "class_weights",
    "classification_metrics",
    "convert_torchvision_state_dict",
    "corrected_t_test",
    "custom_weighted_balanced_cce",
    "cwbcce_weights",
    "decode_image",
    "estimate_class_attention",
    "flatten_layers",
    "freeze",
    "freeze_fraction",
    "grad_cam",
    "layerwise_decay",
    "list_class_images",
    "mcnemar",
    "mobilenet_v2",
    "mobilenet_v2_preprocessing",
    "predict_images",
    "preprocess_mobilenet_v2",
    "read_torch_state_dict",
    "scan_images",
    "shuffle_order",
    "sparse_attention_weighted_cce",
    "split_frozen_prefix",
    "torchvision_checkpoint",
    "unfreeze",
    "upsample_heatmap",
]
