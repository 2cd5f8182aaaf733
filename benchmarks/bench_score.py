"""Scoring throughput: lesions per second, and one subject end to end versus loading it.

* Network throughput: PRL probabilities of 512 random 28³ patches with the default preset (one
  model, no TTA; then with the 8-view TTA), in batches of :data:`train.INFERENCE_BATCH` (8) —
  lesions/s, median of 5 passes after two warm-up passes.
* End to end: one simulated brain-sized subject (1 mm, 50 lesions) scored from its NIfTI files
  (load, find lesions, cut patches, predict, build the table) against only loading its images
  (phase, MP2RAGE, mask and the simulated PRL mask), medians of 9 alternating rounds (3 for
  TTA); with one view (the target's figure) and with the 8-view TTA that models trained by this
  version use by default; in the precision scoring uses by default (``precision="auto"``:
  bfloat16 on a CPU that computes it natively) and in float32.

Targets (issue 3): >= 200 lesions/s; end-to-end <= 2x the load time. A random-weight model is
used: the cost does not depend on the weights. Also printed: the bound that the convolutions set
(each timed alone at its shape in the model, :func:`timing.convolution_seconds`). Run:
``python benchmarks/bench_score.py [THREADS]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from timing import convolution_seconds, median_seconds

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.network import PRESETS, DeepPRL
from napari_deep_prl.model.inference import precision_name, resolve_precision
from napari_deep_prl.scoring.score import predict_patches, score_cohort
from napari_deep_prl.simulate import simulate_subject
from napari_deep_prl.simulate.cohort import write_subject

#: Rounds of (load, score one view) timings; the 8-view TTA is timed in the first three.
ROUNDS = 9


def main() -> None:
    if len(sys.argv) > 1:  # optional: number of torch threads
        torch.set_num_threads(int(sys.argv[1]))
    default = precision_name(resolve_precision("auto", torch.device("cpu")))
    precisions = ("float32",) if default == "float32" else (default, "float32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; scoring's default precision here: {default}")
    torch.manual_seed(0)
    checkpoint = Checkpoint(DeepPRL(PRESETS["default"]).eval(), 0.5, PatchConfig())
    # End to end first, as in a `deep-prl score` process: the large batches below leave the
    # allocator in another state (about 5-10 % slower subject scoring afterwards).
    end_to_end(checkpoint, precisions)
    network_throughput(checkpoint, precisions)


def end_to_end(checkpoint: Checkpoint, precisions: tuple[str, ...]) -> None:
    sim = simulate_subject(0, n_lesions=50, voxel_size=(1.0, 1.0, 1.0), fov_mm=(160.0, 192.0, 160.0))
    runs = [(p, False) for p in precisions] + [(precisions[0], True)]  # TTA in the default precision

    def score(precision: str, tta: bool) -> float:
        return median_seconds(lambda: run_to_end(score_cohort([paths], [checkpoint], tta=tta, device="cpu",
                                                              precision=precision)), repeats=1)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_subject(sim, Path(tmp))
        subject = paths.load()
        with warnings.catch_warnings():  # a few lesions outgrow the patch: irrelevant to the timing
            warnings.simplefilter("ignore")
            scores = run_to_end(score_cohort([paths], [checkpoint], tta=False, device="cpu"))  # warm-up
            # Loading and scoring alternate, so both see the same machine state (disk cache, load).
            load, times = [], {run: [] for run in runs}
            for round_ in range(ROUNDS):
                load.append(median_seconds(lambda: paths.load(), repeats=1))
                for run in runs if round_ < 3 else runs[:-1]:
                    times[run].append(score(*run))
    n, load_s = len(scores.lesions), statistics.median(load)
    print(f"subject grid {subject.shape}, {n} lesions")
    print(f"load its NIfTI files:      {load_s * 1000:7.1f} ms")
    for (precision, tta), seconds in ((run, statistics.median(t)) for run, t in times.items()):
        print(f"score end to end, {precision:8s}, {'8-view TTA (default)' if tta else 'one view (--no-tta)'}: "
              f"{seconds * 1000:7.1f} ms = {seconds / load_s:.2f} x load time "
              f"({n / seconds:.0f} lesions/s including loading)")


def network_throughput(checkpoint: Checkpoint, precisions: tuple[str, ...]) -> None:
    x = np.random.default_rng(0).random((512, 3, 28, 28, 28), dtype=np.float32)
    for _ in range(2):  # warm-up: the allocator settles over the first passes (about 1.3x slower)
        predict_patches([checkpoint], x, device="cpu")
    for precision in precisions:
        for tta in (False, True):
            n = len(x) if not tta else 128
            seconds = median_seconds(lambda: predict_patches([checkpoint], x[:n], tta=tta, device="cpu",
                                                             precision=precision), repeats=5)
            print(f"network, {precision:8s}, {'8-view TTA' if tta else 'one view  '}: {n / seconds:7.1f} lesions/s")
    fast = checkpoint.inference_model(torch.device("cpu"))  # what predict_patches runs
    conv, first = convolution_seconds(fast, torch.from_numpy(x[:64]), backward=False)
    print(f"float32 convolutions alone (each timed on its own): {64 / conv:7.1f} lesions/s at best; those "
          f"at full resolution (the first block) take {first / conv:.0%} of it")


if __name__ == "__main__":
    main()
