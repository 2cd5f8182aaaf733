"""The model panel's "Score a clicked lesion" mode, driven with real mouse clicks on napari's canvas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from active_support import one_torch_thread, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from review_support import canvas_of
from test_click import SMALL, dice, lesion_click, unmasked

from napari_deep_prl._napari.layers import subject_layers
from napari_deep_prl._napari.model import click_box
from napari_deep_prl._napari.model.click_box import OUTLINE_LAYER
from napari_deep_prl._napari.model.model_widget import ModelPanel
from napari_deep_prl._napari.model.scoring_table import go_to
from napari_deep_prl.scoring.score import score_subject
from napari_deep_prl.simulate import SubjectParams, simulate_subject

pytestmark = pytest.mark.gui


def click_canvas_at(viewer, qtbot, world: np.ndarray) -> None:
    """Bring ``world`` (mm) to the middle of the canvas and click there with the left button."""
    go_to(viewer, world)
    qtbot.wait(50)
    canvas = canvas_of(viewer)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.rect().center())


def finished_jobs(panel, monkeypatch):
    """Each job the panel starts, its errors recorded from its start (a job may end before a
    test could connect to it)."""
    started, failures = [], []
    run = panel.state.run

    def recording(job):
        job.worker.errored.connect(failures.append)
        started.append(job)
        return run(job)

    monkeypatch.setattr(panel.state, "run", recording)

    def wait(qtbot, count: int) -> None:
        qtbot.waitUntil(lambda: len(started) == count and panel.state.job is None, timeout=30_000)
        assert failures == []

    return wait


def test_a_click_on_a_lesion_outlines_and_scores_it(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    sim = simulate_subject(0, SubjectParams(**SMALL, n_lesions=40, prl_rate=0.3))
    subject = sim.subject
    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in subject_layers(unmasked(subject)):
        if kind == "image":  # a subject without a lesion mask: its images only
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    checkpoint = tiny_checkpoint()
    panel = ModelPanel(viewer)
    qtbot.addWidget(panel)
    panel.load_model(checkpoint.save(tmp_path / "tiny.pt"))
    errors: list[str] = []
    monkeypatch.setattr(click_box, "show_error", errors.append)
    wait = finished_jobs(panel, monkeypatch)
    qtbot.mouseClick(panel.clicks.mode_button, Qt.MouseButton.LeftButton)
    assert panel.clicks.mode_button.isChecked()

    lesion = int(sim.truth.loc[~sim.truth["confluent"] & (sim.truth["volume_voxels"] > 40), "lesion"].iloc[0])
    click_canvas_at(viewer, qtbot, lesion_click(subject, lesion))
    assert errors == []
    wait(qtbot, 1)
    outline = np.asarray(viewer.layers[OUTLINE_LAYER].data)
    assert set(np.unique(outline)) == {0, 1}
    assert dice(outline == 1, subject.labels == lesion) >= 0.7
    assert panel.scores["lesion"].tolist() == [1] and panel.table.rowCount() == 1
    blank = dataclasses.replace(unmasked(subject), mask=outline.astype(np.int32))
    expected = score_subject(blank, [checkpoint])
    np.testing.assert_allclose(panel.scores["prl_probability"], expected["prl_probability"], atol=1e-5)

    # the rater erases part of the outline and scores what is left
    trimmed = outline.copy()
    trimmed[tuple(np.argwhere(outline == 1)[:5].T)] = 0
    viewer.layers[OUTLINE_LAYER].data = trimmed
    qtbot.mouseClick(panel.clicks.score_button, Qt.MouseButton.LeftButton)
    wait(qtbot, 2)
    assert panel.scores["volume_mm3"].iloc[0] == pytest.approx(expected["volume_mm3"].iloc[0]
                                                               - 5 * np.prod(subject.zooms))

    # a click in the air: said, nothing outlined or scored
    click_canvas_at(viewer, qtbot, subject.affine[:3, 3] + 2.0)
    assert len(errors) == 1 and "outside the brain" in errors[0]
    wait(qtbot, 2)
    assert np.array_equal(viewer.layers[OUTLINE_LAYER].data, trimmed)

    # mode off: a click does nothing of ours
    qtbot.mouseClick(panel.clicks.mode_button, Qt.MouseButton.LeftButton)
    click_canvas_at(viewer, qtbot, lesion_click(subject, lesion))
    wait(qtbot, 2)
    assert len(errors) == 1
