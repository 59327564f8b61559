"""The decoding requests of one engine, and their progress, served one token per batch.

Each decoding request has a ``DecodeEntry`` here (its true output length, tokens to go, last
token time and the record of its gaps), so nothing about its progress lives on the request
itself and ``progress`` answers in O(1) whichever way batches name their decoders. Two
structures serve the two forms of ``Batch``:

``DecodePool`` serves "the first k decoders", oldest first, without per-request loops. It keeps
the entries in a list in the order they entered decode, and a *frontier*: the index just past
the entries served in the last round. A round that serves the first k only walks from the old
frontier to the new one, so its cost is the change in k (amortised, below), and a round that
serves everyone again costs O(1).

Progress is a global round counter. Only entries in the served prefix are booked to finish: one
that joins the prefix after round G with r tokens to go finishes at round G + r, and is filed
in a bucket {round: entries} (round numbers are consecutive integers, so a dict of buckets
replaces a heap). One that drops out of the prefix stores its remaining tokens and leaves a
stale entry behind (its key no longer matches, so it is skipped when its bucket comes up).
Joining and dropping out happen on the frontier walks above, so a round costs the change in k,
whatever the length of the unserved tail.

Finished (or evicted) entries are not removed from the list one by one; they are marked and
skipped. The list is compacted when they outnumber the live ones, or when the frontier walks
have stepped over more of them than there are live ones: each compaction is paid for by that
many finishes or steps, so dead entries add O(1) per request amortised to the walks.

``ExplicitDecoders`` serves a list the scheduler names, in O(k) per batch: the policies that
choose decoders one by one (deadlines, newest first) pay for it in the scheduler anyway.

Time-between-tokens are accumulated as a histogram {gap ticks: count}: requests served in two
consecutive rounds all see the same gap, so one dict update covers them; only entries that
rejoin the served prefix, or get their first decode token, are handled one by one. Latency
statistics cover completed requests only, so the pool also keeps each round's gap and, on each
entry, the runs of consecutive rounds it was served in: when a run stops, the gaps of the
requests still decoding are taken back out (``take_back_inflight``), at a cost of their tokens
alone. With SLO classes, each class has its own histogram too, and the pool keeps how many of
the served prefix belong to each class, so the bulk update stays one per class a round.

KV memory (when the engine has a ``KVCache``): each entry knows the slots its blocks hold
(``capacity``) and the slots in use (``held``), and needs a new block in a round where they are
equal. An entry in the served prefix gains a slot every round, so from its first such round on
it needs a block every ``block_size`` rounds: the pool counts the prefix entries by that round
modulo ``block_size``, and a round's blocks are one count, whatever the number of decoders.
An entry's capacity is brought up to date only when it leaves the prefix.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator
from itertools import islice
from typing import Final

from servelab.core.request import FINISHED, Request

#: TBT gaps are kept as integer ticks of 0.1 microsecond, so that equal gaps share one
#: histogram bin whatever float noise their subtraction carries (and ``round`` is slow).
TICKS_PER_S: Final = 10_000_000

#: ``DecodeEntry.key`` of an entry outside the served prefix (as every entry starts), and of a
#: finished or evicted one; otherwise it is the round the entry finishes in.
UNSERVED: Final = -1
GONE: Final = -2
#: ``DecodeEntry.last_token`` before the request's first output token.
NO_TOKEN: Final = -1.0


class RequestRecords:
    """Per-request token times and the TBT histogram of one run, shared by its engines.

    Typed arrays indexed by request id (8 bytes a request each), not objects: a ten-million
    request run keeps its records in 160 MB.
    """

    def __init__(self, count: int, classes: int = 1) -> None:
        self.first_token = array("d", [float("nan")]) * count
        self.finish = array("d", [float("nan")]) * count
        self.tbt: defaultdict[int, int] = defaultdict(int)
        #: One histogram per SLO class, when the run has more than one.
        self.tbt_by_class: list[defaultdict[int, int]] | None = (
            [defaultdict(int) for _ in range(classes)] if classes > 1 else None)
        self.completed = 0

    def take_back(self, gaps: list[int], slo_class: int = 0) -> None:
        """Remove ``gaps`` (ticks) from the TBT histograms: those of a request that will not
        complete, since latency statistics cover completed requests only."""
        _remove(self.tbt, gaps)
        if self.tbt_by_class is not None:
            _remove(self.tbt_by_class[slo_class], gaps)


def _remove(hist: defaultdict[int, int], gaps: list[int]) -> None:
    for ticks in gaps:
        left = hist[ticks] - 1
        if left:
            hist[ticks] = left
        else:
            del hist[ticks]


class DecodeEntry:
    """One decoding request's progress, as its engine keeps it."""

    __slots__ = ("capacity", "claimed", "cross_key", "gaps", "held", "key", "last_token",
                 "output", "remaining", "req", "segment_start", "segments")

    def __init__(self, req: Request, remaining: int, last_token: float, held: int = 0,
                 capacity: int = 0) -> None:
        self.req = req
        self.output = req.output_tokens
        self.remaining = remaining  # output tokens still to come, kept while not booked
        self.last_token = last_token
        self.key = UNSERVED
        # KV slots in use and slots its blocks hold. In the pool's served prefix both are as
        # of the round its run began (``segment_start``), and ``cross_key`` is the first
        # round after that in which it needs a block (UNSERVED: none before it finishes).
        self.held = held
        self.capacity = capacity
        self.cross_key = UNSERVED
        # The gap record, kept so the gaps of a request still in flight when a run stops can
        # be taken back out of the histogram: the round its current run of consecutive served
        # rounds began, the (first, last) rounds of earlier runs, and gaps recorded one by one.
        self.segment_start = 0
        self.segments: list[int] | None = None
        self.gaps: list[int] | None = None
        self.claimed = 0  # the last batch that named it (``ExplicitDecoders.claim``)

    def close_run(self, last_round: int) -> None:
        """Its run of consecutive served rounds ended at ``last_round``."""
        if self.segments is None:
            self.segments = [self.segment_start, last_round]
        else:
            self.segments += (self.segment_start, last_round)

    def note_gap(self, ticks: int) -> None:
        if self.gaps is None:
            self.gaps = [ticks]
        else:
            self.gaps.append(ticks)


