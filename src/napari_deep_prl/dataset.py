"""Training patches of a cohort: one patch per lesion, PRL labels, positive oversampling.

Each subject is loaded once; its lesions are found (:func:`napari_deep_prl.lesions.find_lesions`)
and cut into patches (:func:`napari_deep_prl.patches.extract_patches`). A lesion's label is the
ground truth of its subject's ``prl_mask`` (PRL when most of its voxels are in it). As in the
paper, every PRL is also cut with its centre shifted by ``oversample_shift`` voxels, here along
each axis in both directions (6 extra patches per PRL): the rare class gets more, slightly
different views. Those copies are flagged ``shifted`` so validation and testing use only the
original patch of each lesion (:meth:`PatchSet.originals`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from napari_deep_prl.errors import InputError
from napari_deep_prl.io import SubjectPaths, require_truth
from napari_deep_prl.lesions import find_lesions
from napari_deep_prl.patches import PatchConfig, extract_patches, subject_scaling, warn_if_outgrown
from napari_deep_prl.progress import Progress


@dataclass
class PatchSet:
    """Patches ``x`` (n, 3, s, s, s) with labels ``y`` (1 PRL, 0 not) and where they come from."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    lesion: np.ndarray
    shifted: np.ndarray
    config: PatchConfig

    def __len__(self) -> int:
        return len(self.y)

    def take(self, keep: np.ndarray) -> PatchSet:
        """The patches where ``keep`` (a boolean mask or indices) selects them."""
        return replace(self, x=self.x[keep], y=self.y[keep], subject=self.subject[keep],
                       lesion=self.lesion[keep], shifted=self.shifted[keep])

    def select(self, subjects: Sequence[str]) -> PatchSet:
        """The patches of these subjects (unknown ids are an error: a typo loses a patient)."""
        unknown = sorted(set(subjects) - set(self.subject.tolist()))
        if unknown:
            raise InputError(f"no patches for subject(s) {', '.join(unknown[:5])}; "
                             "check the subject ids against the cohort manifest")
        return self.take(np.isin(self.subject, list(subjects)))

    def originals(self) -> PatchSet:
        """One patch per lesion, without the shifted copies: for validation and testing."""
        return self.take(~self.shifted)

    @property
    def subjects(self) -> list[str]:
        """Subject ids in order of first appearance."""
        return list(dict.fromkeys(self.subject.tolist()))

    def prl_counts(self) -> dict[str, int]:
        """Number of PRLs (original patches) of each subject, zero included."""
        original = ~self.shifted
        return {s: int(self.y[original & (self.subject == s)].sum()) for s in self.subjects}


def oversampling_shifts(distance: int) -> np.ndarray:
    """The 6 centre shifts (±distance along each axis) of a PRL's extra patches."""
    eye = np.eye(3, dtype=np.int64) * distance
    return np.concatenate([eye, -eye])


def build_patchset(cohort: Sequence[SubjectPaths], config: PatchConfig = PatchConfig(), *,
                   oversample_shift: int = 5, exclude_confluent: bool = False,
                   flip_phase: bool = False) -> Generator[Progress, None, PatchSet]:
    """Patches and labels of every labelled lesion of the cohort (subjects need ground truth:
    a ``prl_mask`` or a ``prl_labels`` table).

    ``exclude_confluent`` leaves out lesions flagged confluent, as the paper did.
    ``oversample_shift=0`` turns positive oversampling off. ``flip_phase`` negates the phase of
    data whose paramagnetic shifts are bright (the package's convention is dark).
    """
    require_truth(cohort, "training")
    parts: list[tuple[np.ndarray, ...]] = []
    tables: list[pd.DataFrame] = []
    for step, paths in enumerate(cohort):
        subject = paths.load(flip_phase=flip_phase)
        lesions = find_lesions(subject)
        table = lesions.table[lesions.table["prl"].notna()]  # lesions a label table leaves out: not used
        if exclude_confluent:
            table = table[~table["confluent"].to_numpy(bool)]
        if len(table):
            parts.append(subject_patches(subject, lesions, table, config, oversample_shift))
        tables.append(table)
        yield Progress(step + 1, len(cohort), "patches", paths.subject)
    if not parts:
        raise InputError("the cohort has no lesions to train on; check the lesion masks")
    warn_if_outgrown(tables, config.size, "Train with a larger --patch-size (slower: the cost grows "
                     "with its cube).")
    x, y, subject_ids, lesion_ids, shifted = (np.concatenate(column) for column in zip(*parts))
    return PatchSet(x, y, subject_ids, lesion_ids, shifted, config)


def subject_patches(subject, lesions, table, config: PatchConfig, shift: int) -> tuple[np.ndarray, ...]:
    """One subject's patches, labels from ``table["prl"]``, ids and shift flags (positives oversampled)."""
    ids = table["lesion"].to_numpy()
    labels = table["prl"].to_numpy(bool)
    scaling = subject_scaling(subject, lesions, config) if config.normalisation == "subject" else None
    x = [extract_patches(subject, lesions, config, ids=ids, scaling=scaling)]
    y, lesion_ids, shifted = [labels], [ids], [np.zeros(ids.size, bool)]
    positives = ids[labels]
    if shift and positives.size:
        for offset in oversampling_shifts(shift):
            x.append(extract_patches(subject, lesions, config, ids=positives, shift=offset, scaling=scaling))
            y.append(np.ones(positives.size, bool))
            lesion_ids.append(positives)
            shifted.append(np.ones(positives.size, bool))
    n = sum(len(v) for v in y)
    return (np.concatenate(x), np.concatenate(y).astype(np.int8), np.full(n, subject.subject, dtype=object),
            np.concatenate(lesion_ids).astype(np.int64), np.concatenate(shifted))
