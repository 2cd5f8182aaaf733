"""The wheel built from this tree: one valid napari manifest, the licence, one version, and
requirements that are exactly the third-party packages the code imports."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import napari_deep_prl

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_deep_prl.__file__).parent

pytestmark = pytest.mark.slow  # builds a wheel (a few seconds)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tree (so no build files land in the checkout)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                            "print(build_meta.build_wheel(sys.argv[1]))", str(out)],
                           cwd=tree, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    return out / built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as an installation (a folder to put first on ``sys.path``)."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def metadata(wheel: Path) -> tuple[dict[str, list[str]], str]:
    """The wheel's METADATA fields (each a list of values) and its entry_points.txt."""
    with zipfile.ZipFile(wheel) as archive:
        info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return fields, entry_points


def test_the_wheel_ships_one_manifest_that_npe2_validates(wheel, installed):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert [n for n in names if n.endswith("napari.yaml")] == ["napari_deep_prl/napari.yaml"]
    shipped = installed / "napari_deep_prl" / "napari.yaml"
    assert shipped.read_bytes() == (PACKAGE / "napari.yaml").read_bytes()
    validated = subprocess.run([sys.executable, "-m", "npe2", "validate", str(shipped)],
                               capture_output=True, text=True)
    assert validated.returncode == 0 and "valid" in validated.stdout.lower(), validated.stdout + validated.stderr
    # napari finds it through the wheel's entry point, with the wheel's version.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import npe2, napari_deep_prl; "
            "m = npe2.PluginManifest.from_distribution('napari-deep-prl'); "
            "print(m.name, m.package_version, napari_deep_prl.__file__)")
    found = subprocess.run([sys.executable, "-c", code, str(installed)], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-3000:]
    name, version, module = found.stdout.split()
    assert (name, version) == ("napari-deep-prl", napari_deep_prl.__version__)
    assert Path(module).is_relative_to(installed)


def test_the_wheel_carries_the_licence_one_version_and_python_311(wheel):
    fields, entry_points = metadata(wheel)
    assert fields["Version"] == [napari_deep_prl.__version__]
    assert fields["Requires-Python"] == [">=3.11"]
    assert fields["License-Expression"] == ["BSD-3-Clause"] and fields["License-File"] == ["LICENSE"]
    with zipfile.ZipFile(wheel) as archive:
        licence = next(n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
        assert "BSD 3-Clause License" in archive.read(licence).decode()
    assert "napari-deep-prl = napari_deep_prl:napari.yaml" in entry_points
    assert "deep-prl = napari_deep_prl.cli:main" in entry_points


def imported_distributions() -> set[str]:
    """The distributions providing the third-party modules the package imports anywhere
    (module level, inside functions, for type checking)."""
    providers = packages_distributions()
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"napari_deep_prl"}
    unknown = {m for m in third_party if m not in providers}
    assert not unknown, f"modules no installed distribution provides: {unknown}"
    return {_normalised(providers[m][0]) for m in third_party}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: Extras that add a capability (the package imports them only when it is used).
OPTIONAL_EXTRAS = ("postgresql", "onnx")


def test_the_requirements_are_what_the_package_imports(wheel):
    fields, _ = metadata(wheel)

    def names(extra: str | None) -> set[str]:
        return {_normalised(re.match(r"[A-Za-z0-9._-]+", spec).group()) for spec in fields["Requires-Dist"]
                if (f'extra == "{extra}"' in spec if extra else "extra ==" not in spec)}

    optional = set().union(*(names(extra) for extra in OPTIONAL_EXTRAS))
    assert optional == {"psycopg", "onnx", "onnxscript", "onnxruntime"}
    assert names(None) | optional == imported_distributions()
