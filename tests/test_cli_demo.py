"""`deep-prl demo`, the README's first command, end to end at a tiny size."""

from __future__ import annotations

import pandas as pd
import pytest

from napari_deep_prl.cli import main
from napari_deep_prl.model.checkpoint import load_checkpoint
from napari_deep_prl.scoring.score import SCORE_COLUMNS


@pytest.mark.slow
def test_demo_simulates_trains_scores_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--subjects", "7", "--held-out", "1", "--epochs", "1",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "lesions most likely to be PRLs" in printed and "prl_count" in printed
    for name in ("lesions.tsv", "patches.png", "model.pt", "scores.tsv", "cohort/manifest.csv"):
        assert (out / name).exists(), name
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    assert set(SCORE_COLUMNS) <= set(scores.columns) and scores["subject"].nunique() == 1
    lesions = pd.read_csv(out / "lesions.tsv", sep="\t")
    assert len(scores) == (lesions["subject"] == scores["subject"].iloc[0]).sum()
    assert load_checkpoint(out / "model.pt").metadata["training"]["epochs_run"] == 1
