"""Engines on a loop: the components that drive them, feed them and watch them.

- ``EngineProcess`` drives one engine: it starts a batch when work reaches an idle engine,
  finishes it at its end time and starts the next, until the horizon (or, with ``drain``,
  until nothing is left). An engine whose policy waits on purpose is asked again when the
  policy said (``Batch.idle_until``), or sooner if a request arrives.
- ``Feed`` hands a single engine the requests that have arrived whenever it forms a batch;
  ``RoutedArrivals`` makes each arrival an event and hands it to a router in front of several
  engines.
- ``BacklogSampler`` records the backlog of a set of engines at the first batch end after each
  point of an even time grid: the series the stability verdict reads.
- ``run_engines`` wires them together for one run and returns what it recorded.
"""

from __future__ import annotations

import gc
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy import ndarray  # not np.ndarray in the dataclasses below: mypyc#1000

from servelab.core.request import Request
from servelab.sim.decode_pool import RequestRecords
from servelab.sim.engine import BatchObserver, BatchRecord, Engine, LoadBoard
from servelab.sim.loop import Loop, Source
from servelab.workload.chunks import CHUNK

#: Backlog samples taken over the arrival window (evenly spaced in time).
BACKLOG_SAMPLES: Final = 2000


class EngineProcess:
    """Drives one engine on a loop (module docstring)."""

    def __init__(self, loop: Loop, engine: Engine, horizon: float, drain: bool) -> None:
        self.loop = loop
        self.engine = engine
        self.horizon = horizon
        self.drain = drain
        self.feed: Feed | None = None  # requests this process admits itself (no router)
        self._start_pending = False
        self._finish_action = self._finish  # one bound method, not one per batch
        self._wake = -1  # the loop's handle of the wake-up an idling policy asked for
        #: Called with the requests that finished or emitted their first token in a batch.
        self.on_events: Callable[[list[Request]], None] | None = None

    @property
    def idle(self) -> bool:
        """No batch running, and none about to start."""
        return not self.engine.busy and not self._start_pending

    def admit(self, req: Request) -> None:
        """A request routed here: the engine takes it now; an idle one starts a batch."""
        self.engine.admit(req)
        if self.idle:
            # Not at once: other arrivals at this very time join before the batch forms.
            self._start_pending = True
            self.loop.at(self.loop.now, self._start)

    def _start(self) -> None:
        """Start the next batch; while nothing else is due before it ends, finish it and go on
        at once (the loop's clock jumps with it), instead of a heap event per batch."""
        self._start_pending = False
        loop = self.loop
        engine = self.engine
        feed = self.feed
        now = loop.now
        if self._wake >= 0:  # deciding now: an idling policy says again when to wake it
            loop.cancel(self._wake)
            self._wake = -1
        while True:
            if feed is not None:
                feed.admit_until(now, engine)
            if now >= self.horizon and not self.drain:
                return
            end = engine.start_batch(now)
            if end is None:
                wake = engine.idle_until
                if wake < math.inf and (self.drain or wake < self.horizon):
                    self._wake = loop.at(wake, self._woken)
                return
            if not loop.free_until(end):
                loop.at(end, self._finish_action)
                return
            loop.now = now = end
            if self._done(engine.finish_batch()):
                return

    def _woken(self) -> None:
        """The time an idling policy named: ask it again (an arrival that started a batch
        first cancelled this)."""
        self._wake = -1
        if self.idle:
            self._start()

    def _finish(self) -> None:
        if not self._done(self.engine.finish_batch()):
            self._start()

    def _done(self, events: list[Request]) -> bool:
        """Tell ``on_events``; if that scheduled something for now (a workflow's next call,
        say), the next batch waits for it, as a loop event of its own: returns True then."""
        if self.on_events is None or not events:
            return False
        self.on_events(events)
        loop = self.loop
        if loop.free_until(loop.now):
            return False
        self._start_pending = True
        loop.at(loop.now, self._start)
        return True


class Arrivals(Source):
    """A workload's requests in arrival order, made when their time comes.

    The arrays are read ``CHUNK`` at a time as Python numbers: fast to index, and memory for
    one chunk only, whatever the run's length. ``slo_class`` (None: every request in class 0)
    gives each request its service-level class.
    """

    def __init__(self, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
                 slo_class: np.ndarray | None = None) -> None:
        self._arrival = arrival
        self._prompt = prompt
        self._output = output
        self._slo_class = slo_class
        self._count = len(arrival)
        self.made = 0  # requests made so far, the next one's id
        self._base = 0  # id of the chunk's first request
        self._t: list[float] = []
        self._p: list[int] = []
        self._o: list[int] = []
        self._c: list[int] | None = None  # the chunk's classes, when the run has classes
        self._next = math.inf
        self._load()

    def _load(self) -> None:
        start, stop = self.made, min(self.made + CHUNK, self._count)
        self._base = start
        self._t = self._arrival[start:stop].tolist()
        self._p = self._prompt[start:stop].tolist()
        self._o = self._output[start:stop].tolist()
        if self._slo_class is not None:
            self._c = self._slo_class[start:stop].tolist()
        self._next = self._t[0] if self._t else math.inf

    def _take(self) -> Request:
        """The next request (its arrival time is ``_next``)."""
        j = self.made - self._base
        c = self._c
        req = (Request(self.made, self._next, self._p[j], self._o[j]) if c is None
               else Request(self.made, self._next, self._p[j], self._o[j], c[j]))
        self.made += 1
        j += 1
        if j < len(self._t):
            self._next = self._t[j]
        else:
            self._load()
        return req

    def next_time(self) -> float:
        return self._next

    def fire(self) -> None:
        raise NotImplementedError


