"""Tests for list_class_images / ClassImages and decode_image on files built in tmp_path."""

import dataclasses
import os
import sys

import numpy as np
import pytest
from PIL import Image

import keras_freeze
from keras_freeze import ClassImages
from keras_freeze import _images
from keras_freeze import list_class_images
from keras_freeze._images import IMAGE_EXTENSIONS


def _touch(root, *paths):
    for path in paths:
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(b"")


def _names(images):
    return [os.path.relpath(p, images.root) for p in images.paths]


def test_kaggle_layout_reads_images_and_ignores_masks(tmp_path):
    _touch(
        tmp_path,
        "COVID/images/COVID-1.png",
        "COVID/images/COVID-2.png",
        "COVID/masks/COVID-1.png",
        "COVID/masks/COVID-2.png",
        "Normal/images/Normal-1.png",
        "Normal/masks/Normal-1.png",
        "COVID.metadata.xlsx",
    )
    images = list_class_images(tmp_path)
    assert images.class_names == ("COVID", "Normal")
    assert _names(images) == [
        os.path.join("COVID", "images", "COVID-1.png"),
        os.path.join("COVID", "images", "COVID-2.png"),
        os.path.join("Normal", "images", "Normal-1.png"),
    ]
    assert images.labels.tolist() == [0, 0, 1]
    assert images.skipped == ()
    assert images.counts() == {"COVID": 2, "Normal": 1} and len(images) == 3
    assert images.root == str(tmp_path)


def test_flat_layout(tmp_path):
    _touch(tmp_path, "cats/a.png", "cats/b.jpg", "dogs/c.webp")
    images = list_class_images(str(tmp_path))
    assert _names(images) == [
        os.path.join("cats", "a.png"),
        os.path.join("cats", "b.jpg"),
        os.path.join("dogs", "c.webp"),
    ]
    assert images.labels.tolist() == [0, 0, 1]


def test_natural_order_case_insensitive(tmp_path):
    files = ["img10.png", "img2.png", "IMG3.png", "img1.png", "img1b.png", "b.png", "A.png"]
    _touch(tmp_path, *(f"c/{f}" for f in files), "d/x.png")
    images = list_class_images(tmp_path)
    got = [os.path.basename(p) for p in images.paths if images.labels[images.paths.index(p)] == 0]
    assert got == ["A.png", "b.png", "img1.png", "img1b.png", "img2.png", "IMG3.png", "img10.png"]


def test_extensions_are_matched_case_insensitively(tmp_path):
    exts = list(IMAGE_EXTENSIONS) + [e.upper() for e in IMAGE_EXTENSIONS] + [".JpEg"]
    _touch(tmp_path, *(f"c/f{i}{e}" for i, e in enumerate(exts)), "d/x.png")
    assert list_class_images(tmp_path).counts()["c"] == len(exts)
    expected = ".png .jpg .jpeg .bmp .gif .tif .tiff .webp .dcm".split()
    assert IMAGE_EXTENSIONS == tuple(expected)


def test_hidden_and_junk_files_are_skipped_silently(tmp_path):
    _touch(
        tmp_path,
        "c/x.png",
        "c/._x.png",  # AppleDouble companion written by macOS on foreign file systems
        "c/.hidden.png",
        "c/.DS_Store",
        "c/Thumbs.db",
        "c/desktop.ini",
        "d/y.png",
    )
    images = list_class_images(tmp_path)
    assert [os.path.basename(p) for p in images.paths] == ["x.png", "y.png"]
    assert images.skipped == ()


