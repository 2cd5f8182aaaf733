"""The reliability report: one self-contained HTML file (``deep-prl ratings report``, the
adjudication widget's *Reliability report…* button).

It holds the study's design, a methods paragraph a paper can take over (raters, design,
prevalence, statistics and CIs, as the GRRAS guideline asks), the tables of
:mod:`napari_deep_prl.ratings.reliability` and their plots. Plots are PNG images embedded as
base64, styles are inline: the file opens offline, and can be mailed or archived as it is. It is
written atomically, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.tables import write_text
from napari_deep_prl.ratings.agreement import describe_estimate
from napari_deep_prl.ratings.reliability import (
    ACCURACY_STATISTICS,
    OVERALL_STATISTICS,
    PAIR_STATISTICS,
    Reliability,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from napari_deep_prl.ratings.project import Project

#: Column headings of the statistics.
NAMES = {
    "percent_agreement": "agreement", "cohen_kappa": "Cohen's κ", "gwet_ac1": "Gwet's AC1",
    "pabak": "PABAK", "prevalence_index": "prevalence index", "bias_index": "bias index",
    "krippendorff_alpha": "Krippendorff's α", "fleiss_kappa": "Fleiss' κ",
    "sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV",
}

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; vertical-align: top;
         white-space: nowrap; }
th { background: #f2f2f2; } td.id, th.id { text-align: left; } td.id { white-space: normal; }
.methods { background: #f8f8f8; border-left: 4px solid #4477aa; padding: 0.6em 1em; }
.small { color: #555; font-size: 0.85em; } img { max-width: 100%; }
"""


def _cell(row: pd.Series, key: str) -> str:
    """``estimate [low, high]``, or n/a."""
    return escape(describe_estimate(row[key], row.get(f"{key}_ci_low", np.nan),
                                    row.get(f"{key}_ci_high", np.nan)))


def _table(table: pd.DataFrame, ids: Sequence[str], counts: Sequence[str],
           statistics: Sequence[str]) -> str:
    """An HTML table: id columns, count columns, then each statistic with its CI."""
    if table.empty:
        return "<p class=small>None.</p>"
    head = ("".join(f"<th class=id>{escape(c)}</th>" for c in ids)
            + "".join(f"<th>{escape(c)}</th>" for c in counts)
            + "".join(f"<th>{escape(NAMES[s])}</th>" for s in statistics) + "<th class=id>note</th>")
    body = []
    for _, row in table.iterrows():
        cells = ("".join(f"<td class=id>{escape(str(row[c]))}</td>" for c in ids)
                 + "".join(f"<td>{int(row[c])}</td>" for c in counts)
                 + "".join(f"<td>{_cell(row, s)}</td>" for s in statistics)
                 + f"<td class=id>{escape(str(row.get('note', '') or ''))}</td>")
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _png(figure: Figure) -> str:
    """A matplotlib figure as an embedded PNG ``<img>``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _forest(ax: Axes, labels: Sequence[str], table: pd.DataFrame, keys: Sequence[str]) -> None:
    """Estimates with their CIs, one row per table row, one colour per key."""
    offsets = np.linspace(-0.25, 0.25, len(keys)) if len(keys) > 1 else [0.0]
    for offset, key in zip(offsets, keys, strict=True):
        y = np.arange(len(table)) + offset
        value = table[key].to_numpy(float)
        low, high = table[f"{key}_ci_low"].to_numpy(float), table[f"{key}_ci_high"].to_numpy(float)
        err = np.vstack([value - low, high - value])
        ax.errorbar(value, y, xerr=np.where(np.isfinite(err), err, 0), fmt="o", ms=4, capsize=2,
                    label=NAMES[key])
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def pairs_figure(rel: Reliability) -> str:
    """Kappa, AC1, PABAK and alpha per rater pair: where they part, prevalence is at work."""
    from matplotlib.figure import Figure

    table = pd.concat([rel.pairs.assign(name=rel.pairs["rater_a"] + " – " + rel.pairs["rater_b"]),
                       rel.overall.assign(name="all raters")], ignore_index=True)
    keys = ["cohen_kappa", "gwet_ac1", "pabak", "krippendorff_alpha"]
    figure = Figure(figsize=(7, 1.2 + 0.45 * len(table)), layout="constrained")
    ax = figure.add_subplot()
    table = table.assign(cohen_kappa=table["cohen_kappa"].fillna(table["fleiss_kappa"]),
                         cohen_kappa_ci_low=table["cohen_kappa_ci_low"].fillna(table["fleiss_kappa_ci_low"]),
                         cohen_kappa_ci_high=table["cohen_kappa_ci_high"].fillna(table["fleiss_kappa_ci_high"]))
    _forest(ax, table["name"].tolist(), table, keys)
    ax.set_xlabel("coefficient (95% CI); for all raters κ is Fleiss'")
    ax.set_xlim(min(-0.1, float(np.nanmin(table[keys].to_numpy(float), initial=0))), 1.02)
    return _png(figure)


def accuracy_figure(rel: Reliability) -> str:
    """Each rater's sensitivity and specificity with CIs, per truth."""
    from matplotlib.figure import Figure

    table = rel.accuracy
    names = [f"{r} vs {t}" for r, t in zip(table["rater"], table["truth"], strict=True)]
    figure = Figure(figsize=(7, 1.2 + 0.45 * len(table)), layout="constrained")
    ax = figure.add_subplot()
    _forest(ax, names, table, ["sensitivity", "specificity"])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("proportion (95% CI)")
    return _png(figure)