class RoutedArrivals(Arrivals):
    """Each request is an event at its arrival time, handed to a ``Dispatch`` (a router in
    front of several engines)."""

    def __init__(self, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
                 dispatch: Dispatch, slo_class: np.ndarray | None = None) -> None:
        super().__init__(arrival, prompt, output, slo_class)
        self._dispatch = dispatch

    def fire(self) -> None:
        self._dispatch.route(self._take())


class Feed(Arrivals):
    """One engine's own arrivals, with no router between: the engine takes every request that
    has arrived when it forms a batch, in one go, which is what a request arriving mid-batch
    would see anyway. Only an idle engine needs an event to wake it."""

    def __init__(self, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
                 process: EngineProcess, slo_class: np.ndarray | None = None) -> None:
        super().__init__(arrival, prompt, output, slo_class)
        self._process = process
        process.feed = self

    def next_time(self) -> float:
        return self._next if self._process.idle else math.inf

    def fire(self) -> None:
        self._process._start()

    def admit_until(self, now: float, engine: Engine) -> None:
        while self._next <= now:
            engine.admit(self._take())


class Dispatch:
    """Hands each arrival to the engine a router chooses, and remembers which."""

    def __init__(self, choose: Callable[[Request, LoadBoard], int],
                 processes: list[EngineProcess], count: int) -> None:
        self._choose = choose
        self._processes = processes
        self._board = LoadBoard([p.engine for p in processes])
        # Engine index by request id: a list of small ints (shared objects, 8 bytes a slot)
        # takes an assignment faster than a typed array.
        self.assigned: list[int] = [-1] * count

    def route(self, req: Request) -> None:
        i = self._choose(req, self._board)
        self.assigned[req.id] = i
        self._processes[i].admit(req)


class BacklogSampler(BatchObserver):
    """Samples (time, served tokens, unprocessed tokens, requests in system) of ``engines``
    at the first batch end (of any of them) after each point of an even grid over the horizon.
    """

    def __init__(self, engines: list[Engine], horizon: float) -> None:
        self.engines = engines
        # At least a picosecond: a subnormal horizon would make the grid overflow to infinity.
        self._dt = max(horizon / BACKLOG_SAMPLES, 1e-12)
        self._next = 0.0
        self.time = array("d")
        self.served = array("q")
        self.tokens = array("q")
        self.requests = array("q")

    def batch_done(self, engine: Engine, now: float) -> None:
        if now < self._next:
            return
        served = tokens = requests = 0
        for e in self.engines:
            served += e.processed_tokens
            tokens += e.unprocessed_tokens
            requests += e.outstanding
        self.time.append(now)
        self.served.append(served)
        self.tokens.append(tokens)
        self.requests.append(requests)
        self._next = (math.floor(now / self._dt) + 1) * self._dt


@dataclass
class EngineRecords:
    """What one engine did in a run (its own backlog series included)."""

    iterations: int
    busy_s: float
    prefill_tokens: int
    decode_tokens: int
    admitted: int
    completed: int
    backlog: BacklogSampler
    #: Preemptions, and prompt and output tokens prefilled again after them, by service-level
    #: class (class index -> count; absent: none).
    preemptions_by_class: dict[int, int] = field(default_factory=dict)
    recomputed_by_class: dict[int, int] = field(default_factory=dict)
    batches: list[BatchRecord] | None = field(default=None)

    @property
    def preemptions(self) -> int:
        return sum(self.preemptions_by_class.values())

    @property
    def recomputed_tokens(self) -> int:
        return sum(self.recomputed_by_class.values())


