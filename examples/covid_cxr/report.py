"""The reports of the COVID CXR example (`MAIN_FILES`, figures), rebuilt from the records alone.

Example:
    >>> import report
    >>> report.mean_std([0.9, 0.92, float("nan")])[0]
    0.91
    >>> report.plain(0.1 + 0.2), report.plain(1e-7), report.plain(float("nan"))  # every digit
    ('0.30000000000000004', '0.0000001', 'n/a')
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
MAIN_FILES = ("table1_macro.md", "table2_weighted.md", "statistics.md", "results.csv")
MAIN_FILES += ("attention.md", "records/")


def _finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def mean_std(values):
    """Mean and sample std (ddof=1; 0 for one value) of the finite values."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return m, math.sqrt(var)


def plain(x, missing="n/a"):
    """``x`` as a plain decimal with every digit (never an exponent), or ``missing``."""
    if not _finite(x) or isinstance(x, bool):
        return missing
    return np.format_float_positional(float(x), trim="-")


def _title(title, synthetic):
    """A Markdown title, marked and followed by the banner on synthetic data."""
    banner = f" (SYNTHETIC DATA)\n\n> **{protocol.SYNTHETIC_BANNER}**" if synthetic else ""
    return f"{title}{banner}\n\n"


def _md_row(cells, header=False):
    row = "| " + " | ".join(map(str, cells)) + " |\n"
    return row + "|" + "---|" * len(cells) + "\n" if header else row


def _write_csv(path, header, rows):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    records.atomic_write_text(path, buf.getvalue())


CSV_COLUMNS = (
    "experiment fold synthetic data_source backend weights preprocessing image_size epochs_run "
    "time_s".split()
    + [f"{average}_{m}" for average in ("macro", "weighted") for m in METRICS]
    + "balanced_accuracy n_test n_corrupt n_missing alpha".split()
    + ["split_train", "split_validation", "split_test"]  # n_test / n_train of `paired`
)


def _csv_row(r):
    m, split = r.metrics, r.split or {}
    row = [r.experiment, r.fold, r.synthetic, r.data["source"], r.backend, r.weights]
    row += [r.preprocessing, r.image_size, r.epochs_run, r.time_s["total"]]
    row += [plain(m[avg][k]) for avg in ("macro", "weighted") for k in METRICS]  # every digit
    alpha = "" if r.alpha is None else " ".join(plain(a) for a in r.alpha)
    row += [plain(m["balanced_accuracy"]), m["n"], r.data["n_corrupt"], r.data["n_missing"], alpha]
    return row + [split.get(k, "") for k in ("train", "validation", "test")]


# average -> file, title, note on our rows, note on the paper's rows.
TABLES = {
    "macro": (
        "table1_macro.md",
        "# Table 1: macro-averaged test metrics",
        "Ours: mean over the folds run (± sample std when more than one fold).",
        "Paper: Table 1 of Roy & Khurana (ACM SAC 2023), Kaggle COVID-19 Radiography Database.",
    ),
    "weighted": (
        "table2_weighted.md",
        "# Table 2: weighted-average test metrics, mean ± std over folds",
        "Std is the sample standard deviation over the folds run (none for one fold).",
        "The paper reports Table 2 for Mobile Freeze-Net and the proposed framework over "
        "its 10 folds; other rows have no published Table 2 values.",
    ),
}


def _one_or_per_model(recs, field, unit=""):
    values = {str(getattr(r, field)) for r in recs}
    return values.pop() + unit if len(values) == 1 else "per model (results.csv)"


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


def _paper_row(average, exp):
    """The paper's cells of ``exp`` in Table 1 (macro) or 2 (weighted); ``None`` if none."""
    if average == "macro":
        return ["-"] + [f"{protocol.PAPER_TABLE1[exp][m]:.2f}" for m in METRICS]
    row = protocol.PAPER_TABLE2.get(exp)  # None: no published row
    return row and ["10"] + [f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS]


def _table_rows(by_exp, synthetic, average, paper):
    text = ""
    for exp in (e for e in EXPERIMENTS if by_exp[e]):
        recs = by_exp[exp]
        folds = ",".join(str(r.fold) for r in recs) if average == "macro" else str(len(recs))
        # Our label is the record's (it says when Inception-V3 did not start from ImageNet).
        cells = [recs[0].title, "ours" + (" (synthetic)" if synthetic else ""), folds]
        for m in METRICS:  # no std of one fold: the Folds column says n=1
            mu, sd = mean_std([r.metrics[average][m] for r in recs])
            cells.append(fmt(mu) if len(recs) == 1 else f"{fmt(mu)} ± {fmt(sd)}")
        text += _md_row(cells)
        row = _paper_row(average, exp) if paper else None
        if row is not None:
            text += _md_row([protocol.EXPERIMENT_TITLES[exp], "paper", *row])
    return text


