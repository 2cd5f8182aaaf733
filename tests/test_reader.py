"""The reader opens a subject folder, a cohort folder or a manifest in a real viewer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_deep_prl._napari.reader import get_reader
from napari_deep_prl._napari.slices import default_window

pytestmark = pytest.mark.gui


def test_reader_declines_foreign_files(tmp_path):
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([str(other), str(other)]) is None


@pytest.mark.parametrize("target", ["subject_folder", "cohort_folder", "manifest"])
def test_open_in_viewer_places_layers_with_affine(make_napari_viewer, tmp_path, write_subject, manifest, target):
    path = {"subject_folder": tmp_path / "sub-01", "cohort_folder": tmp_path, "manifest": manifest}[target]
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-deep-prl")
    names = [layer.name for layer in layers]
    assert names[:3] == ["sub-01 mp2rage", "sub-01 phase", "sub-01 lesions"]
    phase = viewer.layers["sub-01 phase"]
    assert np.allclose(phase.affine.affine_matrix, np.diag([1.0, 1.0, 1.5, 1.0]))
    low, high = phase.contrast_limits
    assert low == pytest.approx(-high) and high > 0
    assert viewer.layers["sub-01 lesions"].data.max() == 3  # three lesions, labelled


def test_extra_images_open_as_grey_layers_below_phase_and_mp2rage(make_napari_viewer, tmp_path, write_subject):
    paths = write_subject("sub-04", folder=tmp_path / "cohort", extra=("flair", "magnitude"))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "cohort"), plugin="napari-deep-prl")
    assert [layer.name for layer in viewer.layers] == [
        "sub-04 magnitude", "sub-04 flair", "sub-04 mp2rage", "sub-04 phase", "sub-04 lesions", "sub-04 prl mask"]
    flair = viewer.layers["sub-04 flair"]
    assert np.allclose(flair.affine.affine_matrix, np.diag([1.0, 1.0, 1.5, 1.0]))
    assert flair.colormap.name == "gray" and flair.visible
    data = nib.load(paths.image("flair")).get_fdata()
    assert np.percentile(data, 1) == pytest.approx(flair.contrast_limits[0], rel=0.05)
    assert flair.contrast_limits[1] < data.max()  # a robust window: outliers saturate


def test_phase_window_is_symmetric_and_robust():
    phase = np.linspace(-1, 1, 20 * 20 * 20).reshape(20, 20, 20)
    phase[0, 0, 0] = -50  # one vein-like outlier must not set the window
    low, high = default_window("phase", phase)
    assert low == -high and 0.9 < high < 1.1
