"""``deep-prl demo``: the whole pipeline on built-in synthetic data, in a few minutes on a CPU.

Simulates a small cohort, lists its lesions, draws PRL and non-PRL patches, trains Deep-PRL
briefly on all subjects but the held-out ones, scores the held-out subjects and prints their
table next to the simulator's truth. The cohort is the research protocol's (phase and MP2RAGE on
one grid) or, with ``--site clinical`` and the simulator's site options, a clinical site's scans
(a filtered phase of either sign or a QSM on a tilted slab, T1w and FLAIR at 1 mm), so a site
sees the whole pipeline on its kind of scans; the model takes the cohort's contrasts.
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
from napari_deep_prl.cli.simulate import add_site_arguments, contrasts_from_args, site_from_args
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.contrasts import cohort_contrasts
from napari_deep_prl.data.lesions import cohort_lesion_table, find_lesions
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.evaluation.figures import display_patches, patch_gallery
from napari_deep_prl.simulate import ClinicalSite, simulate_cohort

if TYPE_CHECKING:
    from napari_deep_prl.data.images import Subject

GALLERY_PER_CLASS = 6
SHOWN_LESIONS = 12


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl demo``."""
    p.description = ("Run the pipeline end to end on a synthetic cohort: simulate, list lesions, "
                     "write a picture of PRL and non-PRL patches, train Deep-PRL briefly, score "
                     "held-out subjects and print the table. Everything lands in OUT. The cohort is the "
                     "research protocol's (phase and MP2RAGE on one grid) or, with --site clinical, a clinical "
                     "site's scans on their own grids (see deep-prl simulate --help); the model takes the "
                     "cohort's contrasts.")
    p.add_argument("-o", "--out", default="demo-output", help="output folder (demo-output)")
    p.add_argument("--subjects", type=int, default=12, help="subjects to simulate (12)")
    p.add_argument("--held-out", type=int, default=2, help="subjects kept out of training and scored (2)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (10; the paper uses 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and the training (0)")
    p.add_argument("--fov", type=float, nargs=3, metavar="MM",
                   help="field of view of the simulated heads in mm (default 160 192 160; smaller is faster)")
    p.add_argument("--prl-fraction", type=float, default=0.08, metavar="F",
                   help="expected fraction of lesions that are PRLs (0.08; more for a few small heads)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_site_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_deep_prl.model.dataset import build_patchset
    from napari_deep_prl.model.train import TrainConfig, train
    from napari_deep_prl.scoring.score import score_cohort

    if not 1 <= args.held_out < args.subjects:
        raise InputError(f"--held-out must be between 1 and --subjects - 1 ({args.subjects - 1}).")
    site, contrasts = site_from_args(args), contrasts_from_args(args)
    out = check_output(args.out, folder=True)
    cohort_dir = out / "cohort"
    say = _printer(args.quiet)

    say(f"1/5 Simulating {args.subjects} subjects ({'research protocol' if site == 'research' else 'a clinical site'}"
        f"'s scans) into {cohort_dir}")
    manifest = run_with_tqdm(simulate_cohort(cohort_dir, args.subjects, args.seed, overwrite=True, site=site,
                                             contrasts=contrasts, fov_mm=args.fov,
                                             prl_fraction=args.prl_fraction),
                             desc="simulate", disable=args.quiet)
    cohort = read_manifest(manifest)
    truth = pd.read_csv(cohort_dir / "lesions_truth.tsv", sep="\t")
    # A site whose scanner writes the phase paramagnetic-bright reads it with --flip-phase.
    flip = isinstance(site, ClinicalSite) and site.susceptibility == "phase" and site.phase_sign == "bright"
    if flip:
        say("    the phase is paramagnetic-bright, as some scanners write it: read with --flip-phase")

    say("2/5 Listing lesions")
    table = run_with_tqdm(cohort_lesion_table(cohort, flip_phase=flip), desc="lesions", disable=args.quiet)
    write_table(table, out / "lesions.tsv")
    say(f"    {len(table)} lesions in {len(cohort)} subjects, {int(table['prl'].sum())} PRLs "
        f"({table['prl'].mean():.0%}); table: {out / 'lesions.tsv'}")

    say("3/5 Drawing PRL and non-PRL patches")
    richest = truth.groupby("subject")["prl"].sum().idxmax()
    gallery = _gallery(cohort[richest].load(flip_phase=flip), truth, out / "patches.png")
    say(f"    {gallery}")

    train_ids, test_ids = cohort.ids[: -args.held_out], cohort.ids[-args.held_out:]
    config = PatchConfig(contrasts=cohort_contrasts(((p.subject, (c for c, _ in p.images)) for p in cohort),
                                                    str(manifest)))
    say(f"4/5 Training Deep-PRL on {len(train_ids)} subjects for {args.epochs} epochs, on "
        f"{', '.join(config.contrasts)}")
    patches = run_with_tqdm(build_patchset([cohort[s] for s in train_ids], config, flip_phase=flip),
                            desc="patches", disable=args.quiet)
    result = run_with_tqdm(train(patches, TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)),
                           desc="train", disable=args.quiet)
    model_path = out / "model.pt"
    result.checkpoint.save(model_path)
    say(f"    kept epoch {result.kept_epoch}; model: {model_path}")

    say(f"5/5 Scoring the held-out subjects {', '.join(test_ids)}")
    scores = run_with_tqdm(score_cohort([cohort[s] for s in test_ids], [result.checkpoint], flip_phase=flip),
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
    patches, layout = display_patches(subject, lesions, shown["lesion"].to_numpy())
    titles = [f"#{row.lesion} {row.kind}" for row in shown.itertuples()]
    return patch_gallery(patches, titles, path, channels=layout[:-1], layout=layout,
                         suptitle=f"{subject.subject}: PRLs (left) and non-PRLs of each kind (right)")


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            print(message, flush=True)
    return say
