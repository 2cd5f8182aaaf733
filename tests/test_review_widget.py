"""The review widget in a real viewer: keys store the right rows, navigation, undo, resume,
blinding, key release and error handling (tiny synthetic subjects from conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deep_prl._napari import lesion_display
from napari_deep_prl._napari.keybindings import REVIEW_KEYS
from napari_deep_prl._napari.review_widget import ReviewWidget
from napari_deep_prl.project import Project

pytestmark = pytest.mark.gui


@pytest.fixture
def project_dir(tmp_path, manifest):
    root = tmp_path / "project"
    Project.init(root, manifest).close()
    return root


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    """A factory docking a ReviewWidget; checks no worker errored and none is left running."""
    docked = []

    def make(viewer=None):
        viewer = viewer or make_napari_viewer()
        widget = ReviewWidget(viewer)
        widget.errors = []
        widget.display.worker_started.connect(lambda w: w.errored.connect(widget.errors.append))
        viewer.window.add_dock_widget(widget, name="review")
        docked.append(widget)
        return viewer, widget

    yield make
    for widget in docked:
        qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
        assert widget.errors == []


def press(viewer, key):
    """A key press through napari's own key handler (the path a real key takes)."""
    assert viewer.window._qt_viewer._key_map_handler.press_key(key)


def shown_after(qtbot, widget, action):
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000) as blocker:
        action()
    return tuple(blocker.args)


def current_ratings(project_dir, rater="r1"):
    with Project.open(project_dir) as project:
        return project.store.current(rater=rater)


def test_every_key_calls_a_widget_method():
    methods = {a.method for a in REVIEW_KEYS}
    assert methods <= set(dir(ReviewWidget))
    keys = [k for a in REVIEW_KEYS for k in a.keys]
    assert len(keys) == len(set(keys))
    assert {"P", "N", "U", "1", "5", "Left", "Right", "L", "Z", "Control-Z", "J"} <= set(keys)


def test_keys_store_labels_and_move_on(dock, qtbot, project_dir):
    viewer, widget = dock()
    assert shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1")) == ("sub-01", 1)
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


def test_view_centres_on_the_lesion(dock, qtbot, project_dir):
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
    shown_after(qtbot, widget, lambda: widget.jump("sub-01:2"))
    view = widget.display.view
    assert viewer.canvas.grid.enabled
    from napari_deep_prl._napari.review_view import CURRENT, OTHER

    outline = view.layers["phase lesions"]
    assert outline.data is view.layers["mp2rage lesions"].data  # one array, no copy
    colours = outline.colormap
    assert colours.map(CURRENT)[3] > colours.map(OTHER)[3] > 0 == colours.map(0)[3]
    labels = view.images.labels
    assert set(np.unique(outline.data[labels == 2])) == {0, CURRENT}  # the lesion shown
    assert set(np.unique(outline.data[(labels > 0) & (labels != 2)])) == {0, OTHER}
    item = widget.session.current
    centre = view.images.world((item.x, item.y, item.z))
    assert viewer.dims.point[2] == pytest.approx(centre[2], abs=1.5)
    assert view.camera.center[-2:] == pytest.approx((centre[1], centre[0]), abs=0.5)
    low, high = view.layers["phase"].contrast_limits
    assert low == pytest.approx(-high)
    view.layers["phase"].contrast_limits = (-0.01, 0.01)  # the rater's own window is kept
    shown_after(qtbot, widget, lambda: widget.jump("sub-02:1"))
    assert view.layers["phase"].contrast_limits == pytest.approx((-0.01, 0.01))
    labels = view.images.labels
    assert set(np.unique(outline.data[labels == 1])) == {0, CURRENT}
    assert CURRENT not in outline.data[labels != 1]
    widget.cycle_axis()
    assert widget.axis.currentText() == "coronal" and tuple(viewer.dims.order)[0] == 1
    assert set(widget.panel.images) == {(c, p) for c in ("phase", "mp2rage")
                                        for p in ("axial", "coronal", "sagittal")}


def test_layers_are_built_before_a_project_opens_and_kept_across_projects(dock, qtbot, project_dir):
    viewer, widget = dock()
    view = widget.display.view
    qtbot.waitUntil(lambda: len(view.layers) == 4)  # built, empty, once the widget is up
    layers = dict(view.layers)

    def blank(layer):
        return layer.data.size <= 8 and not layer.data.any()

    assert all(blank(layer) for layer in layers.values())
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
    assert view.layers == layers and view.layers["phase"].data is view.images.phase
    widget.close_project()
    assert view.layers == layers and all(blank(layer) for layer in layers.values())
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r2"))
    assert view.layers == layers and view.layers["mp2rage"].data is view.images.mp2rage
    widget.close()
    assert not any(layer in viewer.layers for layer in layers.values())


