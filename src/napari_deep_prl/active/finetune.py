"""Training on a project's own labels, versioned checkpoints, and retraining every K labels.

The labels come from the rating store (consensus, one rater's, or imported PRL masks stored as
a rater), not from a ``prl_mask``: that is what lets a lab teach the model while it reviews.
Each fine-tuned model is saved as the next version in the project's ``models/`` folder
(``deep-prl-v001.pt``, ``-v002`` …) with its parent's id and the labels it used (source, counts,
subjects and a digest of the exact labels), so any model can be traced to the ratings behind it.
An ensemble is fine-tuned member by member and saved as one file, so it stays an ensemble.

Before any patch is cut, :func:`check_labels` refuses labels that cannot train and validate the
network(s) — one class only, or too few subjects with each class — saying how many more labels
of which class are needed. After training, a fine-tuned model is compared with the model it
started from on the same held-out lesions (:mod:`napari_deep_prl.model.comparison`): the result says
whether it validates worse, and the CLI and the model panel then ask before using it. The file
is saved either way.

The project's labels can also recalibrate a model trained elsewhere for the project's site,
without training (:func:`recalibrate_project`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from napari_deep_prl.active import STRATEGIES
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import check_output, write_or_rescue
from napari_deep_prl.data.contrasts import cohort_contrasts
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.data.resample import grids_record
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.model.checkpoint import Checkpoint, save_models
from napari_deep_prl.model.comparison import Comparison, compare_with_start
from napari_deep_prl.model.crossfit import DEFAULT_MODELS, train_crossfitted
from napari_deep_prl.model.dataset import PatchSet, subject_patches
from napari_deep_prl.model.train import TrainConfig, TrainResult, train
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.scoring.project import model_version, score_project
from napari_deep_prl.scoring.recalibrate import Recalibration, check_site_labels, recalibrate

STEM = "deep-prl"
_VERSION = re.compile(rf"^{STEM}-v(\d+)\.pt$")


@dataclass
class FinetuneResult:
    """The fine-tuned network(s), their training runs and where they were saved."""

    checkpoints: list[Checkpoint]
    runs: list[TrainResult]
    path: Path
    #: The saved model's validation: the network's own, or an ensemble's out-of-fold
    #: (``val_f1``, ``val_auc``, ``threshold``).
    validation: dict[str, float]
    stopped: bool
    #: The new model against the one it started from (``None`` when trained from scratch).
    comparison: Comparison | None = None
    #: The model version under which the project's scores by this model are stored
    #: (:func:`rescore`); ``None`` while the project is not scored by it.
    scored: str | None = None

    @property
    def worse(self) -> bool:
        """The new model validates worse than the one it started from: ask before using it."""
        return self.comparison is not None and self.comparison.worse

    @property
    def checkpoint(self) -> Checkpoint:
        """The network, or an ensemble's first member (each records the labels used)."""
        return self.checkpoints[0]

    def summary(self) -> str:
        """One line on what was saved, for the CLI and the panel."""
        stopped = " (stopped early: the best model so far)" if self.stopped else ""
        if len(self.checkpoints) > 1:
            kept = f"{len(self.checkpoints)} networks, out-of-fold F1 {self.validation['val_f1']:.3f}"
        else:
            kept = f"kept epoch {self.runs[0].kept_epoch}, validation F1 {self.validation['val_f1']:.3f}"
        return f"saved {self.path.name}{stopped}; {kept}"


#: Where the model-ordered review is, for messages asking for more PRL labels.
FIND_PRLS = f"the review order '{STRATEGIES['likely_prl']}', --order likely_prl, puts them first"


