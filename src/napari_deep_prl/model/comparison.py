"""Did training help? A model against the one it started from, on the same held-out lesions.

Fine-tuning always saves the new model; whether to *use* it depends on whether it validates
better than the model it started from. The comparison is made fair by giving both the same
lesions and the same recipe:

- **The same lesions**: each network's validation subjects of this run (the shares of
  :func:`~napari_deep_prl.data.splits.validation_shares`), which the new network did not train on;
  for an ensemble, starting network ``i`` is scored on new network ``i``'s share, and the
  shares are pooled (out of fold).
- **The same recipe**: each network's raw probabilities (averaged over the views the new
  network is calibrated on, :func:`~napari_deep_prl.model.inference.checkpoint_views`) are
  calibrated on its own share under the run's threshold rule, exactly as training calibrates
  the new network; the pooled outputs' best F1 and ROC
  AUC are compared. For one network the calibration changes neither figure (it is monotone);
  for an ensemble it puts the starting networks on the footing the new ones have (theirs were
  calibrated on other patients), so the pooled figures compare like with like. The new
  model's figures are those its training recorded (``Checkpoint.validation`` or the
  ensemble's out-of-fold validation), which follow this very recipe.

The rule (:func:`validates_worse`): the new model validates worse when its F1 is lower, or equal with a
lower ROC AUC. F1 moves in steps of a lesion on a small validation set, so a single lesion can
tip it: the choice is then shown to the user, never made silently.

One caveat: a starting model fine-tuned earlier on the same project may have trained on some of
these validation subjects then (the split follows the PRL counts, which change as labels come
in). That favours the starting model, so the comparison errs towards keeping it. A model
trained from scratch has nothing to compare with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.inference import (
    View,
    checkpoint_views,
    network_probabilities,
)
from napari_deep_prl.model.metrics import (
    THRESHOLD_RULES,
    model_output,
    operating_point,
    roc_auc,
)
from napari_deep_prl.model.train import TrainConfig


def share_output(checkpoint: Checkpoint, share: PatchSet, views: Sequence[View], config: TrainConfig) -> np.ndarray:
    """The network's output on its validation lesions seen in ``views``, calibrated on them as
    training does (in float32, as training validates)."""
    raw = network_probabilities(checkpoint, share.x, views, device=config.device, precision="float32")
    return model_output(raw, operating_point(share.y, raw, config.threshold_rule).calibration)


def held_out_validation(checkpoints: Sequence[Checkpoint], patches: PatchSet,
                        shares: Sequence[Sequence[str]], config: TrainConfig,
                        views: Sequence[Sequence[View]] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Each network's output on its own validation subjects, pooled, and the pool's validation.

    ``views``: each network's views; by default its own (:func:`checkpoint_views`). Returns one
    row per validation lesion (``subject, lesion, member, prl, prl_probability``) and the pool's
    best F1, ROC AUC and threshold (``config.threshold_rule``) with lesion counts.
    """
    views = [checkpoint_views(c) for c in checkpoints] if views is None else views
    rows = []
    for member, (checkpoint, share, seen) in enumerate(zip(checkpoints, shares, views, strict=True)):
        part = patches.select(share).originals()
        rows.append(pd.DataFrame({"subject": part.subject, "lesion": part.lesion, "member": member,
                                  "prl": part.y.astype(int),
                                  "prl_probability": share_output(checkpoint, part, seen, config)}))
    table = pd.concat(rows, ignore_index=True)
    truth, probability = table["prl"].to_numpy(), table["prl_probability"].to_numpy()
    threshold, f1 = THRESHOLD_RULES[config.threshold_rule](truth, probability)
    return table, {"val_f1": f1, "val_auc": roc_auc(truth, probability), "threshold": threshold,
                   "lesions": len(table), "prl_lesions": int(truth.sum())}


def validates_worse(new: dict[str, float], start: dict[str, float]) -> bool:
    """Whether ``new`` validates worse than ``start``: lower F1, or equal F1 and lower ROC AUC
    (an undefined AUC ranks below any other)."""
    def rank(v: dict[str, float]) -> tuple[float, float]:
        auc = float(v["val_auc"])
        return round(float(v["val_f1"]), 9), -math.inf if math.isnan(auc) else round(auc, 9)

    return rank(new) < rank(start)


@dataclass(frozen=True)
class Comparison:
    """The new model's and the starting model's validation on the same held-out lesions."""

    #: The new model's validation (``val_f1``, ``val_auc``, ...), as its training recorded it.
    new: dict[str, float]
    #: The starting model's, on the same lesions by the same recipe, with lesion counts.
    start: dict[str, float]

    @property
    def worse(self) -> bool:
        """The new model validates worse than the one it started from (see :func:`validates_worse`)."""
        return validates_worse(self.new, self.start)

    def figures(self) -> str:
        """Both models' F1 and ROC AUC, e.g. for the message that offers the choice."""
        return (f"new model F1 {_figure(self.new['val_f1'])}, ROC AUC {_figure(self.new['val_auc'])}; "
                f"starting model F1 {_figure(self.start['val_f1'])}, ROC AUC {_figure(self.start['val_auc'])}")

    def summary(self) -> str:
        """One line for the CLI and the panel: the figures and the verdict."""
        verdict = "the new model validates WORSE" if self.worse else "the new model validates at least as well"
        return (f"on the same {self.start['lesions']} held-out lesions ({self.start['prl_lesions']} PRL): "
                f"{self.figures()}: {verdict}")


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def compare_with_start(start: Sequence[Checkpoint], new: Sequence[Checkpoint], new_validation: dict[str, float],
                       patches: PatchSet, config: TrainConfig) -> Comparison:
    """The starting network(s) scored on the validation subjects of the new one(s) they became.

    ``new[i]`` was trained from ``start[i]`` (a stopped ensemble has fewer new networks: the
    comparison then covers those); ``new_validation`` is the new model's recorded validation.
    """
    shares = [c.metadata["training"]["val_subjects"] for c in new]
    _, validation = held_out_validation(start[:len(new)], patches, shares, config,
                                        [checkpoint_views(c) for c in new])
    return Comparison(new_validation, validation)
