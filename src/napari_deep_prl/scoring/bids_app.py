"""The BIDS App (``deep-prl bids BIDS_DIR OUTPUT_DIR participant|group``): PRL scores as BIDS derivatives.

The participant level scores each subject (or session) of a BIDS dataset found by
:func:`~napari_deep_prl.data.bids.find_bids_subjects` with :func:`~napari_deep_prl.scoring.score.score_subject`,
the one scoring path, and writes into ``OUTPUT_DIR/sub-X/[ses-Y/]anat/``:

* ``sub-X[_ses-Y]_space-<ref>_desc-prl_probseg.nii.gz``: each lesion's voxels hold its PRL
  probability, on the reference grid (``<ref>``: the image whose grid it is, by default the
  susceptibility image's, ``phase`` or ``qsm``, or on an anisotropic slab the finest structural
  one's, e.g. ``t1w``);
* ``sub-X[_ses-Y]_space-<ref>_desc-prl_mask.nii.gz``: the voxels of the lesions called PRL;
* ``sub-X[_ses-Y]_desc-lesions_prl.tsv``: one row per lesion (:data:`~napari_deep_prl.scoring.score.SCORE_COLUMNS`),
  with a JSON sidecar describing every column (:data:`COLUMNS`);

each image with a JSON sidecar naming its sources, and ``OUTPUT_DIR/dataset_description.json``
(a derivative dataset ``GeneratedBy`` this package, its version and the models' ids).

A row's outputs are written into a folder of the work directory and moved into place as one
folder (a rename), so a failed or killed task leaves nothing of its row in ``OUTPUT_DIR``, and of
two tasks writing the same row one folder wins whole. A work directory on another file system is
copied beside the row's folder under a hidden name first; such copies and work folders left by
killed tasks of this machine are removed by the next run (:func:`_remove_dead_folders`). A row
whose folder exists is done: it is skipped unless ``overwrite``. ``dataset_description.json`` is
written before any row, and discovery leaves out derivative folders this package wrote
(:func:`~napari_deep_prl.data.bids.generated_here`), so an OUTPUT_DIR in ``BIDS_DIR/derivatives/``
is never read back: its PRL masks are the model's calls, not ground truth.

The group level gathers the rows' tables into ``OUTPUT_DIR/group/``: every lesion
(``group_desc-lesions_prl.tsv``), the PRL counts per subject (``group_desc-subjects_prl.tsv``), and
a one-page summary (``group_desc-summary_prl.html`` with its figure ``group_desc-counts_prl.png``);
with ``cohort_decision`` the lesions are decided together as ``deep-prl score --cohort-decision``
decides a cohort (:func:`~napari_deep_prl.scoring.score.decided`).
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import secrets
import shutil
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError, OutputError, describe, file_error
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import (
    HOST,
    check_output,
    process_running,
    write_atomic,
    write_nifti,
    write_table,
    write_text,
)
from napari_deep_prl.data.bids import GENERATED_BY, BidsFindings, BidsSkip, BidsSubject, find_bids_subjects
from napari_deep_prl.data.cohort import bids_subject_paths
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.model.backend import Model, networks
from napari_deep_prl.scoring.score import (
    checked_decision,
    decided,
    probability_volume,
    score_subject,
    subject_summary,
    write_probability_map,
)

#: The BIDS version the outputs follow.
BIDS_VERSION = "1.9.0"
#: The analysis levels of the App.
LEVELS = ("participant", "group")
#: The folder of the group level's outputs in OUTPUT_DIR.
GROUP_FOLDER = "group"

#: Every column of a lesion table, as its JSON sidecar describes it.
COLUMNS = {
    "subject": {"Description": "The subject id: sub-<label>, or sub-<label>_ses-<label> for a session."},
    "lesion": {"Description": "The lesion's id within its subject: its label in the lesion mask (instance "
                              "labels kept as given; a binary mask's connected components, 26-connectivity)."},
    "x": {"Description": "Centre of mass of the lesion, voxel index along the first axis of the reference grid.",
          "Units": "voxel"},
    "y": {"Description": "Centre of mass, voxel index along the second axis of the reference grid.", "Units": "voxel"},
    "z": {"Description": "Centre of mass, voxel index along the third axis of the reference grid.", "Units": "voxel"},
    "x_mm": {"Description": "Centre of mass in scanner world coordinates (the image's affine), first axis.",
             "Units": "mm"},
    "y_mm": {"Description": "Centre of mass in scanner world coordinates, second axis.", "Units": "mm"},
    "z_mm": {"Description": "Centre of mass in scanner world coordinates, third axis.", "Units": "mm"},
    "volume_mm3": {"Description": "Volume of the lesion.", "Units": "mm^3"},
    "prl_probability": {"Description": "Probability that the lesion is a paramagnetic rim lesion: the mean over "
                                       "the models and views scored, calibrated on each model's validation "
                                       "patients."},
    "prl": {"Description": "The decision: 1 when prl_probability reaches the decision threshold.",
            "Levels": {"0": "not called PRL", "1": "called PRL"}},
    "uncertainty_sd": {"Description": "Standard deviation of the probability over the models and views scored "
                                      "(n/a for one sample)."},
    "bald": {"Description": "Mutual information between the decision and the model (BALD) over the models and "
                            "views scored (n/a for one sample).", "Units": "nat"},
    "confluent": {"Description": "Whether the lesion touches another lesion (26-connectivity), or is a part "
                                 "of a binary-mask component split into lesions; such lesions were excluded "
                                 "from the paper's evaluation.",
                  "Levels": {"True": "joined to another lesion", "False": "stands alone"}},
    "component": {"Description": "Id of the mask's 26-connected component that holds the lesion (raster "
                                 "numbering); the lesion's own id unless it was split from a component."},
    "split_from": {"Description": "For a part of a confluent binary-mask component split into lesions, the "
                                  "component's id; 0 for a lesion that was not split."},
    "volume_voxels": {"Description": "Volume of the lesion in voxels of the reference grid.", "Units": "voxel"},
    "rim_coverage": {"Description": "Share of the lesion's edge, over its axial slices cut into 30-degree "
                                    "sectors, with a band more paramagnetic than the tissue just outside it, "
                                    "measured on the susceptibility image without the model (NAIMS's rim "
                                    "criterion as a number; docs/scoring.md, Rim evidence); n/a for a lesion "
                                    "too small to judge."},
    "rim_slices": {"Description": "Longest run of consecutive axial slices with a rim on at least two thirds of "
                                  "the lesion's edge."},
    "diameter_mm": {"Description": "Largest in-plane extent of the lesion on any axial slice.", "Units": "mm"},
    "prl_truth": {"Description": "Ground truth from a PRL mask in the derivatives (most of the lesion's voxels in "
                                "it); n/a for lesions a label table leaves out.",
                  "Levels": {"0": "not a PRL", "1": "a PRL"}},
}


@dataclass(frozen=True)
class Row:
    """One subject or session of the dataset and where its outputs go."""

    subject: BidsSubject
    output_dir: Path

    @property
    def folder(self) -> Path:
        """``OUTPUT_DIR/sub-X/[ses-Y/]anat``: the row's outputs, moved into place as one."""
        parts = [f"sub-{self.subject.participant}"] + ([f"ses-{self.subject.session}"]
                                                         if self.subject.session is not None else [])
        return self.output_dir.joinpath(*parts, "anat")

    def path(self, entities: str) -> Path:
        """The output file ``<subject id>_<entities>`` in :attr:`folder`."""
        return self.folder / f"{self.subject.id}_{entities}"