def check_labels(project: Project, networks: int, config: TrainConfig = TrainConfig(),
                 source: str = "consensus") -> pd.DataFrame:
    """The ``source`` labels, refused before any work when they cannot train and validate
    ``networks`` network(s).

    Validation holds out whole subjects (:func:`~napari_deep_prl.data.splits.validation_shares`): one
    network is validated on some subjects and trained on the others; ``K`` cross-fitted networks
    are each validated on a different share (``min(K, subjects)`` shares) and trained on the
    rest. Each validation share and each training part needs a PRL and a non-PRL label, or its
    F1 (or ROC AUC) is undefined and training has nothing to learn. Hence the minimums: PRL
    labels in at least 2 subjects for one network, in at least ``min(K, subjects)`` (and 2)
    subjects for ``K`` networks, and as many subjects with a non-PRL label. The split itself
    is then checked, since it follows the PRL counts (stratified) rather than the labels.
    """
    labels = project.training_labels(source)
    per_subject = labels.groupby("subject")["prl"].agg(prl="sum", lesions="size")
    per_subject["other"] = per_subject["lesions"] - per_subject["prl"]
    shares = 2 if networks == 1 else min(networks, max(len(per_subject), 2))
    counted = (f"{project.root}: {int(per_subject['prl'].sum())} PRL and {int(per_subject['other'].sum())} "
               f"non-PRL {source} labels in {len(per_subject)} subject(s)")
    design = ("one network is validated on held-out subjects and trained on the others"
              if networks == 1 else f"{networks} cross-fitted networks are each validated on a different share "
              f"of the subjects ({shares} shares) and trained on the rest")
    missing = [f"label {shares - have} more {kind}{'s' if shares - have > 1 else ''} in subjects that have "
               f"none labelled yet{advice}"
               for kind, have, advice in (("PRL", int((per_subject["prl"] > 0).sum()), f" ({FIND_PRLS})"),
                                          ("non-PRL lesion", int((per_subject["other"] > 0).sum()), ""))
               if have < shares]
    if missing:
        raise InputError(f"{counted}: {design}, so fine-tuning needs PRL labels in at least {shares} subjects "
                         f"and non-PRL labels in at least {shares}; {' and '.join(missing)}")
    counts = {s: int(n) for s, n in per_subject["prl"].items()}
    for member, share in enumerate(validation_shares(counts, networks, config.val_fraction, config.seed)):
        rest = [s for s in counts if s not in share]
        for part, subjects in (("validation", share), ("training", rest)):
            rows = per_subject.loc[subjects]
            for kind, column in (("PRL", "prl"), ("non-PRL", "other")):
                if rows[column].sum() == 0:
                    network = f"network {member + 1}" if networks > 1 else "the network"
                    verb = "validated" if part == "validation" else "trained"
                    raise InputError(f"{counted}: {network}'s {part} subjects ({', '.join(subjects)}) have no "
                                     f"{kind} label, so {network} cannot be {verb}; label a {kind} lesion in one "
                                     "of them")
    return labels


