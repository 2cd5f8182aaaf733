"""Focal loss (Lin et al. 2017) for the rare PRL class.

``loss = -alpha_t (1 - p_t)^gamma log(p_t)`` where ``p_t`` is the predicted probability of the
true class. ``gamma`` (2) shrinks the loss of lesions the network already gets right, so
training concentrates on the hard ones (a homogeneously paramagnetic lesion, a vein at the
edge). ``alpha`` weights the **positive (PRL) class**; negatives get ``1 - alpha``. The paper's
``alpha = 0.2`` therefore *down*-weights PRLs: with class-balanced sampling every batch is
already about half PRLs, and the extra weight on negatives keeps false positives (the costly
error when most lesions are not PRLs) down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0,
               alpha: float = 0.2) -> torch.Tensor:
    """Mean binary focal loss of logits against 0/1 targets (``alpha`` weights class 1)."""
    targets = targets.to(logits.dtype)
    # log p_t from the logits directly: stable for confident predictions.
    log_pt = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = log_pt.exp()
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (-alpha_t * (1 - pt).pow(gamma) * log_pt).mean()
