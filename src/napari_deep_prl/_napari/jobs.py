"""Run a core progress generator in a worker thread, with napari progress and a cancel flag.

The core generators (scoring, training) take a ``threading.Event``: setting it makes them stop
after the current step and still return what they have (training: the best model so far), so
Cancel keeps results, unlike ``worker.quit()`` which would drop the return value. The handlers
run on the main thread (worker signals), so they may change layers and widgets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QProgressBar

from napari_deep_prl.progress import Progress


class Job:
    """One long task: ``make(stop)`` builds the generator; handlers get events and the result."""

    def __init__(self, make: Callable[[threading.Event], Generator[Progress, None, Any]], *,
                 description: str, bar: QProgressBar | None = None,
                 stages: Sequence[str] | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_result: Callable[[Any], None] | None = None,
                 on_finished: Callable[[], None] | None = None) -> None:
        self.stop = threading.Event()
        self.description = description
        self._bar, self._stages = bar, stages
        self._on_progress, self._on_result = on_progress, on_result
        self._on_finished = on_finished
        self._napari_bar: progress | None = None
        #: The result has been handed to ``on_result`` (progress events after it are stale).
        self.delivered = False

        def run() -> Generator[Progress, None, Any]:
            return (yield from make(self.stop))

        self.worker: GeneratorWorker = create_worker(run, _start_thread=False)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)

    def start(self) -> Job:
        self._napari_bar = progress(total=0, desc=self.description)
        if self._bar is not None:
            self._bar.setRange(0, 0)
            self._bar.setVisible(True)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the task to stop after its current step (its result is still delivered)."""
        self.stop.set()

    def _yielded(self, event: Progress) -> None:
        if self._stages is None or event.stage in self._stages:
            total = event.total or 0
            if self._napari_bar is not None:
                self._napari_bar.total = total
                self._napari_bar.n = event.step
                self._napari_bar.set_description(f"{self.description}: {event.message}".strip(": "))
            if self._bar is not None:
                self._bar.setRange(0, total)
                self._bar.setValue(event.step if total else 0)
        if self._on_progress is not None:
            self._on_progress(event)

    def _returned(self, result: Any) -> None:
        self.delivered = True
        if self._on_result is not None:
            self._on_result(result)

    def _errored(self, error: Exception) -> None:
        show_error(f"{self.description} failed: {error}")

    def _finished(self) -> None:
        if self._napari_bar is not None:
            self._napari_bar.close()
        if self._bar is not None:
            self._bar.setVisible(False)
        if self._on_finished is not None:
            self._on_finished()
