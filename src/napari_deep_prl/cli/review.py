"""``deep-prl review``: open napari with the review (or adjudication) widget on a project.

napari is imported inside the handler, so ``deep-prl`` stays importable and fast without a
display; the project is opened once before napari starts, so a wrong path fails on the command
line with the usual one-line error instead of inside a window.
"""

from __future__ import annotations

import argparse
import os
import sys

from napari_deep_prl.active import STRATEGIES
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.project import Project


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl review``."""
    p.description = ("Open napari with the lesion review widget docked on PROJECT and the "
                     "rater's first unrated lesion on screen; every label is saved at once. "
                     "With --adjudicator, the adjudication widget instead; with --practice SET, "
                     "practice on a reference set (answers kept out of the study).")
    p.add_argument("project", help="project folder (made with `deep-prl project init`)")
    p.add_argument("--rater", required=True, help="your rater (or adjudicator) id")
    p.add_argument("--adjudicator", action="store_true",
                   help="adjudicate the raters' disagreements instead of rating")
    p.add_argument("--practice", metavar="SET",
                   help="practise on this reference set (docs/rater_training.md) instead of "
                        "rating the study")
    p.add_argument("--order", choices=tuple(STRATEGIES), default="subject_order",
                   help="order of the lesions to rate (default: subject_order): "
                        + "; ".join(f"{name}: {words}" for name, words in STRATEGIES.items())
                        + ". The model orders use the scores the project stored last")
    p.add_argument("--seed", type=int, default=0, help="seed of the random order (default: 0)")
    p.add_argument("--pseudonyms", action="store_true",
                   help="show subjects under stable pseudonyms instead of their ids")
    p.add_argument("--axis", choices=("axial", "coronal", "sagittal"), default="axial",
                   help="slicing plane (default: axial; press A to change it)")
    p.set_defaults(func=run_review)


def check_display() -> None:
    """Refuse to start Qt without a display: it would abort the process (exit 134) with a
    misleading hint about xcb libraries."""
    if sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM") \
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("deep-prl review needs a display, and none is set (no DISPLAY or "
                         "WAYLAND_DISPLAY). Run it in a desktop session or over `ssh -X`; "
                         "without a window, `deep-prl ratings add` records labels.")


def run_review(args: argparse.Namespace) -> int:
    from napari_deep_prl.active.strategies import open_strategy
    from napari_deep_prl.ratings.training import reference_sets

    with Project.open(args.project) as project:  # a bad folder or set fails before any window
        sets = reference_sets(project)
    if args.practice and args.practice not in sets:
        raise InputError(f"{args.project}: no reference set '{args.practice}' to practise on "
                         f"(known: {', '.join(sets) or 'none yet'}). Hold one with "
                         "'deep-prl ratings practice-set'.")
    check_display()
    strategy = open_strategy(args.project, args.order, seed=args.seed)
    import napari

    from napari_deep_prl._napari.review.adjudication_widget import dock_adjudication
    from napari_deep_prl._napari.review.review_widget import ReviewWidget

    viewer = napari.Viewer(title="Deep-PRL review")
    if args.adjudicator:
        widget = dock_adjudication(viewer, args.project, args.rater)
    else:
        widget = ReviewWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Deep-PRL review", area="right")
        widget.axis.setCurrentText(args.axis)
        if args.practice:
            widget.open_practice(args.project, args.rater, args.practice,
                                 pseudonymise=args.pseudonyms)
        else:
                widget.open_project(args.project, args.rater, strategy=strategy,
                                pseudonymise=args.pseudonyms, order=args.order)
    if widget.project is None:
        return 2
    napari.run()
    return 0
