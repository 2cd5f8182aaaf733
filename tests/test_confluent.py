"""Confluent binary components split into lesion candidates, and scored as ordinary lesions."""

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from model_support import SIZE, TINY, TINY_TRAIN, one_torch_thread, toy_patches  # noqa: F401
from scipy import ndimage

from napari_deep_prl.base.errors import InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.confluent import MIN_PART_MM3, split_component
from napari_deep_prl.data.lesions import find_lesions, lesion_kinds, lesions_in_mask
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.model.train import train
from napari_deep_prl.scoring.score import warn_if_parts_unseen
from napari_deep_prl.simulate.params import SubjectParams
from napari_deep_prl.simulate.subject import simulate_subject

ONE_MM = (1.0, 1.0, 1.0)


def ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def confluent_mask() -> np.ndarray:
    """A lone blob (component 1), three touching balls (component 2), another blob (3)."""
    shape = (48, 48, 40)
    mask = ball(shape, (4, 4, 4), 2)
    mask |= ball(shape, (20, 12, 20), 5) | ball(shape, (20, 22, 20), 5) | ball(shape, (28, 17, 20), 4.5)
    mask |= ball(shape, (40, 40, 30), 3)
    return mask.astype(np.uint8)


def test_a_confluent_component_splits_into_parts_that_cover_it_exactly():
    mask = confluent_mask()
    labels = label_lesions(mask, ONE_MM)
    parts = np.unique(labels[labels > 3])
    assert parts.tolist() == [4, 5, 6]  # ids after the last component's, one per ball
    # the parts are exactly the component: nothing lost, nothing added, nothing else relabelled
    assert np.array_equal(labels > 0, mask > 0)
    assert np.array_equal(np.isin(labels, parts), _necked_region(mask))
    assert set(np.unique(labels[(labels > 0) & (labels < 4)])) == {1, 3}
    # each part holds one ball's centre
    assert len({labels[20, 12, 20], labels[20, 22, 20], labels[28, 17, 20]}) == 3


def test_parts_have_stable_ids_across_runs_and_memory_layouts():
    mask = confluent_mask()
    first = label_lesions(mask, ONE_MM)
    assert np.array_equal(first, label_lesions(mask.copy(), ONE_MM))
    assert np.array_equal(first, label_lesions(np.asfortranarray(mask), ONE_MM))
    # parts numbered in raster order of their first voxel
    parts = [p for p in np.unique(first) if p > 3]
    firsts = [np.flatnonzero(first.ravel() == p)[0] for p in parts]
    assert firsts == sorted(firsts)


def test_the_table_links_parts_to_their_component():
    table = lesions_in_mask(confluent_mask(), np.eye(4), "sub-01").table.set_index("lesion")
    assert table.index.tolist() == [1, 3, 4, 5, 6]
    assert table["component"].tolist() == [1, 3, 2, 2, 2]
    assert table["split_from"].tolist() == [0, 0, 2, 2, 2]
    assert table["confluent"].tolist() == [False, False, True, True, True]


def test_pieces_too_small_to_judge_keep_the_component_whole_and_flagged():
    shape = (40, 40, 40)
    mask = (ball(shape, (20, 12, 20), 6) | ball(shape, (20, 21, 20), 4)).astype(np.uint8)
    # at 1 mm the small ball (~270 mm³) is a part of its own
    assert lesions_in_mask(mask, np.eye(4), "s").table["split_from"].tolist() == [1, 1]
    # at 0.25 mm it is ~4 mm³, below MIN_PART_MM3: the component stays one lesion, flagged
    fine = np.diag([0.25, 0.25, 0.25, 1.0])
    assert 4 ** 3 * 4 / 3 * np.pi * 0.25**3 < MIN_PART_MM3
    table = lesions_in_mask(mask, fine, "s").table
    assert table["lesion"].tolist() == [1] and table["split_from"].tolist() == [0]
    assert table["confluent"].tolist() == [True] and table["component"].tolist() == [1]


def test_lesion_kinds_tell_parts_from_components_kept_whole():
    table = lesions_in_mask(confluent_mask(), np.eye(4), "sub-01").table
    assert lesion_kinds(table).tolist() == ["non_confluent", "non_confluent"] + ["confluent_part"] * 3
    shape = (40, 40, 40)
    mask = (ball(shape, (20, 12, 20), 6) | ball(shape, (20, 21, 20), 4)).astype(np.uint8)
    whole = lesions_in_mask(mask, np.diag([0.25, 0.25, 0.25, 1.0]), "s").table  # too small to split
    assert lesion_kinds(whole).tolist() == ["confluent_whole"]
    instances = np.zeros(shape, np.uint8)
    instances[ball(shape, (20, 12, 20), 6)] = 3
    instances[ball(shape, (20, 21, 20), 4) & (instances == 0)] = 7  # touching lesion 3
    instances[ball(shape, (5, 5, 5), 2)] = 9
    table = lesions_in_mask(instances, np.eye(4), "s").table
    assert dict(zip(table["lesion"], lesion_kinds(table))) == {3: "confluent_part", 7: "confluent_part",
                                                               9: "non_confluent"}


def test_a_component_without_two_distance_maxima_is_not_split():
    blob = ball((20, 20, 20), (10, 10, 10), 6)
    assert not split_component(blob, ONE_MM).any()


