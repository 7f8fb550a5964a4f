"""Bad input, round 3, on the command line (issue 26, example side), as a table, and real CXR
formats end to end: every case is one line and exit code 2 before any work, or a correct run.

The data sets are generated here (PNG class folders, names that are not UTF-8, DICOM files
written with pydicom); nothing is downloaded.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

import keras_freeze

TINY = ["--image-size", "32", "--epochs", "1", "--weights", "none", "--experiments", "freeze"]
TINY += ["--mc-samples", "10", "--n-folds", "2", "--folds", "1"]


def _class_tree(root: bytes, classes=(b"cat", b"dog"), n=6):
    """Class folders of small gray PNGs; names given as bytes (so they may be any bytes)."""
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(n):
            pixels = (rng.random((16, 16)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.fsdecode(os.path.join(root, c, b"%d.png" % i)))
    return os.fsdecode(root)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--epoch", "3"], "unrecognized arguments: --epoch"),  # no abbreviations
        (["--image-size", "1000000000"], "Expected --image-size <= 2048"),
        (["--seed", "-1"], "Expected --seed >= 0"),
        (["--mc-samples", "100000000"], "Expected --mc-samples <= 10000000"),
        (["--shard", "3/2"], "Received: shard='3/2'"),
        (["--bn-momentum", "1.5"], "Expected --bn-momentum in [0, 1)"),
        (["--lr", "nan"], "Expected --lr > 0 and finite"),
    ],
)
def test_bad_options_are_one_line_before_any_work(argv, needle, tmp_path, cli):
    code, _, err = cli([*argv, "--out", tmp_path / "out"])
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_imagenet_without_a_network_is_refused_up_front(tmp_path, cli, monkeypatch):
    def offline(*args, **kwargs):  # what Keras' download raises without a network
        raise Exception("URL fetch failure on https://storage.example/weights.h5: None")

    monkeypatch.setattr(keras_freeze, "mobilenet_v2", offline)
    out = tmp_path / "out"
    code, _, err = cli(["--weights", "imagenet", "--experiments", "freeze", "--out", out])
    assert code == 2 and "Traceback" not in err
    line = err.splitlines()[-1]
    assert "could not load the ImageNet weights" in line and "--weights torchvision" in line
    assert not out.exists()


@pytest.mark.slow  # trains a unit
def test_names_that_are_not_utf8_are_skipped_and_counted(tmp_path, cli):
    root = _class_tree(os.fsencode(tmp_path / "data"))
    odd = os.path.join(os.fsencode(root), b"cat", b"caf\xe9.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(os.fsdecode(odd))
    out = tmp_path / "out"
    code, stdout, err = cli(["--data-dir", root, *TINY, "--out", out])
    assert code == 0, err
    record = json.loads((out / "records" / "freeze_fold1.json").read_text())
    assert record["data"]["n_skipped_files"] == 1
    skipped = record["data"]["skipped_files"][0]
    assert skipped["file"] == "cat/caf\udce9.png" and "not valid UTF-8" in skipped["reason"]
    assert record["data"]["n_used"] == 12  # every other image used
    # A class folder whose name is not UTF-8 cannot name a class: refused in one line.
    os.makedirs(os.path.join(os.fsencode(root), b"\xffbird"))
    code, _, err = cli(["--data-dir", root, *TINY, "--out", tmp_path / "o2"])
    assert code == 2 and len(err.splitlines()) == 1 and "class folder names in UTF-8" in err


@pytest.mark.slow  # trains a unit
def test_a_dicom_class_folder_runs_end_to_end(tmp_path, cli):
    pydicom = pytest.importorskip(
        "pydicom", minversion="3", reason='pydicom 3 absent: pip install "keras-freeze[dicom]"'
    )
    from pydicom.dataset import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(1)
    for c, (name, photometric) in enumerate((("normal", "MONOCHROME2"), ("pneu", "MONOCHROME1"))):
        folder = tmp_path / "dcm" / name
        folder.mkdir(parents=True)
        for i in range(6):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
            pixels = (rng.random((24, 24)) * 4095 * (0.5 + c / 2)).astype(np.uint16)
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = pixels.tobytes()
            ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    assert pydicom.dcmread(folder / "0.dcm").PhotometricInterpretation == "MONOCHROME1"
    out = tmp_path / "out"
    code, stdout, err = cli(["--data-dir", tmp_path / "dcm", *TINY, "--out", out])
    assert code == 0, err
    record = json.loads((out / "records" / "freeze_fold1.json").read_text())
    assert all(f.endswith(".dcm") for f in record["predictions"]["files"])
    assert record["data"]["n_corrupt"] == 0 and record["data"]["n_used"] == 12
    assert list(record["metrics"]["per_class"]) == ["normal", "pneu"]
