"""Fine-tuning fails early on labels it cannot learn from, and says when it made the model worse."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from active_support import (  # noqa: F401
    TINY_TRAIN,
    add_contrarian,
    one_torch_thread,
    ranking_models,
    rim_manifest,
    tiny_checkpoint,
    tiny_project,
    worst_pair,
)

from napari_deep_prl.active.finetune import finetune, retrain_and_rescore
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.scoring.project import model_version

#: Fine-tuning long and fast enough to learn what the contrarian rater teaches (the rim means
#: "not a PRL" on the subjects it trains on); the model it started from does not compete.
CONTRARIAN_TRAIN = replace(TINY_TRAIN, epochs=10, lr=1e-2, keep_start=False)


@pytest.fixture
def project(tmp_path, manifest):
    with tiny_project(tmp_path / "project", manifest) as opened:
        run_to_end(opened.import_prl_masks())
        yield opened


@pytest.fixture
def rim_project(tmp_path):
    with tiny_project(tmp_path / "project", rim_manifest(tmp_path)) as opened:
        run_to_end(opened.import_prl_masks())
        yield opened


def rate(project, rater: str, prl: dict[str, list[int]], *, only: dict[str, list[int]] | None = None) -> None:
    """Rater ``rater`` labels the lesions of ``only`` (default: all 9), PRL those in ``prl``."""
    lesions = project.lesions()
    if only is not None:
        lesions = lesions[[lesion in only.get(subject, []) for subject, lesion in
                           zip(lesions["subject"], lesions["lesion"])]]
    label = ["prl" if lesion in prl.get(subject, []) else "not_prl"
             for subject, lesion in zip(lesions["subject"], lesions["lesion"])]
    project.import_ratings(pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                                         "rater": rater, "label": label}))


def refused(gen) -> tuple[str, list]:
    """The message a progress generator fails with, and the events it yielded first."""
    events = []
    with pytest.raises(InputError) as error:
        for event in gen:
            events.append(event)
    return str(error.value), events


def test_one_class_labels_are_refused_before_any_work(project):
    rate(project, "ann", prl={})
    message, events = refused(finetune(project, tiny_checkpoint(), TINY_TRAIN, source="ann"))
    assert events == []  # no subject loaded, no patch cut
    assert "0 PRL and 9 non-PRL ann labels in 3 subject(s)" in message
    assert "label 2 more PRLs in subjects that have none labelled yet" in message
    assert "most likely PRL first" in message and "non-PRL" not in message.split(";")[-1]
    message, events = refused(finetune(project, None, TINY_TRAIN, models=3, source="ann"))
    assert events == [] and "3 cross-fitted networks" in message and "label 3 more PRLs" in message


def test_too_few_labels_say_how_many_more_of_which_class(project):
    rate(project, "bob", prl={"sub-01": [1]})  # one PRL, eight other lesions
    message, _ = refused(finetune(project, tiny_checkpoint(), TINY_TRAIN, source="bob"))
    assert "1 PRL and 8 non-PRL bob labels" in message and "label 1 more PRL in subjects" in message
    message, _ = refused(finetune(project, None, TINY_TRAIN, models=3, source="bob"))
    assert "label 2 more PRLs in subjects" in message
    rate(project, "cat", prl={s: [1] for s in ("sub-01", "sub-02", "sub-03")},
         only={s: [1] for s in ("sub-01", "sub-02", "sub-03")})  # the PRLs alone
    message, _ = refused(finetune(project, tiny_checkpoint(), TINY_TRAIN, source="cat"))
    assert "3 PRL and 0 non-PRL cat labels" in message
    assert "label 2 more non-PRL lesions in subjects that have none labelled yet" in message


def test_a_validation_share_without_a_prl_is_refused_by_name(project):
    subjects = ["sub-01", "sub-02", "sub-03"]
    # the subject the split holds out when it alone has no PRL label
    alone = next(s for s in subjects
                 if validation_shares({t: int(t != s) for t in subjects}, 1, 0.2, 0)[0] == [s])
    rate(project, "dan", prl={s: [1] for s in subjects if s != alone})
    message, events = refused(finetune(project, tiny_checkpoint(), TINY_TRAIN, source="dan"))
    assert events == [] and "2 PRL and 7 non-PRL dan labels" in message
    assert f"the network's validation subjects ({alone}) have no PRL label" in message
    assert "label a PRL lesion in one of them" in message


def test_the_starting_model_is_scored_by_the_recipe_that_validated_the_new_one(project):
    """Zero epochs leave the weights as they were: both sides of the comparison must then agree."""
    for parents in ([tiny_checkpoint()], [tiny_checkpoint(0), tiny_checkpoint(1)]):
        result = run_to_end(finetune(project, parents, replace(TINY_TRAIN, epochs=0), source="prl_mask"))
        compared = result.comparison
        assert compared.new["val_f1"] == pytest.approx(compared.start["val_f1"])
        assert compared.new["val_auc"] == pytest.approx(compared.start["val_auc"])
        assert not result.worse and "validates at least as well" in compared.summary()
        assert compared.start["lesions"] == 9 if len(parents) > 1 else compared.start["lesions"] == 3
    from_scratch = run_to_end(finetune(project, None, TINY_TRAIN, models=1, source="prl_mask"))
    assert from_scratch.comparison is None and not from_scratch.worse


def test_a_worse_model_is_saved_and_flagged_and_the_project_is_not_rescored_by_it(rim_project):
    best, _ = ranking_models()
    add_contrarian(rim_project)
    result = run_to_end(finetune(rim_project, best, CONTRARIAN_TRAIN, source="contrarian"))
    assert result.worse and result.path.exists()
    assert (result.comparison.start["val_f1"], result.comparison.start["val_auc"]) == (1.0, 1.0)
    assert result.comparison.new["val_f1"] < 1.0
    assert "the new model validates WORSE" in result.comparison.summary()
    result = run_to_end(retrain_and_rescore(rim_project, best, CONTRARIAN_TRAIN, source="contrarian"))
    assert result.worse and result.scored is None and result.path.name == "deep-prl-v002.pt"
    assert rim_project.store.predictions().empty  # the review queue does not follow it


def test_retraining_scores_the_project_and_names_the_version_of_its_scores(rim_project):
    trained = run_to_end(finetune(rim_project, ranking_models()[1], TINY_TRAIN, source="prl_mask"))
    assert trained.scored is None and rim_project.store.predictions().empty
    result = run_to_end(retrain_and_rescore(rim_project, ranking_models()[1], TINY_TRAIN, source="prl_mask"))
    assert not result.worse and result.scored == model_version(result.checkpoints)
    assert len(rim_project.store.predictions(result.scored)) == 9


def test_nothing_validates_worse_than_a_model_that_ranks_every_prl_last(rim_project):
    """What the panel's tests rely on: fine-tuning from these always validates at least as well."""
    for parents in ([ranking_models()[1]], worst_pair()):
        result = run_to_end(finetune(rim_project, parents, replace(TINY_TRAIN, lr=1e-2), source="prl_mask"))
        assert result.comparison.start["val_auc"] == 0.0 and not result.worse