@dataclass
class ParticipantRun:
    """What the participant level did: rows written, rows already done (skipped), rows that
    discovery skipped (no mask, ambiguous images) and rows that failed (id → why)."""

    written: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: list[BidsSkip] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class GroupRun:
    """What the group level wrote: the lesion and subject tables, the cut used, the files, and the
    rows of the dataset without participant outputs."""

    lesions: pd.DataFrame
    subjects: pd.DataFrame
    threshold: float | None
    files: list[Path]
    missing: list[str] = field(default_factory=list)


def check_folders(bids_dir: str | Path, output_dir: str | Path, work_dir: str | Path | None = None
                  ) -> tuple[Path, Path, Path]:
    """The dataset, output and work folders as absolute paths, after refusing an OUTPUT_DIR that
    is the dataset or lies in it outside ``derivatives/`` (BIDS keeps pipeline outputs there),
    and output folders that cannot be written."""
    bids_dir, output_dir = Path(bids_dir).absolute(), Path(output_dir).absolute()
    if not (bids_dir / "dataset_description.json").is_file():
        raise file_error(bids_dir, "not a BIDS dataset: it has no dataset_description.json",
                         "Give the dataset's top folder (the one holding dataset_description.json and the "
                         "sub-<label> folders).")
    real_bids, real_out = bids_dir.resolve(), output_dir.resolve()
    if real_out == real_bids / "derivatives":
        raise file_error(output_dir, "is the dataset's derivatives folder itself, which holds one folder per "
                         "pipeline", f"Give a folder in it, e.g. {output_dir / 'deep-prl'}.")
    if real_out == real_bids or (real_out.is_relative_to(real_bids)
                                 and not real_out.is_relative_to(real_bids / "derivatives")):
        raise file_error(output_dir, f"lies in the BIDS dataset {bids_dir} outside its derivatives/ folder",
                         f"Give a folder outside the dataset, or {bids_dir / 'derivatives' / 'deep-prl'}.")
    if real_bids.is_relative_to(real_out):
        raise file_error(output_dir, f"holds the BIDS dataset {bids_dir}", "Give another output folder.")
    work = output_dir / ".work" if work_dir is None else Path(work_dir).absolute()
    check_output(output_dir, folder=True)
    check_output(work, folder=True)
    return bids_dir, output_dir, work


