"""The ``deep-prl`` command starts quickly: a command imports only its own module, and the quick
commands (``--version``, ``--help``, ``ratings add``) never import torch or scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_deep_prl import __version__
from napari_deep_prl.cli import COMMANDS, main
from napari_deep_prl.ratings.project import Project

#: Runs ``deep-prl`` in a fresh interpreter with the words given after ``-c``; prints the exit
#: status, then the heavy packages the run imported.
RUN_AND_LIST_IMPORTS = """\
import sys
from napari_deep_prl.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(status, *sorted({"torch", "sklearn", "scipy", "nibabel", "pandas"} & sys.modules.keys()))
"""


def imports_of(*words: object) -> tuple[int, set[str], str]:
    """Exit status, heavy packages imported and stdout of ``deep-prl WORDS`` in a new process."""
    result = subprocess.run([sys.executable, "-c", RUN_AND_LIST_IMPORTS, *map(str, words)],
                            capture_output=True, text=True, check=True)
    *shown, last = result.stdout.strip().splitlines()
    status, *heavy = last.split()
    return int(status), set(heavy), "\n".join(shown)


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_import_nothing_heavy(option):
    status, heavy, shown = imports_of(option)
    assert status == 0 and heavy == set()
    assert (shown == f"deep-prl {__version__}") if option == "--version" else all(
        name in shown for name in COMMANDS)


def test_project_init_help_imports_nothing_heavy():
    """Its BIDS options come from the cohort commands' shared parser helper, which loads the
    image modules only when a command runs."""
    status, heavy, shown = imports_of("project", "init", "--help")
    assert status == 0 and heavy == set() and "--session-label" in shown


def test_ratings_add_imports_no_torch_sklearn_pandas_or_image_reader(tmp_path, manifest):
    study = tmp_path / "study"
    Project.init(study, manifest).close()
    status, heavy, _ = imports_of("--debug", "ratings", "add", study, "--rater", "ann", "--subject",
                                  "sub-02", "--lesion", 2, "--label", "prl")
    assert status == 0 and heavy == set()  # not even pandas: a rating is a row, not a table
    with Project.open(study) as project:
        assert project.store.current()[["rater", "subject", "lesion", "label"]].values.tolist() == [
            ["ann", "sub-02", 2, "prl"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: deep-prl {command}") and shown.count("\n") > 5

