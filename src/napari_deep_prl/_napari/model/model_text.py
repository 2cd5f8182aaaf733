"""User-facing text of the model panel and the fine-tuning box, kept in one place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.crossfit import ensemble_info
from napari_deep_prl.scoring.score import decision_threshold

SCORES_HIDDEN = ("Model scores are hidden while a blind rater session is open in this viewer; "
                 "they come back when it closes.")

TOOLTIPS = {
    "open": "A project folder (made with `deep-prl project init`): its subjects can be scored "
            "and the scores are stored as predictions.",
    "load": "A Deep-PRL checkpoint (.pt). It is loaded with weights only: it cannot run code.",
    "score": "Score the chosen subject (or the subject shown in the viewer) in the background.",
    "score_all": "Score every subject of the project; scores already stored for this model are "
                 "reused.",
    "decision": "How a project's scored lesions are called PRL: each at the model's validation "
                "threshold, or all together, as many of the most probable as maximise the F1 "
                "their calibrated probabilities expect (for a study's PRL counts; calibrated "
                "models only).",
    "blind": "Raters must not see model scores while labelling: hides probabilities, colours "
             "and the PRL count.",
    "source": "Which labels to learn from: the consensus, or one rater's labels (imported PRL "
              "masks appear as the rater 'prl_mask').",
    "epochs": "Passes over the labelled lesions.",
    "lr": "Learning rate (Adam). Fine-tuning a loaded model: keep it small.",
    "val": "Fraction of subjects held out (whole subjects) to pick the decision threshold by F1. "
           "An ensemble validates each network on a different share of the subjects instead.",
    "networks": "Networks trained when there is no model to start from: more than one trains a "
                "cross-fitted ensemble (each validated on a different share of the subjects), which "
                "scored better than one network but takes as many times longer. A loaded model keeps "
                "its own number.",
    "start": "Train in the background; the viewer stays usable. Cancel keeps the best model so "
             "far. The result is saved as the next version in the project's models folder.",
    "auto": "Retrain automatically after this many new labels, then re-score the project so "
            "the review queue is re-ranked.",
    "use_new": "Make the new model the panel's model although it validated worse than the current "
               "one on the same held-out lesions.",
    "keep": "Keep the panel's model; the new one stays saved in the project's models folder.",
}

#: The fine-tuning box's status when the new model validates worse than the one it started from.
WORSE_MODEL = ("{summary}. It validates worse than the model it started from on the same held-out "
               "lesions ({figures}), so the panel keeps its current model. The new model is saved: "
               "use it anyway, or keep the current one?")


def _metric(values: dict, key: str) -> str:
    value = values.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def describe_checkpoint(checkpoints: Checkpoint | Sequence[Checkpoint], path: Path | None = None) -> str:
    """What a user needs to trust a model: what it learnt from, how it validated, its lineage.

    An ensemble file is described by its first member's training data (the members share the
    patients, each validated on a different part) and the out-of-fold validation of all.
    """
    members = [checkpoints] if isinstance(checkpoints, Checkpoint) else list(checkpoints)
    checkpoint = members[0]
    meta = checkpoint.metadata
    labels = meta.get("labels", {})
    training = meta.get("training", {})
    ensemble = ensemble_info(members) if len(members) > 1 else None
    if labels:
        learnt = (f"{labels.get('n', '?')} labels ({labels.get('n_prl', '?')} PRL) from "
                  f"{labels.get('source', '?')}, {len(labels.get('subjects', []))} subjects")
    elif ensemble:
        learnt = f"{ensemble['out_of_fold'].get('lesions', '?')} lesions, each validated out of fold"
    elif training:
        learnt = (f"{training.get('train_lesions', '?')} lesions of "
                  f"{len(training.get('train_subjects', []))} subjects")
    else:
        learnt = "not recorded"
    if ensemble:
        validated = f"out-of-fold validation{' (8-flip TTA)' if checkpoint.tta else ''}"
        validation = ensemble["out_of_fold"]
    else:
        validated = f"validation{' (8-flip TTA)' if checkpoint.tta else ''}"
        validation = checkpoint.validation
    kind = (f"ensemble of {len(members)} {'cross-fitted ' if ensemble else ''}models · ids "
            f"{', '.join(m.id for m in members)}" if len(members) > 1 else f"id {checkpoint.id}")
    lines = [
        f"<b>{path.name if path else 'model'}</b> · {kind}",
        f"trained on: {learnt}",
        (f"{validated}: F1 {_metric(validation, 'val_f1')}, "
         f"AUC {_metric(validation, 'val_auc')}, threshold {decision_threshold(members):.2f}"
         f"{' (calibrated probability)' if all(m.calibration for m in members) else ''}"),
        (f"patches {checkpoint.patch_config.size}³, {checkpoint.patch_config.normalisation} "
         f"normalisation; widths {list(checkpoint.model_config.widths)}, "
         f"dropout {checkpoint.model_config.dropout}"),
    ]
    if meta.get("parent"):
        lines.append(f"fine-tuned from {meta['parent']}")
    if meta.get("package_version"):
        lines.append(f"napari-deep-prl {meta['package_version']}")
    return "<br>".join(lines)