def test_reopening_while_the_old_load_winds_down_still_shows_the_lesion(dock, qtbot, project_dir,
                                                                          tmp_path, manifest):
    """A project opened between a load's result and its end (same subject ids) loads afresh."""
    other = tmp_path / "other"
    Project.init(other, manifest).close()
    viewer, widget = dock()
    reopened = []

    def reopen_on_result(worker):
        if not reopened:
            reopened.append(worker)
            worker.returned.connect(lambda _: widget.open_project(other, "r2"))

    widget.display.worker_started.connect(reopen_on_result)
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000,
                          check_params_cb=lambda *_: widget.session.rater == "r2"):
        widget.open_project(project_dir, "r1")
    assert widget.project.root == other and widget.display.view.images.key == "sub-01"


def test_navigation_later_and_undo(dock, qtbot, project_dir):
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
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


def test_resume_after_reopening(dock, qtbot, project_dir):
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
    for _ in range(4):
        shown_after(qtbot, widget, lambda: press(viewer, "N"))
    viewer.window.remove_dock_widget(widget)
    _, again = dock(viewer)
    assert shown_after(qtbot, again, lambda: again.open_project(project_dir, "r1")) == ("sub-02", 2)
    qtbot.waitUntil(lambda: again.subject_bar.value() == 1 and again.overall_bar.value() == 4)


def test_keys_bound_only_while_the_widget_lives(dock, qtbot, project_dir):
    def mine(viewer):
        return {str(k) for k, f in viewer.keymap.items() if f.__name__.startswith("deep_prl_")}

    def user_key(viewer):
        pass

    from napari import Viewer

    viewer, widget = dock()
    assert "P" in mine(viewer)
    viewer.window.remove_dock_widget(widget)
    assert mine(viewer) == set()
    viewer.bind_key("L", user_key)
    _, widget = dock(viewer)
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
    layer = widget.display.view.layers["phase lesions"]
    assert any(f.__name__ == "deep_prl_label" for f in layer.keymap.values())
    widget.close()
    assert mine(viewer) == set() and not layer.keymap
    assert viewer.keymap[next(k for k in viewer.keymap if str(k) == "L")] is user_key
    assert isinstance(viewer, Viewer)


def test_blind_mode_hides_others_and_subject_ids(dock, qtbot, project_dir):
    with Project.open(project_dir) as project:
        project.store.add_rating("r2", "sub-01", 1, "prl", comment="clear rim")
        project.store.add_predictions("m1", _predictions(project))
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1", pseudonymise=True))
    texts = _all_text(widget) + " ".join(layer.name for layer in viewer.layers)
    assert "sub-0" not in texts and "r2" not in texts and "clear rim" not in texts
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
    shown_after(qtbot, widget, lambda: widget.open_project(root, "r1"))
    assert "r2=prl" in widget.others.text() and widget.blind.isHidden()


def test_unreadable_image_is_reported_and_nothing_lost(dock, qtbot, project_dir, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(lesion_display, "show_error", shown.append)
    (tmp_path / "sub-02" / "sub-02_phase.nii.gz").write_bytes(b"not a nifti")
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))
    shown_after(qtbot, widget, lambda: press(viewer, "P"))
    widget.jump("sub-02:1")
    qtbot.waitUntil(lambda: bool(shown) and not widget.display.busy, timeout=20000)
    assert len(widget.errors) >= 1
    widget.errors.clear()  # these workers were meant to fail
    assert len(shown) == 1 and "sub-02_phase" in shown[0] and "intact" in shown[0]
    assert len(current_ratings(project_dir)) == 1
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
    assert "0.9" not in _all_text(widget)  # blind: the order uses scores, the rater never sees them

def _predictions(project):
    lesions = project.lesions()
    return lesions.assign(probability=0.9)[["subject", "lesion", "probability"]]


