"""The review widget in a real, shown viewer driven by real Qt key events on napari's canvas:
keys store the right rows only for lesions painted on screen, navigation, undo, resume,
blinding, subject choice, errors (tiny synthetic subjects from conftest)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QPushButton
from review_support import all_text, burst, current_ratings, press, shown_after

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.keybindings import REVIEW_KEYS
from napari_deep_prl._napari.review import lesion_display
from napari_deep_prl._napari.review.review_widget import ReviewWidget
from napari_deep_prl.ratings.project import Project

pytestmark = pytest.mark.gui


@pytest.fixture
def project_dir(tmp_path, manifest):
    root = tmp_path / "project"
    Project.init(root, manifest).close()
    return root


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    """A factory docking a ReviewWidget in a shown viewer; checks no worker errored and none is
    left running."""
    docked = []

    def make(viewer=None):
        viewer = viewer or make_napari_viewer(show=True)
        widget = ReviewWidget(viewer)
        widget.errors = []
        widget.display.worker_started.connect(lambda w: w.errored.connect(widget.errors.append))
        viewer.window.add_dock_widget(widget, name="review")
        docked.append(widget)
        return viewer, widget

    yield make
    for widget in docked:
        qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)  # noqa: B023 (called at once, inside the loop)
        assert widget.errors == []


def opened(qtbot, widget, project_dir, rater="r1", **kwargs):
    return shown_after(qtbot, widget, lambda: widget.open_project(project_dir, rater, **kwargs))


def test_every_key_calls_a_widget_method():
    methods = {a.method for a in REVIEW_KEYS}
    assert methods <= set(dir(ReviewWidget))
    keys = [k for a in REVIEW_KEYS for k in a.keys]
    assert len(keys) == len(set(keys))
    assert {"P", "N", "U", "1", "5", "Left", "Right", "L", "Z", "Control-Z", "J", "Up", "Down",
            ",", "."} <= set(keys)
    assert {a.method for a in REVIEW_KEYS if a.repeat} == {"step_slice"}


def test_keys_store_labels_and_move_on(dock, qtbot, project_dir):
    viewer, widget = dock()
    assert opened(qtbot, widget, project_dir) == ("sub-01", 1)
    press(viewer, "4")
    assert shown_after(qtbot, widget, lambda: press(viewer, "P")) == ("sub-01", 2)
    assert "Saved" in widget.saved.text()
    shown_after(qtbot, widget, lambda: press(viewer, "N"))
    assert shown_after(qtbot, widget, lambda: press(viewer, "U")) == ("sub-02", 1)
    rows = current_ratings(project_dir)
    assert list(zip(rows["subject"], rows["lesion"], rows["label"])) == [
        ("sub-01", 1, "prl"), ("sub-01", 2, "not_prl"), ("sub-01", 3, "unsure")]
    assert rows["confidence"].iloc[0] == 4 and np.isnan(rows["confidence"].iloc[1])
    assert (rows["seconds"] >= 0).all() and rows["session"].notna().all()
    qtbot.waitUntil(lambda: widget.overall_bar.value() == 3)  # bars update after the view
    assert widget.overall_bar.maximum() == 9


def test_a_burst_of_presses_labels_only_the_lesion_on_screen(dock, qtbot, project_dir):
    """Five N presses queued at once: the first labels the lesion on screen; the next lesion is
    not painted before the other four arrive, so they save nothing."""
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000):
        burst(viewer, "N", 5)
    rows = current_ratings(project_dir)
    assert list(zip(rows["subject"], rows["lesion"])) == [("sub-01", 1)]
    assert widget.session.current.lesion == 2 and "not on screen" in widget.saved.text()


def test_a_held_key_labels_once(dock, qtbot, project_dir):
    """A held key: one press, then auto-repeat events; only the press labels."""
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000):
        burst(viewer, "P", 8, repeat_after_first=True)
    qtbot.wait(200)  # the next lesion is on screen; late auto-repeats still save nothing
    press(viewer, "P", repeat=True)
    rows = current_ratings(project_dir)
    assert list(zip(rows["lesion"], rows["label"])) == [(1, "prl")]


def test_seconds_count_from_when_the_lesion_was_painted(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    shown_after(qtbot, widget, lambda: press(viewer, "N"))
    qtbot.wait(600)  # the rater looks at lesion 2 for about 0.6 s
    shown_after(qtbot, widget, lambda: press(viewer, "N"))
    seconds = current_ratings(project_dir)["seconds"].tolist()
    assert seconds[1] >= 0.5


def test_a_lesion_still_loading_cannot_be_labelled(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    widget.jump("sub-03:2")  # not in memory: the canvas says "loading" until it arrives
    assert not widget.display.is_drawn("sub-03", 2)
    press(viewer, "P")
    assert current_ratings(project_dir).empty and "not on screen" in widget.saved.text()
    qtbot.waitUntil(lambda: widget.display.is_drawn("sub-03", 2), timeout=20000)
    shown_after(qtbot, widget, lambda: press(viewer, "P"))
    rows = current_ratings(project_dir)
    assert list(zip(rows["subject"], rows["lesion"])) == [("sub-03", 2)]


def test_slices_plane_outline_and_window_keys(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    canvas = widget.canvas
    centre = canvas.slice_index
    press(viewer, "Up")
    press(viewer, "Up", repeat=True)  # stepping through slices may be held
    assert canvas.slice_index == centre + 2
    press(viewer, ",")
    assert canvas.slice_index == centre + 1
    assert 1 in canvas.strip_slices and 0 in canvas.strip_slices
    press(viewer, "R")
    assert canvas.slice_index == centre
    press(viewer, "A")
    assert widget.axis.currentText() == "coronal" and canvas.plane == "coronal"
    press(viewer, "O")
    assert not canvas.outlines
    canvas.set_window("phase", (-0.01, 0.01))  # as a drag in the phase panel does
    shown_after(qtbot, widget, lambda: press(viewer, "Right"))
    assert canvas.window("phase") == (-0.01, 0.01)  # kept for the session
    press(viewer, "W")
    assert canvas.window("phase") == canvas.images.windows["phase"]
    assert current_ratings(project_dir).empty  # looking saves nothing


def test_navigation_later_and_undo(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    assert shown_after(qtbot, widget, lambda: press(viewer, "Right")) == ("sub-01", 2)
    assert shown_after(qtbot, widget, lambda: press(viewer, "Left")) == ("sub-01", 1)
    assert shown_after(qtbot, widget, lambda: press(viewer, "L")) == ("sub-01", 2)
    assert current_ratings(project_dir).empty  # moving and deferring save nothing
    shown_after(qtbot, widget, lambda: press(viewer, "P"))  # sub-01:2
    assert shown_after(qtbot, widget, lambda: press(viewer, "Z")) == ("sub-01", 2)
    assert current_ratings(project_dir).empty
    shown_after(qtbot, widget, lambda: press(viewer, "N"))  # sub-01:2 again
    for _ in range(7):  # sub-01:3, then sub-02 and sub-03
        shown_after(qtbot, widget, lambda: press(viewer, "N"))
    assert widget.session.current.lesion_key == 1  # the deferred lesion came back last
    shown_after(qtbot, widget, lambda: press(viewer, "Left"))
    shown_after(qtbot, widget, lambda: press(viewer, "P"))  # change a label: history kept
    press(viewer, "P")  # the deferred one; nothing is left to show
    assert widget.session.current is not None and "All lesions rated" in widget.where.text()
    rows = current_ratings(project_dir)
    assert len(rows) == 9 and rows.set_index(["subject", "lesion"]).loc[("sub-03", 3), "label"] == "prl"
    with Project.open(project_dir) as project:
        history = project.store.history()
    assert (history["action"] == "undo").sum() == 1 and len(history) == 12
    shown_after(qtbot, widget, lambda: press(viewer, "Control-Z"))
    assert len(current_ratings(project_dir)) == 8


def test_own_label_and_progress_are_read_from_the_store(dock, qtbot, project_dir):
    """Going back shows the rater's own label; labels the rater saved elsewhere while the session
    is open (another window, `deep-prl ratings add`) are theirs too, in the label and the bars."""
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    shown_after(qtbot, widget, lambda: press(viewer, "P"))
    shown_after(qtbot, widget, lambda: press(viewer, "Left"))
    qtbot.waitUntil(lambda: widget.own.text() == "your label: PRL")
    with Project.open(project_dir) as project:
        project.store.add_rating("r1", "sub-01", 2, "not_prl")
        project.store.add_rating("r1", "sub-02", 1, "prl")
    assert shown_after(qtbot, widget, lambda: press(viewer, "Right")) == ("sub-01", 2)
    qtbot.waitUntil(lambda: widget.own.text() == "your label: not PRL")
    assert (widget.subject_bar.value(), widget.overall_bar.value()) == (2, 3)


def test_the_buttons_do_what_the_keys_do(dock, qtbot, project_dir):
    _, widget = dock()
    opened(qtbot, widget, project_dir)
    buttons = {b.text(): b for b in widget.lesion_box.findChildren(QPushButton)}
    assert {"PRL (P)", "not PRL (N)", "unsure (U)", "← prev", "next →", "later (L)", "undo (Z)"} <= set(buttons)

    def click(text):
        qtbot.mouseClick(buttons[text], Qt.MouseButton.LeftButton)

    assert shown_after(qtbot, widget, lambda: click("not PRL (N)")) == ("sub-01", 2)
    assert shown_after(qtbot, widget, lambda: click("later (L)")) == ("sub-01", 3)
    assert shown_after(qtbot, widget, lambda: click("← prev")) == ("sub-01", 2)
    assert shown_after(qtbot, widget, lambda: click("next →")) == ("sub-01", 3)
    assert shown_after(qtbot, widget, lambda: click("unsure (U)")) == ("sub-02", 1)
    assert shown_after(qtbot, widget, lambda: click("undo (Z)")) == ("sub-01", 3)
    rows = current_ratings(project_dir)
    assert list(zip(rows["subject"], rows["lesion"], rows["label"])) == [("sub-01", 1, "not_prl")]


def test_a_chosen_subject_stays_chosen_until_its_lesions_are_done(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    assert shown_after(qtbot, widget, lambda: widget.switch_subject("sub-02")) == ("sub-02", 1)
    assert shown_after(qtbot, widget, lambda: press(viewer, "N")) == ("sub-02", 2)
    assert shown_after(qtbot, widget, lambda: press(viewer, "N")) == ("sub-02", 3)
    assert shown_after(qtbot, widget, lambda: press(viewer, "N")) == ("sub-01", 1)
    assert "All lesions of sub-02 are rated" in widget.saved.text()
    shown_after(qtbot, widget, lambda: widget.switch_subject("sub-02"))  # all rated: shown again
    assert widget.session.current.subject == "sub-02"


def test_resume_after_reopening(dock, qtbot, project_dir):
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    for _ in range(4):
        shown_after(qtbot, widget, lambda: press(viewer, "N"))
    viewer.window.remove_dock_widget(widget)
    _, again = dock(viewer)
    assert opened(qtbot, again, project_dir) == ("sub-02", 2)
    qtbot.waitUntil(lambda: again.subject_bar.value() == 1 and again.overall_bar.value() == 4)


def test_keys_belong_to_the_open_session_only(dock, qtbot, project_dir):
    """Before a project opens and after the widget closes, napari's own keys work as usual."""
    viewer, widget = dock()
    points = viewer.add_points(np.zeros((1, 3)))
    press(viewer, "2")  # no session: napari's Points key (add mode)
    assert points.mode == "add"
    points.mode = "pan_zoom"
    opened(qtbot, widget, project_dir)
    press(viewer, "2")
    assert points.mode == "pan_zoom" and widget.confidence == 2
    widget.close()
    press(viewer, "2")
    assert points.mode == "add"