def counts_figure(rel: Reliability) -> str:
    """Each rater's PRL count per patient, patients ordered by their mean count."""
    from matplotlib.figure import Figure

    counts = rel.counts
    order = counts.mean(axis=1).sort_values(kind="stable").index
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    ax = figure.add_subplot()
    x = np.arange(len(order))
    for i, rater in enumerate(counts.columns):
        jitter = (i - (len(counts.columns) - 1) / 2) * 0.12
        ax.plot(x + jitter, counts.loc[order, rater].to_numpy(), "o", ms=4, alpha=0.8,
                label=str(rater))
    ax.set_xlabel("patient (ordered by mean PRL count)")
    ax.set_ylabel("PRLs counted")
    ax.set_xticks(x, [str(s) for s in order], rotation=90, fontsize=6 if len(x) > 30 else 8)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def _percent(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f} %"


def methods_text(rel: Reliability, consensus_rule: str = "", blind: bool | None = None) -> str:
    """A methods paragraph for a paper: raters, design, prevalence, statistics, CIs, software.

    ``blind``: whether raters were kept from each other's labels and the model's predictions
    (``None``: not said)."""
    d, s = rel.design, rel.settings
    raters = d["raters"]
    per_lesion = d["ratings_per_lesion"]
    if d["fully_crossed"]:
        crossing = "Every rater rated each of these lesions (fully crossed design)."
    else:
        spread = ", ".join(f"{n} by {k} rater{'' if k == 1 else 's'}"
                           for k, n in per_lesion.items())
        crossing = f"Not every rater rated every lesion (lesions rated {spread})."
    labels = "PRL, not PRL or unsure" if "unsure" in d["categories"] else "PRL or not PRL"
    unsure = ("'Unsure' was analysed as a third category." if s.unsure == "category" else
              "Lesions that a compared rater called 'unsure' were left out of that comparison.")
    methods = ", ".join(f"{n} {m}" for m, n in d["consensus_methods"].items())
    prevalence = (f"By consensus{f' ({consensus_rule})' if consensus_rule else ''}, "
                  f"{_percent(d['consensus_prevalence'])} of the {d['n_consensus']} lesions "
                  f"with a definite consensus{f' ({methods})' if methods else ''} were PRLs.")
    references = (f" and against the reference{'s' if len(d['references']) > 1 else ''} "
                  f"{', '.join(d['references'])}, which never voted" if d["references"] else "")
    icc = rel.count_icc.iloc[0]
    intra = (f" Intra-rater agreement was measured on {d['n_repeats']} unannounced repeated "
             "presentations of lesions, with the same coefficients as between raters."
             if d["n_repeats"] else "")
    level = f"{100 * s.level:g} %"
    blinding = {None: "", True: ", blind to each other's labels and to the model's predictions,",
                False: " (not blind: the project let them see other raters' labels or the "
                       "model's predictions)"}[blind]
    return (
        f"{len(raters)} raters{blinding} labelled {d['n_lesions_rated']} of "
        f"{d['n_lesions']} white-matter lesions in {d['n_subjects_rated']} of "
        f"{d['n_subjects']} patients as {labels}. {crossing} {prevalence} {unsure} "
        "Agreement between each pair of raters was measured on the lesions both rated by "
        "percent agreement, Cohen's kappa, Gwet's AC1 and the prevalence- and bias-adjusted "
        "kappa (PABAK) with the prevalence and bias indices (Byrt et al. 1993), since kappa is "
        "depressed when one class is rare even at high agreement; agreement among all raters "
        "by Fleiss' kappa (lesions rated by every rater), Gwet's AC1, the Brennan-Prediger "
        "coefficient (PABAK) and Krippendorff's alpha for nominal data (lesions with at least "
        f"two ratings, missing ratings allowed), with {len(d['categories'])} categories. Each "
        "rater's sensitivity, specificity and positive predictive value were computed against "
        f"the consensus (which includes that rater's own labels){references}. Agreement on "
        "the per-patient PRL count was measured by the intraclass correlation coefficient "
        "ICC(A,1) (two-way random effects, absolute agreement, single rater; McGraw and Wong "
        f"1996), over {int(icc['n_subjects'])} patients every rater finished.{intra} "
        f"{level} confidence intervals are percentile intervals of {s.n_boot} bootstrap "
        f"resamples of patients (seed {s.seed}), because the lesions of one patient are not "
        f"independent. Statistics were computed with napari-deep-prl {d['package_version']}."
    )


