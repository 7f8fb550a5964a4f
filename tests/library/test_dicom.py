"""DICOM (`.dcm`) through decode_image / list_class_images / header_problem.

Tiny files written here with pydicom have hand-computed pixel values; the real chest
radiograph RG1 (CR, CHEST, PA, MONOCHROME1, 1955x1841, 15 of 16 bits) and its JPEG 2000
encodings come from the `pydicom-data` wheel, reached by exact name (no download).
"""

import importlib.util

import numpy as np
import pytest

pydicom = pytest.importorskip(
    "pydicom", minversion="3", reason='pydicom 3 absent: pip install "keras-freeze[dicom]"'
)

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pydicom.uid import JPEG2000Lossless  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

import keras_freeze  # noqa: E402
from keras_freeze import _images  # noqa: E402

STORED_12 = np.array([[0, 1000, 1800], [2000, 2300, 4095]], dtype=np.uint16)


def _write(path, pixels, syntax=ExplicitVRLittleEndian, **attributes):
    """A one-frame Secondary Capture of `pixels` (uint16 gray, uint8 RGB) with `attributes`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = 8 if colour else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _testdata(name):
    """Path of a pydicom-data file by exact name, or skip (never a download)."""
    if importlib.util.find_spec("data_store") is None:
        pytest.skip(f"{name} absent: pip install pydicom-data==1.0.0")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} absent from pydicom-data: pip install pydicom-data==1.0.0")
    return path


# --------------------------------------------------------------------------
# Tiny files with hand-computed values
# --------------------------------------------------------------------------


def test_monochrome2_12bit_without_lut_is_divided_by_4095(tmp_path):
    path = _write(tmp_path / "x.dcm", STORED_12)
    got = keras_freeze.decode_image(path, mode="gray")
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, STORED_12 / 4095, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(keras_freeze.decode_image(path), np.repeat(got[..., None], 3, -1))
    assert _images.header_problem(path) is None


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_maps_exactly_to_unit_range(tmp_path, photometric):
    # LINEAR window (PS3.3 C.11.2.1.2.1): (v - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1].
    path = _write(
        tmp_path / "w.dcm",
        STORED_12,
        WindowCenter=2048,
        WindowWidth=1000,
        PhotometricInterpretation=photometric,
    )
    by_hand = np.array([[0.0, 0.0, 0.252252252], [0.452452452, 0.752752753, 1.0]])
    if photometric == "MONOCHROME1":
        by_hand = 1.0 - by_hand  # the lowest stored value is white
    got = keras_freeze.decode_image(path, mode="gray")
    np.testing.assert_allclose(got, by_hand, rtol=0, atol=1e-7)


def test_rescale_then_window(tmp_path):
    # Modality: 0.5 v + 100 (v = 2000 -> 1100); window c = 1100, w = 1001.
    path = _write(
        tmp_path / "r.dcm",
        STORED_12,
        RescaleSlope=0.5,
        RescaleIntercept=100,
        WindowCenter=1100,
        WindowWidth=1001,
    )
    modality = 0.5 * STORED_12 + 100
    by_hand = np.clip((modality - 1099.5) / 1000 + 0.5, 0, 1)
    assert by_hand[1, 0] == pytest.approx(0.5005)
    np.testing.assert_allclose(keras_freeze.decode_image(path, mode="gray"), by_hand, atol=1e-7)
    # Without a window: the rescale's output range of every 12-bit value, [100, 2147.5].
    path = _write(tmp_path / "r2.dcm", STORED_12, RescaleSlope=0.5, RescaleIntercept=100)
    np.testing.assert_allclose(
        keras_freeze.decode_image(path, mode="gray"), (modality - 100) / 2047.5, atol=1e-7
    )


def test_voi_lut_output_is_scaled_by_its_bit_depth(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [3, 1000, 10])  # 3 entries from 1000, 10-bit output
    item.add_new("LUTData", "US", [0, 512, 1023])
    stored = np.array([[0, 1000, 1001], [1002, 4000, 4095]], dtype=np.uint16)
    path = _write(tmp_path / "lut.dcm", stored, VOILUTSequence=[item])
    got = keras_freeze.decode_image(path, mode="gray")
    np.testing.assert_allclose(got, [[0, 0, 512 / 1023], [1, 1, 1]], rtol=0, atol=1e-7)


def test_rgb_dicom(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path = _write(tmp_path / "rgb.dcm", rgb)
    got = keras_freeze.decode_image(path)
    np.testing.assert_allclose(got, rgb / 255, rtol=0, atol=1e-7)
    gray = keras_freeze.decode_image(path, mode="gray")
    luma = (rgb / 255) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray, luma, rtol=0, atol=1e-6)
    assert keras_freeze.decode_image(path, (2, 3)).shape == (2, 3, 3)


def test_files_that_are_not_single_images_name_the_file(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(OSError, match=r"Cannot decode DICOM file .*junk\.dcm"):
        keras_freeze.decode_image(tmp_path / "junk.dcm")
    assert "InvalidDicomError" in _images.header_problem(tmp_path / "junk.dcm")

    frames = np.zeros((2, 3), np.uint16)
    path = _write(tmp_path / "multi.dcm", frames, NumberOfFrames=2, Rows=1)
    with pytest.raises(OSError, match=r"multi\.dcm.*multi-frame image \(2 frames\)"):
        keras_freeze.decode_image(path)
    assert "multi-frame" in _images.header_problem(path)

    path = _write(tmp_path / "palette.dcm", STORED_12, PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(OSError, match=r"palette\.dcm.*'PALETTE COLOR' is not supported"):
        keras_freeze.decode_image(path)

    path = _write(tmp_path / "nopixels.dcm", STORED_12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(OSError, match=r"nopixels\.dcm.*no Pixel Data"):
        keras_freeze.decode_image(path)

    path = _write(tmp_path / "flat.dcm", STORED_12, RescaleSlope=0, RescaleIntercept=5)
    with pytest.raises(ValueError, match=r"flat\.dcm.*\[5, 5\]"):
        keras_freeze.decode_image(path)


def test_compressed_file_without_its_decoder_names_the_package(tmp_path, monkeypatch):
    fragments = encapsulate([b"\x00" * 16])
    path = _write(tmp_path / "j2k.dcm", STORED_12, JPEG2000Lossless, PixelData=fragments)
    # No JPEG 2000 decoder installed (as without pylibjpeg-openjpeg and Pillow's openjpeg).
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    why = _images.header_problem(path)
    assert "no pixel-data decoder for JPEG 2000" in why
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in why
    with pytest.raises(OSError, match=r"j2k\.dcm.*pip install pylibjpeg pylibjpeg-openjpeg"):
        keras_freeze.decode_image(path)


def test_dicom_class_folders_list_decode_and_estimate(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("normal", 3), ("pneumonia", 4)):
        (tmp_path / name).mkdir()
        for i in range(n):
            _write(tmp_path / name / f"{i}.DCM", rng.integers(0, 4096, (8, 8), dtype=np.uint16))
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    images = keras_freeze.list_class_images(tmp_path)
    assert images.counts() == {"normal": 3, "pneumonia": 4}
    assert [why for _, why in images.skipped] == ["not an image file"]
    for path in images.paths:
        assert _images.header_problem(path) is None
        x = keras_freeze.decode_image(path, 4)
        assert x.shape == (4, 4, 3) and 0 <= x.min() and x.max() <= 1
    with pytest.warns(UserWarning, match="not image files"):
        result = keras_freeze.estimate_class_attention(tmp_path, mc_samples=4, image_size=8, seed=0)
    assert result.counts.tolist() == [3, 4]


# --------------------------------------------------------------------------
# The real chest radiograph RG1 of pydicom-data
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rg1():
    """Decoded gray pixels of RG1 by encoding, cached for the module."""
    cache = {}

    def decode(name):
        if name not in cache:
            cache[name] = keras_freeze.decode_image(_testdata(f"RG1_{name}.dcm"), mode="gray")
        return cache[name]

    return decode


def test_rg1_monochrome1_matches_a_numpy_reference(rg1):
    path = _testdata("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == ("CR", "CHEST", "PA")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    stored = ds.pixel_array.astype(np.float64)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    values = stored * slope + intercept
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)  # 15000, 30000
    shown = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    reference = 1.0 - shown  # MONOCHROME1: the lowest value is white
    got = rg1("UNCR")
    assert got.shape == (1955, 1841) == stored.shape
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)
    # Inverted: the brightest stored pixel is the darkest decoded one, and vice versa.
    assert got.flat[np.argmax(stored)] == got.min() and got.flat[np.argmin(stored)] == got.max()
    rgb = keras_freeze.decode_image(path, (224, 200))
    assert rgb.shape == (224, 200, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_rg1_jpeg2000_decodes_like_the_uncompressed_file(rg1):
    # J2KR is lossless: exactly UNCR. UNCI is J2KI's decompression (its Derivation
    # Description says "JPEG 2000 irreversible (lossy) 10:1"): exactly J2KI, close to UNCR.
    np.testing.assert_array_equal(rg1("J2KR"), rg1("UNCR"))
    np.testing.assert_array_equal(rg1("J2KI"), rg1("UNCI"))
    lossy = np.abs(rg1("J2KI") - rg1("UNCR"))
    assert lossy.mean() < 0.003 and lossy.max() < 0.03
