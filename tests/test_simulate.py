"""The synthetic cohort: determinism, physics sign, truth consistency, cohort files and CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.simulate import (
    KINDS,
    SIMULATED_CONTRASTS,
    SubjectParams,
    sample_subject,
    simulate_cohort,
    simulate_subject,
)
from napari_deep_prl.simulate.anatomy import CSF, GM, OUTSIDE, WM, Anatomy
from napari_deep_prl.simulate.geometry import grid_axes, random_rotation
from napari_deep_prl.simulate.lesion_kinds import LesionSpec, _inside
from napari_deep_prl.simulate.params import draw_params
from napari_deep_prl.simulate.physics import field_ppm, flair_image, t2star_magnitude

#: A small brain on a coarse grid: each subject takes well under a second.
SMALL = {"fov_mm": (80.0, 96.0, 80.0), "voxel_size": (1.25, 1.25, 1.25)}


@pytest.fixture(scope="module")
def small_cohort():
    """Six small subjects with a fixed 8 % PRL rate and many lesions each."""
    params = SubjectParams(**SMALL, n_lesions=45, prl_rate=0.08, noise=0.05)
    return [simulate_subject(7, params, index=i) for i in range(6)]


def test_same_seed_gives_identical_arrays():
    a = simulate_subject(3, index=1, **SMALL)
    b = simulate_subject(3, index=1, **SMALL)
    for name in ("phase", "mp2rage", "mask", "prl_mask"):
        assert np.array_equal(getattr(a.subject, name), getattr(b.subject, name)), name
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert a.params == b.params
    other = simulate_subject(4, index=1, **SMALL)
    assert not np.array_equal(a.subject.phase, other.subject.phase)


def test_same_seed_gives_identical_arrays_in_another_process():
    """Byte-identical across processes too (no dependence on hashing, threads or state)."""
    code = ("import hashlib; from napari_deep_prl.simulate import simulate_subject; "
            f"s = simulate_subject(3, index=2, **{SMALL!r}).subject; "
            "print(hashlib.sha256(s.phase.tobytes() + s.mp2rage.tobytes() + s.mask.tobytes())"
            ".hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    s = simulate_subject(3, index=2, **SMALL).subject
    here = hashlib.sha256(s.phase.tobytes() + s.mp2rage.tobytes() + s.mask.tobytes()).hexdigest()
    assert out.stdout.strip() == here


def test_cohort_prl_fraction_is_near_the_target(small_cohort):
    truth = pd.concat([s.truth for s in small_cohort])
    assert len(truth) > 150
    assert 0.03 <= truth["prl"].mean() <= 0.14
    # Subjects differ around the cohort fraction (Beta-distributed rates), centred on it.
    rng = np.random.default_rng(0)
    rates = [draw_params(rng, 0.08, fov_mm=SMALL["fov_mm"]).prl_rate for _ in range(3000)]
    assert abs(np.mean(rates) - 0.08) < 0.01
    assert np.mean(np.array(rates) < 0.01) > 0.3


def test_every_kind_is_present_and_prl_follows_kind(small_cohort):
    truth = pd.concat([s.truth for s in small_cohort])
    assert set(truth["kind"]) == set(KINDS)
    rims = truth["kind"].isin(["full_rim", "partial_rim"])
    assert truth.loc[rims, "prl"].all()
    assert not truth.loc[truth["kind"].isin(["plain", "vein_adjacent", "homogeneous",
                                             "central_vein"]), "prl"].any()
    partial = truth[truth["kind"] == "partial_rim"]["rim_coverage"]
    assert ((partial >= 0.4) & (partial < 1.0)).all()


def test_truth_ids_match_the_mask_labels(small_cohort):
    sim = small_cohort[0]
    labels = label_lesions(sim.subject.mask, sim.subject.zooms)
    assert list(sim.truth["lesion"]) == list(np.unique(labels[labels > 0]))
    volumes = np.bincount(labels.ravel())[1:]
    assert np.array_equal(sim.truth["volume_voxels"].to_numpy(), volumes)
    prl_fraction = np.bincount(labels.ravel(), weights=sim.subject.prl_mask.ravel())[1:] / volumes
    assert np.array_equal(sim.truth["prl"].to_numpy(), prl_fraction > 0.5)
    assert sim.truth["volume_voxels"].min() >= 3


def _shell(radius: float, width: float, n: int = 48) -> np.ndarray:
    r = np.sqrt(sum((g - (n - 1) / 2) ** 2 for g in np.indices((n, n, n))))
    return ((r <= radius) & (r > radius - width)).astype(np.float32), r


def test_paramagnetic_rim_is_dark_in_the_axial_view():
    """A paramagnetic shell: negative phase along its equator (the axial slices raters read)."""
    chi, r = _shell(10.0, 2.0)
    phase = -SubjectParams().rad_per_ppm * field_ppm(0.05 * chi, (1.0, 1.0, 1.0))
    n = chi.shape[0]
    z = np.abs(np.arange(n) - (n - 1) / 2)[None, None, :]
    equator = (z < 3) & np.ones_like(chi, bool)
    rim = (chi > 0) & equator
    around = (r > 11) & (r < 14) & equator
    assert phase[rim].mean() < 0
    assert phase[rim].mean() < phase[around].mean() - 0.1


def test_vein_phase_depends_on_its_orientation_to_b0():
    """A paramagnetic cylinder is dark inside when parallel to B0, bright when perpendicular."""
    n = 40
    x, y, _ = np.indices((n, n, n)) - (n - 1) / 2
    along_b0 = ((x ** 2 + y ** 2) < 4).astype(np.float32)
    across = np.moveaxis(along_b0, 2, 0)
    centre = (n // 2, n // 2, n // 2)
    assert field_ppm(along_b0, (1.0, 1.0, 1.0))[centre] > 0  # + field -> negative (dark) phase
    assert field_ppm(across, (1.0, 1.0, 1.0))[centre] < 0


def test_simulated_rims_are_darker_than_their_surroundings():
    sim = simulate_subject(11, SubjectParams(**SMALL, n_lesions=40, prl_rate=0.6, noise=0.03,
                                             b0_direction=(0.0, 0.0, 1.0)))
    labels = label_lesions(sim.subject.mask, sim.subject.zooms)
    full = sim.truth[(sim.truth["kind"] == "full_rim") & (sim.truth["volume_voxels"] > 60)]
    assert len(full) >= 2
    contrasts = []
    for row in full.itertuples():
        zc = round(row.z)
        slab = np.zeros(labels.shape, bool)
        slab[:, :, zc - 1:zc + 2] = True
        lesion = labels == row.lesion
        edge = lesion & ~_erode(lesion) & slab
        ring = _dilate(lesion, 2) & ~_dilate(lesion, 1) & slab & (labels == 0)
        contrasts.append(sim.subject.phase[edge].mean() - sim.subject.phase[ring].mean())
    assert np.mean(contrasts) < 0


def _erode(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    return ndimage.binary_erosion(mask)


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    from scipy import ndimage
    return ndimage.binary_dilation(mask, iterations=n)


def test_an_irregular_blob_keeps_about_its_drawn_size():
    """The noise pushes a blob's surface in and out; it must not shrink a PRL to a few voxels."""
    vox = (0.5, 0.5, 0.5)
    axes = grid_axes((48, 48, 48), vox, (0, 0, 0), (48, 48, 48))
    ratios = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        radii = np.full(3, 3.0) * rng.uniform(0.75, 1.25, 3)
        spec = LesionSpec(index=0, kind="full_rim", shape="blob", centre_mm=np.zeros(3),
                          radii_mm=radii, rotation=random_rotation(rng), chi_core_ppm=0.0,
                          irregularity=0.35)
        painted = _inside(spec, tuple(axes), rng).sum() * np.prod(vox)
        ratios.append(painted / (4 / 3 * np.pi * radii.prod()))
    assert 0.5 < min(ratios) and max(ratios) < 2.0, (min(ratios), max(ratios))
    assert 0.8 < np.median(ratios) < 1.25


