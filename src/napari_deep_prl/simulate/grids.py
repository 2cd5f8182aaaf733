"""Image grids and their affines: the phantom's grid, a clinical site's tilted susceptibility
slab, and acquiring an image of the phantom onto any grid by its affine.

A clinical site reconstructs each scan on its own grid (e.g. SWI at 0.6 x 0.6 x 2 mm on an
oblique slab, a 3D T1 at 1 mm isotropic); all are co-registered in world (scanner) space. The
simulator draws the anatomy once, on the phantom's axis-aligned grid, and makes every other
grid's image by sampling the phantom at that grid's voxel centres, mapped through the affines:
so each file's affine is the truth.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_deep_prl.data.susceptibility import kspace_grid
from napari_deep_prl.simulate.physics import filtered

#: A voxel's point-spread function, as a Gaussian SD in voxels along each axis of the grid that
#: acquires it (FWHM about 1.06 voxels: a 2 mm slice averages about 2 mm of anatomy).
PSF_VOXELS = 0.45


def centred_affine(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                   offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """An axis-aligned (RAS) affine whose grid centre is at ``offset_mm`` in world space."""
    affine = np.diag([*map(float, voxel_size), 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(voxel_size)
    affine[:3, 3] += np.asarray(offset_mm, float)
    return affine


def rotation_about_x(degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the left-right (x) axis (positive: y towards z)."""
    a = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def oblique_slab(inplane_mm: np.ndarray, through_mm: np.ndarray, voxel_size: tuple[float, float, float],
                 rotation: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """The shape and affine of a slab whose axes are ``rotation``'s columns.

    Its in-plane field of view (axes 0 and 1) covers the world points ``inplane_mm`` (N x 3,
    e.g. the head), its slices (axis 2) cover ``through_mm`` (e.g. the brain), as a site plans
    an oblique SWI slab on the localiser.
    """
    vox = np.asarray(voxel_size, float)
    inplane, through = np.asarray(inplane_mm) @ rotation, np.asarray(through_mm) @ rotation
    lo = np.array([*inplane[:, :2].min(axis=0), through[:, 2].min()])
    hi = np.array([*inplane[:, :2].max(axis=0), through[:, 2].max()])
    shape = tuple(int(n) for n in np.ceil((hi - lo) / vox).astype(int) + 1)
    centre = rotation @ ((lo + hi) / 2)
    affine = np.eye(4)
    affine[:3, :3] = rotation * vox
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return shape, affine


def world_points(mask: np.ndarray, affine: np.ndarray, step: int = 2) -> np.ndarray:
    """World coordinates (mm, N x 3) of the voxels of ``mask``, every ``step``-th along each axis."""
    index = np.argwhere(mask[::step, ::step, ::step]) * step
    return index @ affine[:3, :3].T + affine[:3, 3]


def acquire(volume: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray,
            target_shape: tuple[int, int, int], *, psf: bool = True, order: int = 1) -> np.ndarray:
    """``volume`` (on the grid of ``source_affine``) as the grid of ``target_affine`` sees it.

    With ``psf``, the volume is first blurred by the target voxel's point-spread function
    (:data:`PSF_VOXELS` along each target axis, however the target is rotated), so a thick slice
    averages the anatomy it spans instead of sampling one plane of it; then it is interpolated
    (``order`` 1: linear; 0: nearest, for labels) at the target voxel centres. Points outside the
    source grid are 0.
    """
    source = np.asarray(volume)
    if psf:
        source = filtered(source.astype(np.float32, copy=False),
                          _psf_transfer(source.shape, source_affine, target_affine))
    mapping = np.linalg.inv(source_affine) @ target_affine
    out = ndimage.affine_transform(source, mapping[:3, :3], offset=mapping[:3, 3], output_shape=target_shape,
                                   order=order, mode="constant", cval=0.0, prefilter=False)
    return out.astype(np.float32, copy=False) if order else out


def _psf_transfer(shape: tuple[int, int, int], source_affine: np.ndarray,
                  target_affine: np.ndarray) -> np.ndarray:
    """k-space transfer (on the source grid) of a Gaussian along the target grid's axes."""
    source_vox = np.linalg.norm(source_affine[:3, :3], axis=0)
    target_vox = np.linalg.norm(target_affine[:3, :3], axis=0)
    # The covariance (mm^2) in world space, then in the source grid's axes.
    axes = target_affine[:3, :3] / target_vox
    world = axes @ np.diag((PSF_VOXELS * target_vox) ** 2) @ axes.T
    along = source_affine[:3, :3] / source_vox
    cov = along.T @ world @ along
    k = kspace_grid(shape, tuple(source_vox))
    quadratic = sum(np.float32(cov[i, j]) * k[i] * k[j] for i in range(3) for j in range(3))
    return np.exp(np.float32(-2 * np.pi ** 2) * quadratic)


def nifti_image(data: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    """A NIfTI image with both qform and sform set to ``affine`` (scanner space), in mm."""
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = description.encode()[:79]
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image
