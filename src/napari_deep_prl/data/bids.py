"""Subjects of a BIDS dataset: each subject's (or session's) images, found by their names' entities.

A BIDS dataset keeps the scanner's images in ``sub-<label>/[ses-<label>/]anat/`` and what
pipelines made of them in ``derivatives/<pipeline>/sub-<label>/...``. A subject of this package
is one susceptibility image (a phase or a QSM), one or more structural images and a lesion mask
(see docs/data.md), so :func:`find_bids_subjects` reads the files' names (:func:`parse_bids_name`),
tells each file's contrast from its suffix and entities (:func:`bids_contrast`), and gathers one
row per subject, or per session when the subject has sessions (id ``sub-X_ses-Y``):

* raw images from ``anat/`` (and ``swi/``): ``part-phase`` of a gradient-echo suffix
  (``T2starw``, ``MEGRE``, ``GRE``, ``swi``...) is the phase, ``part-mag`` its magnitude (display
  only), ``Chimap`` a QSM, ``UNIT1`` the MP2RAGE, ``T1w`` and ``FLAIR`` themselves;
* from the derivatives: lesion masks (``desc-lesion_mask``, ``label-lesion_mask``,
  ``label-lesion_dseg``), PRL masks (``desc-prl_mask``, ground truth), and phase or QSM images a
  pipeline made (QSMxT's ``Chimap``, an unwrapped phase), matched to the raw images by subject
  and session. Pipeline folders this package wrote (:func:`generated_here`: the
  BIDS App's PRL scores, whose ``desc-prl_mask`` is a model's call) are never read.

Nothing is guessed: a row with two candidates for one contrast (two T1w of other acquisitions, a
mask from two pipelines, the echoes of a multi-echo phase), a 4D phase, or no mask is skipped,
and :class:`BidsFindings` says why and how to choose (``select``, ``derivatives``,
``susceptibility``). Files are found by walking the BIDS layout only (``sourcedata/``, ``code/``
and hidden files are never read; links, such as DataLad's, are followed), and image headers are
read to refuse 4D images; no voxel is read.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, describe, file_error
from napari_deep_prl.base.filenames import ID_RULE, id_problem
from napari_deep_prl.base.tables import write_table
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.data.images import NIFTI_SUFFIXES

#: A BIDS label or index: the key and the value of an entity, a suffix.
_ALNUM = re.compile(r"[A-Za-z0-9]+")

#: Datatype folders of the raw dataset that are searched (``swi/``: the BIDS extension
#: proposal for susceptibility-weighted imaging).
RAW_DATATYPES = ("anat", "swi")

#: Suffixes (lower case) of gradient-echo images, whose ``part-phase`` is a phase image.
GRE_SUFFIXES = ("t2starw", "megre", "gre", "swi", "t2star")

#: Structural suffixes (lower case) and the contrast each is.
STRUCTURAL_SUFFIXES = {"unit1": "mp2rage", "t1w": "t1w", "flair": "flair"}

#: ``desc-`` or ``label-`` values (lower case) that make a ``mask``/``dseg`` a lesion mask.
LESION_LABELS = ("lesion", "lesions")


#: Manifest columns, in order: a manifest holds those some subject has (``subject`` and ``mask``
#: always).
MANIFEST_COLUMNS = ("subject", *SUSCEPTIBILITY, *STRUCTURAL, "mask", "prl_mask", "magnitude")
CONTRASTS = MANIFEST_COLUMNS[1:]

#: Contrasts taken from the raw dataset and from the derivatives.
RAW_CONTRASTS = frozenset({"phase", "qsm", "magnitude", *STRUCTURAL})
DERIVED_CONTRASTS = frozenset({"phase", "qsm", "mask", "prl_mask"})

#: Each contrast as messages name it.
CONTRAST_WORDS = {
    "phase": "phase", "qsm": "QSM (Chimap)", "magnitude": "magnitude", "mp2rage": "MP2RAGE (UNIT1)",
    "t1w": "T1w", "flair": "FLAIR", "mask": "lesion mask", "prl_mask": "PRL mask",
}

#: The ``GeneratedBy`` name of this package's own BIDS derivatives (``deep-prl bids``): a pipeline
#: folder whose ``dataset_description.json`` names it holds PRL scores, never read as an input
#: (its ``desc-prl_mask`` images are the model's calls, not ground truth).
GENERATED_BY = "napari-deep-prl"

#: How many example file names the error for a folder without usable images shows.
EXAMPLES = 5


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name taken apart: ``sub-01_ses-02_acq-mprage_T1w.nii.gz`` has the entities
    ``{"sub": "01", "ses": "02", "acq": "mprage"}`` (in the name's order), the suffix ``T1w``
    and the extension ``.nii.gz``."""

    entities: dict[str, str]
    suffix: str
    extension: str

    def differs_from(self, other: BidsName, *, ignore: Iterable[str] = ()) -> bool:
        """Whether the two names differ in their suffix or an entity other than ``ignore``."""
        skip = set(ignore)
        mine = {k: v for k, v in self.entities.items() if k not in skip}
        theirs = {k: v for k, v in other.entities.items() if k not in skip}
        return mine != theirs or self.suffix != other.suffix


