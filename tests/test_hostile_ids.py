"""Ids that become file names, table columns and spreadsheet cells (issue 31, defects 1, 2, 8, 9).

Each test feeds the hostile input the issue names: a subject id that is a path, a rater named
``prl``, a ratings table with lesion ``1.5``, a blank rater, a rater ``NA`` and conflicting rows,
and ids that a spreadsheet runs as formulas.
"""

from __future__ import annotations

import csv
from dataclasses import replace

import pandas as pd
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401
from ratings_support import register_legacy_ids

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.base.tables import FORMULA_STARTS, write_table
from napari_deep_prl.data.cohort import open_cohort, read_manifest, write_manifest
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.labels import read_prl_labels
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.store import Rating
from napari_deep_prl.scoring.score import score_cohort

pytestmark = pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")

#: Ids a spreadsheet runs as formulas, or that break a table's columns.
FORMULA_IDS = ["=1+1", "+1", "-1", "@SUM(A1)", '=HYPERLINK("http://evil","x")', "a\tb", "a\nb"]


@pytest.fixture
def project(tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest) as opened:
        yield opened


def _model(tmp_path):
    torch.manual_seed(0)
    return Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE)).save(tmp_path / "model.pt")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _files(folder):
    return {p for p in folder.rglob("*") if p.is_file()}


# -- defect 1: path traversal -------------------------------------------------------------------

def test_score_refuses_a_subject_id_that_is_a_path(manifest, tmp_path, capsys):
    model, one = _model(tmp_path), read_manifest(manifest)[0]
    before = _files(tmp_path.parent)
    maps = tmp_path / "t1" / "maps" / "deep"
    assert cli.main(["score", "--phase", str(one.image("phase")), "--mp2rage", str(one.image("mp2rage")), "--mask",
                     str(one.mask), "--subject", "../../escaped", "--nifti-dir", str(maps), "--model",
                     str(model), "-o", str(tmp_path / "scores.tsv"), "--quiet"]) == 2
    assert "subject id '../../escaped' starts with '.' and holds '/'" in _one_line_error(capsys)
    assert _files(tmp_path.parent) == before  # nothing written anywhere


def test_score_refuses_a_manifest_subject_id_that_is_an_absolute_path(manifest, tmp_path, capsys):
    model, target = _model(tmp_path), tmp_path / "elsewhere" / "abs"
    hostile = tmp_path / "hostile.csv"
    hostile.write_text(manifest.read_text().replace("sub-02,", f"{target},", 1))
    before = _files(tmp_path)
    assert cli.main(["score", str(hostile), "--nifti-dir", str(tmp_path / "maps"), "--model", str(model),
                     "-o", str(tmp_path / "scores.tsv"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert str(hostile) in err and f"row 3: subject id '{target}' starts with '/' and holds '/'" in err
    assert _files(tmp_path) == before and not target.parent.exists()


def test_maps_of_subjects_whose_ids_are_paths_land_inside_the_folder(manifest, tmp_path):
    """Subjects loaded by Python (or an older project) keep any id: their map names are made
    safe and distinct, and every map lands in the folder named."""
    ids = ["../../escaped", str(tmp_path / "abs"), "sub-01"]
    loaded = [replace(paths.load(), subject=name) for paths, name in zip(read_manifest(manifest), ids)]
    before, maps = _files(tmp_path.parent), tmp_path / "maps"
    checkpoint = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE))
    run_to_end(score_cohort(loaded, [checkpoint], tta=False, nifti_dir=maps))
    written = _files(tmp_path.parent) - before
    assert len(written) == 3 and {p.parent for p in written} == {maps}
    assert maps / "sub-01_space-phase_desc-PRL_probseg.nii.gz" in written  # a plain id is kept


def test_a_link_planted_under_a_map_name_is_not_followed_out_of_the_folder(manifest, tmp_path):
    maps, outside = tmp_path / "maps", tmp_path / "outside.nii.gz"
    maps.mkdir()
    (maps / "sub-01_space-phase_desc-PRL_probseg.nii.gz").symlink_to(outside)
    checkpoint = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE))
    with pytest.raises(InputError, match="would be written outside the output folder"):
        run_to_end(score_cohort(read_manifest(manifest), [checkpoint], tta=False, nifti_dir=maps))
    assert not outside.exists()


