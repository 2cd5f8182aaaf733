"""Practice in the review widget, in a real shown viewer driven by real key presses: the set's
lesions one by one, feedback after each answer before moving on, the score at the end, nothing in
the study's store, nothing unblinded."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import blob_mask
from review_support import all_text, burst, current_ratings, press, queue_keys, shown_after

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.review.review_widget import ReviewWidget
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.training import Practice

pytestmark = pytest.mark.gui

KEY = {"prl": "P", "not_prl": "N", "unsure": "U"}


@pytest.fixture
def project_dir(tmp_path, manifest):
    """A project with another rater's label and model scores (which practice must not show) and
    a three-lesion reference set 'experts' on study lesions with a note on its PRLs."""
    root = tmp_path / "project"
    with Project.init(root, manifest) as project:
        chosen = project.lesions().head(3)
        project.store.add_rating("ann", str(chosen["subject"].iloc[0]),
                                 int(chosen["lesion"].iloc[0]), "unsure")
        project.store.add_predictions("m1", pd.DataFrame({
            "subject": chosen["subject"], "lesion": chosen["lesion"], "probability": 0.937}))
        prl = chosen["lesion"] % 2 == 1
        with Practice(project) as practice:
            practice.hold_reference("experts", pd.DataFrame({
                "subject": chosen["subject"], "lesion": chosen["lesion"],
                "label": prl.map({True: "prl", False: "not_prl"}),
                "comment": prl.map({True: "rim on 3 slices", False: ""})}),
                allow_study_lesions=True)  # a pilot: study lesions, which practice must not unblind
    return root


@pytest.fixture
def practising(make_napari_viewer, qtbot, project_dir):
    """The review widget docked, the trainee's practice of 'experts' opened from the form."""
    viewer = make_napari_viewer(show=True)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="review")
    widget.project_path.setText(str(project_dir))
    widget.rater.setCurrentText("trainee")
    assert [widget.practice_set.itemText(i) for i in range(widget.practice_set.count())] == [
        "", "experts"]
    widget.practice_set.setCurrentText("experts")
    shown_after(qtbot, widget, widget.open_button.click)
    yield viewer, widget
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)


def _reference(project_dir) -> dict:
    with Project.open(project_dir) as project, Practice(project) as practice:
        ref = practice.reference("experts")
    return {(s, n): label for s, n, label in zip(ref["subject"], ref["lesion"], ref["label"])}


def _answers(project_dir) -> pd.DataFrame:
    with Project.open(project_dir) as project, Practice(project) as practice:
        return practice.store.current(rater="trainee")


def test_a_trainee_practises_with_feedback_and_gets_a_score(practising, qtbot, project_dir):
    viewer, widget = practising
    reference = _reference(project_dir)
    seen = []
    for step in range(3):
        item = widget.practice.current
        seen.append((item.subject, item.lesion))
        truth = reference[(item.subject, item.lesion)]
        press(viewer, KEY[truth])
        qtbot.waitUntil(lambda: widget.feedback.painted)
        assert widget.feedback.text().startswith("✓ Agrees with the reference")
        assert ("rim on 3 slices" in widget.feedback.text()) == (truth == "prl")
        text = all_text(widget)
        assert "0.94" not in text and "ann=" not in text and "model:" not in text
        assert not widget.evidence.isVisible()
        if step < 2:
            shown_after(qtbot, widget, lambda: press(viewer, "Right"))
        else:
            press(viewer, "Right")
    assert sorted(seen) == sorted(reference)
    assert widget.feedback.text().startswith("Practice done. trainee on 'experts': 3 of 3")
    assert "recorded as trained" in widget.feedback.text()
    assert "kappa 1.00" in widget.feedback.text()
    assert len(_answers(project_dir)) == 3
    assert current_ratings(project_dir, rater="trainee").empty  # the study's store has nothing
    with Project.open(project_dir) as project:
        assert "trainee" not in set(project.store.raters()["rater"])
        assert list(project.store.history()["rater"]) == ["ann"]