def parse_bids_name(name: str) -> BidsName | None:
    """``name`` taken apart as a BIDS file name (``sub-<label>[_<key>-<value>...]_<suffix><ext>``,
    keys, values and the suffix letters and digits, each key once), or ``None`` when it is not one."""
    stem, dot, rest = name.partition(".")
    *pairs, suffix = stem.split("_")
    if not pairs or not _ALNUM.fullmatch(suffix):
        return None
    entities: dict[str, str] = {}
    for pair in pairs:
        key, dash, value = pair.partition("-")
        if not dash or not _ALNUM.fullmatch(key) or not _ALNUM.fullmatch(value) or key in entities:
            return None
        entities[key] = value
    if next(iter(entities)) != "sub":
        return None
    return BidsName(entities, suffix, dot + rest)


def bids_contrast(name: BidsName) -> str | None:
    """The contrast (a :data:`CONTRASTS` name) a BIDS image is, from its suffix and its ``part``,
    ``desc`` and ``label`` entities (letter case ignored), or ``None`` for an image this package
    does not use (a T2w, an MP2RAGE inversion, a brain mask...)."""
    suffix = name.suffix.lower()
    part = name.entities.get("part", "").lower()
    labels = {name.entities.get("desc", "").lower(), name.entities.get("label", "").lower()}
    if suffix in ("mask", "dseg"):
        if suffix == "mask" and "prl" in labels:
            return "prl_mask"
        return "mask" if labels & set(LESION_LABELS) else None
    if suffix == "chimap":
        return "qsm"
    if suffix in GRE_SUFFIXES:
        if part == "phase":
            return "phase"
        # Without ``part`` a gradient-echo image is its magnitude, except an SWI (magnitude and
        # phase combined).
        return "magnitude" if part == "mag" or (not part and suffix != "swi") else None
    if suffix in STRUCTURAL_SUFFIXES and part in ("", "mag"):
        return STRUCTURAL_SUFFIXES[suffix]
    return None


@dataclass(frozen=True)
class BidsFile:
    """A NIfTI file of the dataset, its name taken apart, and where it comes from (``raw`` or
    a derivatives pipeline folder, as messages name it)."""

    path: Path
    name: BidsName
    source: str

    @property
    def contrast(self) -> str | None:
        return bids_contrast(self.name)


def _row_id(participant: str, session: str | None) -> str:
    return f"sub-{participant}" + (f"_ses-{session}" if session is not None else "")


def _row_words(participant: str, session: str | None) -> str:
    return f"sub-{participant}" + (f" ses-{session}" if session is not None else "")


