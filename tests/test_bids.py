"""Finding subjects in a BIDS dataset (``napari_deep_prl.data.bids``), on small synthetic trees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.cli import main
from napari_deep_prl.data.bids import (
    BidsName,
    bids_contrast,
    find_bids_subjects,
    parse_bids_name,
)
from napari_deep_prl.data.cohort import open_cohort, read_manifest


def write_image(path: Path, shape: tuple[int, ...] = (3, 3, 3)) -> Path:
    """A tiny NIfTI image at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def write_session(root: Path, sub: str, ses: str | None = None, *, mask: str | None = "samseg",
                  structural: tuple[str, ...] = ("UNIT1", "FLAIR"), phase: str = "acq-swi_part-phase_T2starw",
                  magnitude: str | None = "acq-swi_part-mag_T2starw") -> str:
    """One subject (or session) of a BIDS dataset: a phase, its magnitude, structural images and,
    from the ``mask`` pipeline, a lesion mask. Returns the file-name prefix."""
    folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
    prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    for suffix in (phase, magnitude, *structural):
        if suffix:
            write_image(folder / f"{prefix}_{suffix}.nii.gz")
    if mask:
        write_image(root / "derivatives" / mask / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
                    / f"{prefix}_desc-lesion_mask.nii.gz")
    return prefix


def skip_reasons(findings) -> dict[str, str]:
    return {str(s).split(":")[0]: s.reason for s in findings.skipped}


# --------------------------------------------------------------------------- the name matcher

def test_parse_bids_name_takes_entities_suffix_and_extension():
    name = parse_bids_name("sub-01_ses-02_acq-mprage_run-1_T1w.nii.gz")
    assert name == BidsName({"sub": "01", "ses": "02", "acq": "mprage", "run": "1"}, "T1w", ".nii.gz")
    assert list(name.entities) == ["sub", "ses", "acq", "run"]
    assert parse_bids_name("sub-01_part-phase_T2starw.nii").extension == ".nii"
    assert parse_bids_name("sub-01_T1w.json") == BidsName({"sub": "01"}, "T1w", ".json")


@pytest.mark.parametrize("name", [
    "T1w.nii.gz",                        # no entity
    "ses-01_sub-01_T1w.nii.gz",          # sub is not first
    "sub-01.nii.gz",                     # no suffix
    "sub-01_acq_T1w.nii.gz",             # an entity without a value
    "sub-01_acq-mp_rage_T1w.nii.gz",     # '_' splits a value
    "sub-01_acq-mp-rage_T1w.nii.gz",     # a value holding '-'
    "sub-01_run-1_run-2_T1w.nii.gz",     # a key twice
    "sub-01_T1w+c.nii.gz",               # a suffix that is not letters and digits
    "sub-0 1_T1w.nii.gz",                # a blank
    "sub-01__T1w.nii.gz",                # an empty part
])
def test_parse_bids_name_refuses_what_is_not_bids(name):
    assert parse_bids_name(name) is None


@pytest.mark.parametrize(("name", "contrast"), [
    ("sub-01_T1w.nii.gz", "t1w"),
    ("sub-01_acq-mprage_T1w.nii.gz", "t1w"),
    ("sub-01_UNIT1.nii.gz", "mp2rage"),
    ("sub-01_FLAIR.nii", "flair"),
    ("sub-01_flair.nii.gz", "flair"),
    ("sub-01_part-phase_T2starw.nii.gz", "phase"),
    ("sub-01_echo-1_part-phase_MEGRE.nii.gz", "phase"),
    ("sub-01_part-phase_GRE.nii.gz", "phase"),
    ("sub-01_part-phase_swi.nii.gz", "phase"),
    ("sub-01_part-mag_T2starw.nii.gz", "magnitude"),
    ("sub-01_T2starw.nii.gz", "magnitude"),
    ("sub-01_swi.nii.gz", None),                      # magnitude and phase combined
    ("sub-01_Chimap.nii.gz", "qsm"),
    ("sub-01_desc-lesion_mask.nii.gz", "mask"),
    ("sub-01_desc-lesions_mask.nii.gz", "mask"),
    ("sub-01_space-orig_label-lesion_mask.nii.gz", "mask"),
    ("sub-01_label-lesion_dseg.nii.gz", "mask"),
    ("sub-01_desc-prl_mask.nii.gz", "prl_mask"),
    ("sub-01_desc-brain_mask.nii.gz", None),
    ("sub-01_desc-aseg_dseg.nii.gz", None),
    ("sub-01_inv-1_part-phase_MP2RAGE.nii.gz", None),  # an MP2RAGE inversion's phase
    ("sub-01_part-phase_T1w.nii.gz", None),
    ("sub-01_T2w.nii.gz", None),
])
def test_bids_contrast(name, contrast):
    assert bids_contrast(parse_bids_name(name)) == contrast