@dataclass
class RunRecords:
    """What a run produced: per-request times, the TBT histogram, backlog series, totals."""

    first_token: ndarray
    finish: ndarray
    tbt_hist: dict[int, int]
    backlog: BacklogSampler  # of every engine together
    engines: list[EngineRecords]
    end_time: float
    admitted: int
    completed: int
    #: Which engine each request went to (several engines only).
    assigned: ndarray | None = None
    #: One TBT histogram per service-level class, when the run has two or more classes.
    tbt_by_class: list[dict[int, int]] | None = None

    @property
    def iterations(self) -> int:
        return sum(e.iterations for e in self.engines)

    @property
    def prefill_tokens(self) -> int:
        return sum(e.prefill_tokens for e in self.engines)

    @property
    def decode_tokens(self) -> int:
        return sum(e.decode_tokens for e in self.engines)

    @property
    def busy_s(self) -> float:
        return sum(e.busy_s for e in self.engines)

    @property
    def preemptions(self) -> int:
        return sum(e.preemptions for e in self.engines)

    @property
    def recomputed_tokens(self) -> int:
        return sum(e.recomputed_tokens for e in self.engines)

    def preemptions_of(self, slo_class: int) -> int:
        """Preemptions of requests of one service-level class, over every engine."""
        return sum(e.preemptions_by_class.get(slo_class, 0) for e in self.engines)

    def recomputed_tokens_of(self, slo_class: int) -> int:
        """Tokens of one class's requests prefilled again after preemption."""
        return sum(e.recomputed_by_class.get(slo_class, 0) for e in self.engines)

    @property
    def batches(self) -> list[BatchRecord] | None:
        """The batches of a one-engine run, when recorded."""
        return self.engines[0].batches if len(self.engines) == 1 else None


def run_engine(engine: Engine, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
               horizon: float, drain: bool = False,
               slo_class: np.ndarray | None = None) -> RunRecords:
    """One engine on its own: every request goes to it."""
    return run_engines([engine], None, np.asarray(arrival), np.asarray(prompt),
                       np.asarray(output), horizon, drain,
                       None if slo_class is None else np.asarray(slo_class))


def run_engines(
    engines: list[Engine],
    choose: Callable[[Request, LoadBoard], int] | None,
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    horizon: float,
    drain: bool = False,
    slo_class: np.ndarray | None = None,
) -> RunRecords:
    """Simulate ``engines`` (fresh ones; they share one ``RequestRecords``) on the requests
    given, sorted by arrival, until ``horizon`` (the run stops at the first batch end at or
    after it), or with ``drain`` until every request finishes. ``choose(req, board)`` is the
    router's decision at each arrival, from the engines' loads; None feeds a single engine
    directly. ``slo_class`` is each request's service-level class (None: all in class 0)."""
    if len(arrival) and (int(np.min(prompt)) < 1 or int(np.min(output)) < 1):
        raise ValueError("every request needs at least 1 prompt and 1 output token")
    if slo_class is not None and (len(slo_class) != len(arrival)
                                  or (len(slo_class) and int(np.min(slo_class)) < 0)):
        raise ValueError("slo_class needs one class index >= 0 per request")
    loop = Loop()
    classes = len(engines[0].slo_classes)
    if slo_class is not None and len(slo_class):
        classes = max(classes, int(np.max(slo_class)) + 1)
    records = RequestRecords(len(arrival), classes)
    for engine in engines:
        engine.use_records(records)
    processes = [EngineProcess(loop, e, horizon, drain) for e in engines]
    samplers = [BacklogSampler([e], horizon) for e in engines]
    total = samplers[0] if len(engines) == 1 else BacklogSampler(engines, horizon)
    for engine, sampler in zip(engines, samplers, strict=True):
        engine.observers.append(sampler)
        if total is not sampler:
            engine.observers.append(total)
    source: Arrivals
    dispatch: Dispatch | None = None
    if choose is None:
        if len(processes) != 1:
            raise ValueError("several engines need a router")
        source = Feed(arrival, prompt, output, processes[0], slo_class)
    else:
        dispatch = Dispatch(choose, processes, len(arrival))
        source = RoutedArrivals(arrival, prompt, output, dispatch, slo_class)
    loop.add_source(source)
    # Nothing a run allocates forms a cycle that outlives it, and the collector's passes over
    # millions of young requests cost more than a tenth of the run: pause it meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        end = loop.run()
    finally:
        if collecting:
            gc.enable()
    # Latency statistics cover completed requests: take back the gaps of those in flight.
    for engine in engines:
        engine.take_back_inflight()
    per_engine = [
        EngineRecords(
            iterations=e.iterations,
            busy_s=e.last_batch_end - e.idle_s,
            prefill_tokens=e.prefill_tokens,
            decode_tokens=e.processed_tokens - e.prefill_tokens,
            admitted=e.admitted,
            completed=e.admitted - e.outstanding,
            backlog=sampler,
            preemptions_by_class=dict(e.preemptions_by_class),
            recomputed_by_class=dict(e.recomputed_by_class),
            batches=e.batches,
        )
        for e, sampler in zip(engines, samplers, strict=True)
    ]
    admitted = source.made
    return RunRecords(
        first_token=np.frombuffer(records.first_token, dtype=np.float64)[:admitted],
        finish=np.frombuffer(records.finish, dtype=np.float64)[:admitted],
        tbt_hist=dict(records.tbt),
        tbt_by_class=(None if records.tbt_by_class is None
                      else [dict(hist) for hist in records.tbt_by_class]),
        backlog=total,
        engines=per_engine,
        end_time=end,
        admitted=admitted,
        completed=records.completed,
        assigned=(None if dispatch is None
                  else np.array(dispatch.assigned[:admitted], dtype=np.int16)),
    )
