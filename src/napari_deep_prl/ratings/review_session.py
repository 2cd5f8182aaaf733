"""A rater's session: which lesion is on screen, where Next / Previous / Later / Undo lead.

Plain Python (no Qt), so the navigation rules are easy to read and to test. The rater's queue
(:class:`~napari_deep_prl.ratings.queue.RaterQueue`) decides what is still to rate; this class
adds what only a live session knows: the trail of lesions shown (for going back), the lesions
deferred with Next or Later (they come back when the rest is done), the subject the rater chose
(its lesions come first until they are done), the time each lesion was on screen, and the
subject names the rater may see. What the rater has rated and how far they are, the queue says
(:meth:`~napari_deep_prl.ratings.queue.RaterQueue.own_label`,
:meth:`~napari_deep_prl.ratings.queue.RaterQueue.progress`).
"""

from __future__ import annotations

import hashlib
import time
import uuid

import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.queue import QueueItem, Strategy


def pseudonyms(fingerprints: dict[str, str]) -> dict[str, str]:
    """Stable pseudonyms: a hash of each subject's id with its registered mask fingerprint.

    The fingerprint is fixed when the project is created and never shown, so the pseudonym
    cannot be worked back to the id by the rater, and the same subject has the same pseudonym
    for every rater and in every session.
    """
    digests = {s: hashlib.sha256(f"{f}:{s}".encode()).hexdigest() for s, f in fingerprints.items()}
    for width in range(6, 65, 2):
        names = {s: f"S-{d[:width]}" for s, d in digests.items()}
        if len(set(names.values())) == len(names):
            return names
    raise AssertionError("sha256 collision")


