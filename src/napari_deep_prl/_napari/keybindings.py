"""Keyboard shortcuts of the review widgets: which key calls which widget method.

A binding maps a key to a named method of the widget, so tests can check the mapping and call
the method separately. :class:`~.key_router.KeyRouter` delivers the keys while a session is open.
Only the keys marked ``repeat`` act on auto-repeat (a held key): holding a label key never labels
lesions the rater has not seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from napari_deep_prl._napari.messages import KEY_HELP


@dataclass(frozen=True)
class KeyAction:
    """One shortcut: ``keys`` call ``target.<method>(*args)``; ``action`` names its help text."""

    keys: tuple[str, ...]
    action: str
    method: str
    args: tuple[Any, ...] = ()
    #: Acts on auto-repeated presses too (stepping through slices), not only on the first.
    repeat: bool = False

    @property
    def help(self) -> str:
        return KEY_HELP[self.action]

    @property
    def key_text(self) -> str:
        """Keys as a user reads them (``Ctrl+Z``, ``←``)."""
        names = {"Left": "←", "Right": "→", "Up": "↑", "Down": "↓", "Control-Z": "Ctrl+Z"}
        return " / ".join(names.get(k, k) for k in self.keys)


_NAVIGATION = (
    KeyAction(("Right",), "next", "next_lesion"),
    KeyAction(("Left",), "previous", "previous_lesion"),
    KeyAction(("Up", "."), "slice_up", "step_slice", (1,), repeat=True),
    KeyAction(("Down", ","), "slice_down", "step_slice", (-1,), repeat=True),
    KeyAction(("A",), "axis", "cycle_axis"),
    KeyAction(("O",), "outline", "toggle_outline"),
    KeyAction(("R",), "centre", "recentre"),
    KeyAction(("W",), "window", "reset_windows"),
)

REVIEW_KEYS = (
    KeyAction(("P",), "label:prl", "label", ("prl",)),
    KeyAction(("N",), "label:not_prl", "label", ("not_prl",)),
    KeyAction(("U",), "label:unsure", "label", ("unsure",)),
    *(KeyAction((str(n),), "confidence", "set_confidence", (n,)) for n in range(1, 6)),
    _NAVIGATION[0], _NAVIGATION[1],
    KeyAction(("L",), "later", "review_later"),
    KeyAction(("Z", "Control-Z"), "undo", "undo"),
    KeyAction(("J",), "jump", "focus_jump"),
    KeyAction(("C",), "comment", "focus_comment"),
    *_NAVIGATION[2:],
)

ADJUDICATION_KEYS = (
    KeyAction(("P",), "consensus:prl", "decide", ("prl",)),
    KeyAction(("N",), "consensus:not_prl", "decide", ("not_prl",)),
    KeyAction(("U",), "consensus:unsure", "decide", ("unsure",)),
    KeyAction(("Backspace",), "consensus:retract", "retract"),
    *_NAVIGATION,
)


def key_table(actions: Iterable[KeyAction]) -> list[tuple[str, str]]:
    """(keys, help) rows for display, the five confidence keys folded into one row."""
    rows: list[tuple[str, str]] = []
    for action in actions:
        if action.action == "confidence":
            if action.args == (1,):
                rows.append(("1 – 5", action.help))
            continue
        rows.append((action.key_text, action.help))
    return rows
