"""Consensus rules, adjudication overriding them, and the adjudication queue."""

from __future__ import annotations

import pytest
from ratings_support import make_store

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.consensus import (
    ConsensusRule,
    adjudication_queue,
    consensus_table,
)
from napari_deep_prl.ratings.store import Rating


@pytest.mark.parametrize("method, min_raters, labels, expected", [
    ("unanimous", 2, ["prl", "prl"], "prl"),
    ("unanimous", 2, ["prl", "prl", "not_prl"], None),
    ("unanimous", 2, ["prl"], None),                       # too few raters
    ("unanimous", 1, ["not_prl"], "not_prl"),
    ("unanimous", 2, ["unsure", "unsure"], None),          # unsure is never consensus
    ("unanimous", 2, ["prl", "unsure"], None),
    ("majority", 3, ["prl", "prl", "not_prl"], "prl"),
    ("majority", 3, ["prl", "not_prl"], None),
    ("majority", 2, ["prl", "not_prl"], None),             # a tie is no majority
    ("majority", 2, ["prl", "prl", "unsure"], "prl"),
    ("majority", 2, ["prl", "unsure", "unsure", "not_prl"], None),  # unsure in the denominator
    ("majority", 2, ["not_prl", "not_prl", "unsure", "prl"], None),
    ("majority", 2, ["unsure", "unsure", "prl"], None),
])
def test_rules(method, min_raters, labels, expected):
    assert ConsensusRule(method, min_raters).decide(labels) == expected


def test_bad_rules_are_refused():
    with pytest.raises(InputError, match="not one of unanimous, majority"):
        ConsensusRule("vote")
    with pytest.raises(InputError, match="at least 1"):
        ConsensusRule("majority", 0)


def _table(store, rule):
    return consensus_table(store.lesions(), store.current(), store.consensus_decisions(), rule)


def test_table_queue_and_adjudication(store_address):
    with make_store(store_address, subjects=1, lesions=4) as store:
        for rater, labels in {"a": ["prl", "prl", "not_prl", "prl"],
                              "b": ["prl", "not_prl", "not_prl", "prl"],
                              "c": ["prl", "prl", "unsure", "not_prl"]}.items():
            for lesion, label in enumerate(labels, start=1):
                store.add_rating(rater, "sub-00", lesion, label)
        majority = _table(store, ConsensusRule("majority", 3)).set_index("lesion")
        assert majority["consensus"].tolist() == ["prl", "prl", "not_prl", "prl"]
        assert majority["consensus_method"].tolist() == ["unanimous", "majority", "majority",
                                                         "majority"]
        table = _table(store, ConsensusRule("unanimous", 2))
        assert table["pending"].tolist() == [False, True, True, True]
        queue = adjudication_queue(table, store.current())
        assert queue["lesion"].tolist() == [2, 3, 4]
        assert queue.loc[0, ["a", "b", "c"]].tolist() == ["prl", "not_prl", "prl"]

        store.record_consensus("sub-00", 3, "not_prl", by="judge", note="no rim")
        table = _table(store, ConsensusRule("unanimous", 2)).set_index("lesion")
        assert table.loc[3, ["consensus", "consensus_method", "decided_by", "note", "pending"]
                         ].tolist() == ["not_prl", "adjudicated", "judge", "no rim", False]
        assert adjudication_queue(table.reset_index(), store.current())["lesion"].tolist() == [2, 4]


def test_rule_can_restrict_voters(store_address):
    with make_store(store_address, subjects=1, lesions=1) as store:
        store.add_rating("a", "sub-00", 1, "prl")
        store.add_rating("b", "sub-00", 1, "prl")
        store.add_rating("prl_mask", "sub-00", 1, "not_prl")
        assert _table(store, ConsensusRule())["consensus"].tolist() == [None]
        voters = ConsensusRule(raters=["a", "b"])
        assert _table(store, voters)["consensus"].tolist() == ["prl"]


def test_consensus_follows_changed_labels(store_address):
    with make_store(store_address, subjects=1, lesions=1) as store:
        store.add_rating("a", "sub-00", 1, "prl")
        store.add_rating("b", "sub-00", 1, "prl")
        assert _table(store, ConsensusRule())["consensus"].tolist() == ["prl"]
        store.add_rating("b", "sub-00", 1, "not_prl")
        assert _table(store, ConsensusRule())["pending"].tolist() == [True]


def test_queue_with_decided_lesions_revision_and_retraction(store_address):
    with make_store(store_address, subjects=2, lesions=2) as store:
        for subject in ("sub-00", "sub-01"):
            store.add_rating("a", subject, 1, "prl")
            store.add_rating("b", subject, 1, "not_prl")
            store.add_rating("a", subject, 2, "prl")
            store.add_rating("b", subject, 2, "prl")
        store.add_ratings([Rating("truth", "sub-00", 1, "prl")], kind="reference")
        rule = ConsensusRule()
        store.record_consensus("sub-01", 1, "not_prl", by="judge", note="vein")

        def queue(decided):
            return adjudication_queue(_table(store, rule), store.current(), decided=decided)

        pending = queue(False)
        assert pending.columns.tolist() == ["lesion_key", "subject", "lesion", "n_ratings", "a",
                                            "b", "consensus", "decided_by", "note", "pending"]
        assert pending[["subject", "lesion", "pending"]].values.tolist() == [["sub-00", 1, True]]
        both = queue(True)  # the reference never appears as a rater column
        assert both[["subject", "lesion", "a", "b", "consensus", "decided_by", "note",
                     "pending"]].fillna("-").values.tolist() == [
            ["sub-00", 1, "prl", "not_prl", "-", "-", "-", True],
            ["sub-01", 1, "prl", "not_prl", "not_prl", "judge", "vein", False]]

        store.record_consensus("sub-01", 1, "prl", by="judge", note="rim after all")  # revise
        assert queue(True).loc[1, ["consensus", "note"]].tolist() == ["prl", "rim after all"]
        store.retract_consensus("sub-01", 1, by="judge")
        assert queue(False)["subject"].tolist() == ["sub-00", "sub-01"]  # pending again
        assert queue(True)["pending"].tolist() == [True, True]
        store.record_consensus("sub-00", 2, "not_prl", by="judge")  # overrides a unanimous prl
        table = _table(store, rule).set_index(["subject", "lesion"])
        assert table.loc[("sub-00", 2), ["consensus", "adjudicated"]].tolist() == ["not_prl", True]
        store.retract_consensus("sub-00", 2, by="judge")  # back to the automatic rule
        table = _table(store, rule).set_index(["subject", "lesion"])
        assert table.loc[("sub-00", 2), ["consensus", "consensus_method", "adjudicated"]
                         ].tolist() == ["prl", "unanimous", False]
        assert queue(True)[["subject", "lesion"]].values.tolist() == [["sub-00", 1],
                                                                      ["sub-01", 1]]
