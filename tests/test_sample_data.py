"""The sample-data contribution opens a synthetic subject in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_sample_subject_opens_with_phase_mp2rage_extras_and_lesions(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-deep-prl", "synthetic_subject")
    names = [layer.name for layer in layers]
    assert names == ["synthetic magnitude", "synthetic flair", "synthetic mp2rage", "synthetic phase",
                     "synthetic lesions", "synthetic prl mask"]
    lesions = viewer.layers["synthetic lesions"]
    assert lesions.data.max() >= 5  # several labelled lesions
    prl = viewer.layers["synthetic prl mask"]
    assert prl.data.any() and not prl.visible  # ground truth is there but hidden from a rater's first look
    phase = viewer.layers["synthetic phase"]
    assert phase.contrast_limits[0] == pytest.approx(-phase.contrast_limits[1])
    for name in ("mp2rage", "flair", "magnitude"):
        assert np.allclose(phase.affine.affine_matrix, viewer.layers[f"synthetic {name}"].affine.affine_matrix)
