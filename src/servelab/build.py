"""Whether this install runs the simulator's hot path compiled (mypyc) or as plain Python.

``setup.py`` compiles a few modules in place beside their sources. Python then imports the
compiled file, so a source edited after the build would be silently ignored: ``stale_modules``
finds such sources, and the test suite refuses to run on them.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import servelab.sim.engine

PACKAGE_DIR = Path(__file__).resolve().parent


def build_kind() -> str:
    """``compiled`` when the engine was imported from an extension module, else ``pure``."""
    return "pure" if servelab.sim.engine.__file__.endswith(".py") else "compiled"


def stale_modules(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Sources in a checkout newer than the module compiled from them in place.

    Empty outside a checkout: an installed wheel's files carry its archive's times, which say
    nothing about staleness (and an installed source cannot be edited by accident)."""
    if not (package_dir.parent.parent / "setup.py").exists():
        return []
    stale = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for compiled in package_dir.rglob(f"*{suffix}"):
            source = compiled.with_name(compiled.name[: -len(suffix)] + ".py")
            if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                stale.append(source)
    return stale
