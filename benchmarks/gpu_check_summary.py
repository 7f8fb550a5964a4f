"""Summary of benchmarks/gpu_check.sh: training images/s per experiment of one backend's run.

Reads ``$OUT_DIR/records/<experiment>_fold1.json`` (``train_images_per_s`` per epoch) or, for a
unit stopped by the time limit, its log ``$OUT_DIR/logs/<experiment>_fold1.log`` (the lines
``[<experiment> | fold 1/K] epoch e/E: ... train X images/s``). Reports the median from epoch 2
on (epoch 1 includes tracing and compilation) and the sum over the experiments that ran at once.

Usage (gpu_check.sh calls it): ``OUT_DIR=runs/gpu_check/torch BACKEND=torch ELAPSED=240 RC=0
python benchmarks/gpu_check_summary.py freeze covid-net ...``. Exit 1 if no experiment
reported a figure.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from pathlib import Path

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+: .*train ([0-9.]+) images/s")


def per_epoch(out, experiment):
    """Training images/s per epoch of ``experiment`` on fold 1, and where they came from."""
    slug = experiment.replace("+", "_")
    record = out / "records" / f"{slug}_fold1.json"
    if record.exists():
        rec = json.loads(record.read_text())
        return [float(v) for v in rec["train_images_per_s"]], "record"
    log = out / "logs" / f"{slug}_fold1.log"
    if log.exists():
        found = EPOCH_LINE.findall(log.read_text(errors="replace"))
        return [float(ips) for _, ips in found], "log (unit unfinished)"
    return [], "not run"


def main(experiments):
    out = Path(os.environ["OUT_DIR"])
    backend = os.environ.get("BACKEND", "?")
    total, reported = 0.0, 0
    for exp in experiments:
        ips, source = per_epoch(out, exp)
        if not ips:
            print(f"GPU CHECK {backend} {exp}: no epoch finished ({source})")
            continue
        steady = ips[1:] or ips
        median = statistics.median(steady)
        total += median
        reported += 1
        print(
            f"GPU CHECK {backend} {exp}: {median:.1f} training images/s "
            f"(median of epochs 2..{len(ips)}; epoch 1 {ips[0]:.1f}; from the {source})"
        )
    print(
        f"GPU CHECK {backend}: {reported}/{len(experiments)} experiment(s) reported, sum of "
        f"their images/s {total:.1f}; run {os.environ.get('ELAPSED', '?')} s, exit "
        f"{os.environ.get('RC', '?')}"
    )
    return 0 if reported else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
