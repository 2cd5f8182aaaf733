"""A project folder: a cohort, its lesions, every rater's judgement, models and exports.

Layout::

    project/
      project.json      # manifest reference, consensus rule, exclusion reasons, blinding,
                        # study design, the store's URL (edit it by hand; unknown keys are refused)
      manifest.csv      # the subjects found, when the project was made from a BIDS dataset
      ratings.sqlite    # the rating store (see napari_deep_prl.ratings.store), unless project.json
                        # names a PostgreSQL store (a study shared across sites)
      models/           # checkpoints trained on the project's labels
      exports/          # tables (and PRL masks) written by ``deep-prl ratings export``

Lesions are registered once, at creation, with a fingerprint of each subject's lesion labels
(shape, affine and label bytes): a mask edited afterwards is reported by :meth:`load_subject`
instead of silently pairing old ratings with new lesions.

Opening a project and recording a rating import neither pandas nor the image modules (nibabel,
scipy): the methods that build tables or read images import them, so ``deep-prl ratings add``
in a shell loop stays quick.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from napari_deep_prl.base.errors import (
    InputError,
    InputWarning,
    StoreError,
    access_error,
    write_error,
)
from napari_deep_prl.base.filenames import LABEL_CHARS, file_components, output_path
from napari_deep_prl.base.progress import Progress, ProgressGenerator, run_to_end
from napari_deep_prl.base.tables import (
    check_output,
    write_nifti,
    write_table,
    write_text,
)
from napari_deep_prl.ratings import consensus, exchange, export, postgres
from napari_deep_prl.ratings.queue import Blinding, RaterQueue, Strategy, StudyDesign
from napari_deep_prl.ratings.schema import DEFAULT_EXCLUSION_REASONS, LABELS
from napari_deep_prl.ratings.second_reads import DEFAULT_MODEL_GAP, second_read_queue
from napari_deep_prl.ratings.store import Rating, RatingStore

if TYPE_CHECKING:
    import pandas as pd

    from napari_deep_prl.data.cohort import Cohort
    from napari_deep_prl.data.images import LesionMask, Subject, SubjectPaths
    from napari_deep_prl.ratings.agreement import AgreementSummary
    from napari_deep_prl.ratings.reliability import Reliability

#: What a project checks against its registered lesions: a loaded subject or its lesion mask.
Loaded = TypeVar("Loaded", "Subject", "LesionMask")

CONFIG_NAME = "project.json"
DB_NAME = "ratings.sqlite"
#: The project's own manifest of the subjects found in a BIDS dataset (:func:`create_project`).
BIDS_MANIFEST_NAME = "manifest.csv"
FORMAT = "napari-deep-prl project"
EXPORT_KINDS = ("wide", "long", "history", "consensus_history")
#: The index :meth:`Project.export_masks` writes beside the masks.
MASK_INDEX = "prlmasks.tsv"
MASK_INDEX_COLUMNS = ["subject", "source", "id", "file", "lesions", "labelled", "prl"]
#: The environment variable naming this machine's site among a project's ``image_roots``.
SITE_VARIABLE = "DEEP_PRL_SITE"


@dataclass(frozen=True)
class ReviewSettings:
    """How lesions are presented for rating (``review`` in ``project.json``).

    ``panels``: the contrasts shown side by side, in order (``null``: every image the subject
    has: phase, MP2RAGE, then the manifest's other contrasts); contrasts a subject lacks are
    skipped. ``min_diameter_mm``:
    lesions whose equivalent-sphere diameter is smaller stay out of the raters' queues (0: none;
    NAIMS rates lesions of at least about 3 mm).
    """

    panels: tuple[str, ...] | None = None
    min_diameter_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.panels is not None:
            if isinstance(self.panels, str) or not all(isinstance(p, str) for p in self.panels):
                raise InputError(f"review panels {self.panels!r} must be a list of contrast names "
                                 "such as [\"phase\", \"mp2rage\"]; fix project.json.")
            object.__setattr__(self, "panels", tuple(self.panels))
        if not isinstance(self.min_diameter_mm, (int, float)) or self.min_diameter_mm < 0:
            raise InputError(f"review min_diameter_mm {self.min_diameter_mm!r} must be a number "
                             "of millimetres, 0 or more; fix project.json.")


@dataclass(frozen=True)
class ProjectConfig:
    """The editable settings of a project (``project.json``)."""

    manifest: str
    consensus: consensus.ConsensusRule = consensus.ConsensusRule()
    exclusion_reasons: tuple[str, ...] = DEFAULT_EXCLUSION_REASONS
    blinding: Blinding = Blinding()
    study_design: StudyDesign = StudyDesign()
    review: ReviewSettings = ReviewSettings()
    #: The rating store: ``None`` for the folder's own ratings.sqlite, or a PostgreSQL URL
    #: without password (see :mod:`napari_deep_prl.ratings.postgres`).
    store: str | None = None
    #: Where each site keeps its copy of the images, ``{site: folder}`` (``None``: one place,
    #: ``manifest`` relative to the project folder); see :meth:`image_root`.
    image_roots: dict[str, str] | None = None
    format: str = FORMAT
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclusion_reasons", tuple(self.exclusion_reasons))
        if self.store is not None:
            postgres.check_url(self.store if isinstance(self.store, str) else repr(self.store))
        if self.image_roots is not None and (
                not isinstance(self.image_roots, dict) or not self.image_roots
                or not all(isinstance(k, str) and k and isinstance(v, str) and v
                           for k, v in self.image_roots.items())):
            raise InputError(f"image_roots {self.image_roots!r} must map each site's name to its "
                             "folder of images, e.g. {\"site-a\": \"/data/prl\", \"site-b\": "
                             "\"D:/studies/prl\"}; fix project.json.")

    def image_root(self) -> tuple[str, Path] | None:
        """This machine's site and image root (``None`` without ``image_roots``).

        The site is the one :data:`SITE_VARIABLE` names, else the one named as this machine's
        hostname (in full or up to its first dot); a machine that is none of the sites is
        refused, naming them, rather than guessing which copy of the images to show.
        """
        if self.image_roots is None:
            return None
        chosen = os.environ.get(SITE_VARIABLE)
        host = socket.gethostname()
        names = [chosen] if chosen else [host, host.split(".")[0]]
        site = next((name for name in names if name in self.image_roots), None)
        if site is None:
            which = (f"{SITE_VARIABLE} names site '{chosen}'" if chosen else
                     f"{SITE_VARIABLE} is not set and this machine's hostname is '{host}'")
            raise InputError(f"project.json maps image roots for site(s) "
                             f"{', '.join(sorted(self.image_roots))}, but {which}. Set "
                             f"{SITE_VARIABLE} to one of those sites, or add this site's image "
                             "folder to image_roots (docs/multisite.md).")
        return site, Path(os.path.expanduser(self.image_roots[site]))

    def manifest_path(self, root: Path) -> Path:
        """The manifest (or cohort folder): relative to this site's image root when the project
        maps ``image_roots``, else to the project folder ``root``."""
        site = self.image_root()
        return (root if site is None else site[1]) / self.manifest

    def store_address(self, root: Path) -> str | Path:
        """Where the project's ratings are: the URL of ``store``, else ``root/ratings.sqlite``."""
        return self.store if self.store is not None else root / DB_NAME

    def to_json(self) -> str:
        data = asdict(self)
        data["exclusion_reasons"] = list(self.exclusion_reasons)
        for name in ("store", "image_roots"):
            if data[name] is None:  # the defaults: nothing to say
                del data[name]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> ProjectConfig:
        """Parse and validate ``project.json``; every problem names the file and the key."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"{path.parent}: not a napari-deep-prl project (no {CONFIG_NAME}). "
                             "Create one with `deep-prl project init`.") from None
        except PermissionError:
            raise access_error([path], "read", path.parent) from None
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: unreadable project config ({err}). Fix the JSON.") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a napari-deep-prl project config. Check the folder.")
        if data.get("version", 1) != ProjectConfig.version:
            raise InputError(f"{path}: project config version {data.get('version')} is not "
                             f"{ProjectConfig.version}. Upgrade napari-deep-prl.")
        nested = {"consensus": consensus.ConsensusRule, "blinding": Blinding,
                  "study_design": StudyDesign, "review": ReviewSettings}
        try:
            return cls(**{k: _build(nested[k], v, f"{path}: {k}") if k in nested else v
                          for k, v in _known(cls, data, str(path)).items()})
        except TypeError as err:
            raise InputError(f"{path}: {err}. Fix the project config.") from err


def _known(kind: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: "
                         f"{', '.join(sorted(names))}). Fix the project config.")
    return data


def _build(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object. Fix the project config.")
    return kind(**_known(kind, data, where))


def mask_fingerprint(labels: np.ndarray, affine: np.ndarray) -> str:
    """sha256 of a lesion label volume's shape, affine (to 1e-4 mm) and label bytes."""
    digest = hashlib.sha256()
    digest.update(repr(tuple(labels.shape)).encode())
    digest.update(np.round(np.asarray(affine, dtype=np.float64), 4).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())
    return digest.hexdigest()


