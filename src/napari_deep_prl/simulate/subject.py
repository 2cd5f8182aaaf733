"""One synthetic subject: anatomy + lesions -> phase, MP2RAGE, masks, the extra contrasts
(FLAIR, magnitude) and the per-lesion truth.

Randomness comes from ``numpy.random.SeedSequence([seed, index])``, split into one stream for
the acquisition parameters, one for the phantom and one per extra contrast, so subject ``index``
of cohort ``seed`` is the same whether it is simulated alone or within its cohort, fixing an
option (say the noise level) does not reshuffle the anatomy drawn for a given grid, and the
extra contrasts asked for change nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import lesion_table_from_labels
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.data.resample import Grid
from napari_deep_prl.simulate.anatomy import VEIN_CHI_PPM, Anatomy, make_anatomy
from napari_deep_prl.simulate.grids import centred_affine
from napari_deep_prl.simulate.lesion_kinds import (
    LesionPaint,
    LesionSpec,
    draw_specs,
    paint_lesions,
)
from napari_deep_prl.simulate.params import SubjectParams, draw_params, validate
from napari_deep_prl.simulate.physics import (
    background_field,
    field_ppm,
    flair_image,
    highpass,
    magnitude_image,
    mp2rage_image,
    phase_noise,
    t2star_magnitude,
)

#: Truth-table columns added to the lesion table's (see ``lesions.TABLE_COLUMNS``).
TRUTH_COLUMNS = ("kind", "shape", "n_parts", "rim_coverage", "rim_width_mm", "chi_rim_ppm",
                 "chi_core_ppm", "t1_hypo", "central_vein", "adjacent_vein")


#: How each display-only contrast is made (see docs/simulator.md); keys in the order written.
CONTRAST_MAKERS: dict[str, Callable[[Anatomy, LesionPaint, SubjectParams, np.random.Generator], np.ndarray]] = {
    "flair": lambda anatomy, paint, params, rng: flair_image(anatomy, paint.owner, params.bias, params.t1_noise, rng),
    "magnitude": lambda anatomy, paint, params, rng: t2star_magnitude(
        anatomy, paint.owner, paint.chi, field_strength_t=params.field_strength_t, te_ms=params.te_ms,
        bias=params.bias, noise=params.noise, rng=rng),
}
#: The extra contrasts the simulator makes (each a manifest column named by its contrast).
SIMULATED_CONTRASTS = tuple(CONTRAST_MAKERS)
#: Stored in each image's NIfTI description, by manifest column (the phase's says its sign).
DESCRIPTIONS = {
    "phase": "deep-prl sim: filtered phase (rad), paramagnetic = negative (dark)",
    "mp2rage": "deep-prl sim: MP2RAGE UNI-like, [0, 1]",
    "mask": "deep-prl sim: lesion mask (binary)",
    "prl_mask": "deep-prl sim: voxels of PRLs",
    "flair": "deep-prl sim: FLAIR-like, CSF suppressed, lesions bright",
    "magnitude": "deep-prl sim: T2*-weighted magnitude of the phase's echo",
}


@dataclass
class Simulated:
    """A simulated subject, its per-lesion ground truth and the parameters that made it."""

    subject: Subject
    truth: pd.DataFrame
    params: SubjectParams


def subject_id(index: int) -> str:
    """Cohort subject ids: ``sub-001``, ``sub-002``, ..."""
    return f"sub-{index + 1:03d}"


def check_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The extra contrasts asked for, in :data:`SIMULATED_CONTRASTS` order; unknown ones refused."""
    unknown = [c for c in contrasts if c not in CONTRAST_MAKERS]
    if unknown:
        raise InputError(f"unknown simulated contrast(s): {', '.join(map(str, unknown))}. "
                         f"The research site makes {', '.join(SIMULATED_CONTRASTS)} (a clinical site, "
                         "site=\"clinical\" or --site clinical, makes more)")
    return tuple(c for c in SIMULATED_CONTRASTS if c in contrasts)


