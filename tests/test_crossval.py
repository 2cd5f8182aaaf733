"""Nested cross-validation end to end with a cheap method: folds, merge, report layout."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_confluent import confluent_mask

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress, run_to_end
from napari_deep_prl.evaluation.crossval import (
    TRUTH_COLUMNS,
    CVConfig,
    lesion_truth,
    merge,
    missing_folds,
    plan,
    run_cv,
)
from napari_deep_prl.model.metrics import (
    THRESHOLD_RULES,
    best_f1_threshold,
    expected_f1_threshold,
)


def _truth(n_subjects=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        n_prl = int(rng.choice([0, 1, 2, 5, 9]))
        for lesion in range(1, n_prl + rng.integers(5, 12) + 1):
            rows.append((f"sub-{s:02d}", lesion, lesion <= n_prl))
    truth = pd.DataFrame(rows, columns=["subject", "lesion", "prl"]).assign(kind="non_confluent", tested=True)
    truth["score"] = np.clip(truth["prl"] * 0.4 + rng.random(len(truth)) * 0.6, 0, 1)
    return truth


class ScoreMethod:
    """Reads a precomputed score; 'training' only picks the validation threshold."""

    threshold_rule = "best_f1"

    def __init__(self, truth, name="score"):
        self.truth, self.name = truth, name

    def options(self):
        return {"kind": "score"}

    def fit(self, train, val, *, seed):
        assert not set(train) & set(val)
        rows = self.truth[self.truth["subject"].isin(val)]
        threshold, f1 = best_f1_threshold(rows["prl"], rows["score"])
        yield Progress(1, 1, "epoch")
        return SimpleNamespace(threshold=threshold, val_f1=f1, predict=self.predict)

    def predict(self, subjects):
        """The score as probability, and again as a column of the method's own (kept aside)."""
        rows = self.truth[self.truth["subject"].isin(subjects)]
        return rows.assign(prl_probability=rows["score"]).rename(columns={"score": "own_score"})


ROWS = ["TP", "FP", "FN", "TN", "F1", "Specificity", "Sensitivity", "PPV", "ROC AUC"]


def test_full_run_writes_the_paper_report(tmp_path):
    truth = _truth()
    methods = [ScoreMethod(truth), ScoreMethod(truth, "score_copy")]
    splits = run_to_end(run_cv(methods, truth, tmp_path, CVConfig(outer=5, inner=3, seed=1)))
    assert len(splits) == 20 and (tmp_path / "splits.tsv").exists()
    tables = merge(tmp_path)
    report = pd.read_csv(tmp_path / "score" / "report.csv", index_col="metric")
    assert report.index.tolist() == ROWS
    assert report.columns.tolist() == [f"Fold {i}" for i in range(1, 6)] + ["Average", "STD"]
    assert report.loc["TP":"TN", "Fold 1":"Fold 5"].to_numpy().sum() == len(truth)
    assert report.at["F1", "STD"] == pytest.approx(np.std(report.loc["F1", "Fold 1":"Fold 5"], ddof=1))
    assert tables["score"].equals(tables["score_copy"])
    md = (tmp_path / "score" / "report.md").read_text()
    assert "| Fold 1 | Fold 2 | Fold 3 | Fold 4 | Fold 5 | Average | STD |" in md
    predictions = pd.read_csv(tmp_path / "score" / "predictions.tsv", sep="\t")
    assert len(predictions) == len(truth)
    assert not predictions.duplicated(["subject", "lesion"]).any()
    assert predictions.groupby("subject")["fold"].nunique().max() == 1
    assert (tmp_path / "score" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "score" / "metrics.json").read_text())
    for fold in metrics["folds"]:
        best = max(fold["inner_folds"], key=lambda r: r["val_f1"])
        assert fold["selected_inner"] == best["inner"] and fold["threshold"] == best["threshold"]
    comparison = (tmp_path / "comparison.md").read_text()
    assert "score_copy" in comparison and " ± " in comparison


class SilentMethod(ScoreMethod):
    """Calls no lesion PRL: its PPV is undefined in every fold."""

    def fit(self, train, val, *, seed):
        fitted = yield from super().fit(train, val, seed=seed)
        return SimpleNamespace(threshold=2.0, val_f1=fitted.val_f1, predict=fitted.predict)


