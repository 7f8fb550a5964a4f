"""Benchmark: `estimate_class_attention` on a directory with the paper's class counts.

Generates (once, cached) a Kaggle-layout directory `<class>/images/*.png` with
3616 / 10192 / 6012 / 1345 synthetic 299x299 grayscale PNGs (smooth random
images around one template per class: generated data, not chest X-rays), then
times `estimate_class_attention(dir, mc_samples=1000)` and reports peak
memory. Finally it builds a "doubled" directory (every file twice, as
symlinks) and prints the time ratio doubled / original: the estimator decodes
only the sampled files, so the ratio should stay near 1.

Usage:
    KERAS_BACKEND=jax python benchmarks/attention_estimator.py [DATA_DIR]

DATA_DIR defaults to ~/.cache/keras_freeze/bench/paper_counts_299. Not a test.
"""

import os
import resource
import sys
import time
import tracemalloc

import numpy as np
from PIL import Image

from keras_freeze import estimate_class_attention

COUNTS = {"COVID": 3616, "Normal": 10192, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}
SIDE = 299
MC = 1000


def _maxrss_mib():
    # Linux: ru_maxrss is in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _smooth(rng, low):
    a = rng.random((low, low)).astype(np.float32)
    return np.asarray(Image.fromarray(a, mode="F").resize((SIDE, SIDE), Image.BICUBIC))


def generate(root):
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return False
    rng = np.random.default_rng(2023)
    t0 = time.perf_counter()
    for name, count in COUNTS.items():
        folder = os.path.join(root, name, "images")
        os.makedirs(folder, exist_ok=True)
        template = _smooth(rng, 6)
        for i in range(count):
            img = 0.6 * template + 0.4 * _smooth(rng, 16)
            img = img * 200 + 20 + rng.normal(0, 3, (SIDE, SIDE))
            img = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(
                os.path.join(folder, f"{name}-{i + 1}.png"), compress_level=1
            )
        print(f"  generated {name}: {count} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    open(marker, "w").close()
    return True


def make_doubled(root, doubled):
    marker = os.path.join(doubled, ".complete")
    if os.path.exists(marker):
        return
    for name in COUNTS:
        src = os.path.join(root, name, "images")
        dst = os.path.join(doubled, name, "images")
        os.makedirs(dst, exist_ok=True)
        for f in os.listdir(src):
            for k in ("a", "b"):
                link = os.path.join(dst, f"{k}-{f}")
                if not os.path.lexists(link):
                    os.symlink(os.path.join(src, f), link)
    open(marker, "w").close()


def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return r.ru_utime + r.ru_stime


def timed(path, seed):
    t0, c0 = time.perf_counter(), _cpu_s()
    res = estimate_class_attention(path, mc_samples=MC, seed=seed)
    timed.cpu = _cpu_s() - c0
    return time.perf_counter() - t0, res


def main():
    root = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.expanduser("~/.cache/keras_freeze/bench/paper_counts_299")
    )
    doubled = root.rstrip("/") + "_doubled"
    print(f"data: {root} (synthetic 299x299 grayscale PNGs, paper's counts)")
    if generate(root):
        print("  (generated now; cached for later runs)")
    make_doubled(root, doubled)
    nfiles = sum(COUNTS.values())
    rss0 = _maxrss_mib()
    print(f"files: {nfiles} (doubled: {2 * nfiles}); ru_maxrss before runs: {rss0:.0f} MiB")

    # Alternate original / doubled (twice) and keep the best time of each: the
    # machine is shared, so single timings are noisy.
    t_orig, t_dbl = [], []
    for _ in range(2):
        t, res = timed(root, seed=0)
        t_orig.append(t)
        print(
            f"original  mc_samples={MC}: {t:.2f} s wall, {timed.cpu:.2f} s CPU "
            f"(load avg {os.getloadavg()[0]:.1f}); ru_maxrss {_maxrss_mib():.0f} MiB"
        )
        t, res2 = timed(doubled, seed=0)
        t_dbl.append(t)
        print(
            f"doubled   mc_samples={MC}: {t:.2f} s wall, {timed.cpu:.2f} s CPU "
            f"(load avg {os.getloadavg()[0]:.1f}); ru_maxrss {_maxrss_mib():.0f} MiB"
        )
    print(
        f"\nbest original: {min(t_orig):.2f} s; best doubled: {min(t_dbl):.2f} s; "
        f"ratio doubled / original: {min(t_dbl) / min(t_orig):.2f}"
    )
    print(f"ru_maxrss after the runs: {_maxrss_mib():.0f} MiB\n")
    print(res)
    print(f"\nalpha original: {np.round(res.alpha, 6).tolist()}")
    print(f"alpha doubled : {np.round(res2.alpha, 6).tolist()}")

    tracemalloc.start()
    t_tm, _ = timed(root, seed=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\ntracemalloc peak during one run (seed=1, {t_tm:.2f} s under tracing): "
        f"{peak / 2**20:.0f} MiB"
    )
    print(f"ru_maxrss of the whole process (imports incl.): {_maxrss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
