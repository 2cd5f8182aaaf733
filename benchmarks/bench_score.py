"""Scoring: the default model's speed and held-out quality, the screened default against every view.

One three-network cross-fitted ensemble (what ``deep-prl train`` ships, each network calibrated
on the 8 axis flips), trained on simulated patients, is scored two ways:

* **every view** (the previous default, ``deep-prl score --tta``): every lesion on all 8 flips
  of every network, 24 passes per lesion;
* **screened** (the default): every lesion as cut by every network, and on its other flips only
  when that first look does not put it below half the decision threshold
  (:data:`napari_deep_prl.model.inference.SCREEN_SHARE`), a lesion below ranked on the median
  of those first looks; the share of lesions scored on every view is printed.

Printed side by side:

* **end to end**: one simulated brain-sized subject (1 mm, 160 × 192 × 160, 39 lesions of which
  4 PRLs: ``--subject-seed 6``) scored from its NIfTI files by ``score_cohort`` (load, find
  lesions, cut patches, predict, build the table, as ``deep-prl score`` does) against only
  loading its images (phase, MP2RAGE, mask and PRL mask); medians of ``--rounds`` alternating
  rounds, in the precision scoring uses by default. Target: the default ≤ 4 × the load time.
* **held-out quality**: both score the held-out cohort (subjects neither trained nor validated
  on) through ``score_cohort``; ROC AUC, F1, sensitivity and PPV of the non-confluent lesions
  at the model's threshold (:func:`~napari_deep_prl.scoring.score.truth_metrics`). Target: the
  default no worse than every view. Where ROC AUC loses, the (PRL, non-PRL) pairs each way ranks
  wrongly are counted by the side of the screen each lesion lies on.
* **network throughput**: random 28³ patches through one default-preset network, one view and
  8 views, in the default precision and in float32, lesions/s (median of 5 passes after two
  warm-up passes).

Training is short (``--epochs``, 640 class-balanced samples each) to keep the run near 10
minutes on 2 idle cores; the simulated cohorts and the trained model are kept in ``--work``, and
a later run with the same cohort and epochs scores that model again without training. Run:
``python benchmarks/bench_score.py [--threads N] [--epochs 8] [--train-subjects 24]
[--held-out 24] [--work out/bench_score]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timing import median_seconds

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import open_cohort
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, patch_runs
from napari_deep_prl.model.checkpoint import Checkpoint, load_models, save_ensemble
from napari_deep_prl.model.crossfit import train_crossfitted
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.inference import (
    SCREEN_SHARE,
    precision_name,
    predict,
    resolve_precision,
    view_probabilities,
)
from napari_deep_prl.model.network import PRESETS, DeepPRL
from napari_deep_prl.model.train import TrainConfig
from napari_deep_prl.scoring.score import (
    decision_threshold,
    score_cohort,
    truth_metrics,
)
from napari_deep_prl.simulate import simulate_cohort, simulate_subject
from napari_deep_prl.simulate.cohort import write_subject


def cohort(folder: Path, subjects: int, seed: int) -> Path:
    """A simulated cohort's manifest, simulated once into ``folder``."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        run_to_end(simulate_cohort(folder, subjects, seed, prl_fraction=0.10, contrasts=()))
    return manifest


#: The two ways of scoring compared: ``score_cohort``'s ``tta`` argument.
WAYS = {"every view (previous default)": True, "screened (default)": None}


def train_model(manifest: Path, epochs: int, saved: Path) -> list[Checkpoint]:
    """The three cross-fitted networks, trained once and kept in ``saved`` for later runs."""
    if saved.exists():
        print(f"the model trained by an earlier run: {saved}", flush=True)
        return load_models(saved)
    patches = run_to_end(build_patchset(open_cohort(manifest), PatchConfig()))
    start = time.perf_counter()
    checkpoints = run_to_end(train_crossfitted(patches, TrainConfig(epochs=epochs), 3)).checkpoints
    print(f"trained 3 cross-fitted networks on {len(patches.originals())} lesions ({int(patches.originals().y.sum())} "
          f"PRL), {epochs} epochs, in {time.perf_counter() - start:.0f} s", flush=True)
    save_ensemble(checkpoints, saved)
    return checkpoints


def onward(subjects: list[SubjectPaths], checkpoints: list[Checkpoint]) -> np.ndarray:
    """Whether the screen sends each lesion on to every view, in the order scoring lists them."""
    screen = SCREEN_SHARE * decision_threshold(checkpoints)
    scored = [np.isfinite(view_probabilities(checkpoints, x, screen=screen)).all(0)
              for paths in subjects for subject in [paths.load()]
              for x in patch_runs(subject, find_lesions(subject), checkpoints[0].patch_config)]
    return np.concatenate(scored)