def test_blind_mode_hides_others_and_subject_ids(dock, qtbot, project_dir):
    with Project.open(project_dir) as project:
        project.store.add_rating("r2", "sub-01", 1, "prl", comment="clear rim")
        project.store.add_predictions("m1", _predictions(project))
    viewer, widget = dock()
    opened(qtbot, widget, project_dir, pseudonymise=True)
    texts = all_text(widget) + " ".join(layer.name for layer in viewer.layers)
    assert "sub-0" not in texts and "r2=" not in texts and "clear rim" not in texts
    assert "S-" in widget.where.text() and widget.others.text() == ""
    assert not widget.blind.isHidden()
    name = widget.subject.itemText(1)
    assert shown_after(qtbot, widget, lambda: widget.switch_subject(name)) == ("sub-02", 1)
    assert shown_after(qtbot, widget, lambda: widget.jump(f"{name}:3")) == ("sub-02", 3)


def test_unblinded_project_shows_other_raters(dock, qtbot, tmp_path, manifest):
    root = tmp_path / "open-project"
    with Project.init(root, manifest, {"blinding": {"show_other_raters": True}}) as project:
        project.store.add_rating("r2", "sub-01", 1, "prl")
    viewer, widget = dock()
    opened(qtbot, widget, root)
    assert "r2=prl" in widget.others.text() and widget.blind.isHidden()


