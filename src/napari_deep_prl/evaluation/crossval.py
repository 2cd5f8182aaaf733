"""Nested cross-validation harness: every method, the same patient folds, the same metrics.

Protocol (Spagnolo et al.): patients are split into ``outer`` folds (5) stratified by PRL-count
group (:mod:`napari_deep_prl.data.splits`). For each outer fold, its training patients are split again
into ``inner`` folds (3); a model is trained on each inner training part and validated on its
inner validation part, which fixes its decision threshold (by the method's
``threshold_rule``, :data:`~napari_deep_prl.model.metrics.THRESHOLD_RULES`; the epoch kept follows
``TrainConfig.keep``). The inner model with the best validation F1 is kept and tested
once on the outer fold's patients, which it has never seen. Every lesion is thus tested exactly
once, by a model chosen without it.

With ``CVConfig(ensemble=True)`` each method is also reported as ``<name>_ensemble``, from the
same inner models at no extra training: the outer fold is scored by the mean probability of all
inner models, cut at the threshold the method's rule chooses on their pooled inner-validation
predictions (every outer-training patient, scored by the inner model that did not train on it: a
threshold chosen on all of them rather than on one inner fold's few PRLs). ``merge(...,
cohort_decision=True)`` adds ``<name>_cohort`` rows: the same predictions, each outer fold's
lesions decided together by their expected F1, as ``deep-prl score --cohort-decision`` decides a
study's cohort.

A *method* is anything with ``name``, ``options()`` and ``fit(train_subjects, val_subjects,
seed=...)`` (a progress generator returning a :class:`Fitted`): Deep-PRL, its ablations and the
baselines (:mod:`napari_deep_prl.evaluation.methods`) plug in alike.

Fold runs are independent files (``folds/<method>/fold-<i>.json`` and ``.tsv`` in the report
folder; ``fold-<i>-inner.tsv`` holds every inner model's predictions on its own validation
patients and on the outer test patients, so threshold and combination rules can be studied
without retraining), so a cluster job array can run
``--fold i`` jobs in parallel and :func:`merge` builds the report once they are all there: run
it as a job of its own that depends on them (``deep-prl cv --merge``); a fold task never merges,
so two tasks finishing together cannot write the report at once. The split is recomputed
identically by every job (it depends only on the lesion truth, the fold counts and the seed),
written by the first (:func:`save_splits`) and checked by the others.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import write_or_rescue, write_table, write_text
from napari_deep_prl.data.splits import fold_subjects, nested_splits
from napari_deep_prl.evaluation.report import (
    json_ready,
    kind_table,
    write_comparison,
    write_kind_comparison,
    write_kind_report,
    write_method_report,
)
from napari_deep_prl.model.metrics import (
    THRESHOLD_RULES,
    expected_f1_threshold,
    metrics_from_predictions,
)

PREDICTION_COLUMNS = ("subject", "lesion", "fold", "prl_truth", "prl_probability",
                      "prl_prediction")
#: Columns of every inner model's predictions (:func:`members_path`); a model's own extra
#: columns follow them (a CNN's raw probability per test-time view, ``raw_view_<i>``).
MEMBER_COLUMNS = ("subject", "lesion", "inner", "part", "prl_truth", "prl_probability")
#: Suffix of the method name under which the inner-model ensemble is reported.
ENSEMBLE = "_ensemble"
#: Suffix of a method reported with each outer fold decided as a cohort (:func:`decided_by_cohort`).
COHORT = "_cohort"


class Fitted(Protocol):
    """A trained model with its validation F1 and the threshold chosen on validation."""

    threshold: float
    val_f1: float

    def predict(self, subjects: Sequence[str]) -> pd.DataFrame:
        """``subject, lesion, prl_probability`` for every lesion of ``subjects``; any further
        columns are kept in the inner models' predictions (:func:`members_path`)."""


class Method(Protocol):
    """A classifier the harness can train and test on patient subsets."""

    name: str
    #: How thresholds are chosen on validation predictions: a key of ``THRESHOLD_RULES``.
    threshold_rule: str

    def options(self) -> dict:
        """JSON-serialisable settings, recorded with each fold (runs with others don't merge)."""

    def fit(self, train: Sequence[str], val: Sequence[str], *, seed: int
            ) -> Generator[Progress, None, Fitted]:
        """Train on ``train`` subjects, validate (and pick the threshold) on ``val``."""


