"""Layers and camera of the review: phase and MP2RAGE side by side, zoomed on one lesion.

Napari's grid mode puts the MP2RAGE and the phase in two viewboxes sharing one camera and one
slice, so zoom, pan and slice stay in sync. Each image has one outline layer over it (both show
the same array, no copy) holding the lesions' in-plane edges, the current lesion's marked apart
so a fixed colour table draws it bright and the others faint. Switching lesions rewrites the
marks inside two lesions' bounding boxes: no new colour table (which napari rebuilds textures
and overlays for) and no extra layers, so each step re-slices four layers once. Contrast limits start from the package's windows (symmetric
for the phase, robust percentiles for the MP2RAGE) and are kept for the session once the rater
changes them.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

import napari
import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from .layers import phase_window, robust_window

#: Slicing axis name -> (dims order, camera orientation) for RAS-like voxel axes (x, y, z):
#: the last two dims are shown (rows, columns); anterior and superior point up.
AXES = {
    "axial": ((2, 1, 0), ("up", "right")),
    "coronal": ((1, 2, 0), ("up", "right")),
    "sagittal": ((0, 2, 1), ("up", "right")),
}
CONTRASTS = ("mp2rage", "phase")
#: Outline values: the edge of another lesion, and of the lesion under review.
OTHER, CURRENT = 1, 2
#: Outline colours (RGBA): the current lesion yellow, the others faint cyan. The outline lies
#: on the lesion's edge voxels, where a rim is, so it is half transparent (and ``O`` hides it).
CURRENT_COLOUR = (1.0, 0.83, 0.0, 0.55)
OTHERS_COLOUR = (0.0, 0.78, 1.0, 0.35)
OUTLINE_COLOURS = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0),
                   OTHER: OTHERS_COLOUR, CURRENT: CURRENT_COLOUR}
#: The field of view never goes below this (mm), so tiny lesions keep some context.
MIN_FOV_MM = 20.0


@dataclass(frozen=True)
class SubjectImages:
    """What the view needs of a subject, prepared off the main thread."""

    key: str
    phase: np.ndarray
    mp2rage: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    windows: dict[str, tuple[float, float]]
    extents_mm: dict[int, float]
    boxes: dict[int, tuple[slice, ...]]
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    marked: dict[str, int] = field(default_factory=dict)

    def outline(self, axis: str, lesion: int | None = None) -> np.ndarray:
        """Lesion edges in the planes of ``axis`` (computed once per axis), ``lesion``'s marked
        :data:`CURRENT` (in place: the layers showing the array see the change)."""
        if axis not in self.edges:
            self.edges[axis] = in_plane_edges(self.labels, AXES[axis][0][0])
        edges = self.edges[axis]
        if lesion is not None and self.marked.get(axis) != lesion:
            self._mark(edges, self.marked.get(axis), OTHER)
            self._mark(edges, lesion, CURRENT)
            self.marked[axis] = lesion
        return edges

    def _mark(self, edges: np.ndarray, lesion: int | None, value: int) -> None:
        box = self.boxes.get(lesion) if lesion is not None else None
        if box is not None:
            region = edges[box]
            region[(region > 0) & (self.labels[box] == lesion)] = value

    @property
    def zooms(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def world(self, voxel: tuple[float, float, float]) -> np.ndarray:
        return (self.affine @ np.array([*voxel, 1.0]))[:3]


def in_plane_edges(labels: np.ndarray, axis: int) -> np.ndarray:
    """:data:`OTHER` on each lesion's voxels that touch another label within the planes normal
    to ``axis``, 0 elsewhere (uint8).

    Shown with ``contour = 0`` this draws the same outline napari's ``contour`` would, without
    napari recomputing it on every slice (a third of the time of a step to the next lesion).
    """
    edge = np.zeros(labels.shape, dtype=bool)
    for along in (a for a in range(labels.ndim) if a != axis):
        head = tuple(slice(1, None) if a == along else slice(None) for a in range(labels.ndim))
        tail = tuple(slice(None, -1) if a == along else slice(None) for a in range(labels.ndim))
        differs = labels[head] != labels[tail]
        edge[head] |= differs
        edge[tail] |= differs
    return (edge & (labels > 0)).astype(np.uint8) * np.uint8(OTHER)


def default_windows(phase: np.ndarray, mp2rage: np.ndarray) -> dict[str, tuple[float, float]]:
    """Display windows from every 8th voxel: the same percentiles, an eighth of the time."""
    return {"phase": phase_window(phase[::2, ::2, ::2]),
            "mp2rage": robust_window(mp2rage[::2, ::2, ::2])}


#: What the layers hold before the first subject and between projects: a black 2³ block
#: (not one voxel: a one-step axis hides napari's slider, and showing it again re-lays out the
#: window, a sixth of a second, when the first subject fills the layers).
_EMPTY = np.zeros((2, 2, 2), np.float32)
_BLANK = (_EMPTY, _EMPTY, np.zeros((2, 2, 2), np.uint8), np.eye(4))


class ReviewView:
    """Owns the review layers of one viewer; every method runs on the main thread."""

    def __init__(self, viewer: napari.Viewer, fov_factor: float = 3.0, axis: str = "axial") -> None:
        self.viewer = viewer
        self.fov_factor = fov_factor
        self.axis = axis
        self.outlines = True
        self.images: SubjectImages | None = None
        self.lesion: int | None = None
        self._auto: dict[str, tuple[float, float]] = {}
        self._focus: tuple[np.ndarray, float] | None = None
        self.layers: dict[str, napari.layers.Layer] = {}

    # -- layers ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the layers (empty) if they are missing.

        Napari builds layers slowly (about a second for these four), so the widget creates them
        as soon as it is up, not when the first subject has been read.
        """
        if self.layers and not all(layer in self.viewer.layers for layer in self.layers.values()):
            self.remove_layers()  # the user deleted some: rebuild them all
        if not self.layers:
            self._create()

    def show_subject(self, images: SubjectImages) -> None:
        """Put a subject's images in the layers (created on first use, reused afterwards)."""
        self.prepare()
        self._fill(images.phase, images.mp2rage, images.outline(self.axis), images.affine)
        for name in CONTRASTS:
            self._apply_window(name, images.windows[name])
        self.images = images

    def blank(self) -> None:
        """Empty the layers (e.g. between projects), keeping them for the next subject."""
        if self.images is not None and self.layers \
                and all(layer in self.viewer.layers for layer in self.layers.values()):
            self._fill(*_BLANK)
        self.images = None
        self._focus = None

    def _fill(self, phase: np.ndarray, mp2rage: np.ndarray, outline: np.ndarray,
              affine: np.ndarray) -> None:
        """Swap the four layers' data and affine, slicing each once.

        Each data or affine assignment would re-slice its layer and make the viewer recompute
        the dims and re-slice all four (eight times over, half a second): those reactions are
        held back until every layer holds its new volume, then run once.
        """
        viewer = self.viewer
        filled = [(self.layers[name], data) for name, data in (
            ("phase", phase), ("mp2rage", mp2rage), ("phase lesions", outline),
            ("mp2rage lesions", outline))]
        with ExitStack() as held:
            for layer, _ in filled:
                held.enter_context(layer._block_refresh())
                for emitter in (layer.events.data, layer.events.affine):
                    held.enter_context(emitter.blocker(viewer._on_layers_change))
            for layer, data in filled:
                layer.data = data
                layer.affine = affine
        with ExitStack() as held:
            for emitter in (viewer.dims.events.point, viewer.dims.events.current_step):
                held.enter_context(emitter.blocker(viewer._update_layers))
            viewer._on_layers_change()
        for layer, _ in filled:
            layer.refresh()

    def _create(self) -> None:
        viewer = self.viewer
        image, _, edges, _ = _BLANK
        for name in CONTRASTS:
            self.layers[name] = viewer.add_image(image, name=name, colormap="gray")
            outline = viewer.add_labels(edges, name=f"{name} lesions",
                                        colormap=DirectLabelColormap(color_dict=OUTLINE_COLOURS))
            outline.editable = False
            self.layers[f"{name} lesions"] = outline
        viewer.layers.selection.active = self.layers["phase"]
        viewer.canvas.grid.stride = 2
        viewer.canvas.grid.enabled = True
        viewer.canvas.events.size.connect(self._fit_grid)
        self._arrange()
        self._auto = {}

    def _apply_window(self, name: str, window: tuple[float, float]) -> None:
        """Use the subject's automatic window unless the rater set their own this session."""
        layer = self.layers[name]
        adjusted = name in self._auto and not np.allclose(layer.contrast_limits, self._auto[name])
        kept = tuple(layer.contrast_limits) if adjusted else window
        layer.contrast_limits_range = (min(kept[0], window[0]), max(kept[1], window[1]))
        layer.contrast_limits = kept
        if not adjusted:
            self._auto[name] = tuple(layer.contrast_limits)

    def remove_layers(self) -> None:
        self.viewer.canvas.events.size.disconnect(self._fit_grid)
        for layer in self.layers.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers.clear()
        self.images = None
        if not len(self.viewer.layers):
            self.viewer.canvas.grid.enabled = False

    # -- lesion ---------------------------------------------------------------------------

    def show_lesion(self, lesion: int, voxel: tuple[float, float, float]) -> None:
        """Highlight ``lesion``, slice through its centre, centre and zoom the camera on it."""
        images = self.images
        assert images is not None, "show_subject first"
        self.lesion = int(lesion)
        images.outline(self.axis, self.lesion)
        point = tuple(self.viewer.dims.point)
        extent = images.extents_mm.get(self.lesion, 0.0)
        self._focus = (images.world(voxel), extent)
        self.recentre()
        if tuple(self.viewer.dims.point) == point:  # same slice: no re-slicing shows the marks
            for name in CONTRASTS:
                self.layers[f"{name} lesions"].refresh(extent=False)

    @property
    def fov_mm(self) -> float:
        """Width of the field of view around the current lesion."""
        extent = 0.0 if self._focus is None else self._focus[1]
        return max(MIN_FOV_MM, self.fov_factor * extent)

    def recentre(self) -> None:
        """Slice, camera and zoom back on the current lesion (after the rater panned away)."""
        if self._focus is None:
            return
        centre = self._focus[0]
        viewer = self.viewer
        order, _ = AXES[self.axis]
        self._arrange()
        # The viewer re-slices every layer on each ``point`` and ``current_step`` event. A point
        # off the slice grid is set, then snapped (two ``point`` events), and ``current_step``
        # follows: snapping here and letting the layers follow ``point`` only slices once per
        # step instead of about three times. The dims slider still follows ``current_step``.
        axis = order[0]
        span = viewer.dims.range[axis]
        step = round((float(centre[axis]) - span.start) / span.step)
        point = span.start + span.step * min(max(step, 0), round((span.stop - span.start) / span.step))
        with viewer.dims.events.current_step.blocker(viewer._update_layers):
            viewer.dims.set_point(axis, point)
        self.camera.update({"center": (float(centre[order[1]]), float(centre[order[2]])),
                            "zoom": float(min(viewer.canvas.viewbox_size(viewer.layers))) / self.fov_mm})

    def _arrange(self) -> None:
        """Slicing axis, camera orientation and the panels' grid; also done on the empty layers,
        so the first lesion shown does not pay for re-arranging full volumes."""
        viewer = self.viewer
        order, orientation = AXES[self.axis]
        if tuple(viewer.dims.order) != order:
            viewer.dims.order = order
        self._fit_grid()
        self.camera.orientation2d = orientation

    def _fit_grid(self, event: object = None) -> None:
        """Panels side by side, or stacked on a tall canvas; follows the canvas size, so the
        layout is settled (a third of a second to rebuild) before the first lesion shows."""
        canvas = self.viewer.canvas
        height, width = canvas.size
        shape = (2, 1) if height > width else (1, 2)
        if tuple(canvas.grid.shape) != shape:
            canvas.grid.shape = shape

    @property
    def camera(self) -> napari.components.Camera:
        """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
        return getattr(self.viewer, "scene", self.viewer).camera

    def set_axis(self, axis: str) -> None:
        if axis not in AXES:
            raise ValueError(f"slicing axis '{axis}' is not one of {', '.join(AXES)}")
        self.axis = axis
        if self.images is not None:
            for name in CONTRASTS:
                self.layers[f"{name} lesions"].data = self.images.outline(axis, self.lesion)
        self.recentre()

    def set_fov_factor(self, factor: float) -> None:
        self.fov_factor = factor
        self.recentre()

    def set_outlines(self, visible: bool) -> None:
        self.outlines = visible
        for name in CONTRASTS:
            if f"{name} lesions" in self.layers:
                self.layers[f"{name} lesions"].visible = visible

    @property
    def keymap_layers(self) -> list[napari.layers.Layer]:
        return list(self.layers.values())
