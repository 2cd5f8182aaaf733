"""Active learning: which lesion to rate next, and fine-tuning on new labels.

The queue orders' names live here, apart from :mod:`.strategies` (which needs torch), so the
command line's parser and the review widget's menu read them without loading a network.
"""

#: Queue orders offered to raters, by name (``deep-prl review --order``, ``deep-prl active rank
#: --strategy``), with the words the review widget's menu and the help use for each. The model
#: orders (:data:`MODEL_STRATEGIES`) rank by the scores the project stored last.
STRATEGIES = {
    "subject_order": "by subject",
    "random": "random (seeded)",
    "entropy": "most uncertain first (model)",
    "disagreement": "most disagreement (model)",
    "likely_prl": "most likely PRL first (model)",
}
MODEL_STRATEGIES = tuple(STRATEGIES)[2:]