def dataset_description(checkpoints: Model, bids_dir: Path) -> dict:
    """``dataset_description.json`` of the outputs: a derivative dataset generated by this
    package, its version and the models' ids (every task of a run writes the same; an ONNX
    model exported from checkpoints has their ids)."""
    ids = [c.id for c in networks(checkpoints)]
    return {
        "Name": "Deep-PRL paramagnetic rim lesion scores",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": GENERATED_BY,
            "Version": __version__,
            "Description": f"PRL probability of every lesion by the Deep-PRL model(s) {', '.join(ids)} "
                           "(deep-prl bids)",
        }],
        "SourceDatasets": [{"URL": bids_dir.as_uri()}],
        "ModelIds": ids,
    }


#: The keys of ``dataset_description.json`` that say which run wrote a folder.
IDENTITY = ("DatasetType", "GeneratedBy", "ModelIds")


def claim_output(output_dir: Path, description: dict) -> Path:
    """Write ``dataset_description.json`` into ``output_dir``, or check that the one there is of
    the same package version and models (:data:`IDENTITY`): outputs of another model or version
    are never mixed in one folder."""
    path = output_dir / "dataset_description.json"
    text = json.dumps(description, indent=2) + "\n"
    try:
        if not path.exists():
            return write_text(path, text, exclusive=True)
    except FileExistsError:
        pass  # another task of the array wrote it first
    try:
        there = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise file_error(path, f"cannot be read ({describe(err)})",
                         "Delete it, or give another output folder.") from err
    if not isinstance(there, dict) or any(there.get(k) != description[k] for k in IDENTITY):
        def made(d: object) -> str:
            if not isinstance(d, dict):
                return "something else"
            by = (d.get("GeneratedBy") or [{}])[0]
            return f"{by.get('Name')} {by.get('Version')}, models {', '.join(d.get('ModelIds') or ['?'])}"

        raise file_error(path, f"the folder holds outputs of {made(there)}, and this run is {made(description)}",
                         "Give another output folder (one per model and version).")
    return path


