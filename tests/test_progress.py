import tqdm.auto

from napari_deep_prl.base.progress import Progress, run_to_end, run_with_tqdm


def _task():
    for epoch in (1, 2):
        for step in (1, 2, 3):
            yield Progress(step, 3, "batch", f"epoch {epoch}")
        yield Progress(epoch, 2, "epoch")
    return "done"


def test_both_drivers_return_the_generators_result():
    assert run_to_end(_task()) == "done"
    assert run_with_tqdm(_task(), disable=True) == "done"


def test_a_stage_that_starts_over_restarts_its_bar(monkeypatch):
    """The batch bar restarts each epoch, so its rate and time left are per epoch, not since the start."""
    resets = []

    class Recording(tqdm.auto.tqdm):
        def reset(self, total=None):
            resets.append((self.desc, self.n))
            super().reset(total)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    run_with_tqdm(_task())
    assert resets == [("batch", 3)]  # once, when epoch 2 began; the epoch bar never went back
