"""Driving the review widgets as a rater does: real Qt key events sent to napari's canvas (the
widget that has the keyboard when a user clicks the image area), auto-repeat and key bursts
included, and waits for a lesion to be painted on screen."""

from __future__ import annotations

from qtpy.QtCore import QEvent
from qtpy.QtGui import QKeyEvent, QKeySequence
from qtpy.QtWidgets import QApplication, QWidget

from napari_deep_prl.ratings.project import Project


def canvas_of(viewer) -> QWidget:
    """napari's own canvas widget (where keys go when the user has clicked the image area)."""
    return viewer.window._qt_viewer.canvas.native


def _key_event(kind: QEvent.Type, name: str, repeat: bool) -> QKeyEvent:
    combo = QKeySequence.fromString(name.replace("Control-", "Ctrl+"))[0]
    text = name.lower() if len(name) == 1 else ""
    return QKeyEvent(kind, combo.key(), combo.keyboardModifiers(), text, repeat)


def press(viewer, name: str, *, repeat: bool = False, target: QWidget | None = None) -> None:
    """Press and release a key (``P``, ``Right``, ``Control-Z``) now, as Qt delivers it to the
    focused widget (napari's canvas unless ``target``)."""
    widget = canvas_of(viewer) if target is None else target
    for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
        QApplication.sendEvent(widget, _key_event(kind, name, repeat))


def burst(viewer, name: str, count: int, *, repeat_after_first: bool = False) -> None:
    """``count`` presses queued at once (a fast typist, or a held key whose auto-repeat events
    are already waiting), delivered in order by the event loop with no redraw between them."""
    queue_keys(viewer, [name] * count, repeat_after_first=repeat_after_first)


def queue_keys(viewer, names: list[str], *, repeat_after_first: bool = False) -> None:
    """Presses of ``names`` queued at once, delivered in order with no redraw between them."""
    widget = canvas_of(viewer)
    for i, name in enumerate(names):
        repeat = repeat_after_first and i > 0
        QApplication.postEvent(widget, _key_event(QEvent.Type.KeyPress, name, repeat))
        QApplication.postEvent(widget, _key_event(QEvent.Type.KeyRelease, name, repeat))


def shown_after(qtbot, widget, action) -> tuple:
    """Run ``action`` and wait until the widget's next lesion is painted on screen."""
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000) as blocker:
        action()
    return tuple(blocker.args)


def current_ratings(project_dir, rater="r1"):
    with Project.open(project_dir) as project:
        return project.store.current(rater=rater)


def all_text(widget) -> str:
    """Every piece of text a widget shows (labels, line edits, combo items, table cells)."""
    from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit, QTableWidget

    parts = [w.text() for w in widget.findChildren((QLabel, QLineEdit)) if w.isVisibleTo(widget)]
    for combo in widget.findChildren(QComboBox):
        if combo.isVisibleTo(widget):
            parts += [combo.itemText(i) for i in range(combo.count())]
    for table in widget.findChildren(QTableWidget):
        if table.isVisibleTo(widget):
            parts += [table.item(r, c).text() for r in range(table.rowCount())
                      for c in range(table.columnCount())
                      if table.item(r, c) is not None and not table.isColumnHidden(c)]
    return " ".join(parts)


