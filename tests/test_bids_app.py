"""The BIDS App (``deep-prl bids``): derivatives layout, reruns, atomic outputs, group level, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids_support import ROWS, tiny_model, write_bids_dataset
from model_support import one_torch_thread  # noqa: F401

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.base.tables import HOST
from napari_deep_prl.cli import main
from napari_deep_prl.data.bids import find_bids_subjects
from napari_deep_prl.data.cohort import bids_subject_paths
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.scoring.bids_app import COLUMNS, group_level, participant_level
from napari_deep_prl.scoring.score import SCORE_COLUMNS, cohort_threshold, score_subject

ROW_IDS = ["sub-01", "sub-02_ses-a", "sub-02_ses-b", "sub-03"]
ROW_FOLDERS = ["sub-01/anat", "sub-02/ses-a/anat", "sub-02/ses-b/anat", "sub-03/anat"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """The BIDS dataset of :data:`ROWS` and a tiny model (module-wide: the tests only read them)."""
    root = tmp_path_factory.mktemp("bids_app")
    return write_bids_dataset(root / "bids"), tiny_model(root / "model.pt")


def participant(bids, out, model, **options):
    return run_to_end(participant_level(bids, out, load_models(model), **options))


def test_participant_outputs_are_bids_derivatives(dataset, tmp_path):
    bids, model = dataset
    out = tmp_path / "out"
    done = participant(bids, out, model)
    assert done.written == ROW_IDS and not done.done and not done.skipped and not done.failed
    for row, folder in zip(ROW_IDS, ROW_FOLDERS):
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(
            f"{row}_{name}" for name in ("desc-lesions_prl.tsv", "desc-lesions_prl.json",
                                         "space-phase_desc-prl_probseg.nii.gz", "space-phase_desc-prl_probseg.json",
                                         "space-phase_desc-prl_mask.nii.gz", "space-phase_desc-prl_mask.json"))
    description = json.loads((out / "dataset_description.json").read_text())
    [checkpoint] = load_models(model)
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "napari-deep-prl"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert description["ModelIds"] == [checkpoint.id] and checkpoint.id in description["GeneratedBy"][0]["Description"]
    # The table is the one scoring path's, its sidecar describes every column, the maps hold it.
    folder = out / "sub-02" / "ses-b" / "anat"
    table = pd.read_csv(folder / "sub-02_ses-b_desc-lesions_prl.tsv", sep="\t", na_values="n/a")
    subject = bids_subject_paths(find_bids_subjects(bids, participant_label="02", session="b").subjects[0]).load()
    lesions = find_lesions(subject)
    expected = score_subject(subject, [checkpoint], lesions=lesions)
    assert table.columns.tolist() == list(SCORE_COLUMNS)
    np.testing.assert_allclose(table["prl_probability"], expected["prl_probability"], atol=1e-6)
    sidecar = json.loads((folder / "sub-02_ses-b_desc-lesions_prl.json").read_text())
    assert list(sidecar) == table.columns.tolist() and all(sidecar[c]["Description"] for c in sidecar)
    probseg = nib.load(folder / "sub-02_ses-b_space-phase_desc-prl_probseg.nii.gz")
    mask = np.asarray(nib.load(folder / "sub-02_ses-b_space-phase_desc-prl_mask.nii.gz").dataobj)
    np.testing.assert_allclose(probseg.affine, subject.affine)
    for lesion, probability, called in table[["lesion", "prl_probability", "prl"]].itertuples(index=False):
        voxels = lesions.labels == lesion
        np.testing.assert_allclose(np.asarray(probseg.dataobj)[voxels], probability, atol=1e-6)
        assert (mask[voxels] == called).all()
    assert not mask[lesions.labels == 0].any()
    assert json.loads((folder / "sub-02_ses-b_space-phase_desc-prl_mask.json").read_text())["Sources"] == [
        "sub-02/ses-b/anat/sub-02_ses-b_part-phase_T2starw.nii.gz", "sub-02/ses-b/anat/sub-02_ses-b_UNIT1.nii.gz",
        "derivatives/lesions/sub-02/ses-b/anat/sub-02_ses-b_desc-lesion_mask.nii.gz"]


def test_a_finished_participant_is_not_redone_unless_asked(dataset, tmp_path):
    bids, model = dataset
    out = tmp_path / "out"
    participant(bids, out, model, participant_label=["01"])
    tsv = out / "sub-01" / "anat" / "sub-01_desc-lesions_prl.tsv"
    tsv.write_text("edited\n")
    again = participant(bids, out, model)
    assert again.done == ["sub-01"] and again.written == ROW_IDS[1:]
    assert tsv.read_text() == "edited\n"
    redone = participant(bids, out, model, participant_label=["sub-01"], overwrite=True)
    assert redone.written == ["sub-01"] and tsv.read_text().startswith("subject\tlesion")
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name != ".work"]  # nothing left aside
    assert not list((out / ".work").iterdir())


KILLED_MIDWAY = """\
import sys, time
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.scoring import bids_app

