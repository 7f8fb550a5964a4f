"""``reproduce.py export``: a model saved by ``--save-models`` as a mobile (TFLite) or ONNX file.

Keras' own `keras.Model.export` converts: ``format="litert"`` runs TensorFlow's TFLite converter
(its options pass through), ``format="onnx"`` runs tf2onnx. ``float16`` stores float16 weights;
``int8`` quantizes weights and activations, calibrated on up to ``--images`` training images of the
fold, scaled as in training; inputs and outputs stay float32. The agreement with Keras on up to
``--images`` held-out images (max |dp|, same-argmax rate) is printed and written to
``<file>.json`` with the size, classes and input scaling. Both formats need the TensorFlow
backend; the ``.keras`` file itself loads on every backend.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import records
import saved
from console import Parser
from console import log

import keras_freeze

FORMATS = ("tflite", "onnx")
QUANTIZE = ("none", "float16", "int8")
ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
INSTALL = 'pip install "keras-freeze[export]"'


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What ``reproduce.py export`` was asked, checked; ``out`` resolved."""

    model: Path
    format: str
    quantize: str = "none"
    out: Path | None = None
    images: int = 100
    batch_size: int = 8

    @classmethod
    def create(cls, **kwargs) -> ExportSettings:
        """Checks the values and fills ``out`` (``M.tflite``, ``M_int8.tflite``, ``M.onnx``)."""
        s = cls(**kwargs)
        for name in ("images", "batch_size"):
            if getattr(s, name) < 1:
                raise ValueError(
                    f"Expected --{name.replace('_', '-')} >= 1. Received: {getattr(s, name)}"
                )
        if s.format == "onnx" and s.quantize != "none":
            raise ValueError(f"Expected --quantize none with --format onnx. Received: {s.quantize}")
        tag = "" if s.quantize == "none" else f"_{s.quantize}"
        out = s.out or s.model.with_name(f"{s.model.stem}{tag}.{s.format}")
        if out.suffix != f".{s.format}":
            raise ValueError(f"Expected --out to end with .{s.format}. Received: {str(out)!r}")
        return dataclasses.replace(s, out=out)


def build_parser() -> Parser:
    """The parser of ``reproduce.py export``."""
    p = Parser(
        prog="reproduce.py export",
        description="Export a model saved by reproduce.py --save-models to TFLite (optionally "
        "quantized) or ONNX, and measure its agreement with Keras on held-out images.",
    )
    f = ExportSettings.__dataclass_fields__
    p.add_argument("--model", type=Path, required=True, metavar="M.keras", help="saved model.")
    p.add_argument("--format", required=True, choices=FORMATS, help="output format.")
    p.add_argument(
        "--quantize", choices=QUANTIZE, default=f["quantize"].default, help="default: %(default)s."
    )
    p.add_argument("--out", type=Path, help="output file (default: beside the model).")
    p.add_argument(
        "--images",
        type=int,
        default=f["images"].default,
        metavar="N",
        help="held-out images to compare on, and int8 calibration images (default: %(default)s).",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=f["batch_size"].default,
        metavar="N",
        help="default: %(default)s.",
    )
    return p


