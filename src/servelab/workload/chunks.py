"""Random draws in fixed blocks, so a prefix never depends on how much was drawn after it.

A run that grows step by step (``--requests auto``) must see exactly the requests that a run
of the final length would. Drawing every stream ``CHUNK`` values at a time, whatever a run
asks for, makes that true by construction rather than by relying on how numpy fills arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Values per draw. Large enough that a draw's overhead vanishes, small enough that a run of a
#: few requests draws little it does not use.
CHUNK = 8192


class Chunked:
    """Values drawn ``CHUNK`` at a time by ``draw(done, size)``, kept and handed out in order."""

    def __init__(self, draw: Callable[[int, int], np.ndarray]) -> None:
        self._draw = draw
        self._parts: list[np.ndarray] = []
        self.drawn = 0

    def grow(self) -> np.ndarray:
        """Draw one more block and return it."""
        part = self._draw(self.drawn, CHUNK)
        self._parts.append(part)
        self.drawn += len(part)
        return part

    def values(self) -> np.ndarray:
        """Everything drawn so far (concatenated once, then kept as one array)."""
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts)] if self._parts else [self.grow()]
        return self._parts[0]

    def first(self, count: int) -> np.ndarray:
        while self.drawn < count:
            self.grow()
        return self.values()[:count]
