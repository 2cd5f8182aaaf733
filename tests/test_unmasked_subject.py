"""A subject with images only (no lesion mask file): File > Open of its folder gives its images
and an empty lesion layer, and its lesions are scored by clicking them in the model panel docked
from the Plugins menu's contribution, with real mouse clicks on napari's canvas."""

from __future__ import annotations

import numpy as np
import pytest
from active_support import one_torch_thread, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from test_click import SMALL, dice, lesion_click
from test_click_widget import click_canvas_at, finished_jobs

from napari_deep_prl._napari import messages, reader
from napari_deep_prl._napari.model import click_box, model_widget
from napari_deep_prl._napari.model.click_box import OUTLINE_LAYER
from napari_deep_prl._napari.model.model_widget import ModelPanel
from napari_deep_prl._napari.model.scoring_table import COLUMNS
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.simulate import SubjectParams, simulate_subject
from napari_deep_prl.simulate.cohort import write_subject

pytestmark = pytest.mark.gui


@pytest.fixture
def images_only(tmp_path):
    """A simulated subject's folder holding its images (phase, MP2RAGE, FLAIR, magnitude) and
    no mask; the simulation (its truth) beside."""
    sim = simulate_subject(0, SubjectParams(**SMALL, n_lesions=40, prl_rate=0.3))
    paths = write_subject(sim, tmp_path)
    paths.mask.unlink()
    paths.prl_mask.unlink()
    return tmp_path / sim.subject.subject, sim


def test_a_subject_without_a_mask_opens_and_its_clicked_lesions_are_scored(make_napari_viewer, qtbot, tmp_path,
                                                                         monkeypatch, images_only):
    folder, sim = images_only
    name = sim.subject.subject
    said: list[str] = []
    monkeypatch.setattr(reader, "show_info", said.append)
    errors: list[str] = []
    monkeypatch.setattr(model_widget, "show_error", errors.append)
    monkeypatch.setattr(click_box, "show_error", errors.append)
    viewer = make_napari_viewer(show=True)
    viewer.open(str(folder), plugin="napari-deep-prl")
    names = [layer.name for layer in viewer.layers]
    assert sorted(names) == sorted(f"{name} {c}" for c in ("magnitude", "flair", "mp2rage", "phase", "lesions"))
    assert names[-1] == f"{name} lesions"
    lesions = viewer.layers[f"{name} lesions"]
    assert lesions.data.shape == sim.subject.shape and not np.any(lesions.data)
    assert np.allclose(lesions.affine.affine_matrix, sim.subject.affine)
    assert said == [messages.NO_MASK.format(subject=name)]

    _, panel = viewer.window.add_plugin_dock_widget("napari-deep-prl", "Deep-PRL model")
    assert isinstance(panel, ModelPanel)
    checkpoint = tiny_checkpoint()
    panel.load_model(checkpoint.save(tmp_path / "tiny.pt"))
    wait = finished_jobs(panel, monkeypatch)

    # Score subject on the empty lesion layer: said how to go on, nothing scored
    qtbot.mouseClick(panel.score_button, Qt.MouseButton.LeftButton)
    assert errors == [messages.NO_LESIONS.format(subject=name)]
    assert panel.state.job is None and panel.table.rowCount() == 0

    qtbot.mouseClick(panel.clicks.mode_button, Qt.MouseButton.LeftButton)
    truth = sim.truth
    lesion = int(truth.loc[~truth["confluent"] & (truth["volume_voxels"] > 40), "lesion"].iloc[0])
    click_canvas_at(viewer, qtbot, lesion_click(sim.subject, lesion))
    wait(qtbot, 1)
    assert errors == [messages.NO_LESIONS.format(subject=name)]
    outline = np.asarray(viewer.layers[OUTLINE_LAYER].data)
    assert dice(outline == 1, sim.subject.labels == lesion) >= 0.7
    assert panel.scores["subject"].tolist() == [name] and panel.table.rowCount() == 1
    probability = panel.scores["prl_probability"].iloc[0]
    assert 0.0 <= probability <= 1.0
    decided = "yes" if probability >= checkpoint.threshold else "no"  # as a project's lesions read
    assert panel.table.item(0, [h for _, h, _ in COLUMNS].index("PRL")).text() == decided


def test_a_folder_without_a_mask_or_a_structural_image_says_what_it_lacks(tmp_path, images_only):
    folder, _ = images_only
    for contrast in ("mp2rage", "flair", "magnitude"):
        next(folder.glob(f"*_{contrast}.nii.gz")).unlink()
    with pytest.raises(InputError, match="structural"):
        reader.read_path(str(folder))
