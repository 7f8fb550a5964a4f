"""A paper-scale dry run of the COVID CXR example: every stage at full size, training bounded.

The paper's data set is 21,165 images at 299 px (Kaggle's COVID-19 Radiography Database), its
protocol 8 models x 10 folds at 224 px, batch 8. Without the data (``--data-dir``), this
generates a SYNTHETIC set of the same size and class counts (3616 COVID, 6012 Lung_Opacity,
10192 Normal, 1345 Viral Pneumonia) at 299 px, once, in ``--cache-dir`` (one process per
CPU). Then, for fold 1 of 10 at 224 px, through the example's own modules (`reproduce`'s
`parse_settings`, `data`, `experiment`, `cached_features`):

1. listing and decode-check of every image (`data.prepare_data`: corrupt files dropped);
2. the frozen-prefix feature cache of Mobile Freeze-Net over every image (float32);
3. every experiment of Table 1 for ``--steps`` training steps after one warm-up step (a full
   epoch of ~17k images would take hours on 2 CPU cores), training images/s per experiment;
4. the peak resident memory of the process (the images are decoded batch by batch: nothing may
   hold them all at once; the target is at most 8 GiB).

Then it projects the full protocol's wall time, on this machine and from measured images/s on a
GPU (``--gpu-images-per-s``, e.g. from benchmarks/gpu_check.sh), assuming ``--epochs`` epochs
per unit (the paper stops early; its epochs are not published) and counting training steps
only (validation and test add about 20% of a training epoch's images, at inference speed).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/paper_scale.py --cache-dir /tmp/paper_scale
    python benchmarks/paper_scale.py --n-images 800 --steps 5     # a quick smoke run

Every figure it prints from generated data says so. This is a benchmark, never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "covid_cxr"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(EXAMPLE))

import protocol  # noqa: E402
import reproduce  # noqa: E402
import synthetic  # noqa: E402

KAGGLE_COUNTS = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}


def peak_rss_gib():
    """Peak resident memory of this process so far, GiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stage(name, t0, **figures):
    shown = ", ".join(f"{k} {v}" for k, v in figures.items())
    print(
        f"[paper_scale] {name}: {time.perf_counter() - t0:.1f} s"
        + (f", {shown}" if shown else "")
        + f"; peak RSS so far {peak_rss_gib():.2f} GiB",
        flush=True,
    )


def data_dir(opts):
    """The data folder: ``--data-dir`` or the generated full-size synthetic set."""
    if opts.data_dir is not None:
        return Path(opts.data_dir)
    t0 = time.perf_counter()
    counts = KAGGLE_COUNTS
    if opts.n_images != sum(KAGGLE_COUNTS.values()):
        counts = None  # the paper's class ratios, n_images in all
    root = synthetic.generate_synthetic_cxr(
        Path(opts.cache_dir) / f"paper_scale_{opts.n_images}",
        n_total=opts.n_images,
        image_size=299,
        seed=0,
        counts=counts,
        workers=os.cpu_count() or 1,
    )
    stage(f"generated (or reused) {opts.n_images} SYNTHETIC images at 299 px", t0)
    return root


def settings(opts, root):
    """The example's `Settings` for fold 1 of 10 at 224 px on ``root`` (checked, as the
    command line checks them)."""
    argv = ["--data-dir", str(root), "--out", str(Path(opts.cache_dir) / "out"), "--folds", "1"]
    argv += ["--image-size", "224", "--weights", opts.weights, "--workers", str(opts.workers)]
    argv += ["--cache-dir", str(Path(opts.cache_dir)), "--alpha", "paper"]
    return reproduce.parse_settings(argv)


