"""Orthogonal mid-slices of the lesion's neighbourhood: both contrasts x three planes.

A rim that shows on one slice may be a vein; seeing it on three planes at a glance is what tells
them apart. Tiles are rendered with numpy into QImages (about a millisecond), not matplotlib
(tens of milliseconds), so the panel never slows the step from one lesion to the next.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

PLANES = ("axial", "coronal", "sagittal")
ROWS = (("mp2rage", "MP2RAGE"), ("phase", "phase"))
TILE_PX = 108
OUTLINE_RGB = (255, 212, 0)


def crop(volume: np.ndarray, centre: np.ndarray, radius: int) -> np.ndarray:
    """A cube of side ``2 * radius + 1`` around ``centre`` (voxels), zero outside the volume."""
    size = 2 * radius + 1
    out = np.zeros((size,) * 3, dtype=volume.dtype)
    low = np.round(centre).astype(int) - radius
    src = tuple(slice(max(lo, 0), min(lo + size, n)) for lo, n in zip(low, volume.shape))
    dst = tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip(src, low))
    if all(s.stop > s.start for s in src):
        out[dst] = volume[src]
    return out


def mid_slices(cube: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal mid-slices as displayed: rows up = anterior / superior."""
    r = cube.shape[0] // 2
    return [np.flipud(plane.T) for plane in (cube[:, :, r], cube[:, r, :], cube[r, :, :])]


def render_tile(image: np.ndarray, mask: np.ndarray, window: tuple[float, float],
                scale: int) -> np.ndarray:
    """Grey RGB tile upscaled by ``scale`` with a one-pixel outline along the mask's edge."""
    low, high = window
    grey = np.clip((image - low) / max(high - low, 1e-12), 0, 1) * 255
    big = np.repeat(np.repeat(grey.astype(np.uint8), scale, 0), scale, 1)
    inside = np.repeat(np.repeat(mask, scale, 0), scale, 1)
    edge = np.zeros_like(inside)
    edge[1:, :] |= inside[1:, :] & ~inside[:-1, :]
    edge[:-1, :] |= inside[:-1, :] & ~inside[1:, :]
    edge[:, 1:] |= inside[:, 1:] & ~inside[:, :-1]
    edge[:, :-1] |= inside[:, :-1] & ~inside[:, 1:]
    rgb = np.repeat(big[..., None], 3, axis=2)
    rgb[edge] = OUTLINE_RGB
    return np.ascontiguousarray(rgb)


class PatchPanel(QWidget):
    """Six small tiles; :meth:`show_patch` redraws them, :meth:`clear` blanks them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        for col, plane in enumerate(PLANES, start=1):
            layout.addWidget(QLabel(plane), 0, col, alignment=Qt.AlignmentFlag.AlignCenter)
        self.tiles: dict[tuple[str, str], QLabel] = {}
        for row, (contrast, title) in enumerate(ROWS, start=1):
            layout.addWidget(QLabel(title), row, 0)
            for col, plane in enumerate(PLANES, start=1):
                tile = QLabel()
                tile.setFixedSize(TILE_PX, TILE_PX)
                tile.setStyleSheet("background: black")
                layout.addWidget(tile, row, col)
                self.tiles[contrast, plane] = tile
        self.images: dict[tuple[str, str], np.ndarray] = {}

    def show_patch(self, volumes: dict[str, np.ndarray], labels: np.ndarray, lesion: int,
                   centre: np.ndarray, radius: int, windows: dict[str, tuple[float, float]]) -> None:
        """Redraw every tile around ``centre`` (voxels); the lesion's edge is outlined."""
        scale = max(1, TILE_PX // (2 * radius + 1))
        masks = mid_slices(crop(labels, centre, radius) == lesion)
        for contrast, _ in ROWS:
            planes = mid_slices(crop(volumes[contrast], centre, radius))
            for plane, image, mask in zip(PLANES, planes, masks):
                rgb = render_tile(image, mask, windows[contrast], scale)
                self.images[contrast, plane] = rgb
                height, width, _ = rgb.shape
                qimage = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
                self.tiles[contrast, plane].setPixmap(QPixmap.fromImage(qimage))

    def clear(self) -> None:
        self.images.clear()
        for tile in self.tiles.values():
            tile.clear()