def find_rows(bids_dir: Path, output_dir: Path, *, participant_label: Sequence[str] | None = None,
              session_label: Sequence[str] | None = None, derivatives: Sequence[str | Path] | None = None,
              ) -> tuple[BidsFindings, list[Row]]:
    """The dataset's subjects (sessions) asked for, and where each one's outputs go."""
    findings = find_bids_subjects(bids_dir, derivatives=derivatives or None,
                                  participant_label=participant_label or None, session=session_label or None)
    return findings, [Row(s, output_dir) for s in findings.subjects]


def participant_level(bids_dir: str | Path, output_dir: str | Path, checkpoints: Model, *,
                      participant_label: Sequence[str] | None = None, session_label: Sequence[str] | None = None,
                      derivatives: Sequence[str | Path] | None = None, work_dir: str | Path | None = None,
                      overwrite: bool = False, device: str = "auto", precision: str = "auto",
                      ) -> Generator[Progress, None, ParticipantRun]:
    """Score the rows asked for and write their derivatives (see the module doc).

    A row whose images cannot be read is left out and named in :attr:`ParticipantRun.failed`;
    the others are still scored."""
    bids_dir, output_dir, work = check_folders(bids_dir, output_dir, work_dir)
    if not networks(checkpoints):
        raise InputError("no model given; pass at least one checkpoint (--model MODEL.pt)")
    findings, rows = find_rows(bids_dir, output_dir, participant_label=participant_label,
                               session_label=session_label, derivatives=derivatives)
    # before any row: a row folder of ours only ever lies beside the description that keeps discovery out
    claim_output(output_dir, dataset_description(checkpoints, bids_dir))
    run = ParticipantRun(skipped=list(findings.skipped))
    for step, row in enumerate(rows, start=1):
        # what killed tasks of this machine left: a half-copied folder beside the row's, a replaced one
        _remove_dead_folders(row.folder.parent, f".{row.folder.name}.")
        if row.folder.exists() and not overwrite:
            run.done.append(row.subject.id)
        else:
            try:
                _write_row(row, checkpoints, bids_dir, work, overwrite=overwrite, device=device, precision=precision)
                run.written.append(row.subject.id)
            except InputError as err:
                run.failed[row.subject.id] = str(err)
        yield Progress(step, len(rows), "participant", row.subject.id)
    return run


def _write_row(row: Row, checkpoints: Model, bids_dir: Path, work: Path, *, overwrite: bool,
               device: str, precision: str) -> None:
    """Score one row and move its outputs into place as one folder."""
    subject = row.subject
    loaded = bids_subject_paths(subject).load()
    lesions = find_lesions(loaded)
    table = score_subject(loaded, checkpoints, lesions=lesions, device=device, precision=precision)
    _remove_dead_folders(work, f"{subject.id}.")
    stage = work / f"{subject.id}.{_tag()}"
    staged = Row(subject, stage)
    space = f"space-{loaded.space}"
    ids = [c.id for c in networks(checkpoints)]
    sources = [Path(os.path.relpath(p, bids_dir)).as_posix() if Path(p).is_relative_to(bids_dir) else str(p)
               for p in subject.images.values()]
    try:
        probseg = write_probability_map(lesions.labels, table, loaded.affine,
                                        staged.path(f"{space}_desc-prl_probseg.nii.gz"))
        called = (probability_volume(lesions.labels, table, "prl") > 0).astype(np.uint8)
        mask = write_nifti(nib.Nifti1Image(called, loaded.affine), staged.path(f"{space}_desc-prl_mask.nii.gz"))
        for image, what in ((probseg, "PRL probability of each lesion's voxels"),
                            (mask, "voxels of the lesions called PRL (prl = 1 in the lesion table)")):
            _sidecar(image, {"Description": what, "Sources": sources, "ModelIds": ids})
        tsv = write_table(table, staged.path("desc-lesions_prl.tsv"), na_rep="n/a")
        _sidecar(tsv, {c: COLUMNS[c] for c in table.columns})
        _publish(staged.folder, row.folder, overwrite=overwrite)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _tag() -> str:
    """This host and process and a random token, for folders of work in progress."""
    return f"{HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove_dead_folders(folder: Path, prefix: str) -> None:
    """Remove the folders ``<prefix><host>-<pid>-<token>…`` in ``folder`` (:func:`_tag`) whose
    process was of this machine and has ended: work left by killed tasks. Those of running
    processes and of other machines stay, and so does anything else."""
    ours = f"{prefix}{HOST}-"
    for stale in folder.glob(glob.escape(ours) + "*"):
        pid = stale.name[len(ours):].partition("-")[0]
        if stale.is_dir() and not stale.is_symlink() and pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _sidecar(path: Path, content: dict) -> Path:
    """The JSON sidecar of a BIDS file (its name with ``.json`` for the extension)."""
    stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    return write_text(path.with_name(stem + ".json"), json.dumps(content, indent=2) + "\n")