def is_paper_classes(class_names):
    """Whether ``class_names`` are the paper's four classes in the paper's order."""
    return tuple(class_names) == tuple(protocol.CLASS_NAMES)


def write_table(out, by_exp, synthetic, class_names, average):
    """Writes and returns Table 1 (``average="macro"``) or 2: ours, then the paper's rows."""
    filename, title, ours, theirs = TABLES[average]
    recs = [r for e in EXPERIMENTS for r in by_exp[e]]
    text = _title(title, synthetic) + (_context_md(recs, synthetic) if recs else "")
    paper = is_paper_classes(class_names)
    if paper:
        text += f"{ours} {theirs}\n\n"
    else:
        text += (
            f"{ours}\n\nClasses ({len(class_names)}, from the data folder): "
            f"{', '.join(class_names)}. The paper's rows are not shown: they are for its four "
            "COVID-19 Radiography classes.\n\n"
        )
    titles = [protocol.METRIC_TITLES[m] for m in METRICS]
    text += _md_row(["Experiment", "Source", "Folds", *titles], header=True)
    text += _table_rows(by_exp, synthetic, average, paper)
    records.atomic_write_text(out / filename, text)
    return text


ATTENTION_FORMULA = (
    "alpha_c = n / (1 - alpha1_c ** q) with alpha1_c = r_inter + beta * class_im + "
    "gamma * sigma_intra (Monte Carlo, `keras_freeze.estimate_class_attention`), "
    "computed on each fold's training split only.\n\n"
)


def write_attention(out, by_exp, synthetic, class_names):
    """Writes ``attention.md`` / ``attention.json`` (alpha per fold); ``None`` if no fold ran."""
    recs, store = by_exp["freeze+attention"], records.RecordStore(out)
    if not recs:
        return None
    paper = [float(a) for a in keras_freeze.PAPER_ALPHA] if is_paper_classes(class_names) else None
    note = protocol.SYNTHETIC_BANNER if synthetic else "real data"
    payload = dict(synthetic=synthetic, note=note, class_names=list(class_names))
    payload.update(paper_alpha=paper, folds={})
    text = _title("# Class attention weights (alpha) of the attention-based loss", synthetic)
    text += ATTENTION_FORMULA + _md_row(["Fold", "Source", *class_names], header=True)
    details = []
    for r in recs:
        fold = payload["folds"][str(r.fold)] = {"alpha": r.alpha, "source": r.alpha_source}
        text += _md_row([r.fold, r.alpha_source, *(f"{a:.5f}" for a in r.alpha)])
        own = r.alpha_source != protocol.PAPER_ALPHA_SOURCE
        if own and (estimate := store.attention_of(r.fold)) is not None:
            fold["estimate"] = estimate.to_dict()
            details.append(f"## Fold {r.fold}\n\n{estimate.to_markdown().strip()}\n")
    if paper is not None:
        text += _md_row(["paper", "authors' published weights", *(f"{a:.5f}" for a in paper)])
    if details:
        text += "\n" + "\n".join(details)
    records.atomic_write_text(out / "attention.md", text)
    records.atomic_write_json(out / "attention.json", payload)
    return text


STATISTICS_COLUMNS = tuple(
    "reference model_a model_b average metric n_folds folds scores_a scores_b mean_a mean_b "
    "mean_diff sd_diff n_test_over_n_train var_factor t df p_value ci_low ci_high rope p_left "
    "p_rope p_right mcnemar_n mcnemar_both_right mcnemar_a_only mcnemar_b_only "
    "mcnemar_both_wrong mcnemar_method mcnemar_statistic mcnemar_p alpha_max_over_min "
    "verdict".split()
)
STATISTICS_HEADER = _md_row(
    "A − B|F1|Folds|Mean [95% CI]|p (corrected t)|P(B better) / P(ROPE) / P(A better)|"
    "McNemar A only / B only|McNemar p|What the data support".split("|"),
    header=True,
)


