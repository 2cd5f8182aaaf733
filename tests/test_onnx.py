"""Portable models: the whole scoring head exported as one ONNX graph scores as its checkpoints."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import CheckpointError, InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.backend import load_model
from napari_deep_prl.model.checkpoint import Checkpoint, load_models, save_ensemble
from napari_deep_prl.model.export import checked_ensemble, export_onnx
from napari_deep_prl.model.inference import TTA_VIEWS, view_probabilities
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.model.onnx_model import FIRST_VIEWS, WHOLE, OnnxModel, first_views_file, vectors_file
from napari_deep_prl.scoring.score import score_cohort

pytestmark = pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")

#: Each network's views: every flip, a few, the patch as cut alone.
VIEWS = ([list(v) for v in TTA_VIEWS], [[], [2], [3, 4]], [[]])


def _network(seed: int, size: int = SIZE, calibrated: bool = True) -> Checkpoint:
    torch.manual_seed(seed)
    calibration = PlattFit(0.1 * seed, 0.5 + 0.2 * seed, 1.5 - 0.3 * seed, -0.2 + 0.1 * seed) if calibrated else None
    return Checkpoint(DeepPRL(TINY, size).eval(), 0.45 + 0.02 * seed, PatchConfig(size=size),
                      {"views": VIEWS[seed % len(VIEWS)]}, calibration)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Three calibrated networks with their own views, saved as one ensemble and exported by the CLI."""
    folder = tmp_path_factory.mktemp("onnx")
    networks = [_network(seed) for seed in range(3)]
    save_ensemble(networks, folder / "model.pt")
    assert main(["export", str(folder / "model.pt"), "-o", str(folder / "model.onnx"), "--threads", "1"]) == 0
    return networks, folder


def test_the_graph_gives_the_checkpoints_rows_and_carries_its_spec(exported):
    networks, folder = exported
    model = load_model(folder / "model.onnx")
    assert isinstance(model, OnnxModel)
    spec = model.spec
    assert spec["patch"] == PatchConfig(size=SIZE).to_dict() and spec["patch_size"] == SIZE
    assert spec["channels"] == list(networks[0].describe()["channels"])
    assert spec["input"]["shape"] == ["batch", len(spec["channels"]), SIZE, SIZE, SIZE]
    assert [n.id for n in model.networks] == [c.id for c in networks]
    assert model.threshold == pytest.approx(np.mean([c.threshold for c in networks]))
    assert [n.calibration for n in model.networks] == [c.calibration for c in networks]
    assert [[list(v) for v in n.views] for n in model.networks] == list(VIEWS)
    metadata = model.session().get_modelmeta().custom_metadata_map  # what any ONNX tool lists
    assert metadata["model_ids"] == ",".join(c.id for c in networks)
    # the first-view graph beside it, named with its digest; it is no model of its own
    assert metadata["first_views"] == "model.first.onnx" == spec["first_views"]
    assert model.first_views == first_views_file(folder / "model.onnx") and model.first_views.is_file()
    with pytest.raises(CheckpointError, match="the first-view graph of model.onnx"):
        load_model(model.first_views)
    assert json.loads(metadata["napari_deep_prl"]) == spec and metadata["patch_size"] == str(SIZE)
    # the test vectors reproduce, and are the PyTorch path's outputs
    assert model.check_test_vectors() <= 1e-4
    with np.load(vectors_file(folder / "model.onnx")) as vectors:
        expected = view_probabilities(networks, vectors["patches"], device="cpu", precision="float32")
        np.testing.assert_allclose(vectors["view_probabilities"], expected, atol=1e-6)
        np.testing.assert_allclose(vectors["probability"], expected.mean(0), atol=1e-6)
    x = np.random.default_rng(1).random((11, 3, SIZE, SIZE, SIZE), dtype=np.float32)  # not a batch multiple
    every = view_probabilities(networks, x, device="cpu", precision="float32")
    np.testing.assert_allclose(model.view_probabilities(x, batch_size=4), every, atol=1e-5)
    np.testing.assert_allclose(model.outputs(x)[0], every.mean(0), atol=1e-5)
    screen = float(np.median(every[[0, 8, 11]].mean(0)))
    screened = view_probabilities(networks, x, device="cpu", precision="float32", screen=screen)
    assert np.isnan(screened).any()
    # the screen as in PyTorch: every patch through the first-view graph, the graph only for those kept
    runs, outputs = [], model.outputs

    def counted(patches, **options):
        runs.append((options.get("part", WHOLE), len(patches)))
        return outputs(patches, **options)

    model.outputs = counted
    np.testing.assert_allclose(model.view_probabilities(x, screen=screen), screened, atol=1e-5)
    kept = int(np.isfinite(screened[1]).sum())
    assert runs == [(FIRST_VIEWS, 11), (WHOLE, kept)] and 0 < kept < 11
    del model.outputs
    np.testing.assert_allclose(model.view_probabilities(x, tta=False),
                               view_probabilities(networks, x, tta=False, device="cpu", precision="float32"),
                               atol=1e-5)
    with pytest.raises(InputError, match="exported with the views"):
        model.view_probabilities(x, tta=True)  # the second network has 3 views, not all 8


