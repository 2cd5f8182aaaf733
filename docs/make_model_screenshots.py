"""Regenerate the screenshots of the scoring and active-learning guides.

Run under a display: ``xvfb-run -a -s "-screen 0 1600x1000x24" python
docs/make_model_screenshots.py --model MODEL.pt`` (a default-preset checkpoint, e.g. from
``deep-prl train``). It simulates a 3-subject project with the PRL masks imported as rater
``prl_mask``, scores the project in the model panel, its lesions decided together
(``docs/images/model_panel.png``; the model must be calibrated, as default training makes it), then
fine-tunes for two short epochs (``docs/images/finetune_box.png``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"


def settle(app, seconds: float = 1.0) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, job) -> None:
    """Let the viewer run until the job's worker has finished, then settle."""
    done: list[bool] = []
    job.worker.finished.connect(lambda: done.append(True))
    while not done:
        settle(app, 0.05)
    settle(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--no-finetune", action="store_true", help="only the scoring screenshot")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_deep_prl._napari.model.model_widget import ModelPanel
    from napari_deep_prl.base.progress import run_to_end
    from napari_deep_prl.ratings.project import Project
    from napari_deep_prl.scoring.project import model_version, project_scores
    from napari_deep_prl.simulate import simulate_cohort

    work = Path(tempfile.mkdtemp())
    manifest = run_to_end(simulate_cohort(work / "cohort", 3, seed=8, prl_fraction=0.2,
                                          voxel_size=(1.5, 1.5, 1.5), n_lesions=30))
    with Project.init(work / "project", manifest) as project:
        run_to_end(project.import_prl_masks())

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    panel = ModelPanel(viewer)
    viewer.window.add_dock_widget(panel, area="right", name="Deep-PRL model")
    app = QApplication.instance()
    panel.open_project(work / "project")
    panel.load_model(args.model)
    panel.decision.setCurrentIndex(1)  # the project's lesions together
    wait(app, panel.score_project())
    version = model_version(panel.state.checkpoints)
    counts = project_scores(panel.state.project, panel.state.checkpoints, version, "expected_f1").subjects
    panel.subject.setCurrentText(counts.sort_values("prl_count")["subject"].iloc[-1])
    wait(app, panel.score_subject())  # stored already: shows the subject with the most PRLs
    panel.table.sortItems(4, Qt.SortOrder.DescendingOrder)  # most likely PRL first
    panel.table.setCurrentCell(0, 0)
    settle(app)
    IMAGES.mkdir(exist_ok=True)
    viewer.screenshot(str(IMAGES / "model_panel.png"), canvas_only=False, flash=False)

    if not args.no_finetune:
        finetune_screenshot(app, panel)
    viewer.close()
    print(f"saved screenshots in {IMAGES}")


def finetune_screenshot(app, panel) -> None:
    """Two short fine-tuning epochs on the prl_mask labels, then the box alone."""
    box = panel.finetune
    box.base_config = replace(box.base_config, samples_per_epoch=64, device="cpu")
    box.source.setCurrentText("prl_mask")
    box.epochs.setValue(2)
    wait(app, box.start())
    box.grab().save(str(IMAGES / "finetune_box.png"))


if __name__ == "__main__":
    main()
