"""Project folders and the ``deep-prl project`` / ``deep-prl ratings`` commands."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import blob_mask, save_nifti
from ratings_support import register_legacy_ids

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.data.cohort import open_cohort, write_manifest
from napari_deep_prl.ratings.project import CONFIG_NAME, Project


@pytest.fixture
def project(tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest) as opened:
        yield opened


@pytest.fixture
def deep_prl():
    """Run ``deep-prl`` in this process."""
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
    from napari_deep_prl.base.progress import run_to_end

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


def test_cli_round_trip(tmp_path, manifest, deep_prl, capsys, store_address):
    study = tmp_path / "cli-study"
    on_server = isinstance(store_address, str)
    store = ["--store", store_address] if on_server else []
    assert deep_prl("project", "init", study, "--manifest", manifest, "--quiet", *store) == 0
    assert json.loads((study / CONFIG_NAME).read_text()).get("store") == (store_address if on_server else None)
    assert (study / "ratings.sqlite").exists() != on_server
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
    assert wide.columns.tolist() == ["subject", "lesion", "rater_ann", "rater_ben", "rater_truth",
                                     "consensus", "consensus_method"]
    first = wide[(wide.subject == "sub-01") & (wide.lesion == 1)].iloc[0]
    assert first[["rater_ann", "rater_ben", "rater_truth", "consensus", "consensus_method"]].tolist() == [
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

    modules = ["napari_deep_prl.ratings.project", "napari_deep_prl.cli.project",
               "napari_deep_prl.cli.ratings", "napari_deep_prl.ratings.agreement",
               "napari_deep_prl.ratings.queue", "napari_deep_prl.ratings.export"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in ('qtpy', 'napari', 'magicgui') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_prl_mask_import_is_a_reference_that_never_votes(project):
    from napari_deep_prl.base.progress import run_to_end

    assert run_to_end(project.import_prl_masks()) == 9
    assert project.store.references()["reference"].tolist() == ["prl_mask"]
    assert project.store.raters().empty and project.adjudication_queue(decided=True).empty
    assert project.consensus()["consensus"].isna().all()  # a reference is no vote
    assert project.training_labels("prl_mask")["prl"].sum() == 3  # still trainable
    assert project.label_sources() == ["consensus", "prl_mask"]
    lesions = project.lesions()
    rows = [{"subject": s, "lesion": n, "rater": r, "label": "prl" if n == 1 else "not_prl"}
            for s, n in zip(lesions["subject"], lesions["lesion"]) for r in ("a", "b")]
    project.import_ratings(pd.DataFrame(rows))
    summary = project.agreement(n_boot=20)
    assert summary.pairs["rater_a"].tolist() == ["a", "all"]
    assert summary.vs_reference[["rater", "reference", "n", "sensitivity", "specificity", "ppv"]
                                ].values.tolist() == [["a", "prl_mask", 9, 1.0, 1.0, 1.0],
                                                      ["b", "prl_mask", 9, 1.0, 1.0, 1.0]]
    wide = project.export("wide")
    assert wide.columns.tolist() == ["subject", "lesion", "rater_a", "rater_b", "consensus",
                                     "consensus_method", "reference_prl_mask"]
    assert (wide["reference_prl_mask"] == wide["consensus"]).all()
    long = project.export("long")
    assert long.groupby("kind")["rater"].agg(set).to_dict() == {"rater": {"a", "b"},
                                                                "reference": {"prl_mask"}}
    assert set(project.export("history")["kind"]) == {"rater", "reference"}
    with pytest.raises(InputError, match="'prl_mask' is a reference, not a rater"):
        run_to_end(project.import_prl_masks("prl_mask"))  # refused before any mask is read
    with pytest.raises(InputError, match="'a' is a rater, not a reference"):
        project.import_ratings(pd.DataFrame(rows[:1]).drop(columns="rater"), reference="a")
    with pytest.raises(InputError, match="a rater column, but a reference's labels"):
        project.import_ratings(pd.DataFrame(rows[:1]), reference="expert")


def test_turning_a_rater_into_a_reference_reports_the_consensus_it_changes(project):
    lesions = project.lesions()
    rows = [{"subject": s, "lesion": n, "rater": r, "label": "prl" if n == 1 else "not_prl"}
            for s, n in zip(lesions["subject"], lesions["lesion"]) for r in ("ann", "truth")]
    rows += [{"subject": "sub-01", "lesion": 1, "rater": "ben", "label": "prl"}]
    project.import_ratings(pd.DataFrame(rows))
    assert project.consensus()["consensus"].notna().all()
    changed = project.make_reference("truth")
    # sub-01 lesion 1 keeps its consensus (ann and ben); every other lesion had only ann's vote
    # once truth stopped voting, below min_raters.
    assert len(changed) == 8 and changed["after"].isna().all()
    assert ("sub-01", 1) not in set(zip(changed["subject"], changed["lesion"]))
    assert project.agreement(n_boot=10).vs_reference["rater"].tolist() == ["ann", "ben"]


def test_exported_consensus_masks_round_trip(project, tmp_path):
    import dataclasses

    import nibabel as nib

    from napari_deep_prl.base.progress import run_to_end
    from napari_deep_prl.data.cohort import write_manifest
    from napari_deep_prl.data.lesions import find_lesions
    from napari_deep_prl.ratings.store import Rating

    votes = {("sub-01", 1): ("prl", "prl"), ("sub-01", 2): ("not_prl", "not_prl"),
             ("sub-01", 3): ("prl", "not_prl"), ("sub-02", 1): ("prl", "unsure"),
             ("sub-02", 2): ("unsure", "unsure"), ("sub-02", 3): ("prl", "prl")}
    register_legacy_ids(project.store.address, ["../evil"])  # a hostile id an older store may hold
    project.store.add_ratings([Rating(r, s, n, label) for (s, n), labels in votes.items()
                               for r, label in zip(("ann", "../evil"), labels)])
    project.record_consensus("sub-02", 1, "prl", by="chief")
    project.record_consensus("sub-02", 2, "unsure", by="chief")
    project.record_consensus("sub-02", 3, "not_prl", by="chief")
    project.store.add_ratings([Rating("truth", "sub-03", 2, "prl")], kind="reference")
    consensus = project.consensus().set_index(["subject", "lesion"])["consensus"]
    assert consensus.isna().sum() == 4  # sub-01 lesion 3 pending; sub-03 unrated

    out = tmp_path / "masks"
    index = run_to_end(project.export_masks(out))
    assert sorted(p.name for p in out.iterdir()) == sorted([*index["file"], "prlmasks.tsv"])
    assert not any(p.name.endswith(".nii.gz") for p in tmp_path.iterdir())  # nothing escaped
    pd.testing.assert_frame_equal(pd.read_csv(out / "prlmasks.tsv", sep="\t"), index)
    by_source = index.set_index(["subject", "source", "id"])
    assert by_source.loc[("sub-03", "consensus", "consensus"), ["file", "labelled", "prl"]
                         ].tolist() == ["sub-03_desc-consensus_prlmask.nii.gz", 0, 0]
    assert by_source.loc[("sub-03", "reference", "truth"), "file"] == (
        "sub-03_desc-referencetruth_prlmask.nii.gz")
    assert by_source.loc[("sub-01", "rater", "ann"), ["lesions", "labelled", "prl"]
                         ].tolist() == [3, 3, 2]
    evil = by_source.loc[("sub-01", "rater", "../evil"), "file"]
    assert evil.startswith("sub-01_desc-raterevilx") and "/" not in evil
    assert ("sub-03", "rater", "ann") not in by_source.index  # ann never rated sub-03

    masks = {}
    for paths in project.cohort:
        exported = nib.load(out / f"{paths.subject}_desc-consensus_prlmask.nii.gz")
        original = nib.load(paths.mask)
        assert exported.shape == original.shape
        np.testing.assert_allclose(exported.affine, original.affine)
        assert set(np.unique(np.asarray(exported.dataobj))) <= {0, 1}
        masks[paths.subject] = dataclasses.replace(paths, prl_mask=exported.get_filename())
    manifest = write_manifest(list(masks.values()), tmp_path / "from_consensus.csv")
    truth = pd.concat([find_lesions(s.load()).table for s in open_cohort(manifest)])
    got = truth.set_index(["subject", "lesion"])["prl"]
    assert got.to_dict() == (consensus == "prl").reindex(got.index).to_dict()
    assert got.sum() == 2  # sub-01 lesion 1 (unanimous) and sub-02 lesion 1 (adjudicated)


def test_cli_references_consensus_and_masks(tmp_path, manifest, deep_prl, capsys):
    study = tmp_path / "study"
    assert deep_prl("project", "init", study, "--manifest", manifest, "--quiet") == 0
    assert deep_prl("ratings", "import", study, "--from-prl-mask", "--quiet") == 0
    assert "as reference 'prl_mask'" in capsys.readouterr().err
    expert = tmp_path / "expert.tsv"
    expert.write_text("subject\tlesion\tlabel\nsub-01\t1\tprl\nsub-01\t2\tunsure\n")
    assert deep_prl("ratings", "import", study, expert, "--reference", "expert") == 0
    for rater, label in (("ann", "not_prl"), ("ben", "not_prl")):
        for subject in ("sub-01", "sub-02"):
            for lesion in (1, 2, 3):
                assert deep_prl("ratings", "add", study, "--rater", rater, "--subject", subject,
                                "--lesion", lesion, "--label", label) == 0
    capsys.readouterr()
    assert deep_prl("ratings", "add", study, "--rater", "expert", "--subject", "sub-01",
                    "--lesion", 3, "--label", "prl") == 2
    assert "'expert' is a reference, not a rater" in capsys.readouterr().err

    details = tmp_path / "details"
    assert deep_prl("ratings", "agreement", study, "--n-boot", 20, "--details", details) == 0
    captured = capsys.readouterr()
    assert "ann vs ben: kappa n/a (only one label used) on 6 lesions" in captured.err
    assert "all raters: Fleiss' kappa n/a (only one label used) on 6 lesions" in captured.err
    assert "ann vs reference prl_mask: kappa 0.00, CI n/a (ann used only one label: kappa is 0 " \
           "by construction) on 6 lesions; sensitivity 0.00, specificity 1.00, PPV n/a" \
           in captured.err
    assert "0.00 [0.00, 0.00]" not in captured.err
    pairs = pd.read_csv(io.StringIO(captured.out), sep="\t")
    assert pairs.loc[0, "note"] == "only one label used" and np.isnan(pairs.loc[0, "cohen_kappa"])
    assert "\tn/a\t" in captured.out
    vs_reference = pd.read_csv(details / "vs_reference.tsv", sep="\t")
    assert vs_reference[["rater", "reference", "n"]].values.tolist() == [
        ["ann", "expert", 2], ["ann", "prl_mask", 6], ["ben", "expert", 2], ["ben", "prl_mask", 6]]

    def consensus(*args):
        return deep_prl("ratings", "consensus", study, "--subject", "sub-01", "--lesion", 1,
                        *args)

    assert consensus("--label", "prl", "--by", "chief", "--note", "rim") == 0
    assert consensus("--label", "unsure", "--by", "chief") == 0  # revised
    with Project.open(study) as project:  # durable once the command returned
        assert project.store.consensus_decisions()["label"].tolist() == ["unsure"]
    capsys.readouterr()
    assert consensus("--retract", "--by", "chief", "--note", "look again") == 0
    assert "consensus is now not_prl (unanimous)" in capsys.readouterr().err
    assert consensus("--retract", "--by", "chief") == 2
    assert "has no adjudicated consensus to retract" in capsys.readouterr().err
    history = tmp_path / "decisions.tsv"
    assert deep_prl("ratings", "export", study, "-o", history, "--consensus-history") == 0
    decisions = pd.read_csv(history, sep="\t")
    assert decisions["action"].tolist() == ["decide", "decide", "retract"]
    assert decisions["note"].fillna("").tolist() == ["rim", "", "look again"]

    wide = tmp_path / "wide.tsv"
    masks = tmp_path / "masks"
    assert deep_prl("ratings", "export", study, "-o", wide, "--nifti-dir", masks, "--quiet") == 0
    assert pd.read_csv(wide, sep="\t").columns.tolist() == [
        "subject", "lesion", "rater_ann", "rater_ben", "consensus", "consensus_method", "reference_expert",
        "reference_prl_mask"]
    index = pd.read_csv(masks / "prlmasks.tsv", sep="\t")
    files = index.set_index(["subject", "source", "id"])["file"]
    # '_' would split a BIDS entity: the id is mapped to letters, digits and a hash.
    assert files["sub-01", "reference", "prl_mask"].startswith("sub-01_desc-referenceprlmaskx")
    assert files["sub-02", "rater", "ann"] == "sub-02_desc-raterann_prlmask.nii.gz"
    assert set(index["source"]) == {"consensus", "rater", "reference"}
    assert all((masks / f).is_file() for f in index["file"])
    capsys.readouterr()
    assert deep_prl("ratings", "export", study, "--long") == 2
    assert "give -o FILE for a table, --nifti-dir DIR for PRL masks" in capsys.readouterr().err

    assert deep_prl("ratings", "add", study, "--rater", "truth", "--subject", "sub-01",
                    "--lesion", 1, "--label", "prl") == 0
    assert consensus("--label", "prl", "--by", "chief") == 0
    capsys.readouterr()
    assert deep_prl("ratings", "reference", study, "--rater", "truth") == 2
    assert "1 adjudicated decision(s) (sub-01 lesion 1)" in capsys.readouterr().err
    assert deep_prl("ratings", "reference", study, "--rater", "truth", "--keep-decisions") == 0
    assert "'truth' is now a reference" in capsys.readouterr().err
    with Project.open(study) as project:
        assert project.store.references()["reference"].tolist() == ["expert", "prl_mask", "truth"]


@pytest.mark.parametrize("review, words", [
    ({"panels": "phase"}, "list of contrast names"),
    ({"min_diameter_mm": -1}, "0 or more"),
    ({"smallest": 3}, "unknown setting"),
])
def test_review_settings_are_checked(tmp_path, manifest, review, words):
    with pytest.raises(InputError, match=words):
        Project.init(tmp_path / "p", manifest, {"review": review})


def test_small_lesions_leave_the_queue_and_its_counts(tmp_path, write_subject):
    from napari_deep_prl.data.cohort import write_manifest

    mask = blob_mask(centres=((8, 8, 8), (20, 20, 12)), radius=2.5) \
        | blob_mask(centres=((10, 24, 16),), radius=0.9)
    manifest = write_manifest([write_subject("sub-01", mask=mask)], tmp_path / "m.csv")
    with Project.init(tmp_path / "p", manifest, {"review": {"min_diameter_mm": 3.0}}) as project:
        queue = project.queue("r1")
        lesions = project.lesions()
        big = lesions[np.cbrt(6 * lesions["volume_mm3"] / np.pi) >= 3.0]
        assert len(big) == 2 and queue.left_out == 1
        assert {i.lesion_key for i in queue.remaining()} == set(big["lesion_key"])
        small = int(lesions.loc[~lesions["lesion_key"].isin(big["lesion_key"]), "lesion"].iloc[0])
        project.store.add_rating("r1", "sub-01", small, "not_prl")  # rated anyway, via Jump
        assert queue.progress().total == 2 and queue.progress().done == 0


@pytest.fixture
def two_sites(tmp_path, write_subject):
    """The same three subjects copied to two sites' image folders, each with its manifest."""
    folders = {}
    for site in ("site-a", "site-b"):
        folder = tmp_path / site / "prl"
        subjects = [write_subject(f"sub-0{i}", seed=i, folder=folder) for i in (1, 2, 3)]
        write_manifest(subjects, folder / "manifest.csv")
        folders[site] = folder
    return folders


