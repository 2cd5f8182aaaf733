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


@pytest.mark.slow
@pytest.mark.filterwarnings("always::napari_deep_prl.base.errors.InputWarning")  # printed by the CLI
def test_demo_on_a_clinical_sites_scans_takes_their_contrasts_and_reads_a_bright_phase_flipped(tmp_path, capsys):
    """A site whose scanner writes the filtered phase paramagnetic-bright, with T1w and FLAIR on
    their own grids: the demo trains on those contrasts and reads the phase as --flip-phase does."""
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--subjects", "5", "--held-out", "1", "--epochs", "1", "--fov", "80", "96",
                 "80", "--prl-fraction", "0.3", "--site", "clinical", "--phase-sign", "bright"]) == 0
    captured = capsys.readouterr()
    assert "read with --flip-phase" in captured.out and "on t1w, flair, phase" in captured.out
    assert "looks paramagnetic-bright" not in captured.err  # the sign check is satisfied once flipped
    assert (out / "cohort/manifest.csv").read_text().splitlines()[0] == "subject,phase,t1w,flair,mask,prl_mask"
    assert load_checkpoint(out / "model.pt").patch_config.contrasts == ("t1w", "flair", "phase")
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    assert scores["subject"].unique().tolist() == ["sub-005"] and (out / "patches.png").stat().st_size > 1000
