"""Error galleries of a cross-validation report: which lesions are shown, in which order."""

import numpy as np
import pandas as pd
import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import Cohort, read_manifest
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.evaluation import error_gallery
from napari_deep_prl.evaluation.figures import QSM_WINDOW_PPM
from napari_deep_prl.simulate import ClinicalSite, simulate_cohort


def _predictions(rows):
    return pd.DataFrame(rows, columns=["subject", "lesion", "fold", "prl_truth", "prl_probability",
                                       "prl_prediction"])


def test_worst_errors_are_the_most_confident_ones_first():
    predictions = _predictions([
        ("a", 1, 1, 1, 0.40, 0),   # missed
        ("a", 2, 1, 1, 0.05, 0),   # missed, worst
        ("a", 3, 1, 1, 0.90, 1),   # found
        ("b", 1, 2, 0, 0.70, 1),   # false positive
        ("b", 2, 2, 0, 0.95, 1),   # false positive, worst
        ("b", 3, 2, 0, 0.10, 0),   # correctly rejected
        ("b", 4, 2, 0, 0.60, 1),   # false positive, third
    ])
    worst = error_gallery.worst_errors(predictions, n=2)
    assert worst["missed.png"]["lesion"].tolist() == [2, 1]
    assert worst["false_positives.png"][["subject", "lesion"]].values.tolist() == [["b", 2], ["b", 1]]


def _report(tmp_path, rows, method="deep_prl"):
    folder = tmp_path / "report" / method
    folder.mkdir(parents=True)
    _predictions(rows).to_csv(folder / "predictions.tsv", sep="\t", index=False)
    return tmp_path / "report"


def test_each_error_is_drawn_from_its_own_lesion(tmp_path, write_subject, monkeypatch):
    paths = [write_subject("sub-01", prl_lesions=(0,), seed=1),
             write_subject("sub-02", prl_lesions=(), seed=2)]
    report = _report(tmp_path, [
        ("sub-01", 1, 1, 1, 0.10, 0),
        ("sub-01", 2, 1, 0, 0.20, 0),
        ("sub-02", 3, 2, 0, 0.80, 1),
        ("sub-02", 1, 2, 0, 0.90, 1),
    ])
    drawn = _capture(monkeypatch)
    written = run_to_end(error_gallery.draw_error_galleries(report, Cohort(paths)))
    assert sorted(p.name for p in written) == ["false_positives.png", "missed.png"]
    patches, titles, options = drawn["false_positives.png"]
    assert [t.split("\n")[0] for t in titles] == ["sub-02 #1", "sub-02 #3"]
    assert "p = 0.90" in titles[0]
    assert tuple(options["channels"]) == ("phase", "mp2rage")
    centre = patches.shape[-1] // 2
    # Every patch is centred on a lesion (the mask channel is on at its centre).
    for patches, _, options in drawn.values():
        assert (patches[:, options["layout"].index("mask"), centre, centre, centre] > 0.5).all()


def _capture(monkeypatch) -> dict:
    """What each gallery would draw, by file name: patches, titles and the drawing options."""
    drawn = {}

    def capture(patches, titles, path, **kwargs):
        drawn[path.name] = (patches, titles, kwargs)
        return path

    monkeypatch.setattr(error_gallery, "patch_gallery", capture)
    return drawn


