"""The contrasts a subject's images are named by, in manifests, BIDS discovery and the simulator.

A subject has one *susceptibility* image — ``phase`` (unwrapped or high-pass filtered phase,
paramagnetic dark by the project's convention) or ``qsm`` (susceptibility in ppm, paramagnetic
bright by definition) — and one or more *structural* images; *display-only* images are shown in
the review and never enter a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from napari_deep_prl.base.errors import InputError

#: The susceptibility image of a subject: one of these.
SUSCEPTIBILITY = ("phase", "qsm")
#: Structural images, in manifest order.
STRUCTURAL = ("mp2rage", "t1w", "flair")
#: Images shown in the review only (an SWI's magnitude, the SWI itself).
DISPLAY_ONLY = ("magnitude", "swi")

#: The contrasts of the research protocol, and of every model that records none (checkpoints
#: written before models took other contrasts).
DEFAULT_MODEL_CONTRASTS = ("mp2rage", "phase")
#: Each susceptibility contrast's sign for a paramagnetic source as its file has it, and whether
#: a model's patch negates it: a patch's susceptibility channel is paramagnetic-dark whatever the
#: contrast, so a dark rim means the same in every model.
SIGNS = {"phase": ("paramagnetic dark", False), "qsm": ("paramagnetic bright", True)}


def model_contrasts(names: Iterable[str], who: str) -> tuple[str, ...]:
    """A model's image contrasts in their canonical channel order — the structural ones (in the
    order of :data:`STRUCTURAL`), then the susceptibility image — so that the research protocol's
    channels stay ``mp2rage, phase`` and the susceptibility channel is always the last image
    channel. An InputError naming ``who`` unless there is exactly one susceptibility contrast and
    at least one structural one, all known, none display-only."""
    names = list(dict.fromkeys(str(n).strip().lower() for n in names if str(n).strip()))
    unusable = [n for n in names if n not in (*SUSCEPTIBILITY, *STRUCTURAL)]
    if unusable:
        why = "display-only images never enter a model" if set(unusable) <= set(DISPLAY_ONLY) else "unknown"
        raise InputError(f"{who}: {', '.join(unusable)} cannot be a model contrast ({why}). Give one "
                         f"susceptibility contrast ({' or '.join(SUSCEPTIBILITY)}) and one or more structural "
                         f"ones ({', '.join(STRUCTURAL)}), e.g. t1w,flair,phase.")
    susceptibility = [n for n in names if n in SUSCEPTIBILITY]
    structural = [n for n in STRUCTURAL if n in names]
    if len(susceptibility) != 1 or not structural:
        raise InputError(f"{who}: the contrasts {', '.join(names) or 'none'} are not a model's: a model takes one "
                         f"susceptibility contrast ({' or '.join(SUSCEPTIBILITY)}) and one or more structural ones "
                         f"({', '.join(STRUCTURAL)}), e.g. t1w,flair,phase.")
    return (*structural, *susceptibility)


def describe_contrasts(contrasts: Sequence[str]) -> list[dict[str, object]]:
    """What a checkpoint records of its contrasts, in channel order: each one's name, kind
    (``structural`` or ``susceptibility``), and for the susceptibility image its sign in the
    file and whether the patch negates it (:data:`SIGNS`)."""
    record: list[dict[str, object]] = []
    for name in contrasts:
        if name in SUSCEPTIBILITY:
            sign, negated = SIGNS[name]
            record.append({"name": name, "kind": "susceptibility", "sign": sign, "negated": negated})
        else:
            record.append({"name": name, "kind": "structural"})
    return record


def require_contrasts(subjects: Iterable[tuple[str, Iterable[str]]], contrasts: Sequence[str], what: str) -> None:
    """An InputError naming every subject (id, the contrasts it has) that lacks one of
    ``contrasts``, the contrasts it lacks and ``what`` needs them (e.g. ``"the model a1b2…
    (t1w, flair, phase)"``); nothing when each has them all. Checked before any image is read."""
    lacking = []
    for subject, has in subjects:
        has = list(has)
        missing = [c for c in contrasts if c not in has]
        if missing:
            lacking.append(f"{subject} has no {' or '.join(missing)} (it has {', '.join(has)})")
    if lacking:
        shown = "; ".join(lacking[:5]) + (f"; and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise InputError(f"{what} needs the contrasts {', '.join(contrasts)}, and {len(lacking)} subject(s) lack one: "
                         f"{shown}. Give those images (manifest columns named by the contrast), leave those "
                         "subjects out, or use a model trained on the contrasts they have (deep-prl train "
                         "--contrasts).")


def cohort_contrasts(subjects: Iterable[tuple[str, Iterable[str]]], who: str) -> tuple[str, ...]:
    """The contrasts a model trained on these subjects (id, contrasts it has) takes unless told:
    the susceptibility and structural contrasts every subject has, in canonical order
    (:func:`model_contrasts`) — except that subjects that all have the research protocol's
    MP2RAGE and phase take just those (:data:`DEFAULT_MODEL_CONTRASTS`: the paper's network; a
    FLAIR or T1w beside them enters only when asked for). An InputError naming ``who`` when the
    subjects share no susceptibility or no structural contrast."""
    subjects = [(subject, set(has)) for subject, has in subjects]
    shared = set.intersection(*(has for _, has in subjects)) if subjects else set()
    if set(DEFAULT_MODEL_CONTRASTS) <= shared:
        return DEFAULT_MODEL_CONTRASTS
    kinds = {name: sum(name in has for _, has in subjects) for name in (*SUSCEPTIBILITY, *STRUCTURAL)}
    if not any(name in shared for name in SUSCEPTIBILITY) or not any(name in shared for name in STRUCTURAL):
        counts = ", ".join(f"{name} {n}" for name, n in kinds.items() if n)
        raise InputError(f"{who}: its {len(subjects)} subjects share no "
                         f"{'susceptibility' if not any(n in shared for n in SUSCEPTIBILITY) else 'structural'} "
                         f"contrast (subjects with each: {counts or 'none'}), and a model takes the same contrasts "
                         "for every subject. Train on subjects of one protocol (e.g. a manifest of those with a "
                         "phase, another of those with a QSM), or give the missing images.")
    return model_contrasts((name for name in (*SUSCEPTIBILITY, *STRUCTURAL) if name in shared), who)
