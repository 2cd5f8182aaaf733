"""The npe2 manifest is valid, installed, and every command it names resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2
import pytest
import yaml

import napari_deep_prl

MANIFEST = Path(napari_deep_prl.__file__).with_name("napari.yaml")
COMMANDS = yaml.safe_load(MANIFEST.read_text())["contributions"]["commands"]


def test_npe2_validate_passes():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_installed_package_registers_the_same_manifest():
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-deep-prl")
    assert {c.id for c in manifest.contributions.commands} == {c["id"] for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=[c["id"] for c in COMMANDS])
def test_python_name_resolves(command):
    module_name, _, attribute = command["python_name"].partition(":")
    module = __import__(module_name, fromlist=[attribute])
    assert callable(getattr(module, attribute))
