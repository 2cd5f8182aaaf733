"""Training patches of a cohort: one patch per lesion, PRL labels, positive oversampling.

Each subject is loaded once, only the images of the patch contrasts (``PatchConfig.contrasts``;
a subject lacking one is refused before any is read); its lesions are found
(:func:`napari_deep_prl.data.lesions.find_lesions`) and cut into patches
(:func:`napari_deep_prl.data.patches.extract_patches`). A lesion's label is the ground truth of
its subject's ``prl_mask`` (PRL when most of its voxels are in it). As in the paper, every PRL
is also cut with its centre shifted by ``oversample_shift`` voxels, here along each axis in both
directions (6 extra patches per PRL): the rare class gets more, slightly different views. Those
copies are flagged ``shifted`` so validation and testing use only the original patch of each
lesion (:meth:`PatchSet.originals`).

Memory follows the images, not the lesion count. Every epoch draws from every patch, so each
subject holds whichever takes less memory (:func:`subject_patches`): its patches, cut once
(3 × 28³ float32 = 0.26 MB a patch of the research protocol's channels; a brain of tens of
lesions), or the volumes they are cut from (its contrasts' images and the lesion labels: 12
bytes a voxel for MP2RAGE and phase), from which its patches are cut each
time they are read (:class:`CutOnDemand`), exactly as they would have been cut beforehand. A
subject's share of the set is thus never more than its volumes, whatever its lesion count, and
everything reads patches the same way: ``patches.x[rows]`` (:class:`Patches`), a batch or a run
at a time.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.cohort import require_truth
from napari_deep_prl.data.contrasts import require_contrasts
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.lesions import Lesions, find_lesions
from napari_deep_prl.data.patches import (
    PatchConfig,
    SubjectScaling,
    extract_patches,
    subject_scaling,
    warn_if_outgrown,
)
from napari_deep_prl.data.resample import grids_record


@dataclass(frozen=True)
class CutOnDemand:
    """A subject's patches (lesion ``ids``, centres moved by ``shifts``), cut from its volumes
    whenever they are read: ``block[rows]`` is ``extract_patches`` of those rows, with the
    subject's scaling computed once, as cutting them all beforehand would give."""

    #: The images patches are cut from, with the lesion labels as its mask (nothing else kept).
    subject: Subject
    lesions: Lesions
    config: PatchConfig
    scaling: SubjectScaling | None
    ids: np.ndarray
    shifts: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), len(self.config.channels), *(self.config.size,) * 3)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return extract_patches(self.subject, self.lesions, self.config, ids=self.ids[rows],
                               shift=self.shifts[rows], scaling=self.scaling)


#: A subject's patches: an array of them, cut beforehand, or cut when read.
Block = np.ndarray | CutOnDemand


@dataclass(frozen=True)
class Patches:
    """The patch array ``(n, c, s, s, s)`` float32 of a :class:`PatchSet`, read by rows.

    ``x[rows]`` (a slice, indices or a boolean mask) returns those patches as a new array; it is
    the one way patches are read (training batches, validation and scoring runs, caches), so a
    subject that keeps its volumes (:class:`CutOnDemand`) has its rows cut right there. Rows
    point into per-subject blocks: selecting rows (:meth:`take`) copies no patch.
    """

    blocks: tuple[Block, ...] = field(repr=False)
    #: Each row's block, and its row in that block.
    block: np.ndarray = field(repr=False)
    row: np.ndarray = field(repr=False)
    #: Channels read as zeros (the RimNet-like baseline's blank mask, :meth:`zeroing`).
    zeroed: tuple[int, ...] = ()

    @classmethod
    def of(cls, blocks: Sequence[Block]) -> Patches:
        """All the rows of ``blocks`` (one or more), in order."""
        sizes = [len(b) for b in blocks]
        return cls(tuple(blocks), np.repeat(np.arange(len(blocks)), sizes),
                   np.concatenate([np.arange(n) for n in sizes]))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.blocks[0].shape[1:])

    def __len__(self) -> int:
        return len(self.block)

    def __getitem__(self, rows: slice | np.ndarray | int) -> np.ndarray:
        index = np.arange(len(self))[rows]
        if index.ndim == 0:
            return self[index[None]][0]
        block, row = self.block[index], self.row[index]
        out = np.empty((index.size, *self.shape[1:]), dtype=np.float32)
        for b in np.unique(block):
            at = block == b
            out[at] = self.blocks[b][row[at]]
        if self.zeroed:
            out[:, list(self.zeroed)] = 0.0
        return out

    def take(self, keep: np.ndarray) -> Patches:
        """The rows ``keep`` selects (a boolean mask or indices), sharing the blocks."""
        return replace(self, block=self.block[keep], row=self.row[keep])

    def zeroing(self, channel: int) -> Patches:
        """The same patches with ``channel`` read as zeros."""
        return replace(self, zeroed=tuple(sorted({*self.zeroed, channel})))


