"""The methods compared by the cross-validation harness, built by name.

========================  =======================================================================
``deep_prl``              Deep-PRL (mask attention by concatenation), per-subject normalisation
``deep_prl_patchnorm``    the same with the paper's per-patch min–max normalisation
``no_attention``          ablation: Deep-PRL without the mask fusion (``fusion="none"``)
``rimnet``                RimNet-like baseline (:mod:`napari_deep_prl.evaluation.baselines`)
``radiomics``             APRL-like radiomics + logistic regression (:mod:`~.baselines`)
========================  =======================================================================

Every CNN method trains with :func:`napari_deep_prl.model.train.train` on the same patches, epochs and
seeds, so the table isolates what each variant changes. Patch sets are built once per patch
configuration and shared by the methods that use it; with ``cache`` they are also kept on disk
(``.npy`` patches, memory-mapped when read back, and ``.npz`` labels) so fold jobs of one cohort
cut them once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import write_atomic
from napari_deep_prl.data.contrasts import cohort_contrasts
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.evaluation.crossval import Fitted, Method


@dataclass(frozen=True)
class MethodSettings:
    """What the user chooses for all methods of one cross-validation run."""

    epochs: int = 100
    preset: str = "default"
    patch_size: int = 28
    device: str = "auto"
    exclude_confluent: bool = True
    cache: Path | None = None
    train_overrides: dict = field(default_factory=dict)


#: Prefix of the columns holding a CNN's raw (uncalibrated) probability of each test-time view.
RAW_VIEW = "raw_view_"


@dataclass
class _FittedCNN:
    checkpoint: object
    threshold: float
    val_f1: float
    patches: object
    device: str
    precision: str

    def predict(self, subjects: Sequence[str]) -> pd.DataFrame:
        """The model's output, and the network's raw probability of each view (``raw_view_<i>``)."""
        from napari_deep_prl.model.inference import view_probabilities
        from napari_deep_prl.model.metrics import model_output

        test = self.patches.select(list(subjects)).originals()
        raw = view_probabilities([self.checkpoint], test.x, device=self.device, precision=self.precision,
                                 calibrated=False)
        return pd.DataFrame({"subject": test.subject, "lesion": test.lesion,
                             "prl_probability": model_output(raw, self.checkpoint.calibration),
                             **{f"{RAW_VIEW}{i}": row for i, row in enumerate(raw)}})


@dataclass
class CNNMethod:
    """A network of :mod:`napari_deep_prl.model.network` trained by :func:`napari_deep_prl.model.train.train`.

    ``blank_mask`` records that the patches' mask channel was zeroed (the RimNet-like
    baseline, :func:`napari_deep_prl.evaluation.baselines.rimnet_patches`).
    """

    name: str
    patches: object
    train_config: object
    blank_mask: bool = False

    @property
    def threshold_rule(self) -> str:
        return self.train_config.threshold_rule

    def options(self) -> dict:
        config = asdict(self.train_config)
        for key in ("seed", "device", "stack"):  # chosen per fit / per machine, not a method setting
            config.pop(key, None)
        return {"kind": "cnn", "train": config, "patch": self.patches.config.to_dict(),
                "blank_mask": self.blank_mask}

    def fit(self, train: Sequence[str], val: Sequence[str], *, seed: int
            ) -> Generator[Progress, None, Fitted]:
        from napari_deep_prl.model.train import train as train_model

        patches = self.patches.select([*train, *val])
        result = yield from train_model(patches, replace(self.train_config, seed=seed),
                                        val_subjects=list(val))
        return _FittedCNN(result.checkpoint, result.checkpoint.threshold,
                          result.checkpoint.validation["val_f1"], self.patches, self.train_config.device,
                          self.train_config.precision)


def patch_set(cohort: Sequence, config: PatchConfig, settings: MethodSettings
              ) -> Generator[Progress, None, object]:
    """The cohort's training patches (with positive shifts), from the cache when there."""
    from napari_deep_prl.model.dataset import build_patchset

    stem = None
    if settings.cache is not None:
        key = json.dumps([config.to_dict(), settings.exclude_confluent,
                          [[str(v) for v in asdict(s).values()] for s in cohort]])
        stem = Path(settings.cache) / f"patches-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        if stem.with_suffix(".npz").exists() and stem.with_suffix(".npy").exists():
            return _load_patchset(stem, config)
    patches = yield from build_patchset(cohort, config,
                                        exclude_confluent=settings.exclude_confluent)
    if stem is not None:
        _save_patchset(stem, patches)
    return patches


