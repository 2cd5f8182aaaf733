"""The rater's dock widget: open a project, then label lesions one key press at a time.

Every control is kept as an attribute and wired to a named method (``label``, ``next_lesion``,
``undo`` ...); the keys of :data:`~.keybindings.REVIEW_KEYS` call the same methods while a
session is open. A label counts only for a lesion painted on screen, and is written to the
rating store (durable on return) before the widget says "saved" and moves on.

With a practice set chosen, the same keys answer the set's lesions instead (:mod:`~napari_deep_prl.ratings.training`,
never the study's store): after each answer the feedback shows, and only → (next), once the
feedback has been painted, moves on; the end shows the score.
"""

from __future__ import annotations

from pathlib import Path

import napari
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
)

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.keybindings import REVIEW_KEYS
from napari_deep_prl._napari.review.lesion_widget import LesionWidget
from napari_deep_prl._napari.review.subject_images import SubjectImages, prepare_subject
from napari_deep_prl._napari.widget_parts import LABEL_NAMES
from napari_deep_prl.active import MODEL_STRATEGIES, STRATEGIES
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.queue import QueueItem, Strategy
from napari_deep_prl.ratings.review_session import ReviewSession
from napari_deep_prl.ratings.training import (
    Practice,
    PracticeRound,
    describe_score,
    reference_sets,
)


class FeedbackLabel(QLabel):
    """A label that knows whether its current text has been painted (the rater could read it)."""

    def __init__(self) -> None:
        super().__init__("")
        self.setWordWrap(True)
        self.painted = False

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self.painted = False
        super().setText(text)

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        super().paintEvent(event)
        self.painted = bool(self.text())


