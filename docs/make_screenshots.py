"""Regenerate the screenshots of the rater's and adjudicator's guides.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py``.
It simulates (or reuses, under ``--work``) three 1 mm brain-sized subjects with FLAIR and
magnitude images and confluent PRLs, trains a small model on two of them (or uses ``--model``),
makes a project where two raters disagree on some lesions, and saves in ``docs/images/``:

* ``review_view.png`` — the whole window: the review docked on the right on a PRL with a clear
  rim, the model panel docked on the left after scoring the project (its scores hidden while the
  blind review is open);
* ``review_full_rim.png``, ``review_partial_rim.png`` — the review's canvas on a full-rim and a
  partial-rim PRL (the rims standing out most from the phase around them, of lesions without a
  vein beside or inside them; panels, outline between voxels, slice strip);
* ``review_contrasts.png`` — three contrasts side by side (phase, MP2RAGE, FLAIR);
* ``review_confluent.png`` — the review widget on a PRL that is one part of a confluent
  component split into lesions (the largest whose centre slice shows another part): the part
  outlined, the rest of the component faint;
* ``adjudication_view.png`` — the adjudication widget on a disagreement.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

IMAGES = Path(__file__).resolve().parent / "images"


def settle(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def rim_contrast(manifest: Path, truth: pd.DataFrame) -> pd.Series:
    """For each PRL of the cohort, how far its rim stands out from the phase around it."""
    from scipy import ndimage

    from napari_deep_prl.data.cohort import open_cohort
    from napari_deep_prl.data.lesions import find_lesions

    scores = {}
    for paths in open_cohort(manifest):
        subject = paths.load()
        labels = find_lesions(subject).labels
        mine = truth[(truth["subject"] == subject.subject) & truth["prl"] & ~truth["confluent"]]
        for index, row in mine.iterrows():
            lesion = labels == row["lesion"]
            edge = ndimage.binary_dilation(lesion, iterations=1) & ~lesion
            around = ndimage.binary_dilation(lesion, iterations=6) & ~ndimage.binary_dilation(
                lesion, iterations=3)
            scores[index] = (subject.phase[around].mean() - subject.phase[edge].mean()) \
                / subject.phase[around].std()
    return pd.Series(scores).sort_values(ascending=False)


def wait_shown(app, widget, subject: str, lesion: int) -> None:
    while not widget.display.is_drawn(subject, lesion):
        settle(app, 0.05)
    settle(app, 0.5)


def grab_canvas(images, target, size: tuple[int, int], path: Path, panels=None) -> None:
    """The review's canvas on one lesion, at a fixed size (the same widget the review docks)."""
    from napari_deep_prl._napari.review.lesion_canvas import LesionCanvas

    canvas = LesionCanvas()
    canvas.resize(*size)
    canvas.set_panels(panels)
    canvas.show_lesion(images, target)
    canvas.grab().save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deep-prl-screenshots"))
    parser.add_argument("--model", type=Path, help="a model file (default: train a small one)")
    args = parser.parse_args()
    from napari_deep_prl.base.progress import run_with_tqdm
    from napari_deep_prl.cli import main as cli
    from napari_deep_prl.ratings.project import Project
    from napari_deep_prl.simulate import simulate_cohort

    cohort = args.work / "cohort"
    if not (cohort / "manifest.csv").exists():
        run_with_tqdm(simulate_cohort(cohort, 3, seed=3, voxel_size=(1.0, 1.0, 1.0),
                                      n_lesions=40, prl_fraction=0.3, noise=0.03,
                                      confluent_prl_rate=0.3, overwrite=True), desc="simulating")
    model = args.model or args.work / "model.pt"
    if not model.exists():
        assert cli(["train", str(cohort / "manifest.csv"), "-o", str(model), "--epochs", "8",
                    "--models", "1", "--quiet"]) == 0
    truth = pd.read_csv(cohort / "lesions_truth.tsv", sep="\t", dtype={"subject": str})
    ranked = rim_contrast(cohort / "manifest.csv", truth)
    veinless = ~truth["adjacent_vein"] & ~truth["central_vein"]  # a rim, not a vein beside it
    full, partial = (truth.loc[next(i for i in ranked.index if truth.loc[i, "kind"] == kind and veinless[i])]
                     for kind in ("full_rim", "partial_rim"))
    split = truth[truth["split_from"] > 0]

    def beside(row: pd.Series) -> bool:
        """Another part of the component lies on the part's centre axial slice."""
        others = split[(split["subject"] == row["subject"]) & (split["split_from"] == row["split_from"])
                       & (split["lesion"] != row["lesion"])]
        z = round(row["z"])
        return bool(((others["bbox_z0"] <= z) & (z < others["bbox_z1"])).any())

    part = split[split["prl"] & split.apply(beside, axis=1)].sort_values("volume_mm3").iloc[-1]  # the largest
    root = args.work / "project"
    shutil.rmtree(root, ignore_errors=True)
    with Project.init(root, cohort / "manifest.csv") as project:
        for row in truth.itertuples():
            label = "prl" if row.prl else "not_prl"
            project.store.add_rating("rater1", row.subject, row.lesion, label, confidence=4)
            doubt = row.lesion % 3 == 0 or (row.subject, row.lesion) == (full["subject"], full["lesion"])
            other = "unsure" if doubt else label
            project.store.add_rating("rater2", row.subject, row.lesion, other, confidence=2,
                                     comment="vein at the edge?" if other != label else None)

    import napari
    from qtpy.QtWidgets import QApplication, QScrollArea

    from napari_deep_prl._napari.model.model_widget import ModelPanel
    from napari_deep_prl._napari.review.adjudication_widget import AdjudicationWidget
    from napari_deep_prl._napari.review.review_widget import ReviewWidget
    from napari_deep_prl._napari.review.subject_images import prepare_subject

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True, title="Deep-PRL review")
    viewer.window.resize(1920, 1040)  # a 1080p screen
    panel = ModelPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Deep-PRL model", area="left")
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Deep-PRL review", area="right")
    panel.open_project(root)
    panel.load_model(model)
    panel.subject.setCurrentText(str(full["subject"]))
    done: list[bool] = []
    panel.score_project().worker.finished.connect(lambda: done.append(True))
    while not done:
        settle(app, 0.1)
    review.open_project(root, "rater3")
    review.set_confidence(4)
    review.jump(f"{full['subject']}:{int(full['lesion'])}")
    wait_shown(app, review, str(full["subject"]), int(full["lesion"]))
    scroll = panel.findChild(QScrollArea)
    scroll.ensureWidgetVisible(panel.hidden)  # the model panel says why its scores are hidden
    settle(app, 0.5)
    IMAGES.mkdir(exist_ok=True)
    viewer.screenshot(str(IMAGES / "review_view.png"), canvas_only=False)

    review.jump(f"{part['subject']}:{int(part['lesion'])}")
    wait_shown(app, review, str(part["subject"]), int(part["lesion"]))
    review.grab().save(str(IMAGES / "review_confluent.png"))

    for row, name in ((full, "review_full_rim.png"), (partial, "review_partial_rim.png")):
        images = prepare_subject(review.project, str(row["subject"]))
        target = images.target(int(row["lesion"]), (row["x"], row["y"], row["z"]))
        grab_canvas(images, target, (760, 560), IMAGES / name)
    images = prepare_subject(review.project, str(full["subject"]))
    target = images.target(int(full["lesion"]), (full["x"], full["y"], full["z"]))
    grab_canvas(images, target, (1100, 560), IMAGES / "review_contrasts.png",
                panels=("phase", "mp2rage", "flair"))
    review.close_project()
    viewer.window.remove_dock_widget(review)
    viewer.window.remove_dock_widget(panel)

    adjudication = AdjudicationWidget(viewer)
    viewer.window.add_dock_widget(adjudication, name="Deep-PRL adjudication", area="right")
    adjudication.open_project(root, "chief")
    keys = adjudication.queue["lesion_key"].to_numpy()
    with Project.open(root) as project:
        wanted = project.store.lesion_key(str(full["subject"]), int(full["lesion"]))
    adjudication.refresh_queue(keep=int(wanted) if wanted in keys else None)
    row = adjudication.current
    wait_shown(app, adjudication, str(row["subject"]), int(row["lesion"]))
    while adjudication.agreement.worker is not None:
        settle(app, 0.1)
    settle(app, 1.0)
    viewer.screenshot(str(IMAGES / "adjudication_view.png"), canvas_only=False)
    print(f"wrote the screenshots to {IMAGES}: full rim {full['subject']}:{int(full['lesion'])} "
          f"({full['volume_mm3']:.0f} mm³), partial rim {partial['subject']}:"
          f"{int(partial['lesion'])} (coverage {partial['rim_coverage']:.2f}, "
          f"{partial['volume_mm3']:.0f} mm³), confluent part {part['subject']}:{int(part['lesion'])} "
          f"(component {int(part['split_from'])}); {np.count_nonzero(keys)} disagreements")
    adjudication.close()
    viewer.close()


if __name__ == "__main__":
    main()
