"""Records of the COVID CXR example: one JSON file per (experiment, fold), written atomically.

A run is resumable: `RecordStore.load` returns a record only if it is complete and of the current
schema, and `Record.made_with` says whether it was made with the run's settings
(`Settings.record_key`), so an interrupted run redoes only the unfinished units. Every file is
written to a temporary name and moved into place with ``os.replace``, so a record is either
absent or whole.

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

import keras
import numpy as np
import protocol

import keras_freeze


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
    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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
    # Added with --feature-cache: {"used", "reason", "dtype", "bytes", "build_s", "reused",
    # "cut"}; None in records written before it (they stay valid).
    feature_cache: dict | None = None
    # Added with --precision (Keras dtype policy); records written before it are float32.
    precision: str = "float32"
    # Added with --save-models: the saved model, relative to the output folder (`saved.py`).
    model: str | None = None

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
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        if any(name not in obj for name in required):
            return None
        return cls(**{f.name: obj[f.name] for f in fields if f.name in obj})

    def constant_class(self) -> str | None:
        """The class the model predicted for every test image, or ``None`` when it predicted
        more than one (a constant model's F1 is that of the majority class)."""
        predicted = {int(np.argmax(row)) for row in self.predictions["y_prob"]}
        return list(self.metrics["per_class"])[predicted.pop()] if len(predicted) == 1 else None

    def made_with(self, key: dict) -> bool:
        """Whether the record was made with these settings (`Settings.record_key`)."""
        return self.protocol == key


class RecordStore:
    """The ``records/`` and ``attention/`` folders of an output directory.

    Args:
        out: the run's output folder (``--out``).
    """

    def __init__(self, out):
        self.out = Path(out)
        self.folder = self.out / "records"

    def attention_path(self, fold) -> Path:
        """File of one fold's estimated class attention."""
        return self.out / "attention" / f"fold{fold}.json"

    def attention_of(self, fold, key=None):
        """The `keras_freeze.ClassAttention` estimated for ``fold`` (with the settings ``key``,
        when given), or ``None`` when absent, unreadable or made with other settings."""
        cached = read_json(self.attention_path(fold))
        if not isinstance(cached, dict) or (key is not None and cached.get("key") != key):
            return None
        try:
            return keras_freeze.ClassAttention.from_dict(cached["attention"])
        except (KeyError, TypeError, ValueError):
            return None

    def attention_seconds(self, fold):
        """How long the estimate of ``fold``'s class attention took (``None`` if unknown)."""
        return (read_json(self.attention_path(fold)) or {}).get("time_s")

    def save_attention(self, fold, key, attention, seconds):
        """Writes one fold's estimated class attention with the settings it was made with."""
        obj = {"key": key, "time_s": seconds, "attention": attention.to_dict()}
        atomic_write_json(self.attention_path(fold), obj)

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
        """Complete records whose shared settings match ``shared``, by experiment, in fold order.

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


def _differences(a, b):
    """Keys whose values differ between two flat dicts (a missing key counts)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def merge_records(folders):
    """The complete records of several output folders, checked to be one protocol.

    For `reproduce.py report`: the shards of one plan (``--shard K/N`` on several machines)
    each write their own ``records/``; their union is one run if every record was made with
    the same shared settings (`Settings.record_key`: data fingerprint, epochs, weights, ...).

    Args:
        folders: output folders (each with a ``records/`` sub-folder).

    Returns:
        ``(records, shared)``: the records sorted by experiment (Table 1's order) and fold (the
        ``model`` of each an absolute path), and their common shared settings.

    Raises:
        ValueError: no complete record; records made with different shared settings (naming
            the settings and the folders); one (experiment, fold) in two folders with
            different results.
    """
    seen, first = {}, None
    for folder in folders:
        store = RecordStore(folder)
        for path in sorted(store.folder.glob("*.json")):
            rec = store.load(path)
            if rec is None:
                continue
            if rec.model is not None:  # a saved model stays where it is: its absolute path
                rec = dataclasses.replace(rec, model=str((Path(folder) / rec.model).resolve()))
            shared = rec.protocol.get("shared", {})
            if first is None:
                first = (shared, path)
            elif shared != first[0]:
                keys = ", ".join(_differences(shared, first[0]))
                raise ValueError(
                    "Expected records of one protocol and data set. Received: "
                    f"{first[1]} and {path} differ in {keys}; report them separately"
                )
            _add_unique(seen, rec, path)
    if first is None:
        raise ValueError(f"Expected complete records in {[str(f) for f in folders]}: found none")
    order = {e: i for i, e in enumerate(protocol.EXPERIMENTS)}
    merged = sorted(seen.values(), key=lambda rp: (order.get(rp[0].experiment, 99), rp[0].fold))
    return [rec for rec, _ in merged], first[0]


def _add_unique(seen, rec, path):
    """Adds ``rec`` to ``seen``; the same unit twice must hold the same test predictions."""
    key = (rec.experiment, rec.fold)
    if key in seen and seen[key][0].predictions != rec.predictions:
        raise ValueError(
            f"Expected each experiment x fold once. Received: {rec.experiment} fold "
            f"{rec.fold} in {seen[key][1]} and in {path} with different results; remove one"
        )
    seen.setdefault(key, (rec, path))
