"""The model panel in a real headless viewer: scoring, table, blind mode, quick scoring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from active_support import one_torch_thread, run_job, tiny_checkpoint, tiny_project  # noqa: F401
from qtpy.QtCore import Qt

from napari_deep_prl._napari.layers import subject_layers
from napari_deep_prl._napari.model import model_widget
from napari_deep_prl._napari.model.model_widget import (
    DECISION_NAMES,
    FROM_VIEWER,
    ModelPanel,
)
from napari_deep_prl._napari.model.scoring_table import POINTS_NAME
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.model.checkpoint import save_ensemble
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.scoring.project import model_version, project_scores
from napari_deep_prl.scoring.score import cohort_threshold

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(tmp_path, manifest):
    """A project (3 subjects × 3 lesions) and a tiny model saved next to it."""
    project = tiny_project(tmp_path / "project", manifest)
    checkpoint = tiny_checkpoint()
    path = checkpoint.save(tmp_path / "tiny.pt")
    yield project, checkpoint, path
    project.close()


@pytest.fixture
def panel(make_napari_viewer, setup, qtbot):
    project, _, path = setup
    widget = ModelPanel(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_project(project.root)
    widget.load_model(path)
    return widget


def test_scoring_a_subject_fills_layer_table_and_store(panel, setup, qtbot):
    project, checkpoint, _ = setup
    assert checkpoint.id in panel.model_info.text() and "calibrated" not in panel.model_info.text()
    panel.subject.setCurrentText("sub-02")
    run_job(qtbot, panel.score_subject())
    layer = panel.viewer.layers[POINTS_NAME]
    assert len(layer.data) == 3 and "prl_probability" in layer.features
    assert layer.face_color.shape == (3, 4)
    assert "sub-02 phase" in panel.viewer.layers
    assert panel.table.rowCount() == 3
    assert "PRL(s) of 3 lesions" in panel.count.text()
    stored = project.store.predictions(model_version([checkpoint]))
    assert sorted(stored["subject"].unique()) == ["sub-02"] and len(stored) == 3
    np.testing.assert_allclose(sorted(stored["probability"]),
                               sorted(layer.features["prl_probability"]))
    assert panel.score_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_table_click_moves_the_viewer_to_the_lesion(panel, qtbot):
    run_job(qtbot, panel.score_subject())
    table = panel.table
    table.sortItems(4)  # P(PRL), ascending
    for row in (2, 0):
        table.setCurrentCell(row, 0)
        lesion = int(table.item(row, 1).text())
        record = panel.scores.set_index("lesion").loc[lesion]
        expected = record[["x_mm", "y_mm", "z_mm"]].to_numpy(float)
        np.testing.assert_allclose(panel.viewer.dims.point, expected, atol=1.0)


def test_blind_mode_hides_every_score(panel, qtbot):
    run_job(qtbot, panel.score_subject())
    panel.set_blind(True)
    assert panel.blind.isChecked()
    layer = panel.viewer.layers[POINTS_NAME]
    assert "prl_probability" not in layer.features and len(layer.data) == 3
    hidden = {panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())
              if panel.table.isColumnHidden(c)}
    assert hidden == {"P(PRL)", "PRL", "SD", "BALD", "rim", "rim slices"}
    assert panel.count.isHidden() and panel.colour_bar.isHidden()
    panel.set_blind(False)
    assert "prl_probability" in panel.viewer.layers[POINTS_NAME].features


def test_scoring_the_project_stores_every_lesion_once(panel, setup, qtbot, monkeypatch):
    project, checkpoint, _ = setup
    run_job(qtbot, panel.score_project(), timeout=60_000)
    assert len(project.store.predictions(model_version([checkpoint]))) == 9
    # Record the second run's events where they are made: connecting to the worker's signal
    # after the job has started could miss the first ones.
    events, score_project = [], model_widget.score_project

    def recording(*args, **kwargs):
        scoring = score_project(*args, **kwargs)
        while True:
            try:
                event = next(scoring)
            except StopIteration as done:
                return done.value
            events.append(event)
            yield event

    monkeypatch.setattr(model_widget, "score_project", recording)
    run_job(qtbot, panel.score_project())
    assert events and all(e.metrics["cached"] == 1.0 for e in events)


def test_cancel_keeps_the_subjects_already_scored(panel, setup, qtbot):
    project, checkpoint, _ = setup
    job = panel.score_project()
    job.worker.yielded.connect(lambda event: job.cancel())
    run_job(qtbot, job)
    stored = project.store.predictions(model_version([checkpoint]))
    assert 1 <= stored["subject"].nunique() < 3


def test_quick_scoring_of_a_subject_without_a_project(make_napari_viewer, setup, write_subject,
                                                      qtbot):
    _, _, path = setup
    viewer = make_napari_viewer()
    subject = write_subject("sub-quick", seed=5).load()
    for data, kwargs, kind in subject_layers(subject):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ModelPanel(viewer)
    qtbot.addWidget(widget)
    widget.load_model(path)
    assert widget.subject.currentText() == FROM_VIEWER and not widget.score_all_button.isEnabled()
    run_job(qtbot, widget.score_subject())
    assert widget.table.rowCount() == 3
    assert set(widget.scores["subject"]) == {"sub-quick"}
    np.testing.assert_allclose(viewer.layers[POINTS_NAME].affine.affine_matrix, subject.affine)


def test_an_ensemble_file_is_described_and_scored_as_one_model(make_napari_viewer, setup, tmp_path, qtbot):
    project, _, _ = setup
    calibration = PlattFit(centre=0.0, scale=1.0, slope=1.2, intercept=-0.3)
    members = [replace(tiny_checkpoint(seed), calibration=calibration) for seed in (1, 2)]
    path = save_ensemble(members, tmp_path / "ensemble.pt")
    widget = ModelPanel(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.open_project(project.root)
    widget.load_model(path)
    assert "ensemble of 2 models" in widget.model_info.text()
    assert all(m.id in widget.model_info.text() for m in members)
    assert "(calibrated probability)" in widget.model_info.text()
    assert widget.state.checkpoint.id == members[0].id  # what fine-tuning starts from
    widget.subject.setCurrentText("sub-01")
    run_job(qtbot, widget.score_subject())
    stored = project.store.predictions(model_version(members))
    assert len(stored) == 3 and stored[["uncertainty_sd", "bald"]].notna().all().all()  # two networks
    assert widget.table.rowCount() == 3


def test_project_counts_follow_the_decision_and_hide_when_blind(make_napari_viewer, setup, tmp_path,
                                                                 qtbot, monkeypatch):
    project, _, _ = setup
    calibrated = replace(tiny_checkpoint(), threshold=0.99,
                         calibration=PlattFit(centre=0.0, scale=1.0, slope=1.0, intercept=0.0))
    widget = ModelPanel(make_napari_viewer())
    qtbot.addWidget(widget)
    assert not widget.decision.isEnabled()  # a project's decision needs a project
    widget.open_project(project.root)
    widget.state.use_model(calibrated)
    run_job(qtbot, widget.score_project())
    stored = project_scores(project, [calibrated], model_version([calibrated])).lesions
    assert widget.summary.text().startswith("project, 3 of 3 subjects scored: 0 PRL(s) of 9 lesions")
    assert not widget.scores["prl"].any()

    widget.decision.setCurrentText(next(k for k, v in DECISION_NAMES.items() if v == "expected_f1"))
    cut = cohort_threshold(stored)
    called = int((stored["prl_probability"] >= cut).sum())
    assert called >= 1 and f"{called} PRL(s) of 9 lesions" in widget.summary.text()
    assert f"cut {cut:.2f}" in widget.summary.text()
    shown = widget.scores
    assert shown["prl"].tolist() == (shown["prl_probability"] >= cut).tolist()
    assert f"{int(shown['prl'].sum())} PRL(s) of 3 lesions" in widget.count.text()
    layer_calls = widget.viewer.layers[POINTS_NAME].features["prl"].astype(bool).tolist()
    assert layer_calls == shown["prl"].tolist()

    widget.set_blind(True)
    assert widget.summary.isHidden()
    widget.set_blind(False)

    errors = []
    monkeypatch.setattr(model_widget, "show_error", errors.append)
    widget.state.use_model(tiny_checkpoint())  # raw probabilities: no cohort decision
    assert widget.summary.text() == ""
    run_job(qtbot, widget.score_project())
    assert errors and "calibrated" in errors[0]
    assert widget.decision_name == "validation" and "cut 0.50" in widget.summary.text()


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")  # the CLI's warning on tiny patches
def test_the_panel_and_the_command_line_give_each_lesion_the_same_scores(make_napari_viewer, setup, tmp_path,
                                                                        qtbot, capsys):
    """One model (two calibrated networks, each scored on its 8 flips), one project: `deep-prl
    score` on its manifest and the panel's Score project button give every lesion the same
    probability, call and uncertainties."""
    project, _, _ = setup
    members = []
    for seed, threshold in ((3, 0.45), (4, 0.55)):
        network = replace(tiny_checkpoint(seed, dropout=0.0), threshold=threshold,
                          calibration=PlattFit(centre=0.2 * seed, scale=1.5, slope=1.3, intercept=-0.4))
        network.metadata["views"] = [list(view) for view in ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))]
        members.append(network)
    path = save_ensemble(members, tmp_path / "ensemble.pt")
    out = tmp_path / "cli.tsv"
    assert main(["score", str(project.root / project.config.manifest), "--model", str(path), "-o", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    cli = pd.read_csv(out, sep="\t", na_values="n/a")

    widget = ModelPanel(make_napari_viewer(show=True))
    qtbot.addWidget(widget)
    widget.open_project(project.root)
    widget.load_model(path)
    qtbot.mouseClick(widget.score_all_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(widget.score_all_button.isEnabled, timeout=60_000)  # re-enabled when the job ends
    assert widget._version == model_version(widget.state.checkpoints)

    def same(panel: pd.DataFrame) -> None:
        both = cli.merge(panel, on=["subject", "lesion"], suffixes=("", "_panel"), validate="one_to_one")
        assert len(both) == len(panel) > 0
        for column in ("prl_probability", "uncertainty_sd", "bald"):
            assert both[column].notna().all()
            np.testing.assert_allclose(both[f"{column}_panel"], both[column], rtol=1e-5)  # the TSV's 6 digits
        assert both["prl_panel"].astype(int).tolist() == both["prl"].tolist()

    same(widget.scores)  # the subject the panel shows, as its table and layer show it
    assert set(widget.scores["subject"]) == {"sub-01"} and len(cli) == 9
    features = widget.viewer.layers[POINTS_NAME].features
    np.testing.assert_allclose(features["prl_probability"], widget.scores["prl_probability"])
    same(project_scores(project, widget.state.checkpoints, widget._version, widget.decision_name).lesions)  # all 9


def test_saliency_button_overlays_the_selected_lesions_patch_unless_blind(panel, qtbot):
    panel.subject.setCurrentText("sub-02")
    run_job(qtbot, panel.score_subject())
    assert panel.show_saliency() is None  # no lesion selected yet
    panel.table.setCurrentCell(1, 0)
    lesion = int(panel.table.item(1, 1).text())
    with qtbot.waitSignal(panel.viewer.layers.events.inserted, timeout=20000):
        qtbot.mouseClick(panel.saliency_button, Qt.MouseButton.LeftButton)
    headers = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())]
    rim = panel.table.item(1, headers.index("rim slices")).text()
    assert rim.isdigit()  # the rim evidence, measured for the subject shown
    layer = panel.viewer.layers[f"sub-02 lesion {lesion} saliency"]
    size = panel.state.checkpoints[0].patch_config.size
    assert layer.data.shape == (size,) * 3 and np.isfinite(layer.data).all()
    # the patch's centre voxel lands on the lesion's rounded centre of mass, in world mm
    record = panel.scores.set_index("lesion").loc[lesion]
    phase = panel.viewer.layers["sub-02 phase"]
    centre = np.rint(record[["x", "y", "z"]].to_numpy(float))
    expected = phase.affine.affine_matrix @ np.append(centre, 1.0)
    placed = layer.affine.affine_matrix @ np.append([size // 2] * 3, 1.0)
    np.testing.assert_allclose(placed, expected, atol=1e-6)
    panel.set_blind(True)  # model output: gone in blind mode, and not made again
    assert not any("saliency" in layer.metadata for layer in panel.viewer.layers)
    assert panel.show_saliency() is None
    panel.set_blind(False)


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_an_onnx_model_loaded_from_the_file_field_scores_the_project_and_nothing_else(
        make_napari_viewer, setup, manifest, tmp_path, qtbot, monkeypatch):
    from napari_deep_prl._napari.model import finetune_widget, recalibrate_box
    from napari_deep_prl.data.cohort import read_manifest
    from napari_deep_prl.model.export import export_onnx
    from napari_deep_prl.scoring.score import score_cohort

    project, checkpoint, _ = setup
    onnx = export_onnx([checkpoint], tmp_path / "tiny.onnx").graph
    panel = ModelPanel(make_napari_viewer(show=True))
    qtbot.addWidget(panel)
    panel.open_project(project.root)
    offered = []

    def answer(parent, caption, folder, filters):
        offered.append(filters)
        return str(onnx), filters

    monkeypatch.setattr(model_widget.QFileDialog, "getOpenFileName", answer)
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert "*.onnx" in offered[0] and "ONNX export" in panel.model_info.text()
    assert checkpoint.id in panel.model_info.text()
    qtbot.mouseClick(panel.score_all_button, Qt.MouseButton.LeftButton)
    run_job(qtbot, panel.state.job, timeout=60_000)
    stored = project.store.predictions(model_version([checkpoint])).sort_values(["subject", "lesion"])
    expected = run_to_end(score_cohort(read_manifest(manifest), [checkpoint], device="cpu",
                                       precision="float32")).lesions
    np.testing.assert_allclose(stored["probability"], expected["prl_probability"], atol=1e-4)
    assert panel.table.rowCount() == 3 and "PRL(s) of 3 lesions" in panel.count.text()
    # what needs the PyTorch checkpoint says so
    errors = []
    for module in (model_widget, recalibrate_box, finetune_widget):
        monkeypatch.setattr(module, "show_error", errors.append)
    panel.table.setCurrentCell(0, 0)
    qtbot.mouseClick(panel.saliency_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.recalibrate.button, Qt.MouseButton.LeftButton)
    panel.finetune.from_model.setChecked(True)
    qtbot.mouseClick(panel.finetune.start_button, Qt.MouseButton.LeftButton)
    assert len(errors) == 3 and not panel.state.busy
    for error, what in zip(errors, ("saliency maps", "recalibration", "fine-tuning from the model")):
        assert "tiny.onnx: an exported ONNX model, which only scores lesions" in error
        assert f"For {what}, use the PyTorch checkpoint (.pt) it was exported from" in error
