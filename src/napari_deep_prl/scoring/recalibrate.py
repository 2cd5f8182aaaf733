"""Recalibrating a model for a new site: its calibration and threshold refitted on a few of the
site's labelled lesions, its network kept.

A model trained at one site over- or under-calls at another: another scanner, protocol or
phase filter moves its raw probabilities, and with them what its calibration
(:class:`~napari_deep_prl.model.metrics.PlattFit`) makes of them, while the network may still
rank the site's lesions well. :func:`recalibrate` scores the site's labelled lesions with each
network's *raw* probabilities on the views the model is scored on
(:func:`~napari_deep_prl.model.inference.checkpoint_views`, every view of every lesion) and
chooses its operating point again by the rule it was trained with
(:func:`~napari_deep_prl.model.metrics.operating_point`: under the default ``"calibrated"`` rule
a Platt fit of all the views, cut at half the best F1; under ``"best_f1"`` the raw probability
cut where F1 peaks). A cross-fitted ensemble's networks then share one threshold, chosen on their
pooled outputs as training chose it (:mod:`napari_deep_prl.model.crossfit`). The weights do not
change; the calibration is part of a checkpoint's id, so a recalibrated model has a new id (its
stored scores are never taken for the old model's), and its metadata records the recalibration
(``recalibration``: site, where the labels came from, lesion and PRL counts, date, the previous
id, calibration and threshold).

Guard rails: fewer than :data:`MIN_LESIONS` labelled lesions, :data:`MIN_PRLS` PRLs or
:data:`MIN_OTHERS` other lesions is an error saying how many more are needed, and so is a site
where the network's probabilities do not rise with the labels (no calibration can be fitted).
A new calibration very different from the old one (:func:`calibration_shift`) is a warning:
the site's images may differ from the training data more than a calibration can make up for
(a phase of the other sign, another contrast, wrong labels).

The figures (:attr:`Recalibration.before`, :attr:`Recalibration.after`) are those of the model's
output on the very lesions it was recalibrated on, as scoring computes it: they show what
changed, not how well the model will do on the site's other lesions (docs/site_scans.md shows
that on held-out lesions).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logit

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.cohort import require_truth
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.crossfit import ensemble_info
from napari_deep_prl.model.dataset import PatchSet, build_patchset
from napari_deep_prl.model.inference import from_samples, view_probabilities
from napari_deep_prl.model.metrics import (
    THRESHOLD_RULES,
    metrics_from_predictions,
    model_output,
    operating_point,
)
from napari_deep_prl.scoring.score import decision_threshold

#: Labelled lesions needed to recalibrate: a Platt fit has two parameters, and the best F1 that
#: places the threshold moves by a lesion's worth on a handful of PRLs.
MIN_LESIONS = 20
#: PRLs among them, and other lesions: both classes place the fit.
MIN_PRLS = 5
MIN_OTHERS = 5
#: A new calibration is "very different" when it changes the odds of a PRL the model gives the
#: site's lesions by more than this factor on average (:func:`calibration_shift`).
ODDS_FACTOR = 4.0


@dataclass
class Recalibration:
    """The recalibrated networks, and the model's figures on the site's labelled lesions."""

    checkpoints: list[Checkpoint]
    #: The model's output on the labelled lesions before and after: ``lesions``, ``prls``,
    #: ``observed_rate``, ``mean_probability``, ``brier``, ``threshold``, ``f1``, ``roc_auc``...
    before: dict[str, float]
    after: dict[str, float]
    #: What each network's metadata records (``recalibration``), the first network's.
    record: dict[str, Any]
    #: Networks whose new calibration is very different from the old (one line each), warned about.
    shifts: list[str]

    def summary(self) -> str:
        """Before and after, in one paragraph, for the CLI and the model panel."""
        b, a = self.before, self.after
        return (f"recalibrated for {self.record['site']} on {b['lesions']} labelled lesions ({b['prls']} PRL, "
                f"{b['observed_rate']:.1%}): mean PRL probability {b['mean_probability']:.1%} -> "
                f"{a['mean_probability']:.1%}, Brier score {b['brier']:.3f} -> {a['brier']:.3f}, "
                f"F1 {_shown(b['f1'])} -> {_shown(a['f1'])} (threshold {b['threshold']:.3f} -> "
                f"{a['threshold']:.3f}), ROC AUC {_shown(b['roc_auc'])} -> {_shown(a['roc_auc'])}. Figures on "
                "the lesions fitted on, not held-out ones")


def _shown(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def check_site_labels(truth: np.ndarray, where: str) -> None:
    """Refuse labels too few to recalibrate on, saying how many more of which class are needed."""
    truth = np.asarray(truth).astype(bool)
    prls, others = int(truth.sum()), int((~truth).sum())
    missing = [f"{need - have} more {kind}" for kind, have, need in (
        ("PRL(s)", prls, MIN_PRLS), ("non-PRL lesion(s)", others, MIN_OTHERS),
        ("lesion(s) of either kind", prls + others, MIN_LESIONS)) if have < need]
    if missing:
        raise InputError(f"{where}: {prls + others} labelled lesion(s), {prls} of them PRL; recalibrating needs at "
                         f"least {MIN_LESIONS} labelled lesions with at least {MIN_PRLS} PRLs and {MIN_OTHERS} "
                         f"other lesions among them. Label {' and '.join(missing)} at this site, then try again.")


def threshold_rule(checkpoint: Checkpoint) -> str:
    """The rule the network's operating point was chosen by (:data:`THRESHOLD_RULES`): as
    recorded by its training, else ``"calibrated"`` for a calibrated network and ``"best_f1"``."""
    config = checkpoint.metadata.get("training", {}).get("config")
    rule = config.get("threshold_rule") if isinstance(config, dict) else None
    if rule in THRESHOLD_RULES:
        return rule
    return "calibrated" if checkpoint.calibration is not None else "best_f1"


def calibration_shift(old: Checkpoint, new: Checkpoint, raw: np.ndarray) -> float:
    """How much ``new``'s calibration changes the model's output on the raw probabilities
    ``raw`` (views × lesions) from ``old``'s: the mean absolute change of its log-odds, e.g.
    log 4 when the odds of a PRL change by a factor of 4 on average. Probabilities are taken
    between 1 % and 99 %, so that lesions sure either way under both (most lesions) count as
    unchanged."""
    def log_odds(c: Checkpoint) -> np.ndarray:
        return logit(np.clip(c.calibrate(raw), 0.01, 0.99))

    return float(np.mean(np.abs(log_odds(new) - log_odds(old))))


def _very_different(old: Checkpoint, new: Checkpoint, raw: np.ndarray) -> str:
    shift = calibration_shift(old, new, raw)
    if shift <= math.log(ODDS_FACTOR):
        return ""
    return f"network {old.id}'s odds of a PRL change by a factor of {math.exp(shift):.2g} on average"


def site_figures(truth: np.ndarray, output: np.ndarray, threshold: float) -> dict[str, float]:
    """The model's output ``output`` on labelled lesions: observed and mean predicted PRL rate,
    Brier score and the report's metrics at ``threshold``."""
    truth = np.asarray(truth).astype(int)
    figures = metrics_from_predictions(truth, output, threshold=threshold)
    return {"lesions": len(truth), "prls": int(truth.sum()), "observed_rate": float(truth.mean()),
            "mean_probability": float(np.mean(output)), "brier": float(np.mean((output - truth) ** 2)),
            "threshold": float(threshold), **figures}


