"""Ratings: the durable multi-rater store, consensus, agreement, rater queues and exports.

Most users go through :class:`napari_deep_prl.ratings.project.Project`, which binds these pieces to a
project folder and its configuration; the modules are usable on their own for scripts.
"""

from napari_deep_prl.ratings.consensus import ConsensusRule
from napari_deep_prl.ratings.queue import (
    Blinding,
    QueueItem,
    QueueProgress,
    RaterQueue,
    Strategy,
    StudyDesign,
    seeded_shuffle,
    subject_order,
)
from napari_deep_prl.ratings.schema import (
    DEFAULT_EXCLUSION_REASONS,
    LABELS,
    SCHEMA_VERSION,
)
from napari_deep_prl.ratings.store import Provenance, Rating, RatingStore

__all__ = [
    "Blinding", "ConsensusRule", "DEFAULT_EXCLUSION_REASONS", "LABELS", "Provenance",
    "QueueItem", "QueueProgress", "RaterQueue", "Rating", "RatingStore", "SCHEMA_VERSION",
    "Strategy", "StudyDesign", "seeded_shuffle", "subject_order",
]