def _publish(staged: Path, folder: Path, *, overwrite: bool) -> None:
    """Move the staged folder to ``folder`` in one rename (copied beside it first when the work
    folder is on another file system); an existing ``folder`` is replaced only with
    ``overwrite``. Of two tasks publishing one row, the second finds it done and says so."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = _tag()
    copy = None
    if not _same_file_system(staged, folder.parent):
        copy = folder.with_name(f".{folder.name}.{tag}.tmp")
        shutil.copytree(staged, copy)
        staged = copy
    old = folder.with_name(f".{folder.name}.{tag}.old")
    replaced = False
    try:
        if overwrite and folder.exists():
            os.rename(folder, old)
            replaced = True
        try:
            os.rename(staged, folder)
        except OSError as err:
            if folder.exists():
                raise InputError(f"{folder}: another task wrote this participant's outputs while this one ran; "
                                 "those are kept. Run each participant in one task only.") from err
            if replaced:  # put the previous outputs back
                os.rename(old, folder)
                replaced = False
            raise OutputError(f"{folder}: cannot be written ({describe(err)}).") from err
    finally:
        if replaced:
            shutil.rmtree(old, ignore_errors=True)
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)


def _same_file_system(a: Path, b: Path) -> bool:
    """Whether a rename can move ``a`` into ``b`` (one file system)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def read_row_tables(output_dir: Path, rows: Sequence[Row]) -> tuple[list[pd.DataFrame], list[str]]:
    """The lesion tables of the rows that have outputs, and the ids of those that have none."""
    tables, missing = [], []
    for row in rows:
        path = row.path("desc-lesions_prl.tsv")
        if not path.is_file():
            missing.append(row.subject.id)
            continue
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False, dtype={"subject": str})
        tables.append(table)
    return tables, missing


