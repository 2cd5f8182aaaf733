"""Scoring speed on the CPU: the exported ONNX graphs in onnxruntime against the PyTorch checkpoints.

A three-network ensemble of the default preset (28³ patches, each network calibrated and scored
on the 8 axis flips, as ``deep-prl train`` ships it; the weights are random: speed does not depend
on them) is exported with :func:`~napari_deep_prl.model.export.export_onnx` (the graph and its
first-view graph), and the same synthetic patches are scored in the same process along both
paths of ``deep-prl score``:

* **screened** (the default): each network's first view of every lesion, the other 7 views only
  for the lesions whose first looks reach the screen. The screen is set so that ``--kept`` of the
  lesions (10 % by default, as held-out data sends on, docs/model.md "Views") pass it: the work of
  about 3 + 0.1 x 21 = 5 passes a lesion;
* **every view** (``--tta``): 24 passes a lesion.

Each path runs through **PyTorch float32**
(:func:`~napari_deep_prl.model.inference.view_probabilities`, ``precision="float32"``: what the
graphs compute), **PyTorch default precision** (``"auto"``: bfloat16 where the CPU has it) and
**ONNX** (:meth:`~napari_deep_prl.model.onnx_model.OnnxModel.view_probabilities`).

Printed: lesions/s of each (median of ``--rounds`` alternating rounds after a warm-up), the ratio
of ONNX to each PyTorch run, the export time and the largest difference between the ONNX and
PyTorch float32 probabilities of each path. Run: ``python benchmarks/bench_onnx.py [--threads 2]
[--lesions 40] [--rounds 3] [--kept 0.1] [--work out/bench_onnx]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.export import export_onnx, synthetic_patches
from napari_deep_prl.model.inference import INFERENCE_BATCH, TTA_VIEWS, precision_name, resolve_precision
from napari_deep_prl.model.inference import view_probabilities as torch_view_probabilities
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import PRESETS, DeepPRL
from napari_deep_prl.model.onnx_model import OnnxModel


def ensemble(networks: int = 3, size: int = 28) -> list[Checkpoint]:
    """Default-preset networks, calibrated, each recording the 8 flips as its views."""
    out = []
    for seed in range(networks):
        torch.manual_seed(seed)
        out.append(Checkpoint(DeepPRL(PRESETS["default"], size).eval(), 0.4, PatchConfig(size=size),
                              {"views": [list(v) for v in TTA_VIEWS]}, PlattFit(0.0, 1.0, 1.2, -0.5)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lesions", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kept", type=float, default=0.1, help="share of lesions the screen sends to every view")
    parser.add_argument("--work", type=Path, default=Path("out/bench_onnx"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoints = ensemble()
    start = time.perf_counter()
    files = export_onnx(checkpoints, args.work / "model.onnx")
    exported = time.perf_counter() - start
    model = OnnxModel.load(files.graph)
    x = synthetic_patches(3, 28, n=args.lesions, seed=1)
    first = torch_view_probabilities(checkpoints, x, tta=False, device="cpu", precision="float32").mean(0)
    screen = float(np.quantile(first, 1 - args.kept))  # the first looks of --kept of the lesions reach it
    auto = precision_name(resolve_precision("auto", torch.device("cpu")))
    names = ("PyTorch float32", f"PyTorch default ({auto})", "ONNX (onnxruntime, float32)")
    print(f"3 default-preset networks x 8 views, {args.lesions} lesions of 28^3, batches of {INFERENCE_BATCH}, "
          f"{args.threads} thread(s); median of {args.rounds} rounds")
    print(f"export: {exported:.1f} s, {files.graph.stat().st_size / 1e6:.2f} MB + first-view graph "
          f"{files.first_views.stat().st_size / 1e6:.2f} MB")
    for path, options in (("screened (default)", {"screen": screen}), ("every view (--tta)", {})):
        runs = {
            names[0]: lambda o=options: torch_view_probabilities(checkpoints, x, precision="float32", device="cpu",
                                                                 **o),
            names[1]: lambda o=options: torch_view_probabilities(checkpoints, x, device="cpu", **o),
            names[2]: lambda o=options: model.view_probabilities(x, device="cpu", **o),
        }
        results = {name: run() for name, run in runs.items()}  # warm-up, and the outputs compared
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                begin = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - begin)
        rates = {name: args.lesions / statistics.median(times) for name, times in seconds.items()}
        kept = int(np.isfinite(results[names[0]][1]).sum())
        print(f"{path}: {kept} of {args.lesions} lesions on every view")
        for name, rate in rates.items():
            ratio = "" if name == names[2] else f"   ONNX / this: {rates[names[2]] / rate:.2f} x"
            print(f"{name:>30}: {rate:7.1f} lesions/s{ratio}")
        worst = float(np.nanmax(np.abs(results[names[2]] - results[names[0]])))
        print(f"  largest |ONNX - PyTorch float32| of a view probability: {worst:.1e}")


if __name__ == "__main__":
    main()
