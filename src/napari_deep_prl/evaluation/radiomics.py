"""An APRL-like radiomics baseline: first-order susceptibility statistics per lesion + logistic regression.

APRL (Lou et al.) classifies lesions from first-order radiomic features of the phase in the
lesion and around it. This module computes such features of the subject's susceptibility image
(phase or QSM) in three regions of every lesion — the **core** (lesion voxels deeper than
``rim_mm`` from its edge), the inner **rim** band (lesion voxels within ``rim_mm`` of the edge)
and the outer **shell** (non-lesion voxels within ``shell_mm`` outside the edge, other lesions
left out) — plus the contrast of the lesion and of its rim band against its shell on each
structural image (``<contrast>_lesion_ratio``, ``<contrast>_rim_ratio``) and the lesion volume.
The contrasts are a model's (:func:`~napari_deep_prl.data.contrasts.cohort_contrasts` of the
cohort unless given: MP2RAGE and phase for the research protocol, e.g. T1w, FLAIR and a QSM for
a clinical site), so the baseline and the networks of one cross-validation see the same images.

The susceptibility image enters **paramagnetic-dark** whatever its contrast, as in patches (a
QSM negated, :data:`~napari_deep_prl.data.contrasts.SIGNS`), so a feature means the same on a
phase and on a QSM; it is divided by the subject's robust scale (1.4826 x median absolute value
within the brain), so features compare across field strengths, echo times and units.

It serves two purposes: a baseline that Deep-PRL must beat, and a check that the synthetic
cohort is hard enough (first-order statistics ignore where in the rim the signal lies).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.contrasts import SIGNS, cohort_contrasts, model_contrasts, require_contrasts
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.lesions import Lesions, find_lesions

REGIONS = ("core", "rim", "shell")
#: Statistics of the susceptibility image in each region.
PHASE_STATS = ("mean", "sd", "p10", "p50", "p90", "skew")
#: Columns identifying a lesion rather than describing it.
ID_COLUMNS = ("subject", "lesion")


def radiomics_features(subject: Subject, lesions: Lesions, *, contrasts: Sequence[str] | None = None,
                       rim_mm: float = 1.5, shell_mm: float = 3.0) -> pd.DataFrame:
    """One row per lesion: ``subject, lesion`` then the feature columns of ``contrasts`` (a
    model's contrasts, see the module doc; ``None``: those :func:`cohort_contrasts` gives this
    subject alone)."""
    contrasts = _contrasts(subject, contrasts)
    require_contrasts([(subject.subject, subject.images)], contrasts, "the radiomics features")
    susceptibility, structural = contrasts[-1], contrasts[:-1]
    zooms = subject.zooms
    image = subject.images[susceptibility]
    dark = -image if SIGNS[susceptibility][1] else image  # paramagnetic-dark, as patches
    scale = _phase_scale(dark)
    pad = int(np.ceil(shell_mm / min(zooms))) + 1
    rows = []
    for row in lesions.table.itertuples(index=False):
        box = tuple(slice(max(0, int(lo) - pad), min(n, int(hi) + pad)) for lo, hi, n in zip(
            (row.bbox_x0, row.bbox_y0, row.bbox_z0), (row.bbox_x1, row.bbox_y1, row.bbox_z1),
            subject.shape))
        labels = lesions.labels[box]
        lesion = labels == row.lesion
        depth = ndimage.distance_transform_edt(lesion, sampling=zooms)
        outside = ndimage.distance_transform_edt(~lesion, sampling=zooms)
        phase = dark[box] / scale
        rim = lesion & (depth <= rim_mm)
        core = lesion & (depth > rim_mm)
        shell = (labels == 0) & (outside <= shell_mm) & (phase != 0)
        regions = {"core": core if core.any() else lesion, "rim": rim, "shell": shell}
        features: dict[str, object] = {"subject": subject.subject, "lesion": int(row.lesion)}
        for name, region in regions.items():
            features.update(_phase_stats(phase[region], name))
        features["rim_minus_shell"] = features["rim_mean"] - features["shell_mean"]
        features["core_minus_rim"] = features["core_mean"] - features["rim_mean"]
        for contrast in structural:
            values = subject.images[contrast][box]
            around = float(np.mean(values[shell])) if shell.any() else np.nan
            features[f"{contrast}_lesion_ratio"] = float(np.mean(values[lesion])) / (around + 1e-6)
            features[f"{contrast}_rim_ratio"] = float(np.mean(values[rim])) / (around + 1e-6)
        features["log_volume_mm3"] = float(np.log(row.volume_mm3))
        rows.append(features)
    names = feature_names(contrasts)
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, *names])
    return table.fillna({c: 0.0 for c in names})


def feature_names(contrasts: Sequence[str]) -> list[str]:
    """The feature columns of :func:`radiomics_features` for a model's ``contrasts``, in order."""
    structural = model_contrasts(contrasts, "the radiomics contrasts")[:-1]
    names = [f"{region}_{stat}" for region in REGIONS for stat in PHASE_STATS]
    names += ["rim_minus_shell", "core_minus_rim"]
    names += [f"{contrast}_{ratio}" for contrast in structural for ratio in ("lesion_ratio", "rim_ratio")]
    return names + ["log_volume_mm3"]


