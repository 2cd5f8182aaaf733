"""Learning in the app: fine-tuning time, scoring in the viewer, and an active-learning simulation.

``finetune``  fine-tune the default preset (28³ patches) on 300 labelled lesions (8 % PRLs, each
              PRL oversampled ×7 as in training) for 10 epochs of one draw per label (as
              :func:`napari_deep_prl.active.finetune.finetune`) — target ≤ 2 min on 2 CPU cores.
``viewer``    one simulated subject with 50 lesions open in napari (run under Xvfb): time from
              the model panel's Score to the layer and table filled — target ≤ 3 s.
``simulate``  a simulated rater answers from the synthetic truth. Subjects are split into a
              labelling pool, validation subjects (labelled for every strategy: best-epoch
              choice) and test subjects, each dealt its share of the PRL-rich subjects. A model
              is trained from scratch on a small seed set of pool labels; then, as in the app,
              each strategy picks the next ``K`` lesions, the current model is fine-tuned on all
              labels so far (a new version from the previous one), and test ROC AUC / F1 are
              recorded. Every strategy of a seed set starts from the same seed-set model, so
              their curves differ only by what they chose. The reference is the seed-set model
              fine-tuned on every pool label for as many steps as a whole run of rounds. The
              curves go to ``docs/images/active_learning.png``; reported: pool labels each
              strategy needs to reach 95 % of the reference AUC (target: the uncertainty order
              ≤ 60 % of what random needs), read off the curves averaged over ``--repeats`` seed
              sets and interpolated between rounds. 16³ patches of 1.5 mm subjects and the
              default preset with dropout 0.3 (for MC dropout, :func:`mc_dropout_samples`:
              this study's uncertainty, which the package's scoring does not offer) keep it
              CPU-sized; the settings are printed with the results.

Run: ``python benchmarks/bench_active.py {finetune,simulate,report}``, ``xvfb-run -a python
benchmarks/bench_active.py viewer``. Seconds measured while others share the cores are
pessimistic.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from napari_deep_prl.active import strategies as active
from napari_deep_prl.active.finetune import per_label_epochs
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.dataset import PatchSet, build_patchset
from napari_deep_prl.model.inference import (
    from_samples,
    resolve_device,
    view_probabilities,
)
from napari_deep_prl.model.metrics import metrics_from_predictions, roc_auc
from napari_deep_prl.model.network import PRESETS, DeepPRL
from napari_deep_prl.model.train import TrainConfig, train
from napari_deep_prl.simulate import simulate_cohort, simulate_subject

ROOT = Path(__file__).resolve().parents[1]
MC_SAMPLES = 4


# -- fine-tuning time -----------------------------------------------------------------------

def bench_finetune(lesions: int = 300, epochs: int = 10) -> None:
    """Wall and CPU seconds (CPU time: what dedicated cores would take, when others share)."""
    rng = np.random.default_rng(0)
    y = (np.arange(lesions) % 12 == 0).astype(np.int8)  # 25 PRLs of 300 (8 %)
    copies = np.concatenate([np.arange(lesions), np.repeat(np.flatnonzero(y), 6)])
    n = copies.size
    subjects = np.array([f"sub-{i % 10}" for i in copies], dtype=object)
    patches = PatchSet(rng.random((n, 3, 28, 28, 28), dtype=np.float32), y[copies], subjects,
                       copies.astype(np.int64), np.arange(n) >= lesions, PatchConfig())
    parent = Checkpoint(DeepPRL(PRESETS["default"]), 0.5, PatchConfig(), {})
    config = per_label_epochs(TrainConfig(epochs=epochs, device="cpu"), lesions)  # as finetune()
    start, cpu = time.perf_counter(), time.process_time()
    result = run_to_end(train(patches, config, val_subjects=["sub-0", "sub-1"], init=parent))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    scale = 10 / epochs
    print(f"fine-tuning, default preset, 28³ patches: {lesions} labelled lesions ({int(y.sum())} "
          f"PRLs, {n} patches with oversampling), {epochs} epochs of "
          f"{result.checkpoint.metadata['training']['steps_per_epoch']} batches of 32, "
          f"{torch.get_num_threads()} thread(s): {seconds:.1f} s wall, {cpu:.1f} s CPU; "
          f"for 10 epochs: {seconds * scale:.0f} s wall, {cpu * scale:.0f} s CPU "
          "(target <= 120 s on 2 cores)")


# -- scoring in the viewer --------------------------------------------------------------------

def bench_viewer(repeats: int = 3) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_deep_prl._napari.layers import subject_layers
    from napari_deep_prl._napari.model.model_widget import ModelPanel

    subject = simulate_subject(0, voxel_size=(1.0, 1.0, 1.0), n_lesions=50).subject
    viewer = napari.Viewer(show=False)
    for data, kwargs, kind in subject_layers(subject):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    panel = ModelPanel(viewer)
    panel.state.use_model(Checkpoint(DeepPRL(PRESETS["default"]), 0.5, PatchConfig(), {}))
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        done: list[bool] = []
        panel.score_subject().worker.finished.connect(lambda done=done: done.append(True))
        while not done:
            QApplication.processEvents()
            time.sleep(0.002)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    print(f"viewer scoring, {subject.shape} grid, {len(panel.scores)} lesions, default "
          f"preset, one pass, {torch.get_num_threads()} thread(s): median {np.median(times):.2f} s "
          f"wall, {np.median(cpu):.2f} s CPU, of {repeats} (target <= 3 s)")
    viewer.close()


# -- active-learning simulation -----------------------------------------------------------------

def simulated_patches(folder: Path, subjects: int, size: int, prl_fraction: float,
                      seed: int) -> PatchSet:
    manifest = run_to_end(simulate_cohort(folder, subjects, seed=seed, prl_fraction=prl_fraction,
                                          voxel_size=(1.5, 1.5, 1.5), n_lesions=24))
    return run_to_end(build_patchset(read_manifest(manifest), PatchConfig(size=size),
                                     oversample_shift=2))


def split_subjects(patches: PatchSet, n_test: int, n_val: int
                   ) -> tuple[list[str], list[str], list[str]]:
    """Validation, test and pool subjects, dealt out in order of PRL count so that each part
    gets its share of the PRL-rich subjects (a test or validation set with a handful of PRLs
    makes every AUC, and every best-epoch choice, a coin toss)."""
    originals = patches.originals()
    counts = pd.Series(originals.y, index=originals.subject).groupby(level=0).sum()
    ranked = counts.sort_values(ascending=False, kind="stable").index.tolist()
    test = ranked[::max(1, len(ranked) // n_test)][:n_test]
    rest = [s for s in ranked if s not in test]
    val = rest[::max(1, len(rest) // n_val)][:n_val]
    return val, test, [s for s in rest if s not in val]


def fit(patches: PatchSet, val: PatchSet, labelled: set, config: TrainConfig,
        init: Checkpoint | None = None) -> Checkpoint:
    """Train (from ``init``, else from scratch) on the ``labelled`` lesions of ``patches``."""
    keys = list(zip(patches.subject, patches.lesion))
    keep = np.array([k in labelled for k in keys])
    both = patches.take(keep)
    both = replace(both, **{f: np.concatenate([getattr(both, f), getattr(val, f)])
                            for f in ("x", "y", "subject", "lesion", "shifted")})
    return run_to_end(train(both, config, val_subjects=val.subjects, init=init)).checkpoint


def evaluate(checkpoint: Checkpoint, test: PatchSet) -> dict[str, float]:
    probability = view_probabilities([checkpoint], test.x, tta=False, device="cpu")[0]
    f1 = metrics_from_predictions(test.y, probability, threshold=checkpoint.threshold)["f1"]
    return {"auc": roc_auc(test.y, probability), "f1": f1}


@contextmanager
def _dropout_on(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm frozen) with only the dropout layers sampling."""
    was_training = model.training
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    try:
        yield
    finally:
        model.train(was_training)


