"""The model on any contrasts: patches, network, checkpoints, training and scoring by contrast."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from model_support import SIZE, TINY, TINY_TRAIN, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import CheckpointError, InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest, write_manifest
from napari_deep_prl.data.contrasts import cohort_contrasts, model_contrasts
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, extract_patches
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint, load_models
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.network import DeepPRL, count_parameters, inference_copy
from napari_deep_prl.model.train import train
from napari_deep_prl.scoring.score import score_cohort, score_subject

CLINICAL = ("t1w", "flair", "phase")

pytestmark = pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")


def _synthetic_subject(**renamed: str) -> Subject:
    """Two lesions in noise; ``renamed`` gives an image another contrast (``phase="qsm"``)."""
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    mask = np.zeros(shape, np.int32)
    mask[8:13, 8:13, 8:13] = 1
    mask[25:31, 20:25, 22:28] = 1
    images = {"phase": rng.normal(0, 0.1, shape).astype(np.float32),
              "mp2rage": rng.normal(1, 0.2, shape).astype(np.float32)}
    return Subject("sub-x", {renamed.get(name, name): image for name, image in images.items()}, mask, np.eye(4))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


# The research protocol's network and patches as the three-branch code (before models took other
# contrasts, commit 0c388f7) gave them: its seeded weights' checkpoint id, its parameter count,
# and the digests of its patches of ``_synthetic_subject`` under each normalisation.
RESEARCH_ID, RESEARCH_PARAMETERS = "9847e61e17ed0286", 156245
RESEARCH_PATCHES = {"subject": "96395ef1ee234803", "patch": "c529092ea66ce7cb", "zero": "35fc0cb380831408"}


def test_the_research_protocol_keeps_the_network_and_patches_it_had():
    torch.manual_seed(0)
    model = DeepPRL().eval()
    assert model.contrasts == ("mp2rage", "phase")
    assert count_parameters(model) == RESEARCH_PARAMETERS
    assert Checkpoint(model, 0.5, PatchConfig()).id == RESEARCH_ID  # the same seeded weights, names and shapes
    subject = _synthetic_subject()
    lesions = find_lesions(subject)
    for key, config in (("subject", PatchConfig()), ("patch", PatchConfig(normalisation="patch")),
                        ("zero", PatchConfig(phase_centre="zero"))):
        patches = extract_patches(subject, lesions, config)
        assert patches.shape[1] == 3 and config.channels == ("mp2rage", "phase", "mask")
        assert _digest(patches) == RESEARCH_PATCHES[key]


def test_contrasts_take_a_canonical_order_and_bad_sets_are_refused():
    assert model_contrasts(["phase", "flair", "t1w"], "x") == CLINICAL
    assert PatchConfig(contrasts=["qsm", "flair"]).channels == ("flair", "qsm", "mask")
    for bad, match in ((["phase", "qsm", "t1w"], "not a model's"), (["phase"], "not a model's"),
                       (["phase", "swi"], "display-only"), (["phase", "t2w"], "unknown")):
        with pytest.raises(InputError, match=match):
            PatchConfig(contrasts=bad)


def test_the_cohort_gives_the_default_contrasts():
    def subjects(*sets):
        return [(f"sub-{i}", names) for i, names in enumerate(sets)]

    assert cohort_contrasts(subjects(["phase", "mp2rage", "flair"]) * 2, "c") == ("mp2rage", "phase")
    assert cohort_contrasts(subjects(["phase", "t1w", "flair"], ["phase", "flair", "t1w", "swi"]), "c") == CLINICAL
    assert cohort_contrasts(subjects(["qsm", "flair"], ["qsm", "flair", "t1w"]), "c") == ("flair", "qsm")
    with pytest.raises(InputError, match="share no susceptibility contrast .*phase 1, qsm 1"):
        cohort_contrasts(subjects(["phase", "flair"], ["qsm", "flair"]), "c")


def test_a_branch_per_contrast_and_the_fast_copy_computes_the_same():
    model = DeepPRL(TINY, SIZE, ("phase", "flair", "t1w")).eval()
    assert model.contrasts == CLINICAL
    branches = {name.split(".")[0] for name in model.state_dict()}
    assert {"mask_branch", "t1w_branch", "flair_branch", "phase_branch"} <= branches
    one_branch = count_parameters(DeepPRL(TINY, SIZE).mask_branch)
    head_input = TINY.reduction * (SIZE // 2 ** len(TINY.widths)) ** 3 * TINY.fc[0]  # one more branch's features
    assert count_parameters(model) == count_parameters(DeepPRL(TINY, SIZE)) + one_branch + head_input \
        + TINY.widths[0] * 3**3 * TINY.widths[1]  # its block 2 also takes the fused mask features
    x = torch.rand(3, 4, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(inference_copy(model, torch.device("cpu"))(x), model(x), atol=1e-5)


def test_qsm_enters_negated_as_a_paramagnetic_dark_channel():
    phase, qsm = _synthetic_subject(), _synthetic_subject(phase="qsm")
    qsm.images["qsm"] = -qsm.images["qsm"]  # paramagnetic bright: the phase's values negated
    lesions = find_lesions(phase)
    for normalisation in ("subject", "patch"):
        a = extract_patches(phase, lesions, PatchConfig(normalisation=normalisation))
        b = extract_patches(qsm, lesions, PatchConfig(normalisation=normalisation, contrasts=("mp2rage", "qsm")))
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_structural_contrasts_are_scaled_alike_and_patches_follow_the_contrasts():
    subject = _synthetic_subject()
    subject.images["flair"] = subject.images["mp2rage"].copy()
    lesions = find_lesions(subject)
    patches = extract_patches(subject, lesions, PatchConfig(contrasts=("mp2rage", "flair", "phase")))
    research = extract_patches(subject, lesions, PatchConfig())
    assert patches.shape[1] == 4
    np.testing.assert_array_equal(patches[:, 1], patches[:, 0])  # the same image, the same scaling
    np.testing.assert_array_equal(patches[:, [0, 2, 3]], research)
    with pytest.raises(InputError, match="cutting patches needs .*sub-x has no t1w "):
        extract_patches(subject, lesions, PatchConfig(contrasts=CLINICAL))


def _clinical_cohort(tmp_path: Path, write_subject, n: int = 4) -> list[SubjectPaths]:
    """Subjects with phase, T1w and FLAIR (no MP2RAGE): a clinical site's contrasts."""
    subjects = []
    for i in range(n):
        paths = write_subject(f"sub-0{i}", seed=i, prl_lesions=(0,), rim_lesions=(0,), extra=("t1w", "flair"))
        subjects.append(SubjectPaths(paths.subject, tuple((c, p) for c, p in paths.images if c != "mp2rage"),
                                     paths.mask, paths.prl_mask))
    return subjects