def test_grid_and_affine_follow_the_voxel_size():
    sim = simulate_subject(0, fov_mm=(60.0, 72.0, 60.0), voxel_size=(1.0, 1.0, 1.5))
    assert sim.subject.shape == (60, 72, 40)
    assert np.allclose(sim.subject.zooms, (1.0, 1.0, 1.5))
    assert np.isfinite(sim.subject.phase).all() and np.isfinite(sim.subject.mp2rage).all()


def test_acquisition_varies_across_a_cohort_unless_fixed():
    rng = np.random.default_rng(1)
    drawn = [draw_params(rng) for _ in range(40)]
    for name in ("field_strength_t", "te_ms", "voxel_size", "noise", "highpass_sigma_mm",
                 "n_lesions", "b0_direction"):
        assert len({getattr(p, name) for p in drawn}) > 1, name
    assert {p.field_strength_t for p in drawn} == {3.0, 7.0}
    fixed = [draw_params(rng, field_strength_t=3.0, voxel_size=[0.8]) for _ in range(10)]
    assert {(p.field_strength_t, p.voxel_size) for p in fixed} == {(3.0, (0.8, 0.8, 0.8))}
    assert all(20 <= p.te_ms <= 35 for p in fixed)  # a 3 T echo time for a fixed 3 T


