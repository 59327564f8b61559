"""Reading the user's input files with bounds, so that a wrong path fails at once.

A config read must end, and end in one line of error when the file is wrong: a device such as
``/dev/urandom`` never reaches its end, a FIFO blocks until someone writes to it, and a binary
file ends in a decoding traceback. So only regular files are read, never more than a size that
suits what the file is for, and only UTF-8 text passes. YAML files are also refused when a
mapping names a key twice: YAML lets the last one win silently, which hides a typo or a
setting the user thinks is in force.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from servelab.errors import ConfigError

#: A preset or an experiment file is a few lines; a megabyte is already far more than one.
YAML_LIMIT = 1 << 20
#: A CSV (trace, length column, batch-time table) of about three million rows: reading it takes
#: a few seconds and about a gigabyte of memory, so a larger one should be cut first.
CSV_LIMIT = 64 << 20


def read_text(path: Path, field: str, limit: int) -> str:
    """The whole text of a regular UTF-8 file of at most ``limit`` bytes (a BOM is dropped)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(field, f"{path} is a directory, not a file")
    if not stat.S_ISREG(mode):  # checked before opening: opening a FIFO blocks
        raise ConfigError(field, f"{path} is not a regular file (a device, pipe or socket)")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(field, f"{path} is larger than {limit / 2**20:g} MiB, the limit for "
                                 "this kind of file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path} is not a text file (not UTF-8 at byte {exc.start})"
                          ) from None
    if "\x00" in text:
        raise ConfigError(field, f"{path} is not a text file (it holds NUL bytes)")
    return text


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, field: str, where: str) -> Any:
    """YAML text to Python data; errors are one line naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(field, f"{where}{line}: {problem}") from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(field, f"{where}: not valid YAML: {reason}") from None


def load_yaml(path: Path, field: str) -> Any:
    """Read and parse a YAML file (bounded, as ``read_text``)."""
    return parse_yaml(read_text(path, field, YAML_LIMIT), field, str(path))
