"""The three widgets docked together in one real, shown viewer, as a lab uses them: the review
owns what its panels show, its keys work whatever layer is active, the model panel never takes
the active layer, a blind session hides every score and label, and a model-ordered review ranks
again when the model panel stores new scores (scoring, or fine-tuning that re-scores)."""

from __future__ import annotations

import numpy as np
import pytest
from active_support import (  # noqa: F401
    TINY_TRAIN,
    one_torch_thread,
    ranking_models,
    rim_manifest,
    run_job,
    tiny_checkpoint,
    tiny_project,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget
from review_support import all_text, current_ratings, press, shown_after

from napari_deep_prl._napari.messages import TOOLTIPS
from napari_deep_prl._napari.model.model_widget import ModelPanel
from napari_deep_prl._napari.model.scoring_table import POINTS_NAME
from napari_deep_prl._napari.review.adjudication_widget import AdjudicationWidget
from napari_deep_prl._napari.review.review_widget import ReviewWidget
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.ratings.project import Project

pytestmark = pytest.mark.gui


@pytest.fixture
def lab(make_napari_viewer, tmp_path, manifest, qtbot):
    """A shown viewer with the review, the model panel and the adjudication widget docked, a
    project of 3 subjects × 3 lesions and a tiny model file."""
    tiny_project(tmp_path / "project", manifest).close()
    model_path = tiny_checkpoint().save(tmp_path / "tiny.pt")
    viewer = make_napari_viewer(show=True)
    review, panel, adjudication = ReviewWidget(viewer), ModelPanel(viewer), AdjudicationWidget(viewer)
    errors = []
    for widget in (review, adjudication):
        widget.display.worker_started.connect(lambda w: w.errored.connect(errors.append))
    for widget, name in ((review, "review"), (panel, "model"), (adjudication, "adjudication")):
        viewer.window.add_dock_widget(widget, name=name, area="right")
    yield viewer, review, panel, adjudication, tmp_path / "project", model_path
    for widget in (review, adjudication):
        qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)  # noqa: B023 (called at once, inside the loop)
    qtbot.waitUntil(lambda: adjudication.agreement.worker is None, timeout=20000)
    assert errors == []


def score_project(qtbot, panel, root, model_path):
    panel.open_project(root)
    panel.load_model(model_path)
    return run_job(qtbot, panel.score_project())


def test_docking_changes_nothing_in_the_viewer_and_closing_restores_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    user = viewer.add_image(np.random.default_rng(0).random((5, 8, 8)), name="user image")
    before = (list(viewer.layers), viewer.grid.enabled, tuple(viewer.dims.order))
    widgets = [ReviewWidget(viewer), AdjudicationWidget(viewer)]
    for widget in widgets:
        viewer.window.add_dock_widget(widget)
    qtbot.wait(100)
    assert (list(viewer.layers), viewer.grid.enabled, tuple(viewer.dims.order)) == before
    for widget in widgets:
        viewer.window.remove_dock_widget(widget)
    assert (list(viewer.layers), viewer.grid.enabled, tuple(viewer.dims.order)) == before
    assert viewer.layers.selection.active is user


def test_every_tooltip_is_shown_by_a_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets = [ReviewWidget(viewer), ModelPanel(viewer), AdjudicationWidget(viewer)]
    for widget in widgets:
        viewer.window.add_dock_widget(widget)
    shown = {child.toolTip() for widget in widgets for child in widget.findChildren(QWidget)}
    assert set(TOOLTIPS.values()) <= shown


def test_scoring_and_other_layers_leave_the_review_panels_alone(lab, qtbot):
    viewer, review, panel, _, root, model_path = lab
    shown_after(qtbot, review, lambda: review.open_project(root, "r1"))
    before = {name: pixels.copy() for name, pixels in review.canvas.rendered.items()}
    assert list(before) == ["phase", "mp2rage"]
    user = viewer.add_labels(np.zeros((24, 32, 32), np.uint8), name="my edits")
    viewer.layers.selection.active = user
    score_project(qtbot, panel, root, model_path)
    viewer.add_image(np.ones((24, 32, 32)), name="sample data")
    viewer.layers.selection.active = user
    qtbot.wait(100)
    after = review.canvas.rendered
    assert list(after) == list(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert review.canvas.images.key == "sub-01" and not viewer.grid.enabled
    assert viewer.layers.selection.active is user  # scoring never took the active layer
    assert shown_after(qtbot, review, lambda: press(viewer, "N")) == ("sub-01", 2)
    assert current_ratings(root)["lesion"].tolist() == [1]


def test_review_keys_work_whatever_layer_is_active(lab, qtbot):
    viewer, review, _, _, root, _ = lab
    shown_after(qtbot, review, lambda: review.open_project(root, "r1"))
    points = viewer.add_points(np.zeros((1, 3)), name="user points")
    viewer.layers.selection.active = points
    shown_after(qtbot, review, lambda: press(viewer, "P"))
    assert points.mode == "pan_zoom" and len(points.data) == 1
    labels = viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="user labels")
    viewer.layers.selection.active = labels
    press(viewer, "1")
    shown_after(qtbot, review, lambda: press(viewer, "N"))
    assert labels.mode == "pan_zoom" and not labels.data.any()
    rows = current_ratings(root)
    assert list(zip(rows["lesion"], rows["label"])) == [(1, "prl"), (2, "not_prl")]
    assert rows["confidence"].iloc[1] == 1


