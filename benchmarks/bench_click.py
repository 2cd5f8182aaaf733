"""Models on click-derived masks: ROC AUC of ``deep-prl score`` with the lesions outlined from
clicks (``--at``) against the same lesions with the given masks, on held-out simulated subjects.

Simulates a cohort, trains a model on all but ``--held-out`` subjects (``deep-prl train``), then
scores each held-out subject twice through the CLI: with its lesion mask (``--mask``), and with
one click per non-confluent lesion (``--at``, the lesion's voxel nearest its centre of mass) and
no mask. Clicks the outline refuses (it leaked, or the lesion is too faint; see
docs/scoring.md) are counted and left out of both AUCs, so the two are on the same lesions; the
given-mask AUC on every non-confluent lesion is printed too.

    python benchmarks/bench_click.py [--subjects 12] [--held-out 4] [--epochs 10] [--contrasts flair]
        [--work out/bench_click]

The cohort and the model are kept in ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.cli import main as cli
from napari_deep_prl.data.click import outline_click
from napari_deep_prl.data.cohort import read_manifest


def clicks(subject) -> dict[int, np.ndarray]:
    """World mm of each lesion's voxel nearest its centre of mass, by lesion id."""
    out = {}
    for lesion in np.unique(subject.labels[subject.labels > 0]):
        voxels = np.argwhere(subject.labels == lesion)
        nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
        out[int(lesion)] = (subject.affine @ np.append(nearest, 1.0))[:3]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--contrasts", nargs="*", default=["flair"],
                        help="structural images the clicks are outlined from besides the MP2RAGE (flair)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_click"))
    args = parser.parse_args()

    manifest, model = args.work / "cohort" / "manifest.csv", args.work / "model.pt"
    if not manifest.exists():
        cli(["simulate", str(manifest.parent), "--subjects", str(args.subjects), "--seed", "5",
             "--voxel-size", "1.25", "--contrasts", "flair", "--quiet"])
    rows = pd.read_csv(manifest)
    train = manifest.with_name("train.csv")
    rows.iloc[:-args.held_out].to_csv(train, index=False)
    if not model.exists():
        cli(["train", str(train), "-o", str(model), "--epochs", str(args.epochs), "--models", "1", "--quiet"])
    truth = pd.read_csv(manifest.with_name("lesions_truth.tsv"), sep="\t")

    given, clicked, refused = [], [], 0
    for paths in read_manifest(manifest)[len(rows) - args.held_out:]:
        subject = paths.load()
        images = [a for c in ("phase", "mp2rage", *args.contrasts) for a in (f"--{c}", str(paths.image(c)))]
        out = args.work / f"{paths.subject}_given.tsv"
        cli(["score", *images, "--mask", str(paths.mask), "--model", str(model), "-o", str(out), "--quiet"])
        given.append(pd.read_csv(out, sep="\t", na_values="n/a"))
        mine = truth[(truth["subject"] == paths.subject) & ~truth["confluent"]]
        blank = dataclasses.replace(subject, images={c: subject.images[c] for c in ("phase", "mp2rage",
                                                                                    *args.contrasts)},
                                    mask=np.zeros_like(subject.mask), resampled_labels=None)
        kept = {}
        for lesion, point in clicks(subject).items():
            if lesion not in set(mine["lesion"]):
                continue
            try:
                outline_click(blank, point)  # the CLI refuses a whole run for one bad click: keep the good ones
                kept[lesion] = point
            except InputError:
                refused += 1
        out = args.work / f"{paths.subject}_clicked.tsv"
        cli(["score", *images, *(f"--at={','.join(f'{v:g}' for v in p)}" for p in kept.values()),
             "--model", str(model), "-o", str(out), "--quiet"])
        table = pd.read_csv(out, sep="\t", na_values="n/a")
        table["lesion"] = list(kept)  # lesion i is the i-th click
        clicked.append(table.assign(subject=paths.subject))
    given_table, clicked_table = pd.concat(given), pd.concat(clicked)
    labels = truth.set_index(["subject", "lesion"])["prl"].astype(int)
    everything = given_table[~given_table["confluent"]]
    both = clicked_table.merge(everything, on=["subject", "lesion"], suffixes=("_click", "_given"))

    def auc(table: pd.DataFrame, column: str) -> str:
        return f"{roc_auc_score(labels.loc[list(zip(table['subject'], table['lesion']))], table[column]):.3f}"

    print(f"held-out subjects {args.held_out}: {len(everything)} non-confluent lesions "
          f"({int(labels.loc[list(zip(everything['subject'], everything['lesion']))].sum())} PRLs), "
          f"{len(both)} outlined from a click, {refused} clicks refused")
    print(f"ROC AUC, given masks, every non-confluent lesion: {auc(everything, 'prl_probability')}")
    for kind in ("given", "click"):
        print(f"ROC AUC, {kind} masks, the {len(both)} outlined lesions: {auc(both, f'prl_probability_{kind}')}")
    difference = np.abs(both["prl_probability_click"] - both["prl_probability_given"])
    print(f"|probability difference| per lesion: mean {difference.mean():.3f}, max {difference.max():.3f}")

if __name__ == "__main__":
    main()
