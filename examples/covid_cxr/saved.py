"""Trained models a run leaves (``--save-models``): a ``.keras`` file and what reading it needs.

Each unit's model, with the best weights EarlyStopping restored, is saved as
``<out>/models/<experiment>_fold<k>.keras`` (`keras.Model.save`: architecture, weights, compiled
loss and optimizer state). Beside it, ``<experiment>_fold<k>.json`` holds what a later prediction
needs and the model file cannot: the class names in output order and the input pipeline (image
side, decoding, scaling), plus where the training and test images of the fold were. `load` reads
both, so `reproduce.py predict` and `reproduce.py export` need nothing else.

A saved model loads with plain ``keras.models.load_model(path)`` on every backend once
``keras_freeze`` is imported (its losses and layers are registered under ``keras_freeze>``).

Example:
    >>> import json, pathlib, tempfile
    >>> meta = ModelInfo("freeze", 1, ("a", "b"), 32, "torchvision", "rescale", "/data", (), ())
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "m.json").write_text(json.dumps(meta.to_json()))
    >>> ModelInfo.read(folder / "m.keras") == meta
    True
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import keras
import protocol
import records

import keras_freeze

# What the sidecar file's format is; a reader refuses others.
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a saved model's predictions need, from its sidecar ``.json``.

    Attributes:
        experiment: one of `protocol.EXPERIMENTS`.
        fold: the 1-based test fold the model was trained without.
        class_names: the classes, in the order of the model's outputs.
        image_size: the input side in pixels.
        weights: the initial weights (``None``: random init); with ``preprocessing`` it fixes the
            input scaling (`keras_freeze.preprocess_mobilenet_v2`).
        preprocessing: ``"rescale"``, ``"torch"`` or ``"tf"``.
        data_root: the data set root of the run.
        train_files: the fold's training images, relative to ``data_root``.
        test_files: the fold's test images, relative to ``data_root``.
    """

    experiment: str
    fold: int
    class_names: tuple[str, ...]
    image_size: int
    weights: str | None
    preprocessing: str
    data_root: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]

    def to_json(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def read(cls, model_path) -> ModelInfo:
        """The sidecar of ``model_path`` (``M.keras`` -> ``M.json``).

        Raises:
            ValueError: one line naming the file when it is missing or not such a sidecar.
        """
        path = Path(model_path).with_suffix(".json")
        obj = records.read_json(path)
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or not names <= set(obj):
            raise ValueError(
                f"Expected {str(path)!r} beside the model: the class names and input pipeline "
                "that reproduce.py --save-models writes. Received: missing or not such a file"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in obj.items() if k in names}
        return cls(**values)

    @property
    def preprocess(self):
        """The scaling of the float32 0..255 batches the model reads."""
        return functools.partial(
            keras_freeze.preprocess_mobilenet_v2, weights=self.weights, mode=self.preprocessing
        )


def model_path(out, experiment: str, fold: int) -> Path:
    """Where ``--save-models`` puts a unit's model."""
    return Path(out) / "models" / f"{protocol.slug(experiment)}_fold{fold}.keras"


def save(out, model, info: ModelInfo) -> Path:
    """Saves ``model`` and its sidecar atomically; returns the model's path."""
    path = model_path(out, info.experiment, info.fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        # Trained through the feature cache, the model itself never ran `fit`: a built (fresh)
        # optimizer state lets `load_model` restore it without a mismatch warning.
        optimizer.build(model.trainable_variables)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    records.atomic_write_json(path.with_suffix(".json"), info.to_json())
    tmp.replace(path)  # last: a model file is there only with its sidecar
    return path


def load(path) -> tuple[keras.Model, ModelInfo]:
    """A saved model and its `ModelInfo`, checked to agree.

    Raises:
        ValueError: one line: the file is missing or not a Keras model, its sidecar is missing,
            or the model's output does not have one unit per class of the sidecar.
    """
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".keras":
        raise ValueError(f"Expected --model to be a .keras file. Received: {str(path)!r}")
    info = ModelInfo.read(path)
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure to read: one line naming the file
        raise ValueError(
            f"Expected a Keras model saved by reproduce.py --save-models. Received: "
            f"{str(path)!r}, which Keras cannot load ({type(e).__name__}: {e})"
        ) from None
    outputs = model.outputs[0].shape[-1]
    if outputs != len(info.class_names):
        raise ValueError(
            f"Expected a model with one output per class of {path.with_suffix('.json')} "
            f"({len(info.class_names)}). Received: {outputs} outputs"
        )
    return model, info
