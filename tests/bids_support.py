"""A small BIDS dataset of the tiny test subjects, and a tiny calibrated model to score it with."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from conftest import write_subject_files

from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import DeepPRL, ModelConfig

#: Each row of the dataset: (participant, session or None, the PRL lesions of its PRL mask).
ROWS = (("01", None, (0,)), ("02", "a", ()), ("02", "b", (1, 2)), ("03", None, (2,)))


def write_bids_dataset(root: Path, rows=ROWS, *, masks: str = "lesions") -> Path:
    """A BIDS dataset in ``root``: per row a part-phase T2starw and a UNIT1 in ``anat/``, and the
    lesion mask in ``derivatives/<masks>/`` (no PRL masks: the App is for data without truth)."""
    scratch = root.parent / f".{root.name}-scratch"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    pipeline = root / "derivatives" / masks
    pipeline.mkdir(parents=True)
    (pipeline / "dataset_description.json").write_text(json.dumps(
        {"Name": masks, "BIDSVersion": "1.9.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": masks}]}))
    for i, (participant, session, prl) in enumerate(rows):
        paths = write_subject_files(scratch, f"row{i}", seed=i, prl_lesions=prl, rim_lesions=prl)
        prefix = f"sub-{participant}" + (f"_ses-{session}" if session else "")
        where = Path(f"sub-{participant}", *([f"ses-{session}"] if session else []), "anat")
        for source, folder, name in ((paths.image("phase"), root, "part-phase_T2starw"),
                                     (paths.image("mp2rage"), root, "UNIT1"),
                                     (paths.mask, pipeline, "desc-lesion_mask")):
            (folder / where).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / where / f"{prefix}_{name}.nii.gz")
    shutil.rmtree(scratch)
    return root


def tiny_model(path: Path, seed: int = 0) -> Path:
    """An untrained, calibrated tiny network saved at ``path``: scores that vary by lesion, quickly."""
    torch.manual_seed(seed)
    network = DeepPRL(ModelConfig(widths=(2, 4), reduction=2, fc=(8,)), 8).eval()
    checkpoint = Checkpoint(network, 0.5, PatchConfig(size=8))
    return replace(checkpoint, calibration=PlattFit(centre=0.0, scale=1.0, slope=4.0, intercept=0.0)).save(path)