def labels_summary(labels: pd.DataFrame, source: str) -> dict:
    """What a checkpoint records about the labels it learnt from."""
    rows = labels.sort_values(["subject", "lesion"])
    text = "\n".join(f"{s}\t{int(n)}\t{int(p)}" for s, n, p in
                     zip(rows["subject"], rows["lesion"], rows["prl"]))
    return {"source": source, "n": len(labels), "n_prl": int(labels["prl"].sum()),
            "subjects": sorted(labels["subject"].unique().tolist()),
            "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}


def project_patch_config(project: Project) -> PatchConfig:
    """The default patch settings of a model trained from scratch on ``project``: of the
    contrasts its subjects have (:func:`~napari_deep_prl.data.contrasts.cohort_contrasts`)."""
    subjects = ((p.subject, (c for c, _ in p.images)) for p in project.cohort)
    return PatchConfig(contrasts=cohort_contrasts(subjects, f"project {project.root}"))


def labelled_patchset(project: Project, labels: pd.DataFrame, config: PatchConfig, *,
                      oversample_shift: int = 5) -> Generator[Progress, None, PatchSet]:
    """Patches of the labelled lesions (``subject, lesion, prl``), one subject loaded at a time."""
    parts, grids = [], []
    subjects = sorted(labels["subject"].unique())
    for step, subject_id in enumerate(subjects, start=1):
        subject = project.load_subject(subject_id)
        grids.append((subject.reference, subject.grids))
        lesions = find_lesions(subject)
        mine = labels[labels["subject"] == subject_id][["lesion", "prl"]]
        table = lesions.table.drop(columns=["prl"], errors="ignore").merge(mine, on="lesion")
        parts.append(subject_patches(subject, lesions, table, config, oversample_shift))
        yield Progress(step, len(subjects), "patches", subject_id)
    if not parts:
        raise InputError(f"{project.root}: no labelled lesions to train on; rate some lesions "
                         "(or import PRL masks) first")
    return PatchSet.from_parts(parts, config, grids_record(grids))


def recalibrate_project(project: Project, checkpoints: Sequence[Checkpoint], source: str = "consensus", *,
                        device: str = "auto",
                        stop: threading.Event | None = None) -> Generator[Progress, None, Recalibration | None]:
    """The model ``checkpoints`` recalibrated for the project's site on its ``source`` labels
    (:func:`~napari_deep_prl.scoring.recalibrate.recalibrate`; the model panel's *Recalibrate for
    this site*, ``deep-prl active calibrate``). Too few labels are refused before any patch is cut."""
    labels = project.training_labels(source)
    labels_from = f"{project.root}, {source} labels"
    check_site_labels(labels["prl"].to_numpy(), f"{project.root.name} ({labels_from})")
    sets = {}
    for config in dict.fromkeys(c.patch_config for c in checkpoints):
        sets[config] = yield from labelled_patchset(project, labels, config, oversample_shift=0)
    return (yield from recalibrate(checkpoints, sets, site=project.root.name, labels_from=labels_from,
                                   device=device, stop=stop))


def next_version_path(models_dir: Path) -> Path:
    """``models/deep-prl-vNNN.pt`` one above the highest version there."""
    found = [int(m.group(1)) for p in models_dir.glob(f"{STEM}-v*.pt")
             if (m := _VERSION.match(p.name))]
    return models_dir / f"{STEM}-v{max(found, default=0) + 1:03d}.pt"


def per_label_epochs(config: TrainConfig, labelled: int) -> TrainConfig:
    """``config`` with epochs of one draw per labelled lesion.

    Training from scratch uses fixed epochs of 640 class-balanced draws; when fine-tuning, an
    epoch means a pass over the labels, so its cost grows with them (300 labels, 10 epochs:
    3,000 draws).
    """
    return replace(config, samples_per_epoch=max(int(labelled), config.batch_size))


def finetune(project: Project, init: Checkpoint | Sequence[Checkpoint] | None,
             config: TrainConfig = TrainConfig(), *, models: int = DEFAULT_MODELS, source: str = "consensus",
             val_subjects: Sequence[str] | None = None, patch_config: PatchConfig | None = None,
             stop: threading.Event | None = None) -> Generator[Progress, None, FinetuneResult]:
    """Train (from ``init``, or ``models`` networks from scratch) on the project's ``source``
    labels; save a version.

    An ensemble (several checkpoints, e.g. of ``deep-prl train``) stays one: each member is
    fine-tuned, cross-fitted on the labelled subjects as it was trained
    (:func:`~napari_deep_prl.model.crossfit.train_crossfitted`; ``val_subjects`` and
    ``config.val_fraction`` then do not apply); so is a new ensemble (``models`` > 1, no
    ``init``). An epoch is one draw per labelled lesion (:func:`per_label_epochs`). Cancelling
    with ``stop`` still saves the best model so far. Labels that cannot train and validate are
    refused first (:func:`check_labels`); a fine-tuned model is compared with ``init``
    (``FinetuneResult.comparison``) and saved even when it validates worse.
    """
    members = [init] if isinstance(init, Checkpoint) else list(init or [])
    networks = len(members) or models
    check_output(project.models_dir, folder=True)  # before the training, not after it
    labels = check_labels(project, networks, config, source)
    config_used = members[0].patch_config if members else patch_config or project_patch_config(project)
    patches = yield from labelled_patchset(project, labels, config_used)
    config = per_label_epochs(config, len(labels))
    if networks > 1:
        ensemble = yield from train_crossfitted(patches, config, networks, init=members, stop=stop)
        checkpoints, runs = ensemble.checkpoints, ensemble.runs
        validation, stopped = ensemble.validation, ensemble.stopped
    else:
        run = yield from train(patches, config, val_subjects=val_subjects,
                               init=members[0] if members else None, stop=stop)
        checkpoints, runs, validation, stopped = [run.checkpoint], [run], run.checkpoint.validation, run.stopped
    comparison = compare_with_start(members, checkpoints, validation, patches, config) if members else None
    record = labels_summary(labels, source)
    for checkpoint in checkpoints:
        checkpoint.metadata["labels"] = record
        checkpoint.metadata["project"] = str(project.root)
    name = next_version_path(project.models_dir).name

    def save(folder: Path) -> Path:
        return save_models(checkpoints, folder / name)

    path = write_or_rescue(save, project.models_dir, "the fine-tuned model")
    return FinetuneResult(checkpoints, runs, path, validation, stopped, comparison)


def labels_since(project: Project, checkpoint: Checkpoint | None,
                 source: str = "consensus") -> int:
    """Definite labels gained since ``checkpoint`` was trained (all of them without a model)."""
    used = 0 if checkpoint is None else int(checkpoint.metadata.get("labels", {}).get("n", 0))
    return len(project.training_labels(source)) - used


def should_retrain(project: Project, checkpoint: Checkpoint | None, every: int,
                   source: str = "consensus") -> bool:
    """True once ``every`` new labels have come in since the model was trained."""
    if every < 1:
        raise InputError(f"retrain every {every} labels: give a positive number")
    return labels_since(project, checkpoint, source) >= every


def rescore(project: Project, result: FinetuneResult, *,
            stop: threading.Event | None = None) -> Generator[Progress, None, FinetuneResult]:
    """Score the project with the fine-tuned model, as everywhere else
    (:func:`~napari_deep_prl.scoring.project.score_project`): ``result`` with the model version
    whose stored scores a re-ranked queue uses (:func:`napari_deep_prl.active.strategies.project_strategy`)."""
    yield from score_project(project, result.checkpoints, stop=stop)
    return replace(result, scored=model_version(result.checkpoints))


def retrain_and_rescore(project: Project, checkpoint: Checkpoint | Sequence[Checkpoint] | None,
                        config: TrainConfig, *, models: int = DEFAULT_MODELS,
                        source: str = "consensus",
                        stop: threading.Event | None = None) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune on the labels so far, then score the project with the new model (:func:`rescore`).

    A new model that validates worse than ``checkpoint`` is not scored (``scored`` stays
    ``None``): the queue follows the project's latest scores, and it must not follow a model
    nobody chose (score it once it is chosen).
    """
    result = yield from finetune(project, checkpoint, config, models=models, source=source, stop=stop)
    if result.worse:
        return result
    return (yield from rescore(project, result, stop=stop))