def mc_dropout_samples(checkpoint: Checkpoint, x: np.ndarray, *, n_samples: int, seed: int,
                       batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """The model's outputs (n_samples × lesions, calibrated like its scores) with its dropout
    layers sampling (MC dropout); seeded, reproducible."""
    torch_device = resolve_device(device)
    model = checkpoint.model.to(torch_device)
    out = np.empty((n_samples, len(x)), dtype=np.float64)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(), _dropout_on(model):
        torch.manual_seed(seed)
        for t in range(n_samples):
            for i in range(0, len(x), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(torch_device)
                out[t, i:i + batch_size] = torch.sigmoid(model(batch)).double().cpu().numpy()
    return checkpoint.calibrate(out)


def choose(strategy: str, checkpoint: Checkpoint, pool: PatchSet, labelled: set, k: int,
           seed: int) -> list[tuple[str, int]]:
    """The next ``k`` lesions the strategy asks for (through the queue's Strategy objects)."""
    candidates = pd.DataFrame({"subject": pool.subject, "lesion": pool.lesion})
    candidates["lesion_key"] = np.arange(len(candidates))
    open_rows = [i for i, key in enumerate(zip(pool.subject, pool.lesion)) if key not in labelled]
    candidates = candidates.iloc[open_rows]
    scores = None
    if strategy in active.MODEL_STRATEGIES:
        u = from_samples(mc_dropout_samples(checkpoint, pool.x[open_rows], n_samples=MC_SAMPLES, seed=seed))
        scores = candidates.assign(prl_probability=u.probability, bald=u.bald)
    ranked = active.make_strategy(strategy, scores, version=checkpoint.id, seed=seed
                                  ).rank(candidates)[:k]
    return [(pool.subject[i], int(pool.lesion[i])) for i in ranked]


def labels_to_reach(curve: pd.DataFrame, target: float) -> float:
    """Labels at which the (seed-averaged) curve first reaches ``target``, interpolated
    linearly between the rounds around the crossing (rounds are K labels apart)."""
    labels, auc = curve["labels"].to_numpy(float), curve["auc"].to_numpy(float)
    hit = np.flatnonzero(auc >= target)
    if not hit.size:
        return float("nan")
    i = hit[0]
    if i == 0:
        return labels[0]
    return float(np.interp(target, auc[i - 1:i + 1], labels[i - 1:i + 1]))


#: The queue orders compared: all but subject order.
STRATEGIES = tuple(name for name in active.STRATEGIES if name != "subject_order")


def cohort_patches(work: Path, subjects: int, size: int, prl_fraction: float,
                   seed: int) -> PatchSet:
    """A simulated cohort's patches, kept under ``work`` (plain arrays, no pickle) for later runs."""
    cached = work / f"patches-{subjects}-{size}-{prl_fraction:g}-seed{seed}.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as saved:
            return PatchSet(saved["x"], saved["y"], saved["subject"].astype(object),
                            saved["lesion"], saved["shifted"], PatchConfig(size=size))
    with tempfile.TemporaryDirectory() as tmp:
        patches = simulated_patches(Path(tmp) / "cohort", subjects, size, prl_fraction, seed)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cached, x=patches.x[:], y=patches.y, subject=patches.subject.astype(str),
             lesion=patches.lesion, shifted=patches.shifted)
    return patches


def source_model(args: argparse.Namespace, config: TrainConfig) -> Checkpoint:
    """The model a lab starts from: trained on another (smaller) simulated cohort."""
    source = cohort_patches(args.work, args.source_subjects, args.size, args.prl_fraction, 11)
    val_ids, _, _ = split_subjects(source, 1, max(2, args.source_subjects // 6))
    print(f"source cohort: {args.source_subjects} other subjects, {len(source.originals())} "
          f"lesions ({int(source.originals().y.sum())} PRLs); model from scratch "
          f"{config.epochs} epochs × {config.samples_per_epoch} samples", flush=True)
    return run_to_end(train(source, config, val_subjects=val_ids)).checkpoint


def bench_simulation(args: argparse.Namespace) -> None:
    patches = cohort_patches(args.work, args.subjects, args.size, args.prl_fraction, 7)
    val_ids, test_ids, pool_ids = split_subjects(patches, args.subjects // 4, args.val_subjects)
    val, test = patches.select(val_ids).originals(), patches.select(test_ids).originals()
    pool_all = patches.select(pool_ids)
    pool = pool_all.originals()
    scratch = TrainConfig(epochs=args.epochs, samples_per_epoch=args.samples, lr=1e-3,
                          device="cpu", model=replace(PRESETS["default"], dropout=0.3))
    # As in the app, a round keeps the previous model unless an epoch beats it on validation;
    # --move-on always takes the best fresh epoch (see TrainConfig.keep_start).
    step = replace(scratch, epochs=args.round_epochs, keep_start=not args.move_on)
    start = source_model(args, scratch)
    print(f"target cohort: {args.subjects} subjects (1.5 mm, 24 lesions, "
          f"{args.prl_fraction:.0%} PRL expected); pool {len(pool)} lesions ({int(pool.y.sum())} "
          f"PRLs), validation {len(val)} ({int(val.y.sum())} PRLs), test {len(test)} "
          f"({int(test.y.sum())} PRLs); {args.size}³ patches, default preset, dropout 0.3; "
          f"seed set {args.seed_labels} labels; rounds of {args.k} labels, each fine-tuning the "
          f"previous model {args.round_epochs} epochs × {args.samples} samples; MC dropout "
          f"{MC_SAMPLES} samples; {args.repeats} seed set(s); {torch.get_num_threads()} "
          "thread(s)", flush=True)
    print({"source model on the test subjects": evaluate(start, test)}, flush=True)
    everything = {(s, int(n)) for s, n in zip(pool.subject, pool.lesion)}
    rows, references = [], []
    for repeat in range(args.repeats):
        rng = np.random.default_rng(100 + repeat)
        positives = np.flatnonzero(pool.y == 1)
        first = set(rng.choice(positives, 2, replace=False)) | set(
            rng.choice(len(pool), args.seed_labels - 2, replace=False))
        seed_set = {(pool.subject[i], int(pool.lesion[i])) for i in first}
        base = fit(pool_all, val, seed_set, replace(step, seed=repeat), init=start)
        whole_run = replace(step, epochs=args.reference_epochs or args.round_epochs * args.rounds,
                            seed=repeat)
        references.append(evaluate(fit(pool_all, val, everything, whole_run, init=base), test))
        print({"reference": repeat, **references[-1]}, flush=True)
        for strategy in args.strategies:
            labelled, current = set(seed_set), base
            for round_ in range(args.rounds + 1):
                if round_:
                    labelled |= set(choose(strategy, current, pool, labelled, args.k,
                                           repeat + round_))
                    current = fit(pool_all, val, labelled,
                                  replace(step, seed=1000 * repeat + round_), init=current)
                picked = pool.y[[k in labelled for k in zip(pool.subject, pool.lesion)]]
                rows.append({"strategy": strategy, "repeat": repeat, "labels": len(labelled),
                             "prl_labels": int(picked.sum()), **evaluate(current, test)})
                print(rows[-1], flush=True)
    table, reference = pd.DataFrame(rows), pd.DataFrame(references).assign(labels=len(pool))
    saved = args.work / "active_learning_rounds.csv"
    if args.append and saved.exists():  # replace only the strategies run now
        earlier = pd.read_csv(saved)
        table = pd.concat([earlier[~earlier["strategy"].isin(args.strategies)], table])
        reference = pd.read_csv(args.work / "active_learning_reference.csv")
    table.to_csv(saved, index=False)
    reference.to_csv(args.work / "active_learning_reference.csv", index=False)
    report(args.work, args.out)


def report(work: Path, out: Path) -> None:
    """Curves (PNG) and the labels-to-95 % figures from the tables a simulation left in ``work``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = pd.read_csv(work / "active_learning_rounds.csv")
    full = float(pd.read_csv(work / "active_learning_reference.csv")["auc"].mean())
    pool_size = int(pd.read_csv(work / "active_learning_reference.csv")["labels"].iloc[0])
    curves = rounds.groupby(["strategy", "labels"], as_index=False)[["auc", "f1", "prl_labels"]].mean()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), tight_layout=True)
    for strategy, curve in curves.groupby("strategy"):
        for ax, metric in zip(axes, ("auc", "f1", "prl_labels")):
            ax.plot(curve["labels"], curve[metric], "-o", markersize=3, label=strategy)
    axes[0].axhline(full, color="grey", ls="--", lw=1, label=f"all {pool_size} labels")
    axes[0].axhline(0.95 * full, color="grey", ls=":", lw=1, label="95 % of that")
    for ax, name in zip(axes, ("test ROC AUC", "test F1", "PRLs among the labels")):
        ax.set_xlabel("labelled pool lesions")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"mean of {rounds['repeat'].nunique()} seed sets", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(curves.to_string(index=False))
    target = 0.95 * full
    most = curves.groupby("strategy")["labels"].max()
    print(f"all-label AUC {full:.3f}; labels needed to reach 95 % of it ({target:.3f}):")
    seed_auc = curves.loc[curves["labels"] == curves["labels"].min(), "auc"].mean()
    if seed_auc >= target:
        print(f"  (degenerate: the seed set alone reaches {seed_auc:.3f})")
    needed = {s: labels_to_reach(c, target) for s, c in curves.groupby("strategy")}
    random = needed.get("random", float("nan"))
    for strategy, n in needed.items():
        if np.isnan(n):
            print(f"  {strategy:13s} not within {most[strategy]} labels")
        elif not np.isnan(random):
            print(f"  {strategy:13s} {n:6.0f}  ({n / random:.0%} of random)")
        elif "random" in most:
            print(f"  {strategy:13s} {n:6.0f}  (< {n / most['random']:.0%} of random, which "
                  f"needs more than {most['random']})")
    budget = int(most.min())  # the largest number of labels every strategy was run to
    last = curves[curves["labels"] == budget].set_index("strategy")
    print(f"at {budget} labels: " + "; ".join(
        f"{name} AUC {row.auc:.3f}, {row.prl_labels:.1f} PRLs among the labels"
        for name, row in last.iterrows()))
    print(f"curves: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("finetune", "viewer", "simulate", "report"),
                        help="report: curves and figures again from the tables of a simulation")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--val-subjects", type=int, default=4)
    parser.add_argument("--source-subjects", type=int, default=12,
                        help="subjects of the cohort the starting model is trained on (12)")
    parser.add_argument("--prl-fraction", type=float, default=0.10,
                        help="expected PRL fraction of the simulated lesions (0.10)")
    parser.add_argument("--seed-labels", type=int, default=10)
    parser.add_argument("-k", type=int, default=10, help="labels per round (10)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--reference-epochs", type=int, default=None,
                        help="fine-tuning epochs of the all-label reference (default: as many "
                             "as a whole run of rounds)")
    parser.add_argument("--append", action="store_true",
                        help="keep the other strategies' rows (and the reference) of the "
                             "previous run in --work, e.g. to run random further")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs: of fine-tuning time (10), of the seed-set model (12)")
    parser.add_argument("--round-epochs", type=int, default=3,
                        help="epochs of fine-tuning per round (3)")
    parser.add_argument("--samples", type=int, default=320, help="training samples per epoch")
    parser.add_argument("--move-on", action="store_true",
                        help="each round takes its best fresh epoch, even when the previous model "
                             "scored higher on validation")
    parser.add_argument("--size", type=int, default=16, help="patch side in voxels (16)")
    parser.add_argument("--repeats", type=int, default=3, help="seed sets averaged (3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 when the cores are shared)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deep-prl-bench-active"),
                        help="simulated cohort (reused) and the per-round table")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/active_learning.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "finetune":
        bench_finetune(epochs=args.epochs or 10)
    elif args.part == "viewer":
        bench_viewer()
    elif args.part == "report":
        report(args.work, args.out)
    else:
        args.epochs = args.epochs or 12
        bench_simulation(args)

if __name__ == "__main__":
    main()
