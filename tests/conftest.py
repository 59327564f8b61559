"""Make sure the suite tests the build it was asked to test, and a current one.

The Makefile sets ``SERVELAB_BUILD`` to ``compiled`` (``make test``) or ``pure``
(``make test-pure``), so a failed compilation cannot pass unnoticed as a second pure run.
"""

from __future__ import annotations

import os

import pytest

from servelab.build import build_kind, stale_modules


def pytest_report_header() -> str:
    return f"servelab build: {build_kind()}"


def pytest_sessionstart(session: pytest.Session) -> None:
    expected = os.environ.get("SERVELAB_BUILD")
    if expected and expected != build_kind():
        pytest.exit(f"SERVELAB_BUILD={expected}, but this install is {build_kind()}", 2)
    stale = stale_modules()
    if stale:
        names = ", ".join(str(path) for path in stale)
        pytest.exit(f"sources changed since they were compiled: {names}; run `make build`", 2)
