"""Does the rim evidence separate full, partial and no rims? Figures on simulated subjects.

The rim coverage, rim slices and diameter of every non-confluent lesion
(:func:`napari_deep_prl.data.evidence.rim_evidence`), by the simulator's lesion kind, with
the rank statistics (ROC AUC) of coverage between kinds and of the NAIMS-like reading
"a rim on at least two consecutive slices" against the truth. The thresholds were chosen on
seed 1 (subjects 2-7); the default seed 7 is held out.

    python benchmarks/bench_evidence.py [--subjects 12] [--seed 7] [--prl-fraction 0.3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from napari_deep_prl.data.evidence import rim_evidence
from napari_deep_prl.model.metrics import roc_auc
from napari_deep_prl.simulate import simulate_subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prl-fraction", type=float, default=0.3,
                        help="PRL share drawn (more PRLs than the cohort's 8 %% for stable figures)")
    args = parser.parse_args()

    tables, seconds = [], 0.0
    for index in range(args.subjects):
        sim = simulate_subject(args.seed, index=index, prl_fraction=args.prl_fraction, contrasts=())
        start = time.perf_counter()
        evidence = rim_evidence(sim.subject)
        seconds += time.perf_counter() - start
        truth = sim.truth[["lesion", "kind", "confluent"]]
        tables.append(truth.merge(evidence, on="lesion").assign(subject=sim.subject.subject))
    table = pd.concat(tables, ignore_index=True)
    table = table[~table["confluent"]]
    print(f"{args.subjects} subjects (seed {args.seed}), {len(table)} non-confluent lesions; "
          f"evidence computed in {seconds:.2f} s ({1000 * seconds / len(table):.1f} ms per lesion)")
    print(table.groupby("kind")[["rim_coverage", "rim_slices", "diameter_mm"]].median()
          .assign(n=table.groupby("kind").size()).round(2).to_string())

    coverage = table["rim_coverage"].fillna(0.0)
    prl = table["kind"].isin(["full_rim", "partial_rim"]).to_numpy()

    def auc(positive: str, negative: str | None) -> float:
        keep = (table["kind"] == positive).to_numpy() | (
            ~prl if negative is None else (table["kind"] == negative).to_numpy())
        return roc_auc((table["kind"] == positive).to_numpy()[keep].astype(int), coverage.to_numpy()[keep])

    print(f"coverage ROC AUC: full > partial {auc('full_rim', 'partial_rim'):.3f}, "
          f"partial > plain {auc('partial_rim', 'plain'):.3f}, "
          f"PRL > every non-PRL kind {roc_auc(prl.astype(int), coverage.to_numpy()):.3f}")
    for kind in sorted(set(table["kind"]) - {"full_rim", "partial_rim"}):
        keep = prl | (table["kind"] == kind).to_numpy()
        print(f"  PRL > {kind:14s} {roc_auc(prl[keep].astype(int), coverage.to_numpy()[keep]):.3f}")
    print(f"rim_slices ROC AUC PRL > non-PRL {roc_auc(prl.astype(int), table['rim_slices'].to_numpy()):.3f}")
    called = (table["rim_slices"] >= 2).to_numpy()
    print(f"'rim on >= 2 consecutive slices': sensitivity {called[prl].mean():.3f}, "
          f"specificity {1 - called[~prl].mean():.3f}, PPV "
          f"{prl[called].mean() if called.any() else np.nan:.3f}")


if __name__ == "__main__":
    main()