@dataclass(frozen=True)
class CVConfig:
    """Fold counts and seed of the nested cross-validation."""

    outer: int = 5
    inner: int = 3
    seed: int = 0
    ensemble: bool = False


#: Columns of the lesion truth (:func:`lesion_truth`), kept in the report folder as ``lesions.tsv``.
TRUTH_COLUMNS = ("subject", "lesion", "prl", "kind", "tested")


def lesion_truth(cohort: Sequence, *, exclude_confluent: bool = True
                 ) -> Generator[Progress, None, pd.DataFrame]:
    """Every labelled lesion of a cohort with ground truth (:data:`TRUTH_COLUMNS`): its PRL
    truth, its kind (:func:`~napari_deep_prl.data.lesions.lesion_kinds`) and whether it is tested.

    Confluent lesions are not tested by default, as in the paper (a lesion mask defines each
    target; grown-together lesions have no single answer); they stay in the table so that the
    patients are split by all their PRLs (a run with and one without them share the split) and
    the report counts the confluent PRLs left unscored.
    """
    from napari_deep_prl.data.cohort import require_truth
    from napari_deep_prl.data.lesions import lesion_kinds, lesion_table

    require_truth(cohort, "cross-validation")
    tables = []
    for step, paths in enumerate(cohort, start=1):
        table = lesion_table(paths.load())
        table = table[table["prl"].notna()]  # lesions a label table leaves out are not tested
        table = table.assign(prl=table["prl"].astype(bool), kind=lesion_kinds(table))
        table["tested"] = (table["kind"] == "non_confluent") | (not exclude_confluent)
        tables.append(table[list(TRUTH_COLUMNS)])
        yield Progress(step, len(cohort), "subject", paths.subject)
    return pd.concat(tables, ignore_index=True)


def plan(truth: pd.DataFrame, config: CVConfig = CVConfig()) -> pd.DataFrame:
    """The nested split of the patients in ``truth`` by all their PRLs, tested or not (see
    :func:`splits.nested_splits`)."""
    counts = truth.groupby("subject", sort=False)["prl"].sum()
    return nested_splits(counts.index, counts.to_numpy(), outer=config.outer,
                         inner=config.inner, seed=config.seed)


def split_digest(splits: pd.DataFrame) -> str:
    """Short fingerprint of a split, stored with every fold so only matching folds merge."""
    return hashlib.sha256(splits.to_csv(sep="\t", index=False).encode()).hexdigest()[:16]


