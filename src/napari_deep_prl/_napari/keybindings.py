"""Keyboard shortcuts of the review widgets, bound to the viewer only while a widget is active.

A binding maps a key to a named method of the widget, so tests can check the mapping and call
the method separately. Keys go on the viewer *and* on the widget's own layers: napari asks the
active layer's keymap first, and a selected Labels layer would otherwise take ``P`` (paint) or
``1``-``5`` (tool modes). Keys a user had bound on the viewer before are restored on release.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from napari.utils.key_bindings import KeymapProvider

from .messages import KEY_HELP


@dataclass(frozen=True)
class KeyAction:
    """One shortcut: ``keys`` call ``target.<method>(*args)``; ``action`` names its help text."""

    keys: tuple[str, ...]
    action: str
    method: str
    args: tuple[Any, ...] = ()

    @property
    def help(self) -> str:
        return KEY_HELP[self.action]

    @property
    def key_text(self) -> str:
        """Keys as a user reads them (``Ctrl+Z``, ``←``)."""
        names = {"Left": "←", "Right": "→", "Control-Z": "Ctrl+Z"}
        return " / ".join(names.get(k, k) for k in self.keys)


_NAVIGATION = (
    KeyAction(("Right",), "next", "next_lesion"),
    KeyAction(("Left",), "previous", "previous_lesion"),
    KeyAction(("A",), "axis", "cycle_axis"),
    KeyAction(("O",), "outline", "toggle_outline"),
    KeyAction(("R",), "centre", "recentre"),
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


class KeyBinder:
    """Binds a widget's :class:`KeyAction` s on keymap providers and releases them all."""

    def __init__(self, target: object, actions: Iterable[KeyAction]) -> None:
        self.target = target
        self.actions = tuple(actions)
        self._bound: list[tuple[KeymapProvider, str, Callable | None]] = []

    def _callback(self, action: KeyAction) -> Callable[[Any], None]:
        method = getattr(self.target, action.method)

        def press(_provider: Any) -> None:
            method(*action.args)
        press.__name__ = f"deep_prl_{action.method}"
        press.__doc__ = action.help
        return press

    def bind(self, providers: Iterable[KeymapProvider]) -> None:
        """Bind every key on each provider not bound yet, remembering what was there."""
        done = {id(p) for p, _, _ in self._bound}
        for provider in providers:
            if id(provider) in done:
                continue
            for action in self.actions:
                for key in action.keys:
                    previous = provider.bind_key(key, self._callback(action), overwrite=True)
                    self._bound.append((provider, key, previous))

    def release(self) -> None:
        """Unbind every key this binder set, restoring earlier bindings (in reverse order)."""
        while self._bound:
            provider, key, previous = self._bound.pop()
            provider.bind_key(key, previous, overwrite=True)

    @property
    def bound(self) -> bool:
        return bool(self._bound)