class ReviewWidget(LesionWidget):
    """Dock widget of a rating session (see the rater's guide, ``docs/rater_guide.md``)."""

    KEYS = REVIEW_KEYS

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.session: ReviewSession | None = None
        #: The practice round while the rater practises a reference set (then ``session`` is None).
        self.practice: PracticeRound | None = None
        self.order_name = "subject_order"
        self.confidence: int | None = None
        self._prefetched_from: str | None = None
        self.display.shown.connect(self._on_shown)
        self.board.scores_changed.connect(self._rerank)
        self._build()

    # -- construction ---------------------------------------------------------------------

    def _build(self) -> None:
        tips = messages.TOOLTIPS
        self.rater = QComboBox(editable=True, toolTip=tips["rater"])
        self.role = QComboBox(toolTip=tips["role"])
        self.role.addItems(["rater", "adjudicator"])
        self.order = QComboBox(toolTip=tips["order"])
        self.order.addItems(list(STRATEGIES.values()))
        self.practice_set = QComboBox(toolTip=tips["practice_set"])
        self.pseudonyms = QCheckBox("hide subject ids", toolTip=tips["pseudonyms"])
        self.open_box = self.session_form((("rater", self.rater), ("practice set", self.practice_set),
                                           ("role", self.role), ("order", self.order),
                                           ("", self.pseudonyms)), self.open_from_form)
        self.project_path.textChanged.connect(self._list_raters)

        self.own = QLabel("")
        self.feedback = FeedbackLabel()
        self.subject_bar = QProgressBar(format="subject: %v of %m")
        self.overall_bar = QProgressBar(format="all: %v of %m")
        self.left_out = QLabel("")
        self.subject = QComboBox(toolTip=tips["subject"])
        self.subject.activated.connect(lambda _: self.switch_subject(self.subject.currentText()))
        self.reason = QComboBox(toolTip=tips["reason"])
        self.comment = QLineEdit(toolTip=tips["comment"], placeholderText="comment (C)")
        self.comment.returnPressed.connect(self.focus_canvas)
        self.jump_box = QLineEdit(toolTip=tips["jump"], placeholderText="jump to subject:lesion (J)")
        self.jump_box.returnPressed.connect(lambda: self.jump(self.jump_box.text()))
        self.confidence_label = QLabel("confidence: –")
        self.blind = QLabel(messages.BLIND)
        self.blind.setWordWrap(True)
        self.others = QLabel("")
        reason_form = QFormLayout()
        reason_form.addRow("reason", self.reason)
        view_form = QFormLayout()
        view_form.addRow("subject", self.subject)
        self.view_rows(view_form)
        moves = self.move_buttons(QPushButton("later (L)", clicked=self.review_later),
                                  QPushButton("undo (Z)", clicked=self.undo))
        lesion = self.lesion_group("Lesion", (
            self.where, self.part, self.feedback, self.own, self.subject_bar, self.overall_bar, self.left_out,
            self.saved,
            self.confidence_label, self.label_buttons(), reason_form, self.comment, moves, self.jump_box,
            self.blind, self.others, self.evidence, view_form))
        self.assemble((self.session_bar(self.open_box), self.open_box, lesion))

    def _list_raters(self) -> None:
        """Offer the raters already in the project named in the path box (as soon as the path
        names a project)."""
        try:
            with Project.open(self.project_path.text(), readonly=True) as project:
                raters = project.store.raters()["rater"].tolist()
                sets = reference_sets(project)
        except (DeepPRLError, OSError):
            return
        self.practice_set.clear()
        self.practice_set.addItems(["", *sets])
        typed = self.rater.currentText()
        self.rater.clear()
        self.rater.addItems(raters)
        self.rater.setCurrentText(typed)

    # -- opening --------------------------------------------------------------------------

    def open_from_form(self) -> None:
        from napari_deep_prl.active.strategies import (
            open_strategy,  # torch loads only when a session opens
        )

        if self.role.currentText() == "adjudicator":
            from napari_deep_prl._napari.review.adjudication_widget import (
                dock_adjudication,
            )

            dock_adjudication(self.viewer, self.project_path.text(), self.rater.currentText())
            self.viewer.window.remove_dock_widget(self)  # one set of keys at a time
            return
        if self.practice_set.currentText():
            self.open_practice(self.project_path.text(), self.rater.currentText(),
                               self.practice_set.currentText(),
                               pseudonymise=self.pseudonyms.isChecked())
            return
        name = list(STRATEGIES)[self.order.currentIndex()]
        try:
            strategy = open_strategy(self.project_path.text(), name)
        except DeepPRLError as err:
            show_error(messages.OPEN_FAILED.format(path=self.project_path.text(), cause=err))
            return
        self.open_project(self.project_path.text(), self.rater.currentText(), strategy=strategy,
                          pseudonymise=self.pseudonyms.isChecked(), order=name)

    def open_project(self, path: str | Path, rater: str, *, strategy: Strategy | None = None,
                     pseudonymise: bool = False, order: str | None = None) -> bool:
        """Open a project for ``rater`` and show their first unrated lesion (resume).

        ``order`` names the strategy (see :data:`~napari_deep_prl.active.STRATEGIES`) so a
        model order can rank again when the model panel stores new scores.
        """
        project = self.open_folder(path, rater)
        if project is None:
            return False
        try:
            self.session = ReviewSession(
                project, rater.strip(), strategy,
                pseudonymise=pseudonymise or project.config.blinding.pseudonymise_subjects)
        except DeepPRLError as err:
            project.close()
            show_error(messages.OPEN_FAILED.format(path=path, cause=err))
            return False
        self.order_name = order or (strategy.name if strategy else "subject_order")
        self.rater.setCurrentText(rater)
        self.display.name = self.session.name
        self.pseudonyms.setChecked(self.session.names != {s: s for s in self.session.subjects})
        self.subject.clear()
        self.subject.addItems([self.session.name(s) for s in self.session.subjects])
        self.reason.clear()
        self.reason.addItems(["", *project.config.exclusion_reasons])
        blinding = project.config.blinding
        self.blind.setVisible(not (blinding.show_other_raters or blinding.show_predictions))
        self.board.open_session(self, hide_scores=not blinding.show_predictions,
                                hide_labels=not blinding.show_other_raters)
        left_out = self.session.queue.left_out
        self.left_out.setText(messages.LEFT_OUT.format(
            count=left_out, size=project.config.review.min_diameter_mm) if left_out else "")
        self.left_out.setVisible(bool(left_out))
        self.start_session(project, path, f"{rater} · {project.root.name}")
        self._show(self.session.start())
        return True

    def open_practice(self, path: str | Path, rater: str, reference: str, *,
                      pseudonymise: bool = False) -> bool:
        """Practise reference set ``reference`` as ``rater``: its lesions one by one, blind, the
        answers to the practice store (never the study's); subjects go by their pseudonyms with
        ``pseudonymise`` or when the project hides subject ids."""
        project = self.open_folder(path, rater)
        if project is None:
            return False
        practice = None
        try:
            practice = Practice(project)
            self.practice = PracticeRound(
                practice, rater, reference,
                pseudonymise=pseudonymise or project.config.blinding.pseudonymise_subjects)
        except DeepPRLError as err:
            if practice is not None:
                practice.close()
            project.close()
            show_error(messages.OPEN_FAILED.format(path=path, cause=err))
            return False
        self.rater.setCurrentText(rater)
        self.display.name = self.practice.name
        self.pseudonyms.setChecked(bool(self.practice.names))
        self.blind.setVisible(True)
        self.others.setText("")
        self.subject.clear()
        self.left_out.setVisible(False)
        self.board.open_session(self, hide_scores=True, hide_labels=True)
        self.start_session(project, path, f"{rater} · practice '{reference}' · {project.root.name}")
        self._show_practice(self.practice.current)
        return True

    def _load(self, subject: str) -> SubjectImages:  # runs in a worker thread
        if self.practice is not None:  # practice subjects load from their own manifest
            return prepare_subject(self.practice.practice, subject)
        return super()._load(subject)

    def close_project(self) -> None:
        super().close_project()
        if self.practice is not None:
            self.practice.practice.close()
        self.practice = None
        self.feedback.setText("")
        self.session = None
        self._prefetched_from = None

    def _show_practice(self, item: QueueItem | None) -> None:
        """The next lesion of the practice round, or its score when the set is done."""
        round_ = self.practice
        assert round_ is not None
        self._reset_inputs()
        self.overall_bar.setRange(0, round_.of)
        self.overall_bar.setValue(round_.done)
        if item is None:
            self.where.setText(messages.DONE)
            try:
                score = round_.finish()
            except DeepPRLError as err:
                show_error(messages.SAVE_FAILED.format(cause=err))
                return
            self.feedback.setText(messages.PRACTICE_DONE.format(
                score=describe_score(round_.rater, round_.reference, score)))
            return
        self.feedback.setText("")
        self.where.setText(f"practice {round_.done + 1} of {round_.of} · {round_.name(item.subject)} · "
                           f"lesion {item.lesion} · {item.volume_mm3:.0f} mm³")
        self.display.request(item.subject, item.lesion, (item.x, item.y, item.z))

    def _answer_practice(self, label: str) -> bool:
        """Send the answer on the lesion on screen to the practice round and show its feedback."""
        round_ = self.practice
        assert round_ is not None
        item = round_.current
        if item is None:
            return False
        if round_.feedback is not None:
            self.saved.setText(messages.PRACTICE_LOOK_FIRST)
            return False
        if not self.seen(item.subject, item.lesion):
            return False
        try:
            feedback = round_.answer(label)
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return False
        note = messages.PRACTICE_NOTE.format(note=feedback.note) if feedback.note else ""
        reference = LABEL_NAMES.get(feedback.reference_label, feedback.reference_label)
        self.feedback.setText(
            messages.PRACTICE_AGREED.format(label=reference, note=note) if feedback.agreed
            else messages.PRACTICE_DIFFERS.format(label=reference, yours=LABEL_NAMES[label],
                                                  note=note))
        self.saved.setText("")
        return True

    def _practice_next(self) -> None:
        """→ in practice: on to the next lesion once the feedback has been on screen."""
        round_ = self.practice
        assert round_ is not None
        if round_.current is None:
            return
        if round_.feedback is None:
            self.saved.setText(messages.PRACTICE_ANSWER_FIRST)
        elif not self.feedback.painted:
            self.saved.setText(messages.PRACTICE_LOOK_FIRST)
        else:
            self.saved.setText("")
            self._show_practice(round_.advance())

    # -- showing --------------------------------------------------------------------------

    def _show(self, item: QueueItem | None) -> None:
        session = self.session
        if session is None:
            return
        self._reset_inputs()
        if session.finished_focus is not None:
            self.saved.setText(messages.SUBJECT_DONE.format(
                subject=session.name(session.finished_focus)))
            session.finished_focus = None
        if item is None:
            self.where.setText(messages.DONE)
            self._update_progress(None)
            return
        self.where.setText(f"{session.name(item.subject)} · lesion {item.lesion} · "
                           f"{item.volume_mm3:.0f} mm³")
        self.own.setText("")  # read from the store once the lesion is on screen
        self._show_unblinded(item)
        self.display.request(item.subject, item.lesion, (item.x, item.y, item.z))

    def _on_shown(self, subject: str, lesion: int) -> None:
        if self.session is not None:
            self.session.mark_shown()
            self._prefetch()
            # after the paint has reached the screen: the rater's own label and the bars read the store
            QTimer.singleShot(0, lambda: self._update_progress(self.session.current if self.session else None))
        self.lesion_shown.emit(subject, lesion)

    def _prefetch(self) -> None:
        """Load the next subject of the queue while the rater works on this one (looked up
        once per subject: the queue is read again only after the subject changes)."""
        session = self.session
        current = session.current if session else None
        if current is None or current.subject == self._prefetched_from:
            return
        self._prefetched_from = current.subject
        for item in session.upcoming(8):
            if item.subject != current.subject:
                self.display.prefetch(item.subject)
                return

    def _update_progress(self, item: QueueItem | None) -> None:
        """The rater's own label of the lesion and the progress bars (the queue counts)."""
        session = self.session
        if session is None:
            return
        overall = session.queue.progress()
        self.overall_bar.setRange(0, overall.total)
        self.overall_bar.setValue(overall.done)
        if item is not None:
            own = session.own_label(item)
            self.own.setText("" if own is None else f"your label: {LABEL_NAMES[own]}")
            counts = session.queue.progress(item.subject)
            self.subject_bar.setRange(0, counts.total)
            self.subject_bar.setValue(counts.done)
            self.subject.setCurrentText(session.name(item.subject))

    def _show_unblinded(self, item: QueueItem) -> None:
        """Other raters' labels and model scores, only where the project allows it."""
        session = self.session
        parts = []
        others = session.others(item)
        if others is not None and not others.empty:
            parts.append("others: " + ", ".join(
                f"{rater}={label}" for rater, label in zip(others["rater"], others["label"])))
        predictions = session.predictions(item)
        if predictions is not None and not predictions.empty:
            parts.append("model: " + ", ".join(f"{p:.2f}" for p in predictions["probability"]))
        self.others.setText(" · ".join(parts))

    def _reset_inputs(self) -> None:
        self.confidence = None
        self.confidence_label.setText("confidence: –")
        self.comment.clear()
        self.reason.setCurrentIndex(0)

    def _on_screen(self) -> QueueItem | None:
        """The current lesion if it has been painted on screen, else ``None`` (and the rater
        is told the key was ignored): keys act only on lesions the rater has seen."""
        session = self.session
        if session is None or session.current is None:
            return None
        item = session.current
        return item if self.seen(item.subject, item.lesion) else None

    def _rerank(self, root: Path) -> None:
        """New model scores for this project: a model order ranks the rest of the queue again."""
        from napari_deep_prl.active.strategies import open_strategy

        if self.session is None or self.order_name not in MODEL_STRATEGIES \
                or Path(self.project.root).resolve() != root:
            return
        try:
            strategy = open_strategy(self.project.root, self.order_name)
        except DeepPRLError as err:
            show_error(messages.RERANK_FAILED.format(cause=err))
            return
        self.session.rerank(strategy)
        self.saved.setText(messages.RERANKED)

    # -- the actions the keys call --------------------------------------------------------

    def label(self, label: str) -> bool:
        """Save ``label`` for the lesion on screen, say so, and go to the next one."""
        if self.practice is not None:
            return self._answer_practice(label)
        session = self.session
        if session is None or session.current is None:
            show_info(messages.NO_PROJECT if session is None else messages.DONE)
            return False
        item = self._on_screen()
        if item is None:
            return False
        try:
            session.record(label, confidence=self.confidence,
                           reason=self.reason.currentText() or None,
                           comment=self.comment.text().strip() or None)
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return False
        conf = "" if self.confidence is None else f", confidence {self.confidence}"
        self.saved.setText("✓ " + messages.SAVED.format(
            label=LABEL_NAMES[label], confidence=conf, subject=session.name(item.subject),
            lesion=item.lesion))
        try:
            self._show(session.advance())
        except DeepPRLError as err:  # the label is saved; only finding the next one failed
            show_error(messages.NEXT_FAILED.format(cause=err))
        return True

    def set_confidence(self, value: int) -> None:
        self.confidence = int(value)
        self.confidence_label.setText(f"confidence: {value} / 5")

    def _can_move_on(self) -> bool:
        """Next and Later act on a lesion the rater has seen, or one whose images failed to
        load (so a broken subject never traps the rater)."""
        return self.display.target_failed or self._on_screen() is not None

    def next_lesion(self) -> None:
        if self.practice is not None:
            self._practice_next()
        elif self.session is not None and self._can_move_on():
            self._show(self.session.next() or self.session.current)

    def previous_lesion(self) -> None:
        if self.session is not None and (item := self.session.previous()) is not None:
            self._show(item)

    def review_later(self) -> None:
        session = self.session
        if session is None or session.current is None or not self._can_move_on():
            return
        item = session.current
        self.saved.setText(messages.LATER.format(subject=session.name(item.subject),
                                                 lesion=item.lesion))
        self._show(session.later() or session.current)

    def undo(self) -> None:
        session = self.session
        if session is None:
            return
        try:
            item = session.undo()
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return
        if item is None:
            self.saved.setText(messages.NOTHING_TO_UNDO)
            return
        self.saved.setText(messages.UNDONE.format(subject=session.name(item.subject),
                                                  lesion=item.lesion))
        self._show(item)

    def jump(self, text: str) -> bool:
        """Go to ``subject:lesion`` or a lesion id of the current subject."""
        session = self.session
        if session is None:
            return False
        subject, _, lesion = text.strip().rpartition(":")
        if not subject and session.current is not None:
            subject = session.current.subject
        try:
            item = session.jump(subject, int(lesion))
        except (ValueError, KeyError, DeepPRLError):
            show_error(messages.JUMP_UNKNOWN.format(text=text))
            return False
        self.jump_box.clear()
        self._show(item)
        self.focus_canvas()
        return True

    def switch_subject(self, name: str) -> None:
        """Rate this subject's lesions next, until they are done."""
        session = self.session
        if session is not None:
            real = {v: k for k, v in session.names.items()}.get(name, name)
            self._show(session.first_of_subject(real))

    def focus_jump(self) -> None:
        self.jump_box.setFocus()

    def focus_comment(self) -> None:
        self.comment.setFocus()