@dataclass(frozen=True)
class BidsSubject:
    """One subject (or one session of a subject) found: its images by contrast, and notes on
    display-only images left out."""

    participant: str
    session: str | None
    images: Mapping[str, Path]
    notes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The subject id: ``sub-<label>``, or ``sub-<label>_ses-<label>``."""
        return _row_id(self.participant, self.session)


@dataclass(frozen=True)
class BidsSkip:
    """A subject or session that was not taken, and why (what is missing or ambiguous, and
    what to do)."""

    participant: str
    session: str | None
    reason: str

    def __str__(self) -> str:
        return f"{_row_words(self.participant, self.session)}: {self.reason}"


@dataclass(frozen=True)
class BidsFindings:
    """What :func:`find_bids_subjects` found in a BIDS dataset: the subjects, those skipped and
    why, and files ignored for their names. :meth:`report` prints it, :meth:`rows` and
    :meth:`write_manifest` give the cohort manifest."""

    bids_dir: Path
    derivatives: tuple[Path, ...]
    subjects: tuple[BidsSubject, ...]
    skipped: tuple[BidsSkip, ...] = ()
    ignored: tuple[tuple[Path, str], ...] = ()

    @property
    def columns(self) -> list[str]:
        """The manifest's columns: ``subject``, the contrasts the subjects have, ``mask``."""
        have = {c for s in self.subjects for c in s.images} | {"mask"}
        return ["subject", *(c for c in CONTRASTS if c in have)]

    def rows(self, relative_to: str | Path | None = None) -> list[dict[str, str]]:
        """One dict per subject (:attr:`columns` as keys; ``""`` where a subject has no such
        image), paths absolute or, with ``relative_to``, relative to that folder (as a manifest
        there gives them)."""
        def text(path: Path | None) -> str:
            if path is None:
                return ""
            if relative_to is None:
                return path.as_posix()
            # The link itself, not its target (a DataLad file is a link into .git/annex), from
            # a folder path without links, so that ".." in the result goes where it says.
            real = path.parent.resolve() / path.name
            try:
                return Path(os.path.relpath(real, Path(relative_to).resolve())).as_posix()
            except ValueError:  # another drive (Windows)
                return real.as_posix()

        return [{"subject": s.id, **{c: text(s.images.get(c)) for c in self.columns[1:]}}
                for s in self.subjects]

    def write_manifest(self, path: str | Path) -> Path:
        """Write the cohort manifest (CSV, or TSV for a ``.tsv`` name; atomic), its paths
        relative to its folder."""
        path = Path(path)
        return write_table(pd.DataFrame(self.rows(relative_to=path.parent), columns=self.columns), path)

    def report(self, *, found: bool = True) -> str:
        """What was found (without ``found``: only how many), skipped and ignored, as lines to print."""
        masks = ", ".join(self._shown(d) for d in self.derivatives) or "none"
        lines = [(f"BIDS dataset {self.bids_dir} (derivatives: {masks}): {_count(len(self.subjects), 'subject')} "
                  f"found, {len(self.skipped)} skipped, {len(self.ignored)} ignored.")]
        if self.subjects and found:
            width = max(len(s.id) for s in self.subjects)
            lines += ["found:"] + [f"  {s.id:<{width}}  {', '.join(s.images)}" for s in self.subjects]
        if self.skipped:
            lines += ["skipped:"] + [f"  {s}" for s in self.skipped]
        notes = [f"  {_row_words(s.participant, s.session)}: {n}" for s in self.subjects for n in s.notes]
        if notes:
            lines += ["notes:", *notes]
        if self.ignored:
            lines += ["ignored:"] + [f"  {self._shown(p)}: {why}" for p, why in self.ignored]
        return "\n".join(lines)

    def _shown(self, path: Path) -> str:
        return _shown(path, self.bids_dir)


def find_bids_subjects(
    bids_dir: str | Path,
    *,
    derivatives: str | Path | Sequence[str | Path] | None = None,
    participant_label: str | Sequence[str] | None = None,
    session: str | Sequence[str] | None = None,
    select: str | Sequence[str] | None = None,
    susceptibility: str | None = None,
) -> BidsFindings:
    """The subjects of the BIDS dataset ``bids_dir``, one per session (see the module doc).

    ``derivatives``: the pipeline folder(s) holding the lesion masks (default: every folder in
    ``bids_dir/derivatives/``); a folder of pipeline folders works too. ``participant_label``
    and ``session``: the labels to take (with or without ``sub-``/``ses-``). ``select``: items
    ``[CONTRAST=]KEY-VALUE`` choosing among a contrast's images by an entity: ``acq-mprage``
    keeps, of each contrast that has images with ``acq-mprage``, those only; ``t1w=acq-mprage``
    requires it of the T1w (a subject whose T1w lack it is skipped). ``susceptibility``:
    ``"phase"`` or ``"qsm"``, needed when the dataset has both.

    Raises :class:`InputError` for a folder that is not a BIDS dataset, one with no image this
    package uses (listing what it holds), an unknown participant or session label, a bad
    ``select`` item, and when no subject is left (listing why each was skipped).
    """
    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.is_dir():
        raise file_error(bids_dir, "BIDS folder not found", "Give the folder holding the sub-<label> folders.")
    choices = _parse_select(select)
    if susceptibility not in (None, *SUSCEPTIBILITY):
        raise InputError(f"susceptibility {susceptibility!r} is unknown. Give 'phase' or 'qsm'.")
    raw = _scan(bids_dir, "raw", RAW_DATATYPES)
    if not raw.folders:
        seen = sorted(p.name for p in _entries(bids_dir))[:10]
        holds = ", ".join(seen) or "nothing"
        raise file_error(bids_dir, f"not a BIDS dataset: no sub-<label> folders (it holds: {holds})",
                         "Give the dataset's top folder, the one holding sub-<label> folders and "
                         "dataset_description.json.")
    if not any(f.contrast in RAW_CONTRASTS for f in raw.files):
        raise _nothing_usable(bids_dir, raw)
    keys, skipped = _selected(bids_dir, raw.keys, participant_label, session)
    pipelines = _pipelines(bids_dir, derivatives)
    derived = [_scan(p, _shown(p, bids_dir), None) for p in pipelines]
    everything = _by_key(raw.files)
    usable = {f.path: f for f in raw.files if f.contrast in RAW_CONTRASTS}
    for file in (f for d in derived for f in d.files if f.contrast in DERIVED_CONTRASTS):
        usable.setdefault(file.path, file)  # once, should a pipeline folder be the dataset itself
    found = _by_key(usable.values())
    kind = susceptibility or _susceptibility(bids_dir, {k: found.get(k, []) for k in keys})
    rows = [_row(k, found.get(k, []), kind, choices, bids_dir, pipelines, everything.get(k, []),
                 found.get((k[0], None), []) if k[1] is not None else [])
            for k in keys]
    subjects = tuple(r for r in rows if isinstance(r, BidsSubject))
    skipped += [r for r in rows if isinstance(r, BidsSkip)]
    asked = {k[0] for k in keys}
    unmatched = [(f.path, f"no raw images of {_row_words(*k)}") for k in sorted(found, key=_order) for f in found[k]
                 if k not in raw.keys and (participant_label is None or k[0] in asked)]
    findings = BidsFindings(bids_dir, tuple(pipelines), subjects, tuple(skipped),
                            tuple(raw.ignored + [i for d in derived for i in d.ignored] + unmatched))
    if not subjects:
        shown = [f"  {s}" for s in findings.skipped[:10]]
        more = f"\n  ... and {len(findings.skipped) - 10} more" if len(findings.skipped) > 10 else ""
        raise InputError(f"{bids_dir}: no subject can be used; each was skipped:\n" + "\n".join(shown) + more
                         + "\nDo what each line says, or list the subjects in a manifest CSV (docs/data.md).")
    return findings


