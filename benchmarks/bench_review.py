"""Review widget speed in a real viewer: key press -> next lesion painted, and project opening.

Run under a display (``xvfb-run -a python benchmarks/bench_review.py``). It prints

* the latency from a label key press (a real Qt key event sent to napari's canvas, taken by the
  review's key router with the "only lesions painted on screen" guard in place) to the next
  lesion painted on the review's canvas; median and 95th percentile over ``--lesions`` lesions
  of one brain-sized (1 mm) simulated subject, and as a ratio to the floor measured in the same
  run: a key press on the same canvas that only asks for a repaint;
* the time to open a project of ``--subjects`` subjects until its first lesion is painted
  (the subjects are links to a few simulated ones, so the images are real but simulating 200
  of them is not needed); creating that project (registering every subject's lesions, which
  reads every mask) is reported separately, as it is done once with ``deep-prl project init``.

Simulated data and the projects are kept under ``--work`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd


def simulate(work: Path, n_lesions: int) -> Path:
    """Three 1 mm brain-sized subjects (reused when already there)."""
    from napari_deep_prl.base.progress import run_with_tqdm
    from napari_deep_prl.simulate import simulate_cohort

    manifest = work / f"cohort-{n_lesions}" / "manifest.csv"
    if not manifest.exists():
        run_with_tqdm(simulate_cohort(manifest.parent, 3, seed=1, voxel_size=(1.0, 1.0, 1.0),
                                      n_lesions=n_lesions, overwrite=True), desc="simulating")
    return manifest


def linked_manifest(source: Path, n: int, path: Path) -> Path:
    """A manifest of ``n`` subjects whose files are links to the source cohort's subjects."""
    rows = pd.read_csv(source)
    out = []
    for i in range(n):
        row = rows.iloc[i % len(rows)]
        folder = path.parent / f"sub-{i + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        entry = {"subject": folder.name}
        for column in ("phase", "mp2rage", "mask"):
            link = folder / f"{folder.name}_{column}.nii.gz"
            if not link.exists():
                os.symlink((source.parent / row[column]).resolve(), link)
            entry[column] = str(link.relative_to(path.parent))
        out.append(entry)
    pd.DataFrame(out).to_csv(path, index=False)
    return path


def project(root: Path, manifest: Path) -> float:
    """Create the project if needed; seconds it took (0 when reused)."""
    from napari_deep_prl.ratings.project import Project

    if (root / "project.json").exists():
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    Project.init(root, manifest).close()
    return time.perf_counter() - start


