"""``deep-prl bids BIDS_DIR OUTPUT_DIR participant|group``: the BIDS App (BIDS-derivative PRL scores)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.cli._threads import add_threads_argument, set_threads

EPILOG = """\
On SLURM, one task per participant, then the group level as a job depending on the array
(docs/cluster.md):

  label=$(ls -d bids/sub-* | sed -n "${SLURM_ARRAY_TASK_ID}p" | xargs basename)
  deep-prl bids bids out participant --participant-label "$label" --model model.pt --nthreads 4
  deep-prl bids bids out group --model model.pt
"""


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl bids``."""
    from napari_deep_prl.model.inference import PRECISIONS

    p.description = textwrap.fill(
        "Score the lesions of a BIDS dataset as a BIDS App. participant: per subject (session), into "
        "OUTPUT_DIR/sub-X/[ses-Y/]anat/, the probability map and the PRL mask on the reference grid "
        "(_space-<ref>_desc-prl_probseg.nii.gz, _desc-prl_mask.nii.gz) and the lesion table (_desc-lesions_prl.tsv "
        "with a JSON sidecar); a participant already done is skipped. group: the participants' tables merged into "
        "OUTPUT_DIR/group/ with the PRL counts per subject and a one-page HTML summary.", width=100,
        break_on_hyphens=False)
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset (holding dataset_description.json)")
    p.add_argument("output_dir", type=Path,
                   help="where the derivatives go: outside the dataset, or in its derivatives/ folder")
    p.add_argument("analysis_level", choices=("participant", "group"), help="participant or group")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="the participants to do (with or without sub-; default all)")
    p.add_argument("--session-label", nargs="+", metavar="LABEL",
                   help="the sessions to do (with or without ses-; default all)")
    p.add_argument("--model", action="append", metavar="MODEL.pt",
                   help="checkpoint; repeat for an ensemble; or one ONNX file written by `deep-prl export` (run in "
                        "onnxruntime: the onnx extra), which scores as its checkpoints (needed by participant, and "
                        "by group with --cohort-decision)")
    p.add_argument("--derivatives", nargs="+", type=Path, metavar="DIR",
                   help="pipeline folder(s) holding the lesion masks (default: every folder in BIDS_DIR/derivatives "
                        "except this package's outputs)")
    p.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="where a participant's outputs are written before they are moved into OUTPUT_DIR "
                        "(default OUTPUT_DIR/.work)")
    add_threads_argument(p, "--nthreads", "--threads")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic: auto (bfloat16 where native), float32 or bfloat16")
    p.add_argument("--overwrite", action="store_true", help="participant: redo participants already done")
    p.add_argument("--cohort-decision", action="store_true",
                   help="group: decide every lesion of the group at once, as `score --cohort-decision` (the group "
                        "table's prl column; the participants' own files keep the models' threshold)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_deep_prl.base.progress import run_with_tqdm
    from napari_deep_prl.model.backend import load_model
    from napari_deep_prl.scoring.bids_app import group_level, participant_level

    set_threads(args.threads)
    labels = {"participant_label": args.participant_label, "session_label": args.session_label,
              "derivatives": args.derivatives}
    if args.analysis_level == "group":
        if args.overwrite or args.work_dir:
            raise InputError("--overwrite and --work-dir belong to the participant level")
        checkpoints = load_model(*args.model) if args.model else []
        group = group_level(args.bids_dir, args.output_dir, checkpoints, cohort_decision=args.cohort_decision,
                            **labels)
        print(f"group: {len(group.subjects)} subject(s), {len(group.lesions)} lesions, "
              f"{int(group.subjects['prl_count'].sum())} called PRL; {group.files[-1]}", file=sys.stderr)
        if group.missing:
            print(f"{len(group.missing)} subject(s) have no participant outputs: {', '.join(group.missing)}. "
                  "Run the participant level for them, then the group level again.", file=sys.stderr)
            return 1
        return 0
    if args.cohort_decision:
        raise InputError("--cohort-decision belongs to the group level")
    if not args.model:
        raise InputError("the participant level needs the model: --model MODEL.pt")
    checkpoints = load_model(*args.model)
    done = run_with_tqdm(participant_level(args.bids_dir, args.output_dir, checkpoints, work_dir=args.work_dir,
                                           overwrite=args.overwrite, device=args.device, precision=args.precision,
                                           **labels),
                         desc="participants", disable=args.quiet)
    print(f"participant: {len(done.written)} written, {len(done.done)} already done (--overwrite redoes them)",
          file=sys.stderr)
    problems = [f"  {skip}" for skip in done.skipped] + [f"  {row}: {why}" for row, why in done.failed.items()]
    if problems:
        print(f"{len(problems)} subject(s) or session(s) not scored:", *problems, sep="\n", file=sys.stderr)
        return 1
    return 0
