"""``deep-prl active``: score and rank a project's lesions, fine-tune on its labels."""

from __future__ import annotations

import pandas as pd
from active_support import one_torch_thread, tiny_checkpoint, tiny_project  # noqa: F401

from napari_deep_prl.checkpoint import load_checkpoint, load_models
from napari_deep_prl.cli import main
from napari_deep_prl.progress import run_to_end


def test_rank_writes_the_queue_order_and_finetune_saves_a_version(tmp_path, manifest):
    with tiny_project(tmp_path / "project", manifest) as project:
        run_to_end(project.import_prl_masks())
    parent = tiny_checkpoint()
    model = parent.save(tmp_path / "tiny.pt")
    out = tmp_path / "queue.tsv"
    root = str(tmp_path / "project")
    assert main(["active", "rank", root, "--model", str(model), "--method", "mc_dropout",
                 "--samples", "2", "--strategy", "entropy", "-o", str(out), "--quiet"]) == 0
    queue = pd.read_csv(out, sep="\t")
    assert len(queue) == 9 and list(queue["position"]) == list(range(9))
    assert queue["entropy"].is_monotonic_decreasing
    assert set(queue["model_version"]) == {f"{parent.id}/mc2"}
    assert main(["active", "finetune", root, "--model", str(model), "--source", "prl_mask",
                 "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    saved = load_checkpoint(tmp_path / "project" / "models" / "deep-prl-v001.pt")
    assert saved.metadata["parent"] == parent.id and saved.metadata["labels"]["n"] == 9
    assert main(["active", "finetune", root, "--source", "prl_mask", "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0  # from scratch: the default ensemble, cross-fitted on 3 subjects
    assert len(load_models(tmp_path / "project" / "models" / "deep-prl-v002.pt")) == 3
    assert main(["active", "finetune", root, "--model", str(model), "--models", "2", "--quiet"]) == 2


def test_score_prints_and_writes_the_project_counts(tmp_path, manifest, capsys):
    tiny_project(tmp_path / "project", manifest).close()
    model = tiny_checkpoint().save(tmp_path / "tiny.pt")  # threshold 0.5, raw probabilities
    out = tmp_path / "subjects.tsv"
    root = str(tmp_path / "project")
    assert main(["active", "score", root, "--model", str(model), "--method", "none", "-o", str(out),
                 "--quiet"]) == 0
    counts = pd.read_csv(out, sep="\t")
    assert counts["subject"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert counts["lesions"].tolist() == [3, 3, 3]
    message = capsys.readouterr().err
    assert f"{counts['prl_count'].sum()} called PRL (prl_probability >= 0.5)" in message
    assert main(["active", "score", root, "--model", str(model), "--method", "none",
                 "--cohort-decision", "--quiet"]) == 2
    assert "calibrated" in capsys.readouterr().err
