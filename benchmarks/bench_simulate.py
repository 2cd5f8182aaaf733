"""Time to simulate one brain-sized subject (1 mm isotropic, 160 x 192 x 160); target <= 10 s.

Timed without and with the display-only extra contrasts (FLAIR, magnitude), simulating and writing;
then as a clinical site scans it (``site="clinical"``: T1w and FLAIR at 1 mm, a filtered phase or a
QSM on a tilted 0.6 x 0.6 x 2 mm slab).

    python benchmarks/bench_simulate.py [--repeats 3] [--gallery docs/images]

``--gallery DIR`` also writes the simulator's documentation pictures: a subject overview and
patch galleries of PRLs and of each non-PRL kind (central axial slices, lesion outlined).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import extract_patches
from napari_deep_prl.evaluation.figures import patch_gallery
from napari_deep_prl.simulate import (
    SIMULATED_CONTRASTS,
    ClinicalSimulated,
    ClinicalSite,
    Simulated,
    simulate_clinical_subject,
    simulate_subject,
)
from napari_deep_prl.simulate.cohort import write_clinical_subject, write_subject

BRAIN = {"voxel_size": (1.0, 1.0, 1.0), "fov_mm": (160.0, 192.0, 160.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gallery", type=Path, help="write the docs pictures into this folder")
    args = parser.parse_args()

    simulate_subject(0, **BRAIN)  # warm-up: imports, FFT plans
    for contrasts in ((), SIMULATED_CONTRASTS):
        times, cpu = [], []
        for seed in range(1, args.repeats + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            sim = simulate_subject(seed, contrasts=contrasts, **BRAIN)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_subject(sim, Path(tmp))
            write_s = time.perf_counter() - start
        print(f"simulate one subject {sim.subject.shape} at 1 mm ({len(sim.truth)} lesions, "
              f"extra contrasts: {', '.join(contrasts) or 'none'}; {os.cpu_count()} CPUs): median "
              f"{np.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}; target <= 10 s), "
              f"CPU time {np.median(cpu):.2f} s; load average {os.getloadavg()[0]:.1f}; "
              f"writing its {4 + len(contrasts)} NIfTI files: {write_s:.2f} s")
    for susceptibility in ("phase", "qsm"):
        times, cpu = [], []
        for seed in range(1, args.repeats + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            clinical = simulate_clinical_subject(seed, site=ClinicalSite(susceptibility=susceptibility),
                                                 fov_mm=BRAIN["fov_mm"])
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_clinical_subject(clinical, Path(tmp))
            write_s = time.perf_counter() - start
        grids = ", ".join(f"{name} {image.shape}" for name, image in clinical.images.items())
        print(f"simulate one clinical subject ({grids}; {len(clinical.truth)} lesions): median "
              f"{np.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}; target <= 10 s), "
              f"CPU time {np.median(cpu):.2f} s; load average {os.getloadavg()[0]:.1f}; "
              f"writing its {len(clinical.images)} NIfTI files: {write_s:.2f} s")
    if args.gallery:
        write_gallery(args.gallery)


def write_gallery(folder: Path) -> None:
    """Pictures for docs/simulator.md, from 3 T subjects with many PRLs (typical noise)."""
    sims = [simulate_subject(21, index=i, prl_rate=0.35, n_lesions=45, field_strength_t=3.0,
                             noise=0.065, **BRAIN) for i in range(3)]
    _overview(sims[0], folder / "sim_subject.png")
    _clinical_overview(folder / "sim_clinical.png")
    groups = {"sim_prl.png": ("full_rim", "partial_rim"),
              "sim_non_prl.png": ("plain", "vein_adjacent", "homogeneous", "central_vein",
                                  "confluent")}
    for name, kinds in groups.items():
        per_kind = 4 if len(kinds) == 2 else 2
        patches, titles = [], []
        for kind in kinds:
            picked = 0
            for sim in sims:
                lesions = find_lesions(sim.subject)
                rows = sim.truth[(sim.truth["kind"] == kind)
                                 & sim.truth["volume_voxels"].between(60, 1500)]
                for row in rows.head(per_kind - picked).itertuples():
                    patches.append(extract_patches(sim.subject, lesions, ids=[row.lesion])[0])
                    titles.append(f"{kind}\n{row.volume_mm3:.0f} mm3")
                    picked += 1
        patch_gallery(np.stack(patches), titles, folder / name,
                      suptitle="synthetic lesions, central axial slice (phase: dark = paramagnetic)")
        print(f"wrote {folder / name}")


def _clinical_overview(path: Path) -> None:
    """A clinical subject's images around one PRL: the slab's filtered phase and QSM (a slice of
    the tilted slab through the lesion's centre) and the T1w and FLAIR (the axial slice there)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sims = {name: simulate_clinical_subject(21, site=ClinicalSite(susceptibility=name, tilt_deg=12.0),
                                            prl_rate=0.35, n_lesions=45, field_strength_t=3.0, noise=0.065,
                                            fov_mm=BRAIN["fov_mm"]) for name in ("phase", "qsm")}
    sim: ClinicalSimulated = sims["phase"]
    rim = sim.truth[sim.truth["kind"] == "full_rim"].sort_values("volume_voxels").iloc[-1]
    world = np.array([rim.x_mm, rim.y_mm, rim.z_mm, 1.0])
    views = []
    for title, site, name, window in (("filtered phase (dark = paramagnetic)", "phase", "phase", (-0.4, 0.4)),
                                      ("QSM (ppm)", "qsm", "qsm", (-0.08, 0.15)), ("T1w", "phase", "t1w", None),
                                      ("FLAIR", "phase", "flair", None)):
        image = sims[site].images[name]
        data = np.asarray(image.dataobj)
        i, j, k = np.round(np.linalg.solve(image.affine, world)[:3]).astype(int)
        zoom = np.linalg.norm(image.affine[:3, :3], axis=0)
        half = np.round(25.0 / zoom[:2]).astype(int)  # 50 mm around the lesion
        view = data[max(i - half[0], 0):i + half[0], max(j - half[1], 0):j + half[1], k]
        window = window or tuple(np.percentile(view, [1, 99.5]))
        views.append((f"{title}\n{image.shape} at {'x'.join(f'{z:g}' for z in np.round(zoom, 2))} mm", view,
                      window, zoom[1] / zoom[0]))
    fig, axes = plt.subplots(1, 4, figsize=(13, 4.0))
    for ax, (title, view, (lo, hi), aspect) in zip(axes, views):
        ax.imshow(view.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest", aspect=aspect)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"clinical site: a full-rim PRL ({rim.volume_mm3:.0f} mm3), 3 T; phase and QSM on the slab "
                 "tilted 12 degrees, T1w and FLAIR axial", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


def _overview(sim: Simulated, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    s = sim.subject
    scale = 1.4826 * np.median(np.abs(s.phase[s.phase != 0]))
    z = int(np.median(sim.truth["z"]))
    y = s.shape[1] // 2
    views = [("phase, axial", s.phase[:, :, z], (-4 * scale, 4 * scale)),
             ("MP2RAGE, axial", s.mp2rage[:, :, z], (0, 1)),
             ("lesions (PRL bright)", s.mask[:, :, z] + s.prl_mask[:, :, z], (0, 2)),
             ("phase, coronal", s.phase[:, y, :], (-4 * scale, 4 * scale))]
    fig, axes = plt.subplots(1, 4, figsize=(13, 4.2))
    for ax, (title, image, (lo, hi)) in zip(axes, views):
        ax.imshow(image.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"synthetic subject: {sim.params.field_strength_t:g} T, TE "
                 f"{sim.params.te_ms:g} ms, B0 along z", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
