"""The event loop and the engine's lifecycle, driven by hand (docs/architecture.md)."""

from __future__ import annotations

import math

import pytest

from servelab.core.request import DECODING, FINISHED, PREFILLING, Request
from servelab.schedulers import make_scheduler
from servelab.sim.decode_pool import NO_TOKEN, RequestRecords
from servelab.sim.engine import Engine
from servelab.sim.loop import NORMAL, URGENT, Loop, Source
from servelab.timing.models import Constant


class _Times(Source):
    """Events known in advance, each recorded when it fires."""

    def __init__(self, times: list[float], log: list[str]) -> None:
        self._times = times
        self._log = log

    def next_time(self) -> float:
        return self._times[0] if self._times else math.inf

    def fire(self) -> None:
        self._log.append(f"source@{self._times.pop(0)}")


def test_the_loop_orders_by_time_then_priority_then_scheduling_order() -> None:
    loop, log = Loop(), []
    loop.at(2.0, lambda: log.append("normal@2 first"))
    loop.at(2.0, lambda: log.append("urgent@2"), URGENT)
    loop.at(2.0, lambda: log.append("normal@2 second"), NORMAL)
    loop.at(1.0, lambda: loop.at(1.0, lambda: log.append("scheduled@1 at 1")))
    loop.add_source(_Times([2.0, 3.0], log))
    assert loop.run(until=2.5) == 2.0
    # A source's events are urgent: the arrival at 2 comes before everything else at 2.
    assert log == ["scheduled@1 at 1", "source@2.0", "urgent@2", "normal@2 first",
                   "normal@2 second"]
    assert loop.run() == 3.0 and log[-1] == "source@3.0"
    with pytest.raises(ValueError, match="before now"):
        loop.at(1.0, lambda: None)


def test_a_cancelled_action_neither_runs_nor_moves_the_clock() -> None:
    loop, log = Loop(), []
    loop.at(1.0, lambda: log.append("kept@1"))
    late = loop.at(9.0, lambda: log.append("cancelled@9"))
    loop.cancel(late)
    assert loop.run() == 1.0 and log == ["kept@1"]


def test_free_until_says_whether_anything_else_is_due() -> None:
    loop, log = Loop(), []
    loop.add_source(_Times([5.0], log))
    loop.at(3.0, lambda: None)
    assert loop.free_until(2.9) and not loop.free_until(3.0)
    loop.run(until=4.0)
    assert loop.free_until(4.9) and not loop.free_until(5.0)


def _engine(scheduler: str = "sarathi", budget: int = 8) -> Engine:
    engine = Engine(make_scheduler(scheduler), Constant(1.0), budget)
    engine.use_records(RequestRecords(10))
    return engine


def test_the_engine_lifecycle_applies_a_batch_at_its_end() -> None:
    """admit, start_batch (its end time), finish_batch (first tokens and finishes); a router
    reading the engine mid-batch sees the state before the batch."""
    engine = _engine()
    a, b = Request(0, 0.0, 6, 2), Request(1, 0.0, 4, 1)
    engine.admit(a)
    engine.admit(b)
    assert engine.unprocessed_tokens == 13 and engine.outstanding == 2
    assert engine.start_batch(0.0) == 1.0  # 6 + 2 of 4 prompt tokens: budget 8
    assert engine.busy and engine.unprocessed_tokens == 13  # nothing applied yet
    assert a.prefill_left == 6 and a.status != DECODING
    assert engine.finish_batch() == []  # no token yet (paper convention)
    assert (a.status, b.status, b.prefill_left) == (DECODING, PREFILLING, 2)
    assert engine.unprocessed_tokens == 5 and engine.prefilling == [b]
    assert engine.start_batch(1.0) == 2.0  # a decodes, b finishes its prefill
    events = engine.finish_batch()
    assert events == [a] and engine.progress(a) == (1, 2.0)  # a's first token
    assert engine.start_batch(2.0) == 3.0
    assert set(engine.finish_batch()) == {a, b}  # a's second and last, b's only
    assert (a.status, b.status, engine.outstanding) == (FINISHED, FINISHED, 0)
    assert engine.progress(b) == (1, 3.0)
    assert engine.start_batch(3.0) is None  # idle
    assert engine.iterations == 3 and engine.mean_batch_s == 1.0
    assert engine.last_batch_end == 3.0 and engine.records.completed == 2


def test_progress_is_the_same_in_both_decode_forms() -> None:
    """O(1) progress for any request, whether the pool serves it lazily or by name."""
    from test_engine import NEWEST_FIRST

    for explicit in (False, True):
        engine = Engine(NEWEST_FIRST() if explicit else make_scheduler("sarathi"),
                        Constant(1.0), 64)
        engine.use_records(RequestRecords(3))
        reqs = [Request(i, 0.0, 1, 5) for i in range(3)]
        for req in reqs:
            engine.admit(req)
        assert engine.progress(reqs[0]) == (0, NO_TOKEN)
        now = 0.0
        for _ in range(3):
            end = engine.start_batch(now)
            assert end is not None
            engine.finish_batch()
            now = end
        assert [engine.progress(r) for r in reqs] == [(2, 3.0)] * 3
        assert engine.first_decoders(2) == reqs[:2] and engine.last_decoders(1) == [reqs[2]]


def test_a_waiting_request_can_be_cancelled() -> None:
    engine = _engine()
    req = Request(0, 0.0, 6, 2)
    engine.admit(req)
    engine.cancel(req)
    assert engine.outstanding == 0 and engine.unprocessed_tokens == 0 and not engine.waiting
    assert engine.start_batch(0.0) is None
    with pytest.raises(ValueError, match="waiting on this engine"):
        engine.cancel(req)
