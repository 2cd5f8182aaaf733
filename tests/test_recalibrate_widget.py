"""The model panel's *Recalibrate for this site…*: the project's labels recalibrate the model in
use, in a worker; the site model is saved where the user says and put in use."""

from __future__ import annotations

import pytest
from active_support import one_torch_thread, ranking_models, run_job, site_project  # noqa: F401
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt

from napari_deep_prl._napari.model import recalibrate_box
from napari_deep_prl._napari.model.model_widget import ModelPanel
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.scoring.recalibrate import MIN_LESIONS

pytestmark = pytest.mark.gui

@pytest.fixture
def panel(make_napari_viewer, qtbot):
    widget = ModelPanel(make_napari_viewer(show=True))
    qtbot.addWidget(widget)
    return widget


def choose_save_path(monkeypatch, path) -> None:
    """The save dialog answers ``path``."""
    monkeypatch.setattr(recalibrate_box.QFileDialog, "getSaveFileName", lambda *args: (str(path), "*.pt"))


def test_the_button_recalibrates_saves_and_uses_the_site_model(panel, tmp_path, qtbot, monkeypatch):
    project = site_project(tmp_path, 6)
    model, _ = ranking_models()
    model.save(tmp_path / "model.pt")
    panel.open_project(project.root)
    panel.load_model(tmp_path / "model.pt")
    box = panel.recalibrate
    box.source.setCurrentText("prl_mask")
    assert box.default_path() == project.models_dir / "model-site-project.pt"
    choose_save_path(monkeypatch, tmp_path / "site.pt")
    qtbot.mouseClick(box.button, Qt.MouseButton.LeftButton)
    assert box.job is not None and not box.button.isEnabled() and panel.cancel_button.isEnabled()
    run_job(qtbot, box.job)
    saved = load_models(tmp_path / "site.pt")
    record = saved[0].metadata["recalibration"]
    assert record["previous_id"] == model.id and record["site"] == "project"
    assert (record["lesions"], record["prls"]) == (24, 6) and "prl_mask labels" in record["labels_from"]
    assert [c.id for c in panel.state.checkpoints] == [c.id for c in saved] and saved[0].id != model.id
    assert panel.state.path == tmp_path / "site.pt"
    assert "recalibrated for project on 24 lesions" in panel.model_info.text()
    assert "recalibrated for project" in box.status.text() and box.button.isEnabled()
    project.close()


def test_too_few_labels_are_refused_with_how_many_are_needed(panel, tmp_path, qtbot, monkeypatch):
    project = site_project(tmp_path, 2)
    panel.open_project(project.root)
    panel.state.use_model(ranking_models()[0])
    panel.recalibrate.source.setCurrentText("prl_mask")
    choose_save_path(monkeypatch, tmp_path / "site.pt")
    before = len(notification_manager.records)
    qtbot.mouseClick(panel.recalibrate.button, Qt.MouseButton.LeftButton)
    run_job(qtbot, panel.recalibrate.job)
    assert not (tmp_path / "site.pt").exists()
    assert f"needs at least {MIN_LESIONS} labelled lesions" in panel.recalibrate.status.text()
    shown = [n for n in notification_manager.records[before:] if n.severity == NotificationSeverity.ERROR]
    assert len(shown) == 1 and "Label 3 more PRL(s) and 12 more lesion(s) of either kind" in shown[0].message
    project.close()
