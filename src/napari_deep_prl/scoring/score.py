"""Scoring lesions: PRL probability, decision and uncertainty per lesion; PRL counts per subject.

:func:`score_subject` is the one way a subject's lesions are scored: ``deep-prl score``
(:func:`score_cohort`), the model panel, ``deep-prl active score`` and fine-tuning's re-score
(:mod:`napari_deep_prl.scoring.project`) all call it, so the same model and lesion get the same
probability, call and uncertainty everywhere. Only the images of the models' contrasts are read
(the networks of an ensemble must share them), and a subject lacking one is refused, naming it,
what it lacks and the model, before any image is read (:func:`require_model_contrasts`). The
lesions are cut into patches with the patch
settings stored in each checkpoint (once per distinct setting, a run of lesions at a time) and
go through :func:`napari_deep_prl.model.inference.view_probabilities`: every network scores each
lesion as cut, and in the other views its threshold and calibration were chosen on unless that
first look puts the lesion below half the decision threshold (the screen,
:data:`~napari_deep_prl.model.inference.SCREEN_SHARE`); each view is calibrated by its own
network. Over the samples scored (networks × views, of whatever patch settings) the mean is
``prl_probability`` (for a lesion the screen stopped, the median of the networks' first looks),
the standard deviation ``uncertainty_sd`` and the mutual information ``bald``
(:func:`~napari_deep_prl.model.inference.from_samples`; both ``n/a`` for a single sample). The
decision ``prl`` is ``prl_probability >=`` the mean of the checkpoints' validation thresholds,
or the operating point given as ``threshold`` (e.g. a lower one for a more sensitive screen,
read off the validation or cross-validation ROC curve). For a study's whole cohort,
``decision="expected_f1"`` instead calls as many of the most probable lesions as maximise the
F1 expected from their calibrated probabilities (:func:`score_cohort`).

``precision="auto"`` (the default) runs the network in bfloat16 where the hardware computes it
natively (:func:`napari_deep_prl.model.inference.resolve_precision`): about 1.25x faster on such a CPU,
with probabilities within 0.005 of float32 and the same decisions on 690 held-out lesions
(docs/model.md, "bfloat16"); ``"float32"`` gives the same numbers on every machine.

``tta=None`` (the default) scores each checkpoint on its own views
(:func:`~napari_deep_prl.model.inference.checkpoint_views`), screened. ``tta=True`` scores every
lesion on all 8 flips of every network, unscreened (what earlier versions did for models
calibrated on the flips); ``False`` on the patch as cut alone: for studies, as the threshold of a
model calibrated on the flips was not chosen on that.

When a subject comes with ground truth (a PRL mask or a lesion label table), its rows also
carry ``prl_truth`` (:func:`napari_deep_prl.data.lesions.lesion_table`'s ``prl``; blank for lesions a
label table leaves out) and :func:`truth_by_kind` scores the decisions against it per lesion
kind (:func:`truth_metrics`: one kind): an independent test set is scored and evaluated in one
call.

Each row also carries what a rater can check without the model: the lesion's size
(``volume_voxels``, ``diameter_mm``) and its rim evidence (``rim_coverage``, ``rim_slices``),
measured on the susceptibility image by :func:`napari_deep_prl.data.evidence.rim_evidence`.

Per subject: the number of lesions, the PRL count, and the ``prl_ge1`` / ``prl_ge4`` flags (at
least one / at least four PRLs) used as diagnostic and prognostic markers in the literature.

Outputs follow BIDS derivative conventions: one TSV row per lesion (:data:`SCORE_COLUMNS`),
and on request ``<subject>_space-<reference>_desc-PRL_probseg.nii.gz`` on the subject's reference
grid (named by its image, :attr:`~napari_deep_prl.data.images.Subject.space`), each
lesion's voxels holding its PRL probability (the subject id made a safe file name by
:func:`~napari_deep_prl.base.filenames.file_components`, so the map always lands in its folder).
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.filenames import file_components, output_path
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import write_nifti
from napari_deep_prl.data.contrasts import require_contrasts
from napari_deep_prl.data.evidence import EVIDENCE_COLUMNS, rim_evidence
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.lesions import (
    Lesions,
    find_lesions,
    lesion_kinds,
    lesions_in_mask,
    with_truth,
)
from napari_deep_prl.data.patches import (
    PatchConfig,
    chunk_length,
    mask_patches,
    patch_runs,
    warn_if_outgrown,
)
from napari_deep_prl.model.backend import Model, networks, view_scorers
from napari_deep_prl.model.checkpoint import Checkpoint, common_contrasts
from napari_deep_prl.model.inference import (
    INFERENCE_BATCH,
    SCREEN_SHARE,
    UNCALIBRATED_BECAUSE,
    from_samples,
    uncalibrated,
)
from napari_deep_prl.model.metrics import (
    COUNT_KEYS,
    KIND_ROWS,
    REPORT_KEYS,
    expected_f1_threshold,
    metrics_by_kind,
)

#: Columns of a scored lesion table, wherever it was scored (:func:`score_subject`); the last
#: ones are the lesion's size and rim evidence (:mod:`napari_deep_prl.data.evidence`).
SCORE_COLUMNS = ("subject", "lesion", "x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_mm3",
                 "prl_probability", "prl", "uncertainty_sd", "bald", "confluent", "component", "split_from",
                 "volume_voxels", *EVIDENCE_COLUMNS)
SUBJECT_COLUMNS = ("subject", "lesions", "prl_count", "prl_ge1", "prl_ge4")


#: Largest factor by which a subject's reference voxels may differ from those a model's patches
#: were cut on, along any axis (sorted by size): beyond it a patch of the same voxels covers
#: another extent of tissue than the model learnt from.
VOXEL_TOLERANCE = 1.5

#: How lesions are called PRL (see :func:`score_cohort`).
DECISIONS = ("validation", "expected_f1")
Decision = Literal["validation", "expected_f1"]


@dataclass
class Scores:
    """Per-lesion scores and per-subject summaries of a cohort, the cut the decisions used, and
    the subjects left out because their files could not be read (subject → why)."""

    lesions: pd.DataFrame
    subjects: pd.DataFrame
    threshold: float
    unreadable: dict[str, str] = field(default_factory=dict)


def score_subject(subject: Subject, checkpoints: Model, *, lesions: Lesions | None = None,
                  threshold: float | None = None, tta: bool | None = None, batch_size: int = INFERENCE_BATCH,
                  device: str = "auto", precision: str = "auto",
                  first_masks: dict[PatchConfig, np.ndarray] | None = None, evidence: bool = True) -> pd.DataFrame:
    """One row per lesion of the subject (:data:`SCORE_COLUMNS`; with ``prl_truth`` when the
    lesions carry ground truth): the one scoring path (see the module doc).

    ``evidence=False`` leaves the rim evidence columns empty, for callers that store only the
    model's outputs (a project's scores: the review measures the evidence of the lesion shown).

        ``checkpoints``: the model, its networks' checkpoints or an exported ONNX model
    (:mod:`napari_deep_prl.model.backend`); ``lesions``: the subject's lesions when already
    found; ``threshold``: the decision's cut (:func:`decision_threshold`); ``first_masks``: the
    mask channels of the first run of lesions per patch setting, cut beforehand
    (:func:`_load_and_find`).
    """
    threshold = decision_threshold(checkpoints, threshold)
    require_model_contrasts([subject], checkpoints)
    require_model_grid(subject, checkpoints)
    lesions = find_lesions(subject) if lesions is None else lesions
    table = lesions.table
    if len(table) == 0:
        return _empty_scores()
    samples = []
    screen = None if tta is not None else SCREEN_SHARE * threshold
    scorers = view_scorers(checkpoints, tta=tta, batch_size=batch_size, device=device, precision=precision)
    for config, scorer in scorers.items():  # one cut per patch setting
        # a run of lesions cut and scored at a time: memory does not grow with the lesion count
        samples.append(np.concatenate([
            scorer(x, screen=screen)
            for x in patch_runs(subject, lesions, config, first_mask=(first_masks or {}).get(config))], axis=1))
    prediction = from_samples(np.concatenate(samples))
    out = table[["subject", "lesion", "x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_mm3"]].copy()
    out["prl_probability"] = prediction.probability
    out["prl"] = (prediction.probability >= threshold).astype(int)
    out["uncertainty_sd"] = prediction.uncertainty_sd
    out["bald"] = prediction.bald
    for column in ("confluent", "component", "split_from", "volume_voxels"):
        out[column] = table[column].to_numpy()
    warn_if_parts_unseen(table, checkpoints)
    measured = rim_evidence(subject, lesions.labels).set_index("lesion") if evidence else None
    for column in EVIDENCE_COLUMNS:
        out[column] = out["lesion"].map(measured[column]).to_numpy() if evidence else np.nan
    if "prl" in table:
        out["prl_truth"] = table["prl"].astype("Int64")  # NA: a lesion the label table leaves out
    return out.reset_index(drop=True)


def require_model_contrasts(cohort: Sequence[SubjectPaths | Subject], checkpoints: Model) -> tuple[str, ...]:
    """The contrasts the models take (:func:`~napari_deep_prl.model.checkpoint.common_contrasts`),
    after checking that every subject of ``cohort`` has them: an InputError naming each subject
    lacking one, what it lacks and the model, before any image is read."""
    members = networks(checkpoints)
    contrasts = common_contrasts(members)
    model = (f"model {members[0].id} ({', '.join(contrasts)})" if len(members) == 1 else
             f"the ensemble of {len(members)} networks ({', '.join(contrasts)})")
    require_contrasts(((item.subject, _contrasts_of(item)) for item in cohort), contrasts, model)
    return contrasts


def require_model_grid(subject: Subject, checkpoints: Model) -> None:
    """Refuse a subject whose patches would be cut on voxels unlike those the model learnt on
    (:attr:`~napari_deep_prl.model.checkpoint.Checkpoint.reference_grid`; differing by more than
    :data:`VOXEL_TOLERANCE` along an axis): an InputError naming both grids and the manifest's
    ``reference`` column that puts the subject on a grid like the model's. Subjects made in
    memory and models that record no grid are not checked."""
    trained = next((c.reference_grid for c in networks(checkpoints) if isinstance(c, Checkpoint) and c.reference_grid),
                   None)
    if trained is None or subject.reference is None:
        return
    role, voxel = trained
    ratio = np.asarray(sorted(subject.zooms)) / np.asarray(sorted(voxel))
    if np.all((ratio <= VOXEL_TOLERANCE) & (ratio >= 1 / VOXEL_TOLERANCE)):
        return
    member = networks(checkpoints)[0]

    def shown(zooms: Sequence[float]) -> str:
        return " × ".join(f"{z:.3g}" for z in zooms) + " mm"

    raise InputError(
        f"subject {subject.subject}: its patches would be cut on the grid of its {subject.reference} image "
        f"({shown(subject.zooms)} voxels), but model {member.id} learnt on the grid of the {role} image "
        f"({shown(voxel)} voxels): {member.patch_config.size}-voxel patches would cover another extent of "
        f"tissue than the model saw. Put the subject on a grid like the model's (manifest column reference: "
        f"{role}), or score it with a model trained on subjects like it.")


def _contrasts_of(item: SubjectPaths | Subject) -> list[str]:
    return list(item.images) if isinstance(item, Subject) else [name for name, _ in item.images]


def decision_threshold(checkpoints: Model, threshold: float | None = None) -> float:
    """The operating point ``threshold`` if given, else the mean of the models' validation ones."""
    if not networks(checkpoints):
        raise InputError("no model given; pass at least one checkpoint")
    if threshold is None:
        return float(np.mean([c.threshold for c in networks(checkpoints)]))
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold {threshold:g} is not a probability: give a value from 0 to 1 "
                         "(lower calls more lesions PRL)")
    return float(threshold)