def wait_shown(app, shown: list, n: int, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while len(shown) <= n:
        if time.perf_counter() > deadline:
            raise TimeoutError("lesion not shown")
        app.processEvents()


def key_press(widget, key) -> None:
    """A real key press and release, delivered as Qt delivers them to the focused widget."""
    from qtpy.QtCore import QEvent, Qt
    from qtpy.QtGui import QKeyEvent
    from qtpy.QtWidgets import QApplication

    for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
        QApplication.sendEvent(widget, QKeyEvent(kind, key, Qt.KeyboardModifier.NoModifier))


def percentiles(values: list[float]) -> str:
    ms = np.asarray(values) * 1000
    return f"median {np.median(ms):6.1f} ms   p95 {np.percentile(ms, 95):6.1f} ms   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deep-prl-bench-review"))
    parser.add_argument("--lesions", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--opens", type=int, default=5,
                        help="times the many-subject project is opened (each a new rater)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    # Touching lesions merge and some are too small to register: ask for 1.6x what is measured.
    source = simulate(args.work, n_lesions=int(args.lesions * 1.6))

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_deep_prl._napari.review.review_widget import ReviewWidget

    tag = source.parent.name
    one = linked_manifest(source, 1, args.work / f"one-{tag}" / "manifest.csv")
    project(args.work / f"one-{tag}-project", one)
    many = linked_manifest(source, args.subjects, args.work / f"many-{tag}" / "manifest.csv")
    init_s = project(args.work / f"many-{tag}-project", many)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 950)
    app = QApplication.instance()
    canvas = viewer.window._qt_viewer.canvas.native  # where keys go after a click on the image

    # -- opening a project of many subjects --------------------------------------------------
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="review")
    shown: list[float] = []
    widget.lesion_shown.connect(lambda *_: shown.append(time.perf_counter()))
    for _ in range(20):
        app.processEvents()
    open_s, session_s = [], []
    for _ in range(args.opens):
        n = len(shown)
        start = time.perf_counter()
        widget.open_project(args.work / f"many-{tag}-project", f"bench-{time.time_ns()}")
        session_s.append(time.perf_counter() - start)  # project, store, queue: no image
        wait_shown(app, shown, n)
        open_s.append(shown[-1] - start)
        for _ in range(20):  # let the prefetch of the next subject finish
            app.processEvents()
            time.sleep(0.05)

    # -- key press -> next lesion, on one subject ---------------------------------------------
    n_opened = len(shown)
    widget.open_project(args.work / f"one-{tag}-project", f"bench-{time.time_ns()}")
    available = len(widget.project.lesions())
    if available < args.lesions + 3:
        raise SystemExit(f"the subject has {available} lesions; {args.lesions} + 3 warm-up needed")
    wait_shown(app, shown, n_opened)
    for _ in range(3):  # warm-up
        n = len(shown)
        key_press(canvas, Qt.Key.Key_N)
        wait_shown(app, shown, n)
    latency, cpu_latency = [], []
    for _ in range(args.lesions):
        n = len(shown)
        start, cpu = time.perf_counter(), time.process_time()
        key_press(canvas, Qt.Key.Key_P)
        wait_shown(app, shown, n)
        latency.append(shown[-1] - start)
        cpu_latency.append(time.process_time() - cpu)
    saved = len(widget.project.store.current(rater=widget.session.rater))

    # -- the floor: a key that only asks the same canvas to repaint ----------------------------
    painted: list[float] = []
    original = widget.canvas.paintEvent

    def paint(event):
        original(event)
        painted.append(time.perf_counter())

    widget.canvas.paintEvent = paint
    floor = []
    for _ in range(args.lesions):
        n = len(painted)
        start = time.perf_counter()
        key_press(canvas, Qt.Key.Key_Up)  # one slice up: re-cut the planes and repaint
        wait_shown(app, painted, n)
        floor.append(painted[-1] - start)
    widget.canvas.paintEvent = original

    window = viewer.window._qt_window.size()
    shape = next(iter(widget.canvas.images.volumes.values())).shape
    print(f"\nreview latency, label key -> next lesion painted, 1 mm subject {shape}, "
          f"window {window.width()}x{window.height()}, canvas "
          f"{widget.canvas.width()}x{widget.canvas.height()}, {args.lesions} labels saved: {saved}")
    print(f"  key -> next lesion painted:      {percentiles(latency)}")
    print(f"  CPU time of this process:        {percentiles(cpu_latency)}")
    print(f"  floor, key -> slice step painted: {percentiles(floor)}")
    print(f"  ratio to the floor: median {np.median(latency) / np.median(floor):.1f}x, "
          f"p95 {np.percentile(latency, 95) / np.percentile(floor, 95):.1f}x")
    print(f"\nopen a project of {args.subjects} subjects until the first lesion is painted "
          f"({args.opens} opens): median {np.median(open_s):.2f} s, max {max(open_s):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in open_s)})")
    print(f"  of which the session (project, store, queue; no image read): median "
          f"{np.median(session_s):.2f} s; the rest is reading and preparing the first "
          "subject's images in a worker")
    print("create that project (deep-prl project init, reads every mask once): "
          + (f"{init_s:.1f} s" if init_s else "reused from an earlier run"))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    widget.close()
    viewer.close()


if __name__ == "__main__":
    main()