class Parked:
    """A request's decode progress while it is out of decode after a preemption: what
    ``evict`` returns and ``resume`` takes back."""

    def __init__(self, remaining: int, last_token: float, gaps: list[int], held: int,
                 capacity: int, slo_class: int) -> None:
        self.remaining = remaining
        self.last_token = last_token
        self.gaps = gaps
        self.held = held  # KV slots it used, and those its blocks held, when evicted
        self.capacity = capacity
        self.slo_class = slo_class


class Decoders:
    """What an engine asks of its decoding requests, whichever form its batches use.

    Both forms count a round's gaps in bulk: the requests served in this round and the last
    all waited the same time, one histogram update for all of them; only the others are
    counted one by one. So both keep the round gaps and each entry's runs of consecutive
    served rounds, to take the gaps of requests still in flight back out when a run stops.
    """

    def __init__(self, records: RequestRecords) -> None:
        self.records = records
        self.size = 0  # live decoders
        self._rounds = 0
        self._last_round_time = 0.0
        # Ticks from round r-1 to round r, at index r-1: appended to a list (cheap) and moved
        # into a typed array (8 bytes each) a block at a time.
        self._gap_log = array("q")
        self._gap_tail: list[int] = []
        #: KV block size, 0 when the engine tracks no memory; the blocks the last round took
        #: (requests that filled their blocks) and freed (requests that finished).
        self.block_size = 0
        self.crossed = 0
        self.freed = 0

    def _next_round(self, now: float) -> int:
        """Open round ``_rounds + 1``, ending at ``now``; log and return its gap."""
        gap = int((now - self._last_round_time) * TICKS_PER_S + 0.5)
        tail = self._gap_tail
        tail.append(gap)
        if len(tail) == 4096:
            self._gap_log.extend(tail)
            tail.clear()
        return gap

    def _round_gaps(self) -> array[int]:
        """Every round's gap so far (the list's tail moved into the array first)."""
        if self._gap_tail:
            self._gap_log.extend(self._gap_tail)
            self._gap_tail.clear()
        return self._gap_log

    def _note_gap(self, entry: DecodeEntry, ticks: int) -> None:
        """A gap counted on its own (not the round's, in bulk)."""
        records = self.records
        records.tbt[ticks] += 1
        by_class = records.tbt_by_class
        if by_class is not None:
            by_class[entry.req.slo_class][ticks] += 1
        entry.note_gap(ticks)

    def _open_run_end(self, entry: DecodeEntry) -> int:
        """The last round of ``entry``'s current run of served rounds, one not yet closed by
        ``close_run``; 0 when it has none."""
        raise NotImplementedError

    def _gaps_of(self, entry: DecodeEntry) -> list[int]:
        """Every gap of ``entry`` in the histogram: a request served in rounds s..e without a
        break saw the round gaps of rounds s+1..e; the gap into round s was recorded on its
        own (or was its first token)."""
        round_gaps = self._round_gaps()
        gaps: list[int] = [] if entry.gaps is None else list(entry.gaps)
        segments = entry.segments
        if segments is not None:
            for j in range(0, len(segments), 2):
                gaps.extend(round_gaps[segments[j]:segments[j + 1]])
        end = self._open_run_end(entry)
        if end:
            gaps.extend(round_gaps[entry.segment_start:end])
        return gaps

    def take_back_inflight(self) -> None:
        """Take the gaps of requests still decoding back out of the histograms."""
        records = self.records
        for entry in self.live():
            records.take_back(self._gaps_of(entry), entry.req.slo_class)

    def add(self, reqs: list[Request], first_token_at: float,
            kv: list[tuple[int, int]] | None = None) -> None:
        """Enter decode, at the back of the entered-decode order.

        ``first_token_at`` >= 0 is when the prefill's iteration emitted output token 1 (engine
        convention); ``NO_TOKEN`` means every output token is still to come (paper). ``kv``:
        each request's (slots held, slots its blocks hold), when memory is tracked."""
        for i, req in enumerate(reqs):
            remaining = req.output_tokens - (1 if first_token_at >= 0 else 0)
            held, capacity = kv[i] if kv is not None else (0, 0)
            self._enter(DecodeEntry(req, remaining, first_token_at, held, capacity))

    def resume(self, req: Request, parked: Parked, held: int, capacity: int) -> None:
        """Enter decode again after a preemption, with the progress ``evict`` returned and its
        KV now: recomputed (a new allocation) or swapped back in (as it was)."""
        entry = DecodeEntry(req, parked.remaining, parked.last_token, held, capacity)
        entry.gaps = parked.gaps
        self._enter(entry)

    def _enter(self, entry: DecodeEntry) -> None:
        raise NotImplementedError

    def live(self) -> Iterator[DecodeEntry]:
        """The live entries, in the order they entered decode."""
        raise NotImplementedError

    def live_newest_first(self) -> Iterator[DecodeEntry]:
        raise NotImplementedError

    def find(self, req: Request) -> DecodeEntry | None:
        """``req``'s entry, in O(1) amortised; None when it is not decoding here."""
        raise NotImplementedError

    def progress(self, req: Request) -> tuple[int, float]:
        """(tokens emitted, the last one's time; ``NO_TOKEN`` before the first)."""
        raise NotImplementedError

    def evict(self, req: Request) -> Parked:
        """Take ``req`` out of decode (the engine frees its blocks: ``Parked.capacity``)."""
        raise NotImplementedError

    def needs_block(self, req: Request) -> bool:
        """Whether decoding ``req`` in the next round takes a new KV block."""
        raise NotImplementedError

    def track_kv(self, block_size: int) -> None:
        """Keep each decoder's KV slots, in blocks of ``block_size``."""
        self.block_size = block_size

    def decode_blocks(self, k: int) -> int:
        """New KV blocks the next round takes if it serves the first ``k`` decoders."""
        return sum(1 for req in self.first(k) if self.needs_block(req))

    def blocks_held(self, req: Request) -> int:
        """KV blocks a decoding request holds."""
        entry = self.find(req)
        assert entry is not None, "blocks of a request that is not decoding here"
        return entry.capacity // self.block_size

    def first(self, k: int) -> list[Request]:
        """The ``k`` that entered decode earliest (all when fewer)."""
        return _take(self.live(), k)

    def last(self, k: int) -> list[Request]:
        """The ``k`` that entered decode latest, newest first (preemption victims)."""
        return _take(self.live_newest_first(), k)

    def __iter__(self) -> Iterator[Request]:
        for entry in self.live():
            yield entry.req

    def __contains__(self, req: Request) -> bool:
        return self.find(req) is not None



