"""Where the network looks: a gradient × input saliency map of one lesion's patch.

For each voxel of the lesion's patch (cut as the model's checkpoints cut it,
:func:`~napari_deep_prl.data.patches.extract_patches`), the gradient of the network's PRL logit
with respect to each input channel times the channel's value, summed in absolute value over the
channels: how much that voxel's intensities move the decision. Averaged over the networks of a
model that share the first network's patch settings, and scaled to [0, 1] by its maximum. It is
shown as an optional overlay in the model panel, so a rater can see whether the call rests on
the lesion's edge (the rim) or on something else in the patch (a vein, a neighbouring lesion).

Gradient × input is simple and needs nothing of the network's layers, so it holds for every
preset and any channels; it is noisier than Grad-CAM and, like every saliency map, shows what
the decision is sensitive to, not why the lesion is a PRL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import Lesions
from napari_deep_prl.data.patches import centres_of, extract_patches
from napari_deep_prl.model.checkpoint import Checkpoint


@dataclass(frozen=True)
class Saliency:
    """A lesion's saliency map and where its patch lies on the subject's grid."""

    #: ``(s, s, s)`` float32 in [0, 1], the patch's voxels.
    map: np.ndarray
    #: Voxel index (3,) on the subject's grid of the patch's first voxel (may be negative or
    #: beyond the grid where the patch passes its border).
    origin: np.ndarray


def lesion_saliency(checkpoints: Sequence[Checkpoint], subject: Subject, lesions: Lesions,
                    lesion: int) -> Saliency:
    """Gradient × input saliency of lesion ``lesion``'s patch (see the module doc)."""
    if not checkpoints:
        raise InputError("no model given; load a checkpoint first")
    config = checkpoints[0].patch_config
    ids = np.array([int(lesion)])
    patch = torch.from_numpy(extract_patches(subject, lesions, config, ids=ids))
    total = torch.zeros(patch.shape[2:])
    group = [c for c in checkpoints if c.patch_config == config]
    for checkpoint in group:
        total += _gradient_times_input(checkpoint.model, patch)
    scale = float(total.max())
    saliency = (total / scale if scale > 0 else total).numpy().astype(np.float32)
    return Saliency(saliency, centres_of(lesions, ids)[0] - config.size // 2)


def _gradient_times_input(model: torch.nn.Module, patch: torch.Tensor) -> torch.Tensor:
    """``|d logit / d x| * x`` summed over channels, for a batch of one; the model in eval
    mode (batch norm on its running statistics) and its weights' gradients untouched."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = patch.to(device).requires_grad_(True)
            (gradient,) = torch.autograd.grad(model(x).sum(), x)
    finally:
        model.train(was_training)
    return (gradient * x).detach().abs().sum(dim=1)[0].cpu()
