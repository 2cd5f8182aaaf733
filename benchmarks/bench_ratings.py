"""Rating store figures on both engines, side by side: durable ratings/s (one rater, and several
at once), bulk import, the queue, and agreement + exports on a full study.

    python benchmarks/bench_ratings.py --postgresql postgresql://USER@HOST/EMPTY_DB
        [--subjects 200 --lesions 30 --raters 3 --single 300 --writers 4]

``--postgresql`` names an empty database (it is filled); without it only SQLite is measured.
The study is synthetic (no images): raters agree with a hidden truth (8 % PRLs) most of the
time. Every figure is wall-clock on this machine; the SQLite file lives in a temporary folder
on the same disk as the system temp dir.
"""

from __future__ import annotations

import argparse
import multiprocessing
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
    print(f"  {label:<46s} {elapsed:8.3f} s")
    return result, elapsed


def _rate(address, rater: str, n: int, lesions: int) -> None:
    with RatingStore.open(address) as store:
        for i in range(n):
            store.add_rating(rater, "sub-000", i % lesions + 1, "prl" if i % 12 == 0 else "not_prl",
                             confidence=3, seconds=2.5, session="bench")


def measure(address, args, root: Path) -> dict[str, float]:
    """Every figure of one engine; ``address``: a new SQLite file or an empty database."""
    figures = {}
    rng = np.random.default_rng(0)
    store = RatingStore.open(address, create=True)
    subjects = [f"sub-{i:03d}" for i in range(args.subjects)]
    timed(f"register {args.subjects} x {args.lesions} lesions", lambda: [
        store.register_subject(s, f"fp-{s}", lesion_table(args.lesions)) for s in subjects])
    n_lesions = args.subjects * args.lesions

    _, elapsed = timed(f"{args.single} single durable ratings",
                       lambda: _rate(address, "solo", args.single, args.lesions))
    figures["one rater: durable ratings/s (a commit each)"] = args.single / elapsed

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_rate, args=(address, f"w{k}", args.single, args.lesions))
               for k in range(args.writers)]

    def together() -> None:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
            assert worker.exitcode == 0
    _, elapsed = timed(f"{args.writers} raters x {args.single} ratings at once", together)
    figures[f"{args.writers} raters at once: durable ratings/s, all"] = (
        args.writers * args.single / elapsed)

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
    figures["bulk import: ratings/s (one transaction)"] = len(batch) / elapsed

    project = Project(root, ProjectConfig(manifest="(none)"), store)
    project.store.undo_last("rater0")
    queue = RaterQueue(store, "newcomer", seeded_shuffle(1))
    _, figures[f"queue.next() over {n_lesions} lesions, first (s)"] = timed(
        "queue.next() (first)", queue.next)
    _, figures["queue.next(), plan cached (s)"] = timed("queue.next() (plan cached)", queue.next)

    total = 0.0
    _, elapsed = timed(f"agreement ({args.raters} raters, {args.n_boot} boots)",
                       lambda: project.agreement(n_boot=args.n_boot))
    total += elapsed
    (root / "exports").mkdir(exist_ok=True)
    for kind in ("wide", "long", "history"):
        _, elapsed = timed(f"export {kind} -> TSV", lambda k=kind: write_table(
            project.export(k), root / "exports" / f"{k}.tsv"))
        total += elapsed
    figures["agreement + wide, long, history exports (s)"] = total
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgresql", metavar="URL", help="an empty PostgreSQL database")
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--lesions", type=int, default=30)
    parser.add_argument("--raters", type=int, default=3)
    parser.add_argument("--single", type=int, default=300, help="ratings timed one by one")
    parser.add_argument("--writers", type=int, default=4, help="raters writing at once")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        engines = {"SQLite": Path(folder) / "ratings.sqlite"}
        if args.postgresql:
            engines["PostgreSQL"] = args.postgresql
        for name, address in engines.items():
            print(name)
            root = Path(folder) / name
            root.mkdir()
            results[name] = measure(address, args, root)
    table = pd.DataFrame(results)
    print()
    print(table.to_string(float_format=lambda v: f"{v:,.3f}" if v < 10 else f"{v:,.0f}"))


if __name__ == "__main__":
    main()
