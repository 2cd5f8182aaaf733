"""The adjudication widget in a real viewer: disagreements shown with every rater's label,
consensus recorded with one key, agreement figures updated, keys released on close."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deep_prl._napari.adjudication_widget import AdjudicationWidget
from napari_deep_prl._napari.keybindings import ADJUDICATION_KEYS
from napari_deep_prl.project import Project

pytestmark = pytest.mark.gui

#: (subject, lesion) -> (r1, r2): two disagreements, the rest agreed.
LABELS = {("sub-01", 1): ("prl", "not_prl"), ("sub-02", 2): ("unsure", "prl"),
          ("sub-01", 2): ("not_prl", "not_prl"), ("sub-01", 3): ("prl", "prl"),
          ("sub-02", 1): ("not_prl", "not_prl")}


@pytest.fixture
def project_dir(tmp_path, manifest):
    root = tmp_path / "project"
    with Project.init(root, manifest) as project:
        for (subject, lesion), labels in LABELS.items():
            for rater, label in zip(("r1", "r2"), labels):
                project.store.add_rating(rater, subject, lesion, label, confidence=3,
                                         comment=f"{rater} says {label}")
    return root


def test_every_key_calls_a_widget_method():
    assert {a.method for a in ADJUDICATION_KEYS} <= set(dir(AdjudicationWidget))


def test_consensus_with_one_key_and_live_agreement(make_napari_viewer, qtbot, project_dir):
    viewer = make_napari_viewer()
    widget = AdjudicationWidget(viewer)
    errors = []
    widget.display.worker_started.connect(lambda w: w.errored.connect(errors.append))
    viewer.window.add_dock_widget(widget)
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000), \
            qtbot.waitSignal(widget.lesion_shown, timeout=20000) as shown:
        assert widget.open_project(project_dir, "boss")
    assert tuple(shown.args) == ("sub-01", 1) and len(widget.queue) == 2
    table = {widget.ratings.item(i, 0).text(): widget.ratings.item(i, 4).text() for i in range(2)}
    assert table == {"r1": "r1 says prl", "r2": "r2 says not_prl"}
    pairs = widget.agreement.summary.pairs
    assert pairs.loc[0, "n"] == 5 and np.isfinite(pairs.loc[0, "cohen_kappa"])
    a, b, matrix = widget.agreement.confusion()
    assert (a, b) == ("r1", "r2") and matrix.sum() == 5 and np.trace(matrix) == 3

    handler = viewer.window._qt_viewer._key_map_handler
    widget.note.setText("rim on 3 slices")
    with qtbot.waitSignal(widget.agreement.updated, timeout=20000), \
            qtbot.waitSignal(widget.lesion_shown, timeout=20000) as shown:
        assert handler.press_key("P")
    assert tuple(shown.args) == ("sub-02", 2) and len(widget.queue) == 1
    with Project.open(project_dir) as project:
        decisions = project.store.consensus_decisions()
        consensus = project.consensus().set_index(["subject", "lesion"])
    assert decisions[["subject", "lesion", "label", "decided_by", "note"]].values.tolist() == [
        ["sub-01", 1, "prl", "boss", "rim on 3 slices"]]
    assert consensus.loc[("sub-01", 1), "consensus_method"] == "adjudicated"
    assert set(widget.agreement.summary.vs_consensus["rater"]) == {"r1", "r2"}
    handler.press_key("N")
    assert "No disagreements" in widget.where.text() and widget.queue.empty

    viewer.window.remove_dock_widget(widget)
    assert not any(f.__name__.startswith("deep_prl_") for f in viewer.keymap.values())
    qtbot.waitUntil(lambda: not widget.display.busy and widget.agreement.worker is None,
                    timeout=20000)
    assert errors == []