def test_without_its_first_view_graph_the_model_scores_alike_and_says_why_it_is_slower(exported, tmp_path):
    networks, folder = exported
    for name in ("model.onnx", "model.test.npz"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    x = np.random.default_rng(2).random((6, 3, SIZE, SIZE, SIZE), dtype=np.float32)
    every = view_probabilities(networks, x, device="cpu", precision="float32")
    screen = float(np.median(every[[0, 8, 11]].mean(0)))
    screened = view_probabilities(networks, x, device="cpu", precision="float32", screen=screen)
    alone = load_model(tmp_path / "model.onnx")
    with pytest.warns(InputWarning, match=r"model.first.onnx is missing: model.onnx scores every view"):
        np.testing.assert_allclose(alone.view_probabilities(x, screen=screen), screened, atol=1e-5)
    assert alone.check_test_vectors() <= 1e-4  # the graph's own vectors still check
    # a first-view graph of another export is refused, not used
    (tmp_path / "model.first.onnx").write_bytes(b"the first-view graph of another export")
    with pytest.raises(CheckpointError, match="come from different exports"):
        load_model(tmp_path / "model.onnx").view_probabilities(x, screen=screen)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """Two calibrated networks scored on the 8 flips (as `deep-prl train` makes them), exported."""
    folder = tmp_path_factory.mktemp("onnx_flips")
    # calibrated to probabilities well below one half, so that a threshold puts half the lesions under its screen
    networks = [replace(_network(seed), metadata={"views": [list(v) for v in TTA_VIEWS]},
                        calibration=PlattFit(0.0, 1.0, 10.0, -3.0)) for seed in (3, 4)]
    save_ensemble(networks, folder / "model.pt")
    export_onnx(load_models(folder / "model.pt"), folder / "model.onnx")
    return folder


def test_the_screened_default_and_tta_score_as_the_checkpoints(flipped, manifest, tmp_path):
    """`deep-prl score` with the ONNX file: the default screen and --tta, each as the checkpoints."""
    cohort = read_manifest(manifest)
    looks = run_to_end(score_cohort(cohort, load_models(flipped / "model.pt"), tta=False, device="cpu",
                                    precision="float32")).lesions["prl_probability"]
    # the screen (half the threshold) half-way between two lesions' first looks: it keeps about half of them
    threshold = float(2 * np.sort(looks)[len(looks) // 2 - 1:][:2].mean())
    tables = {}
    for model in ("model.pt", "model.onnx"):
        for views in ([], ["--tta"]):
            out = tmp_path / f"{model}{len(views)}.tsv"
            assert main(["score", str(manifest), "--model", str(flipped / model), "--precision", "float32",
                         "--device", "cpu", "--quiet", "--threshold", str(threshold), "-o", str(out), *views]) == 0
            tables[model, bool(views)] = pd.read_csv(out, sep="\t", na_values="n/a")
    for tta in (False, True):
        torch_scores, onnx_scores = tables["model.pt", tta], tables["model.onnx", tta]
        for column in ("prl_probability", "uncertainty_sd", "bald"):
            np.testing.assert_allclose(onnx_scores[column], torch_scores[column], atol=1e-4)
        assert (onnx_scores["prl"] == torch_scores["prl"]).all()
    # the default screened: lesions below the screen keep their first looks (their median), others every flip
    screened = (looks < threshold / 2).to_numpy()
    assert 0 < screened.sum() < len(looks)
    default, every = tables["model.onnx", False]["prl_probability"], tables["model.onnx", True]["prl_probability"]
    np.testing.assert_allclose(default[~screened], every[~screened], atol=1e-6)
    np.testing.assert_allclose(default[screened], looks[screened], atol=1e-4)


def test_score_with_the_onnx_file_gives_the_checkpoints_probabilities_and_calls(exported, manifest, tmp_path):
    networks, folder = exported
    cohort = read_manifest(manifest)
    reference = run_to_end(score_cohort(cohort, networks, device="cpu", precision="float32"))
    # a threshold half-way between two lesions' probabilities, so that the calls are worth comparing
    middle = np.sort(reference.lesions["prl_probability"])[len(reference.lesions) // 2 - 1:][:2]
    threshold = float(middle.mean())
    tables = []
    for model in ([str(folder / "model.pt")], [str(folder / "model.onnx")]):
        out = tmp_path / f"{len(tables)}.tsv"
        args = ["score", str(manifest), "--precision", "float32", "--device", "cpu", "--quiet",
                "--threshold", str(threshold), "-o", str(out)]
        assert main([*args, *(a for m in model for a in ("--model", m))]) == 0
        tables.append(pd.read_csv(out, sep="\t", na_values="n/a"))
    torch_scores, onnx_scores = tables
    assert 0 < torch_scores["prl"].sum() < len(torch_scores)
    assert (onnx_scores["prl"] == torch_scores["prl"]).all()
    for column in ("prl_probability", "uncertainty_sd", "bald"):
        np.testing.assert_allclose(onnx_scores[column], torch_scores[column], atol=1e-4)
    assert onnx_scores["uncertainty_sd"].isna().sum() == torch_scores["uncertainty_sd"].isna().sum()


def test_export_refuses_networks_one_graph_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match=r"other patch settings .* export the networks apart"):
        checked_ensemble([_network(0), _network(1, size=16)])
    with pytest.raises(CheckpointError, match="raw probabilities and the others calibrated"):
        checked_ensemble([_network(0), _network(1, calibrated=False)])
    with pytest.raises(InputError, match="no model given"):
        checked_ensemble([])
    for seed, size in ((0, SIZE), (1, 16)):
        _network(seed, size).save(tmp_path / f"{seed}.pt")
    assert main(["export", str(tmp_path / "0.pt"), str(tmp_path / "1.pt"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert not any(tmp_path.glob("m.*"))


def test_an_onnx_model_is_scored_alone_and_foreign_files_are_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not a graph")
    _network(0).save(tmp_path / "a.pt")
    with pytest.raises(InputError, match="an ONNX file holds a whole model"):
        load_model(tmp_path / "a.pt", tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_model(tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="no such ONNX model"):
        load_model(tmp_path / "absent.onnx")


def test_scoring_an_onnx_model_without_onnxruntime_names_the_extra(monkeypatch, manifest, tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    assert main(["score", str(manifest), "--model", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'napari-deep-prl[onnx]'" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"napari-deep-prl\[onnx\]"):
        export_onnx([_network(0)], tmp_path / "n.onnx")