# --------------------------------------------------------------------------- subjects and sessions

def test_sessions_give_one_row_each_and_a_manifest_the_cohort_reader_opens(tmp_path):
    root = tmp_path / "ds"
    for sub in ("01", "02"):
        for ses in ("01", "02"):
            write_session(root, sub, ses)
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\nses-01\nses-02\n")

    found = find_bids_subjects(root)

    assert [s.id for s in found.subjects] == ["sub-01_ses-01", "sub-01_ses-02", "sub-02_ses-01", "sub-02_ses-02"]
    assert found.skipped == () and found.ignored == ()
    first = found.subjects[0]
    assert (first.participant, first.session) == ("01", "01")
    anat, masks = root / "sub-01/ses-01/anat", root / "derivatives/samseg/sub-01/ses-01/anat"
    assert dict(first.images) == {
        "phase": anat / "sub-01_ses-01_acq-swi_part-phase_T2starw.nii.gz",
        "mp2rage": anat / "sub-01_ses-01_UNIT1.nii.gz",
        "flair": anat / "sub-01_ses-01_FLAIR.nii.gz",
        "mask": masks / "sub-01_ses-01_desc-lesion_mask.nii.gz",
        "magnitude": anat / "sub-01_ses-01_acq-swi_part-mag_T2starw.nii.gz",
    }
    manifest = found.write_manifest(tmp_path / "out" / "manifest.csv")
    table = pd.read_csv(manifest, dtype=str)
    assert list(table.columns) == ["subject", "phase", "mp2rage", "flair", "mask", "magnitude"]
    assert table.loc[0, "mask"] == "../ds/derivatives/samseg/sub-01/ses-01/anat/sub-01_ses-01_desc-lesion_mask.nii.gz"
    cohort = read_manifest(manifest)
    assert cohort.ids == [s.id for s in found.subjects]
    assert cohort["sub-02_ses-02"].mask.resolve() == found.subjects[3].images["mask"].resolve()
    assert cohort["sub-01_ses-01"].image("flair").resolve() == first.images["flair"].resolve()


