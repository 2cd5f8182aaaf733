"""Images on their own grids: resampling onto the reference grid by the affines, lesion ids kept,
lost or split lesions reported, images that are not co-registered refused."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import save_nifti
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401
from scipy import ndimage

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import open_cohort, read_manifest, write_manifest
from napari_deep_prl.data.images import Subject, SubjectPaths, header_problems
from napari_deep_prl.data.lesions import find_lesions, lesion_table_from_labels
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.data.resample import (
    Grid,
    default_reference,
    grids_record,
    lesion_changes,
    overlap,
    resample_image,
    resample_labels,
)
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.scoring.score import score_subject
from napari_deep_prl.simulate import simulate_cohort

SMALL = {"fov_mm": (80.0, 96.0, 80.0)}


def tilted_affine(shape, voxel, degrees, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A grid of ``voxel`` mm rotated by ``degrees`` about x, its centre at ``centre`` (mm)."""
    a = np.deg2rad(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(voxel, float)
    affine[:3, 3] = np.asarray(centre, float) - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


SLAB = Grid.of((40, 40, 14), tilted_affine((40, 40, 14), (0.8, 0.8, 2.0), 12.0))
ONE_MM = Grid.of((48, 48, 48), tilted_affine((48, 48, 48), (1.0, 1.0, 1.0), 0.0))
#: Lesion centres (world mm) by id, inside the slab.
LESIONS = {3: (-6.0, 4.0, 2.0), 7: (5.0, -5.0, -3.0), 12: (4.0, 6.0, 5.0)}


def field(world: np.ndarray) -> np.ndarray:
    """A linear intensity over world space: trilinear interpolation reproduces it exactly."""
    return (2.0 + 0.01 * world[..., 0] + 0.02 * world[..., 1] - 0.015 * world[..., 2]).astype(np.float32)


def voxel_world(grid: Grid) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    return grid.to_world(index).reshape(*grid.shape, 3)


def spheres(grid: Grid, lesions: dict[int, tuple[float, float, float]], radius: float = 2.6) -> np.ndarray:
    """Instance labels of balls of ``radius`` mm around the lesion centres, on ``grid``."""
    world = voxel_world(grid)
    labels = np.zeros(grid.shape, np.int32)
    for lesion, centre in lesions.items():
        labels[np.linalg.norm(world - np.array(centre), axis=-1) <= radius] = lesion
    return labels


def clinical_subject(folder, *, mask: np.ndarray | None = None, t1w: Grid = ONE_MM, mask_grid: Grid = ONE_MM,
                     reference: str | None = "phase") -> SubjectPaths:
    """A phase on the tilted slab, a T1w (a linear field) and a mask on 1 mm grids; the phase's
    grid the reference unless ``reference`` names another (``None``: the default's choice)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    phase = save_nifti(folder / "sub-01_phase.nii.gz", field(voxel_world(SLAB)) + rng.normal(0, 0.01, SLAB.shape)
                       .astype(np.float32), SLAB.affine)
    t1 = save_nifti(folder / "sub-01_T1w.nii.gz", field(voxel_world(t1w)), t1w.affine)
    mask = spheres(mask_grid, LESIONS) if mask is None else mask
    return SubjectPaths("sub-01", (("phase", phase), ("t1w", t1)),
                        save_nifti(folder / "sub-01_mask.nii.gz", mask, mask_grid.affine), reference=reference)


def test_images_are_resampled_onto_the_susceptibility_grid_by_their_affines(tmp_path):
    subject = clinical_subject(tmp_path).load()
    assert subject.shape == SLAB.shape and np.allclose(subject.affine, SLAB.affine)
    assert subject.images["phase"].dtype == np.float32
    # Trilinear interpolation of a linear field is exact: the affines were followed.
    np.testing.assert_allclose(subject.images["t1w"], field(voxel_world(SLAB)), atol=1e-4)
    assert {name: grid.resampling for name, grid in subject.grids.items()} == {
        "phase": "reference", "t1w": "linear", "mask": "nearest"}
    assert subject.grids["t1w"].grid.shape == ONE_MM.shape and subject.reference == "phase"
    record = json.loads(json.dumps({name: grid.as_dict() for name, grid in subject.grids.items()}))
    assert record["phase"]["voxel_mm"] == pytest.approx([0.8, 0.8, 2.0])
    assert record["mask"]["shape"] == [48, 48, 48] and record["mask"]["resampling"] == "nearest"


def test_instance_labels_keep_their_ids_and_places(tmp_path):
    subject = clinical_subject(tmp_path).load()
    assert set(np.unique(subject.labels)) - {0} == set(LESIONS)
    assert np.array_equal(subject.mask, subject.labels)  # an instance mask stays one
    table = find_lesions(subject).table.set_index("lesion")
    for lesion, centre in LESIONS.items():
        assert np.linalg.norm(table.loc[lesion, ["x_mm", "y_mm", "z_mm"]].to_numpy(float) - centre) < 0.6
    assert not subject.lesion_changes


def test_a_binary_mask_keeps_the_ids_of_its_own_grid(tmp_path):
    binary = (spheres(ONE_MM, LESIONS) > 0).astype(np.uint8)
    subject = clinical_subject(tmp_path, mask=binary).load()
    own = label_lesions(binary, ONE_MM.zooms)  # the ids the mask has on its own grid
    expected = lesion_table_from_labels(own, ONE_MM.affine, "sub-01").set_index("lesion")
    table = find_lesions(subject).table.set_index("lesion")
    assert list(table.index) == list(expected.index) == [1, 2, 3]
    assert np.abs(table[["x_mm", "y_mm", "z_mm"]] - expected[["x_mm", "y_mm", "z_mm"]]).to_numpy().max() < 0.6
    assert set(np.unique(subject.mask)) == {0, 1}  # a binary mask stays binary


def test_a_lesion_lost_by_resampling_is_reported_never_silently_dropped(tmp_path):
    labels = spheres(ONE_MM, LESIONS)
    # A one-voxel lesion whose cube lies between two of the slab's 2 mm slices: no slab voxel samples it.
    candidates = np.argwhere(np.ones((6, 6, 6), bool)) + np.array([20, 26, 20])
    depth = SLAB.to_index(ONE_MM.to_world(candidates))[:, 2] % 1
    tiny = tuple(candidates[np.argmin(np.abs(depth - 0.5))])
    labels[tiny] = 20
    paths = clinical_subject(tmp_path, mask=labels)
    with pytest.warns(InputWarning, match=r"subject sub-01: resampling the lesion mask .*sub-01_mask\.nii\.gz onto the "
                                          r"grid of .*sub-01_phase\.nii\.gz lost lesion\(s\) 20 .*reference: mask"):
        subject = paths.load()
    assert subject.lesion_changes.vanished == (20,) and subject.lesion_changes.split == ()
    assert list(find_lesions(subject).table["lesion"]) == [3, 7, 12]
    # Taking the mask's grid as the reference keeps it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = SubjectPaths(paths.subject, paths.images, paths.mask, reference="mask").load()
    assert list(find_lesions(kept).table["lesion"]) == [3, 7, 12, 20]
    assert kept.reference == "mask" and kept.grids["phase"].resampling == "linear"


def test_lesion_changes_find_lost_and_split_lesions():
    source = np.zeros((12, 12, 5), np.int32)
    source[1:4, 1:4, 1:4] = 5
    source[8:11, 1:4, 1:4] = 5
    source[4:8, 2, 2] = 5  # a thin bridge joins the two blobs into one lesion
    source[6, 8, 2] = 9
    resampled = source.copy()
    resampled[4:8, 2, 2] = 0
    resampled[6, 8, 2] = 0
    changes = lesion_changes(source, resampled)
    assert (changes.vanished, changes.split) == ((9,), (5,))
    assert changes.describe() == "lost lesion(s) 9 and split lesion(s) 5"
    assert not lesion_changes(source, source)


def test_reference_grid_chosen_in_the_manifest(tmp_path):
    paths = clinical_subject(tmp_path / "sub-01")
    manifest = write_manifest([SubjectPaths(paths.subject, paths.images, paths.mask, reference="t1w")],
                              tmp_path / "manifest.csv")
    assert pd.read_csv(manifest)["reference"].tolist() == ["t1w"]
    subject = read_manifest(manifest)[0].load()
    assert subject.shape == ONE_MM.shape and subject.reference == "t1w"
    assert np.array_equal(subject.images["t1w"], field(voxel_world(ONE_MM)))  # the reference is read as it is
    assert subject.grids["phase"].resampling == "linear" and subject.grids["mask"].resampling == "none"
    inside = SLAB.holds(SLAB.to_index(voxel_world(ONE_MM).reshape(-1, 3))).reshape(ONE_MM.shape)
    assert not subject.images["phase"][~inside].any()  # outside the slab: 0
    assert set(np.unique(subject.labels)) == {0, *LESIONS}
    only_phase = replace(paths, reference="t1w").load(contrasts=[])  # the reference's grid is recorded
    assert list(only_phase.images) == ["phase"] and only_phase.grids["t1w"].grid.shape == ONE_MM.shape


def test_an_anisotropic_slab_takes_the_finest_structural_grid_as_the_reference_by_default(tmp_path):
    subject = clinical_subject(tmp_path, reference=None).load()
    assert subject.reference == "t1w" and subject.shape == ONE_MM.shape and np.allclose(subject.affine, ONE_MM.affine)
    assert {name: grid.resampling for name, grid in subject.grids.items()} == {
        "t1w": "reference", "phase": "linear", "mask": "none"}
    assert set(np.unique(subject.labels)) == {0, *LESIONS} and not subject.lesion_changes
    assert subject.space == "t1w"
    # Only the mask, as registering lesions reads it, comes on the same grid.
    assert clinical_subject(tmp_path, reference=None).load_mask().mask.shape == ONE_MM.shape


def test_a_lesion_beyond_the_slab_on_the_structural_grid_is_named_in_a_warning(tmp_path):
    beyond = {**LESIONS, 20: (0.0, 0.0, 20.0)}  # past the slab's last slice, inside the 1 mm grid
    paths = clinical_subject(tmp_path, mask=spheres(ONE_MM, beyond), reference=None)
    expected = r"lesion\(s\) 20 reach beyond the field of view of the phase image"
    with pytest.warns(InputWarning, match=expected) as caught:
        subject = paths.load()
    assert str(paths.image("phase")) in str(caught[0].message) and len(caught) == 1
    assert set(np.unique(subject.labels)) == {0, *beyond}  # kept and scored, with the warning
    # on the slab as the reference the lesion is outside the reference grid instead: no such warning
    with warnings.catch_warnings(record=True) as on_slab:
        warnings.simplefilter("always")
        replace(paths, reference="phase").load()
    assert not any("beyond the field of view" in str(w.message) for w in on_slab)


def test_the_default_reference_rule():
    iso = {"t1w": ONE_MM}
    assert default_reference(SLAB, iso) == "t1w"
    assert default_reference(ONE_MM, {"t1w": SLAB}) is None  # an isotropic susceptibility grid stays
    fine = Grid.of((60, 60, 60), tilted_affine((60, 60, 60), (0.8, 0.8, 0.8), 0.0))
    assert default_reference(SLAB, {"t1w": ONE_MM, "flair": fine}) == "flair"  # the finest one
    assert default_reference(SLAB, {"t1w": ONE_MM, "flair": ONE_MM}) == "t1w"  # the first on a tie
    thick = Grid.of((48, 48, 16), tilted_affine((48, 48, 16), (0.9, 0.9, 3.0), 0.0))
    assert default_reference(SLAB, {"flair": thick}) is None  # a 2D FLAIR is no finer
    coarse = Grid.of((20, 20, 20), tilted_affine((20, 20, 20), (2.0, 2.0, 2.0), 0.0))
    assert default_reference(SLAB, {"t1w": coarse}) is None  # not finer than the slab's 2 mm


@pytest.mark.parametrize("shift, message", [(300.0, "do not overlap in world space"),
                                            (34.0, r"overlap by only 2\d% of the smaller one")])
def test_images_not_co_registered_are_refused_with_their_extents(tmp_path, shift, message):
    away = Grid.of(ONE_MM.shape, ONE_MM.affine + np.array([[0, 0, 0, shift], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    paths = clinical_subject(tmp_path, t1w=away)
    with pytest.raises(InputError, match=message) as error:
        paths.load()
    text = str(error.value)
    assert text.startswith(f"{paths.image('t1w')}: the t1w image and the reference image {paths.image('phase')}")
    assert f"x {shift - 24:.1f} to {shift + 24:.1f}" in text and "shape (40, 40, 14), 0.8 × 0.8 × 2 mm voxels" in text
    assert "register them first" in text
    assert any(message.split(" ")[0] in problem for problem in header_problems(paths))  # from headers alone


def test_a_mask_whose_lesions_lie_outside_the_reference_grid_is_refused(tmp_path):
    outside = {**{i: (0.0, 20.0, z) for i, z in ((1, -10.0), (2, 0.0), (4, 10.0))}, 3: LESIONS[3]}
    paths = clinical_subject(tmp_path, mask=spheres(ONE_MM, outside))
    with pytest.raises(InputError, match=r"sub-01_mask\.nii\.gz: 3 of the mask's 4 lesions lie outside the reference "
                                         r"image .*sub-01_phase\.nii\.gz .*not co-registered"):
        paths.load()


def test_resampling_matches_scipy_whatever_the_memory_layout():
    rng = np.random.default_rng(1)
    source = Grid.of((20, 24, 16), tilted_affine((20, 24, 16), (1.1, 0.9, 1.3), 20.0))
    target = Grid.of((18, 22, 15), tilted_affine((18, 22, 15), (1.0, 1.0, 1.0), -7.0, (0.5, -0.3, 0.2)))
    data = rng.normal(size=source.shape).astype(np.float32)
    labels = rng.integers(0, 5, source.shape).astype(np.int32)
    mapping = np.linalg.inv(source.affine) @ target.affine
    common = {"offset": mapping[:3, 3], "output_shape": target.shape, "mode": "constant", "prefilter": False}
    linear = ndimage.affine_transform(data, mapping[:3, :3], order=1, **common)
    nearest = ndimage.affine_transform(labels, mapping[:3, :3], order=0, **common)
    # Within half a voxel beyond the outer voxels' centres nearest neighbour still takes their label
    # (they cover that far); scipy's constant mode gives 0 there.
    reach = source.to_index(voxel_world(target).reshape(-1, 3)).reshape(*target.shape, 3)
    within = np.all((reach >= 0) & (reach <= np.array(source.shape) - 1), axis=-1)
    border = np.all((reach >= -0.5) & (reach < np.array(source.shape) - 0.5), axis=-1) & ~within
    for layout in (np.ascontiguousarray, np.asfortranarray):
        np.testing.assert_allclose(resample_image(layout(data), source, target), linear, atol=1e-4)
        labelled = resample_labels(layout(labels), source, target)
        assert np.array_equal(labelled[within], nearest[within]) and labelled[border].any()
        assert not labelled[~within & ~border].any()


def test_overlap_is_the_share_of_the_smaller_grid():
    assert overlap(SLAB, ONE_MM) == 1.0
    half = Grid.of((48, 48, 48), ONE_MM.affine + np.array([[0, 0, 0, 24.0], [0] * 4, [0] * 4, [0] * 4]))
    assert overlap(ONE_MM, half) == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------- simulated cohorts

def test_a_clinical_cohort_loads_on_the_structural_grid_or_the_phase_slab_with_its_lesion_ids(tmp_path):
    run_to_end(simulate_cohort(tmp_path / "clinical", 1, 3, prl_fraction=0.5, site="clinical",
                               contrasts=("t1w", "flair", "magnitude"), **SMALL))
    default = open_cohort(tmp_path / "clinical")[0]
    assert default.susceptibility == "phase" and default.structural == ("t1w", "flair")
    # By default on the 1 mm structural grid, the mask's own: every lesion whole.
    on_t1w = default.load()
    assert on_t1w.reference == "t1w" and on_t1w.grids["mask"].resampling == "none"
    assert not on_t1w.lesion_changes
    paths = replace(default, reference="phase")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subject = paths.load(extra=True)
    phase = nib.load(paths.image("phase"))
    assert subject.shape == phase.shape and np.allclose(subject.affine, phase.affine)
    assert list(subject.images) == ["phase", "t1w", "flair", "magnitude"]
    assert all(image.shape == subject.shape for image in subject.images.values())
    assert subject.prl_mask.shape == subject.shape and subject.prl_mask.any()
    assert {name: grid.resampling for name, grid in subject.grids.items()} == {
        "phase": "reference", "t1w": "linear", "flair": "linear", "magnitude": "none", "mask": "nearest",
        "prl_mask": "nearest"}
    mask = nib.load(paths.mask)
    own_labels = label_lesions(np.asanyarray(mask.dataobj), mask.header.get_zooms()[:3])
    own = lesion_table_from_labels(own_labels, mask.affine, subject.subject)
    table = find_lesions(subject).table
    assert set(table["lesion"]) == set(own["lesion"]) - set(subject.lesion_changes.vanished)
    assert bool(subject.lesion_changes) == any("resampling the lesion mask" in str(w.message) for w in caught)
    common = own.set_index("lesion").loc[table["lesion"]]
    error = np.linalg.norm(table[["x_mm", "y_mm", "z_mm"]].to_numpy() - common[["x_mm", "y_mm", "z_mm"]].to_numpy(),
                           axis=1)
    assert np.median(error) < 0.6 and error.max() < 2.0  # the same lesions, in the same places
    truth = pd.read_csv(tmp_path / "clinical" / "lesions_truth.tsv", sep="\t").set_index("lesion")
    prl = table.set_index("lesion")["prl"]
    assert (prl == truth.loc[prl.index, "prl"]).mean() > 0.9  # the PRL mask came along with the lesions


def test_a_simulated_research_cohort_loads_as_nibabel_reads_it(tmp_path):
    manifest = run_to_end(simulate_cohort(tmp_path / "research", 1, 2, prl_fraction=0.5, **SMALL))
    paths = read_manifest(manifest)[0]
    subject = paths.load(extra=True)
    for name, file in paths.images:
        assert np.array_equal(subject.images[name], np.asanyarray(nib.load(file).dataobj)), name
    assert np.array_equal(subject.mask, np.asanyarray(nib.load(paths.mask).dataobj))
    assert np.array_equal(subject.prl_mask, np.asanyarray(nib.load(paths.prl_mask).dataobj) > 0)
    assert {grid.resampling for grid in subject.grids.values()} == {"reference", "none"}


# --------------------------------------------------------------------------- scoring on the model's grid

def test_scoring_refuses_a_subject_whose_patches_would_be_cut_on_other_voxels_than_the_models(tmp_path):
    slab = clinical_subject(tmp_path)
    on_slab = slab.load()
    torch.manual_seed(0)
    contrasts = ("t1w", "phase")
    trained = Checkpoint(DeepPRL(TINY, SIZE, contrasts).eval(), 0.5, PatchConfig(size=SIZE, contrasts=contrasts),
                         {"grids": grids_record([(on_slab.reference, on_slab.grids)])})
    model = load_checkpoint(trained.save(tmp_path / "model.pt"))
    assert model.reference_grid == ("phase", pytest.approx((0.8, 0.8, 2.0)))
    assert len(score_subject(on_slab, [model])) == len(LESIONS)
    on_t1w = replace(slab, reference=None).load()  # the default: the 1 mm T1w grid
    with pytest.raises(InputError, match=rf"subject sub-01: its patches would be cut on the grid of its t1w image "
                                         rf"\(1 × 1 × 1 mm voxels\), but model {model.id} learnt on the grid of the "
                                         r"phase image \(0.8 × 0.8 × 2 mm voxels\).*manifest column reference: phase"):
        score_subject(on_t1w, [model])
    in_memory = Subject("sub-01", dict(on_t1w.images), on_t1w.mask, on_t1w.affine)  # no grid known: not checked
    assert len(score_subject(in_memory, [model])) == len(LESIONS)
