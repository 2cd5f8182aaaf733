"""The simulator's sites: the research layout unchanged, and a clinical site's scans — each image
on its own grid, co-registered in world space, QSM and filtered phase with the signs recorded.

The clinical files are read with nibabel directly: the cohort reader takes one grid today.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.simulate import (
    ClinicalSite,
    simulate_clinical_subject,
    simulate_cohort,
    simulate_subject,
)

#: A small head: a clinical subject (1 mm structural grid, 0.6 x 0.6 x 2 mm slab) in under a second.
SMALL = {"fov_mm": (80.0, 96.0, 80.0)}
#: Low noise, many lesions, B0 along z: lesions and rims stand out, so the checks below are sharp.
CLEAR = {**SMALL, "noise": 0.01, "n_lesions": 40, "b0_direction": (0.0, 0.0, 1.0)}
#: World-space shifts (mm) tried when looking for the best alignment of two images.
SHIFTS = np.arange(-3.0, 3.5, 1.0)
IRON_KINDS = ["full_rim", "partial_rim", "homogeneous"]


def _digest(folder: Path) -> str:
    """sha256 of a cohort folder's contents: every table's bytes, every image's voxels, affine
    and description (not the gzip stream, which may differ between zlib versions)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.name.endswith(".nii.gz"):
            image = nib.load(path)
            data = np.asanyarray(image.dataobj)
            digest.update(str(data.dtype).encode() + data.tobytes() + image.affine.tobytes()
                          + image.header["descrip"].tobytes())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_the_research_site_is_the_default_and_clinical_options_leave_it_alone(tmp_path):
    """The research layout is what a cohort gets without a site, through Python and the CLI.
    (Its outputs were checked byte for byte against the simulator before sites existed when the
    clinical site was added; a digest here would break on any numpy or scipy upgrade.)"""
    small = {"fov_mm": (80.0, 96.0, 80.0), "voxel_size": (1.25, 1.25, 1.25)}
    run_to_end(simulate_cohort(tmp_path / "default", 1, 5, prl_fraction=0.5, **small))
    run_to_end(simulate_cohort(tmp_path / "research", 1, 5, prl_fraction=0.5, site="research", **small))
    assert _digest(tmp_path / "default") == _digest(tmp_path / "research")
    common = ["--subjects", "1", "--seed", "4", "--fov", "80", "96", "80", "--prl-fraction", "0.5", "--quiet"]
    assert main(["simulate", str(tmp_path / "cli"), *common]) == 0
    assert main(["simulate", str(tmp_path / "cli_research"), "--site", "research", *common]) == 0
    assert _digest(tmp_path / "cli") == _digest(tmp_path / "cli_research")
    assert sorted(p.name for p in (tmp_path / "cli").rglob("*")) == sorted(
        p.name for p in (tmp_path / "cli_research").rglob("*"))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """The same two clinical subjects written with a QSM, a dark and a bright filtered phase."""
    root = tmp_path_factory.mktemp("clinical")
    sites = {"qsm": ClinicalSite(susceptibility="qsm"), "dark": ClinicalSite(),
             "bright": ClinicalSite(phase_sign="bright")}
    for name, site in sites.items():
        run_to_end(simulate_cohort(root / name, 2, 3, prl_fraction=0.5, site=site,
                                   contrasts=("t1w", "flair", "magnitude"), **CLEAR))
    return root


def _images(folder: Path, subject: str) -> dict[str, nib.Nifti1Image]:
    row = pd.read_csv(folder / "manifest.csv").set_index("subject").loc[subject]
    return {column: nib.load(folder / path) for column, path in row.items()}


