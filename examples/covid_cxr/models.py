"""The four other architectures of the paper's Table 1, in backend-agnostic Keras 3.

Roy & Khurana (ACM SAC 2023, Table 1) compare Mobile Freeze-Net with four
published models trained on the same data and protocol (batch 8, Adam 1e-4,
early stopping on the validation loss with patience 5):

- Covid-Net [7] (Wang, Lin & Wong, Sci. Rep. 10:19549, 2020), from scratch;
- Covid-Lite [5] (Siddhartha & Santra, arXiv:2006.13873, 2020), from scratch;
- Inception-V3 (Szegedy et al., CVPR 2016), ImageNet weights, 100% fine tuning;
- ResNet-18 (He et al., CVPR 2016) with the CWBCCE loss of Tyagi, Roy & Bansal
  (ICPR 2022) [6], from scratch (the loss is
  `keras_freeze.CustomWeightedBalancedCCE`).

`MODELS` maps each name to a `ModelSpec` (Table 1 row, source, published input
size, smallest accepted side, published and our parameter counts) whose
`build(num_classes, image_size, weights=None)` returns an uncompiled functional
`keras.Model` on float32 images `(N, S, S, 3)` already scaled to [0, 1] (the
example's `x / 255`), with a softmax over `num_classes`. `EXPECTED_PARAMS` holds
`model.count_params()` of each model at its published input size with 4 classes
(the tests check it; docs/models.md explains every difference from the
published figure).

Only `keras.layers` are used, so every model runs on TensorFlow, JAX and torch.

Example:

>>> import models
>>> sorted(models.MODELS)
['covid-lite', 'covid-net', 'inception-v3', 'resnet18']
>>> spec = models.MODELS["covid-lite"]
>>> model = spec.build(num_classes=4, image_size=80)
>>> model.output_shape
(None, 4)
>>> models.EXPECTED_PARAMS["resnet18"]
11188164
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
from keras import layers

__all__ = ["EXPECTED_PARAMS", "MODELS", "ModelSpec"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One architecture of Table 1: where it comes from and how to build it.

    Attributes:
        name: Key in `MODELS` (`"covid-net"`, `"covid-lite"`, `"inception-v3"`,
            `"resnet18"`).
        title: The Table 1 row text.
        source: Citation: paper, figure / table, repository and file.
        input_size: Published input side in pixels.
        min_size: Smallest image side `build` accepts: the architecture's total
            stride (its last feature map is then at least 1x1), or Keras' own
            minimum (75) for Inception-V3.
        published_params: Parameter count given by the source, or `None` where
            the source gives none (see `params_note`).
        params_note: What `published_params` counts and how ours differs.
        pretrained: Whether ImageNet weights exist (`weights="imagenet"`).
        builder: The function `build` calls, `builder(num_classes, image_size,
            weights)`, after checking the arguments.
    """

    name: str
    title: str
    source: str
    input_size: int
    min_size: int
    published_params: int | None
    params_note: str
    pretrained: bool
    builder: Callable[..., keras.Model] = dataclasses.field(repr=False, compare=False)

    def build(self, num_classes, image_size, weights=None):
        """Builds the uncompiled model.

        Args:
            num_classes: Number of classes (softmax units), an int >= 2.
            image_size: Side S of the square input `(S, S, 3)`, an int >=
                `min_size`.
            weights: `None` (random initialisation) or `"imagenet"` (only where
                `pretrained`; Keras downloads the weights at run time).

        Returns:
            An uncompiled `keras.Model` mapping float32 images in [0, 1] of shape
            `(N, S, S, 3)` to softmax probabilities `(N, num_classes)`.

        Raises:
            ValueError: If an argument is out of range or of the wrong type.

        Example:

        >>> model = MODELS["covid-lite"].build(num_classes=3, image_size=64)
        >>> model.input_shape, model.output_shape
        ((None, 64, 64, 3), (None, 3))
        """
        _check_int("num_classes", num_classes, 2)
        _check_int(
            "image_size", image_size, self.min_size, f"(the smallest side {self.name!r} accepts)"
        )
        allowed = (None, "imagenet") if self.pretrained else (None,)
        if weights not in allowed:
            raise ValueError(
                f"Expected weights in {allowed} for {self.name!r}"
                + (
                    ""
                    if self.pretrained
                    else " (no ImageNet weights exist: it is trained from scratch)"
                )
                + f". Received: weights={weights!r}"
            )
        return self.builder(int(num_classes), int(image_size), weights)


def _check_int(name, value, minimum, why=""):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Expected {name} to be an int >= {minimum}{' ' + why if why else ''}. "
            f"Received: {name}={value!r}"
        )


