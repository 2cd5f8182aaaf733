"""Training patches of a cohort: one patch per lesion, PRL labels, positive oversampling.

Each subject is loaded once; its lesions are found (:func:`napari_deep_prl.lesions.find_lesions`)
and cut into patches (:func:`napari_deep_prl.patches.extract_patches`). A lesion's label is the
ground truth of its subject's ``prl_mask`` (PRL when most of its voxels are in it). As in the
paper, every PRL is also cut with its centre shifted by ``oversample_shift`` voxels, here along
each axis in both directions (6 extra patches per PRL): the rare class gets more, slightly
different views. Those copies are flagged ``shifted`` so validation and testing use only the
original patch of each lesion (:meth:`PatchSet.originals`).

Training holds every patch in memory (each epoch draws from all of them): 3 × 28³ float32 =
0.26 MB a patch, so about 2.3 GB for the paper's cohort of 5,900 lesions with its oversampled
PRLs. A subject may bring at most :data:`MAX_TRAINING_LESIONS` labelled lesions: more is a
mask of specks or noise, and would cost gigabytes before anything is learnt.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from napari_deep_prl.errors import InputError
from napari_deep_prl.io import SubjectPaths, require_truth
from napari_deep_prl.lesions import find_lesions
from napari_deep_prl.patches import CHANNELS, PatchConfig, extract_patches, warn_if_outgrown
from napari_deep_prl.progress import Progress

#: Labelled lesions one subject may bring to training (an MS brain has tens, rarely hundreds).
MAX_TRAINING_LESIONS = 1000


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

    @classmethod
    def from_parts(cls, parts: list[tuple[np.ndarray, ...]], config: PatchConfig) -> PatchSet:
        """One set from per-subject ``(x, y, subject, lesion, shifted)`` parts (:func:`subject_patches`).

        Empties ``parts``, freeing each part's patches once copied: the patches are never held
        twice, as concatenating them would.
        """
        y, subject, lesion, shifted = (np.concatenate(column) for column in list(zip(*parts))[1:])
        x = np.empty((len(y), *parts[0][0].shape[1:]), dtype=np.float32)
        start = 0
        while parts:
            part = parts.pop(0)[0]
            x[start:start + len(part)] = part
            start += len(part)
        return cls(x, y, subject, lesion, shifted, config)

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
    return PatchSet.from_parts(parts, config)


def subject_patches(subject, lesions, table, config: PatchConfig, shift: int) -> tuple[np.ndarray, ...]:
    """One subject's patches, labels from ``table["prl"]``, ids and shift flags (positives oversampled).

    Refuses a subject with more than :data:`MAX_TRAINING_LESIONS` labelled lesions before
    cutting any patch.
    """
    if len(table) > MAX_TRAINING_LESIONS:
        megabytes = len(table) * len(CHANNELS) * config.size**3 * 4 / 1e6
        raise InputError(f"subject {subject.subject}: {len(table):,} labelled lesions, more than the "
                         f"{MAX_TRAINING_LESIONS:,} per subject that training takes (their {config.size}³ "
                         f"patches would hold at least {megabytes:,.0f} MB in memory). A mask with that many is "
                         "usually specks or noise: check it (e.g. remove components of a few voxels), or "
                         "label fewer of its lesions")
    ids = table["lesion"].to_numpy()
    labels = table["prl"].to_numpy(bool)
    positives = ids[labels] if shift else ids[:0]
    offsets = oversampling_shifts(shift) if shift else np.zeros((0, 3), np.int64)
    # the originals, then every PRL shifted by each offset in turn: one array, cut in one call
    rows = np.concatenate([ids, np.tile(positives, len(offsets))])
    shifts = np.concatenate([np.zeros((ids.size, 3), np.int64), np.repeat(offsets, positives.size, axis=0)])
    x = extract_patches(subject, lesions, config, ids=rows, shift=shifts)
    shifted = np.arange(rows.size) >= ids.size
    y = np.concatenate([labels, np.ones(rows.size - ids.size, bool)]).astype(np.int8)
    return x, y, np.full(rows.size, subject.subject, dtype=object), rows.astype(np.int64), shifted
