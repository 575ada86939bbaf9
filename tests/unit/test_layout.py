"""The house's shape: one namespace, every package listed, one exception tree, curated public names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sluice.converters
import sluice.monitoring
import sluice.server
from sluice.converters.artifact import errors

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"server": "sluice.server", "converters": "sluice.converters", "monitoring": "sluice.monitoring"}
PACKAGES = (sluice.converters, sluice.monitoring, sluice.server)


def test_every_folder_with_an_init_is_an_installed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {v: k for k, v in FOLDERS.items()}
    found = set()
    for folder, dotted in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                relative = init.parent.relative_to(ROOT / folder).parts
                found.add(".".join((dotted, *relative)))
    assert set(config["packages"]) == found


def test_generic_top_level_names_are_not_importable(tmp_path: Path) -> None:
    # Run from an empty directory: the checkout itself is not on the path, only what pip installed.
    code = (
        "import importlib.util, sluice.server\n"
        "print([n for n in ('server', 'converters', 'monitoring') if importlib.util.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_no_folder_imports_one_above_it() -> None:
    """converters and monitoring never import server; the artifact leaf imports nothing of sluice's."""
    rules = {
        "converters/artifact": ("sluice.server", "sluice.monitoring", "sluice.converters.", "sklearn"),
        "converters": ("sluice.server", "sluice.monitoring"),
        "monitoring": ("sluice.server",),
    }
    for folder, banned in rules.items():
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "converters" and "artifact" in path.parts:
                continue
            for line in path.read_text().splitlines():
                match = re.match(r"\s*(?:from|import) ([\w.]+)", line)
                if match is None:
                    continue
                name = match.group(1)
                allowed = folder == "converters/artifact" and name.startswith("sluice.converters.artifact")
                assert allowed or not name.startswith(banned), f"{path.relative_to(ROOT)}: {line.strip()}"


def test_no_module_in_the_packages_is_far_over_400_lines() -> None:
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= 420, f"{path.relative_to(ROOT)} has {lines} lines: split it by concept"


def _documented_tree() -> list[tuple[int, str, int, str]]:
    assert errors.__doc__ is not None
    rows = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^\s{4}([│ ]*)(?:[├└]── )?(\w+Error)\s+(\d{3}) (\w+)", line)
        if match:
            depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
            rows.append((depth, match.group(2), int(match.group(3)), match.group(4)))
    return rows


def test_the_documented_exception_tree_is_the_real_one() -> None:
    documented = _documented_tree()
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.SluiceError)
    }
    assert {name for _, name, _, _ in documented} == set(classes)
    parents: list[str] = []
    for depth, name, status, code in documented:
        parents[depth:] = [name]
        cls = classes[name]
        assert (cls.status, cls.code) == (status, code), name
        if depth:
            assert cls.__bases__ == (classes[parents[depth - 1]],), name


def test_every_exception_of_sluice_is_in_the_tree() -> None:
    """No exception class is defined outside the tree's module (httpx style: one place for all)."""
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == info.name:
                    assert info.name == errors.__name__, f"{info.name}.{name} is outside the tree"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_public_names_are_curated(package: object) -> None:
    """Each package's ``__all__`` names what it exports, and each name exists (httpx's check)."""
    exported = getattr(package, "__all__", None)
    assert exported is not None and exported == sorted(exported)
    for name in exported:
        assert hasattr(package, name), name
