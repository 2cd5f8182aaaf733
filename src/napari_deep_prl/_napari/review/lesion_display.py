"""Showing a lesion without freezing the viewer: subject images load in a worker and are cached.

Reading a brain-sized subject takes about half a second, so loading runs in a napari
``thread_worker``; the canvas changes only in its ``returned`` handler, on the main thread. The
last few subjects stay in memory and the next subject of the queue is loaded ahead, so most steps
from one lesion to the next touch no file at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.review.lesion_canvas import LesionCanvas
from napari_deep_prl._napari.review.subject_images import SubjectImages

#: Subjects kept in memory (the current one, the previous one and the one loaded ahead).
CACHE_SIZE = 3


class LesionDisplay(QObject):
    """Shows (subject, lesion) targets on a :class:`LesionCanvas`.

    Only the latest request is honoured: pressing keys faster than a subject loads never shows
    a stale lesion.
    """

    #: A requested lesion has been painted on screen: subject, lesion.
    shown = Signal(str, int)
    #: A worker is about to start (tests connect ``errored`` / ``finished`` here).
    worker_started = Signal(object)

    def __init__(self, loader: Callable[[str], SubjectImages], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.canvas = LesionCanvas()
        self.canvas.drawn.connect(self.shown)
        self.loader = loader
        self.cache: OrderedDict[str, SubjectImages] = OrderedDict()
        #: Loads of the current project by subject; ``_running`` also holds those of a project
        #: closed since (their results are ignored: ``_generation`` changed).
        self.workers: dict[str, FunctionWorker] = {}
        self._running: set[FunctionWorker] = set()
        self._generation = 0
        self.target: tuple[str, int, tuple[float, float, float]] | None = None
        self.failed: set[str] = set()
        #: How a subject is named on the canvas and in messages (its pseudonym in a blind session).
        self.name: Callable[[str], str] = str
        self._closed = False

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def is_drawn(self, subject: str, lesion: int) -> bool:
        """Whether that lesion is the requested one and is painted on screen."""
        return self.target is not None and self.target[:2] == (subject, int(lesion)) \
            and self.canvas.is_drawn(subject, lesion)

    @property
    def target_failed(self) -> bool:
        """The requested lesion's subject could not be loaded (the rater may move past it)."""
        return self.target is not None and self.target[0] in self.failed

    def request(self, subject: str, lesion: int, voxel: tuple[float, float, float]) -> None:
        """Show a lesion now if its subject is in memory, else as soon as it is loaded."""
        self.target = (subject, int(lesion), voxel)
        self.failed.discard(subject)
        if subject in self.cache:
            self._display()
        else:
            self.canvas.clear(messages.LOADING.format(subject=self.name(subject)))
            self._load(subject)

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
        current = None if self.canvas.images is None else self.canvas.images.key
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
            self.canvas.clear(messages.LOAD_FAILED_SHORT.format(subject=self.name(subject)))
            show_error(messages.LOAD_FAILED.format(subject=self.name(subject), cause=error))

    def _finished(self, worker: FunctionWorker) -> None:
        self._running.discard(worker)

    def _display(self) -> None:
        assert self.target is not None
        subject, lesion, voxel = self.target
        images = self.cache[subject]
        self.cache.move_to_end(subject)
        self.canvas.show_lesion(images, images.target(lesion, voxel))

    def clear(self) -> None:
        """Forget the subjects and blank the canvas; loads still running for the old project
        finish unheeded."""
        self._generation += 1
        self.workers = {}
        self.cache.clear()
        self.failed.clear()
        self.canvas.clear()
        self.target = None
        self.name = str

    def close(self) -> None:
        """Stop reacting to workers (they finish on their own: loads are short)."""
        self.clear()
        self._closed = True
        for worker in list(self._running):
            worker.quit()
