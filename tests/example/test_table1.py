"""Table 1's eight rows in the example: the plan, each row's unit, the loss and the report.

The architectures themselves are tested in tests/example/test_models.py and the loss in
tests/test_cwbce.py; here the example's use of them. pyproject.toml (pytest pythonpath) puts
examples/covid_cxr on sys.path.
"""

import dataclasses
import json
from pathlib import Path

import experiment
import numpy as np
import protocol
import pytest
import reproduce
from settings import Settings

import keras_freeze

PAPER_ORDER = [
    "covid-net",
    "covid-lite",
    "inception-v3",
    "resnet18-cwbce",
    "finetune",
    "freeze",
    "stochastic",
    "freeze+attention",
]


EXAMPLE_DIR = Path(reproduce.__file__).parent


def resolved(*argv):
    return reproduce.parse_settings(list(argv))


def test_the_default_plan_is_table_1_in_its_order():
    assert list(protocol.EXPERIMENTS) == PAPER_ORDER
    assert list(resolved().experiments) == PAPER_ORDER
    assert list(Settings.create(data_dir=EXAMPLE_DIR).experiments) == PAPER_ORDER
    # Any subset runs in Table 1's order.
    subset = resolved("--experiments", "freeze", "covid-lite").experiments
    assert list(subset) == ["covid-lite", "freeze"]
    for exp in PAPER_ORDER:
        assert set(protocol.PAPER_TABLE1[exp]) == set(protocol.METRICS)


def test_input_sizes_agree_with_the_models_module():
    import models

    for exp in PAPER_ORDER:
        arch = protocol.ARCHITECTURES[exp]
        if arch != "mobilenetv2":
            assert models.MODELS[arch].input_size == protocol.INPUT_SIZES[arch], exp
            assert models.MODELS[arch].min_size == protocol.MIN_SIZES.get(arch, 32), exp


@pytest.mark.parametrize(
    "weights, expected",
    [
        ("imagenet", ("imagenet", "Inception-V3 (100% fine tuning)")),
        ("torchvision", (None, protocol.INCEPTION_RANDOM_TITLE)),
        (None, (None, protocol.INCEPTION_RANDOM_TITLE)),
    ],
)
def test_inception_says_when_it_is_not_from_imagenet(weights, expected):
    args = resolved("--weights", str(weights), "--preprocessing", "native")
    unit = experiment.Unit.of(args, "inception-v3")
    assert (unit.weights, unit.title) == expected
    assert "random init" in unit.title or weights == "imagenet"
    # native preprocessing follows the weights: Keras' [-1, 1] for ImageNet, else x/255.
    assert unit.preprocess_text.startswith("tf" if weights == "imagenet" else "rescale")


def test_models_from_scratch_ignore_the_backbone_weights():
    args = resolved("--weights", "torchvision", "--preprocessing", "native")
    for exp in ("covid-net", "covid-lite", "resnet18-cwbce"):
        unit = experiment.Unit.of(args, exp)
        assert unit.weights is None and unit.title == protocol.EXPERIMENT_TITLES[exp]
        assert unit.preprocess_text.startswith("rescale")
    assert experiment.Unit.of(args, "freeze").preprocess_text.startswith("torch")


def test_an_image_size_too_small_for_inception_is_refused_up_front(capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--image-size", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Expected --image-size >= 75 for inception-v3" in err and len(err.splitlines()) == 1
    args = resolved("--image-size", "64", "--experiments", "covid-net", "freeze")
    assert args.image_size_for("covid-net") == 64


def test_resnet18_trains_with_the_balanced_cwbce_of_its_training_split():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 12)
    loss, text = experiment._loss_for("resnet18-cwbce", None, labels, 4)
    assert isinstance(loss, keras_freeze.CustomWeightedBalancedCCE)
    assert "counts=[5, 3, 12, 0]" in text
    # beta_c = (1 - N_c / N) / (K - 1) (Tyagi et al. 2022), from the counts.
    n, k = 20, 4
    np.testing.assert_allclose(
        loss.class_weights,
        [(1 - c / n) / (k - 1) for c in (5, 3, 12, 0)],
        rtol=1e-6,
    )
    cce, _ = experiment._loss_for("covid-net", None, labels, 4)
    assert type(cce).__name__ == "CategoricalCrossentropy"


@pytest.mark.slow  # trains two small models from scratch in a subprocess: ~1 min
def test_end_to_end_models_from_scratch(tmp_path):
    from test_reproduce import run_cli

    out = tmp_path / "out"
    argv = ["--out", str(out), "--n-images", "48", "--image-size", "75", "--epochs", "1"]
    log = run_cli([*argv, "--experiments", "covid-lite", "resnet18-cwbce"], tmp_path)
    assert "[covid-lite | fold 1/5]" in log and "CustomWeightedBalancedCCE(counts=" in log
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert sorted(recs) == ["covid-lite_fold1", "resnet18-cwbce_fold1"]
    for rec in recs.values():
        assert rec["image_size"] == 75 and rec["weights"].startswith("none (trained from scratch")
        assert rec["title"] == protocol.EXPERIMENT_TITLES[rec["experiment"]]
        assert rec["preprocessing"].startswith("rescale")
    assert recs["resnet18-cwbce_fold1"]["loss"].startswith("CustomWeightedBalancedCCE")
    table = (out / "table1_macro.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| Covid-Lite")]
    assert [r.split(" | ")[1] for r in rows] == ["ours (synthetic)", "paper"]
    assert "| ResNet-18 + CWBCE loss (train from scratch) | paper | - | 0.93 |" in table


def test_settings_are_enough_for_a_unit():
    # Unit.of reads only the settings: no data, no Keras model.
    args = dataclasses.replace(Settings(), weights="imagenet", image_size=None)
    sizes = [experiment.Unit.of(args, e).image_size for e in PAPER_ORDER]
    assert sizes == [480, 224, 299, 224, 224, 224, 224, 224]
