"""Scoring: the default model's speed and held-out quality, today's default against the previous one.

Both are a three-network cross-fitted ensemble (what ``deep-prl train`` ships), trained in this
run with the same seed on the same simulated patients, so their weights are the same (checked
and printed); they differ only in the views each network is calibrated on and scored on:

* **previous default**: every network on all 8 flips of each patch (24 passes per lesion),
  ``TrainConfig(views=TTA_VIEWS)``;
* **default**: each network on one view of its own (3 passes per lesion,
  :func:`napari_deep_prl.model.inference.member_views`), as ``deep-prl train`` now trains.

Printed side by side:

* **end to end**: one simulated brain-sized subject (1 mm, 160 × 192 × 160, ``--lesions``
  lesions) scored from its NIfTI files by ``score_cohort`` (load, find lesions, cut patches,
  predict, build the table, as ``deep-prl score`` does) against only loading its images (phase,
  MP2RAGE, mask and PRL mask); medians of ``--rounds`` alternating rounds, in the precision
  scoring uses by default. Target: the default model ≤ 4 × the load time (issue 32).
* **held-out quality**: both models score the held-out cohort (subjects neither trained nor
  validated on) through ``score_cohort``; ROC AUC, F1, sensitivity and PPV of the non-confluent
  lesions at each model's own threshold (:func:`~napari_deep_prl.scoring.score.truth_metrics`).
  Target: the default no worse than the previous default.
* **network throughput**: random 28³ patches through one default-preset network, one view and
  8 views, lesions/s (median of 5 passes after two warm-up passes).

Training is short (``--epochs``, 640 class-balanced samples each) to keep the run near 15
minutes on 2 idle cores; the simulated cohorts are kept in ``--work`` for later runs. Run:
``python benchmarks/bench_score.py [--threads N] [--epochs 8] [--train-subjects 24]
[--held-out 24] [--lesions 40] [--work out/bench_score]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import open_cohort
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.crossfit import train_crossfitted
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.inference import (
    TTA_VIEWS,
    describe_views,
    precision_name,
    predict,
    resolve_precision,
)
from napari_deep_prl.model.network import PRESETS, DeepPRL
from napari_deep_prl.model.train import TrainConfig
from napari_deep_prl.scoring.score import score_cohort, truth_metrics
from napari_deep_prl.simulate import simulate_cohort, simulate_subject
from napari_deep_prl.simulate.cohort import write_subject


def cohort(folder: Path, subjects: int, seed: int) -> Path:
    """A simulated cohort's manifest, simulated once into ``folder``."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        run_to_end(simulate_cohort(folder, subjects, seed, prl_fraction=0.10, contrasts=()))
    return manifest


def train_both(manifest: Path, epochs: int) -> dict[str, list[Checkpoint]]:
    """The previous and the current default ensemble, trained with the same seed."""
    patches = run_to_end(build_patchset(open_cohort(manifest), PatchConfig()))
    config = TrainConfig(epochs=epochs)
    models = {}
    for name, views in (("previous default", TTA_VIEWS), ("default", None)):
        start = time.perf_counter()
        models[name] = run_to_end(train_crossfitted(patches, replace(config, views=views), 3)).checkpoints
        print(f"trained the {name} ({describe_views(models[name])}) in {time.perf_counter() - start:.0f} s",
              flush=True)
    same = all(torch.equal(a, b) for old, new in zip(*models.values(), strict=True)
               for a, b in zip(old.model.state_dict().values(), new.model.state_dict().values(), strict=True))
    print(f"{len(patches.originals())} training lesions ({int(patches.originals().y.sum())} PRL); the same weights "
          f"in both: {same}")
    return models


