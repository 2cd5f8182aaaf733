"""An APRL-like radiomics baseline: first-order phase statistics per lesion + logistic regression.

APRL (Lou et al.) classifies lesions from first-order radiomic features of the phase in the
lesion and around it. This module computes such features in three regions of every lesion —
the **core** (lesion voxels deeper than ``rim_mm`` from its edge), the inner **rim** band (lesion
voxels within ``rim_mm`` of the edge) and the outer **shell** (non-lesion voxels within
``shell_mm`` outside the edge, other lesions left out) — plus the MP2RAGE contrast of the lesion
against its shell and the lesion volume. Phase is divided by the subject's robust phase scale
(1.4826 x median absolute value within the brain), so features compare across field strengths
and echo times.

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
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.lesions import Lesions, find_lesions

REGIONS = ("core", "rim", "shell")
PHASE_STATS = ("mean", "sd", "p10", "p50", "p90", "skew")
#: Columns identifying a lesion rather than describing it.
ID_COLUMNS = ("subject", "lesion")


def radiomics_features(subject: Subject, lesions: Lesions, *, rim_mm: float = 1.5,
                       shell_mm: float = 3.0) -> pd.DataFrame:
    """One row per lesion: ``subject, lesion`` then the feature columns (see module doc)."""
    zooms = subject.zooms
    scale = _phase_scale(subject.phase)
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
        phase = subject.phase[box] / scale
        rim = lesion & (depth <= rim_mm)
        core = lesion & (depth > rim_mm)
        shell = (labels == 0) & (outside <= shell_mm) & (phase != 0)
        regions = {"core": core if core.any() else lesion, "rim": rim, "shell": shell}
        features: dict[str, object] = {"subject": subject.subject, "lesion": int(row.lesion)}
        for name, region in regions.items():
            features.update(_phase_stats(phase[region], name))
        features["rim_minus_shell"] = features["rim_mean"] - features["shell_mean"]
        features["core_minus_rim"] = features["core_mean"] - features["rim_mean"]
        t1 = subject.mp2rage[box]
        shell_t1 = float(np.mean(t1[shell])) if shell.any() else np.nan
        features["t1_lesion_ratio"] = float(np.mean(t1[lesion])) / (shell_t1 + 1e-6)
        features["t1_rim_ratio"] = float(np.mean(t1[rim])) / (shell_t1 + 1e-6)
        features["log_volume_mm3"] = float(np.log(row.volume_mm3))
        rows.append(features)
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, *feature_names()])
    return table.fillna({c: 0.0 for c in feature_names()})


def feature_names() -> list[str]:
    """The feature columns of :func:`radiomics_features`, in order."""
    names = [f"{region}_{stat}" for region in REGIONS for stat in PHASE_STATS]
    return names + ["rim_minus_shell", "core_minus_rim", "t1_lesion_ratio", "t1_rim_ratio",
                    "log_volume_mm3"]


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


def cohort_features(cohort: Sequence[SubjectPaths]) -> Generator[Progress, None, pd.DataFrame]:
    """Features of every lesion of a cohort (one subject in memory at a time), with ``prl``
    truth when the subjects have a PRL mask."""
    tables = []
    for i, paths in enumerate(cohort):
        subject = paths.load()
        lesions = find_lesions(subject)
        table = radiomics_features(subject, lesions)
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
