"""Tests for eqs. (2)-(3) (`_attention`) and the Monte-Carlo estimator (`_estimator`)."""

import ast
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import keras_freeze
from keras_freeze import ClassAttention
from keras_freeze import _estimator
from keras_freeze import _images
from keras_freeze import _similarity
from keras_freeze import attention_weights
from keras_freeze import estimate_class_attention

N, Q, BETA, GAMMA = 0.001, 0.25, 0.05, 0.1


def eq3(a1, n=N, q=Q):
    """Paper's eq. (3) in plain Python floats (the oracle)."""
    return n / (1.0 - math.pow(a1, q))


def noise_data(seed, counts, side=8):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    y = rng.permutation(y)
    x = rng.random((len(y), side, side)).astype(np.float32)
    return x, y


# --------------------------------------------------------------------------
# Eq. (3)
# --------------------------------------------------------------------------


def test_attention_weights_matches_formula():
    a1 = [0.0, 0.1, 0.4295, 0.5, 0.9, 0.999]
    got = attention_weights(a1)
    assert got.dtype == np.float64
    assert got.tolist() == [eq3(v) for v in a1]  # exact
    got = attention_weights(a1, n=0.5, q=2.0)
    assert got.tolist() == [eq3(v, 0.5, 2.0) for v in a1]
    assert attention_weights(np.array([[0.2, 0.3]])).shape == (1, 2)
    assert attention_weights([0.0, 0.3])[0] == N


def test_attention_weights_inverts_paper_alpha():
    # alpha1 backed out of the authors' published weights by inverting eq. (3).
    paper = np.array(keras_freeze.PAPER_ALPHA, dtype=np.float64)
    a1 = (1.0 - N / paper) ** (1.0 / Q)
    np.testing.assert_allclose(attention_weights(a1), paper, rtol=1e-12)


@given(st.lists(st.floats(0.0, 0.999999, allow_nan=False), min_size=1, max_size=6))
def test_attention_weights_property(a1):
    got = attention_weights(a1)
    assert got.tolist() == [eq3(v) for v in a1]
    order = np.argsort(a1, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)  # increasing in alpha1


@pytest.mark.parametrize("bad", [1.0, 1.2, -0.1, float("nan"), float("inf")])
def test_attention_weights_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=r"class index 2 has alpha1=") as e:
        attention_weights([0.1, 0.2, bad])
    assert repr(bad) in str(e.value) or "nan" in str(e.value)


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": -1.0}, {"q": 0.0}, {"q": float("nan")}])
def test_attention_weights_rejects_bad_constants(kw):
    with pytest.raises(ValueError, match="finite number > 0"):
        attention_weights([0.1, 0.2], **kw)


# --------------------------------------------------------------------------
# Similarity definition
# --------------------------------------------------------------------------


def test_pearson_pairs_match_corrcoef():
    rng = np.random.default_rng(3)
    a = rng.random((9, 6, 6)).astype(np.float32)
    b = (a[::-1] * 0.5 + rng.random((9, 6, 6)) * 0.5).astype(np.float32)
    b[0] = -a[0]  # negative correlation -> clipped to 0
    pa, pb = _similarity.PearsonPool(a), _similarity.PearsonPool(b)
    ia = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 0])
    ib = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 5])
    got = _similarity.pearson_pairs(pa, ia, pb, ib)
    want = [
        np.clip(np.corrcoef(a[i].ravel(), b[j].ravel())[0, 1], 0, 1)
        for i, j in zip(ia, ib, strict=True)
    ]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] == 0.0