def test_rim_evidence_shows_on_the_lesion_unless_the_rater_is_blind(dock, qtbot, tmp_path, manifest, project_dir):
    from napari_deep_prl.data.evidence import rim_evidence

    root = tmp_path / "scores-shown"
    with Project.init(root, manifest, {"blinding": {"show_predictions": True}}) as project:
        expected = rim_evidence(project.load_subject("sub-01")).set_index("lesion").loc[1]
    viewer, widget = dock()
    assert opened(qtbot, widget, root) == ("sub-01", 1)
    # the numbers of the lesion on screen, as deep-prl score measures them on the file's grid
    coverage = expected["rim_coverage"]
    assert widget.evidence.text() == messages.EVIDENCE.format(
        coverage=messages.EVIDENCE_NONE if np.isnan(coverage) else f"{coverage:.0%}",
        slices=int(expected["rim_slices"]), diameter=expected["diameter_mm"])
    assert widget.evidence.isVisibleTo(widget) and widget.evidence.text() in all_text(widget)
    # the same lesion in a blind project (the default): no evidence
    assert opened(qtbot, widget, project_dir) == ("sub-01", 1)
    assert widget.evidence.isHidden() and "of the edge" not in all_text(widget)


def test_small_lesions_stay_out_of_the_queue_when_the_project_says_so(dock, qtbot, tmp_path,
                                                                       write_subject):
    from conftest import blob_mask

    from napari_deep_prl.data.cohort import write_manifest

    mask = blob_mask(centres=((8, 8, 8), (20, 20, 12)), radius=2.5) \
        | blob_mask(centres=((10, 24, 16),), radius=0.9)
    manifest = write_manifest([write_subject("sub-01", mask=mask)], tmp_path / "m.csv")
    root = tmp_path / "small"
    Project.init(root, manifest, {"review": {"min_diameter_mm": 3.0}}).close()
    viewer, widget = dock()
    opened(qtbot, widget, root)
    progress = widget.session.queue.progress()
    assert (progress.done, progress.total) == (0, 2)
    assert "1 lesion(s) under 3 mm left out" in widget.left_out.text()
    shown_after(qtbot, widget, lambda: press(viewer, "N"))
    press(viewer, "N")
    assert "All lesions rated" in widget.where.text() and len(current_ratings(root)) == 2