class ReviewSession:
    """Navigation and recording for one rater on one project."""

    def __init__(self, project: Project, rater: str, strategy: Strategy | None = None, *,
                 pseudonymise: bool = False) -> None:
        project.store.add_rater(rater)
        self.project = project
        self.rater = rater
        self.queue = project.queue(rater, strategy, session=uuid.uuid4().hex[:12])
        #: Every lesion of the project (the rater may go to any), by key.
        self.lesions = project.lesions().set_index("lesion_key", drop=False)
        self.subjects = sorted(self.lesions["subject"].unique())
        #: The subject the rater chose: its unrated lesions come first until they are done.
        self.focus: str | None = None
        #: The chosen subject whose lesions were just finished (for the widget to say so).
        self.finished_focus: str | None = None
        self.names = (pseudonyms(project.store.fingerprints()) if pseudonymise
                      else {s: s for s in self.subjects})
        self.trail: list[QueueItem] = []
        self.index = -1
        self.deferred: list[int] = []
        self._shown_at = time.monotonic()

    # -- what is on screen ----------------------------------------------------------------

    @property
    def current(self) -> QueueItem | None:
        return self.trail[self.index] if self.trail else None

    def name(self, subject: str) -> str:
        """The subject as the rater may see it (its id or its pseudonym)."""
        return self.names[subject]

    def mark_shown(self) -> None:
        """The current lesion is on screen: start its timer."""
        self._shown_at = time.monotonic()

    def upcoming(self, n: int | None) -> list[QueueItem]:
        """The queue's next ``n`` items (all with ``None``)."""
        return self.queue.remaining(limit=n)

    def _go(self, item: QueueItem | None) -> QueueItem | None:
        """Append ``item`` to the trail and make it current (``None``: stay)."""
        if item is not None:
            del self.trail[self.index + 1:]
            self.trail.append(item)
            self.index = len(self.trail) - 1
        return item

    # -- moving ---------------------------------------------------------------------------

    def start(self) -> QueueItem | None:
        """The first lesion to show: the first one this rater has not rated (resume)."""
        return self._go(self._next_unrated())

    def _next_unrated(self) -> QueueItem | None:
        """First unrated lesion not deferred (of the chosen subject while it has some); then the
        deferred ones, oldest first."""
        current = self.current
        here = None if current is None else (current.lesion_key, current.repeat)
        if self.focus is not None:
            mine = [i for i in self.upcoming(None)
                    if i.subject == self.focus and (i.lesion_key, i.repeat) != here]
            fresh = [i for i in mine if i.repeat or i.lesion_key not in self.deferred]
            by_key = {i.lesion_key: i for i in mine}
            chosen = fresh[0] if fresh else next(
                (by_key[k] for k in self.deferred if k in by_key), None)
            if chosen is not None:
                return chosen
            self.finished_focus, self.focus = self.focus, None
        limit = len(self.deferred) + 2
        items = self.upcoming(limit)
        fresh = [i for i in items if (i.lesion_key, i.repeat) != here
                 and (i.repeat or i.lesion_key not in self.deferred)]
        if fresh:
            return fresh[0]
        if len(items) == limit:
            items = self.upcoming(None)
        items = [i for i in items if (i.lesion_key, i.repeat) != here]
        by_key = {i.lesion_key: i for i in items}
        return next((by_key[k] for k in self.deferred if k in by_key), None)

    def _defer(self, item: QueueItem) -> None:
        if item.lesion_key in self.deferred:
            self.deferred.remove(item.lesion_key)
        self.deferred.append(item.lesion_key)

    def _advance(self) -> QueueItem | None:
        if self.index < len(self.trail) - 1:
            self.index += 1
            return self.current
        return self._go(self._next_unrated())

    def next(self) -> QueueItem | None:
        """Move on without labelling; an unrated lesion left this way comes back at the end."""
        current = self.current
        if current is not None and self.index == len(self.trail) - 1 \
                and self.queue.own_label(current.subject, current.lesion) is None:
            self._defer(current)
        return self._advance()

    def previous(self) -> QueueItem | None:
        """Back to the lesion shown before (``None`` at the first one)."""
        if self.index <= 0:
            return None
        self.index -= 1
        return self.current

    def later(self) -> QueueItem | None:
        """Defer the current lesion to the end of the queue (nothing is saved)."""
        current = self.current
        if current is None:
            return None
        self._defer(current)
        return self._go(self._next_unrated())

    def jump(self, subject: str, lesion: int) -> QueueItem:
        """Show any lesion of the project (to rate it out of order or change its label)."""
        subject = {v: k for k, v in self.names.items()}.get(subject, subject)
        key = self.project.store.lesion_key(subject, lesion)
        row = self.lesions.loc[key]
        item = QueueItem(int(key), subject, int(lesion), float(row["x"]), float(row["y"]),
                         float(row["z"]), float(row["volume_mm3"]), "jump", 0)
        return self._go(item)  # type: ignore[return-value]

    def first_of_subject(self, subject: str) -> QueueItem:
        """Choose a subject: its first lesion to rate in queue order, and the next ones after
        each label until it is done (then the queue goes on as before); its first lesion when
        all are rated already."""
        lesions = self.lesions[self.lesions["subject"] == subject].sort_values("lesion")
        if lesions.empty:
            raise InputError(f"subject '{self.name(subject)}' has no lesions in this project.")
        self.focus, self.finished_focus = subject, None
        item = self._next_unrated()
        if item is not None and item.subject == subject:
            return self._go(item)  # type: ignore[return-value]
        self.focus = None
        return self.jump(subject, int(lesions["lesion"].iloc[0]))

    def rerank(self, strategy: Strategy) -> None:
        """Order the lesions still to rate by ``strategy`` (new model scores); the lesion on
        screen and the trail stay."""
        self.queue.strategy = strategy
        self.queue.refresh()

    # -- recording ------------------------------------------------------------------------

    def record(self, label: str, *, confidence: int | None = None, reason: str | None = None,
               comment: str | None = None) -> int:
        """Save the current lesion's label with the seconds spent on it; durable on return."""
        item = self.current
        if item is None:
            raise InputError("no lesion is shown; nothing to label.")
        rating = self.queue.record(item, label, confidence=confidence, reason=reason,
                                   comment=comment or None,
                                   seconds=round(time.monotonic() - self._shown_at, 3))
        if item.lesion_key in self.deferred:
            self.deferred.remove(item.lesion_key)
        return rating

    def advance(self) -> QueueItem | None:
        """After a label: forward along the trail, else the next unrated lesion."""
        return self._advance()

    def undo(self) -> QueueItem | None:
        """Retract the rater's latest label and show that lesion again."""
        return self._go(self.queue.undo())

    # -- what the rater may see -----------------------------------------------------------

    def own_label(self, item: QueueItem) -> str | None:
        """The rater's own current label (hidden on an unannounced repeat)."""
        return None if item.repeat else self.queue.own_label(item.subject, item.lesion)

    def others(self, item: QueueItem) -> pd.DataFrame | None:
        """Other raters' labels, or ``None`` while the project blinds them."""
        return self.queue.other_raters(item) if self.queue.blinding.show_other_raters else None

    def predictions(self, item: QueueItem) -> pd.DataFrame | None:
        """Model predictions, or ``None`` while the project blinds them."""
        return self.queue.predictions(item) if self.queue.blinding.show_predictions else None