def test_a_blind_session_hides_scores_and_labels_in_every_widget(lab, qtbot):
    viewer, review, panel, adjudication, root, model_path = lab
    with Project.open(root) as project:
        project.store.add_rating("r2", "sub-01", 1, "prl")
        project.store.add_rating("r3", "sub-01", 1, "not_prl")
    with qtbot.waitSignal(adjudication.lesion_shown, timeout=20000):
        adjudication.open_project(root, "chief")
    score_project(qtbot, panel, root, model_path)
    assert "prl_probability" in viewer.layers[POINTS_NAME].features
    assert "P(PRL)" in [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())
                        if not panel.table.isColumnHidden(c)]
    assert adjudication.ratings.isVisibleTo(adjudication)
    assert adjudication.evidence.isVisibleTo(adjudication) and "of the edge" in adjudication.evidence.text()

    shown_after(qtbot, review, lambda: review.open_project(root, "r1"))
    assert "prl_probability" not in viewer.layers[POINTS_NAME].features
    hidden = {panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())
              if panel.table.isColumnHidden(c)}
    assert hidden == {"P(PRL)", "PRL", "SD", "BALD", "rim", "rim slices"}
    assert not panel.count.isVisibleTo(panel) and not panel.blind.isEnabled()
    assert not adjudication.ratings.isVisibleTo(adjudication)
    assert not adjudication.stats.isVisibleTo(adjudication)
    assert "r2" not in all_text(adjudication)
    assert "of the edge" not in all_text(adjudication) + all_text(review)

    review.close_project()
    assert "prl_probability" in viewer.layers[POINTS_NAME].features
    assert panel.count.isVisibleTo(panel) and adjudication.ratings.isVisibleTo(adjudication)
    assert adjudication.evidence.isVisibleTo(adjudication)


def test_a_model_order_ranks_again_when_the_model_panel_stores_new_scores(lab, qtbot):
    viewer, review, panel, _, root, model_path = lab
    with Project.open(root) as project:
        lesions = project.lesions()
        first = lesions.assign(probability=np.linspace(0.9, 0.1, len(lesions)))
        project.store.add_predictions("old-model", first[["subject", "lesion", "probability"]])
    review.project_path.setText(str(root))
    review.rater.setCurrentText("r1")
    review.order.setCurrentText("most likely PRL first (model)")
    assert shown_after(qtbot, review, review.open_from_form) == ("sub-01", 1)
    assert review.session.queue.strategy.model_version == "old-model"
    score_project(qtbot, panel, root, model_path)
    version = panel._version
    assert review.session.queue.strategy.model_version == version != "old-model"
    assert "ranked again" in review.saved.text()
    assert review.session.current.lesion_key == 1  # the lesion on screen stays
    with Project.open(root) as project:
        stored = project.store.predictions(version).set_index("lesion_key")["probability"]
    shown_after(qtbot, review, lambda: press(viewer, "N"))
    assert stored[review.session.current.lesion_key] == stored.drop(1).max()
    row = current_ratings(root).iloc[0]
    assert row["model_version"] == "old-model"  # the first label was served by the old order


def test_fine_tuning_in_the_panel_ranks_an_open_model_ordered_review_again(make_napari_viewer, tmp_path, qtbot):
    """The auto option trains and re-scores: the review's next lesion follows the new model. Training
    alone stores no scores: the review keeps its order and does not claim to have ranked again."""
    with tiny_project(tmp_path / "project", rim_manifest(tmp_path)) as project:
        run_to_end(project.import_prl_masks())
        lesions = project.lesions()
        old = lesions.assign(probability=np.linspace(0.9, 0.1, len(lesions)))
        project.store.add_predictions("old-model", old[["subject", "lesion", "probability"]])
        root = project.root
    viewer = make_napari_viewer(show=True)
    review, panel = ReviewWidget(viewer), ModelPanel(viewer)
    review.display.worker_started.connect(lambda w: w.errored.connect(pytest.fail))
    for widget, name in ((review, "review"), (panel, "model")):
        viewer.window.add_dock_widget(widget, name=name, area="right")
    panel.open_project(root)
    panel.state.use_model(ranking_models()[1])  # every PRL last: fine-tuning cannot do worse
    box = panel.finetune
    box.base_config = TINY_TRAIN
    box.source.setCurrentText("prl_mask")
    box.epochs.setValue(2)
    review.project_path.setText(str(root))
    review.rater.setCurrentText("r1")
    review.order.setCurrentText("most likely PRL first (model)")
    assert shown_after(qtbot, review, review.open_from_form) == ("sub-01", 1)

    box.auto_every.setValue(5)  # the 9 masks' labels are new to a model that learnt from none
    box.timer.setInterval(50)  # the auto option's check, every 15 s in use
    qtbot.mouseClick(box.auto, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.result is not None and not panel.state.busy, timeout=60_000)
    box.auto.click()
    version = box.result.scored
    assert version is not None and panel.state.checkpoint.id == box.result.checkpoint.id
    assert review.session.queue.strategy.model_version == version
    assert "ranked again" in review.saved.text() and review.session.current.lesion_key == 1
    with Project.open(root) as project:
        stored = project.store.predictions(version).set_index("lesion_key")["probability"]
    shown_after(qtbot, review, lambda: press(viewer, "N"))
    assert stored[review.session.current.lesion_key] == stored.drop(1).max()

    box.from_model.setChecked(False)  # from scratch: nothing to compare with, so it is used
    box.networks.setValue(1)
    qtbot.mouseClick(box.start_button, Qt.MouseButton.LeftButton)
    run_job(qtbot, box.job, timeout=60_000)
    assert panel.state.path.name == "deep-prl-v002.pt" and box.result.scored is None
    assert review.session.queue.strategy.model_version == version
    assert "ranked again" not in review.saved.text()
    qtbot.waitUntil(lambda: not review.display.busy, timeout=20_000)