def test_a_subject_without_lesions_is_valid():
    sim = simulate_subject(0, n_lesions=0, fov_mm=(64.0, 64.0, 64.0), voxel_size=(2.0, 2.0, 2.0))
    assert sim.subject.mask.sum() == 0 and len(sim.truth) == 0
    assert {"kind", "prl", "lesion"} <= set(sim.truth.columns)


def test_unknown_or_bad_options_are_input_errors():
    with pytest.raises(InputError, match="unknown simulation option"):
        simulate_subject(0, bogus=1)
    with pytest.raises(InputError, match="voxel size"):
        simulate_subject(0, voxel_size=(1.0, -1.0, 1.0))


def test_sample_subject_is_small_and_labelled():
    sim = sample_subject()
    assert np.prod(sim.subject.shape) < 2_000_000
    assert sim.truth["prl"].any() and (~sim.truth["prl"]).any()
    assert sim.subject.phase[0, 0, 0] == 0  # outside the brain


def test_cohort_is_written_and_readable(tmp_path):
    manifest = run_to_end(simulate_cohort(tmp_path / "out", 2, 5, prl_fraction=0.5, **SMALL))
    cohort = read_manifest(manifest)
    assert cohort.ids == ["sub-001", "sub-002"]
    subject = cohort[0].load(extra=True)
    again = simulate_subject(5, index=0, prl_fraction=0.5, **SMALL).subject
    assert np.array_equal(subject.phase, again.phase)
    assert np.allclose(subject.affine, again.affine)
    assert cohort[0].images[2:] == tuple((name, tmp_path / "out" / "sub-001" / f"sub-001_{name}.nii.gz")
                                         for name in ("flair", "magnitude"))
    for name in ("flair", "magnitude"):
        assert np.array_equal(subject.images[name], again.images[name]), name
    truth = pd.read_csv(tmp_path / "out" / "lesions_truth.tsv", sep="\t")
    mine = truth[truth["subject"] == "sub-001"]
    assert list(mine["lesion"]) == list(find_lesions(subject).table["lesion"])
    assert set(truth.columns) >= {"subject", "lesion", "kind", "prl", "x", "y", "z", "volume_mm3"}
    params = pd.read_csv(tmp_path / "out" / "subjects.tsv", sep="\t")
    assert list(params["subject"]) == cohort.ids
    description = nib.load(cohort[0].image("phase")).header["descrip"].item().decode()
    assert "paramagnetic = negative" in description
    with pytest.raises(InputError, match="already holds a cohort"):
        run_to_end(simulate_cohort(tmp_path / "out", 1, 5, **SMALL))
    run_to_end(simulate_cohort(tmp_path / "out", 1, 6, prl_fraction=0.5, overwrite=True, contrasts=(), **SMALL))
    assert read_manifest(manifest).ids == ["sub-001"] and len(read_manifest(manifest)[0].images) == 2
    assert not (tmp_path / "out" / "sub-002").exists()  # no stale subject left to discover
    assert sorted(p.name for p in (tmp_path / "out" / "sub-001").iterdir()) == [
        f"sub-001_{role}.nii.gz" for role in ("mask", "mp2rage", "phase", "prl_mask")]  # nor stale extras


