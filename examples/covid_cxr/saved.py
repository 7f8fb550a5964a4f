"""``--save-models``: ``models/<experiment>_fold<k>.keras`` (`keras.Model.save`; plain
``keras.models.load_model`` reads it once ``keras_freeze`` is imported) and its sidecar ``.json``
(`ModelInfo`: class names in output order, input pipeline, the fold's images). `load` reads both.

Example:
    >>> import dataclasses, json, pathlib, tempfile
    >>> meta = ModelInfo("freeze", 1, ("a", "b"), 32, "torchvision", "rescale", "/data", (), ())
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> sidecar = {"format": FORMAT, **dataclasses.asdict(meta)}
    >>> _ = (folder / "m.json").write_text(json.dumps(sidecar))
    >>> ModelInfo.read(folder / "m.keras") == meta
    True
"""

import dataclasses
import functools
from pathlib import Path

import keras
import numpy as np
import protocol
import records

import keras_freeze

FORMAT = 1  # of the sidecar file; a reader refuses others


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A saved model's sidecar (``fold``: the test fold, 1-based; files relative to data_root)."""

    experiment: str
    fold: int
    class_names: tuple[str, ...]
    image_size: int
    weights: str | None
    preprocessing: str
    data_root: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]

    @classmethod
    def read(cls, model_path) -> "ModelInfo":
        """The sidecar of ``model_path`` (``M.keras`` -> ``M.json``); ValueError naming it."""
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

    def dataset(self, paths, batch_size: int) -> keras_freeze.ImageDataset:
        """``paths`` (unlabelled, in order) decoded and scaled as in training."""
        scale = functools.partial(
            keras_freeze.preprocess_mobilenet_v2, weights=self.weights, mode=self.preprocessing
        )
        labels, n, size = np.zeros(len(paths), dtype=int), len(self.class_names), self.image_size
        return keras_freeze.ImageDataset(
            paths, labels, num_classes=n, image_size=size, batch_size=batch_size, preprocess=scale
        )


def save(out, model, info: ModelInfo) -> Path:
    """Saves ``model`` and its sidecar atomically (the model file last); returns its path."""
    path = Path(out) / "models" / f"{protocol.slug(info.experiment)}_fold{info.fold}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    if (opt := getattr(model, "optimizer", None)) is not None and not opt.built:
        opt.build(model.trainable_variables)  # trained on cached features: load_model warns else
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    sidecar = {"format": FORMAT, **dataclasses.asdict(info)}
    records.atomic_write_json(path.with_suffix(".json"), sidecar)
    tmp.replace(path)
    return path


def load(path) -> tuple[keras.Model, ModelInfo]:
    """A saved model and its `ModelInfo`, checked to agree; ValueError in one line."""
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
    if (outputs := model.outputs[0].shape[-1]) != len(info.class_names):
        raise ValueError(
            f"Expected a model with one output per class of {path.with_suffix('.json')} "
            f"({len(info.class_names)}). Received: {outputs} outputs"
        )
    return model, info
