"""What the plugin's widgets in one viewer tell each other (napari-animation style: a small
model object the widgets listen to), so no widget reaches into another.

* **blinding** — while a rater's blind session is open, no widget shows model scores
  (:attr:`Board.hide_scores`) or other raters' labels (:attr:`Board.hide_labels`), as far as the
  project blinds them;
* **scores_changed** — a project's stored scores changed (the model panel scored it): a
  model-ordered review re-ranks its queue.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import napari
from qtpy.QtCore import QObject, Signal


class Board(QObject):
    """Shared state of one viewer's plugin widgets."""

    #: A blind session opened or closed: read :attr:`hide_scores` and :attr:`hide_labels`.
    blinding_changed = Signal()
    #: A project's stored predictions changed: its root folder (resolved).
    scores_changed = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[int, tuple[bool, bool]] = {}

    @property
    def hide_scores(self) -> bool:
        """A session open now hides model scores."""
        return any(scores for scores, _ in self._sessions.values())

    @property
    def hide_labels(self) -> bool:
        """A session open now hides other raters' labels."""
        return any(labels for _, labels in self._sessions.values())

    def open_session(self, owner: object, *, hide_scores: bool, hide_labels: bool) -> None:
        self._set(owner, (hide_scores, hide_labels))

    def close_session(self, owner: object) -> None:
        self._set(owner, None)

    def _set(self, owner: object, blinding: tuple[bool, bool] | None) -> None:
        before = (self.hide_scores, self.hide_labels)
        if blinding is None:
            self._sessions.pop(id(owner), None)
        else:
            self._sessions[id(owner)] = blinding
        if (self.hide_scores, self.hide_labels) != before:
            self.blinding_changed.emit()

    def announce_scores(self, root: str | Path) -> None:
        self.scores_changed.emit(Path(root).resolve())


_BOARDS: weakref.WeakKeyDictionary[napari.Viewer, Board] = weakref.WeakKeyDictionary()


def board(viewer: napari.Viewer) -> Board:
    """The viewer's board (made on first use, gone with the viewer)."""
    if viewer not in _BOARDS:
        _BOARDS[viewer] = Board()
    return _BOARDS[viewer]
