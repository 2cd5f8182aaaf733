"""The nested cross-validation report, in the layout of the Deep-PRL paper.

Per method, one folder holding:

- ``report.md`` / ``report.csv``: rows TP, FP, FN, TN, F1, specificity, sensitivity, PPV, ROC AUC;
  columns Fold 1..k, Average, STD (sample SD). The CSV keeps full precision for pandas.
- ``roc.png``: the ROC curve of every outer test fold.
- ``predictions.tsv``: the out-of-fold prediction of every lesion (each lesion is tested once).
- ``metrics.json``: every fold's metrics, inner-fold selection and the summary.
- ``kinds.md`` / ``kinds.csv``: the metrics per lesion kind (non-confluent, confluent parts,
  confluent components kept whole, all), pooled over the outer test folds
  (:func:`~napari_deep_prl.model.metrics.metrics_by_kind`); confluent lesions a run did not test
  count as unscored, their PRLs as missed.

and, next to those folders, ``comparison.md`` / ``comparison.csv`` with one row per method
(mean ± SD), so Deep-PRL, its ablation and the baselines read side by side, and ``kinds.md`` /
``kinds.csv`` with every method's rows by lesion kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.base.tables import write_atomic, write_text
from napari_deep_prl.model.metrics import COUNT_KEYS, REPORT_KEYS, metrics_by_kind, summarise

#: Row labels of the paper's table, keyed by metric.
ROW_LABELS = {
    "tp": "TP", "fp": "FP", "fn": "FN", "tn": "TN", "f1": "F1", "specificity": "Specificity",
    "sensitivity": "Sensitivity", "ppv": "PPV", "roc_auc": "ROC AUC",
}

#: Column labels of a table by lesion kind (:func:`kind_table`), keyed by its column.
KIND_LABELS = {"lesions": "Lesions", "prls": "PRLs", "scored": "Scored", "tp": "PRLs found", "fp": "FP",
               "sensitivity": "Sensitivity", "ppv": "PPV", "specificity": "Specificity", "f1": "F1",
               "roc_auc": "ROC AUC"}
#: Row labels of a table by lesion kind.
KIND_NAMES = {"non_confluent": "non-confluent", "confluent_part": "confluent, parts",
              "confluent_whole": "confluent, kept whole", "all": "all"}
#: Heading of the tables by lesion kind.
KIND_HEADING = ("by lesion kind, pooled over the outer test folds (sensitivity over every PRL of the kind, "
                "a PRL left unscored counting as missed; ROC AUC over the scored lesions)")


def fold_table(fold_metrics: Sequence[Mapping[str, float]],
               folds: Sequence[int] | None = None) -> pd.DataFrame:
    """Paper-layout table: a row per metric, a column per fold, then Average and STD.

    ``folds`` numbers the fold columns (1..k by default), so a partial merge names the right
    folds.
    """
    summary = summarise(fold_metrics)
    folds = range(1, len(fold_metrics) + 1) if folds is None else folds
    table = pd.DataFrame(
        {f"Fold {i}": [float(m[key]) for key in REPORT_KEYS] for i, m in
         zip(folds, fold_metrics, strict=True)},
        index=[ROW_LABELS[key] for key in REPORT_KEYS],
    )
    table["Average"] = [summary[key]["mean"] for key in REPORT_KEYS]
    table["STD"] = [summary[key]["std"] for key in REPORT_KEYS]
    return table


def _cell(value: float, count: bool) -> str:
    if math.isnan(value):
        return "n/a"
    if count:
        return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
    return f"{value:.3f}"


def to_markdown(table: pd.DataFrame, *, count_rows: Sequence[str] = ()) -> str:
    """A GitHub Markdown table; ``count_rows`` are printed as integers (means to 0.1)."""
    header = ["", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        count = label in count_rows
        cells = [v if isinstance(v, str) else _cell(float(v), count) for v in row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_roc(predictions: pd.DataFrame, path: Path, *, title: str) -> None:
    """ROC curve of each outer test fold in one PNG (matplotlib's Agg canvas, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    from napari_deep_prl.model.metrics import roc_auc

    fig = Figure(figsize=(5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for fold, rows in predictions.groupby("fold"):
        truth, prob = rows["prl_truth"].to_numpy(), rows["prl_probability"].to_numpy()
        if 0 < truth.sum() < truth.size:
            fpr, tpr, _ = roc_curve(truth, prob)
            ax.plot(fpr, tpr, lw=1.5, label=f"Fold {fold} (AUC {roc_auc(truth, prob):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 − specificity", ylabel="Sensitivity", title=title, xlim=(0, 1),
           ylim=(0, 1.01), aspect="equal")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png"), binary=True)


def write_method_report(out_dir: Path, method: str, folds: Sequence[Mapping],
                        predictions: pd.DataFrame) -> pd.DataFrame:
    """Write one method's report files into ``out_dir/method``; return its fold table.

    ``folds`` are the fold records of :mod:`napari_deep_prl.evaluation.crossval` in fold order (each with
    ``fold`` and ``metrics``); ``predictions`` their concatenated per-lesion predictions.
    """
    folder = Path(out_dir) / method
    metrics = [fold["metrics"] for fold in folds]
    table = fold_table(metrics, [fold["fold"] for fold in folds])
    write_atomic(folder / "report.csv", lambda fh: table.to_csv(fh, index_label="metric"))
    counts = [ROW_LABELS[key] for key in COUNT_KEYS]
    write_text(folder / "report.md", f"# {method}: nested cross-validation, outer test folds\n\n"
               + to_markdown(table, count_rows=counts))
    write_atomic(folder / "predictions.tsv",
                 lambda fh: predictions.to_csv(fh, sep="\t", index=False))
    plot_roc(predictions, folder / "roc.png", title=f"{method}: ROC per outer fold")
    write_text(folder / "metrics.json", json.dumps(
        json_ready({"method": method, "folds": list(folds), "summary": summarise(metrics)}),
        indent=2))
    return table


def kind_table(lesions: pd.DataFrame, folds: Sequence[Mapping], predictions: pd.DataFrame) -> pd.DataFrame:
    """A method's metrics by lesion kind (:func:`~napari_deep_prl.model.metrics.metrics_by_kind`)
    over the patients of its outer test ``folds``: ``lesions`` (the report's ``lesions.tsv``)
    joined with their out-of-fold ``predictions``; a lesion without one was not tested."""
    tested = {subject for fold in folds for subject in fold["test_subjects"]}
    these = lesions[lesions["subject"].isin(tested)]
    joined = these.merge(predictions[["subject", "lesion", "prl_probability", "prl_prediction"]],
                         on=["subject", "lesion"], how="left", validate="one_to_one")
    return metrics_by_kind(joined.assign(prl_truth=joined["prl"].astype(int), prl=joined["prl_prediction"]))


def kind_markdown(table: pd.DataFrame) -> str:
    """A table by lesion kind as Markdown (counts as integers); rows named by kind, or by method
    with a kind column when the table has a ``method`` level (:func:`write_kind_comparison`)."""
    kinds = [KIND_NAMES[kind] for kind in table.index.get_level_values("kind")]
    counts = ("lesions", "prls", "scored", *COUNT_KEYS)
    cells = pd.DataFrame({label: [_cell(float(v), key in counts) for v in table[key]]
                          for key, label in KIND_LABELS.items()}, index=kinds)
    if "method" in table.index.names:
        cells.insert(0, "Kind", kinds)
        cells.index = table.index.get_level_values("method")
    return to_markdown(cells)


def write_kind_report(out_dir: Path, method: str, table: pd.DataFrame) -> None:
    """Write one method's ``kinds.md`` and ``kinds.csv`` (a :func:`kind_table`)."""
    folder = Path(out_dir) / method
    write_atomic(folder / "kinds.csv", lambda fh: table.to_csv(fh))
    write_text(folder / "kinds.md", f"# {method}: {KIND_HEADING}\n\n" + kind_markdown(table))


def write_kind_comparison(out_dir: Path, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Write ``kinds.md`` and ``kinds.csv`` with every method's :func:`kind_table`."""
    table = pd.concat(tables, names=["method"])
    write_atomic(Path(out_dir) / "kinds.csv", lambda fh: table.to_csv(fh))
    write_text(Path(out_dir) / "kinds.md", f"# Methods {KIND_HEADING}\n\n" + kind_markdown(table))
    return table


def comparison_table(tables: Mapping[str, pd.DataFrame],
                     keys: Sequence[str] = ("f1", "sensitivity", "specificity", "ppv",
                                            "roc_auc")) -> pd.DataFrame:
    """One row per method, one ``mean ± SD`` column per metric."""
    labels = [ROW_LABELS[key] for key in keys]
    return pd.DataFrame(
        {label: [f"{_cell(t.at[label, 'Average'], False)} ± {_cell(t.at[label, 'STD'], False)}"
                 for t in tables.values()] for label in labels},
        index=list(tables),
    )


def write_comparison(out_dir: Path, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Write ``comparison.md`` and ``comparison.csv`` (numbers) for all methods."""
    table = comparison_table(tables)
    write_text(Path(out_dir) / "comparison.md",
               "# Methods side by side (outer test folds, mean ± sample SD)\n\n" + to_markdown(table))
    numbers = pd.concat({m: t[["Average", "STD"]] for m, t in tables.items()}, names=["method"])
    write_atomic(Path(out_dir) / "comparison.csv",
                 lambda fh: numbers.to_csv(fh, index_label=["method", "metric"]))
    return table


def json_ready(value: object) -> object:
    """``value`` with NumPy scalars made Python and NaN made ``null`` (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
