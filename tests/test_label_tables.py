"""Ground truth from a lesion label table (manifest column ``prl_labels``) instead of a PRL mask."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from model_support import TINY

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest, write_manifest
from napari_deep_prl.data.labels import read_prl_labels
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.scoring.score import score_cohort, truth_metrics


def _labelled_manifest(manifest, tmp_path, rows) -> tuple:
    """The fixture cohort with its PRL masks replaced by one cohort-wide label table."""
    cohort = read_manifest(manifest)
    table = tmp_path / "consensus.tsv"
    pd.DataFrame(rows, columns=["subject", "lesion", "consensus"]).to_csv(table, sep="\t", index=False)
    subjects = [replace(p, prl_mask=None, prl_labels=table) for p in cohort]
    return cohort, write_manifest(subjects, tmp_path / "labelled.csv")


# Lesion 1 of every subject is the PRL of the fixture's PRL masks.
AGREEING = [(s, lesion, "prl" if lesion == 1 else "not_prl") for s in ("sub-01", "sub-02", "sub-03")
            for lesion in (1, 2, 3)]


def test_a_label_table_gives_the_same_training_set_as_the_prl_masks(manifest, tmp_path):
    cohort, labelled = _labelled_manifest(manifest, tmp_path, AGREEING)
    assert "prl_labels" in pd.read_csv(labelled).columns
    config = PatchConfig(size=12)
    from_masks = run_to_end(build_patchset(cohort, config))
    from_table = run_to_end(build_patchset(read_manifest(labelled), config))
    assert np.array_equal(from_table.y, from_masks.y) and np.array_equal(from_table.x, from_masks.x)


def test_unsure_and_unlisted_lesions_are_neither_trained_on_nor_tested(manifest, tmp_path):
    rows = [r for r in AGREEING if r[:2] != ("sub-02", 3)]  # not listed
    rows = [(s, n, "unsure") if (s, n) == ("sub-01", 2) else (s, n, v) for s, n, v in rows]
    _, labelled = _labelled_manifest(manifest, tmp_path, rows)
    cohort = read_manifest(labelled)
    truth = find_lesions(cohort[0].load()).table["prl"]
    assert truth.isna().tolist() == [False, True, False] and truth.iloc[0]
    patches = run_to_end(build_patchset(cohort, PatchConfig(size=12)))
    assert len(patches.originals()) == 7
    checkpoint = Checkpoint(DeepPRL(TINY, 12).eval(), 0.5, PatchConfig(size=12))
    scores = run_to_end(score_cohort(cohort, [checkpoint], tta=False)).lesions
    assert len(scores) == 9 and scores["prl_truth"].isna().sum() == 2
    metrics = truth_metrics(scores)
    assert sum(metrics[k] for k in ("tp", "fp", "fn", "tn")) == 7


def test_a_project_consensus_export_trains_a_model_from_the_cli(manifest, tmp_path, capsys):
    cohort = read_manifest(manifest)
    project = tmp_path / "project"
    assert main(["project", "init", str(project), "--manifest", str(manifest), "--quiet"]) == 0
    ratings = tmp_path / "ratings.csv"
    pd.DataFrame([(s, n, rater, label) for s, n, label in AGREEING for rater in ("ana", "ben")],
                 columns=["subject", "lesion", "rater", "label"]).to_csv(ratings, index=False)
    assert main(["ratings", "import", str(project), str(ratings)]) == 0
    consensus = tmp_path / "consensus.tsv"
    assert main(["ratings", "export", str(project), "-o", str(consensus)]) == 0
    subjects = [replace(p, prl_mask=None, prl_labels=consensus) for p in cohort]
    labelled = write_manifest(subjects, tmp_path / "labelled.csv")
    model = tmp_path / "model.pt"
    assert main(["train", str(labelled), "-o", str(model), "--epochs", "1", "--patch-size", "12",
                 "--samples-per-epoch", "8", "--batch-size", "8", "--device", "cpu", "--threads", "1",
                 "--models", "1", "--quiet"]) == 0
    assert main(["score", str(labelled), "--model", str(model), "-o", str(tmp_path / "s.tsv"), "--quiet"]) == 0
    assert "against the ground truth (3 PRLs of 9 labelled" in capsys.readouterr().err
    one = cohort[0]
    assert main(["score", "--phase", str(one.image("phase")), "--mp2rage", str(one.image("mp2rage")),
                 "--mask", str(one.mask),
                 "--prl-labels", str(consensus), "--subject", one.subject, "--model", str(model),
                 "-o", str(tmp_path / "one.tsv"), "--quiet"]) == 0
    assert "against the ground truth (1 PRLs of 3 labelled" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "message"), [
    ("lesion,grade\n1,prl\n", r"has none of the label columns consensus, prl, label"),
    ("lesion,prl\n1,maybe\n", r"unknown label\(s\) 'maybe'"),
    ("lesion,prl\n1.5,1\n", r"lesion id '1.5' is not a whole number"),
    ("lesion,prl\n1,1\n1,0\n", r"lesion\(s\) \[1\] are labelled twice"),
])
def test_bad_label_tables_are_refused_with_the_file_and_the_fix(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        read_prl_labels(path, "sub-01")
    assert str(path) in str(error.value)


def test_labels_for_lesions_the_mask_lacks_and_two_truths_are_refused(manifest, tmp_path):
    _, labelled = _labelled_manifest(manifest, tmp_path, AGREEING + [("sub-01", 7, "prl")])
    with pytest.raises(InputError, match=r"names lesion\(s\) \[7\] that its mask does not have"):
        find_lesions(read_manifest(labelled)[0].load())
    text = labelled.read_text().splitlines()
    both = tmp_path / "both.csv"
    prl_mask = read_manifest(manifest)[0].prl_mask
    both.write_text("\n".join([text[0] + ",prl_mask"] + [line + f",{prl_mask}" for line in text[1:]]) + "\n")
    with pytest.raises(InputError, match="gives both a prl_mask and prl_labels"):
        read_manifest(both)