def test_an_undefined_metric_reads_n_a_in_every_report(tmp_path):
    truth = _truth()
    run_to_end(run_cv([SilentMethod(truth, "silent")], truth, tmp_path, CVConfig(outer=3, inner=2, seed=1)))
    tables = merge(tmp_path)  # the folds' JSON records hold null for it
    assert tables["silent"].loc["PPV"].isna().all() and (tables["silent"].loc["F1", "Fold 1":"Fold 3"] == 0).all()
    assert pd.read_csv(tmp_path / "silent" / "report.csv", index_col="metric").loc["PPV"].isna().all()
    assert "| PPV | n/a | n/a | n/a | n/a | n/a |" in (tmp_path / "silent" / "report.md").read_text()
    assert "| n/a ± n/a |" in (tmp_path / "comparison.md").read_text()


class NoisyScoreMethod(ScoreMethod):
    """Each fit sees the score plus its own noise: inner models that differ."""

    def fit(self, train, val, *, seed):
        noise = np.random.default_rng(seed).normal(0, 0.2, len(self.truth))
        fitted = yield from ScoreMethod(self.truth.assign(score=self.truth["score"] + noise),
                                        self.name).fit(train, val, seed=seed)
        return fitted


@pytest.mark.parametrize("rule", ["best_f1", "calibrated"])
def test_ensemble_averages_the_inner_models_with_a_pooled_threshold(tmp_path, rule):
    truth = _truth(seed=2)
    method = NoisyScoreMethod(truth)
    method.threshold_rule = rule
    config = CVConfig(outer=4, inner=3, seed=5, ensemble=True)
    run_to_end(run_cv([method], truth, tmp_path, config))
    merge(tmp_path)
    splits = pd.read_csv(tmp_path / "splits.tsv", sep="\t")
    selected = pd.read_csv(tmp_path / "score" / "predictions.tsv", sep="\t")
    ensemble = pd.read_csv(tmp_path / "score_ensemble" / "predictions.tsv", sep="\t")
    assert len(ensemble) == len(selected) == len(truth)
    key = ["subject", "lesion"]
    for fold in range(1, 5):
        record = json.loads((tmp_path / "folds" / "score_ensemble" / f"fold-{fold}.json").read_text())
        assert record["ensemble_of"] == 3
        train = splits.loc[splits["outer"] != fold, "subject"]
        inner_seeds = [5 + 100 * fold + inner for inner in (1, 2, 3)]
        scores = [truth["score"] + np.random.default_rng(s).normal(0, 0.2, len(truth))
                  for s in inner_seeds]
        mean = truth[key].assign(expected=np.mean(scores, axis=0))
        got = ensemble[ensemble["fold"] == fold].merge(mean, on=key)
        np.testing.assert_allclose(got["prl_probability"], got["expected"], atol=1e-5)
        # threshold: the method's rule on every outer-training lesion, each scored by the inner
        # model that held its patient out for validation
        inner = splits.loc[splits["outer"] != fold, ["subject", f"inner_{fold}"]]
        held_out = truth.reset_index().merge(inner, on="subject")
        oof = [scores[i - 1][row] for row, i in zip(held_out["index"], held_out[f"inner_{fold}"])]
        assert record["threshold"] == pytest.approx(THRESHOLD_RULES[rule](held_out["prl"], oof)[0])
        assert set(got["subject"]).isdisjoint(train)
    assert (tmp_path / "score_ensemble" / "report.md").exists()


def test_a_cohort_decision_decides_each_outer_fold_by_its_expected_f1(tmp_path):
    truth = _truth(seed=4)
    calibrated, raw = ScoreMethod(truth), ScoreMethod(truth, "raw_score")
    calibrated.threshold_rule = "calibrated"
    run_to_end(run_cv([calibrated, raw], truth, tmp_path, CVConfig(outer=4, inner=3, seed=2)))
    tables = merge(tmp_path, cohort_decision=True)
    assert set(tables) == {"score", "score_cohort", "raw_score"}  # raw scores expect no F1
    plain = pd.read_csv(tmp_path / "score" / "predictions.tsv", sep="\t")
    decided = pd.read_csv(tmp_path / "score_cohort" / "predictions.tsv", sep="\t")
    pd.testing.assert_series_equal(plain["prl_probability"], decided["prl_probability"])
    folds = json.loads((tmp_path / "score_cohort" / "metrics.json").read_text())["folds"]
    for record in folds:
        fold = decided[decided["fold"] == record["fold"]]
        cut, expected = expected_f1_threshold(fold["prl_probability"])  # no labels involved
        assert record["threshold"] == cut and record["expected_f1"] == expected
        assert fold["prl_prediction"].tolist() == (fold["prl_probability"] >= cut).astype(int).tolist()
        assert record["metrics"]["tp"] == int((fold["prl_prediction"] & fold["prl_truth"]).sum())
    assert not (plain["prl_prediction"] == decided["prl_prediction"]).all()  # other cuts, other calls
    assert set(merge(tmp_path)) == {"score", "raw_score"}  # only on request
    # reports written before the rule was recorded in the fold: read from the method's options
    for path in (tmp_path / "folds" / "raw_score").glob("fold-*.json"):
        record = json.loads(path.read_text())
        record["options"]["threshold_rule"] = record.pop("threshold_rule")
        path.write_text(json.dumps(record))
    assert "raw_score_cohort" not in merge(tmp_path, cohort_decision=True)


