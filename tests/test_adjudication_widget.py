"""The adjudication widget in a real, shown viewer driven by real keys: disagreements shown with
every rater's label, consensus recorded with one key, decisions revisited, revised and taken
back, agreement figures updated, references kept out, keys given back on close."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QPushButton
from review_support import press, shown_after

from napari_deep_prl._napari.keybindings import ADJUDICATION_KEYS
from napari_deep_prl._napari.review import adjudication_widget
from napari_deep_prl._napari.review.adjudication_widget import AdjudicationWidget
from napari_deep_prl.ratings.project import Project

pytestmark = pytest.mark.gui

#: (subject, lesion) -> (r1, r2): two disagreements, the rest agreed.
LABELS = {("sub-01", 1): ("prl", "not_prl"), ("sub-02", 2): ("unsure", "prl"),
          ("sub-01", 2): ("not_prl", "not_prl"), ("sub-01", 3): ("prl", "prl"),
          ("sub-02", 1): ("not_prl", "not_prl")}


@pytest.fixture
def project_dir(tmp_path, manifest):
    root = tmp_path / "project"
    with Project.init(root, manifest) as project:
        for (subject, lesion), labels in LABELS.items():
            for rater, label in zip(("r1", "r2"), labels):
                project.store.add_rating(rater, subject, lesion, label, confidence=3,
                                         comment=f"{rater} says {label}")
    return root


@pytest.fixture
def adjudicate(make_napari_viewer, qtbot):
    """Dock an adjudication widget in a shown viewer; check its workers on the way out."""
    made = []

    def make():
        viewer = make_napari_viewer(show=True)
        widget = AdjudicationWidget(viewer)
        widget.errors = []
        widget.display.worker_started.connect(lambda w: w.errored.connect(widget.errors.append))
        viewer.window.add_dock_widget(widget)
        made.append(widget)
        return viewer, widget

    yield make
    for widget in made:
        qtbot.waitUntil(lambda: not widget.display.busy and widget.agreement.worker is None,  # noqa: B023 (called at once, inside the loop)
                        timeout=20000)
        assert widget.errors == []


def decisions(project_dir):
    with Project.open(project_dir) as project:
        return project.store.consensus_decisions(), project.consensus().set_index(["subject", "lesion"])


def test_every_key_calls_a_widget_method():
    assert {a.method for a in ADJUDICATION_KEYS} <= set(dir(AdjudicationWidget))


def test_consensus_with_one_key_and_live_agreement(adjudicate, qtbot, project_dir):
    viewer, widget = adjudicate()
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000):
        assert shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss")) \
            == ("sub-01", 1)
    assert len(widget.queue) == 2
    table = {widget.ratings.item(i, 0).text(): widget.ratings.item(i, 4).text() for i in range(2)}
    assert table == {"r1": "r1 says prl", "r2": "r2 says not_prl"}
    pairs = widget.agreement.summary.pairs
    assert pairs.loc[0, "n"] == 5 and np.isfinite(pairs.loc[0, "cohen_kappa"])
    a, b, matrix = widget.agreement.confusion()
    assert (a, b) == ("r1", "r2") and matrix.sum() == 5 and np.trace(matrix) == 3

    widget.note.setText("rim on 3 slices")
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000):
        assert shown_after(qtbot, widget, lambda: press(viewer, "P")) == ("sub-02", 2)
    stored, consensus = decisions(project_dir)
    assert stored[["subject", "lesion", "label", "decided_by", "note"]].values.tolist() == [
        ["sub-01", 1, "prl", "boss", "rim on 3 slices"]]
    assert consensus.loc[("sub-01", 1), "consensus_method"] == "adjudicated"
    assert set(widget.agreement.summary.vs_consensus["rater"]) == {"r1", "r2"}
    assert "1 disagreement(s) waiting" in widget.remaining.text()
    press(viewer, "N")
    assert "0 disagreement(s) waiting" in widget.remaining.text()

    viewer.window.remove_dock_widget(widget)
    assert not widget.keys.active


def test_the_buttons_do_what_the_keys_do(adjudicate, qtbot, project_dir):
    _, widget = adjudicate()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss"))
    buttons = {b.text(): b for b in widget.lesion_box.findChildren(QPushButton)}
    assert {"PRL (P)", "not PRL (N)", "unsure (U)", "take back (⌫)", "← prev", "next →"} <= set(buttons)

    def click(text):
        qtbot.mouseClick(buttons[text], Qt.MouseButton.LeftButton)

    assert shown_after(qtbot, widget, lambda: click("unsure (U)")) == ("sub-02", 2)
    assert decisions(project_dir)[0][["subject", "lesion", "label"]].values.tolist() == [["sub-01", 1, "unsure"]]
    assert shown_after(qtbot, widget, lambda: click("← prev")) == ("sub-01", 1)
    click("take back (⌫)")
    assert decisions(project_dir)[0].empty and "taken back" in widget.saved.text()


def test_a_decision_can_be_revisited_revised_and_taken_back(adjudicate, qtbot, project_dir):
    viewer, widget = adjudicate()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss"))
    assert shown_after(qtbot, widget, lambda: press(viewer, "P")) == ("sub-02", 2)
    assert shown_after(qtbot, widget, lambda: press(viewer, "Left")) == ("sub-01", 1)
    assert "Decided: PRL by boss" in widget.decision.text()
    shown_after(qtbot, widget, lambda: press(viewer, "N"))  # revise: the next one waiting
    stored, consensus = decisions(project_dir)
    assert consensus.loc[("sub-01", 1), "consensus"] == "not_prl"
    assert shown_after(qtbot, widget, lambda: press(viewer, "Left")) == ("sub-01", 1)
    shown_after(qtbot, widget, lambda: press(viewer, "Backspace"))
    stored, consensus = decisions(project_dir)
    assert stored.empty and bool(consensus.loc[("sub-01", 1), "pending"])
    assert "taken back" in widget.saved.text() and widget.decision.text() == ""
    assert "2 disagreement(s) waiting" in widget.remaining.text()
    with Project.open(project_dir) as project:
        history = project.store.consensus_history()
    assert len(history) == 3  # prl, then not_prl, then the retraction: nothing is erased


def test_decisions_of_earlier_sessions_can_be_listed_and_revised(adjudicate, qtbot, project_dir):
    with Project.open(project_dir) as project:
        project.record_consensus("sub-01", 1, "prl", by="boss")
    viewer, widget = adjudicate()
    assert shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss")) \
        == ("sub-02", 2)
    assert len(widget.queue) == 1
    shown_after(qtbot, widget, lambda: widget.all_decided.setChecked(True))
    assert len(widget.queue) == 2 and widget.current["lesion"] == 2
    assert shown_after(qtbot, widget, lambda: press(viewer, "Left")) == ("sub-01", 1)
    press(viewer, "U")
    _, consensus = decisions(project_dir)
    assert consensus.loc[("sub-01", 1), "consensus"] == "unsure"


def test_a_reference_never_shows_as_a_rater(adjudicate, qtbot, project_dir):
    with Project.open(project_dir) as project:
        project.store.add_reference("truth")
        from napari_deep_prl.ratings.store import Rating

        project.store.add_ratings([Rating("truth", "sub-01", 1, "prl")], kind="reference")
    viewer, widget = adjudicate()
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000):
        shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss"))
    raters = {widget.ratings.item(i, 0).text() for i in range(widget.ratings.rowCount())}
    assert raters == {"r1", "r2"} and "truth" not in widget.queue.columns
    assert set(widget.agreement.summary.raters) == {"r1", "r2"}


def test_keys_on_a_lesion_not_yet_drawn_decide_nothing(adjudicate, qtbot, project_dir):
    viewer, widget = adjudicate()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss"))
    widget.next_lesion()  # sub-02 is not in memory yet
    press(viewer, "P")
    stored, _ = decisions(project_dir)
    assert stored.empty and "not on screen" in widget.saved.text()
    qtbot.waitUntil(lambda: widget.display.is_drawn("sub-02", 2), timeout=20000)


def test_the_reliability_report_button_writes_the_report_in_the_background(
        adjudicate, qtbot, project_dir, tmp_path, monkeypatch):
    viewer, widget = adjudicate()
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000):
        widget.open_project(project_dir, "boss")
    chosen, offered, errors = tmp_path / "out" / "reliability.html", [], []

    def save_as(parent, caption, start, filters):
        offered.append(start)
        return str(chosen), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_as))
    monkeypatch.setattr(adjudication_widget, "show_error", errors.append)
    assert widget.report_button.isVisible()
    qtbot.mouseClick(widget.report_button, Qt.MouseButton.LeftButton)
    assert offered == [str(project_dir / "exports" / "reliability_report.html")]
    assert widget.report_worker is not None and not widget.report_button.isEnabled()
    qtbot.waitUntil(lambda: widget.report_worker is None, timeout=60000)
    assert errors == [] and widget.report_button.isEnabled()
    assert widget.report_status.text() == f"Reliability report written to {chosen}"
    text = chosen.read_text()
    assert "<p class=methods>2 raters" in text and "data:image/png;base64," in text

    chosen = tmp_path / "out" / "reliability.html" / "inside-a-file.html"  # cannot be written
    qtbot.mouseClick(widget.report_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.report_worker is None, timeout=60000)
    assert len(errors) == 1 and errors[0].startswith("Could not write the reliability report")
    assert widget.report_status.text() == "" and widget.report_button.isEnabled()


def test_second_reads_are_listed_and_leave_once_decided(adjudicate, qtbot, project_dir):
    viewer, widget = adjudicate()
    assert shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "boss")) \
        == ("sub-01", 1)

    def listed():
        return [(widget.second_reads.item(i, 0).text(), widget.second_reads.item(i, 1).text(),
                 widget.second_reads.item(i, 2).text())
                for i in range(widget.second_reads.rowCount())]

    # an even split (expected change 0.125) before unsure against prl (p = 2/3: 0.111)
    assert listed() == [("sub-01", "1", "disagree"), ("sub-02", "2", "disagree,unsure")]
    assert widget.second_reads.isVisible()
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000):
        shown_after(qtbot, widget, lambda: press(viewer, "P"))
    assert listed() == [("sub-02", "2", "disagree,unsure")]