def test_subjects_without_sessions(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", structural=("T1w",))
    write_session(root, "02", structural=("T1w", "FLAIR"))
    found = find_bids_subjects(root)
    assert [(s.id, s.session) for s in found.subjects] == [("sub-01", None), ("sub-02", None)]
    assert found.columns == ["subject", "phase", "t1w", "flair", "mask", "magnitude"]
    rows = found.rows()
    assert rows[0]["flair"] == "" and rows[1]["flair"].endswith("sub-02_FLAIR.nii.gz")
    assert Path(rows[0]["t1w"]).is_absolute()


def test_rows_are_plain_dicts_relative_to_a_folder(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    [row] = find_bids_subjects(root).rows(relative_to=root)
    assert row == {
        "subject": "sub-01",
        "phase": "sub-01/anat/sub-01_acq-swi_part-phase_T2starw.nii.gz",
        "mp2rage": "sub-01/anat/sub-01_UNIT1.nii.gz",
        "flair": "sub-01/anat/sub-01_FLAIR.nii.gz",
        "mask": "derivatives/samseg/sub-01/anat/sub-01_desc-lesion_mask.nii.gz",
        "magnitude": "sub-01/anat/sub-01_acq-swi_part-mag_T2starw.nii.gz",
    }


def test_report_lists_found_skipped_and_ignored(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01")
    write_session(root, "01", "02", mask=None)
    write_image(root / "sub-01/ses-01/anat/scan_3.nii.gz")
    text = find_bids_subjects(root).report()
    assert "1 subject found, 1 skipped, 1 ignored" in text
    assert "sub-01_ses-01  phase, mp2rage, flair, mask, magnitude" in text
    assert "sub-01 ses-02: no lesion mask in derivatives/samseg" in text
    assert "sub-01/ses-01/anat/scan_3.nii.gz: not a BIDS file name" in text


# --------------------------------------------------------------------------- filters

def test_participant_and_session_filters(tmp_path):
    root = tmp_path / "ds"
    for sub, sessions in (("01", ("01", "02")), ("02", ("01", "02")), ("03", ("01",))):
        for ses in sessions:
            write_session(root, sub, ses)
    found = find_bids_subjects(root, participant_label=["01", "sub-03"])
    assert [s.id for s in found.subjects] == ["sub-01_ses-01", "sub-01_ses-02", "sub-03_ses-01"]
    found = find_bids_subjects(root, session="ses-02")
    assert [s.id for s in found.subjects] == ["sub-01_ses-02", "sub-02_ses-02"]
    assert skip_reasons(found) == {"sub-03": "no ses-02 (has: ses-01)"}
    found = find_bids_subjects(root, participant_label="02", session=["01"])
    assert [s.id for s in found.subjects] == ["sub-02_ses-01"] and found.skipped == ()


def test_unknown_labels_are_refused_naming_the_known_ones(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01")
    with pytest.raises(InputError, match=r"participant sub-07 is not in .* \(it has: sub-01\)"):
        find_bids_subjects(root, participant_label="07")
    with pytest.raises(InputError, match=r"session ses-09 is not in .* \(it has: ses-01\)"):
        find_bids_subjects(root, session="09")
    with pytest.raises(InputError, match="not a BIDS label"):
        find_bids_subjects(root, participant_label="../01")


def test_select_chooses_among_acquisitions(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", structural=("acq-mprage_T1w", "acq-spgr_T1w"))
    write_session(root, "02", structural=("acq-spgr_T1w",))
    with pytest.raises(InputError, match="no subject can be used") as raised:
        find_bids_subjects(root, participant_label="01")
    assert ("sub-01: two T1w images (acq-mprage, acq-spgr): choose one with select 't1w=acq-mprage' "
            "(--select t1w=acq-mprage)") in str(raised.value)

    found = find_bids_subjects(root, select="acq-mprage")  # the phase (acq-swi) is not affected
    assert [s.images["t1w"].name for s in found.subjects] == ["sub-01_acq-mprage_T1w.nii.gz",
                                                             "sub-02_acq-spgr_T1w.nii.gz"]
    assert found.subjects[0].images["phase"].name == "sub-01_acq-swi_part-phase_T2starw.nii.gz"

    found = find_bids_subjects(root, select=["t1w=acq-mprage"])  # required of every T1w
    assert [s.id for s in found.subjects] == ["sub-01"]
    assert skip_reasons(found) == {"sub-02": "no T1w image with acq-mprage (there: acq-spgr)"}


@pytest.mark.parametrize("item", ["mprage", "acq-", "t2w=acq-x", "acq-mp.rage", "=acq-x"])
def test_bad_select_items_are_refused(tmp_path, item):
    root = tmp_path / "ds"
    write_session(root, "01")
    with pytest.raises(InputError, match=r"is not \[CONTRAST=\]KEY-VALUE"):
        find_bids_subjects(root, select=item)


def test_select_refuses_subject_and_session_entities(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    with pytest.raises(InputError, match="participant_label and session"):
        find_bids_subjects(root, select="ses-01")


# --------------------------------------------------------------------------- derivatives

def test_masks_come_from_the_derivatives_matched_by_subject_and_session(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01", mask=None)
    write_session(root, "01", "02", mask=None)
    pipeline = root / "derivatives/lst/sub-01"
    write_image(pipeline / "ses-02/anat/sub-01_ses-02_space-orig_label-lesion_mask.nii.gz")
    write_image(pipeline / "ses-02/anat/sub-01_ses-02_desc-prl_mask.nii.gz")
    write_image(pipeline / "ses-02/anat/sub-01_ses-02_desc-brain_mask.nii.gz")
    write_image(pipeline / "ses-01/sub-01_ses-01_label-lesion_dseg.nii.gz")  # no datatype folder
    found = find_bids_subjects(root)
    first, second = found.subjects
    assert first.images["mask"].name == "sub-01_ses-01_label-lesion_dseg.nii.gz"
    assert "prl_mask" not in first.images
    assert second.images["mask"].name == "sub-01_ses-02_space-orig_label-lesion_mask.nii.gz"
    assert second.images["prl_mask"].name == "sub-01_ses-02_desc-prl_mask.nii.gz"
    assert found.columns == ["subject", "phase", "mp2rage", "flair", "mask", "prl_mask", "magnitude"]
    assert found.rows()[0]["prl_mask"] == ""


def test_derivatives_outside_the_dataset_and_a_choice_between_pipelines(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", mask="samseg")
    write_image(root / "derivatives/lst/sub-01/anat/sub-01_desc-lesion_mask.nii.gz")
    with pytest.raises(InputError, match="no subject can be used") as raised:
        find_bids_subjects(root)
    assert ("two lesion mask images (derivatives/lst, derivatives/samseg): give one pipeline folder with "
            "derivatives (--derivatives)") in str(raised.value)
    found = find_bids_subjects(root, derivatives=root / "derivatives/lst")
    assert found.subjects[0].images["mask"].parent.parent.parent.name == "lst"
    assert found.derivatives == (root / "derivatives/lst",)

    elsewhere = tmp_path / "masks"
    write_image(elsewhere / "sub-01/anat/sub-01_desc-lesions_mask.nii.gz")
    found = find_bids_subjects(root, derivatives=str(elsewhere))
    assert found.subjects[0].images["mask"] == elsewhere / "sub-01/anat/sub-01_desc-lesions_mask.nii.gz"
    assert f"derivatives: {elsewhere}" in found.report()


def test_bad_derivatives_folders_are_refused(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    with pytest.raises(InputError, match="derivatives folder not found"):
        find_bids_subjects(root, derivatives=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no sub-<label> folders"):
        find_bids_subjects(root, derivatives=[tmp_path / "empty"])


def test_why_a_mask_is_missing(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01", mask=None)
    write_image(root / "sub-01/ses-01/anat/sub-01_ses-01_desc-lesion_mask.nii.gz")  # in the raw folder
    with pytest.raises(InputError) as raised:
        find_bids_subjects(root)
    assert "no pipeline folder with sub-<label> folders; give the folder of the pipeline" in str(raised.value)
    assert "sub-01_ses-01_desc-lesion_mask.nii.gz lies in the raw folder: masks are derivatives" in str(raised.value)

    write_session(root, "01", "02", mask=None)
    write_image(root / "derivatives/samseg/sub-01/ses-01/anat/sub-01_ses-01_desc-brain_mask.nii.gz")
    write_image(root / "derivatives/samseg/sub-01/sub-01_desc-lesion_mask.nii.gz")  # names no session
    with pytest.raises(InputError) as raised:
        find_bids_subjects(root, session="02")
    assert ("sub-01 ses-02: no lesion mask in derivatives/samseg (masks are named *_desc-lesion_mask.nii.gz or "
            "*_label-lesion_mask.nii.gz); sub-01_desc-lesion_mask.nii.gz names no session") in str(raised.value)


def test_derivatives_of_absent_sessions_are_listed_as_ignored(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01")
    orphan = write_image(root / "derivatives/samseg/sub-01/ses-05/anat/sub-01_ses-05_desc-lesion_mask.nii.gz")
    found = find_bids_subjects(root)
    assert (orphan, "no raw images of sub-01 ses-05") in found.ignored


# --------------------------------------------------------------------------- susceptibility

def test_qsm_from_a_pipeline(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", "01", phase="echo-1_part-phase_MEGRE", magnitude=None)
    qsm = write_image(root / "derivatives/qsmxt/sub-01/ses-01/anat/sub-01_ses-01_Chimap.nii.gz")
    with pytest.raises(InputError, match=r"phase images \(1 subject\) and QSM images \(1 subject\).*"
                                         r"susceptibility='phase' or 'qsm'"):
        find_bids_subjects(root)
    found = find_bids_subjects(root, susceptibility="qsm")
    assert found.subjects[0].images["qsm"] == qsm
    assert found.columns == ["subject", "qsm", "mp2rage", "flair", "mask"]
    with pytest.raises(InputError, match="susceptibility 'swi' is unknown"):
        find_bids_subjects(root, susceptibility="swi")


def test_a_subject_without_the_chosen_susceptibility_is_skipped(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_session(root, "02")
    write_image(root / "derivatives/qsmxt/sub-01/anat/sub-01_Chimap.nii.gz")
    found = find_bids_subjects(root, susceptibility="qsm")
    assert [s.id for s in found.subjects] == ["sub-01"]
    assert skip_reasons(found)["sub-02"].startswith("no QSM (Chimap) image in anat or the derivatives "
                                                   "(anat holds: FLAIR, UNIT1, part-mag T2starw, part-phase T2starw)")


def test_the_magnitude_is_the_phase_acquisition_s_and_left_out_when_unclear(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_image(root / "sub-01/anat/sub-01_acq-other_part-mag_T2starw.nii.gz")
    write_session(root, "02", phase="part-phase_T2starw", magnitude="run-1_T2starw")
    write_session(root, "03", phase="echo-1_part-phase_MEGRE", magnitude="echo-1_part-mag_MEGRE")
    write_image(root / "sub-03/anat/sub-03_echo-2_part-mag_MEGRE.nii.gz")
    write_image(root / "derivatives/qsmxt/sub-03/anat/sub-03_Chimap.nii.gz")
    found = find_bids_subjects(root, participant_label=["01", "02"])
    first, second = found.subjects
    assert first.images["magnitude"].name == "sub-01_acq-swi_part-mag_T2starw.nii.gz" and first.notes == ()
    assert "magnitude" not in second.images
    assert list(second.notes) == [("magnitude left out: none of the magnitude images is of the phase's "
                                   "acquisition (sub-02_run-1_T2starw.nii.gz)")]
    assert "notes:\n  sub-02: magnitude left out: none of the magnitude images" in found.report()
    [third] = find_bids_subjects(root, participant_label="03", susceptibility="qsm").subjects
    assert "magnitude" not in third.images
    assert list(third.notes) == [("magnitude left out: two magnitude images (echo-1, echo-2): the echoes of a "
                                  "multi-echo series; choose one with select 'magnitude=echo-N' (--select "
                                  "magnitude=echo-N) or give a combined magnitude image")]


# --------------------------------------------------------------------------- skip reasons

def test_a_4d_multi_echo_phase_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", phase="part-phase_MEGRE", magnitude=None)
    write_image(root / "sub-01/anat/sub-01_part-phase_MEGRE.nii.gz", (3, 3, 3, 4))
    write_session(root, "02")
    write_image(root / "sub-02/anat/sub-02_acq-swi_part-mag_T2starw.nii.gz", (3, 3, 3, 4))
    found = find_bids_subjects(root)
    [subject] = found.subjects
    assert "magnitude" not in subject.images
    assert list(subject.notes) == [("magnitude left out: the magnitude sub-02/anat/sub-02_acq-swi_part-mag_T2starw"
                                    ".nii.gz is 4D (4 volumes: a multi-echo series); give one echo or a combined "
                                    "magnitude image")]
    assert skip_reasons(found) == {"sub-01": "the phase sub-01/anat/sub-01_part-phase_MEGRE.nii.gz is 4D (4 "
                                             "volumes: a multi-echo series); give one echo or a combined phase "
                                             "image"}


def test_a_4d_structural_image_is_refused_and_one_volume_is_fine(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", structural=("FLAIR",))
    write_image(root / "sub-01/anat/sub-01_FLAIR.nii.gz", (3, 3, 3, 2))
    write_session(root, "02", structural=("FLAIR",))
    write_image(root / "sub-02/anat/sub-02_FLAIR.nii.gz", (3, 3, 3, 1))
    found = find_bids_subjects(root)
    assert [s.id for s in found.subjects] == ["sub-02"]
    assert skip_reasons(found)["sub-01"] == ("the FLAIR sub-01/anat/sub-01_FLAIR.nii.gz is 4D (2 volumes); "
                                             "give one 3D volume")


def test_echoes_in_separate_files_need_a_choice(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", phase="echo-1_part-phase_MEGRE", magnitude="echo-1_part-mag_MEGRE")
    for echo in (2, 3):
        write_image(root / f"sub-01/anat/sub-01_echo-{echo}_part-phase_MEGRE.nii.gz")
        write_image(root / f"sub-01/anat/sub-01_echo-{echo}_part-mag_MEGRE.nii.gz")
    with pytest.raises(InputError) as raised:
        find_bids_subjects(root)
    assert ("sub-01: three phase images (echo-1, echo-2, echo-3): the echoes of a multi-echo series; choose one "
            "with select 'phase=echo-N' (--select phase=echo-N) or give a combined phase image") in str(raised.value)
    [subject] = find_bids_subjects(root, select="echo-2").subjects
    assert subject.images["phase"].name == "sub-01_echo-2_part-phase_MEGRE.nii.gz"
    assert subject.images["magnitude"].name == "sub-01_echo-2_part-mag_MEGRE.nii.gz"


def test_every_problem_of_a_subject_is_listed_at_once(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_session(root, "02", phase="T2w", magnitude=None, structural=(), mask=None)
    found = find_bids_subjects(root)
    reason = skip_reasons(found)["sub-02"]
    assert reason.startswith("no phase (part-phase with suffix T2starw, MEGRE, GRE, swi) image (anat holds: T2w); "
                             "no structural image (T1w, UNIT1 or FLAIR) (anat holds: T2w); no lesion mask in "
                             "derivatives/samseg")


def test_an_unreadable_image_skips_its_subject(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_session(root, "02")
    (root / "sub-02/anat/sub-02_UNIT1.nii.gz").write_bytes(b"not an image")
    reason = skip_reasons(find_bids_subjects(root))["sub-02"]
    assert reason.startswith("sub-02/anat/sub-02_UNIT1.nii.gz cannot be read as a NIfTI image (")


def test_an_id_longer_than_the_id_rule_allows_is_skipped(tmp_path):
    root = tmp_path / "ds"
    label = "a" * 60
    write_session(root, "01")
    write_session(root, label, "01")
    found = find_bids_subjects(root)
    assert [s.id for s in found.subjects] == ["sub-01"]
    reason = skip_reasons(found)[f"sub-{label} ses-01"]
    assert reason.startswith(f"its id 'sub-{label}_ses-01' is longer than 64 characters; an id is 1 to 64")


def test_folders_and_files_that_are_not_bids_are_ignored_and_listed(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_session(root, "02")
    write_image(root / "sub-01/anat/sub-02_T1w.nii.gz")       # another subject's name
    write_image(root / "sub-x.y/anat/sub-x.y_T1w.nii.gz")     # not a BIDS label
    write_image(root / "sub-01/anat/sub-01_T1w_v2.nii.gz")    # not a BIDS name
    found = find_bids_subjects(root)
    assert [s.id for s in found.subjects] == ["sub-01", "sub-02"]
    assert "t1w" not in found.subjects[1].images
    assert dict(found.ignored) == {
        root / "sub-01/anat/sub-02_T1w.nii.gz": "its name says sub-02 but it lies in the folder of sub-01",
        root / "sub-x.y": "not a subject folder: a BIDS label is letters and digits only",
        root / "sub-01/anat/sub-01_T1w_v2.nii.gz": "not a BIDS file name (sub-<label>[_<key>-<value>...]"
                                                   "_<suffix>.nii[.gz])",
    }


def test_hidden_files_sidecars_sourcedata_code_and_other_datatypes_are_not_read(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    (root / "sub-01/anat/sub-01_UNIT1.json").write_text("{}")
    write_image(root / "sub-01/anat/.sub-01_T1w.nii.gz")
    write_image(root / "sub-01/func/sub-01_task-rest_part-phase_T2starw.nii.gz")
    write_image(root / "sourcedata/sub-01/anat/sub-01_T1w.nii.gz")
    write_image(root / "code/sub-01/anat/sub-01_T1w.nii.gz")
    write_image(root / ".git/sub-01/anat/sub-01_T1w.nii.gz")
    found = find_bids_subjects(root)
    assert [s.id for s in found.subjects] == ["sub-01"]
    assert "t1w" not in found.subjects[0].images and found.ignored == ()


def test_the_swi_datatype_folder_is_read(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01", phase="", magnitude=None)
    write_image(root / "sub-01/swi/sub-01_part-phase_GRE.nii.gz")
    [subject] = find_bids_subjects(root).subjects
    assert subject.images["phase"] == root / "sub-01/swi/sub-01_part-phase_GRE.nii.gz"


# --------------------------------------------------------------------------- links (DataLad, git-annex)

def test_links_are_followed_and_kept_as_given(tmp_path):
    annex = tmp_path / "annex"
    root = tmp_path / "ds"
    write_session(annex, "01")
    for file in annex.rglob("*.nii.gz"):  # every file a link into the annex, as DataLad makes them
        link = root / file.relative_to(annex)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(file)
    write_session(tmp_path / "elsewhere", "02")
    (root / "sub-02").symlink_to(tmp_path / "elsewhere/sub-02", target_is_directory=True)
    write_image(root / "derivatives/samseg/sub-02/anat/sub-02_desc-lesion_mask.nii.gz")
    found = find_bids_subjects(root)
    assert [s.id for s in found.subjects] == ["sub-01", "sub-02"]
    assert found.subjects[0].images["phase"] == root / "sub-01/anat/sub-01_acq-swi_part-phase_T2starw.nii.gz"
    assert found.subjects[0].images["phase"].is_symlink()
    row = found.rows(relative_to=tmp_path)[0]
    assert row["mp2rage"] == "ds/sub-01/anat/sub-01_UNIT1.nii.gz"  # the link, not its target in the annex
    assert found.subjects[1].images["flair"] == root / "sub-02/anat/sub-02_FLAIR.nii.gz"


def test_a_link_to_absent_content_says_to_get_it(tmp_path):
    root = tmp_path / "ds"
    write_session(root, "01")
    write_session(root, "02")
    flair = root / "sub-02/anat/sub-02_FLAIR.nii.gz"
    flair.unlink()
    flair.symlink_to(root / ".git/annex/objects/XX/MD5E-s1--0.nii.gz")
    found = find_bids_subjects(root)
    assert skip_reasons(found)["sub-02"] == ("sub-02/anat/sub-02_FLAIR.nii.gz is a link to content that is not "
                                             "here (in a DataLad dataset, run `datalad get "
                                             "sub-02/anat/sub-02_FLAIR.nii.gz`)")


# --------------------------------------------------------------------------- nothing to find

def test_a_folder_without_usable_images_lists_what_it_holds(tmp_path):
    root = tmp_path / "ds"
    for sub in ("01", "02"):
        write_image(root / f"sub-{sub}/anat/sub-{sub}_acq-tse_T2w.nii.gz")
        write_image(root / f"sub-{sub}/func/sub-{sub}_task-rest_bold.nii.gz")
    write_image(root / "sub-01/anat/sub-01_t1_mprage.nii.gz")
    with pytest.raises(InputError) as raised:
        find_bids_subjects(root)
    message = str(raised.value)
    assert message.startswith(f"{root.absolute()}: holds no image napari-deep-prl uses")
    assert "2 subject folders; datatype folders anat/ (2), func/ (2); 2 BIDS NIfTI files in anat/swi/" in message
    assert "suffixes T2w (2); entities acq; 1 entry ignored (not BIDS names)" in message
    assert ("e.g. sub-01/anat/sub-01_acq-tse_T2w.nii.gz, sub-02/anat/sub-02_acq-tse_T2w.nii.gz, "
            "sub-01/anat/sub-01_t1_mprage.nii.gz. Name the images as BIDS does") in message


def test_not_a_bids_folder(tmp_path):
    with pytest.raises(InputError, match="BIDS folder not found"):
        find_bids_subjects(tmp_path / "nowhere")
    write_image(tmp_path / "ds" / "T1.nii.gz")
    (tmp_path / "ds" / "code").mkdir()
    with pytest.raises(InputError, match=r"not a BIDS dataset: no sub-<label> folders \(it holds: T1.nii.gz, code\)"):
        find_bids_subjects(tmp_path / "ds")


def test_no_usable_subject_lists_why(tmp_path):
    root = tmp_path / "ds"
    for sub in ("01", "02"):
        write_session(root, sub, mask=None)
    with pytest.raises(InputError) as raised:
        find_bids_subjects(root)
    lines = str(raised.value).splitlines()
    assert lines[0].endswith("no subject can be used; each was skipped:")
    assert lines[1].startswith("  sub-01: no lesion mask:") and lines[2].startswith("  sub-02: no lesion mask:")
    assert lines[-1].startswith("Do what each line says")


def test_the_module_imports_neither_torch_nor_qt():
    code = ("import sys, napari_deep_prl.data.bids\n"
            "print([m for m in ('torch', 'qtpy', 'napari') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- a BIDS dataset as a cohort

def bids_dataset(root: Path, write_subject) -> Path:
    """Two subjects of the test fixture laid out as BIDS (phase, UNIT1 and FLAIR raw; masks from a
    pipeline), sub-02 without a mask; ``dataset_description.json`` makes it a BIDS dataset."""
    for sub, with_mask in (("01", True), ("02", False)):
        paths = write_subject(f"sub-{sub}", folder=root / "work", seed=int(sub), extra=("flair",))
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        paths.image("phase").rename(anat / f"sub-{sub}_part-phase_T2starw.nii.gz")
        paths.image("mp2rage").rename(anat / f"sub-{sub}_UNIT1.nii.gz")
        paths.image("flair").rename(anat / f"sub-{sub}_FLAIR.nii.gz")
        if with_mask:
            masks = root / "derivatives" / "lst" / f"sub-{sub}" / "anat"
            masks.mkdir(parents=True)
            paths.mask.rename(masks / f"sub-{sub}_desc-lesion_mask.nii.gz")
    (root / "work").rename(root.parent / "work")  # out of the dataset
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.9.0"}')
    return root


def test_a_bids_dataset_opens_as_a_cohort_that_says_what_it_skipped(tmp_path, write_subject):
    root = bids_dataset(tmp_path / "ds", write_subject)
    cohort = open_cohort(root)
    assert cohort.ids == ["sub-01"] and cohort.bids is not None
    assert [name for name, _ in cohort[0].images] == ["phase", "mp2rage", "flair"]
    assert cohort[0].mask == root / "derivatives/lst/sub-01/anat/sub-01_desc-lesion_mask.nii.gz"
    assert list(cohort.load("sub-01").images) == ["phase", "mp2rage", "flair"]
    report = cohort.bids.report(found=False)
    assert "1 subject found, 1 skipped" in report and "sub-02: no lesion mask" in report
    assert "found:" not in report and "found:" in cohort.bids.report()
    (root / "dataset_description.json").unlink()  # without it: the folder layout, which needs masks beside
    with pytest.raises(InputError, match="no mask image found"):
        open_cohort(root)


def test_commands_reading_a_bids_dataset_print_what_was_skipped(tmp_path, write_subject, capsys):
    root = bids_dataset(tmp_path / "ds", write_subject)
    assert main(["lesions", str(root), "-o", str(tmp_path / "lesions.tsv")]) == 0
    err = capsys.readouterr().err
    assert "BIDS dataset" in err and "1 skipped" in err and "sub-02: no lesion mask" in err
    assert pd.read_csv(tmp_path / "lesions.tsv", sep="\t")["subject"].unique().tolist() == ["sub-01"]


# --------------------------------------------------------------------------- BIDS options of the commands

def labelled_bids_dataset(root: Path, write_subject, subjects=("01", "02", "03")) -> Path:
    """Subjects of the test fixture as BIDS with their lesion and PRL masks from a pipeline."""
    for sub in subjects:
        paths = write_subject(f"sub-{sub}", folder=root.parent / "work", seed=int(sub), rim_lesions=(0,))
        anat, masks = root / f"sub-{sub}" / "anat", root / "derivatives" / "lst" / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        masks.mkdir(parents=True)
        paths.image("phase").rename(anat / f"sub-{sub}_part-phase_T2starw.nii.gz")
        paths.image("mp2rage").rename(anat / f"sub-{sub}_UNIT1.nii.gz")
        paths.mask.rename(masks / f"sub-{sub}_desc-lesion_mask.nii.gz")
        paths.prl_mask.rename(masks / f"sub-{sub}_desc-prl_mask.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.9.0"}')
    return root


def test_project_init_keeps_the_bids_subjects_it_found(tmp_path, write_subject, capsys):
    root = labelled_bids_dataset(tmp_path / "ds", write_subject)
    study = tmp_path / "study"
    assert main(["project", "init", str(study), "--manifest", str(root), "--participant-label", "01", "03",
                 "--quiet"]) == 0
    assert "BIDS dataset" in capsys.readouterr().err
    assert read_manifest(study / "manifest.csv").ids == ["sub-01", "sub-03"]
    labelled_bids_dataset(tmp_path / "ds", write_subject, subjects=("04",))  # the dataset grows
    from napari_deep_prl.ratings.project import Project

    with Project.open(study) as project:
        assert project.cohort.ids == ["sub-01", "sub-03"]
        assert sorted(project.lesions()["subject"].unique()) == ["sub-01", "sub-03"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.csv").write_text("mine")
    assert main(["project", "init", str(tmp_path / "other"), "--manifest", str(root), "--quiet"]) == 2
    assert "already holds a manifest.csv" in capsys.readouterr().err
    assert (tmp_path / "other" / "manifest.csv").read_text() == "mine"


def test_train_takes_a_bids_dataset_and_its_options(tmp_path, write_subject, capsys):
    root = labelled_bids_dataset(tmp_path / "ds", write_subject, subjects=("01", "02", "03", "04"))
    model = tmp_path / "model.pt"
    assert main(["train", str(root), "-o", str(model), "--participant-label", "01", "02", "03", "--models", "1",
                 "--epochs", "1", "--samples-per-epoch", "4", "--batch-size", "4", "--patch-size", "12",
                 "--device", "cpu", "--no-tta", "--quiet"]) == 0
    assert "BIDS dataset" in capsys.readouterr().err
    from napari_deep_prl.model.checkpoint import load_checkpoint

    training = load_checkpoint(model).metadata["training"]
    assert sorted(training["train_subjects"] + training["val_subjects"]) == ["sub-01", "sub-02", "sub-03"]


@pytest.mark.parametrize("command", [["cv", "-o", "{out}"], ["score", "--model", "{out}/m.pt"],
                                     ["project", "init", "{out}/p", "--manifest"], ["train", "-o", "{out}/m.pt"]])
def test_every_cohort_command_passes_the_bids_options_on(tmp_path, write_subject, capsys, command):
    root = labelled_bids_dataset(tmp_path / "ds", write_subject)
    words = [w.format(out=tmp_path / "out") for w in command]
    words = [*words, str(root)] if words[-1] == "--manifest" else [words[0], str(root), *words[1:]]
    assert main([*words, "--session-label", "9"]) == 2
    assert "session ses-9 is not in" in capsys.readouterr().err


def test_bids_options_with_a_manifest_or_one_subject_are_refused(tmp_path, manifest, capsys):
    assert main(["lesions", str(manifest), "--session-label", "1"]) == 2
    assert "not a BIDS dataset" in capsys.readouterr().err
    assert main(["lesions", "--phase", "p.nii.gz", "--mp2rage", "m.nii.gz", "--mask", "k.nii.gz",
                 "--derivatives", "d"]) == 2
    assert "--derivatives: options of a BIDS dataset" in capsys.readouterr().err
