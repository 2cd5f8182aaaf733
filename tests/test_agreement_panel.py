"""The adjudicator's agreement figures in a real viewer: a kappa that cannot be computed reads
n/a with the reason, never as a number."""

from __future__ import annotations

import pytest

from napari_deep_prl._napari.review.agreement_panel import AgreementPanel
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.store import Rating

pytestmark = pytest.mark.gui


def test_undefined_kappa_reads_na_with_the_reason(make_napari_viewer, qtbot, tmp_path, manifest):
    viewer = make_napari_viewer()
    panel = AgreementPanel()
    viewer.window.add_dock_widget(panel)
    with Project.init(tmp_path / "project", manifest) as project:
        lesions = project.lesions()
        project.store.add_ratings(
            [Rating(rater, s, n, "prl" if (rater, s, n) == ("c", "sub-01", 1) else "not_prl")
             for s, n in zip(lesions["subject"], lesions["lesion"]) for rater in "abc"])
        panel.project = project
        errors = []
        with qtbot.waitSignal(panel.updated, timeout=20000):
            panel.refresh()
            panel.worker.errored.connect(errors.append)
        qtbot.waitUntil(lambda: panel.worker is None, timeout=20000)
    text = panel.table.text()
    assert "a – b</td><td>9</td><td>1.00</td><td>n/a (only one label used)" in text
    assert "0.00, CI n/a (a used only one label: kappa is 0 by construction)" in text
    assert "0.00 [0.00, 0.00]" not in text and "nan" not in text
    assert errors == []