def group_level(bids_dir: str | Path, output_dir: str | Path, checkpoints: Model = (), *,
                participant_label: Sequence[str] | None = None, session_label: Sequence[str] | None = None,
                derivatives: Sequence[str | Path] | None = None, cohort_decision: bool = False) -> GroupRun:
    """Merge the participants' tables into the group's, decide them together when asked (the
    models are needed then, to check they are calibrated), and write the summary page."""
    bids_dir, output_dir, _ = check_folders(bids_dir, output_dir)
    description_path = output_dir / "dataset_description.json"
    if not description_path.is_file():
        raise file_error(output_dir, "holds no participant outputs (no dataset_description.json)",
                         "Run the participant level first.")
    if networks(checkpoints):
        claim_output(output_dir, dataset_description(checkpoints, bids_dir))
    elif cohort_decision:
        raise InputError("the cohort decision needs the models (--model), to check that their probabilities "
                         "are calibrated")
    _, rows = find_rows(bids_dir, output_dir, participant_label=participant_label, session_label=session_label,
                        derivatives=derivatives)
    tables, missing = read_row_tables(output_dir, rows)
    if not tables:
        raise file_error(output_dir, "holds no participant outputs of the subjects asked for",
                         "Run the participant level first.")
    lesions = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
    threshold = None
    if cohort_decision:
        lesions, threshold = decided(lesions, checked_decision(checkpoints, None, "expected_f1"), "expected_f1")
    present = [r.subject.id for r in rows if r.subject.id not in missing]
    subjects = subject_summary(lesions, present)
    folder = output_dir / GROUP_FOLDER
    files = [write_table(lesions, folder / "group_desc-lesions_prl.tsv", na_rep="n/a"),
             write_table(subjects, folder / "group_desc-subjects_prl.tsv", na_rep="n/a")]
    files.append(_sidecar(files[0], {c: COLUMNS[c] for c in lesions.columns}))
    figure = _counts_figure(subjects)
    files.append(_write_png(figure, folder / "group_desc-counts_prl.png"))
    files.append(write_text(folder / "group_desc-summary_prl.html",
                            _summary_page(subjects, lesions, figure, json.loads(description_path.read_text()),
                                          threshold, missing)))
    return GroupRun(lesions, subjects, threshold, files, missing)


def _counts_figure(subjects: pd.DataFrame) -> bytes:
    """A bar chart of the PRL count per subject, as PNG bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 0.3 * len(subjects) + 1.5), 3.2), dpi=100)
    axes = figure.add_subplot()
    axes.bar(range(len(subjects)), subjects["prl_count"], color="#b2182b")
    axes.set_xticks(range(len(subjects)), subjects["subject"], rotation=90, fontsize=7)
    axes.set_ylabel("PRLs called")
    axes.set_title("PRL count per subject")
    axes.yaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _write_png(content: bytes, path: Path) -> Path:
    return write_atomic(path, lambda fh: fh.write(content), binary=True)


def _summary_page(subjects: pd.DataFrame, lesions: pd.DataFrame, figure: bytes, description: dict,
                  threshold: float | None, missing: Sequence[str]) -> str:
    """The one-page HTML summary: counts, the decision, the figure, the per-subject table."""
    by = (description.get("GeneratedBy") or [{}])[0]
    decision = ("each lesion at its models' validation threshold" if threshold is None else
                f"the whole group at once: prl_probability &ge; {threshold:.4g}, the cut of most expected F1")
    rows = "\n".join(
        f"<tr><td>{html.escape(str(r.subject))}</td><td>{r.lesions}</td><td>{r.prl_count}</td>"
        f"<td>{'yes' if r.prl_ge1 else 'no'}</td><td>{'yes' if r.prl_ge4 else 'no'}</td></tr>"
        for r in subjects.itertuples())
    absent = (f"<p><strong>{len(missing)} subject(s) without participant outputs:</strong> "
              f"{html.escape(', '.join(missing))}</p>") if missing else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Deep-PRL group summary</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Deep-PRL group summary</h1>
<p>{len(subjects)} subject(s), {len(lesions)} lesions, {int(subjects['prl_count'].sum())} called PRL;
{int(subjects['prl_ge1'].sum())} subject(s) with at least one PRL, {int(subjects['prl_ge4'].sum())} with at
least four. Decision: {decision}.</p>
<p>{html.escape(str(by.get('Name')))} {html.escape(str(by.get('Version')))}, model(s)
{html.escape(', '.join(description.get('ModelIds') or []))}.</p>
{absent}
<img alt="PRL count per subject" src="data:image/png;base64,{base64.b64encode(figure).decode()}">
<table><tr><th>subject</th><th>lesions</th><th>PRLs</th><th>&ge; 1 PRL</th><th>&ge; 4 PRLs</th></tr>
{rows}
</table></body></html>
"""