def run_fold(method: Method, truth: pd.DataFrame, splits: pd.DataFrame, fold: int, *,
             seed: int = 0, ensemble: bool = False
             ) -> Generator[Progress, None, tuple[list[tuple[dict, pd.DataFrame]], pd.DataFrame]]:
    """Inner model selection and outer test of one fold.

    Returns ``[(record, predictions)]`` — the selected inner model's, then (``ensemble=True``)
    the inner-model ensemble's — and every inner model's predictions on its own validation
    patients and on the outer test patients (:data:`MEMBER_COLUMNS` and the model's extra
    columns; ``part`` is ``validation`` or ``test``).
    """
    start = time.perf_counter()
    truth = truth[truth["tested"]]
    inner_folds = sorted(set(splits[f"inner_{fold}"]) - {0})
    _, test = fold_subjects(splits, fold)
    records, fits, members = [], [], []
    yield Progress(0, len(inner_folds), "inner fit", f"{method.name} fold {fold}")
    for inner in inner_folds:
        train, val = fold_subjects(splits, fold, inner)
        fitted = yield from method.fit(train, val, seed=seed + 100 * fold + inner)
        records.append({"inner": inner, "val_f1": float(fitted.val_f1),
                        "threshold": float(fitted.threshold),
                        "train_subjects": len(train), "val_subjects": len(val)})
        fits.append(fitted)
        members += [_scored(fitted, truth, subjects, method.name).assign(inner=inner, part=part)
                    for part, subjects in (("validation", val), ("test", test))]
        yield Progress(inner, len(inner_folds), "inner fit", f"{method.name} fold {fold}",
                       {"val_f1": float(fitted.val_f1)})
    best = max(range(len(fits)), key=lambda i: fits[i].val_f1)  # first of equals
    members = pd.concat(members, ignore_index=True)
    members["prl_truth"] = members["prl"].astype(int)
    tested = members[members["part"] == "test"]
    common = {
        "fold": fold, "outer": int(splits["outer"].max()), "inner": len(inner_folds),
        "seed": seed, "options": method.options(), "threshold_rule": method.threshold_rule,
        "split": split_digest(splits), "inner_folds": records, "test_subjects": test,
    }
    variants = [(method.name, tested[tested["inner"] == inner_folds[best]],
                 float(fits[best].threshold), {"selected_inner": inner_folds[best]})]
    if ensemble:
        pooled = members[members["part"] == "validation"]
        threshold, _ = THRESHOLD_RULES[method.threshold_rule](pooled["prl"], pooled["prl_probability"])
        mean = tested.groupby(["subject", "lesion"], sort=False, as_index=False).agg(
            prl=("prl", "first"), prl_probability=("prl_probability", "mean"))
        variants.append((method.name + ENSEMBLE, mean, threshold, {"ensemble_of": len(fits)}))
    seconds = round(time.perf_counter() - start, 1)
    results = []
    for name, scored, threshold, extra in variants:
        predictions = _prediction_table(scored, fold, threshold)
        record = {"method": name, **common, **extra, "threshold": threshold,
                  "metrics": metrics_from_predictions(predictions["prl_truth"],
                                                      predictions["prl_probability"],
                                                      threshold=threshold),
                  "seconds": seconds}
        results.append((record, predictions))
    extra = [c for c in members if c not in (*MEMBER_COLUMNS, *truth.columns)]
    return results, members[[*MEMBER_COLUMNS, *extra]]


def _scored(model: Fitted, truth: pd.DataFrame, subjects: list[str], method: str
            ) -> pd.DataFrame:
    """``subject, lesion, prl, prl_probability`` of every tested lesion of ``subjects``."""
    expected = truth[truth["subject"].isin(subjects)]
    got = model.predict(subjects)
    got = got[[c for c in got if c in ("subject", "lesion") or c not in truth]]
    table = expected.merge(got, on=["subject", "lesion"], how="left", validate="one_to_one")
    if table["prl_probability"].isna().any():
        missing = table.loc[table["prl_probability"].isna(), ["subject", "lesion"]]
        raise RuntimeError(f"{method} gave no probability for {len(missing)} lesions, "
                           f"e.g. {missing.iloc[0].tolist()}")
    return table


def _prediction_table(scored: pd.DataFrame, fold: int, threshold: float) -> pd.DataFrame:
    table = scored.assign(fold=fold, prl_truth=scored["prl"].astype(int),
                          prl_prediction=(scored["prl_probability"] >= threshold).astype(int))
    return table[list(PREDICTION_COLUMNS)]


def fold_paths(out_dir: Path, method: str, fold: int) -> tuple[Path, Path]:
    """Record (JSON) and predictions (TSV) file of one method's fold."""
    folder = Path(out_dir) / "folds" / method
    return folder / f"fold-{fold}.json", folder / f"fold-{fold}.tsv"


def members_path(out_dir: Path, method: str, fold: int) -> Path:
    """Every inner model's predictions on its validation and the outer test patients."""
    return fold_paths(out_dir, method, fold)[1].with_name(f"fold-{fold}-inner.tsv")


def save_splits(out_dir: Path, splits: pd.DataFrame) -> Path:
    """Write ``splits.tsv``, or check that the one already there is the same split.

    Tasks of a job array starting together agree on one file: it is written only where there is
    none (:func:`~napari_deep_prl.base.tables.write_atomic`, ``exclusive``), so of tasks that
    computed different splits (another seed, other labels) exactly one writes it and the others
    stop here, before any training.
    """
    return _write_once(Path(out_dir) / "splits.tsv", splits, "folds of another split (other subjects, labels, "
                       "fold counts or seed). Use a new report folder, or give every task the same cohort, "
                       "--outer, --inner and --seed.")


