"""Regenerate the screenshots of the scoring and active-learning guides.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1080x24" python
docs/make_model_screenshots.py --model MODEL.pt`` (a default-preset checkpoint, e.g. from
``deep-prl train``). It simulates a 3-subject project with the PRL masks imported as rater
``prl_mask`` and saves in ``docs/images/``:

* ``model_panel.png`` — the project scored in the model panel, its lesions decided together
  (the model must be calibrated, as default training makes it), the most likely PRL selected;
* ``model_saliency.png`` — that lesion's saliency overlay over the phase, its edge faint yellow, the
  table's rim evidence beside it;
* ``click_scored.png`` — that subject's images opened from a folder without its lesion mask
  (File > Open), the same lesion clicked with **Score a clicked lesion**: its outline and score;
* ``finetune_box.png`` — two short fine-tuning epochs (not with ``--no-finetune``).

The model panel is docked wide enough to show every column of its table.
"""

from __future__ import annotations

import argparse
import shutil
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


def screenshot(app, viewer, name: str) -> None:
    """The whole window into ``docs/images/<name>``, without napari's notifications over it."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(app)
    viewer.screenshot(str(IMAGES / name), canvas_only=False, flash=False)


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
    parser.add_argument("--no-finetune", action="store_true", help="only the scoring screenshots")
    args = parser.parse_args()

    import napari
    from napari.utils.colormaps import DirectLabelColormap
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
    viewer.window.resize(1920, 1040)  # a 1080p screen
    panel = ModelPanel(viewer)
    dock = viewer.window.add_dock_widget(panel, area="right", name="Deep-PRL model")
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
    table = panel.table
    width = table.horizontalHeader().length() + table.frameWidth() * 2 + 90  # every column, no scroll bar
    viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    settle(app)
    IMAGES.mkdir(exist_ok=True)
    screenshot(app, viewer, "model_panel.png")

    shown, selected = str(panel.scores["subject"].iloc[0]), panel.scores.loc[
        panel.scores["lesion"] == int(table.item(0, 1).text())].iloc[0]
    wait(app, panel.show_saliency())
    edges = viewer.layers[f"{shown} lesions"]  # the lesion's edge in yellow under the map
    edges.colormap = DirectLabelColormap(color_dict={None: "transparent", int(selected["lesion"]): "yellow"})
    edges.contour, edges.opacity = 1, 0.35  # faint: the map on the edge stays visible
    zoom_on(app, viewer, selected)
    screenshot(app, viewer, "model_saliency.png")

    click_screenshot(app, viewer, panel, work / "cohort" / shown, selected)

    if not args.no_finetune:
        finetune_screenshot(app, panel)
    viewer.close()
    print(f"saved screenshots in {IMAGES}")


def zoom_on(app, viewer, lesion, zoom: float = 2.5) -> None:
    """The slice through ``lesion`` (a row of the score table) in the middle of the canvas,
    ``zoom`` times closer than the whole view, without the score points over it (the table says
    the scores)."""
    from napari_deep_prl._napari.model.scoring_table import POINTS_NAME, go_to

    viewer.layers[POINTS_NAME].visible = False
    viewer.reset_view()
    go_to(viewer, lesion[["x_mm", "y_mm", "z_mm"]].to_numpy(dtype=float))
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.zoom *= zoom
    settle(app)


def click_screenshot(app, viewer, panel, folder: Path, lesion) -> None:
    """The subject's images without its mask (``folder``'s images copied) opened in the viewer,
    ``lesion`` (the table's row with the given mask) clicked at its centre and scored."""
    from napari_deep_prl._napari.model.model_widget import FROM_VIEWER
    from napari_deep_prl.data.cohort import classify_file

    images_only = folder.parent.parent / "images-only" / folder.name
    images_only.mkdir(parents=True)
    for file in folder.iterdir():
        if classify_file(file.name) not in ("mask", "prl_mask"):
            shutil.copy(file, images_only / file.name)
    viewer.layers.clear()
    viewer.open(str(images_only), plugin="napari-deep-prl")
    for contrast in ("magnitude", "flair"):
        viewer.layers[f"{folder.name} {contrast}"].visible = False
    panel.subject.setCurrentText(FROM_VIEWER)
    panel.clicks.set_mode(True)
    wait(app, panel.clicks.click_at(lesion[["x_mm", "y_mm", "z_mm"]].to_numpy(dtype=float)))
    panel.table.setCurrentCell(0, 0)
    zoom_on(app, viewer, panel.scores.iloc[0])
    screenshot(app, viewer, "click_scored.png")
    panel.clicks.set_mode(False)
    print(f"{folder.name} lesion {int(lesion['lesion'])}: P(PRL) {lesion['prl_probability']:.3f} with the given "
          f"mask ({lesion['volume_mm3']:.0f} mm³), {panel.scores['prl_probability'].iloc[0]:.3f} clicked "
          f"({panel.scores['volume_mm3'].iloc[0]:.0f} mm³)")


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