def score_cohort(cohort: Sequence[SubjectPaths | Subject], checkpoints: Model, *,
                 tta: bool | None = None, threshold: float | None = None,
                 nifti_dir: str | Path | None = None, batch_size: int = INFERENCE_BATCH,
                 device: str = "auto", precision: str = "auto", flip_phase: bool = False,
                 decision: Decision = "validation", skip_unreadable: bool = False,
                 ) -> Generator[Progress, None, Scores]:
    """Score every subject (loaded once each); optionally write probability maps to ``nifti_dir``.

    A subject whose files cannot be read stops the run, or with ``skip_unreadable`` is left out
    with a warning and listed in :attr:`Scores.unreadable`, so that one damaged file does not
    cost a long cohort run its other subjects.

    Items of ``cohort`` already loaded (:class:`Subject`) are used as they are. ``decision``:

    ``"validation"`` (default)
        each lesion on its own, at ``threshold`` (:func:`decision_threshold`).
    ``"expected_f1"``
        the whole cohort at once: the lesions called PRL are the most probable ones, as many as
        maximise the F1 expected from their calibrated probabilities
        (:func:`~napari_deep_prl.model.metrics.expected_f1_threshold`, on the non-confluent lesions
        as evaluation counts them). The cut then suits this cohort's share of likely PRLs, but
        one lesion's call depends on the others scored with it: for a study's cohort, not for
        one patient. Needs calibrated models.
    """
    threshold = checked_decision(checkpoints, threshold, decision)
    contrasts = require_model_contrasts(cohort, checkpoints)
    names = {} if nifti_dir is None else file_components((item.subject for item in cohort), what="subject id")
    configs = list(dict.fromkeys(c.patch_config for c in networks(checkpoints)))
    tables, found, unreadable = [], [], {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deep-prl-lesions") as pool:
        for step, item in enumerate(cohort):
            try:
                if isinstance(item, Subject):
                    subject, lesions, masks = item, find_lesions(item), {}
                else:
                    subject, lesions, masks = _load_and_find(item, configs, contrasts, flip_phase, pool)
            except InputError as err:
                if not skip_unreadable:
                    raise
                unreadable[item.subject] = str(err)
                warnings.warn(InputWarning(f"{item.subject} left out: {err}"), stacklevel=2)
                yield Progress(step + 1, len(cohort), "subject", item.subject, {})
                continue
            table = score_subject(subject, checkpoints, lesions=lesions, threshold=threshold, tta=tta,
                                  batch_size=batch_size, device=device, precision=precision, first_masks=masks)
            if nifti_dir is not None:
                write_probability_map(lesions.labels, table, subject.affine, output_path(
                    nifti_dir, f"{names[subject.subject]}_space-{subject.space}_desc-PRL_probseg.nii.gz"))
            tables.append(table)
            found.append(lesions.table)
            # under the cohort's decision a subject's count is known only at the end
            counts = {"prl_count": float(table["prl"].sum())} if decision == "validation" else {}
            yield Progress(step + 1, len(cohort), "subject", subject.subject, counts)
    for config in configs:
        warn_if_outgrown(found, config.size, "Their probabilities are less reliable; a model trained "
                         "with a larger --patch-size would see them whole.")
    lesions_table = pd.concat(tables, ignore_index=True) if tables else _empty_scores()
    if decision == "expected_f1" and len(lesions_table):
        if len(cohort) == 1:
            warnings.warn(InputWarning(
                "the cohort decision on a single subject calls each of its lesions by the others it has; "
                "it is meant for a study's cohort: decide one patient at the models' threshold"), stacklevel=2)
        lesions_table, threshold = decided(lesions_table, threshold, decision)
    scored = [p.subject for p in cohort if p.subject not in unreadable]
    return Scores(lesions_table, subject_summary(lesions_table, scored), threshold, unreadable)


def warn_if_parts_unseen(table: pd.DataFrame, checkpoints: Model) -> None:
    """Warn when lesions split from confluent components are scored by models whose training set
    held no such part (``train_confluent_parts`` of their training summary, absent in models
    trained before lesions were split, and in an exported ONNX model's networks, whose metadata
    carry no training summary): their probabilities for the parts are an extrapolation."""
    parts = int((table["split_from"] > 0).sum())
    unseen = [c.id for c in networks(checkpoints)
              if not getattr(c, "metadata", {}).get("training", {}).get("train_confluent_parts")]
    if parts and unseen:
        warnings.warn(InputWarning(
            f"lesions split from confluent components are scored by model(s) {', '.join(unseen[:3])}, trained "
            "without any such part: their probabilities for these lesions are less reliable. Retrain on masks "
            "with confluent lesions (without --exclude-confluent), or review these lesions (split_from > 0) "
            "yourself."), stacklevel=3)


def checked_decision(checkpoints: Model, threshold: float | None, decision: str) -> float:
    """The per-lesion cut (:func:`decision_threshold`), after checking that ``decision`` can be made."""
    if decision not in DECISIONS:
        raise InputError(f"unknown decision '{decision}'; use {' or '.join(DECISIONS)}")
    if decision == "expected_f1":
        if threshold is not None:
            raise InputError("a threshold and the cohort's expected-F1 decision exclude each other; give one")
        raw = uncalibrated(networks(checkpoints))
        if raw:
            raise InputError(f"the expected-F1 decision needs calibrated probabilities, and model(s) "
                             f"{', '.join(raw)} output raw ones ({UNCALIBRATED_BECAUSE}); retrain them "
                             "with the default rule, or decide at their threshold")
    return decision_threshold(checkpoints, threshold)


def decided(scores: pd.DataFrame, threshold: float, decision: Decision) -> tuple[pd.DataFrame, float]:
    """``scores`` with ``prl`` called at ``threshold``, or for ``"expected_f1"`` at the cut of
    the lesions together (:func:`cohort_threshold`); and the cut used."""
    if decision == "expected_f1" and len(scores):
        threshold = cohort_threshold(scores)
    return scores.assign(prl=(scores["prl_probability"] >= threshold).astype(int)), threshold


def cohort_threshold(scores: pd.DataFrame) -> float:
    """The expected-F1 cut of a cohort's scored lesions (``"expected_f1"`` of :func:`score_cohort`).

    Confluent lesions are left out of the choice, as evaluation leaves them out; they are still
    decided at the cut.
    """
    alone = ~scores["confluent"].astype(bool)
    return expected_f1_threshold(scores.loc[alone, "prl_probability"])[0]


def _load_and_find(paths: SubjectPaths, configs: Sequence[PatchConfig], contrasts: Sequence[str],
                   flip_phase: bool, pool: ThreadPoolExecutor
                   ) -> tuple[Subject, Lesions, dict[PatchConfig, np.ndarray]]:
    """Load a subject (only the images of the models' ``contrasts``), find its lesions and cut
    the mask channels of the first run of them
    (:func:`patches.patch_runs`; one per patch setting).

    The lesion work needs only the mask, so it runs on a second core while the images decompress
    (zlib releases the GIL): that hides most of it. The small mask file is read twice for it.
    """
    def from_mask() -> tuple[Lesions, dict[PatchConfig, np.ndarray]]:
        lesion_mask = paths.load_mask()
        lesions = lesions_in_mask(lesion_mask.mask, lesion_mask.affine, paths.subject, labels=lesion_mask.labels)
        return lesions, {config: mask_patches(lesions, config, ids=lesions.ids[:chunk_length(config.size)])
                         for config in configs}

    found = pool.submit(from_mask)
    subject = paths.load(flip_phase=flip_phase, contrasts=contrasts)
    lesions, masks = found.result()
    return subject, with_truth(lesions, subject), masks


def subject_summary(scores: pd.DataFrame, subjects: Sequence[str]) -> pd.DataFrame:
    """Lesion and PRL counts per subject, with the ≥ 1 and ≥ 4 PRL flags (subjects kept in order)."""
    grouped = scores.groupby("subject", sort=False)
    counts = pd.DataFrame({"subject": list(subjects)})
    counts["lesions"] = counts["subject"].map(grouped.size()).fillna(0).astype(int)
    counts["prl_count"] = counts["subject"].map(grouped["prl"].sum()).fillna(0).astype(int)
    counts["prl_ge1"] = counts["prl_count"] >= 1
    counts["prl_ge4"] = counts["prl_count"] >= 4
    return counts


def probability_volume(labels: np.ndarray, scores: pd.DataFrame, column: str = "prl_probability") -> np.ndarray:
    """A float32 volume where each lesion's voxels hold its ``column`` value (0 elsewhere)."""
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.float32)
    lookup[scores["lesion"].to_numpy(dtype=np.int64)] = scores[column].to_numpy(dtype=np.float32)
    return lookup[labels]


