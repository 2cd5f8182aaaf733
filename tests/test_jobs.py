"""Background jobs: an expected error is one message, a bug keeps its traceback."""

from __future__ import annotations

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_deep_prl._napari.jobs import Job
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress

pytestmark = pytest.mark.gui


def failing(error: Exception):
    def make(stop):
        yield Progress(1, 2, "subject", "sub-01")
        raise error

    return make


def test_an_expected_error_in_a_worker_is_one_message_without_traceback(qtbot, capfd):
    results, errors, finished, errored = [], [], [], []
    job = Job(failing(InputError("sub-01: its mask changed; re-create the project")), description="Scoring",
              on_result=results.append, on_error=errors.append, on_finished=lambda: finished.append(True))
    job.worker.errored.connect(errored.append)
    before = len(notification_manager.records)
    with qtbot.waitSignal(job.worker.finished, timeout=10_000):
        job.start()
    shown = notification_manager.records[before:]
    assert [(n.severity, n.message) for n in shown] == [
        (NotificationSeverity.ERROR, "Scoring failed: sub-01: its mask changed; re-create the project")]
    assert errored == [] and results == [] and finished == [True]
    assert [str(e) for e in errors] == ["sub-01: its mask changed; re-create the project"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_bug_in_a_worker_is_reported_once_with_its_traceback(qtbot):
    errors = []
    job = Job(failing(ZeroDivisionError("a bug")), description="Scoring", on_error=errors.append)
    before = len(notification_manager.records)
    with qtbot.waitSignal(job.worker.finished, timeout=10_000):
        job.start()
    shown = notification_manager.records[before:]
    assert len(shown) == 1 and shown[0].severity == NotificationSeverity.ERROR
    assert shown[0].exception.__traceback__ is not None  # napari shows it with the notification
    assert [type(e) for e in errors] == [ZeroDivisionError]