@dataclass
class PatchSet:
    """Patches ``x`` (n, c, s, s, s) with labels ``y`` (1 PRL, 0 not) and where they come from.

    ``x`` is read by rows (:class:`Patches`); an array given here becomes one block.
    """

    x: Patches
    y: np.ndarray
    subject: np.ndarray
    lesion: np.ndarray
    shifted: np.ndarray
    config: PatchConfig
    #: Whether each patch's lesion is a part of a split confluent component (``None``: unknown,
    #: a set cached before parts were recorded).
    part: np.ndarray | None = None
    #: The grids the subjects' images came on (:func:`~napari_deep_prl.data.resample.grids_record`);
    #: empty when unknown (patches made in memory). Checkpoints record it.
    grids: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Patches):
            self.x = Patches.of([self.x])

    def __len__(self) -> int:
        return len(self.y)

    def take(self, keep: np.ndarray) -> PatchSet:
        """The patches where ``keep`` (a boolean mask or indices) selects them (no patch copied)."""
        return replace(self, x=self.x.take(keep), y=self.y[keep], subject=self.subject[keep],
                       lesion=self.lesion[keep], shifted=self.shifted[keep],
                       part=None if self.part is None else self.part[keep])

    def select(self, subjects: Sequence[str]) -> PatchSet:
        """The patches of these subjects (unknown ids are an error: a typo loses a patient)."""
        unknown = sorted(set(subjects) - set(self.subject.tolist()))
        if unknown:
            raise InputError(f"no patches for subject(s) {', '.join(unknown[:5])}; "
                             "check the subject ids against the cohort manifest")
        return self.take(np.isin(self.subject, list(subjects)))

    @classmethod
    def from_parts(cls, parts: list[tuple], config: PatchConfig, grids: dict[str, Any] | None = None) -> PatchSet:
        """One set from per-subject ``(x, y, subject, lesion, shifted, part)`` blocks
        (:func:`subject_patches`), each subject's patches a block of it."""
        blocks, *columns = zip(*parts)
        y, subject, lesion, shifted, part = (np.concatenate(column) for column in columns)
        return cls(Patches.of(blocks), y, subject, lesion, shifted, config, part, grids or {})

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
    data whose paramagnetic shifts are bright (the package's convention is dark). Only the
    images of ``config.contrasts`` are read; the grids they came on are recorded (``grids``).
    """
    require_truth(cohort, "training")
    require_contrasts(((p.subject, (c for c, _ in p.images)) for p in cohort), config.contrasts,
                      "training on these contrasts")
    parts: list[tuple] = []
    tables: list[pd.DataFrame] = []
    grids: list[tuple] = []
    for step, paths in enumerate(cohort):
        subject = paths.load(flip_phase=flip_phase, contrasts=config.contrasts)
        grids.append((subject.reference, subject.grids))
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
    return PatchSet.from_parts(parts, config, grids_record(grids))


def subject_patches(subject: Subject, lesions: Lesions, table: pd.DataFrame, config: PatchConfig,
                    shift: int) -> tuple:
    """One subject's patches (a :data:`Block`), labels from ``table["prl"]``, ids, shift flags
    (positives oversampled) and confluent-part flags.

    The patches are cut now when they take no more memory than the volumes they are cut from
    (:func:`volume_bytes`); otherwise the volumes are kept and the patches cut when read
    (:class:`CutOnDemand`), so that a subject of thousands of lesions costs its images, not
    gigabytes of patches.
    """
    ids = table["lesion"].to_numpy()
    labels = table["prl"].to_numpy(bool)
    positives = ids[labels] if shift else ids[:0]
    offsets = oversampling_shifts(shift) if shift else np.zeros((0, 3), np.int64)
    # the originals, then every PRL shifted by each offset in turn
    rows = np.concatenate([ids, np.tile(positives, len(offsets))])
    shifts = np.concatenate([np.zeros((ids.size, 3), np.int64), np.repeat(offsets, positives.size, axis=0)])
    if patch_bytes(rows.size, config) <= volume_bytes(subject, lesions, config):
        x = extract_patches(subject, lesions, config, ids=rows, shift=shifts)
    else:
        scaling = subject_scaling(subject, lesions, config) if config.normalisation == "subject" else None
        images = Subject(subject.subject, {c: subject.images[c] for c in config.contrasts}, lesions.labels,
                         subject.affine)
        x = CutOnDemand(images, lesions, config, scaling, rows, shifts)
    shifted = np.arange(rows.size) >= ids.size
    y = np.concatenate([labels, np.ones(rows.size - ids.size, bool)]).astype(np.int8)
    split = table["split_from"].to_numpy() > 0
    part = np.concatenate([split, np.tile(split[labels], len(offsets))])
    return x, y, np.full(rows.size, subject.subject, dtype=object), rows.astype(np.int64), shifted, part


def patch_bytes(n: int, config: PatchConfig) -> int:
    """Memory of ``n`` float32 patches of ``config``'s size and channels."""
    return n * len(config.channels) * config.size**3 * np.dtype(np.float32).itemsize


def volume_bytes(subject: Subject, lesions: Lesions, config: PatchConfig) -> int:
    """Memory of the volumes patches are cut from: the images of ``config``'s contrasts and the
    lesion labels."""
    return sum(subject.images[c].nbytes for c in config.contrasts) + lesions.labels.nbytes
