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
    """Values drawn ``CHUNK`` at a time by ``draw(done, size)``, kept and handed out in order.

    They are kept in one buffer: ``first(n)`` sizes it for n values before drawing, so a run
    of n requests holds them once, not once in blocks and again concatenated; a stream whose
    length is not known in advance (``grow`` alone) doubles it as it goes.
    """

    def __init__(self, draw: Callable[[int, int], np.ndarray]) -> None:
        self._draw = draw
        self._buffer: np.ndarray | None = None  # the values drawn are its first ``drawn``
        self.drawn = 0

    def _reserve(self, size: int, dtype: np.dtype) -> np.ndarray:
        buffer = self._buffer
        if buffer is None or len(buffer) < size:
            grown = np.empty(max(size, 0 if buffer is None else 2 * len(buffer)), dtype)
            if buffer is not None:
                grown[: self.drawn] = buffer[: self.drawn]
            self._buffer = buffer = grown
        return buffer

    def grow(self, reserve: int = 0) -> np.ndarray:
        """Draw one more block (after making room for ``reserve`` values) and return it."""
        block = self._draw(self.drawn, CHUNK)
        end = self.drawn + len(block)
        self._reserve(max(end, reserve), block.dtype)[self.drawn:end] = block
        self.drawn = end
        return block

    def values(self) -> np.ndarray:
        """Everything drawn so far (at least one block)."""
        if self._buffer is None:
            self.grow()
        assert self._buffer is not None
        return self._buffer[: self.drawn]

    def first(self, count: int) -> np.ndarray:
        room = -(-count // CHUNK) * CHUNK  # whole blocks: every draw is CHUNK values
        while self.drawn < count:
            self.grow(room)
        return self.values()[:count]