def discordant_pairs(lesions: pd.DataFrame, on: np.ndarray) -> dict[str, float]:
    """Where the pairs that ROC AUC counts against a ranking lie: (PRL, non-PRL) pairs of the
    non-confluent lesions ranked the wrong way round (ties half), by the side of the screen of
    each lesion."""
    known = (~lesions["confluent"].astype(bool)).to_numpy()
    truth, p, on = lesions["prl_truth"].to_numpy(bool)[known], lesions["prl_probability"].to_numpy()[known], on[known]
    positive, negative = p[truth][:, None], p[~truth][None, :]
    wrong = (positive < negative) + 0.5 * (positive == negative)
    sides = {"both below": (False, False), "PRL below, other above": (False, True),
             "PRL above, other below": (True, False), "both above": (True, True)}
    return {name: float(wrong[np.ix_(on[truth] == a, on[~truth] == b)].sum()) for name, (a, b) in sides.items()}


def quality(manifest: Path, checkpoints: list[Checkpoint]) -> dict[str, dict[str, float]]:
    on = onward(list(open_cohort(manifest)), checkpoints)
    figures = {}
    for name, tta in WAYS.items():
        lesions = run_to_end(score_cohort(open_cohort(manifest), checkpoints, tta=tta)).lesions
        metrics = truth_metrics(lesions)
        figures[name] = {"held-out ROC AUC": metrics["roc_auc"], "held-out F1": metrics["f1"],
                         "held-out sensitivity": metrics["sensitivity"], "held-out PPV": metrics["ppv"]}
        pairs = discordant_pairs(lesions, on)
        print(f"{name}: {sum(pairs.values()):.0f} (PRL, non-PRL) pairs ranked the wrong way, by the screen's side: "
              + ", ".join(f"{side} {count:.0f}" for side, count in pairs.items()), flush=True)
    print(f"held out: {metrics['tp'] + metrics['fn']} PRLs of {sum(metrics[k] for k in ('tp', 'fp', 'fn', 'tn'))} "
          f"non-confluent lesions; the screen sent {on.mean():.0%} of the lesions on to every view", flush=True)
    return figures


def end_to_end(folder: Path, checkpoints: list[Checkpoint], seed: int, rounds: int) -> dict[str, dict[str, float]]:
    sim = simulate_subject(seed, n_lesions=40, voxel_size=(1.0, 1.0, 1.0), fov_mm=(160.0, 192.0, 160.0),
                           contrasts=())
    paths = write_subject(sim, folder)
    for tta in WAYS.values():  # warm-up, as a `deep-prl score` process's first subject
        scores = run_to_end(score_cohort([paths], checkpoints, tta=tta))
    load, times = [], {name: [] for name in WAYS}
    for _ in range(rounds):  # alternating, so that both see the same machine state
        load.append(median_seconds(paths.load, repeats=1))
        for name, tta in WAYS.items():
            times[name].append(median_seconds(lambda tta=tta: run_to_end(score_cohort([paths], checkpoints, tta=tta)),
                                              repeats=1))
    n, load_s = len(scores.lesions), statistics.median(load)
    print(f"end to end: subject grid {sim.subject.shape}, {n} lesions ({int(scores.lesions['prl_truth'].sum())} PRL), "
          f"the screen sent {onward([paths], checkpoints).mean():.0%} of them on to every view; loading its "
          f"NIfTI files {load_s * 1000:.0f} ms (median of {rounds})")
    return {name: {"end to end / load": statistics.median(t) / load_s, "lesions/s end to end": n / statistics.median(t),
                   "end to end ms": 1000 * statistics.median(t)} for name, t in times.items()}


def network_throughput() -> None:
    torch.manual_seed(0)
    checkpoint = Checkpoint(DeepPRL(PRESETS["default"]).eval(), 0.5, PatchConfig())
    x = np.random.default_rng(0).random((512, 3, 28, 28, 28), dtype=np.float32)
    for _ in range(2):  # warm-up: the allocator settles over the first passes
        predict([checkpoint], x, device="cpu")
    default = precision_name(resolve_precision("auto", torch.device("cpu")))
    for precision in dict.fromkeys((default, "float32")):
        for tta in (False, True):
            n = len(x) if not tta else 128
            seconds = median_seconds(lambda n=n, tta=tta, precision=precision: predict(
                [checkpoint], x[:n], tta=tta, device="cpu", precision=precision), repeats=5)
            print(f"network throughput, one default-preset network, {precision}, {'8 views' if tta else 'one view'}: "
                  f"{n / seconds:.0f} lesions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-subjects", type=int, default=24)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--subject-seed", type=int, default=6, help="the end-to-end subject (6: 39 lesions, 4 PRL)")
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
        checkpoints = train_model(training, args.epochs,
                                  args.work / f"model-{args.train_subjects}-seed{args.seed}-{args.epochs}-epochs.pt")
        figures = quality(held_out, checkpoints)
        speed = end_to_end(args.work / "subject", checkpoints, args.subject_seed, args.rounds)
    rows = ["end to end / load", "lesions/s end to end", "end to end ms",
            "held-out ROC AUC", "held-out F1", "held-out sensitivity", "held-out PPV"]
    print(f"\n{'':24s}" + "".join(f"{name:>34s}" for name in WAYS))
    for row in rows:
        print(f"{row:24s}" + "".join(f"{({**speed[name], **figures[name]})[row]:34.3f}" for name in WAYS))
    network_throughput()
    print(f"run time {(time.perf_counter() - started) / 60:.1f} min (target of the default: end to end <= 4 x load, "
          "held-out quality no worse than every view)")


if __name__ == "__main__":
    main()
