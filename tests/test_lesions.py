"""Lesion labelling and the lesion table."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import TABLE_COLUMNS, find_lesions, lesion_table
from napari_deep_prl.data.masks import label_lesions


def make_subject(mask, affine=None, prl=None) -> Subject:
    shape = mask.shape
    return Subject("s1", {"phase": np.zeros(shape, np.float32), "mp2rage": np.ones(shape, np.float32)},
                   mask.astype(np.int32), np.eye(4) if affine is None else affine, prl)


def ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def test_corner_touching_voxels_are_one_lesion_26_connectivity():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # touch only by a corner
    mask[4, 0, 4] = 1
    labels = label_lesions(mask, (1.0, 1.0, 1.0))
    assert labels[1, 1, 1] == labels[2, 2, 2] == 1
    assert labels[4, 0, 4] == 2


def test_ids_follow_raster_order_and_are_stable():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[15:18, 2:4, 2:4] = 1  # first in raster order (x = first axis)? no: x=15 comes later
    mask[2:4, 15:18, 2:4] = 1
    mask[2:4, 2:4, 15:18] = 1
    labels = label_lesions(mask, (1.0, 1.0, 1.0))
    assert labels[2, 2, 15] == 1 and labels[2, 15, 2] == 2 and labels[15, 2, 2] == 3
    assert np.array_equal(labels, label_lesions(mask.copy(), (1.0, 1.0, 1.0)))


def test_instance_labels_kept_as_given():
    mask = np.zeros((10, 10, 10), np.int32)
    mask[1:3, 1:3, 1:3] = 7
    mask[6:8, 6:8, 6:8] = 3
    table = lesion_table(make_subject(mask))
    assert table["lesion"].tolist() == [3, 7]
    assert not table["confluent"].any()


@pytest.mark.parametrize("value", [1, 2, 255])
def test_a_mask_with_one_non_zero_value_is_binary_whatever_the_value(value):
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = value
    mask[6:8, 6:8, 6:8] = value
    table = lesion_table(make_subject(mask))
    assert table["lesion"].tolist() == [1, 2] and table["volume_voxels"].tolist() == [8, 8]


def test_touching_instances_flagged_confluent():
    mask = np.zeros((10, 10, 10), np.int32)
    mask[1:3, 1:3, 1:3] = 5
    mask[3:5, 3:5, 3:5] = 9  # corner contact with lesion 5
    mask[7:9, 7:9, 7:9] = 2
    table = lesion_table(make_subject(mask)).set_index("lesion")
    assert table.loc[5, "confluent"] and table.loc[9, "confluent"] and not table.loc[2, "confluent"]


def test_binary_dumbbell_flagged_confluent_but_ellipsoid_not():
    shape = (40, 40, 40)
    mask = ball(shape, (10, 10, 8), 4) | ball(shape, (10, 10, 17), 4)
    mask[10, 10, 8:18] = True
    mask |= ball(shape, (30, 30, 20), 3) | ball(shape, (30, 30, 22), 3)  # one elongated blob
    table = lesion_table(make_subject(mask))
    # the dumbbell (component 1) is split into two parts, 3 and 4; the blob keeps its id
    assert table["lesion"].tolist() == [2, 3, 4]
    assert table["confluent"].tolist() == [False, True, True]
    assert table["component"].tolist() == [2, 1, 1] and table["split_from"].tolist() == [0, 1, 1]


def test_table_centre_volume_world_and_bbox():
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2:4, 4:7, 6:10] = 1
    affine = np.diag([0.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [10, -20, 30]
    table = lesion_table(make_subject(mask, affine))
    row = table.iloc[0]
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert (row.x, row.y, row.z) == pytest.approx((2.5, 5.0, 7.5))
    assert (row.x_mm, row.y_mm, row.z_mm) == pytest.approx((11.25, -15.0, 45.0))
    assert row.volume_voxels == 24 and row.volume_mm3 == pytest.approx(24.0)
    assert (row.bbox_x0, row.bbox_x1, row.bbox_y0, row.bbox_y1, row.bbox_z0, row.bbox_z1) == (2, 4, 4, 7, 6, 10)


def test_prl_truth_is_majority_of_voxels():
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[7:9, 7:9, 7:9] = 1
    prl = np.zeros_like(mask, dtype=bool)
    prl[1:3, 1:3, 1] = True  # half of lesion 1: not a majority
    prl[7:9, 7:9, 7:9] = True
    prl[8, 8, 8] = False
    table = lesion_table(make_subject(mask, prl=prl))
    assert table["prl"].tolist() == [False, True]
    assert table["prl_fraction"].tolist() == pytest.approx([0.5, 7 / 8])


def test_empty_mask_gives_empty_table_with_columns():
    table = lesion_table(make_subject(np.zeros((6, 6, 6), np.uint8)))
    assert len(table) == 0 and list(table.columns) == list(TABLE_COLUMNS)


def test_find_lesions_labels_match_table():
    mask = ball((20, 20, 20), (5, 5, 5), 2) | ball((20, 20, 20), (14, 14, 14), 3)
    lesions = find_lesions(make_subject(mask))
    assert len(lesions) == 2
    for lesion, volume in zip(lesions.ids, lesions.table["volume_voxels"]):
        assert (lesions.labels == lesion).sum() == volume


@pytest.mark.parametrize("order", ["C", "F"])
def test_labels_match_whole_volume_labelling_in_any_memory_order(order):
    """Only the lesions' bounding box is labelled: ids, shapes and order must not change."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    mask = np.zeros((40, 50, 30), np.uint8)
    mask[8:33, 12:41, 5:26] = rng.random((25, 29, 21)) > 0.9  # many small blobs, off-centre
    mask = np.asarray(mask, order=order)
    expected, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    labels = label_lesions(mask, (1.0, 1.0, 1.0))
    assert n > 20
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
