"""Reports of the COVID CXR example, written from the records of an output folder.

``results.csv`` (one row per record, every digit), ``table1_macro.md`` and
``table2_weighted.md`` (our rows next to the paper's), ``statistics.md`` / ``statistics.csv``
(paired tests of each row against the proposed model and Mobile Freeze-Net, `paired`),
``attention.md`` / ``attention.json`` (the class weights per fold) and PNG figures (Table 1
next to the paper's, test confusion matrix and training curves per experiment). Every report
is rebuilt from the records alone, so an interrupted run still gets them.

Example:
    >>> import report
    >>> report.mean_std([0.9, 0.92, float("nan")])[0]
    0.91
"""

from __future__ import annotations

import csv
import io
import math
import os
import textwrap

import matplotlib
import numpy as np
import paired
import protocol
import records
from console import fmt
from protocol import EXPERIMENTS
from protocol import METRICS

import keras_freeze

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# The output folder's main files, as the closing line of a run names them.
MAIN_FILES = (
    "table1_macro.md",
    "table2_weighted.md",
    "statistics.md",
    "results.csv",
    "attention.md",
    "records/",
)


def _finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def mean_std(values):
    """Mean and sample std (ddof=1; 0 for one value) of the finite values."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)


def plain(x, missing="n/a"):
    """``x`` as a plain decimal with every digit (the shortest text that reads back as the same
    float, never an exponent), or ``missing`` when it is missing or not finite.

    Example:
        >>> plain(0.1 + 0.2), plain(1e-7), plain(float("nan"))
        ('0.30000000000000004', '0.0000001', 'n/a')
    """
    if not _finite(x) or isinstance(x, bool):
        return missing
    return np.format_float_positional(float(x), trim="-")


def _banner_md(synthetic):
    return f"> **{protocol.SYNTHETIC_BANNER}**\n\n" if synthetic else ""


# --------------------------------------------------------------------------------------
# results.csv
# --------------------------------------------------------------------------------------
CSV_COLUMNS = (
    [
        "experiment",
        "fold",
        "synthetic",
        "data_source",
        "backend",
        "weights",
        "preprocessing",
        "image_size",
        "epochs_run",
        "time_s",
    ]
    + [f"macro_{m}" for m in METRICS]
    + [f"weighted_{m}" for m in METRICS]
    + ["balanced_accuracy", "n_test", "n_corrupt", "n_missing", "alpha"]
    + ["split_train", "split_validation", "split_test"]  # n_test / n_train of `paired`
)


def _csv_row(r):
    m = r.metrics
    row = [
        r.experiment,
        r.fold,
        r.synthetic,
        r.data["source"],
        r.backend,
        r.weights,
        r.preprocessing,
        r.image_size,
        r.epochs_run,
        r.time_s["total"],
    ]
    row += [plain(m["macro"][k]) for k in METRICS]  # every digit: the tests recompute
    row += [plain(m["weighted"][k]) for k in METRICS]
    row += [
        plain(m["balanced_accuracy"]),
        m["n"],
        r.data["n_corrupt"],
        r.data["n_missing"],
        "" if r.alpha is None else " ".join(plain(a) for a in r.alpha),
    ]
    split = r.split or {}
    row += [split.get(k, "") for k in ("train", "validation", "test")]
    return row


def write_results_csv(out, by_exp):
    """Writes ``results.csv``: one row per record, experiments in the paper's order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for exp in EXPERIMENTS:
        for r in by_exp[exp]:
            w.writerow(_csv_row(r))
    records.atomic_write_text(out / "results.csv", buf.getvalue())


# --------------------------------------------------------------------------------------
# Tables 1 and 2
# --------------------------------------------------------------------------------------
def _one_or_per_model(recs, field, unit=""):
    """``field``'s value if every record shares it, else a pointer to the per-model values."""
    values = {str(getattr(r, field)) for r in recs}
    if len(values) == 1:
        return values.pop() + unit
    return "per model (results.csv)"


def _context_md(recs, synthetic):
    r, d = recs[0], recs[0].data
    lines = [
        f"Data: {d['source']} ({d['root']}), {d['n_used']} images, {d['folds_source']}; "
        f"{d['n_corrupt']} corrupt/unreadable and {d['n_missing']} missing file(s) skipped.",
        f"Protocol: input side {_one_or_per_model(recs, 'image_size', ' px')}, batch "
        f"{r.batch_size}, at most {r.max_epochs} epochs with EarlyStopping(val_loss, patience "
        f"{r.early_stopping['patience']}), weights {_one_or_per_model(recs, 'weights')}, "
        f"preprocessing {_one_or_per_model(recs, 'preprocessing')}, BatchNorm momentum "
        f"{r.freeze.get('bn_momentum') or 'as built'}; Keras {r.keras_version} on {r.backend}.",
    ]
    if synthetic:
        lines.append("Every number below was measured on SYNTHETIC data.")
    constant = [r.title for r in recs if r.fold == recs[0].fold and r.constant_class()]
    if constant:
        lines.append(
            f"Predicting one class for every test image of fold {recs[0].fold} (a constant "
            f"model, its F1 that of the majority class): {'; '.join(constant)}."
        )
    return "\n".join(lines) + "\n\n"