def _statistics_row(c: paired.Comparison):
    """One row of ``statistics.csv``: every number as a plain decimal, '' when not computed."""
    t, post, mc = c.t_test, c.posterior, c.mcnemar

    def num(obj, *names):
        return ["" if obj is None else plain(getattr(obj, k), missing="") for k in names]

    row = [c.reference, c.a, c.b, c.average, c.metric, len(c.folds), " ".join(map(str, c.folds))]
    row += [" ".join(plain(v) for v in s) for s in (c.scores_a, c.scores_b)]
    row += [plain(float(np.mean(s)), "") if s else "" for s in (c.scores_a, c.scores_b)]
    row += num(t, "mean", "sd") + [plain(c.test_over_train, "")]
    row += num(t, "var_factor", "t", "df", "p", "low", "high")
    row += ["" if post is None else plain(post.rope)] + num(post, "p_left", "p_rope", "p_right")
    row += num(mc, "n", "both_right", "a_only", "b_only", "both_wrong")
    row += ["" if mc is None else mc.method] + num(mc, "statistic", "p")
    ratio = float(np.mean(c.alpha_ratios)) if c.alpha_ratios else None
    return row + [plain(ratio, ""), c.verdict()]


def _p_text(p):
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _statistics_cells(c: paired.Comparison):  # one row of statistics.md
    cells = [f"{c.a} − {c.b}", c.average, ",".join(map(str, c.folds)) or "none"]
    t, post, mc = c.t_test, c.posterior, c.mcnemar
    if t is None:
        cells += [paired.TOO_FEW] * 3
    else:
        cells += [f"{t.mean:+.4f} [{t.low:+.4f}, {t.high:+.4f}]", _p_text(t.p)]
        cells.append(f"{post.p_left:.2f} / {post.p_rope:.2f} / {post.p_right:.2f}")
    if mc is None:
        cells += ["n/a", "n/a"]
    else:
        cells += [f"{mc.a_only} / {mc.b_only} of {mc.n}", f"{_p_text(mc.p)} ({mc.method})"]
    return cells + [c.verdict()]


ALPHA_NOTE = (
    "**freeze+attention − freeze:** the attention loss's class weights span alpha max/min = "
    "{mean:.3f} ({spread}){paper}. Adam is invariant to a constant scale of the loss (up to its "
    "epsilon), so this spread is all that separates the attention loss from plain cross-entropy "
    "(docs/statistics.md, Reading Table 1).\n\n"
)


def _alpha_line(comps, paper):
    """The attention loss's spread of class weights, beside its comparison with freeze."""
    pair = {"freeze+attention", "freeze"}
    ratios = [r for c in comps if {c.a, c.b} == pair for r in c.alpha_ratios]
    if not ratios:
        return ""
    low, high = f"{min(ratios):.3f}", f"{max(ratios):.3f}"
    spread = "every fold" if low == high else f"per fold {low} to {high}"
    alpha = keras_freeze.PAPER_ALPHA
    paper = f"; the paper's published alpha {max(alpha) / min(alpha):.3f}" if paper else ""
    return ALPHA_NOTE.format(mean=np.mean(ratios), spread=spread, paper=paper)


STATISTICS_INTRO = (
    "Each row compares A (the reference) with B over the folds both ran: differences A − B of "
    "the per-fold scores, and of the test predictions of the same images. Mean [95% CI] and p: "
    "the corrected resampled t-test (Nadeau & Bengio 2003; variance factor 1/k + n_test/n_train). "
    "P(B better) / P(ROPE) / P(A better): the Bayesian correlated t-test (Benavoli et al. 2017), "
    f"ROPE ±{paired.ROPE:g}. McNemar: images A got right and B wrong / the reverse, pooled over "
    "the paired folds and paired by (fold, file), with the p-value and the test used. With fewer "
    f"than {paired.MIN_FOLDS} paired folds the fold-level tests give no number. How to read "
    "them, the formulas and the references: docs/statistics.md; every number, in full: "
    "statistics.csv.\n\n"
)


def write_statistics(out, by_exp, synthetic, class_names=protocol.CLASS_NAMES):
    """Writes ``statistics.md`` / ``.csv`` (`paired.compare`); returns the Markdown."""
    comps = paired.compare(by_exp)
    _write_csv(out / "statistics.csv", STATISTICS_COLUMNS, map(_statistics_row, comps))
    title = "# Paired statistics: each row against the proposed model and Mobile Freeze-Net"
    text = _title(title, synthetic) + STATISTICS_INTRO
    if not comps:
        text += "No comparison: no reference model shares a fold with another experiment.\n"
    paper = is_paper_classes(class_names)
    for ref in paired.REFERENCES:
        mine = [c for c in comps if c.reference == ref]
        if mine:
            text += f"## Against {protocol.EXPERIMENT_TITLES[ref]} ({ref})\n\n" + STATISTICS_HEADER
            text += "".join(_md_row(_statistics_cells(c)) for c in mine) + "\n"
            text += _alpha_line(mine, paper)
    records.atomic_write_text(out / "statistics.md", text)
    return text


