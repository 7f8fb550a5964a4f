"""``reproduce.py export`` (examples/covid_cxr/export.py): TFLite files that agree with Keras.

The model must have outputs that vary: an untrained MobileNetV2 gives nearly constant
probabilities, which would make any agreement trivial. Here four generated classes of 32-px images
(stripes in three orientations, and flat noise) go through a small CNN with random but fixed
convolutions, whose softmax head is fitted in closed form (ridge regression on the pooled
features): every class is predicted, each probability spans most of [0, 1]. It is saved with
`saved.save` and a sidecar whose training and test files are the 120 images.

Tolerances: float32 within 1e-4 (max |dp|) and the same argmax everywhere (the issue's bar);
float16 weights within 1e-2 (a float16 weight has a relative error up to 2**-11; measured here
about 1e-3); int8 the same argmax on at least 98% of the images (the issue's bar; max |dp| is
about 2e-2 here and is not bounded by the test).
"""

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import export
import keras
import numpy as np
import pytest
import saved
from PIL import Image

TENSORFLOW = keras.backend.backend() == "tensorflow"
needs_tensorflow = pytest.mark.skipif(
    not TENSORFLOW, reason="the converters need KERAS_BACKEND=tensorflow (refusal tested instead)"
)
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
PER_CLASS = 30
N_IMAGES = PER_CLASS * len(CLASSES)


def _class_images(root) -> tuple[str, ...]:
    """``root/<class>/<i>.png``: sine stripes (rows, columns, diagonals) or flat, with noise."""
    rng = np.random.default_rng(0)
    r, c = np.mgrid[0:32, 0:32]
    files = []
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            phase = [r, c, r + c, 0 * r][k] * 2 * np.pi / rng.uniform(5, 8) + rng.uniform(0, 7)
            pixels = 128 + 80 * np.sin(phase) + rng.normal(0, 10, (32, 32))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
            files.append(f"{name}/{i}.png")
    return tuple(files)


def _varied_model(x, y):
    """Random fixed convolutions; a softmax head fitted by ridge regression to ``y``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:], name="image")
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    f = keras.ops.convert_to_numpy(keras.Model(inputs, h)(x))
    mean = f.mean(0)
    gram = (f - mean).T @ (f - mean)
    ridge = 0.1 * np.trace(gram) / len(gram) * np.eye(len(gram))
    w = np.linalg.solve(gram + ridge, (f - mean).T @ (6 * np.eye(4)[y] - 1.5))
    head = keras.layers.Dense(4, activation="softmax", name="head")
    model = keras.Model(inputs, head(h))
    head.set_weights([w.astype("float32"), (-mean @ w).astype("float32")])
    return model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A saved model (path) whose sidecar's train and test files are the 120 images."""
    tmp = tmp_path_factory.mktemp("export")
    files = _class_images(tmp / "data")
    info = saved.ModelInfo(
        "freeze", 1, CLASSES, 32, None, "rescale", str(tmp / "data"), files, files
    )
    y = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    model = _varied_model(export.load_images(info, files, N_IMAGES, "test"), y)
    return saved.save(tmp / "run", model, info)


@pytest.fixture(scope="module")
def exported(saved_model):
    """``{quantize: the JSON report}`` of the three TFLite exports."""
    reports = {}
    for q in ("none", "float16", "int8"):
        assert export.main(["--model", str(saved_model), "--format", "tflite",
                            "--quantize", q, "--images", str(N_IMAGES)]) == 0  # fmt: skip
        suffix = "" if q == "none" else f"_{q}"
        reports[q] = json.loads(
            Path(f"{saved_model.parent}/freeze_fold1{suffix}.tflite.json").read_text()
        )
    return reports


@needs_tensorflow
def test_the_models_outputs_vary(saved_model):
    """Agreement means something only if the probabilities and the top class change."""
    model, info = saved.load(saved_model)
    probs = model.predict(export.load_images(info, info.test_files, N_IMAGES, "test"), verbose=0)
    assert probs.std(0).min() > 0.05
    assert np.bincount(probs.argmax(1), minlength=4).min() >= 5
    assert (probs.max(0) - probs.min(0)).min() > 0.5