def test_the_training_summary_counts_confluent_parts_and_scoring_warns_without_them():
    patches = toy_patches()
    without = run_to_end(train(replace(patches, part=np.zeros(len(patches), bool)), replace(TINY_TRAIN, epochs=1)))
    assert without.checkpoint.metadata["training"]["train_confluent_parts"] == 0
    part = np.zeros(len(patches), bool)
    part[::3] = True
    with_parts = run_to_end(train(replace(patches, part=part), replace(TINY_TRAIN, epochs=1))).checkpoint
    assert with_parts.metadata["training"]["train_confluent_parts"] > 0

    scored = pd.DataFrame({"lesion": [1, 4, 5], "split_from": [0, 2, 2]})
    with pytest.warns(InputWarning, match="trained without any such part"):
        warn_if_parts_unseen(scored, [without.checkpoint])
    with pytest.warns(InputWarning, match=without.checkpoint.id):
        warn_if_parts_unseen(scored, [with_parts, without.checkpoint])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_parts_unseen(scored, [with_parts])  # trained with parts: no warning
        warn_if_parts_unseen(scored.assign(split_from=0), [without.checkpoint])  # no part scored


def _necked_region(mask: np.ndarray) -> np.ndarray:
    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    return components == 2


def test_a_simulated_confluent_prl_is_split_and_its_part_recovers_the_prl():
    params = SubjectParams(fov_mm=(80.0, 96.0, 80.0), voxel_size=(1.0, 1.0, 1.0), n_lesions=12, prl_rate=0.6,
                           confluent_prl_rate=1.0, noise=0.03)
    sim = simulate_subject(2, params)
    lesions = find_lesions(sim.subject)
    table, labels, prl = lesions.table, lesions.labels, sim.subject.prl_mask > 0
    split = table[table["split_from"] > 0]
    mixed = [c for c, parts in split.groupby("split_from") if parts["prl"].any() and not parts["prl"].all()]
    assert mixed, "no confluent PRL was split into a PRL part and a plain part"
    for component in mixed:
        parts = split[split["split_from"] == component]
        region = np.isin(labels, parts["lesion"])
        truth = prl & region  # the drawn PRL's voxels in this component
        part = np.isin(labels, parts.loc[parts["prl"], "lesion"])
        dice = 2 * (part & truth).sum() / (part.sum() + truth.sum())
        assert dice >= 0.8, (component, dice)
    # the truth table names the part by the drawn lesion covering it, not "confluent"
    kinds = sim.truth.set_index("lesion").loc[split["lesion"], "kind"]
    assert set(kinds) <= {"full_rim", "partial_rim", "plain"}


def test_a_project_registered_before_the_split_keeps_its_components_and_ratings(tmp_path, write_subject,
                                                                                monkeypatch):
    """Ratings name the lesions a project registered: a project made when confluent components
    stayed whole opens with them whole, and its mask export paints the rated component."""
    import nibabel as nib

    import napari_deep_prl.data.images as images
    import napari_deep_prl.data.lesions as lesions
    from napari_deep_prl.base.errors import DeepPRLError
    from napari_deep_prl.data.cohort import write_manifest
    from napari_deep_prl.ratings.project import Project
    from napari_deep_prl.ratings.store import Rating

    paths = write_subject("sub-01", mask=confluent_mask(), prl_lesions=(1,))
    manifest = write_manifest([paths], tmp_path / "manifest.csv")
    whole = ndimage.label(confluent_mask(), structure=np.ones((3, 3, 3)))[0]
    with monkeypatch.context() as before:  # the labelling of the version that made the project
        for module in (images, lesions):
            before.setattr(module, "label_lesions", lambda mask, spacing: label_lesions(mask, spacing, split=False))
        with Project.init(tmp_path / "study", manifest) as project:
            assert sorted(project.lesions()["lesion"]) == [1, 2, 3]
            project.store.add_ratings([Rating("ann", "sub-01", 2, "prl")])
    with Project.open(tmp_path / "study") as project:
        subject = project.load_subject("sub-01")
        assert np.array_equal(subject.labels, whole)  # not the parts 4, 5, 6
        assert sorted(find_lesions(subject).table["lesion"]) == [1, 2, 3]
        run_to_end(project.export_masks(tmp_path / "masks"))
        painted = np.asarray(nib.load(next((tmp_path / "masks").glob("*_desc-rater*ann*_prlmask.nii.gz"))).dataobj)
        assert np.array_equal(painted > 0, whole == 2)
        edited = confluent_mask()
        edited[whole == 3] = 0  # a mask edited since registration is still refused
        nib.save(nib.Nifti1Image(edited, nib.load(paths.mask).affine), str(paths.mask))
        with pytest.raises(DeepPRLError, match="sub-01"):
            project.load_subject("sub-01")


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch", "ignore:lesions split from confluent")
def test_score_prints_the_metrics_of_each_lesion_kind(write_subject, tmp_path, capsys):
    paths = write_subject("sub-01", mask=confluent_mask(), prl_lesions=(0, 1))  # a lone PRL, the component's parts
    model = Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE)).save(tmp_path / "model.pt")
    assert main(["score", "--phase", str(paths.image("phase")), "--mp2rage", str(paths.image("mp2rage")),
                 "--mask", str(paths.mask), "--prl-mask", str(paths.prl_mask), "--model", str(model),
                 "-o", str(tmp_path / "scores.tsv"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "against the ground truth (1 PRLs of 2 labelled non-confluent lesions)" in err
    assert "against the ground truth (3 PRLs of 3 labelled confluent lesions, parts)" in err
    assert "against the ground truth (4 PRLs of 5 labelled lesions, every kind)" in err
    assert "kept whole" not in err  # no lesion of that kind: no line