CURVE_PANELS = dict(loss="loss", accuracy="validation accuracy", macro_f1="validation macro F1")


def _confusion_figure(exp, recs, class_names, tag):
    cm = np.sum([np.asarray(r.metrics["confusion_matrix"]) for r in recs], axis=0)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        color = "white" if n > cm.max() / 2 else "black"
        ax.text(j, i, str(int(n)), ha="center", va="center", color=color)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    folds = ",".join(str(r.fold) for r in recs)
    # On lines that fit the axes' width: one long line ran past the figure's right edge.
    lines = (f"{exp}: test confusion matrix", f"fold(s) {folds}{tag}")
    ax.set_title("\n".join(textwrap.fill(line, 48) for line in lines), fontsize=9)
    fig.tight_layout()
    return fig


def _table1_figure(by_exp, tag, class_names):
    """Table 1 as dots: our mean ± std over folds per model beside the paper's value."""
    exps = [e for e in EXPERIMENTS if by_exp[e]][::-1]  # Table 1's first row at the top
    height = 1.7 + 0.45 * len(exps)  # inches: the titles and the legend, then one per row
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3 * len(METRICS) + 1.5, height))
    y = np.arange(len(exps))
    ours = dict(fmt="o", ms=5, capsize=3, color="tab:blue", label="ours: mean ± std over folds")
    theirs = dict(ms=5, mfc="none", color="tab:red", label="paper (Table 1)")
    for ax, m in zip(axes, METRICS, strict=True):
        stats = [mean_std([r.metrics["macro"][m] for r in by_exp[e]]) for e in exps]
        ax.errorbar([s[0] for s in stats], y + 0.12, xerr=[s[1] for s in stats], **ours)
        if is_paper_classes(class_names):
            ax.plot([protocol.PAPER_TABLE1[e][m] for e in exps], y - 0.12, "D", **theirs)
        ax.set_title(protocol.METRIC_TITLES[m] + " (macro)", fontsize=9)
        ax.set_yticks(y, exps if ax is axes[0] else [""] * len(exps))
        ax.set_ylim(-0.6, len(exps) - 0.4)
        ax.grid(axis="x", alpha=0.3)
    legend = axes[0].get_legend_handles_labels()
    fig.legend(*legend, fontsize=8, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(f"Table 1: ours next to the paper's{tag}", fontsize=10)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    return fig


def _curves_figure(exp, recs, tag):
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(14, 4))
    for ax, (key, ylabel) in zip(axes, CURVE_PANELS.items(), strict=True):
        for r in recs:
            ep = range(1, len(r.history.get("loss", [])) + 1)
            for k, style, split in ((key, "-o", "train"), ("val_" + key, "--s", "validation")):
                if k in r.history:
                    ax.plot(ep, r.history[k], style, ms=3, label=f"fold {r.fold} {split}")
        ax.set(xlabel="epoch", ylabel=ylabel)
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
    """Writes ``table1_macro.png``, and ``confusion_<slug>.png`` / ``curves_<slug>.png`` per run."""
    tag = " [SYNTHETIC DATA]" if synthetic else ""
    written = []
    if any(by_exp[e] for e in EXPERIMENTS):
        fig = _table1_figure(by_exp, tag, class_names)
        written.append(_save_fig(fig, out / "table1_macro.png"))
    for exp in (e for e in EXPERIMENTS if by_exp[e]):
        fig = _confusion_figure(exp, by_exp[exp], class_names, tag)
        written.append(_save_fig(fig, out / f"confusion_{protocol.slug(exp)}.png"))
        fig = _curves_figure(exp, by_exp[exp], tag)
        written.append(_save_fig(fig, out / f"curves_{protocol.slug(exp)}.png"))
    return written


def write_reports(out, shared, synthetic, class_names):
    """Rebuilds every report from the complete records matching ``shared``; Tables 1 and 2."""
    by_exp = records.RecordStore(out).collect(shared)
    rows = [_csv_row(r) for exp in EXPERIMENTS for r in by_exp[exp]]
    _write_csv(out / "results.csv", CSV_COLUMNS, rows)
    tables = tuple(write_table(out, by_exp, synthetic, class_names, a) for a in TABLES)
    write_statistics(out, by_exp, synthetic, class_names)
    write_attention(out, by_exp, synthetic, class_names)
    write_figures(out, by_exp, synthetic, class_names)
    return tables
