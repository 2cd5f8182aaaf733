"""npe2 sample data: one synthetic subject from the package's simulator."""

from __future__ import annotations

from napari_deep_prl._napari.layers import LayerData, subject_layers
from napari_deep_prl.simulate import sample_subject


def synthetic_subject() -> list[LayerData]:
    """Phase, MP2RAGE, FLAIR, magnitude, lesion labels and the (hidden) PRL mask of a small
    synthetic subject."""
    simulated = sample_subject(seed=0)
    return subject_layers(simulated.subject, name_prefix="synthetic")