# -- defect 2: a rater id that is a column name ---------------------------------------------

def test_a_rater_named_prl_never_becomes_the_truth(manifest, tmp_path, capsys):
    study, export = tmp_path / "study", tmp_path / "export.tsv"
    assert cli.main(["project", "init", str(study), "--manifest", str(manifest), "--quiet"]) == 0
    for rater, label in (("prl", "prl"), ("ann", "not_prl")):
        assert cli.main(["ratings", "add", str(study), "--rater", rater, "--subject", "sub-01",
                         "--lesion", "1", "--label", label]) == 0
    assert cli.main(["ratings", "consensus", str(study), "--subject", "sub-01", "--lesion", "1",
                     "--label", "not_prl", "--by", "chief"]) == 0
    assert cli.main(["ratings", "export", str(study), "-o", str(export)]) == 0
    wide = pd.read_csv(export, sep="\t")
    assert wide.columns.tolist() == ["subject", "lesion", "rater_ann", "rater_prl", "consensus",
                                     "consensus_method"]
    one, out = read_manifest(manifest)[0], tmp_path / "lesions.tsv"
    single = ["lesions", "--phase", str(one.image("phase")), "--mp2rage", str(one.image("mp2rage")),
              "--mask", str(one.mask),
              "--subject", "sub-01", "--prl-labels", str(export), "-o", str(out), "--quiet"]
    assert cli.main(single) == 0
    truth = pd.read_csv(out, sep="\t").set_index("lesion")["prl"]
    assert truth[1] == False and truth[[2, 3]].isna().all()  # noqa: E712  the consensus, not rater prl
    assert cli.main([*single, "--label-column", "rater_prl"]) == 0  # one rater's, when asked for
    assert pd.read_csv(out, sep="\t").set_index("lesion")["prl"][1] == True  # noqa: E712


@pytest.mark.parametrize(("content", "column", "expected"), [
    # an export made before rater columns were prefixed, with a rater named prl: the consensus
    ("subject,lesion,ann,prl,consensus,consensus_method\nsub-01,1,prl,prl,not_prl,adjudicated\n", None, False),
    ("lesion,prl\n1,prl\n", None, True),  # an old table with a plain prl column: unambiguous
    ("lesion,label\n1,no\n", None, False),
    ("subject,lesion,rater_ann,consensus\nsub-01,1,prl,not_prl\n", "rater_ann", True),
])
def test_label_tables_are_read_by_a_documented_column(tmp_path, content, column, expected):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    assert read_prl_labels(path, "sub-01", column=column).to_dict() == {1: expected}


