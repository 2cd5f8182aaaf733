"""Lesion label tables: a subject's PRL / not-PRL labels by lesion id, from CSV or TSV.

A label table is what a rating project exports (``deep-prl ratings export``: its ``consensus``
column) or what a lab keeps; a manifest's ``prl_labels`` column names one per subject, and it is
then that subject's ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import describe, file_error
from napari_deep_prl.base.tables import separator_for

#: The label column of a lesion label table when none is named: a project export's consensus.
DEFAULT_LABEL_COLUMN = "consensus"

#: Other columns read as the label of a table without ``consensus``, when it has just one of them.
LABEL_COLUMNS = ("prl", "label")

#: Manifest column naming the label column of a row's ``prl_labels`` table (blank: the default).
LABEL_COLUMN_COLUMN = "prl_labels_column"

#: Label values (lower case) meaning PRL / not PRL; "unsure" and blanks leave a lesion unlabelled.
PRL_VALUES = {"prl": True, "1": True, "true": True, "yes": True,
              "not_prl": False, "0": False, "false": False, "no": False}

UNLABELLED_VALUES = {"", "unsure", "na", "n/a", "nan", "none"}

def read_prl_labels(path: str | Path, subject: str, *, column: str | None = None) -> pd.Series:
    """One subject's labels from a lesion label table (CSV, or TSV by its suffix).

    Columns: ``lesion`` (the lesion ids of :mod:`napari_deep_prl.data.lesions`, as in ``deep-prl
    lesions`` tables and project exports), the label (``prl``/``not_prl``, 1/0, true/false,
    yes/no; ``unsure`` or blank: unlabelled), and optionally ``subject``: then only this
    subject's rows count, so one table (e.g. ``deep-prl ratings export``'s consensus) can serve a
    whole cohort. Returns a boolean Series by lesion id.

    The label is read from ``column``; when none is named, from ``consensus`` (a project
    export: its raters' columns are ``rater_<id>``, so a rater can never pass for the truth), or
    else from the table's only ``prl`` or ``label`` column. A table with both and no
    ``consensus`` is refused rather than guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "lesion label table not found", "Fix the prl_labels path of the manifest.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=separator_for(path))
    except Exception as err:
        raise file_error(path, f"lesion label table cannot be read ({describe(err)})",
                         "Save it as CSV (or TSV with a .tsv suffix) with a header row.") from err
    table.columns = [str(c).strip() for c in table.columns]
    label = _label_column(path, list(table.columns), column)
    if "subject" in table.columns:
        table = table[table["subject"].str.strip() == subject]
    ids = whole_numbers(table["lesion"])
    if ids.isna().any():
        bad = table.loc[ids.isna(), "lesion"].iloc[0]
        raise file_error(path, f"lesion id '{bad}' is not a whole number", "Use the lesion ids of deep-prl lesions.")
    values = table[label].str.strip().str.lower()
    unknown = sorted(set(values) - set(PRL_VALUES) - UNLABELLED_VALUES)
    if unknown:
        raise file_error(path, f"unknown label(s) {', '.join(map(repr, unknown[:5]))} in column '{label}'",
                         "Use prl / not_prl (or 1 / 0); unsure or blank leaves a lesion unlabelled.")
    known = values.isin(list(PRL_VALUES)).to_numpy()
    labels = pd.Series(values[known].map(PRL_VALUES).to_numpy(bool), index=ids[known].to_numpy(np.int64),
                       name="prl")
    labels.index.name = "lesion"
    if labels.index.duplicated().any():
        twice = sorted(set(labels.index[labels.index.duplicated()]))[:5]
        raise file_error(path, f"subject {subject}: lesion(s) {twice} are labelled twice",
                         "Keep one row per lesion (per subject).")
    return labels



def _label_column(path: Path, columns: list[str], column: str | None) -> str:
    """The column of a lesion label table that holds the label (see :func:`read_prl_labels`)."""
    remedy = (f"Name the label column: the manifest's {LABEL_COLUMN_COLUMN} column, or --label-column "
              "on the command line (docs/data.md).")
    if "lesion" not in columns:
        raise file_error(path, f"lesion label table needs a 'lesion' column (has: {', '.join(columns)})",
                         "Export the consensus of a project (deep-prl ratings export) or add the column.")
    if column is not None:
        if column not in columns:
            raise file_error(path, f"lesion label table has no column '{column}', the label column named "
                             f"(has: {', '.join(columns)})", f"Fix the name ({LABEL_COLUMN_COLUMN} in the "
                             "manifest, --label-column on the command line).")
        return column
    if DEFAULT_LABEL_COLUMN in columns:
        return DEFAULT_LABEL_COLUMN
    found = [c for c in LABEL_COLUMNS if c in columns]
    if len(found) == 1:
        return found[0]
    if not found:
        raise file_error(path, f"lesion label table has none of the label columns "
                         f"{', '.join((DEFAULT_LABEL_COLUMN, *LABEL_COLUMNS))} (has: {', '.join(columns)})",
                         "Export the consensus of a project (deep-prl ratings export), or add the column. "
                         + remedy)
    raise file_error(path, f"lesion label table has both {' and '.join(found)} columns and no "
                     f"{DEFAULT_LABEL_COLUMN}: which one is the truth is not clear", remedy)



def whole_numbers(values: pd.Series) -> pd.Series:
    """``values`` (text or numbers) as int64 ids, ``NA`` where one is not a whole number."""
    numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    whole = (numbers.abs() < 2**53) & (numbers == numbers.round())  # NaN and inf fail both
    return numbers.where(whole).astype("Int64")


