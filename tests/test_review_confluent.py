"""The review of a confluent component split into lesions, in a real, shown viewer with the
review docked from the Plugins menu's contribution and driven by real key events: a part is
outlined as a lesion, the rest of its component faintly, and the lesion's line says which part
it is."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from review_support import all_text, current_ratings, press, shown_after
from test_confluent import confluent_mask

from napari_deep_prl._napari.review.review_widget import ReviewWidget
from napari_deep_prl._napari.slices import PLANES, crop, half_sizes, outline_segments
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.ratings.project import Project

pytestmark = pytest.mark.gui


def expected_outline(widget, lesions: list[int]) -> np.ndarray:
    """The outline segments of ``lesions`` on the phase panel as the canvas cuts it now."""
    canvas = widget.canvas
    images, target = canvas.images, canvas.target
    half = half_sizes(canvas.plane, canvas.fov_mm, images.zooms)
    labels = crop(images.labels, canvas.plane, canvas.slice_index, target.centre, half)
    return outline_segments(np.isin(labels, lesions))


def test_a_part_shows_with_its_component_faint_and_says_which_part_it_is(make_napari_viewer, qtbot, tmp_path,
                                                                          write_subject):
    paths = write_subject("sub-01", mask=confluent_mask(), prl_lesions=(1,))
    Project.init(tmp_path / "project", write_manifest([paths], tmp_path / "manifest.csv")).close()
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deep-prl", "Review lesions")
    assert isinstance(widget, ReviewWidget)
    errors: list[Exception] = []
    widget.display.worker_started.connect(lambda worker: worker.errored.connect(errors.append))
    widget.project_path.setText(str(tmp_path / "project"))
    widget.rater.setCurrentText("r1")
    assert shown_after(qtbot, widget, lambda: qtbot.mouseClick(
        widget.open_button, Qt.MouseButton.LeftButton)) == ("sub-01", 1)

    # lesions 1 and 3 are components of their own; 4, 5 and 6 the parts of component 2
    said = {}
    for lesion in (1, 3, 4, 5, 6):
        assert widget.session.current.lesion == lesion
        tile = widget.canvas.tiles["phase"]
        parts = [p for p in (4, 5, 6) if p != lesion] if lesion >= 4 else []
        assert np.array_equal(tile.component, expected_outline(widget, parts))
        assert bool(len(tile.component)) == bool(parts)
        said[lesion] = widget.part.text() if widget.part.isVisibleTo(widget) else None
        if lesion < 6:
            shown_after(qtbot, widget, lambda: press(viewer, "N"))
        else:
            press(viewer, "P")
    assert said == {1: None, 3: None, 4: "part 1 of component 2 (3 parts)",
                    5: "part 2 of component 2 (3 parts)", 6: "part 3 of component 2 (3 parts)"}
    rows = current_ratings(tmp_path / "project")
    assert list(zip(rows["lesion"], rows["label"])) == [
        (1, "not_prl"), (3, "not_prl"), (4, "not_prl"), (5, "not_prl"), (6, "prl")]

    # back to a part from the plane keys: the faint outline follows the plane
    shown_after(qtbot, widget, lambda: widget.jump("sub-01:5"))
    press(viewer, "A")  # next plane
    assert widget.canvas.plane == list(PLANES)[1]
    assert np.array_equal(widget.canvas.tiles["phase"].component, expected_outline(widget, [4, 6]))
    assert "part 2 of component 2 (3 parts)" in all_text(widget)
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
    assert errors == []
