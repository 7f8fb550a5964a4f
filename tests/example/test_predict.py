"""What a run leaves a user: ``--save-models`` and ``reproduce.py predict`` (examples/covid_cxr).

One tiny run with ``--save-models`` is shared by the tests (a session fixture, made once for
all workers); predicting its test fold's files, arranged as class folders, must give the record's
own metrics.
"""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import reproduce
import saved
from filelock import FileLock
from PIL import Image

TINY = ["--n-images", "48", "--image-size", "32", "--epochs", "1", "--alpha", "paper"]
TINY += ["--weights", "none", "--experiments", "freeze", "--feature-cache", "off"]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A tiny run with --save-models: (output folder, its freeze record). Made once for all
    pytest-xdist workers (a file lock in their shared temporary folder); tests only read it."""
    shared = tmp_path_factory.getbasetemp().parent
    out = shared / "saved_run"
    with FileLock(str(shared / "saved_run.lock")):
        if not (out / "records" / "freeze_fold1.json").is_file():
            argv = [*TINY, "--out", str(out), "--cache-dir", str(out / "cache"), "--save-models"]
            assert reproduce.main(argv) == 0
    return out, json.loads((out / "records" / "freeze_fold1.json").read_text())


@pytest.fixture(scope="session")
def test_folders(run, tmp_path_factory):
    """The run's test fold as class folders (links to the data set's files)."""
    out, record = run
    info = saved.ModelInfo.read(out / record["model"])
    folders = tmp_path_factory.mktemp("test_fold")
    for file, label in zip(
        record["predictions"]["files"], record["predictions"]["y_true"], strict=True
    ):
        target = folders / info.class_names[label] / Path(file).name
        target.parent.mkdir(exist_ok=True)
        target.symlink_to(Path(info.data_root) / file)
    return folders


def test_saved_model_loads_with_plain_load_model_and_says_where_it_is(run):
    out, record = run
    assert record["model"] == "models/freeze_fold1.keras"
    model = keras.models.load_model(out / record["model"])  # no custom_objects
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)  # compiled loss kept
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    assert model.predict(x, verbose=0).shape == (2, 4)
    info = saved.ModelInfo.read(out / record["model"])
    assert info.class_names == tuple(record["metrics"]["per_class"])
    assert info.image_size == 32 and len(info.test_files) == record["split"]["test"]
    assert (out / "gradcam_freeze_fold1.png").stat().st_size > 1000  # Grad-CAM of the test fold


def test_predict_on_the_test_fold_gives_the_records_metrics(run, test_folders, tmp_path, cli):
    out, record = run
    csv_path = tmp_path / "p.csv"
    argv = ["--model", out / record["model"], test_folders, "--out", csv_path, "--explain"]
    code, stdout, _ = cli(["predict", *argv])
    assert code == 0, stdout
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "path,predicted,true," + ",".join(record["metrics"]["per_class"])
    assert len(rows) == 1 + record["split"]["test"]
    metrics = json.loads(csv_path.with_suffix(".metrics.json").read_text())
    for key in ("macro", "weighted", "confusion_matrix", "balanced_accuracy", "n"):
        assert metrics[key] == record["metrics"][key], key
    assert "macro F1" in stdout
    assert (tmp_path / "gradcam_freeze_fold1_predict.png").is_file()


def test_predict_skips_and_counts_a_corrupt_image(run, test_folders, tmp_path, cli):
    out, record = run
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    first = sorted(test_folders.rglob("*.png"))[0]
    Image.open(first).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["--model", out / record["model"], folder, "--out", tmp_path / "u.csv"]
    code, stdout, _ = cli(["predict", *argv])
    assert code == 0
    assert (
        "skipped" in stdout
        and "broken.png" in stdout
        and "1 image(s) classified, 1 skipped" in stdout
    )
    rows = (tmp_path / "u.csv").read_text().splitlines()
    assert rows[0].startswith("path,predicted,COVID") and len(rows) == 2  # no true column


def test_bad_predict_inputs_get_one_line(run, test_folders, tmp_path, cli):
    out, record = run
    model = out / record["model"]
    stray = tmp_path / "stray" / "Pneumothorax"
    stray.mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes(model.read_bytes())
    wrong = tmp_path / "wrong.keras"
    wrong.write_bytes(model.read_bytes())
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["class_names"] = meta["class_names"][:3]
    wrong.with_suffix(".json").write_text(json.dumps(meta))
    cases = [
        (["--model", tmp_path / "missing.keras", test_folders], "Expected --model"),
        (["--model", lonely, test_folders], "lonely.json"),
        (["--model", wrong, test_folders], "one output per class"),
        (["--model", model, tmp_path / "stray"], "Pneumothorax"),
        (["--model", model, tmp_path / "empty"], "Expected images"),
        (["--model", model, tmp_path / "nowhere"], "missing"),
    ]
    for argv, needle in cases:
        code, _, err = cli(["predict", *argv, "--out", tmp_path / "x.csv"])
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, (argv, err)
        assert "Traceback" not in err


@pytest.mark.slow  # two more runs of the command
def test_a_rerun_redoes_a_unit_whose_model_is_missing(run, tmp_path, capsys):
    out, record = tmp_path / "run", run[1]
    shutil.copytree(run[0], out)  # the shared run stays as it is for the other tests
    argv = [*TINY, "--out", str(out), "--cache-dir", str(out / "cache"), "--save-models"]
    assert reproduce.main(argv) == 0
    assert "freeze fold 1: already complete" in capsys.readouterr().out
    (out / record["model"]).unlink()
    assert reproduce.main(argv) == 0
    assert "its model was not saved: re-running" in capsys.readouterr().out
    assert (out / record["model"]).is_file()


def test_a_merged_report_names_the_models_where_they_are(run, tmp_path):
    out, record = run
    merged = tmp_path / "merged"
    assert reproduce.main(["report", str(out), "--out", str(merged)]) == 0
    rec = json.loads((merged / "records" / "freeze_fold1.json").read_text())
    assert (merged / rec["model"]).resolve() == (out / record["model"]).resolve()
    assert rec["predictions"] == record["predictions"]


@pytest.mark.slow  # trains one more unit
def test_a_model_trained_through_the_feature_cache_loads_without_warnings(tmp_path):
    import warnings

    argv = [a if a != "off" else "on" for a in TINY]  # --feature-cache on
    out = tmp_path / "cached"
    argv += ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--save-models"]
    assert reproduce.main(argv) == 0
    record = json.loads((out / "records" / "freeze_fold1.json").read_text())
    assert record["feature_cache"]["used"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading for optimizer"
        model = keras.models.load_model(out / record["model"])
    assert len(model.optimizer.variables) > 2
