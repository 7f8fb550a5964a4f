"""Tests of the COVID CXR example's data side: examples/covid_cxr/{data,synthetic}.py.

The example is a plain script directory; pyproject.toml's pytest `pythonpath` puts it on the path.
"""

import collections
import math
from pathlib import Path

import folds as folds_module
import kaggle
import numpy as np
import protocol
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
    assert protocol.CLASS_NAMES == tuple(sorted(protocol.CLASS_NAMES))
    assert protocol.CLASS_NAMES == ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert sum(protocol.PAPER_COUNTS.values()) == 3616 + 6012 + 10192 + 1345
    assert protocol.AUTHOR_LABELS == {
        0: "COVID",
        1: "Normal",
        2: "Viral Pneumonia",
        3: "Lung_Opacity",
    }


# ----------------------------------------------------------------------------------------------
# Synthetic generator
# ----------------------------------------------------------------------------------------------
def test_generator_writes_kaggle_layout(small_tree):
    root, ds = small_tree
    assert ds == root / "COVID-19_Radiography_Dataset"
    assert (ds / synthetic.MARKER_FILENAME).is_file()
    assert "SYNTHETIC" in (ds / "README.txt").read_text()
    counts = synthetic.class_counts(40)
    for c in protocol.CLASS_NAMES:
        files = sorted((ds / c / "images").glob("*.png"))
        assert len(files) == counts[c]
        assert (ds / c / "images" / f"{c}-1.png").is_file()
        with Image.open(files[0]) as im:
            assert im.mode == "L" and im.size == (48, 48)
    assert (ds / "Viral Pneumonia" / "images" / "Viral Pneumonia-1.png").is_file()


@pytest.mark.parametrize("n_total", [4, 40, 101, 600, 21165])
def test_class_counts_follow_paper_ratios(n_total):
    counts = synthetic.class_counts(n_total)
    assert list(counts) == list(protocol.CLASS_NAMES)
    assert sum(counts.values()) == n_total
    ref = np.array([protocol.PAPER_COUNTS[c] for c in protocol.CLASS_NAMES], float)
    exact = ref / ref.sum() * n_total
    got = np.array(list(counts.values()), float)
    assert np.all(got >= 1)
    assert np.all(np.abs(got - exact) <= 1.0 + 1e-9), (got, exact)
    if n_total == 21165:
        assert counts == protocol.PAPER_COUNTS