def test_constant_image_rule():
    rng = np.random.default_rng(0)
    const_same = np.full((4, 8, 8), 5.0, dtype=np.float32)  # class 0: equal constants
    const_diff = np.stack([np.full((8, 8), v, np.float32) for v in (1.0, 9.0, 1.0, 9.0)])
    varied = rng.random((4, 8, 8)).astype(np.float32)
    x = np.concatenate([const_same, const_diff, varied])
    y = np.repeat([0, 1, 2], 4)
    res = estimate_class_attention((x, y), mc_samples=200, image_size=8, seed=0)
    assert np.all(np.isfinite(res.pair_similarity))
    # Two equal constant images: 1; constant vs non-constant: 0.
    assert res.pair_similarity[0, 0] == 1.0 and res.sigma_intra[0] == 0.0
    assert res.pair_similarity[0, 2] == 0.0 and res.pair_similarity[1, 2] == 0.0
    # Two constant images that differ: 0. Class 1 holds levels 1, 9, 1, 9, so its
    # pairs of distinct images are equal (1) or different (0): mean strictly inside.
    assert 0.0 < res.pair_similarity[1, 1] < 1.0
    assert np.all(res.sigma_intra >= 0) and np.all(res.sigma_intra <= 1)
    assert res.pair_similarity[0, 1] == 0.0  # level 5 vs levels {1, 9}
    # Class 0 is at 0 from both others: the tie goes to the smallest name.
    assert res.nearest[0] == 1
    renamed = estimate_class_attention(
        (x, y), mc_samples=200, image_size=8, seed=0, class_names=["m", "z", "b"]
    )
    assert renamed.nearest_names[0] == "b"


