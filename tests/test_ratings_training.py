"""Rater training: reference sets, practice with feedback, the score, the trained record."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from conftest import blob_mask
from ratings_support import store_content

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.ratings import exchange
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.training import Feedback, Practice, PracticeRound, reference_sets


@pytest.fixture
def project(tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest) as opened:
        yield opened


@pytest.fixture
def practice_manifest(tmp_path, write_subject):
    """Three practice subjects: images (and lesion masks) the study does not have."""
    folder = tmp_path / "practice-images"
    subjects = [write_subject(name, folder=folder, seed=seed,
                              mask=blob_mask(centres=((9, 9, 9), (21, 19, 13), (11, 23, 6 + seed))))
                for name, seed in (("sub-91", 11), ("sub-92", 12), ("sub-93", 13))]
    return write_manifest(subjects, folder / "practice.csv")


def _expert(practice):
    """An expert read of every practice subject's lesion: PRL for odd lesion ids, with a note on
    each PRL."""
    lesions = practice.store.lesions()
    lesions = lesions[lesions["subject"].isin(practice._cohorts())].reset_index(drop=True)
    prl = lesions["lesion"] % 2 == 1
    return pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                         "label": prl.map({True: "prl", False: "not_prl"}),
                         "comment": prl.map({True: "rim on 3 slices", False: ""})})


def test_practice_gives_feedback_and_never_touches_the_study(project, practice_manifest):
    project.store.add_rating("ann", "sub-01", 1, "prl")
    project.store.add_predictions("m1", pd.DataFrame({"subject": ["sub-01"], "lesion": [1],
                                                      "probability": [0.9]}))
    history = project.store.history()
    agreement = project.agreement(n_boot=20).pairs
    with Practice(project) as practice:
        assert practice.add_cohort(practice_manifest) == ["sub-91", "sub-92", "sub-93"]
        expert = _expert(practice)
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
        assert practice.load_subject("sub-91").labels.max() == 3  # the practice subject's images
    pd.testing.assert_frame_equal(project.store.history(), history)
    pd.testing.assert_frame_equal(project.agreement(n_boot=20).pairs, agreement)
    assert "new" not in set(project.store.raters()["rater"])
    assert sorted(project.store.fingerprints()) == ["sub-01", "sub-02", "sub-03"]


def test_a_reference_set_on_study_lesions_is_refused_unless_allowed(project, practice_manifest):
    with Practice(project) as practice:
        practice.add_cohort(practice_manifest)
        mixed = pd.DataFrame({"subject": ["sub-91", "sub-02", "sub-01"], "lesion": [1, 3, 2],
                              "label": ["prl", "not_prl", "prl"]})
        with pytest.raises(InputError, match=r"reference set 'mixed' holds 2 lesion\(s\) the "
                                             r"study rates \(sub-01 lesion 2, sub-02 lesion 3\), "
                                             r"so nothing was stored.*practice-cohort.*pilot.*"
                                             "--allow-study-lesions"):
            practice.hold_reference("mixed", mixed)
        assert reference_sets(project) == []
        assert practice.hold_reference("pilot", mixed, allow_study_lesions=True) == 3
        assert practice.hold_reference("clean", mixed.head(1)) == 1


def test_practice_subjects_that_are_the_studys_are_refused(project, practice_manifest, tmp_path,
                                                           write_subject, manifest):
    folder = tmp_path / "more"
    copies = {"by id": write_subject("sub-02", folder=folder, seed=5,
                                     mask=blob_mask(centres=((5, 5, 5),))),
              "by mask": write_subject("sub-95", folder=folder, seed=6)}  # the study's mask
    study = next(iter(project.cohort))
    shared = dataclasses.replace(copies["by mask"], subject="sub-94",
                                 images=((study.images[0]), *copies["by mask"].images[1:]))
    with Practice(project) as practice:
        bad = write_manifest([*copies.values(), shared], folder / "bad.csv")
        with pytest.raises(InputError, match=r"3 practice subject\(s\) are the study's \(sub-02 "
                                             r"is a study subject's id; sub-95 has the lesion mask "
                                             r"of study subject sub-0\d; sub-94: .*sub-01_phase"
                                             r".* is sub-01's\), so none was registered"):
            practice.add_cohort(bad)
        assert practice._cohorts() == {}
        assert practice.add_cohort(practice_manifest) == practice.add_cohort(practice_manifest)
    write_subject("sub-91", folder=tmp_path / "practice-images", seed=11,
                  mask=blob_mask(centres=((4, 4, 4),)))  # its mask changed
    with Practice(project) as practice, pytest.raises(StoreError, match="sub-91.*differs"):
        practice.add_cohort(practice_manifest)


def test_score_and_trained_record(project, practice_manifest):
    with Practice(project) as practice:
        practice.add_cohort(practice_manifest)
        expert = _expert(practice)
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


def test_a_round_answers_once_per_lesion_and_records_the_trainee_once(project, practice_manifest):
    assert reference_sets(project) == []
    assert not (project.root / "practice").exists()  # listing the sets creates nothing
    with Practice(project) as practice:
        practice.add_cohort(practice_manifest)
        expert = _expert(practice).head(4)
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
        with pytest.raises(InputError, match="2 lesion.*the study rates.*--allow-study-lesions"):
            practice.reference_from_consensus("panel", chosen)  # a consensus is of study lesions
        assert practice.reference_from_consensus("panel", chosen, allow_study_lesions=True) == 2
        panel = practice.reference("panel")
        assert panel[["lesion", "label"]].values.tolist() == [[1, "prl"], [2, "not_prl"]]
        assert practice.answer("new", "panel", "sub-01", 2, "not_prl") == Feedback(
            "not_prl", "a vein", True)
        assert practice.answer("new", "panel", "sub-01", 1, "prl").note is None
        with pytest.raises(InputError, match="1 chosen lesion.*sub-01 lesion 3"):
            practice.reference_from_consensus("panel2", pd.DataFrame(
                {"subject": ["sub-01", "sub-01"], "lesion": [1, 3]}), allow_study_lesions=True)
        with pytest.raises(InputError, match="not in reference set 'panel'"):
            practice.answer("new", "panel", "sub-01", 3, "prl")
        with pytest.raises(InputError, match="no reference set 'nope'"):
            practice.score("new", "nope")


def test_cli_practice_round(project, tmp_path, capsys, practice_manifest):
    study = str(project.root)
    project.close()
    table = tmp_path / "expert.tsv"
    table.write_text("subject\tlesion\tlabel\tcomment\nsub-91\t1\tprl\trim\n"
                     "sub-91\t2\tnot_prl\t\n")
    assert cli.main(["ratings", "practice-set", study, "expert", str(table)]) == 2
    assert "register their images first with `deep-prl ratings practice-cohort" in \
        capsys.readouterr().err
    assert cli.main(["ratings", "practice-cohort", study, str(practice_manifest)]) == 0
    assert "3 practice subject(s) registered" in capsys.readouterr().err
    assert cli.main(["ratings", "practice-set", study, "expert", str(table)]) == 0
    study_table = tmp_path / "study.tsv"
    study_table.write_text("subject\tlesion\tlabel\nsub-01\t1\tprl\n")
    assert cli.main(["ratings", "practice-set", study, "pilot", str(study_table)]) == 2
    assert "--allow-study-lesions" in capsys.readouterr().err
    assert cli.main(["ratings", "practice-set", study, "pilot", str(study_table),
                     "--allow-study-lesions"]) == 0
    capsys.readouterr()
    assert cli.main(["ratings", "practice", study, "--rater", "new", "--set", "expert"]) == 0
    subject, lesion = capsys.readouterr().out.split()
    assert subject == "sub-91"
    assert cli.main(["ratings", "practice", study, "--rater", "new", "--set", "expert",
                     "--subject", subject, "--lesion", lesion, "--label", "prl"]) == 0
    err = capsys.readouterr().err
    assert ("reference: prl (rim)" if lesion == "1" else "reference: not_prl") in err
    assert cli.main(["ratings", "train-rater", study, "--rater", "new", "--set", "expert"]) == 0
    assert "1 of 2 lesions" in capsys.readouterr().err


def _practise_all(practice, rater, reference, wrong=0):
    """``rater`` answers every lesion of the set, the first ``wrong`` ones wrongly."""
    truth = practice.reference(reference).set_index(["subject", "lesion"])["label"]
    for i, (subject, lesion) in enumerate(practice.remaining(rater, reference)):
        label = truth[(subject, lesion)]
        practice.answer(rater, reference, subject, lesion,
                        ("not_prl" if label == "prl" else "prl") if i < wrong else label)


def test_practice_and_trained_raters_travel_between_sites(tmp_path, manifest, practice_manifest,
                                                          capsys):
    sites = {name: Project.init(tmp_path / f"site-{name}", manifest) for name in "ab"}
    try:
        practices = {name: Practice(project) for name, project in sites.items()}
        for practice in practices.values():
            practice.add_cohort(practice_manifest)
        a, b = practices["a"], practices["b"]
        a.hold_reference("expert", _expert(a))
        _practise_all(a, "new", "expert")
        assert a.record_trained("new", "expert", n_boot=50)["trained"]
        a.export_history(tmp_path / "a.jsonl")
        first = b.import_history(tmp_path / "a.jsonl")  # the set, new's answers, new trained
        assert first.added["trained"] == 1 and first.added["ratings"] == 2 * len(_expert(a))
        b.answer("bob", "expert", *b.remaining("bob", "expert")[0], "prl")  # practice at B
        b.export_history(tmp_path / "b.jsonl")
        back = a.import_history(tmp_path / "b.jsonl")
        assert back.added["ratings"] == 1 and back.known["trained"] == 1
        # merged both ways, the two sites hold the same practice store and trained raters
        assert store_content(a.store) == store_content(b.store)
        pd.testing.assert_frame_equal(a.trained(), b.trained())
        assert b.trained()["rater"].tolist() == ["new"]
        assert PracticeRound(b, "new", "expert").finish()["trained"]  # known as trained at B
        again = b.import_history(tmp_path / "a.jsonl")
        assert sum(again.added.values()) == 0 and "trained: 0 added, 1 already there" in str(again)
        # a record edited at one site conflicts; nothing is imported
        record = a.trained()
        record.assign(cohen_kappa=0.5).to_csv(a.folder / "trained.tsv", sep="\t", index=False)
        a.export_history(tmp_path / "edited.jsonl")
        with pytest.raises(InputError, match="1 trained record.*new on 'expert'"):
            b.import_history(tmp_path / "edited.jsonl")
        record.to_csv(a.folder / "trained.tsv", sep="\t", index=False)
        # the two kinds of history file never mix
        sites["a"].export_history(tmp_path / "study.jsonl")
        with pytest.raises(InputError, match="a rating history file, which goes to a project's "
                                             "study store"):
            b.import_history(tmp_path / "study.jsonl")
        with pytest.raises(InputError, match="a practice history file"):
            sites["b"].import_history(tmp_path / "a.jsonl")
        # a set on study lesions (a pilot's) is refused on import unless allowed
        a.hold_reference("pilot", pd.DataFrame({"subject": ["sub-01"], "lesion": [1],
                                                "label": ["prl"]}), allow_study_lesions=True)
        a.export_history(tmp_path / "pilot.jsonl")
    finally:
        for practice in practices.values():
            practice.close()
        for project in sites.values():
            project.close()
    root_b = str(tmp_path / "site-b")
    assert cli.main(["ratings", "import", root_b, "--history", str(tmp_path / "pilot.jsonl")]) == 2
    assert "'pilot' holds 1 lesion(s) the study rates" in capsys.readouterr().err
    assert cli.main(["ratings", "import", root_b, "--history", str(tmp_path / "pilot.jsonl"),
                     "--allow-study-lesions"]) == 0
    assert "into the practice store of" in capsys.readouterr().err
    assert cli.main(["ratings", "export", root_b, "--history", "--practice", "-o",
                     str(tmp_path / "b2.jsonl")]) == 0
    assert "practice history written" in capsys.readouterr().err
    assert exchange.is_practice_history(tmp_path / "b2.jsonl")
    assert not exchange.is_practice_history(tmp_path / "study.jsonl")