def _take(entries: Iterator[DecodeEntry], k: int) -> list[Request]:
    out: list[Request] = []
    if k <= 0:
        return out
    for entry in entries:
        out.append(entry.req)
        if len(out) == k:
            break
    return out


class DecodePool(Decoders):
    """FCFS decoders with O(1) full rounds; see the module docstring for the scheme."""

    def __init__(self, records: RequestRecords) -> None:
        super().__init__(records)
        # The order, with dead entries marked, not removed; and, only once a request is looked
        # up (progress, preemption), an index of the live ones by request id.
        self._order: list[DecodeEntry] = []
        self._index: dict[int, DecodeEntry] | None = None
        self._dead = 0  # dead entries in _order
        self._dead_beyond = False  # whether any may lie beyond the frontier (after a shrink)
        self._dead_walked = 0  # dead entries the frontier walks stepped over since then
        self._frontier = 0  # index just past the served prefix of ``_order``
        self._served_before = 0  # live decoders before the frontier (served last round)
        self._buckets: defaultdict[int, list[DecodeEntry]] = defaultdict(list)
        # KV: served-prefix entries that need a block every ``block_size`` rounds, counted by
        # that round modulo ``block_size``; and those whose first such round is further
        # away than that (a reservation), counted by it until it comes.
        self._residue: list[int] = []
        self._pending: defaultdict[int, int] = defaultdict(int)
        # The last decode_blocks question, (round, k), and its answer: asked twice a batch.
        self._asked = (0, -1)
        self._answer = 0
        #: Served-prefix entries per SLO class (kept only when the records split by class).
        self._prefix_classes: list[int] = []

    def _enter(self, entry: DecodeEntry) -> None:
        if self._index is not None:
            self._index[entry.req.id] = entry
        self._order.append(entry)
        self.size += 1

    def live(self) -> Iterator[DecodeEntry]:
        for entry in self._order:
            if entry.key != GONE:
                yield entry

    def live_newest_first(self) -> Iterator[DecodeEntry]:
        for entry in reversed(self._order):
            if entry.key != GONE:
                yield entry

    def find(self, req: Request) -> DecodeEntry | None:
        index = self._index
        if index is None:
            index = self._index = {e.req.id: e for e in self.live()}
        return index.get(req.id)

    def progress(self, req: Request) -> tuple[int, float]:
        entry = self.find(req)
        assert entry is not None, "progress of a request that is not decoding here"
        if entry.key >= 0:  # in the served prefix: served last round, booked to finish
            return entry.output - (entry.key - self._rounds), self._last_round_time
        return entry.output - entry.remaining, entry.last_token

    def serve(self, k: int, now: float, events: list[Request]) -> int:
        """Serve the first ``k`` decoders one token each, the round ending at ``now``.

        The requests that emit their first token or finish are appended to ``events`` (once,
        when both); returns how many finished. With KV tracked, ``crossed`` and ``freed`` say
        how many blocks the round took and gave back."""
        order = self._order
        records = self.records
        hist = records.tbt
        by_class = records.tbt_by_class
        block = self.block_size
        before = self._served_before
        last_round = self._last_round_time
        i = self._frontier
        rounds = self._rounds
        this_round = rounds + 1
        gap = self._next_round(now)
        walked = 0  # dead entries stepped over by this round's walk
        crossed = 0
        if by_class is not None and not self._prefix_classes:
            self._prefix_classes = [0] * len(by_class)
        if k > before:
            if by_class is not None:  # the old prefix, all served again: in sync
                self._bulk_by_class(by_class, gap)
            # Live entries from the old frontier up to the k-th join (or rejoin) the prefix.
            if self._dead_beyond:
                joining: list[DecodeEntry] = []
                while len(joining) < k - before:
                    entry = order[i]
                    i += 1
                    if entry.key != GONE:
                        joining.append(entry)
                    else:
                        walked += 1
            else:
                joining = order[i:i + k - before]
                i += k - before
            if block:  # before the joiners: their block this round is taken as they join
                crossed = self._round_blocks(this_round)
            first_token = records.first_token
            buckets = self._buckets
            for entry in joining:
                last = entry.last_token
                entry.segment_start = this_round
                if last == NO_TOKEN:  # its first token
                    first_token[entry.req.id] = now
                    if entry.remaining > 1:
                        events.append(entry.req)
                else:
                    self._note_gap(entry, int((now - last) * TICKS_PER_S + 0.5))
                key = rounds + entry.remaining
                entry.key = key
                buckets[key].append(entry)
                if block:
                    crossed += self._join_kv(entry, this_round, key)
                if by_class is not None:
                    self._prefix_classes[entry.req.slo_class] += 1
            in_sync = before
        elif k < before:
            # The prefix shrinks: its last before-k live entries drop out after a token last
            # round. Dead entries passed on the way now lie beyond the frontier.
            need = before - k
            while need:
                i -= 1
                entry = order[i]
                key = entry.key
                if key == GONE:
                    self._dead_beyond = True
                    walked += 1
                    continue
                need -= 1
                entry.last_token = last_round
                entry.remaining = key - rounds
                entry.key = UNSERVED
                entry.close_run(rounds)
                if block:
                    self._leave_prefix_kv(entry, rounds)
                if by_class is not None:
                    self._prefix_classes[entry.req.slo_class] -= 1
            in_sync = k
            if by_class is not None:
                self._bulk_by_class(by_class, gap)
            if block:
                crossed = self._round_blocks(this_round)
        else:
            in_sync = k
            if by_class is not None:
                self._bulk_by_class(by_class, gap)
            if block:
                crossed = self._round_blocks(this_round)
        if in_sync:
            hist[gap] += in_sync
        self._frontier = i
        self._last_round_time = now
        rounds = self._rounds = this_round
        done = 0
        freed = 0
        bucket = self._buckets.pop(rounds, None)
        if bucket is not None:
            finish = records.finish
            index = self._index
            for entry in bucket:
                if entry.key == rounds:
                    entry.key = GONE
                    req = entry.req
                    req.status = FINISHED
                    finish[req.id] = now
                    if index is not None:
                        del index[req.id]
                    events.append(req)
                    done += 1
                    if block:
                        self._leave_prefix_kv(entry, rounds)
                        freed += entry.capacity // block
                    if by_class is not None:
                        self._prefix_classes[req.slo_class] -= 1
                # else stale: it dropped out since it was filed
            self.size -= done
            self._dead += done
            records.completed += done
        self.crossed = crossed
        self.freed = freed
        self._served_before = k - done
        if walked:
            self._dead_walked += walked
        self._maybe_compact()
        return done

    def _bulk_by_class(self, by_class: list[defaultdict[int, int]], gap: int) -> None:
        """This round's gap for the prefix entries served in sync, class by class."""
        for c, n in enumerate(self._prefix_classes):
            if n:
                by_class[c][gap] += n

    def track_kv(self, block_size: int) -> None:
        super().track_kv(block_size)
        self._residue = [0] * block_size

    def _round_blocks(self, this_round: int) -> int:
        """The blocks the prefix entries take in ``this_round`` (those whose first block
        round is now join the count of their residue first)."""
        block = self.block_size
        residue = this_round % block
        if self._pending:
            arriving = self._pending.pop(this_round, 0)
            if arriving:
                self._residue[residue] += arriving
        return self._residue[residue]

    def _join_kv(self, entry: DecodeEntry, this_round: int, key: int) -> int:
        """An entry joins the prefix at ``this_round`` (``held`` as of now): take a block now
        if it is full, and count it under the round it next needs one. Returns the blocks
        taken now."""
        block = self.block_size
        taken = 0
        if entry.held >= entry.capacity:
            entry.capacity += block
            taken = 1
        first = this_round + entry.capacity - entry.held
        if first > key:  # it finishes first
            entry.cross_key = UNSERVED
            return taken
        entry.cross_key = first
        if first - this_round <= block:  # no round before it has its residue
            self._residue[first % block] += 1
        else:
            self._pending[first] += 1
        return taken

    def _leave_prefix_kv(self, entry: DecodeEntry, last_served: int) -> None:
        """An entry leaves the prefix after round ``last_served``: bring what it holds up to
        date and take it out of the counts."""
        entry.held += last_served + 1 - entry.segment_start
        first = entry.cross_key
        if first < 0:
            return
        block = self.block_size
        if first <= last_served:
            entry.capacity += block * ((last_served - first) // block + 1)
            self._residue[first % block] -= 1
        elif first - entry.segment_start <= block:
            self._residue[first % block] -= 1
        else:
            self._pending[first] -= 1
        entry.cross_key = UNSERVED

    def decode_blocks(self, k: int) -> int:
        """The blocks a round serving the first ``k`` takes: the prefix's count, then a walk
        over the entries that would join or drop out (what ``serve`` walks anyway)."""
        this_round = self._rounds + 1
        if not self.block_size:
            return 0
        if self._asked == (this_round, k):  # the policy asked, now the engine checks
            return self._answer
        blocks = (self._residue[this_round % self.block_size]
                  + self._pending.get(this_round, 0))
        order = self._order
        before = self._served_before
        i = self._frontier
        if k > before:
            need = k - before
            while need and i < len(order):
                entry = order[i]
                i += 1
                if entry.key != GONE:
                    need -= 1
                    if entry.held >= entry.capacity:
                        blocks += 1
        elif k < before:
            need = before - k
            while need:
                i -= 1
                entry = order[i]
                if entry.key != GONE:
                    need -= 1
                    if self._prefix_needs_block(entry, this_round):
                        blocks -= 1
        self._asked = (this_round, k)
        self._answer = blocks
        return blocks

    def _prefix_needs_block(self, entry: DecodeEntry, this_round: int) -> bool:
        first = entry.cross_key
        return 0 <= first <= this_round and (this_round - first) % self.block_size == 0

    def needs_block(self, req: Request) -> bool:
        entry = self.find(req)
        assert entry is not None, "a request that is not decoding here"
        if entry.key >= 0:  # in the served prefix
            return self._prefix_needs_block(entry, self._rounds + 1)
        return entry.held >= entry.capacity

    def blocks_held(self, req: Request) -> int:
        entry = self.find(req)
        assert entry is not None, "blocks of a request that is not decoding here"
        capacity = entry.capacity
        first = entry.cross_key
        if entry.key >= 0 and 0 <= first <= self._rounds:  # blocks taken since it joined
            capacity += self.block_size * ((self._rounds - first) // self.block_size + 1)
        return capacity // self.block_size

    def evict(self, req: Request) -> Parked:
        entry = self.find(req)
        assert entry is not None and self._index is not None
        del self._index[req.id]
        gaps = self._gaps_of(entry)
        if entry.key >= 0:  # in the served prefix, so before the frontier
            remaining, last_token = entry.key - self._rounds, self._last_round_time
            self._served_before -= 1
            if self.block_size:
                self._leave_prefix_kv(entry, self._rounds)
            if self._prefix_classes:
                self._prefix_classes[req.slo_class] -= 1
        else:  # unserved entries lie beyond the frontier
            remaining, last_token = entry.remaining, entry.last_token
            self._dead_beyond = True
        entry.key = GONE  # its bucket entries go stale
        self.size -= 1
        self._dead += 1
        self._maybe_compact()
        return Parked(remaining, last_token, gaps, entry.held, entry.capacity, req.slo_class)

    def _open_run_end(self, entry: DecodeEntry) -> int:
        # In the served prefix, its run goes on to this round; one that drops out closes it.
        return self._rounds if entry.key >= 0 else 0

    def _maybe_compact(self) -> None:
        # Compacting costs O(list); either trigger has paid for it: more dead entries than
        # live ones, or more steps over dead entries than live ones since the last time.
        if self._dead > self.size or self._dead_walked > self.size:
            # Exactly ``_served_before`` live entries lie before the frontier.
            self._order[:] = [e for e in self._order if e.key != GONE]
            self._frontier = self._served_before
            self._dead = 0
            self._dead_beyond = False
            self._dead_walked = 0


class ExplicitDecoders(Decoders):
    """Decoders served by name: each batch's list is served one by one, in O(list).

    ``DecodeEntry.key`` here is the last round the entry was served in (0: never), which tells
    whether a gap is the round's own (counted in bulk) or a rejoin (counted on its own).
    """

    def __init__(self, records: RequestRecords) -> None:
        super().__init__(records)
        self.entries: dict[int, DecodeEntry] = {}  # by request id, in entered order
        self._batches = 0
        self._claimed: list[DecodeEntry] = []
        self._handed: list[Request] = []  # the view's last list of decoders, while current
        self._handed_entries: list[DecodeEntry] = []

    def _enter(self, entry: DecodeEntry) -> None:
        entry.key = 0
        self.entries[entry.req.id] = entry
        self.size += 1

    def live(self) -> Iterator[DecodeEntry]:
        return iter(self.entries.values())

    def live_newest_first(self) -> Iterator[DecodeEntry]:
        return reversed(self.entries.values())

    def first(self, k: int) -> list[Request]:
        # All of them (what a policy that serves every decoder asks): one copy at C speed.
        if k >= self.size:
            return self._hand_out(list(self.entries.values()))
        return self._hand_out(list(islice(self.entries.values(), max(k, 0))))

    def last(self, k: int) -> list[Request]:
        return self._hand_out(list(islice(reversed(self.entries.values()), max(k, 0))))

    def _hand_out(self, entries: list[DecodeEntry]) -> list[Request]:
        """The requests of ``entries``, remembered: a batch that names this very list back
        (the usual case) is claimed without looking each request up again."""
        self._handed = [e.req for e in entries]
        self._handed_entries = entries
        return self._handed

    def forget_handed(self) -> None:
        """A new batch is being formed: a list handed out for an earlier one may name
        requests evicted since, so it no longer takes the fast path in ``claim``."""
        self._handed = []

    def find(self, req: Request) -> DecodeEntry | None:
        return self.entries.get(req.id)

    def _open_run_end(self, entry: DecodeEntry) -> int:
        # A run is closed when the entry is served again after a break, so the last one is
        # open until then, even if the entry was skipped since: it ended at ``key``.
        return entry.key

    def progress(self, req: Request) -> tuple[int, float]:
        entry = self.entries[req.id]
        return entry.output - entry.remaining, entry.last_token

    def needs_block(self, req: Request) -> bool:
        entry = self.entries[req.id]
        return entry.held >= entry.capacity

    def claimed_blocks(self) -> int:
        """New KV blocks the decoders the last ``claim`` named take."""
        blocks = 0
        for entry in self._claimed:
            if entry.held >= entry.capacity:
                blocks += 1
        return blocks

    def claim(self, reqs: list[Request]) -> Request | None:
        """Check that ``reqs`` are distinct decoders of this engine and keep their entries for
        ``serve_claimed``; returns the first that is not, or None. One pass, one lookup each."""
        self._batches += 1
        batch = self._batches
        handed = self._handed
        self._handed = []
        # The list handed out this batch, named back unchanged (a scheduler may have edited
        # it in place, so its contents are compared, by identity).
        if reqs is handed and _same_requests(self._handed_entries, reqs):
            self._claimed = self._handed_entries  # distinct, and decoding: we listed them
            return None
        entries = self.entries
        claimed = self._claimed = []
        for req in reqs:
            entry = entries.get(req.id)
            if entry is None or entry.req is not req or entry.claimed == batch:
                return req
            entry.claimed = batch
            claimed.append(entry)
        return None

    def serve_claimed(self, now: float, events: list[Request]) -> int:
        """Serve one token to each decoder the last ``claim`` named, ending at ``now``; as
        ``DecodePool.serve`` for ``events``, the count returned, ``crossed`` and ``freed``."""
        records = self.records
        hist = records.tbt
        by_class = records.tbt_by_class
        in_sync_by_class: list[int] | None = (None if by_class is None
                                              else [0] * len(by_class))
        block = self.block_size
        entries = self.entries
        rounds = self._rounds
        this_round = rounds + 1
        gap = self._next_round(now)
        in_sync = done = crossed = freed = 0
        for entry in self._claimed:
            req = entry.req
            served = entry.key
            if served == rounds and served:  # served last round too: this round's gap
                in_sync += 1
                if in_sync_by_class is not None:
                    in_sync_by_class[req.slo_class] += 1
            else:
                if served:  # a run of consecutive rounds ended at round ``served``
                    entry.close_run(served)
                entry.segment_start = this_round
                last = entry.last_token
                if last == NO_TOKEN:
                    records.first_token[req.id] = now
                    if entry.remaining > 1:
                        events.append(req)
                else:
                    self._note_gap(entry, int((now - last) * TICKS_PER_S + 0.5))
            entry.key = this_round
            entry.last_token = now
            entry.remaining -= 1
            if block:
                if entry.held >= entry.capacity:
                    entry.capacity += block
                    crossed += 1
                entry.held += 1
            if not entry.remaining:
                req.status = FINISHED
                records.finish[req.id] = now
                del entries[req.id]
                events.append(req)
                done += 1
                if block:
                    freed += entry.capacity // block
        if in_sync:
            hist[gap] += in_sync
            if by_class is not None and in_sync_by_class is not None:
                for c, n in enumerate(in_sync_by_class):
                    if n:
                        by_class[c][gap] += n
        self._rounds = this_round
        self._last_round_time = now
        self.size -= done
        self.crossed = crossed
        self.freed = freed
        records.completed += done
        return done

    def evict(self, req: Request) -> Parked:
        entry = self.entries.pop(req.id)
        gaps = self._gaps_of(entry)
        self.size -= 1
        return Parked(entry.remaining, entry.last_token, gaps, entry.held, entry.capacity,
                      req.slo_class)


def _same_requests(entries: list[DecodeEntry], reqs: list[Request]) -> bool:
    """Whether ``reqs`` holds exactly the requests of ``entries``, in order (by identity)."""
    if len(reqs) != len(entries):
        return False
    return all(entries[i].req is reqs[i] for i in range(len(entries)))