def test_unreadable_image_is_reported_and_nothing_lost(dock, qtbot, project_dir, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(lesion_display, "show_error", shown.append)
    (tmp_path / "sub-02" / "sub-02_phase.nii.gz").write_bytes(b"not a nifti")
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    shown_after(qtbot, widget, lambda: press(viewer, "P"))
    widget.jump("sub-02:1")
    qtbot.waitUntil(lambda: bool(shown) and not widget.display.busy, timeout=20000)
    assert len(widget.errors) >= 1
    widget.errors.clear()  # these workers were meant to fail
    assert len(shown) == 1 and "sub-02_phase" in shown[0] and "intact" in shown[0]
    press(viewer, "P")  # nothing on screen: nothing saved
    assert len(current_ratings(project_dir)) == 1
    assert shown_after(qtbot, widget, lambda: press(viewer, "Right")) == ("sub-01", 2)  # moving on
    assert shown_after(qtbot, widget, lambda: widget.jump("sub-01:3")) == ("sub-01", 3)
    assert not widget.display.busy  # the failed subject is not loaded ahead again


def test_model_order_serves_the_most_likely_prl_first_and_records_the_model(dock, qtbot, project_dir):
    with Project.open(project_dir) as project:
        lesions = project.lesions()
        scores = lesions.assign(probability=np.linspace(0.1, 0.9, len(lesions)))
        project.store.add_predictions("model-v7", scores[["subject", "lesion", "probability"]])
    most_likely = tuple(scores.sort_values("probability").iloc[-1][["subject", "lesion"]])
    viewer, widget = dock()
    widget.project_path.setText(str(project_dir))
    widget.rater.setCurrentText("r1")
    widget.order.setCurrentText("most likely PRL first (model)")
    assert shown_after(qtbot, widget, widget.open_from_form) == most_likely
    shown_after(qtbot, widget, lambda: press(viewer, "P"))
    row = current_ratings(project_dir).iloc[0]
    assert (row["subject"], row["lesion"]) == most_likely
    assert (row["queue_strategy"], row["model_version"]) == ("likely_prl", "model-v7")
    assert "0.9" not in all_text(widget)  # blind: the order uses scores, the rater never sees them


def test_the_rater_list_fills_as_soon_as_the_path_names_a_project(dock, qtbot, project_dir):
    with Project.open(project_dir) as project:
        project.store.add_rater("ann")
        project.store.add_rater("bob")
    viewer, widget = dock()
    widget.project_path.setText(str(project_dir))  # as the folder dialog sets it: no Enter
    assert [widget.rater.itemText(i) for i in range(widget.rater.count())] == ["ann", "bob"]


def _predictions(project):
    lesions = project.lesions()
    return lesions.assign(probability=0.9)[["subject", "lesion", "probability"]]


@pytest.mark.parametrize("guide, actions", [("rater_guide.md", "REVIEW_KEYS"),
                                            ("adjudicator_guide.md", "ADJUDICATION_KEYS")])
def test_guides_list_every_key(guide, actions):
    from pathlib import Path

    from napari_deep_prl._napari import keybindings

    text = (Path(__file__).resolve().parents[1] / "docs" / guide).read_text()
    for keys, help_text in keybindings.key_table(getattr(keybindings, actions)):
        assert f"| `{keys}` | {help_text} |" in text


@pytest.mark.parametrize("adjudicator", [False, True])
def test_cli_opens_napari_with_the_widget_docked(make_napari_viewer, qtbot, project_dir,
                                                 monkeypatch, adjudicator):
    import napari

    from napari_deep_prl.cli import main

    viewers = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewers.append(make_napari_viewer()) or viewers[-1])
    monkeypatch.setattr(napari, "run", lambda: None)
    argv = ["review", str(project_dir), "--rater", "r1", "--pseudonyms"]
    assert main(argv + ["--adjudicator"] * adjudicator) == 0
    docked = list(viewers[0].window.dock_widgets.values())
    assert len(docked) == 1
    widget = docked[0]
    assert widget.project is not None and widget.keys.active
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
    if adjudicator:
        qtbot.waitUntil(lambda: widget.agreement.worker is None, timeout=20000)
    else:
        assert widget.session.name("sub-01").startswith("S-")
    widget.close()


