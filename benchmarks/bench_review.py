"""Review widget speed in a real viewer: key press -> next lesion on screen, and project opening.

Run under a display (``xvfb-run -a python benchmarks/bench_review.py``). It prints

* the latency from a label key press (through napari's key handler, the path a real key takes)
  to the next lesion fully shown: layers updated, slice set and camera moved (``handled``), and
  the same including the redraw of the window (``drawn``); median and 95th percentile over
  ``--lesions`` lesions of one brain-sized (1 mm) simulated subject;
* the time to open a project of ``--subjects`` subjects until its first lesion is on screen
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
    from napari_deep_prl.progress import run_with_tqdm
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
    from napari_deep_prl.project import Project

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
        time.sleep(0.001)


def wait_drawn(app, draws: list, after: float, timeout: float = 10.0) -> None:
    """Process events until the canvas has drawn once after ``after`` (the redraw that the
    layer and camera changes scheduled: the event loop draws it, nothing forces it)."""
    deadline = time.perf_counter() + timeout
    while not draws or draws[-1] < after:
        if time.perf_counter() > deadline:
            raise TimeoutError("no redraw")
        app.processEvents()


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
    from qtpy.QtWidgets import QApplication

    from napari_deep_prl._napari.review_widget import ReviewWidget

    tag = source.parent.name
    one = linked_manifest(source, 1, args.work / f"one-{tag}" / "manifest.csv")
    project(args.work / f"one-{tag}-project", one)
    many = linked_manifest(source, args.subjects, args.work / f"many-{tag}" / "manifest.csv")
    init_s = project(args.work / f"many-{tag}-project", many)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 950)
    app = QApplication.instance()
    handler = viewer.window._qt_viewer._key_map_handler
    draws: list[float] = []  # end of each scene draw (after vispy's own draw callback)
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(
        lambda _: draws.append(time.perf_counter()), position="last")

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
    for _ in range(3):  # warm-up: first draws compile shaders
        n = len(shown)
        handler.press_key("N")
        wait_shown(app, shown, n)
    handled, drawn, cpu_handled, cpu_drawn = [], [], [], []
    for _ in range(args.lesions):
        n = len(shown)
        start, cpu = time.perf_counter(), time.process_time()
        handler.press_key("P")
        wait_shown(app, shown, n)
        handled.append(shown[-1] - start)
        cpu_handled.append(time.process_time() - cpu)
        wait_drawn(app, draws, after=shown[-1])
        drawn.append(draws[-1] - start)
        cpu_drawn.append(time.process_time() - cpu)
    window = viewer.window._qt_window.size()
    print(f"\nreview latency, label key -> next lesion, 1 mm subject "
          f"{widget.display.view.images.phase.shape}, window {window.width()}x{window.height()}")
    print(f"  handled (layers, slice, camera): {percentiles(handled)}")
    print(f"  drawn (the redraw that follows):  {percentiles(drawn)}")
    print("  CPU time of this process (less sensitive to other jobs on the machine):")
    print(f"  handled, CPU:                    {percentiles(cpu_handled)}")
    print(f"  drawn, CPU (incl. Mesa llvmpipe):{percentiles(cpu_drawn)}")
    print(f"\nopen a project of {args.subjects} subjects until the first lesion is shown "
          f"({args.opens} opens): median {np.median(open_s):.2f} s, max {max(open_s):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in open_s)})")
    print(f"  of which the session (project, store, queue; no image read): median "
          f"{np.median(session_s):.2f} s; the rest is reading and preparing the first "
          "subject's images in a worker, then filling the layers")
    print("create that project (deep-prl project init, reads every mask once): "
          + (f"{init_s:.1f} s" if init_s else "reused from an earlier run"))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    widget.close()
    viewer.close()


if __name__ == "__main__":
    main()