def test_extra_contrasts_change_nothing_else():
    """Each extra contrast draws from its own stream: phase, MP2RAGE, masks and truth are
    byte-identical with or without them, and one contrast does not depend on the others."""
    both = simulate_subject(3, index=1, **SMALL)
    none = simulate_subject(3, index=1, contrasts=(), **SMALL)
    flair = simulate_subject(3, index=1, contrasts=["flair"], **SMALL)
    assert list(both.subject.images)[2:] == list(SIMULATED_CONTRASTS) == ["flair", "magnitude"]
    assert list(none.subject.images) == ["phase", "mp2rage"] and list(flair.subject.images)[2:] == ["flair"]
    for name in ("phase", "mp2rage", "mask", "prl_mask"):
        assert getattr(none.subject, name).tobytes() == getattr(both.subject, name).tobytes(), name
    pd.testing.assert_frame_equal(none.truth, both.truth)
    assert np.array_equal(flair.subject.images["flair"], both.subject.images["flair"])
    again = simulate_subject(3, index=1, **SMALL)
    for name, image in both.subject.images.items():
        assert image.dtype == np.float32 and image.shape == both.subject.shape
        assert np.array_equal(image, again.subject.images[name]), name
    with pytest.raises(InputError,
                       match="unknown simulated contrast\\(s\\): t2. The research site makes flair, magnitude"):
        simulate_subject(3, contrasts=("t2",), **SMALL)


def _toy_anatomy() -> tuple[Anatomy, np.ndarray, np.ndarray, np.ndarray]:
    """Air, CSF, GM and WM slabs; two equal lesions in WM, the first with a paramagnetic rim.

    Returns the anatomy, the lesion numbering, the lesions' susceptibility and the rim."""
    shape = (48, 48, 48)
    tissue = np.full(shape, WM, np.uint8)
    tissue[:, :, :6], tissue[:, :, 6:12], tissue[:, :, 12:18] = OUTSIDE, CSF, GM
    zeros = np.zeros(shape, np.float32)
    anatomy = Anatomy(tissue, zeros, zeros.copy(), tissue != OUTSIDE, zeros, zeros, (1.0, 1.0, 1.0))
    r1 = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), (14, 24, 32))))
    r2 = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), (34, 24, 32))))
    owner = np.where(r1 <= 7, 1, np.where(r2 <= 7, 2, 0)).astype(np.int32)
    rim = (r1 <= 7) & (r1 > 5)
    chi = np.where(rim, 0.08, 0.0).astype(np.float32)
    return anatomy, owner, chi, rim


def test_flair_suppresses_csf_shows_lesions_and_no_rim():
    anatomy, owner, _, rim = _toy_anatomy()
    image = flair_image(anatomy, owner, 0.0, 0.0, np.random.default_rng(0))
    tissue = anatomy.tissue
    free = owner == 0
    csf, gm, wm = (float(np.median(image[(tissue == t) & free])) for t in (CSF, GM, WM))
    assert csf < 0.2 * wm and wm < gm
    assert all(np.median(image[owner == lesion]) > max(1.5 * wm, gm) for lesion in (1, 2))
    # FLAIR is not susceptibility-weighted: the rim band is as bright as the rest of its lesion
    # (the band's outer voxels blurred a little with the white matter around).
    core = (owner == 1) & ~rim
    assert abs(np.median(image[rim]) - np.median(image[core])) < 0.1 * np.median(image[core])