def test_cli_refuses_a_folder_that_is_not_a_project(tmp_path, capsys):
    from napari_deep_prl.cli import main

    assert main(["review", str(tmp_path), "--rater", "r1"]) == 2
    assert "not a napari-deep-prl project" in capsys.readouterr().err


def test_cli_without_a_display_says_so_in_one_line(project_dir, capsys, monkeypatch):
    from napari_deep_prl.cli import main

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main(["review", str(project_dir), "--rater", "r1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a display" in err and "ssh -X" in err and len(err.splitlines()) == 1


def test_adjudicator_role_swaps_in_the_adjudication_widget(dock, qtbot, project_dir):
    from napari_deep_prl._napari.review.adjudication_widget import AdjudicationWidget

    viewer, widget = dock()
    widget.project_path.setText(str(project_dir))
    widget.rater.setCurrentText("chief")
    widget.role.setCurrentText("adjudicator")
    widget.open_from_form()
    docked = list(viewer.window.dock_widgets.values())
    assert len(docked) == 1 and isinstance(docked[0], AdjudicationWidget)
    assert docked[0].adjudicator == "chief" and not widget.keys.active and docked[0].keys.active
    qtbot.waitUntil(lambda: docked[0].agreement.worker is None and not docked[0].display.busy,
                    timeout=20000)
    docked[0].close()


def test_a_database_failure_is_reported_and_the_lesion_stays(dock, qtbot, project_dir, monkeypatch):
    from napari_deep_prl._napari.review import review_widget
    from napari_deep_prl.base.errors import StoreError

    errors = []
    monkeypatch.setattr(review_widget, "show_error", errors.append)
    viewer, widget = dock()
    opened(qtbot, widget, project_dir)

    def locked(*args, **kwargs):
        raise StoreError("ratings.sqlite: database is locked")

    monkeypatch.setattr(widget.session.queue.store, "add_rating", locked)
    press(viewer, "P")
    assert len(errors) == 1 and "NOT saved" in errors[0] and "locked" in errors[0]
    assert widget.session.current.lesion == 1 and "Saved" not in widget.saved.text()
    monkeypatch.undo()
    assert shown_after(qtbot, widget, lambda: press(viewer, "P")) == ("sub-01", 2)
    assert len(current_ratings(project_dir)) == 1


@pytest.mark.parametrize("role", ["rater", "adjudicator"])
def test_docked_widgets_scroll_so_the_window_fits_a_1080p_screen(make_napari_viewer, role):
    from qtpy.QtWidgets import QScrollArea

    from napari_deep_prl._napari.review.adjudication_widget import AdjudicationWidget

    viewer = make_napari_viewer()
    widget = (ReviewWidget if role == "rater" else AdjudicationWidget)(viewer)
    viewer.window.add_dock_widget(widget)
    needed = viewer.window._qt_window.minimumSizeHint().height()
    content = widget.findChild(QScrollArea).widget().minimumSizeHint().height()
    assert needed < 900 < content + widget.canvas.minimumHeight()  # taller than the screen, yet the window is not
    widget.close()


def test_panels_show_every_contrast_in_the_order_the_project_sets(dock, qtbot, tmp_path,
                                                                   write_subject):
    from napari_deep_prl.data.cohort import write_manifest

    manifest = write_manifest([write_subject("sub-01", extra=("flair", "magnitude"))],
                              tmp_path / "m.csv")
    every, chosen = tmp_path / "every", tmp_path / "chosen"
    Project.init(every, manifest).close()
    Project.init(chosen, manifest, {"review": {"panels": ["flair", "phase", "qsm"]}}).close()
    viewer, widget = dock()
    opened(qtbot, widget, every)
    assert list(widget.canvas.rendered) == ["phase", "mp2rage", "flair", "magnitude"]
    opened(qtbot, widget, chosen)  # a contrast the subject lacks (qsm) is skipped
    assert list(widget.canvas.rendered) == ["flair", "phase"]
    assert widget.canvas.strip_slices and widget.canvas._strip[0][1].pixels.shape \
        == widget.canvas.rendered["flair"].shape  # the strip shows the first panel's contrast


def test_keys_typed_in_a_dialog_or_a_text_field_stay_there(dock, qtbot, project_dir):
    from qtpy.QtWidgets import QDialog, QListWidget, QVBoxLayout

    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    dialog = QDialog(widget)  # e.g. a file dialog the viewer opened
    listing = QListWidget()
    QVBoxLayout(dialog).addWidget(listing)
    press(viewer, "P", target=listing)
    press(viewer, "N", target=widget.comment)
    dialog.deleteLater()
    assert current_ratings(project_dir).empty and widget.session.current.lesion == 1


def test_the_mouse_steps_slices_zooms_sets_windows_and_picks_strip_slices(dock, qtbot, project_dir):
    from qtpy.QtCore import QPoint, QPointF
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    viewer, widget = dock()
    opened(qtbot, widget, project_dir)
    canvas = widget.canvas
    qtbot.waitUntil(lambda: bool(canvas._panel_rects))
    phase = canvas._panel_rects["phase"].center()

    def wheel(steps, modifiers=Qt.KeyboardModifier.NoModifier):
        QApplication.sendEvent(canvas, QWheelEvent(
            phase, QPointF(canvas.mapToGlobal(phase.toPoint())), QPoint(), QPoint(0, 120 * steps),
            Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False))

    centre = canvas.slice_index
    wheel(2)
    assert canvas.slice_index == centre + 2
    fov = canvas.fov_mm
    wheel(1, Qt.KeyboardModifier.ControlModifier)
    assert widget.fov.value() < 3.0 and canvas.fov_mm <= fov
    low, high = canvas.window("phase")
    start = phase.toPoint()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(canvas, start + QPoint(60, 0))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=start + QPoint(60, 0))
    assert canvas.window("phase")[1] - canvas.window("phase")[0] > high - low  # wider
    qtbot.mouseDClick(canvas, Qt.MouseButton.LeftButton, pos=start)
    assert canvas.window("phase") == canvas.images.windows["phase"]
    at, rect = canvas._strip_rects[0]
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=rect.center().toPoint())
    assert canvas.slice_index == at
    assert current_ratings(project_dir).empty
