"""The cross-validation's most confident errors, as pictures.

A fold table says how often a method fails; looking at its failures says why: a weak rim, a rim
under a large vein's dipole, a partial rim that reads as a dark blob, a vein grazing a plain
lesion. For every method in a report this draws the PRLs it missed with the lowest probability
(``missed.png``) and the non-PRLs it called PRL with the highest (``false_positives.png``):
central axial slices of the subject's susceptibility image (phase or QSM) and of each structural
image it has, one row per contrast labelled by name, with the lesion outline
(:func:`~napari_deep_prl.evaluation.figures.display_patches`), each subject loaded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress, ProgressGenerator
from napari_deep_prl.data.cohort import Cohort
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.evaluation.figures import display_patches, gallery_channels, patch_gallery

#: Gallery files in each method's report folder, and which errors they show.
GALLERIES = {"missed.png": "PRLs missed", "false_positives.png": "non-PRLs called PRL"}


def worst_errors(predictions: pd.DataFrame, n: int = 8) -> dict[str, pd.DataFrame]:
    """The ``n`` most confident misses and false positives of out-of-fold predictions, worst first.

    ``predictions`` has the columns of a report's ``predictions.tsv`` (``prl_truth``,
    ``prl_probability``, ``prl_prediction``). Returns ``{gallery file: rows}``.
    """
    truth = predictions["prl_truth"].astype(bool)
    called = predictions["prl_prediction"].astype(bool)
    return {
        "missed.png": predictions[truth & ~called].nsmallest(n, "prl_probability"),
        "false_positives.png": predictions[~truth & called].nlargest(n, "prl_probability"),
    }


def report_methods(report_dir: Path) -> list[str]:
    """Methods with out-of-fold predictions in a merged report folder."""
    return sorted(p.parent.name for p in Path(report_dir).glob("*/predictions.tsv"))


def draw_error_galleries(report_dir: str | Path, cohort: Cohort, *, n: int = 8,
                         methods: Sequence[str] | None = None) -> ProgressGenerator[list[Path]]:
    """Draw each method's error galleries into its report folder; return the files written.

    ``cohort`` must be the one the report was made from: an erroneous lesion whose subject is
    missing, or whose id is not in the subject's mask, is an :class:`InputError`.
    """
    report_dir = Path(report_dir)
    methods = list(methods) if methods is not None else report_methods(report_dir)
    if not methods:
        raise InputError(f"{report_dir}: no predictions.tsv found; merge the report first "
                         f"(`deep-prl cv --merge {report_dir}`)")
    chosen = {m: worst_errors(_predictions(report_dir, m), n) for m in methods}
    wanted = pd.concat([rows for galleries in chosen.values() for rows in galleries.values()])
    by_subject = wanted.groupby("subject")["lesion"].unique()
    patches: dict[tuple[str, int], dict[str, np.ndarray]] = {}  # each lesion's patch, by channel
    for step, (subject_id, ids) in enumerate(by_subject.items()):
        yield Progress(step, len(by_subject), "subject", subject_id)
        if subject_id not in cohort.ids:
            raise InputError(f"subject {subject_id} of {report_dir} is not in the cohort "
                             "given; give the manifest the report was made from")
        subject = cohort.load(subject_id)
        lesions = find_lesions(subject)
        unknown = sorted(set(ids) - set(lesions.ids))
        if unknown:
            raise InputError(f"{subject_id}: lesion {unknown[0]} of {report_dir} is not in its "
                             "mask; give the manifest the report was made from")
        cut, layout = display_patches(subject, lesions, ids)
        patches.update({(subject_id, int(i)): dict(zip(layout, p)) for i, p in zip(ids, cut)})
    yield Progress(len(by_subject), len(by_subject), "subject")
    layout = gallery_channels([list(p) for p in patches.values()])
    written = []
    for method, galleries in chosen.items():
        for name, rows in galleries.items():
            path = report_dir / method / name
            if rows.empty:
                path.unlink(missing_ok=True)  # a stale gallery from an earlier merge
                continue
            titles = [f"{r.subject} #{r.lesion}\np = {r.prl_probability:.2f}, fold {r.fold}"
                      for r in rows.itertuples()]
            written.append(patch_gallery(
                np.stack([_channels(patches[(r.subject, int(r.lesion))], layout) for r in rows.itertuples()]),
                titles, path, channels=layout[:-1], layout=layout,
                suptitle=f"{method}: {GALLERIES[name]}, most confident first"))
    return written


def _channels(patch: dict[str, np.ndarray], layout: Sequence[str]) -> np.ndarray:
    """A lesion's patch with the gallery's channels: NaN (left blank) for a contrast its subject lacks."""
    blank = np.full_like(patch["mask"], np.nan)
    return np.stack([patch.get(channel, blank) for channel in layout])


def _predictions(report_dir: Path, method: str) -> pd.DataFrame:
    path = report_dir / method / "predictions.tsv"
    if not path.is_file():
        raise InputError(f"{path} not found; methods in this report: "
                         f"{', '.join(report_methods(report_dir)) or 'none'}")
    return pd.read_csv(path, sep="\t", dtype={"subject": str})