def test_feedback_must_be_seen_before_the_next_lesion(practising, qtbot, project_dir):
    viewer, widget = practising
    first = widget.practice.current
    # a held key: one answer, the auto-repeats answer nothing (not this lesion again, not the next)
    burst(viewer, "N", 8, repeat_after_first=True)
    qtbot.waitUntil(lambda: widget.feedback.painted)
    assert len(_answers(project_dir)) == 1 and widget.practice.current == first
    press(viewer, "P")  # answered already: the feedback stays, nothing is saved
    assert len(_answers(project_dir)) == 1 and widget.saved.text() == messages.PRACTICE_LOOK_FIRST
    # → held down moves on by one lesion only
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000):
        burst(viewer, "Right", 5, repeat_after_first=True)
    second = widget.practice.current
    assert second != first and widget.practice.index == 1
    press(viewer, "Right")  # not answered: no skipping
    assert widget.practice.current == second
    assert widget.saved.text() == messages.PRACTICE_ANSWER_FIRST
    # an answer and → queued together: → comes before the feedback is painted, so it is refused
    queue_keys(viewer, ["P", "Right"])
    qtbot.waitUntil(lambda: widget.feedback.painted)
    assert widget.practice.current == second and widget.saved.text() == messages.PRACTICE_LOOK_FIRST
    assert len(_answers(project_dir)) == 2
    # → then a held P queued before the next lesion is painted: the P answers nothing
    with qtbot.waitSignal(widget.lesion_shown, timeout=20000):
        queue_keys(viewer, ["Right", "P", "P", "P"], repeat_after_first=True)
    assert widget.practice.index == 2 and widget.practice.feedback is None
    assert len(_answers(project_dir)) == 2 and widget.feedback.text() == ""


def test_cli_opens_practice(make_napari_viewer, qtbot, project_dir, monkeypatch, capsys):
    import napari

    from napari_deep_prl.cli import main

    viewers = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewers.append(make_napari_viewer()) or viewers[-1])
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main(["review", str(project_dir), "--rater", "trainee", "--practice", "experts"]) == 0
    widget = next(iter(viewers[0].window.dock_widgets.values()))
    assert widget.practice is not None and widget.session is None and widget.keys.active
    assert "practice 'experts'" in widget.session_text.text()
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
    widget.close()

    assert main(["review", str(project_dir), "--rater", "trainee", "--practice", "nope"]) == 2
    assert "no reference set 'nope'" in capsys.readouterr().err and len(viewers) == 1


def test_practice_subjects_load_from_their_manifest_under_pseudonyms(
        make_napari_viewer, qtbot, tmp_path, manifest, write_subject):
    folder = tmp_path / "practice-images"
    practice_manifest = write_manifest(
        [write_subject(name, folder=folder, seed=seed, mask=blob_mask(centres=((9, 9, 9), (21, 19, 13))))
         for name, seed in (("sub-91", 11), ("sub-92", 12))], folder / "practice.csv")
    root = tmp_path / "blind"
    with Project.init(root, manifest, {"blinding": {"pseudonymise_subjects": True}}) as project, \
            Practice(project) as practice:
        practice.add_cohort(practice_manifest)
        practice.hold_reference("cases", pd.DataFrame({
            "subject": ["sub-91", "sub-92"], "lesion": [1, 2], "label": ["prl", "not_prl"]}))
    viewer = make_napari_viewer(show=True)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="review")
    widget.project_path.setText(str(root))
    widget.rater.setCurrentText("trainee")
    widget.practice_set.setCurrentText("cases")
    subject, lesion = shown_after(qtbot, widget, widget.open_button.click)
    assert (subject, lesion) in {("sub-91", 1), ("sub-92", 2)}  # from the practice manifest
    assert widget.pseudonyms.isChecked()
    assert widget.practice.name(subject) in widget.where.text()
    assert widget.practice.name(subject).startswith("S-") and "sub-" not in all_text(widget)
    press(viewer, "P")
    qtbot.waitUntil(lambda: widget.feedback.painted)
    assert "sub-" not in all_text(widget)
    with Project.open(root) as project, Practice(project) as practice:
        assert practice.store.current(rater="trainee")[["subject", "lesion"]].values.tolist() == [
            [subject, lesion]]
    qtbot.waitUntil(lambda: not widget.display.busy, timeout=20000)