def stall(table, path, **options):  # the lesion table is written after the images: stop there
    print("writing", flush=True)
    time.sleep(600)

bids_app.write_table = stall
run_to_end(bids_app.participant_level(sys.argv[1], sys.argv[2], load_models(sys.argv[3]), participant_label=["03"]))
"""


def kill_when(script: str, line: str, bids: Path, out: Path, model: Path, check=lambda: None) -> int:
    """Run ``script`` (a participant level that stalls) on ``bids``; SIGKILL it once it prints
    ``line`` and ``check()`` has run; its process id."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    task = subprocess.Popen([sys.executable, "-c", script, str(bids), str(out), str(model)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert task.stdout.readline() == f"{line}\n"
        check()
    finally:
        task.send_signal(signal.SIGKILL)
        task.wait()
    return task.pid


def test_a_killed_participant_leaves_nothing_in_the_outputs(dataset, tmp_path):
    bids, model = dataset
    out = tmp_path / "out"

    def images_staged() -> None:  # the images were written, in the work folder
        assert len(list((out / ".work").rglob("*.nii.gz"))) == 2

    kill_when(KILLED_MIDWAY, "writing", bids, out, model, images_staged)
    assert sorted(p.name for p in out.iterdir()) == [".work", "dataset_description.json"]
    # The next run of that participant writes it whole and clears the killed task's work.
    assert participant(bids, out, model, participant_label=["03"]).written == ["sub-03"]
    assert len(list((out / "sub-03" / "anat").iterdir())) == 6 and not list((out / ".work").iterdir())


KILLED_COPYING = """\
import shutil, sys, time
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.scoring import bids_app

copytree = shutil.copytree

def stall(source, target, **options):  # the work folder on another disk: killed half-way through the copy
    copytree(source, target, **options)
    print("copied", flush=True)
    time.sleep(600)

bids_app._same_file_system = lambda a, b: False
bids_app.shutil.copytree = stall
run_to_end(bids_app.participant_level(sys.argv[1], sys.argv[2], load_models(sys.argv[3]), participant_label=["03"]))
"""


def test_a_killed_cross_disk_copy_is_cleared_at_the_next_run_and_only_it(dataset, tmp_path):
    bids, model = dataset
    out = tmp_path / "out"
    pid = kill_when(KILLED_COPYING, "copied", bids, out, model)
    [copy] = (out / "sub-03").iterdir()  # the hidden half-published copy, and no participant folder
    assert copy.name.startswith(f".anat.{HOST}-{pid}-") and copy.name.endswith(".tmp")
    # beside it: one of a running task, one of another machine, and a folder that is not ours
    kept = [out / "sub-03" / f".anat.{HOST}-{os.getpid()}-0a1b2c3d.tmp",
            out / "sub-03" / f".anat.{HOST}x-{pid}-0a1b2c3d.tmp", out / "sub-03" / ".anat.backup"]
    for folder in kept:
        folder.mkdir()
    assert participant(bids, out, model, participant_label=["03"]).written == ["sub-03"]
    assert sorted(p.name for p in (out / "sub-03").iterdir()) == sorted(["anat", *(k.name for k in kept)])
    assert len(list((out / "sub-03" / "anat").iterdir())) == 6
    # a participant already done is skipped, and still its stale copies are cleared
    (out / "sub-03" / copy.name).mkdir()
    assert participant(bids, out, model, participant_label=["03"]).done == ["sub-03"]
    assert not (out / "sub-03" / copy.name).exists()


