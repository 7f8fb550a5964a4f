#!/usr/bin/env python
"""Reproduce Tables 1 and 2 of Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function
for Covid-19 Detection from an Imbalanced CXR Dataset" (ACM SAC 2023).

Without ``--data-dir``: the embedded default, on SYNTHETIC data; with it, the paper's protocol.
The experiments, options and outputs: docs/covid_cxr.md and ``reproduce.py --help``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import textwrap
import time
from pathlib import Path

import environment
import protocol
from console import Parser
from console import log
from protocol import EMBEDDED_DEFAULTS
from protocol import EXPERIMENTS
from settings import Settings

USAGE = (
    "reproduce.py [--data-dir DIR] [--experiments NAME ...] [--folds K ...] [options]\n"
    "       reproduce.py report DIR [DIR ...] --out DIR\n"
    "       reproduce.py predict --model M.keras PATH [PATH ...] [--out predictions.csv]\n"
    "       reproduce.py export --model M.keras --format tflite [--quantize float16|int8]"
)


def _paragraphs(text, width=88):
    return "\n\n".join(textwrap.fill(par, width) for par in text.split("\n\n"))


DESCRIPTION = _paragraphs(
    "Reproduce Tables 1 and 2 of Roy & Khurana, 'Mobile "
    "Freeze-Net with Attention-based Loss Function for Covid-19 Detection from an "
    "Imbalanced CXR Dataset' (ACM SAC 2023) with keras_freeze.\n\n"
    "Without --data-dir this runs the EMBEDDED DEFAULT: a SYNTHETIC, generated "
    "CXR-like data set (no download) with a reduced budget ({image_size} px, {epochs} "
    "epochs, fold 1 of {n_folds}, {n_images} images, offline torchvision weights, "
    "BatchNorm momentum {bn_momentum}) so that all eight experiments finish "
    "in minutes on a CPU. Synthetic results say nothing about the paper's claims.\n\n"
    "With --data-dir the defaults are the paper's protocol: each model at its published "
    "input side (MobileNetV2 224 px), batch 8, Adam 1e-4 "
    "(1e-5 for finetune), EarlyStopping(val_loss, patience 5, best weights restored), "
    "10 folds, ImageNet weights, inputs rescaled by 1/255.".format(**EMBEDDED_DEFAULTS)
)
EPILOG = (
    "Examples:\n"
    "  # embedded default (synthetic data), backend chosen by KERAS_BACKEND\n"
    "  KERAS_BACKEND=torch python examples/covid_cxr/reproduce.py\n"
    "  # the paper's protocol on the Kaggle data with the authors' fold lists\n"
    "  python examples/covid_cxr/reproduce.py \\\n"
    "      --data-dir ~/data/COVID-19_Radiography_Dataset \\\n"
    "      --folds-dir ~/data/paper_folds --out runs/paper\n"
    "  # one fold, two experiments\n"
    "  python examples/covid_cxr/reproduce.py --data-dir DIR \\\n"
    "      --experiments freeze freeze+attention --folds 1\n\n"
    "  # merge the output folders of several shards or runs into one report\n"
    "  python examples/covid_cxr/reproduce.py report runs/shard1 runs/shard2 --out runs/all\n\n"
    "A run is resumable: completed experiment x fold records in --out are skipped "
    "when run again with the same settings."
)


def build_parser():
    """The command's parser: one option per field of `Settings` (``None`` when not given)."""
    p = Parser(prog="reproduce.py", usage=USAGE, description=DESCRIPTION, epilog=EPILOG)
    for field in dataclasses.fields(Settings):
        options = dict(field.metadata)
        options["help"] = re.sub(
            r"%\(default\)[sg]",
            f"{field.default:g}" if isinstance(field.default, float) else str(field.default),
            options["help"],
        )
        if field.type == "bool":
            options["action"] = "store_true"
        p.add_argument("--" + field.name.replace("_", "-"), default=None, **options)
    return p


def build_report_parser():
    """The parser of ``reproduce.py report DIR [DIR ...] --out DIR``."""
    p = Parser(
        prog="reproduce.py report",
        description=_paragraphs(
            "Rebuild results.csv, Tables 1 and 2, the attention summary and the figures from "
            "the records of one or more output folders (e.g. the shards of one plan run with "
            "--shard K/N on several machines). Refuses records of different protocols or data."
        ),
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="output folders to merge.")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder of the merged reports."
    )
    return p


