"""Rater training: practice on a reference set with feedback, a score, a record of who is trained.

Practice lives in its own store, ``practice/practice.sqlite`` in the project folder, holding the
project's lesions, the reference sets (as references) and the trainees' practice answers (as
ratings). The study's store is never written to, so practice labels cannot enter the study's
ratings, consensus or statistics. A reference set comes from a table (an expert read) or from the
project's consensus of chosen lesions. Feedback after each answer is the reference label and the
reference's note, never a model score, so a blind study stays blind. The score is Cohen's kappa
against the reference with a 95% CI by a bootstrap that resamples patients; a trainee whose kappa
reaches the project's bar is recorded as trained in ``practice/trained.tsv``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.queue import QueueItem
from napari_deep_prl.ratings.store import Rating, RatingStore, utc_now

if TYPE_CHECKING:
    import pandas as pd

    from napari_deep_prl.ratings.project import Project

PRACTICE_DIR = "practice"
TRAINED_FILE = "trained.tsv"
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

    # -- reference sets ----------------------------------------------------------------------

    def hold_reference(self, name: str, labels: pd.DataFrame) -> int:
        """Store ``labels`` (``subject, lesion, label[, comment]``) as reference set ``name``;
        returns how many labels were stored."""
        comments = labels["comment"] if "comment" in labels else [None] * len(labels)
        ratings = [Rating(name, str(s), int(n), str(label),
                          comment=_text(c))
                   for s, n, label, c in zip(labels["subject"], labels["lesion"],
                                             labels["label"], comments, strict=True)]
        return len(self.store.add_ratings(ratings, kind="reference"))

    def reference_from_consensus(self, name: str, lesions: pd.DataFrame) -> int:
        """Reference set ``name`` from the project's consensus of ``lesions`` (``subject,
        lesion``), with the adjudicators' notes; every chosen lesion needs a definite one."""
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
                                                      comment=frame["note"]))

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
        return pd.read_csv(path, sep="\t") if path.exists() else pd.DataFrame(
            columns=["rater", "reference", "trained_at"])


class PracticeRound:
    """One trainee practising a set in the viewer, lesion by lesion: each answer is followed by
    its feedback, and the round moves on only when the rater asks (after seeing it)."""

    def __init__(self, practice: Practice, rater: str, reference: str) -> None:
        self.practice, self.rater, self.reference = practice, rater, reference
        lesions = practice.project.lesions().set_index(["subject", "lesion"])
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


def _session(reference: str) -> str:
    return f"practice:{reference}"


def _text(value: object) -> str | None:
    """A note as text, ``None`` for a blank or missing one."""
    return value if isinstance(value, str) and value else None
