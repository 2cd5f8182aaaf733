"""``deep-prl active``: score and rank a project's lesions, fine-tune on its labels; ``deep-prl
train --init`` compares the result with the model it started from."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from active_support import (  # noqa: F401
    add_contrarian,
    one_torch_thread,
    ranking_models,
    rim_manifest,
    tiny_checkpoint,
    tiny_project,
)

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import active as active_cli
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.model.checkpoint import load_checkpoint, load_models
from napari_deep_prl.model.train import TrainConfig
from napari_deep_prl.ratings.project import Project


@pytest.fixture
def root(tmp_path) -> str:
    """A project of subjects whose PRLs a network can see, their PRL masks imported."""
    with tiny_project(tmp_path / "project", rim_manifest(tmp_path)) as project:
        run_to_end(project.import_prl_masks())
    return str(tmp_path / "project")


def test_rank_writes_the_queue_order_and_finetune_saves_a_version(tmp_path, root):
    parent = tiny_checkpoint()
    model = parent.save(tmp_path / "tiny.pt")
    out = tmp_path / "queue.tsv"
    assert main(["active", "rank", root, "--model", str(model), "--strategy", "entropy", "-o", str(out),
                 "--quiet"]) == 0
    queue = pd.read_csv(out, sep="\t", na_values="n/a")
    assert len(queue) == 9 and list(queue["position"]) == list(range(9))
    assert queue["entropy"].is_monotonic_decreasing
    assert set(queue["model_version"]) == {f"{parent.id}/views"}
    assert queue[["uncertainty_sd", "bald"]].isna().all().all()  # one network on one view: one sample
    worst = ranking_models()[1].save(tmp_path / "worst.pt")  # nothing validates worse than it
    assert main(["active", "finetune", root, "--model", str(worst), "--source", "prl_mask",
                 "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    saved = load_checkpoint(tmp_path / "project" / "models" / "deep-prl-v001.pt")
    assert saved.metadata["parent"] == ranking_models()[1].id and saved.metadata["labels"]["n"] == 9
    assert main(["active", "finetune", root, "--source", "prl_mask", "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0  # from scratch: the default ensemble, cross-fitted on 3 subjects
    assert len(load_models(tmp_path / "project" / "models" / "deep-prl-v002.pt")) == 3
    assert main(["active", "finetune", root, "--model", str(model), "--models", "2", "--quiet"]) == 2


def test_score_prints_and_writes_the_project_counts(tmp_path, manifest, capsys):
    tiny_project(tmp_path / "project", manifest).close()
    model = tiny_checkpoint().save(tmp_path / "tiny.pt")  # threshold 0.5, raw probabilities
    out = tmp_path / "subjects.tsv"
    root = str(tmp_path / "project")
    assert main(["active", "score", root, "--model", str(model), "-o", str(out),
                 "--quiet"]) == 0
    counts = pd.read_csv(out, sep="\t")
    assert counts["subject"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert counts["lesions"].tolist() == [3, 3, 3]
    message = capsys.readouterr().err
    assert f"{counts['prl_count'].sum()} called PRL (prl_probability >= 0.5)" in message
    assert main(["active", "score", root, "--model", str(model),
                 "--cohort-decision", "--quiet"]) == 2
    assert "calibrated" in capsys.readouterr().err



@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_score_and_rank_take_an_onnx_model_and_the_rest_asks_for_the_checkpoint(tmp_path, manifest, capsys):
    from napari_deep_prl.model.export import export_onnx
    from napari_deep_prl.scoring.project import model_version
    from napari_deep_prl.scoring.score import score_cohort

    tiny_project(tmp_path / "project", manifest).close()
    checkpoint = tiny_checkpoint()
    model = checkpoint.save(tmp_path / "tiny.pt")
    onnx = str(export_onnx([checkpoint], tmp_path / "tiny.onnx").graph)
    root = str(tmp_path / "project")
    assert main(["active", "score", root, "--model", onnx, "--quiet"]) == 0
    assert "9 lesions scored by model version" in capsys.readouterr().err
    with Project.open(root) as project:  # stored under the checkpoint's version, with its float32 scores
        stored = project.store.predictions(model_version([checkpoint])).sort_values(["subject", "lesion"])
    expected = run_to_end(score_cohort(read_manifest(manifest), [checkpoint], device="cpu", precision="float32"))
    assert len(stored) == 9
    np.testing.assert_allclose(stored["probability"], expected.lesions["prl_probability"], atol=1e-4)
    assert main(["active", "rank", root, "--model", onnx, "-o", str(tmp_path / "queue.tsv"), "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "queue.tsv", sep="\t")) == 9
    for command in (["active", "calibrate", root, "--model", onnx, "-o", str(tmp_path / "site.pt")],
                    ["active", "finetune", root, "--model", onnx], ["export", onnx, "-o", str(tmp_path / "b.onnx")]):
        assert main([*command, "--quiet"] if command[0] == "active" else command) == 2
        error = capsys.readouterr().err
        assert "an exported ONNX model, which only scores lesions" in error
        assert "use the PyTorch checkpoint (.pt) it was exported from" in error
    assert main(["active", "score", root, "--model", str(model), "--quiet"]) == 0  # the same model: nothing to do


def test_finetune_refuses_one_class_labels_before_any_work(root, capsys):
    with Project.open(root) as project:
        lesions = project.lesions()
        project.import_ratings(pd.DataFrame({"subject": lesions["subject"], "lesion": lesions["lesion"],
                                             "rater": "ann", "label": "not_prl"}))
    assert main(["active", "finetune", root, "--source", "ann", "--device", "cpu", "--quiet"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "0 PRL and 9 non-PRL ann labels" in message
    assert "label 3 more PRLs" in message  # three cross-fitted networks from scratch: three shares
    assert not list((Path(root) / "models").glob("*.pt"))


def test_a_worse_fine_tuned_model_exits_1_unless_accepted(tmp_path, root, capsys, monkeypatch):
    # the starting model does not compete with the epochs (as keep_start=False), so fine-tuning on
    # labels that contradict its validation subject ends on a worse model
    monkeypatch.setattr(active_cli, "TrainConfig", functools.partial(TrainConfig, keep_start=False))
    with Project.open(root) as project:
        add_contrarian(project)
    best = ranking_models()[0].save(tmp_path / "best.pt")
    args = ["active", "finetune", root, "--model", str(best), "--source", "contrarian", "--epochs", "10",
            "--lr", "1e-2", "--device", "cpu", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"compared with {best} on the same 3 held-out lesions (1 PRL)" in err
    assert "starting model F1 1.000, ROC AUC 1.000: the new model validates WORSE" in err
    assert f"deep-prl-v001.pt validates worse than {best}: it is saved, but keep using {best}" in err
    assert main([*args, "--accept-worse"]) == 0
    assert "accepted (--accept-worse)" in capsys.readouterr().err
    assert len(list((Path(root) / "models").glob("deep-prl-v00*.pt"))) == 2


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")  # the tiny model's patches
def test_train_init_compares_with_the_model_it_started_from(tmp_path, capsys):
    manifest = rim_manifest(tmp_path)
    start = ranking_models()[0].save(tmp_path / "best.pt")
    out = tmp_path / "tuned.pt"
    assert main(["train", str(manifest), "-o", str(out), "--init", str(start), "--epochs", "0",
                 "--device", "cpu", "--quiet"]) == 0
    assert out.exists()  # no epoch: the same network, validated the same way
    assert (f"compared with {start} on the same 3 held-out lesions (1 PRL): new model F1 1.000, ROC AUC "
            "1.000; starting model F1 1.000, ROC AUC 1.000: the new model validates at least as well"
            in capsys.readouterr().err)


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")  # the tiny model's patches
def test_train_init_refuses_flags_that_differ_from_the_starting_model(tmp_path, capsys):
    # the issue: --patch-size 40 --normalisation patch --phase-centre zero were silently ignored
    manifest = rim_manifest(tmp_path)
    start = ranking_models()[0]
    path = start.save(tmp_path / "m1.pt")
    out = tmp_path / "tuned.pt"
    base = ["train", str(manifest), "-o", str(out), "--init", str(path), "--epochs", "0", "--device", "cpu",
            "--quiet"]
    assert main([*base, "--patch-size", "40", "--normalisation", "patch", "--phase-centre", "zero",
                 "--preset", "paper", "--fusion", "gate"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert ("--patch-size 40 (the model's: 8); --normalisation patch (the model's: subject); --phase-centre zero "
            "(the model's: local); --fusion gate (the model's: concat); --preset paper (the model's: none (widths "
            f"[2, 4])): {path} fixes these, and fine-tuning keeps them") in message
    assert not out.exists()
    # the same values as the model's are no conflict
    assert main([*base, "--patch-size", "8", "--normalisation", "subject", "--fusion", "concat"]) == 0
    assert load_checkpoint(out).patch_config == start.patch_config