# --------------------------------------------------------------------------- walking the folders

@dataclass
class _Scan:
    """The NIfTI files of one folder tree (the raw dataset or a pipeline's derivatives)."""

    files: list[BidsFile] = field(default_factory=list)
    #: (participant, session) of every subject or session folder, and of every file's name.
    keys: set[tuple[str, str | None]] = field(default_factory=set)
    folders: int = 0
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    #: Datatype folders met (``anat``, ``func``...), with how many subjects or sessions have each.
    datatypes: Counter[str] = field(default_factory=Counter)


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` that are not hidden, sorted; nothing when it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if not e.name.startswith("."))
    except OSError:
        return []


def _scan(root: Path, source: str, datatypes: Sequence[str] | None) -> _Scan:
    """The NIfTI files in ``root``'s ``sub-*/[ses-*/]<datatype>/`` folders (``datatypes``: those
    datatype folders only, files beside them not taken; ``None``: any folder, and files beside
    them, as pipelines write them). Links are followed; the depth is bounded, so a link loop
    cannot trap the walk."""
    scan = _Scan()
    for sub_dir in _entries(root):
        if not (sub_dir.name.startswith("sub-") and sub_dir.is_dir()):
            continue
        participant = sub_dir.name[4:]
        if not _ALNUM.fullmatch(participant):
            scan.ignored.append((sub_dir, "not a subject folder: a BIDS label is letters and digits only"))
            continue
        scan.folders += 1
        children = _entries(sub_dir)
        sessions = [c for c in children if c.name.startswith("ses-") and c.is_dir()]
        # The subject's own folder is a place of images unless it holds sessions only (a
        # pipeline may write files beside its session folders).
        others = [c for c in children if c.is_dir() and c not in sessions]
        places = [(sub_dir, None)] if others or not sessions or datatypes is None else []
        for ses_dir in sessions:
            if _ALNUM.fullmatch(ses_dir.name[4:]):
                places.append((ses_dir, ses_dir.name[4:]))
            else:
                scan.ignored.append((ses_dir, "not a session folder: a BIDS label is letters and digits only"))
        for folder, ses in places:
            scan.keys.add((participant, ses))
            entries = [e for e in _entries(folder) if ses is not None or not e.name.startswith("ses-")]
            folders = [e for e in entries if e.is_dir()]
            scan.datatypes.update(d.name for d in folders)
            paths = [f for d in folders if datatypes is None or d.name in datatypes for f in _entries(d)]
            paths += [e for e in entries if datatypes is None and not e.is_dir()]
            for path in paths:
                _take(scan, path, source, participant, ses)
    return scan


def _take(scan: _Scan, path: Path, source: str, participant: str, session: str | None) -> None:
    """Add the NIfTI file ``path`` found in ``participant``'s (``session``'s) folder to ``scan``,
    or to its ignored files when its name is not BIDS or names another subject or session."""
    if path.is_dir() or not path.name.lower().endswith(NIFTI_SUFFIXES):
        return
    name = parse_bids_name(path.name)
    if name is None:
        scan.ignored.append((path, "not a BIDS file name (sub-<label>[_<key>-<value>...]_<suffix>.nii[.gz])"))
        return
    named = (name.entities["sub"], name.entities.get("ses"))
    if named[0] != participant or (session is not None and named[1] != session):
        why = f"its name says {_row_words(*named)} but it lies in the folder of {_row_words(participant, session)}"
        scan.ignored.append((path, why))
        return
    scan.keys.add(named)
    scan.files.append(BidsFile(path, name, source))


def _key(file: BidsFile) -> tuple[str, str | None]:
    return file.name.entities["sub"], file.name.entities.get("ses")


def _by_key(files: Iterable[BidsFile]) -> dict[tuple[str, str | None], list[BidsFile]]:
    out: dict[tuple[str, str | None], list[BidsFile]] = {}
    for file in files:
        out.setdefault(_key(file), []).append(file)
    return out


def _shown(path: Path, bids_dir: Path) -> str:
    """``path`` relative to the dataset when it lies inside it, as messages show it."""
    try:
        return path.relative_to(bids_dir).as_posix()
    except ValueError:
        return str(path)


def _pipelines(bids_dir: Path, derivatives: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """The pipeline folders (each holding ``sub-*`` folders) the masks are taken from."""
    if derivatives is None:
        default = bids_dir / "derivatives"
        return _pipelines_in(default) if default.is_dir() else []
    given = [derivatives] if isinstance(derivatives, (str, os.PathLike)) else list(derivatives)
    found: list[Path] = []
    for folder in (Path(p).absolute() for p in given):
        if not folder.is_dir():
            raise file_error(folder, "derivatives folder not found",
                             "Give the folder of the pipeline that made the lesion masks.")
        if generated_here(folder):
            raise file_error(folder, f"holds the PRL scores of {GENERATED_BY} (its dataset_description.json "
                             "says so), not lesion masks",
                             "Give the folder of the pipeline that made the lesion masks.")
        pipelines = _pipelines_in(folder)
        if not pipelines:
            raise file_error(folder, "holds no sub-<label> folders, nor pipeline folders holding them",
                             "Give the folder of the pipeline that made the lesion masks (it holds "
                             "sub-<label> folders).")
        found += [p for p in pipelines if p not in found]
    return found


def _pipelines_in(folder: Path) -> list[Path]:
    """``folder`` itself when it holds ``sub-*`` folders, else its folders that do; those this
    package wrote (:func:`generated_here`) left out."""
    def holds_subjects(path: Path) -> bool:
        return any(e.name.startswith("sub-") and e.is_dir() for e in _entries(path))

    if holds_subjects(folder):
        return [] if generated_here(folder) else [folder]
    return [p for p in _entries(folder) if p.is_dir() and holds_subjects(p) and not generated_here(p)]


def generated_here(folder: Path) -> bool:
    """Whether ``folder`` is a derivative dataset this package wrote (:data:`GENERATED_BY`)."""
    try:
        description = json.loads((folder / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    return isinstance(generated, list) and any(isinstance(g, dict) and g.get("Name") == GENERATED_BY
                                               for g in generated)


# --------------------------------------------------------------------------- choosing

def _parse_select(select: str | Sequence[str] | None) -> list[tuple[str | None, str, str]]:
    """``select`` items as ``(contrast or None, key, value)``; a bad item is an InputError."""
    items = [select] if isinstance(select, str) else list(select or [])
    parsed = []
    for item in items:
        contrast, eq, entity = str(item).rpartition("=")
        key, dash, value = entity.partition("-")
        contrast = contrast.strip().lower() if eq else None
        if (not dash or not _ALNUM.fullmatch(key) or not _ALNUM.fullmatch(value)
                or (contrast is not None and contrast not in CONTRASTS)):
            raise InputError(f"select {item!r} is not [CONTRAST=]KEY-VALUE (e.g. acq-mprage or "
                             f"t1w=acq-mprage; a contrast is one of {', '.join(CONTRASTS)}). Fix it.")
        if key in ("sub", "ses"):
            raise InputError(f"select {item!r}: choose participants and sessions with participant_label "
                             "and session (--participant-label, --session-label) instead.")
        parsed.append((contrast, key, value))
    return parsed


def _selected(bids_dir: Path, keys: set[tuple[str, str | None]], participant_label: str | Sequence[str] | None,
              session: str | Sequence[str] | None) -> tuple[list[tuple[str, str | None]], list[BidsSkip]]:
    """The (participant, session) rows the labels ask for, sorted, and a skip for each participant
    asked for that has none of the sessions asked for; an unknown label is an InputError."""
    participants = _labels(participant_label, "sub", "participant label")
    sessions = _labels(session, "ses", "session label")
    known = sorted({p for p, _ in keys})
    for label in participants or []:
        if label not in known:
            raise InputError(f"participant sub-{label} is not in {bids_dir} (it has: "
                             f"{_some(f'sub-{p}' for p in known)}). Check the label.")
    known_sessions = sorted({s for _, s in keys if s is not None})
    for label in sessions or []:
        if label not in known_sessions:
            raise InputError(f"session ses-{label} is not in {bids_dir} (it has: "
                             f"{_some(f'ses-{s}' for s in known_sessions) or 'no sessions'}). Check the label.")
    asked = [p for p in known if participants is None or p in participants]
    rows = sorted((k for k in keys if k[0] in asked and (sessions is None or k[1] in sessions)), key=_order)
    skips = []
    for participant in sorted(set(asked) - {p for p, _ in rows}):
        has = ", ".join(f"ses-{s}" for p, s in sorted(keys, key=_order) if p == participant and s is not None)
        wanted = ", ".join(f"ses-{s}" for s in sessions or [])
        skips.append(BidsSkip(participant, None, f"no {wanted} (has: {has or 'no sessions'})"))
    return rows, skips


def _order(key: tuple[str, str | None]) -> tuple[str, str]:
    return key[0], key[1] or ""


def _labels(given: str | Sequence[str] | None, prefix: str, what: str) -> list[str] | None:
    if given is None:
        return None
    labels = []
    for label in [given] if isinstance(given, str) else given:
        label = str(label).removeprefix(f"{prefix}-")
        if not _ALNUM.fullmatch(label):
            raise InputError(f"{what} {label!r} is not a BIDS label (letters and digits). Fix it.")
        labels.append(label)
    return labels


def _susceptibility(bids_dir: Path, rows: Mapping[tuple[str, str | None], list[BidsFile]]) -> str | None:
    """The susceptibility contrast of the dataset's ``rows`` when they have one kind only
    (``None``: neither); a dataset with both must be told which (an InputError)."""
    counts = Counter(c for files in rows.values() for c in {f.contrast for f in files} if c in SUSCEPTIBILITY)
    if len(counts) > 1:
        raise InputError(f"{bids_dir} has phase images ({_count(counts['phase'], 'subject')}) and QSM images "
                         f"({_count(counts['qsm'], 'subject')}); a cohort uses one of them. Choose with "
                         "susceptibility='phase' or 'qsm' (--susceptibility phase|qsm).")
    return next(iter(counts), None)


def _narrow(contrast: str, files: list[BidsFile], choices: list[tuple[str | None, str, str]],
            ) -> tuple[list[BidsFile], str | None]:
    """``files`` of ``contrast`` narrowed by the ``select`` items, and the problem when an item
    for this contrast matches none of them."""
    for only, key, value in choices:
        if only not in (None, contrast):
            continue
        matching = [f for f in files if f.name.entities.get(key, "").lower() == value.lower()]
        if only is not None and files and not matching:
            there = ", ".join(sorted({_entity(f, key) for f in files}))
            return [], f"no {CONTRAST_WORDS[contrast]} image with {key}-{value} (there: {there})"
        if matching:
            files = matching
    return files, None


def _entity(file: BidsFile, key: str) -> str:
    value = file.name.entities.get(key)
    return f"{key}-{value}" if value is not None else f"no {key}"


def _choose(contrast: str, files: list[BidsFile], choices: list[tuple[str | None, str, str]],
            ) -> tuple[BidsFile | None, str | None]:
    """The one image of ``contrast`` (``None`` when there is none), or the problem: an image
    ``select`` asked for is missing, or there are several."""
    files, problem = _narrow(contrast, files, choices)
    if problem is not None or len(files) <= 1:
        return (files[0] if files else None), problem
    return None, _ambiguity(contrast, files)


def _ambiguity(contrast: str, files: list[BidsFile]) -> str:
    """Several images of one contrast: how they differ and how to choose."""
    keys = sorted({k for f in files for k in f.name.entities if len({_entity(g, k) for g in files}) > 1},
                  key=lambda k: min(list(f.name.entities).index(k) for f in files if k in f.name.entities))
    sources = len({f.source for f in files}) > 1
    described = []
    for f in files:
        parts = [_entity(f, k) for k in keys]
        parts += [f.name.suffix] if len({g.name.suffix for g in files}) > 1 else []
        parts += [f.source] if sources else []
        described.append(" ".join(parts) or f.path.name)
    what = f"{_number(len(files))} {CONTRAST_WORDS[contrast]} images ({', '.join(described)})"
    if "echo" in keys and contrast in ("phase", "magnitude", "qsm"):
        return (f"{what}: the echoes of a multi-echo series; choose one with select "
                f"'{contrast}=echo-N' (--select {contrast}=echo-N) or give a combined {contrast} image")
    if keys:
        key = keys[0]
        value = next(f.name.entities[key] for f in files if key in f.name.entities)
        return f"{what}: choose one with select '{contrast}={key}-{value}' (--select {contrast}={key}-{value})"
    if sources and all(f.source != "raw" for f in files):
        return f"{what}: give one pipeline folder with derivatives (--derivatives)"
    return f"{what}: keep one of them, or list the subject in a manifest CSV"


def _row(key: tuple[str, str | None], files: list[BidsFile], kind: str | None,
         choices: list[tuple[str | None, str, str]], bids_dir: Path, pipelines: list[Path],
         raw_files: list[BidsFile], sessionless: list[BidsFile]) -> BidsSubject | BidsSkip:
    """One subject or session: its images, or why it is skipped (every problem at once)."""
    by_contrast = {c: [f for f in files if f.contrast == c] for c in CONTRASTS}
    chosen: dict[str, BidsFile] = {}
    problems: list[str] = []
    notes: list[str] = []

    def choose(contrast: str) -> None:
        file, problem = _choose(contrast, by_contrast[contrast], choices)
        if problem is not None and contrast == "magnitude":  # display only: the row stays
            notes.append(f"magnitude left out: {problem}")
        elif problem is not None:
            problems.append(problem)
        elif file is not None:
            chosen[contrast] = file

    if kind is None:
        problems.append(_no_susceptibility(raw_files, None))
    else:
        choose(kind)
        if kind not in chosen and not by_contrast[kind]:
            problems.append(_no_susceptibility(raw_files, kind))
    for contrast in STRUCTURAL:
        choose(contrast)
    if not any(c in chosen or by_contrast[c] for c in STRUCTURAL):
        problems.append(f"no structural image (T1w, UNIT1 or FLAIR){_holding(raw_files)}")
    choose("mask")
    if "mask" not in chosen and not by_contrast["mask"]:
        problems.append(_no_mask(bids_dir, pipelines, raw_files, sessionless))
    choose("prl_mask")
    paired = [f for f in by_contrast["magnitude"]  # the magnitude of the phase's own acquisition
              if "phase" not in chosen or not f.name.differs_from(chosen["phase"].name, ignore=("part", "desc"))]
    if "phase" in chosen and by_contrast["magnitude"] and not paired:
        notes.append(f"magnitude left out: none of the magnitude images is of the phase's acquisition "
                     f"({_some(f.path.name for f in by_contrast['magnitude'])})")
    by_contrast["magnitude"] = paired
    choose("magnitude")
    for contrast, file in list(chosen.items()):
        problem = _volume_problem(file, contrast, bids_dir)
        if problem is not None and contrast == "magnitude":
            notes.append(f"magnitude left out: {problem}")
            del chosen["magnitude"]
        elif problem is not None:
            problems.append(problem)
    row_id = _row_id(*key)
    id_trouble = id_problem(row_id)
    if id_trouble is not None:
        problems.append(f"its id {row_id!r} {id_trouble}; {ID_RULE}: shorten the labels")
    if problems:
        return BidsSkip(*key, "; ".join(problems))
    return BidsSubject(*key, {c: chosen[c].path for c in CONTRASTS if c in chosen}, tuple(notes))


def _holding(files: list[BidsFile]) -> str:
    """`` (anat holds: T1w, part-mag MEGRE)``: the raw images of a row, to show what was seen."""
    kinds = sorted({(f"part-{f.name.entities['part']} " if "part" in f.name.entities else "") + f.name.suffix
                    for f in files})
    return f" (anat holds: {_some(kinds)})" if kinds else " (anat holds no BIDS images)"


def _no_susceptibility(raw_files: list[BidsFile], kind: str | None) -> str:
    phase = f"phase (part-phase with suffix {', '.join(s for s in ('T2starw', 'MEGRE', 'GRE', 'swi'))})"
    if kind == "phase":
        return f"no {phase} image{_holding(raw_files)}"
    if kind == "qsm":
        return f"no QSM (Chimap) image in anat or the derivatives{_holding(raw_files)}"
    return f"no {phase} or QSM (Chimap) image{_holding(raw_files)}"


def _no_mask(bids_dir: Path, pipelines: list[Path], raw_files: list[BidsFile], sessionless: list[BidsFile]) -> str:
    """Why a row has no lesion mask, with what may be meant."""
    if not pipelines:
        text = (f"no lesion mask: {bids_dir.name}/derivatives/ holds no pipeline folder with sub-<label> folders; "
                "give the folder of the pipeline that made the masks with derivatives (--derivatives)")
    else:
        text = f"no lesion mask in {', '.join(_shown(p, bids_dir) for p in pipelines)}"
    text += " (masks are named *_desc-lesion_mask.nii.gz or *_label-lesion_mask.nii.gz)"
    misplaced = [f for f in raw_files if f.contrast == "mask"]
    if misplaced:
        text += (f"; {misplaced[0].path.name} lies in the raw folder: masks are derivatives, move it to "
                 "derivatives/<pipeline>/ in the same layout")
    orphans = [f for f in sessionless if f.contrast == "mask"]
    if orphans:
        text += f"; {orphans[0].path.name} names no session: add the session to its name and folder"
    return text


def _volume_problem(file: BidsFile, contrast: str, bids_dir: Path) -> str | None:
    """What the header shows to be wrong with ``file`` (a link to absent content, not a NIfTI
    file, more than one volume), or ``None``; no voxel is read."""
    shown = _shown(file.path, bids_dir)
    if not file.path.exists():
        return (f"{shown} is a link to content that is not here (in a DataLad dataset, "
                f"run `datalad get {shown}`)")
    try:
        shape = nib.load(str(file.path)).shape
    except Exception as err:  # noqa: BLE001 (nibabel raises many types for broken headers)
        return f"{shown} cannot be read as a NIfTI image ({describe(err)})"
    volumes = int(np.prod(shape[3:], dtype=np.int64)) if len(shape) > 3 else 1
    if volumes <= 1:
        return None
    if contrast in ("phase", "magnitude"):
        return (f"the {contrast} {shown} is 4D ({volumes} volumes: a multi-echo series); give one "
                f"echo or a combined {contrast} image")
    return f"the {CONTRAST_WORDS[contrast]} {shown} is 4D ({volumes} volumes); give one 3D volume"


def _nothing_usable(bids_dir: Path, raw: _Scan) -> InputError:
    """The error for a dataset whose raw folders hold no image this package uses: what they hold."""
    suffixes = Counter(f.name.suffix for f in raw.files)
    entities = sorted({k for f in raw.files for k in f.name.entities} - {"sub", "ses"})
    examples = [_shown(f.path, bids_dir) for f in raw.files[:EXAMPLES]]
    examples += [_shown(p, bids_dir) for p, _ in raw.ignored[:EXAMPLES - len(examples)]]
    seen = [f"{_count(raw.folders, 'subject folder')}",
            f"datatype folders {_some(f'{d}/ ({n})' for d, n in sorted(raw.datatypes.items())) or 'none'}",
            f"{_count(len(raw.files), 'BIDS NIfTI file')} in {'/'.join(RAW_DATATYPES)}/"]
    if suffixes:
        seen.append(f"suffixes {_some(f'{s} ({n})' for s, n in sorted(suffixes.items()))}")
    if entities:
        seen.append(f"entities {', '.join(entities)}")
    if raw.ignored:
        seen.append(f"{_count(len(raw.ignored), 'entry', 'entries')} ignored (not BIDS names)")
    if examples:
        seen.append(f"e.g. {', '.join(examples)}")
    return file_error(bids_dir, "holds no image napari-deep-prl uses: it looks in sub-*/[ses-*/]anat/ (and swi/) for "
                      "part-phase T2starw/MEGRE/GRE/swi, Chimap, UNIT1, T1w and FLAIR images. Seen: "
                      + "; ".join(seen),
                      "Name the images as BIDS does (docs/data.md, 'A BIDS dataset'), or give a manifest CSV")


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _number(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _some(items: Iterable[str], most: int = 10) -> str:
    """At most ``most`` of ``items``, joined, with how many more."""
    items = list(items)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more

