"""`deep-prl lesions` and the CLI's error handling."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from napari_deep_prl import __version__
from napari_deep_prl.cli import main

EXPECTED = ["subject", "lesion", "x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_voxels", "volume_mm3", "confluent"]


def test_lesions_of_a_manifest(manifest, tmp_path):
    out = tmp_path / "lesions.tsv"
    assert main(["lesions", str(manifest), "-o", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns[: len(EXPECTED)]) == EXPECTED
    assert table.groupby("subject").size().to_dict() == {"sub-01": 3, "sub-02": 3, "sub-03": 3}
    assert table["prl"].sum() == 3  # the first lesion of each subject is a PRL


def test_lesions_of_one_subject_to_stdout(write_subject, capsys):
    paths = write_subject("sub-09")
    assert main(["lesions", "--phase", str(paths.image("phase")), "--mp2rage", str(paths.image("mp2rage")),
                 "--mask", str(paths.mask)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t")[: len(EXPECTED)] == EXPECTED
    assert len(lines) == 4 and all(line.startswith("sub-09\t") for line in lines[1:])


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["lesions", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("deep-prl lesions: error:") and "missing.csv: manifest not found" in err


def test_partial_single_subject_arguments_rejected(write_subject, capsys):
    paths = write_subject()
    assert main(["lesions", "--phase", str(paths.image("phase"))]) == 2
    assert "--phase (or --qsm), one or more of --mp2rage, --t1w and --flair, and --mask" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    from napari_deep_prl.base.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "lesions", str(tmp_path / "missing.csv")])


def test_console_script_version_and_help():
    result = subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout
    result = subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", "lesions", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "26-connected" in result.stdout
