"""What the model panel says about a model: what it learnt from, how it validated, its lineage.

The panel's other text (tooltips, the blind-mode and worse-model notes) is in
:mod:`napari_deep_prl._napari.messages`, with the rest of the plugin's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from napari_deep_prl.model.backend import Model
from napari_deep_prl.model.checkpoint import NEEDS_CHECKPOINT, Checkpoint
from napari_deep_prl.model.crossfit import ensemble_info
from napari_deep_prl.model.onnx_model import OnnxModel
from napari_deep_prl.scoring.score import decision_threshold


def _metric(values: dict, key: str) -> str:
    value = values.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def describe_model(model: Model, path: Path | None = None) -> str:
    """What the panel says of the model in use: :func:`describe_checkpoint`, or for an ONNX
    model what its metadata records (:func:`describe_onnx`)."""
    return describe_onnx(model) if isinstance(model, OnnxModel) else describe_checkpoint(model, path)


def describe_onnx(model: OnnxModel) -> str:
    """An exported model: its networks, threshold and patches, and that it only scores."""
    spec, first = model.spec, model.networks[0]
    ids = ", ".join(n.id for n in model.networks)
    calibrated = " (calibrated probability)" if all(n.calibration for n in model.networks) else ""
    return "<br>".join([
        f"<b>{model.path.name}</b> · ONNX export of {len(model.networks)} network(s) · ids {ids}",
        (f"threshold {model.threshold:.2f}{calibrated}; patches {first.patch_config.size}³, "
         f"{first.patch_config.normalisation} normalisation"),
        f"exported by napari-deep-prl {spec.get('package_version', '?')}; scores in onnxruntime",
        f"only scores: {NEEDS_CHECKPOINT} need the .pt checkpoint",
    ])


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
    site = meta.get("recalibration")
    if site:
        lines.append(f"recalibrated for {site.get('site', '?')} on {site.get('lesions', '?')} lesions "
                     f"({site.get('prls', '?')} PRL), {str(site.get('date', '?'))[:10]}; "
                     f"was {site.get('previous_id', '?')}")
    if meta.get("package_version"):
        lines.append(f"napari-deep-prl {meta['package_version']}")
    return "<br>".join(lines)