@pytest.mark.parametrize(("content", "column", "message"), [
    ("lesion,prl,label\n1,prl,not_prl\n", None, "has both prl and label columns and no consensus"),
    ("lesion,consensus\n1,prl\n", "rater_ann", "has no column 'rater_ann', the label column named"),
])
def test_an_ambiguous_or_missing_label_column_is_refused(tmp_path, content, column, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        read_prl_labels(path, "sub-01", column=column)
    assert str(path) in str(error.value) and "prl_labels_column" in str(error.value)


def test_a_manifest_names_the_label_column_of_each_table(manifest, tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text("subject\tlesion\trater_ann\tconsensus\n" + "".join(
        f"sub-0{s}\t1\tprl\tnot_prl\n" for s in (1, 2, 3)))
    subjects = [replace(p, prl_mask=None, prl_labels=table, prl_labels_column="rater_ann" if i else None)
                for i, p in enumerate(read_manifest(manifest))]
    cohort = read_manifest(write_manifest(subjects, tmp_path / "labelled.csv"))
    assert [p.prl_labels_column for p in cohort] == [None, "rater_ann", "rater_ann"]
    assert [bool(p.load().prl_labels[1]) for p in cohort] == [False, True, True]
    text = (tmp_path / "labelled.csv").read_text().splitlines()
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([text[0], text[1].replace(str(table.name), ""), *text[2:]]).replace(
        ",sub-01/", ",sub-01/", 1).replace(",,", ",,rater_ann", 1) + "\n")
    with pytest.raises(InputError, match="row 2 .* names a prl_labels_column but no prl_labels table"):
        read_manifest(broken)


def test_the_label_column_flag_goes_with_one_subject(manifest, capsys):
    assert cli.main(["lesions", str(manifest), "--label-column", "consensus"]) == 2
    assert "--label-column goes with --prl-labels" in _one_line_error(capsys)


# -- defect 8: ratings import refuses what it would mangle ------------------------------------

@pytest.mark.parametrize(("rows", "message"), [
    ("sub-01\t1.5\tann\tprl", "line 3: lesion '1.5' is not a whole number"),
    ("sub-01\t1\t\tprl", "line 3: no rater"),
    ("sub-01\t1\tann\tprl\nsub-01\t1\tann\tnot_prl",
     r"lines 3 and 4 both give the label of rater 'ann' for 'sub-01' lesion 1, differently \(prl / not_prl"),
    ("sub-01\t1\tann\tPRL", "line 3: label 'PRL' of rater 'ann' on sub-01 lesion 1 is not one of"),
    ("sub-01\t9\tann\tprl", "line 3: .* subject 'sub-01' has no lesion 9"),
    ("sub-01\t1\t=1+1\tprl", "line 3: rater id '=1\\+1' starts with '='"),
])
def test_import_refuses_a_row_it_would_mangle_and_stores_nothing(project, tmp_path, capsys, rows, message):
    table = tmp_path / "ratings.tsv"
    table.write_text("subject\tlesion\trater\tlabel\nsub-01\t2\tben\tprl\n" + rows + "\n")
    assert cli.main(["ratings", "import", str(project.root), str(table)]) == 2
    err = _one_line_error(capsys)
    assert str(table) in err and pd.Series([err]).str.contains(message).all(), err
    assert project.store.history().empty and project.store.raters().empty


@pytest.mark.filterwarnings("always::napari_deep_prl.base.errors.InputWarning")  # printed by the CLI
def test_a_rater_named_na_stays_na_and_exact_repeats_are_imported_once(project, tmp_path, capsys):
    table = tmp_path / "ratings.tsv"
    table.write_text("subject\tlesion\trater\tlabel\tconfidence\nsub-01\t1\tNA\tprl\t4\n"
                     "sub-01\t1\tNA\tprl\t4\nsub-01\t2.0\tNA\tnot_prl\t\n")
    assert cli.main(["ratings", "import", str(project.root), str(table)]) == 0
    err = capsys.readouterr().err
    assert "1 row(s) repeat an earlier row exactly (line(s) 3); each was imported once" in err
    assert "imported 2 labels" in err
    current = project.store.current().sort_values("lesion")
    assert current[["rater", "lesion", "label"]].values.tolist() == [["NA", 1, "prl"], ["NA", 2, "not_prl"]]
    assert current["confidence"].tolist()[0] == 4


def test_python_import_reports_repeats_and_refuses_missing_values(project):
    rows = pd.DataFrame({"subject": ["sub-01"] * 2, "lesion": [1, 1], "rater": ["ann"] * 2,
                         "label": ["prl"] * 2})
    with pytest.warns(InputWarning, match=r"table: 1 row\(s\) repeat an earlier row exactly"):
        assert project.import_ratings(rows) == 1
    with pytest.raises(InputError, match="table, line 2: no rater"):
        project.import_ratings(rows.assign(rater=[None, "ann"]))


# -- defect 9: formula injection --------------------------------------------------------------

@pytest.mark.parametrize("value", FORMULA_IDS)
def test_formula_and_separator_ids_are_refused_on_the_way_in(project, tmp_path, value):
    with pytest.raises(InputError, match="rater id .* (starts with|holds)"):
        project.store.add_rating(value, "sub-01", 1, "prl")
    with pytest.raises(InputError, match="reference id .* (starts with|holds)"):
        project.store.add_reference(value)
    with pytest.raises(InputError, match="adjudicator id .* (starts with|holds)"):
        project.record_consensus("sub-01", 1, "prl", by=value)
    assert project.store.history().empty and project.store.consensus_history().empty


@pytest.mark.parametrize("value", FORMULA_IDS)
def test_formula_subject_ids_are_refused_in_manifests_and_on_the_command_line(manifest, tmp_path, value):
    hostile = tmp_path / "hostile.csv"
    rows = list(csv.reader(manifest.open(newline="")))[:2]
    rows[1][0] = value
    with open(hostile, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(InputError, match=f"{hostile}: row 2: subject id .* (starts with|holds)"):
        read_manifest(hostile)
    assert open_cohort(hostile, check_ids=False).ids == [value]  # a project's own, older manifest
    one = read_manifest(manifest)[0]
    with pytest.raises(InputError, match="subject id .* Give the subject another id"):
        SubjectPaths.from_files(phase=one.image("phase"), mp2rage=one.image("mp2rage"), mask=one.mask, subject=value)


def test_a_subject_folder_whose_name_is_not_an_id_is_refused(write_subject, tmp_path):
    cohort = tmp_path / "cohort"
    write_subject("sub-01", folder=cohort / "sub-01")
    write_subject("sub-@SUM(A1)", folder=cohort / "sub-@SUM(A1)")
    with pytest.raises(InputError, match=r"sub-@SUM\(A1\): the folder's name, the subject id, holds '\(', '\)', '@'"):
        open_cohort(cohort)
    assert open_cohort(cohort, check_ids=False).ids == ["sub-01", "sub-@SUM(A1)"]


def test_an_older_store_with_formula_ids_still_exports_neutralised(project, tmp_path):
    register_legacy_ids(project.store.address, ["=1+1", "@SUM(A1)", "a\tb"])
    register_legacy_ids(project.store.address, ["-truth"], kind="reference")
    project.store.add_ratings([Rating(rater, "sub-01", 1, "prl", comment='=HYPERLINK("http://evil","x")')
                               for rater in ("=1+1", "@SUM(A1)", "a\tb")])
    project.store.add_ratings([Rating("-truth", "sub-01", 1, "prl")], kind="reference")
    project.record_consensus("sub-01", 2, "prl", by="=1+1")  # a known id keeps working
    for kind in ("wide", "long", "history", "consensus_history"):
        out = tmp_path / f"{kind}.csv"
        write_table(project.export(kind), out)
        with open(out, newline="") as fh:
            cells = [cell for row in csv.reader(fh) for cell in row]
        assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)], kind
    long = pd.read_csv(tmp_path / "long.csv", dtype=str)
    assert sorted(long["rater"]) == ["'-truth", "'=1+1", "'@SUM(A1)", "a\tb"]
    assert (pd.read_csv(tmp_path / "consensus_history.csv")["decided_by"] == "'=1+1").all()


def test_tables_neutralise_text_cells_but_not_numbers(tmp_path):
    table = pd.DataFrame({"subject": ["=cmd", "sub-01", "-x"], "lesion": [1, -2, 3],
                          "prl_probability": [-0.5, 0.25, float("nan")], "note": [None, "+1", "ok"]})
    out = write_table(table, tmp_path / "t.tsv", na_rep="n/a")
    assert out.read_text().splitlines() == ["subject\tlesion\tprl_probability\tnote",
                                            "'=cmd\t1\t-0.5\tn/a", "sub-01\t-2\t0.25\t'+1", "'-x\t3\tn/a\tok"]
    assert table["subject"].tolist() == ["=cmd", "sub-01", "-x"]  # the caller's table is untouched
