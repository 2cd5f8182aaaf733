"""Small pieces both review widgets use: the key list, the project folder dialog, label names."""

from __future__ import annotations

from collections.abc import Iterable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QLabel, QLineEdit, QPushButton, QWidget

from .keybindings import KeyAction, key_table

#: How labels read in the widgets.
LABEL_NAMES = {"prl": "PRL", "not_prl": "not PRL", "unsure": "unsure"}


def open_project_dialog(parent: QWidget, line: QLineEdit) -> None:
    """Let the user pick a project folder into ``line``."""
    folder = QFileDialog.getExistingDirectory(parent, "Open a Deep-PRL project", line.text())
    if folder:
        line.setText(folder)


def key_list(actions: Iterable[KeyAction]) -> QLabel:
    """The widget's keys as a small two-column table."""
    rows = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{h}</td></tr>" for k, h in key_table(actions))
    label = QLabel(f"<table>{rows}</table>")
    label.setWordWrap(True)
    return label


def keep_keys_on_canvas(widget: QWidget) -> None:
    """Buttons take no keyboard focus: after a click the keys still reach the viewer."""
    for button in widget.findChildren(QPushButton):
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
