"""Scaling the example's protocol: --shard, --jobs, --threads, --precision and `report`.

The unit processes of `runner.run_parallel` are tested with small stand-in targets (no
Keras: they write to their log, sleep or fail), the whole command in the slow tests.
pyproject.toml's pytest `pythonpath` puts examples/covid_cxr on the path.
"""

import _thread
import argparse
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import environment
import numpy as np
import protocol
import pytest
import records
import reproduce
import runner
import settings
from hypothesis import given
from hypothesis import strategies as st


# --------------------------------------------------------------------------------------
# The plan and its shards
# --------------------------------------------------------------------------------------
@given(
    experiments=st.lists(st.sampled_from(protocol.EXPERIMENTS), min_size=1, unique=True),
    folds=st.lists(st.integers(1, 10), min_size=1, max_size=10, unique=True),
    n=st.integers(1, 12),
)
def test_shards_partition_the_plan(experiments, folds, n):
    units = runner.plan(experiments, folds)
    assert units == [(e, k) for k in folds for e in experiments]
    shards = [runner.plan(experiments, folds, shard=(k, n)) for k in range(1, n + 1)]
    assert sorted(u for s in shards for u in s) == sorted(units)  # every unit exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert shards[0] == units[::n]  # deterministic: unit i goes to shard i % n + 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/3", "1/2/3"])
