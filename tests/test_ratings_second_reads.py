"""The second-read queue: which lesions qualify, and their order by expected change."""

from __future__ import annotations

import pandas as pd
import pytest
from ratings_support import make_store

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.consensus import ConsensusRule
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.second_reads import second_read_queue
from napari_deep_prl.ratings.store import Rating

#: Lesion -> {rater: label} of sub-00; lesion 7 is adjudicated, 8 has only a reference's label.
DESIGN = {1: {"ann": "prl", "ben": "prl"},
          2: {"ann": "prl", "ben": "not_prl"},
          3: {"ann": "prl", "ben": "prl", "cat": "not_prl"},
          4: {"ann": "unsure"},
          5: {"ann": "prl"},
          6: {"ann": "not_prl"},
          7: {"ann": "prl", "ben": "not_prl"},
          8: {"ann": "prl"}}
#: Model probabilities of lesions 5, 6 and 8.
MODEL = {5: 0.1, 6: 0.6, 8: 0.9}


def _queue(store, **kwargs):
    return second_read_queue(store.lesions(), store.current(), store.consensus_decisions(),
                             store.predictions(), ConsensusRule("majority", 2), **kwargs)


@pytest.fixture
def store(store_address):
    with make_store(store_address, subjects=1, lesions=8) as opened:
        for lesion, labels in DESIGN.items():
            for rater, label in labels.items():
                opened.add_rating(rater, "sub-00", lesion, label)
        opened.record_consensus("sub-00", 7, "prl", by="lead")
        opened.add_predictions("m1", pd.DataFrame({"subject": "sub-00", "lesion": list(MODEL),
                                                   "probability": list(MODEL.values())}))
        yield opened


def test_candidates_reasons_and_order(store):
    queue = _queue(store)
    # 1 agrees, 6's lone read is not contradicted strongly enough, 7 is adjudicated,
    # 8's lone read agrees with the model.
    assert queue["lesion"].tolist() == [4, 5, 2, 3]
    assert queue["why"].tolist() == ["unsure", "model", "disagree", "disagree"]
    # p = (reads + model probability, or 1/2) / (n + 1); change = 2 p (1 - p) / (n + 2)
    expected = {4: (0.5, 2 * 0.25 / 3), 5: (0.55, 2 * 0.55 * 0.45 / 3),
                2: (0.5, 2 * 0.25 / 4), 3: (0.625, 2 * 0.625 * 0.375 / 5)}
    assert queue["p_prl"].tolist() == pytest.approx([expected[k][0] for k in [4, 5, 2, 3]])
    assert queue["expected_change"].tolist() == pytest.approx(
        [expected[k][1] for k in [4, 5, 2, 3]])
    assert queue.set_index("lesion").loc[3, ["n_reads", "n_prl", "n_not_prl", "read_by"]] \
        .tolist() == [3, 2, 1, "ann,ben,cat"]


def test_model_gap_and_retracted_decisions(store):
    assert 6 in _queue(store, model_gap=0.6)["lesion"].tolist()
    store.retract_consensus("sub-00", 7, by="lead")
    assert 7 in _queue(store)["lesion"].tolist()
    with pytest.raises(InputError, match="model gap 0.4"):
        _queue(store, model_gap=0.4)


def test_references_do_not_count_as_reads(store):
    before = _queue(store)
    store.add_ratings([Rating("truth", "sub-00", 1, "not_prl")], kind="reference")
    pd.testing.assert_frame_equal(_queue(store), before)
    # while the same label from a rater makes lesion 1 disagree
    store.add_rating("cat", "sub-00", 1, "not_prl")
    assert 1 in _queue(store)["lesion"].tolist()


def test_cli_writes_the_queue(tmp_path, manifest, capsys):
    study = tmp_path / "study"
    with Project.init(study, manifest) as project:
        project.store.add_rating("ann", "sub-01", 1, "prl")
        project.store.add_rating("ben", "sub-01", 1, "not_prl")
        project.store.add_rating("ann", "sub-01", 2, "unsure")
    out = tmp_path / "second.tsv"
    assert cli.main(["ratings", "second-reads", str(study), "-o", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert table[["subject", "lesion", "why"]].values.tolist() == [
        ["sub-01", 2, "unsure"], ["sub-01", 1, "disagree"]]
    assert "2 lesion(s)" in capsys.readouterr().err
    assert cli.main(["ratings", "second-reads", str(study), "--model", "nope"]) == 2
    assert "model 'nope' has no stored scores" in capsys.readouterr().err