def register_lesions(store: RatingStore, paths: SubjectPaths) -> str:
    """Register the lesions of a subject's mask in ``store`` (loading the mask only); returns
    the mask's fingerprint (:func:`mask_fingerprint`)."""
    from napari_deep_prl.data.lesions import lesions_in_mask

    lesion_mask = paths.load_mask()
    lesions = lesions_in_mask(lesion_mask.mask, lesion_mask.affine, paths.subject,
                              labels=lesion_mask.labels)
    fingerprint = mask_fingerprint(lesions.labels, lesion_mask.affine)
    store.register_subject(paths.subject, fingerprint, lesions.table)
    return fingerprint


def create_project(root: str | Path, manifest: str | Path | Cohort,
                   config: dict[str, Any] | None = None) -> ProgressGenerator[Project]:
    """Create a project: register every subject's lesions (one mask loaded at a time).

    Every subject's images are checked first, from their headers (:func:`header_problems`), and
    all problems of all subjects are refused together before anything is created. ``config``
    overrides settings of ``project.json`` (same keys). Re-running on a folder whose creation
    was interrupted resumes it; a finished project is refused. ``config["store"]``: a PostgreSQL
    URL (without password) puts the ratings on that server instead of the folder's
    ratings.sqlite. ``config["image_roots"]``: each site's copy of the images
    (:meth:`ProjectConfig.image_root`); the manifest must lie in this site's, and is recorded
    relative to it.

    ``manifest``: what :func:`~napari_deep_prl.data.cohort.open_cohort` opens, or the cohort it
    opened (e.g. a BIDS dataset with options). The subjects found in a BIDS dataset are written
    to the project's own ``manifest.csv``, which the project then reads: it keeps the subjects
    (and sessions) found at its creation, whatever the dataset gains later.
    """
    from napari_deep_prl.data.cohort import Cohort, open_cohort
    from napari_deep_prl.data.images import header_problems

    if (config or {}).get("store") is not None:  # before a password could reach a file
        postgres.check_url(config["store"])
    root = check_output(root, folder=True)
    config_path = root / CONFIG_NAME
    if config_path.exists():
        raise InputError(f"{root}: already a napari-deep-prl project. Open it, or choose an "
                         "empty folder.")
    cohort = manifest if isinstance(manifest, Cohort) else open_cohort(manifest)
    if cohort.source is None:
        raise InputError("the cohort has no manifest or folder it was read from, so the project could not "
                         "open it again; give a manifest's path")
    resumed = (root / f"{CONFIG_NAME}.new").exists()
    if cohort.bids is not None and (root / BIDS_MANIFEST_NAME).exists() and not resumed:
        raise InputError(f"{root}: already holds a {BIDS_MANIFEST_NAME}, where the project would list the "
                         "subjects found in the BIDS dataset. Choose an empty folder.")
    site = ProjectConfig(manifest=str(cohort.source),
                         image_roots=(config or {}).get("image_roots")).image_root()
    if site is not None and (cohort.bids is not None or not Path(cohort.source).resolve().is_relative_to(
            site[1].resolve())):
        raise InputError(f"{cohort.source}: with image_roots the project finds its manifest in each "
                         f"site's image folder, and this one is not inside {site[1]} (site "
                         f"'{site[0]}'{', and a BIDS dataset is listed in the project' if cohort.bids else ''}); "
                         "give a manifest inside the image folder, or fix image_roots.")
    problems = [problem for paths in cohort for problem in header_problems(paths)]
    if problems:
        raise InputError(f"{cohort.source}: {len(problems)} problem(s) in the subjects' "
                         "images, so no project was created; fix them and run `deep-prl project "
                         "init` again. "
                         + " ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1)))
    for folder in (root, root / "models", root / "exports"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(folder, err) from err
    source = cohort.source if cohort.bids is None else cohort.bids.write_manifest(root / BIDS_MANIFEST_NAME)
    reference = os.path.relpath(Path(source).resolve(), (root if site is None else site[1]).resolve())
    data = {**json.loads(ProjectConfig(manifest=reference).to_json()), **(config or {})}
    staged = root / f"{CONFIG_NAME}.new"
    write_text(staged, json.dumps(data, indent=2) + "\n")
    settings = ProjectConfig.read(staged)
    with RatingStore.open(settings.store_address(root), create=True,
                          exclusion_reasons=settings.exclusion_reasons) as store:
        for i, paths in enumerate(cohort):
            register_lesions(store, paths)
            yield Progress(i + 1, len(cohort), "subjects", paths.subject)
    os.replace(staged, config_path)
    return Project.open(root)


class Project:
    """An open project: cohort, lesions, store, and the study's rules applied to them."""

    def __init__(self, root: Path, config: ProjectConfig, store: RatingStore) -> None:
        self.root = root
        self.config = config
        self.store = store

    @classmethod
    def init(cls, root: str | Path, manifest: str | Path,
             config: dict[str, Any] | None = None) -> Project:
        """:func:`create_project` without progress reporting."""
        return run_to_end(create_project(root, manifest, config))

    @classmethod
    def open(cls, root: str | Path, *, readonly: bool = False) -> Project:
        """Open a project folder; :class:`StoreError` if it is not one or its store is bad.

        ``readonly`` for work that only reads (exports, agreement, queue orders): its store is a
        snapshot taken now (:meth:`RatingStore.open`), which needs no write access to the project.
        """
        root = Path(root)
        config = ProjectConfig.read(root / CONFIG_NAME)
        store = RatingStore.open(config.store_address(root), exclusion_reasons=config.exclusion_reasons,
                                 readonly=readonly)
        return cls(root, config, store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data ----------------------------------------------------------------------------

    @cached_property
    def cohort(self) -> Cohort:
        """The cohort of the project's manifest (paths only; nothing loaded). Its ids were
        checked by ``project init``; a project made before ids were checked keeps opening."""
        from napari_deep_prl.data.cohort import open_cohort

        site = self.config.image_root()
        try:
            return open_cohort(self.config.manifest_path(self.root), check_ids=False)
        except InputError as err:
            if site is None:
                raise
            raise InputError(f"at site '{site[0]}' (image root {site[1]}, from image_roots in "
                             f"{self.root / CONFIG_NAME}): {err}") from err

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def lesions(self) -> pd.DataFrame:
        """Registered lesions of every subject."""
        return self.store.lesions()

    def load_subject(self, subject: str, *, extra: bool = False) -> Subject:
        """Load a subject's images (with ``extra``, its extra images for display too), refusing
        a mask changed since its lesions were registered."""
        return self._registered(subject, self.cohort.load(subject, extra=extra))

    def _registered(self, subject: str, loaded: Loaded) -> Loaded:
        """``loaded`` (a subject or its lesion mask) with the lesion labels its lesions were
        registered with, refusing a mask changed since.

        A project registered before confluent components of binary masks were split into parts
        has them whole: its ratings name the components, so it keeps them whole."""
        from napari_deep_prl.data.masks import label_lesions

        known = self.store.fingerprints().get(subject)
        if known is None:
            raise InputError(f"{self.root}: subject '{subject}' has no registered lesions. "
                             "It was added to the manifest after `project init`; start a new "
                             "project to include it.")
        if known == mask_fingerprint(loaded.labels, loaded.affine):
            return loaded
        if loaded.resampled_labels is None:
            zooms = np.linalg.norm(loaded.affine[:3, :3], axis=0)
            whole = label_lesions(loaded.mask, zooms, split=False)
            if known == mask_fingerprint(whole, loaded.affine):
                return replace(loaded, resampled_labels=whole)
        raise self.store.mask_changed(subject)

    # -- rating --------------------------------------------------------------------------

    def queue(self, rater: str, strategy: Strategy | None = None,
              session: str | None = None) -> RaterQueue:
        """The blinded queue of one rater, with the project's study design."""
        return RaterQueue(self.store, rater, strategy, self.config.study_design,
                          self.config.blinding, session, self.config.review.min_diameter_mm)

    def import_ratings(self, table: pd.DataFrame, source: str = "table", *,
                       reference: str | None = None) -> int:
        """Append ratings from a table with ``subject, lesion, rater, label`` (+ optional
        ``confidence, reason, comment``) in one transaction; return how many.

        With ``reference``, the table holds that reference's labels: no ``rater`` column.
        Nothing is guessed, since a guessed label is a wrong label stored as a right one: a
        blank cell where a value is needed, a lesion id or confidence that is not a whole
        number, an invalid new id, or two rows giving one rater's label of one lesion
        differently are refused naming the line (the header being line 1), and nothing is
        stored. Rows repeating an earlier row exactly are stored once, with a warning.
        """
        needed = ("subject", "lesion", "label") if reference else ("subject", "lesion", "rater",
                                                                   "label")
        missing = [c for c in needed if c not in table]
        if missing:
            raise InputError(f"{source}: missing column(s) {', '.join(missing)}. The table "
                             f"needs {', '.join(needed)}.")
        if reference is not None and "rater" in table:
            raise InputError(f"{source}: a rater column, but a reference's labels are imported. "
                             "Drop the column, or import the table as raters' labels (without "
                             "--reference).")
        kind = "reference" if reference else "rater"
        ratings, repeated = _table_ratings(table, source, needed, reference)
        first_lines: dict[str, int] = {}
        for line, rating in ratings:
            first_lines.setdefault(rating.rater, line)
        for name, line in first_lines.items():
            try:
                self.store.check_kind([name], kind)
            except InputError as err:
                raise InputError(f"{source}, line {line}: {err}") from err
        if repeated:
            shown = ", ".join(map(str, repeated[:10])) + (", ..." if len(repeated) > 10 else "")
            warnings.warn(InputWarning(f"{source}: {len(repeated)} row(s) repeat an earlier row exactly "
                                       f"(line(s) {shown}); each was imported once"), stacklevel=2)
        return len(self.store.add_ratings([rating for _, rating in ratings], kind=kind,
                                          where=[f"{source}, line {line}" for line, _ in ratings]))

    def import_prl_masks(self, rater: str | None = None, *,
                         reference: str | None = None) -> ProgressGenerator[int]:
        """Label every lesion from the manifest's ``prl_mask``: ``prl`` when most of its voxels
        lie in the PRL mask (one subject loaded at a time).

        The labels are stored as the reference ``reference`` (default ``prl_mask``: ground
        truth never votes), or as the rater ``rater`` when one is given (a person's read).
        """
        from napari_deep_prl.data.lesions import find_lesions

        if rater is not None and reference is not None:
            raise InputError("give a rater or a reference id for the prl_mask labels, not both.")
        name, kind = (rater, "rater") if rater is not None else (reference or "prl_mask",
                                                                 "reference")
        self.store.check_kind([name], kind)
        if not self.cohort.has_prl_masks:
            raise InputError(f"{self.cohort.source}: not every subject has a prl_mask. Add the "
                             "prl_mask column to the manifest.")
        ratings = []
        for i, paths in enumerate(self.cohort):
            found = find_lesions(self._registered(paths.subject, paths.load()))
            table = found.table
            ratings += [Rating(name, paths.subject, int(n), "prl" if prl else "not_prl",
                               comment=f"imported from {paths.prl_mask.name}")
                        for n, prl in zip(table["lesion"], table["prl"], strict=True)]
            yield Progress(i + 1, len(self.cohort), "subjects", paths.subject)
        return len(self.store.add_ratings(ratings, kind=kind))

    def make_reference(self, rater: str, *, keep_decisions: bool = False) -> pd.DataFrame:
        """Turn a rater into a reference (:meth:`RatingStore.make_reference`): its labels stay
        but no longer vote. Returns the lesions whose consensus changed: ``subject, lesion,
        before, after`` (``None`` where a lesion has none)."""
        import pandas as pd

        before = self.consensus()
        self.store.make_reference(rater, keep_decisions=keep_decisions)
        after = self.consensus()
        changed = before["consensus"].fillna("") != after["consensus"].fillna("")
        return pd.DataFrame({"subject": before["subject"], "lesion": before["lesion"],
                             "before": before["consensus"], "after": after["consensus"]}
                            )[changed].reset_index(drop=True)

    # -- consensus and statistics --------------------------------------------------------

    def consensus(self, current: pd.DataFrame | None = None) -> pd.DataFrame:
        """Consensus per lesion under the project's rule (see :mod:`.ratings.consensus`);
        ``current`` saves re-reading the current ratings when the caller has them."""
        return consensus.consensus_table(
            self.lesions(), self.store.current() if current is None else current,
            self.store.consensus_decisions(), self.config.consensus)

    def adjudication_queue(self, *, decided: bool = False) -> pd.DataFrame:
        """Lesions awaiting adjudication, every rater's label side by side (not blinded);
        with ``decided``, also the lesions carrying an adjudicated decision (to revise or
        retract it). See :func:`.ratings.consensus.adjudication_queue` for the columns."""
        current = self.store.current()
        return consensus.adjudication_queue(self.consensus(current), current, decided=decided)

    def second_reads(self, *, model_gap: float = DEFAULT_MODEL_GAP,
                     model: str | None = None) -> pd.DataFrame:
        """Lesions another rater should read, most useful first (not blinded: for the study
        lead); the scores of ``model``, or each lesion's newest. See
        :mod:`.ratings.second_reads`."""
        predictions = self.store.predictions(model)
        if model is not None and predictions.empty:
            raise InputError(f"{self.root}: model '{model}' has no stored scores. Give a model "
                             "whose scores were written to the project, or leave --model out.")
        return second_read_queue(self.lesions(), self.store.current(),
                                 self.store.consensus_decisions(), predictions,
                                 self.config.consensus, model_gap=model_gap)

    def record_consensus(self, subject: str, lesion: int, label: str, *, by: str,
                         note: str | None = None) -> int:
        """The adjudicator's decision; durable on return; it overrides the automatic rule.
        Deciding a lesion again revises its decision (the history keeps both)."""
        return self.store.record_consensus(subject, lesion, label, by=by, note=note)

    def retract_consensus(self, subject: str, lesion: int, *, by: str,
                          note: str | None = None) -> int | None:
        """Withdraw a lesion's adjudicated decision: it goes back to the automatic rule (or
        to the adjudication queue). Durable on return; returns the retraction's row id, or
        ``None`` when the lesion has no live decision."""
        return self.store.retract_consensus(subject, lesion, by=by, note=note)

    def label_sources(self) -> list[str]:
        """The sources :meth:`training_labels` takes: consensus, each rater, each reference."""
        return ["consensus", *self.store.raters()["rater"], *self.store.references()["reference"]]

    def training_labels(self, source: str = "consensus") -> pd.DataFrame:
        """``subject, lesion, prl`` for training, from consensus or one rater's or reference's
        labels; lesions without a definite label are left out."""
        import pandas as pd

        if source == "consensus":
            labels = self.consensus().rename(columns={"consensus": "label"})
        else:
            labels = self.store.current(rater=source, kind=None)
            if labels.empty:
                raise InputError(f"{self.root}: rater '{source}' has no ratings. Use "
                                 "'consensus' or one of the project's raters or references.")
        definite = labels[labels["label"].isin(LABELS[:2])]
        return pd.DataFrame({"subject": definite["subject"], "lesion": definite["lesion"],
                             "prl": definite["label"] == "prl"}).reset_index(drop=True)

    def agreement(self, *, unsure: str = "category", n_boot: int = 1000,
                  seed: int = 0) -> AgreementSummary:
        """Every agreement statistic of the current ratings."""
        from napari_deep_prl.ratings import agreement

        current, lesions = self.store.current(), self.lesions()
        icc, icc_n, icc_note = agreement.prl_count_icc(current, lesions)
        agreed = self.consensus(current)
        return agreement.AgreementSummary(
            pairs=agreement.agreement_table(current, unsure=unsure, n_boot=n_boot, seed=seed),
            per_subject=agreement.per_subject_agreement(current, lesions, unsure=unsure),
            vs_consensus=agreement.rater_vs_consensus(current, agreed),
            vs_consensus_per_subject=agreement.rater_vs_consensus(current, agreed,
                                                                  per_subject=True),
            intra_rater=agreement.intra_rater_agreement(current, self.store.current(repeat=True),
                                                        unsure=unsure),
            prl_count_icc=icc, prl_count_icc_n=icc_n, prl_count_icc_note=icc_note,
            vs_reference=agreement.raters_vs_references(
                current, self.store.current(kind="reference"), unsure=unsure, n_boot=n_boot,
                seed=seed))

    def reliability(self, *, unsure: str = "category", n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> Reliability:
        """The reliability report's tables (:mod:`napari_deep_prl.ratings.reliability`)."""
        from napari_deep_prl.ratings import reliability

        current = self.store.current()
        return reliability.reliability(
            current, self.lesions(), self.consensus(current),
            self.store.current(kind="reference"), self.store.current(repeat=True),
            reliability.Settings(unsure=unsure, n_boot=n_boot, seed=seed, level=level))

    def export(self, kind: str = "wide") -> pd.DataFrame:
        """``wide`` (a row per lesion, references last), ``long`` (a row per current rating or
        reference label), ``history`` (every rating row) or ``consensus_history`` (every
        consensus decision and retraction)."""
        if kind == "wide":
            current = self.store.current()
            return export.wide_table(self.lesions(), current, self.consensus(current),
                                     self.store.current(kind="reference"))
        if kind == "long":
            return export.long_table(self.store.current(repeat=None, kind=None))
        if kind == "history":
            return export.history_table(self.store.history())
        if kind == "consensus_history":
            return export.consensus_history_table(self.store.consensus_history())
        raise InputError(f"export kind '{kind}' is not one of {', '.join(EXPORT_KINDS)}.")

    def export_history(self, path: str | Path) -> dict[str, int]:
        """Write every row of every table to a history file for another site's store
        (:mod:`napari_deep_prl.ratings.exchange`); returns the rows written per table."""
        return exchange.export_history(self.store, path, name=self.root.resolve().name)

    def import_history(self, path: str | Path) -> exchange.ImportSummary:
        """Merge another site's history file into this project's store, losslessly: rows
        already there are skipped; conflicts and files of other projects are refused."""
        return exchange.import_history(self.store, path)

    def export_masks(self, folder: str | Path) -> ProgressGenerator[pd.DataFrame]:
        """Write binary PRL masks as NIfTI on each subject's lesion-mask grid (same shape and
        affine): the consensus's for every subject, each rater's and reference's for the
        subjects they labelled. A lesion's voxels are 1 when its label is ``prl``; pending,
        ``unsure``, ``not_prl`` and unlabelled lesions are 0. One mask loaded at a time.

        Files are ``<subject>_desc-consensus_prlmask.nii.gz``,
        ``<subject>_desc-rater<id>_prlmask.nii.gz`` and ``<subject>_desc-reference<id>_...``
        (ids made safe by :mod:`napari_deep_prl.base.filenames`); returns the index of the files
        (:data:`MASK_INDEX_COLUMNS`), also written last as :data:`MASK_INDEX` in ``folder``.
        """
        import nibabel as nib
        import pandas as pd


        folder = Path(folder)
        labels = self._mask_labels()
        subjects = file_components(self.cohort.ids, what="subject id")
        descs = {("consensus", "consensus"): "consensus"}
        for source in ("rater", "reference"):
            ids = labels.loc[labels["source"] == source, "id"]
            descs.update({(source, i): f"{source}{name}" for i, name in file_components(
                ids, what=f"{source} id", chars=LABEL_CHARS).items()})
        index = []
        for step, paths in enumerate(self.cohort):
            lesion_mask = self._registered(paths.subject, paths.load_mask())
            lesion_ids, affine = lesion_mask.labels, lesion_mask.affine
            mine = labels[labels["subject"] == paths.subject]
            groups = dict(list(mine.groupby(["source", "id"], sort=False)))
            groups.setdefault(("consensus", "consensus"), mine.iloc[:0])  # a lesion-free subject
            n_lesions = int((mine["source"] == "consensus").sum())
            for (source, name), part in groups.items():
                file = f"{subjects[paths.subject]}_desc-{descs[source, name]}_prlmask.nii.gz"
                prl = part.loc[part["label"] == "prl", "lesion"].to_numpy(dtype=np.int64)
                write_nifti(nib.Nifti1Image(np.isin(lesion_ids, prl).astype(np.uint8), affine),
                            output_path(folder, file))
                index.append((paths.subject, source, name, file, n_lesions,
                              int(part["label"].notna().sum()), len(prl)))
            yield Progress(step + 1, len(self.cohort), "subjects", paths.subject)
        table = pd.DataFrame(index, columns=MASK_INDEX_COLUMNS)
        write_table(table, folder / MASK_INDEX)
        return table

    def _mask_labels(self) -> pd.DataFrame:
        """``subject, lesion, label, source, id``: the consensus of every lesion (label
        ``None`` where there is none), then every current rater and reference label."""
        import pandas as pd

        current = self.store.current()
        agreed = self.consensus(current).rename(columns={"consensus": "label"})
        return pd.concat([
            agreed[["subject", "lesion", "label"]].assign(source="consensus", id="consensus"),
            *(frame[["subject", "lesion", "label"]].assign(source=kind, id=frame["rater"])
              for kind, frame in (("rater", current),
                                  ("reference", self.store.current(kind="reference"))))],
            ignore_index=True)


def _table_ratings(table: pd.DataFrame, source: str, needed: tuple[str, ...],
                   reference: str | None) -> tuple[list[tuple[int, Rating]], list[int]]:
    """The ratings of an import table with their line numbers, each rater's lesion once; and
    the lines that repeat an earlier one exactly (see :meth:`Project.import_ratings`)."""
    import pandas as pd

    from napari_deep_prl.data.labels import whole_numbers

    optional = [c for c in ("confidence", "reason", "comment") if c in table]
    numbers = {c: whole_numbers(table[c]) for c in ("lesion", "confidence") if c in table}
    first: dict[tuple[str, int, str], tuple[int, Rating]] = {}
    repeated = []
    for i, row in enumerate(table[[*needed, *optional]].to_dict("records")):
        line, text = i + 2, {c: _cell(value) for c, value in row.items()}
        blank = [c for c in needed if not text[c]]
        if blank:
            raise InputError(f"{source}, line {line}: no {' or '.join(blank)}. Fill in every "
                             f"row's {', '.join(needed)}.")
        for column, values in numbers.items():
            if text[column] and pd.isna(values.iloc[i]):
                raise InputError(f"{source}, line {line}: {column} '{text[column]}' is not a "
                                 "whole number. Fix that row.")
        rating = Rating(reference or text["rater"], text["subject"], int(numbers["lesion"].iloc[i]),
                        text["label"], **{c: (int(numbers[c].iloc[i]) if c in numbers else text[c])
                                          for c in optional if text[c]})
        key = (rating.subject, rating.lesion, rating.rater)
        if key not in first:
            first[key] = (line, rating)
        elif first[key][1] == rating:
            repeated.append(line)
        else:
            raise InputError(
                f"{source}: lines {first[key][0]} and {line} both give the label of rater "
                f"{rating.rater!r} for {rating.subject!r} lesion {rating.lesion}, differently "
                f"({first[key][1].label} / {rating.label}, or their confidence, reason or comment). "
                "Keep the right row.")
    return list(first.values()), repeated


def _cell(value: object) -> str:
    """A table cell as stripped text; blank when missing (nothing is read as NA)."""
    import pandas as pd

    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value).strip()

