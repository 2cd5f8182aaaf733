"""Rating store figures: durable ratings/s, and agreement + export time on a full study.

    python benchmarks/bench_ratings.py [--subjects 200 --lesions 30 --raters 3 --single 300]

The study is synthetic (no images): raters agree with a hidden truth (8 % PRLs) most of the
time. Every figure is wall-clock on this machine; the database lives in a temporary folder
on the same disk as the system temp dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.base.tables import write_table
from napari_deep_prl.ratings.project import Project, ProjectConfig
from napari_deep_prl.ratings.queue import RaterQueue, seeded_shuffle
from napari_deep_prl.ratings.store import Rating, RatingStore


def lesion_table(n: int) -> pd.DataFrame:
    ids = np.arange(1, n + 1)
    return pd.DataFrame({"lesion": ids, "x": ids * 1.0, "y": ids * 2.0, "z": ids * 0.5,
                         "volume_voxels": 20 + ids, "volume_mm3": 30.0 + ids,
                         "confluent": ids % 17 == 0})


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<48s} {elapsed:8.3f} s")
    return result, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--lesions", type=int, default=30)
    parser.add_argument("--raters", type=int, default=3)
    parser.add_argument("--single", type=int, default=300, help="ratings timed one by one")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = RatingStore.open(root / "ratings.sqlite", create=True)
        subjects = [f"sub-{i:03d}" for i in range(args.subjects)]
        timed(f"register {args.subjects} x {args.lesions} lesions", lambda: [
            store.register_subject(s, f"fp-{s}", lesion_table(args.lesions)) for s in subjects])
        n_lesions = args.subjects * args.lesions

        solo = RatingStore.open(root / "solo.sqlite", create=True)
        solo.register_subject("sub-000", "fp", lesion_table(args.lesions))

        def one_by_one() -> None:
            for i in range(args.single):
                solo.add_rating("solo", "sub-000", i % args.lesions + 1,
                                "prl" if i % 12 == 0 else "not_prl", confidence=3,
                                seconds=2.5, session="bench")
        _, elapsed = timed(f"{args.single} single durable ratings", one_by_one)
        solo.close()
        print(f"{'  => durable ratings/s (one commit each)':<48s} {args.single / elapsed:8.1f}")

        truth = rng.random(n_lesions) < 0.08
        keys = [(s, n) for s in subjects for n in range(1, args.lesions + 1)]
        batch = []
        for r in range(args.raters):
            flip = rng.random(n_lesions) < 0.04
            unsure = rng.random(n_lesions) < 0.03
            for (s, n), t, f, u in zip(keys, truth, flip, unsure):
                label = "unsure" if u else ("prl" if t != f else "not_prl")
                batch.append(Rating(f"rater{r}", s, n, label))
        _, elapsed = timed(f"import {len(batch)} ratings (one transaction)",
                           lambda: store.add_ratings(batch))
        print(f"{'  => imported ratings/s':<48s} {len(batch) / elapsed:8.0f}")

        project = Project(root, ProjectConfig(manifest="(none)"), store)
        project.store.undo_last("rater0")
        queue = RaterQueue(store, "newcomer", seeded_shuffle(1))
        timed(f"queue.next() over {n_lesions} lesions (first)", queue.next)
        timed("queue.next() (plan cached)", queue.next)
        timed("queue.remaining() (every item)", queue.remaining)

        total = 0.0
        summary, elapsed = timed(f"agreement ({args.raters} raters, {args.n_boot} boots)",
                                 lambda: project.agreement(n_boot=args.n_boot))
        total += elapsed
        for kind in ("wide", "long", "history"):
            table, elapsed = timed(f"export {kind} -> TSV", lambda k=kind: write_table(
                project.export(k), root / "exports" / f"{k}.tsv"))
            total += elapsed
        print(f"{'agreement + exports, total':<48s} {total:8.3f} s")
        print()
        print(summary.pairs.to_string(index=False, float_format="%.3f"))
        print(f"PRL count ICC(2,1) = {summary.prl_count_icc:.3f} "
              f"over {summary.prl_count_icc_n} subjects")
        store.close()


if __name__ == "__main__":
    main()