def test_a_clinical_cohort_shows_its_qsm_in_ppm_and_each_structural_contrast(tmp_path, monkeypatch):
    """A site's QSM, T1w and FLAIR on their own grids: one row each, named by contrast; the QSM as
    it reads (paramagnetic bright), its grey levels ±QSM_WINDOW_PPM ppm around 0."""
    manifest = run_to_end(simulate_cohort(tmp_path / "site", 2, 3, prl_fraction=0.5, fov_mm=(80.0, 96.0, 80.0),
                                          site=ClinicalSite(susceptibility="qsm")))
    cohort = read_manifest(manifest)
    subject = cohort.load("sub-002")
    lesions = find_lesions(subject)
    ids = lesions.ids[:3]
    report = _report(tmp_path, [("sub-001", int(find_lesions(cohort.load("sub-001")).ids[0]), 1, 1, 0.1, 0),
                                *(("sub-002", int(i), 2, 0, 0.9, 1) for i in ids)])
    written = run_to_end(error_gallery.draw_error_galleries(report, cohort))  # the real pictures
    assert len(written) == 2 and all(p.stat().st_size > 1000 for p in written)
    drawn = _capture(monkeypatch)
    run_to_end(error_gallery.draw_error_galleries(report, cohort))
    patches, titles, options = drawn["false_positives.png"]
    assert tuple(options["channels"]) == ("qsm", "t1w", "flair")
    assert tuple(options["layout"]) == ("qsm", "t1w", "flair", "mask")
    centre = patches.shape[-1] // 2
    voxels = tuple(np.rint(lesions.table.set_index("lesion").loc[ids, ["x", "y", "z"]].to_numpy()).astype(int).T)
    ppm = subject.images["qsm"][voxels]
    assert patches[:, 0, centre, centre, centre] == pytest.approx(np.clip(0.5 + ppm / (2 * QSM_WINDOW_PPM), 0, 1),
                                                                  abs=1e-5)
    assert 0 <= np.nanmin(patches) and np.nanmax(patches) <= 1


def test_a_contrast_a_subject_lacks_is_left_blank(tmp_path, write_subject, monkeypatch):
    paths = [write_subject("sub-01", prl_lesions=(0,), seed=1, extra=("flair",)),
             write_subject("sub-02", prl_lesions=(), seed=2)]
    report = _report(tmp_path, [("sub-01", 1, 1, 1, 0.10, 0), ("sub-02", 1, 2, 1, 0.20, 0)])
    drawn = _capture(monkeypatch)
    run_to_end(error_gallery.draw_error_galleries(report, Cohort(paths)))
    patches, titles, options = drawn["missed.png"]
    assert tuple(options["layout"]) == ("phase", "mp2rage", "flair", "mask")
    assert [t.split("\n")[0] for t in titles] == ["sub-01 #1", "sub-02 #1"]
    assert not np.isnan(patches[0]).any()
    assert np.isnan(patches[1, 2]).all() and not np.isnan(patches[1, [0, 1, 3]]).any()


def test_a_stale_gallery_goes_when_the_errors_are_gone(tmp_path, write_subject):
    paths = [write_subject("sub-01", prl_lesions=(0,), seed=1)]
    report = _report(tmp_path, [("sub-01", 1, 1, 1, 0.10, 0), ("sub-01", 2, 1, 0, 0.1, 0)])
    stale = report / "deep_prl" / "false_positives.png"
    stale.write_bytes(b"old")
    written = run_to_end(error_gallery.draw_error_galleries(report, Cohort(paths)))
    assert [p.name for p in written] == ["missed.png"]
    assert (report / "deep_prl" / "missed.png").stat().st_size > 1000
    assert not stale.exists()


@pytest.mark.parametrize("row, message", [
    (("sub-09", 1, 1, 1, 0.1, 0), "sub-09 of"),
    (("sub-01", 42, 1, 1, 0.1, 0), "lesion 42"),
])
def test_a_report_from_another_cohort_is_refused_by_name(tmp_path, write_subject, row, message):
    paths = [write_subject("sub-01", seed=1)]
    report = _report(tmp_path, [row])
    with pytest.raises(InputError, match=message):
        run_to_end(error_gallery.draw_error_galleries(report, Cohort(paths)))


def test_an_unmerged_report_is_refused(tmp_path, write_subject):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="merge the report first"):
        run_to_end(error_gallery.draw_error_galleries(tmp_path / "empty",
                                                      Cohort([write_subject(seed=1)])))
