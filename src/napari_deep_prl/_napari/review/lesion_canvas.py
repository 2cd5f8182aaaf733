"""The review's own picture of one lesion: a panel per contrast side by side, and a strip of
consecutive slices through the lesion below them.

The lesion under review is outlined in yellow and other lesions in cyan; when the lesion is a
part of a confluent component split into lesions, the component's other parts get a faint
yellow outline, so the rater sees the part and the component it came from.

The review draws here, not in napari's canvas, so what a rater judges is owned by the review:
layers that other widgets, sample data or the user add to the viewer never change it, and
docking a review changes nothing in the viewer. Planes are cut with numpy
(:mod:`.slices`) and painted with QPainter, a few milliseconds a lesion. The widget knows when a
lesion has actually been painted (:attr:`drawn`): a label key counts only for a lesion drawn on
screen.

Mouse: the wheel steps through slices, Ctrl + wheel zooms, dragging in a panel changes its grey
window (left-right: width, up-down: level; kept for the session), a double click resets it, a
click on the strip goes to that slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import (
    QColor,
    QFont,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QWheelEvent,
)
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_deep_prl._napari.review.subject_images import SubjectImages, Target
from napari_deep_prl._napari.slices import (
    EDGE_LETTERS,
    PLANES,
    crop,
    grey,
    half_sizes,
    outline_segments,
    strip_indices,
    title,
)

#: Outline colours: the lesion under review, the other parts of its confluent component (faint),
#: and its neighbours.
CURRENT_COLOUR = QColor(255, 212, 0, 235)
COMPONENT_COLOUR = QColor(255, 212, 0, 90)
OTHERS_COLOUR = QColor(0, 200, 255, 140)
#: The field of view never goes below this (mm), so tiny lesions keep some context.
MIN_FOV_MM = 20.0
#: Slices in the strip (consecutive, through the lesion and one beyond each side).
STRIP_SLICES = 9
#: Largest strip thumbnail (pixels); they shrink to fit the widget's width.
STRIP_MAX_PX = 128
GAP = 4
CAPTION_PX = 16


@dataclass
class Tile:
    """One rendered plane: grey pixels, their size in mm, and the outlines to draw over them
    (segments: the lesion, the rest of its confluent component, the other lesions)."""

    pixels: np.ndarray
    voxel_mm: tuple[float, float]
    current: np.ndarray
    component: np.ndarray
    others: np.ndarray

    def image(self) -> QImage:
        rows, cols = self.pixels.shape
        return QImage(self.pixels.data, cols, rows, cols, QImage.Format.Format_Grayscale8)


class LesionCanvas(QWidget):
    """Panels and slice strip of the current lesion; every method runs on the main thread."""

    #: A lesion was painted on screen for the first time since it was asked for.
    drawn = Signal(str, int)
    #: The rater zoomed with Ctrl + wheel: the new field-of-view factor.
    fov_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 260)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.images: SubjectImages | None = None
        self.target: Target | None = None
        self.panels: tuple[str, ...] | None = None
        self.plane = "axial"
        self.offset = 0
        self.fov_factor = 3.0
        self.outlines = True
        self.message = ""
        self._windows: dict[str, tuple[float, float]] = {}
        self._tiles: dict[str, Tile] = {}
        self._strip: list[tuple[int, Tile]] = []
        self._drawn: tuple[str, int] | None = None
        self._drag: tuple[str, QPointF, tuple[float, float]] | None = None
        self._panel_rects: dict[str, QRectF] = {}
        self._strip_rects: list[tuple[int, QRectF]] = []

    # -- what to show ---------------------------------------------------------------------

    def show_lesion(self, images: SubjectImages, target: Target) -> None:
        """Show ``target`` of ``images`` from its centre slice; painted (and :attr:`drawn`
        emitted, even for the lesion already on screen) at the next repaint."""
        self.images = images
        self.target = target
        self._drawn = None
        self.offset = 0
        self.message = ""
        self._render()

    def clear(self, message: str = "") -> None:
        """Nothing to show (no project, or loading): ``message`` in the middle."""
        self.images = self.target = None
        self.message = message
        self._tiles, self._strip = {}, []
        self.update()

    def is_drawn(self, subject: str, lesion: int) -> bool:
        """Whether that lesion is the one on screen and has been painted."""
        return self._drawn == (subject, int(lesion)) and self.target is not None \
            and (self.target.subject, self.target.lesion) == self._drawn

    @property
    def contrasts(self) -> list[str]:
        """The panels shown: the chosen contrasts the subject has, in the chosen order."""
        if self.images is None:
            return []
        have = list(self.images.volumes)
        chosen = [c for c in (self.panels or have) if c in have]
        return chosen or have

    @property
    def slice_index(self) -> int:
        """The slice of the panels along the plane's fixed axis (RAS voxels)."""
        assert self.target is not None
        return int(round(self.target.centre[PLANES[self.plane][0]])) + self.offset

    @property
    def fov_mm(self) -> float:
        extent = 0.0 if self.target is None else self.target.extent_mm
        return max(MIN_FOV_MM, self.fov_factor * extent)

    # -- changing the view -----------------------------------------------------------------

    def set_plane(self, plane: str) -> None:
        if plane not in PLANES:
            raise ValueError(f"plane '{plane}' is not one of {', '.join(PLANES)}")
        self.plane, self.offset = plane, 0
        self._render()

    def step(self, slices: int) -> None:
        """Move the panels ``slices`` slices along the plane's axis (within the volume)."""
        if self.target is None or self.images is None:
            return
        size = self.images.labels.shape[PLANES[self.plane][0]]
        index = min(max(self.slice_index + slices, 0), size - 1)
        self.offset += index - self.slice_index
        self._render()

    def recentre(self) -> None:
        """Back to the lesion's centre slice."""
        self.offset = 0
        self._render()

    def set_fov_factor(self, factor: float) -> None:
        self.fov_factor = float(factor)
        self._render()

    def set_outlines(self, visible: bool) -> None:
        self.outlines = bool(visible)
        self.update()

    def set_panels(self, panels: tuple[str, ...] | None) -> None:
        self.panels = tuple(panels) if panels else None
        self._render()

    def window(self, contrast: str) -> tuple[float, float]:
        """The grey window of a contrast: the rater's own this session, else the subject's."""
        return self._windows.get(contrast) or self.images.windows[contrast]

    def set_window(self, contrast: str, window: tuple[float, float]) -> None:
        self._windows[contrast] = (float(window[0]), float(window[1]))
        self._render()

    def reset_windows(self) -> None:
        self._windows.clear()
        self._render()

    # -- rendering ---------------------------------------------------------------------------

    def _render(self) -> None:
        """Cut and window every plane of the current view (numpy), then ask for a repaint."""
        images, target = self.images, self.target
        self._tiles, self._strip = {}, []
        if images is None or target is None:
            self.update()
            return
        zooms = images.zooms
        half = half_sizes(self.plane, self.fov_mm, zooms)
        _, row, col = PLANES[self.plane]
        voxel_mm = (float(zooms[row]), float(zooms[col]))
        index = self.slice_index
        part = images.parts.get(target.lesion)
        siblings = [] if part is None else [p for p in part.parts if p != target.lesion]

        def tile(contrast: str, at: int) -> Tile:
            labels = crop(images.labels, self.plane, at, target.centre, half)
            current = labels == target.lesion
            component = np.isin(labels, siblings)
            return Tile(grey(crop(images.volumes[contrast], self.plane, at, target.centre, half),
                             self.window(contrast)), voxel_mm, outline_segments(current),
                        outline_segments(component), outline_segments((labels > 0) & ~current & ~component))

        for contrast in self.contrasts:
            self._tiles[contrast] = tile(contrast, index)
        box = images.boxes.get(target.lesion)
        if box is not None:
            size = images.labels.shape[PLANES[self.plane][0]]
            first = self.contrasts[0]
            self._strip = [(at, tile(first, at))
                           for at in strip_indices(box, self.plane, index, STRIP_SLICES, size)]
        self.update()

    @property
    def rendered(self) -> dict[str, np.ndarray]:
        """The grey pixels of each panel as last rendered (what the rater sees, before scaling)."""
        return {contrast: t.pixels for contrast, t in self._tiles.items()}

    @property
    def tiles(self) -> dict[str, Tile]:
        """Each panel as last rendered: its pixels and outlines."""
        return dict(self._tiles)

    @property
    def strip_slices(self) -> list[int]:
        """Slice offsets from the lesion's centre shown in the strip."""
        if self.target is None:
            return []
        centre = int(round(self.target.centre[PLANES[self.plane][0]]))
        return [at - centre for at, _ in self._strip]

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(660, 470)

    def _layout(self) -> tuple[list[tuple[str, QRectF]], list[tuple[int, QRectF]]]:
        """Where each panel and strip thumbnail goes in the current widget size."""
        width, height = float(self.width()), float(self.height())
        n_strip = len(self._strip)
        thumb = min(STRIP_MAX_PX, (width - GAP * (n_strip + 1)) / max(n_strip, 1)) if n_strip else 0.0
        strip_height = thumb + CAPTION_PX + GAP if n_strip else 0.0
        contrasts = list(self._tiles)
        n = max(len(contrasts), 1)
        room = height - strip_height - GAP
        # as many rows as make the panels largest (four panels in a narrow dock: two by two)
        side, rows = max((min((width - GAP * (-(-n // r) + 1)) / -(-n // r),
                              room / r - CAPTION_PX - GAP), r) for r in range(1, n + 1))
        side, cols = max(side, 10.0), -(-n // rows)
        left = (width - (side * cols + GAP * (cols - 1))) / 2
        panels = [(c, QRectF(left + (i % cols) * (side + GAP),
                             CAPTION_PX + (i // cols) * (side + CAPTION_PX + GAP), side, side))
                  for i, c in enumerate(contrasts)]
        top = rows * (side + CAPTION_PX + GAP) + GAP + CAPTION_PX
        strip_left = (width - (thumb * n_strip + GAP * (n_strip - 1))) / 2
        strip = [(at, QRectF(strip_left + i * (thumb + GAP), top, thumb, thumb))
                 for i, (at, _) in enumerate(self._strip)]
        return panels, strip

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        painter.setPen(QColor(230, 230, 230))
        if not self._tiles:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            painter.end()
            return
        panels, strip = self._layout()
        self._panel_rects = dict(panels)
        self._strip_rects = strip
        for contrast, rect in panels:
            self._paint_tile(painter, self._tiles[contrast], rect, 2.0)
            painter.setPen(QColor(230, 230, 230))
            painter.drawText(QRectF(rect.left(), rect.top() - CAPTION_PX, rect.width(), CAPTION_PX),
                             Qt.AlignmentFlag.AlignCenter, title(contrast))
            self._paint_letters(painter, rect)
        if strip:
            centre = int(round(self.target.centre[PLANES[self.plane][0]]))
            top = strip[0][1].top() - CAPTION_PX
            where = f"slice {self.offset:+d} from the centre" if self.offset else "centre slice"
            painter.setPen(QColor(230, 230, 230))
            painter.drawText(QRectF(0, top, self.width(), CAPTION_PX), Qt.AlignmentFlag.AlignCenter,
                             f"{self.plane}, panels at the {where} · {title(next(iter(self._tiles)))} "
                             "slices through the lesion:")
            for (at, rect), (_, tile) in zip(strip, self._strip):
                self._paint_tile(painter, tile, rect, 1.5)
                if at == self.slice_index:
                    painter.setPen(QPen(CURRENT_COLOUR, 2))
                    painter.setBrush(Qt.BrushStyle.NoBrush)
                    painter.drawRect(rect.adjusted(-1, -1, 1, 1))
                painter.setPen(QColor(230, 230, 230))
                painter.drawText(rect.adjusted(3, 1, 0, 0),
                                 Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                                 f"{at - centre:+d}" if at != centre else "0")
        painter.end()
        target = self.target
        if target is not None and self._drawn != (target.subject, target.lesion):
            self._drawn = (target.subject, target.lesion)
            self.drawn.emit(target.subject, target.lesion)

    def _paint_tile(self, painter: QPainter, tile: Tile, rect: QRectF, width: float) -> None:
        """A plane scaled to ``rect`` with its physical aspect, outlines between voxels."""
        rows, cols = tile.pixels.shape
        row_mm, col_mm = tile.voxel_mm
        scale = min(rect.width() / (cols * col_mm), rect.height() / (rows * row_mm))
        sx, sy = col_mm * scale, row_mm * scale
        left = rect.left() + (rect.width() - cols * sx) / 2
        top = rect.top() + (rect.height() - rows * sy) / 2
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(QRectF(left, top, cols * sx, rows * sy), tile.image())
        if not self.outlines:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for segments, colour in ((tile.others, OTHERS_COLOUR), (tile.component, COMPONENT_COLOUR),
                                 (tile.current, CURRENT_COLOUR)):
            if not len(segments):
                continue
            painter.setPen(QPen(colour, width))
            xy = segments * np.array([sx, sy, sx, sy]) + np.array([left, top, left, top])
            painter.drawLines([QPointF(x, y) for x, y in xy.reshape(-1, 2)])

    def _paint_letters(self, painter: QPainter, rect: QRectF) -> None:
        left, right, up, down = EDGE_LETTERS[self.plane]
        painter.save()
        painter.setPen(QColor(255, 255, 255, 150))
        font = QFont(painter.font())
        font.setPointSizeF(max(font.pointSizeF() - 1, 6))
        painter.setFont(font)
        inner = rect.adjusted(3, 2, -3, -2)
        v, h = Qt.AlignmentFlag.AlignVCenter, Qt.AlignmentFlag.AlignHCenter
        painter.drawText(inner, Qt.AlignmentFlag.AlignLeft | v, left)
        painter.drawText(inner, Qt.AlignmentFlag.AlignRight | v, right)
        painter.drawText(inner, Qt.AlignmentFlag.AlignTop | h, up)
        painter.drawText(inner, Qt.AlignmentFlag.AlignBottom | h, down)
        painter.restore()

    # -- mouse ---------------------------------------------------------------------------------

    def _panel_at(self, point: QPointF) -> str | None:
        return next((c for c, rect in self._panel_rects.items() if rect.contains(point)), None)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        turns = event.angleDelta().y() / 120
        if not turns or self.target is None:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            factor = float(np.clip(self.fov_factor * 0.8 ** turns, 1.5, 10.0))
            self.set_fov_factor(factor)
            self.fov_changed.emit(factor)
        else:
            self.step(int(np.sign(turns)) * max(1, int(abs(turns))))
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        point = event.position()
        for at, rect in self._strip_rects:
            if rect.contains(point):
                self.offset += at - self.slice_index
                self._render()
                return
        contrast = self._panel_at(point)
        if contrast is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag = (contrast, point, self.window(contrast))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._drag is None:
            return
        contrast, start, (low, high) = self._drag
        delta = event.position() - start
        width = (high - low) * float(np.exp(delta.x() / 150))
        level = (high + low) / 2 - delta.y() / 300 * (high - low)
        self.set_window(contrast, (level - width / 2, level + width / 2))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        contrast = self._panel_at(event.position())
        if contrast is not None:
            self._windows.pop(contrast, None)
            self._render()
