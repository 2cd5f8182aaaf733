"""How hard is the synthetic cohort? ROC AUC of the APRL-like radiomics baseline.

The issue asks for 0.85-0.95 with patient-grouped cross-validation: hard enough to be worth
learning, not so hard that a CNN looking at the rim's shape cannot do much better.

    python benchmarks/bench_radiomics.py [--subjects 24] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from napari_deep_prl.lesions import find_lesions
from napari_deep_prl.radiomics import grouped_cv_auc, radiomics_features
from napari_deep_prl.simulate import simulate_subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    tables = []
    for index in range(args.subjects):
        sim = simulate_subject(args.seed, index=index)
        features = radiomics_features(sim.subject, find_lesions(sim.subject))
        tables.append(features.merge(sim.truth[["lesion", "kind", "prl"]], on="lesion"))
    table = pd.concat(tables, ignore_index=True)
    elapsed = time.perf_counter() - start
    y = table["prl"].to_numpy()
    result = grouped_cv_auc(table.drop(columns=["kind"]), y)

    print(f"cohort: {args.subjects} subjects (seed {args.seed}), {len(table)} lesions, "
          f"{int(y.sum())} PRLs ({y.mean():.1%}); simulated + features in {elapsed:.0f} s")
    print(f"radiomics ROC AUC (5-fold, grouped by patient): {result.auc:.3f} pooled, "
          f"{np.mean(result.fold_aucs):.3f} +/- {np.std(result.fold_aucs, ddof=1):.3f} per fold")
    print("AUC of PRLs against each non-PRL kind (pooled out-of-fold scores):")
    for kind in sorted(set(table["kind"]) - {"full_rim", "partial_rim"}):
        keep = y | (table["kind"] == kind).to_numpy()
        print(f"  {kind:14s} n={int((table['kind'] == kind).sum()):4d}  "
              f"AUC {roc_auc_score(y[keep], result.scores[keep]):.3f}")
    for kind in ("full_rim", "partial_rim"):
        keep = ~y | (table["kind"] == kind).to_numpy()
        print(f"  {kind:14s} n={int((table['kind'] == kind).sum()):4d}  "
              f"AUC vs all non-PRL {roc_auc_score(y[keep], result.scores[keep]):.3f}")


if __name__ == "__main__":
    main()
