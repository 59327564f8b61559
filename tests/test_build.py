"""The stale-compiled-module check that keeps an edited source from being silently shadowed."""

from __future__ import annotations

import importlib.machinery
import os
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
