"""Regenerate ``docs/images/reliability_report.png``, the top of a reliability report.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_report_screenshot.py``.
It simulates (or reuses, under ``--work``) a cohort of 20 subjects, lets four simulated raters of
different sensitivity and specificity label its lesions from the simulator's truth (``dan``
rates only the first ten patients, so the design has missing ratings; ``ann`` sees 40 lesions a
second time), stores the truth as the reference ``expert``, writes the report with
``deep-prl ratings report`` and renders its top with Qt's rich-text browser.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

IMAGES = Path(__file__).resolve().parent / "images"
#: Each simulated rater's chance to call a PRL a PRL, and a non-PRL not a PRL.
RATERS = {"ann": (0.85, 0.99), "ben": (0.7, 0.97), "cid": (0.9, 0.98), "dan": (0.6, 0.995)}


def make_study(work: Path) -> Path:
    from napari_deep_prl.ratings.project import Project

    cohort = work / "cohort"
    if not (cohort / "manifest.csv").exists():
        subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", "simulate", str(cohort),
                        "--subjects", "20", "--lesions", "15", "--quiet"], check=True)
    root = work / "study"
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    with Project.init(root, cohort / "manifest.csv",
                      {"consensus": {"method": "majority", "min_raters": 2}}) as project:
        lesions = project.lesions()
        truth = rng.random(len(lesions)) < 0.08
        rows = []
        for i, (subject, lesion) in enumerate(zip(lesions["subject"], lesions["lesion"], strict=True)):
            for rater, (sensitivity, specificity) in RATERS.items():
                if rater == "dan" and subject > "sub-010":
                    continue
                p_prl = sensitivity if truth[i] else 1 - specificity
                label = "unsure" if rng.random() < 0.02 else (
                    "prl" if rng.random() < p_prl else "not_prl")
                rows.append({"subject": subject, "lesion": lesion, "rater": rater, "label": label})
        project.import_ratings(pd.DataFrame(rows))
        project.import_ratings(pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                                             "label": np.where(truth, "prl", "not_prl")}),
                               reference="expert")
        for i in range(40):
            again = "prl" if truth[i] and rng.random() < 0.9 else "not_prl"
            project.store.add_rating("ann", lesions["subject"].iloc[i], int(lesions["lesion"].iloc[i]),
                                     again, repeat=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deep-prl-report-shot"))
    args = parser.parse_args()
    root = make_study(args.work)
    report = root / "exports" / "reliability_report.html"
    subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", "ratings", "report", str(root),
                    "-o", str(report)], check=True)

    from qtpy.QtWidgets import QApplication, QTextBrowser

    app = QApplication(sys.argv)
    browser = QTextBrowser()
    browser.setHtml(report.read_text())
    browser.resize(1300, 1500)
    browser.show()
    app.processEvents()
    IMAGES.mkdir(exist_ok=True)
    browser.grab().save(str(IMAGES / "reliability_report.png"))
    print(f"{IMAGES / 'reliability_report.png'} (from {report})")


if __name__ == "__main__":
    main()