def test_other_entries_are_skipped_with_a_reason(tmp_path):
    _touch(tmp_path, "c/x.png", "c/notes.txt", "c/fake.png/inner.png", "c/sub/y.png", "d/z.png")
    images = list_class_images(tmp_path)
    assert [os.path.basename(p) for p in images.paths] == ["x.png", "z.png"]
    skipped = {os.path.relpath(p, tmp_path): why for p, why in images.skipped}
    assert skipped == {
        os.path.join("c", "fake.png"): "a directory named like an image",
        os.path.join("c", "notes.txt"): "not an image file",
        os.path.join("c", "sub"): "a directory",
    }


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="POSIX symlinks")
def test_unreadable_links_are_reported_not_raised(tmp_path):
    _touch(tmp_path, "c/x.png", "d/y.png")
    os.symlink("loop.png", tmp_path / "c" / "loop.png")  # points to itself: ELOOP on stat
    os.symlink("loop", tmp_path / "c" / "loop")
    os.symlink("missing.png", tmp_path / "c" / "dangling.png")
    os.symlink("e", tmp_path / "e")  # a looping link at the root is not a class folder
    images = list_class_images(tmp_path)
    assert images.class_names == ("c", "d")
    assert [os.path.basename(p) for p in images.paths] == ["x.png", "y.png"]
    skipped = {os.path.basename(p): why for p, why in images.skipped}
    assert skipped == {
        "dangling.png": "not a regular file named like an image",
        "loop": "cannot be read (Too many levels of symbolic links)",
        "loop.png": "cannot be read (Too many levels of symbolic links)",
    }


def test_bytes_and_path_directories_list_the_same(tmp_path):
    _touch(tmp_path, "a/1.png", "b/2.png")
    as_str = list_class_images(str(tmp_path))
    assert list_class_images(os.fsencode(tmp_path)) == as_str == list_class_images(tmp_path)
    assert isinstance(list_class_images(os.fsencode(tmp_path)).root, str)
    for bad in (3, None, ["a"]):
        with pytest.raises(ValueError, match=r"Expected directory to be a path .*Received"):
            list_class_images(bad)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_names_that_are_not_utf8_are_listed_and_decoded(tmp_path):
    root = os.fsencode(tmp_path)
    try:
        os.mkdir(os.path.join(root, b"cls\xff"))
    except OSError:  # e.g. a file system that only takes UTF-8 names
        pytest.skip("this file system refuses names that are not UTF-8")
    os.mkdir(os.path.join(root, b"plain"))
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    for name in (b"cls\xff/img\xfe.png", b"plain/ok.png"):
        with open(os.path.join(root, name), "wb") as f:
            Image.fromarray(pixels).save(f, format="PNG")
    images = list_class_images(tmp_path)
    assert images.class_names == ("cls\udcff", "plain")
    assert os.fsencode(images.paths[0]).endswith(b"cls\xff/img\xfe.png")
    assert repr(images.paths[0])  # printable: surrogate escapes, no UnicodeError
    for path in images.paths:
        got = keras_freeze.decode_image(path, mode="gray")
        np.testing.assert_array_equal(got, np.float32(pixels) / 255)


def test_class_names_as_a_bare_string_is_refused(tmp_path):
    _touch(tmp_path, "abc/1.png", "a/1.png", "b/1.png", "c/1.png")
    with pytest.raises(ValueError, match=r"class_names='abc'.*\['abc'\]"):
        list_class_images(tmp_path, "abc")
    assert list_class_images(tmp_path, ["abc"]).class_names == ("abc",)


def test_class_names_select_and_order_the_folders(tmp_path):
    _touch(tmp_path, "a/1.png", "b/1.png", "b/2.png", "c/1.png")
    images = list_class_images(tmp_path, class_names=["c", "b"])
    assert images.class_names == ("c", "b")
    assert images.labels.tolist() == [0, 1, 1]
    assert images.counts() == {"c": 1, "b": 2}


def test_class_names_none_discovers_sorted_visible_folders(tmp_path):
    _touch(tmp_path, "b/1.png", "a/1.png", ".cache/1.png", "__MACOSX_not_hidden/1.png", "x.png")
    assert list_class_images(tmp_path).class_names == ("__MACOSX_not_hidden", "a", "b")


def test_empty_class_folder_counts_zero(tmp_path):
    _touch(tmp_path, "a/1.png")
    (tmp_path / "b").mkdir()
    assert list_class_images(tmp_path).counts() == {"a": 1, "b": 0}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        list_class_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="empty directory"):
        list_class_images(tmp_path)
    _touch(tmp_path, "COVID/images/1.png", "Normal/1.png")
    with pytest.raises(
        ValueError,
        match=r"Missing: \['Viral Pneumonia'\]; found sub-folders: \['COVID', 'Normal'\]",
    ):
        list_class_images(tmp_path, ["COVID", "Viral Pneumonia"])
    with pytest.raises(ValueError, match="distinct"):
        list_class_images(tmp_path, ["COVID", "COVID"])