def test_every_inner_model_s_validation_and_test_predictions_are_kept(tmp_path):
    truth = _truth(seed=3)
    method = NoisyScoreMethod(truth)
    run_to_end(run_cv([method], truth, tmp_path, CVConfig(outer=4, inner=3, seed=7)))
    splits = pd.read_csv(tmp_path / "splits.tsv", sep="\t")
    scores = truth["score"].to_numpy()
    for fold in range(1, 5):
        got = pd.read_csv(tmp_path / "folds" / "score" / f"fold-{fold}-inner.tsv", sep="\t")
        assert got.columns.tolist() == ["subject", "lesion", "inner", "part", "prl_truth",
                                        "prl_probability", "own_score"]
        assert got["own_score"].tolist() == got["prl_probability"].tolist()
        training = splits.loc[splits["outer"] != fold, ["subject", f"inner_{fold}"]]
        expected = truth.merge(training, on="subject").rename(columns={f"inner_{fold}": "inner"})
        validation = got[got["part"] == "validation"]
        assert len(validation) == len(expected)
        assert not validation.duplicated(["subject", "lesion"]).any()
        both = validation.merge(expected, on=["subject", "lesion", "inner"], validate="one_to_one")
        assert len(both) == len(expected)  # each patient scored by the model it validated
        test = got[got["part"] == "test"]
        tested = truth[truth["subject"].isin(splits.loc[splits["outer"] == fold, "subject"])]
        assert len(test) == 3 * len(tested)  # every inner model scores every test lesion
        assert set(test["inner"]) == {1, 2, 3}
        assert set(test["subject"]) == set(tested["subject"])
        noise = {i: np.random.default_rng(7 + 100 * fold + i).normal(0, 0.2, len(truth))
                 for i in (1, 2, 3)}
        index = truth.reset_index().merge(got, on=["subject", "lesion"])
        want = [scores[r] + noise[i][r] for r, i in zip(index["index"], index["inner"])]
        np.testing.assert_allclose(index["prl_probability"], want, atol=1e-5)
        assert (index["prl_truth"] == index["prl"].astype(int)).all()


def test_fold_by_fold_then_merge_equals_full_run(tmp_path):
    truth = _truth(seed=4)
    config = CVConfig(outer=4, inner=3, seed=3)
    run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path / "all", config))
    for fold in (3, 1, 4):
        run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path / "jobs", config, folds=[fold]))
    assert missing_folds(tmp_path / "jobs", ["score"], 4) == {"score": [2]}
    run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path / "jobs", config, folds=[2]))
    merge(tmp_path / "all")
    merge(tmp_path / "jobs")
    for name in ("score/report.csv", "score/predictions.tsv", "comparison.csv", "splits.tsv"):
        assert (tmp_path / "all" / name).read_text() == (tmp_path / "jobs" / name).read_text()


def test_finished_folds_are_skipped_and_mismatches_refused(tmp_path):
    truth = _truth()
    config = CVConfig(outer=5, inner=3)
    run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path, config, folds=[1]))
    events = list(run_cv([ScoreMethod(truth)], truth, tmp_path, config, folds=[1]))
    assert events == []
    with pytest.raises(InputError, match="another split"):
        run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path, CVConfig(seed=9), folds=[1]))
    with pytest.raises(InputError, match="folds are numbered 1..5"):
        run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path / "x", config, folds=[6]))
    with pytest.raises(InputError, match="no fold results"):
        merge(tmp_path / "empty")