def test_eq2_eq3_exact_hand_case():
    # T1, T2 zero-mean, orthogonal, equal norm => corr(T1, T1 + c*T2) = 1/sqrt(1 + c^2).
    t1 = np.tile([1.0, -1.0], 8).reshape(4, 4)
    t2 = np.repeat([1.0, -1.0], 8).reshape(4, 4)
    assert abs((t1 * t2).sum()) < 1e-12 and t1.sum() == 0 and t2.sum() == 0
    c = 0.75
    x = np.stack([t1] * 4 + [t1 + c * t2] * 2) + 10.0
    y = np.array([0, 0, 0, 0, 1, 1])
    res = estimate_class_attention((x, y), mc_samples=50, image_size=4, seed=0)
    r = 1.0 / math.sqrt(1.0 + c * c)
    np.testing.assert_allclose(res.r_inter, [r, r], atol=1e-6)
    np.testing.assert_allclose(res.sigma_intra, [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(res.r_inter_se, 0.0, atol=1e-6)
    assert res.class_im.tolist() == [0.0, 0.5]
    a1 = [r + BETA * 0.0, r + BETA * 0.5]
    np.testing.assert_allclose(res.alpha1, a1, atol=1e-6)
    np.testing.assert_allclose(res.alpha, [eq3(v) for v in res.alpha1], rtol=1e-14)
    assert res.nearest.tolist() == [1, 0]


def test_eq2_eq3_arithmetic_on_estimate():
    x, y = noise_data(1, [7, 12, 5])
    res = estimate_class_attention(
        (x, y), mc_samples=64, image_size=8, seed=3, beta=0.2, gamma=0.3, n=0.01, q=0.5
    )
    k = np.arange(3)
    off = res.pair_similarity + np.diag([-np.inf] * 3)
    assert res.nearest.tolist() == np.argmax(off, axis=1).tolist()
    assert np.array_equal(res.r_inter, res.pair_similarity[k, res.nearest])
    assert np.array_equal(res.sigma_intra, 1.0 - np.diag(res.pair_similarity))
    assert res.counts.tolist() == [7, 12, 5]
    assert np.array_equal(res.class_im, [1 - 7 / 12, 0.0, 1 - 5 / 12])
    want1 = [res.r_inter[i] + 0.2 * res.class_im[i] + 0.3 * res.sigma_intra[i] for i in k]
    assert res.alpha1.tolist() == want1
    np.testing.assert_allclose(res.alpha, [eq3(v, 0.01, 0.5) for v in want1], rtol=1e-14)
    assert np.array_equal(res.pair_similarity, res.pair_similarity.T)


def test_planted_structure():
    rng = np.random.default_rng(7)
    t1, t2 = rng.random((2, 16, 16))
    x, y = [], []
    for cls, t in enumerate([t1, t1, t2]):
        for _ in range(24):
            x.append(t + 0.6 * rng.random((16, 16)))
            y.append(cls)
    res = estimate_class_attention(
        (np.array(x), np.array(y)),
        mc_samples=300,
        image_size=16,
        seed=0,
        class_names=["a", "b", "c"],
    )
    assert res.nearest_names[:2] == ("b", "a")
    assert min(res.r_inter[0], res.r_inter[1]) > res.r_inter[2] + 3 * res.r_inter_se.max()


def test_callable_similarity_is_batchwise():
    seen = []

    def const_sim(a, b):
        seen.append((a.shape, a.dtype, b.shape))
        return np.full(len(a), 0.3)

    x, y = noise_data(0, [6, 6], side=10)
    res = estimate_class_attention(
        (x, y), mc_samples=700, image_size=5, similarity=const_sim, seed=0
    )
    assert res.similarity == "test_callable_similarity_is_batchwise.<locals>.const_sim"
    np.testing.assert_allclose(res.r_inter, 0.3)
    np.testing.assert_allclose(res.sigma_intra, 0.7)
    np.testing.assert_allclose(res.r_inter_se, 0.0, atol=1e-15)
    assert all(sa[1:] == (5, 5) and sb == sa for sa, _, sb in seen)
    assert {sa[0] for sa, _, _ in seen} == {512, 188}  # chunks of one 700-pair term
    assert all(dt == np.float32 for _, dt, _ in seen)

    # Out-of-range outputs are clipped to [0, 1].
    res = estimate_class_attention(
        (x, y), mc_samples=20, image_size=5, seed=0, similarity=lambda a, b: np.full(len(a), -2.0)
    )
    assert np.all(res.r_inter == 0.0) and np.all(res.sigma_intra == 1.0)

    with pytest.raises(ValueError, match="batch-wise"):
        estimate_class_attention(
            (x, y), mc_samples=20, image_size=5, similarity=lambda a, b: 0.5, seed=0
        )


# --------------------------------------------------------------------------
# Monte-Carlo behaviour (hypothesis)
# --------------------------------------------------------------------------


@st.composite
def labelled_images(draw, min_classes=2, max_classes=4, min_count=2):
    k = draw(st.integers(min_classes, max_classes))
    counts = draw(st.lists(st.integers(min_count, 9), min_size=k, max_size=k))
    side = draw(st.integers(4, 9))
    seed = draw(st.integers(0, 2**16))
    x, y = noise_data(seed, counts, side)
    return x, y, counts, side


@given(labelled_images(), st.randoms(use_true_random=False), st.integers(0, 1000))
def test_permuting_labels_permutes_results(data, rnd, seed):
    x, y, counts, side = data
    k = len(counts)
    names = [f"class{i}" for i in range(k)]
    perm = list(range(k))
    rnd.shuffle(perm)  # old label c -> new label perm[c]
    new_names = [None] * k
    for c in range(k):
        new_names[perm[c]] = names[c]
    y2 = np.array(perm)[y]
    r1 = estimate_class_attention((x, y), 40, image_size=side, seed=seed, class_names=names)
    r2 = estimate_class_attention((x, y2), 40, image_size=side, seed=seed, class_names=new_names)
    for f in (
        "alpha",
        "alpha1",
        "r_inter",
        "r_inter_se",
        "class_im",
        "sigma_intra",
        "sigma_intra_se",
        "counts",
    ):
        assert np.array_equal(getattr(r2, f)[perm], getattr(r1, f)), f
    assert [r2.nearest_names[perm[c]] for c in range(k)] == list(r1.nearest_names)
    p = np.array(perm)
    assert np.array_equal(r2.pair_similarity[np.ix_(p, p)], r1.pair_similarity)


@given(labelled_images(), st.integers(0, 1000))
def test_duplicating_dataset_keeps_class_im(data, seed):
    x, y, counts, side = data
    r1 = estimate_class_attention((x, y), 10, image_size=side, seed=seed)
    r2 = estimate_class_attention(
        (np.concatenate([x, x]), np.concatenate([y, y])), 10, image_size=side, seed=seed
    )
    assert np.array_equal(r2.class_im, r1.class_im)
    assert np.array_equal(r2.counts, 2 * r1.counts)


@given(labelled_images(max_classes=3, min_count=3), st.integers(0, 1000))
def test_standard_errors_shrink_as_inverse_sqrt(data, seed):
    x, y, counts, side = data
    lo = estimate_class_attention((x, y), 300, image_size=side, seed=seed)
    hi = estimate_class_attention((x, y), 4800, image_size=side, seed=seed)
    se_lo = np.concatenate([lo.r_inter_se, lo.sigma_intra_se])
    se_hi = np.concatenate([hi.r_inter_se, hi.sigma_intra_se])
    ok = se_hi > 0  # all pairs equal (e.g. all clipped to 0): SE exactly 0 at both sizes
    assert np.all(se_lo[~ok] == 0)
    ratio = se_lo[ok] / se_hi[ok]  # expected sqrt(4800 / 300) = 4
    # "Roughly": the SEs are themselves estimates (heavy tails when most pairs clip
    # to 0), so bound the geometric mean over the terms tightly and each term loosely.
    assert 3.2 < np.exp(np.log(ratio).mean()) < 5.0, ratio
    assert np.all((ratio > 1.8) & (ratio < 9.0)), ratio


@given(labelled_images(), st.integers(0, 10**6))
def test_determinism_per_seed(data, seed):
    x, y, counts, side = data
    r1 = estimate_class_attention((x, y), 30, image_size=side, seed=seed)
    r2 = estimate_class_attention((x.copy(), y.copy()), 30, image_size=side, seed=seed)
    assert r1 == r2 and r1.seed == seed
    assert json.dumps(r1.to_dict()) == json.dumps(r2.to_dict())


def test_different_seeds_differ_and_none_seed_is_recorded():
    x, y = noise_data(0, [20, 20])
    r1 = estimate_class_attention((x, y), 50, image_size=8, seed=1)
    r2 = estimate_class_attention((x, y), 50, image_size=8, seed=2)
    assert r1 != r2
    r3 = estimate_class_attention((x, y), 50, image_size=8, seed=None)
    assert isinstance(r3.seed, int)
    assert estimate_class_attention((x, y), 50, image_size=8, seed=r3.seed) == r3


@pytest.mark.parametrize("per_class", [30, 600])  # pool = whole class / random subset
def test_standard_error_is_honest(per_class):
    # Spread of the estimate over seeds (fixed data) vs the reported SE.
    x, y = noise_data(0, [per_class, per_class])
    est, se = [], []
    for s in range(40):
        r = estimate_class_attention((x, y), 100, image_size=8, seed=s)
        est.append([r.r_inter[0], r.sigma_intra[0], r.sigma_intra[1]])
        se.append([r.r_inter_se[0], r.sigma_intra_se[0], r.sigma_intra_se[1]])
    ratio = np.std(est, axis=0, ddof=1) / np.mean(se, axis=0)
    assert np.all((ratio > 0.65) & (ratio < 1.4)), ratio


# --------------------------------------------------------------------------
# Input forms
# --------------------------------------------------------------------------


class _Seq(keras.utils.PyDataset):
    def __init__(self, x, y, bs):
        super().__init__()
        self.x, self.y, self.bs = x, y, bs

    def __len__(self):
        return math.ceil(len(self.x) / self.bs)

    def __getitem__(self, i):
        s = slice(i * self.bs, (i + 1) * self.bs)
        return self.x[s], self.y[s]


def test_all_input_forms_agree():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (45, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 3, 45)
    # mc_samples=8 -> pools of 16 < 15 per class on average: exercises reservoir replacement.
    kw = dict(mc_samples=8, image_size=8, seed=11)
    ref = estimate_class_attention((x, y), **kw)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 45, 4)]
    assert estimate_class_attention(batches, **kw) == ref
    assert estimate_class_attention(iter(batches), **kw) == ref
    assert estimate_class_attention((b for b in batches), **kw) == ref
    assert estimate_class_attention(_Seq(x, y, 7), **kw) == ref
    assert estimate_class_attention((x, np.eye(3)[y]), **kw) == ref  # one-hot
    assert estimate_class_attention((x[..., None], y), **kw) == ref  # HxWx1
    assert (
        estimate_class_attention(
            [(x[i : i + 5], y[i : i + 5], np.ones(5)) for i in range(0, 45, 5)], **kw
        )
        == ref
    )  # with weights
    rgb = np.repeat(x[..., None], 3, axis=-1)
    r_rgb = estimate_class_attention((rgb, y), **kw)
    np.testing.assert_allclose(r_rgb.pair_similarity, ref.pair_similarity, atol=1e-5)
    r_float = estimate_class_attention((x / 255.0, y), **kw)  # Pearson is scale-invariant
    np.testing.assert_allclose(r_float.pair_similarity, ref.pair_similarity, atol=1e-5)


