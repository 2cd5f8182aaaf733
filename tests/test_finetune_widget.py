"""Fine-tuning in the viewer: to completion, cancelled, automatic retraining and re-ranking;
labels it cannot learn from, and a new model that validates worse than the panel's."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from active_support import (  # noqa: F401
    TINY_TRAIN,
    add_contrarian,
    one_torch_thread,
    ranking_models,
    rim_manifest,
    run_job,
    tiny_project,
    worst_pair,
)
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt

from napari_deep_prl._napari.jobs import Job
from napari_deep_prl._napari.model.finetune_widget import FinetuneBox
from napari_deep_prl._napari.model.model_state import ModelState
from napari_deep_prl._napari.model.model_widget import ModelPanel
from napari_deep_prl.active import strategies as active
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.model.checkpoint import load_checkpoint, load_models
from napari_deep_prl.scoring.project import model_version, stored_scores

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, tmp_path, qtbot):
    """The panel on a project whose PRL masks are imported as rater 'prl_mask', with a tiny model
    that ranks every PRL last (so whatever fine-tuning makes of it validates at least as well)."""
    project = tiny_project(tmp_path / "project", rim_manifest(tmp_path))
    run_to_end(project.import_prl_masks())
    parent = ranking_models()[1]
    widget = ModelPanel(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_project(project.root)
    widget.state.use_model(parent)
    box = widget.finetune
    box.base_config = TINY_TRAIN
    box.source.setCurrentText("prl_mask")
    box.epochs.setValue(2)
    yield widget
    project.close()


def test_finetuning_runs_to_completion_and_saves_a_version(panel, qtbot):
    box, parent = panel.finetune, panel.state.checkpoint
    job = box.start()
    assert not box.start_button.isEnabled() and panel.cancel_button.isEnabled()
    run_job(qtbot, job, timeout=60_000)
    path = panel.state.project.models_dir / "deep-prl-v001.pt"
    assert box.result.path == path and not box.result.stopped
    saved = load_checkpoint(path)
    assert saved.metadata["parent"] == parent.id
    assert saved.metadata["labels"]["source"] == "prl_mask" and saved.metadata["labels"]["n"] == 9
    assert "val_f1" in saved.metadata["validation"]
    assert panel.state.checkpoint.id == saved.id and "deep-prl-v001.pt" in panel.model_info.text()
    assert [e["epoch"] for e in box.curve.epochs] == [0, 1, 2]
    assert box.start_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_the_box_works_from_the_model_state_alone(tmp_path, qtbot):
    """No panel: the box lists the project's labels, trains from the model in use and puts the new
    model in use, through the state its listeners share."""
    state = ModelState()
    box = FinetuneBox(state)
    qtbot.addWidget(box)
    assert not box.start_button.isEnabled()  # no project yet
    project = tiny_project(tmp_path / "project", rim_manifest(tmp_path))
    run_to_end(project.import_prl_masks())
    state.open_project(project)
    assert "prl_mask" in [box.source.itemText(i) for i in range(box.source.count())]
    state.use_model(ranking_models()[1])
    box.base_config = TINY_TRAIN
    box.source.setCurrentText("prl_mask")
    models = []
    state.model_changed.connect(lambda: models.append(state.path))
    job = box.start()
    assert state.busy and not box.start_button.isEnabled() and box.cancel_button.isEnabled()
    run_job(qtbot, job, timeout=60_000)
    assert models == [project.models_dir / "deep-prl-v001.pt"]
    assert state.checkpoint.id == box.result.checkpoint.id
    assert not state.busy and box.start_button.isEnabled() and not box.cancel_button.isEnabled()
    project.close()


def test_a_loaded_ensemble_is_fine_tuned_member_by_member(panel, qtbot):
    parents = worst_pair()
    panel.state.use_model(parents)
    box = panel.finetune
    run_job(qtbot, box.start(), timeout=60_000)
    saved = load_models(panel.state.project.models_dir / "deep-prl-v001.pt")
    assert [m.metadata["parent"] for m in saved] == [p.id for p in parents]
    assert [c.id for c in panel.state.checkpoints] == [m.id for m in saved]  # the panel scores the new pair
    assert "2 networks, out-of-fold F1" in box.status.text()
    assert [e["epoch"] for e in box.curve.epochs] == [0, 1, 2]  # the last network's curve


def test_from_scratch_the_networks_box_sets_the_ensemble_size(panel, qtbot):
    box = panel.finetune
    box.from_model.setChecked(False)
    box.networks.setValue(2)
    run_job(qtbot, box.start(), timeout=60_000)
    saved = load_models(panel.state.project.models_dir / "deep-prl-v001.pt")
    assert len(saved) == 2 and all("parent" not in m.metadata for m in saved)
    assert saved[0].patch_config.size == 28  # the package's default patches, not the loaded model's
    box.networks.setValue(1)
    run_job(qtbot, box.start(), timeout=60_000)
    assert len(load_models(panel.state.project.models_dir / "deep-prl-v002.pt")) == 1


def test_cancel_keeps_the_best_model_so_far(panel, qtbot):
    box = panel.finetune
    box.base_config = replace(TINY_TRAIN, samples_per_epoch=400)
    box.epochs.setValue(50)
    job = box.start()
    job.worker.yielded.connect(lambda event: event.stage == "batch" and panel.cancel_button.click())
    run_job(qtbot, job, timeout=60_000)
    assert box.result.stopped
    assert load_checkpoint(box.result.path).metadata["training"]["stopped"] is True
    assert "stopped early" in box.status.text()


def test_automatic_retraining_rescores_and_reranks_the_queue(panel, qtbot):
    box = panel.finetune
    box.auto_every.setValue(5)
    versions = []
    panel.state.scores_stored.connect(versions.append)
    scoring = panel.score_project()
    assert box.maybe_retrain() is None  # one job at a time: it waits for the scoring
    with pytest.raises(RuntimeError, match="cannot start while 'Scoring the project' runs"):
        panel.state.run(Job(lambda stop: iter(()), description="Another"))
    run_job(qtbot, scoring, timeout=60_000)
    assert versions == [model_version(panel.state.checkpoints)]  # the panel's own scores
    versions.clear()
    job = box.maybe_retrain()
    run_job(qtbot, job, timeout=60_000)
    assert versions == [model_version(box.result.checkpoints)]
    assert box.maybe_retrain() is None  # no new labels since
    project = panel.state.project
    scores = stored_scores(project, versions[0])
    assert len(scores) == 9
    queue = project.queue("ann", active.project_strategy(project, "likely_prl", versions[0]))
    item = queue.next()
    assert item.lesion_key == scores.sort_values("prl_probability")["lesion_key"].iloc[-1]
    assert (item.strategy, item.model_version) == ("likely_prl", versions[0])


def test_one_class_labels_are_refused_at_once_with_one_message(panel, capfd):
    project, box = panel.state.project, panel.finetune
    lesions = project.lesions()
    project.import_ratings(pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                                         "rater": "ann", "label": "not_prl"}))
    box.list_sources()  # lists the new rater
    box.source.setCurrentText("ann")
    before = len(notification_manager.records)
    assert box.start() is None  # no worker: nothing to wait for, nothing loaded
    shown = [n for n in notification_manager.records[before:] if n.severity == NotificationSeverity.ERROR]
    assert len(shown) == 1 and "0 PRL and 9 non-PRL ann labels" in shown[0].message
    assert "label 2 more PRLs" in shown[0].message
    assert box.status.text().startswith("Cannot fine-tune: ") and "label 2 more PRLs" in box.status.text()
    assert box.start_button.isEnabled() and not panel.cancel_button.isEnabled()
    box.auto_every.setValue(1)  # the auto option says it in the status line, not every 15 s in a message
    assert box.maybe_retrain() is None and len(notification_manager.records) == before + 1
    assert box.status.text().startswith("Automatic retraining waits for more labels: ")
    assert not list(project.models_dir.glob("*.pt"))
    assert "Traceback" not in capfd.readouterr().err


def test_a_worse_model_waits_for_the_users_choice(panel, qtbot):
    best = ranking_models()[0]  # ranks every PRL first: fine-tuning can only lose
    panel.state.use_model(best)
    box = panel.finetune
    add_contrarian(panel.state.project)  # whose labels teach the opposite of what validation shows
    box.list_sources()
    box.source.setCurrentText("contrarian")
    box.base_config = replace(TINY_TRAIN, keep_start=False)
    box.epochs.setValue(10)
    box.lr.setValue(1e-2)
    versions = []
    panel.state.scores_stored.connect(versions.append)

    run_job(qtbot, box.start(), timeout=60_000)
    first = box.result
    assert first.worse and first.path.exists()
    assert panel.state.checkpoint.id == best.id  # not switched
    assert not box.choice.isHidden() and box.use_new_button.isEnabled()
    text = box.status.text()
    assert "validates worse" in text and "starting model F1 1.000, ROC AUC 1.000" in text
    assert f"new model F1 {first.comparison.new['val_f1']:.3f}" in text
    qtbot.mouseClick(box.keep_button, Qt.MouseButton.LeftButton)
    assert panel.state.checkpoint.id == best.id and box.choice.isHidden()
    assert f"stays saved as {first.path}" in box.status.text() and versions == []

    run_job(qtbot, box.start(), timeout=60_000)
    second = box.result
    assert second.path.name == "deep-prl-v002.pt" and panel.state.checkpoint.id == best.id
    qtbot.mouseClick(box.use_new_button, Qt.MouseButton.LeftButton)
    assert panel.state.checkpoint.id == second.checkpoint.id and "deep-prl-v002.pt" in panel.model_info.text()
    assert box.choice.isHidden() and versions == []  # nothing scored by it: a review keeps its order