def _table_rows(by_exp, synthetic, average, paper_row):
    text = ""
    for exp in EXPERIMENTS:
        recs = by_exp[exp]
        if not recs:
            continue
        folds = ",".join(str(r.fold) for r in recs) if average == "macro" else str(len(recs))
        # Our row's label is the record's (it says when Inception-V3 did not start from
        # ImageNet); the paper's row keeps the paper's label.
        cells = [recs[0].title, "ours" + (" (synthetic)" if synthetic else ""), folds]
        for m in METRICS:  # no std of one fold: the Folds column says n=1
            mu, sd = mean_std([r.metrics[average][m] for r in recs])
            cells.append(fmt(mu) if len(recs) == 1 else f"{fmt(mu)} ± {fmt(sd)}")
        text += "| " + " | ".join(cells) + " |\n"
        paper = paper_row(exp)
        if paper is not None:
            title = protocol.EXPERIMENT_TITLES[exp]
            text += "| " + " | ".join([title, "paper", *paper]) + " |\n"
    return text


def is_paper_classes(class_names):
    """Whether ``class_names`` are the paper's four classes in the paper's order."""
    return tuple(class_names) == tuple(protocol.CLASS_NAMES)


def _classes_md(class_names):
    """For a data set other than the paper's: the classes, and why no paper rows are shown."""
    return (
        f"Classes ({len(class_names)}, from the data folder): {', '.join(class_names)}. "
        "The paper's rows are not shown: they are for its four COVID-19 Radiography classes.\n\n"
    )


def _write_table(out, filename, title, note, by_exp, synthetic, average, paper_row, class_names):
    """Writes one results table: our rows (mean ± std over folds), then the paper's rows
    when the classes are the paper's. ``note`` is (text on ours, text on the paper's rows)."""
    recs = [r for e in EXPERIMENTS for r in by_exp[e]]
    if synthetic:
        title += " (SYNTHETIC DATA)"
    text = title + "\n\n" + _banner_md(synthetic)
    if recs:
        text += _context_md(recs, synthetic)
    ours, paper = note
    if is_paper_classes(class_names):
        text += f"{ours} {paper}\n\n"
    else:
        text += ours + "\n\n" + _classes_md(class_names)
        paper_row = _no_paper_row
    text += "| Experiment | Source | Folds | "
    text += " | ".join(protocol.METRIC_TITLES[m] for m in METRICS)
    text += " |\n|" + "---|" * (3 + len(METRICS)) + "\n"
    text += _table_rows(by_exp, synthetic, average, paper_row)
    records.atomic_write_text(out / filename, text)
    return text


def _no_paper_row(exp):
    return None


def _paper_table1_row(exp):
    return ["-"] + [f"{protocol.PAPER_TABLE1[exp][m]:.2f}" for m in METRICS]


def _paper_table2_row(exp):
    if exp not in protocol.PAPER_TABLE2:
        return None
    row = protocol.PAPER_TABLE2[exp]
    return ["10"] + [f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS]


def write_table1(out, by_exp, synthetic, class_names=protocol.CLASS_NAMES):
    """Writes ``table1_macro.md`` and returns its text."""
    return _write_table(
        out,
        "table1_macro.md",
        "# Table 1: macro-averaged test metrics",
        (
            "Ours: mean over the folds run (± sample std when more than one fold).",
            "Paper: Table 1 of Roy & Khurana (ACM SAC 2023), Kaggle COVID-19 Radiography Database.",
        ),
        by_exp,
        synthetic,
        "macro",
        _paper_table1_row,
        class_names,
    )


def write_table2(out, by_exp, synthetic, class_names=protocol.CLASS_NAMES):
    """Writes ``table2_weighted.md`` and returns its text."""
    return _write_table(
        out,
        "table2_weighted.md",
        "# Table 2: weighted-average test metrics, mean ± std over folds",
        (
            "Std is the sample standard deviation over the folds run (none for one fold).",
            "The paper reports Table 2 for Mobile Freeze-Net and the proposed framework over "
            "its 10 folds; other rows have no published Table 2 values.",
        ),
        by_exp,
        synthetic,
        "weighted",
        _paper_table2_row,
        class_names,
    )


