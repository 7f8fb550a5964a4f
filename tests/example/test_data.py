"""Tests of the COVID CXR example's data side: examples/covid_cxr/{data,synthetic}.py.

The example is a plain script directory; tests/conftest.py puts it on sys.path.
"""

import collections
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import data  # examples/covid_cxr, on sys.path through conftest.py
import keras
import numpy as np
import pytest
import synthetic
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "covid_cxr"

PAPER_FOLDS = REPO.parent / "shared" / "reference" / "paper_folds"


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ds = synthetic.generate_synthetic_cxr(root, n_total=40, image_size=48, seed=3, progress=False)
    return root, ds


def _write_csv(path, rows, header="FILE NAME,label"):
    path.write_text(header + "\n" + "".join(f"{n},{c}\n" for n, c in rows))


def _png(path, size=(20, 16), mode="L", value=None, rng=None):
    rng = rng or np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arr = (
        rng.integers(0, 256, shape, dtype=np.uint8)
        if value is None
        else np.full(shape, value, np.uint8)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return arr


# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------
def test_constants_match_kaggle_and_authors():
    assert data.CLASS_NAMES == tuple(sorted(data.CLASS_NAMES))
    assert data.CLASS_NAMES == ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert sum(data.PAPER_COUNTS.values()) == 3616 + 6012 + 10192 + 1345
    assert data.AUTHOR_LABELS == {0: "COVID", 1: "Normal", 2: "Viral Pneumonia", 3: "Lung_Opacity"}


# ----------------------------------------------------------------------------------------------
# Synthetic generator
# ----------------------------------------------------------------------------------------------
def test_generator_writes_kaggle_layout(small_tree):
    root, ds = small_tree
    assert ds == root / "COVID-19_Radiography_Dataset"
    assert (ds / synthetic.MARKER_FILENAME).is_file()
    assert "SYNTHETIC" in (ds / "README.txt").read_text()
    counts = synthetic.class_counts(40)
    for c in data.CLASS_NAMES:
        files = sorted((ds / c / "images").glob("*.png"))
        assert len(files) == counts[c]
        assert (ds / c / "images" / f"{c}-1.png").is_file()
        with Image.open(files[0]) as im:
            assert im.mode == "L" and im.size == (48, 48)
    assert (ds / "Viral Pneumonia" / "images" / "Viral Pneumonia-1.png").is_file()


@pytest.mark.parametrize("n_total", [4, 40, 101, 600, 21165])
def test_class_counts_follow_paper_ratios(n_total):
    counts = synthetic.class_counts(n_total)
    assert list(counts) == list(data.CLASS_NAMES)
    assert sum(counts.values()) == n_total
    ref = np.array([data.PAPER_COUNTS[c] for c in data.CLASS_NAMES], float)
    exact = ref / ref.sum() * n_total
    got = np.array(list(counts.values()), float)
    assert np.all(got >= 1)
    assert np.all(np.abs(got - exact) <= 1.0 + 1e-9), (got, exact)
    if n_total == 21165:
        assert counts == data.PAPER_COUNTS


def test_class_counts_validation():
    with pytest.raises(ValueError, match="n_total"):
        synthetic.class_counts(3)
    with pytest.raises(ValueError, match="unknown"):
        synthetic.class_counts(10, counts={"Cat": 3})
    assert synthetic.class_counts(0, counts={c: 2 for c in data.CLASS_NAMES}) == {
        c: 2 for c in data.CLASS_NAMES
    }


def test_generator_is_deterministic_and_idempotent(tmp_path, small_tree):
    _, ds_a = small_tree
    ds_b = synthetic.generate_synthetic_cxr(
        tmp_path / "b", n_total=40, image_size=48, seed=3, progress=False
    )
    ds_c = synthetic.generate_synthetic_cxr(
        tmp_path / "c", n_total=40, image_size=48, seed=4, progress=False
    )
    rel = Path("Normal") / "images" / "Normal-5.png"
    a = np.asarray(Image.open(ds_a / rel))
    assert np.array_equal(a, np.asarray(Image.open(ds_b / rel)))
    assert not np.array_equal(a, np.asarray(Image.open(ds_c / rel)))
    # class patterns differ from one another at the same (seed, number)
    assert not np.array_equal(a, np.asarray(Image.open(ds_a / "COVID/images/COVID-5.png")))
    # second call reuses the tree: nothing rewritten
    mtime = (ds_b / rel).stat().st_mtime_ns
    again = synthetic.generate_synthetic_cxr(
        tmp_path / "b", n_total=40, image_size=48, seed=3, progress=False
    )
    assert again == ds_b and (ds_b / rel).stat().st_mtime_ns == mtime
    # other parameters in the same root: the stale synthetic tree is replaced
    synthetic.generate_synthetic_cxr(
        tmp_path / "b", n_total=12, image_size=48, seed=3, progress=False
    )
    assert len(data.list_images(ds_b).paths) == 12


@pytest.mark.slow  # two spawned processes, each importing Keras: ~10 s
def test_generator_workers_write_the_same_tree(tmp_path, small_tree):
    _, ds_a = small_tree  # one process
    ds_b = synthetic.generate_synthetic_cxr(
        tmp_path / "b", n_total=40, image_size=48, seed=3, progress=False, workers=2
    )
    files = sorted(p.relative_to(ds_a) for p in ds_a.rglob("*.png"))
    assert len(files) == 40
    assert files == sorted(p.relative_to(ds_b) for p in ds_b.rglob("*.png"))
    for rel in files:
        assert (ds_a / rel).read_bytes() == (ds_b / rel).read_bytes(), rel


@pytest.mark.parametrize("workers", [0, 1.5, True, "2"])
def test_generator_refuses_bad_workers(tmp_path, workers):
    with pytest.raises(ValueError, match=f"workers={workers!r}"):
        synthetic.generate_synthetic_cxr(tmp_path, n_total=8, image_size=32, workers=workers)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [(["--workers", "0"], "workers=0"), (["--image-size", "8"], "image_size >= 32")],
)
def test_generator_command_refuses_bad_options_in_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        synthetic.main(["--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_generator_refuses_to_overwrite_user_data(tmp_path):
    for c in data.CLASS_NAMES:
        _png(tmp_path / "COVID-19_Radiography_Dataset" / c / "images" / f"{c}-1.png")
    with pytest.raises(FileExistsError, match="refusing"):
        synthetic.generate_synthetic_cxr(tmp_path, n_total=8, image_size=32, progress=False)
    covid = tmp_path / "COVID-19_Radiography_Dataset" / "COVID" / "images"
    assert len(list(covid.iterdir())) == 1


def test_default_cache_dir_depends_on_parameters(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_FREEZE_CACHE", str(tmp_path))
    a = synthetic.default_cache_dir(100, 64, 0)
    assert a.parent == tmp_path and a.name.startswith("synthetic_cxr_")
    assert a == synthetic.default_cache_dir(100, 64, 0)
    assert a != synthetic.default_cache_dir(100, 64, 1) != synthetic.default_cache_dir(101, 64, 0)


def test_draw_cxr_has_chest_structure():
    # lungs (upper-middle of each hemithorax) darker than mediastinum and the abdomen below
    means = collections.defaultdict(list)
    for i in range(4):
        img = synthetic.draw_cxr("Normal", np.random.default_rng([0, 2, i]), 96).astype(float)
        means["lung"].append(img[30:55, 15:35].mean())
        means["spine"].append(img[30:55, 45:51].mean())
        means["abdomen"].append(img[88:95, 20:76].mean())
        means["air"].append(img[:, :2].mean())
    assert np.mean(means["lung"]) < np.mean(means["spine"]) - 30
    assert np.mean(means["lung"]) < np.mean(means["abdomen"]) - 30
    assert np.mean(means["air"]) < np.mean(means["lung"])


def test_montages(tmp_path, small_tree):
    _, ds = small_tree
    paths = synthetic.save_class_montages(ds, tmp_path, per_class=2, tile=32)
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    out = synthetic.save_overview_montage(ds, tmp_path / "o.png", per_class=2, tile=32)
    assert Image.open(out).size[1] == 20 + 4 * 32


# ----------------------------------------------------------------------------------------------
# Finding and listing
# ----------------------------------------------------------------------------------------------
def test_find_dataset_root_accepts_root_and_parent(small_tree, tmp_path):
    root, ds = small_tree
    assert data.find_dataset_root(root) == ds
    assert data.find_dataset_root(ds) == ds
    assert data.find_dataset_root(str(ds)) == ds
    with pytest.raises(ValueError, match="dataset root"):
        data.find_dataset_root(tmp_path)
    with pytest.raises(FileNotFoundError):
        data.find_dataset_root(tmp_path / "nope")


def test_list_images_layouts_and_skips(tmp_path):
    # flat layout <class>/*.png, plus junk
    for c in data.CLASS_NAMES:
        _png(tmp_path / c / f"{c}-2.png")
        _png(tmp_path / c / f"{c}-10.png")
        _png(tmp_path / c / f"{c}-1.png")
    (tmp_path / "COVID" / "notes.txt").write_text("x")
    _png(tmp_path / "Normal" / "NORMAL-2.PNG")  # duplicate up to case
    idx = data.list_images(tmp_path)
    assert len(idx) == 12
    assert idx.names[:3] == ["COVID-1", "COVID-2", "COVID-10"]  # natural order
    assert idx.labels.dtype == np.int64
    for p, lab in zip(idx.paths, idx.labels, strict=True):
        assert Path(p).parent.name == data.CLASS_NAMES[lab]
    reasons = [r for _, r in idx.skipped]
    assert any("not an image" in r for r in reasons)
    assert any("duplicate" in r for r in reasons)
    assert idx.missing == []
    assert idx.counts() == {c: 3 for c in data.CLASS_NAMES}


def test_list_images_records_empty_class(tmp_path):
    for c in data.CLASS_NAMES:
        (tmp_path / c / "images").mkdir(parents=True)
        if c != "COVID":
            _png(tmp_path / c / "images" / f"{c}-1.png")
    idx = data.list_images(tmp_path)
    assert idx.missing == ["COVID"] and len(idx) == 3


# ----------------------------------------------------------------------------------------------
# Fold lists
# ----------------------------------------------------------------------------------------------
def test_read_fold_lists_order_and_label_mapping(tmp_path):
    rows = {
        1: [("Normal-356", 1), ("Lung_Opacity-1593", 3)],
        2: [("Viral Pneumonia-12", 2)],
        9: [("COVID-1", 0)],
        10: [("COVID-2", 0), ("Normal-1.png", 1)],
    }
    for k in range(1, 11):
        _write_csv(tmp_path / f"Fold{k}.csv", rows.get(k, [(f"COVID-{100 + k}", 0)]))
    folds = data.read_fold_lists(tmp_path)
    assert len(folds) == 10
    assert [Path(f).name for f in folds.files] == [f"Fold{k}.csv" for k in range(1, 11)]
    idx_of = {c: i for i, c in enumerate(data.CLASS_NAMES)}
    assert folds[0] == [
        ("Normal-356", idx_of["Normal"]),
        ("Lung_Opacity-1593", idx_of["Lung_Opacity"]),
    ]
    assert folds[1] == [("Viral Pneumonia-12", idx_of["Viral Pneumonia"])]
    assert folds[8] == [("COVID-1", 0)]
    assert folds[9] == [("COVID-2", 0), ("Normal-1", idx_of["Normal"])]  # Fold10 last
    assert folds.label_mismatches == [] and folds.rejected == []


def test_read_fold_lists_records_label_mismatch(tmp_path):
    _write_csv(tmp_path / "Fold1.csv", [("Normal-3", 0), ("COVID-4", 0)])
    folds = data.read_fold_lists(tmp_path)
    assert len(folds.label_mismatches) == 1
    _, line, name, code, from_name = folds.label_mismatches[0]
    assert (line, name, code, from_name) == (2, "Normal-3", 0, "Normal")


@pytest.mark.parametrize(
    "content, match",
    [
        ("name,label\nCOVID-1,0\n", "header"),
        ("FILE NAME,label\nCOVID-1,7\n", "label code"),
        ("FILE NAME,label\nCOVID-1,x\n", "label code"),
        ("FILE NAME,label\nCOVID-1,0\ncovid-1,0\n", "once"),
    ],
)
def test_read_fold_lists_rejects_malformed(tmp_path, content, match):
    (tmp_path / "Fold1.csv").write_text(content)
    with pytest.raises(ValueError, match=match):
        data.read_fold_lists(tmp_path)


def test_read_fold_lists_rejects_gaps_and_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_fold_lists(tmp_path)
    _write_csv(tmp_path / "Fold1.csv", [("COVID-1", 0)])
    _write_csv(tmp_path / "Fold3.csv", [("COVID-2", 0)])
    with pytest.raises(ValueError, match="without gaps"):
        data.read_fold_lists(tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        "../COVID-1",
        "..",
        "/etc/passwd",
        "COVID/../../x",
        "a\\b",
        "C:evil",
        "sub/COVID-1",
        "..\\..\\win",
    ],
)
def test_fold_names_escaping_data_dir_are_rejected(tmp_path, bad):
    _write_csv(tmp_path / "Fold1.csv", [("COVID-1", 0), (bad, 0)])
    with pytest.raises(ValueError, match="escape the data directory"):
        data.read_fold_lists(tmp_path)
    folds = data.read_fold_lists(tmp_path, on_unsafe="skip")
    assert folds[0] == [("COVID-1", 0)]
    assert len(folds.rejected) == 1 and folds.rejected[0][2] == bad


def test_resolve_folds_case_insensitive_missing_and_unassigned(tmp_path):
    for c in data.CLASS_NAMES:
        (tmp_path / c / "images").mkdir(parents=True)
    _png(tmp_path / "Normal" / "images" / "NORMAL-356.png")
    _png(tmp_path / "Normal" / "images" / "Normal-357.png")
    _png(tmp_path / "COVID" / "images" / "COVID-1.png")
    _png(tmp_path / "COVID" / "images" / "COVID-2.png")  # in no fold
    _write_csv(tmp_path / "Fold1.csv", [("Normal-356", 1), ("COVID-1", 0)])
    _write_csv(tmp_path / "Fold2.csv", [("normal-357", 1), ("Normal-999", 1)])
    idx = data.list_images(tmp_path)
    fl = data.read_fold_lists(tmp_path)
    with pytest.warns(UserWarning, match="1 fold-list names matched no image"):
        folds = data.resolve_folds(idx, fl)
    assert [idx.names[i] for i in folds[0]] == ["NORMAL-356", "COVID-1"]
    assert [idx.names[i] for i in folds[1]] == ["Normal-357"]
    assert folds.missing == [(1, "Normal-999")]
    assert folds.unassigned == 1
    assert np.array_equal(folds.labels, idx.labels)
    assert all(f.dtype == np.int64 for f in folds)


def test_resolve_folds_no_match_raises(small_tree, tmp_path):
    _, ds = small_tree
    idx = data.list_images(ds)
    with pytest.raises(ValueError, match="none of"):
        data.resolve_folds(idx, [[("Other-1", 0)]])


@pytest.mark.skipif(not PAPER_FOLDS.is_dir(), reason="authors' fold lists not available here")
def test_authors_fold_files():
    folds = data.read_fold_lists(PAPER_FOLDS)
    assert len(folds) == 10
    assert [Path(f).name for f in folds.files][-2:] == ["Fold9.csv", "Fold10.csv"]
    names = [n for f in folds for n, _ in f]
    assert len(names) == 20248 == len({n.lower() for n in names})
    counts = collections.Counter(data.CLASS_NAMES[c] for f in folds for _, c in f)
    assert counts == {"COVID": 3616, "Normal": 9275, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}
    assert folds.label_mismatches == [] and folds.rejected == []
    # the label code agrees with the name prefix for every row (independent parse)
    for f in folds:
        for n, c in f:
            assert n.rsplit("-", 1)[0] == data.CLASS_NAMES[c]


# ----------------------------------------------------------------------------------------------
# Folds and splits
# ----------------------------------------------------------------------------------------------
def test_stratified_folds_partition_and_balance():
    labels = np.repeat([0, 1, 2, 3], [36, 60, 101, 13])
    folds = data.stratified_folds(labels, n_folds=10, seed=0)
    allidx = np.concatenate(folds)
    assert np.array_equal(np.sort(allidx), np.arange(len(labels)))
    per = np.array([np.bincount(labels[f], minlength=4) for f in folds])
    assert np.all(per.max(0) - per.min(0) <= 1)
    again = data.stratified_folds(labels, n_folds=10, seed=0)
    other = data.stratified_folds(labels, n_folds=10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other, strict=True))
    with pytest.raises(ValueError, match="n_folds"):
        data.stratified_folds(labels, n_folds=1)


def test_split_fold_as_the_notebooks():
    from sklearn.model_selection import train_test_split

    labels = np.repeat([0, 1, 2, 3], [36, 60, 101, 13])
    folds = data.stratified_folds(labels, n_folds=10, seed=0)
    tr, va, te = data.split_fold(folds, 3)
    assert np.array_equal(te, folds[3])
    rest = np.concatenate([f for k, f in enumerate(folds) if k != 3])
    assert len(va) == math.ceil(0.1 * len(rest)) and len(tr) == len(rest) - len(va)
    assert set(tr).isdisjoint(va) and set(tr).isdisjoint(te) and set(va).isdisjoint(te)
    assert set(tr) | set(va) | set(te) == set(range(len(labels)))
    # stratified: each class's validation share within one image of 10 %
    rc = np.bincount(labels[rest], minlength=4)
    vc = np.bincount(labels[va], minlength=4)
    assert np.all(np.abs(vc - 0.1 * rc) <= 1.0)
    # identical to the notebooks' call
    otr, ova = train_test_split(rest, test_size=0.1, stratify=labels[rest], random_state=42)
    assert np.array_equal(tr, otr) and np.array_equal(va, ova)
    # labels may be given explicitly for plain lists of folds
    tr2, va2, te2 = data.split_fold(list(folds), 3, labels=labels)
    assert np.array_equal(tr2, tr) and np.array_equal(va2, va)


def test_split_fold_validation():
    folds = data.stratified_folds([0, 1] * 10, n_folds=5)
    for bad in (-1, 5, 1.0):
        with pytest.raises(ValueError, match="test_fold"):
            data.split_fold(folds, bad)
    with pytest.raises(ValueError, match="val_fraction"):
        data.split_fold(folds, 0, val_fraction=1.0)
    with pytest.raises(ValueError, match="labels"):
        data.split_fold([np.arange(4), np.arange(4, 8)], 0)


@pytest.mark.filterwarnings("ignore:Cannot stratify")
@pytest.mark.filterwarnings("ignore:The least populated class")
@given(
    counts=st.lists(st.integers(3, 12), min_size=2, max_size=4),
    n_folds=st.integers(2, 4),
    test_fold=st.integers(0, 3),
    seed=st.integers(0, 5),
)
def test_split_fold_property_disjoint_cover(counts, n_folds, test_fold, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    folds = data.stratified_folds(labels, n_folds=n_folds, seed=seed)
    tr, va, te = data.split_fold(folds, test_fold % n_folds)
    parts = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(parts), np.arange(len(labels)))
    assert len(va) >= 1 and len(te) >= 1


# ----------------------------------------------------------------------------------------------
# ImageSequence
# ----------------------------------------------------------------------------------------------
def _oracle_decode(path, size):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)


