"""The stale-compiled-module check that keeps an edited source from being silently shadowed."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

from servelab.build import stale_modules

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_build(root: Path, checkout: bool) -> tuple[Path, Path]:
    package = root / "src" / "servelab" / "sim"
    package.mkdir(parents=True)
    if checkout:
        (root / "setup.py").write_text("")
    source, compiled = package / "engine.py", package / f"engine{SUFFIX}"
    source.write_text("")
    compiled.write_bytes(b"")
    return source, compiled


def test_a_source_edited_after_compiling_is_stale(tmp_path: Path) -> None:
    source, compiled = fake_build(tmp_path, checkout=True)
    os.utime(source, (1000, 1000))
    os.utime(compiled, (2000, 2000))
    assert stale_modules(tmp_path / "src" / "servelab") == []
    os.utime(source, (3000, 3000))
    assert stale_modules(tmp_path / "src" / "servelab") == [source]


def test_installed_packages_are_never_stale(tmp_path: Path) -> None:
    source, compiled = fake_build(tmp_path, checkout=False)  # no setup.py: not a checkout
    os.utime(compiled, (1000, 1000))
    os.utime(source, (3000, 3000))
    assert stale_modules(tmp_path / "src" / "servelab") == []


def test_the_makefile_recompiles_for_what_setup_py_compiles_and_imports() -> None:
    """The Makefile's dependencies come from setup.py's list, not from a wildcard."""
    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run([sys.executable, "setup.py", "--compiled-sources"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.split()
    assert "src/servelab/sim/engine.py" in listed  # compiled
    assert "src/servelab/timing/models.py" in listed  # imported by the engine
    assert "src/servelab/schedulers/orca.py" not in listed  # neither
    assert "src/servelab/simulation.py" not in listed
    assert "$(shell $(PYTHON) setup.py --compiled-sources)" in (root / "Makefile").read_text()
