"""Subject and cohort loading: every validation error names the file and the remedy."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.data.cohort import (
    classify_file,
    discover,
    open_cohort,
    read_manifest,
    write_manifest,
)
from napari_deep_prl.data.images import SubjectPaths, load_subject
from napari_deep_prl.ratings.project import Project


def test_loads_subject_as_float_and_int_arrays(write_subject):
    paths = write_subject()
    subject = paths.load()
    assert subject.subject == "sub-01"
    assert subject.phase.dtype == np.float32 and subject.mp2rage.dtype == np.float32
    assert subject.mask.dtype == np.int32
    assert subject.prl_mask.dtype == bool and subject.prl_mask.any()
    assert subject.zooms == pytest.approx((1.0, 1.0, 1.5))


def test_flip_phase_negates(write_subject):
    paths = write_subject()
    assert np.array_equal(paths.load(flip_phase=True).phase, -paths.load().phase)


def test_missing_file_names_path_and_role(write_subject, tmp_path):
    paths = write_subject()
    with pytest.raises(InputError, match=r"nope\.nii\.gz: mp2rage image not found"):
        load_subject(paths.phase, tmp_path / "nope.nii.gz", paths.mask)


@pytest.mark.parametrize("content", [b"", b"not a nifti at all" * 20])
def test_garbage_file_is_a_clear_error(write_subject, tmp_path, content):
    paths = write_subject()
    bad = tmp_path / "bad_phase.nii"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="cannot be read as a NIfTI image"):
        load_subject(bad, paths.mp2rage, paths.mask)


def test_uncompressed_nifti_named_gz_is_read_with_a_warning(write_subject, tmp_path):
    paths = write_subject()
    raw = gzip.decompress(paths.phase.read_bytes())
    misnamed = tmp_path / "plain_phase.nii.gz"
    misnamed.write_bytes(raw)
    with pytest.warns(InputWarning, match="plain_phase.nii.gz: not gzip-compressed"):
        subject = load_subject(misnamed, paths.mp2rage, paths.mask)
    np.testing.assert_array_equal(subject.phase, load_subject(paths.phase, paths.mp2rage, paths.mask).phase)
    misnamed.write_bytes(raw[: len(raw) // 2])  # and truncated as well: still a clear error
    with pytest.raises(InputError, match="plain_phase.nii.gz.*truncated"), pytest.warns(InputWarning):
        load_subject(misnamed, paths.mp2rage, paths.mask)
    misnamed.write_bytes(b"hello, not an image")
    with pytest.raises(InputError, match="cannot be read as a NIfTI image"):
        load_subject(misnamed, paths.mp2rage, paths.mask)


def test_truncated_gzip_is_a_clear_error(write_subject, tmp_path):
    paths = write_subject()
    raw = gzip.decompress(paths.phase.read_bytes())
    bad = tmp_path / "trunc_phase.nii.gz"
    bad.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(InputError, match="trunc_phase.nii.gz"):
        load_subject(bad, paths.mp2rage, paths.mask)


def test_four_d_single_volume_accepted_multi_volume_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    phase = nib.load(paths.phase).get_fdata()
    one = save_nifti(tmp_path / "one_phase.nii.gz", phase[..., None].astype(np.float32),
                     nib.load(paths.phase).affine)
    assert load_subject(one, paths.mp2rage, paths.mask).phase.shape == phase.shape
    two = save_nifti(tmp_path / "two_phase.nii.gz", np.stack([phase, phase], -1).astype(np.float32),
                     nib.load(paths.phase).affine)
    with pytest.raises(InputError, match="2 volumes, not one"):
        load_subject(two, paths.mp2rage, paths.mask)


def test_two_d_image_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    flat = save_nifti(tmp_path / "flat_mp2rage.nii.gz", np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match="2D .* not a 3D volume"):
        load_subject(paths.phase, flat, paths.mask)


def test_shape_mismatch_names_both_files_and_shapes(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    small = save_nifti(tmp_path / "small_mask.nii.gz", np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(InputError) as err:
        load_subject(paths.phase, paths.mp2rage, small)
    message = str(err.value)
    assert "small_mask.nii.gz" in message and str(paths.phase) in message
    assert "(8, 8, 8)" in message and "(32, 32, 24)" in message


def test_affine_mismatch_reports_max_difference(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    data = nib.load(paths.mp2rage).get_fdata().astype(np.float32)
    shifted = np.diag([1.0, 1.0, 1.5, 1.0])
    shifted[0, 3] = 2.5
    moved = save_nifti(tmp_path / "moved_mp2rage.nii.gz", data, shifted)
    with pytest.raises(InputError, match=r"affine differs .* by up to 2\.5 mm"):
        load_subject(paths.phase, moved, paths.mask)


def test_small_affine_difference_tolerated(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    data = nib.load(paths.mp2rage).get_fdata().astype(np.float32)
    nudged = np.diag([1.0, 1.0, 1.5, 1.0])
    nudged[0, 3] = 1e-5
    ok = save_nifti(tmp_path / "ok_mp2rage.nii.gz", data, nudged)
    assert load_subject(paths.phase, ok, paths.mask).mp2rage.shape == data.shape


def test_nan_and_inf_replaced_with_warning_naming_file_and_count(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    phase = nib.load(paths.phase).get_fdata().astype(np.float32)
    phase[0, 0, :3] = np.nan
    phase[1, 1, 1] = np.inf
    bad = save_nifti(tmp_path / "nan_phase.nii.gz", phase)
    with pytest.warns(InputWarning, match=r"nan_phase\.nii\.gz: 4 NaN/Inf voxels replaced with 0"):
        subject = load_subject(bad, paths.mp2rage, paths.mask)
    assert np.isfinite(subject.phase).all() and subject.phase[0, 0, 0] == 0


def test_empty_mask_is_a_valid_subject(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    empty = save_nifti(tmp_path / "empty_mask.nii.gz", np.zeros((32, 32, 24), np.uint8))
    subject = load_subject(paths.phase, paths.mp2rage, empty)
    assert not subject.mask.any()


def test_non_integer_mask_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    prob = save_nifti(tmp_path / "prob_mask.nii.gz", np.full((32, 32, 24), 0.37, np.float32))
    with pytest.raises(InputError, match=r"prob_mask\.nii\.gz: mask has non-integer values \(e\.g\. 0\.37\)"):
        load_subject(paths.phase, paths.mp2rage, prob)


def test_float_mask_with_integer_values_accepted(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    labels = nib.load(paths.mask).get_fdata().astype(np.float32) * 3
    as_float = save_nifti(tmp_path / "float_mask.nii.gz", labels)
    assert set(np.unique(load_subject(paths.phase, paths.mp2rage, as_float).mask)) == {0, 3}


def test_negative_mask_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    neg = save_nifti(tmp_path / "neg_mask.nii.gz", -np.ones((32, 32, 24), np.int16))
    with pytest.raises(InputError, match="negative values"):
        load_subject(paths.phase, paths.mp2rage, neg)


def test_complex_phase_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    cplx = save_nifti(tmp_path / "cplx_phase.nii.gz", np.ones((32, 32, 24), np.complex64))
    with pytest.raises(InputError, match="complex-valued"):
        load_subject(cplx, paths.mp2rage, paths.mask)


@pytest.mark.parametrize("fill, message", [(np.nan, "no finite voxel"), (0.0, "blank: every voxel is 0")])
def test_blank_images_refused_naming_the_file(write_subject, tmp_path, save_nifti, fill, message):
    paths = write_subject()
    blank = save_nifti(tmp_path / "blank_mp2rage.nii.gz", np.full((32, 32, 24), fill, np.float32))
    with pytest.raises(InputError, match=message) as error:
        load_subject(paths.phase, blank, paths.mask)
    assert "blank_mp2rage.nii.gz" in str(error.value)


def test_singular_affine_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    bad = save_nifti(tmp_path / "flat_affine_phase.nii", np.zeros((32, 32, 24), np.float32))
    raw = bytearray(bad.read_bytes())
    raw[252:256] = np.array([0, 1], "<i2").tobytes()  # qform_code 0, sform_code 1
    raw[280:328] = bytes(48)  # srow_x, srow_y, srow_z all zero: a singular affine
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="invalid affine"):
        load_subject(bad, paths.mp2rage, paths.mask)


def test_header_fix_reported_as_warning_naming_the_file(write_subject, tmp_path, capfd):
    paths = write_subject()
    fixed = tmp_path / "zero_voxel_size_phase.nii"
    raw = bytearray(nib.load(paths.phase).to_bytes())
    raw[80:92] = bytes(12)  # pixdim[1..3] = 0; the sform still gives the geometry
    fixed.write_bytes(bytes(raw))
    with pytest.warns(InputWarning, match=r"zero_voxel_size_phase\.nii: header fixed on reading: pixdim"):
        subject = load_subject(fixed, paths.mp2rage, paths.mask)
    assert subject.phase.shape == (32, 32, 24)
    assert "pixdim" not in capfd.readouterr().err  # not printed raw by nibabel as well
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_subject(paths.phase, paths.mp2rage, paths.mask)  # and nibabel's own logging is restored
    assert nib.imageglobals.logger.handlers


# ----------------------------------------------------------------------------- manifests

def test_manifest_paths_relative_to_manifest(manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths must not depend on the working directory
    cohort = read_manifest(manifest)
    assert cohort.ids == ["sub-01", "sub-02", "sub-03"]
    assert "sub-01/sub-01_phase.nii.gz" in manifest.read_text()
    assert cohort["sub-02"].phase == tmp_path / "sub-02" / "sub-02_phase.nii.gz"
    assert cohort.has_prl_masks
    assert cohort.load("sub-03").mask.any()


def test_manifest_missing_column_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject,phase,mask\nsub-01,a.nii,b.nii\n")
    with pytest.raises(InputError, match="lacks column\\(s\\) mp2rage"):
        read_manifest(path)


def test_manifest_duplicate_subject_names_rows(manifest):
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(InputError, match=r"subject 'sub-01' appears twice \(rows 2 and 5\)"):
        read_manifest(manifest)


def test_manifest_missing_file_names_row(manifest):
    text = manifest.read_text().replace("sub-02/sub-02_mask.nii.gz", "sub-02/gone.nii.gz")
    manifest.write_text(text)
    with pytest.raises(InputError, match=r"row 3 \(sub-02\): mask file .*gone\.nii\.gz not found"):
        read_manifest(manifest)


def test_manifest_empty_cell_names_row(manifest):
    lines = manifest.read_text().splitlines()
    first = lines[2].split(",")
    first[2] = ""
    lines[2] = ",".join(first)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="row 3 has an empty 'mp2rage'"):
        read_manifest(manifest)


def test_manifest_without_prl_column(tmp_path, write_subject):
    s = write_subject()
    write_manifest([SubjectPaths(s.subject, s.phase, s.mp2rage, s.mask)], tmp_path / "m.csv")
    cohort = read_manifest(tmp_path / "m.csv")
    assert cohort[0].prl_mask is None and cohort.load("sub-01").prl_mask is None


def test_unknown_subject_is_a_clear_error(manifest):
    with pytest.raises(InputError, match="unknown subject 'sub-99'"):
        read_manifest(manifest)["sub-99"]


def test_cohort_holds_only_paths(manifest):
    cohort = read_manifest(manifest)
    assert all(isinstance(s, SubjectPaths) for s in cohort)


# ----------------------------------------------------------------------------- folder layout

@pytest.mark.parametrize("name, role", [
    ("sub-01_phase.nii.gz", "phase"), ("sub-01_part-phase_T2starw.nii.gz", "phase"),
    ("sub-01_UNIT1.nii.gz", "mp2rage"), ("sub-01_T1w.nii", "t1w"), ("sub-01_mp2rage.nii.gz", "mp2rage"),
    ("sub-01_desc-lesion_mask.nii.gz", "mask"), ("sub-01_mask.nii.gz", "mask"),
    ("sub-01_desc-prl_mask.nii.gz", "prl_mask"), ("sub-01_prlmask.nii.gz", "prl_mask"),
    ("sub-01_FLAIR.nii.gz", "flair"), ("sub-01_magnitude.nii.gz", "magnitude"),
    ("sub-01_part-mag_T2starw.nii.gz", "magnitude"), ("sub-01_swi.nii", "swi"), ("sub-01_qsm.nii.gz", "qsm"),
    ("sub-01_Chimap.nii.gz", "qsm"), ("sub-01_FLAIR_mask.nii.gz", "mask"),
    ("sub-01_phase.json", None), ("notes.txt", None),
])
def test_classify_file(name, role):
    assert classify_file(name) == role


def test_discover_folder_layout(tmp_path, write_subject):
    root = tmp_path / "derivatives"
    for i in (2, 1):
        write_subject(f"sub-0{i}", folder=root)
    cohort = discover(root)
    assert cohort.ids == ["sub-01", "sub-02"]
    assert cohort["sub-01"].prl_mask is not None
    assert open_cohort(root).ids == cohort.ids


def test_discover_reports_missing_role(tmp_path, write_subject):
    paths = write_subject("sub-07", folder=tmp_path / "d")
    paths.mp2rage.unlink()
    with pytest.raises(InputError, match="sub-07: no mp2rage image found"):
        discover(tmp_path / "d")


def test_loading_emits_no_warning_on_clean_data(write_subject):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_subject().load()


def test_header_with_implausible_dimensions_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    bad = save_nifti(tmp_path / "huge_phase.nii", np.zeros((4, 4, 4), np.float32))
    raw = bytearray(bad.read_bytes())
    raw[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], "<i2").tobytes()
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"claims \(30000, 30000, 30000\) = 27,000,000,000,000 voxels, more than"):
        load_subject(bad, paths.mp2rage, paths.mask)


def test_manifest_with_byte_order_mark(manifest):
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert read_manifest(manifest).ids == ["sub-01", "sub-02", "sub-03"]


# ----------------------------------------------------------------------------- extra images

def test_extra_images_round_trip_through_a_manifest_with_blank_cells(tmp_path, write_subject):
    subjects = [write_subject("sub-01", seed=1, extra=("flair",)),
                write_subject("sub-02", seed=2, extra=("flair", "magnitude")),
                write_subject("sub-03", seed=3)]
    manifest = write_manifest(subjects, tmp_path / "manifest.csv")
    lines = manifest.read_text().splitlines()
    assert lines[0] == "subject,phase,mp2rage,mask,prl_mask,flair,magnitude"
    assert lines[1].endswith(",sub-01/sub-01_flair.nii.gz,") and lines[3].endswith(",,")
    cohort = read_manifest(manifest)
    assert list(cohort) == subjects
    assert cohort["sub-02"].extra == (("flair", tmp_path / "sub-02" / "sub-02_flair.nii.gz"),
                                      ("magnitude", tmp_path / "sub-02" / "sub-02_magnitude.nii.gz"))
    assert cohort["sub-03"].extra == ()
    loaded = cohort.load("sub-02", extra=True)
    assert list(loaded.images) == ["phase", "mp2rage", "flair", "magnitude"]
    assert all(image.dtype == np.float32 and image.shape == loaded.shape for image in loaded.images.values())
    assert np.array_equal(loaded.extra["flair"], nib.load(subjects[1].extra[0][1]).get_fdata(dtype=np.float32))
    assert cohort.load("sub-03", extra=True).extra == {}
    assert cohort.load("sub-02").extra == {} and list(cohort.load("sub-02").images) == ["phase", "mp2rage"]


def test_extra_images_follow_the_manifest_column_order(tmp_path, write_subject):
    s = write_subject(extra=("flair", "magnitude"))
    path = tmp_path / "m.csv"
    path.write_text("subject,magnitude,phase,mp2rage,mask,flair\n"
                    f"sub-01,{s.extra[1][1]},{s.phase},{s.mp2rage},{s.mask},{s.extra[0][1]}\n")
    paths = read_manifest(path)[0]
    assert [name for name, _ in paths.extra] == ["magnitude", "flair"]
    assert list(paths.load(extra=True).images) == ["phase", "mp2rage", "magnitude", "flair"]


def test_manifest_missing_extra_image_names_row_and_column(tmp_path, write_subject):
    subjects = [write_subject("sub-01", seed=1), write_subject("sub-02", seed=2, extra=("flair",))]
    manifest = write_manifest(subjects, tmp_path / "manifest.csv")
    subjects[1].extra[0][1].unlink()
    with pytest.raises(InputError, match=r"row 3 \(sub-02\): flair file .*sub-02_flair\.nii\.gz not found"):
        read_manifest(manifest)


def test_extra_images_are_read_only_when_asked_for(write_subject, tmp_path, save_nifti):
    """Training and scoring load without extras: an extra image is never opened for them."""
    paths = write_subject(extra=("flair",))
    paths.extra[0][1].write_bytes(b"not a nifti at all" * 20)
    assert paths.load().extra == {}
    with pytest.raises(InputError, match=r"sub-01_flair\.nii\.gz: cannot be read as a NIfTI image"):
        paths.load(extra=True)


def test_extra_image_off_the_phase_grid_names_both_files_and_says_resample(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    small = SubjectPaths(paths.subject, paths.phase, paths.mp2rage, paths.mask, extra=(
        ("flair", save_nifti(tmp_path / "sub-01_FLAIR.nii.gz", np.ones((8, 8, 8), np.float32))),))
    with pytest.raises(InputError) as err:
        small.load(extra=True)
    message = str(err.value)
    assert "sub-01_FLAIR.nii.gz: flair image shape (8, 8, 8)" in message and str(paths.phase) in message
    assert "(32, 32, 24)" in message and "resample them to the phase image first" in message
    shifted = np.diag([1.0, 1.0, 1.5, 1.0])
    shifted[1, 3] = 4.0
    moved = SubjectPaths(paths.subject, paths.phase, paths.mp2rage, paths.mask, extra=(
        ("magnitude", save_nifti(tmp_path / "moved_mag.nii.gz", np.ones((32, 32, 24), np.float32), shifted)),))
    with pytest.raises(InputError, match=r"moved_mag\.nii\.gz: magnitude image affine differs from the phase "
                                         r"image .* by up to 4 mm.*resample them to the phase image first"):
        moved.load(extra=True)
    assert moved.load().phase.shape == (32, 32, 24)


def test_extra_image_nan_replaced_with_a_warning_naming_it(write_subject, tmp_path, save_nifti):
    paths = write_subject(extra=("swi",))
    data = np.linspace(0, 1, 32 * 32 * 24, dtype=np.float32).reshape(32, 32, 24)
    data[0, 0, :3] = np.nan
    save_nifti(paths.extra[0][1], data)
    with pytest.warns(InputWarning, match=r"sub-01_swi\.nii\.gz: 3 NaN/Inf voxels replaced with 0"):
        assert paths.load(extra=True).extra["swi"][0, 0, 0] == 0


def test_extra_images_need_a_known_contrast_once(write_subject):
    paths = write_subject()
    with pytest.raises(InputError, match="unknown contrast\\(s\\) t2.*flair, t1w, magnitude, swi, qsm"):
        SubjectPaths("sub-01", paths.phase, paths.mp2rage, paths.mask, extra=(("t2", paths.phase),))
    with pytest.raises(InputError, match="a contrast given twice"):
        SubjectPaths("sub-01", paths.phase, paths.mp2rage, paths.mask,
                     extra=(("flair", paths.phase), ("flair", paths.mp2rage)))


def test_discover_finds_extra_images_by_their_names(tmp_path, write_subject, save_nifti):
    root = tmp_path / "derivatives"
    write_subject("sub-01", folder=root, extra=("flair",))
    other = write_subject("sub-02", folder=root, seed=2)
    anat = other.phase.parent / "anat"
    anat.mkdir()
    image = np.linspace(0, 1, 32 * 32 * 24, dtype=np.float32).reshape(32, 32, 24)
    mag = save_nifti(anat / "sub-02_part-mag_T2starw.nii.gz", image)
    t1w = save_nifti(anat / "sub-02_T1w.nii.gz", image)
    cohort = discover(root)
    assert cohort["sub-01"].extra == (("flair", root / "sub-01" / "sub-01_flair.nii.gz"),)
    # Beside an MP2RAGE a T1w is an extra image; in EXTRA_CONTRASTS order.
    assert cohort["sub-02"].extra == (("t1w", t1w), ("magnitude", mag))
    assert cohort["sub-02"].mp2rage == other.mp2rage
    assert list(cohort.load("sub-02", extra=True).images) == ["phase", "mp2rage", "t1w", "magnitude"]


def test_discover_takes_a_lone_t1w_as_the_structural_image(tmp_path, write_subject):
    paths = write_subject("sub-05", folder=tmp_path / "d")
    t1w = paths.mp2rage.rename(paths.mp2rage.with_name("sub-05_T1w.nii.gz"))
    found = discover(tmp_path / "d")["sub-05"]
    assert found.mp2rage == t1w and found.extra == ()


def test_project_loads_extra_images_only_when_asked(tmp_path, write_subject):
    subjects = [write_subject("sub-01", extra=("flair", "qsm"))]
    with Project.init(tmp_path / "study", write_manifest(subjects, tmp_path / "manifest.csv")) as project:
        assert project.load_subject("sub-01").extra == {}
        assert list(project.load_subject("sub-01", extra=True).images) == ["phase", "mp2rage", "flair", "qsm"]
