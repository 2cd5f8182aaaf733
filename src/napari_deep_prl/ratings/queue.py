"""A rater's queue: which lesion to show next, blinded, with the study design built in.

The order is pluggable: a :class:`Strategy` is a name plus a callable ranking candidate
lesions (``subject_order``, ``seeded_shuffle`` here; active-learning strategies elsewhere).
The queue serves, in this order of priority:

1. **repeats that are due** – a seeded fraction of lesions is shown a second time, unannounced,
   a seeded number of items (``repeat_gap`` to ``2 * repeat_gap``) after the first rating, to
   measure intra-rater agreement; they are stored with ``repeat = 1`` and never replace the
   first rating;
2. **the calibration set** – the same seeded sample of lesions for every rater, in a seeded
   per-rater order, kept out of the strategy's ranking so that model-ordered queues cannot
   bias the agreement measured on it;
3. **the rest**, in the strategy's order.

Every rating records the strategy name (``calibration``, ``repeat`` or the strategy's), the
position the lesion had in that ordering and the model version behind it.

Blinding: a :class:`QueueItem` carries no other rater's label and no prediction; the queue
gives those only when the project's :class:`Blinding` allows it.

Lesions too small to judge (an equivalent-sphere diameter below ``min_diameter_mm``) can be left
out of the queue; :attr:`RaterQueue.left_out` counts them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.ratings.store import Provenance, RatingStore

if TYPE_CHECKING:
    import pandas as pd

Ranker = Callable[["pd.DataFrame"], Sequence[int]]


@dataclass(frozen=True)
class Strategy:
    """A named ordering: ``rank(candidates)`` returns the ``lesion_key`` s, first to show first.

    ``candidates`` has the store's lesion columns (``lesion_key, subject, lesion, x, y, z,
    volume_voxels, volume_mm3, confluent``). ``model_version`` names the model whose output
    the ranking uses (``None`` for model-free orders); it is recorded with each rating.
    """

    name: str
    rank: Ranker
    model_version: str | None = None


def subject_order() -> Strategy:
    """Subjects and lesions in id order: predictable, good for a single reader."""
    return Strategy("subject_order", lambda c: c.sort_values(["subject", "lesion"])["lesion_key"]
                    .tolist())


def seeded_shuffle(seed: int = 0) -> Strategy:
    """A reproducible random order, so reading order does not follow subjects."""
    def rank(candidates: pd.DataFrame) -> list[int]:
        keys = np.sort(candidates["lesion_key"].to_numpy())
        return np.random.default_rng(seed).permutation(keys).tolist()
    return Strategy(f"seeded_shuffle:{seed}", rank)


@dataclass(frozen=True)
class StudyDesign:
    """Calibration set and unannounced repeats, all seeded by ``seed``."""

    seed: int = 0
    calibration_size: int = 0
    repeat_fraction: float = 0.0
    repeat_gap: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.repeat_fraction <= 1 or self.calibration_size < 0 or self.repeat_gap < 0:
            raise InputError(f"study design {self}: repeat_fraction must lie in [0, 1], "
                             "calibration_size and repeat_gap must not be negative; fix "
                             "study_design in project.json.")


@dataclass(frozen=True)
class Blinding:
    """What a rater may see while rating; both off by default (a blind study)."""

    show_other_raters: bool = False
    show_predictions: bool = False
    #: The review widget shows stable pseudonyms instead of subject ids.
    pseudonymise_subjects: bool = False


@dataclass(frozen=True)
class QueueItem:
    """A lesion to show. ``repeat`` is for recording only: do not show it to the rater."""

    lesion_key: int
    subject: str
    lesion: int
    x: float
    y: float
    z: float
    volume_mm3: float
    strategy: str
    position: int
    model_version: str | None = None
    repeat: bool = False


@dataclass(frozen=True)
class QueueProgress:
    """How far a rater is: lesions rated once of all, and repeats done of those planned."""

    done: int
    total: int
    repeats_done: int
    repeats_planned: int


def equivalent_diameter_mm(volume_mm3: pd.Series | np.ndarray) -> np.ndarray:
    """Diameter (mm) of the sphere of a lesion's volume: the size a minimum applies to."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=float) / np.pi)