def save_lesions(out_dir: Path, truth: pd.DataFrame) -> Path:
    """Write ``lesions.tsv`` (:data:`TRUTH_COLUMNS`: what the report counts by lesion kind), or
    check that the one already there is the same, as :func:`save_splits` does."""
    return _write_once(lesions_path(out_dir), truth[list(TRUTH_COLUMNS)], "folds tested on other lesions (another "
                       "cohort or labels, or confluent lesions tested in one run and not in the other). Use a new "
                       "report folder, or give every task the same cohort and --keep-confluent setting.")


def lesions_path(out_dir: Path) -> Path:
    """Every labelled lesion of a report's cohort, its kind and whether it was tested."""
    return Path(out_dir) / "lesions.tsv"


def _write_once(path: Path, table: pd.DataFrame, holds: str) -> Path:
    """``table`` written at ``path`` where there is none yet, else checked equal to it: an
    InputError saying the folder ``holds`` something else."""
    text = table.to_csv(sep="\t", index=False)
    try:
        if not path.exists():
            write_text(path, text, exclusive=True)
            return path
    except FileExistsError:
        pass  # another task wrote it between the look and the write
    if path.read_text() != text:
        raise InputError(f"{path}: this report folder holds {holds}")
    return path


def _done(method: Method, out_dir: Path, fold: int, splits: pd.DataFrame,
          ensemble: bool) -> bool:
    """Whether the fold's results are all there (refusing ones run with other settings)."""
    names = [method.name, method.name + ENSEMBLE] if ensemble else [method.name]
    records = [fold_paths(out_dir, name, fold)[0] for name in names]
    for record_path in filter(Path.exists, records):
        record = json.loads(record_path.read_text())
        if (record["options"] != json_ready(method.options())
                or record["split"] != split_digest(splits)):
            raise InputError(f"{record_path}: fold {fold} of {method.name} was run with other "
                             "settings or another split. Delete that folder or use a new "
                             "report folder.")
    return all(path.exists() for path in records)


def run_cv(methods: Sequence[Method], truth: pd.DataFrame, out_dir: str | Path,
           config: CVConfig = CVConfig(), *, folds: Sequence[int] | None = None
           ) -> Generator[Progress, None, pd.DataFrame]:
    """Run (or resume) the given outer folds of every method; return the split table.

    Each finished fold is written at once, so an interrupted run loses at most the fold in
    progress and a rerun skips the folds already done.
    """
    out_dir = Path(out_dir)
    splits = plan(truth, config)
    save_splits(out_dir, splits)
    save_lesions(out_dir, truth)
    folds = list(range(1, config.outer + 1)) if folds is None else list(folds)
    bad = [f for f in folds if not 1 <= f <= config.outer]
    if bad:
        raise InputError(f"fold {bad[0]} does not exist: folds are numbered 1..{config.outer}")
    jobs = [(m, f) for m in methods for f in folds
            if not _done(m, out_dir, f, splits, config.ensemble)]
    if jobs:
        yield Progress(0, len(jobs), "cv", f"{jobs[0][0].name} fold {jobs[0][1]}")
    for step, (method, fold) in enumerate(jobs, start=1):
        results, members = yield from run_fold(method, truth, splits, fold,
                                               seed=config.seed, ensemble=config.ensemble)
        write_or_rescue(lambda root: _save_fold(root, method.name, fold, results, members), out_dir,  # noqa: B023 (called at once, inside the loop)
                        f"the results of fold {fold} of {method.name} (under folds/)")
        record = results[0][0]
        yield Progress(step, len(jobs), "cv", f"{method.name} fold {fold}",
                       {"f1": record["metrics"]["f1"], "roc_auc": record["metrics"]["roc_auc"]})
    return splits


def _save_fold(out_dir: Path, method: str, fold: int, results: list[tuple[dict, pd.DataFrame]],
               members: pd.DataFrame) -> None:
    """Write a finished fold's files; the record of each result last: it marks the fold done."""
    write_table(members, members_path(out_dir, method, fold))
    for record, predictions in results:
        record_path, tsv_path = fold_paths(out_dir, record["method"], fold)
        write_table(predictions, tsv_path)
        write_text(record_path, json.dumps(json_ready(record), indent=2))


def read_record(path: Path) -> dict:
    """A fold record; its undefined metrics (``nan``, written as JSON ``null``) read back as ``nan``."""
    record = json.loads(path.read_text())
    record["metrics"] = {k: float("nan") if v is None else v for k, v in record["metrics"].items()}
    return record


