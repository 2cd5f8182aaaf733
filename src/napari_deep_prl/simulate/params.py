"""Acquisition and subject parameters, and how a cohort varies them from its seed.

A real cohort mixes scanners, echo times, resolutions and noise levels; a classifier trained on
one setting only is not worth much. :func:`draw_params` therefore varies every acquisition
parameter per subject by default; any option passed explicitly is held fixed instead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from napari_deep_prl.base.errors import InputError

#: Gyromagnetic ratio of 1H divided by 2 pi, in MHz / T.
GAMMA_BAR_MHZ_T = 42.577

#: Default field of view (mm): a brain-sized grid, 160 x 192 x 160 voxels at 1 mm.
DEFAULT_FOV_MM = (160.0, 192.0, 160.0)


@dataclass(frozen=True)
class SubjectParams:
    """Everything that defines one synthetic subject besides its random seed.

    Susceptibilities are in ppm relative to CSF; ``noise`` is the standard deviation of the
    complex Gaussian noise relative to the white-matter T2* magnitude (phase noise in WM is about
    ``noise`` radians); ``t1_noise`` is relative to the white-matter MP2RAGE value.
    ``confluent_prl_rate`` is the share of PRLs drawn touching a plain lesion (a confluent PRL:
    one component of the binary mask, which lesion finding splits again).
    """

    field_strength_t: float = 3.0
    te_ms: float = 25.0
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fov_mm: tuple[float, float, float] = DEFAULT_FOV_MM
    b0_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    noise: float = 0.08
    t1_noise: float = 0.03
    bias: float = 0.08
    highpass_sigma_mm: float = 5.0
    background_rad: float = 6.0
    n_lesions: int = 30
    prl_rate: float = 0.08
    confluent_prl_rate: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape: the field of view divided by the voxel size."""
        return tuple(max(8, round(f / v)) for f, v in zip(self.fov_mm, self.voxel_size))

    @property
    def rad_per_ppm(self) -> float:
        """Phase accrued at TE per ppm of field offset (radians)."""
        return 2 * np.pi * GAMMA_BAR_MHZ_T * self.field_strength_t * self.te_ms * 1e-3

    def as_dict(self) -> dict[str, object]:
        """Flat dict for the cohort's ``subjects.tsv`` (tuples joined with 'x')."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "x".join(f"{v:g}" for v in value) if isinstance(value, tuple) else value
        return out


#: Names a caller may fix for every subject of a cohort.
OPTION_NAMES = tuple(f.name for f in fields(SubjectParams))


def draw_params(rng: np.random.Generator, prl_fraction: float = 0.08,
                **fixed: object) -> SubjectParams:
    """Draw one subject's parameters; options in ``fixed`` are used as given.

    ``prl_fraction`` is the cohort's expected PRL fraction; subjects differ around it (a Beta
    distribution: many patients have no PRL, a few have many), as in clinical cohorts.
    """
    unknown = set(fixed) - set(OPTION_NAMES)
    if unknown:
        raise InputError(f"unknown simulation option(s): {', '.join(sorted(unknown))}. "
                         f"Known options: {', '.join(OPTION_NAMES)}")
    if not 0.0 <= prl_fraction <= 1.0:
        raise InputError(f"PRL fraction {prl_fraction} is not in [0, 1]. Give a fraction such "
                         "as 0.08")
    field = 7.0 if rng.random() < 0.3 else 3.0
    if fixed.get("field_strength_t") is not None:
        field = float(fixed["field_strength_t"])
    te = rng.uniform(20.0, 35.0) if field < 5.0 else rng.uniform(15.0, 25.0)
    inplane = round(rng.uniform(0.85, 1.05) / 0.05) * 0.05
    slice_mm = inplane * (1.2 if rng.random() < 0.25 else 1.0)
    tilt = np.deg2rad(rng.uniform(0.0, 15.0))
    azimuth = rng.uniform(0.0, 2 * np.pi)
    b0 = (float(np.sin(tilt) * np.cos(azimuth)), float(np.sin(tilt) * np.sin(azimuth)),
          float(np.cos(tilt)))
    concentration = 3.0
    prl_rate = (rng.beta(prl_fraction * concentration, (1 - prl_fraction) * concentration)
                if 0.0 < prl_fraction < 1.0 else prl_fraction)
    drawn = SubjectParams(
        field_strength_t=field,
        te_ms=round(float(te), 1),
        voxel_size=(inplane, inplane, round(slice_mm, 2)),
        b0_direction=b0,
        noise=float(rng.uniform(0.02, 0.07)),
        t1_noise=float(rng.uniform(0.02, 0.05)),
        bias=float(rng.uniform(0.03, 0.12)),
        highpass_sigma_mm=float(rng.uniform(3.5, 7.0)),
        background_rad=float(rng.uniform(1.0, 6.0)),
        n_lesions=int(np.clip(rng.negative_binomial(4, 4 / (4 + 30)), 4, 90)),
        prl_rate=float(prl_rate),
    )
    fixed = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else v)
             for k, v in fixed.items() if v is not None}
    if "voxel_size" in fixed and len(fixed["voxel_size"]) == 1:
        fixed["voxel_size"] = fixed["voxel_size"] * 3
    return validate(replace(drawn, **fixed))


def validate(params: SubjectParams) -> SubjectParams:
    """Reject parameters that cannot make a subject, with a message saying what to change."""
    checks = [
        (len(params.voxel_size) == 3 and all(v > 0 for v in params.voxel_size),
         f"voxel size {params.voxel_size} must be one or three positive numbers (mm)"),
        (len(params.fov_mm) == 3 and all(f >= 16 for f in params.fov_mm),
         f"field of view {params.fov_mm} must be three numbers of at least 16 mm"),
        (params.field_strength_t > 0, f"field strength {params.field_strength_t} T must be > 0"),
        (params.te_ms > 0, f"echo time {params.te_ms} ms must be > 0"),
        (params.noise >= 0 and params.t1_noise >= 0, "noise levels must be >= 0"),
        (params.n_lesions >= 0, f"lesion count {params.n_lesions} must be >= 0"),
        (0.0 <= params.prl_rate <= 1.0, f"PRL rate {params.prl_rate} must be in [0, 1]"),
        (0.0 <= params.confluent_prl_rate <= 1.0,
         f"confluent PRL rate {params.confluent_prl_rate} must be in [0, 1]"),
        (np.linalg.norm(params.b0_direction) > 0, "B0 direction must be a non-zero vector"),
        (int(np.prod(params.shape)) <= 64_000_000,
         f"grid {params.shape} is too large; use a larger voxel size or a smaller field of view"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"invalid simulation parameters: {message}")
    return params
