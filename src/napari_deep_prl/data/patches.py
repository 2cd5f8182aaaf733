"""Lesion-centred patches, the network's input.

Each lesion gives one cube of ``size`` voxels centred on its (rounded) centre of mass, with one
channel per image contrast of the model (``PatchConfig.contrasts``, in the canonical order of
:func:`~napari_deep_prl.data.contrasts.model_contrasts`: the structural images, then the
susceptibility image) and last this lesion's mask dilated by ``mask_dilation`` voxels
(:attr:`PatchConfig.channels`; the research protocol's are MP2RAGE, phase, mask). Voxels outside
the volume are zero in every channel (zero padding).

The susceptibility channel is **paramagnetic-dark** whatever the contrast: a phase enters as it
is (the package's convention), a QSM (paramagnetic-bright by definition) negated, so that a rim
looks the same to every model, and the phase's augmentation and normalisation serve both
(:data:`~napari_deep_prl.data.contrasts.SIGNS`; checkpoints record it).

Normalisation maps intensities to [0, 1] robustly to outliers, by the kind of contrast:

``"subject"``
    One scaling per subject, from the normal-appearing tissue around its lesions (the voxels of
    all lesion patches, lesions excluded): each structural image (MP2RAGE, T1w, FLAIR) from its
    1st..99th percentiles; the susceptibility image (phase in radians, QSM in ppm) symmetrically
    around its centre with ±:data:`PHASE_SIGMAS` robust standard deviations (1.4826 × median
    absolute deviation) mapped to [0, 1], the centre at 0.5. The contrast between a lesion and
    its surroundings survives: a faint rim stays faint, a strong one strong. This needs no brain
    mask and is insensitive to field strength and echo time, which scale the phase, and to a
    QSM's reference (CSF, white matter or the mean), which only shifts it. The susceptibility
    centre (``phase_centre``) is by default each patch's own tissue median (``"local"``): a
    constant offset or a slowly varying background field that phase filtering left behind then
    shifts nothing, and the robust SD is taken around those local centres. ``"zero"`` keeps 0
    (radians or ppm) at 0.5 (checkpoints of versions before this setting).
``"patch"``
    The paper's wording: each patch and channel scaled from its own 1st..99th percentiles. Every
    patch then spans [0, 1], whatever its contrast.

Other lesions inside a patch are left out of the mask channel by default (``other_lesions=
"exclude"``); ``"include"`` keeps them at 1 like the raw mask, ``"downweight"`` at 0.5 (as ALPaCA
does), so the network knows which lesion it is asked about.

Extraction is vectorised: one fancy-indexing gather per channel for a run of lesions at once,
runs of :data:`CHUNK_VOXELS` patch voxels, so that its temporary arrays stay the same size
whatever the number of lesions; the per-subject scaling samples the tissue around at most
:data:`SCALING_VOXELS` voxels' worth of lesions (spread over all of them).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.data.contrasts import DEFAULT_MODEL_CONTRASTS, SIGNS, model_contrasts, require_contrasts
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import Lesions

PHASE_SIGMAS = 4.0
#: Voxels of rim kept around a lesion when checking that it fits its patch.
RIM_MARGIN = 2
#: Share of lesions that may outgrow their patch before :func:`warn_if_outgrown` warns.
OUTGROWN_SHARE = 0.05
PERCENTILES = (1.0, 99.0)
OTHER_LESION_WEIGHTS = {"exclude": 0.0, "downweight": 0.5, "include": 1.0}
#: What a stored patch configuration meant by leaving out a setting added later.
ABSENT_SETTINGS = {"phase_centre": "zero", "contrasts": DEFAULT_MODEL_CONTRASTS}
#: Largest patch side, in voxels: a 96³ patch of three channels is 10.6 MB (float32), the
#: default 28³ one 0.26 MB; lesions at 0.5 mm fit in about 56.
MAX_PATCH_SIZE = 96
#: Patch voxels cut in one go (95 lesions of 28³): extraction's temporary arrays, about
#: 40 bytes a voxel, stay near 80 MB however many lesions a subject has.
CHUNK_VOXELS = 2**21
#: Sampled voxels behind a per-subject scaling: when a subject's lesions would give more,
#: the scaling samples an evenly spread subset of them (764 lesions at 28³; a brain has tens).
SCALING_VOXELS = 2**21

Normalisation = Literal["subject", "patch"]
OtherLesions = Literal["exclude", "downweight", "include"]
PhaseCentre = Literal["local", "zero"]


@dataclass(frozen=True)
class PatchConfig:
    """How patches are cut; stored in checkpoints so scoring cuts them the same way."""

    size: int = 28
    normalisation: Normalisation = "subject"
    mask_dilation: int = 1
    other_lesions: OtherLesions = "exclude"
    phase_centre: PhaseCentre = "local"
    #: The model's image contrasts, one channel each, in canonical order (see the module doc).
    contrasts: tuple[str, ...] = DEFAULT_MODEL_CONTRASTS

    def __post_init__(self) -> None:
        if isinstance(self.contrasts, str) or not isinstance(self.contrasts, Sequence):
            raise InputError(f"patch contrasts {self.contrasts!r}: give a list of contrast names, e.g. "
                             "['t1w', 'flair', 'phase'].")
        object.__setattr__(self, "contrasts", model_contrasts(self.contrasts, "the patch contrasts"))
        if not _whole(self.size) or not 4 <= self.size <= MAX_PATCH_SIZE:
            raise InputError(f"patch size {self.size!r}: give a whole number of voxels from 4 to "
                             f"{MAX_PATCH_SIZE} (default 28).")
        if self.normalisation not in ("subject", "patch"):
            raise InputError(f"unknown normalisation '{self.normalisation}'; use 'subject' or 'patch'.")
        if self.other_lesions not in OTHER_LESION_WEIGHTS:
            raise InputError(f"unknown other_lesions '{self.other_lesions}'; use "
                             + ", ".join(OTHER_LESION_WEIGHTS) + ".")
        if not _whole(self.mask_dilation) or not 0 <= self.mask_dilation <= self.size // 2:
            raise InputError(f"mask_dilation {self.mask_dilation!r}: give a whole number of voxels from 0 to "
                             f"half the patch size ({self.size // 2}; default 1).")
        if self.phase_centre not in ("local", "zero"):
            raise InputError(f"unknown phase_centre '{self.phase_centre}'; use 'local' or 'zero'.")

    @property
    def channels(self) -> tuple[str, ...]:
        """The patch channels in order: the image contrasts, then ``"mask"``."""
        return (*self.contrasts, "mask")

    @property
    def susceptibility(self) -> str:
        """The susceptibility contrast (``"phase"`` or ``"qsm"``): the last image channel."""
        return self.contrasts[-1]

    @property
    def structural(self) -> tuple[str, ...]:
        return self.contrasts[:-1]

    def to_dict(self) -> dict:
        return {**asdict(self), "contrasts": list(self.contrasts)}

    @classmethod
    def from_dict(cls, values: dict) -> PatchConfig:
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        return cls(**{**ABSENT_SETTINGS, **known})


def _whole(value: object) -> bool:
    """An integer, not a bool (``True`` is an int to Python, never a size to a user)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SubjectScaling:
    """Per-subject intensity scaling (see the module docstring)."""

    #: (1st, 99th) tissue percentiles of each structural image, in channel order.
    structural: tuple[tuple[float, float], ...]
    #: The susceptibility image's half-range: :data:`PHASE_SIGMAS` robust SDs.
    susceptibility_scale: float