def test_tf_data_input():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, 30)
    kw = dict(mc_samples=10, image_size=8, seed=2)
    ref = estimate_class_attention((x, y), **kw)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    assert estimate_class_attention(ds.batch(4), **kw) == ref
    assert estimate_class_attention(ds, **kw) == ref  # unbatched: batched for you
    assert (
        estimate_class_attention(ds.map(lambda a, b: (a, tf.one_hot(b, 2))).batch(6), **kw) == ref
    )


def test_stream_memory_is_bounded_by_the_pool():
    # 2000 images streamed, mc_samples=5 -> at most 10 kept per class.
    def gen():
        rng = np.random.default_rng(0)
        for _ in range(100):
            yield rng.random((20, 8, 8)), rng.integers(0, 2, 20)

    res = estimate_class_attention(gen(), mc_samples=5, image_size=8, seed=0)
    assert res.counts.sum() == 2000


def test_tensorflow_not_imported_at_module_level():
    src = open(_estimator.__file__).read()
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not any(m and m.split(".")[0] == "tensorflow" for m in mods)


# --------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------


def _write_dir(root, counts, kaggle=True, side=16, seed=0):
    rng = np.random.default_rng(seed)
    for name, c in counts.items():
        folder = os.path.join(root, name, "images") if kaggle else os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(c):
            img = rng.integers(0, 256, (side, side), dtype=np.uint8)
            Image.fromarray(img, mode="L").save(os.path.join(folder, f"{name}-{i}.png"))
        if kaggle:  # masks must be ignored
            os.makedirs(os.path.join(root, name, "masks"), exist_ok=True)
            for i in range(3):
                Image.fromarray(np.zeros((side, side), np.uint8)).save(
                    os.path.join(root, name, "masks", f"m{i}.png")
                )
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not a class")


