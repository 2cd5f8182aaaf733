"""User-facing text of the plugin's widgets (review, adjudication, the model panel and its
fine-tuning box), kept together so it reads as one voice.

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
    "practice_set": "Practise on this reference set instead of rating the study: after each answer "
                    "you see the reference label and the experts' note; answers stay out of the "
                    "study (docs/rater_training.md).",
    "pseudonyms": "Show subjects under stable pseudonyms instead of their ids.",
    "note": "Optional note saved with the consensus decision.",
    "decided": "List every lesion that already has a consensus decision, to revise or take it back.",
    "pair": "Raters compared in the confusion matrix.",
    "second_reads": "Lesions another rater should read: disagreeing labels, an unsure, or a "
                    "lone read the model contradicts; ordered by the expected change of the "
                    "patient's PRL count one more read brings (docs/adjudicator_guide.md).",
    "report": "Write the reliability report (one HTML file: kappa, Gwet's AC1, PABAK, "
              "Krippendorff's alpha, sensitivity and specificity, the PRL count ICC, with "
              "patient-bootstrap CIs and a methods paragraph), as `deep-prl ratings report` does.",
    "part": "The lesion under review was split from a confluent component (lesions grown together in the "
            "mask): its other parts have a faint yellow outline. Judge this part on its own.",
    "evidence": "Measured on the susceptibility image, without the model (NAIMS's criteria as numbers): "
                "the share of the lesion's edge, on the axial slices, with a band more paramagnetic than "
                "the tissue just outside; the longest run of slices with a rim on at least two thirds of "
                "the edge; the largest in-plane diameter. Hidden while a blind session is open.",
    # the model panel and its fine-tuning box
    "open": "A project folder (made with `deep-prl project init`): its subjects can be scored "
            "and the scores are stored as predictions.",
    "load": "A Deep-PRL checkpoint (.pt), loaded with weights only: it cannot run code. Or an ONNX "
            "model written by `deep-prl export` (.onnx), which scores alike but cannot be fine-tuned, "
            "recalibrated or show saliency.",
    "click_mode": "On: a left click in the viewer outlines the lesion under it from the structural images "
                  "(layer 'clicked outlines'; correct it with the brush) and scores it at once.",
    "score_outlines": "Score the lesions of the 'clicked outlines' layer as they are now (after painting).",
    "score": "Score the chosen subject (or the subject shown in the viewer) in the background.",
    "score_all": "Score every subject of the project; scores already stored for this model are "
                 "reused.",
    "decision": "How a project's scored lesions are called PRL: each at the model's validation "
                "threshold, or all together, as many of the most probable as maximise the F1 "
                "their calibrated probabilities expect (for a study's PRL counts; calibrated "
                "models only).",
    "saliency": "Add a layer showing where the network looks on the selected lesion's patch "
                "(gradient x input: how much each voxel moves the PRL decision, 0-1). Hidden in blind mode.",
    "blind": "Raters must not see model scores while labelling: hides probabilities, colours "
             "and the PRL count.",
    "source": "Which labels to learn from: the consensus, or one rater's labels (imported PRL "
              "masks appear as the rater 'prl_mask').",
    "epochs": "Passes over the labelled lesions.",
    "lr": "Learning rate (Adam). Fine-tuning a loaded model: keep it small.",
    "val": "Fraction of subjects held out (whole subjects) to pick the decision threshold by F1. "
           "An ensemble validates each network on a different share of the subjects instead.",
    "networks": "Networks trained when there is no model to start from: more than one trains a "
                "cross-fitted ensemble (each validated on a different share of the subjects), which "
                "scored better than one network but takes as many times longer. A loaded model keeps "
                "its own number.",
    "start": "Train in the background; the viewer stays usable. Cancel keeps the best model so "
             "far. The result is saved as the next version in the project's models folder.",
    "auto": "Retrain automatically after this many new labels, then re-score the project so "
            "the review queue is re-ranked.",
    "use_new": "Make the new model the panel's model although it validated worse than the current "
               "one on the same held-out lesions.",
    "keep": "Keep the panel's model; the new one stays saved in the project's models folder.",
    "recalibrate_source": "Which labels recalibrate the model: the consensus, or one rater's or reference's "
                          "labels. At least 20 labelled lesions, 5 of them PRLs and 5 not.",
    "recalibrate": "Refit the loaded model's calibration and decision threshold on this project's labelled "
                   "lesions (a model trained at another site over- or under-calls here); the networks are kept. "
                   "Asks where to save the site model, then uses it. Same as `deep-prl calibrate`.",
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
PRACTICE_AGREED = "✓ Agrees with the reference: {label}.{note} Press → (next) to go on."
PRACTICE_DIFFERS = "✗ The reference says {label} (you: {yours}).{note} Press → (next) to go on."
PRACTICE_NOTE = " Experts' note: {note}."
PRACTICE_LOOK_FIRST = "Read the feedback first, then press → to go on."
PRACTICE_ANSWER_FIRST = "Answer this lesion first (P / N / U); practice has no skipping."
PRACTICE_DONE = "Practice done. {score}"
NO_RATER = "Choose or type your rater id first."
CONSENSUS_SAVED = "Consensus saved: {label} ({subject} lesion {lesion})"
NO_DISAGREEMENTS = "No disagreements waiting for adjudication."
WAITING = "{count} disagreement(s) waiting"
DECIDED = "Decided: {label} by {by}{note}. P / N / U revises it, ⌫ takes it back."
RETRACTED = "Decision taken back: {subject} lesion {lesion} waits for adjudication again."
NOTHING_TO_RETRACT = "This lesion has no decision to take back."
LABELS_HIDDEN = ("Raters' labels and agreement are hidden while a blind rater session is open "
                 "in this viewer.")
BLIND = "Blind mode: other raters' labels, model scores and rim evidence are hidden."
EVIDENCE = "Rim on {coverage} of the edge, on {slices} consecutive slice(s) · {diameter:.1f} mm across"
EVIDENCE_NONE = "too small to judge"
NO_MASK = ("{subject} has no lesion mask: its lesion layer is empty. Score its lesions by clicking them: "
           "Plugins > Deep-PRL model, Load model…, 'Score a clicked lesion', then click on a lesion.")
NO_LESIONS = ("{subject}'s lesion layer is empty (a subject without a lesion mask). Click on its lesions with "
              "'Score a clicked lesion' on, or paint them into the lesion layer, then score.")
PART = "part {index} of component {component} ({count} parts)"
SALIENCY_NEEDS = ("Select a lesion in the table first; saliency maps are model output, so they are not "
                  "shown in blind mode.")
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
REPORT_WRITING = "Writing the reliability report to {path}…"
REPORT_WRITTEN = "Reliability report written to {path}"
REPORT_FAILED = "Could not write the reliability report: {cause}"
RERANK_FAILED = ("New model scores were stored, but the queue could not be ranked again ({cause}); "
                 "the old order stays. Reopen the project to retry.")

SCORES_HIDDEN = ("Model scores are hidden while a blind rater session is open in this viewer; "
                 "they come back when it closes.")
#: The fine-tuning box's status when the new model validates worse than the one it started from.
WORSE_MODEL = ("{summary}. It validates worse than the model it started from on the same held-out "
               "lesions ({figures}), so the panel keeps its current model. The new model is saved: "
               "use it anyway, or keep the current one?")