def recalibrate(checkpoints: Sequence[Checkpoint], labelled: PatchSet | Mapping[PatchConfig, PatchSet], *,
                site: str, labels_from: str, device: str = "auto", precision: str = "float32",
                stop: threading.Event | None = None) -> Generator[Progress, None, Recalibration | None]:
    """The networks ``checkpoints`` (one model: a network or an ensemble's members) recalibrated
    on the site's labelled lesions (see the module doc); ``None`` when stopped.

    ``labelled``: the lesions' patches with their labels (the originals only are used), one set
    per patch setting of the networks (the same lesions in each); ``site`` names the site and
    ``labels_from`` where its labels came from (a manifest, a project's labels), for the record.
    ``precision`` float32 by default, as training validates.
    """
    if not checkpoints:
        raise InputError("no model given; pass at least one checkpoint")
    sets = _per_config(checkpoints, labelled)
    first = next(iter(sets.values()))
    truth = first.y.astype(bool)
    check_site_labels(truth, f"{site} ({labels_from})")
    samples_before, raws = [], []
    for i, checkpoint in enumerate(checkpoints):
        if stop is not None and stop.is_set():
            return None
        yield Progress(i, len(checkpoints), "network", f"scoring network {i + 1}/{len(checkpoints)}")
        raw = view_probabilities([checkpoint], sets[checkpoint.patch_config].x, calibrated=False,
                                 device=device, precision=precision)
        raws.append(raw)
        samples_before.append(checkpoint.calibrate(raw))
    yield Progress(len(checkpoints), len(checkpoints), "network", "fitting")

    rules = [threshold_rule(c) for c in checkpoints]
    points = [operating_point(truth, raw, rule) for raw, rule in zip(raws, rules)]
    failed = [c.id for c, p, rule in zip(checkpoints, points, rules) if rule == "calibrated" and p.calibration is None]
    if failed:
        raise InputError(f"{site} ({labels_from}): the probabilities of network(s) {', '.join(failed)} do not rise "
                         f"with the labels of these {len(truth)} lesions ({int(truth.sum())} PRL), so no calibration "
                         "can be fitted. Check that the site's images are what the model expects (the phase's sign: "
                         "--flip-phase; the contrasts) and that the labels are right; if they are, the network does "
                         "not suit this site: fine-tune it on the site's labels instead")
    thresholds = [p.threshold for p in points]
    ensemble = ensemble_info(list(checkpoints)) if len(checkpoints) > 1 else None
    if ensemble is not None:  # one shared cut, chosen on the pooled network outputs as cross-fitting does
        pooled = np.concatenate([model_output(raw, p.calibration) for raw, p in zip(raws, points)])
        shared = THRESHOLD_RULES[rules[0]](np.tile(truth, len(checkpoints)), pooled)[0]
        thresholds = [shared] * len(checkpoints)

    date = datetime.now(UTC).isoformat(timespec="seconds")
    new = []
    for c, point, threshold, rule in zip(checkpoints, points, thresholds, rules):
        record = {"site": site, "labels_from": labels_from, "lesions": len(truth), "prls": int(truth.sum()),
                  "date": date, "rule": rule, "previous_id": c.id, "previous_threshold": float(c.threshold),
                  "previous_calibration": None if c.calibration is None else asdict(c.calibration)}
        metadata = {**c.metadata, "recalibration": record}
        if ensemble is not None:
            metadata["ensemble"] = {**c.metadata["ensemble"], "threshold": float(threshold),
                                    "member_threshold": float(point.threshold)}
        new.append(replace(c, threshold=float(threshold), calibration=point.calibration, metadata=metadata))

    samples_after = [c.calibrate(raw) for c, raw in zip(new, raws)]
    before = site_figures(truth, from_samples(np.concatenate(samples_before)).probability,
                          decision_threshold(checkpoints))
    after = site_figures(truth, from_samples(np.concatenate(samples_after)).probability, decision_threshold(new))
    shifts = [line for old, c, raw in zip(checkpoints, new, raws) if (line := _very_different(old, c, raw))]
    if shifts:
        warnings.warn(InputWarning(
            f"the new calibration for {site} is very different from the model's ({'; '.join(shifts)}): the site's "
            "images may differ from the training data more than a calibration can make up for. Check the phase's "
            "sign (--flip-phase), the contrasts and the labels; with more labels, fine-tuning may serve the site "
            "better"), stacklevel=2)
    return Recalibration(new, before, after, new[0].metadata["recalibration"], shifts)