def test_a_failed_participant_leaves_nothing_and_the_others_are_written(dataset, tmp_path, monkeypatch):
    from napari_deep_prl.scoring import bids_app

    bids, model = dataset
    out = tmp_path / "out"
    real = bids_app.write_table

    def full_disk_for_sub_02(table, path, **options):
        if path.name.startswith("sub-02_ses-a"):
            raise InputError(f"{path}: cannot be written: no space left on the disk")
        return real(table, path, **options)

    monkeypatch.setattr(bids_app, "write_table", full_disk_for_sub_02)
    done = participant(bids, out, model)
    assert list(done.failed) == ["sub-02_ses-a"] and "no space left" in done.failed["sub-02_ses-a"]
    assert done.written == ["sub-01", "sub-02_ses-b", "sub-03"]
    assert not (out / "sub-02" / "ses-a").exists() and not list((out / ".work").iterdir())


def test_of_two_tasks_writing_one_participant_one_wins_whole(dataset, tmp_path, monkeypatch):
    """The other task finishes the participant while this one scores it: this one keeps out."""
    from napari_deep_prl.scoring import bids_app

    bids, model = dataset
    out = tmp_path / "out"
    real, others = bids_app.score_subject, []

    def while_another_task_runs(*args, **options):
        if not others:
            others.append(None)
            others[0] = participant(bids, out, model, participant_label=["03"])
        return real(*args, **options)

    monkeypatch.setattr(bids_app, "score_subject", while_another_task_runs)
    mine = participant(bids, out, model, participant_label=["03"])
    assert others[0].written == ["sub-03"]
    assert "another task wrote this participant's outputs" in mine.failed["sub-03"] and not mine.written
    assert len(list((out / "sub-03" / "anat").iterdir())) == 6
    assert not list((out / ".work").iterdir()) and [p.name for p in (out / "sub-03").iterdir()] == ["anat"]


def test_outputs_in_the_datasets_derivatives_are_never_read_as_inputs(dataset, tmp_path):
    """Our PRL masks are the model's calls: discovery must not take them as ground truth."""
    import shutil

    bids = shutil.copytree(dataset[0], tmp_path / "bids")
    out = bids / "derivatives" / "deep-prl"
    participant(bids, out, dataset[1], participant_label=["01"])
    found = find_bids_subjects(bids)
    assert [s.id for s in found.subjects] == ROW_IDS and not any("prl_mask" in s.images for s in found.subjects)
    participant(bids, out, dataset[1], participant_label=["01"], overwrite=True)
    table = pd.read_csv(out / "sub-01" / "anat" / "sub-01_desc-lesions_prl.tsv", sep="\t")
    assert "prl_truth" not in table
    with pytest.raises(InputError, match="holds the PRL scores of napari-deep-prl"):
        find_bids_subjects(bids, derivatives=out)


def test_group_merges_the_participants_and_decides_the_cohort(dataset, tmp_path, capsys):
    bids, model = dataset
    out = tmp_path / "out"
    participant(bids, out, model, participant_label=["01", "02"])
    # sub-03 has no outputs yet: the group is written of the others, and the run says so
    assert main(["bids", str(bids), str(out), "group", "--quiet"]) == 1
    assert "1 subject(s) have no participant outputs: sub-03" in capsys.readouterr().err
    participant(bids, out, model)
    group = group_level(bids, out)
    rows = [pd.read_csv(next((out / f).glob("*.tsv")), sep="\t", na_values="n/a") for f in ROW_FOLDERS]
    merged = pd.read_csv(out / "group" / "group_desc-lesions_prl.tsv", sep="\t", na_values="n/a")
    pd.testing.assert_frame_equal(merged, pd.concat(rows, ignore_index=True))
    subjects = pd.read_csv(out / "group" / "group_desc-subjects_prl.tsv", sep="\t")
    assert subjects["subject"].tolist() == ROW_IDS and subjects["lesions"].tolist() == [3, 3, 3, 3]
    assert subjects["prl_count"].tolist() == [int(t["prl"].sum()) for t in rows]
    page = (out / "group" / "group_desc-summary_prl.html").read_text()
    assert "data:image/png;base64," in page and all(row in page for row in ROW_IDS)
    assert (out / "group" / "group_desc-counts_prl.png").read_bytes().startswith(b"\x89PNG")
    assert group.threshold is None and not group.missing
    decided = group_level(bids, out, load_models(model), cohort_decision=True)
    cut = cohort_threshold(merged)
    assert decided.threshold == cut
    assert decided.lesions["prl"].tolist() == (merged["prl_probability"] >= cut).astype(int).tolist()
    with pytest.raises(InputError, match="needs the models"):
        group_level(bids, out, cohort_decision=True)


