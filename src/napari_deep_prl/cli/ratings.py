"""``deep-prl ratings``: add, import, compare and export raters' labels; references;
adjudicated consensus from the shell; PRL masks as NIfTI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import (
    check_output,
    print_table,
    separator_for,
    write_table,
)
from napari_deep_prl.ratings.project import MASK_INDEX, Project
from napari_deep_prl.ratings.schema import LABELS, UNSURE_MODES
from napari_deep_prl.ratings.second_reads import DEFAULT_MODEL_GAP
from napari_deep_prl.ratings.training import ALLOW_STUDY, DEFAULT_MIN_KAPPA

if TYPE_CHECKING:
    import pandas as pd

    from napari_deep_prl.ratings.agreement import AgreementSummary


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl ratings``."""
    p.description = "Work with a project's rating store (see docs/ratings.md)."
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="record one rating (exit 0 once it is on disk)")
    add.add_argument("project", help="project folder")
    add.add_argument("--rater", required=True, help="rater id (registered on first use)")
    add.add_argument("--subject", required=True)
    add.add_argument("--lesion", required=True, type=int, help="lesion id within the subject")
    add.add_argument("--label", required=True, choices=LABELS)
    add.add_argument("--confidence", type=int, choices=range(1, 6), metavar="1-5")
    add.add_argument("--reason", help="exclusion reason from the project's list")
    add.add_argument("--comment")
    add.set_defaults(func=run_add)

    imp = actions.add_parser(
        "import", help="import ratings from a table or from the manifest's prl_mask",
        description="FILE is a TSV (or .csv) with columns subject, lesion, rater, label and "
                    "optionally confidence, reason, comment; with --reference NAME it holds that "
                    "reference's labels (subject, lesion, label; no rater column). Cells are "
                    "read as written (no NA guessing); a blank needed cell, a lesion id that is not "
                    "a whole number, an invalid new id or two differing rows of one rater on one "
                    "lesion are refused with the line, and nothing is imported; exact repeats are "
                    "imported once, with a warning. With "
                    "--from-prl-mask every lesion is labelled prl when most of its voxels lie in "
                    "prl_mask, else not_prl, as a reference (default 'prl_mask') or, with "
                    "--rater, as a rater. A reference (ground truth, an expert read) is compared "
                    "with the raters and never votes; a rater's labels count in consensus, "
                    "adjudication and kappa. --history FILE merges a history file another "
                    "site's `ratings export --history -o FILE.jsonl` wrote: every row the project "
                    "lacks is added (sessions, times, undo rows, repeats, provenance, consensus, "
                    "predictions); rows already there are skipped, conflicts are listed and "
                    "nothing is imported, and a file of another project is refused "
                    "(docs/multisite.md).")
    imp.add_argument("project", help="project folder")
    imp.add_argument("file", nargs="?", help="ratings table")
    imp.add_argument("--history", metavar="FILE",
                     help="merge this history file (.jsonl) of the project, losslessly")
    imp.add_argument("--from-prl-mask", action="store_true",
                     help="import the manifest's prl_mask column instead of a table")
    who = imp.add_mutually_exclusive_group()
    who.add_argument("--reference", metavar="NAME",
                     help="store the labels as this reference (--from-prl-mask default: "
                          "prl_mask)")
    who.add_argument("--rater", help="with --from-prl-mask: store the mask's labels as this "
                                     "rater, who votes (a person's read)")
    imp.add_argument(ALLOW_STUDY, action="store_true",
                     help="with a practice history file: accept reference sets on lesions the "
                          "study rates (see `ratings practice-set`)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=run_import)

    ref = actions.add_parser(
        "reference", help="turn a rater into a reference (its labels stop voting)",
        description="For a project that imported a ground truth or an expert read as a rater: "
                    "its labels stay, are compared with the raters' and no longer count in "
                    "consensus, adjudication, kappa or the PRL count ICC. Refused while "
                    "adjudicated decisions concern lesions it labelled (they were made with its "
                    "label shown as a rater's) unless --keep-decisions.")
    ref.add_argument("project", help="project folder")
    ref.add_argument("--rater", required=True, help="the rater id to turn into a reference")
    ref.add_argument("--keep-decisions", action="store_true",
                     help="keep adjudicated decisions on lesions it labelled as they are")
    ref.set_defaults(func=run_reference)

    con = actions.add_parser(
        "consensus", help="record, revise or retract a lesion's consensus (exit 0 once on disk)",
        description="Records an adjudicator's consensus label of one lesion; it overrides the "
                    "automatic rule. Deciding again revises it; --retract withdraws the live "
                    "decision, so the automatic rule applies again (or the lesion waits for "
                    "adjudication). Every decision and retraction stays in the history "
                    "(`ratings export --consensus-history`).")
    con.add_argument("project", help="project folder")
    con.add_argument("--subject", required=True)
    con.add_argument("--lesion", required=True, type=int, help="lesion id within the subject")
    decision = con.add_mutually_exclusive_group(required=True)
    decision.add_argument("--label", choices=LABELS, help="the consensus label")
    decision.add_argument("--retract", action="store_true",
                          help="withdraw the lesion's adjudicated decision")
    con.add_argument("--by", required=True, help="adjudicator id")
    con.add_argument("--note", help="why (kept with the decision or retraction)")
    con.set_defaults(func=run_consensus)

    sec = actions.add_parser(
        "second-reads", help="lesions another rater should read, most useful first",
        description="Lesions whose raters disagree, that a rater called unsure, or whose only "
                    "rater the model's stored score contradicts (see --model-gap); adjudicated "
                    "lesions are left out. Ordered by the expected change of the patient's PRL "
                    "count that one more read brings, 2p(1-p)/(n+2), with p the lesion's PRL "
                    "share of its n reads plus the model's probability as one more (see "
                    "docs/adjudicator_guide.md). Not blinded: for the study lead.")
    sec.add_argument("project", help="project folder")
    sec.add_argument("-o", "--output", help="output table; default: TSV on stdout")
    sec.add_argument("--model-gap", type=float, default=DEFAULT_MODEL_GAP,
                     help="a lone read is queued when the model gives the other label at least "
                          "this probability (default %(default)s)")
    sec.add_argument("--model", help="use this model's stored scores (default: each lesion's "
                                     "newest)")
    sec.set_defaults(func=run_second_reads)

    coh = actions.add_parser(
        "practice-cohort", help="register practice subjects: images the study does not rate",
        description="Registers the subjects of MANIFEST (a cohort manifest, as for `project "
                    "init`) in the project's practice store, for reference sets apart from the "
                    "study. Subjects that are the study's (same id, an image file the study "
                    "reads, or the same lesion mask) are refused. Run it again at another site "
                    "with that site's copy of the manifest. See docs/rater_training.md.")
    coh.add_argument("project", help="project folder")
    coh.add_argument("manifest", help="manifest of the practice subjects")
    coh.set_defaults(func=run_practice_cohort)

    pset = actions.add_parser(
        "practice-set", help="hold a reference set raters practise on",
        description="Stores a reference set in the project's practice store "
                    "(practice/practice.sqlite), apart from the study's ratings: from FILE (TSV "
                    "or CSV: subject, lesion, label and optionally comment, shown as the "
                    "experts' note) or from the project's consensus of the lesions listed in "
                    "--from-consensus (subject, lesion). Lesions the study rates are refused "
                    f"unless {ALLOW_STUDY}: hold the set on practice subjects (`ratings "
                    "practice-cohort`). See docs/rater_training.md.")
    pset.add_argument("project", help="project folder")
    pset.add_argument("name", help="the reference set's id")
    pset.add_argument("file", nargs="?", help="reference labels table")
    pset.add_argument("--from-consensus", metavar="LESIONS",
                      help="table of the lesions (subject, lesion) whose consensus to use")
    pset.add_argument(ALLOW_STUDY, action="store_true",
                      help="allow lesions the study rates, for trainees who will not rate the "
                           "study (a pilot): a trainee who practised on a lesion has seen its "
                           "expert answer, so their study label of it is not independent")
    pset.set_defaults(func=run_practice_set)

    prac = actions.add_parser(
        "practice", help="practise on a reference set: name the next lesion, or answer one",
        description="Without --label: prints the next lesion of the set (subject and lesion) for "
                    "the trainee. With --subject, --lesion and --label: records the practice "
                    "answer (never a study rating) and prints the reference label and the "
                    "experts' note.")
    prac.add_argument("project", help="project folder")
    prac.add_argument("--rater", required=True, help="the trainee's id")
    prac.add_argument("--set", required=True, dest="reference", help="reference set id")
    prac.add_argument("--subject")
    prac.add_argument("--lesion", type=int, help="lesion id within the subject")
    prac.add_argument("--label", choices=LABELS)
    prac.set_defaults(func=run_practice)

    trn = actions.add_parser(
        "train-rater", help="score a trainee against a reference set; record them as trained",
        description="Cohen's kappa of the trainee's practice answers against the set, with a "
                    "95%% CI by a bootstrap over patients; when every lesion of the set is "
                    "answered and kappa reaches --min-kappa the trainee is recorded in "
                    "practice/trained.tsv. Exit 0 either way; stderr says which.")
    trn.add_argument("project", help="project folder")
    trn.add_argument("--rater", required=True, help="the trainee's id")
    trn.add_argument("--set", required=True, dest="reference", help="reference set id")
    trn.add_argument("--min-kappa", type=float, default=DEFAULT_MIN_KAPPA,
                     help="kappa needed to count as trained (default %(default)s)")
    trn.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    trn.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    trn.set_defaults(func=run_train_rater)

    agr = actions.add_parser(
        "agreement", help="percent agreement, Cohen's kappa per pair, Fleiss' kappa",
        description="One row per rater pair (rater_a, rater_b, n, percent_agreement, "
                    "cohen_kappa with a subject-bootstrap 95% CI) and a row 'all' with "
                    "fleiss_kappa.")
    agr.add_argument("project", help="project folder")
    agr.add_argument("-o", "--output", help="output table; default: TSV on stdout")
    agr.add_argument("--unsure", choices=UNSURE_MODES, default="category",
                     help="'category': unsure is a third label; 'exclude': drop lesions "
                          "any compared rater called unsure")
    agr.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    agr.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    agr.add_argument("--details", metavar="DIR",
                     help="also write per_subject.tsv, vs_consensus.tsv, "
                          "vs_consensus_per_subject.tsv, intra_rater.tsv and vs_reference.tsv "
                          "into DIR")
    agr.set_defaults(func=run_agreement)

    rep = actions.add_parser(
        "report", help="reliability report: one self-contained HTML file with tables, plots "
                       "and a methods paragraph",
        description="Agreement per rater pair and over all raters (percent agreement, Cohen's "
                    "and Fleiss' kappa, Gwet's AC1, PABAK with the prevalence and bias indices, "
                    "Krippendorff's alpha with missing ratings), each rater's sensitivity and "
                    "specificity against the consensus and the references, the ICC(A,1) of "
                    "per-patient PRL counts and intra-rater agreement from the repeats; every "
                    "CI by a bootstrap that resamples patients. Plots are embedded: the file "
                    "opens offline. See docs/ratings.md.")
    rep.add_argument("project", help="project folder")
    rep.add_argument("-o", "--output", required=True, help="the report (.html)")
    rep.add_argument("--unsure", choices=UNSURE_MODES, default="category",
                     help="'category': unsure is a third label; 'exclude': drop lesions "
                          "any compared rater called unsure")
    rep.add_argument("--n-boot", type=int, default=1000,
                     help="bootstrap resamples of patients (default 1000)")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    rep.set_defaults(func=run_report)

    exp = actions.add_parser(
        "export", help="write the labels as a table and/or PRL masks as NIfTI",
        description="Default: one row per lesion (subject, lesion, rater_<id> per rater, "
                    "consensus, consensus_method, then reference_<id> per reference). --long: "
                    "one row per current rating or reference label with all fields. --history: "
                    "every rating row ever written; to a .jsonl file, the lossless history "
                    "file of every table that `ratings import --history` merges into a store of "
                    "another site (docs/multisite.md). --consensus-history: every consensus "
                    "decision and retraction. --nifti-dir: each subject's consensus PRL mask "
                    "(and each rater's and reference's) on the lesion mask's grid, with an "
                    "index prlmasks.tsv.")
    exp.add_argument("project", help="project folder")
    exp.add_argument("-o", "--output", help="output .tsv or .csv (with --history also .jsonl)")
    kind = exp.add_mutually_exclusive_group()
    kind.add_argument("--long", dest="kind", action="store_const", const="long",
                      help="one row per current rating, with every field")
    kind.add_argument("--history", dest="kind", action="store_const", const="history",
                      help="every row ever written, undo rows included (to .jsonl: every table, "
                           "for `ratings import --history`)")
    kind.add_argument("--consensus-history", dest="kind", action="store_const",
                      const="consensus_history",
                      help="every consensus decision and retraction, in order")
    exp.add_argument("--nifti-dir", metavar="DIR",
                     help="write binary PRL masks (NIfTI) of the consensus, each rater and each "
                          "reference into DIR")
    exp.add_argument("--practice", action="store_true",
                     help="with --history -o FILE.jsonl: the practice store's history file "
                          "instead (reference sets, practice answers, trained raters; "
                          "docs/rater_training.md)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=run_export, kind=None)


def run_add(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        rating_id = project.store.add_rating(
            args.rater, args.subject, args.lesion, args.label, confidence=args.confidence,
            reason=args.reason, comment=args.comment, session="cli")
    print(f"saved rating {rating_id}: {args.rater} {args.subject} lesion {args.lesion} "
          f"{args.label}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    if args.history:
        if args.file or args.from_prl_mask or args.reference or args.rater:
            raise InputError("--history FILE imports one history file, without a ratings "
                             "table, --from-prl-mask, --reference or --rater.")
        from napari_deep_prl.ratings.exchange import is_practice_history
        from napari_deep_prl.ratings.training import Practice

        practice = is_practice_history(args.history)
        if args.allow_study_lesions and not practice:
            raise InputError(f"{ALLOW_STUDY} applies to a practice history file, and "
                             f"{args.history} is not one.")
        with Project.open(args.project) as project:
            if practice:
                with Practice(project) as store:
                    summary = store.import_history(args.history,
                                                   allow_study_lesions=args.allow_study_lesions)
            else:
                summary = project.import_history(args.history)
        where = "practice store of " if practice else ""
        print(f"imported {args.history} into the {where}{args.project}: {summary}",
              file=sys.stderr)
        return 0
    with Project.open(args.project) as project:
        if args.from_prl_mask:
            if args.file:
                raise InputError("give either FILE or --from-prl-mask, not both.")
            count = run_with_tqdm(project.import_prl_masks(args.rater, reference=args.reference),
                                  desc="prl_mask", disable=args.quiet)
        elif args.file:
            if args.rater:
                raise InputError("--rater names the rater of --from-prl-mask; a ratings table "
                                 "names its raters in its rater column.")
            count = project.import_ratings(_read_table(Path(args.file)), source=args.file,
                                           reference=args.reference)
        else:
            raise InputError("give a ratings table FILE or --from-prl-mask.")
    as_what = f"rater '{args.rater}'" if args.rater else (
        f"reference '{args.reference or 'prl_mask'}'" if args.from_prl_mask or args.reference
        else "raters")
    print(f"imported {count} labels into {args.project} as {as_what}", file=sys.stderr)
    return 0


def run_reference(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        changed = project.make_reference(args.rater, keep_decisions=args.keep_decisions)
    print(f"'{args.rater}' is now a reference: its labels stay and no longer vote; "
          f"{len(changed)} lesion(s) changed consensus ({int(changed['after'].isna().sum())} "
          "now without one)", file=sys.stderr)
    return 0


def run_consensus(args: argparse.Namespace) -> int:
    import pandas as pd

    where = f"{args.subject} lesion {args.lesion}"
    with Project.open(args.project) as project:
        if not args.retract:
            row = project.record_consensus(args.subject, args.lesion, args.label, by=args.by,
                                           note=args.note)
            print(f"saved consensus {row}: {where} {args.label} (by {args.by})", file=sys.stderr)
            return 0
        row = project.retract_consensus(args.subject, args.lesion, by=args.by, note=args.note)
        if row is None:
            raise InputError(f"{where} has no adjudicated consensus to retract; nothing was "
                             "written.")
        table = project.consensus()
        now = table[(table["subject"] == args.subject) & (table["lesion"] == args.lesion)].iloc[0]
        state = (f"consensus is now {now['consensus']} ({now['consensus_method']})"
                 if pd.notna(now["consensus"]) else
                 "it waits for adjudication" if now["pending"] else "it has no consensus yet")
    print(f"retracted the consensus of {where} (row {row}); {state}", file=sys.stderr)
    return 0


def _read_table(path: Path) -> pd.DataFrame:
    """Every cell as the text it is: no NA guessing, so a rater named NA stays NA and a blank
    cell stays blank for the import to refuse with its line."""
    import pandas as pd

    try:
        return pd.read_csv(path, sep=separator_for(path), dtype=str, keep_default_na=False,
                           encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file. Check the path.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: unreadable table ({err}). Give a TSV with a header "
                         "subject, lesion, rater, label.") from err


def run_second_reads(args: argparse.Namespace) -> int:
    check_output(args.output)
    with Project.open(args.project, readonly=True) as project:
        queue = project.second_reads(model_gap=args.model_gap, model=args.model)
    if args.output:
        write_table(queue, args.output, na_rep="n/a")
    else:
        print_table(queue, sys.stdout, float_format="%.4g", na_rep="n/a")
    print(f"{len(queue)} lesion(s) would gain from another read", file=sys.stderr)
    return 0


def run_practice_set(args: argparse.Namespace) -> int:
    from napari_deep_prl.ratings.training import Practice

    if bool(args.file) == bool(args.from_consensus):
        raise InputError("give either a reference labels FILE or --from-consensus LESIONS.")
    with Project.open(args.project) as project, Practice(project) as practice:
        if args.file:
            count = practice.hold_reference(args.name, _read_table(Path(args.file)),
                                            allow_study_lesions=args.allow_study_lesions)
        else:
            count = practice.reference_from_consensus(
                args.name, _read_table(Path(args.from_consensus)),
                allow_study_lesions=args.allow_study_lesions)
    print(f"reference set '{args.name}' holds {count} new label(s)", file=sys.stderr)
    return 0


def run_practice_cohort(args: argparse.Namespace) -> int:
    from napari_deep_prl.ratings.training import Practice

    with Project.open(args.project) as project, Practice(project) as practice:
        subjects = practice.add_cohort(args.manifest)
    print(f"{len(subjects)} practice subject(s) registered from {args.manifest}", file=sys.stderr)
    return 0


def run_practice(args: argparse.Namespace) -> int:
    from napari_deep_prl.ratings.training import Practice

    answer = (args.subject, args.lesion, args.label)
    if any(a is not None for a in answer) and any(a is None for a in answer):
        raise InputError("an answer needs --subject, --lesion and --label together.")
    with Project.open(args.project) as project, Practice(project) as practice:
        if args.label is None:
            todo = practice.remaining(args.rater, args.reference)
            if todo:
                print(*todo[0], sep="\t")
            print(f"{len(todo)} lesion(s) of '{args.reference}' left to practise",
                  file=sys.stderr)
            return 0
        feedback = practice.answer(args.rater, args.reference, args.subject, args.lesion,
                                   args.label)
    note = f" ({feedback.note})" if feedback.note else ""
    verdict = "agreed" if feedback.agreed else "differs"
    print(f"{verdict}: reference: {feedback.reference_label}{note}", file=sys.stderr)
    return 0


def run_train_rater(args: argparse.Namespace) -> int:
    from napari_deep_prl.ratings.training import Practice, describe_score

    with Project.open(args.project) as project, Practice(project) as practice:
        score = practice.record_trained(args.rater, args.reference, min_kappa=args.min_kappa,
                                        n_boot=args.n_boot, seed=args.seed)
    print(describe_score(args.rater, args.reference, score, args.min_kappa), file=sys.stderr)
    return 0


def run_agreement(args: argparse.Namespace) -> int:
    check_output(args.output)
    check_output(args.details, folder=True)
    with Project.open(args.project, readonly=True) as project:
        summary = project.agreement(unsure=args.unsure, n_boot=args.n_boot, seed=args.seed)
    if args.output:
        write_table(summary.pairs, args.output, na_rep="n/a")
    else:
        print_table(summary.pairs, sys.stdout, float_format="%.4g", na_rep="n/a")
    if args.details:
        folder = Path(args.details)
        for name in ("per_subject", "vs_consensus", "vs_consensus_per_subject", "intra_rater",
                     "vs_reference"):
            write_table(getattr(summary, name), folder / f"{name}.tsv", na_rep="n/a")
    print(agreement_text(summary), file=sys.stderr)
    return 0


def agreement_text(summary: AgreementSummary) -> str:
    """The agreement figures in words, n/a with the reason where one cannot be computed."""
    from napari_deep_prl.ratings.agreement import describe_estimate

    lines = []
    for row in summary.pairs.itertuples():
        if row.rater_a == "all":
            fleiss = describe_estimate(row.fleiss_kappa, note=row.note)
            lines.append(f"all raters: Fleiss' kappa {fleiss} on {row.n} lesions")
        else:
            kappa = describe_estimate(row.cohen_kappa, row.cohen_kappa_ci_low,
                                      row.cohen_kappa_ci_high, row.note)
            lines.append(f"{row.rater_a} vs {row.rater_b}: kappa {kappa} on {row.n} lesions")
    for row in summary.vs_reference.itertuples():
        kappa = describe_estimate(row.cohen_kappa, row.cohen_kappa_ci_low,
                                  row.cohen_kappa_ci_high, row.note)
        lines.append(f"{row.rater} vs reference {row.reference}: kappa {kappa} on {row.n} "
                     f"lesions; sensitivity {describe_estimate(row.sensitivity)}, specificity "
                     f"{describe_estimate(row.specificity)}, PPV {describe_estimate(row.ppv)}")
    icc = describe_estimate(summary.prl_count_icc, note=summary.prl_count_icc_note)
    lines.append(f"PRL count ICC(2,1): {icc}" + ("" if summary.prl_count_icc_note else
                 f" over {summary.prl_count_icc_n} subjects every rater finished"))
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    from napari_deep_prl.ratings.reliability_report import report_project

    check_output(args.output)
    path = report_project(args.project, args.output, unsure=args.unsure, n_boot=args.n_boot,
                          seed=args.seed)
    print(f"reliability report written to {path}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    if not args.output and not args.nifti_dir:
        raise InputError("give -o FILE for a table, --nifti-dir DIR for PRL masks, or both.")
    if args.kind and not args.output:
        raise InputError(f"--{args.kind.replace('_', '-')} chooses the table written to -o FILE; "
                         "give -o.")
    check_output(args.output)
    check_output(args.nifti_dir, folder=True)
    if args.practice:
        from napari_deep_prl.ratings.training import Practice

        if args.kind != "history" or not args.output or Path(args.output).suffix != ".jsonl" \
                or args.nifti_dir:
            raise InputError("--practice writes the practice store's history file: give "
                             "--history -o FILE.jsonl, and no --nifti-dir.")
        with Project.open(args.project, readonly=True) as project, Practice(project) as practice:
            counts = practice.export_history(args.output)
        print(f"practice history written to {args.output} ("
              f"{', '.join(f'{n} {table}' for table, n in counts.items())})", file=sys.stderr)
        return 0
    with Project.open(args.project, readonly=True) as project:
        if args.output and args.kind == "history" and Path(args.output).suffix == ".jsonl":
            counts = project.export_history(args.output)
            print(f"history of every table written to {args.output} ("
                  f"{', '.join(f'{n} {table}' for table, n in counts.items())})", file=sys.stderr)
        elif args.output:
            table = project.export(args.kind or "wide")
            write_table(table, args.output)
            print(f"{len(table)} rows written to {args.output}", file=sys.stderr)
        if args.nifti_dir:
            index = run_with_tqdm(project.export_masks(args.nifti_dir), desc="PRL masks",
                                  disable=args.quiet)
            print(f"{len(index)} PRL masks written to {args.nifti_dir} (index: "
                  f"{Path(args.nifti_dir) / MASK_INDEX})", file=sys.stderr)
    return 0