def check_runtime(fmt: str):
    """Refuses a backend or a missing package the format needs (one line)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Expected KERAS_BACKEND=tensorflow for --format {fmt} (its converter is a TensorFlow "
            f"program; the .keras model itself loads on every backend). "
            f"Received: KERAS_BACKEND={keras.backend.backend()}"
        )
    missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
    if fmt == "onnx" and missing:
        raise ValueError(f"Expected {', '.join(missing)} for --format onnx: {INSTALL}")


def load_images(info: saved.ModelInfo, files, n: int, what: str) -> np.ndarray:
    """Up to ``n`` readable images of ``files`` (evenly spread over the list, which is ordered by
    class), decoded and scaled as in training: float32 ``(N, S, S, 3)``.

    Raises:
        ValueError: none of them is readable.
    """
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(n, len(files)))})
    paths = [str(Path(info.data_root) / files[i]) for i in picks] if files else []
    good, bad = keras_freeze.scan_images(paths, full=True) if paths else ([], [])
    if len(good) == 0:
        raise ValueError(
            f"Expected readable {what} images of the model (under {info.data_root!r}). "
            f"Received: none of {len(paths)} ({bad[:1]})"
        )
    dataset = keras_freeze.ImageDataset(
        [paths[i] for i in good],
        np.zeros(len(good), dtype=int),
        num_classes=len(info.class_names),
        image_size=info.image_size,
        batch_size=32,
        preprocess=info.preprocess,
    )
    return np.concatenate([dataset[i][0] for i in range(len(dataset))]).astype("float32")


def convert(model, s: ExportSettings, calibration: np.ndarray | None):
    """Writes ``s.out`` (through a temporary file beside it) with `keras.Model.export`."""
    kwargs = {}
    if s.quantize != "none":
        import tensorflow as tf  # deferred: only this backend has it

        kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if s.quantize == "float16":
        kwargs["target_spec"] = {"supported_types": [tf.float16]}
    if s.quantize == "int8":  # inputs and outputs stay float32 (the converter's default)
        kwargs["representative_dataset"] = lambda: ([x[None]] for x in calibration)
    s.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = s.out.with_name(f".{s.out.stem}.tmp{s.out.suffix}")
    model.export(
        str(tmp), format="litert" if s.format == "tflite" else "onnx", verbose=False, **kwargs
    )
    os.replace(tmp, s.out)


def tflite_predict(path, x: np.ndarray, batch_size: int = 8, num_threads=None) -> np.ndarray:
    """The outputs of the TFLite model ``path`` on ``x``, ``batch_size`` images per call.

    Uses the LiteRT interpreter (``ai_edge_litert``) where installed, else TensorFlow's
    ``tf.lite.Interpreter`` (same runtime, deprecated in its favour).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape, rows = None, []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if batch.shape != shape:
            interpreter.resize_tensor_input(inp, batch.shape)
            interpreter.allocate_tensors()
            shape = batch.shape
        interpreter.set_tensor(inp, batch)
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out).copy())
    return np.concatenate(rows)


def onnx_predict(path, x: np.ndarray) -> np.ndarray:
    """The outputs of the ONNX model ``path`` on ``x`` (onnxruntime, CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """``max_abs_dp`` (largest |difference| of any probability) and ``same_argmax`` (share)."""
    return {
        "images": int(len(reference)),
        "max_abs_dp": float(np.abs(reference - other).max()),
        "same_argmax": float(np.mean(reference.argmax(1) == other.argmax(1))),
    }


def prepare(s: ExportSettings):
    """Everything the export reads, checked before any work: ``(model, info, held-out images,
    int8 calibration images or None)``.

    Raises:
        ValueError: one line for a bad input (backend, package, model, sidecar, images).
    """
    check_runtime(s.format)
    model, info = saved.load(s.model)
    held_out = load_images(info, info.test_files, s.images, "held-out (test fold)")
    calibration = None
    if s.quantize == "int8":
        calibration = load_images(info, info.train_files, s.images, "training")
    return model, info, held_out, calibration


def export(s: ExportSettings, model, info, held_out, calibration) -> dict:
    """Converts, measures and writes ``s.out`` and ``<s.out>.json``; returns the JSON's content."""
    expected = model.predict(held_out, batch_size=s.batch_size, verbose=0)  # also builds it
    convert(model, s, calibration)
    if s.format == "tflite":
        got = tflite_predict(s.out, held_out, s.batch_size)
    else:
        got = onnx_predict(s.out, held_out)
    report = {
        "file": s.out.name,
        "bytes": s.out.stat().st_size,
        "format": s.format,
        "quantize": s.quantize,
        "model": str(s.model),
        "keras_bytes": s.model.stat().st_size,
        "class_names": list(info.class_names),
        "input": {
            "shape": [None, info.image_size, info.image_size, 3],
            "dtype": "float32",
            "scaling": f"keras_freeze.preprocess_mobilenet_v2(x, weights={info.weights!r}, "
            f"mode={info.preprocessing!r}) of RGB 0..255 pixels",
        },
        "calibration_images": 0 if calibration is None else int(len(calibration)),
        "agreement": agreement(expected, got),
    }
    records.atomic_write_json(f"{s.out}.json", report)
    return report


def main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = ExportSettings.create(**vars(args))
        prepared = prepare(settings)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    report = export(settings, *prepared)
    a = report["agreement"]
    log(
        f"[export] {report['file']}: {report['bytes'] / 1e6:.2f} MB ({report['format']}, "
        f"quantize {report['quantize']}; the .keras file: {report['keras_bytes'] / 1e6:.2f} MB)"
    )
    log(
        f"[export] agreement with Keras on {a['images']} held-out image(s): max |dp| "
        f"{a['max_abs_dp']:.2e}, same argmax {100 * a['same_argmax']:.1f}%; {report['file']}.json"
    )
    return 0
