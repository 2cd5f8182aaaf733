"""Subject and cohort loading: every validation error names the file and the remedy."""

from __future__ import annotations

import gzip
import warnings
from dataclasses import replace

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
from napari_deep_prl.data.images import Subject, SubjectPaths, load_subject
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
        load_subject(phase=paths.image("phase"), mp2rage=tmp_path / "nope.nii.gz", mask=paths.mask)


@pytest.mark.parametrize("content", [b"", b"not a nifti at all" * 20])
def test_garbage_file_is_a_clear_error(write_subject, tmp_path, content):
    paths = write_subject()
    bad = tmp_path / "bad_phase.nii"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="cannot be read as a NIfTI image"):
        load_subject(phase=bad, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_uncompressed_nifti_named_gz_is_read_with_a_warning(write_subject, tmp_path):
    paths = write_subject()
    raw = gzip.decompress(paths.image("phase").read_bytes())
    misnamed = tmp_path / "plain_phase.nii.gz"
    misnamed.write_bytes(raw)
    with pytest.warns(InputWarning, match="plain_phase.nii.gz: not gzip-compressed"):
        subject = load_subject(phase=misnamed, mp2rage=paths.image("mp2rage"), mask=paths.mask)
    np.testing.assert_array_equal(subject.phase, paths.load().phase)
    misnamed.write_bytes(raw[: len(raw) // 2])  # and truncated as well: still a clear error
    with pytest.raises(InputError, match="plain_phase.nii.gz.*truncated"), pytest.warns(InputWarning):
        load_subject(phase=misnamed, mp2rage=paths.image("mp2rage"), mask=paths.mask)
    misnamed.write_bytes(b"hello, not an image")
    with pytest.raises(InputError, match="cannot be read as a NIfTI image"):
        load_subject(phase=misnamed, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_truncated_gzip_is_a_clear_error(write_subject, tmp_path):
    paths = write_subject()
    raw = gzip.decompress(paths.image("phase").read_bytes())
    bad = tmp_path / "trunc_phase.nii.gz"
    bad.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(InputError, match="trunc_phase.nii.gz"):
        load_subject(phase=bad, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_four_d_single_volume_accepted_multi_volume_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    phase = nib.load(paths.image("phase")).get_fdata()
    one = save_nifti(tmp_path / "one_phase.nii.gz", phase[..., None].astype(np.float32),
                     nib.load(paths.image("phase")).affine)
    assert load_subject(phase=one, mp2rage=paths.image("mp2rage"), mask=paths.mask).phase.shape == phase.shape
    two = save_nifti(tmp_path / "two_phase.nii.gz", np.stack([phase, phase], -1).astype(np.float32),
                     nib.load(paths.image("phase")).affine)
    with pytest.raises(InputError, match=r"two_phase.nii.gz.*2 volumes, not one \(the echoes of a multi-echo scan\?\)"
                                         r".*one echo, or the echoes combined into one phase image"):
        load_subject(phase=two, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_two_d_image_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    flat = save_nifti(tmp_path / "flat_mp2rage.nii.gz", np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match="2D .* not a 3D volume"):
        load_subject(phase=paths.image("phase"), mp2rage=flat, mask=paths.mask)


def test_small_affine_difference_is_one_grid_read_as_it_is(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    data = nib.load(paths.image("mp2rage")).get_fdata().astype(np.float32)
    nudged = np.diag([1.0, 1.0, 1.5, 1.0])
    nudged[0, 3] = 1e-5
    ok = save_nifti(tmp_path / "ok_mp2rage.nii.gz", data, nudged)
    subject = load_subject(phase=paths.image("phase"), mp2rage=ok, mask=paths.mask)
    assert np.array_equal(subject.mp2rage, data) and subject.grids["mp2rage"].resampling == "none"


def test_nan_and_inf_replaced_with_warning_naming_file_and_count(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    phase = nib.load(paths.image("phase")).get_fdata().astype(np.float32)
    phase[0, 0, :3] = np.nan
    phase[1, 1, 1] = np.inf
    bad = save_nifti(tmp_path / "nan_phase.nii.gz", phase)
    with pytest.warns(InputWarning, match=r"nan_phase\.nii\.gz: 4 NaN/Inf voxels replaced with 0"):
        subject = load_subject(phase=bad, mp2rage=paths.image("mp2rage"), mask=paths.mask)
    assert np.isfinite(subject.phase).all() and subject.phase[0, 0, 0] == 0


def test_empty_mask_is_a_valid_subject(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    empty = save_nifti(tmp_path / "empty_mask.nii.gz", np.zeros((32, 32, 24), np.uint8))
    subject = load_subject(phase=paths.image("phase"), mp2rage=paths.image("mp2rage"), mask=empty)
    assert not subject.mask.any()


def test_non_integer_mask_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    prob = save_nifti(tmp_path / "prob_mask.nii.gz", np.full((32, 32, 24), 0.37, np.float32))
    with pytest.raises(InputError, match=r"prob_mask\.nii\.gz: mask has non-integer values \(e\.g\. 0\.37\)"):
        load_subject(phase=paths.image("phase"), mp2rage=paths.image("mp2rage"), mask=prob)


def test_float_mask_with_integer_values_accepted(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    labels = nib.load(paths.mask).get_fdata().astype(np.float32) * 3
    as_float = save_nifti(tmp_path / "float_mask.nii.gz", labels)
    loaded = load_subject(phase=paths.image("phase"), mp2rage=paths.image("mp2rage"), mask=as_float)
    assert set(np.unique(loaded.mask)) == {0, 3}


def test_negative_mask_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    neg = save_nifti(tmp_path / "neg_mask.nii.gz", -np.ones((32, 32, 24), np.int16))
    with pytest.raises(InputError, match="negative values"):
        load_subject(phase=paths.image("phase"), mp2rage=paths.image("mp2rage"), mask=neg)


def test_complex_phase_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    cplx = save_nifti(tmp_path / "cplx_phase.nii.gz", np.ones((32, 32, 24), np.complex64))
    with pytest.raises(InputError, match="complex-valued"):
        load_subject(phase=cplx, mp2rage=paths.image("mp2rage"), mask=paths.mask)


@pytest.mark.parametrize("fill, message", [(np.nan, "no finite voxel"), (0.0, "blank: every voxel is 0")])
def test_blank_images_refused_naming_the_file(write_subject, tmp_path, save_nifti, fill, message):
    paths = write_subject()
    blank = save_nifti(tmp_path / "blank_mp2rage.nii.gz", np.full((32, 32, 24), fill, np.float32))
    with pytest.raises(InputError, match=message) as error:
        load_subject(phase=paths.image("phase"), mp2rage=blank, mask=paths.mask)
    assert "blank_mp2rage.nii.gz" in str(error.value)


def test_singular_affine_refused(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    bad = save_nifti(tmp_path / "flat_affine_phase.nii", np.zeros((32, 32, 24), np.float32))
    raw = bytearray(bad.read_bytes())
    raw[252:256] = np.array([0, 1], "<i2").tobytes()  # qform_code 0, sform_code 1
    raw[280:328] = bytes(48)  # srow_x, srow_y, srow_z all zero: a singular affine
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="invalid affine"):
        load_subject(phase=bad, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_header_fix_reported_as_warning_naming_the_file(write_subject, tmp_path, capfd):
    paths = write_subject()
    fixed = tmp_path / "zero_voxel_size_phase.nii"
    raw = bytearray(nib.load(paths.image("phase")).to_bytes())
    raw[80:92] = bytes(12)  # pixdim[1..3] = 0; the sform still gives the geometry
    fixed.write_bytes(bytes(raw))
    with pytest.warns(InputWarning, match=r"zero_voxel_size_phase\.nii: header fixed on reading: pixdim"):
        subject = load_subject(phase=fixed, mp2rage=paths.image("mp2rage"), mask=paths.mask)
    assert subject.phase.shape == (32, 32, 24)
    assert "pixdim" not in capfd.readouterr().err  # not printed raw by nibabel as well
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths.load()  # and nibabel's own logging is restored
    assert nib.imageglobals.logger.handlers


# ----------------------------------------------------------------------------- manifests

def test_manifest_paths_relative_to_manifest(manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths must not depend on the working directory
    cohort = read_manifest(manifest)
    assert cohort.ids == ["sub-01", "sub-02", "sub-03"]
    assert "sub-01/sub-01_phase.nii.gz" in manifest.read_text()
    assert cohort["sub-02"].image("phase") == tmp_path / "sub-02" / "sub-02_phase.nii.gz"
    assert cohort.has_prl_masks
    assert cohort.load("sub-03").mask.any()


def test_manifest_missing_column_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject,phase,mp2rage\nsub-01,a.nii,b.nii\n")
    with pytest.raises(InputError, match="lacks column\\(s\\) mask"):
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
    first[1] = ""
    lines[2] = ",".join(first)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="row 3 has an empty 'phase'"):
        read_manifest(manifest)


def test_manifest_without_prl_column(tmp_path, write_subject):
    s = write_subject()
    write_manifest([replace(s, prl_mask=None)], tmp_path / "m.csv")
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
    paths.image("mp2rage").unlink()
    with pytest.raises(InputError, match="sub-07: no structural image found"):
        discover(tmp_path / "d")
    paths.image("phase").unlink()
    with pytest.raises(InputError, match="sub-07: no phase or qsm, no structural image found"):
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
        load_subject(phase=bad, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_manifest_with_byte_order_mark(manifest):
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert read_manifest(manifest).ids == ["sub-01", "sub-02", "sub-03"]


# ----------------------------------------------------------------------------- contrasts by name

def test_a_research_manifest_loads_the_files_arrays_bit_for_bit(manifest):
    """phase, mp2rage, mask on one grid: read as nibabel reads them, nothing resampled."""
    for paths in read_manifest(manifest):
        subject = paths.load()
        assert list(subject.images) == ["phase", "mp2rage"] and subject.susceptibility == "phase"
        assert subject.structural == ("mp2rage",) and subject.reference == "phase"
        for name in ("phase", "mp2rage"):
            on_disk = np.asanyarray(nib.load(paths.image(name)).dataobj)
            assert subject.images[name].dtype == on_disk.dtype and np.array_equal(subject.images[name], on_disk)
        assert np.array_equal(subject.mask, np.asanyarray(nib.load(paths.mask).dataobj))
        assert np.array_equal(subject.affine, nib.load(paths.image("phase")).affine)
        assert {name: grid.resampling for name, grid in subject.grids.items()} == {
            "phase": "reference", "mp2rage": "none", "mask": "none", "prl_mask": "none"}
        assert not subject.lesion_changes and subject.resampled_labels is None


def test_image_columns_round_trip_in_contrast_order_with_blank_cells(tmp_path, write_subject):
    subjects = [write_subject("sub-01", seed=1, extra=("flair",)),
                write_subject("sub-02", seed=2, extra=("flair", "magnitude")),
                write_subject("sub-03", seed=3)]
    manifest = write_manifest(subjects, tmp_path / "manifest.csv")
    lines = manifest.read_text().splitlines()
    assert lines[0] == "subject,phase,mp2rage,flair,mask,prl_mask,magnitude"
    assert lines[1].endswith("sub-01/sub-01_prlmask.nii.gz,") and ",," in lines[3]
    cohort = read_manifest(manifest)
    assert list(cohort) == subjects
    assert cohort["sub-02"].images[2:] == (("flair", tmp_path / "sub-02" / "sub-02_flair.nii.gz"),
                                           ("magnitude", tmp_path / "sub-02" / "sub-02_magnitude.nii.gz"))
    loaded = cohort.load("sub-02", extra=True)
    assert list(loaded.images) == ["phase", "mp2rage", "flair", "magnitude"]
    assert loaded.structural == ("mp2rage", "flair")
    assert all(image.dtype == np.float32 and image.shape == loaded.shape for image in loaded.images.values())
    assert list(cohort.load("sub-02").images) == ["phase", "mp2rage", "flair"]  # display-only: when asked
    assert list(cohort.load("sub-03", extra=True).images) == ["phase", "mp2rage"]


def test_images_come_susceptibility_first_then_structural_in_manifest_order(tmp_path, write_subject):
    s = write_subject(extra=("flair", "magnitude"))
    path = tmp_path / "m.csv"
    path.write_text("subject,magnitude,flair,site,phase,mask,mp2rage\n"
                    f"sub-01,{s.image('magnitude')},{s.image('flair')},Basel,{s.image('phase')},{s.mask},"
                    f"{s.image('mp2rage')}\n")
    paths = read_manifest(path)[0]  # the site column is not an image: ignored
    assert [name for name, _ in paths.images] == ["phase", "flair", "mp2rage", "magnitude"]
    assert list(paths.load(extra=True).images) == ["phase", "flair", "mp2rage", "magnitude"]


@pytest.mark.parametrize("header, cells, message", [
    ("subject,phase,qsm,mp2rage,mask", "P,Q,M,K", r"two susceptibility columns \(phase and qsm\).*Keep one column"),
    ("subject,mp2rage,flair,mask", "M,F,K", "no susceptibility column.*phase .*or qsm"),
    ("subject,phase,magnitude,mask", "P,G,K", r"no structural column.*Add one or more of mp2rage, t1w, flair"),
    ("subject,phase,mp2rage,t2w,mask", "P,M,T,K",
     (r"column 't2w' holds images \(e\.g\. .*T\.nii\.gz\) but is no contrast .* one of phase, qsm, mp2rage, t1w, "
      r"flair, magnitude, swi")),
])
def test_manifest_contrast_columns_checked(tmp_path, header, cells, message):
    files = {letter: tmp_path / f"{letter}.nii.gz" for letter in "PQMFGKT"}
    for file in files.values():
        file.write_bytes(b"")
    path = tmp_path / "m.csv"
    path.write_text(f"{header}\nsub-01,{','.join(str(files[c]) for c in cells.split(','))}\n")
    with pytest.raises(InputError, match=message) as error:
        read_manifest(path)
    assert str(path) in str(error.value)


def test_manifest_row_without_a_structural_image_named(tmp_path, write_subject):
    subjects = [write_subject("sub-01", seed=1, extra=("flair",)), write_subject("sub-02", seed=2)]
    manifest = write_manifest(subjects, tmp_path / "manifest.csv")
    lines = manifest.read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = ""  # sub-02's mp2rage; its flair is blank already
    manifest.write_text("\n".join([*lines[:2], ",".join(cells)]) + "\n")
    with pytest.raises(InputError, match=r"row 3 \(sub-02\) has no structural image \(its mp2rage, flair cells"):
        read_manifest(manifest)


def test_manifest_missing_display_image_names_row_and_column(tmp_path, write_subject):
    subjects = [write_subject("sub-01", seed=1), write_subject("sub-02", seed=2, extra=("swi",))]
    manifest = write_manifest(subjects, tmp_path / "manifest.csv")
    subjects[1].image("swi").unlink()
    with pytest.raises(InputError, match=r"row 3 \(sub-02\): swi file .*sub-02_swi\.nii\.gz not found"):
        read_manifest(manifest)


def test_subject_paths_check_their_contrasts(write_subject):
    paths = write_subject()
    phase, mp2rage = paths.image("phase"), paths.image("mp2rage")
    with pytest.raises(InputError, match=r"sub-01: unknown image contrast\(s\) t2\. .*one of phase, qsm, mp2rage"):
        SubjectPaths("sub-01", (("phase", phase), ("t2", mp2rage)), paths.mask)
    with pytest.raises(InputError, match="the flair image is given twice"):
        SubjectPaths("sub-01", (("phase", phase), ("flair", phase), ("flair", mp2rage)), paths.mask)
    with pytest.raises(InputError, match=r"sub-01 has two susceptibility images \(phase and qsm\)"):
        SubjectPaths("sub-01", (("phase", phase), ("qsm", phase), ("mp2rage", mp2rage)), paths.mask)
    with pytest.raises(InputError, match=r"sub-01 has no susceptibility image \(it has mp2rage\)"):
        SubjectPaths("sub-01", (("mp2rage", mp2rage),), paths.mask)
    with pytest.raises(InputError, match=r"sub-01 has no structural image \(it has phase, magnitude\)"):
        SubjectPaths("sub-01", (("magnitude", mp2rage), ("phase", phase)), paths.mask)
    with pytest.raises(InputError, match="reference grid 't1w' is none of its images"):
        replace(paths, reference="t1w")
    with pytest.raises(InputError, match="unknown image contrast"):
        load_subject(phase=phase, t2=mp2rage, mask=paths.mask)


def test_a_missing_contrast_is_a_clear_error_naming_what_the_subject_has(tmp_path, write_subject, save_nifti):
    paths = write_subject(extra=("flair",))
    qsm = replace(paths, images=(("qsm", paths.image("phase")), ("t1w", paths.image("mp2rage"))))
    subject = qsm.load()
    assert subject.susceptibility == "qsm" and subject.structural == ("t1w",)
    with pytest.raises(InputError, match=r"subject sub-01 has no phase image \(it has qsm, t1w\)"):
        _ = subject.phase
    with pytest.raises(InputError, match=r"subject sub-01 has no mp2rage image \(it has qsm, t1w\)"):
        _ = subject.mp2rage
    with pytest.raises(InputError, match=r"subject sub-01 has no flair image \(it has qsm, t1w\)"):
        qsm.image("flair")
    with pytest.raises(InputError, match=r"has no t2w or flair image \(it has qsm, t1w\)"):
        qsm.load(contrasts=["t2w", "flair"])
    with pytest.raises(InputError, match="flip_phase .* negates a phase image, but .* is a QSM"):
        qsm.load(flip_phase=True)


def test_only_the_contrasts_asked_for_are_read(write_subject):
    """A model reading phase and MP2RAGE never opens a subject's FLAIR."""
    paths = write_subject(extra=("flair", "magnitude"))
    paths.image("flair").write_bytes(b"not a nifti at all" * 20)
    assert list(paths.load(contrasts=["mp2rage"]).images) == ["phase", "mp2rage"]
    paths.image("magnitude").write_bytes(b"not a nifti at all" * 20)
    assert list(paths.load(contrasts=["mp2rage"]).images) == ["phase", "mp2rage"]
    with pytest.raises(InputError, match=r"sub-01_flair\.nii\.gz: cannot be read as a NIfTI image"):
        paths.load()
    with pytest.raises(InputError, match=r"sub-01_magnitude\.nii\.gz: cannot be read as a NIfTI image"):
        paths.load(contrasts=["mp2rage"], extra=True)


def test_display_images_nan_replaced_with_a_warning_naming_them(write_subject, save_nifti):
    paths = write_subject(extra=("swi",))
    data = np.linspace(0, 1, 32 * 32 * 24, dtype=np.float32).reshape(32, 32, 24)
    data[0, 0, :3] = np.nan
    save_nifti(paths.image("swi"), data)
    with pytest.warns(InputWarning, match=r"sub-01_swi\.nii\.gz: 3 NaN/Inf voxels replaced with 0"):
        assert paths.load(extra=True).images["swi"][0, 0, 0] == 0


def test_a_multi_echo_phase_asks_for_one_echo_or_a_combined_phase(write_subject, tmp_path, save_nifti):
    paths = write_subject()
    phase = nib.load(paths.image("phase"))
    echoes = save_nifti(tmp_path / "echoes_phase.nii.gz",
                        np.stack([phase.get_fdata(dtype=np.float32)] * 4, -1), phase.affine)
    with pytest.raises(InputError, match=r"echoes_phase\.nii\.gz: phase image has shape \(32, 32, 24, 4\): 4 volumes, "
                                         r"not one .*one echo, or the echoes combined into one phase image"):
        load_subject(phase=echoes, mp2rage=paths.image("mp2rage"), mask=paths.mask)


def test_in_memory_subjects_check_their_images():
    shape = (4, 4, 4)
    images = {"mp2rage": np.zeros(shape, np.float32), "qsm": np.ones(shape, np.float32)}
    subject = Subject("s", images, np.zeros(shape, np.int32), np.eye(4))
    assert list(subject.images) == ["qsm", "mp2rage"] and subject.grids == {} and subject.reference is None
    with pytest.raises(InputError, match=r"image shapes mp2rage \(3, 4, 4\) differ from the mask's \(4, 4, 4\)"):
        Subject("s", {"phase": np.zeros(shape), "mp2rage": np.zeros((3, 4, 4))}, np.zeros(shape, np.int32), np.eye(4))


def test_discover_finds_images_by_their_contrast_names(tmp_path, write_subject, save_nifti):
    root = tmp_path / "derivatives"
    write_subject("sub-01", folder=root, extra=("flair",))
    other = write_subject("sub-02", folder=root, seed=2)
    anat = other.image("phase").parent / "anat"
    anat.mkdir()
    image = np.linspace(0, 1, 32 * 32 * 24, dtype=np.float32).reshape(32, 32, 24)
    mag = save_nifti(anat / "sub-02_part-mag_T2starw.nii.gz", image)
    t1w = save_nifti(anat / "sub-02_T1w.nii.gz", image)
    cohort = discover(root)
    assert cohort["sub-01"].images[2:] == (("flair", root / "sub-01" / "sub-01_flair.nii.gz"),)
    assert cohort["sub-02"].images == (("phase", other.image("phase")), ("mp2rage", other.image("mp2rage")),
                                       ("t1w", t1w), ("magnitude", mag))
    assert list(cohort.load("sub-02", extra=True).images) == ["phase", "mp2rage", "t1w", "magnitude"]


def test_discover_takes_qsm_and_a_lone_t1w_by_their_names(tmp_path, write_subject):
    paths = write_subject("sub-05", folder=tmp_path / "d")
    t1w = paths.image("mp2rage").rename(paths.image("mp2rage").with_name("sub-05_T1w.nii.gz"))
    qsm = paths.image("phase").rename(paths.image("phase").with_name("sub-05_Chimap.nii.gz"))
    found = discover(tmp_path / "d")["sub-05"]
    assert found.images == (("qsm", qsm), ("t1w", t1w))
    (qsm.parent / "sub-05_phase.nii.gz").write_bytes(qsm.read_bytes())
    with pytest.raises(InputError, match="sub-05: two susceptibility images: sub-05_phase.nii.gz and sub-05_Chimap"):
        discover(tmp_path / "d")


def test_project_loads_display_images_only_when_asked(tmp_path, write_subject):
    subjects = [write_subject("sub-01", extra=("flair", "swi"))]
    with Project.init(tmp_path / "study", write_manifest(subjects, tmp_path / "manifest.csv")) as project:
        assert list(project.load_subject("sub-01").images) == ["phase", "mp2rage", "flair"]
        assert list(project.load_subject("sub-01", extra=True).images) == ["phase", "mp2rage", "flair", "swi"]