def test_image_roots_open_one_project_at_every_site(tmp_path, two_sites, monkeypatch):
    roots = {site: str(folder) for site, folder in two_sites.items()}
    monkeypatch.setenv("DEEP_PRL_SITE", "site-a")
    with Project.init(tmp_path / "study", two_sites["site-a"] / "manifest.csv",
                      {"image_roots": roots}) as project:
        assert project.config.manifest == "manifest.csv"
        registered = project.lesions()
    config = json.loads((tmp_path / "study" / CONFIG_NAME).read_text())
    assert config["image_roots"] == roots
    for site, folder in two_sites.items():
        monkeypatch.setenv("DEEP_PRL_SITE", site)
        with Project.open(tmp_path / "study") as project:
            assert project.cohort[0].mask.parent == folder / "sub-01"
            assert project.load_subject("sub-02").labels.max() > 0
            pd.testing.assert_frame_equal(project.lesions(), registered)


def test_hostname_chooses_the_site(tmp_path, two_sites, monkeypatch):
    monkeypatch.delenv("DEEP_PRL_SITE", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "site-b.hospital.example")
    roots = {site: str(folder) for site, folder in two_sites.items()}
    with Project.init(tmp_path / "study", two_sites["site-b"] / "manifest.csv",
                      {"image_roots": roots}) as project:
        assert project.cohort[0].mask.parent == two_sites["site-b"] / "sub-01"