def test_training_takes_the_contrasts_and_the_checkpoint_records_them(tmp_path, write_subject):
    cohort = _clinical_cohort(tmp_path, write_subject)
    config = PatchConfig(size=SIZE, contrasts=CLINICAL)
    patches = run_to_end(build_patchset(cohort, config))
    assert patches.x.shape[1] == 4 and patches.grids["reference"] == {"phase": 4}
    result = run_to_end(train(patches, TINY_TRAIN))
    path = result.checkpoint.save(tmp_path / "model.pt")
    metadata = json.loads(torch.load(path, weights_only=True)["metadata"])
    assert metadata["channels"] == [*CLINICAL, "mask"]
    assert metadata["contrasts"][-1] == {"name": "phase", "kind": "susceptibility", "sign": "paramagnetic dark",
                                         "negated": False}
    assert metadata["grids"]["images"]["flair"]["resampling"] == ["none"]
    loaded = load_checkpoint(path)
    assert loaded.contrasts == CLINICAL and loaded.model.contrasts == CLINICAL
    subject = cohort[0].load()
    pd.testing.assert_frame_equal(score_subject(subject, [loaded]), score_subject(subject, [result.checkpoint]))


def _rewritten(path: Path, edit) -> Path:
    payload = torch.load(path, weights_only=True)
    metadata = json.loads(payload["metadata"])
    edit(metadata)
    payload["metadata"] = json.dumps(metadata)
    torch.save(payload, path)
    return path


def test_a_checkpoint_without_contrasts_loads_as_the_research_protocol_and_scores_as_before(tmp_path, manifest):
    torch.manual_seed(0)
    checkpoint = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE))

    def older(metadata: dict) -> None:  # what versions before contrasts wrote
        del metadata["contrasts"], metadata["patch"]["contrasts"]
        metadata["channels"] = ["mp2rage", "phase", "mask"]

    old = load_checkpoint(_rewritten(checkpoint.save(tmp_path / "old.pt"), older))
    assert old.contrasts == ("mp2rage", "phase") and old.id == checkpoint.id
    subject = read_manifest(manifest)[0].load()
    pd.testing.assert_frame_equal(score_subject(subject, [old]), score_subject(subject, [checkpoint]))


