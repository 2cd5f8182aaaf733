"""``deep-prl demo``: the whole pipeline on built-in synthetic data, in a few minutes on a CPU.

Simulates a small cohort, lists its lesions, draws PRL and non-PRL patches, trains Deep-PRL
briefly on all subjects but the held-out ones, scores the held-out subjects and prints their
table next to the simulator's truth.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from sklearn.metrics import roc_auc_score

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, write_table
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.lesions import cohort_lesion_table, find_lesions
from napari_deep_prl.data.patches import extract_patches
from napari_deep_prl.evaluation.figures import patch_gallery

if TYPE_CHECKING:
    from napari_deep_prl.data.images import Subject

GALLERY_PER_CLASS = 6
SHOWN_LESIONS = 12


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl demo``."""
    p.description = ("Run the pipeline end to end on a synthetic cohort: simulate, list lesions, "
                     "write a picture of PRL and non-PRL patches, train Deep-PRL briefly, score "
                     "held-out subjects and print the table. Everything lands in OUT.")
    p.add_argument("-o", "--out", default="demo-output", help="output folder (demo-output)")
    p.add_argument("--subjects", type=int, default=12, help="subjects to simulate (12)")
    p.add_argument("--held-out", type=int, default=2, help="subjects kept out of training and scored (2)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (10; the paper uses 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and the training (0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_deep_prl.model.dataset import build_patchset
    from napari_deep_prl.model.train import TrainConfig, train
    from napari_deep_prl.scoring.score import score_cohort
    from napari_deep_prl.simulate import simulate_cohort

    if not 1 <= args.held_out < args.subjects:
        raise InputError(f"--held-out must be between 1 and --subjects - 1 ({args.subjects - 1}).")
    out = check_output(args.out, folder=True)
    cohort_dir = out / "cohort"
    say = _printer(args.quiet)

    say(f"1/5 Simulating {args.subjects} subjects into {cohort_dir}")
    manifest = run_with_tqdm(simulate_cohort(cohort_dir, args.subjects, args.seed, overwrite=True),
                             desc="simulate", disable=args.quiet)
    cohort = read_manifest(manifest)
    truth = pd.read_csv(cohort_dir / "lesions_truth.tsv", sep="\t")

    say("2/5 Listing lesions")
    table = run_with_tqdm(cohort_lesion_table(cohort), desc="lesions", disable=args.quiet)
    write_table(table, out / "lesions.tsv")
    say(f"    {len(table)} lesions in {len(cohort)} subjects, {int(table['prl'].sum())} PRLs "
        f"({table['prl'].mean():.0%}); table: {out / 'lesions.tsv'}")

    say("3/5 Drawing PRL and non-PRL patches")
    richest = truth.groupby("subject")["prl"].sum().idxmax()
    gallery = _gallery(cohort[richest].load(), truth, out / "patches.png")
    say(f"    {gallery}")

    train_ids, test_ids = cohort.ids[: -args.held_out], cohort.ids[-args.held_out:]
    say(f"4/5 Training Deep-PRL on {len(train_ids)} subjects for {args.epochs} epochs")
    patches = run_with_tqdm(build_patchset([cohort[s] for s in train_ids]), desc="patches", disable=args.quiet)
    result = run_with_tqdm(train(patches, TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)),
                           desc="train", disable=args.quiet)
    model_path = out / "model.pt"
    result.checkpoint.save(model_path)
    say(f"    kept epoch {result.kept_epoch}; model: {model_path}")

    say(f"5/5 Scoring the held-out subjects {', '.join(test_ids)}")
    scores = run_with_tqdm(score_cohort([cohort[s] for s in test_ids], [result.checkpoint]),
                           desc="score", disable=args.quiet)
    write_table(scores.lesions, out / "scores.tsv")
    shown = scores.lesions.merge(truth[["subject", "lesion", "kind", "prl"]].rename(columns={"prl": "truth"}),
                                 on=["subject", "lesion"], how="left")
    columns = ["subject", "lesion", "x", "y", "z", "volume_mm3", "prl_probability", "prl", "truth", "kind"]
    top = shown.sort_values("prl_probability", ascending=False).head(SHOWN_LESIONS)
    print(f"\nThe {len(top)} lesions most likely to be PRLs (of {len(shown)}; all in scores.tsv):")
    print(top[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    true_counts = shown.groupby("subject")["truth"].sum().rename("true_prl_count").astype(int)
    print()
    print(scores.subjects.join(true_counts, on="subject").to_string(index=False))
    if shown["truth"].nunique() == 2:
        auc = roc_auc_score(shown["truth"].astype(int), shown["prl_probability"])
        print(f"\nHeld-out ROC AUC against the simulator's truth: {auc:.3f} "
              f"({len(train_ids)} training subjects, {args.epochs} epochs: a demo, not a benchmark)")
    say(f"Scores: {out / 'scores.tsv'}. Open a subject in napari: napari {cohort_dir / test_ids[0]}")
    return 0


def _gallery(subject: Subject, truth: pd.DataFrame, path: Path) -> Path:
    """Patches of the subject's PRLs and of one non-PRL of each kind, titled by kind."""
    lesions = find_lesions(subject)
    mine = truth[(truth["subject"] == subject.subject) & truth["lesion"].isin(lesions.ids)]
    shown = pd.concat([mine[mine["prl"]].head(GALLERY_PER_CLASS),
                       mine[~mine["prl"]].groupby("kind").head(1).head(GALLERY_PER_CLASS)])
    patches = extract_patches(subject, lesions, ids=shown["lesion"].to_numpy())
    titles = [f"#{row.lesion} {row.kind}" for row in shown.itertuples()]
    return patch_gallery(patches, titles, path,
                         suptitle=f"{subject.subject}: PRLs (left) and non-PRLs of each kind (right)")


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            print(message, flush=True)
    return say
