"""Sign conventions and units of the susceptibility image, checked on the data
(``napari_deep_prl.data.susceptibility``), on the simulator's dark and bright phases and QSM."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_deep_prl._napari.reader import read_path
from napari_deep_prl.base.errors import InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest, write_manifest
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.susceptibility import (
    check_susceptibility,
    paramagnetic_sign,
    qsm_units_problem,
)
from napari_deep_prl.simulate import simulate_cohort, simulate_subject
from napari_deep_prl.simulate.clinical import ClinicalSite, simulate_clinical_subject

#: Brain-sized enough to judge (the check needs 100 mL of brain 10 mm inside its edge), small
#: enough to simulate in about a second.
MEDIUM = {"fov_mm": (120.0, 144.0, 120.0)}


@pytest.fixture(scope="module")
def scans() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Dark and bright filtered phases and QSMs of two clinical subjects, and a research phase."""
    out = {}
    for index in (0, 1):
        for name, site in (("dark", ClinicalSite()), ("bright", ClinicalSite(phase_sign="bright")),
                           ("qsm", ClinicalSite(susceptibility="qsm"))):
            image = simulate_clinical_subject(5, index=index, site=site, contrasts=("t1w",), **MEDIUM).images[
                site.susceptibility]
            out[f"{name}{index}"] = (np.asarray(image.dataobj), image.affine)
    research = simulate_subject(5, voxel_size=(1.0, 1.0, 1.0), contrasts=(), **MEDIUM).subject
    out["research"] = (research.phase, research.affine)
    return out


def warned(image: np.ndarray, affine: np.ndarray, contrast: str, **options) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_susceptibility(image, affine, contrast, "/data/sub-01_scan.nii.gz", **options)
    assert all(issubclass(w.category, InputWarning) for w in caught)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("index", [0, 1])
def test_dark_and_bright_phases_are_told_apart(scans, index):
    dark = paramagnetic_sign(*scans[f"dark{index}"], "phase")
    bright = paramagnetic_sign(*scans[f"bright{index}"], "phase")
    assert dark < -0.1 and bright > 0.1
    assert warned(*scans[f"dark{index}"], "phase") == []
    [message] = warned(*scans[f"bright{index}"], "phase")
    assert message.startswith("/data/sub-01_scan.nii.gz: the phase looks paramagnetic-bright")
    assert "load it with --flip-phase (flip_phase=True)" in message


def test_a_research_phase_is_read_as_dark(scans):
    assert paramagnetic_sign(*scans["research"], "phase") < -0.1
    assert warned(*scans["research"], "phase") == []


def test_a_phase_flipped_the_wrong_way_says_to_drop_the_flip(scans):
    image, affine = scans["dark0"]
    [message] = warned(-image, affine, "phase", flipped=True)
    assert "negated by --flip-phase (flip_phase=True): drop that option" in message


@pytest.mark.parametrize("index", [0, 1])
def test_qsm_is_bright_and_in_ppm(scans, index):
    image, affine = scans[f"qsm{index}"]
    assert paramagnetic_sign(image, affine, "qsm") > 0.1
    assert warned(image, affine, "qsm") == [] and qsm_units_problem(image) is None
    [message] = warned(-image, affine, "qsm")
    assert "the QSM looks paramagnetic-dark" in message and "negate the map" in message
    [message] = warned(image * 1000, affine, "qsm")  # stored in ppb
    assert message.startswith("/data/sub-01_scan.nii.gz: the QSM reads beyond ±10 ppm over ")
    assert "probably stored in ppb or Hz" in message


@pytest.mark.parametrize("tesla", [1.5, 3.0, 7.0])
def test_a_qsm_in_hz_is_told_by_its_median_though_its_tail_stays_within_10(scans, tesla):
    image, affine = scans["qsm0"]
    hz = image * 42.58 * tesla
    assert np.mean(np.abs(hz[hz != 0]) > 10) < 0.05  # the ±10 ppm rule alone would let it pass
    [message] = warned(hz, affine, "qsm")
    assert message.startswith("/data/sub-01_scan.nii.gz: the QSM has a median |value| of ")
    assert "stored in ppb or Hz" in message and "divided by 42.58 times B0 in tesla" in message


