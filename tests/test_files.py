"""Reading the user's files: bounded, regular files only, text only, no duplicate YAML keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servelab.errors import ConfigError
from servelab.files import load_yaml, parse_yaml, read_text


def reason(path: Path, limit: int = 1 << 20) -> str:
    with pytest.raises(ConfigError) as info:
        read_text(path, "file", limit)
    assert info.value.field == "file"
    return info.value.reason


def test_reads_utf8_text_and_drops_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffx,y\n1,é\n".encode())
    assert read_text(path, "file", 100) == "x,y\n1,é\n"


def test_refuses_what_is_not_a_small_regular_text_file(tmp_path: Path) -> None:
    assert "is a directory" in reason(tmp_path)
    assert "cannot read" in reason(tmp_path / "missing.yaml")
    big = tmp_path / "big.csv"
    big.write_text("x" * 11)
    assert "is larger than" in reason(big, limit=10)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "is not a text file" in reason(binary)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"rate: 1\x00\n")
    assert "NUL" in reason(nul)


def test_devices_and_pipes_are_refused_without_reading() -> None:
    """/dev/urandom never ends, and opening a FIFO blocks: both used to hang."""
    if not Path("/dev/urandom").exists():
        pytest.skip("no /dev/urandom here")
    assert "not a regular file" in reason(Path("/dev/urandom"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in reason(fifo)


def test_yaml_refuses_duplicate_keys_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("rate: 5\nengine:\n  budget: 8\n  budget: 16\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path, "file")
    assert info.value.reason == f"{path} line 4: duplicate key 'budget'"


def test_yaml_merge_keys_may_be_overridden() -> None:
    text = "base: &b {rate: 1, seed: 2}\nrun:\n  <<: *b\n  rate: 3\n"
    assert parse_yaml(text, "file", "x")["run"] == {"rate": 3, "seed": 2}


def test_yaml_syntax_errors_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("rate: [1, 2\nseed: 3\n", "file", "exp.yaml")
    assert info.value.reason.startswith("exp.yaml line ")
    assert "\n" not in info.value.reason