def _data(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(image.dataobj, dtype=np.float32)


def test_the_manifest_names_the_contrasts(cohorts):
    for name, column in (("qsm", "qsm"), ("dark", "phase"), ("bright", "phase")):
        lines = (cohorts / name / "manifest.csv").read_text().splitlines()
        assert lines[0] == f"subject,{column},t1w,flair,mask,prl_mask,magnitude"
        assert lines[1].startswith(f"sub-001,sub-001/sub-001_{column}.nii.gz,sub-001/sub-001_t1w.nii.gz")
        assert len(lines) == 3
    facts = pd.read_csv(cohorts / "bright" / "subjects.tsv", sep="\t")
    assert list(facts["site"]) == ["clinical"] * 2 and list(facts["susceptibility"]) == ["phase"] * 2
    assert list(facts["phase_sign"]) == ["bright"] * 2
    qsm_facts = pd.read_csv(cohorts / "qsm" / "subjects.tsv", sep="\t")
    assert list(qsm_facts["susceptibility"]) == ["qsm"] * 2 and qsm_facts["phase_sign"].isna().all()


def test_the_grids_are_a_tilted_anisotropic_slab_and_a_1mm_structural_grid(cohorts):
    facts = pd.read_csv(cohorts / "qsm" / "subjects.tsv", sep="\t").set_index("subject")
    truth = pd.read_csv(cohorts / "qsm" / "lesions_truth.tsv", sep="\t")
    for subject in ("sub-001", "sub-002"):
        images = _images(cohorts / "qsm", subject)
        slab = images["qsm"].affine
        assert np.allclose(np.linalg.norm(slab[:3, :3], axis=0), (0.6, 0.6, 2.0), atol=1e-4)
        axes = slab[:3, :3] / np.linalg.norm(slab[:3, :3], axis=0)
        assert np.allclose(axes[:, 0], (1, 0, 0), atol=1e-5)  # rotated about the left-right axis
        tilt = np.degrees(np.arctan2(axes[2, 1], axes[1, 1]))  # the in-plane y axis raised towards z
        assert 10 <= abs(tilt) <= 15 and tilt == pytest.approx(facts.loc[subject, "tilt_deg"], abs=1e-2)
        assert images["magnitude"].shape == images["qsm"].shape
        assert np.allclose(images["magnitude"].affine, slab)
        structural = images["mask"].affine
        assert images["mask"].shape == (80, 96, 80)
        assert np.allclose(structural[:3, :3], np.eye(3))  # 1 mm isotropic, axis-aligned
        for name in ("t1w", "flair", "prl_mask"):
            assert images[name].shape == images["mask"].shape and np.allclose(images[name].affine, structural), name
        assert images["mask"].get_data_dtype() == np.uint8 and images["prl_mask"].get_data_dtype() == np.uint8
        assert images["qsm"].get_data_dtype() == np.float32
        # Lesion ids are the mask's own (26-connected components), centres in world mm by its affine.
        mine = truth[truth["subject"] == subject]
        labels = label_lesions(np.asarray(images["mask"].dataobj), images["mask"].header.get_zooms()[:3])
        assert list(mine["lesion"]) == list(np.unique(labels[labels > 0]))
        centres = np.array(ndimage.center_of_mass(labels > 0, labels, mine["lesion"]))
        world = centres @ structural[:3, :3].T + structural[:3, 3]
        assert np.allclose(world, mine[["x_mm", "y_mm", "z_mm"]], atol=1e-3)
        # Every lesion lies inside the slab.
        inside = (world - slab[:3, 3]) @ np.linalg.inv(slab[:3, :3]).T
        assert ((inside >= 0) & (inside <= np.array(images["qsm"].shape) - 1)).all()
    offsets = facts[["head_offset_x_mm", "head_offset_y_mm", "head_offset_z_mm"]].to_numpy()
    assert np.abs(offsets).max() > 1  # the head is not at the scanner's origin: only the affines tell


def _best_shift(image: nib.Nifti1Image, template: np.ndarray, template_affine: np.ndarray,
                sign: float = 1.0) -> list[float]:
    """The world shift (mm, per axis) of ``template`` that best matches ``image``'s local contrast
    (looked for in the box of ``image`` around the template, to keep it quick)."""
    data, affine = _data(image), image.affine
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    to_image = np.linalg.inv(affine) @ template_affine
    inside = np.argwhere(template > 0)
    corners = np.array(np.meshgrid(*zip(inside.min(axis=0), inside.max(axis=0)), indexing="ij")).reshape(3, -1).T
    seen_at = corners @ to_image[:3, :3].T + to_image[:3, 3]
    margin = 2 * SHIFTS.max() / vox + 2
    lo = np.clip(np.floor(seen_at.min(axis=0) - margin), 0, None).astype(int)
    hi = np.minimum(np.ceil(seen_at.max(axis=0) + margin).astype(int) + 1, data.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    contrast = (sign * (data - ndimage.gaussian_filter(data, 3.0 / vox)))[box]
    best = []
    for axis in range(3):
        scores = []
        for shift in SHIFTS:
            moved = template_affine.copy()
            moved[axis, 3] += shift
            mapping = np.linalg.inv(moved) @ affine
            seen = ndimage.affine_transform(template, mapping[:3, :3], mapping[:3, :3] @ lo + mapping[:3, 3],
                                            output_shape=contrast.shape, order=1)
            scores.append(float(np.sum(contrast * seen)))
        best.append(float(SHIFTS[int(np.argmax(scores))]))
    return best


def _halves(folder: Path, subject: str) -> list[pd.DataFrame]:
    """The subject's lesions in front of the head's centre and those behind it: a wrong tilt
    moves them opposite ways, which one shift for all lesions would average out."""
    truth = pd.read_csv(folder / "lesions_truth.tsv", sep="\t")
    truth = truth[truth["subject"] == subject]
    front = truth["y_mm"] > truth["y_mm"].median()
    return [truth[front], truth[~front]]


def _template(mask: nib.Nifti1Image, lesions: pd.DataFrame) -> np.ndarray:
    labels = label_lesions(np.asarray(mask.dataobj), mask.header.get_zooms()[:3])
    return np.isin(labels, lesions["lesion"]).astype(np.float32)


def _tilted_the_other_way(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` with its affine's rotation about x reversed, about the grid's centre."""
    affine, centre = image.affine.copy(), (np.array(image.shape) - 1) / 2
    world_centre = affine[:3, :3] @ centre + affine[:3, 3]
    affine[1, 2], affine[2, 1] = -affine[1, 2], -affine[2, 1]
    affine[:3, 3] = world_centre - affine[:3, :3] @ centre
    return nib.Nifti1Image(_data(image), affine)


def test_the_images_agree_in_world_space(cohorts):
    """Lesions are where the affines say in every image: the best-matching world shift of the
    lesion mask (by its own affine) onto each image is zero, for the lesions in the front and in
    the back half of the head. On the QSM the paramagnetic lesions show (rims, homogeneous iron),
    on the FLAIR (bright) and the T1w (dark) all of them."""
    for subject in ("sub-001", "sub-002"):
        images = _images(cohorts / "qsm", subject)
        for half in _halves(cohorts / "qsm", subject):
            for name, lesions, sign in (("qsm", half[half["kind"].isin(IRON_KINDS)], 1.0),
                                        ("flair", half, 1.0), ("t1w", half, -1.0)):
                template = _template(images["mask"], lesions)
                assert template.sum() > 50, (subject, name)
                assert _best_shift(images[name], template, images["mask"].affine, sign) == [0.0, 0.0, 0.0], (
                    subject, name)
    # The check sees a misplacement of 2 mm, and a tilt the wrong way.
    images = _images(cohorts / "qsm", "sub-001")
    moved = images["qsm"].affine.copy()
    moved[0, 3] += 2.0
    iron = _template(images["mask"], pd.concat(_halves(cohorts / "qsm", "sub-001")).query("kind in @IRON_KINDS"))
    assert _best_shift(nib.Nifti1Image(_data(images["qsm"]), moved), iron, images["mask"].affine)[0] == 2.0
    wrong = _tilted_the_other_way(images["qsm"])
    assert any(_best_shift(wrong, _template(images["mask"], half[half["kind"].isin(IRON_KINDS)]),
                           images["mask"].affine) != [0.0, 0.0, 0.0] for half in _halves(cohorts / "qsm", "sub-001"))


def _edge_minus_ring(image: nib.Nifti1Image, mask: nib.Nifti1Image, lesions: pd.DataFrame,
                     equator_mm: float | None) -> list[float]:
    """Per lesion: the mean of ``image`` on the lesion's edge minus that on a ring just outside
    it (both from the mask's grid, sampled at their world positions); with ``equator_mm``, only
    within that distance of the lesion centre's world z (B0 is along z)."""
    labels = label_lesions(np.asarray(mask.dataobj), mask.header.get_zooms()[:3])
    data, out = _data(image), []
    to_image = np.linalg.inv(image.affine) @ mask.affine
    for row in lesions.itertuples():
        lesion = labels == row.lesion
        edge = lesion & ~ndimage.binary_erosion(lesion)
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~ndimage.binary_dilation(lesion) & (labels == 0)
        means = []
        for voxels in (edge, ring):
            index = np.argwhere(voxels)
            world = index @ mask.affine[:3, :3].T + mask.affine[:3, 3]
            if equator_mm is not None:
                index = index[np.abs(world[:, 2] - row.z_mm) < equator_mm]
            where = index @ to_image[:3, :3].T + to_image[:3, 3]
            means.append(ndimage.map_coordinates(data, where.T, order=1).mean())
        out.append(means[0] - means[1])
    return out


def _full_rims(folder: Path) -> pd.DataFrame:
    truth = pd.read_csv(folder / "lesions_truth.tsv", sep="\t")
    return truth[(truth["kind"] == "full_rim") & (truth["volume_voxels"] > 40)]


def test_qsm_is_in_ppm_and_paramagnetic_bright(cohorts):
    rims = _full_rims(cohorts / "qsm")
    assert len(rims) >= 3
    for subject in ("sub-001", "sub-002"):
        images = _images(cohorts / "qsm", subject)
        qsm = _data(images["qsm"])
        assert "QSM (ppm), paramagnetic = positive" in images["qsm"].header["descrip"].item().decode()
        brain = qsm != 0
        assert 0.3 < brain.mean() < 0.8  # 0 outside the (eroded) brain mask
        assert abs(np.median(qsm[brain])) < 0.02
        # The most paramagnetic voxels (veins, iron-rich nuclei, rims) in ppm, not ppb, not ppm x 1000.
        assert 0.1 < np.percentile(qsm[brain], 99.9) < 0.6
        assert np.abs(qsm).max() < 1.5
        rims_here = rims[rims["subject"] == subject]
        contrast = _edge_minus_ring(images["qsm"], images["mask"], rims_here, None)
        assert all(0.005 < c < 0.1 for c in contrast), contrast  # a rim: a few hundredths of a ppm
        # The SWI magnitude of the same scan: the rim's iron shortens T2*, a dark band.
        assert all(c < 0 for c in _edge_minus_ring(images["magnitude"], images["mask"], rims_here, None))


def test_the_filtered_phase_has_the_recorded_sign(cohorts):
    """On the dark phase a PRL's rim is dark along its equator (paramagnetic = negative), as on the
    research site's phase; the bright phase is the exact opposite, and each file says which."""
    rims = _full_rims(cohorts / "dark")
    for subject in ("sub-001", "sub-002"):
        dark, bright = _images(cohorts / "dark", subject), _images(cohorts / "bright", subject)
        assert "paramagnetic = negative (dark)" in dark["phase"].header["descrip"].item().decode()
        assert "paramagnetic = positive (bright)" in bright["phase"].header["descrip"].item().decode()
        assert np.array_equal(_data(bright["phase"]), -_data(dark["phase"]))
        assert np.abs(_data(dark["phase"])).max() <= np.pi + 1e-6  # a vendor phase: wrapped to (-pi, pi]
        contrast = _edge_minus_ring(dark["phase"], dark["mask"], rims[rims["subject"] == subject], 1.5)
        assert np.mean(contrast) < -0.03, contrast
    facts = pd.read_csv(cohorts / "dark" / "subjects.tsv", sep="\t")
    assert list(facts["phase_sign"]) == ["dark", "dark"]


def test_qsm_and_phase_come_from_the_same_scan(cohorts):
    """Only the susceptibility image differs between the QSM and the phase cohorts."""
    qsm, dark = _images(cohorts / "qsm", "sub-001"), _images(cohorts / "dark", "sub-001")
    for name in ("t1w", "flair", "mask", "prl_mask", "magnitude"):
        assert np.array_equal(np.asarray(qsm[name].dataobj), np.asarray(dark[name].dataobj)), name
    assert np.allclose(qsm["qsm"].affine, dark["phase"].affine)
    pd.testing.assert_frame_equal(pd.read_csv(cohorts / "qsm" / "lesions_truth.tsv", sep="\t"),
                                  pd.read_csv(cohorts / "dark" / "lesions_truth.tsv", sep="\t"))


def test_a_clinical_subject_has_the_research_subjects_anatomy():
    """The phantom is drawn as for the research site: at 1 mm the same lesions, kinds and masks."""
    research = simulate_subject(4, index=1, voxel_size=(1.0, 1.0, 1.0), **SMALL)
    clinical = simulate_clinical_subject(4, index=1, contrasts=("flair",), **SMALL)
    assert np.array_equal(np.asarray(clinical.images["mask"].dataobj), research.subject.mask)
    assert np.array_equal(np.asarray(clinical.images["prl_mask"].dataobj), research.subject.prl_mask)
    columns = ["lesion", "kind", "prl", "volume_voxels", "x", "y", "z"]
    pd.testing.assert_frame_equal(clinical.truth[columns], research.truth[columns])
    assert clinical.params == research.params


def test_each_clinical_image_asked_for_changes_nothing_else():
    both = simulate_clinical_subject(2, contrasts=("t1w", "flair"), **SMALL)
    flair = simulate_clinical_subject(2, contrasts=("flair",), **SMALL)
    everything = simulate_clinical_subject(2, contrasts=("magnitude", "flair", "mp2rage", "t1w"), **SMALL)
    assert list(both.images) == ["phase", "t1w", "flair", "mask", "prl_mask"]
    assert list(flair.images) == ["phase", "flair", "mask", "prl_mask"]
    assert list(everything.images) == ["phase", "mp2rage", "t1w", "flair", "mask", "prl_mask", "magnitude"]
    for name in flair.images:
        assert np.array_equal(np.asarray(flair.images[name].dataobj), np.asarray(both.images[name].dataobj)), name
        assert np.array_equal(np.asarray(everything.images[name].dataobj),
                              np.asarray(both.images[name].dataobj)), name
    t1w, mp2rage = _data(everything.images["t1w"]), _data(everything.images["mp2rage"])
    assert not np.allclose(t1w, mp2rage)  # an MPRAGE-like T1w is not the UNI


def test_the_t1w_shows_lesions_dark_and_the_flair_bright():
    sim = simulate_clinical_subject(1, contrasts=("t1w", "flair", "mp2rage"), n_lesions=30, **SMALL)
    mask = np.asarray(sim.images["mask"].dataobj) > 0
    shell = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask, iterations=1)
    t1w, flair, mp2rage = (_data(sim.images[n]) for n in ("t1w", "flair", "mp2rage"))
    assert np.median(t1w[mask]) < 0.9 * np.median(t1w[shell])
    assert np.median(flair[mask]) > 1.3 * np.median(flair[shell])
    # Lesions stand out less on the MPRAGE-like T1w than on the MP2RAGE UNI.
    assert np.median(t1w[mask]) / np.median(t1w[shell]) > np.median(mp2rage[mask]) / np.median(mp2rage[shell])
    air = t1w[:3, :3, :3]
    assert air.mean() < 0.1  # a dark noise floor, not the UNI's salt-and-pepper
    assert np.median(mp2rage[:3, :3, :3]) > 0.2


def test_overwriting_a_clinical_cohort_leaves_none_of_its_images(tmp_path):
    out = tmp_path / "out"
    run_to_end(simulate_cohort(out, 1, 0, prl_fraction=0.5, site=ClinicalSite(susceptibility="qsm"),
                               contrasts=("t1w", "magnitude"), **SMALL))
    assert (out / "sub-001" / "sub-001_qsm.nii.gz").exists()
    run_to_end(simulate_cohort(out, 1, 0, prl_fraction=0.5, overwrite=True, contrasts=(),
                               voxel_size=(1.25, 1.25, 1.25), **SMALL))
    assert sorted(p.name for p in (out / "sub-001").iterdir()) == [
        f"sub-001_{role}.nii.gz" for role in ("mask", "mp2rage", "phase", "prl_mask")]


def test_bad_clinical_options_are_input_errors():
    with pytest.raises(InputError, match="unknown site 'hospital'. Choose research or clinical"):
        run_to_end(simulate_cohort("unused", 1, site="hospital"))
    with pytest.raises(InputError, match="unknown susceptibility image 'swi'"):
        ClinicalSite(susceptibility="swi")
    with pytest.raises(InputError, match="unknown phase sign 'negative'"):
        ClinicalSite(phase_sign="negative")
    with pytest.raises(InputError, match="susceptibility voxel size"):
        ClinicalSite(susceptibility_voxel_mm=(0.6, 0.0, 2.0))
    with pytest.raises(InputError, match="slab tilt 60"):
        ClinicalSite(tilt_deg=60)
    with pytest.raises(InputError, match="at least one structural image"):
        simulate_clinical_subject(0, contrasts=("magnitude",), **SMALL)
    with pytest.raises(InputError, match="unknown contrast\\(s\\) for a clinical site: t2"):
        simulate_clinical_subject(0, contrasts=("t2",), **SMALL)
    assert ClinicalSite(susceptibility_voxel_mm=(0.8,)).susceptibility_voxel_mm == (0.8, 0.8, 0.8)


def test_cli_simulates_a_clinical_site(tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["simulate", str(out), "--site", "clinical", "--susceptibility", "qsm", "--subjects", "1",
                 "--fov", "80", "96", "80", "--tilt", "-12", "--susceptibility-voxel-size", "0.8", "0.8", "2.5",
                 "--contrasts", "flair", "--prl-fraction", "0.5", "--quiet"]) == 0
    assert (out / "manifest.csv").read_text().splitlines()[0] == "subject,qsm,flair,mask,prl_mask"
    images = _images(out, "sub-001")
    slab = images["qsm"].affine
    assert np.allclose(np.linalg.norm(slab[:3, :3], axis=0), (0.8, 0.8, 2.5), atol=1e-4)
    assert np.degrees(np.arctan2(slab[2, 1], slab[1, 1])) == pytest.approx(-12.0, abs=1e-3)
    assert np.allclose(images["flair"].affine[:3, :3], np.eye(3))
    facts = pd.read_csv(out / "subjects.tsv", sep="\t")
    assert facts.loc[0, "tilt_deg"] == -12 and facts.loc[0, "susceptibility_voxel_mm"] == "0.8x0.8x2.5"
    assert "manifest" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--phase-sign", "bright"], "--phase-sign: options of a clinical site's scans. Add --site clinical"),
    (["--susceptibility", "qsm", "--tilt", "12"], "--susceptibility, --tilt: options of a clinical site"),
    (["--site", "clinical", "--susceptibility", "qsm", "--phase-sign", "dark"], "QSM is paramagnetic-positive"),
    (["--site", "clinical", "--contrasts", "none"], "at least one structural image"),
    (["--site", "clinical", "--susceptibility-voxel-size", "0.6", "2"], "one or three values, got 2"),
    (["--site", "clinical", "--tilt", "50"], "slab tilt 50"),
    (["--contrasts", "t1w"], "t1w. The research site makes flair, magnitude (a clinical site"),
])
def test_cli_bad_clinical_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["simulate", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x").exists()
