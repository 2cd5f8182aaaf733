"""User-facing text of the review and adjudication widgets, kept together so it reads as one voice.

Every error names what failed, on which file or subject, and what to do; every key has one line
of help, shown in the widgets' key list and in the user guides.
"""

from __future__ import annotations

#: Help for each key action (action id -> text); ids are those of ``keybindings``.
KEY_HELP = {
    "label:prl": "PRL: save and go to the next lesion",
    "label:not_prl": "Not a PRL: save and go to the next lesion",
    "label:unsure": "Unsure: save and go to the next lesion",
    "confidence": "Confidence of the next label (1 = guess ... 5 = certain)",
    "next": "Next lesion (without labelling)",
    "previous": "Previous lesion (to check or change its label)",
    "later": "Review later: skip now, show again at the end of the queue",
    "undo": "Undo the last saved label and show that lesion again",
    "jump": "Jump to a lesion (type subject:lesion or a lesion id)",
    "slice_up": "Next slice (towards superior, anterior or right; hold to scroll)",
    "slice_down": "Previous slice (hold to scroll)",
    "axis": "Plane: axial / coronal / sagittal",
    "outline": "Show or hide the lesion outlines",
    "centre": "Back to the lesion's centre slice",
    "window": "Reset the grey windows (drag in a panel to change one)",
    "comment": "Type a comment for the next label",
    "consensus:prl": "Consensus PRL: save and go to the next disagreement",
    "consensus:not_prl": "Consensus not a PRL: save and go to the next disagreement",
    "consensus:unsure": "Consensus unsure: save and go to the next disagreement",
    "consensus:retract": "Take back the consensus decision of this lesion (history kept)",
}

TOOLTIPS = {
    "project": "A project folder made with `deep-prl project init` (holds project.json).",
    "rater": "Your rater id. Pick yours or type a new one; every label is saved under it.",
    "role": "Rater: label lesions blind. Adjudicator: settle disagreements between raters.",
    "order": "Order of the lesions you have not rated yet.",
    "subject": "Rate this subject's lesions next, until they are done.",
    "axis": "Plane the lesion is shown in; the slice goes through the lesion's centre.",
    "fov": "Field of view as a multiple of the lesion's extent (Ctrl + wheel on the panels).",
    "reason": "Optional exclusion reason saved with the next label.",
    "comment": "Optional comment saved with the next label (Enter returns to the keys).",
    "jump": "subject:lesion (e.g. sub-001:12) or a lesion id of the current subject.",
    "pseudonyms": "Show subjects under stable pseudonyms instead of their ids.",
    "note": "Optional note saved with the consensus decision.",
    "decided": "List every lesion that already has a consensus decision, to revise or take it back.",
    "pair": "Raters compared in the confusion matrix.",
}

SAVED = "Saved: {label}{confidence} ({subject} lesion {lesion})"
UNDONE = "Undone: label of {subject} lesion {lesion} retracted"
NOTHING_TO_UNDO = "Nothing to undo."
LATER = "{subject} lesion {lesion} moved to the end of the queue."
DONE = "All lesions rated. Thank you! Use ← or the subject list to revisit any lesion."
SUBJECT_DONE = "All lesions of {subject} are rated; back to the queue."
NOT_ON_SCREEN = "Key ignored: the lesion was not on screen yet. Look, then press again."
LEFT_OUT = "{count} lesion(s) under {size:g} mm left out (project setting)."
RERANKED = "New model scores: the lesions still to rate are ranked again."
NO_PROJECT = "Open a project first."
NO_RATER = "Choose or type your rater id first."
CONSENSUS_SAVED = "Consensus saved: {label} ({subject} lesion {lesion})"
NO_DISAGREEMENTS = "No disagreements waiting for adjudication."
WAITING = "{count} disagreement(s) waiting"
DECIDED = "Decided: {label} by {by}{note}. P / N / U revises it, ⌫ takes it back."
RETRACTED = "Decision taken back: {subject} lesion {lesion} waits for adjudication again."
NOTHING_TO_RETRACT = "This lesion has no decision to take back."
LABELS_HIDDEN = ("Raters' labels and agreement are hidden while a blind rater session is open "
                 "in this viewer.")
BLIND = "Blind mode: other raters' labels and model scores are hidden."
LOADING = "Loading {subject} ..."
LOAD_FAILED_SHORT = "Could not load {subject}: see the message."

OPEN_FAILED = "Could not open the project {path}: {cause}"
LOAD_FAILED = ("Could not load the images of {subject}: {cause}. The session and every saved "
               "label are intact; fix the file and go to the lesion again.")
SAVE_FAILED = ("The label was NOT saved ({cause}). Nothing else was lost; press the key again "
               "once the problem is fixed.")
NEXT_FAILED = ("The label was saved, but the next lesion could not be read from the rating "
               "store ({cause}). Press → to try again.")
JUMP_UNKNOWN = ("No lesion '{text}'. Type subject:lesion (e.g. sub-001:12) or a lesion id of the "
                "current subject.")
STATS_FAILED = "Could not compute the agreement statistics: {cause}"
RERANK_FAILED = ("New model scores were stored, but the queue could not be ranked again ({cause}); "
                 "the old order stays. Reopen the project to retry.")
