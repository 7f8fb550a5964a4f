"""Records of the COVID CXR example: one JSON file per (experiment, fold), written atomically.

Resuming and merging: docs/covid_cxr.md, "Outputs" and "Scaling the protocol".

    >>> RecordStore("runs").path("freeze+attention", 2).as_posix()
    'runs/records/freeze_attention_fold2.json'
"""

import dataclasses
import json
import os
import platform
from pathlib import Path

import keras
import numpy as np
import protocol

import keras_freeze


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` (its folder created) atomically: temporary file, os.replace."""
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
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path):
    """The JSON content of ``path``, or ``None`` if it is unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_default(obj):
    if isinstance(obj, np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer, np.ndarray)):
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


@dataclasses.dataclass(kw_only=True)
class Record:
    """One experiment on one fold, as in ``records/<slug>_fold<k>.json`` (fields: its keys)."""

    schema: int = protocol.RECORD_SCHEMA
    status: str = "complete"
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
    # Added later (older records stay valid): --feature-cache, --precision, --save-models.
    feature_cache: dict | None = None
    precision: str = "float32"
    model: str | None = None

    def to_dict(self) -> dict:
        """The record as the JSON object written to disk, in the fields' order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, obj):
        """A `Record` from a parsed record file; ``None`` if incomplete or of another schema."""
        if not isinstance(obj, dict) or obj.get("status") != "complete":
            return None
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        if obj.get("schema") != protocol.RECORD_SCHEMA or any(n not in obj for n in required):
            return None
        return cls(**{f.name: obj[f.name] for f in fields if f.name in obj})

    def constant_class(self) -> str | None:
        """The class predicted for every test image (a constant model), else ``None``."""
        predicted = {int(np.argmax(row)) for row in self.predictions["y_prob"]}
        return list(self.metrics["per_class"])[predicted.pop()] if len(predicted) == 1 else None

    def made_with(self, key: dict) -> bool:
        """Whether the record was made with these settings (`Settings.record_key`)."""
        return self.protocol == key


class RecordStore:
    """The ``records/`` and ``attention/`` folders of an output folder ``out``."""

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

    def complete(self):
        """``(path, record)`` of each complete record, by file name."""
        return [(p, r) for p in sorted(self.folder.glob("*.json")) if (r := self.load(p))]

    def collect(self, shared):
        """Complete records whose shared settings match ``shared``: experiment -> records in
        fold order, for every name in `protocol.EXPERIMENTS`."""
        recs = sorted(
            (r for _, r in self.complete() if r.protocol.get("shared") == shared),
            key=lambda r: r.fold,
        )
        return {e: [r for r in recs if r.experiment == e] for e in protocol.EXPERIMENTS}


def merge_records(folders):
    """The complete records of several output folders (`reproduce.py report`), one protocol.

    Returns:
        ``(records, shared)``: the records in Table 1's and fold order (each ``model`` an
        absolute path) and their shared settings (`Settings.record_key`).

    Raises:
        ValueError: no record; records of different shared settings; a unit twice, differing.
    """
    found = [(f, p, r) for f in folders for p, r in RecordStore(f).complete()]
    if not found:
        raise ValueError(f"Expected complete records in {[str(f) for f in folders]}: found none")
    seen, (_, first_path, first) = {}, found[0]
    shared = first.protocol.get("shared", {})
    for folder, path, rec in found:
        if rec.model is not None:
            rec = dataclasses.replace(rec, model=str((Path(folder) / rec.model).resolve()))
        if (own := rec.protocol.get("shared", {})) != shared:
            keys = ", ".join(
                sorted(k for k in set(own) | set(shared) if own.get(k) != shared.get(k))
            )
            raise ValueError(
                "Expected records of one protocol and data set. Received: "
                f"{first_path} and {path} differ in {keys}; report them separately"
            )
        key = (rec.experiment, rec.fold)
        if key in seen and seen[key][0].predictions != rec.predictions:
            raise ValueError(
                f"Expected each experiment x fold once. Received: {rec.experiment} fold "
                f"{rec.fold} in {seen[key][1]} and in {path} with different results; remove one"
            )
        seen.setdefault(key, (rec, path))
    order = {e: i for i, e in enumerate(protocol.EXPERIMENTS)}
    merged = sorted(seen.values(), key=lambda rp: (order.get(rp[0].experiment, 99), rp[0].fold))
    return [rec for rec, _ in merged], shared
