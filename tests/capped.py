"""The command line in a child process under an address-space limit: a memory regression then
fails fast with an error instead of swapping the machine (and never costs the test process)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_deep_prl.data.images import SubjectPaths

#: Address space of a capped command: imports and one small subject take about 1.1 GB of it
#: (with the environment below); what the fixed defects allocated (3 to 48 GB) does not fit.
MEMORY = 2 * 1024**3
#: Keeps the reserved (not used) address space of threads small and the same on every machine.
ENVIRONMENT = {"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str | Path, memory: int = MEMORY, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``deep-prl ARGS`` with at most ``memory`` bytes of address space; stdout and stderr as text."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", *map(str, args)], preexec_fn=limit,
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **ENVIRONMENT}, timeout=600)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error of a refused command, after checking it is one line and no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def lattice_subject(folder: Path, name: str, n_lesions: int, shape=(112, 112, 108)) -> SubjectPaths:
    """A subject whose mask holds ``n_lesions`` cubes of 2 voxels, 5 voxels apart (one PRL in 12)."""
    sites = np.stack(np.meshgrid(*(np.arange(2, s - 3, 5) for s in shape), indexing="ij"), -1).reshape(-1, 3)
    assert n_lesions <= len(sites), f"at most {len(sites)} lesions fit"
    rng = np.random.default_rng(0)
    mask, prl = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for i, (x, y, z) in enumerate(sites[:n_lesions]):
        mask[x:x + 2, y:y + 2, z:z + 2] = 1
        prl[x:x + 2, y:y + 2, z:z + 2] = i % 12 == 0
    images = {"phase": rng.normal(0, 0.02, shape).astype(np.float32),
              "mp2rage": np.where(mask > 0, 0.4, 0.8 + rng.normal(0, 0.02, shape)).astype(np.float32),
              "mask": mask, "prlmask": prl}
    (folder / name).mkdir(parents=True)
    files = {role: folder / name / f"{name}_{role}.nii.gz" for role in images}
    for role, data in images.items():
        nib.save(nib.Nifti1Image(data, np.eye(4)), files[role])
    images = (("phase", files["phase"]), ("mp2rage", files["mp2rage"]))
    return SubjectPaths(name, images, files["mask"], files["prlmask"])