def _design_table(rel: Reliability, consensus_rule: str) -> str:
    d = rel.design
    rows = [
        ("raters", ", ".join(d["raters"]) or "none"),
        ("references (never vote)", ", ".join(d["references"]) or "none"),
        ("patients rated / in the project", f"{d['n_subjects_rated']} / {d['n_subjects']}"),
        ("lesions rated / in the project", f"{d['n_lesions_rated']} / {d['n_lesions']}"),
        ("ratings", str(d["n_ratings"])),
        ("lesions by number of raters", ", ".join(f"{k}: {n}" for k, n in
                                                  d["ratings_per_lesion"].items())),
        ("lesions rated, per rater", ", ".join(f"{r}: {n}" for r, n in d["rated_by_rater"].items())),
        ("PRL calls, per rater", ", ".join(f"{r}: {_percent(p)}" for r, p in
                                           d["prl_fraction_by_rater"].items())),
        ("consensus rule", consensus_rule or "n/a"),
        ("PRL prevalence (definite consensus)",
         f"{_percent(d['consensus_prevalence'])} of {d['n_consensus']}"),
        ("unannounced repeats", str(d["n_repeats"])),
        ("categories", ", ".join(d["categories"])),
        ("unsure", rel.settings.unsure),
        ("bootstrap", f"{rel.settings.n_boot} resamples of patients, seed {rel.settings.seed}, "
                      f"{100 * rel.settings.level:g} % percentile intervals"),
    ]
    return "<table>" + "".join(f"<tr><th class=id>{escape(k)}</th><td class=id>{escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def render_report(rel: Reliability, *, title: str = "", consensus_rule: str = "",
                  blind: bool | None = None) -> str:
    """The report as one HTML document (``blind`` as in :func:`methods_text`)."""
    d = rel.design
    icc = rel.count_icc.iloc[0]
    icc_text = escape(describe_estimate(icc["icc"], icc["icc_ci_low"], icc["icc_ci_high"],
                                        icc["note"]))
    sections = [
        f"<h1>Rater reliability{': ' + escape(title) if title else ''}</h1>",
        f"<p class=small>Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by napari-deep-prl "
        f"{escape(str(d['package_version']))}. Estimates are followed by their "
        f"{100 * rel.settings.level:g} % CI in brackets; n/a says why a figure cannot be "
        "computed.</p>",
        "<h2>Methods</h2>",
        f"<p class=methods>{escape(methods_text(rel, consensus_rule, blind))}</p>",
        "<h2>Design</h2>", _design_table(rel, consensus_rule),
        "<h2>All raters</h2>",
        "<p class=small>n: lesions with two ratings or more (Gwet's AC1, PABAK, Krippendorff's "
        "α, agreement); n complete: lesions every rater rated (Fleiss' κ).</p>",
        _table(rel.overall.rename(columns={"n_complete": "n complete", "n_subjects": "patients"}),
               [], ["raters", "n", "n complete", "patients"], OVERALL_STATISTICS),
        "<h2>Rater pairs</h2>",
        "<p class=small>On the lesions both raters rated. When PRLs are rare, κ can be low while "
        "agreement is high: a prevalence index near −1 (almost every lesion called not PRL by "
        "both) depresses κ but not AC1 or PABAK; a bias index away from 0 means one rater calls "
        "PRL more often than the other.</p>",
        _table(rel.pairs.rename(columns={"n_subjects": "patients"}), ["rater_a", "rater_b"],
               ["n", "patients"], PAIR_STATISTICS),
    ]
    if len(rel.pairs) or len(rel.overall):
        sections.append(pairs_figure(rel))
    sections += [
        "<h2>Each rater against the consensus and the references</h2>",
        "<p class=small>On the lesions the truth labelled PRL or not PRL; the rater's unsure "
        "there is counted apart. A rater's own label is part of the consensus, so figures "
        "against the consensus are optimistic; a reference never voted.</p>",
        _table(rel.accuracy.rename(columns={"n_unsure": "unsure", "n_subjects": "patients"}),
               ["rater", "truth"], ["n", "unsure", "patients", "tp", "fp", "fn", "tn"],
               ACCURACY_STATISTICS),
    ]
    if len(rel.accuracy):
        sections.append(accuracy_figure(rel))
    sections += [
        "<h2>PRL count per patient</h2>",
        f"<p>{escape(str(icc['form']))} over {int(icc['n_subjects'])} patients every rater "
        f"finished: <b>{icc_text}</b></p>",
    ]
    if len(rel.counts) and len(rel.counts.columns):
        sections.append(counts_figure(rel))
    sections += [
        "<h2>Intra-rater agreement</h2>",
        "<p class=small>Each rater's first reading of a lesion against its unannounced "
        "repeat.</p>",
        _table(rel.intra.rename(columns={"n_subjects": "patients"}), ["rater"],
               ["n", "patients"], PAIR_STATISTICS),
    ]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>Rater reliability{': ' + escape(title) if title else ''}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")