def _rng(seed: int, rater: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(rater.encode()), purpose])


def calibration_keys(lesions: pd.DataFrame, design: StudyDesign) -> list[int]:
    """The calibration sample (the same for every rater), in lesion key order."""
    keys = np.sort(lesions["lesion_key"].to_numpy())
    size = min(design.calibration_size, len(keys))
    chosen = np.random.default_rng([design.seed, 0]).choice(keys, size=size, replace=False)
    return sorted(int(k) for k in chosen)


class RaterQueue:
    """One rater's queue over a project's lesions; each call reads the store afresh."""

    def __init__(self, store: RatingStore, rater: str, strategy: Strategy | None = None,
                 design: StudyDesign = StudyDesign(), blinding: Blinding = Blinding(),
                 session: str | None = None, min_diameter_mm: float = 0.0) -> None:
        self.store = store
        self.rater = rater
        self.strategy = strategy or subject_order()
        self.design = design
        self.blinding = blinding
        self.session = session
        self.min_diameter_mm = float(min_diameter_mm)

    @cached_property
    def _all_lesions(self) -> pd.DataFrame:
        return self.store.lesions()

    @cached_property
    def lesions(self) -> pd.DataFrame:
        """The lesions to rate, read once (until :meth:`refresh`): the store's, less those
        below ``min_diameter_mm``; callers must not modify it."""
        lesions = self._all_lesions
        if self.min_diameter_mm <= 0:
            return lesions
        keep = equivalent_diameter_mm(lesions["volume_mm3"]) >= self.min_diameter_mm
        return lesions[keep].reset_index(drop=True)

    @property
    def left_out(self) -> int:
        """Lesions of the project left out of the queue as too small."""
        return len(self._all_lesions) - len(self.lesions)

    @cached_property
    def _rows(self) -> dict[int, tuple[str, int, float, float, float, float]]:
        """What an item shows of each lesion, by key (built once: items are made often); small
        lesions too, as a rater may go to one on purpose."""
        lesions = self._all_lesions
        columns = [lesions[c].tolist() for c in ("subject", "lesion", "x", "y", "z", "volume_mm3")]
        return dict(zip(lesions["lesion_key"].tolist(), zip(*columns, strict=True), strict=True))

    @cached_property
    def _plan(self) -> tuple[list[int], list[int], dict[int, int]]:
        """Calibration order, strategy order of the rest, and each repeat's gap."""
        lesions, design = self.lesions, self.design
        calibration = calibration_keys(lesions, design)
        calibration = _rng(design.seed, self.rater, 1).permutation(calibration).tolist()
        rest = lesions[~lesions["lesion_key"].isin(calibration)]
        ranked = list(dict.fromkeys(int(k) for k in self.strategy.rank(
            rest.reset_index(drop=True)) if k not in calibration))
        keys = np.sort(lesions["lesion_key"].to_numpy())
        rng = _rng(design.seed, self.rater, 2)
        n_repeats = int(round(design.repeat_fraction * len(keys)))
        repeats = rng.choice(keys, size=n_repeats, replace=False)
        gaps = rng.integers(design.repeat_gap, 2 * design.repeat_gap + 1, size=n_repeats)
        return calibration, ranked, {int(k): int(g) for k, g in zip(repeats, gaps, strict=True)}

    def refresh(self) -> None:
        """Re-read the lesions and re-rank (e.g. after a model wrote new predictions)."""
        for cached in ("_all_lesions", "lesions", "_rows", "_plan"):
            self.__dict__.pop(cached, None)

    def remaining(self, limit: int | None = None) -> list[QueueItem]:
        """Items still to rate, in the order they will be served (due repeats first)."""
        calibration, ranked, gaps = self._plan
        mine = self.store.current(repeat=None, rater=self.rater)
        first = mine[mine["repeat"] == 0].sort_values("id")
        rated = set(first["lesion_key"])
        repeated = set(mine.loc[mine["repeat"] == 1, "lesion_key"])
        order = {k: i for i, k in enumerate(first["lesion_key"])}
        unrated = [k for k in calibration + ranked if k not in rated]
        due = [k for k in sorted(gaps, key=lambda k: order.get(k, len(order)))
               if k in rated and k not in repeated
               and (len(order) - 1 - order[k] >= gaps[k] or not unrated)]
        plan = [(k, "repeat", i, None, True) for i, k in enumerate(due)]
        plan += [(k, "calibration", i, None, False)
                 for i, k in enumerate(calibration) if k not in rated]
        plan += [(k, self.strategy.name, i, self.strategy.model_version, False)
                 for i, k in enumerate(ranked) if k not in rated]
        return [self._item(*entry) for entry in plan[:limit]]

    def next(self) -> QueueItem | None:
        """The lesion to show now, or ``None`` when the rater is done."""
        items = self.remaining(limit=1)
        return items[0] if items else None

    def _item(self, key: int, strategy: str, position: int, model: str | None,
              repeat: bool) -> QueueItem:
        return QueueItem(int(key), *self._rows[int(key)], strategy, int(position), model, repeat)

    def record(self, item: QueueItem, label: str, *, confidence: int | None = None,
               reason: str | None = None, comment: str | None = None,
               seconds: float | None = None) -> int:
        """Save the rater's label for ``item`` with its provenance; durable on return."""
        return self.store.add_rating(
            self.rater, item.subject, item.lesion, label, confidence=confidence, reason=reason,
            comment=comment, seconds=seconds, session=self.session, repeat=item.repeat,
            provenance=Provenance(item.strategy, item.position, item.model_version))

    def undo(self) -> QueueItem | None:
        """Retract the rater's latest rating; return that lesion (to show it again)."""
        import pandas as pd

        retracted = self.store.undo_last(self.rater)
        if retracted is None:
            return None
        row = self.store.rating(retracted)
        return self._item(int(row["lesion_key"]), row["queue_strategy"] or "undo",
                          int(row["queue_position"]) if pd.notna(row["queue_position"]) else 0,
                          row["model_version"], bool(row["repeat"]))

    def own_label(self, subject: str, lesion: int) -> str | None:
        """The rater's own current label of a lesion (to go back and change it)."""
        mine = self.store.current(rater=self.rater)
        hit = mine[(mine["subject"] == subject) & (mine["lesion"] == int(lesion))]
        return None if hit.empty else str(hit["label"].iloc[0])

    def progress(self, subject: str | None = None) -> QueueProgress:
        """Counts for a progress bar: of the whole queue, or of one ``subject``'s lesions in it
        (small ones left out count for neither)."""
        _, _, gaps = self._plan
        lesions = self.lesions
        queued = set(lesions["lesion_key"] if subject is None
                     else lesions.loc[lesions["subject"] == subject, "lesion_key"])
        mine = self.store.current(repeat=None, rater=self.rater)
        mine = mine[mine["lesion_key"].isin(queued)]
        return QueueProgress(int((mine["repeat"] == 0).sum()), len(queued),
                             int((mine["repeat"] == 1).sum()), len(queued.intersection(gaps)))

    def other_raters(self, item: QueueItem) -> pd.DataFrame:
        """Other raters' current labels of the item's lesion, if the project unblinds them."""
        if not self.blinding.show_other_raters:
            raise StoreError("this project is blinded: raters do not see each other's labels. "
                             "Set blinding.show_other_raters to true in project.json to allow "
                             "it, or use the adjudication view.")
        current = self.store.current()
        return current[(current["lesion_key"] == item.lesion_key)
                       & (current["rater"] != self.rater)][["rater", "label", "confidence"]]

    def predictions(self, item: QueueItem) -> pd.DataFrame:
        """Model predictions for the item's lesion, if the project unblinds them."""
        if not self.blinding.show_predictions:
            raise StoreError("this project is blinded: raters do not see model predictions. "
                             "Set blinding.show_predictions to true in project.json to allow "
                             "it.")
        predictions = self.store.predictions()
        return predictions[predictions["lesion_key"] == item.lesion_key]
