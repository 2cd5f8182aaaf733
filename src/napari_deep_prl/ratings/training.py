"""Rater training: practice on a reference set with feedback, a score, a record of who is trained.

Practice lives in its own store, ``practice/practice.sqlite`` in the project folder, holding the
project's lesions, the lesions of practice subjects (images the study does not rate, registered
from a manifest of their own), the reference sets (as references) and the trainees' practice
answers (as ratings). The study's store is never written to, so practice labels cannot enter the
study's ratings, consensus or statistics.

A reference set comes from a table (an expert read) or from the project's consensus of chosen
lesions. A set on lesions the study rates is refused unless explicitly allowed: a trainee who
practises on a lesion has seen the experts' answer to it, so their study label of that lesion
would no longer be an independent read (and the expert label would leak into the agreement
statistics). Practice subjects whose ids, image files or lesion masks are a study subject's are
refused outright. Feedback after each answer is the reference label and the
reference's note, never a model score, so a blind study stays blind. The score is Cohen's kappa
against the reference with a 95% CI by a bootstrap that resamples patients; a trainee whose kappa
reaches the project's bar is recorded as trained in ``practice/trained.tsv``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.tables import write_table, write_text
from napari_deep_prl.ratings import exchange
from napari_deep_prl.ratings.queue import QueueItem
from napari_deep_prl.ratings.store import Rating, RatingStore, utc_now

if TYPE_CHECKING:
    import pandas as pd

    from napari_deep_prl.data.images import Subject, SubjectPaths
    from napari_deep_prl.ratings.project import Project

PRACTICE_DIR = "practice"
TRAINED_FILE = "trained.tsv"
#: Where each practice subject's manifest is, ``{subject: manifest}`` (in the practice folder).
COHORTS_FILE = "cohorts.json"
#: The option that lets a reference set hold lesions the study rates.
ALLOW_STUDY = "--allow-study-lesions"
#: Kappa against the reference a trainee must reach to be recorded as trained.
DEFAULT_MIN_KAPPA = 0.6


@dataclass(frozen=True)
class Feedback:
    """What a trainee is shown after answering: the reference label and what the experts
    noted (no model score: blind studies stay blind)."""

    reference_label: str
    note: str | None
    agreed: bool


class Practice:
    """A project's practice store; open with ``Practice(project)`` and close when done."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.folder = project.root / PRACTICE_DIR
        self.folder.mkdir(exist_ok=True)
        self.store = RatingStore.open(self.folder / "practice.sqlite", create=True)
        fingerprints = project.store.fingerprints()
        for subject, lesions in project.lesions().groupby("subject"):
            self.store.register_subject(str(subject), fingerprints[subject], lesions)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Practice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- practice subjects -------------------------------------------------------------------

    def add_cohort(self, manifest: str | Path) -> list[str]:
        """Register the subjects of ``manifest`` (a cohort the study does not rate) as practice
        subjects, for reference sets apart from the study; returns their ids.

        Refused, registering none, when a subject is one of the study's: the same id, an image
        file the study reads, or the same lesion mask (a copy of a study subject's images).
        Registering a manifest again (say at another site, with its own paths) records where its
        images are now; a subject whose mask changed since is refused.
        """
        import json

        from napari_deep_prl.data.cohort import open_cohort
        from napari_deep_prl.ratings.project import mask_fingerprint, register_lesions

        manifest = Path(manifest).resolve()
        cohort = open_cohort(manifest)
        study = self.project.store.fingerprints()
        masks = {fingerprint: subject for subject, fingerprint in study.items()}
        files = {path.resolve(): paths.subject for paths in self.project.cohort
                 for path in _files(paths)}
        overlaps = []
        for paths in cohort:
            shared = [f"{path} is {files[path.resolve()]}'s" for path in _files(paths)
                      if path.resolve() in files]
            if paths.subject in study:
                overlaps.append(f"{paths.subject} is a study subject's id")
            elif shared:
                overlaps.append(f"{paths.subject}: {shared[0]}")
            else:
                loaded = paths.load_mask()
                twin = masks.get(mask_fingerprint(loaded.labels, loaded.affine))
                if twin is not None:
                    overlaps.append(f"{paths.subject} has the lesion mask of study subject {twin}")
        if overlaps:
            raise InputError(f"{manifest}: {len(overlaps)} practice subject(s) are the study's "
                             f"({'; '.join(overlaps[:5])}), so none was registered. Practice "
                             "subjects must be images the study does not rate; take them out of "
                             "the practice manifest.")
        for paths in cohort:
            register_lesions(self.store, paths)  # a subject whose mask changed is refused
        cohorts = self._cohorts()
        cohorts.update({paths.subject: str(manifest) for paths in cohort})
        write_text(self.folder / COHORTS_FILE, json.dumps(cohorts, indent=2) + "\n")
        return [paths.subject for paths in cohort]

    def _cohorts(self) -> dict[str, str]:
        import json

        path = self.folder / COHORTS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def load_subject(self, subject: str, *, extra: bool = False) -> Subject:
        """A subject's images: a practice subject's from its manifest (refusing a mask changed
        since it was registered), a study subject's as the project loads them."""
        from napari_deep_prl.data.cohort import open_cohort
        from napari_deep_prl.ratings.project import mask_fingerprint

        manifest = self._cohorts().get(subject)
        if manifest is None:
            return self.project.load_subject(subject, extra=extra)
        loaded = open_cohort(manifest, check_ids=False).load(subject, extra=extra)
        if self.store.fingerprints().get(subject) != mask_fingerprint(loaded.labels, loaded.affine):
            raise self.store.mask_changed(subject)
        return loaded

    # -- reference sets ----------------------------------------------------------------------

    def hold_reference(self, name: str, labels: pd.DataFrame, *,
                       allow_study_lesions: bool = False) -> int:
        """Store ``labels`` (``subject, lesion, label[, comment]``) as reference set ``name``;
        returns how many labels were stored. Lesions the study rates are refused unless
        ``allow_study_lesions`` (see the module's notes)."""
        unknown = sorted(set(labels["subject"].astype(str)) - set(self.store.fingerprints()))
        if unknown:
            raise InputError(f"{self.folder}: reference set '{name}' names subject(s) "
                             f"{', '.join(unknown[:5])}, neither the study's nor registered "
                             "practice subjects; register their images first with `deep-prl "
                             "ratings practice-cohort PROJECT MANIFEST`.")
        if not allow_study_lesions:
            self.refuse_study_lesions(name, zip(labels["subject"], labels["lesion"], strict=True),
                                      str(self.folder))
        comments = labels["comment"] if "comment" in labels else [None] * len(labels)
        ratings = [Rating(name, str(s), int(n), str(label),
                          comment=_text(c))
                   for s, n, label, c in zip(labels["subject"], labels["lesion"],
                                             labels["label"], comments, strict=True)]
        return len(self.store.add_ratings(ratings, kind="reference"))

    def refuse_study_lesions(self, name: str, lesions: Iterable[tuple[object, object]],
                             where: str) -> None:
        """Refuse reference set ``name`` when any of ``lesions`` (subject, lesion) is a lesion
        the study rates, naming them and what to do."""
        study = set(self.project.store.fingerprints())
        found = sorted({(str(s), int(n)) for s, n in lesions if str(s) in study})
        if found:
            shown = ", ".join(f"{s} lesion {n}" for s, n in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise InputError(
                f"{where}: reference set '{name}' holds {len(found)} lesion(s) the study rates "
                f"({shown}{more}), so nothing was stored. A trainee who practises on them sees "
                "the experts' answer to lesions they then rate in the study, and their study "
                "labels stop being independent reads. Hold the set on practice subjects "
                "(`deep-prl ratings practice-cohort`), or, for trainees who will not rate the "
                f"study (a pilot), pass {ALLOW_STUDY}.")

    def reference_from_consensus(self, name: str, lesions: pd.DataFrame, *,
                                 allow_study_lesions: bool = False) -> int:
        """Reference set ``name`` from the project's consensus of ``lesions`` (``subject,
        lesion``), with the adjudicators' notes; every chosen lesion needs a definite one. These
        are study lesions: refused unless ``allow_study_lesions``."""
        if not allow_study_lesions:
            self.refuse_study_lesions(name, zip(lesions["subject"], lesions["lesion"], strict=True),
                                      str(self.project.root))
        table = self.project.consensus().set_index(["subject", "lesion"])
        chosen = table.reindex(list(zip(lesions["subject"].astype(str),
                                        lesions["lesion"].astype(int), strict=True)))
        missing = chosen.index[~chosen["consensus"].isin(["prl", "not_prl"])]
        if len(missing):
            shown = ", ".join(f"{s} lesion {n}" for s, n in missing[:5])
            raise InputError(f"{self.project.root}: {len(missing)} chosen lesion(s) have no "
                             f"definite consensus ({shown}); adjudicate them or leave them out "
                             "of the reference set.")
        frame = chosen.reset_index()
        return self.hold_reference(name, frame.assign(label=frame["consensus"],
                                                      comment=frame["note"]),
                                   allow_study_lesions=True)

    def reference(self, name: str) -> pd.DataFrame:
        """Reference set ``name``: ``subject, lesion, label, comment``."""
        labels = self.store.current(rater=name, kind="reference")
        if labels.empty:
            known = ", ".join(self.store.references()["reference"]) or "none yet"
            raise InputError(f"{self.folder}: no reference set '{name}' (known: {known}). "
                             "Hold one with 'deep-prl ratings practice-set'.")
        return labels[["subject", "lesion", "label", "comment"]].reset_index(drop=True)

    # -- practising --------------------------------------------------------------------------

    def remaining(self, rater: str, reference: str) -> list[tuple[str, int]]:
        """Lesions of the set the trainee has not answered, in a seeded per-trainee order."""
        ref = self.reference(reference)
        done = set(self._answers(rater, reference)[["subject", "lesion"]]
                   .itertuples(index=False, name=None))
        order = np.random.default_rng(zlib.crc32(f"{rater}/{reference}".encode())) \
            .permutation(len(ref))
        return [(str(ref["subject"][i]), int(ref["lesion"][i])) for i in order
                if (ref["subject"][i], ref["lesion"][i]) not in done]

    def answer(self, rater: str, reference: str, subject: str, lesion: int,
               label: str) -> Feedback:
        """Record a practice answer (durable on return) and return the feedback."""
        ref = self.reference(reference)
        hit = ref[(ref["subject"] == subject) & (ref["lesion"] == int(lesion))]
        if hit.empty:
            raise InputError(f"{subject} lesion {lesion} is not in reference set '{reference}'; "
                             "practise on its lesions ('deep-prl ratings practice' names the "
                             "next one).")
        if rater in set(self.store.references()["reference"]):
            raise InputError(f"'{rater}' is a reference set, not a trainee; choose another id.")
        self.store.add_rating(rater, subject, int(lesion), label, session=_session(reference))
        row = hit.iloc[0]
        return Feedback(str(row["label"]), _text(row["comment"]), row["label"] == label)

    def _answers(self, rater: str, reference: str) -> pd.DataFrame:
        mine = self.store.current(rater=rater)
        return mine[mine["session"] == _session(reference)]

    def score(self, rater: str, reference: str, *, n_boot: int = 1000,
              seed: int = 0) -> dict[str, object]:
        """Agreement of the trainee's answers with the set: ``n, of, percent_agreement,
        cohen_kappa, cohen_kappa_ci_low, cohen_kappa_ci_high, note``."""
        from napari_deep_prl.ratings.agreement import kappa_with_ci, percent_agreement

        ref = self.reference(reference)
        both = self._answers(rater, reference).merge(ref, on=["subject", "lesion"],
                                                     suffixes=("", "_reference"))
        if both.empty:
            raise InputError(f"'{rater}' has not practised on reference set '{reference}' yet.")
        a, b = both["label"].tolist(), both["label_reference"].tolist()
        return {"n": len(both), "of": len(ref), "percent_agreement": percent_agreement(a, b),
                **kappa_with_ci(a, b, both["subject"].tolist(), names=(rater, reference),
                                n_boot=n_boot, seed=seed)}

    def record_trained(self, rater: str, reference: str, *, min_kappa: float = DEFAULT_MIN_KAPPA,
                       n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
        """Score the trainee; when every lesion of the set is answered and kappa reaches
        ``min_kappa``, append them to ``trained.tsv``. Returns the score with ``trained``."""
        import pandas as pd

        score = self.score(rater, reference, n_boot=n_boot, seed=seed)
        trained = score["n"] == score["of"] and float(score["cohen_kappa"]) >= min_kappa
        if trained:
            row = pd.DataFrame([{"rater": rater, "reference": reference, "trained_at": utc_now(),
                                 "min_kappa": min_kappa, **score}])
            path = self.folder / TRAINED_FILE
            row.to_csv(path, sep="\t", index=False, mode="a", header=not path.exists())
        return {**score, "trained": trained}

    def trained(self) -> pd.DataFrame:
        """Every trainee recorded as trained, with the set and score."""
        import pandas as pd

        path: Path = self.folder / TRAINED_FILE
        return pd.read_csv(path, sep="\t") if path.exists() \
            else pd.DataFrame(columns=list(exchange.TRAINED_KEY))

    # -- exchange between sites --------------------------------------------------------------

    def export_history(self, path: str | Path) -> dict[str, int]:
        """Write the practice store's every row and the trained raters to a practice history
        file (:mod:`.exchange`); returns the rows written per table."""
        return exchange.export_history(self.store, path, name=self.project.root.resolve().name,
                                       trained=_records(self.trained()))

    def import_history(self, path: str | Path, *,
                       allow_study_lesions: bool = False) -> exchange.ImportSummary:
        """Merge another site's practice history file: its reference sets, practice answers
        and trained raters, losslessly and idempotently as a study's history.

        Refused, nothing written, when a set in it holds study lesions (unless
        ``allow_study_lesions``), when it names practice subjects not registered here, or when
        a row conflicts (a trained record of the same rater, set and time with another score).
        """
        header, tables = exchange.load_history(path, practice=True)
        missing = sorted({row["subject"] for row in tables["subjects"]}
                         - set(self.store.fingerprints()))
        if missing:
            raise InputError(f"{path}: names practice subject(s) {', '.join(missing[:5])}, not "
                             "registered here; register the practice cohort's images first "
                             "(`deep-prl ratings practice-cohort PROJECT MANIFEST`), then import "
                             "again.")
        if not allow_study_lesions:
            kinds = {row["rater"]: row["kind"] for row in tables["raters"]}
            for name in sorted(n for n, kind in kinds.items() if kind == "reference"):
                self.refuse_study_lesions(name, [(r["subject"], r["lesion"])
                                                 for r in tables["ratings"]
                                                 if r["rater"] == name], str(path))
        held = _records(self.trained())
        known = {_key(row): row for row in held}
        new, conflicts = [], []
        for row in tables[exchange.TRAINED]:
            old = known.get(_key(row))
            if old is None:
                known[_key(row)] = row
                new.append(row)
            elif old != row:
                conflicts.append(f"{row['rater']} on '{row['reference']}' at {row['trained_at']}")
        if conflicts:
            raise InputError(f"{path}: {len(conflicts)} trained record(s) differ from the ones "
                             f"here with the same rater, set and time ({'; '.join(conflicts[:5])}), "
                             "so nothing was imported. Check practice/trained.tsv at both sites.")
        summary = exchange.merge_history(self.store, header, tables, str(path))
        if new:
            import pandas as pd

            write_table(pd.DataFrame(held + new), self.folder / TRAINED_FILE, float_format=None)
        summary.added[exchange.TRAINED] = len(new)
        summary.known[exchange.TRAINED] = len(tables[exchange.TRAINED]) - len(new)
        return summary


class PracticeRound:
    """One trainee practising a set in the viewer, lesion by lesion: each answer is followed by
    its feedback, and the round moves on only when the rater asks (after seeing it)."""

    def __init__(self, practice: Practice, rater: str, reference: str, *,
                 pseudonymise: bool = False) -> None:
        from napari_deep_prl.ratings.review_session import pseudonyms

        self.practice, self.rater, self.reference = practice, rater, reference
        #: The subjects as the trainee sees them: their pseudonyms with ``pseudonymise`` (the
        #: study's, for study subjects), else their ids.
        self.names = (pseudonyms(practice.store.fingerprints()) if pseudonymise else {})
        lesions = practice.store.lesions().set_index(["subject", "lesion"])
        #: The lesions still to answer, in the trainee's order (shown like a study's queue items).
        self.items = [QueueItem(int(row["lesion_key"]), subject, lesion, float(row["x"]),
                                float(row["y"]), float(row["z"]), float(row["volume_mm3"]),
                                _session(reference), position)
                      for position, (subject, lesion) in enumerate(
                          practice.remaining(rater, reference))
                      for row in [lesions.loc[(subject, lesion)]]]
        self.of = len(practice.reference(reference))
        self.index = 0
        #: The feedback on the lesion on screen once it is answered (``None`` before).
        self.feedback: Feedback | None = None

    @property
    def current(self) -> QueueItem | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def name(self, subject: str) -> str:
        """The subject as the trainee may see it (its id or its pseudonym)."""
        return self.names.get(subject, subject)

    @property
    def done(self) -> int:
        """Lesions of the set answered so far (earlier rounds included)."""
        return self.of - len(self.items) + self.index + (self.feedback is not None)

    def answer(self, label: str) -> Feedback:
        """Record the answer on the current lesion (once) and keep its feedback."""
        item = self.current
        if item is None or self.feedback is not None:
            raise InputError(f"no unanswered lesion of '{self.reference}' is on screen; "
                             "move on to the next one.")
        self.feedback = self.practice.answer(self.rater, self.reference, item.subject,
                                             item.lesion, label)
        return self.feedback

    def advance(self) -> QueueItem | None:
        """After the feedback: the next lesion (``None`` when the set is done)."""
        if self.feedback is not None:
            self.feedback, self.index = None, self.index + 1
        return self.current

    def finish(self, *, min_kappa: float = DEFAULT_MIN_KAPPA) -> dict[str, object]:
        """The score once the set is done, with ``trained``: recorded by
        :meth:`Practice.record_trained` when this round answered the last lesions, read back
        from the record when the set was done before (so reopening it adds no second record)."""
        if self.items:
            return self.practice.record_trained(self.rater, self.reference, min_kappa=min_kappa)
        done = self.practice.trained()
        trained = bool(((done["rater"] == self.rater)
                        & (done["reference"] == self.reference)).any())
        return {**self.practice.score(self.rater, self.reference), "trained": trained}


def reference_sets(project: Project) -> list[str]:
    """The project's reference sets, read without creating the practice store."""
    path = project.root / PRACTICE_DIR / "practice.sqlite"
    if not path.exists():
        return []
    store = RatingStore.open(path, readonly=True)
    try:
        return store.references()["reference"].tolist()
    finally:
        store.close()


def describe_score(rater: str, reference: str, score: dict[str, object],
                   min_kappa: float = DEFAULT_MIN_KAPPA) -> str:
    """A trainee's score in one line: lesions answered, agreement, kappa with its CI, and
    whether they are recorded as trained (``score`` as :meth:`Practice.record_trained` gives)."""
    from napari_deep_prl.ratings.agreement import describe_estimate

    kappa = describe_estimate(score["cohen_kappa"], score["cohen_kappa_ci_low"],
                              score["cohen_kappa_ci_high"], score["note"])
    state = ("recorded as trained" if score["trained"] else
             f"not trained yet (needs every lesion answered and kappa >= {min_kappa})")
    return (f"{rater} on '{reference}': {score['n']} of {score['of']} lesions, agreement "
            f"{score['percent_agreement']:.0%}, kappa {kappa}; {state}")


def _records(table: pd.DataFrame) -> list[dict[str, object]]:
    """Rows of a table as plain values (a blank cell as ``None``), as a history file holds them."""
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()} for row in rows]


def _key(row: dict[str, object]) -> tuple:
    return tuple(row.get(c) for c in exchange.TRAINED_KEY)


def _files(paths: SubjectPaths) -> list[Path]:
    """Every file of a subject's images (mask and PRL mask included)."""
    return [path for _, path in paths.images] + [
        path for path in (paths.mask, paths.prl_mask, paths.prl_labels) if path is not None]


def _session(reference: str) -> str:
    return f"practice:{reference}"


def _text(value: object) -> str | None:
    """A note as text, ``None`` for a blank or missing one."""
    return value if isinstance(value, str) and value else None
