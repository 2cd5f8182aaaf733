"""Project folders and the ``deep-prl project`` / ``deep-prl ratings`` commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import blob_mask, save_nifti

import napari_deep_prl.cli as cli
from napari_deep_prl.errors import InputError, StoreError
from napari_deep_prl.io import open_cohort
from napari_deep_prl.project import CONFIG_NAME, Project


@pytest.fixture
def project(tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest) as opened:
        yield opened


@pytest.fixture
def deep_prl(monkeypatch):
    """Run ``deep-prl`` with only this issue's commands (others may be mid-way)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("project", "ratings"))
    return lambda *args: cli.main([str(a) for a in args])


def test_init_registers_every_lesion(project, manifest):
    assert {"exports", "models", CONFIG_NAME, "ratings.sqlite"} <= {
        p.name for p in project.root.iterdir()}
    lesions = project.lesions()
    assert len(lesions) == 9 and sorted(lesions["subject"].unique()) == project.cohort.ids
    assert lesions.groupby("subject")["lesion"].apply(list).tolist() == [[1, 2, 3]] * 3
    assert (lesions["volume_voxels"] > 0).all()
    config = json.loads((project.root / CONFIG_NAME).read_text())
    assert config["consensus"]["method"] == "unanimous"
    with Project.open(project.root) as again:
        assert again.cohort.ids == open_cohort(manifest).ids


def test_init_refuses_an_existing_project(project, manifest):
    with pytest.raises(InputError, match="already a napari-deep-prl project"):
        Project.init(project.root, manifest)


def test_open_refuses_a_plain_folder(tmp_path):
    with pytest.raises(StoreError, match="not a napari-deep-prl project"):
        Project.open(tmp_path)


def test_bad_config_is_reported_with_file_and_key(project):
    path = project.root / CONFIG_NAME
    data = json.loads(path.read_text())
    data["blinding"]["show_everything"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"project.json: blinding: unknown setting\(s\) "
                                         "show_everything"):
        Project.open(project.root)


def test_config_sets_rule_and_reasons(tmp_path, manifest):
    config = {"consensus": {"method": "majority", "min_raters": 3},
              "exclusion_reasons": ["vein", "motion"]}
    with Project.init(tmp_path / "p", manifest, config) as project:
        assert project.config.consensus.method == "majority"
        assert project.config.consensus.min_raters == 3
        project.store.add_rating("a", "sub-01", 1, "not_prl", reason="motion")
        with pytest.raises(InputError, match="not in this project's list"):
            project.store.add_rating("a", "sub-01", 1, "not_prl", reason="central_vein")


def test_changed_mask_is_detected(project):
    paths = project.cohort["sub-02"]
    assert project.load_subject("sub-02").subject == "sub-02"
    save_nifti(paths.mask, blob_mask(centres=((8, 8, 8), (20, 20, 12))))
    with pytest.raises(StoreError, match="mask of subject 'sub-02' differs"):
        project.load_subject("sub-02")


def test_prl_mask_import_and_training_labels(project):
    from napari_deep_prl.progress import run_to_end

    assert run_to_end(project.import_prl_masks("truth")) == 9
    current = project.store.current()
    assert current.groupby("lesion")["label"].agg(set).to_dict() == {
        1: {"prl"}, 2: {"not_prl"}, 3: {"not_prl"}}
    labels = project.training_labels("truth")
    assert labels["prl"].sum() == 3 and len(labels) == 9
    assert project.training_labels("consensus").empty  # one rater: below min_raters


def test_agreement_summary(project):
    rng = np.random.default_rng(0)
    lesions = project.lesions()
    rows = [{"subject": s, "lesion": n, "rater": r, "label": rng.choice(["prl", "not_prl"])}
            for s, n in zip(lesions["subject"], lesions["lesion"]) for r in ("a", "b", "c")]
    assert project.import_ratings(pd.DataFrame(rows)) == 27
    summary = project.agreement(n_boot=50)
    assert summary.pairs["rater_a"].tolist() == ["a", "a", "b", "all"]
    assert summary.prl_count_icc_n == 3
    assert summary.per_subject["n"].tolist() == [3, 3, 3]
    assert set(summary.vs_consensus["rater"]) <= {"a", "b", "c"}
    assert summary.intra_rater.empty


