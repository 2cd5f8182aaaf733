"""The review's planes: anatomical orientation from the affine, crops, outlines between voxels,
the slice strip; and that the drawn outline leaves the rim voxels visible."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deep_prl._napari.slices import (
    Orientation,
    crop,
    default_window,
    outline_segments,
    strip_indices,
)


def _marked(shape, voxel):
    volume = np.zeros(shape, np.float32)
    volume[voxel] = 1
    return volume


@pytest.mark.parametrize("affine", [
    np.diag([1.0, 1.0, 1.0, 1.0]),                      # RAS
    np.diag([-1.0, 1.0, 1.0, 1.0]),                     # LAS (radiological files)
    np.array([[0, 0, 1.0, 0], [0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]]),  # axes permuted
])
def test_volumes_are_viewed_in_ras_order_whatever_the_file_order(affine):
    shape = (6, 7, 8)
    voxel = (1, 2, 3)
    orientation = Orientation.of(shape, affine)
    ras = orientation.volume(_marked(shape, voxel))
    found = np.argwhere(ras == 1)[0]
    np.testing.assert_allclose(orientation.voxel(voxel), found)
    # a step along RAS axis k moves the world position by +1 along world axis k
    world = affine[:3, :3] @ np.array(voxel) + affine[:3, 3]
    for axis in range(3):
        step = found.copy()
        step[axis] += 1
        source = [None] * 3
        for file_axis, (target, flip) in enumerate(orientation.ornt):
            value = step[int(target)]
            source[file_axis] = shape[file_axis] - 1 - value if flip < 0 else value
        moved = affine[:3, :3] @ np.array(source) + affine[:3, 3]
        assert (moved - world)[axis] == pytest.approx(1.0)


def test_zooms_follow_the_ras_axes():
    affine = np.array([[0, 0, 2.0, 0], [0, 0.5, 0, 0], [1.5, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(Orientation.of((4, 4, 4), affine).zooms, [2.0, 0.5, 1.5])


def test_axial_crop_puts_anterior_up_and_right_on_the_right_with_zeros_outside():
    volume = np.zeros((10, 10, 5), np.float32)
    volume[9, 5, 2] = 1  # far right
    volume[5, 9, 2] = 2  # far anterior
    plane = crop(volume, "axial", 2, np.array([5.0, 5.0, 2.0]), (6, 6))
    assert plane.shape == (13, 13)
    (right_row, right_col), (front_row, front_col) = (np.argwhere(plane == v)[0] for v in (1, 2))
    assert right_row == 6 and right_col > 6    # the subject's right is on the right
    assert front_row < 6 and front_col == 6    # anterior is up
    assert plane[0, 0] == 0 and plane[-1, -1] == 0   # beyond the volume
    assert not crop(volume, "axial", 9, np.array([5.0, 5.0, 2.0]), (6, 6)).any()


def test_outline_segments_lie_between_voxels():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    segments = outline_segments(mask)
    assert len(segments) == 12  # a 3 x 3 square's perimeter in voxel edges
    assert np.all(segments == np.round(segments))  # on voxel corners, not through voxels
    xs, ys = segments[:, [0, 2]], segments[:, [1, 3]]
    assert xs.min() == 1 and xs.max() == 4 and ys.min() == 1 and ys.max() == 4


def test_strip_covers_the_lesion_and_one_slice_beyond_each_side():
    box = (slice(0, 10), slice(0, 10), slice(5, 8))
    assert strip_indices(box, "axial", 6, 9, 20) == [4, 5, 6, 7, 8]
    assert strip_indices(box, "axial", 6, 3, 20) == [5, 6, 7]
    long = (slice(0, 10), slice(0, 10), slice(2, 18))
    assert strip_indices(long, "axial", 10, 5, 20) == [8, 9, 10, 11, 12]
    assert strip_indices((slice(0, 2), slice(0, 2), slice(0, 2)), "axial", 0, 9, 2) == [0, 1]


def test_signed_contrasts_get_a_symmetric_window():
    rng = np.random.default_rng(0)
    phase = rng.normal(0, 0.1, (20, 20, 20)).astype(np.float32)
    low, high = default_window("phase", phase)
    assert low == pytest.approx(-high) and high > 0
    t1 = rng.uniform(100, 200, (20, 20, 20)).astype(np.float32)
    low, high = default_window("mp2rage", t1)
    assert 100 <= low < high <= 200


@pytest.mark.gui
def test_the_drawn_outline_leaves_every_voxel_centre_visible(qtbot):
    """Drawn 10 pixels a voxel, the outline covers voxel borders only: the centre of each voxel
    around the lesion (where a rim is) keeps its grey."""
    from qtpy.QtCore import QRectF
    from qtpy.QtGui import QColor, QImage, QPainter

    from napari_deep_prl._napari.review.lesion_canvas import LesionCanvas, Tile

    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True
    pixels = np.full((9, 9), 128, np.uint8)
    none = outline_segments(np.zeros_like(mask))
    tile = Tile(pixels, (1.0, 1.0), outline_segments(mask), none, none)
    canvas = LesionCanvas()
    qtbot.addWidget(canvas)
    image = QImage(90, 90, QImage.Format.Format_RGB32)
    image.fill(QColor(0, 0, 0))
    painter = QPainter(image)
    canvas._paint_tile(painter, tile, QRectF(0, 0, 90, 90), 2.0)
    painter.end()
    for row in range(9):
        for col in range(9):
            colour = image.pixelColor(col * 10 + 5, row * 10 + 5)
            assert (colour.red(), colour.green(), colour.blue()) == (128, 128, 128)
    border = image.pixelColor(30, 45)  # on the lesion's left edge
    assert border.red() > 200 and border.green() > 150 and border.blue() < 100  # yellow