def test_noise_and_small_images_are_not_judged(scans):
    noise = np.random.default_rng(0).normal(0, 0.02, (112, 112, 108)).astype(np.float32)
    assert paramagnetic_sign(noise, np.eye(4), "phase") is None
    image, affine = scans["bright0"]
    assert paramagnetic_sign(image[:40, :40], affine, "phase") is None  # too little brain to tell
    assert warned(noise, np.eye(4), "phase") == []


@pytest.fixture(scope="module")
def bright_manifest(tmp_path_factory) -> Path:
    """A clinical subject whose filtered phase is paramagnetic-bright, with a T1w."""
    return run_to_end(simulate_cohort(tmp_path_factory.mktemp("sites") / "bright", 1, 5, prl_fraction=0.5,
                                      contrasts=("t1w",), site=ClinicalSite(phase_sign="bright"), **MEDIUM))


def test_loading_a_bright_phase_warns_naming_the_file_and_flip_phase_silences_it(bright_manifest):
    paths = replace(read_manifest(bright_manifest)[0], reference="phase")  # loaded on the phase's own grid
    with warnings.catch_warnings(record=True) as caught:  # lost lesions may be reported too
        warnings.simplefilter("always")
        paths.load()
    assert next(str(w.message) for w in caught if "paramagnetic" in str(w.message)).startswith(
        f"{paths.image('phase')}: the phase looks paramagnetic-bright")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flipped = paths.load(flip_phase=True)
    assert not any("paramagnetic" in str(w.message) for w in caught)
    assert np.array_equal(flipped.phase, -np.asanyarray(nib.load(paths.image("phase")).dataobj))


def _ppb_qsm_subject(write_subject, save_nifti) -> SubjectPaths:
    """A small subject whose QSM is stored in ppb (its values a thousand times the ppm)."""
    paths = write_subject("sub-01")
    image = nib.load(paths.image("phase"))
    qsm = save_nifti(paths.mask.parent / "sub-01_qsm.nii.gz", np.asarray(image.dataobj) * 1000, image.affine)
    return SubjectPaths("sub-01", (("qsm", qsm), ("t1w", paths.image("mp2rage"))), paths.mask)


@pytest.mark.filterwarnings("always::napari_deep_prl.base.errors.InputWarning")  # printed by the CLI
def test_the_cli_warns_of_a_bright_phase_and_a_qsm_in_ppb_naming_the_file(bright_manifest, write_subject,
                                                                           save_nifti, tmp_path, capsys):
    phase = read_manifest(bright_manifest)[0].image("phase")
    assert main(["lesions", str(bright_manifest), "-o", str(tmp_path / "lesions.tsv"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {phase}: the phase looks paramagnetic-bright" in err and "--flip-phase" in err
    qsm = _ppb_qsm_subject(write_subject, save_nifti)
    assert main(["lesions", "--qsm", str(qsm.image("qsm")), "--t1w", str(qsm.image("t1w")), "--mask",
                 str(qsm.mask), "-o", str(tmp_path / "qsm.tsv")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {qsm.image('qsm')}: the QSM reads beyond ±10 ppm" in err and "stored in ppb" in err


def test_the_napari_reader_warns_of_a_bright_phase_and_a_qsm_in_ppb_naming_the_file(bright_manifest, write_subject,
                                                                                     save_nifti, tmp_path):
    """napari shows a reader's warnings as notifications."""
    phase = read_manifest(bright_manifest)[0].image("phase")
    with pytest.warns(InputWarning, match=f"{re.escape(str(phase))}: the phase looks paramagnetic-bright"):
        read_path(str(bright_manifest))
    qsm = _ppb_qsm_subject(write_subject, save_nifti)
    manifest = write_manifest([qsm], tmp_path / "qsm.csv")
    with pytest.warns(InputWarning, match=f"{re.escape(str(qsm.image('qsm')))}: the QSM reads beyond ±10 ppm"):
        read_path(str(manifest))