def test_image_sequence_shapes_onehot_and_rescale(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    seq = data.ImageSequence(idx.paths, idx.labels, image_size=24, batch_size=16)
    assert len(seq) == math.ceil(len(idx) / 16)
    x, y = seq[0]
    assert x.shape == (16, 24, 24, 3) and x.dtype == np.float32
    assert y.shape == (16, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[idx.labels[:16]])
    oracle = np.stack([_oracle_decode(p, 24) for p in idx.paths[:16]]) / 255.0
    np.testing.assert_allclose(x, oracle, rtol=0, atol=1e-6)
    xl, yl = seq[len(seq) - 1]
    assert xl.shape[0] == len(idx) - 16 * (len(seq) - 1)
    with pytest.raises(IndexError):
        seq[len(seq)]


def test_image_sequence_rgb_files_and_rectangular_size(tmp_path):
    paths = [tmp_path / f"rgb{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        _png(p, size=(40, 30), mode="RGB", rng=np.random.default_rng(i))
    seq = data.ImageSequence(
        paths, [0, 1, 2], num_classes=3, image_size=(10, 14), batch_size=3, preprocess=lambda x: x
    )
    x, _ = seq[0]
    assert x.shape == (3, 10, 14, 3)
    with Image.open(paths[1]) as im:
        ref = np.asarray(im.convert("RGB").resize((14, 10), Image.BILINEAR), np.float32)
    np.testing.assert_array_equal(x[1], ref)


def test_image_sequence_custom_preprocess_gets_0_255(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    seen = {}

    def pre(x):
        seen["max"], seen["dtype"] = float(x.max()), x.dtype
        return x - 127.5

    x, _ = data.ImageSequence(
        idx.paths[:4], idx.labels[:4], image_size=16, batch_size=4, preprocess=pre
    )[0]
    assert seen["dtype"] == np.float32 and 128.0 < seen["max"] <= 255.0
    assert x.min() < 0


def test_image_sequence_shuffle_is_deterministic(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    kw = dict(image_size=8, batch_size=8, shuffle=True, seed=11)
    a = data.ImageSequence(idx.paths, idx.labels, **kw)
    b = data.ImageSequence(idx.paths, idx.labels, **kw)
    assert np.array_equal(a.order, b.order)
    assert np.array_equal(np.sort(a.order), np.arange(len(idx)))
    assert not np.array_equal(a.order, np.arange(len(idx)))
    np.testing.assert_array_equal(a[1][1], b[1][1])
    first = a.order.copy()
    a.on_epoch_end()
    b.on_epoch_end()
    assert not np.array_equal(first, a.order) and np.array_equal(a.order, b.order)
    np.testing.assert_array_equal(a[0][1], np.eye(4, dtype=np.float32)[idx.labels[a.order[:8]]])
    plain = data.ImageSequence(idx.paths, idx.labels, image_size=8)
    plain.on_epoch_end()
    assert np.array_equal(plain.order, np.arange(len(idx)))


def test_image_sequence_cache_gives_same_batches(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    plain = data.ImageSequence(idx.paths, idx.labels, image_size=12, batch_size=8)
    cached = data.ImageSequence(idx.paths, idx.labels, image_size=12, batch_size=8, cache=True)
    for i in range(len(plain)):
        np.testing.assert_array_equal(plain[i][0], cached[i][0])
    assert len(cached._cache) == len(idx)
    np.testing.assert_array_equal(plain[2][0], cached[2][0])  # served from the cache


def test_corrupt_and_missing_images_are_dropped_and_recorded(tmp_path):
    good = [tmp_path / f"ok{i}.png" for i in range(3)]
    for p in good:
        _png(p)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    truncated = tmp_path / "trunc.png"
    _png(truncated, size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing = tmp_path / "gone.png"
    paths = [good[0], garbage, good[1], truncated, missing, good[2]]
    labels = [0, 1, 2, 3, 1, 2]

    good_idx, bad = data.scan(paths, full=True)
    assert list(good_idx) == [0, 2, 5]
    assert {Path(p).name for p, _ in bad} == {"garbage.png", "trunc.png", "gone.png"}
    good_fast, _ = data.scan(paths)
    assert set(good_fast) >= {0, 2, 5} and 1 not in good_fast and 4 not in good_fast

    seq = data.ImageSequence(paths, labels, image_size=8, batch_size=3)
    x0, y0 = seq[0]
    assert x0.shape[0] == 2 and list(y0.argmax(1)) == [0, 2]
    x1, y1 = seq[1]
    assert x1.shape[0] == 1 and list(y1.argmax(1)) == [2]
    assert set(map(lambda p: Path(p).name, seq.failed)) == {"garbage.png", "trunc.png", "gone.png"}
    assert list(seq.kept_indices()) == [0, 2, 5]
    # a batch whose images all fail is filled from readable images, never empty
    allbad = data.ImageSequence(
        [garbage, missing, good[0], good[1]], [1, 1, 0, 2], image_size=8, batch_size=2
    )
    xb, yb = allbad[0]
    assert xb.shape[0] == 2 and list(yb.argmax(1)) == [0, 2]


def test_image_sequence_look_ahead_serves_the_batches_of_its_epoch(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    kw = dict(image_size=8, batch_size=4, shuffle=True, seed=5)
    plain = data.ImageSequence(idx.paths, idx.labels, workers=1, **kw)
    ahead = data.ImageSequence(idx.paths, idx.labels, workers=4, **kw)
    for epoch in range(3):
        # Batch 0 starts the look-ahead (1, 2, 3); the epoch ends before all are read: what was
        # made ahead for the old order must never be served in the new one.
        for i in [0, 1] if epoch == 0 else range(len(plain)):
            for got, want in zip(ahead[i], plain[i], strict=True):
                np.testing.assert_array_equal(got, want)
        assert ahead._ahead or epoch > 0
        plain.on_epoch_end()
        ahead.on_epoch_end()
        assert ahead._ahead == {}
    with pytest.raises(ValueError, match="workers=0"):
        data.ImageSequence(idx.paths, idx.labels, workers=0)


class _BatchRecorder(keras.layers.Layer):
    """Records the labels-carrying inputs of every eager training step (see below)."""

    def __init__(self, seen, **kwargs):
        super().__init__(**kwargs)
        self.record = seen.append  # a list attribute would be copied into a tracked list

    def call(self, x):
        try:  # eager steps only: the build's symbolic tensors have no values
            values = keras.ops.convert_to_numpy(x)
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            return x
        self.record(np.round(values.sum(axis=(1, 2, 3)), 3))
        return x


@pytest.mark.parametrize("workers", [2, 3])
def test_fit_trains_on_the_same_batches_whatever_the_workers(small_tree, workers):
    """Keras' own PyDataset workers carry batches read before an epoch ended (the build peek on
    JAX and PyTorch) into the next epoch; the sequence's own look-ahead does not."""
    _, ds = small_tree
    idx = data.list_images(ds)

    def batches(w):
        seq = data.ImageSequence(
            idx.paths, idx.labels, image_size=8, batch_size=8, shuffle=True, seed=2, workers=w
        )
        seen = []
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                _BatchRecorder(seen),
                keras.layers.Flatten(),
                keras.layers.Dense(4, activation="softmax"),
            ]
        )
        model.compile("sgd", "categorical_crossentropy", run_eagerly=True)
        model.fit(seq, epochs=2, verbose=0, shuffle=False)
        return seen

    one, many = batches(1), batches(workers)
    assert len(one) == 2 * 5  # 40 images, batch 8, 2 epochs
    assert len(many) == len(one)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    # Each epoch visits every image once.
    for epoch in (one[:5], one[5:]):
        assert np.concatenate(epoch).shape == (40,)


def test_image_sequence_validation(small_tree):
    _, ds = small_tree
    idx = data.list_images(ds)
    with pytest.raises(ValueError, match="one label per path"):
        data.ImageSequence(idx.paths, idx.labels[:-1])
    with pytest.raises(ValueError, match="labels in"):
        data.ImageSequence(idx.paths, idx.labels + 3)
    with pytest.raises(ValueError, match="image_size"):
        data.ImageSequence(idx.paths, idx.labels, image_size=(3,))
    with pytest.raises(ValueError, match="batch_size"):
        data.ImageSequence(idx.paths, idx.labels, batch_size=0)
    with pytest.raises(ValueError, match="interpolation"):
        data.ImageSequence(idx.paths, idx.labels, interpolation="cubic-ish")


def test_image_sequence_trains_a_model(small_tree):
    """model.fit / evaluate on the current backend, with prefetching worker threads."""
    _, ds = small_tree
    idx = data.list_images(ds)
    seq = data.ImageSequence(
        idx.paths[:16],
        idx.labels[:16],
        image_size=16,
        batch_size=8,
        shuffle=True,
        seed=0,
        workers=2,
        cache=True,
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile("adam", "categorical_crossentropy")
    hist = model.fit(seq, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.all(np.isfinite(hist.history["loss"]))
    assert seq.epoch >= 2
    pred = model.predict(
        data.ImageSequence(idx.paths[:5], idx.labels[:5], image_size=16, batch_size=4), verbose=0
    )
    assert pred.shape == (5, 4)


@pytest.mark.slow  # a second interpreter importing keras: ~10 s
def test_data_pipeline_does_not_need_tensorflow():
    """Generate, list, load and fit with `import tensorflow` made impossible (GPU machine)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        backend = "jax"
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np, keras, data, synthetic, tempfile\n"
        "ds = synthetic.generate_synthetic_cxr(tempfile.mkdtemp(), n_total=8, image_size=32,"
        " progress=False)\n"
        "idx = data.list_images(ds)\n"
        "seq = data.ImageSequence(idx.paths, idx.labels, image_size=8, batch_size=4,"
        " shuffle=True, seed=0, workers=2)\n"
        "m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),"
        " keras.layers.Dense(4, activation='softmax')])\n"
        "m.compile('sgd', 'categorical_crossentropy')\n"
        "m.fit(seq, epochs=1, verbose=0)\n"
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE), env.get("PYTHONPATH")]))
    with warnings.catch_warnings():
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA", "LA", "1"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_decode_image_of_8_bit_files_equals_pillow_convert_and_resize(
    tmp_path, mode, interpolation
):
    # Oracle: what the example did before sharing the library's decoder (Pillow only).
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode != "P" else rgb.quantize(64)
    image.save(tmp_path / "x.png")
    got = data.decode_image(tmp_path / "x.png", (20, 24), interpolation)
    with Image.open(tmp_path / "x.png") as im:
        ref = im.convert("L" if im.mode in ("L", "1", "LA") else "RGB")
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[interpolation]
    want = np.asarray(ref.resize((24, 20), resample))
    if want.ndim == 3 and got.ndim == 2:  # a colour file that happens to be gray
        want = want[..., 0]
    np.testing.assert_array_equal(got, want)


def test_find_class_folders_any_names_or_the_paper_layout(tmp_path, small_tree):
    _, ds = small_tree
    for c in ("zebra", "Ant", "bee", ".hidden"):
        (tmp_path / "mine" / c).mkdir(parents=True)
    root, names = data.find_class_folders(tmp_path / "mine")
    assert root == tmp_path / "mine" and names == ("Ant", "bee", "zebra")
    assert data.find_class_folders(ds)[1] == data.CLASS_NAMES
    assert data.find_class_folders(ds.parent) == (ds, data.CLASS_NAMES)
    partial = tmp_path / "partial"
    for c in data.CLASS_NAMES[:3]:
        (partial / c).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"Missing: \['Viral Pneumonia'\]"):
        data.find_class_folders(partial)
    (tmp_path / "one" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="two or more class sub-folders"):
        data.find_class_folders(tmp_path / "one")