def test_lesion_truth_keeps_confluent_lesions_untested_unless_asked(write_subject):
    cohort = [write_subject("sub-01", mask=confluent_mask(), prl_lesions=(1,)),  # the confluent component
              write_subject("sub-02", prl_lesions=())]
    truth = run_to_end(lesion_truth(cohort))
    assert tuple(truth.columns) == TRUTH_COLUMNS
    first = truth[truth["subject"] == "sub-01"].set_index("lesion")
    assert first["kind"].to_dict() == {1: "non_confluent", 3: "non_confluent", 4: "confluent_part",
                                       5: "confluent_part", 6: "confluent_part"}
    assert first["prl"].tolist() == [False, False, True, True, True]
    assert truth.loc[truth["tested"], "kind"].eq("non_confluent").all()  # the paper's protocol
    assert run_to_end(lesion_truth(cohort, exclude_confluent=False))["tested"].all()
    assert truth.groupby("subject")["prl"].sum().to_dict() == {"sub-01": 3, "sub-02": 0}


def _with_confluent_parts(truth):
    """Every fourth lesion made a confluent part, left untested (the paper's protocol)."""
    part = truth["lesion"] % 4 == 0
    return truth.assign(kind=np.where(part, "confluent_part", "non_confluent"), tested=~part)


def test_the_report_counts_confluent_prls_left_untested_as_missed(tmp_path):
    truth = _with_confluent_parts(_truth(seed=5))
    config = CVConfig(outer=3, inner=2, seed=1)
    run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path / "before", config))
    run_to_end(run_cv([ScoreMethod(truth)], truth.assign(tested=True), tmp_path / "after", config))
    merge(tmp_path / "before")
    merge(tmp_path / "after")
    assert (tmp_path / "before" / "splits.tsv").read_text() == (tmp_path / "after" / "splits.tsv").read_text()
    before = pd.read_csv(tmp_path / "before" / "score" / "kinds.csv", index_col="kind")
    after = pd.read_csv(tmp_path / "after" / "score" / "kinds.csv", index_col="kind")
    parts = truth[truth["kind"] == "confluent_part"]
    assert before.at["confluent_part", "lesions"] == after.at["confluent_part", "lesions"] == len(parts)
    assert before.at["confluent_part", "prls"] == parts["prl"].sum() > 0
    # before: none scored, every confluent PRL missed; after: all scored
    assert before.loc["confluent_part", ["scored", "tp", "fp", "sensitivity"]].tolist() == [0, 0, 0, 0.0]
    assert np.isnan(before.at["confluent_part", "roc_auc"])
    assert after.at["confluent_part", "scored"] == len(parts) and after.at["confluent_part", "tp"] > 0
    assert before.at["all", "fn"] == before.at["non_confluent", "fn"] + parts["prl"].sum()
    # the non-confluent row pools the paper-layout folds
    report = pd.read_csv(tmp_path / "before" / "score" / "report.csv", index_col="metric")
    assert before.at["non_confluent", "tp"] == report.loc["TP", "Fold 1":"Fold 3"].sum()
    assert before.at["non_confluent", "scored"] == len(truth) - len(parts)
    table = (tmp_path / "before" / "kinds.md").read_text()
    assert "| score | confluent, parts |" in table and "PRLs found" in table
    # a run testing other lesions does not share the folder
    with pytest.raises(InputError, match="tested on other lesions"):
        run_to_end(run_cv([ScoreMethod(truth)], truth.assign(tested=True), tmp_path / "before", config))


@pytest.fixture
def threads_restored():
    """Torch's and the BLAS libraries' thread counts put back after a test that sets them."""
    import torch
    from threadpoolctl import threadpool_limits

    saved, torch_threads = threadpool_limits(limits=None), torch.get_num_threads()
    yield
    saved.restore_original_limits()
    torch.set_num_threads(torch_threads)


def test_threads_limit_torch_and_blas(threads_restored):
    import torch
    from threadpoolctl import threadpool_info

    from napari_deep_prl.cli._threads import set_threads

    set_threads(1)
    assert torch.get_num_threads() == 1
    assert threadpool_info() and all(info["num_threads"] == 1 for info in threadpool_info())
    with pytest.raises(InputError, match="--threads 0"):
        set_threads(0)