def report_project(root: str | Path, path: str | Path, *, unsure: str = "category",
                   n_boot: int = 1000, seed: int = 0) -> Path:
    """Write the reliability report of the project at ``root`` (``deep-prl ratings report``,
    the adjudication widget's button). It reads a snapshot of the store, so it never blocks
    the raters and works on a project this account may only read."""
    from napari_deep_prl.ratings.project import Project

    with Project.open(root, readonly=True) as project:
        return write_report(project, path, unsure=unsure, n_boot=n_boot, seed=seed)


def write_report(project: Project, path: str | Path, *, unsure: str = "category",
                 n_boot: int = 1000, seed: int = 0) -> Path:
    """Compute the project's reliability and write the HTML report to ``path`` atomically."""
    path = Path(path)
    if project.store.current().empty:
        raise InputError(f"{project.root}: no ratings yet, so no reliability to report. "
                         "Rate lesions first (review widget or `deep-prl ratings add`).")
    rel = project.reliability(unsure=unsure, n_boot=n_boot, seed=seed)
    rule, blinding = project.config.consensus, project.config.blinding
    text = render_report(rel, title=project.root.name,
                         consensus_rule=f"{rule.method} of at least {rule.min_raters} "
                                        "ratings, else adjudicated",
                         blind=not (blinding.show_other_raters or blinding.show_predictions))
    return write_text(path, text)
