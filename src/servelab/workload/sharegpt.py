"""Real chat lengths: ShareGPT's (prompt, output) token pairs, filtered as benchmarks do.

servelab ships the table, not the text: ``data/sharegpt.csv`` holds the opening exchange of
11,128 ShareGPT conversations counted in SmolLM2 tokens, ``data/sharegpt.json`` says where it
came from, and ``scripts/derive_sharegpt_lengths.py`` makes both (docs/workloads.md).

``--prefill sharegpt --decode sharegpt`` draws whole rows, uniformly with replacement, so each
request keeps a real prompt's real answer length; the theory's means are the filtered table's,
exact for that sampling. ``sharegpt`` beside another distribution draws its own column of the
same filtered rows (the marginal). Both sides describe one table, so a filter setting may be
written on either side; one written on both must agree.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources

import numpy as np

from servelab.errors import ConfigError

NAME = "sharegpt"
TABLE = "data/sharegpt.csv"
PROVENANCE = "data/sharegpt.json"
COLUMNS = ("id", "prompt_tokens", "output_tokens")
SYNTAX = ("sharegpt or sharegpt:KEY=N,... with KEY one of min_prompt, max_prompt, min_output, "
          "max_output, max_total (a maximum may be none)")


@dataclass(frozen=True)
class PairFilter:
    """Which (prompt, output) pairs a run draws from; the defaults are vLLM's benchmark filter.

    vLLM's ShareGPT benchmark keeps a pair when both sides have at least 4 tokens, the prompt
    at most 1,024 and the two together at most 2,048, and sets no separate output maximum.
    None means no maximum.
    """

    min_prompt: int = 4
    max_prompt: int | None = 1024
    min_output: int = 4
    max_output: int | None = None
    max_total: int | None = 2048

    def keep(self, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
        """Which rows pass, as a boolean mask."""
        mask = (prompt >= self.min_prompt) & (output >= self.min_output)
        for bound, values in ((self.max_prompt, prompt), (self.max_output, output),
                              (self.max_total, prompt + output)):
            if bound is not None:
                mask &= values <= bound
        return mask

    @property
    def args(self) -> str:
        """The settings that differ from the defaults, as ``KEY=N,...`` (empty if none)."""
        default = PairFilter()
        return ",".join(f"{f.name}={_text(getattr(self, f.name))}" for f in fields(self)
                        if getattr(self, f.name) != getattr(default, f.name))


def _text(value: int | None) -> str:
    return "none" if value is None else str(value)


def parse_filter(args: str, field: str) -> tuple[PairFilter, dict[str, int | None]]:
    """The filter ``KEY=N,...`` describes (defaults for the rest), and the settings written."""
    written: dict[str, int | None] = {}
    keys = [f.name for f in fields(PairFilter)]
    for part in filter(None, (piece.strip() for piece in args.split(","))):
        key, sep, text = (piece.strip() for piece in part.partition("="))
        if not sep or key not in keys:
            raise ConfigError(field, f"expected {SYNTAX}, got {part!r}")
        if key in written:
            raise ConfigError(field, f"sharegpt {key} given twice")
        written[key] = _bound(key, text, field)
    return _checked(replace(PairFilter(), **written), field), written


def _bound(key: str, text: str, field: str) -> int | None:
    if text.lower() == "none" and key.startswith("max_"):
        return None
    try:
        value = int(text)
    except ValueError:
        allowed = "an integer or none" if key.startswith("max_") else "an integer"
        raise ConfigError(field, f"sharegpt {key} must be {allowed}, got {text!r}") from None
    if value < 1:
        raise ConfigError(field, f"sharegpt {key} must be >= 1, got {value}")
    return value


def _checked(pair_filter: PairFilter, field: str) -> PairFilter:
    for low, high in (("min_prompt", "max_prompt"), ("min_output", "max_output")):
        lo, hi = getattr(pair_filter, low), getattr(pair_filter, high)
        if hi is not None and hi < lo:
            raise ConfigError(field, f"sharegpt {high}={hi} is below {low}={lo}")
    rows = pairs(pair_filter)
    if not len(rows.prompt):
        raise ConfigError(field, f"sharegpt:{pair_filter.args} keeps none of the "
                                 f"{len(load_table()[0]):,} pairs")
    return pair_filter


def merge_filters(prefill: Mapping[str, int | None],
                  decode: Mapping[str, int | None]) -> PairFilter:
    """The one filter of a joint draw: the settings written on either side, which must agree
    where both sides write one (the error names decode, the second side read)."""
    for key, value in decode.items():
        if key in prefill and prefill[key] != value:
            raise ConfigError("decode", f"sharegpt {key}={_text(value)} differs from prefill's "
                                        f"{key}={_text(prefill[key])}; both sides draw one "
                                        "table of pairs, so write each filter setting once")
    return _checked(replace(PairFilter(), **{**prefill, **decode}), "decode")


@cache
def load_table() -> tuple[np.ndarray, np.ndarray]:
    """Every row's (prompt tokens, output tokens), read-only, read once per process."""
    try:
        text = resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(NAME, f"servelab's ShareGPT table {TABLE} cannot be read ({exc}); "
                                "reinstall servelab") from None
    header, _, body = text.partition("\n")
    assert tuple(header.split(",")) == COLUMNS, f"{TABLE} has columns {header!r}"
    table = np.loadtxt(io.StringIO(body), delimiter=",", usecols=(1, 2), dtype=np.int64, ndmin=2)
    prompt, output = np.ascontiguousarray(table[:, 0]), np.ascontiguousarray(table[:, 1])
    for column in (prompt, output):
        column.flags.writeable = False
    return prompt, output


@dataclass(frozen=True, eq=False)
class Pairs:
    """The rows a filter keeps, in the table's order (read-only)."""

    prompt: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt)


@cache
def pairs(pair_filter: PairFilter) -> Pairs:
    prompt, output = load_table()
    mask = pair_filter.keep(prompt, output)
    kept = Pairs(prompt[mask], output[mask])
    for column in (kept.prompt, kept.output):
        column.flags.writeable = False
    return kept

