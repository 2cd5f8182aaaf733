"""Regenerate the screenshots of the rater's and adjudicator's guides.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py``.
It simulates (or reuses, under ``--work``) a 1 mm brain-sized subject, makes a project where two
raters disagree on some lesions, and saves ``docs/images/review_view.png`` (a PRL with a clear
rim on screen) and ``docs/images/adjudication_view.png``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

IMAGES = Path(__file__).resolve().parent / "images"


def settle(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def clearest_rim(manifest: Path, truth: pd.DataFrame) -> int:
    """Row of the PRL whose rim stands out most from the phase noise around it."""
    import numpy as np
    from scipy import ndimage

    from napari_deep_prl.io import open_cohort
    from napari_deep_prl.lesions import find_lesions

    subject = open_cohort(manifest)[0].load()
    labels = find_lesions(subject).labels
    best, score = -1, -np.inf
    for index, row in truth[truth["prl"] & ~truth["confluent"]].iterrows():
        lesion = labels == row["lesion"]
        edge = lesion & ~ndimage.binary_erosion(lesion)
        around = ndimage.binary_dilation(lesion, iterations=6) & ~ndimage.binary_dilation(
            lesion, iterations=3)
        contrast = (subject.phase[around].mean() - subject.phase[edge].mean()) \
            / subject.phase[around].std()
        if contrast > score:
            best, score = index, contrast
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deep-prl-screenshots"))
    args = parser.parse_args()
    from napari_deep_prl.progress import run_with_tqdm
    from napari_deep_prl.project import Project
    from napari_deep_prl.simulate import simulate_cohort

    cohort = args.work / "cohort"
    if not (cohort / "manifest.csv").exists():
        run_with_tqdm(simulate_cohort(cohort, 1, seed=3, voxel_size=(1.0, 1.0, 1.0),
                                      n_lesions=40, prl_fraction=0.3, noise=0.03,
                                      overwrite=True), desc="simulating")
    truth = pd.read_csv(cohort / "lesions_truth.tsv", sep="\t")
    root = args.work / "project"
    shutil.rmtree(root, ignore_errors=True)
    shown = truth.loc[clearest_rim(cohort / "manifest.csv", truth)]
    with Project.init(root, cohort / "manifest.csv") as project:
        for row in truth.itertuples():
            label = "prl" if row.prl else "not_prl"
            project.store.add_rating("rater1", row.subject, row.lesion, label, confidence=4)
            other = "unsure" if row.lesion % 3 == 0 or row.lesion == shown["lesion"] else label
            project.store.add_rating("rater2", row.subject, row.lesion, other, confidence=2,
                                     comment="vein at the edge?" if other != label else None)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_deep_prl._napari.adjudication_widget import AdjudicationWidget
    from napari_deep_prl._napari.review_widget import ReviewWidget

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True, title="Deep-PRL review")
    viewer.window.resize(1920, 1040)  # a 1080p screen
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Deep-PRL review", area="right")
    shown_lesions: list = []
    review.lesion_shown.connect(lambda *a: shown_lesions.append(a))
    review.open_project(root, "rater3")
    review.set_confidence(4)
    review.jump(f"{shown['subject']}:{int(shown['lesion'])}")
    while (shown["subject"], int(shown["lesion"])) not in shown_lesions:
        settle(app, 0.1)
    settle(app, 1.0)
    review.recentre()
    settle(app, 0.5)
    IMAGES.mkdir(exist_ok=True)
    viewer.screenshot(str(IMAGES / "review_view.png"), canvas_only=False)
    viewer.window.remove_dock_widget(review)

    adjudication = AdjudicationWidget(viewer)
    viewer.window.add_dock_widget(adjudication, name="Deep-PRL adjudication", area="right")
    adjudication.open_project(root, "chief")
    target = adjudication.queue.index[(adjudication.queue["lesion"] == shown["lesion"])]
    adjudication.index = int(target[0]) if len(target) else 0
    adjudication.refresh_queue()
    while adjudication.display.busy or adjudication.agreement.worker is not None:
        settle(app, 0.1)
    settle(app, 1.0)
    adjudication.recentre()
    settle(app, 0.5)
    viewer.screenshot(str(IMAGES / "adjudication_view.png"), canvas_only=False)
    print(f"wrote {IMAGES / 'review_view.png'} and {IMAGES / 'adjudication_view.png'} "
          f"(lesion {int(shown['lesion'])}, {shown['kind']}, {shown['volume_mm3']:.0f} mm³)")
    adjudication.close()
    viewer.close()


if __name__ == "__main__":
    main()