def test_class_counts_validation():
    with pytest.raises(ValueError, match="n_total"):
        synthetic.class_counts(3)
    with pytest.raises(ValueError, match="unknown"):
        synthetic.class_counts(10, counts={"Cat": 3})
    assert synthetic.class_counts(0, counts={c: 2 for c in protocol.CLASS_NAMES}) == {
        c: 2 for c in protocol.CLASS_NAMES
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
    assert len(kaggle.list_images(ds_b).paths) == 12


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
    for c in protocol.CLASS_NAMES:
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
    assert kaggle.find_dataset_root(root) == ds
    assert kaggle.find_dataset_root(ds) == ds
    assert kaggle.find_dataset_root(str(ds)) == ds
    with pytest.raises(ValueError, match="dataset root"):
        kaggle.find_dataset_root(tmp_path)
    with pytest.raises(FileNotFoundError):
        kaggle.find_dataset_root(tmp_path / "nope")


def test_list_images_layouts_and_skips(tmp_path):
    # flat layout <class>/*.png, plus junk
    for c in protocol.CLASS_NAMES:
        _png(tmp_path / c / f"{c}-2.png")
        _png(tmp_path / c / f"{c}-10.png")
        _png(tmp_path / c / f"{c}-1.png")
    (tmp_path / "COVID" / "notes.txt").write_text("x")
    _png(tmp_path / "Normal" / "NORMAL-2.PNG")  # duplicate up to case
    idx = kaggle.list_images(tmp_path)
    assert len(idx) == 12
    assert idx.names[:3] == ["COVID-1", "COVID-2", "COVID-10"]  # natural order
    assert idx.labels.dtype == np.int64
    for p, lab in zip(idx.paths, idx.labels, strict=True):
        assert Path(p).parent.name == protocol.CLASS_NAMES[lab]
    reasons = [r for _, r in idx.skipped]
    assert any("not an image" in r for r in reasons)
    assert any("duplicate" in r for r in reasons)
    assert idx.missing == []
    assert idx.counts() == {c: 3 for c in protocol.CLASS_NAMES}


def test_list_images_records_empty_class(tmp_path):
    for c in protocol.CLASS_NAMES:
        (tmp_path / c / "images").mkdir(parents=True)
        if c != "COVID":
            _png(tmp_path / c / "images" / f"{c}-1.png")
    idx = kaggle.list_images(tmp_path)
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
    folds = folds_module.read_fold_lists(tmp_path)
    assert len(folds) == 10
    assert [Path(f).name for f in folds.files] == [f"Fold{k}.csv" for k in range(1, 11)]
    idx_of = {c: i for i, c in enumerate(protocol.CLASS_NAMES)}
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
    folds = folds_module.read_fold_lists(tmp_path)
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
        folds_module.read_fold_lists(tmp_path)


def test_read_fold_lists_rejects_gaps_and_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        folds_module.read_fold_lists(tmp_path)
    _write_csv(tmp_path / "Fold1.csv", [("COVID-1", 0)])
    _write_csv(tmp_path / "Fold3.csv", [("COVID-2", 0)])
    with pytest.raises(ValueError, match="without gaps"):
        folds_module.read_fold_lists(tmp_path)


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
        folds_module.read_fold_lists(tmp_path)
    folds = folds_module.read_fold_lists(tmp_path, on_unsafe="skip")
    assert folds[0] == [("COVID-1", 0)]
    assert len(folds.rejected) == 1 and folds.rejected[0][2] == bad


def test_resolve_folds_case_insensitive_missing_and_unassigned(tmp_path):
    for c in protocol.CLASS_NAMES:
        (tmp_path / c / "images").mkdir(parents=True)
    _png(tmp_path / "Normal" / "images" / "NORMAL-356.png")
    _png(tmp_path / "Normal" / "images" / "Normal-357.png")
    _png(tmp_path / "COVID" / "images" / "COVID-1.png")
    _png(tmp_path / "COVID" / "images" / "COVID-2.png")  # in no fold
    _write_csv(tmp_path / "Fold1.csv", [("Normal-356", 1), ("COVID-1", 0)])
    _write_csv(tmp_path / "Fold2.csv", [("normal-357", 1), ("Normal-999", 1)])
    idx = kaggle.list_images(tmp_path)
    fl = folds_module.read_fold_lists(tmp_path)
    with pytest.warns(UserWarning, match="1 fold-list names matched no image"):
        folds = folds_module.resolve_folds(idx, fl)
    assert [idx.names[i] for i in folds[0]] == ["NORMAL-356", "COVID-1"]
    assert [idx.names[i] for i in folds[1]] == ["Normal-357"]
    assert folds.missing == [(1, "Normal-999")]
    assert folds.unassigned == 1
    assert np.array_equal(folds.labels, idx.labels)
    assert all(f.dtype == np.int64 for f in folds)


def test_resolve_folds_no_match_raises(small_tree, tmp_path):
    _, ds = small_tree
    idx = kaggle.list_images(ds)
    with pytest.raises(ValueError, match="none of"):
        folds_module.resolve_folds(idx, [[("Other-1", 0)]])


@pytest.mark.skipif(not PAPER_FOLDS.is_dir(), reason="authors' fold lists not available here")
def test_authors_fold_files():
    folds = folds_module.read_fold_lists(PAPER_FOLDS)
    assert len(folds) == 10
    assert [Path(f).name for f in folds.files][-2:] == ["Fold9.csv", "Fold10.csv"]
    names = [n for f in folds for n, _ in f]
    assert len(names) == 20248 == len({n.lower() for n in names})
    counts = collections.Counter(protocol.CLASS_NAMES[c] for f in folds for _, c in f)
    assert counts == {"COVID": 3616, "Normal": 9275, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}
    assert folds.label_mismatches == [] and folds.rejected == []
    # the label code agrees with the name prefix for every row (independent parse)
    for f in folds:
        for n, c in f:
            assert n.rsplit("-", 1)[0] == protocol.CLASS_NAMES[c]


# ----------------------------------------------------------------------------------------------
# Folds and splits
# ----------------------------------------------------------------------------------------------
def test_stratified_folds_partition_and_balance():
    labels = np.repeat([0, 1, 2, 3], [36, 60, 101, 13])
    folds = folds_module.stratified_folds(labels, n_folds=10, seed=0)
    allidx = np.concatenate(folds)
    assert np.array_equal(np.sort(allidx), np.arange(len(labels)))
    per = np.array([np.bincount(labels[f], minlength=4) for f in folds])
    assert np.all(per.max(0) - per.min(0) <= 1)
    again = folds_module.stratified_folds(labels, n_folds=10, seed=0)
    other = folds_module.stratified_folds(labels, n_folds=10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other, strict=True))
    with pytest.raises(ValueError, match="n_folds"):
        folds_module.stratified_folds(labels, n_folds=1)


def test_split_fold_as_the_notebooks():
    from sklearn.model_selection import train_test_split

    labels = np.repeat([0, 1, 2, 3], [36, 60, 101, 13])
    folds = folds_module.stratified_folds(labels, n_folds=10, seed=0)
    tr, va, te = folds_module.split_fold(folds, 3)
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
    tr2, va2, te2 = folds_module.split_fold(list(folds), 3, labels=labels)
    assert np.array_equal(tr2, tr) and np.array_equal(va2, va)


def test_split_fold_validation():
    folds = folds_module.stratified_folds([0, 1] * 10, n_folds=5)
    for bad in (-1, 5, 1.0):
        with pytest.raises(ValueError, match="test_fold"):
            folds_module.split_fold(folds, bad)
    with pytest.raises(ValueError, match="val_fraction"):
        folds_module.split_fold(folds, 0, val_fraction=1.0)
    with pytest.raises(ValueError, match="labels"):
        folds_module.split_fold([np.arange(4), np.arange(4, 8)], 0)


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
    folds = folds_module.stratified_folds(labels, n_folds=n_folds, seed=seed)
    tr, va, te = folds_module.split_fold(folds, test_fold % n_folds)
    parts = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(parts), np.arange(len(labels)))
    assert len(va) >= 1 and len(te) >= 1


def test_find_class_folders_any_names_or_the_paper_layout(tmp_path, small_tree):
    _, ds = small_tree
    for c in ("zebra", "Ant", "bee", ".hidden"):
        (tmp_path / "mine" / c).mkdir(parents=True)
    root, names = kaggle.find_class_folders(tmp_path / "mine")
    assert root == tmp_path / "mine" and names == ("Ant", "bee", "zebra")
    assert kaggle.find_class_folders(ds)[1] == protocol.CLASS_NAMES
    assert kaggle.find_class_folders(ds.parent) == (ds, protocol.CLASS_NAMES)
    partial = tmp_path / "partial"
    for c in protocol.CLASS_NAMES[:3]:
        (partial / c).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"Missing: \['Viral Pneumonia'\]"):
        kaggle.find_class_folders(partial)
    (tmp_path / "one" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="two or more class sub-folders"):
        kaggle.find_class_folders(tmp_path / "one")