@pytest.mark.parametrize("kaggle", [True, False])
def test_directory_layouts(tmp_path, kaggle):
    _write_dir(tmp_path, {"b_cls": 9, "a_cls": 6, "c_cls": 4}, kaggle=kaggle)
    res = estimate_class_attention(tmp_path, mc_samples=20, image_size=8, seed=0)
    assert res.class_names == ("a_cls", "b_cls", "c_cls")
    assert res.counts.tolist() == [6, 9, 4]
    assert np.array_equal(res.class_im, [1 - 6 / 9, 0.0, 1 - 4 / 9])
    assert res.skipped_files == ()
    # class_names selects and orders sub-folders; per-class values follow the class.
    res2 = estimate_class_attention(
        str(tmp_path), mc_samples=20, image_size=8, seed=0, class_names=["c_cls", "a_cls"]
    )
    assert res2.class_names == ("c_cls", "a_cls") and res2.counts.tolist() == [4, 6]
    assert res2.sigma_intra[1] == res.sigma_intra[0]


def test_directory_decodes_only_sampled_files(tmp_path, monkeypatch):
    _write_dir(tmp_path, {"x": 40, "y": 30})
    calls = []
    real = _images.decode_image
    monkeypatch.setattr(
        _images, "decode_image", lambda p, *a, **k: calls.append(p) or real(p, *a, **k)
    )
    res = estimate_class_attention(tmp_path, mc_samples=3, image_size=8, seed=0)
    assert len(calls) == 12 and len(set(calls)) == 12  # 2 * mc_samples per class
    assert res.counts.tolist() == [40, 30]  # from the listing