def simulate_subject(seed: int, params: SubjectParams | None = None, *, index: int = 0,
                     prl_fraction: float = 0.08, contrasts: Sequence[str] = SIMULATED_CONTRASTS,
                     **options: object) -> Simulated:
    """Simulate subject ``index`` of the cohort seeded with ``seed``.

    Without ``params`` the acquisition and subject parameters are drawn from the seed (see
    :func:`~napari_deep_prl.simulate.params.draw_params`), with ``options`` (any
    :class:`SubjectParams` field, e.g. ``voxel_size=(1, 1, 1)``, ``fov_mm=...``) held fixed.
    ``contrasts`` are the images made besides phase and MP2RAGE (in ``subject.images`` after
    them); each draws from its own random stream, so they change nothing else.
    """
    contrasts = check_contrasts(contrasts)
    params_seq, phantom_seq, contrast_seq = np.random.SeedSequence([int(seed), int(index)]).spawn(3)
    params = subject_params(params_seq, params, prl_fraction, options)
    rng = np.random.default_rng(phantom_seq)
    vox = params.voxel_size

    anatomy, specs, paint, chi = phantom(params, rng)
    local = -np.float32(params.rad_per_ppm) * field_ppm(chi, vox, params.b0_direction,
                                                         psf_sigma_mm=0.4 * min(vox))
    raw = (local + background_field(anatomy.shape, vox, params.background_rad, rng)
           + phase_noise(magnitude_image(anatomy), params.noise, rng))
    phase = highpass(raw, anatomy.brain, vox, params.highpass_sigma_mm)
    mp2rage = mp2rage_image(anatomy, paint.t1_hypo, params.bias, params.t1_noise, rng)

    affine = centred_affine(anatomy.shape, vox)
    mask = (paint.owner > 0).astype(np.uint8)
    streams = dict(zip(SIMULATED_CONTRASTS, contrast_seq.spawn(len(SIMULATED_CONTRASTS))))
    extra = {name: CONTRAST_MAKERS[name](anatomy, paint, params, np.random.default_rng(streams[name]))
             for name in contrasts}
    subject = Subject(subject_id(index), {"phase": phase, "mp2rage": mp2rage, **extra}, mask, affine,
                      prl_mask=paint.prl)
    truth = truth_table(subject.subject, mask, affine, paint.prl, paint.owner, specs)
    return Simulated(subject, truth, params)


def subject_params(params_seq: np.random.SeedSequence, params: SubjectParams | None, prl_fraction: float,
                   options: dict[str, object]) -> SubjectParams:
    """``params`` checked, or drawn from ``params_seq`` with ``options`` held fixed (not both)."""
    if params is None:
        return draw_params(np.random.default_rng(params_seq), prl_fraction, **options)
    if options:
        raise InputError(f"give either params or options ({', '.join(options)}), not both")
    return validate(params)


def phantom(params: SubjectParams, rng: np.random.Generator
            ) -> tuple[Anatomy, list[LesionSpec], LesionPaint, np.ndarray]:
    """The anatomy, its lesions (drawn and painted) and the total susceptibility map (ppm, veins
    included): what every image of the subject is made from."""
    anatomy = make_anatomy(params, rng)
    specs = draw_specs(anatomy, params.n_lesions, params.prl_rate, rng, params.confluent_prl_rate)
    paint = paint_lesions(anatomy, specs, rng)
    chi = anatomy.chi + paint.chi + np.float32(rng.uniform(*VEIN_CHI_PPM)) * anatomy.vein_fraction
    return anatomy, specs, paint, chi


def truth_table(subject: str, mask: np.ndarray, affine: np.ndarray, prl_mask: np.ndarray,
                owner: np.ndarray, specs: list[LesionSpec]) -> pd.DataFrame:
    """The lesion table of ``mask`` (ids as ``label_lesions`` assigns them, centres in world mm by
    ``affine``) plus each lesion's kind.

    A lesion made of several drawn lesions is ``confluent`` unless it is a part split from its
    component (``split_from``), which takes the kind of the drawn lesion covering most of it;
    the other columns always describe that drawn lesion. ``prl`` follows the data convention (most voxels in the
    PRL mask).
    """
    labels = label_lesions(mask, Grid.of(mask.shape, affine).zooms)
    table = lesion_table_from_labels(labels, affine, subject, prl_mask)
    inside = labels > 0
    pairs, counts = np.unique(np.stack([labels[inside], owner[inside]]), axis=1,
                              return_counts=True)
    rows = []
    for lesion, split_from in zip(table["lesion"], table["split_from"]):
        here = pairs[0] == lesion
        owners, sizes = pairs[1, here], counts[here]
        spec = specs[int(owners[np.argmax(sizes)]) - 1]
        rows.append({
            "kind": "confluent" if len(owners) > 1 and not split_from else spec.kind,
            "shape": spec.shape,
            "n_parts": len(owners) + len(spec.parts),
            "rim_coverage": spec.rim_coverage,
            "rim_width_mm": spec.rim_width_mm,
            "chi_rim_ppm": spec.chi_rim_ppm,
            "chi_core_ppm": spec.chi_core_ppm,
            "t1_hypo": spec.t1_hypo,
            "central_vein": spec.central_vein,
            "adjacent_vein": spec.adjacent_vein,
        })
    extra = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))
    return pd.concat([table.reset_index(drop=True), extra], axis=1)


def sample_subject(seed: int = 0) -> Simulated:
    """A small, quick subject (1.5 mm, reduced head, ~1 s) for the napari sample data and demos,
    with every simulated extra contrast."""
    params = SubjectParams(voxel_size=(1.5, 1.5, 1.5), fov_mm=(150.0, 180.0, 150.0), n_lesions=24,
                           prl_rate=0.25, noise=0.06)
    return simulate_subject(seed, params)
