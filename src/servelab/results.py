"""Run results as plain tables, and writing them without ever leaving half a result behind.

A result directory is written into a temporary sibling and renamed into place, so a crash or a
bad input leaves either the complete directory or nothing. An existing non-empty directory is
never overwritten: losing earlier results is worse than asking for another name.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.sim.engine import BatchRecord


@dataclass
class RequestTable:
    """One row per request (times in seconds, NaN where it has not happened yet); with
    service-level classes, each request's class (an index into ``slo_names``)."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    slo_class: np.ndarray | None = None
    slo_names: tuple[str, ...] = ()

    COLUMNS = ("id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens",
               "ttft_ms", "e2e_ms")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    def columns(self) -> dict[str, np.ndarray]:
        """``COLUMNS``, and ``slo_class`` (the class's name) when the run has classes."""
        columns = {
            "id": np.arange(len(self)),
            "arrival_s": self.arrival_s,
            "first_token_s": self.first_token_s,
            "finish_s": self.finish_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "ttft_ms": self.ttft_s * 1e3,
            "e2e_ms": self.e2e_s * 1e3,
        }
        if self.slo_class is not None:
            columns["slo_class"] = np.array(self.slo_names)[self.slo_class]
        return columns

    def to_pandas(self) -> Any:
        """The table as a DataFrame; pandas is an optional extra, not a core dependency."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "to_pandas() needs pandas, which servelab's core install leaves out: "
                "pip install pandas (or servelab[pandas]); columns() gives the same table as "
                "numpy arrays without it", name="pandas") from None
        return pd.DataFrame(self.columns())

    def write_csv(self, path: Path) -> None:
        _write_columns(path, self.columns())


@dataclass
class BacklogSeries:
    """Unprocessed tokens and requests in the system, sampled over time."""

    time_s: np.ndarray
    tokens: np.ndarray
    requests: np.ndarray

    def columns(self) -> dict[str, np.ndarray]:
        return {"time_s": self.time_s, "unprocessed_tokens": self.tokens,
                "requests_in_system": self.requests}

    def write_csv(self, path: Path) -> None:
        _write_columns(path, self.columns())


@dataclass
class SimResult:
    """What ``servelab.simulate`` returns: the summary dict and the tables behind it."""

    summary: dict[str, Any]
    requests: RequestTable
    backlog: BacklogSeries
    batches: list[BatchRecord] | None = None

    def write_into(self, directory: Path) -> None:
        """Write ``summary.json``, ``requests.csv`` and ``backlog.csv`` into ``directory``."""
        (directory / "summary.json").write_text(to_json(self.summary) + "\n")
        self.requests.write_csv(directory / "requests.csv")
        self.backlog.write_csv(directory / "backlog.csv")


def _format(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def _write_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    names = list(columns)
    rows = zip(*(columns[name].tolist() for name in names), strict=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in rows:
            writer.writerow([_format(v) for v in row])


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing statistics become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def to_json(data: Any) -> str:
    return json.dumps(_clean(data), indent=2, allow_nan=False)


def check_writable_dir(directory: Path, field: str) -> None:
    """Fail unless files can be created in ``directory``, or in the folder that will hold it.

    The test is to create (and remove) an empty directory there: permission bits do not say
    whether a file system accepts new files (``/proc`` refuses them even to root).
    """
    existing = directory.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, f"{existing} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".servelab-probe.", dir=existing))
    except OSError as exc:
        raise ConfigError(field, f"cannot write in {existing}: {exc.strerror or exc}") from None


def check_out_dir(out_dir: Path) -> None:
    """Fail before any work if ``out_dir`` would overwrite earlier results or cannot be made."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError("out", f"{out_dir} exists and is not empty; choose another directory")
    check_writable_dir(out_dir.resolve().parent, "out")  # where write_atomically works


@contextmanager
def _as_config_error(field: str, path: Path) -> Iterator[None]:
    """File-system errors while writing ``path`` become one-line ConfigErrors on ``field``."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(field, f"cannot write {path}: {exc.strerror or exc}") from None


def _as_if_created(path: Path, mode: int) -> None:
    """Give a temporary file or folder the permissions a plain create would have had.

    ``tempfile`` makes them private (0600 / 0700), and the rename would keep that; results
    are meant to be shared like any file the user writes, so apply the umask instead.
    """
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def write_atomically(out_dir: Path, fill: Callable[[Path], None]) -> None:
    """Let ``fill`` write into a temporary directory, then move it to ``out_dir`` whole.

    A failure, here or in ``fill``, leaves nothing behind (parent folders made stay, empty).
    """
    check_out_dir(out_dir)
    parent = out_dir.resolve().parent
    with _as_config_error("out", out_dir):
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
        try:
            _as_if_created(tmp, 0o777)
            fill(tmp)
            if out_dir.exists():
                out_dir.rmdir()  # empty, checked above
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def write_file_atomically(path: Path, write: Callable[[Path], None], field: str) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it to ``path``.

    A reader never sees half a file, and a failure leaves an earlier file there untouched.
    """
    with _as_config_error(field, path):
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix,
                                        dir=path.resolve().parent)
        os.close(handle)
        try:
            _as_if_created(Path(name), 0o666)
            write(Path(name))
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
