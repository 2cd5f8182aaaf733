"""Showing a lesion without freezing the viewer: subject images load in a worker and are cached.

Reading a brain-sized subject takes about half a second, so loading runs in a napari
``thread_worker``; layers change only in its ``returned`` handler, on the main thread. The last
few subjects stay in memory and the next subject of the queue is loaded ahead, so most steps
from one lesion to the next touch no file at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import napari
import numpy as np
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal
from scipy import ndimage

from napari_deep_prl.project import Project

from . import messages
from .patch_panel import PatchPanel
from .review_view import ReviewView, SubjectImages, default_windows

#: Subjects kept in memory (the current one, the previous one and the one loaded ahead).
CACHE_SIZE = 3


def prepare_subject(project: Project, subject: str, axis: str = "axial") -> SubjectImages:
    """Load a subject and everything the view needs of it, outlines for ``axis`` included
    (runs in a worker thread)."""
    loaded = project.load_subject(subject)
    labels = loaded.labels
    zooms = loaded.zooms
    boxes = {index + 1: box for index, box in enumerate(ndimage.find_objects(labels)) if box is not None}
    extents = {lesion: float(max((s.stop - s.start) * z for s, z in zip(box, zooms)))
               for lesion, box in boxes.items()}
    images = SubjectImages(subject, loaded.phase, loaded.mp2rage, labels, loaded.affine,
                           default_windows(loaded.phase, loaded.mp2rage), extents, boxes)
    images.outline(axis)
    return images


class LesionDisplay(QObject):
    """Shows (subject, lesion) targets in a :class:`ReviewView` and a :class:`PatchPanel`.

    Only the latest request is honoured: pressing keys faster than a subject loads never shows
    a stale lesion.
    """

    #: A requested lesion is on screen (layers updated, camera moved): subject, lesion.
    shown = Signal(str, int)
    #: A worker is about to start (tests connect ``errored`` / ``finished`` here).
    worker_started = Signal(object)

    def __init__(self, viewer: napari.Viewer, loader: Callable[[str], SubjectImages],
                 panel: PatchPanel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.view = ReviewView(viewer)
        self.panel = panel
        self.loader = loader
        self.cache: OrderedDict[str, SubjectImages] = OrderedDict()
        #: Loads of the current project by subject; ``_running`` also holds those of a project
        #: closed since (their results are ignored: ``_generation`` changed).
        self.workers: dict[str, FunctionWorker] = {}
        self._running: set[FunctionWorker] = set()
        self._generation = 0
        self.target: tuple[str, int, tuple[float, float, float]] | None = None
        self.failed: set[str] = set()
        self._closed = False
        # Napari builds layers slowly (about a second for the four): build the review's, empty,
        # as soon as the widget is up, so that opening a project only fills them.
        QTimer.singleShot(0, self._prepare)

    def _prepare(self) -> None:
        if not self._closed:
            self.view.prepare()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def request(self, subject: str, lesion: int, voxel: tuple[float, float, float]) -> None:
        """Show a lesion now if its subject is in memory, else as soon as it is loaded."""
        self.target = (subject, int(lesion), voxel)
        self.failed.discard(subject)
        if subject in self.cache:
            self._display()
        else:
            self._load(subject)
            self.view.prepare()  # while the worker reads the files

    def prefetch(self, subject: str) -> None:
        """Load a subject ahead of time, in the background (not one that failed already)."""
        if subject not in self.cache and subject not in self.failed:
            self._load(subject)

    def _load(self, subject: str) -> None:
        if subject in self.workers or self._closed:
            return
        worker = create_worker(self.loader, subject, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(partial(self._loaded, self._generation, subject))
        worker.errored.connect(partial(self._failed, self._generation, subject))
        worker.finished.connect(partial(self._finished, worker))
        self.workers[subject] = worker
        self._running.add(worker)
        self.worker_started.emit(worker)
        worker.start()

    def _loaded(self, generation: int, subject: str, images: SubjectImages) -> None:
        if self._closed or generation != self._generation:
            return
        self.workers.pop(subject, None)  # done: a new request may load it again
        self.cache[subject] = images
        self.cache.move_to_end(subject)
        current = None if self.view.images is None else self.view.images.key
        while len(self.cache) > CACHE_SIZE:
            oldest = next(k for k in self.cache if k != current)
            del self.cache[oldest]
        if self.target is not None and self.target[0] == subject:
            self._display()

    def _failed(self, generation: int, subject: str, error: Exception) -> None:
        """Report a failed load of the subject on screen (a failed prefetch stays silent: the
        error shows when the rater gets there, with a fresh attempt)."""
        if generation != self._generation:
            return
        self.workers.pop(subject, None)
        self.failed.add(subject)
        if not self._closed and self.target is not None and self.target[0] == subject:
            show_error(messages.LOAD_FAILED.format(subject=subject, cause=error))

    def _finished(self, worker: FunctionWorker) -> None:
        self._running.discard(worker)

    def _display(self) -> None:
        assert self.target is not None
        subject, lesion, voxel = self.target
        images = self.cache[subject]
        self.cache.move_to_end(subject)
        view = self.view
        if view.images is not images:
            view.show_subject(images)
        view.show_lesion(lesion, voxel)
        self.refresh_panel()
        self.shown.emit(subject, lesion)

    def refresh_panel(self) -> None:
        """Redraw the patch panel with the view's current windows and field of view."""
        view, target = self.view, self.target
        if view.images is None or target is None:
            return
        images = view.images
        radius = int(np.clip(round(view.fov_mm / 2 / float(images.zooms.min())), 6, 40))
        windows = {name: tuple(view.layers[name].contrast_limits) for name in ("phase", "mp2rage")}
        self.panel.show_patch({"phase": images.phase, "mp2rage": images.mp2rage}, images.labels,
                              target[1], np.asarray(target[2]), radius, windows)

    def clear(self) -> None:
        """Empty the layers (kept for the next project) and forget the subjects; loads still
        running for the old project finish unheeded."""
        self._generation += 1
        self.workers = {}
        self.view.blank()
        self.cache.clear()
        self.failed.clear()
        self.panel.clear()
        self.target = None

    def close(self) -> None:
        """Remove the layers; stop reacting to workers (they finish on their own: loads are
        short)."""
        self.clear()
        self.view.remove_layers()
        self._closed = True
        for worker in list(self._running):
            worker.quit()