def test_magnitude_darkens_iron_more_at_higher_field_and_has_a_noise_floor():
    anatomy, owner, chi, rim = _toy_anatomy()

    def magnitude(field: float, noise: float = 0.0) -> np.ndarray:
        return t2star_magnitude(anatomy, owner, chi, field_strength_t=field, te_ms=25.0, bias=0.0,
                                noise=noise, rng=np.random.default_rng(0))

    image = magnitude(3.0)
    wm = float(np.median(image[(anatomy.tissue == WM) & (owner == 0)]))
    core, plain = (owner == 1) & ~rim, owner == 2
    assert np.median(image[plain]) > wm  # myelin loss lengthens T2*
    assert np.median(image[rim]) < 0.85 * np.median(image[core])  # iron shortens it
    assert np.median(image[rim]) < wm
    assert np.median(magnitude(7.0)[rim]) < np.median(image[rim])
    noisy = magnitude(3.0, noise=0.05)
    air = noisy[:, :, 2:4]  # in the air slab, away from the blurred edges
    assert air.min() >= 0 and abs(air.mean() - 0.05 * np.sqrt(np.pi / 2)) < 0.005  # Rician floor


def test_a_cohort_without_any_prl_is_written_with_a_warning(tmp_path):
    with pytest.warns(InputWarning, match=r"out: the simulated cohort has no PRL at all \(2 subject\(s\), "
                                          r"\d+ lesions, PRL fraction 0\).*larger PRL fraction"):
        manifest = run_to_end(simulate_cohort(tmp_path / "out", 2, 0, prl_fraction=0.0, contrasts=(), **SMALL))
    assert read_manifest(manifest).ids == ["sub-001", "sub-002"]


def test_cli_simulate_writes_a_cohort(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["simulate", str(out), "--subjects", "1", "--seed", "2", "--fov", "80", "96", "80",
                 "--voxel-size", "1.25", "--field-strength", "7", "--prl-fraction", "0.5",
                 "--confluent-prl-rate", "0.5", "--contrasts", "flair", "--quiet"])
    assert code == 0
    cohort = read_manifest(out / "manifest.csv")
    assert cohort[0].prl_mask is not None
    assert [name for name, _ in cohort[0].images] == ["phase", "mp2rage", "flair"]
    assert not (out / "sub-001" / "sub-001_magnitude.nii.gz").exists()
    params = pd.read_csv(out / "subjects.tsv", sep="\t")
    assert params.loc[0, "field_strength_t"] == 7
    assert params.loc[0, "voxel_size"] == "1.25x1.25x1.25"
    assert params.loc[0, "confluent_prl_rate"] == 0.5
    assert "manifest" in capsys.readouterr().err


@pytest.mark.filterwarnings("always::napari_deep_prl.base.errors.InputWarning")  # printed by the CLI
def test_cli_simulate_warns_on_one_line_of_a_cohort_without_prl(tmp_path, capsys):
    out = tmp_path / "none"
    assert main(["simulate", str(out), "--subjects", "2", "--prl-fraction", "0", "--contrasts", "none",
                 "--fov", "80", "96", "80", "--voxel-size", "1.25", "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "has no PRL at all (2 subject(s)" in warnings[0]
    assert (out / "manifest.csv").read_text().splitlines()[0] == "subject,phase,mp2rage,mask,prl_mask"


@pytest.mark.parametrize("args, message", [
    (["--subjects", "0"], "at least 1"),
    (["--voxel-size", "1", "2"], "one or three"),
    (["--prl-fraction", "1.5"], "PRL fraction"),
    (["--contrasts", "none", "flair"], "'none' cannot be combined"),
])
def test_cli_simulate_bad_values_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["simulate", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x" / "manifest.csv").exists()


def test_cli_simulate_unparsable_argument_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path), "--subjects", "many"])
    assert exit_info.value.code == 2
