"""SLAI's decode queue with decoders grouped by deadline, so a batch moves groups, not tokens.

SLAI gives a decoder a new last schedulable time (LST) each time it gets a token: the end of
that batch, plus its TBT target, minus an offset that is the same for everyone at that moment.
Every decoder served in one batch with the same TBT target therefore gets the same LST. The
authors' code keeps a heap of (LST, arrival, request), one push and one pop per decode token.
Here those decoders stay together as a *cohort*, and the heap holds cohorts. A batch takes
whole cohorts, and cuts one when the decode limit, the budget or the KV cache stops it part
way. Per batch that is a heap operation per cohort and a list slice per cohort taken.

Order inside a cohort is the released code's tie-break, oldest arrival first. It is settled
lazily: a cohort is sorted only when a batch cuts it, since a cohort taken whole needs no
order. Two cohorts whose LSTs are exactly equal are merged, so that ties across them are
broken by arrival too, as in the released code.
"""

from __future__ import annotations

from heapq import heappop, heappush
from operator import attrgetter
from typing import Final

from servelab.core.request import Request

_ARRIVAL = attrgetter("arrival")

#: ``Cohort.group`` of a cohort merged from groups with different TBT targets: its members'
#: groups are looked up one by one (exactly equal LSTs from different targets are rare).
MIXED: Final = -1


class Cohort:
    """Decoders that share one LST, and the TBT group they belong to (or ``MIXED``).

    ``members[start:]`` are still waiting for a token; ``ordered`` says they are sorted by
    arrival (a stable sort: equal arrivals keep the order they were added in)."""

    __slots__ = ("group", "lst", "members", "ordered", "start")

    def __init__(self, lst: float, group: int, members: list[Request]) -> None:
        self.lst = lst
        self.group = group
        self.members = members
        self.start = 0
        self.ordered = len(members) < 2

    def remaining(self) -> int:
        return len(self.members) - self.start

    def take(self, count: int) -> list[Request]:
        """The next ``count`` members (all that remain, if fewer), oldest arrival first when
        that decides who is taken."""
        start = self.start
        members = self.members
        if start == 0 and count >= len(members):
            self.start = len(members)
            return members  # taken whole: no order needed, no copy
        if not self.ordered:
            members = self.members = sorted(members[start:], key=_ARRIVAL)
            start = 0
            self.ordered = True
        self.start = start + count
        return members[start:start + count]


class CohortHeap:
    """Cohorts by LST, earliest first: ``entries`` is a list in heap order of (LST,
    tie-break, cohort). It holds the list rather than being one, because mypyc compiles no
    subclass of ``list``."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, Cohort]] = []
        self._at: dict[float, Cohort] = {}  # the cohort with each LST in the heap
        self._pushed = 0  # tie-break for the tuples; LSTs in the heap are distinct

    def __len__(self) -> int:
        return len(self.entries)

    def top(self) -> Cohort:
        """The cohort with the earliest LST (the heap must not be empty)."""
        return self.entries[0][2]

    def push(self, lst: float, group: int, members: list[Request]) -> None:
        """Add decoders that share ``lst``, in the order given (for ties in arrival)."""
        same = self._at.get(lst)
        if same is not None:
            same.members = same.members[same.start:] + members
            same.start = 0
            same.ordered = False
            if same.group != group:
                same.group = MIXED
            return
        cohort = self._at[lst] = Cohort(lst, group, members)
        heappush(self.entries, (lst, self._pushed, cohort))
        self._pushed += 1

    def pop_top(self) -> None:
        """Drop the top cohort (when its last member has been taken)."""
        lst, _, _ = heappop(self.entries)
        del self._at[lst]

    def cohorts(self) -> list[Cohort]:
        """Every cohort, in no particular order (for inspection and tests)."""
        return [entry[2] for entry in self.entries]
