"""Tests of the example's ``--feature-cache`` (examples/covid_cxr/cached_features.py).

The oracle is the uncached run (``--feature-cache off``) of the same command: with a float32
cache the suffix sees the same features, in the same batches and order, so the first epoch's
training loss must agree within 1e-4 (relative) and the test predictions to float32 rounding.
pyproject.toml's pytest `pythonpath` puts examples/covid_cxr on the path.
"""

import json

import cached_features
import numpy as np
import protocol
import pytest
import records
import reproduce
from settings import Settings

# A tiny embedded-default run: 48 generated images at 64 px, fold 1 of 5, 2 epochs. At 32 px
# MobileNetV2's last blocks are 1x1, and with the last training batch of 2 images their
# BatchNormalization statistics (over 2 values) turn float32 rounding differences between the
# fused uncached graph and the suffix (seen on JAX) into loss differences of 0.4%: a property of
# that degenerate setting, not of the cache.
TINY = [
    "--n-images",
    "48",
    "--image-size",
    "64",
    "--epochs",
    "2",
    "--weights",
    "none",
    "--workers",
    "2",
    "--alpha",
    "paper",
]
CACHE_KEYS = ["used", "reason", "dtype", "bytes", "build_s", "reused", "cut"]


def run(tmp_path, name, *argv):
    out = tmp_path / name
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY]
    assert reproduce.main([*common, *argv]) == 0
    return {
        rec["experiment"]: rec
        for rec in (json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json")))
    }


@pytest.mark.parametrize("mode", protocol.FEATURE_CACHE_MODES)
def test_auto_and_on_choose_the_ordered_freeze_experiments(mode):
    settings = Settings.create(feature_cache=mode, experiments=["freeze"])
    for exp in protocol.EXPERIMENTS:
        use, reason = settings.feature_cache_for(exp)
        assert use == (mode != "off" and exp in ("freeze", "freeze+attention")), (mode, exp)
        assert reason.startswith(mode)
    info = cached_features.unused("x")
    assert list(info) == CACHE_KEYS and info["used"] is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--feature-cache", "on"], "Expected --feature-cache on only"),
        (["--feature-cache", "on", "--experiments", "freeze", "stochastic"], "['stochastic']"),
        (["--feature-cache", "sometimes"], "--feature-cache"),
        (["--feature-cache-dtype", "float64"], "--feature-cache-dtype"),
    ],
)
def test_on_with_an_experiment_it_cannot_serve_is_refused_up_front(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_old_records_without_the_field_stay_valid(tmp_path):
    store = records.RecordStore(tmp_path)
    names = [f for f in records.Record.__dataclass_fields__ if f not in ("feature_cache",)]
    obj = {name: None for name in names}
    obj.update(schema=protocol.RECORD_SCHEMA, status="complete", experiment="freeze", fold=1)
    path = store.folder / "freeze_fold1.json"
    records.atomic_write_json(path, obj)
    rec = store.load(path)
    assert rec is not None and rec.feature_cache is None


def _values_per_image(rec):
    n_images = sum(rec["split"][k] for k in ("train", "validation", "test"))
    return rec["feature_cache"]["bytes"] / 4 / n_images  # float32, every image of the data set


@pytest.mark.slow  # trains 6 tiny models: ~1 min
def test_float32_cache_reproduces_the_uncached_run(tmp_path):
    both = ["--experiments", "freeze", "freeze+attention"]
    off = run(tmp_path, "off", *both, "--feature-cache", "off")
    assert not (tmp_path / "cache" / "feature_cache").exists()  # off: nothing cached
    assert not (tmp_path / "off" / "feature_cache").exists()
    on = run(tmp_path, "on", *both, "--feature-cache", "on", "--feature-cache-dtype", "float32")
    for exp in ("freeze", "freeze+attention"):
        a, b = off[exp], on[exp]
        assert a["feature_cache"] == {**cached_features.unused(a["feature_cache"]["reason"])}
        assert a["feature_cache"]["reason"].startswith("off")
        fc = b["feature_cache"]
        assert list(fc) == CACHE_KEYS and fc["used"] is True and fc["dtype"] == "float32"
        assert fc["cut"] == ["block_7_add"] and _values_per_image(b) == 4 * 4 * 64
        np.testing.assert_allclose(b["history"]["loss"][0], a["history"]["loss"][0], rtol=1e-4)
        np.testing.assert_allclose(b["history"]["loss"], a["history"]["loss"], rtol=1e-3)
        np.testing.assert_allclose(
            b["predictions"]["y_prob"], a["predictions"]["y_prob"], rtol=1e-3, atol=1e-4
        )
        assert b["predictions"]["files"] == a["predictions"]["files"]
        assert len(b["train_images_per_s"]) == len(a["train_images_per_s"]) == 2
        assert set(a) == set(b) and list(a) == list(b)
    # One cache served both experiments (same seed and fold: equal frozen weights).
    assert on["freeze"]["feature_cache"]["reused"] is False
    assert on["freeze+attention"]["feature_cache"]["reused"] is True
    # A later run with the defaults (auto, float32) reuses the cache of the earlier run.
    auto = run(tmp_path, "auto", "--experiments", "freeze")
    assert auto["freeze"]["feature_cache"]["used"] is True
    assert auto["freeze"]["feature_cache"]["reused"] is True
    np.testing.assert_allclose(
        auto["freeze"]["history"]["loss"], on["freeze"]["history"]["loss"], rtol=1e-5
    )


def test_only_a_float16_cache_keeps_its_records_apart():
    default = reproduce.parse_settings([])
    assert default.feature_cache == "auto" and default.feature_cache_dtype == "float32"
    half = reproduce.parse_settings(["--feature-cache-dtype", "float16"])
    off = reproduce.parse_settings(["--feature-cache", "off"])
    for exp in protocol.EXPERIMENTS:
        own_default = default.record_key(exp, "data")["own"]
        own_off = off.record_key(exp, "data")["own"]
        own_half = half.record_key(exp, "data")["own"]
        assert own_default == own_off  # float32 cache: the uncached run's records
        cached = exp in ("freeze", "freeze+attention")
        assert (own_half != own_off) == cached and own_half.get("feature_cache_dtype") == (
            "float16" if cached else None
        )
