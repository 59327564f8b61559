"""Named presets: a batch-time model with the token budget and token convention it goes with.

A preset is a YAML mapping (the shipped ones live in ``presets/*.yaml`` next to this module)::

    name: codellama-34b-a100     # required: the name load_preset() looks up
    description: ...             # optional, one line
    source: ...                  # optional: where the numbers come from
    budget: 512                  # optional token budget b_max per batch (default 512)
    convention: paper            # optional: paper | engine (default paper), see
                                 #   servelab.core.convention
    timing:                      # required: a timing model, as timing_from_dict reads it
      model: staircase
      c_ms: 11.28
      a_ms: 35.47
      b0: 128
    kv:                          # optional: the KV cache, used with --kv-blocks preset
      blocks: 2690               #   required: KV blocks
      block_size: 16             #   optional, tokens per block (default 16)
      bytes_per_token: 196608    #   optional: KV bytes per token, for the swap cost
      source: ...                #   optional: how the figure was measured or derived

A ``timing: {model: table, csv: rows.csv}`` path is relative to the preset file's folder. A
preset's ``kv`` never turns memory on by itself: runs without ``--kv-blocks`` stay unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servelab.core.convention import Convention
from servelab.core.kv_settings import DEFAULT_BLOCK_SIZE
from servelab.errors import ConfigError
from servelab.files import load_yaml
from servelab.timing.models import TimingModel, timing_from_dict

PRESET_DIR = Path(__file__).parent / "presets"
_KEYS = ("name", "description", "source", "budget", "convention", "timing", "kv")
_KV_KEYS = ("blocks", "block_size", "bytes_per_token", "source")


@dataclass(frozen=True)
class PresetKV:
    """The KV cache the preset's engine has: ``blocks`` blocks of ``block_size`` tokens."""

    blocks: int
    block_size: int = DEFAULT_BLOCK_SIZE
    bytes_per_token: int | None = None  # KV bytes per token: what a swapped block costs
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "block_size": self.block_size,
                "bytes_per_token": self.bytes_per_token, "source": self.source}


@dataclass(frozen=True)
class Preset:
    """A timing model plus the budget and convention its numbers were measured or stated with."""

    name: str
    timing: TimingModel
    budget: int = 512
    convention: str = "paper"
    description: str = ""
    source: str = ""
    kv: PresetKV | None = None


def _text(d: Mapping[str, Any], key: str, default: str | None, section: str = "preset") -> str:
    """A string field; ``default`` None means required."""
    if key not in d:
        if default is None:
            raise ConfigError(f"{section}.{key}", "missing")
        return default
    value = d[key]
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise ConfigError(f"{section}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _count(d: Mapping[str, Any], key: str, field: str, default: int | None) -> int | None:
    """An integer >= 1 field; ``default`` when absent."""
    if key not in d:
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be an integer >= 1, got {value!r}")
    return value


def _kv_from_dict(d: Any) -> PresetKV:
    if not isinstance(d, Mapping):
        raise ConfigError("preset.kv", f"must be a mapping with {', '.join(_KV_KEYS)}")
    for key in d:
        if key not in _KV_KEYS:
            raise ConfigError(f"preset.kv.{key}", f"unknown key; expected: {', '.join(_KV_KEYS)}")
    if "blocks" not in d:
        raise ConfigError("preset.kv.blocks", "missing")
    return PresetKV(
        blocks=_count(d, "blocks", "preset.kv.blocks", None),
        block_size=_count(d, "block_size", "preset.kv.block_size", DEFAULT_BLOCK_SIZE),
        bytes_per_token=_count(d, "bytes_per_token", "preset.kv.bytes_per_token", None),
        source=_text(d, "source", "", "preset.kv"),
    )


def preset_from_dict(d: Mapping[str, Any], base_dir: Path | None) -> Preset:
    """Validate a preset mapping (see the module docstring)."""
    for key in d:
        if key not in _KEYS:
            raise ConfigError(f"preset.{key}", f"unknown key; expected: {', '.join(_KEYS)}")
    budget = _count(d, "budget", "preset.budget", 512)
    convention = Convention.named(d.get("convention", "paper"), "preset.convention").name
    if "timing" not in d:
        raise ConfigError("preset.timing", "missing")
    return Preset(
        name=_text(d, "name", None),
        timing=timing_from_dict(d["timing"], base_dir),
        budget=budget,
        convention=convention,
        description=_text(d, "description", ""),
        source=_text(d, "source", ""),
        kv=_kv_from_dict(d["kv"]) if "kv" in d else None,
    )


def load_preset_file(path: str | Path) -> Preset:
    """Read one preset YAML file."""
    path = Path(path)
    data = load_yaml(path, "preset-file")
    if not isinstance(data, dict):
        raise ConfigError("preset-file", f"{path}: must be a YAML mapping of preset keys")
    return preset_from_dict(data, base_dir=path.parent)


def list_presets() -> list[Preset]:
    """The shipped presets, sorted by name."""
    return sorted((load_preset_file(p) for p in PRESET_DIR.glob("*.yaml")), key=lambda p: p.name)


def load_preset(name: str) -> Preset:
    """A shipped preset by name."""
    presets = {p.name: p for p in list_presets()}
    if name not in presets:
        raise ConfigError("preset", f"unknown preset {name!r}; known: {', '.join(presets)}")
    return presets[name]