def _softmax_head(x, num_classes):
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


# ---------------------------------------------------------------------------------------------
# Covid-Net (Wang et al. 2020)
# ---------------------------------------------------------------------------------------------

# Width and number of PEPX modules of the four stages (Fig. 2 has 3, 4, 6 and 3 modules).
COVID_NET_STAGES = ((56, 3), (112, 4), (216, 6), (424, 3))
COVID_NET_STEM = 56
COVID_NET_FC = (1024, 256)


def _pepx(x, width, name):
    """A PEPX module: projection, expansion, depthwise 3x3, projection, extension."""
    c_in = x.shape[-1]
    relu = {"activation": "relu", "padding": "same"}
    y = layers.Conv2D(c_in // 2, 1, name=f"{name}_project1", **relu)(x)
    y = layers.Conv2D(3 * c_in // 4, 1, name=f"{name}_expand", **relu)(y)
    y = layers.DepthwiseConv2D(3, name=f"{name}_dw", **relu)(y)
    y = layers.Conv2D(c_in // 2, 1, name=f"{name}_project2", **relu)(y)
    y = layers.Conv2D(width, 1, use_bias=False, name=f"{name}_extend")(y)
    y = layers.BatchNormalization(name=f"{name}_bn")(y)
    return layers.ReLU(name=f"{name}_relu")(y)


def _covid_net_stage(x, width, modules, stage):
    """One stage of Fig. 2: a 1x1 side convolution and densely summed PEPX modules."""
    outputs = [layers.Conv2D(width, 1, activation="relu", name=f"conv{stage}_1x1")(x)]
    for index in range(1, modules + 1):
        inputs = x if index == 1 else layers.Add(name=f"pepx{stage}_{index}_in")(outputs)
        outputs.append(_pepx(inputs, width, f"pepx{stage}_{index}"))
    return layers.Add(name=f"stage{stage}_out")(outputs)


def covid_net(num_classes, image_size, weights=None):
    """Covid-Net, built from the figure of its paper (no trainable definition is published).

    Source: L. Wang, Z. Q. Lin and A. Wong, "COVID-Net: a tailored deep
    convolutional neural network design for detection of COVID-19 cases from
    chest X-ray images", Sci. Rep. 10:19549 (2020), Fig. 2 (architecture) and
    the PEPX description in "Methods"; repository lindawangg/COVID-Net
    (`docs/models.md`: the released networks are trained TensorFlow graphs, no
    model-building code). Layer widths from the community port
    iliasprc/COVIDNet `model/covidnet.py` (56, 112, 216, 424 channels); head
    (Flatten -> FC 1024 -> FC 256 -> softmax) as the authors' Keras script
    lindawangg/COVID-Net `model.py`.

    Architecture: 7x7/2 convolution (56) and 2x2 max pooling; four stages of
    3, 4, 6 and 3 PEPX modules (projection 1x1 to C/2, expansion 1x1 to 3C/4,
    depthwise 3x3, projection 1x1 to C/2, extension 1x1 to the stage width,
    where C is the module's input width); each module takes the sum of the
    stage's 1x1 side convolution and all earlier modules of the stage (Fig. 2's
    dense connections); 2x2 max pooling between stages; Flatten, two ReLU FC
    layers and the softmax. Choices where the figure is silent: ReLU after every
    convolution and a BatchNormalization after each extension (trainable from
    scratch), "same" padding.

    Args:
        num_classes: Number of classes.
        image_size: Input side (published: 480; at least 32).
        weights: Must be `None` (trained from scratch).

    Returns:
        The uncompiled `keras.Model` named `"covid_net"`.
    """
    del weights
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(
        COVID_NET_STEM, 7, strides=2, padding="same", activation="relu", name="conv1"
    )(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    for stage, (width, modules) in enumerate(COVID_NET_STAGES, start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = _covid_net_stage(x, width, modules, stage)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(COVID_NET_FC, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="covid_net")


# ---------------------------------------------------------------------------------------------
# Covid-Lite (Siddhartha & Santra 2020)
# ---------------------------------------------------------------------------------------------

# (filters, dropout after the block) of the five separable blocks.
COVID_LITE_SEPARABLE = ((32, 0.0), (64, 0.0), (128, 0.2), (256, 0.2), (512, 0.2))
COVID_LITE_DENSE = ((512, 0.7), (128, 0.5), (64, 0.3), (32, 0.3))


def covid_lite(num_classes, image_size, weights=None):
    """Covid-Lite's depthwise-separable CNN (DSCNN).

    Source: M. Siddhartha and A. Santra, "COVIDLite: A depth-wise separable deep
    neural network with white balance and CLAHE for detection of COVID-19",
    arXiv:2006.13873 (2020), Sec. "Proposed DSCNN" (224x224 input, separable
    convolutions, sparse cross-entropy, 8.4 MB model); the authors' Kaggle
    kernel for their data set sid321axn/covid-cxr-image-dataset-research, as
    republished in isabeljohnson001/COVID-19-Prediction
    `covid-detection-from-chest xray.ipynb` (cell "Model Building").

    Architecture, as that kernel's graph computes it: two 3x3 ReLU convolutions
    (16) and 2x2 max pooling; five blocks of two 3x3 ReLU separable
    convolutions (32, 64, 128, 256, 512), BatchNormalization and 2x2 max
    pooling, with Dropout 0.2 after the last three; Flatten; Dense 512, 128, 64
    and 32 (ReLU) with Dropout 0.7, 0.5, 0.3 and 0.3; softmax. The kernel also
    defines 4- and 8-filter convolution blocks whose outputs are overwritten
    (never connected to the output): Keras leaves them out of the model, and so
    do we.

    Args:
        num_classes: Number of classes.
        image_size: Input side (published: 224; at least 64, six 2x2 poolings).
        weights: Must be `None` (trained from scratch).

    Returns:
        The uncompiled `keras.Model` named `"covid_lite"`.
    """
    del weights
    inputs = keras.Input((image_size, image_size, 3), name="image")
    conv = {"kernel_size": 3, "activation": "relu", "padding": "same"}
    x = layers.Conv2D(16, name="conv1_1", **conv)(inputs)
    x = layers.Conv2D(16, name="conv1_2", **conv)(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    for block, (filters, rate) in enumerate(COVID_LITE_SEPARABLE, start=2):
        x = layers.SeparableConv2D(filters, name=f"sepconv{block}_1", **conv)(x)
        x = layers.SeparableConv2D(filters, name=f"sepconv{block}_2", **conv)(x)
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        if rate:
            x = layers.Dropout(rate, name=f"dropout{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, (units, rate) in enumerate(COVID_LITE_DENSE, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        x = layers.Dropout(rate, name=f"fc{index}_dropout")(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="covid_lite")


# ---------------------------------------------------------------------------------------------
# Inception-V3 (Szegedy et al. 2016) with the paper's head
# ---------------------------------------------------------------------------------------------


def inception_v3(num_classes, image_size, weights=None):
    """Keras' Inception-V3 with the paper's head, fully trainable (100% fine tuning).

    Source: C. Szegedy et al., "Rethinking the Inception Architecture for
    Computer Vision", CVPR 2016, Table 1 / Fig. 5-7; implementation
    `keras.applications.InceptionV3` (keras-team/keras
    `keras/src/applications/inception_v3.py`, 299x299, at least 75x75). Head as
    the paper's MobileNetV2 models: GlobalMaxPooling2D -> Dense(softmax).

    Args:
        num_classes: Number of classes.
        image_size: Input side (published: 299; at least 75).
        weights: `None` (random initialisation) or `"imagenet"` (Keras downloads
            the ImageNet weights; needs the network).

    Returns:
        The uncompiled `keras.Model` named `"inception_v3"`; its backbone is the
        nested model `"inception_v3_backbone"`.
    """
    base = keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
    )
    base.name = "inception_v3_backbone"
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.GlobalMaxPooling2D(name="gmp")(base(inputs))
    return keras.Model(inputs, _softmax_head(x, num_classes), name="inception_v3")


# ---------------------------------------------------------------------------------------------
# ResNet-18 (He et al. 2016)
# ---------------------------------------------------------------------------------------------

RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the first block)
# torchvision's BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9) and
# kaiming_normal_(mode="fan_out", nonlinearity="relu") convolution initialisation.
_RESNET_BN = {"epsilon": 1e-5, "momentum": 0.9}


def _he_fan_out():
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    """Convolution (torchvision padding k // 2 on every side) + BatchNorm (+ ReLU)."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters, kernel, strides=stride, use_bias=False, kernel_initializer=_he_fan_out(), name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn", **_RESNET_BN)(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, width, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = _conv_bn(x, width, 1, stride, f"{name}_downsample", relu=False)
    y = _conv_bn(x, width, 3, stride, f"{name}_conv1")
    y = _conv_bn(y, width, 3, 1, f"{name}_conv2", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet18(num_classes, image_size, weights=None):
    """ResNet-18 as in its paper and torchvision, trained from scratch.

    Source: K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for
    Image Recognition", CVPR 2016, Table 1 ("18-layer" column: 7x7/2 conv 64,
    3x3/2 max pool, [3x3, 3x3] basic blocks x [2, 2, 2, 2] at 64, 128, 256, 512
    channels, global average pooling, FC softmax); reference implementation
    pytorch/vision `torchvision/models/resnet.py` (`resnet18`: bias-free
    convolutions, BatchNorm after each, 1x1/2 convolution + BatchNorm
    projection shortcuts, symmetric padding). Used by Tyagi, Roy & Bansal
    (ICPR 2022, repository MrinalTyagi/CWBCCE-COVID19) with their CWBCCE loss.

    Args:
        num_classes: Number of classes.
        image_size: Input side (published: 224; at least 32, five stride-2
            steps).
        weights: Must be `None` (trained from scratch).

    Returns:
        The uncompiled `keras.Model` named `"resnet18"`.
    """
    del weights
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _conv_bn(inputs, 64, 7, 2, "conv1")
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # inputs >= 0 after ReLU: 0 == -inf pad
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (width, stride) in enumerate(RESNET18_STAGES, start=1):
        x = _basic_block(x, width, stride, f"layer{stage}_0")
        x = _basic_block(x, width, 1, f"layer{stage}_1")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="resnet18")


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="covid-net",
            title="Covid-Net (Train from scratch) [7]",
            source=(
                "Wang, Lin & Wong, Sci. Rep. 10:19549 (2020), Fig. 2; lindawangg/COVID-Net "
                "docs/models.md (trained graphs only); widths from iliasprc/COVIDNet "
                "model/covidnet.py; head from lindawangg/COVID-Net model.py"
            ),
            input_size=480,
            min_size=32,
            published_params=11_700_000,
            params_note=(
                "11.7 M: COVIDNet-CXR3-B at 480x480 in lindawangg/COVID-Net docs/models.md "
                "(the 224x224 COVIDNet-CXR Small / Large have 117.4 M / 127.4 M). Layer widths "
                "are not published; ours are dominated by the Flatten -> FC 1024 layer "
                "(15 x 15 x 424 features at 480 px)."
            ),
            pretrained=False,
            builder=covid_net,
        ),
        ModelSpec(
            name="covid-lite",
            title="Covid-Lite (Train from scratch) [5]",
            source=(
                "Siddhartha & Santra, arXiv:2006.13873 (2020), proposed DSCNN; authors' Kaggle "
                "kernel as republished in isabeljohnson001/COVID-19-Prediction "
                "'covid-detection-from-chest xray.ipynb' (Model Building)"
            ),
            input_size=224,
            min_size=64,
            published_params=None,
            params_note=(
                "The paper gives the size only (8.4 MB, unquantised); the kernel's summary "
                "prints 2,981,795 parameters for 3 classes, i.e. 2,981,828 for 4: ours."
            ),
            pretrained=False,
            builder=covid_lite,
        ),
        ModelSpec(
            name="inception-v3",
            title="Inception-V3 (100% fine tuning)",
            source=(
                "Szegedy et al., CVPR 2016, Table 1; keras.applications.InceptionV3 "
                "(keras-team/keras keras/src/applications/inception_v3.py); head "
                "GlobalMaxPooling2D -> Dense(softmax) as the paper"
            ),
            input_size=299,
            min_size=75,
            published_params=23_851_784,
            params_note=(
                "23,851,784 with Keras' 1000-class top; without it 21,802,784, plus our head "
                "(2048 x K + K)."
            ),
            pretrained=True,
            builder=inception_v3,
        ),
        ModelSpec(
            name="resnet18",
            title="ResNet-18+ CWBCE Loss (Train from scratch) [6]",
            source=(
                "He et al., CVPR 2016, Table 1 (18-layer); pytorch/vision "
                "torchvision/models/resnet.py (resnet18); loss: Tyagi, Roy & Bansal, ICPR 2022, "
                "MrinalTyagi/CWBCCE-COVID19"
            ),
            input_size=224,
            min_size=32,
            published_params=11_689_512,
            params_note=(
                "11,689,512 in torchvision (1000 classes, BatchNorm statistics are buffers, not "
                "parameters). With 4 classes: 11,178,564 trainable; Keras also counts the "
                "9,600 BatchNorm moving means / variances."
            ),
            pretrained=False,
            builder=resnet18,
        ),
    )
}

# model.count_params() at the published input size with 4 classes (weights=None).
EXPECTED_PARAMS = {
    "covid-net": 99_385_836,
    "covid-lite": 2_981_828,
    "inception-v3": 21_810_980,
    "resnet18": 11_188_164,
}
