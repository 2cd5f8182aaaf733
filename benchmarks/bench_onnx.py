"""Scoring speed on the CPU: the exported ONNX graph in onnxruntime against the PyTorch checkpoints.

A three-network ensemble of the default preset (28³ patches, each network calibrated and scored
on the 8 axis flips, as ``deep-prl train`` ships it; the weights are random: speed does not depend
on them) is exported with :func:`~napari_deep_prl.model.export.export_onnx`, and the same
synthetic patches are scored in the same process on every view of every network (24 passes per
lesion: the work the graph always does, and ``deep-prl score --tta``'s):

* **PyTorch float32**: :func:`~napari_deep_prl.model.inference.view_probabilities` with
  ``precision="float32"`` (what the graph computes);
* **PyTorch default precision**: the same in ``precision="auto"`` (bfloat16 where the CPU has it);
* **ONNX**: :meth:`~napari_deep_prl.model.onnx_model.OnnxModel.view_probabilities`.

Printed: lesions/s of each (median of ``--rounds`` alternating rounds after a warm-up), the ratio
of ONNX to each PyTorch run, the export time and the largest difference between the ONNX and
PyTorch float32 probabilities. Run: ``python benchmarks/bench_onnx.py [--threads 2] [--lesions 32]
[--rounds 3] [--work out/bench_onnx]``.
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
    parser.add_argument("--lesions", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("out/bench_onnx"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoints = ensemble()
    start = time.perf_counter()
    path, _ = export_onnx(checkpoints, args.work / "model.onnx")
    exported = time.perf_counter() - start
    model = OnnxModel.load(path)
    x = synthetic_patches(3, 28, n=args.lesions, seed=1)
    auto = precision_name(resolve_precision("auto", torch.device("cpu")))
    runs = {
        "PyTorch float32": lambda: torch_view_probabilities(checkpoints, x, device="cpu", precision="float32"),
        f"PyTorch default ({auto})": lambda: torch_view_probabilities(checkpoints, x, device="cpu"),
        "ONNX (onnxruntime, float32)": lambda: model.view_probabilities(x, device="cpu"),
    }
    results = {name: run() for name, run in runs.items()}  # warm-up, and the outputs compared
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            begin = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - begin)
    rates = {name: args.lesions / statistics.median(times) for name, times in seconds.items()}
    onnx_name, float_name = "ONNX (onnxruntime, float32)", "PyTorch float32"
    print(f"3 default-preset networks x 8 views (24 passes a lesion), {args.lesions} lesions of 28^3, "
          f"batches of {INFERENCE_BATCH}, {args.threads} thread(s); median of {args.rounds} rounds")
    print(f"export: {exported:.1f} s, {path.stat().st_size / 1e6:.2f} MB")
    for name, rate in rates.items():
        ratio = "" if name == onnx_name else f"   ONNX / this: {rates[onnx_name] / rate:.2f} x"
        print(f"{name:>30}: {rate:7.1f} lesions/s{ratio}")
    worst = float(np.abs(results[onnx_name] - results[float_name]).max())
    print(f"largest |ONNX - PyTorch float32| of a view probability: {worst:.1e}")


if __name__ == "__main__":
    main()
