"""Baselines of the comparison, as methods of the cross-validation harness.

- **APRL-like** (:class:`RadiomicsMethod`): first-order radiomics of the susceptibility image
  (phase or QSM) in the lesion core, its inner rim band and an outer shell, plus each structural
  image's contrast and the volume (:mod:`napari_deep_prl.evaluation.radiomics`), into a
  class-balanced logistic regression. It takes the cohort's contrasts, as the networks do. Its
  threshold is the best-F1 cut on the inner validation fold, as for the networks.
- **RimNet-like** (:func:`rimnet_patches`): a plain CNN on the image contrasts (e.g. phase and
  MP2RAGE) of the lesion-centred patch, with no lesion mask and no mask attention. It is the Deep-PRL
  network with ``fusion="none"`` fed patches whose mask channel is zero, so that branch carries
  no information and the comparison changes nothing else (same training, same patches).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from napari_deep_prl.base.progress import Progress
from napari_deep_prl.model.metrics import THRESHOLD_RULES


@dataclass
class _FittedRadiomics:
    model: object
    features: pd.DataFrame
    columns: list[str]
    threshold: float
    val_f1: float

    def predict(self, subjects: Sequence[str]) -> pd.DataFrame:
        rows = self.features[self.features["subject"].isin(subjects)]
        probability = self.model.predict_proba(rows[self.columns].to_numpy(float))[:, 1]
        return rows[["subject", "lesion"]].assign(prl_probability=probability)


@dataclass
class RadiomicsMethod:
    """APRL-like radiomics + logistic regression on the lesions the harness tests."""

    features: pd.DataFrame
    #: The images the features come from: a model's contrasts (the structural ones, then the
    #: susceptibility image), as the cohort's networks take them.
    contrasts: tuple[str, ...]
    c: float = 1.0
    name: str = "radiomics"
    #: The validation argmax: a logistic regression's own probabilities, recalibrated on a few
    #: validation patients, cut worse (test F1 0.44 against 0.54, CHANGELOG.md).
    threshold_rule: str = "best_f1"

    @classmethod
    def build(cls, cohort: Sequence, lesions: pd.DataFrame, contrasts: Sequence[str]
              ) -> Generator[Progress, None, RadiomicsMethod]:
        """Features of the cohort's lesions from ``contrasts``, restricted to ``lesions``
        (``subject, lesion``)."""
        from napari_deep_prl.evaluation.radiomics import cohort_features

        features = yield from cohort_features(cohort, contrasts)
        keep = lesions[["subject", "lesion"]]
        return cls(features.merge(keep, on=["subject", "lesion"], how="inner"), tuple(contrasts))

    def options(self) -> dict:
        from napari_deep_prl.evaluation.radiomics import feature_names

        return {"kind": "radiomics", "c": self.c, "contrasts": list(self.contrasts),
                "features": feature_names(self.contrasts), "threshold_rule": self.threshold_rule}

    def fit(self, train: Sequence[str], val: Sequence[str], *, seed: int
            ) -> Generator[Progress, None, _FittedRadiomics]:
        """Logistic regression on ``train``; threshold and F1 on ``val`` (``seed`` unused:
        the fit is deterministic)."""
        from napari_deep_prl.evaluation.radiomics import (
            feature_names,
            radiomics_classifier,
        )

        columns = feature_names(self.contrasts)
        rows = self.features[self.features["subject"].isin(train)]
        model = radiomics_classifier(self.c).fit(rows[columns].to_numpy(float),
                                                 rows["prl"].to_numpy(bool))
        fitted = _FittedRadiomics(model, self.features, columns, 0.5, 0.0)
        validation = fitted.predict(val).merge(self.features[["subject", "lesion", "prl"]])
        fitted.threshold, fitted.val_f1 = THRESHOLD_RULES[self.threshold_rule](
            validation["prl"], validation["prl_probability"])
        yield Progress(1, 1, "fit", self.name, {"val_f1": fitted.val_f1})
        return fitted


def rimnet_patches(patches: object) -> object:
    """A :class:`~napari_deep_prl.model.dataset.PatchSet` whose patches read with the mask channel
    zeroed (no patch copied: the set it comes from is unchanged)."""
    return replace(patches, x=patches.x.zeroing(patches.config.channels.index("mask")))