def test_class_images_value_object(tmp_path):
    _touch(tmp_path, "a/1.png", "b/1.png")
    images = list_class_images(tmp_path)
    assert images == list_class_images(tmp_path)
    assert images != list_class_images(tmp_path, ["b", "a"])
    assert isinstance(images.paths, tuple) and isinstance(images.skipped, tuple)
    assert images.labels.dtype == np.int64
    with pytest.raises(ValueError):
        images.labels[0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        images.paths = ()
    with pytest.raises(ValueError, match="one label per path"):
        ClassImages("r", ("a",), ("r/a/1.png",), [0, 0])
    with pytest.raises(ValueError, match=r"labels in \[0, 0\]"):
        ClassImages("r", ("a",), ("r/a/1.png",), [1])


def test_estimator_reads_the_listed_files(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("a", 3), ("b", 4)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                tmp_path / name / f"{i}.PNG"
            )
    _touch(tmp_path, "a/fake.png/x.png", "a/readme.txt", "b/._0.PNG")
    images = list_class_images(tmp_path)
    with pytest.warns(UserWarning, match=r"Ignored 2 entries .* not image files"):
        result = keras_freeze.estimate_class_attention(tmp_path, mc_samples=4, image_size=8, seed=0)
    assert result.counts.tolist() == list(images.counts().values()) == [3, 4]
    assert result.skipped_files == ()


# --------------------------------------------------------------------------
# decode_image
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "high, bits",
    [(255, 8), (256, 10), (1023, 10), (1024, 12), (4095, 12), (16383, 14), (65535, 16)],
)
def test_decode_image_scales_wide_integers_by_their_bit_depth(tmp_path, high, bits):
    values = np.linspace(0, high, 48).astype(np.uint16).reshape(6, 8)
    Image.fromarray(values).save(tmp_path / "x.png")
    got = keras_freeze.decode_image(tmp_path / "x.png", mode="gray")
    assert got.dtype == np.float32 and got.shape == (6, 8)
    np.testing.assert_array_equal(got, (values / (2**bits - 1)).astype(np.float32))


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "RGBA", "CMYK", "L", "1"])
def test_decode_image_8bit_modes_follow_pillow_conversion(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    image.save(path)
    with Image.open(path) as im:
        expect_rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        expect_gray = np.asarray(im.convert("L"), dtype=np.float32) / 255
    np.testing.assert_array_equal(keras_freeze.decode_image(path), expect_rgb)
    np.testing.assert_array_equal(keras_freeze.decode_image(path, mode="gray"), expect_gray)


@pytest.mark.parametrize("orientation, turns", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_decode_image_applies_exif_orientation(tmp_path, orientation, turns):
    stored = np.zeros((32, 48, 3), dtype=np.uint8)
    stored[:16, :24] = (250, 10, 10)  # red top-left quarter of the stored pixels
    stored[16:, 24:] = 200
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation  # EXIF Orientation; 6: turn 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "tagged.jpg", quality=95, exif=exif)
    plain = keras_freeze.decode_image(tmp_path / "plain.jpg")
    # Same compressed pixels, only the tag differs: the view is the stored image turned.
    np.testing.assert_array_equal(
        keras_freeze.decode_image(tmp_path / "tagged.jpg"), np.rot90(plain, turns)
    )
    # A quarter turn swaps height and width, also when JPEG draft-decodes a smaller size.
    small = keras_freeze.decode_image(tmp_path / "tagged.jpg", (8, 4), mode="gray")
    assert small.shape == (8, 4)


def test_decode_image_quarter_turn_draft_keeps_the_target_resolution(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (200, 800, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "x.jpg", exif=exif)
    # Displayed 200 wide, 800 high; a (400, 100) target must not be drafted below 400 rows.
    with Image.open(tmp_path / "x.jpg") as im:
        im.draft(None, (100, 400))  # what an unturned draft request would have asked
        assert im.size[1] < 400  # i.e. turned, it would give fewer than 400 rows
    got = keras_freeze.decode_image(tmp_path / "x.jpg", (400, 100), mode="gray")
    full = keras_freeze.decode_image(tmp_path / "x.jpg", mode="gray")
    assert full.shape == (800, 200)
    resized = np.asarray(
        Image.fromarray(full, mode="F").resize((100, 400), Image.Resampling.BILINEAR)
    )
    assert got.shape == (400, 100)
    assert np.abs(got - resized).mean() < 0.05


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos"])
def test_decode_image_clips_resampling_overshoot(tmp_path, interpolation):
    edge = np.zeros((16, 16), dtype=np.uint8)
    edge[:, 8:] = 255  # a sharp edge: bicubic / Lanczos ring past 0 and 1
    Image.fromarray(edge).save(tmp_path / "edge.png")
    raw = np.asarray(
        Image.fromarray(edge.astype(np.float32) / 255, mode="F").resize(
            (11, 11), getattr(Image.Resampling, interpolation.upper())
        )
    )
    assert raw.min() < 0 and raw.max() > 1  # what the filter alone gives
    got = keras_freeze.decode_image(tmp_path / "edge.png", 11, interpolation=interpolation)
    assert got.min() == 0.0 and got.max() == 1.0
    np.testing.assert_array_equal(got[..., 0], np.clip(raw, 0, 1))


def test_decode_image_lab_tiff_and_unconvertible_modes(tmp_path, monkeypatch):
    bands = [Image.fromarray(np.full((4, 6), v, np.uint8)) for v in (60, 140, 110)]
    lab = Image.merge("LAB", bands)
    lab.save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as im:
        assert im.mode == "LAB"
        rgb = im.convert("RGB")
    np.testing.assert_array_equal(
        keras_freeze.decode_image(tmp_path / "lab.tif"), np.asarray(rgb, np.float32) / 255
    )
    np.testing.assert_array_equal(  # Pillow has no LAB -> L: through RGB
        keras_freeze.decode_image(tmp_path / "lab.tif", mode="gray"),
        np.asarray(rgb.convert("L"), np.float32) / 255,
    )

    def refuse(self, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)
    with pytest.raises(OSError, match=r"lab\.tif.*mode 'LAB'.*not supported"):
        keras_freeze.decode_image(tmp_path / "lab.tif", mode="gray")


def test_decode_image_resizes_in_float_with_pillow(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    got = keras_freeze.decode_image(tmp_path / "x.png", (8, 12), interpolation="bicubic")
    expected = np.stack(
        [
            np.asarray(
                Image.fromarray(rgb[..., c].astype(np.float32) / 255, mode="F").resize(
                    (12, 8), Image.Resampling.BICUBIC
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    assert got.shape == (8, 12, 3)
    expected = np.clip(expected, 0, 1)  # bicubic overshoots; decode_image stays in [0, 1]
    np.testing.assert_array_equal(got, expected)
    gray = keras_freeze.decode_image(tmp_path / "x.png", 5, mode="gray")
    assert gray.shape == (5, 5)


def test_decode_image_refuses_what_it_cannot_map_to_unit_range(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide\.tif.*values in \[0, 70000\]"):
        keras_freeze.decode_image(tmp_path / "wide.tif")
    Image.fromarray(np.array([[-5, 10]], dtype=np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(ValueError, match=r"neg\.tif.*values in \[-5, 10\]"):
        keras_freeze.decode_image(tmp_path / "neg.tif")
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    got = keras_freeze.decode_image(tmp_path / "unit.tif", mode="gray")
    np.testing.assert_array_equal(got, unit)
    with pytest.raises(OSError, match=r"Cannot decode image file .*missing\.png"):
        keras_freeze.decode_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(OSError, match=r"junk\.png.*UnidentifiedImageError"):
        keras_freeze.decode_image(tmp_path / "junk.png")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "RGB"}, "Expected mode to be one of"),
        ({"interpolation": "cubic"}, "Expected interpolation to be one of"),
        ({"image_size": 0}, "Expected image_size"),
        ({"image_size": (4, 4, 3)}, "Expected image_size"),
        ({"image_size": 2.5}, "Expected image_size"),
        ({"path": 7}, "Expected path to be a path"),
    ],
)
def test_decode_image_argument_errors(tmp_path, kwargs, match):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    kwargs = {"path": tmp_path / "x.png", **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_freeze.decode_image(**kwargs)


def test_dicom_without_pydicom_names_the_pip_command(tmp_path, monkeypatch):
    (tmp_path / "x.dcm").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if not installed
    for read in (keras_freeze.decode_image, _images.header_problem):
        with pytest.raises(ImportError, match=r'pip install "keras-freeze\[dicom\]"'):
            read(tmp_path / "x.dcm")
