"""Training throughput of Deep-PRL on this machine, against its float32 matmul rate.

Runs the real training loop (:func:`napari_deep_prl.model.train.train`: class-balanced batches of 32,
augmentation, focal loss, Adam) on random 28³ patches and times the training steps only
(between the first and the last batch of the epoch; the first steps warm up). Prints patches/s,
the achieved GFLOP/s (the model's training FLOPs per patch, see
:func:`napari_deep_prl.model.network.flops_per_patch`, times patches/s) and that rate as a fraction of
the float32 matmul rate measured in the same run (2048² matrices, best of before/after) — in
float32 and in the precision training uses by default (``precision="auto"``: bfloat16 on a CPU
that computes it natively, with the bfloat16 matmul rate printed for context).
Then the bound that the convolutions set: each of the model's convolutions timed alone, forward
and backward, at its shape in the model (:func:`timing.convolution_seconds`) — the rate the
whole step could reach if batch norm, activations, pooling and the optimiser cost nothing.

Target (issue 3): the default preset trains at >= 50 % of the matmul rate. The paper preset's
figures are printed for the record. Run: ``python benchmarks/bench_train.py [--steps N]``.
Timings taken while other processes use the cores are pessimistic.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from timing import convolution_seconds

from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.inference import precision_name, resolve_precision
from napari_deep_prl.model.network import (
    PRESETS,
    DeepPRL,
    count_parameters,
    flops_per_patch,
)
from napari_deep_prl.model.train import TrainConfig, train


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def random_patches(n: int, size: int = 28, seed: int = 0) -> PatchSet:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, size, size, size), dtype=np.float32)
    y = (np.arange(n) % 5 == 0).astype(np.int8)
    subject = np.array([f"sub-{i % 8}" for i in range(n)], dtype=object)
    return PatchSet(x, y, subject, np.arange(n), np.zeros(n, bool), PatchConfig(size=size))


def training_rate(preset: str, precision: str, steps: int, batch_size: int, warmup: int = 2) -> float:
    """Patches per second over the timed training steps of one epoch (``warmup`` >= 1)."""
    patches = random_patches(max(64, batch_size * 2))
    config = TrainConfig(epochs=1, batch_size=batch_size, samples_per_epoch=(steps + warmup) * batch_size,
                         device="cpu", model=PRESETS[preset], precision=precision)
    stamps = []
    for event in train(patches, config, val_subjects=["sub-0"]):
        if event.stage == "batch":
            stamps.append(time.perf_counter())
    # stamps[i] ends step i; the timed steps run from the end of the last warm-up step.
    return steps * batch_size / (stamps[-1] - stamps[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps of the default preset (12)")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed steps of the paper preset (3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    default = precision_name(resolve_precision("auto", torch.device("cpu")))
    precisions = ("float32",) if default == "float32" else ("float32", default)
    before = matmul_gflops()
    rates = {("default", p): training_rate("default", p, args.steps, args.batch_size) for p in precisions}
    if args.paper_steps:
        rates |= {("paper", p): training_rate("paper", p, args.paper_steps, args.batch_size, warmup=1)
                  for p in precisions}
    peak = max(before, matmul_gflops())
    print(f"float32 matmul: {peak:.1f} GFLOP/s; training's default precision here: {default}"
          + (f" (bfloat16 matmul: {matmul_gflops(dtype=torch.bfloat16):.1f} GFLOP/s)" if default != "float32" else ""))
    for (preset, precision), rate in rates.items():
        config = PRESETS[preset]
        flops = flops_per_patch(config, training=True)
        achieved = rate * flops / 1e9
        print(f"{preset:8s} {precision:9s} {count_parameters(DeepPRL(config)):>10,} params  "
              f"{flops_per_patch(config) / 1e9:6.3f} GFLOP fwd/patch  {flops / 1e9:6.3f} GFLOP train/patch  "
              f"{rate:7.1f} patches/s  {achieved:6.1f} GFLOP/s = {achieved / peak:5.1%} of float32 matmul")
    batch = torch.rand(args.batch_size, 3, 28, 28, 28)
    conv, first = convolution_seconds(DeepPRL(PRESETS["default"]), batch, backward=True)
    flops = flops_per_patch(PRESETS["default"], training=True) * args.batch_size
    print(f"default  float32 convolutions alone (forward + backward, each timed on its own): "
          f"{args.batch_size / conv:.1f} patches/s = {flops / conv / 1e9 / peak:.1%} of matmul at "
          f"best; those at full resolution (the first block) take {first / conv:.0%} of it")


if __name__ == "__main__":
    main()
