"""Small pieces both review widgets use: the key list, the project folder dialog, label names,
a scrolling column."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_deep_prl._napari.keybindings import KeyAction, key_table

if TYPE_CHECKING:
    from napari_deep_prl.ratings.project import Project

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


def scrolling_column(parts: Iterable[QWidget]) -> QScrollArea:
    """``parts`` top to bottom in a scroll area.

    Napari does not scroll dock widgets: a widget taller than the screen would make the whole
    window taller than a laptop's 1080 pixels, with its bottom out of reach.
    """
    content = QWidget()
    column = QVBoxLayout(content)
    for part in parts:
        column.addWidget(part)
    column.addStretch()
    scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    scroll.setWidget(content)
    scroll.setMinimumWidth(content.minimumSizeHint().width()
                           + scroll.verticalScrollBar().sizeHint().width())
    return scroll


def buttons_without_focus(widget: QWidget) -> None:
    """Buttons take no keyboard focus, so Space or Enter never presses one by accident."""
    for button in widget.findChildren(QPushButton):
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)


def fill_label_sources(combo: QComboBox, project: Project | None) -> None:
    """List a project's label sources in ``combo``: consensus, each rater and each reference."""
    combo.clear()
    if project is not None:
        combo.addItems(project.label_sources())