def _contrasts(subject: Subject, contrasts: Sequence[str] | None) -> tuple[str, ...]:
    if contrasts is None:
        return cohort_contrasts([(subject.subject, subject.images)], f"subject {subject.subject}")
    return model_contrasts(contrasts, "the radiomics contrasts")


def _phase_scale(phase: np.ndarray) -> float:
    values = np.abs(phase[phase != 0])
    return float(1.4826 * np.median(values)) if values.size else 1.0


def _phase_stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    if values.size == 0:
        return {f"{prefix}_{s}": np.nan for s in PHASE_STATS}
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    skew = float(stats.skew(values)) if values.size > 2 and values.std() > 0 else 0.0
    return {f"{prefix}_mean": float(values.mean()), f"{prefix}_sd": float(values.std()),
            f"{prefix}_p10": float(p10), f"{prefix}_p50": float(p50), f"{prefix}_p90": float(p90),
            f"{prefix}_skew": skew}


def cohort_features(cohort: Sequence[SubjectPaths], contrasts: Sequence[str] | None = None
                    ) -> Generator[Progress, None, pd.DataFrame]:
    """Features of every lesion of a cohort (one subject in memory at a time, only the images of
    ``contrasts`` read; ``None``: the cohort's, :func:`cohort_contrasts`), with ``prl`` truth
    when the subjects have a PRL mask."""
    if contrasts is None:
        contrasts = cohort_contrasts(((p.subject, (c for c, _ in p.images)) for p in cohort), "the cohort")
    contrasts = model_contrasts(contrasts, "the radiomics contrasts")
    tables = []
    for i, paths in enumerate(cohort):
        subject = paths.load(contrasts=contrasts)
        lesions = find_lesions(subject)
        table = radiomics_features(subject, lesions, contrasts=contrasts)
        if "prl" in lesions.table:
            table["prl"] = lesions.table["prl"].to_numpy()
        tables.append(table)
        yield Progress(i + 1, len(cohort), "subject", paths.subject)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def radiomics_classifier(c: float = 1.0) -> Pipeline:
    """Standardised features into a class-balanced logistic regression."""
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=c, class_weight="balanced", max_iter=2000))


@dataclass
class CVResult:
    """Patient-grouped cross-validation of the radiomics classifier."""

    auc: float                 # ROC AUC of all out-of-fold scores pooled
    fold_aucs: list[float]     # per test fold (folds with one class only are skipped)
    scores: np.ndarray         # out-of-fold PRL probability of every lesion, in input order


def grouped_cv_auc(features: pd.DataFrame, labels: Sequence[bool] | np.ndarray,
                   groups: Sequence[str] | np.ndarray | None = None, *, n_splits: int = 5,
                   seed: int = 0, c: float = 1.0) -> CVResult:
    """ROC AUC of the classifier under cross-validation split by patient, stratified by label.

    The classifier uses every numeric column of ``features`` except ``lesion`` and ``prl`` (so
    extra features can be appended to :func:`radiomics_features`' table). ``groups`` defaults to
    the ``subject`` column: no patient contributes to both the training and the test folds, as
    in the paper's protocol.
    """
    y = np.asarray(labels, dtype=bool)
    groups = np.asarray(features["subject"] if groups is None else groups)
    numeric = features.drop(columns=[c for c in (*ID_COLUMNS, "prl") if c in features])
    x = numeric.select_dtypes("number").to_numpy(dtype=float)
    if y.sum() < n_splits or (~y).sum() < n_splits or len(np.unique(groups)) < n_splits:
        raise InputError(f"cannot cross-validate: {int(y.sum())} PRLs, {int((~y).sum())} other "
                         f"lesions in {len(np.unique(groups))} subjects for {n_splits} folds. "
                         "Use more subjects or fewer folds")
    scores = np.zeros(len(y))
    fold_aucs = []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y, groups):
        model = radiomics_classifier(c).fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        if 0 < y[test].sum() < len(test):
            fold_aucs.append(float(roc_auc_score(y[test], scores[test])))
    return CVResult(float(roc_auc_score(y, scores)), fold_aucs, scores)
