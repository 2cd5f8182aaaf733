"""Typed progress events shared by every long task.

Long work (simulation, patch extraction over a cohort, training, cross-validation, scoring) is
written as a generator that yields :class:`Progress`. The CLI drives the generator with tqdm and
the napari widgets wrap the *same* generator in a ``thread_worker``, so cancelling is simply
not asking for the next event. The core never sees a Qt object.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long task.

    ``step`` counts completed units out of ``total`` (``None`` when unknown); ``stage`` names the
    phase (e.g. ``"epoch"``, ``"subject"``); ``metrics`` carries numbers worth showing live
    (loss, validation F1, ...).
    """

    step: int
    total: int | None
    stage: str
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


ProgressGenerator = Generator[Progress, None, T]


def run_to_end(gen: Generator[Progress, None, T]) -> T:
    """Exhaust a progress generator silently and return its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def run_with_tqdm(gen: Generator[Progress, None, T], *, desc: str | None = None,
                  disable: bool = False) -> T:
    """Drive a progress generator with one tqdm bar per stage; return its result."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            bar = bars.get(event.stage)
            if bar is None:
                bar = bars[event.stage] = tqdm(
                    total=event.total, desc=desc or event.stage, disable=disable,
                    leave=event.stage == next(iter(bars), event.stage),
                )
            if event.step < bar.n:  # the stage starts over (the next epoch, model or fold)
                bar.reset(total=event.total)
            bar.n = event.step
            if event.total is not None and bar.total != event.total:
                bar.total = event.total
            postfix = {k: f"{v:.3g}" for k, v in event.metrics.items()}
            if event.message:
                postfix["at"] = event.message
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()