# --------------------------------------------------------------------------------------
# Attention weights
# --------------------------------------------------------------------------------------
def _attention_header(synthetic, class_names):
    """Title, formula and column header of ``attention.md``."""
    title = "# Class attention weights (alpha) of the attention-based loss"
    if synthetic:
        title += " (SYNTHETIC DATA)"
    text = title + "\n\n" + _banner_md(synthetic)
    text += (
        "alpha_c = n / (1 - alpha1_c ** q) with alpha1_c = r_inter + beta * class_im + "
        "gamma * sigma_intra (Monte Carlo, `keras_freeze.estimate_class_attention`), "
        "computed on each fold's training split only.\n\n"
    )
    text += "| Fold | Source | " + " | ".join(class_names) + " |\n"
    text += "|" + "---|" * (2 + len(class_names)) + "\n"
    return text


def write_attention(out, by_exp, synthetic, class_names):
    """Writes ``attention.md`` / ``attention.json`` (alpha per fold); ``None`` if no fold ran."""
    store = records.RecordStore(out)
    recs = by_exp["freeze+attention"]
    if not recs:
        return None
    payload = {
        "synthetic": synthetic,
        "note": protocol.SYNTHETIC_BANNER if synthetic else "real data",
        "class_names": list(class_names),
        "paper_alpha": [float(a) for a in keras_freeze.PAPER_ALPHA]
        if is_paper_classes(class_names)
        else None,
        "folds": {},
    }
    text = _attention_header(synthetic, class_names)
    details = []
    for r in recs:
        payload["folds"][str(r.fold)] = {"alpha": r.alpha, "source": r.alpha_source}
        shown = " | ".join(f"{a:.5f}" for a in r.alpha)
        text += f"| {r.fold} | {r.alpha_source} | {shown} |\n"
        estimate = (
            store.attention_of(r.fold) if r.alpha_source != protocol.PAPER_ALPHA_SOURCE else None
        )
        if estimate is not None:
            payload["folds"][str(r.fold)]["estimate"] = estimate.to_dict()
            details.append(f"## Fold {r.fold}\n\n{estimate.to_markdown().strip()}\n")
    if payload["paper_alpha"] is not None:
        text += (
            "| paper | authors' published weights | "
            + " | ".join(f"{a:.5f}" for a in payload["paper_alpha"])
            + " |\n"
        )
    if details:
        text += "\n" + "\n".join(details)
    records.atomic_write_text(out / "attention.md", text)
    records.atomic_write_json(out / "attention.json", payload)
    return text


# --------------------------------------------------------------------------------------
# Paired statistics
# --------------------------------------------------------------------------------------
STATISTICS_COLUMNS = (
    "reference",
    "model_a",
    "model_b",
    "average",
    "metric",
    "n_folds",
    "folds",
    "scores_a",
    "scores_b",
    "mean_a",
    "mean_b",
    "mean_diff",
    "sd_diff",
    "n_test_over_n_train",
    "var_factor",
    "t",
    "df",
    "p_value",
    "ci_low",
    "ci_high",
    "rope",
    "p_left",
    "p_rope",
    "p_right",
    "mcnemar_n",
    "mcnemar_both_right",
    "mcnemar_a_only",
    "mcnemar_b_only",
    "mcnemar_both_wrong",
    "mcnemar_method",
    "mcnemar_statistic",
    "mcnemar_p",
    "alpha_max_over_min",
    "verdict",
)


def _statistics_row(c: paired.Comparison):
    """One row of ``statistics.csv``: every number as a plain decimal, '' when not computed."""
    t, post, mc = c.t_test, c.posterior, c.mcnemar

    def num(obj, name):
        return "" if obj is None else plain(getattr(obj, name), missing="")

    def joined(values):
        return " ".join(plain(v) for v in values)

    row = [c.reference, c.a, c.b, c.average, c.metric, len(c.folds), " ".join(map(str, c.folds))]
    row += [joined(c.scores_a), joined(c.scores_b)]
    row += [plain(float(np.mean(s)), "") if s else "" for s in (c.scores_a, c.scores_b)]
    row += [num(t, "mean"), num(t, "sd"), plain(c.test_over_train, "")]
    row += [num(t, k) for k in ("var_factor", "t", "df", "p", "low", "high")]
    row += ["" if post is None else plain(post.rope)]
    row += [num(post, k) for k in ("p_left", "p_rope", "p_right")]
    row += [num(mc, k) for k in ("n", "both_right", "a_only", "b_only", "both_wrong")]
    row += ["" if mc is None else mc.method, num(mc, "statistic"), num(mc, "p")]
    ratio = float(np.mean(c.alpha_ratios)) if c.alpha_ratios else None
    return row + [plain(ratio, ""), c.verdict()]


