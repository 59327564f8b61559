"""Edges of the engine's lifecycle a scheduler or a driver can reach: preemption after an
out-of-order prefill, cancelling, decode lists edited in place or kept across batches,
numpy integers at the boundary, and follow-up arrivals at the instant a batch ends."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from servelab.core.batch import Batch
from servelab.core.request import CANCELLED, DECODING, FINISHED, Request
from servelab.errors import SchedulerError
from servelab.schedulers import make_scheduler
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks
from servelab.sim import run as sim_run
from servelab.sim.decode_pool import TICKS_PER_S, RequestRecords
from servelab.sim.engine import Engine
from servelab.sim.loop import URGENT, Loop
from servelab.sim.run import EngineProcess
from servelab.timing.models import Constant


class _Scripted(Scheduler):
    """Returns whatever ``step`` makes of the view: a test writes each batch by hand."""

    name = "scripted"
    work_conserving = False
    decode_order = "explicit"

    def __init__(self) -> None:
        self.step: Callable[[EngineView], Batch] = lambda view: Batch([])

    def schedule(self, view: EngineView) -> Batch:
        return self.step(view)


def _scripted(budget: int = 64, count: int = 8) -> tuple[_Scripted, Engine]:
    scheduler = _Scripted()
    engine = Engine(scheduler, Constant(1.0), budget)
    engine.use_records(RequestRecords(count))
    return scheduler, engine


def _batch(engine: Engine, now: float) -> float:
    end = engine.start_batch(now)
    assert end is not None
    engine.finish_batch()
    return end


def test_a_request_preempted_after_leaving_out_of_order_waits_once() -> None:
    """Shortest-first finishes B's prefill behind A, so B leaves the queue lazily; preempting
    B later must not bring that stale copy back beside the new one."""
    scheduler, engine = _scripted()
    a, b = Request(0, 0.0, 10, 5), Request(1, 0.0, 2, 5)
    engine.admit(a)
    engine.admit(b)
    scheduler.step = lambda v: Batch([(next(iter(v.shortest_waiting())), 2)])
    t = _batch(engine, 0.0)
    assert list(engine.waiting) == [a] and b.status == DECODING
    scheduler.step = lambda v: Batch([], decode=v.last_decoders(1))
    t = _batch(engine, t)
    scheduler.step = lambda v: Batch([(a, 1)], preempt=v.last_decoders(1))
    t = _batch(engine, t)
    assert list(engine.waiting) == [b, a] and len(engine.waiting) == 2
    assert list(engine.shortest_waiting()) == [a, b]  # a has begun; b recomputes 2 + 1
    scheduler.step = lambda v: Batch(fill_chunks(v.waiting, 64, 64)[0])
    t = _batch(engine, t)  # one chunk each: b's whole recompute, a's prompt left
    assert not engine.waiting and engine.first_decoders(3) == [b, a]  # b resumed first
    scheduler.step = lambda v: Batch([], decode=v.first_decoders(v.num_decoding))
    while engine.has_work():
        t = _batch(engine, t)
    assert (a.status, b.status) == (FINISHED, FINISHED) and engine.outstanding == 0


class _ShortestFirstPreempting(Scheduler):
    """Shortest prompt first, every decoder served, and now and then the newest evicted: the
    waiting queue sees out-of-order leaves and preemptions interleaved. Checks the queue
    against the requests' statuses at every batch."""

    name = "spf-preempting"
    work_conserving = False
    decode_order = "explicit"

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self.admitted: list[Request] = []

    def schedule(self, view: EngineView) -> Batch:
        waiting = [r for r in self.admitted if r.status_name in ("waiting", "prefilling",
                                                                   "preempted")]
        assert sorted(r.id for r in view.waiting) == sorted(r.id for r in waiting)
        assert len(view.waiting) == len(waiting)
        by_length = list(view.shortest_waiting())
        assert sorted(r.id for r in by_length) == sorted(r.id for r in waiting)
        evict = (view.last_decoders(1)
                 if view.num_decoding > 1 and self._rng.random() < 0.3 else [])
        decode = [r for r in view.first_decoders(view.num_decoding)
                  if r not in evict][:view.budget // 2]
        room = view.budget - len(decode)
        chunks = []
        for req in by_length:
            if room <= 0:
                break
            m = min(req.prefill_left, room)
            chunks.append((req, m))
            room -= m
        return Batch(chunks, decode=decode, preempt=evict)


@pytest.mark.parametrize("seed", range(5))
def test_shortest_first_with_preemption_keeps_the_waiting_queue_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 80
    scheduler = _ShortestFirstPreempting(seed)
    engine = Engine(scheduler, Constant(1.0), 40)
    engine.use_records(RequestRecords(n))
    reqs = [Request(i, 0.0, int(rng.integers(1, 30)), int(rng.integers(2, 12)))
            for i in range(n)]
    t = 0.0
    for i, req in enumerate(reqs):
        engine.admit(req)
        scheduler.admitted.append(req)
        if i % 4 == 3:
            t = _batch(engine, t)
    while engine.has_work():
        t = _batch(engine, t)
    assert engine.preemptions > 10
    assert all(r.status == FINISHED for r in reqs) and engine.unprocessed_tokens == 0


def test_explicit_decoders_skipped_in_the_last_round_keep_their_gaps_out() -> None:
    """A decoder served in rounds 1-3 and skipped after, still running when the run stops:
    its two gaps leave the histogram; the completed request's three stay."""

    class SkipOldest(_Scripted):
        batches = 0

        def schedule(self, view: EngineView) -> Batch:
            self.batches += 1
            decoders = view.first_decoders(view.num_decoding)
            return Batch([(r, r.prefill_left) for r in view.waiting],
                         decode=decoders[1:] if self.batches >= 4 else decoders)

    engine = Engine(SkipOldest(), Constant(1.0), 64)
    rec = sim_run.run_engine(engine, np.array([0.0, 0.0]), np.array([1, 1]),
                             np.array([10, 4]), horizon=5.0)
    assert rec.completed == 1 and rec.finish[1] == 5.0
    assert rec.tbt_hist == {TICKS_PER_S: 3}


def test_a_request_in_the_running_batch_cannot_be_cancelled() -> None:
    engine = Engine(make_scheduler("sarathi"), Constant(1.0), 8)
    engine.use_records(RequestRecords(2))
    a, b = Request(0, 0.0, 4, 3), Request(1, 0.0, 10, 3)
    engine.admit(a)
    engine.admit(b)
    engine.start_batch(0.0)  # a's 4 and b's first 4
    for req in (a, b):
        with pytest.raises(ValueError, match="in the batch now running"):
            engine.cancel(req)
    engine.finish_batch()
    engine.cancel(b)  # between batches it may go
    assert (b.status, engine.outstanding, engine.unprocessed_tokens) == (CANCELLED, 1, 3)
    t = 1.0
    while engine.has_work():
        t = _batch(engine, t)
    assert a.status == FINISHED and engine.unprocessed_tokens == 0 and engine.outstanding == 0


@pytest.mark.parametrize("convention", ["paper", "engine"])
def test_a_preempted_request_can_be_cancelled(convention: str) -> None:
    """Its recompute and its remaining decode tokens leave the load; its gaps so far leave
    the TBT histogram (it will not complete)."""
    scheduler = _Scripted()
    engine = Engine(scheduler, Constant(1.0), 64, convention=convention)
    engine.use_records(RequestRecords(2))
    a, b = Request(0, 0.0, 4, 10), Request(1, 0.0, 4, 10)
    engine.admit(a)
    engine.admit(b)
    scheduler.step = lambda v: Batch([(r, r.prefill_left) for r in v.waiting],
                                     decode=v.first_decoders(v.num_decoding))
    t = _batch(engine, 0.0)
    for _ in range(3):
        t = _batch(engine, t)
    scheduler.step = lambda v: Batch([], decode=v.first_decoders(1), preempt=v.last_decoders(1))
    t = _batch(engine, t)
    emitted_a, _ = engine.progress(a)
    engine.cancel(b)
    assert engine.unprocessed_tokens == a.output_tokens - emitted_a
    assert engine.outstanding == 1 and engine.progress(b) == (0, -1.0)
    scheduler.step = lambda v: Batch([], decode=v.first_decoders(v.num_decoding))
    while engine.has_work():
        t = _batch(engine, t)
    assert engine.unprocessed_tokens == 0 and engine.records.completed == 1
    assert sum(engine.records.tbt.values()) == a.output_tokens - 1  # a's gaps alone


def _three_decoding() -> tuple[_Scripted, Engine, list[Request]]:
    scheduler, engine = _scripted()
    reqs = [Request(i, 0.0, 1, 5) for i in range(3)]
    for req in reqs:
        engine.admit(req)
    scheduler.step = lambda v: Batch([(r, 1) for r in v.waiting])
    _batch(engine, 0.0)
    return scheduler, engine, reqs


def test_a_decode_list_edited_in_place_is_checked_as_written() -> None:
    scheduler, engine, reqs = _three_decoding()

    def drop_last(view: EngineView) -> Batch:
        decoders = view.first_decoders(3)
        decoders.pop()
        return Batch([], decode=decoders)

    scheduler.step = drop_last
    _batch(engine, 1.0)
    assert [engine.progress(r)[0] for r in reqs] == [1, 1, 0]

    def repeat_first(view: EngineView) -> Batch:
        decoders = view.first_decoders(3)
        decoders.append(decoders[0])
        return Batch([], decode=decoders)

    scheduler.step = repeat_first
    with pytest.raises(SchedulerError, match="decode list twice"):
        engine.start_batch(2.0)


def test_a_decode_list_kept_from_an_earlier_batch_is_checked_again() -> None:
    scheduler, engine, reqs = _three_decoding()
    extra = Request(3, 0.0, 5, 5)
    engine.admit(extra)
    kept: dict[str, list[Request]] = {}

    def evict_newest(view: EngineView) -> Batch:
        kept["decoders"] = view.last_decoders(3)  # the very list the view handed out
        return Batch([(extra, 1)], preempt=kept["decoders"][:1])

    scheduler.step = evict_newest
    _batch(engine, 1.0)
    assert reqs[2].status_name == "preempted"
    scheduler.step = lambda v: Batch([], decode=kept["decoders"])  # the evicted one too
    with pytest.raises(SchedulerError, match="not decoding on this engine"):
        engine.start_batch(2.0)


def test_an_explicit_scheduler_must_name_its_decoders() -> None:
    scheduler, engine, _ = _three_decoding()
    scheduler.step = lambda v: Batch([], 2)
    with pytest.raises(SchedulerError, match="decode_order is 'explicit'"):
        engine.start_batch(1.0)


def test_numpy_integers_reach_the_view_and_the_engine() -> None:
    scheduler, engine, reqs = _three_decoding()
    scheduler.step = lambda v: Batch([], decode=v.first_decoders(np.int64(v.num_decoding)))
    _batch(engine, 1.0)
    assert engine.last_decoders(np.int32(1)) == [reqs[2]]
    sized = Engine(make_scheduler("sarathi"), Constant(1.0), np.int64(64), np.int32(8))
    assert (type(sized.budget), type(sized.seq_limit), sized.seq_limit) == (int, int, 8)


def test_a_follow_up_scheduled_when_a_request_finishes_joins_the_next_batch() -> None:
    """A workflow's next call, admitted at the very time its predecessor finishes, is in the
    batch the engine forms at that time, as an arrival at that time would be."""
    loop = Loop()
    engine = Engine(make_scheduler("sarathi"), Constant(1.0), 64, record_batches=True)
    engine.use_records(RequestRecords(3))
    process = EngineProcess(loop, engine, horizon=100.0, drain=True)
    first, other = Request(0, 0.0, 4, 1), Request(1, 0.0, 4, 3)
    follow_up = Request(2, 0.0, 4, 1)

    def on_events(events: list[Request]) -> None:
        if first in events and first.status == FINISHED:
            loop.at(loop.now, lambda: process.admit(follow_up), URGENT)

    process.on_events = on_events
    loop.at(0.0, lambda: (process.admit(first), process.admit(other)), URGENT)
    loop.run()
    assert engine.batches is not None
    starts = [b.start for b in engine.batches if any(i == 2 for i, _ in b.prefill)]
    assert starts == [2.0]  # first's only token ends the batch at 2.0
    assert follow_up.status == FINISHED


# -- a policy that waits on purpose (Batch.idle_until) ---------------------------------------


def test_an_empty_batch_with_idle_until_idles_the_engine() -> None:
    scheduler, engine = _scripted()
    a = Request(0, 0.0, 2, 1)
    engine.admit(a)
    scheduler.step = lambda v: Batch([], idle_until=2.5)
    assert engine.start_batch(0.0) is None and engine.idle_until == 2.5 and not engine.busy
    for bad, why in [(Batch([(a, 2)], idle_until=3.0), "for an empty batch"),
                     (Batch([], idle_until=0.0), "a finite time after now"),
                     (Batch([], idle_until=math.inf), "a finite time after now")]:
        scheduler.step = lambda v, batch=bad: batch
        with pytest.raises(SchedulerError, match=why):
            engine.start_batch(0.0)
    scheduler.step = lambda v: Batch([(a, 2)])
    assert engine.start_batch(2.5) == 3.5 and engine.idle_until == math.inf


class _Holding(Scheduler):
    """Holds prompts until two wait or the clock reads 4, then serves like Sarathi."""

    name = "holding"
    work_conserving = False

    def schedule(self, view: EngineView) -> Batch:
        if not view.num_decoding and len(view.waiting) < 2 and view.now < 4.0:
            return Batch([], idle_until=4.0)
        k = min(view.num_decoding, view.budget)
        return Batch(fill_chunks(view.waiting, view.budget - k, view.seq_limit - k)[0], k)


def test_an_idling_engine_wakes_when_its_policy_said_or_at_an_arrival() -> None:
    def run(arrival: list[float], drain: bool = True) -> sim_run.RunRecords:
        engine = Engine(_Holding(), Constant(1.0), 64)
        n = len(arrival)
        return sim_run.run_engine(engine, np.array(arrival), np.full(n, 2), np.full(n, 1),
                                  horizon=arrival[-1], drain=drain)

    alone = run([0.0])  # asked at 0, idle until 4: prefill 4-5, its token 5-6 (paper)
    assert alone.first_token.tolist() == [6.0] and alone.engines[0].busy_s == 2.0
    pair = run([0.0, 1.0])  # the second arrival opens it at 1; the wake at 4 finds it busy
    assert pair.first_token.tolist() == [3.0, 3.0] and pair.end_time == 3.0
    cut = run([0.0], drain=False)  # the wake is past the horizon: the run ends at it
    assert cut.completed == 0 and cut.end_time == 0.0