def test_cli_round_trip(tmp_path, manifest, deep_prl, capsys):
    study = tmp_path / "cli-study"
    assert deep_prl("project", "init", study, "--manifest", manifest, "--quiet") == 0
    assert deep_prl("ratings", "add", study, "--rater", "ann", "--subject", "sub-01",
                    "--lesion", 1, "--label", "prl", "--confidence", 5) == 0
    with Project.open(study) as project:  # durable and visible once the command returned
        assert project.store.current()["label"].tolist() == ["prl"]

    capsys.readouterr()
    assert deep_prl("ratings", "add", study, "--rater", "ann", "--subject", "sub-09",
                    "--lesion", 1, "--label", "prl") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subject 'sub-09' is not in this project" in err

    table = tmp_path / "labels.tsv"
    table.write_text("subject\tlesion\trater\tlabel\n"
                     "sub-01\t1\tben\tprl\nsub-01\t2\tben\tnot_prl\nsub-01\t2\tann\tunsure\n")
    assert deep_prl("ratings", "import", study, table) == 0
    assert deep_prl("ratings", "import", study, "--from-prl-mask", "--rater", "truth",
                    "--quiet") == 0

    agreement = tmp_path / "agreement.tsv"
    details = tmp_path / "details"
    assert deep_prl("ratings", "agreement", study, "-o", agreement, "--n-boot", 20,
                    "--details", details) == 0
    assert sorted(p.name for p in details.iterdir()) == [
        "intra_rater.tsv", "per_subject.tsv", "vs_consensus.tsv",
        "vs_consensus_per_subject.tsv", "vs_reference.tsv"]
    pairs = pd.read_csv(agreement, sep="\t")
    assert pairs[["rater_a", "rater_b"]].values.tolist() == [
        ["ann", "ben"], ["ann", "truth"], ["ben", "truth"], ["all", "all"]]
    assert pairs.loc[0, "n"] == 2 and pairs.loc[3, "n"] == 2

    out = tmp_path / "export.tsv"
    assert deep_prl("ratings", "export", study, "-o", out) == 0
    wide = pd.read_csv(out, sep="\t")
    assert wide.columns.tolist() == ["subject", "lesion", "ann", "ben", "truth", "consensus",
                                     "consensus_method"]
    first = wide[(wide.subject == "sub-01") & (wide.lesion == 1)].iloc[0]
    assert first[["ann", "ben", "truth", "consensus", "consensus_method"]].tolist() == [
        "prl", "prl", "prl", "prl", "unanimous"]
    assert deep_prl("ratings", "export", study, "-o", out, "--long") == 0
    assert len(pd.read_csv(out, sep="\t")) == 1 + 2 + 1 + 9
    assert deep_prl("ratings", "export", study, "-o", out, "--history") == 0
    assert "action" in pd.read_csv(out, sep="\t").columns


def test_cli_import_reports_bad_table(project, tmp_path, deep_prl, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("subject\tlesion\tlabel\nsub-01\t1\tprl\n")
    assert deep_prl("ratings", "import", project.root, bad) == 2
    assert "missing column(s) rater" in capsys.readouterr().err
    assert project.store.history().empty


def test_core_modules_import_no_gui():
    import subprocess
    import sys

    modules = ["napari_deep_prl.project", "napari_deep_prl.cli.project",
               "napari_deep_prl.cli.ratings", "napari_deep_prl.ratings.agreement",
               "napari_deep_prl.ratings.queue", "napari_deep_prl.ratings.export"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in ('qtpy', 'napari', 'magicgui') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
