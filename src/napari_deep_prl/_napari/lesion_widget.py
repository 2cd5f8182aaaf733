"""What the review and adjudication widgets share: view controls and releasing their keys.

Subclasses set ``self.axis`` (a combo box of :data:`AXES`), ``self.display`` (a
:class:`LesionDisplay`), ``self.keys`` (a :class:`KeyBinder`) and ``self.project``.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

from .lesion_display import prepare_subject
from .review_view import AXES


class LesionWidget(QWidget):
    """A dock widget that shows one lesion at a time and owns keyboard shortcuts."""

    def _load(self, subject: str):  # noqa: ANN202 - runs in a worker thread
        assert self.project is not None
        return prepare_subject(self.project, subject, self.display.view.axis)

    def set_axis(self, axis: str) -> None:
        if self.axis.currentText() != axis:
            self.axis.setCurrentText(axis)  # calls back here through the signal
            return
        self.display.view.set_axis(axis)

    def cycle_axis(self) -> None:
        names = list(AXES)
        self.set_axis(names[(names.index(self.axis.currentText()) + 1) % len(names)])

    def toggle_outline(self) -> None:
        self.display.view.set_outlines(not self.display.view.outlines)

    def recentre(self) -> None:
        self.display.view.recentre()

    def release(self) -> None:
        """Unbind the keys and stop listening to workers; saved labels need nothing."""
        self.keys.release()
        self.display.close()

    def closeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        self.release()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """Removing the dock widget only unparents this widget: release the keys then too."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.keys.bound:
            self.release()
        return super().event(event)
