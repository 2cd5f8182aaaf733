"""A clinical site's scans of a simulated subject (``site="clinical"``).

What a site has (issue #33): a susceptibility image — the vendor's high-pass filtered phase of
an SWI, or a QSM from a pipeline — reconstructed on an oblique, anisotropic slab (0.6 x 0.6 x 2 mm
tilted 10-15 degrees about the left-right axis), and 3D structural images (an MPRAGE-like T1w, a
FLAIR, optionally an MP2RAGE) at 1 mm isotropic, with the lesion masks on the structural grid.
All are co-registered in world space: each is made from the same phantom, sampled at its own
voxel centres through its affine (:func:`~napari_deep_prl.simulate.grids.acquire`).

The phantom (anatomy, lesions, susceptibility) is drawn exactly as for the research site, on the
structural grid, so subject ``index`` of cohort ``seed`` has the same anatomy at either site when
the grids agree; the site's own randomness (slab tilt, head position, noise) comes from streams of
its own, and each structural contrast draws from its own stream, so asking for one changes
nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.simulate.anatomy import OUTSIDE, Anatomy
from napari_deep_prl.simulate.grids import (
    acquire,
    centred_affine,
    nifti_image,
    oblique_slab,
    rotation_about_x,
    world_points,
)
from napari_deep_prl.simulate.lesion_kinds import LesionPaint
from napari_deep_prl.simulate.params import SubjectParams
from napari_deep_prl.simulate.physics import (
    background_field,
    complex_noise,
    dipole_inversion,
    field_ppm,
    flair_image,
    homodyne_phase,
    mp2rage_image,
    t1w_image,
    t2star_magnitude,
)
from napari_deep_prl.simulate.subject import DESCRIPTIONS as RESEARCH_DESCRIPTIONS
from napari_deep_prl.simulate.subject import (
    phantom,
    subject_id,
    subject_params,
    truth_table,
)

#: The sites the simulator makes: today's research layout, or a clinical site's scans.
SITES = ("research", "clinical")
#: The filtered phase's sign convention: ``dark`` (paramagnetic negative, the project's
#: convention) or ``bright`` (paramagnetic positive, as other vendors write it).
PHASE_SIGNS = ("dark", "bright")
#: Images a clinical cohort can write besides its susceptibility image and masks: the structural
#: ones and the SWI's magnitude (on the susceptibility grid, for display).
CLINICAL_CONTRASTS = (*STRUCTURAL, "magnitude")
#: What a clinical site writes unless told otherwise.
DEFAULT_CLINICAL_CONTRASTS = ("t1w", "flair")
#: The structural grid's voxel size (mm) unless ``voxel_size`` is given.
STRUCTURAL_VOXEL_MM = (1.0, 1.0, 1.0)
#: Range (degrees) of the slab's tilt about the left-right axis, drawn per subject with either sign.
TILT_RANGE_DEG = (10.0, 15.0)
#: Range (mm) of the head's offset from the scanner's origin along each axis, drawn per subject.
HEAD_OFFSET_MM = 20.0
#: Tikhonov regularisation of the QSM's dipole inversion: with it, the phantom's veins
#: (+0.30-0.45 ppm of venous blood, partial volume) come out at about 0.1-0.5 ppm and a PRL's
#: rim (+0.05-0.12 ppm) at a few hundredths of a ppm above its core, the ranges reported in vivo:
#: veins 0.2-0.5 ppm (Haacke et al., J Magn Reson Imaging 2010, 32:663; Fan et al., Magn Reson
#: Med 2014, 72:149: smaller veins lower by partial volume), lesions up to +0.04 ppm above
#: white matter on average (Chen et al., Radiology 2014, 271:183: 38 +- 13 ppb) and from -0.07
#: to +0.05 ppm (Harrison et al., AJNR 2016, 37:1447), rims brighter than their lesion's mean.
QSM_REGULARISATION = 0.005
#: Brain-mask erosion (mm) before the dipole inversion, as QSM pipelines trim unreliable edges.
QSM_MASK_EROSION_MM = 2.0
#: Fraction of the background field that background-field removal leaves in QSM's input.
QSM_BACKGROUND_RESIDUAL = (0.0, 0.03)

#: Stored in each image's NIfTI description: the research site's, and the clinical images' own
#: (the phase's says its sign convention).
DESCRIPTIONS = {
    **RESEARCH_DESCRIPTIONS,
    "phase:dark": "deep-prl sim: vendor filtered phase (rad), paramagnetic = negative (dark)",
    "phase:bright": "deep-prl sim: vendor filtered phase (rad), paramagnetic = positive (bright)",
    "qsm": "deep-prl sim: QSM (ppm), paramagnetic = positive, brain mean = 0",
    "t1w": "deep-prl sim: MPRAGE-like T1w, lesions dark",
}


@dataclass(frozen=True)
class ClinicalSite:
    """The scans a clinical site has, as the simulator makes them (``site=ClinicalSite(...)``).

    ``susceptibility``: ``"phase"`` (vendor filtered phase) or ``"qsm"``; ``phase_sign``:
    ``"dark"`` (paramagnetic negative, the project's convention) or ``"bright"``;
    ``susceptibility_voxel_mm``: the slab's voxel size; ``tilt_deg``: the slab's tilt about the
    left-right axis (``None``: drawn per subject, 10-15 degrees either way). The structural
    grid's voxel size is the ``voxel_size`` option (1 mm isotropic by default).
    """

    susceptibility: str = "phase"
    phase_sign: str = "dark"
    susceptibility_voxel_mm: tuple[float, float, float] = (0.6, 0.6, 2.0)
    tilt_deg: float | None = None

    def __post_init__(self) -> None:
        if self.susceptibility not in SUSCEPTIBILITY:
            raise InputError(f"unknown susceptibility image '{self.susceptibility}'. "
                             f"Choose one of {', '.join(SUSCEPTIBILITY)}")
        if self.phase_sign not in PHASE_SIGNS:
            raise InputError(f"unknown phase sign '{self.phase_sign}'. Choose {' or '.join(PHASE_SIGNS)} "
                             "(the sign of a paramagnetic source on the phase)")
        vox = tuple(float(v) for v in self.susceptibility_voxel_mm)
        if len(vox) == 1:
            vox = vox * 3
        if len(vox) != 3 or not all(0 < v <= 5 for v in vox):
            raise InputError(f"susceptibility voxel size {self.susceptibility_voxel_mm} must be one or "
                             "three sizes in mm, each above 0 and at most 5")
        object.__setattr__(self, "susceptibility_voxel_mm", vox)
        if self.tilt_deg is not None and not abs(self.tilt_deg) <= 45:
            raise InputError(f"slab tilt {self.tilt_deg} degrees must be within +-45")


@dataclass
class ClinicalSimulated:
    """A simulated clinical subject: its images on their own grids, truth and parameters.

    ``images`` are by manifest column, in manifest order: the susceptibility image (``phase`` or
    ``qsm``), the structural images, ``mask``, ``prl_mask``, then ``magnitude`` if asked for.
    ``acquisition``: the site's facts for this subject (susceptibility, phase sign, grids, tilt),
    as written to ``subjects.tsv``.
    """

    subject: str
    images: dict[str, nib.Nifti1Image]
    truth: pd.DataFrame
    params: SubjectParams
    acquisition: dict[str, object]


def resolve_site(site: str | ClinicalSite) -> ClinicalSite | None:
    """``None`` for the research site, the :class:`ClinicalSite` asked for otherwise."""
    if isinstance(site, ClinicalSite):
        return site
    if site == "research":
        return None
    if site == "clinical":
        return ClinicalSite()
    raise InputError(f"unknown site '{site}'. Choose {' or '.join(SITES)}, or give a ClinicalSite")


def check_clinical_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The clinical images asked for, in :data:`CLINICAL_CONTRASTS` order; at least one structural."""
    unknown = [c for c in contrasts if c not in CLINICAL_CONTRASTS]
    if unknown:
        raise InputError(f"unknown contrast(s) for a clinical site: {', '.join(map(str, unknown))}. "
                         f"It makes {', '.join(CLINICAL_CONTRASTS)}")
    if not any(c in STRUCTURAL for c in contrasts):
        raise InputError("a clinical site needs at least one structural image. Ask for "
                         f"{', '.join(STRUCTURAL[:-1])} or {STRUCTURAL[-1]}")
    return tuple(c for c in CLINICAL_CONTRASTS if c in contrasts)


def simulate_clinical_subject(seed: int, params: SubjectParams | None = None, *, index: int = 0,
                              site: ClinicalSite | None = None, prl_fraction: float = 0.08,
                              contrasts: Sequence[str] = DEFAULT_CLINICAL_CONTRASTS,
                              **options: object) -> ClinicalSimulated:
    """Simulate subject ``index`` of the cohort seeded with ``seed`` as a clinical site scans it.

    ``params`` / ``options`` as for :func:`~napari_deep_prl.simulate.simulate_subject`, except
    that ``voxel_size`` (the structural grid) is 1 mm isotropic unless given. ``contrasts``: the
    images made besides the susceptibility image, from :data:`CLINICAL_CONTRASTS`.
    """
    site = site or ClinicalSite()
    contrasts = check_clinical_contrasts(contrasts)
    if params is None and options.get("voxel_size") is None:
        options = {**options, "voxel_size": STRUCTURAL_VOXEL_MM}
    params_seq, phantom_seq, site_seq = np.random.SeedSequence([int(seed), int(index)]).spawn(3)
    params = subject_params(params_seq, params, prl_fraction, options)
    anatomy, specs, paint, chi = phantom(params, np.random.default_rng(phantom_seq))
    geometry_seq, scan_seq, *structural_seqs = site_seq.spawn(2 + len(STRUCTURAL))
    geometry = np.random.default_rng(geometry_seq)

    tilt = float(geometry.uniform(*TILT_RANGE_DEG) * geometry.choice([-1.0, 1.0]))
    tilt = tilt if site.tilt_deg is None else float(site.tilt_deg)
    offset = geometry.uniform(-HEAD_OFFSET_MM, HEAD_OFFSET_MM, 3)
    structural_affine = centred_affine(anatomy.shape, params.voxel_size, offset)
    slab_shape, slab_affine = oblique_slab(world_points(anatomy.tissue != OUTSIDE, structural_affine),
                                           world_points(anatomy.brain, structural_affine),
                                           site.susceptibility_voxel_mm, rotation_about_x(tilt))
    scanned = _scan(anatomy, paint, chi, params, site, structural_affine, slab_shape, slab_affine,
                    np.random.default_rng(scan_seq))

    makers = {
        "mp2rage": lambda rng: mp2rage_image(anatomy, paint.t1_hypo, params.bias, params.t1_noise, rng),
        "t1w": lambda rng: t1w_image(anatomy, paint.t1_hypo, params.bias, params.t1_noise, rng),
        "flair": lambda rng: flair_image(anatomy, paint.owner, params.bias, params.t1_noise, rng),
    }
    streams = dict(zip(STRUCTURAL, structural_seqs))
    mask = (paint.owner > 0).astype(np.uint8)
    prl_mask = paint.prl.astype(np.uint8)
    key = f"phase:{site.phase_sign}" if site.susceptibility == "phase" else "qsm"
    images = {site.susceptibility: nifti_image(scanned[site.susceptibility], slab_affine, DESCRIPTIONS[key])}
    for name in (c for c in STRUCTURAL if c in contrasts):
        data = makers[name](np.random.default_rng(streams[name])).astype(np.float32)
        images[name] = nifti_image(data, structural_affine, DESCRIPTIONS[name])
    images["mask"] = nifti_image(mask, structural_affine, DESCRIPTIONS["mask"])
    images["prl_mask"] = nifti_image(prl_mask, structural_affine, DESCRIPTIONS["prl_mask"])
    if "magnitude" in contrasts:
        images["magnitude"] = nifti_image(scanned["magnitude"], slab_affine, DESCRIPTIONS["magnitude"])

    sid = subject_id(index)
    truth = truth_table(sid, mask, structural_affine, paint.prl, paint.owner, specs)
    acquisition = {
        "site": "clinical",
        "susceptibility": site.susceptibility,
        "phase_sign": site.phase_sign if site.susceptibility == "phase" else "",
        "susceptibility_voxel_mm": _joined(site.susceptibility_voxel_mm),
        "susceptibility_shape": _joined(slab_shape),
        "tilt_deg": round(tilt, 3),
        "structural_shape": _joined(anatomy.shape),
        **{f"head_offset_{axis}_mm": round(float(value), 3) for axis, value in zip("xyz", offset)},
    }
    return ClinicalSimulated(sid, images, truth, params, acquisition)


def _scan(anatomy: Anatomy, paint: LesionPaint, chi: np.ndarray, params: SubjectParams, site: ClinicalSite,
          structural_affine: np.ndarray, slab_shape: tuple[int, int, int], slab_affine: np.ndarray,
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The gradient-echo scan on the slab: its filtered phase or QSM, and its magnitude.

    The field (dipole kernel, B0 in world space) and the background field are computed on the
    phantom's grid and acquired onto the slab with its point-spread function; the complex
    signal gets the T2*-weighted magnitude (lesion iron darkens it) and complex noise. The phase
    is high-pass filtered the vendor way (:func:`~napari_deep_prl.simulate.physics.homodyne_phase`),
    in the sign convention asked for. QSM is reconstructed from the noisy unwrapped phase, with
    a residual of the background field, by Tikhonov dipole inversion inside the eroded brain
    mask, then referenced to the brain's mean; it is 0 outside the mask.
    """
    vox, slab_vox = anatomy.voxel_size, site.susceptibility_voxel_mm

    def to_slab(volume: np.ndarray, psf: bool = True) -> np.ndarray:
        return acquire(volume, structural_affine, slab_affine, slab_shape, psf=psf)

    field = to_slab(field_ppm(chi, vox, params.b0_direction))
    background = to_slab(background_field(anatomy.shape, vox, params.background_rad, rng))
    magnitude = to_slab(t2star_magnitude(anatomy, paint.owner, paint.chi, field_strength_t=params.field_strength_t,
                                         te_ms=params.te_ms, bias=params.bias, noise=0.0, rng=rng))
    raw = np.float32(params.rad_per_ppm) * field + background  # paramagnetic: positive field, phase
    noise = complex_noise(slab_shape, params.noise, rng)
    signal = magnitude * np.exp(np.complex64(1j) * raw) + (noise[0] + np.complex64(1j) * noise[1])
    out = {"magnitude": np.abs(signal).astype(np.float32)}
    if site.susceptibility == "phase":
        phase = homodyne_phase(signal, slab_vox, params.highpass_sigma_mm)
        out["phase"] = -phase if site.phase_sign == "dark" else phase
        return out
    brain = to_slab(anatomy.brain.astype(np.float32), psf=False) > 0.5
    inside = ndimage.distance_transform_edt(brain, sampling=slab_vox) > QSM_MASK_EROSION_MM
    phase_error = np.angle(signal * np.exp(np.complex64(-1j) * raw))
    residual = np.float32(rng.uniform(*QSM_BACKGROUND_RESIDUAL))
    local = (field + (phase_error + residual * background) / np.float32(params.rad_per_ppm)) * inside
    rotation = slab_affine[:3, :3] / np.array(slab_vox)
    b0 = tuple(rotation.T @ np.asarray(params.b0_direction, float))  # in the slab's axes
    qsm = dipole_inversion(local, slab_vox, b0, QSM_REGULARISATION)
    qsm = np.where(inside, qsm - qsm[inside].mean(), 0.0).astype(np.float32)
    out["qsm"] = qsm
    return out


def _joined(values: object) -> str:
    """``0.6x0.6x2``: a tuple as one ``subjects.tsv`` cell (as ``SubjectParams.as_dict`` writes them)."""
    return "x".join(f"{float(v):g}" for v in values)