def _all_text(widget) -> str:
    from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit

    parts = [w.text() for w in widget.findChildren((QLabel, QLineEdit))]
    for combo in widget.findChildren(QComboBox):
        parts += [combo.itemText(i) for i in range(combo.count())]
    parts.append(widget.project_path.text().replace(str(widget.project_path.text()), ""))
    return " ".join(parts)


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
    assert widget.project is not None
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
    if adjudicator:
        qtbot.waitUntil(lambda: widget.agreement.worker is None, timeout=20000)
    else:
        assert widget.session.name("sub-01").startswith("S-")


def test_cli_refuses_a_folder_that_is_not_a_project(tmp_path, capsys):
    from napari_deep_prl.cli import main

    assert main(["review", str(tmp_path), "--rater", "r1"]) == 2
    assert "not a napari-deep-prl project" in capsys.readouterr().err


def test_in_plane_edges_outline_each_lesion_in_the_viewed_plane():
    from napari_deep_prl._napari.review_view import OTHER, in_plane_edges

    labels = np.zeros((9, 9, 9), dtype=np.int32)
    labels[2:7, 2:7, 2:7] = 3
    edges = in_plane_edges(labels, axis=2)
    assert set(np.unique(edges)) == {0, OTHER}
    assert edges[4, 4, 4] == 0 and edges[2, 4, 4] == OTHER and edges[4, 2, 4] == OTHER
    assert edges[4, 4, 2] == 0  # the lesion's top face is no edge in an axial plane
    assert (edges[:, :, 4] > 0).sum() == 16  # a 5 x 5 square's ring


def test_adjudicator_role_swaps_in_the_adjudication_widget(dock, qtbot, project_dir):
    from napari_deep_prl._napari.adjudication_widget import AdjudicationWidget

    viewer, widget = dock()
    widget.project_path.setText(str(project_dir))
    widget.rater.setCurrentText("chief")
    widget.role.setCurrentText("adjudicator")
    widget.open_from_form()
    docked = list(viewer.window.dock_widgets.values())
    assert len(docked) == 1 and isinstance(docked[0], AdjudicationWidget)
    assert docked[0].adjudicator == "chief" and not widget.keys.bound
    qtbot.waitUntil(lambda: docked[0].agreement.worker is None and not docked[0].display.busy,
                    timeout=20000)


def test_a_database_failure_is_reported_and_the_lesion_stays(dock, qtbot, project_dir, monkeypatch):
    from napari_deep_prl._napari import review_widget
    from napari_deep_prl.errors import StoreError

    errors = []
    monkeypatch.setattr(review_widget, "show_error", errors.append)
    viewer, widget = dock()
    shown_after(qtbot, widget, lambda: widget.open_project(project_dir, "r1"))

    def locked(*args, **kwargs):
        raise StoreError("ratings.sqlite: database is locked")

    monkeypatch.setattr(widget.session.queue.store, "add_rating", locked)
    press(viewer, "P")
    assert len(errors) == 1 and "NOT saved" in errors[0] and "locked" in errors[0]
    assert widget.session.current.lesion == 1 and "Saved" not in widget.saved.text()
    monkeypatch.undo()
    assert shown_after(qtbot, widget, lambda: press(viewer, "P")) == ("sub-01", 2)
    assert len(current_ratings(project_dir)) == 1


def test_panels_stack_on_a_tall_canvas_and_follow_its_resizing(dock, qtbot):
    viewer, widget = dock()
    qtbot.waitUntil(lambda: len(widget.display.view.layers) == 4)
    viewer.canvas.size = (900, 300)  # height x width
    assert tuple(viewer.canvas.grid.shape) == (2, 1)
    viewer.canvas.size = (300, 900)
    assert tuple(viewer.canvas.grid.shape) == (1, 2)
    widget.close()
    viewer.canvas.size = (900, 300)  # no longer followed once the review's layers are gone
    assert tuple(viewer.canvas.grid.shape) == (1, 2)


@pytest.mark.parametrize("role", ["rater", "adjudicator"])
def test_docked_widgets_scroll_so_the_window_fits_a_1080p_screen(make_napari_viewer, role):
    from qtpy.QtWidgets import QScrollArea

    from napari_deep_prl._napari.adjudication_widget import AdjudicationWidget

    viewer = make_napari_viewer()
    widget = (ReviewWidget if role == "rater" else AdjudicationWidget)(viewer)
    viewer.window.add_dock_widget(widget)
    needed = viewer.window._qt_window.minimumSizeHint().height()
    content = widget.findChild(QScrollArea).widget().minimumSizeHint().height()
    assert needed < 900 < content  # taller than the screen, yet the window is not
    widget.close()
