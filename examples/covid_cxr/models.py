"""The four other architectures of the paper's Table 1, in backend-agnostic Keras 3.

`MODELS` maps each name to a `ModelSpec` whose `build(num_classes, image_size, weights=None)`
returns an uncompiled model on float32 images in [0, 1] with a softmax head; `EXPECTED_PARAMS`
is `count_params()` at the published size with 4 classes. Sources and choices: docs/models.md.

>>> sorted(MODELS), EXPECTED_PARAMS["resnet18"]
(['covid-lite', 'covid-net', 'inception-v3', 'resnet18'], 11188164)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
from keras import layers

__all__ = ["EXPECTED_PARAMS", "MODELS", "ModelSpec"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One architecture of Table 1; ``min_size`` is the smallest side it accepts."""

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
        """The uncompiled model; ``weights``: `None` or, where `pretrained`, `"imagenet"`."""
        _check_int("num_classes", num_classes, 2)
        _check_int(
            "image_size", image_size, self.min_size, f"(the smallest side {self.name!r} accepts)"
        )
        allowed = (None, "imagenet") if self.pretrained else (None,)
        if weights not in allowed:
            scratch = " (no ImageNet weights exist: it is trained from scratch)"
            raise ValueError(
                f"Expected weights in {allowed} for {self.name!r}"
                + ("" if self.pretrained else scratch)
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


# Covid-Net: (width, PEPX modules) of the four stages of Fig. 2.
COVID_NET_STAGES = ((56, 3), (112, 4), (216, 6), (424, 3))


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


def covid_net(num_classes, image_size, weights=None):
    """Covid-Net (Wang et al. 2020, Fig. 2), from scratch; see docs/models.md."""
    del weights
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(56, 7, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    for stage, (width, modules) in enumerate(COVID_NET_STAGES, start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        # A 1x1 side convolution; each PEPX module takes the sum of all earlier outputs.
        outputs = [layers.Conv2D(width, 1, activation="relu", name=f"conv{stage}_1x1")(x)]
        for index in range(1, modules + 1):
            into = x if index == 1 else layers.Add(name=f"pepx{stage}_{index}_in")(outputs)
            outputs.append(_pepx(into, width, f"pepx{stage}_{index}"))
        x = layers.Add(name=f"stage{stage}_out")(outputs)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate((1024, 256), start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="covid_net")


# Covid-Lite: (filters, dropout after the block) of the separable blocks; (units, dropout) of FC.
COVID_LITE_SEPARABLE = ((32, 0.0), (64, 0.0), (128, 0.2), (256, 0.2), (512, 0.2))
COVID_LITE_DENSE = ((512, 0.7), (128, 0.5), (64, 0.3), (32, 0.3))


def covid_lite(num_classes, image_size, weights=None):
    """Covid-Lite's DSCNN (Siddhartha & Santra 2020), from scratch; see docs/models.md."""
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


def inception_v3(num_classes, image_size, weights=None):
    """Keras' InceptionV3 (nested ``inception_v3_backbone``) + GlobalMaxPooling2D -> softmax."""
    base = keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
    )
    base.name = "inception_v3_backbone"
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.GlobalMaxPooling2D(name="gmp")(base(inputs))
    return keras.Model(inputs, _softmax_head(x, num_classes), name="inception_v3")


# ResNet-18: (width, first stride) per stage; BatchNorm and init as torchvision (docs/models.md).
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    """Conv (torchvision: padding k // 2 each side, He fan-out init) + BatchNorm (+ ReLU)."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    he_fan_out = keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )
    x = layers.Conv2D(
        filters, kernel, strides=stride, use_bias=False, kernel_initializer=he_fan_out, name=name
    )(x)
    x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, width, stride, name):
    """torchvision's BasicBlock, with a 1x1 projection shortcut where the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = _conv_bn(x, width, 1, stride, f"{name}_downsample", relu=False)
    y = _conv_bn(x, width, 3, stride, f"{name}_conv1")
    y = _conv_bn(y, width, 3, 1, f"{name}_conv2", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet18(num_classes, image_size, weights=None):
    """ResNet-18 (He et al. 2016) as torchvision's ``resnet18``, from scratch (docs/models.md)."""
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

EXPECTED_PARAMS = {
    "covid-net": 99_385_836,
    "covid-lite": 2_981_828,
    "inception-v3": 21_810_980,
    "resnet18": 11_188_164,
}
