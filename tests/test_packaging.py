"""The wheel must carry every data file the package reads (an editable install hides a miss)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

ROOT = Path(__file__).resolve().parents[1]
DATA_SUFFIXES = {".json", ".yaml", ".yml"}


def _owning_package(path: Path, package_dirs: dict[str, str]) -> tuple[str, Path]:
    """The innermost package (a folder with ``__init__.py``) holding ``path``, and its folder."""
    for name, folder in sorted(package_dirs.items(), key=lambda item: -len(item[1])):
        root = ROOT / folder
        if root in path.parents:
            package_folder = path.parent
            while not (package_folder / "__init__.py").exists():
                package_folder = package_folder.parent
            inner = package_folder.relative_to(root).parts
            return ".".join((name, *inner)), package_folder
    raise AssertionError(f"{path} lies in no package folder")


def _glob_match(parts: tuple[str, ...], pattern: str) -> bool:
    """Glob semantics as setuptools applies them: ``*`` stays within one folder level."""
    pattern_parts = pattern.split("/")
    if len(parts) != len(pattern_parts):
        return False
    return all(fnmatch.fnmatch(part, glob) for part, glob in zip(parts, pattern_parts, strict=True))


def test_every_data_file_of_the_package_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs, package_data = config["package-dir"], config["package-data"]
    missing = []
    for folder in package_dirs.values():
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in DATA_SUFFIXES or "__pycache__" in path.parts:
                continue
            package, package_folder = _owning_package(path, package_dirs)
            # setuptools matches each package's patterns (and "*"'s) relative to the package folder, so
            # a data folder without __init__.py is reached only by a pattern that names it.
            patterns = package_data.get("*", []) + package_data.get(package, [])
            if not any(_glob_match(path.relative_to(package_folder).parts, p) for p in patterns):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"data files left out of the wheel by pyproject's package-data: {missing}"