def _p_text(p):
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _statistics_cells(c: paired.Comparison):
    """One row of ``statistics.md``."""
    cells = [f"{c.a} − {c.b}", c.average, ",".join(map(str, c.folds)) or "none"]
    if c.t_test is None:
        cells += [paired.TOO_FEW] * 3
    else:
        t, post = c.t_test, c.posterior
        cells.append(f"{t.mean:+.4f} [{t.low:+.4f}, {t.high:+.4f}]")
        cells.append(_p_text(t.p))
        cells.append(f"{post.p_left:.2f} / {post.p_rope:.2f} / {post.p_right:.2f}")
    mc = c.mcnemar
    if mc is None:
        cells += ["n/a", "n/a"]
    else:
        cells += [f"{mc.a_only} / {mc.b_only} of {mc.n}", f"{_p_text(mc.p)} ({mc.method})"]
    return cells + [c.verdict()]


def _alpha_line(comps, paper_ratio):
    """The attention loss's spread of class weights, beside its comparison with freeze."""
    ratios = [
        r for c in comps if {c.a, c.b} == {"freeze+attention", "freeze"} for r in c.alpha_ratios
    ]
    if not ratios:
        return ""
    spread = (
        "every fold"
        if f"{min(ratios):.3f}" == f"{max(ratios):.3f}"
        else f"per fold {min(ratios):.3f} to {max(ratios):.3f}"
    )
    text = (
        f"**freeze+attention − freeze:** the attention loss's class weights span alpha max/min = "
        f"{np.mean(ratios):.3f} ({spread})"
    )
    if paper_ratio is not None:
        text += f"; the paper's published alpha {paper_ratio:.3f}"
    return (
        text + ". Adam is invariant to a constant scale of the loss (up to its epsilon), so this "
        "spread is all that separates the attention loss from plain cross-entropy "
        "(docs/statistics.md, Reading Table 1).\n\n"
    )


STATISTICS_INTRO = (
    "Each row compares A (the reference) with B over the folds both ran: differences A − B of "
    "the per-fold scores, and of the test predictions of the same images. Mean [95% CI] and p: "
    "the corrected resampled t-test (Nadeau & Bengio 2003; variance factor 1/k + n_test/n_train). "
    "P(B better) / P(ROPE) / P(A better): the Bayesian correlated t-test (Benavoli et al. 2017), "
    "ROPE ±{rope:g}. McNemar: images A got right and B wrong / the reverse, pooled over the "
    "paired folds and paired by (fold, file), with the p-value and the test used. With fewer "
    "than {min_folds} paired folds the fold-level tests give no number. How to read them, the "
    "formulas and the references: docs/statistics.md; every number, in full: statistics.csv.\n\n"
)


def write_statistics(out, by_exp, synthetic, class_names=protocol.CLASS_NAMES):
    """Writes ``statistics.md`` and ``statistics.csv`` (`paired.compare` of the records) and
    returns the Markdown text."""
    comps = paired.compare(by_exp)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATISTICS_COLUMNS)
    w.writerows(_statistics_row(c) for c in comps)
    records.atomic_write_text(out / "statistics.csv", buf.getvalue())
    title = "# Paired statistics: each row against the proposed model and Mobile Freeze-Net"
    text = title + (" (SYNTHETIC DATA)" if synthetic else "") + "\n\n" + _banner_md(synthetic)
    text += STATISTICS_INTRO.format(rope=paired.ROPE, min_folds=paired.MIN_FOLDS)
    if not comps:
        text += "No comparison: no reference model shares a fold with another experiment.\n"
    alpha = keras_freeze.PAPER_ALPHA if is_paper_classes(class_names) else None
    paper_ratio = max(alpha) / min(alpha) if alpha is not None else None
    header = (
        "| A − B | F1 | Folds | Mean [95% CI] | p (corrected t) | P(B better) / P(ROPE) / "
        "P(A better) | McNemar A only / B only | McNemar p | What the data support |\n"
        + "|---" * 9
        + "|\n"
    )
    for ref in paired.REFERENCES:
        mine = [c for c in comps if c.reference == ref]
        if not mine:
            continue
        text += f"## Against {protocol.EXPERIMENT_TITLES[ref]} ({ref})\n\n" + header
        text += "".join("| " + " | ".join(_statistics_cells(c)) + " |\n" for c in mine) + "\n"
        text += _alpha_line(mine, paper_ratio)
    records.atomic_write_text(out / "statistics.md", text)
    return text


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
CURVE_PANELS = (
    ("loss", "loss"),
    ("accuracy", "validation accuracy"),
    ("macro_f1", "validation macro F1"),
)