def test_a_bad_shard_is_refused_up_front(text, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main([f"--shard={text}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"Received: shard={text!r}" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--jobs", "0"], "Expected --jobs >= 1. Received: jobs=0"),
        (["--threads", "0"], "Expected --threads >= 1. Received: threads=0"),
        (["--precision", "float64"], "--precision"),
    ],
)
def test_bad_scale_options_are_refused_up_front(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_threads_default_to_the_cpus_shared_out():
    assert reproduce.parse_settings([]).threads is None  # --jobs 1: every CPU
    two = reproduce.parse_settings(["--jobs", "2"])
    assert two.threads == max(1, (os.cpu_count() or 1) // 2)
    assert settings.default_threads(3, cpus=16) == 5 and settings.default_threads(4, cpus=2) == 1
    env = environment.process_settings(3)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "3"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


@pytest.mark.parametrize(
    "argv, threads",
    [
        (["--deterministic"], 1),
        (["--deterministic", "--jobs", "4"], 1),  # the same count whatever --jobs
        (["--deterministic", "--jobs", "4", "--threads", "3"], 3),
    ],
)
def test_deterministic_fixes_the_thread_count(argv, threads):
    args = reproduce.parse_settings(argv)
    assert args.deterministic is True and args.threads == threads


def test_deterministic_environment_for_each_backend(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    env = environment.process_settings(2, deterministic=True)
    assert env["TF_DETERMINISTIC_OPS"] == "1"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"
    monkeypatch.setenv("XLA_FLAGS", env["XLA_FLAGS"])  # set twice: not repeated
    assert environment.process_settings(2, True)["XLA_FLAGS"] == env["XLA_FLAGS"]
    assert not {"TF_DETERMINISTIC_OPS", "CUBLAS_WORKSPACE_CONFIG"} & set(
        environment.process_settings(2)
    )


CONFIGURED = """
import os, sys
sys.path.insert(0, {examples!r})
import environment
environment.configure_process(None, deterministic=True)
import keras
backend = keras.backend.backend()
if backend == "tensorflow":
    from tensorflow.python.framework import config
    print("on" if config.is_op_determinism_enabled() else "off")
elif backend == "torch":
    import torch
    on = torch.are_deterministic_algorithms_enabled()
    on = on and torch.is_deterministic_algorithms_warn_only_enabled()
    print("on" if on and not torch.backends.cudnn.benchmark else "off")
else:
    import jax.numpy as jnp
    flags = os.environ["XLA_FLAGS"].split()
    ok = "--xla_gpu_deterministic_ops=true" in flags and float(jnp.ones(3).sum()) == 3.0
    print("on" if ok else "off")
print(os.environ.get("OMP_NUM_THREADS", "unset"))
"""


def test_configure_process_turns_determinism_on_in_the_backend(tmp_path):
    import subprocess
    import sys

    import keras

    examples = str(Path(environment.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OMP_NUM_THREADS")}
    env["KERAS_BACKEND"] = keras.backend.backend()
    proc = subprocess.run(
        [sys.executable, "-c", CONFIGURED.format(examples=examples)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Determinism on; the thread count left to the backend when --threads is not given.
    assert proc.stdout.split() == ["on", "unset"]


def test_deterministic_is_a_setting_of_the_records():
    plain = reproduce.parse_settings(["--alpha", "paper"])
    det = reproduce.parse_settings(["--alpha", "paper", "--deterministic"])
    shared_plain, own_plain = plain.record_key("freeze", "data").values()
    shared_det, own_det = det.record_key("freeze", "data").values()
    assert "deterministic" not in shared_plain  # records written before the flag stay valid
    assert shared_det == {**shared_plain, "deterministic": True} and own_det == own_plain


@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_deterministic_refuses_max_pooling_on_a_gpu_with_xla_or_tensorflow(
    backend, device, monkeypatch
):
    monkeypatch.setattr(runner.keras.backend, "backend", lambda: backend)
    argv = ["--deterministic", "--experiments", "freeze", "resnet18-cwbce", "covid-lite"]
    args = reproduce.parse_settings(argv)
    if backend == "torch" or device == "cpu":
        runner.check_deterministic(args, device=device)  # nothing to refuse
        return
    with pytest.raises(ValueError, match="MaxPooling2D, in covid-lite, resnet18-cwbce, has no"):
        runner.check_deterministic(args, device=device)
    args = dataclasses.replace(args, experiments=("freeze", "finetune", "stochastic"))
    runner.check_deterministic(args, device=device)  # MobileNetV2 has no MaxPooling2D
    args = dataclasses.replace(args, deterministic=False, experiments=protocol.EXPERIMENTS)
    runner.check_deterministic(args, device=device)


# --------------------------------------------------------------------------------------
# Unit processes (stand-in targets: spawned children import this module, not Keras)
# --------------------------------------------------------------------------------------
def _stand_in(args, dataset, exp, fold):
    print(f"[{exp} | fold {fold}] started, threads {os.environ['OMP_NUM_THREADS']}", flush=True)
    if exp == "fail":
        raise RuntimeError("this unit fails")
    time.sleep(args.sleep)
    print(f"[{exp} | fold {fold}] finished", flush=True)


@dataclasses.dataclass(frozen=True)
class _StandInSettings:
    """What `runner.run_parallel` reads of the settings, and how long a stand-in unit sleeps."""

    out: Path
    sleep: float
    threads: int = 1
    deterministic: bool = False

    def for_child(self):
        return self


def _context(tmp_path, sleep):
    return argparse.Namespace(settings=_StandInSettings(tmp_path, sleep), dataset=None)


@pytest.mark.once  # stand-in units in spawned processes: the same on every backend
def test_a_failing_unit_does_not_stop_the_others(tmp_path, capsys):
    ctx = _context(tmp_path, sleep=0.5)
    finished = []
    todo = [("a", 1), ("fail", 1), ("b", 1)]
    done, failed = runner.run_parallel(ctx, todo, 2, lambda: finished.append(1), target=_stand_in)
    assert (done, failed, len(finished)) == (2, [("fail", 1)], 2)
    out = capsys.readouterr().out
    for exp in ("a", "b"):  # every unit's progress lines are shown
        assert f"[{exp} | fold 1] started, threads 1" in out and f"[{exp} | fold 1] finished" in out
    assert "[jobs] fail fold 1 FAILED (exit code 1)" in out
    assert "RuntimeError: this unit fails" in (tmp_path / "logs" / "fail_fold1.log").read_text()


@pytest.mark.once  # stand-in units in spawned processes: the same on every backend
def test_ctrl_c_stops_every_unit_process(tmp_path):
    ctx = _context(tmp_path, sleep=60)
    logs = tmp_path / "logs"

    def interrupt_when_both_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            texts = [p.read_text() for p in logs.glob("*.log")] if logs.exists() else []
            if sum("started" in t for t in texts) == 2:
                break
            time.sleep(0.1)
        _thread.interrupt_main()  # what Ctrl-C does to the parent

    threading.Thread(target=interrupt_when_both_started, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_parallel(ctx, [("a", 1), ("b", 1), ("c", 1)], 2, lambda: None, target=_stand_in)
    assert time.monotonic() - t0 < 40  # not the 60 s the units would sleep
    texts = {p.stem: p.read_text() for p in logs.glob("*.log")}
    assert sorted(texts) == ["a_fold1", "b_fold1"]  # c never started
    assert all("finished" not in t for t in texts.values())


# --------------------------------------------------------------------------------------
# reproduce.py report: merging output folders
# --------------------------------------------------------------------------------------
def _write_record(folder, experiment, fold, shared, predictions):
    obj = {name: None for name in records.Record.__dataclass_fields__}
    obj.update(
        schema=protocol.RECORD_SCHEMA,
        status="complete",
        experiment=experiment,
        fold=fold,
        protocol={"shared": shared, "own": {}},
        predictions=predictions,
    )
    records.atomic_write_json(records.RecordStore(folder).path(experiment, fold), obj)


def test_merge_takes_the_union_in_table_order(tmp_path):
    shared = {"data": "abc", "epochs": 3}
    _write_record(tmp_path / "s1", "freeze", 2, shared, {"y": [1]})
    _write_record(tmp_path / "s2", "covid-net", 1, shared, {"y": [2]})
    _write_record(tmp_path / "s2", "freeze", 1, shared, {"y": [3]})
    _write_record(tmp_path / "s3", "freeze", 2, shared, {"y": [1]})  # the same unit again
    recs, got = records.merge_records([tmp_path / s for s in ("s1", "s2", "s3")])
    assert [(r.experiment, r.fold) for r in recs] == [
        ("covid-net", 1),
        ("freeze", 1),
        ("freeze", 2),
    ]
    assert got == shared


def test_merge_refuses_other_protocols_and_conflicts(tmp_path):
    _write_record(tmp_path / "a", "freeze", 1, {"data": "abc", "epochs": 3}, {"y": [1]})
    _write_record(tmp_path / "b", "freeze", 2, {"data": "xyz", "epochs": 3}, {"y": [1]})
    with pytest.raises(ValueError, match="differ in data; report them separately"):
        records.merge_records([tmp_path / "a", tmp_path / "b"])
    _write_record(tmp_path / "c", "freeze", 1, {"data": "abc", "epochs": 3}, {"y": [0]})
    with pytest.raises(ValueError, match="freeze fold 1 in .* with different results"):
        records.merge_records([tmp_path / "a", tmp_path / "c"])
    (tmp_path / "empty" / "records").mkdir(parents=True)
    with pytest.raises(ValueError, match="found none"):
        records.merge_records([tmp_path / "empty"])


def test_report_command_refuses_with_one_line(tmp_path, capsys):
    _write_record(tmp_path / "a", "freeze", 1, {"data": "abc"}, {"y": [1]})
    _write_record(tmp_path / "b", "freeze", 2, {"data": "xyz"}, {"y": [1]})
    for dirs in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "nope"]):
        with pytest.raises(SystemExit) as e:
            reproduce.main(["report", *map(str, dirs), "--out", str(tmp_path / "out")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("reproduce.py report: error: Expected") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# End to end (subprocesses that train)
# --------------------------------------------------------------------------------------
@pytest.mark.slow  # two runs of two tiny models: ~1 min on TensorFlow
def test_deterministic_two_jobs_give_the_records_of_one_job(tmp_path, cli):
    from test_reproduce import run_cli

    tiny = ["--n-images", "48", "--image-size", "32", "--epochs", "1", "--weights", "none"]
    # --deterministic fixes every unit's thread count (else 2 for --jobs 1, 1 for --jobs 2 here).
    tiny += ["--experiments", "freeze", "stochastic", "--deterministic", "--alpha", "paper"]
    run_cli([*tiny, "--out", str(tmp_path / "one")], tmp_path)
    log = run_cli([*tiny, "--out", str(tmp_path / "two"), "--jobs", "2"], tmp_path)
    assert "[jobs] started freeze fold 1" in log and "[jobs] started stochastic fold 1" in log
    assert "[stochastic | fold 1/5] epoch 1/1" in log  # the units' progress is shown

    def recs(name):
        folder = tmp_path / name / "records"
        return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    one, two = recs("one"), recs("two")
    assert sorted(one) == sorted(two) == ["freeze_fold1.json", "stochastic_fold1.json"]
    for name in one:
        for key in ("predictions", "history", "metrics", "precision"):
            assert two[name][key] == one[name][key], (name, key)
    # The two-job folder's tables equal the one-job run's; merging both changes nothing.
    merged = tmp_path / "merged"  # `report` only reads records: in this process
    code, stdout, _ = cli(["report", tmp_path / "two", tmp_path / "one", "--out", merged])
    assert code == 0, stdout
    for table in ("table1_macro.md", "table2_weighted.md"):
        ours = (merged / table).read_text()
        assert ours == (tmp_path / "one" / table).read_text(), table


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_precision_builds_the_unit_under_keras_mixed_policy(precision, tmp_path):

    import experiment
    import keras

    argv = ["--precision", precision, "--image-size", "64", "--experiments", "covid-lite"]
    args = reproduce.parse_settings(argv)
    labels = np.array([0, 1, 2, 3] * 4)
    try:
        unit = experiment.Unit.of(args, "covid-lite")
        loss, _ = experiment._loss_for("covid-lite", None, labels, 4)
        model, _, _ = experiment.compile_model(args, unit, 1, loss, 4)
        assert keras.config.dtype_policy().name == precision
        assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {precision}
        assert model.layers[-1].output.dtype in ("float16", "bfloat16")
        x = np.random.default_rng(0).random((4, 64, 64, 3), dtype="float32")
        y = np.eye(4, dtype="float32")[[0, 1, 2, 3]]
        value = loss(y, model(x))
        assert keras.backend.standardize_dtype(value.dtype) == "float32"  # loss in float32
        if precision == "mixed_float16":  # one train step (slow to compile on JAX) is enough
            assert np.isfinite(model.train_on_batch(x, y))
        assert all(v.dtype == "float32" for v in model.trainable_variables)
    finally:
        keras.config.set_dtype_policy("float32")
    assert records.Record.__dataclass_fields__["precision"].default == "float32"