def test_directory_unreadable_files_are_skipped_and_counted(tmp_path):
    _write_dir(tmp_path, {"x": 5, "y": 5}, kaggle=False)
    bad = tmp_path / "x" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.warns(UserWarning, match="unreadable image"):
        res = estimate_class_attention(tmp_path, mc_samples=10, image_size=8, seed=0)
    assert res.skipped_files == (str(bad),)
    assert res.counts.tolist() == [5, 5]
    assert "Skipped 1 unreadable" in res.to_markdown()


def test_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        estimate_class_attention(tmp_path / "missing")
    with pytest.raises(ValueError, match="empty directory"):
        estimate_class_attention(tmp_path)
    _write_dir(tmp_path, {"x": 4, "y": 1}, kaggle=False)
    with pytest.raises(ValueError, match=r"class 'y' \(index 1\) has 1"):
        estimate_class_attention(tmp_path, mc_samples=5, image_size=8, seed=0)
    with pytest.raises(ValueError, match=r"Missing: \['z'\]"):
        estimate_class_attention(tmp_path, class_names=["x", "z"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        estimate_class_attention(tmp_path, class_names=["x"], image_size=8)
    (tmp_path / "y" / "b1.png").write_bytes(b"junk")
    (tmp_path / "y" / "b2.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="readable images"):
        estimate_class_attention(tmp_path, mc_samples=5, image_size=8, seed=0)


# --------------------------------------------------------------------------
# Errors on arrays and arguments
# --------------------------------------------------------------------------


def test_array_errors():
    x, y = noise_data(0, [5, 5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        estimate_class_attention((x, np.zeros(10, int)), 10)
    with pytest.raises(ValueError, match=r"len\(x\)=10, len\(y\)=9"):
        estimate_class_attention((x, y[:9]), 10)
    with pytest.raises(ValueError, match=r"x.shape=\(10, 64\)"):
        estimate_class_attention((x.reshape(10, 64), y), 10)
    with pytest.raises(ValueError, match=r"x.shape=\(10, 8, 8, 4\)"):
        estimate_class_attention((np.zeros((10, 8, 8, 4)), y), 10)
    with pytest.raises(ValueError, match="x.dtype"):
        estimate_class_attention((x.astype(str), y), 10)
    y1 = y.copy()
    y1[y1 == 1] = 2
    y1[0] = 1  # class 1 has a single image
    with pytest.raises(ValueError, match=r"class '1' \(index 1\) has 1"):
        estimate_class_attention((x, y1), 10, image_size=8)
    with pytest.raises(ValueError, match="empty"):
        estimate_class_attention((x[:0], y[:0]), 10)
    with pytest.raises(ValueError, match="empty"):
        estimate_class_attention([], 10)
    with pytest.raises(ValueError, match=r"labels in \[0, 0\]"):
        estimate_class_attention((x, y), 10, class_names=["a"])
    xn = x.copy()
    xn[:] = np.nan
    with pytest.raises(ValueError, match="finite pixel"):
        estimate_class_attention((xn, y), 10)
    with pytest.raises(ValueError, match="Expected a directory path"):
        estimate_class_attention(42)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"mc_samples": 1}, "mc_samples"),
        ({"mc_samples": 2.5}, "mc_samples"),
        ({"image_size": 1}, "image_size"),
        ({"beta": -1}, "beta"),
        ({"q": 0}, "q"),
        ({"similarity": "cosine"}, "similarity"),
        ({"seed": -3}, "seed"),
        ({"class_names": ["a", "a"]}, "distinct"),
    ],
)
def test_argument_errors(kw, msg):
    x, y = noise_data(0, [5, 5])
    with pytest.raises(ValueError, match=msg):
        estimate_class_attention((x, y), **{"mc_samples": 10, **kw})


def test_alpha1_reaching_one_names_the_class():
    # Both classes are copies of one template: r_inter = 1 -> alpha1 >= 1.
    # The smaller class also gets beta * class_im = 0.05 * 0.5 on top.
    t = np.random.default_rng(0).random((8, 8))
    x = np.stack([t] * 6)
    y = np.array([0, 0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"alpha1 reaches 1 for class 'dogs' \(index 1\)"):
        estimate_class_attention((x, y), 10, image_size=8, seed=0, class_names=["cats", "dogs"])


# --------------------------------------------------------------------------
# ClassAttention
# --------------------------------------------------------------------------


def test_class_attention_value_object():
    x, y = noise_data(2, [6, 9, 4])
    res = estimate_class_attention((x, y), 30, image_size=8, seed=4, class_names=["p", "q", "r"])
    d = json.loads(json.dumps(res.to_dict()))
    back = ClassAttention.from_dict(d)
    assert back == res and back is not res
    assert back.to_dict() == res.to_dict()
    w = res.weights
    assert isinstance(w, np.ndarray) and w.dtype == np.float64 and np.array_equal(w, res.alpha)
    w[0] = 123.0  # a copy: the result is unchanged
    assert res.alpha[0] != 123.0
    with pytest.raises(ValueError):
        res.alpha[0] = 1.0  # read-only
    with pytest.raises(AttributeError):
        res.alpha = np.zeros(3)  # frozen
    text = str(res)
    assert text == res.to_markdown()
    assert text.count("\n| ") == 3 and "| p | 6 |" in text and "mc_samples=30" in text
    assert "ClassAttention(class_names=('p', 'q', 'r')" in repr(res)
    assert res != ClassAttention.from_dict({**d, "mc_samples": 31})
    with pytest.raises(ValueError, match="Unknown keys"):
        ClassAttention.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="shape"):
        ClassAttention.from_dict({**d, "alpha": [1.0, 2.0]})


@pytest.mark.slow  # a second interpreter importing keras (and TF when installed): ~10 s
def test_same_result_on_other_backend():
    import importlib.util

    others = [
        b
        for b in ("jax", "torch", "tensorflow")
        if b != keras.backend.backend() and importlib.util.find_spec(b) is not None
    ]
    if not others:
        pytest.skip("no second Keras backend installed")
    other = others[0]
    x, y = noise_data(9, [6, 7, 5])
    res = estimate_class_attention((x, y), 40, image_size=8, seed=5)
    code = (
        "import json, sys, numpy as np\n"
        "from keras_freeze import estimate_class_attention\n"
        "d = np.load(sys.argv[1])\n"
        "r = estimate_class_attention((d['x'], d['y']), 40, image_size=8, seed=5)\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"kf_att_{os.getpid()}.npz")
    np.savez(path, x=x, y=y)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, path],
            env={**os.environ, "KERAS_BACKEND": other},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        os.remove(path)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert ClassAttention.from_dict(got) == res


def test_plugs_into_attention_weighted_cce():
    loss_cls = keras_freeze.AttentionWeightedCCE
    if not hasattr(loss_cls, "get_config"):
        pytest.skip("AttentionWeightedCCE is still a placeholder (no get_config)")
    x, y = noise_data(0, [6, 5, 7])
    res = estimate_class_attention((x, y), 30, image_size=8, seed=0)
    loss = loss_cls(res)
    y_true = np.eye(3, dtype="float32")[[0, 1, 2, 1]]
    y_pred = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]], "float32"
    )
    got = float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))
    per_sample = -(res.weights[None, :] * y_true * np.log(y_pred)).sum(axis=1)
    np.testing.assert_allclose(got, per_sample.mean(), rtol=1e-5)
