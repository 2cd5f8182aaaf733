"""On-the-fly augmentation of whole batches of patches, in torch (CPU or GPU).

The paper's recipe, each transform drawn independently per patch with probability ``p``:

- flips along each of the three axes, and a 90° rotation (k = 1, 2 or 3) in one of the three
  axis planes — all channels together, so the mask stays on its lesion. Flips preserve the
  dipole pattern of the phase; rotations in planes containing B0 do not, which is deliberate:
  it keeps the network from relying on one acquisition's B0 axis and field pattern, and
  measured better than rotating about B0 only (docs/evaluation.md, "Design choices behind the defaults");
- a small affine transform: rotation of up to ``max_rotation_deg`` about each axis and a
  translation of up to ``max_translation`` voxels (trilinear resampling, edges replicated);
- on the susceptibility channel only (phase or QSM, the last image channel): an intensity
  shift uniform in ``±intensity_shift`` and Gaussian noise of SD ``noise_sigma`` (patches are
  normalised, so both are in normalised units).

Labels are never changed: every transform keeps a PRL a PRL. Random numbers come from the
caller's CPU :class:`torch.Generator`, so a seeded run gives the same batches on any device;
they reach a GPU through pinned memory (:func:`~napari_deep_prl.model.inference.to_device`),
without waiting for the work queued there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from napari_deep_prl.model.inference import to_device
from napari_deep_prl.model.network import SUSCEPTIBILITY_CHANNEL

#: Spatial dimension pairs of a (n, c, x, y, z) tensor that 90° rotations turn in.
ROTATION_PLANES = ((2, 3), (2, 4), (3, 4))


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; ``p=0`` turns augmentation off."""

    p: float = 0.5
    noise_sigma: float = 0.01
    intensity_shift: float = 0.1
    flips: bool = True
    rot90: bool = True
    max_translation: float = 3.0
    max_rotation_deg: float = 5.0

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A randomly transformed copy of a batch ``(n, c, s, s, s)`` of cubic patches."""
    n = x.shape[0]
    if config.p <= 0 or n == 0:
        return x
    out = _symmetry(x, config, generator) if config.flips or config.rot90 else x.clone()
    if config.max_translation > 0 or config.max_rotation_deg > 0:
        out = _small_affine(out, config, generator)
    phase = out[:, SUSCEPTIBILITY_CHANNEL]
    if config.intensity_shift > 0:
        shift = _uniform(n, config.intensity_shift, generator) * _chosen(n, config.p, generator)
        phase += to_device(shift.to(x.dtype), x.device)[:, None, None, None]
    if config.noise_sigma > 0:
        rows = torch.nonzero(_chosen(n, config.p, generator)).flatten()
        noise = torch.randn((rows.numel(), *phase.shape[1:]), generator=generator) * config.noise_sigma
        phase[to_device(rows, x.device)] += to_device(noise, x.device)
    return out


def _chosen(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def _uniform(n: int, half_width: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * half_width


def _symmetry(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Flips and 90° rotations composed per patch into one signed axis permutation, one gather.

    Output voxel ``o`` reads input voxel ``i`` with ``i[d] = o[perm[d]]``, mirrored when
    ``flip[d]``. A rotation by k·90° in plane (a, b) swaps a and b when k is odd and mirrors
    a (k=1), b (k=3) or both (k=2).
    """
    n, s = x.shape[0], x.shape[-1]
    flip = torch.rand(n, 3, generator=generator) < (config.p if config.flips else 0.0)
    perm = torch.arange(3).repeat(n, 1)
    if config.rot90:
        rotate = _chosen(n, config.p, generator)
        plane = torch.randint(len(ROTATION_PLANES), (n,), generator=generator)
        turns = torch.randint(1, 4, (n,), generator=generator)
        a, b = (torch.tensor(ROTATION_PLANES)[plane] - 2).unbind(1)
        rows = torch.arange(n)
        swap = rotate & (turns != 2)
        swapped = perm.clone()
        swapped[rows, a], swapped[rows, b] = b, a
        perm = torch.where(swap[:, None], swapped, perm)
        flip[rows, a] ^= rotate & (turns != 3)
        flip[rows, b] ^= rotate & (turns != 1)
    # The flat input index is separable: output axis e reads input axis d = perm⁻¹[e], so it
    # adds stride[d] · (o_e, or s-1-o_e when flip[d]); three (n, s) terms broadcast to (n, s³).
    source = perm.argsort(dim=1)  # (n, 3): the input axis each output axis reads
    axis = torch.arange(s)
    steps = torch.where(flip.gather(1, source)[..., None], s - 1 - axis, axis) * (s ** (2 - source))[..., None]
    steps = to_device(steps, x.device)  # (n, 3, s): the (n, s³) index is built where it is used
    index = steps[:, 0, :, None, None] + steps[:, 1, None, :, None] + steps[:, 2, None, None, :]
    index = index.reshape(n, 1, -1).expand(n, x.shape[1], -1)
    return x.reshape(n, x.shape[1], -1).gather(2, index).reshape(x.shape)


def _small_affine(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n, size = x.shape[0], x.shape[2:]
    rows = torch.nonzero(_chosen(n, config.p, generator)).flatten()
    if rows.numel() == 0:
        return x
    m = rows.numel()
    angles = [_uniform(m, math.radians(config.max_rotation_deg), generator) for _ in range(3)]
    theta = torch.zeros(m, 3, 4)
    theta[:, :, :3] = _rotation_matrices(*angles)
    # affine_grid works in normalised coordinates [-1, 1]: one voxel is 2 / size.
    for axis in range(3):
        # affine_grid's output coordinates are ordered (x=W, y=H, z=D), the reverse of the dims.
        theta[:, axis, 3] = _uniform(m, config.max_translation, generator) * 2 / size[2 - axis]
    theta = to_device(theta.to(x.dtype), x.device)
    rows = to_device(rows, x.device)
    grid = F.affine_grid(theta, [m, x.shape[1], *size], align_corners=False)
    x[rows] = F.grid_sample(x[rows], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x


def _rotation_matrices(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Batch of rotation matrices ``Rz(c) @ Ry(b) @ Rx(a)``."""
    def rot(angle: torch.Tensor, i: int, j: int) -> torch.Tensor:
        r = torch.eye(3).repeat(angle.numel(), 1, 1)
        r[:, i, i], r[:, j, j] = angle.cos(), angle.cos()
        r[:, i, j], r[:, j, i] = -angle.sin(), angle.sin()
        return r

    return rot(c, 0, 1) @ rot(b, 0, 2) @ rot(a, 1, 2)
