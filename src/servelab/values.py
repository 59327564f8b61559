"""Settings as flags, YAML and ``--set`` give them (often text), converted by their type hint.

``SimConfig`` and every scheduler's options convert through ``convert``, so ``--kp 4``,
``kp: 4`` and ``--set scheduler.kp=4`` mean the same, and a bad value is a ``ConfigError``
naming the setting. The hints understood: ``bool``, ``int``, ``float``, ``str``, ``list[str]``,
``Literal`` of strings (the allowed values, matched without regard to case), unions of these
and ``None``.
"""

from __future__ import annotations

import math
import types
from typing import Any, Literal, Union, get_args, get_origin

from servelab.errors import ConfigError


def convert(name: str, hint: Any, raw: Any) -> Any:
    """``raw`` as the type ``hint`` says, or a ``ConfigError`` naming ``name``; None stays."""
    if raw is None:
        return None
    options = _alternatives(hint)
    choices = [c for o in options if get_origin(o) is Literal for c in get_args(o)]
    if choices and isinstance(raw, str):
        found = [c for c in choices if c.lower() == raw.strip().lower()]
        if found:
            return found[0]
    others = [o for o in options if get_origin(o) is not Literal]
    if not others:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
    [kind] = others  # a setting has one type besides its named values
    if kind is bool:
        return to_bool(name, raw)
    if kind is int:
        return to_int(name, raw)
    if kind is float:
        return to_float(name, raw)
    if kind is str:
        return to_str(name, raw)
    if get_origin(kind) is list:
        if isinstance(raw, str):  # "a,b", as a flag writes a list
            raw = raw.split(",")
        if not isinstance(raw, list | tuple):
            raise ConfigError(name, f"expected a list, got {kind_of(raw)}")
        return [to_str(name, item) for item in raw if str(item).strip()]
    raise TypeError(f"{name}: no conversion for {hint!r}")


def accepted(hint: Any) -> str:
    """The values a hint accepts, for help: ``decode|prefill``, ``integer``, ``true|false``."""
    words = {bool: "true|false", int: "integer", float: "number", str: "text"}
    return "|".join("|".join(get_args(o)) if get_origin(o) is Literal
                    else words.get(o, "list" if get_origin(o) is list else repr(o))
                    for o in _alternatives(hint))


def _alternatives(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows besides None: ``int | None`` -> (int,)."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return tuple(o for o in options if o is not type(None))


def kind_of(raw: Any) -> str:
    """How an error names a value of the wrong type: its type, not a repr of any size."""
    if raw is None:
        return "None"
    name = type(raw).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def to_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def to_str(name: str, raw: Any) -> str:
    """A name, spec or path: a scalar, and never empty (an empty path would mean '.')."""
    if isinstance(raw, list | tuple | dict | set):
        raise ConfigError(name, f"expected text, got {kind_of(raw)}")
    text = str(raw)
    if not text.strip():
        raise ConfigError(name, "is empty")
    return text


def to_float(name: str, raw: Any, what: str = "a number") -> float:
    if isinstance(raw, bool):
        raise ConfigError(name, f"expected {what}, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {what}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(name, f"expected {what}, got {raw!r}")
    return value


def to_int(name: str, raw: Any) -> int:
    """Integers, also written as ``5.0`` or ``1e3``; exact for large ones like seeds."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
        return int(raw)
    value = to_float(name, raw, "an integer")
    if not value.is_integer():
        raise ConfigError(name, f"expected an integer, got {raw!r}")
    return int(value)