def test_cli_runs_the_radiomics_baseline_fold_by_fold(tmp_path, write_subject, threads_restored):
    from napari_deep_prl.cli import main
    from napari_deep_prl.data.cohort import write_manifest

    prl_sets = [(0,), (), (0, 1), (2,), (), (1,), (0, 2), ()]
    subjects = [write_subject(f"sub-{i:02d}", prl_lesions=prl, seed=i)
                for i, prl in enumerate(prl_sets)]
    manifest = write_manifest(subjects, tmp_path / "cohort.csv")
    out = tmp_path / "report"
    common = [str(manifest), "-o", str(out), "--outer", "2", "--inner", "2",
              "--methods", "radiomics", "--quiet"]
    assert main(["cv", *common, "--fold", "2"]) == 0
    assert not (out / "comparison.md").exists()
    # A task of an array never merges, even the one finishing the last fold: the merge is a step of its own.
    assert main(["cv", *common, "--fold", "1", "--threads", "1"]) == 0
    assert not (out / "comparison.md").exists()
    assert main(["cv", *common]) == 0
    assert (out / "radiomics" / "report.md").exists()
    kinds = pd.read_csv(out / "radiomics" / "kinds.csv", index_col="kind")
    assert kinds.at["non_confluent", "lesions"] == kinds.at["all", "lesions"] == 3 * len(prl_sets)
    assert "| radiomics | non-confluent |" in (out / "kinds.md").read_text()
    predictions = pd.read_csv(out / "radiomics" / "predictions.tsv", sep="\t")
    assert len(predictions) == 3 * len(prl_sets)
    assert predictions["prl_truth"].sum() == sum(map(len, prl_sets))
    # The completed run drew the error galleries: one picture per kind of error it made.
    missed = (predictions["prl_truth"] == 1) & (predictions["prl_prediction"] == 0)
    called = (predictions["prl_truth"] == 0) & (predictions["prl_prediction"] == 1)
    assert missed.any() or called.any()
    assert (out / "radiomics" / "missed.png").exists() == missed.any()
    assert (out / "radiomics" / "false_positives.png").exists() == called.any()
    for picture in (out / "radiomics").glob("*.png"):
        picture.unlink()
    assert main(["cv", "--merge", str(out), "--cohort-decision"]) == 0
    # its class-balanced regression's scores are not calibrated: no cohort decision for it
    assert not (out / "radiomics_cohort").exists() and (out / "comparison.md").exists()
    assert not list((out / "radiomics").glob("[mf]*.png"))  # no manifest, no galleries
    assert main(["cv", "--merge", str(out), str(manifest), "--errors", "1", "--quiet"]) == 0
    assert (out / "radiomics" / "missed.png").exists() == missed.any()
    assert main(["cv", str(manifest), "-o", str(out), "--methods", "nope"]) == 2


def test_cli_keeps_confluent_lesions_out_of_the_test_unless_asked(tmp_path, write_subject, threads_restored):
    from napari_deep_prl.cli import main
    from napari_deep_prl.data.cohort import write_manifest

    prl_sets = [(0,), (1,), (0, 2), (), (1, 2), (2,), (0, 1), ()]  # component 1 splits into 3 parts
    subjects = [write_subject(f"sub-{i:02d}", mask=confluent_mask(), prl_lesions=prl, seed=i)
                for i, prl in enumerate(prl_sets)]
    manifest = write_manifest(subjects, tmp_path / "cohort.csv")
    common = [str(manifest), "--outer", "2", "--inner", "2", "--methods", "radiomics", "--errors", "0",
              "--threads", "1", "--quiet"]
    assert main(["cv", *common, "-o", str(tmp_path / "paper")]) == 0
    assert main(["cv", *common, "-o", str(tmp_path / "kept"), "--keep-confluent"]) == 0
    paper = pd.read_csv(tmp_path / "paper" / "radiomics" / "kinds.csv", index_col="kind")
    kept = pd.read_csv(tmp_path / "kept" / "radiomics" / "kinds.csv", index_col="kind")
    assert paper.at["confluent_part", "lesions"] == kept.at["confluent_part", "scored"] == 3 * len(prl_sets)
    assert paper.at["confluent_part", "scored"] == 0 and paper.at["non_confluent", "scored"] == 2 * len(prl_sets)
    assert len(pd.read_csv(tmp_path / "paper" / "radiomics" / "predictions.tsv", sep="\t")) == 2 * len(prl_sets)
    assert (tmp_path / "paper" / "splits.tsv").read_text() == (tmp_path / "kept" / "splits.tsv").read_text()


