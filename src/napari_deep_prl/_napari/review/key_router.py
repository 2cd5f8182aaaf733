"""Review keys that work whatever has focus in the viewer's window and whatever layer is active.

Napari asks the active layer's keymap before the viewer's, so review keys bound there would
paint with a Labels layer active or add points with a Points layer active. Instead, while a
review or adjudication session is open, its keys are taken from the application's event queue
before napari sees them, for every widget of the viewer's window except text fields (a comment,
the console). Auto-repeated presses (a held key) act only for keys marked ``repeat``; the others
are swallowed, so holding ``N`` never labels lesions that were not shown. When several sessions
are open in one window, the one opened last gets the keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QKeyEvent, QKeySequence
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QDockWidget,
    QLineEdit,
    QPlainTextEdit,
    QTextEdit,
    QWidget,
)

from napari_deep_prl._napari.keybindings import KeyAction

_MODIFIERS = (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
              | Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.MetaModifier)
_TEXT_FIELDS = (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)


def _combination(name: str) -> tuple[int, int]:
    """A key name of :mod:`.keybindings` (``P``, ``Control-Z``, ``Right``) as (key, modifiers)."""
    combo = QKeySequence.fromString(name.replace("Control-", "Ctrl+"))[0]
    return int(combo.key().value), int(combo.keyboardModifiers().value)


def _top(widget: QWidget) -> QWidget:
    """The window a widget lives in (a floating dock still belongs to its main window)."""
    while widget.parentWidget() is not None:
        widget = widget.parentWidget()
    return widget


def _forget(router_id: int) -> None:
    KeyRouter._active[:] = [r for r in KeyRouter._active if id(r) != router_id]


class KeyRouter(QObject):
    """Delivers ``actions`` to methods of ``target`` while :meth:`activate` d."""

    _active: ClassVar[list[KeyRouter]] = []  # in activation order: the last one wins

    def __init__(self, target: QWidget, actions: Iterable[KeyAction]) -> None:
        super().__init__(target)
        self.target = target
        self.actions = tuple(actions)
        self._keys = {_combination(key): action for action in self.actions for key in action.keys}
        target.destroyed.connect(partial(_forget, id(self)))  # closed with its viewer

    @property
    def active(self) -> bool:
        return self in KeyRouter._active

    def activate(self) -> None:
        """Take the keys (a session opened)."""
        if self.active:
            KeyRouter._active.remove(self)
        else:
            QApplication.instance().installEventFilter(self)
        KeyRouter._active.append(self)

    def deactivate(self) -> None:
        """Give the keys back to napari (the session closed)."""
        if self.active:
            KeyRouter._active.remove(self)
            QApplication.instance().removeEventFilter(self)

    def action_for(self, event: QKeyEvent) -> KeyAction | None:
        modifiers = int((event.modifiers() & _MODIFIERS).value)
        return self._keys.get((int(event.key()), modifiers))

    def _owns(self, receiver: QObject) -> bool:
        """Whether a key sent to ``receiver`` is this session's: the receiver is in the viewer's
        main window or one of its floating docks (not a dialog, not a text field), and no
        session opened later in that window."""
        if not isinstance(receiver, QWidget) or isinstance(receiver, _TEXT_FIELDS):
            return False
        main, window = _top(receiver), receiver.window()
        if window is not main and not isinstance(window, QDockWidget):
            return False
        owners = [r for r in KeyRouter._active if _top(r.target) is main]
        return bool(owners) and owners[-1] is self

    def eventFilter(self, receiver: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            return False
        action = self.action_for(event)
        if action is None or not self._owns(receiver):
            return False
        event.accept()
        if kind == QEvent.Type.KeyPress and (action.repeat or not event.isAutoRepeat()):
            getattr(self.target, action.method)(*action.args)
        return True