def write_probability_map(labels: np.ndarray, scores: pd.DataFrame, affine: np.ndarray, path: Path) -> Path:
    """Save :func:`probability_volume` as NIfTI on the subject's reference grid (atomically: a failed write
    leaves no partial map under the name)."""
    image = nib.Nifti1Image(probability_volume(labels, scores), affine)
    image.header.set_intent("estimate", name="PRL probability")
    return write_nifti(image, path)


def truth_by_kind(scores: pd.DataFrame) -> pd.DataFrame | None:
    """The metrics of the lesions with ground truth (``prl_truth``) at the decision ``prl``, per
    lesion kind (:func:`~napari_deep_prl.model.metrics.metrics_by_kind`: non-confluent, confluent
    parts, confluent components kept whole, all); ``None`` when no lesion has any."""
    if "prl_truth" not in scores:
        return None
    known = scores[scores["prl_truth"].notna()]
    if known.empty:
        return None
    return metrics_by_kind(known.assign(kind=lesion_kinds(known), prl_truth=known["prl_truth"].astype(int)))


def truth_metrics(scores: pd.DataFrame, *, lesions: str = "non_confluent") -> dict[str, float] | None:
    """F1, sensitivity, specificity, PPV, ROC AUC and counts of one kind of lesion with ground
    truth (a row of :func:`truth_by_kind`): the non-confluent ones by default, as the paper's
    protocol tests; ``None`` when no lesion of the kind has any."""
    if lesions not in KIND_ROWS:
        raise InputError(f"unknown lesion kind '{lesions}'; use {', '.join(KIND_ROWS)}")
    table = truth_by_kind(scores)
    if table is None or not table.at[lesions, "lesions"]:
        return None
    return {key: int(table.at[lesions, key]) if key in COUNT_KEYS else float(table.at[lesions, key])
            for key in REPORT_KEYS}


def _empty_scores() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "subject" else "float64") for c in SCORE_COLUMNS})