def test_cnn_methods_record_settings_not_seed_or_device_and_rimnet_blanks_the_mask():
    from napari_deep_prl.data.patches import PatchConfig
    from napari_deep_prl.evaluation.methods import (
        RAW_VIEW,
        CNNMethod,
        MethodSettings,
        _cnn_method,
    )
    from napari_deep_prl.evaluation.report import json_ready
    from napari_deep_prl.model.dataset import PatchSet
    from napari_deep_prl.model.inference import predict
    from napari_deep_prl.model.metrics import model_output

    x = np.random.default_rng(0).random((4, 3, 8, 8, 8), dtype=np.float32)
    patches = PatchSet(x, np.array([1, 0, 0, 1], np.int8), np.array(["a", "a", "b", "b"]),
                       np.arange(1, 5), np.zeros(4, bool), PatchConfig(size=8))
    rimnet = _cnn_method("rimnet", patches, MethodSettings(epochs=2, device="cpu"))
    assert isinstance(rimnet, CNNMethod) and rimnet.blank_mask
    blank = rimnet.patches.x[:]
    assert not blank[:, 2].any() and blank[:, :2].tolist() == x[:, :2].tolist()
    assert patches.x[:][:, 2].any()  # the shared patch set is untouched
    options = json.loads(json.dumps(json_ready(rimnet.options())))
    assert options["train"]["epochs"] == 2 and options["train"]["model"]["fusion"] == "none"
    assert "seed" not in options["train"] and "device" not in options["train"]
    quick = {"precision": "float32", "samples_per_epoch": 8, "batch_size": 4, "tta": False}
    exact = _cnn_method("deep_prl", patches, MethodSettings(epochs=1, device="cpu", train_overrides=quick))
    assert exact.options()["train"]["precision"] == "float32"
    fitted = run_to_end(exact.fit(["a"], ["b"], seed=0))
    assert fitted.precision == "float32"  # the test folds are scored as the model was trained
    assert fitted.checkpoint.metadata["training"]["precision"] == "float32"
    # beside its output, the network's raw probability of each view, for calibration studies
    predicted = fitted.predict(["a", "b"])
    raw = predicted.filter(like=RAW_VIEW).to_numpy().T
    assert raw.shape == (1, 4)
    expected = predict([fitted.checkpoint], patches.x, device="cpu", precision="float32").probability
    np.testing.assert_allclose(predicted["prl_probability"], expected, atol=1e-6)
    np.testing.assert_allclose(predicted["prl_probability"], model_output(raw, fitted.checkpoint.calibration))


def _save_splits_together(out_dir, seed, barrier, results):
    """One task of :func:`test_tasks_starting_together_agree_on_one_split`: it writes its split
    only after every task has looked for one (each waits for the others before putting its
    file in place)."""
    import os

    from napari_deep_prl.evaluation import crossval

    fsync = os.fsync

    def wait_then_fsync(fd):
        barrier.wait(timeout=30)
        fsync(fd)

    os.fsync = wait_then_fsync
    try:
        crossval.save_splits(out_dir, crossval.plan(_truth(), CVConfig(outer=3, inner=2, seed=seed)))
        results.put((seed, "written"))
    except InputError as err:
        results.put((seed, str(err)))


def test_tasks_starting_together_agree_on_one_split(tmp_path):
    """Two tasks of an array computing different splits (another seed) both look before either
    writes: exactly one split file results, and the other task stops with a clear error."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    tasks = [context.Process(target=_save_splits_together, args=(tmp_path, seed, barrier, results))
             for seed in (1, 2)]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(60)
    outcomes = dict(results.get(timeout=5) for _ in tasks)
    written = [seed for seed, outcome in outcomes.items() if outcome == "written"]
    assert len(written) == 1, outcomes
    other = ({1, 2} - set(written)).pop()
    assert "another split" in outcomes[other] and "--seed" in outcomes[other]
    winner = plan(_truth(), CVConfig(outer=3, inner=2, seed=written[0])).to_csv(sep="\t", index=False)
    assert (tmp_path / "splits.tsv").read_text() == winner
    assert [p.name for p in tmp_path.iterdir()] == ["splits.tsv"]  # no temporary file left
