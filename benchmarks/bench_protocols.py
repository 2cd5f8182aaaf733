"""What each scan protocol gets: models trained through the command line on three protocols.

A site asks what the model gets from the scans it has (issue 33). For each protocol this
simulates a training cohort and a held-out test cohort, trains one network on the first and scores
the second, each step a ``deep-prl`` subprocess as a user would run it:

(a) ``research``: phase and MP2RAGE on one 1 mm grid (``deep-prl simulate --voxel-size 1
    --contrasts none``), the paper's protocol;
(b) ``clinical``: a vendor filtered phase on a tilted 0.6 × 0.6 × 2 mm slab, a T1w and a FLAIR at
    1 mm (``--site clinical``), the reference grid the phase's (the default);
(c) ``qsm``: a QSM on that slab and a FLAIR at 1 mm (``--site clinical --susceptibility qsm
    --contrasts flair``).

The cohorts of one seed have the same anatomy and lesions at either site (the simulator draws the
phantom on the 1 mm structural grid, :mod:`napari_deep_prl.simulate.clinical`); the script checks
that the three test cohorts list the same lesions and PRLs, so the protocols differ only in their
scans. ``deep-prl train`` takes the contrasts each cohort has. The figures are ROC AUC and F1 of
the held-out lesions (confluent ones left out, as ``deep-prl score`` reports them), and their
differences to (a). Target (issue 33): (b) and (c) within 0.02 AUC of (a).

Sized for a shared 2-core machine (about half an hour): few subjects, few epochs, one network
per protocol (``--models 1``); with so few PRLs one lesion moves F1 by several hundredths, so
read differences below that as noise. More subjects and epochs: ``--train-subjects``,
``--test-subjects``, ``--epochs``.

Run: ``python benchmarks/bench_protocols.py [--out DIR]``; ``--protocols`` runs some of them,
``--resume`` reads a protocol already scored in ``--out`` instead of running it again (its times
then read n/a).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.scoring.score import truth_metrics

#: name → (what it is, ``deep-prl simulate`` options).
PROTOCOLS = {
    "research": ("(a) phase + MP2RAGE, one 1 mm grid", ["--voxel-size", "1", "--contrasts", "none"]),
    "clinical": ("(b) phase slab + T1w + FLAIR, own grids", ["--site", "clinical", "--contrasts", "t1w", "flair"]),
    "qsm": ("(c) QSM slab + FLAIR, own grids", ["--site", "clinical", "--susceptibility", "qsm",
                                               "--contrasts", "flair"]),
}
#: Columns that must agree between the protocols' test cohorts: the same lesions and PRLs.
SAME_LESIONS = ["subject", "lesion", "kind", "prl", "volume_voxels"]


def deep_prl(*args: str) -> None:
    """Run ``deep-prl ARGS`` as a user would; stop with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"deep-prl {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():
        if line.startswith(("training on", "kept epoch")):
            print(f"    {line}", flush=True)


def run_protocol(name: str, options: list[str], out: Path, args: argparse.Namespace) -> dict[str, object]:
    """Simulate, train and score one protocol; its figures on the held-out subjects."""
    folder = out / name
    scores = folder / "scores.tsv"
    if args.resume and scores.exists():
        return figures(name, scores, {})
    started = time.perf_counter()
    for part, subjects, seed in (("train", args.train_subjects, args.seed), ("test", args.test_subjects,
                                                                             args.seed + 1)):
        deep_prl("simulate", str(folder / part), "--subjects", str(subjects), "--seed", str(seed),
                 "--overwrite", "--quiet", *options)
    simulated = time.perf_counter()
    model = folder / "model.pt"
    deep_prl("train", str(folder / "train" / "manifest.csv"), "-o", str(model), "--epochs", str(args.epochs),
             "--models", "1", "--seed", "0", "--quiet", *(["--threads", str(args.threads)] if args.threads else []))
    trained = time.perf_counter()
    deep_prl("score", str(folder / "test" / "manifest.csv"), "--model", str(model), "-o", str(scores), "--quiet")
    return figures(name, scores, {"simulate_min": (simulated - started) / 60, "train_min": (trained - simulated) / 60,
                                  "score_min": (time.perf_counter() - trained) / 60})


def figures(name: str, scores: Path, minutes: dict[str, float]) -> dict[str, object]:
    """A protocol's row: its held-out lesions, PRLs, ROC AUC and F1, and the minutes each step took."""
    metrics = truth_metrics(pd.read_csv(scores, sep="\t", na_values="n/a"))
    return {"protocol": PROTOCOLS[name][0], "lesions": metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"],
            "prls": metrics["tp"] + metrics["fn"], "roc_auc": metrics["roc_auc"], "f1": metrics["f1"],
            **{key: minutes.get(key, float("nan")) for key in ("simulate_min", "train_min", "score_min")}}


def same_lesions(out: Path) -> bool:
    """Whether the protocols' test cohorts list the same lesions with the same truth."""
    tables = [pd.read_csv(out / name / "test" / "lesions_truth.tsv", sep="\t")[SAME_LESIONS] for name in PROTOCOLS]
    return all(t.equals(tables[0]) for t in tables[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the cohorts, models and scores (default: temporary)")
    parser.add_argument("--train-subjects", type=int, default=16)
    parser.add_argument("--test-subjects", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads of training (default: one per core)")
    parser.add_argument("--protocols", nargs="+", choices=tuple(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--resume", action="store_true", help="read protocols already scored in --out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        out = args.out or Path(temporary)
        rows = []
        for name in args.protocols:
            title, options = PROTOCOLS[name]
            print(f"{title}: simulate {args.train_subjects} + {args.test_subjects} subjects, train {args.epochs} "
                  "epochs, score", flush=True)
            rows.append(run_protocol(name, options, out, args))
        if len(args.protocols) == len(PROTOCOLS):
            print(f"same lesions and PRLs in the three test cohorts: {'yes' if same_lesions(out) else 'NO'}")
    table = pd.DataFrame(rows)
    table["d_auc"] = table["roc_auc"] - table["roc_auc"].iloc[0]
    table["d_f1"] = table["f1"] - table["f1"].iloc[0]
    print(f"\n{args.train_subjects} training subjects (seed {args.seed}), {args.test_subjects} held-out test "
          f"subjects (seed {args.seed + 1}), {args.epochs} epochs, one network each; held-out, confluent lesions "
          "left out:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