@needs_tensorflow
def test_float32_tflite_agrees_with_keras_and_says_so(saved_model, tmp_path, cli):
    out = tmp_path / "m.tflite"
    argv = ["--model", saved_model, "--format", "tflite", "--out", out, "--images", N_IMAGES]
    code, stdout, stderr = cli(["export", *argv])
    assert code == 0, stderr
    report = json.loads(Path(f"{out}.json").read_text())
    assert report["bytes"] == out.stat().st_size and report["quantize"] == "none"
    assert report["agreement"]["images"] == N_IMAGES
    assert report["agreement"]["max_abs_dp"] <= 1e-4
    assert report["agreement"]["same_argmax"] == 1.0
    assert report["class_names"] == list(saved.ModelInfo.read(saved_model).class_names)
    assert "MB" in stdout and "max |dp|" in stdout and "same argmax 100.0%" in stdout


@needs_tensorflow
def test_quantized_files_agree_within_their_tolerance_and_are_smaller(exported):
    assert exported["none"]["agreement"]["max_abs_dp"] <= 1e-4
    assert exported["float16"]["agreement"]["max_abs_dp"] <= 1e-2
    assert exported["float16"]["agreement"]["same_argmax"] >= 0.98
    assert exported["int8"]["agreement"]["same_argmax"] >= 0.98  # the criterion
    assert exported["int8"]["calibration_images"] == N_IMAGES
    assert exported["int8"]["bytes"] < exported["float16"]["bytes"] < exported["none"]["bytes"]


def _without_sidecar(saved_model, tmp_path):
    copy = tmp_path / "alone.keras"
    shutil.copy(saved_model, copy)
    return copy


def _without_training_images(saved_model, tmp_path):
    info = saved.ModelInfo.read(saved_model)
    model = keras.models.load_model(saved_model)
    lost = dataclasses.replace(info, train_files=("gone/x.png",), fold=2)
    return saved.save(tmp_path, model, lost)


BAD = {
    "missing model": (lambda m, t: t / "none.keras", [], "Expected --model to be a .keras file"),
    "no sidecar": (_without_sidecar, [], "beside the model"),
    "unknown format": (lambda m, t: m, ["--format", "coreml"], "invalid choice: 'coreml'"),
    "unknown quantize": (lambda m, t: m, ["--quantize", "int4"], "invalid choice: 'int4'"),
    "no images": (lambda m, t: m, ["--images", "0"], "Expected --images >= 1. Received: 0"),
    "wrong suffix": (lambda m, t: m, ["--out", "m.tfl"], "Expected --out to end with .tflite"),
    "onnx int8": (lambda m, t: m, ["--format", "onnx"], "Expected --quantize none with"),
    "int8 unreadable": (_without_training_images, [], "Expected readable training images"),
}


@needs_tensorflow
@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_input_gets_one_line_and_exit_2(case, saved_model, tmp_path, cli):
    make, extra, needle = BAD[case]
    argv = ["--model", make(saved_model, tmp_path), "--format", "tflite", "--quantize", "int8"]
    code, stdout, stderr = cli(["export", *argv, *extra])
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert needle in stderr, stderr
    assert not list(tmp_path.rglob("*.tflite")), "nothing is written for a bad input"


@needs_tensorflow
def test_onnx_without_its_packages_names_the_extra(saved_model, cli):
    if all(importlib.util.find_spec(m) for m in export.ONNX_PACKAGES):
        pytest.skip("tf2onnx, onnx and onnxruntime are installed")
    code, _, stderr = cli(["export", "--model", saved_model, "--format", "onnx"])
    assert code == 2 and 'pip install "keras-freeze[export]"' in stderr, stderr


@pytest.mark.skipif(TENSORFLOW, reason="the refusal of the other backends")
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_other_backends_refuse_in_one_line(fmt, saved_model, cli):
    code, _, stderr = cli(["export", "--model", saved_model, "--format", fmt])
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert "Expected KERAS_BACKEND=tensorflow" in stderr, stderr
    assert not list(saved_model.parent.glob("*.tflite"))


@needs_tensorflow
def test_onnx_agrees_with_keras_when_its_packages_are_installed(saved_model, tmp_path):
    if not all(importlib.util.find_spec(m) for m in export.ONNX_PACKAGES):
        pytest.skip('pip install "keras-freeze[export]" (tf2onnx, onnx, onnxruntime) for ONNX')
    out = tmp_path / "m.onnx"
    argv = ["--model", str(saved_model), "--format", "onnx", "--out", str(out)]
    assert export.main([*argv, "--images", str(N_IMAGES)]) == 0
    agreement = json.loads(Path(f"{out}.json").read_text())["agreement"]
    assert agreement["max_abs_dp"] <= 1e-4 and agreement["same_argmax"] == 1.0