def report_main(argv):
    """``reproduce.py report``: merges the records of several folders into one report."""
    parser = build_report_parser()
    args = parser.parse_args(argv)
    environment.quiet_backends()
    import records  # deferred: imports Keras
    import report

    try:
        for d in args.dirs:
            if not (Path(d) / "records").is_dir():
                raise ValueError(
                    "Expected an output folder of reproduce.py (with records/). "
                    f"Received: {str(d)!r}"
                )
        recs, shared = records.merge_records(args.dirs)
    except ValueError as e:
        parser.error(str(e))
    store = records.RecordStore(args.out)
    for rec in recs:  # a saved model is not copied: the record names it relative to --out
        model = rec.model and os.path.relpath(rec.model, Path(args.out).resolve())
        store.save(dataclasses.replace(rec, model=model))
    for d in args.dirs:  # the estimated attention of each fold, for attention.md
        for path in sorted(records.RecordStore(d).attention_path("*").parent.glob("fold*.json")):
            records.atomic_write_text(store.attention_path(path.stem[4:]), path.read_text())
    synthetic = any(r.synthetic for r in recs)
    class_names = list(recs[0].metrics["per_class"])
    log("\n\n".join(report.write_reports(args.out, shared, synthetic, class_names)))
    log(f"[report] {len(recs)} record(s) from {len(args.dirs)} folder(s) merged into {args.out}")
    return 0


def parse_settings(argv, parser=None) -> Settings:
    """The run's `Settings` from the command line ``argv`` (without the program name).

    Raises:
        ValueError: a value out of range or a path that cannot be used.
    """
    namespace = (parser or build_parser()).parse_args(argv)
    return Settings.create(**vars(namespace))


def main(argv=None):
    """The command, on ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] in (["predict"], ["export"]):
        environment.quiet_backends()
        return importlib.import_module(argv[0]).main(argv[1:])  # deferred: imports Keras
    parser = build_parser()
    try:
        settings = parse_settings(argv, parser)
    except ValueError as e:
        parser.error(str(e))
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    t0 = time.perf_counter()
    if settings.embedded:
        log("=" * 78)
        log("EMBEDDED DEFAULT: SYNTHETIC DATA. No --data-dir given, so this run trains on a")
        log("generated, CXR-like toy data set with a reduced budget. Its numbers say nothing")
        log("about the paper's claims; pass --data-dir for the Kaggle data.")
        log("=" * 78)
    environment.quiet_backends(settings.verbose)
    # This process may train units too: its threads are set before the backend starts.
    environment.configure_process(settings.threads, settings.deterministic)
    return _run(parser, settings, argv, t0)


def _run(parser, settings: Settings, argv, t0) -> int:
    """Checks the weights and the data, runs the plan and writes the reports; the exit code."""
    # Imported once the settings are checked and the environment set (they import Keras).
    import data
    import experiment
    import records
    import report
    import runner

    try:  # the weights and kernels, before any data are generated or read
        experiment.check_weights(settings)
        runner.check_deterministic(settings)
    except ValueError as e:
        parser.error(str(e))
    out = settings.out
    env = records.environment()
    log(f"[setup] Keras {env['keras_version']} on {env['backend']}; output in {out}")
    try:
        dataset = data.prepare_data(settings)
        experiment.load_imagenet(settings)  # Keras' download, before any training
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # a data folder, fold list or --out that cannot be used
        parser.error(str(e))
    ctx = experiment.RunContext(settings, dataset)
    units = {e: experiment.Unit.of(settings, e) for e in settings.experiments}
    config = _run_config(settings, argv, dataset, units, env)
    records.atomic_write_json(out / "run_config.json", config)
    shared = settings.record_key(EXPERIMENTS[0], dataset.fingerprint())["shared"]

    def refresh():  # the tables after every record, so an interrupted run still has them
        return report.write_reports(out, shared, dataset.synthetic, ctx.class_names)

    try:
        done, skipped, failed = runner.run_plan(ctx, refresh)
    except KeyboardInterrupt:
        log("[stopped] interrupted; rerun the same command to resume from the records written")
        return 130
    table1, table2 = refresh()
    log("\n" + table1 + "\n" + table2)
    log(
        f"[done] {done} run(s), {skipped} skipped (already complete)"
        + (f", {len(failed)} FAILED: {failed}" if failed else "")
        + f"; {time.perf_counter() - t0:.0f} s in all. Outputs in {out}: "
        + ", ".join(report.MAIN_FILES)
        + ("  [SYNTHETIC DATA]" if dataset.synthetic else "")
    )
    return 1 if failed else 0


def _run_config(settings, argv, dataset, units, env):
    """``run_config.json``: the command, its settings, each unit and the data."""
    return {
        "synthetic": dataset.synthetic,
        "note": protocol.SYNTHETIC_BANNER if dataset.synthetic else "real data",
        "command": ["reproduce.py", *argv],
        "settings": settings.to_json(),
        "units": {
            e: {
                "title": u.title,
                "image_size": u.image_size,
                "weights": u.weights,
                "preprocessing": u.preprocess_text,
            }
            for e, u in units.items()
        },
        "data": dataset.info,
        **env,
    }


if __name__ == "__main__":
    sys.exit(main())