def _per_config(checkpoints: Sequence[Checkpoint],
                labelled: PatchSet | Mapping[PatchConfig, PatchSet]) -> dict[PatchConfig, PatchSet]:
    """One set of original patches per patch setting of the networks, the same lesions in each."""
    given = {labelled.config: labelled} if isinstance(labelled, PatchSet) else dict(labelled)
    sets = {}
    for config in dict.fromkeys(c.patch_config for c in checkpoints):
        if config not in given:
            raise InputError(f"no patches cut with the settings {config} of a network to recalibrate")
        sets[config] = given[config].originals()
    keys = [(tuple(s.subject), tuple(s.lesion)) for s in sets.values()]
    if any(k != keys[0] for k in keys):
        raise InputError("the patch sets of the networks hold different lesions; cut them from the same labels")
    return sets


def recalibrate_cohort(checkpoints: Sequence[Checkpoint], cohort: Sequence[SubjectPaths], *, site: str,
                       labels_from: str, flip_phase: bool = False, exclude_confluent: bool = False,
                       device: str = "auto", precision: str = "float32",
                       stop: threading.Event | None = None) -> Generator[Progress, None, Recalibration | None]:
    """:func:`recalibrate` on the labelled lesions of a cohort (subjects with a PRL mask or a
    lesion label table; lesions a label table leaves out are not used). Subjects are loaded
    once per distinct patch setting of the networks (once for one model)."""
    require_truth(cohort, "recalibrating")
    sets = {}
    for config in dict.fromkeys(c.patch_config for c in checkpoints):
        sets[config] = yield from build_patchset(cohort, config, oversample_shift=0,
                                                 exclude_confluent=exclude_confluent, flip_phase=flip_phase)
    return (yield from recalibrate(checkpoints, sets, site=site, labels_from=labels_from, device=device,
                                   precision=precision, stop=stop))


def default_site(path: str | Path) -> str:
    """A site's name from its manifest or folder: the folder's name (a manifest named
    ``manifest.csv`` is named by its folder), else the file's stem."""
    path = Path(path).absolute()
    return path.name if path.is_dir() else path.parent.name if path.stem == "manifest" else path.stem
