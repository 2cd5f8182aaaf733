"""The job-array recipes of docs/cluster.md on a real one-node SLURM cluster: their outputs equal a
single process's."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from bids_support import tiny_model, write_bids_dataset
from conftest import write_subject_files
from model_support import one_torch_thread  # noqa: F401
from slurm_support import slurm  # noqa: F401

from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import write_manifest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

#: ``deep-prl`` as the jobs run it: this interpreter, whichever environment it is in.
DEEP_PRL = f"{shlex.quote(sys.executable)} -m napari_deep_prl.cli"


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the work folder, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(folder).parts}


def test_bids_participant_array_then_group_equals_one_process(slurm, tmp_path):  # noqa: F811
    bids = write_bids_dataset(tmp_path / "bids")
    model = tiny_model(tmp_path / "model.pt")
    out = tmp_path / "array"
    # docs/cluster.md: one task per sub-* folder of the dataset, then the group level after them all
    participants = slurm.submit(f"""\
label=$(ls -d {bids}/sub-* | sed -n "${{SLURM_ARRAY_TASK_ID}}p" | xargs basename)
{DEEP_PRL} bids {bids} {out} participant --participant-label "$label" --model {model} \\
    --nthreads "$SLURM_CPUS_PER_TASK" --quiet
""", "--job-name=participant", "--array=1-3", "--cpus-per-task=1", cwd=tmp_path)
    group = slurm.submit(f"{DEEP_PRL} bids {bids} {out} group --model {model} --cohort-decision --quiet\n",
                         "--job-name=group", f"--dependency=afterok:{participants}", cwd=tmp_path)
    states = slurm.wait(participants, group)
    assert states == {participants: ["COMPLETED"] * 3, group: ["COMPLETED"]}, slurm.logs()

    single = tmp_path / "single"
    assert main(["bids", str(bids), str(single), "participant", "--model", str(model), "--quiet"]) == 0
    assert main(["bids", str(bids), str(single), "group", "--model", str(model), "--cohort-decision",
                 "--quiet"]) == 0
    got, expected = files_of(out), files_of(single)
    assert sorted(got) == sorted(expected) and len(got) == 1 + 4 * 6 + 5
    assert [name for name in expected if got[name] != expected[name]] == []


def test_cv_fold_array_then_merge_equals_one_process(slurm, tmp_path):  # noqa: F811
    prl_sets = [(0,), (), (0, 1), (2,), (), (1,), (0, 2), ()]
    subjects = [write_subject_files(tmp_path / "cohort", f"sub-{i:02d}", prl_lesions=prl, seed=i)
                for i, prl in enumerate(prl_sets)]
    manifest = write_manifest(subjects, tmp_path / "cohort.csv")
    common = f"{manifest} --outer 2 --inner 2 --methods radiomics --quiet"
    report = tmp_path / "array"
    folds = slurm.submit(f'{DEEP_PRL} cv {common} -o {report} --fold "$SLURM_ARRAY_TASK_ID" '
                         '--threads "$SLURM_CPUS_PER_TASK"\n',
                         "--job-name=fold", "--array=1-2", "--cpus-per-task=1", cwd=tmp_path)
    merge = slurm.submit(f"{DEEP_PRL} cv --merge {report} {manifest} --quiet\n",
                         "--job-name=merge", f"--dependency=afterok:{folds}", cwd=tmp_path)
    states = slurm.wait(folds, merge)
    assert states == {folds: ["COMPLETED"] * 2, merge: ["COMPLETED"]}, slurm.logs()
    fold_logs = [p.read_text() for p in (slurm.root / "log").glob(f"fold-{folds}_*.out")]
    assert len(fold_logs) == 2 and all("merge with `deep-prl cv --merge" in log for log in fold_logs)

    single = tmp_path / "single"
    assert main(["cv", *common.split(), "-o", str(single)]) == 0
    for name in ("splits.tsv", "radiomics/report.csv", "radiomics/predictions.tsv", "comparison.csv"):
        assert (report / name).read_text() == (single / name).read_text(), name
