"""Records of the COVID CXR example: one JSON file per (experiment, fold), written atomically.

A run is resumable: `RecordStore.find_complete` returns a record only if it is complete, of the
current schema and made with the same settings (`settings_of`), so an interrupted run redoes
only the unfinished units. Every file is written to a temporary name and moved into place with
``os.replace``, so a record is either absent or whole.

Example:
    >>> import tempfile, pathlib, records
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> records.atomic_write_json(out / "x.json", {"a": 1})
    >>> (out / "x.json").read_text()
    '{\\n  "a": 1\\n}\\n'
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import protocol


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` atomically (temporary file + ``os.replace``).

    Args:
        path: target file; its folder is created if needed.
        text: the whole content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    """Writes ``obj`` as indented JSON, atomically (NumPy scalars and arrays, paths allowed)."""
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write_text(path, text + "\n")


def read_json(path):
    """The JSON content of ``path``, or ``None`` if it is unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def environment():
    """Backend, Keras, Python and platform of this process (the last fields of a record)."""
    import keras

    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def settings_of(args, data_fingerprint, experiment):
    """Settings that decide a record's result: a record is reused only when they match.

    Args:
        args: the resolved command-line namespace.
        data_fingerprint: `dataset.DataSet.fingerprint()` of the run's data and folds.
        experiment: one of `protocol.EXPERIMENTS`.

    Returns:
        ``(shared, own)``: settings common to every experiment, and the experiment's own.
    """
    shared = {
        "data": data_fingerprint,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "patience": args.patience,
        "weights": args.weights,
        "preprocessing": args.preprocessing,
        "bn_momentum": args.bn_momentum,
        "seed": args.seed,
        "val_fraction": protocol.VAL_FRACTION,
        "val_seed": protocol.VAL_SEED,
    }
    own = {"lr": protocol.learning_rate(experiment, args.lr, args.finetune_lr)}
    if experiment == "freeze+attention":
        own["alpha"] = args.alpha
        if args.alpha == "estimate":
            own["mc_samples"] = args.mc_samples
    return shared, own


@dataclasses.dataclass
class Record:
    """The result of one experiment on one fold, as written to ``records/<slug>_fold<k>.json``.

    The fields are the JSON file's keys, in its order. Nested values (``metrics``, ``history``,
    ``freeze``, ``data`` ...) are plain JSON-ready dicts; ``metrics`` is
    ``keras_freeze.classification_metrics(...).to_dict()`` of ``predictions``.
    """

    experiment: str
    title: str
    fold: int
    synthetic: bool
    note: str
    metrics: dict
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    history: dict
    train_images_per_s: list
    time_s: dict
    alpha: list | None
    alpha_source: str | None
    loss: str
    optimizer: dict
    freeze: dict
    head: str
    weights: str
    preprocessing: str
    image_size: int
    batch_size: int
    max_epochs: int
    early_stopping: dict
    split: dict
    data: dict
    protocol: dict
    predictions: dict
    backend: str
    keras_version: str
    python: str
    platform: str
    finished: str
    schema: int = protocol.RECORD_SCHEMA
    status: str = "complete"

    # JSON key order of the files written so far (schema and status first).
    _FIRST = ("schema", "status")

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object written to disk (``schema`` and ``status`` first)."""
        names = [f.name for f in dataclasses.fields(self)]
        order = list(self._FIRST) + [n for n in names if n not in self._FIRST]
        return {name: getattr(self, name) for name in order}

    @classmethod
    def from_dict(cls, obj):
        """A `Record` from a JSON object, or ``None`` if it is not a complete record.

        Args:
            obj: the parsed JSON of a record file.

        Returns:
            The record, or ``None`` when ``obj`` is not a dict, is incomplete, has another
            schema or lacks a field.
        """
        if not isinstance(obj, dict) or obj.get("status") != "complete":
            return None
        if obj.get("schema") != protocol.RECORD_SCHEMA:
            return None
        names = [f.name for f in dataclasses.fields(cls)]
        if any(name not in obj for name in names):
            return None
        return cls(**{name: obj[name] for name in names})

    def made_with(self, shared, own) -> bool:
        """Whether the record was made with these settings (see `settings_of`)."""
        return self.protocol == {"shared": shared, "own": own}


class RecordStore:
    """The ``records/`` folder of an output directory.

    Args:
        out: the run's output folder (``--out``).
    """

    def __init__(self, out):
        self.folder = Path(out) / "records"

    def path(self, experiment, fold) -> Path:
        """File of one (experiment, fold) record."""
        return self.folder / f"{protocol.slug(experiment)}_fold{fold}.json"

    def load(self, path):
        """The complete record at ``path``, or ``None`` (missing, partial or another schema)."""
        return Record.from_dict(read_json(path))

    def save(self, record: Record) -> Path:
        """Writes ``record`` atomically; returns its path."""
        path = self.path(record.experiment, record.fold)
        atomic_write_json(path, record.to_dict())
        return path

    def collect(self, shared):
        """Complete records whose shared settings match ``shared``, by experiment, fold order.

        Returns:
            dict experiment -> list of `Record`, for every name in `protocol.EXPERIMENTS`.
        """
        by_exp = {e: [] for e in protocol.EXPERIMENTS}
        for path in sorted(self.folder.glob("*.json")):
            rec = self.load(path)
            if rec is None or rec.protocol.get("shared") != shared:
                continue
            if rec.experiment in by_exp:
                by_exp[rec.experiment].append(rec)
        for recs in by_exp.values():
            recs.sort(key=lambda r: r.fold)
        return by_exp