def _save_patchset(stem: Path, patches: object) -> None:
    """The patches into ``stem.npy``, read and written a run at a time (those of a subject that
    keeps its volumes are cut there: the set is never held whole), then labels and ids into
    ``stem.npz``. Each is written aside then renamed, the ``.npz`` last: parallel jobs never
    read half a cache."""
    from napari_deep_prl.data.patches import chunks

    def write_patches(fh: IO[bytes]) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": patches.x.shape}
        np.lib.format.write_array_header_1_0(fh, header)
        for run in chunks(len(patches), patches.config.size):
            fh.write(patches.x[run].tobytes())

    write_atomic(stem.with_suffix(".npy"), write_patches, binary=True)
    known = {} if patches.part is None else {"part": patches.part}
    write_atomic(stem.with_suffix(".npz"), lambda fh: np.savez(fh, y=patches.y, subject=patches.subject.astype(str),
                                                               lesion=patches.lesion, shifted=patches.shifted, **known),
                 binary=True)


def _load_patchset(stem: Path, config: PatchConfig) -> object:
    """A cached set; its patches stay on disk (memory-mapped), read by rows as training asks."""
    from napari_deep_prl.model.dataset import PatchSet

    with np.load(stem.with_suffix(".npz")) as data:
        return PatchSet(np.load(stem.with_suffix(".npy"), mmap_mode="r"), data["y"], data["subject"].astype(object),
                        data["lesion"], data["shifted"], config, data["part"] if "part" in data else None)


#: CNN variants: (model overrides, patch normalisation, blank mask channel).
CNN_VARIANTS: dict[str, tuple[dict, str, bool]] = {
    "deep_prl": ({"fusion": "concat"}, "subject", False),
    "deep_prl_patchnorm": ({"fusion": "concat"}, "patch", False),
    "no_attention": ({"fusion": "none"}, "subject", False),
    "rimnet": ({"fusion": "none"}, "subject", True),
}


def build_methods(names: Sequence[str], cohort: Sequence, settings: MethodSettings,
                  lesions: pd.DataFrame) -> Generator[Progress, None, list[Method]]:
    """The named methods, ready to fit on the cohort's ``lesions`` that the harness tests (the
    ``tested`` rows of :func:`~napari_deep_prl.evaluation.crossval.lesion_truth`); patch sets
    are built once per configuration."""
    from napari_deep_prl.evaluation.baselines import RadiomicsMethod

    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise InputError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHOD_NAMES)}")
    lesions = lesions[lesions["tested"]]
    # Every method sees the same images: the contrasts a model trained on the cohort takes.
    contrasts = cohort_contrasts(((p.subject, (c for c, _ in p.images)) for p in cohort), "the cohort")
    patch_sets: dict[str, object] = {}
    methods: list[Method] = []
    for name in names:
        if name == "radiomics":
            methods.append((yield from RadiomicsMethod.build(cohort, lesions, contrasts)))
            continue
        normalisation = CNN_VARIANTS[name][1]
        if normalisation not in patch_sets:
            patch_sets[normalisation] = yield from patch_set(
                cohort, PatchConfig(size=settings.patch_size, normalisation=normalisation, contrasts=contrasts),
                settings)
        methods.append(_cnn_method(name, patch_sets[normalisation], settings))
    return methods


def _cnn_method(name: str, patches: object, settings: MethodSettings) -> CNNMethod:
    from napari_deep_prl.evaluation.baselines import rimnet_patches
    from napari_deep_prl.model.network import model_config
    from napari_deep_prl.model.train import TrainConfig

    overrides, _, blank = CNN_VARIANTS[name]
    config = TrainConfig(epochs=settings.epochs, device=settings.device,
                         model=model_config(settings.preset, **overrides),
                         **settings.train_overrides)
    return CNNMethod(name, rimnet_patches(patches) if blank else patches, config, blank)


METHOD_NAMES: tuple[str, ...] = (*CNN_VARIANTS, "radiomics")
DEFAULT_METHODS: tuple[str, ...] = ("deep_prl", "no_attention", "radiomics", "rimnet")
