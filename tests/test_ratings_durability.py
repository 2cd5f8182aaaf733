"""Crash and concurrency: no accepted rating is lost, no "database is locked" reaches a caller.

Children are forked (POSIX) so that each starts in milliseconds with the package imported; each
opens its own connection, as a separate rater program would. Both engines: a SQLite file and a
PostgreSQL database.
"""

from __future__ import annotations

import os
import signal
import time
import traceback

import numpy as np
import pytest
from ratings_support import make_store

from napari_deep_prl.ratings.store import RatingStore

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")]

LABELS = ("prl", "not_prl", "unsure")


def _fork(work, *args) -> tuple[int, int]:
    """Run ``work(write_line, *args)`` in a child; return its pid and the read end of its pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_fd)

            def write_line(text: str) -> None:
                os.write(write_fd, (text + "\n").encode())

            work(write_line, *args)
        except BaseException:  # noqa: BLE001 (any failure means the same here)
            os.write(write_fd, ("ERROR " + traceback.format_exc().replace("\n", " | ") + "\n")
                     .encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _read_all(fd: int, start: bytes = b"") -> str:
    chunks = [start]
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _read_lines(fd: int, count: int) -> bytes:
    """Block until ``count`` whole lines have arrived (however loaded the machine); return all
    bytes read so far."""
    data = b""
    while data.count(b"\n") < count:
        chunk = os.read(fd, 65536)
        assert chunk, f"the child exited early: {data!r}"
        data += chunk
    return data


def _rate_forever(write_line, path, rater):
    store = RatingStore.open(path)
    write_line("ready")
    i = 0
    while True:
        rating_id = store.add_rating(rater, f"sub-{i % 3:02d}", i % 4 + 1, LABELS[i % 3],
                                     comment=str(i))
        write_line(f"saved {rating_id} {i}")
        i += 1


def test_sigkill_never_loses_an_acknowledged_rating(store_address):
    path = store_address
    make_store(path).close()
    rng = np.random.default_rng(0)
    acknowledged: dict[int, tuple[str, str]] = {}
    total = 0
    for round_ in range(24):
        rater = f"r{round_}"
        pid, fd = _fork(_rate_forever, path, rater)
        # kill after a random number of acknowledged ratings and a random moment into the next
        seen = _read_lines(fd, 1 + int(rng.integers(1, 6)))
        assert seen.startswith(b"ready\n"), seen
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lines = _read_all(fd, seen).split("\n")[1:-1]  # the last piece may be a torn line
        assert not any(line.startswith("ERROR") for line in lines), lines
        for line in lines:
            _, rating_id, i = line.split()
            acknowledged[int(rating_id)] = (rater, i)
        total += len(lines)
    assert len(acknowledged) == total  # no rating id handed out twice
    with RatingStore.open(path) as store:
        assert store.integrity_check() == "ok"
        stored = store.history().set_index("id")
    for rating_id, (rater, i) in acknowledged.items():
        assert (stored.loc[rating_id, "rater"], stored.loc[rating_id, "comment"]) == (rater, i)


def _rate_n(write_line, path, rater, n):
    store = RatingStore.open(path)
    for i in range(n):
        store.add_rating(rater, f"sub-{i % 3:02d}", i % 4 + 1, LABELS[i % 3], comment=str(i))
    write_line(f"done {n}")


def test_four_writers_at_once_lose_nothing(store_address):
    path = store_address
    make_store(path).close()
    children = [_fork(_rate_n, path, f"rater{k}", 250) for k in range(4)]
    outputs = []
    for pid, fd in children:
        outputs.append(_read_all(fd))
        assert os.waitpid(pid, 0)[1] == 0, outputs[-1]
    assert outputs == ["done 250\n"] * 4
    with RatingStore.open(path) as store:
        history = store.history()
        assert store.integrity_check() == "ok"
    assert len(history) == 1000
    for k in range(4):
        mine = history[history["rater"] == f"rater{k}"]
        assert sorted(mine["comment"].astype(int)) == list(range(250))
