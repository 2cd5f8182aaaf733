"""Fine-tuning in the viewer: to completion, cancelled, automatic retraining and re-ranking."""

from __future__ import annotations

from dataclasses import replace

import pytest
from active_support import (  # noqa: F401
    TINY_TRAIN,
    one_torch_thread,
    run_job,
    tiny_checkpoint,
    tiny_project,
)

from napari_deep_prl import active
from napari_deep_prl._napari.model_widget import ModelPanel
from napari_deep_prl.checkpoint import load_checkpoint, load_models
from napari_deep_prl.progress import run_to_end

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, tmp_path, manifest, qtbot):
    """The panel on a project whose PRL masks are imported as rater 'prl_mask', a tiny model."""
    project = tiny_project(tmp_path / "project", manifest)
    run_to_end(project.import_prl_masks())
    parent = tiny_checkpoint()
    widget = ModelPanel(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_project(project.root)
    widget.use_model(parent)
    box = widget.finetune
    box.base_config = TINY_TRAIN
    box.source.setCurrentText("prl_mask")
    box.epochs.setValue(2)
    yield widget
    project.close()


def test_finetuning_runs_to_completion_and_saves_a_version(panel, qtbot):
    box, parent = panel.finetune, panel.checkpoint
    job = box.start()
    assert not box.start_button.isEnabled() and panel.cancel_button.isEnabled()
    run_job(qtbot, job, timeout=60_000)
    path = panel.project.models_dir / "deep-prl-v001.pt"
    assert box.result.path == path and not box.result.stopped
    saved = load_checkpoint(path)
    assert saved.metadata["parent"] == parent.id
    assert saved.metadata["labels"]["source"] == "prl_mask" and saved.metadata["labels"]["n"] == 9
    assert "val_f1" in saved.metadata["validation"]
    assert panel.checkpoint.id == saved.id and "deep-prl-v001.pt" in panel.model_info.text()
    assert [e["epoch"] for e in box.curve.epochs] == [0, 1, 2]
    assert box.start_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_a_loaded_ensemble_is_fine_tuned_member_by_member(panel, qtbot):
    parents = [tiny_checkpoint(seed) for seed in (0, 1)]
    panel.use_model(parents)
    box = panel.finetune
    run_job(qtbot, box.start(), timeout=60_000)
    saved = load_models(panel.project.models_dir / "deep-prl-v001.pt")
    assert [m.metadata["parent"] for m in saved] == [p.id for p in parents]
    assert [c.id for c in panel.checkpoints] == [m.id for m in saved]  # the panel scores the new pair
    assert "2 networks, out-of-fold F1" in box.status.text()
    assert [e["epoch"] for e in box.curve.epochs] == [0, 1, 2]  # the last network's curve


def test_from_scratch_the_networks_box_sets_the_ensemble_size(panel, qtbot):
    box = panel.finetune
    box.from_model.setChecked(False)
    box.networks.setValue(2)
    run_job(qtbot, box.start(), timeout=60_000)
    saved = load_models(panel.project.models_dir / "deep-prl-v001.pt")
    assert len(saved) == 2 and all("parent" not in m.metadata for m in saved)
    assert saved[0].patch_config.size == 28  # the package's default patches, not the loaded model's
    box.networks.setValue(1)
    run_job(qtbot, box.start(), timeout=60_000)
    assert len(load_models(panel.project.models_dir / "deep-prl-v002.pt")) == 1


def test_cancel_keeps_the_best_model_so_far(panel, qtbot):
    box = panel.finetune
    box.base_config = replace(TINY_TRAIN, samples_per_epoch=400)
    box.epochs.setValue(50)
    job = box.start()
    job.worker.yielded.connect(lambda event: event.stage == "batch" and panel.cancel())
    run_job(qtbot, job, timeout=60_000)
    assert box.result.stopped
    assert load_checkpoint(box.result.path).metadata["training"]["stopped"] is True
    assert "stopped early" in box.status.text()


def test_automatic_retraining_rescores_and_reranks_the_queue(panel, qtbot):
    box = panel.finetune
    box.auto_every.setValue(5)
    panel.method.setCurrentText("one pass")
    versions = []
    box.model_updated.connect(versions.append)
    job = box.maybe_retrain()
    run_job(qtbot, job, timeout=60_000)
    assert versions == [box.result.checkpoint.id]
    assert box.maybe_retrain() is None  # no new labels since
    project = panel.project
    scores = active.stored_scores(project, versions[0])
    assert len(scores) == 9
    queue = project.queue("ann", active.project_strategy(project, "likely_prl", versions[0]))
    item = queue.next()
    assert item.lesion_key == scores.sort_values("probability")["lesion_key"].iloc[-1]
    assert (item.strategy, item.model_version) == ("likely_prl", versions[0])