def test_missing_images_at_a_site_are_all_listed(tmp_path, two_sites, monkeypatch):
    roots = {site: str(folder) for site, folder in two_sites.items()}
    monkeypatch.setenv("DEEP_PRL_SITE", "site-a")
    Project.init(tmp_path / "study", two_sites["site-a"] / "manifest.csv",
                 {"image_roots": roots}).close()
    (two_sites["site-b"] / "sub-01" / "sub-01_phase.nii.gz").unlink()
    (two_sites["site-b"] / "sub-03" / "sub-03_mask.nii.gz").unlink()
    monkeypatch.setenv("DEEP_PRL_SITE", "site-b")
    with Project.open(tmp_path / "study") as project, pytest.raises(
            InputError, match=r"at site 'site-b' \(image root .*site-b/prl.*2 image file\(s\) not "
                              r"found: row 2 \(sub-01\): phase file .*sub-01_phase.nii.gz not "
                              r"found; row 4 \(sub-03\): mask file .*sub-03_mask.nii.gz not found"):
        project.cohort  # noqa: B018


def test_a_machine_of_no_site_is_refused(tmp_path, two_sites, monkeypatch):
    roots = {site: str(folder) for site, folder in two_sites.items()}
    monkeypatch.setenv("DEEP_PRL_SITE", "site-c")
    with pytest.raises(InputError, match=r"image roots for site\(s\) site-a, site-b, but "
                                         r"DEEP_PRL_SITE names site 'site-c'"):
        Project.init(tmp_path / "study", two_sites["site-a"] / "manifest.csv",
                     {"image_roots": roots})
    monkeypatch.setenv("DEEP_PRL_SITE", "site-a")
    with pytest.raises(InputError, match=r"with image_roots the project finds its manifest in each "
                                         r"site's image folder, and this one is not inside .*site-a"):
        Project.init(tmp_path / "study", two_sites["site-b"] / "manifest.csv",
                     {"image_roots": roots})
    assert not (tmp_path / "study" / CONFIG_NAME).exists()
    with pytest.raises(InputError, match="image_roots .* must map each site's name to its folder"):
        Project.init(tmp_path / "other", two_sites["site-a"] / "manifest.csv",
                     {"image_roots": ["/data/prl"]})


def test_cli_init_records_image_roots(tmp_path, two_sites, deep_prl, monkeypatch, capsys):
    monkeypatch.setenv("DEEP_PRL_SITE", "site-b")
    assert deep_prl("project", "init", tmp_path / "study", "--manifest",
                    two_sites["site-b"] / "manifest.csv", "--image-root",
                    f"site-a={two_sites['site-a']}", "--image-root",
                    f"site-b={two_sites['site-b']}", "--quiet") == 0
    config = json.loads((tmp_path / "study" / CONFIG_NAME).read_text())
    assert config["manifest"] == "manifest.csv"
    assert config["image_roots"] == {site: str(folder) for site, folder in two_sites.items()}
    assert deep_prl("project", "init", tmp_path / "other", "--manifest",
                    two_sites["site-b"] / "manifest.csv", "--image-root", "site-a") != 0
    assert "--image-root 'site-a' must read SITE=DIR" in capsys.readouterr().err