def merge(out_dir: str | Path, *, cohort_decision: bool = False) -> dict[str, pd.DataFrame]:
    """Build every method's report and the comparison from the fold files in ``out_dir``.

    Returns ``{method: paper-layout table}``. Methods with missing folds are reported over the
    folds present (their table's columns name them); :func:`missing_folds` lists the gaps.
    ``cohort_decision`` also reports each method whose probabilities are calibrated as
    ``<name>_cohort``: the same predictions, each outer fold decided as a cohort
    (:func:`decided_by_cohort`). Methods under the ``best_f1`` rule (e.g. the radiomics
    baseline's class-balanced regression) output raw scores, whose expected F1 means nothing.

    With the folder's ``lesions.tsv`` (:func:`save_lesions`; folders written before it have
    none), each method's results by lesion kind are written too (:func:`~napari_deep_prl.evaluation.report.kind_table`).
    """
    out_dir = Path(out_dir)
    lesions = (pd.read_csv(lesions_path(out_dir), sep="\t", dtype={"subject": str})
               if lesions_path(out_dir).exists() else None)
    tables, kinds = {}, {}
    for method_dir in sorted((out_dir / "folds").glob("*")):
        records = sorted((read_record(p) for p in method_dir.glob("fold-*.json")), key=lambda r: r["fold"])
        if not records:
            continue
        if len({(r["split"], json.dumps(r["options"], sort_keys=True)) for r in records}) > 1:
            raise InputError(f"{method_dir}: its folds were run with different settings or "
                             "splits; rerun the odd ones into a clean folder")
        predictions = pd.concat(
            [pd.read_csv(fold_paths(out_dir, method_dir.name, r["fold"])[1], sep="\t",
                         dtype={"subject": str}) for r in records], ignore_index=True)
        variants = [(method_dir.name, records, predictions)]
        if cohort_decision and _threshold_rule(records[0]) == "calibrated":
            variants.append((method_dir.name + COHORT, *decided_by_cohort(records, predictions)))
        for name, folds, predicted in variants:
            tables[name] = write_method_report(out_dir, name, folds, predicted)
            if lesions is not None:
                kinds[name] = kind_table(lesions, folds, predicted)
                write_kind_report(out_dir, name, kinds[name])
    if not tables:
        raise InputError(f"{out_dir}: no fold results to merge; run `deep-prl cv` first")
    write_comparison(out_dir, tables)
    if kinds:
        write_kind_comparison(out_dir, kinds)
    return tables


def _threshold_rule(record: dict) -> str:
    """The rule a fold's thresholds were chosen by; records written before it was recorded
    carry it in the method's options (a CNN's under ``train``)."""
    options = record["options"]
    return (record.get("threshold_rule") or options.get("threshold_rule")
            or options.get("train", {}).get("threshold_rule", "calibrated"))


def decided_by_cohort(records: Sequence[dict], predictions: pd.DataFrame
                      ) -> tuple[list[dict], pd.DataFrame]:
    """Fold records and predictions with each outer fold's lesions decided together, as
    ``deep-prl score --cohort-decision`` decides a study's cohort: called PRL as many of the
    most probable as maximise the F1 expected from their probabilities
    (:func:`~napari_deep_prl.model.metrics.expected_f1_threshold`; no labels used). Meaningful for
    calibrated outputs."""
    decided, tables = [], []
    for record in records:
        fold = predictions[predictions["fold"] == record["fold"]]
        threshold, expected = expected_f1_threshold(fold["prl_probability"])
        fold = fold.assign(prl_prediction=(fold["prl_probability"] >= threshold).astype(int))
        metrics = metrics_from_predictions(fold["prl_truth"], fold["prl_probability"], threshold=threshold)
        decided.append({**record, "method": record["method"] + COHORT, "threshold": threshold,
                        "decision": "expected_f1", "expected_f1": expected, "metrics": metrics})
        tables.append(fold)
    return decided, pd.concat(tables, ignore_index=True)


def missing_folds(out_dir: str | Path, methods: Sequence[str], outer: int) -> dict[str, list[int]]:
    """Outer folds without a result, per method (empty lists when complete)."""
    return {m: [f for f in range(1, outer + 1) if not fold_paths(out_dir, m, f)[0].exists()]
            for m in methods}