class StepClock:
    """Images/s of the steps after the first (which includes tracing)."""

    def __init__(self):
        import keras

        class _Clock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())

        self.callback = _Clock()

    def images_per_s(self, batch_size):
        t = self.callback.times
        return batch_size * (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan")


def train_steps(ctx, exp, splits, steps):
    """``steps`` + 1 training steps of ``exp`` (cached features where the example uses them)."""
    import experiment

    # As the example trains the unit (with --alpha paper: no estimate, whose time is not training).
    unit = experiment.Unit.of(ctx.settings, exp)
    training = experiment.prepare_fit(ctx, unit, 1, splits, f"[{exp}]")
    train, fit_model = training.data["train"], training.fit_model
    info = training.feature_cache
    clock = StepClock()
    t0 = time.perf_counter()
    fit_model.fit(
        train,
        epochs=1,
        steps_per_epoch=steps + 1,
        callbacks=[clock.callback],
        verbose=0,
        shuffle=False,  # as the example trains
    )
    return clock.images_per_s(ctx.settings.batch_size), time.perf_counter() - t0, info


def project(measured, n_train, opts, cache_s):
    """Projected wall time of the full protocol (10 folds) from images/s per experiment."""
    hours = 0.0
    for ips in measured.values():
        hours += opts.folds * opts.epochs * n_train / ips / 3600
    return hours + cache_s / 3600


def run(opts):
    t_all = time.perf_counter()
    root = data_dir(opts)
    run_settings = settings(opts, root)
    import data as data_module
    import experiment

    experiment.check_weights(run_settings)  # as reproduce.py: before any data are read
    t0 = time.perf_counter()
    data = data_module.prepare_data(run_settings)
    stage(f"listing and decode-check of {len(data.paths)} images", t0)
    ctx = experiment.RunContext(run_settings, data)
    splits = data.split(1)
    measured, cache_s = {}, 0.0
    for exp in opts.experiments:
        t0 = time.perf_counter()
        ips, secs, info = train_steps(ctx, exp, splits, opts.steps)
        cached = info["used"]
        measured[exp] = ips
        if cached and not cache_s:
            cache_s = info["build_s"]  # for a reused cache, its first build
        stage(
            f"{exp}: {opts.steps} training steps",
            t0,
            **{"training images/s": f"{ips:.1f}", "feature cache": "yes" if cached else "no"},
        )
    n_train = len(splits[0])
    print(f"\n[paper_scale] fold 1 of 10: {n_train} training images; data: {data.info['source']}")
    print(f"[paper_scale] peak resident memory: {peak_rss_gib():.2f} GiB (target: at most 8)")
    hours = project(measured, n_train, opts, cache_s)
    print(
        f"[paper_scale] projected full protocol on this machine ({opts.folds} folds x "
        f"{len(measured)} experiments x {opts.epochs} epochs, training only): {hours:.1f} h"
    )
    if opts.gpu_images_per_s:
        gpu = json.loads(Path(opts.gpu_images_per_s).read_text())
        common = {e: gpu[e] for e in measured if e in gpu}
        print(
            f"[paper_scale] projected on the GPU of {opts.gpu_images_per_s} (experiments "
            f"{sorted(common)}): {project(common, n_train, opts, 0.0):.2f} h"
        )
    else:
        print("[paper_scale] no GPU figures given (--gpu-images-per-s): no GPU projection")
    if opts.data_dir is None:
        print("[paper_scale] every figure above comes from SYNTHETIC generated images")
    print(f"[paper_scale] whole benchmark: {time.perf_counter() - t_all:.0f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="the Kaggle data; default: generated")
    p.add_argument("--cache-dir", default="/tmp/paper_scale", help="generated data and caches")
    p.add_argument("--n-images", type=int, default=sum(KAGGLE_COUNTS.values()))
    p.add_argument("--steps", type=int, default=20, help="timed training steps per experiment")
    p.add_argument("--experiments", nargs="+", default=list(protocol.EXPERIMENTS))
    p.add_argument("--weights", default="torchvision")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20, help="assumed epochs per unit (projection)")
    p.add_argument("--folds", type=int, default=10, help="folds of the projected protocol")
    p.add_argument(
        "--gpu-images-per-s", default=None, help="JSON file: experiment -> measured images/s"
    )
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
