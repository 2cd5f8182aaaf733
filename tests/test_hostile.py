"""Every hostile input of the corpus (``hostile_corpus.py``) through every subcommand that takes
that kind of input, and hostile output paths through every subcommand that writes.

For each run: the exit code (non-zero for a refusal), a one-line message naming the culprit, no
traceback, no file written outside the output folder, no partial output under a final name, the
store byte-identical when it is refused, and nothing unpickled. Cases whose header promises
gigabytes run in a subprocess with a memory cap, so a regression fails instead of swapping; a
full disk is a file-size limit in a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
from active_support import tiny_checkpoint
from hostile_corpus import CASES, OPEN_CONNECTIONS, Case, Inputs, cohort

from napari_deep_prl.cli import main
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.store import Rating

#: Address-space cap of the subprocess runs (importing torch takes about 0.9 GB of it).
MEMORY_CAP = 2_500_000_000


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Inputs:
    """A clean two-subject cohort, its project and a tiny model: what the cases start from."""
    folder = tmp_path_factory.mktemp("hostile-base")
    manifest, _ = cohort(folder)
    Project.init(folder / "project", manifest).close()
    model = tiny_checkpoint().save(folder / "model.pt")
    yield Inputs(manifest, folder / "project", model=model)
    for conn in OPEN_CONNECTIONS:
        conn.close()


#: kind of input -> {command: argv(inputs, out)}
COMMANDS = {
    "cohort": {
        "lesions": lambda i, o: ["lesions", str(i.manifest), "-o", str(o / "lesions.tsv"), "--quiet"],
        "score": lambda i, o: ["score", str(i.manifest), "--model", str(i.model), "--no-tta",
                               "-o", str(o / "scores.tsv"), "--nifti-dir", str(o / "maps"), "--quiet"],
        "project init": lambda i, o: ["project", "init", str(o / "project"), "--manifest",
                                      str(i.manifest), "--quiet"],
        "train": lambda i, o: ["train", str(i.manifest), "-o", str(o / "model.pt"), "--epochs", "1",
                               "--models", "1", "--samples-per-epoch", "8", "--batch-size", "8",
                               "--quiet"],
    },
    "table": {
        "ratings import": lambda i, o: ["ratings", "import", str(i.project), str(i.table)],
    },
    "model": {
        "score": lambda i, o: ["score", str(i.manifest), "--model", str(i.model), "--no-tta",
                               "-o", str(o / "scores.tsv"), "--quiet"],
        "train --init": lambda i, o: ["train", str(i.manifest), "--init", str(i.model), "-o",
                                      str(o / "model.pt"), "--epochs", "1", "--quiet"],
    },
    "store": {
        "ratings export": lambda i, o: ["ratings", "export", str(i.project), "-o", str(o / "x.tsv")],
        "ratings agreement": lambda i, o: ["ratings", "agreement", str(i.project), "-o",
                                           str(o / "agreement.tsv"), "--n-boot", "10"],
        "ratings report": lambda i, o: ["ratings", "report", str(i.project), "-o",
                                        str(o / "report.html"), "--n-boot", "10"],
        "ratings add": lambda i, o: ["ratings", "add", str(i.project), "--rater", "ann",
                                     "--subject", "sub-01", "--lesion", "1", "--label", "prl"],
    },
}

RUNS = [pytest.param(case, command, id=f"{case.name} | {command}")
        for case in CASES for command in COMMANDS[case.kind]
        if case.refused or command not in ("train", "train --init")]


def run_cli(argv: list[str], *, memory: bool = False, disk: int | None = None) -> tuple[int, str, str]:
    """``deep-prl argv``: (exit code, stderr, what escaped as an exception). In this process,
    or in a subprocess with a memory cap or a file-size cap of ``disk`` bytes."""
    if not memory and disk is None:
        import contextlib
        import io

        err = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stderr(err):
            warnings.simplefilter("default")
            try:
                return main(argv), err.getvalue(), ""
            except SystemExit as exit_:  # argparse
                return int(exit_.code or 0), err.getvalue(), ""
            except BaseException as escaped:  # noqa: BLE001 - the test reports it
                return -1, err.getvalue(), f"{type(escaped).__name__}: {escaped}"
    limit = (resource.RLIMIT_AS, MEMORY_CAP) if memory else (resource.RLIMIT_FSIZE, disk)

    def cap() -> None:
        resource.setrlimit(limit[0], (limit[1], limit[1]))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG

    code = textwrap.dedent(f"""
        import sys
        from napari_deep_prl.cli import main
        sys.exit(main({argv!r}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=cap, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    escaped = "Traceback" if "Traceback (most recent call last)" in done.stderr else ""
    return done.returncode, done.stderr, escaped


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def escapes(folder: Path) -> set[Path]:
    """Files where the hostile subject ids of the corpus would lead a careless writer."""
    return {p for place in (Path("/tmp/deep-prl-hostile-abs"), folder.parent / "escaped",
                            folder / "escaped")
            for p in place.parent.glob(place.name + "*")}


def check(case: Case, inputs: Inputs, folder: Path, out: Path, outcome: tuple[int, str, str],
          before: dict[str, str], untouched: dict[str, str], before_escapes: set[Path],
          refused: bool | None = None) -> None:
    rc, stderr, escaped = outcome
    refused = case.refused if refused is None else refused
    assert not escaped, f"an exception escaped: {escaped}\n{stderr[-2000:]}"
    assert "Traceback (most recent call last)" not in stderr
    if refused:
        assert rc != 0, f"accepted although hostile:\n{stderr[-2000:]}"
        errors = [line for line in stderr.splitlines() if "error:" in line]
        told = errors + [line for line in stderr.splitlines() if line.startswith("warning:")]
        assert len(errors) <= 1 and told, stderr[-2000:]  # one error line, or the skipped named
        assert any(case.blame in line for line in told), told
    else:
        assert rc == 0, stderr[-2000:]
    # nothing outside the output folder (the project's store may change on an accepted write)
    after = {k: v for k, v in _files(folder).items() if not k.startswith("out/")}
    written = {k for k in after if before.get(k) != after[k]}
    store_files = {k for k in written if "/ratings.sqlite" in f"/{k}"}
    assert written - store_files <= {"PWNED"} and "PWNED" not in written, sorted(written)
    if refused or untouched:
        assert {k: v for k, v in _files(folder).items() if k in untouched} == untouched
    assert escapes(folder) == before_escapes, "a file was written outside the output folder"
    # no partial output under a final name, no temporary file left behind
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert not path.name.endswith(".tmp"), path
        if path.suffix in (".tsv", ".csv"):
            pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        if path.name.endswith(".nii.gz"):
            nib.load(str(path)).get_fdata()


def prepared(case: Case, base: Inputs, folder: Path) -> Inputs:
    """Build the case over a private copy of the base project (commands may write to it); what
    the case does not make itself comes from the base."""
    project = folder / "base-project"
    shutil.copytree(base.project, project)
    built = case.build(folder, Inputs(base.manifest, project, model=base.model))
    return replace(built, project=built.project or project, model=built.model or base.model)


@pytest.mark.slow
@pytest.mark.parametrize("case, command", RUNS)
def test_hostile_input(case: Case, command: str, base: Inputs, tmp_path: Path) -> None:
    inputs = prepared(case, base, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before, before_escapes = _files(tmp_path), escapes(tmp_path)
    untouched = {str(p.relative_to(tmp_path)): before[str(p.relative_to(tmp_path))]
                 for p in inputs.untouched if p.is_file()}
    outcome = run_cli(COMMANDS[case.kind][command](inputs, out), memory=case.memory)
    check(case, inputs, tmp_path, out, outcome, before, untouched, before_escapes,
          refused=case.refused and command not in case.accepted_by)


#: Commands that write an output file named by -o: argv(inputs, output path).
WRITERS = {
    "lesions": lambda i, p: ["lesions", str(i.manifest), "-o", str(p), "--quiet"],
    "score": lambda i, p: ["score", str(i.manifest), "--model", str(i.model), "--no-tta", "-o",
                           str(p), "--quiet"],
    "ratings export": lambda i, p: ["ratings", "export", str(i.project), "-o", str(p)],
    "ratings agreement": lambda i, p: ["ratings", "agreement", str(i.project), "-o", str(p),
                                       "--n-boot", "10"],
    "ratings report": lambda i, p: ["ratings", "report", str(i.project), "-o", str(p),
                                    "--n-boot", "10"],
    "train": lambda i, p: ["train", str(i.manifest), "-o", str(p), "--epochs", "1", "--models",
                           "1", "--samples-per-epoch", "8", "--batch-size", "8", "--quiet"],
}


def _under_a_file(out: Path) -> Path:
    (out / "blocker.txt").write_text("a file, not a folder")
    return out / "blocker.txt" / "result.tsv"


def _a_folder(out: Path) -> Path:
    (out / "result.tsv").mkdir()
    return out / "result.tsv"


@pytest.mark.slow
@pytest.mark.parametrize("where", [_under_a_file, _a_folder], ids=["under a file", "a folder"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_hostile_output_path(command: str, where, base: Inputs, tmp_path: Path) -> None:
    case = Case(f"-o {where.__name__}", "output", lambda f, b: b, blame="result.tsv")
    inputs = prepared(case, base, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = where(out)
    before, before_escapes = _files(tmp_path), escapes(tmp_path)
    outcome = run_cli(WRITERS[command](inputs, target))
    check(case, inputs, tmp_path, out, outcome, before, {}, before_escapes)


@pytest.mark.slow
@pytest.mark.parametrize("argv, cap", [
    (lambda i, o: ["score", str(i.manifest), "--model", str(i.model), "--no-tta", "-o",
                   str(o / "scores.tsv"), "--nifti-dir", str(o / "maps"), "--quiet"], 400),
    (lambda i, o: ["ratings", "export", str(i.project), "-o", str(o / "x.tsv"), "--long"], 64_000),
    (lambda i, o: ["project", "init", str(o / "project"), "--manifest", str(i.manifest),
                   "--quiet"], 64_000),
], ids=["score with maps", "ratings export", "project init"])
def test_a_full_disk_leaves_no_partial_output(argv, cap: int, base: Inputs, tmp_path: Path) -> None:
    case = Case("full disk", "output", lambda f, b: b, blame="")
    inputs = prepared(case, base, tmp_path)
    with Project.open(inputs.project) as project:  # enough rows for the export to pass the cap
        project.store.add_ratings([Rating(f"r{i}", "sub-01", 1, "prl", comment="x" * 200)
                                   for i in range(400)])
    out = tmp_path / "out"
    out.mkdir()
    before, before_escapes = _files(tmp_path), escapes(tmp_path)
    outcome = run_cli(argv(inputs, out), disk=cap)
    rc, stderr, _ = outcome
    assert rc != 0 and ("space" in stderr or "too large" in stderr or "full" in stderr), stderr[-2000:]
    check(case, inputs, tmp_path, out, outcome, before, {}, before_escapes)
