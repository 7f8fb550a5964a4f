"""``reproduce.py export``: a saved model as a TFLite or ONNX file (`keras.Model.export`), and its
agreement with Keras on held-out images; int8 is calibrated on training images of the fold."""

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import console
import keras
import numpy as np
import records
import saved

import keras_freeze

ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
INSTALL = 'pip install "keras-freeze[export]"'


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What `reproduce.py export` converts (checked on creation): model, format, quantization."""

    model: Path
    format: str
    quantize: str = "none"
    out: Path | None = None
    images: int = 100
    batch_size: int = 8

    def __post_init__(self):
        for name in ("images", "batch_size"):
            if (value := getattr(self, name)) < 1:
                raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: {value}")
        if self.format == "onnx" and (q := self.quantize) != "none":
            raise ValueError(f"Expected --quantize none with --format onnx. Received: {q}")
        tag = "" if self.quantize == "none" else f"_{self.quantize}"
        out = self.out or self.model.with_name(f"{self.model.stem}{tag}.{self.format}")
        if out.suffix != f".{self.format}":
            raise ValueError(f"Expected --out to end with .{self.format}. Received: {str(out)!r}")
        object.__setattr__(self, "out", out)


def load_images(info: saved.ModelInfo, files, n: int, what: str) -> np.ndarray:
    """Up to ``n`` readable ``files`` (spread evenly over the list), scaled as in training."""
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(n, len(files)))})
    paths = [str(Path(info.data_root) / files[i]) for i in picks]
    good, bad = keras_freeze.scan_images(paths, full=True)
    if len(good) == 0:
        raise ValueError(
            f"Expected readable {what} images of the model (under {info.data_root!r}). "
            f"Received: none of {len(paths)} ({bad[:1]})"
        )
    dataset = info.dataset([paths[i] for i in good], batch_size=32)
    return np.concatenate([dataset[i][0] for i in range(len(dataset))]).astype("float32")


def convert(model, s: ExportSettings, calibration: np.ndarray | None):
    """Writes ``s.out`` (through a temporary file beside it) with `keras.Model.export`."""
    import tensorflow as tf  # deferred: only this backend has it

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if s.quantize != "none" else {}
    if s.quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if s.quantize == "int8":  # inputs and outputs stay float32 (the converter's default)
        options["representative_dataset"] = lambda: ([x[None]] for x in calibration)
    s.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = s.out.with_name(f".{s.out.stem}.tmp{s.out.suffix}")
    model.export(str(tmp), "litert" if s.format == "tflite" else "onnx", verbose=False, **options)
    tmp.replace(s.out)


def tflite_predict(path, x: np.ndarray, batch_size: int = 8, num_threads=None) -> np.ndarray:
    """The outputs of the TFLite model ``path`` on ``x``, ``batch_size`` images per call."""
    try:  # LiteRT's interpreter, else TensorFlow's (the same runtime, deprecated in its favour)
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = importlib.import_module("tensorflow").lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        run = Interpreter(model_path=str(path), num_threads=num_threads).get_signature_runner()
    (name,) = run.get_input_details()  # the runner resizes the input to each batch
    outputs = [run(**{name: x[i : i + batch_size]}) for i in range(0, len(x), batch_size)]
    return np.concatenate([next(iter(out.values())) for out in outputs])


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    dp, same = np.abs(reference - other).max(), np.mean(reference.argmax(1) == other.argmax(1))
    return {"images": int(len(reference)), "max_abs_dp": float(dp), "same_argmax": float(same)}


def export(s: ExportSettings, model, info, held_out, calibration):
    """Converts, measures, writes ``s.out`` and ``<s.out>.json``, and says so."""
    expected = model.predict(held_out, batch_size=s.batch_size, verbose=0)  # also builds it
    convert(model, s, calibration)
    if s.format == "tflite":
        got = tflite_predict(s.out, held_out, s.batch_size)
    else:
        ort = importlib.import_module("onnxruntime")  # only with --format onnx
        session = ort.InferenceSession(str(s.out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: held_out})[0]
    size, call = info.image_size, f"x, weights={info.weights!r}, mode={info.preprocessing!r}"
    scaling = f"keras_freeze.preprocess_mobilenet_v2({call}) of RGB 0..255 pixels"
    inputs = {"shape": [None, size, size, 3], "dtype": "float32", "scaling": scaling}
    n_cal = 0 if calibration is None else len(calibration)
    report = {"file": s.out.name, "bytes": s.out.stat().st_size, "format": s.format}
    report |= {"quantize": s.quantize, "model": str(s.model), "keras_bytes": s.model.stat().st_size}
    report |= {"class_names": list(info.class_names), "input": inputs, "calibration_images": n_cal}
    report["agreement"] = a = agreement(expected, got)
    records.atomic_write_json(f"{s.out}.json", report)
    console.log(
        f"[export] {s.out.name}: {report['bytes'] / 1e6:.2f} MB ({s.format}, quantize "
        f"{s.quantize}; the .keras file: {report['keras_bytes'] / 1e6:.2f} MB)\n[export] "
        f"agreement with Keras on {a['images']} held-out image(s): max |dp| "
        f"{a['max_abs_dp']:.2e}, same argmax {100 * a['same_argmax']:.1f}%; {s.out.name}.json"
    )


def main(argv) -> int:
    p = console.Parser(
        prog="reproduce.py export",
        description="Export a model saved by reproduce.py --save-models to TFLite (optionally "
        "quantized) or ONNX, and measure its agreement with Keras on held-out images.",
    )
    d = "default: %(default)s."
    images = "held-out images to compare on, and int8 calibration images (default: %(default)s)."
    p.add_argument("--model", type=Path, required=True, metavar="M.keras", help="saved model.")
    p.add_argument("--format", required=True, choices=("tflite", "onnx"), help="output format.")
    p.add_argument("--quantize", choices=("none", "float16", "int8"), default="none", help=d)
    p.add_argument("--out", type=Path, help="output file (default: beside the model).")
    p.add_argument("--images", type=int, default=ExportSettings.images, metavar="N", help=images)
    p.add_argument("--batch-size", type=int, default=ExportSettings.batch_size, metavar="N", help=d)
    try:  # every input is checked before any work
        s = ExportSettings(**vars(p.parse_args(argv)))
        if (backend := keras.backend.backend()) != "tensorflow":
            raise ValueError(
                f"Expected KERAS_BACKEND=tensorflow for --format {s.format} (its converter is a "
                "TensorFlow program; the .keras model itself loads on every backend). "
                f"Received: KERAS_BACKEND={backend}"
            )
        missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
        if s.format == "onnx" and missing:
            raise ValueError(f"Expected {', '.join(missing)} for --format onnx: {INSTALL}")
        model, info = saved.load(s.model)
        held_out = load_images(info, info.test_files, s.images, "held-out (test fold)")
        int8 = s.quantize == "int8"
        calibration = load_images(info, info.train_files, s.images, "training") if int8 else None
    except (OSError, ValueError) as e:
        p.error(str(e))
    export(s, model, info, held_out, calibration)
    return 0
