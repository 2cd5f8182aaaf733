"""Rater training: reference sets, practice with feedback, the score, the trained record."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.training import Feedback, Practice, PracticeRound, reference_sets


@pytest.fixture
def project(tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest) as opened:
        yield opened


def _expert(project):
    """An expert read of every lesion: PRL for odd lesion ids, with a note on each PRL."""
    lesions = project.lesions()
    prl = lesions["lesion"] % 2 == 1
    return pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                         "label": prl.map({True: "prl", False: "not_prl"}),
                         "comment": prl.map({True: "rim on 3 slices", False: ""})})


def test_practice_gives_feedback_and_never_touches_the_study(project):
    project.store.add_rating("ann", "sub-01", 1, "prl")
    project.store.add_predictions("m1", pd.DataFrame({"subject": ["sub-01"], "lesion": [1],
                                                      "probability": [0.9]}))
    history = project.store.history()
    agreement = project.agreement(n_boot=20).pairs
    expert = _expert(project)
    with Practice(project) as practice:
        assert practice.hold_reference("expert", expert) == len(expert)
        todo = practice.remaining("new", "expert")
        assert sorted(todo) == sorted(zip(expert["subject"], expert["lesion"], strict=True))
        subject, lesion = todo[0]
        truth = expert.set_index(["subject", "lesion"]).loc[(subject, lesion)]
        wrong = "not_prl" if truth["label"] == "prl" else "prl"
        feedback = practice.answer("new", "expert", subject, lesion, wrong)
        assert feedback == Feedback(truth["label"], truth["comment"] or None, False)
        # feedback shows the reference only: no model score, no other rater
        assert [f.name for f in dataclasses.fields(Feedback)] == ["reference_label", "note",
                                                                   "agreed"]
        assert practice.remaining("new", "expert") == todo[1:]
    pd.testing.assert_frame_equal(project.store.history(), history)
    pd.testing.assert_frame_equal(project.agreement(n_boot=20).pairs, agreement)
    assert "new" not in set(project.store.raters()["rater"])


def test_score_and_trained_record(project):
    expert = _expert(project)
    with Practice(project) as practice:
        practice.hold_reference("expert", expert)
        todo = practice.remaining("new", "expert")
        truth = expert.set_index(["subject", "lesion"])["label"]
        for i, (subject, lesion) in enumerate(todo):
            label = truth[(subject, lesion)]
            if i == 0:  # one mistake
                label = "not_prl" if label == "prl" else "prl"
            practice.answer("new", "expert", subject, lesion, label)
            if i == 0:
                assert not practice.record_trained("new", "expert")["trained"]  # not finished
        score = practice.record_trained("new", "expert", n_boot=50)
        assert score["n"] == score["of"] == len(expert)
        assert score["percent_agreement"] == pytest.approx((len(expert) - 1) / len(expert))
        assert score["cohen_kappa_ci_low"] <= score["cohen_kappa"] <= score["cohen_kappa_ci_high"]
        assert score["trained"] == (score["cohen_kappa"] >= 0.6)
        assert not practice.record_trained("new", "expert", min_kappa=1.0)["trained"]
        assert practice.trained()["rater"].tolist() == (["new"] if score["trained"] else [])


def test_a_round_answers_once_per_lesion_and_records_the_trainee_once(project):
    expert = _expert(project).head(4)
    assert reference_sets(project) == []
    assert not (project.root / "practice").exists()  # listing the sets creates nothing
    with Practice(project) as practice:
        practice.hold_reference("expert", expert)
        assert reference_sets(project) == ["expert"]
        truth = expert.set_index(["subject", "lesion"])["label"]
        round_ = PracticeRound(practice, "new", "expert")
        assert round_.of == 4 and round_.done == 0
        while (item := round_.current) is not None:
            assert round_.advance() == item  # no moving on before an answer
            round_.answer(truth[(item.subject, item.lesion)])
            with pytest.raises(InputError, match="no unanswered lesion"):
                round_.answer("unsure")  # one answer per lesion
            round_.advance()
        assert round_.done == 4 and len(practice.store.current(rater="new")) == 4
        assert round_.finish(min_kappa=0.5)["trained"]
        again = PracticeRound(practice, "new", "expert")
        assert again.current is None and again.finish()["trained"]
        assert practice.trained()["rater"].tolist() == ["new"]  # reopening adds no record


def test_reference_from_consensus_needs_a_definite_one(project):
    for rater in ("ann", "ben"):
        project.store.add_rating(rater, "sub-01", 1, "prl")
    project.record_consensus("sub-01", 2, "not_prl", by="lead", note="a vein")
    chosen = pd.DataFrame({"subject": ["sub-01", "sub-01"], "lesion": [1, 2]})
    with Practice(project) as practice:
        assert practice.reference_from_consensus("panel", chosen) == 2
        panel = practice.reference("panel")
        assert panel[["lesion", "label"]].values.tolist() == [[1, "prl"], [2, "not_prl"]]
        assert practice.answer("new", "panel", "sub-01", 2, "not_prl") == Feedback(
            "not_prl", "a vein", True)
        assert practice.answer("new", "panel", "sub-01", 1, "prl").note is None
        with pytest.raises(InputError, match="1 chosen lesion.*sub-01 lesion 3"):
            practice.reference_from_consensus("panel2", pd.DataFrame(
                {"subject": ["sub-01", "sub-01"], "lesion": [1, 3]}))
        with pytest.raises(InputError, match="not in reference set 'panel'"):
            practice.answer("new", "panel", "sub-01", 3, "prl")
        with pytest.raises(InputError, match="no reference set 'nope'"):
            practice.score("new", "nope")


def test_cli_practice_round(project, tmp_path, capsys):
    study = str(project.root)
    project.close()
    table = tmp_path / "expert.tsv"
    table.write_text("subject\tlesion\tlabel\tcomment\nsub-01\t1\tprl\trim\n"
                     "sub-01\t2\tnot_prl\t\n")
    assert cli.main(["ratings", "practice-set", study, "expert", str(table)]) == 0
    capsys.readouterr()
    assert cli.main(["ratings", "practice", study, "--rater", "new", "--set", "expert"]) == 0
    subject, lesion = capsys.readouterr().out.split()
    assert subject == "sub-01"
    assert cli.main(["ratings", "practice", study, "--rater", "new", "--set", "expert",
                     "--subject", subject, "--lesion", lesion, "--label", "prl"]) == 0
    err = capsys.readouterr().err
    assert ("reference: prl (rim)" if lesion == "1" else "reference: not_prl") in err
    assert cli.main(["ratings", "train-rater", study, "--rater", "new", "--set", "expert"]) == 0
    assert "1 of 2 lesions" in capsys.readouterr().err