def test_an_onnx_model_writes_the_checkpoints_derivatives(dataset, tmp_path, capsys):
    """`deep-prl bids ... --model MODEL.onnx`: the same folder, ids, calls and probabilities (to 1e-4)."""
    from napari_deep_prl.model.export import export_onnx

    bids, model = dataset
    onnx = export_onnx(load_models(model), tmp_path / "model.onnx").graph
    tables = []
    for given, out in ((model, tmp_path / "torch"), (onnx, tmp_path / "onnx")):
        assert main(["bids", str(bids), str(out), "participant", "--model", str(given), "--precision", "float32",
                     "--device", "cpu", "--nthreads", "1", "--quiet"]) == 0
        assert main(["bids", str(bids), str(out), "group", "--model", str(given), "--cohort-decision"]) == 0
        tables.append(pd.read_csv(out / "group" / "group_desc-lesions_prl.tsv", sep="\t", na_values="n/a"))
        assert json.loads((out / "dataset_description.json").read_text())["ModelIds"] == [load_models(model)[0].id]
    pd.testing.assert_frame_equal(tables[1], tables[0], atol=1e-4, check_exact=False)
    # one model, two files: the ONNX run may add to the checkpoint's output folder
    assert main(["bids", str(bids), str(tmp_path / "torch"), "participant", "--model", str(onnx), "--quiet"]) == 0
    assert "0 written, 4 already done" in capsys.readouterr().err


def test_bad_input_is_refused_with_what_to_do(dataset, tmp_path, capsys):
    bids, model = dataset
    with pytest.raises(InputError, match="outside its derivatives/ folder"):
        participant(bids, bids / "out", model)
    with pytest.raises(InputError, match="derivatives folder itself"):
        participant(bids, bids / "derivatives", model)
    with pytest.raises(InputError, match="not a BIDS dataset"):
        participant(tmp_path, tmp_path / "out", model)
    with pytest.raises(InputError, match="participant sub-09 is not in"):
        participant(bids, tmp_path / "out", model, participant_label=["09"])
    assert not (tmp_path / "out").exists()  # refused before anything is written
    other = tiny_model(tmp_path / "other.pt", seed=1)
    participant(bids, tmp_path / "out", model, participant_label=["01"])
    with pytest.raises(InputError, match="holds outputs of napari-deep-prl .* models"):
        participant(bids, tmp_path / "out", other)
    # A subject the mask pipeline has no mask for is named, the others are scored, the exit is 1.
    import shutil

    partial = shutil.copytree(bids, tmp_path / "partial")
    shutil.rmtree(partial / "derivatives" / "lesions" / "sub-03")
    assert main(["bids", str(partial), str(tmp_path / "out2"), "participant", "--model", str(model),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "participant: 3 written" in err and "sub-03: no lesion mask" in err
    assert main(["bids", str(bids), str(tmp_path / "out3"), "participant", "--quiet"]) == 2
    assert "needs the model" in capsys.readouterr().err


def test_the_rows_are_the_datasets(dataset):
    assert [s.id for s in find_bids_subjects(dataset[0]).subjects] == ROW_IDS == [
        f"sub-{p}" + (f"_ses-{s}" if s else "") for p, s, _ in ROWS]
    assert set(COLUMNS) >= set(SCORE_COLUMNS)
