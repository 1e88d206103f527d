"""The wheel holds `jaxcook` alone: the recipes ship as `jaxcook.recipes`, no generic top-level name.

Built offline with the venv's setuptools (`pip wheel --no-deps --no-build-isolation --no-index`)
from a copy of the checkout's top-level files and folders, so that any package folder added at the
top (a `recipes/` again) would be found by pyproject's package discovery, while a stale `build/`
cannot leak into the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NOT_SOURCE = {".git", ".venv", "build", "dist", "runs", "tmp"}


def test_wheel_ships_only_the_jaxcook_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for path in ROOT.iterdir():
        if path.name in _NOT_SOURCE or path.name.endswith(".egg-info") or path.name.startswith("."):
            continue
        if path.is_dir():
            shutil.copytree(path, src / path.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / path.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("jaxcook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"jaxcook"}, f"the wheel ships top-level {sorted(top_level)}"
    assert {"jaxcook/recipes/__init__.py", "jaxcook/recipes/sft.py"} <= set(names)
