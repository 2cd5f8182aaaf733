"""Run a core progress generator in a worker thread, with napari progress and a cancel flag.

The core generators (scoring, training) take a ``threading.Event``: setting it makes them stop
after the current step and still return what they have (training: the best model so far), so
Cancel keeps results, unlike ``worker.quit()`` which would drop the return value. The handlers
run on the main thread (worker signals), so they may change layers and widgets.

A :class:`~napari_deep_prl.base.errors.DeepPRLError` raised by the task is an expected failure (bad
labels, a wrong file): it is caught in the worker and shown as one error notification with its
message, then ``on_error`` runs; no traceback. Any other exception is a bug: it goes to napari's
notification manager with its traceback (once: the worker does not also re-raise it on the main
thread), and ``on_error`` runs too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import notification_manager, show_error
from qtpy.QtWidgets import QProgressBar

from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.base.progress import Progress


@dataclass(frozen=True)
class _Failed:
    """What the worker returns when the task raised an expected error."""

    error: DeepPRLError


class Job:
    """One long task: ``make(stop)`` builds the generator; handlers get events and the result."""

    def __init__(self, make: Callable[[threading.Event], Generator[Progress, None, Any]], *,
                 description: str, bar: QProgressBar | None = None,
                 stages: Sequence[str] | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_result: Callable[[Any], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 on_finished: Callable[[], None] | None = None) -> None:
        self.stop = threading.Event()
        self.description = description
        self._bar, self._stages = bar, stages
        self._on_progress, self._on_result = on_progress, on_result
        self._on_error, self._on_finished = on_error, on_finished
        self._napari_bar: progress | None = None
        #: The result has been handed to ``on_result`` (progress events after it are stale).
        self.delivered = False

        def run() -> Generator[Progress, None, Any]:
            try:
                return (yield from make(self.stop))
            except DeepPRLError as error:
                return _Failed(error)

        # an ``errored`` handler given here also stops the worker re-raising a bug on the main thread
        self.worker: GeneratorWorker = create_worker(run, _start_thread=False,
                                                     _connect={"errored": self._errored})
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
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
        if isinstance(result, _Failed):
            show_error(f"{self.description} failed: {result.error}")
            self._failed(result.error)
        elif self._on_result is not None:
            self._on_result(result)

    def _errored(self, error: Exception) -> None:
        notification_manager.receive_error(type(error), error, error.__traceback__)
        self._failed(error)

    def _failed(self, error: Exception) -> None:
        if self._on_error is not None:
            self._on_error(error)

    def _finished(self) -> None:
        if self._napari_bar is not None:
            self._napari_bar.close()
        if self._bar is not None:
            self._bar.setVisible(False)
        if self._on_finished is not None:
            self._on_finished()