def centres_of(lesions: Lesions, ids: np.ndarray | None = None) -> np.ndarray:
    """Rounded voxel centres of mass, (n, 3) int, of the given lesion ids (default: all)."""
    table = lesions.table if ids is None else lesions.table.set_index("lesion").loc[np.asarray(ids)].reset_index()
    return np.rint(table[["x", "y", "z"]].to_numpy(dtype=np.float64)).astype(np.int64)


def extract_patches(
    subject: Subject,
    lesions: Lesions,
    config: PatchConfig = PatchConfig(),
    *,
    ids: np.ndarray | None = None,
    shift: np.ndarray | tuple[int, int, int] = (0, 0, 0),
    scaling: SubjectScaling | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Patches ``(n, c, s, s, s)`` float32 in [0, 1] for the lesions ``ids`` (default all), their
    ``c`` channels :attr:`PatchConfig.channels`; the subject must have the config's contrasts.

    ``shift`` (3,) or (n, 3) moves each patch centre by whole voxels (positive oversampling).
    ``scaling`` reuses a subject scaling computed once (see :func:`subject_scaling`); ``mask``
    the mask channel of the same lesions and shift computed beforehand (:func:`mask_patches`:
    it needs no images, so it can run while they load). The patches are cut in runs of
    :data:`CHUNK_VOXELS` voxels into the returned array: memory beyond it stays one run's.
    """
    ids = _checked_ids(lesions, ids)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (ids.size, 3))
    out = np.empty((ids.size, len(config.channels)) + (config.size,) * 3, dtype=np.float32)
    if ids.size == 0:
        return out
    require_contrasts([(subject.subject, subject.images)], config.contrasts, "cutting patches")
    if config.normalisation == "subject":
        scaling = scaling or subject_scaling(subject, lesions, config)
    for run in chunks(ids.size, config.size):
        _cut(subject, lesions, config, ids[run], shift[run], scaling, out[run], with_mask=mask is None)
        if mask is not None:
            out[run, -1] = mask[run]
    return out


def chunk_length(size: int) -> int:
    """Patches of side ``size`` cut, or scored, at once: :data:`CHUNK_VOXELS` voxels' worth."""
    return max(1, CHUNK_VOXELS // size**3)


def chunks(n: int, size: int) -> Iterator[slice]:
    """``n`` patches of side ``size`` as consecutive runs of :func:`chunk_length` (one empty run
    when ``n`` is 0, so that a subject without lesions still gives an empty batch)."""
    step = chunk_length(size)
    return (slice(start, min(start + step, n)) for start in range(0, max(n, 1), step))


def patch_runs(subject: Subject, lesions: Lesions, config: PatchConfig = PatchConfig(), *,
               first_mask: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """All the subject's patches (:func:`extract_patches`, lesions in table order), a run of
    :func:`chunk_length` lesions at a time: scoring one run before cutting the next keeps
    memory the same whatever the lesion count. ``first_mask``: the first run's mask channel,
    when cut beforehand (:func:`mask_patches`)."""
    scaling = subject_scaling(subject, lesions, config) if len(lesions) and config.normalisation == "subject" else None
    for i, run in enumerate(chunks(len(lesions), config.size)):
        yield extract_patches(subject, lesions, config, ids=lesions.ids[run], scaling=scaling,
                              mask=first_mask if i == 0 else None)


def _cut(subject: Subject, lesions: Lesions, config: PatchConfig, ids: np.ndarray, shift: np.ndarray,
         scaling: SubjectScaling | None, out: np.ndarray, *, with_mask: bool) -> None:
    """Cut the patches of ``ids`` into ``out``; the mask channel only ``with_mask``."""
    index, inside = _patch_index(_centres(lesions, ids, shift), config.size, subject.shape)
    for channel, contrast in enumerate(config.structural):
        values = _gather(subject.images[contrast], index, inside)
        if config.normalisation == "subject":
            low, high = scaling.structural[channel]
            values = np.clip((values - low) / (high - low), 0, 1)
        else:
            values = _patchwise_minmax(values)
        out[:, channel] = values * inside  # zero padding
    phase = _susceptibility(subject, config, index, inside)
    if config.normalisation == "subject":
        if config.phase_centre == "local":  # sampled at every second voxel, as the scaling
            sampled, sampled_inside = tuple(axis[:, ::2] for axis in index), inside[:, ::2, ::2, ::2]
            tissue = sampled_inside & (_gather(lesions.labels, sampled, sampled_inside) == 0)
            phase -= _tissue_medians(phase[:, ::2, ::2, ::2], tissue)[:, None, None, None]
        phase = np.clip(0.5 + phase / (2 * scaling.susceptibility_scale), 0, 1)
    else:
        phase = _patchwise_minmax(phase)
    out[:, -2] = phase * inside
    if with_mask:
        out[:, -1] = _mask_channel_at(lesions, config, ids, index, inside)


def _susceptibility(subject: Subject, config: PatchConfig, index: tuple[np.ndarray, ...],
                    inside: np.ndarray) -> np.ndarray:
    """The susceptibility image's patch voxels, paramagnetic-dark (a QSM negated: :data:`SIGNS`)."""
    values = _gather(subject.images[config.susceptibility], index, inside)
    if SIGNS[config.susceptibility][1]:
        np.negative(values, out=values)
    return values


def image_patches(volume: np.ndarray, lesions: Lesions, size: int, *, ids: np.ndarray | None = None) -> np.ndarray:
    """The voxels of ``volume`` (an image on the lesions' grid) in each lesion's patch ``(n, s, s,
    s)``, as the image reads them — no scaling, no sign change, zero outside the volume: for
    pictures in an image's own units (the network's channels are :func:`extract_patches`')."""
    ids = _checked_ids(lesions, ids)
    index, inside = _patch_index(_centres(lesions, ids, (0, 0, 0)), size, volume.shape)
    return _gather(volume, index, inside).astype(np.float32, copy=False)


def mask_patches(lesions: Lesions, config: PatchConfig = PatchConfig(), *, ids: np.ndarray | None = None,
                 shift: np.ndarray | tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """The mask channel ``(n, s, s, s)`` of :func:`extract_patches` (this lesion dilated, the
    others weighted by ``config.other_lesions``), from the lesion labels alone."""
    ids = _checked_ids(lesions, ids)
    if ids.size == 0:
        return np.zeros((0,) + (config.size,) * 3, dtype=np.float32)
    index, inside = _patch_index(_centres(lesions, ids, shift), config.size, lesions.labels.shape)
    return _mask_channel_at(lesions, config, ids, index, inside)


def _mask_channel_at(lesions: Lesions, config: PatchConfig, ids: np.ndarray, index: tuple[np.ndarray, ...],
                     inside: np.ndarray) -> np.ndarray:
    mask = _mask_channel(_gather(lesions.labels, index, inside), ids, config)
    mask *= inside  # zero padding, also where the dilated mask spills out of the volume
    return mask


def _checked_ids(lesions: Lesions, ids: np.ndarray | None) -> np.ndarray:
    ids = lesions.ids if ids is None else np.asarray(ids)
    unknown = np.setdiff1d(ids, lesions.ids)
    if unknown.size:
        subject = lesions.table["subject"].iloc[0] if len(lesions) else "?"
        raise InputError(f"subject {subject}: no lesion with id(s) {unknown[:10].tolist()}.")
    return ids


def _centres(lesions: Lesions, ids: np.ndarray, shift: np.ndarray | tuple[int, int, int]) -> np.ndarray:
    return centres_of(lesions, ids) + np.broadcast_to(np.asarray(shift, dtype=np.int64), (ids.size, 3))


def outgrown(table: pd.DataFrame, size: int, margin: int = RIM_MARGIN) -> np.ndarray:
    """Per lesion row: does the lesion plus ``margin`` voxels of rim reach past its patch?

    Data finer than the ~1 mm the default patch is sized for make lesions wider in voxels; the
    network then never sees their rims whole."""
    return _reach(table) + margin > size - 1 - size // 2  # the patch spans -size//2 .. size-1-size//2


def warn_if_outgrown(tables: Sequence[pd.DataFrame], size: int, advice: str) -> None:
    """Warn (:class:`InputWarning`) when more than :data:`OUTGROWN_SHARE` of the lesions in
    ``tables`` outgrow a ``size``-voxel patch, suggesting a patch that holds 95 % of them."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return
    table = pd.concat(tables)
    n = int(outgrown(table, size).sum())
    if n <= OUTGROWN_SHARE * len(table):
        return
    suggested = 4 * int(np.ceil((2 * (np.percentile(_reach(table), 95) + RIM_MARGIN + 1)) / 4))
    warnings.warn(f"{n} of {len(table)} lesions ({n / len(table):.0%}) are too large for the {size}-voxel "
                  f"patch: with {RIM_MARGIN} voxels of rim they reach past its edge, so part of their rim "
                  f"is cut off (images finer than about 1 mm make lesions wider in voxels). {advice} "
                  f"A patch of {suggested} voxels holds 95 % of them.", InputWarning, stacklevel=3)


def _reach(table: pd.DataFrame) -> np.ndarray:
    """Voxels from each lesion's (rounded) centre to its farthest bounding-box face."""
    reach = [np.maximum(np.rint(table[a]) - table[f"bbox_{a}0"], table[f"bbox_{a}1"] - 1 - np.rint(table[a]))
             for a in "xyz"]
    return np.max(np.stack([r.to_numpy(dtype=float) for r in reach]), axis=0)


def subject_scaling(subject: Subject, lesions: Lesions, config: PatchConfig = PatchConfig()) -> SubjectScaling:
    """Robust scaling from the tissue around the subject's lesions (lesion voxels excluded): all
    of them, or an evenly spread :data:`SCALING_VOXELS` worth when there are more."""
    if len(lesions) == 0:
        raise InputError(f"subject {subject.subject}: no lesions, so no per-subject scaling can be computed.")
    most = max(1, SCALING_VOXELS // len(range(0, config.size, 2)) ** 3)
    centres = centres_of(lesions)
    if len(centres) > most:
        centres = centres[np.linspace(0, len(centres) - 1, most).round().astype(int)]
    # A stride of 2 samples the neighbourhood well enough at an eighth of the cost.
    require_contrasts([(subject.subject, subject.images)], config.contrasts, "cutting patches")
    index, inside = _patch_index(centres, config.size, subject.shape, stride=2)
    tissue = inside & (_gather(lesions.labels, index, inside) == 0)
    phase = _susceptibility(subject, config, index, inside)
    if config.phase_centre == "local":
        phase -= _tissue_medians(phase, tissue)[:, None, None, None]
    phase = phase[tissue]
    if phase.size < 10:
        share = float(np.mean(lesions.labels > 0))
        raise InputError(f"subject {subject.subject}: too little tissue around the lesions to scale intensities "
                         f"(the lesion mask covers {share:.0%} of the image). Check that the mask is the "
                         "white-matter lesion mask, not a brain mask; a model trained with per-patch "
                         "normalisation (train --normalisation patch) needs no surrounding tissue.")
    ranges = []
    for contrast in config.structural:
        low, high = np.percentile(_gather(subject.images[contrast], index, inside)[tissue], PERCENTILES)
        if high - low <= 0:
            high = low + 1.0
        ranges.append((float(low), float(high)))
    mad = float(np.median(np.abs(phase - np.median(phase))))
    phase_scale = PHASE_SIGMAS * 1.4826 * mad
    if phase_scale <= 0:
        phase_scale = float(np.max(np.abs(phase))) or 1.0
    return SubjectScaling(tuple(ranges), phase_scale)


def _tissue_medians(phase: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Median phase of each patch's tissue voxels; 0 for a patch without any."""
    return np.array([np.median(p[t]) if t.any() else 0.0 for p, t in zip(phase, tissue)],
                    dtype=phase.dtype)


def _patch_index(centres: np.ndarray, size: int, shape: tuple[int, ...],
                 stride: int = 1) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Voxel coordinates along each axis (clipped into the volume), ``(n, k)`` each, and the
    in-volume mask ``(n, k, k, k)``."""
    offsets = np.arange(size)[::stride] - size // 2
    axes = [centres[:, a, None] + offsets[None, :] for a in range(3)]  # (n, k) per axis
    valid = [(ax >= 0) & (ax < shape[a]) for a, ax in enumerate(axes)]
    coords = tuple(np.clip(ax, 0, shape[a] - 1) for a, ax in enumerate(axes))
    inside = valid[0][:, :, None, None] & valid[1][:, None, :, None] & valid[2][:, None, None, :]
    return coords, inside


def _gather(volume: np.ndarray, coords: tuple[np.ndarray, ...], inside: np.ndarray) -> np.ndarray:
    """One ``take`` per channel for all patches at once; outside voxels are 0.

    Indexes the volume in its own memory order: NIfTI data arrive Fortran-ordered, and a
    C-order ``ravel`` would copy the whole volume for every channel (about a third of the
    extraction time of a brain-sized subject).
    """
    if not (volume.flags.c_contiguous or volume.flags.f_contiguous):
        volume = np.ascontiguousarray(volume)
    x, y, z = (c * (step // volume.itemsize) for c, step in zip(coords, volume.strides))
    flat = x[:, :, None, None] + y[:, None, :, None] + z[:, None, None, :]
    values = volume.ravel(order="K").take(flat)
    values[~inside] = 0
    return values.astype(np.float32, copy=False) if values.dtype.kind == "f" else values


def _patchwise_minmax(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    low, high = np.percentile(flat, PERCENTILES, axis=1)
    span = np.where(high > low, high - low, 1.0)
    return np.clip((x - low[:, None, None, None]) / span[:, None, None, None], 0, 1)


def _mask_channel(labels: np.ndarray, ids: np.ndarray, config: PatchConfig) -> np.ndarray:
    own = _dilate_by_faces(labels == ids[:, None, None, None], config.mask_dilation)
    mask = own.astype(np.float32)
    weight = OTHER_LESION_WEIGHTS[config.other_lesions]
    if weight:
        others = (labels > 0) & ~own
        mask += weight * others
    return mask


def _dilate_by_faces(masks: np.ndarray, steps: int) -> np.ndarray:
    """Dilate each patch of ``masks`` (n, s, s, s) ``steps`` times by its 6 face neighbours (the
    same as scipy's ``binary_dilation`` with the L1 ball of radius ``steps``, patch by patch).

    Shifted in-place ORs: 8x faster than ``binary_dilation`` here, and numpy releases the GIL in
    them, so cutting mask channels beside image loading (as scoring does) does not stall it.
    """
    for _ in range(steps):
        grown = masks.copy()
        for axis in (1, 2, 3):
            head, tail = [slice(None)] * 4, [slice(None)] * 4
            head[axis], tail[axis] = slice(None, -1), slice(1, None)
            grown[tuple(tail)] |= masks[tuple(head)]
            grown[tuple(head)] |= masks[tuple(tail)]
        masks = grown
    return masks