def quality(manifest: Path, models: dict[str, list[Checkpoint]]) -> dict[str, dict[str, float]]:
    figures = {}
    for name, checkpoints in models.items():
        scores = run_to_end(score_cohort(open_cohort(manifest), checkpoints))
        metrics = truth_metrics(scores.lesions)
        figures[name] = {"held-out ROC AUC": metrics["roc_auc"], "held-out F1": metrics["f1"],
                         "held-out sensitivity": metrics["sensitivity"], "held-out PPV": metrics["ppv"]}
        held = metrics["tp"] + metrics["fn"], sum(metrics[k] for k in ("tp", "fp", "fn", "tn"))
    print(f"held out: {held[0]} PRLs of {held[1]} non-confluent lesions")
    return figures


def end_to_end(folder: Path, models: dict[str, list[Checkpoint]], lesions: int,
               rounds: int) -> dict[str, dict[str, float]]:
    sim = simulate_subject(0, n_lesions=lesions, voxel_size=(1.0, 1.0, 1.0), fov_mm=(160.0, 192.0, 160.0),
                           contrasts=())
    paths = write_subject(sim, folder)
    for checkpoints in models.values():  # warm-up, as a `deep-prl score` process's first subject
        scores = run_to_end(score_cohort([paths], checkpoints))
    load, times = [], {name: [] for name in models}
    for _ in range(rounds):  # alternating, so that both see the same machine state
        load.append(median_seconds(paths.load, repeats=1))
        for name, checkpoints in models.items():
            times[name].append(median_seconds(lambda c=checkpoints: run_to_end(score_cohort([paths], c)), repeats=1))
    n, load_s = len(scores.lesions), statistics.median(load)
    print(f"end to end: subject grid {sim.subject.shape}, {n} lesions; loading its NIfTI files "
          f"{load_s * 1000:.0f} ms (median of {rounds})")
    return {name: {"end to end / load": statistics.median(t) / load_s, "lesions/s end to end": n / statistics.median(t),
                   "end to end ms": 1000 * statistics.median(t)} for name, t in times.items()}


def network_throughput() -> None:
    torch.manual_seed(0)
    checkpoint = Checkpoint(DeepPRL(PRESETS["default"]).eval(), 0.5, PatchConfig())
    x = np.random.default_rng(0).random((512, 3, 28, 28, 28), dtype=np.float32)
    for _ in range(2):  # warm-up: the allocator settles over the first passes
        predict([checkpoint], x, device="cpu")
    for tta in (False, True):
        n = len(x) if not tta else 128
        seconds = median_seconds(lambda n=n, tta=tta: predict([checkpoint], x[:n], tta=tta, device="cpu"), repeats=5)
        print(f"network throughput, one default-preset network, {'8 views' if tta else 'one view'}: "
              f"{n / seconds:.0f} lesions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-subjects", type=int, default=24)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--lesions", type=int, default=40, help="lesions of the end-to-end subject (40)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11, help="cohort seed (11; the held-out cohort: seed + 1)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_score"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; scoring's default precision here: "
          f"{precision_name(resolve_precision('auto', torch.device('cpu')))}", flush=True)
    with warnings.catch_warnings():  # a few simulated lesions outgrow the patch: irrelevant here
        warnings.simplefilter("ignore")
        training = cohort(args.work / f"train-{args.train_subjects}-seed{args.seed}", args.train_subjects, args.seed)
        held_out = cohort(args.work / f"held-out-{args.held_out}-seed{args.seed + 1}", args.held_out, args.seed + 1)
        models = train_both(training, args.epochs)
        figures = quality(held_out, models)
        speed = end_to_end(args.work / "subject", models, args.lesions, args.rounds)
    rows = ["end to end / load", "lesions/s end to end", "end to end ms",
            "held-out ROC AUC", "held-out F1", "held-out sensitivity", "held-out PPV"]
    print(f"\n{'':24s}" + "".join(f"{name + ' (' + describe_views(c) + ')':>40s}" for name, c in models.items()))
    for row in rows:
        print(f"{row:24s}" + "".join(f"{({**speed[n], **figures[n]})[row]:40.3f}" for n in models))
    network_throughput()
    print(f"run time {(time.perf_counter() - started) / 60:.1f} min (target of the default: end to end <= 4 x load, "
          "held-out quality no worse than the previous default)")


if __name__ == "__main__":
    main()