def _confusion_figure(exp, recs, class_names, tag):
    cm = np.sum([np.asarray(r.metrics["confusion_matrix"]) for r in recs], axis=0)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color=color)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    folds = ",".join(str(r.fold) for r in recs)
    # On lines that fit the axes' width: one long line ran past the figure's right edge.
    lines = (f"{exp}: test confusion matrix", f"fold(s) {folds}{tag}")
    ax.set_title("\n".join(textwrap.fill(line, 48) for line in lines), fontsize=9)
    fig.tight_layout()
    return fig


def _table1_figure(by_exp, synthetic, class_names):
    """Table 1 as dots: our mean ± std over folds per model beside the paper's value."""
    exps = [e for e in EXPERIMENTS if by_exp[e]][::-1]  # Table 1's first row at the top
    paper = is_paper_classes(class_names)
    height = 1.7 + 0.45 * len(exps)  # inches: the titles and the legend, then one per row
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3 * len(METRICS) + 1.5, height))
    y = np.arange(len(exps))
    for ax, m in zip(axes, METRICS, strict=True):
        stats = [mean_std([r.metrics["macro"][m] for r in by_exp[e]]) for e in exps]
        ax.errorbar(
            [s[0] for s in stats],
            y + 0.12,
            xerr=[s[1] for s in stats],
            fmt="o",
            ms=5,
            capsize=3,
            color="tab:blue",
            label="ours: mean ± std over folds",
        )
        if paper:
            ax.plot(
                [protocol.PAPER_TABLE1[e][m] for e in exps],
                y - 0.12,
                "D",
                ms=5,
                mfc="none",
                color="tab:red",
                label="paper (Table 1)",
            )
        ax.set_title(protocol.METRIC_TITLES[m] + " (macro)", fontsize=9)
        ax.set_yticks(y, exps if ax is axes[0] else [""] * len(exps))
        ax.set_ylim(-0.6, len(exps) - 0.4)
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    tag = " [SYNTHETIC DATA]" if synthetic else ""
    fig.suptitle(f"Table 1: ours next to the paper's{tag}", fontsize=10)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    return fig


def _curves_figure(exp, recs, tag):
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(14, 4))
    for r in recs:
        h = r.history
        ep = range(1, len(h.get("loss", [])) + 1)
        for ax, (key, _) in zip(axes, CURVE_PANELS, strict=True):
            if key in h:
                ax.plot(ep, h[key], "-o", ms=3, label=f"fold {r.fold} train")
            if "val_" + key in h:
                ax.plot(ep, h["val_" + key], "--s", ms=3, label=f"fold {r.fold} validation")
    for ax, (_, ylabel) in zip(axes, CURVE_PANELS, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{exp}: training curves{tag}", fontsize=10)
    fig.tight_layout()
    return fig


def _save_fig(fig, path):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    plt.close(fig)
    return path


def write_figures(out, by_exp, synthetic, class_names):
    """Writes ``table1_macro.png`` (our Table 1 next to the paper's), and
    ``confusion_<slug>.png`` and ``curves_<slug>.png`` per experiment run."""
    tag = " [SYNTHETIC DATA]" if synthetic else ""
    written = []
    if any(by_exp[e] for e in EXPERIMENTS):
        fig = _table1_figure(by_exp, synthetic, class_names)
        written.append(_save_fig(fig, out / "table1_macro.png"))
    for exp in EXPERIMENTS:
        recs = by_exp[exp]
        if not recs:
            continue
        fig = _confusion_figure(exp, recs, class_names, tag)
        written.append(_save_fig(fig, out / f"confusion_{protocol.slug(exp)}.png"))
        fig = _curves_figure(exp, recs, tag)
        written.append(_save_fig(fig, out / f"curves_{protocol.slug(exp)}.png"))
    return written


def write_reports(out, shared, synthetic, class_names):
    """Rebuilds every report from the complete records matching ``shared``.

    Returns:
        The texts of Table 1 and Table 2.
    """
    by_exp = records.RecordStore(out).collect(shared)
    write_results_csv(out, by_exp)
    t1 = write_table1(out, by_exp, synthetic, class_names)
    t2 = write_table2(out, by_exp, synthetic, class_names)
    write_statistics(out, by_exp, synthetic, class_names)
    write_attention(out, by_exp, synthetic, class_names)
    write_figures(out, by_exp, synthetic, class_names)
    return t1, t2