def test_a_checkpoint_whose_channels_disagree_with_its_contrasts_is_refused(tmp_path):
    checkpoint = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE))
    path = _rewritten(checkpoint.save(tmp_path / "m.pt"),
                      lambda metadata: metadata.update(channels=["t1w", "phase", "mask"]))
    with pytest.raises(CheckpointError, match="'channels'"):
        load_checkpoint(path)


def test_an_ensemble_of_different_contrasts_is_refused(tmp_path):
    research = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE)).save(tmp_path / "a.pt")
    clinical = Checkpoint(DeepPRL(TINY, SIZE, CLINICAL).eval(), 0.5,
                          PatchConfig(size=SIZE, contrasts=CLINICAL)).save(tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"different contrasts .*\(mp2rage, phase\).*\(t1w, flair, phase\)"):
        load_models(research, clinical)
    members = [load_checkpoint(research), load_checkpoint(clinical)]
    subject = _synthetic_subject()
    with pytest.raises(CheckpointError, match="different contrasts"):
        score_subject(subject, members)


def test_scoring_refuses_a_subject_lacking_a_model_contrast_naming_it(tmp_path, manifest):
    model = Checkpoint(DeepPRL(TINY, SIZE, CLINICAL).eval(), 0.5, PatchConfig(size=SIZE, contrasts=CLINICAL))
    cohort = read_manifest(manifest)
    with pytest.raises(InputError, match=rf"model {model.id} \(t1w, flair, phase\) needs .*3 subject\(s\) lack one: "
                                         r"sub-01 has no t1w or flair \(it has phase, mp2rage\)"):
        run_to_end(score_cohort(cohort, [model]))
    with pytest.raises(InputError, match=rf"model {model.id} .*sub-01 has no t1w or flair"):
        score_subject(cohort[0].load(), [model])


def test_scoring_reads_only_the_models_contrasts(tmp_path, write_subject):
    paths = write_subject("sub-01", extra=("flair",))
    paths.image("flair").write_bytes(b"not a NIfTI")  # a FLAIR the research model never needs
    model = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE))
    scores = run_to_end(score_cohort([paths], [model]))
    assert len(scores.lesions) == 3 and not scores.unreadable


def test_cli_trains_on_the_cohorts_contrasts_or_those_asked_for(tmp_path, write_subject, capsys):
    manifest = write_manifest(_clinical_cohort(tmp_path, write_subject), tmp_path / "manifest.csv")
    common = ["--epochs", "1", "--samples-per-epoch", "16", "--batch-size", "8", "--models", "1",
              "--patch-size", "8", "--no-tta", "--device", "cpu", "--precision", "float32"]
    # float32: with 8-voxel patches and one epoch, bfloat16 training can diverge (train refuses it)
    assert main(["train", str(manifest), "-o", str(tmp_path / "all.pt"), *common]) == 0
    assert load_checkpoint(tmp_path / "all.pt").contrasts == CLINICAL
    assert "training on t1w, flair, phase" in capsys.readouterr().err
    assert main(["train", str(manifest), "-o", str(tmp_path / "two.pt"), "--contrasts", "phase,flair", *common]) == 0
    assert load_checkpoint(tmp_path / "two.pt").contrasts == ("flair", "phase")
    assert main(["train", str(manifest), "-o", str(tmp_path / "ft.pt"), "--init", str(tmp_path / "two.pt"),
                 "--contrasts", "t1w,phase", "--accept-worse", *common]) == 2
    assert "--contrasts t1w,phase (the model's: flair,phase)" in capsys.readouterr().err


def test_a_diverged_training_is_refused_with_what_to_do(monkeypatch):
    """Non-finite outputs on the validation lesions stop training with a message, not a NaN model."""
    import napari_deep_prl.model.train as training

    monkeypatch.setattr(training, "predict_views", lambda *a, **k: torch.full((1, 3), float("nan")))
    validation = type("V", (), {"x": np.zeros((3, 3, SIZE, SIZE, SIZE), np.float32), "y": np.array([1, 0, 0])})()
    with pytest.raises(InputError, match="training diverged.*--precision float32"):
        training._validate(DeepPRL(TINY, SIZE).eval(), validation, TINY_TRAIN, torch.device("cpu"))
