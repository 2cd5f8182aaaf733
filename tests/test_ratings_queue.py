"""Rater queues: pluggable order, calibration set, unannounced repeats, provenance, blinding."""

from __future__ import annotations

import pandas as pd
import pytest
from ratings_support import make_store

from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.ratings.queue import (
    Blinding,
    RaterQueue,
    Strategy,
    StudyDesign,
    calibration_keys,
    seeded_shuffle,
    subject_order,
)


@pytest.fixture
def store(store_address):
    with make_store(store_address, subjects=4, lesions=5) as opened:
        yield opened


def _rate_all(queue, label="prl", limit=1000):
    served = []
    while (item := queue.next()) is not None and len(served) < limit:
        queue.record(item, label)
        served.append(item)
    return served


def test_subject_order_serves_everything_once_with_provenance(store):
    queue = RaterQueue(store, "alice", subject_order(), session="s1")
    served = _rate_all(queue)
    assert [(i.subject, i.lesion) for i in served] == [
        (f"sub-{s:02d}", n) for s in range(4) for n in range(1, 6)]
    current = store.current()
    assert current["queue_strategy"].unique().tolist() == ["subject_order"]
    assert sorted(current["queue_position"]) == list(range(20))
    assert set(current["session"]) == {"s1"}
    assert queue.progress().done == queue.progress().total == 20


def test_seeded_shuffle_is_reproducible_and_differs_by_seed(store):
    order = [i.lesion_key for i in RaterQueue(store, "a", seeded_shuffle(3)).remaining()]
    again = [i.lesion_key for i in RaterQueue(store, "b", seeded_shuffle(3)).remaining()]
    other = [i.lesion_key for i in RaterQueue(store, "a", seeded_shuffle(4)).remaining()]
    assert order == again and order != other and sorted(order) == sorted(other)


def test_model_strategy_records_model_version(store):
    scores = {k: k % 7 for k in store.lesions()["lesion_key"]}
    strategy = Strategy("uncertainty", lambda c: sorted(c["lesion_key"], key=scores.get),
                        model_version="m-42")
    queue = RaterQueue(store, "a", strategy)
    item = queue.next()
    assert scores[item.lesion_key] == 0 and item.model_version == "m-42"
    queue.record(item, "unsure")
    row = store.current().iloc[0]
    assert (row.queue_strategy, row.model_version) == ("uncertainty", "m-42")


def test_calibration_set_is_shared_first_and_apart_from_the_strategy(store):
    design = StudyDesign(seed=1, calibration_size=6)
    ranked_by_strategy = []

    def spy(candidates: pd.DataFrame) -> list[int]:
        ranked_by_strategy.extend(candidates["lesion_key"])
        return candidates["lesion_key"].tolist()

    calibration = set(calibration_keys(store.lesions(), design))
    assert len(calibration) == 6
    for rater in ("a", "b"):
        items = RaterQueue(store, rater, Strategy("model", spy, "m1"), design).remaining()
        assert {i.lesion_key for i in items[:6]} == calibration
        assert all(i.strategy == "calibration" and i.model_version is None for i in items[:6])
        assert all(i.strategy == "model" for i in items[6:])
    assert not calibration & set(ranked_by_strategy)


def test_repeats_come_back_later_and_keep_the_first_rating(store):
    design = StudyDesign(seed=2, repeat_fraction=0.25, repeat_gap=3)
    queue = RaterQueue(store, "a", subject_order(), design)
    served = []
    while (item := queue.next()) is not None:
        queue.record(item, "unsure" if item.repeat else "prl")
        served.append(item)
    repeats = [i for i in served if i.repeat]
    assert len(repeats) == 5 and len(served) == 25
    for item in repeats:
        first = next(n for n, s in enumerate(served) if s.lesion_key == item.lesion_key)
        again = served.index(item)
        assert again - first > 3 or again >= 20
    assert set(store.current()["label"]) == {"prl"}
    assert set(store.current(repeat=True)["label"]) == {"unsure"}
    assert set(store.current(repeat=True)["queue_strategy"]) == {"repeat"}
    progress = queue.progress()
    assert (progress.repeats_done, progress.repeats_planned) == (5, 5)
    by_subject = [queue.progress(f"sub-{s:02d}") for s in range(4)]
    assert [(p.done, p.total) for p in by_subject] == [(5, 5)] * 4
    assert sum(p.repeats_done for p in by_subject) == sum(p.repeats_planned for p in by_subject) == 5


def test_progress_of_one_subject_counts_its_queued_lesions_only(store):
    queue = RaterQueue(store, "a", subject_order(), min_diameter_mm=3.2)  # lesions 1 and 2 left out
    for lesion in (1, 3, 4):
        store.add_rating("a", "sub-01", lesion, "prl")
    store.add_rating("b", "sub-01", 5, "prl")  # another rater's
    one = queue.progress("sub-01")
    assert (one.done, one.total) == (2, 3) and queue.left_out == 8
    assert (queue.progress().done, queue.progress().total) == (2, 12)
    assert queue.progress("sub-99").total == 0


def test_undo_goes_back_to_the_lesion(store):
    queue = RaterQueue(store, "a", subject_order())
    first = queue.next()
    queue.record(first, "prl")
    assert queue.own_label(first.subject, first.lesion) == "prl"
    back = queue.undo()
    assert (back.lesion_key, back.strategy, back.position) == (first.lesion_key,
                                                               "subject_order", 0)
    assert queue.next().lesion_key == first.lesion_key
    assert queue.own_label(first.subject, first.lesion) is None
    assert queue.undo() is None


def test_blinding(store):
    store.add_rating("bob", "sub-00", 1, "prl")
    store.add_predictions("m1", pd.DataFrame({"subject": ["sub-00"], "lesion": [1],
                                              "probability": [0.9]}))
    blind = RaterQueue(store, "alice", subject_order())
    item = blind.next()
    assert item.lesion_key == store.lesion_key("sub-00", 1)
    assert not {"label", "probability", "rater"} & set(vars(item))
    with pytest.raises(StoreError, match="blinded"):
        blind.other_raters(item)
    with pytest.raises(StoreError, match="blinded"):
        blind.predictions(item)
    assert blind.own_label("sub-00", 1) is None  # not bob's label
    open_queue = RaterQueue(store, "alice", subject_order(),
                            blinding=Blinding(show_other_raters=True, show_predictions=True))
    assert open_queue.other_raters(item)["label"].tolist() == ["prl"]
    assert open_queue.predictions(item)["probability"].tolist() == [0.9]


def test_strategy_output_is_deduplicated_and_bad_designs_refused(store):
    twice = Strategy("twice", lambda c: list(c["lesion_key"]) * 2)
    keys = [i.lesion_key for i in RaterQueue(store, "a", twice).remaining()]
    assert sorted(keys) == sorted(store.lesions()["lesion_key"])
    with pytest.raises(InputError, match="repeat_fraction must lie in"):
        StudyDesign(repeat_fraction=1.5)
