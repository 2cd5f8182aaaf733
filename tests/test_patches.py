"""Patch extraction: centring, borders, normalisation, mask channel, shifts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import (
    PatchConfig,
    extract_patches,
    mask_patches,
    outgrown,
    subject_scaling,
    warn_if_outgrown,
)

MP, PH, MK = (PatchConfig().channels.index(c) for c in ("mp2rage", "phase", "mask"))


def ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


@pytest.fixture
def subject():
    rng = np.random.default_rng(0)
    shape = (48, 48, 40)
    mask = (ball(shape, (20, 20, 20), 3) | ball(shape, (2, 24, 20), 2) | ball(shape, (27, 20, 20), 2))
    phase = rng.normal(0, 1.0, shape).astype(np.float32)
    mp2rage = (100 + rng.normal(0, 5, shape)).astype(np.float32)
    mp2rage[mask] = 60
    return Subject("s", {"phase": phase, "mp2rage": mp2rage}, mask.astype(np.int32), np.eye(4))


def test_shape_dtype_range_and_channel_order(subject):
    lesions = find_lesions(subject)
    patches = extract_patches(subject, lesions)
    assert patches.shape == (3, 3, 28, 28, 28) and patches.dtype == np.float32
    assert patches.min() >= 0 and patches.max() <= 1
    assert PatchConfig().channels == ("mp2rage", "phase", "mask")
    # the lesion sits at the centre of its patch in the mask channel, dark in MP2RAGE
    centre = patches[0, :, 14, 14, 14]
    assert centre[MK] == 1 and centre[MP] < patches[0, MP].mean()


def test_border_patch_zero_padded(subject):
    lesions = find_lesions(subject)
    border_id = lesions.table.loc[lesions.table["x"] < 5, "lesion"].item()
    patch = extract_patches(subject, lesions, ids=[border_id])[0]
    # centre x = 2, so the first 12 planes along x lie outside the volume
    assert np.all(patch[:, :12] == 0)
    assert patch[MP, 12:].max() > 0


def test_mask_channel_excludes_other_lesions_and_is_dilated(subject):
    lesions = find_lesions(subject)
    big = lesions.table.sort_values("volume_voxels").iloc[-1]["lesion"]
    undilated = extract_patches(subject, lesions, PatchConfig(mask_dilation=0), ids=[big])[0, MK]
    dilated = extract_patches(subject, lesions, PatchConfig(mask_dilation=1), ids=[big])[0, MK]
    assert undilated.sum() == (lesions.labels == big).sum()
    assert dilated.sum() > undilated.sum() and np.all(dilated >= undilated)
    # the neighbour 7 voxels away along x is left out by default, kept with "include"
    assert undilated[14 + 7, 14, 14] == 0
    included = extract_patches(subject, lesions, PatchConfig(mask_dilation=0, other_lesions="include"), ids=[big])
    assert included[0, MK, 14 + 7, 14, 14] == 1
    downweighted = extract_patches(subject, lesions, PatchConfig(mask_dilation=0, other_lesions="downweight"),
                                   ids=[big])
    assert downweighted[0, MK, 14 + 7, 14, 14] == 0.5


@pytest.mark.parametrize("steps", [1, 2])
def test_mask_dilation_is_scipys_l1_ball_dilation_patch_by_patch(subject, steps):
    lesions = find_lesions(subject)
    inner = lesions.table.loc[lesions.table["x"] > 16, "lesion"].to_numpy()  # patches inside the volume
    undilated = mask_patches(lesions, PatchConfig(mask_dilation=0), ids=inner) > 0
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), steps)
    expected = np.stack([ndimage.binary_dilation(m, structure=ball) for m in undilated]).astype(np.float32)
    config = PatchConfig(mask_dilation=steps)
    assert np.array_equal(mask_patches(lesions, config, ids=inner), expected)
    assert np.array_equal(extract_patches(subject, lesions, config)[:, MK], mask_patches(lesions, config))


def test_shift_moves_the_centre(subject):
    lesions = find_lesions(subject)
    big = lesions.table.sort_values("volume_voxels").iloc[-1]["lesion"]
    plain = extract_patches(subject, lesions, PatchConfig(mask_dilation=0), ids=[big])[0, MK]
    moved = extract_patches(subject, lesions, PatchConfig(mask_dilation=0), ids=[big], shift=(5, 0, 0))[0, MK]
    assert np.array_equal(moved[:-5], plain[5:])
    per_lesion = extract_patches(subject, lesions, PatchConfig(mask_dilation=0), ids=[big, big],
                                 shift=np.array([[0, 0, 0], [5, 0, 0]]))
    assert np.array_equal(per_lesion[1, MK], moved)


def test_patch_normalisation_spans_unit_range_per_patch(subject):
    lesions = find_lesions(subject)
    patches = extract_patches(subject, lesions, PatchConfig(normalisation="patch"), ids=lesions.ids[1:])
    for p in patches:
        assert p[PH].min() == 0 and p[PH].max() == 1


def test_subject_normalisation_keeps_contrast_between_lesions(subject):
    """A stronger phase rim must stay stronger after per-subject scaling, unlike per-patch."""
    lesions = find_lesions(subject)
    strong, weak = subject.phase.copy(), subject.phase.copy()
    for lesion, factor in zip(lesions.ids, (8.0, 2.0, 1.0)):
        strong[lesions.labels == lesion] -= factor
    subject.images["phase"] = strong
    patches = extract_patches(subject, lesions)
    centre_phase = patches[:, PH, 14, 14, 14]
    assert centre_phase[0] < centre_phase[2]
    scaling = subject_scaling(subject, lesions)
    assert scaling.susceptibility_scale == pytest.approx(4 * 1.4826 * 0.6745, rel=0.15)  # 4 robust SDs of N(0, 1)
    # phase 0 maps to 0.5
    subject.images["phase"] = np.zeros_like(weak)
    assert extract_patches(subject, lesions, scaling=scaling)[0, PH, 14, 14, 14] == pytest.approx(0.5)


def test_scale_invariance_of_subject_normalisation(subject):
    """Phase scales with field strength × echo time; normalised patches must not."""
    lesions = find_lesions(subject)
    base = extract_patches(subject, lesions)
    subject.images["phase"] = subject.phase * 2.3
    subject.images["mp2rage"] = subject.mp2rage * 4.0 + 7
    assert np.allclose(extract_patches(subject, lesions), base, atol=1e-4)


def test_local_phase_centre_ignores_offsets_and_background_fields(subject):
    """Phase filtering may leave an offset or a slow background field: patches must not shift."""
    lesions = find_lesions(subject)
    zero = PatchConfig(phase_centre="zero")
    base, base_zero = extract_patches(subject, lesions), extract_patches(subject, lesions, zero)
    phase = subject.phase
    subject.images["phase"] = phase + 5.0  # five tissue SDs
    assert np.allclose(extract_patches(subject, lesions), base, atol=1e-5)
    assert np.abs(extract_patches(subject, lesions, zero)[:, PH] - base_zero[:, PH]).mean() > 0.3
    # A background field varying over the brain: 3 SDs plus 0.01 SD per voxel along x.
    subject.images["phase"] = phase + 3 + 0.01 * np.arange(phase.shape[0], dtype=np.float32)[:, None, None]
    local_error = np.abs(extract_patches(subject, lesions)[:, PH] - base[:, PH]).mean(axis=(1, 2, 3))
    zero_error = np.abs(extract_patches(subject, lesions, zero)[:, PH] - base_zero[:, PH]).mean(axis=(1, 2, 3))
    assert (local_error < 0.02).all() and (zero_error > 0.2).all()


def test_patch_settings_of_older_checkpoints_keep_their_meaning():
    assert PatchConfig().phase_centre == "local"
    stored = PatchConfig(size=20).to_dict()
    assert PatchConfig.from_dict(stored) == PatchConfig(size=20)
    del stored["phase_centre"]  # written before the setting existed: phase 0 was the centre
    assert PatchConfig.from_dict(stored).phase_centre == "zero"
    with pytest.raises(InputError, match="unknown phase_centre 'mean'"):
        PatchConfig(phase_centre="mean")


def test_unknown_lesion_id_is_an_error(subject):
    with pytest.raises(InputError, match=r"no lesion with id\(s\) \[42\]"):
        extract_patches(subject, find_lesions(subject), ids=[42])


def test_a_mask_that_leaves_no_tissue_gets_a_clear_error(subject):
    brain_mask = Subject("s", subject.images, np.ones(subject.shape, np.int32), subject.affine)
    with pytest.raises(InputError, match=r"subject s: too little tissue.*covers 100% .*not a brain mask"):
        extract_patches(brain_mask, find_lesions(brain_mask))
    assert extract_patches(brain_mask, find_lesions(brain_mask), PatchConfig(normalisation="patch")).shape[0] == 1


def test_empty_selection_and_bad_config():
    with pytest.raises(InputError, match="unknown normalisation"):
        PatchConfig(normalisation="zscore")
    subject = Subject("e", {"phase": np.zeros((8, 8, 8), np.float32), "mp2rage": np.zeros((8, 8, 8), np.float32)},
                      np.zeros((8, 8, 8), np.int32), np.eye(4))
    assert extract_patches(subject, find_lesions(subject)).shape == (0, 3, 28, 28, 28)


def test_config_round_trip():
    config = PatchConfig(size=24, normalisation="patch", mask_dilation=2, other_lesions="include")
    assert PatchConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("normalisation", ["subject", "patch"])
def test_memory_order_of_the_volumes_does_not_change_patches(subject, normalisation):
    """NIfTI data arrive Fortran-ordered; views with odd strides must work too."""
    config = PatchConfig(normalisation=normalisation)
    expected = extract_patches(subject, find_lesions(subject), config)
    fortran = Subject("s", {"phase": np.asfortranarray(subject.phase), "mp2rage": np.asfortranarray(subject.mp2rage)},
                      np.asfortranarray(subject.mask), subject.affine)
    strided = Subject("s", {"phase": subject.phase[::-1][::-1], "mp2rage": subject.mp2rage.transpose(2, 1, 0).T},
                      np.pad(subject.mask, 1)[1:-1, 1:-1, 1:-1], subject.affine)
    for other in (fortran, strided):
        np.testing.assert_array_equal(extract_patches(other, find_lesions(other), config), expected)


def test_lesions_too_large_for_the_patch_are_found_and_warned_about(subject):
    table = find_lesions(subject).table  # radii 3, 2, 2: reaching 3 and 2 voxels from the centre
    assert outgrown(table, 28).sum() == 0
    # a 10-voxel patch spans -5..4 around the centre: 3 + 2 rim voxels do not fit, 2 + 2 do
    assert outgrown(table, 10).tolist() == (table["volume_voxels"] > 50).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_outgrown([table], 28, "advice")  # nothing to say
    with pytest.warns(InputWarning, match=r"1 of 3 lesions \(33%\) are too large for the 10-voxel patch.* "
                                          r"Use more\. A patch of 12 voxels"):
        warn_if_outgrown([table.iloc[:0], table], 10, "Use more.")
    assert not outgrown(table, 12).any()


def test_patches_cut_a_run_at_a_time_are_those_cut_at_once(subject, monkeypatch):
    import napari_deep_prl.data.patches as patches_module

    lesions = find_lesions(subject)
    shifts = np.array([[0, 0, 0], [5, 0, 0], [0, -5, 0]])
    for config in (PatchConfig(), PatchConfig(normalisation="patch"), PatchConfig(phase_centre="zero")):
        at_once = extract_patches(subject, lesions, config, shift=shifts)
        monkeypatch.setattr(patches_module, "CHUNK_VOXELS", 1)  # one patch a run
        assert patches_module.chunk_length(config.size) == 1
        np.testing.assert_array_equal(extract_patches(subject, lesions, config, shift=shifts), at_once)
        runs = list(patches_module.patch_runs(subject, lesions, config))
        assert len(runs) == 3
        np.testing.assert_array_equal(np.concatenate(runs), extract_patches(subject, lesions, config))
        monkeypatch.undo()


def test_the_subject_scaling_samples_an_even_spread_of_many_lesions(subject, monkeypatch):
    import napari_deep_prl.data.patches as patches_module

    lesions = find_lesions(subject)
    monkeypatch.setattr(patches_module, "SCALING_VOXELS", 2 * 14**3)  # two lesions' worth of 28³ patches
    sampled = subject_scaling(subject, lesions)
    table = lesions.table.iloc[[0, 2]]  # the first and the last: evenly spread
    two = type(lesions)(lesions.labels, table.reset_index(drop=True))
    monkeypatch.undo()
    assert sampled == subject_scaling(subject, two)


@pytest.mark.parametrize("settings", [{"size": 28.7}, {"size": True}, {"size": 97}, {"size": 3},
                                      {"mask_dilation": 15}, {"mask_dilation": 1.5}, {"mask_dilation": -1}])
def test_patch_settings_are_whole_voxels_in_range(settings):
    with pytest.raises(InputError, match="give a whole number of voxels from"):
        PatchConfig(**settings)
