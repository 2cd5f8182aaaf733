"""Core modules run headless: importing them must not import Qt, napari or magicgui."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_deep_prl

CORE_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(napari_deep_prl.__path__, "napari_deep_prl.")
    if "._napari" not in m.name and not m.name.endswith(("._napari", ".__main__"))
)
GUI_PACKAGES = ("qtpy", "napari", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def test_core_modules_found():
    expected = {"napari_deep_prl.data.images", "napari_deep_prl.data.lesions", "napari_deep_prl.data.patches"}
    assert expected <= set(CORE_MODULES)


def test_core_imports_no_gui():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"leaked = [p for p in {GUI_PACKAGES!r} if p in sys.modules]\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core modules imported GUI packages: {result.stdout.strip()}"
