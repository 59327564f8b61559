"""KV memory in the engine: blocks allocated as prefills begin and decodes grow, freed at the
end; preemption by recompute or swap; the FCFS policies' admission and victim rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servelab.core.batch import Batch
from servelab.core.kv import KVCache
from servelab.core.request import Request
from servelab.errors import SchedulerError
from servelab.schedulers import make_scheduler
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks
from servelab.schedulers.memory import MemoryRoom, fit_decoders
from servelab.sim import run as sim_run
from servelab.sim.decode_pool import RequestRecords
from servelab.sim.engine import BatchObserver, Engine
from servelab.timing.models import Constant

FCFS_POLICIES = ("sarathi", "orca", "vllm", "fastertransformer", "kfcfs")


class NamedSarathi(Scheduler):
    """Sarathi's batches under memory, with the decoders named one by one: the explicit path
    keeps each decoder's blocks itself, an independent check of the FCFS pool's buckets."""

    name = "named-sarathi"
    work_conserving = True
    decode_order = "explicit"

    def schedule(self, view: EngineView) -> Batch:
        d = min(view.num_decoding, view.budget, view.seq_limit)
        d, victims, free = fit_decoders(view, d)
        room = MemoryRoom(view, free, victims)
        chunks = fill_chunks(view.waiting, view.budget - d, view.seq_limit - d, None, room)[0]
        return Batch(chunks, decode=view.first_decoders(d), preempt=victims or None)


def _workload(seed: int, n: int = 150, prompt_max: int = 60, output_max: int = 80
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 30, n))
    return arrival, rng.integers(1, prompt_max, n), rng.integers(1, output_max, n)


class _Audit(BatchObserver):
    """After every batch: no more blocks in use than exist, and (paper convention) exactly
    the blocks the requests' progress implies: a decoder holds ceil((prompt + emitted) /
    block) blocks, a begun prefill those of its whole prefill (prompt and output so far),
    nobody else any."""

    def __init__(self, kv: KVCache, reserve: int) -> None:
        self.kv = kv
        self.reserve = reserve  # slots a policy reserves at admission, at least
        self.batches = 0

    def batch_done(self, engine: Engine, now: float) -> None:
        kv = self.kv
        assert 0 <= kv.free_blocks <= kv.num_blocks
        holders = [*engine.decoding, *engine.prefilling]
        expected = sum(
            math.ceil(max(r.prompt_tokens + engine.progress(r)[0], self.reserve) / kv.block_size)
            for r in holders)
        assert kv.used_blocks == expected, (now, kv.used_blocks, expected)
        assert engine.kv_peak_blocks <= kv.num_blocks
        self.batches += 1


def _run(scheduler: Scheduler, kv: KVCache | None, seed: int, budget: int = 64,
         convention: str = "paper", audit: bool = False) -> tuple[Engine, sim_run.RunRecords]:
    arrival, prompt, output = _workload(seed)
    engine = Engine(scheduler, Constant(0.05), budget, convention=convention, kv=kv)
    if audit:
        assert kv is not None
        engine.observers.append(_Audit(kv, scheduler.kv_reserve_tokens()))
    return engine, sim_run.run_engine(engine, arrival, prompt, output,
                                      horizon=float(arrival[-1]), drain=True)


@pytest.mark.parametrize("policy", FCFS_POLICIES)
def test_memory_that_never_binds_changes_nothing(policy: str) -> None:
    """Unlimited memory and a cache too large to matter give the same run, to the bit."""
    _, free = _run(make_scheduler(policy), None, seed=1)
    _, roomy = _run(make_scheduler(policy), KVCache(100_000, 16), seed=1)
    assert roomy.first_token.tolist() == free.first_token.tolist()
    assert roomy.finish.tolist() == free.finish.tolist()
    assert roomy.tbt_hist == free.tbt_hist


@pytest.mark.parametrize("policy", [*FCFS_POLICIES, "orca-reserve", "fastertransformer-static"])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_blocks_in_use_are_what_the_requests_hold_and_every_request_completes(
        policy: str, preemption: str) -> None:
    """A cache of 30 blocks of 16 slots against 150 requests of up to 138 tokens: the
    growing policies preempt, the reserving ones never do; every request still finishes with
    every token, the work is every slot once plus the recomputed prefills, and every block
    comes back. (A budget of 160: a whole-prompt policy must fit a recomputed prompt, the
    prompt and the output so far, in one batch.)"""
    kv = KVCache(30, 16, 0.01, preemption, swap_block_s=0.001)
    knobs = {"max_seq_len": 144} if "-" in policy else {}
    engine, rec = _run(make_scheduler(policy, **knobs), kv, seed=2, budget=160, audit=True)
    arrival, prompt, output = _workload(2)
    assert rec.completed == len(arrival) and np.isfinite(rec.finish).all()
    assert sum(rec.tbt_hist.values()) == int((output - 1).sum())
    slots = int(prompt.sum() + output.sum())
    assert rec.prefill_tokens + rec.decode_tokens == slots + engine.recomputed_tokens
    assert kv.free_blocks == kv.num_blocks and engine.outstanding == 0
    if "-" in policy:  # 144 slots reserved: no request outgrows its blocks
        assert engine.preemptions == 0
    elif policy != "fastertransformer":  # FT's static batches may or may not outgrow them
        assert engine.preemptions > 0
    if preemption == "swap":
        assert engine.swapped_blocks > 0 or engine.preemptions == 0
    else:
        assert engine.swapped_blocks == 0


@pytest.mark.parametrize("seed", range(40))
def test_the_fcfs_pool_and_named_decoders_keep_the_same_blocks(seed: int) -> None:
    """The pool files each decoder's next block round in buckets; the named path counts
    decoder by decoder. The same decisions must give the same run, to the bit, across block
    sizes, watermarks, both conventions and both kinds of preemption."""
    rng = np.random.default_rng(1000 + seed)
    block = int(rng.choice([1, 2, 4, 16]))
    blocks = int(rng.integers(40, 120))
    while blocks * block < 140:  # one request of up to 59 + 79 tokens must fit alone
        blocks *= 2
    budget = int(rng.integers(16, 128))
    settings = dict(watermark=0.05 if seed % 4 else 0.0,
                    preemption="swap" if seed % 3 == 0 else "recompute", swap_block_s=0.01)
    convention = "engine" if seed % 2 else "paper"
    runs = []
    for scheduler in (make_scheduler("sarathi"), NamedSarathi()):
        kv = KVCache(blocks, block, **settings)  # type: ignore[arg-type]
        engine, rec = _run(scheduler, kv, seed, budget, convention)
        runs.append((rec.first_token.tolist(), rec.finish.tolist(), rec.tbt_hist,
                     engine.preemptions, engine.recomputed_tokens, engine.swapped_blocks,
                     engine.kv_peak_blocks, kv.free_blocks))
    assert runs[0] == runs[1]


def test_a_reservation_caps_the_requests_running_at_once() -> None:
    """orca-reserve holds ceil(max_seq_len / block) blocks for every admitted request."""
    kv = KVCache(40, 16)
    engine = Engine(make_scheduler("orca-reserve", max_seq_len=160), Constant(0.05), 512,
                    kv=kv)

    class Concurrency(BatchObserver):
        most = 0

        def batch_done(self, engine: Engine, now: float) -> None:
            running = engine.num_decoding + len(engine.prefilling)
            Concurrency.most = max(Concurrency.most, running)

    engine.observers.append(Concurrency())
    arrival, prompt, output = np.zeros(30), np.full(30, 20), np.full(30, 30)
    rec = sim_run.run_engine(engine, arrival, prompt, output, horizon=0.0, drain=True)
    assert rec.completed == 30 and engine.preemptions == 0
    assert Concurrency.most == 40 // 10  # 160 slots are 10 blocks; 4 requests fill 40
    assert engine.kv_peak_blocks == 40


def test_swapping_costs_transfer_time_and_no_recompute() -> None:
    def run(seconds: float) -> tuple[Engine, sim_run.RunRecords]:
        kv = KVCache(40, 16, preemption="swap", swap_block_s=seconds)
        return _run(make_scheduler("sarathi"), kv, seed=3)

    free_engine, free_rec = run(0.0)
    engine, rec = run(0.01)
    recomputing, _ = _run(make_scheduler("sarathi"), KVCache(40, 16), seed=3)
    assert engine.swapped_blocks > 0 and free_engine.swapped_blocks > 0
    # Only begun prefills are recomputed under swap; decoders keep their KV.
    assert engine.recomputed_tokens < recomputing.recomputed_tokens / 4
    assert rec.finish.max() > free_rec.finish.max()  # the copies take time


class _Scripted(Scheduler):
    name = "scripted"
    work_conserving = False
    decode_order = "explicit"

    def __init__(self) -> None:
        self.step = lambda view: Batch([])

    def schedule(self, view: EngineView) -> Batch:
        return self.step(view)


def _scripted_engine(blocks: int = 10) -> tuple[_Scripted, Engine, KVCache]:
    scheduler = _Scripted()
    kv = KVCache(blocks, 4)
    engine = Engine(scheduler, Constant(1.0), 64, kv=kv)
    engine.use_records(RequestRecords(4))
    return scheduler, engine, kv


def _begun_prefill() -> tuple[_Scripted, Engine, KVCache, Request]:
    """A 12-token prompt, 5 tokens into its prefill (its 3 blocks allocated)."""
    scheduler, engine, kv = _scripted_engine()
    a = Request(0, 0.0, 12, 2)
    engine.admit(a)
    scheduler.step = lambda v: Batch([(a, 5)])
    engine.start_batch(0.0)
    engine.finish_batch()
    return scheduler, engine, kv, a


def test_a_begun_prefill_can_be_preempted_and_starts_over() -> None:
    scheduler, engine, kv, a = _begun_prefill()
    assert kv.used_blocks == 3 and engine.blocks_held(a) == 3  # the whole 12-token prompt
    scheduler.step = lambda v: Batch([(a, 1)], preempt=[a])
    with pytest.raises(SchedulerError, match="both preempted and given a chunk"):
        engine.start_batch(1.0)
    b = Request(1, 0.0, 4, 1)
    engine.admit(b)
    scheduler.step = lambda v: Batch([(b, 4)], preempt=[a])
    engine.start_batch(1.0)
    engine.finish_batch()
    assert a.status_name == "waiting" and a.prefill_left == 12 and engine.prefilling == []
    assert engine.recomputed_tokens == 5 and engine.preemptions == 1
    assert kv.used_blocks == 1  # b's prompt, decoding


def test_a_batch_that_outgrows_the_cache_is_refused() -> None:
    scheduler, engine, _ = _scripted_engine(blocks=3)
    a, b = Request(0, 0.0, 8, 2), Request(1, 0.0, 8, 2)
    engine.admit(a)
    engine.admit(b)
    scheduler.step = lambda v: Batch([(a, 8), (b, 8)])  # 2 + 2 blocks, 3 exist
    with pytest.raises(SchedulerError, match="needs 4 new KV blocks, and 3 are free"):
        engine.start_batch(0.0)


def test_cancelling_gives_blocks_back() -> None:
    _, engine, kv, a = _begun_prefill()
    engine.cancel(a)
    assert kv.free_blocks == kv.num_blocks and engine.outstanding == 0


def _swapped_out() -> tuple[_Scripted, Engine, KVCache, Request, Request, float]:
    """a and b prefilled in a 4-block cache (2 blocks each); b then swapped out at 0.5 s a
    block. Returns the engine and the time it is free again."""
    scheduler = _Scripted()
    kv = KVCache(4, 4, preemption="swap", swap_block_s=0.5)
    engine = Engine(scheduler, Constant(1.0), 64, kv=kv)
    engine.use_records(RequestRecords(2))
    a, b = Request(0, 0.0, 7, 3), Request(1, 0.0, 7, 3)
    engine.admit(a)
    engine.admit(b)
    scheduler.step = lambda v: Batch([(a, 7), (b, 7)])
    t = engine.start_batch(0.0)
    engine.finish_batch()
    scheduler.step = lambda v: Batch([], decode=v.first_decoders(1), preempt=v.last_decoders(1))
    t = engine.start_batch(t)
    assert t == 2.0 + 0.5 * 2  # b's two blocks go out in this batch
    engine.finish_batch()
    assert b.status_name == "swapped" and engine.progress(b) == (0, -1.0)  # no token yet
    return scheduler, engine, kv, a, b, t


def test_a_swapped_out_request_comes_back_or_can_be_cancelled() -> None:
    scheduler, engine, kv, a, b, t = _swapped_out()
    scheduler.step = lambda v: Batch([], decode=v.last_decoders(1))
    t = engine.start_batch(t)  # a now holds 2 blocks (7 + 1 slots): b's 2 fit again
    assert b.status_name == "decoding" and t == 3.0 + 1.0 + 0.5 * 2
    engine.finish_batch()
    assert engine.progress(b) == (1, t) and kv.free_blocks == 0
    scheduler.step = lambda v: Batch([], decode=v.last_decoders(1), preempt=v.first_decoders(1))
    engine.start_batch(t)
    engine.finish_batch()
    assert a.status_name == "swapped"
    engine.cancel(a)
    assert a.status_name == "cancelled" and engine.outstanding == 1


@pytest.mark.parametrize(("config", "says"), [
    # 2048 reserved slots are 128 blocks; 100 exist.
    ({"scheduler": "orca-reserve", "kv_blocks": 100}, "reserves 2,048 tokens (128 blocks)"),
    # vllm never splits a prompt: a 129 + 112 request preempted late recomputes 240 tokens.
    ({"scheduler": "vllm", "kv_blocks": 100, "budget": 200}, "recomputes up to 240 tokens"),
])
def test_what_a_policy_could_never_schedule_within_memory_is_refused_first(
        config: dict, says: str) -> None:
    import servelab
    from servelab import ConfigError

    with pytest.raises(ConfigError) as info:
        servelab.simulate({"load": 0.5, "requests": 1000, **config})
    assert info.value.field == "kv_blocks" and says in info.value.reason
    # Swapping keeps a decoder's KV: nothing is recomputed, so that run may go ahead.
    if config["scheduler"] == "vllm":
        servelab.simulate({"load": 0.5, "requests": 1000, **config, "preemption": "swap"})


def test_a_swap_in_before_an_idle_call_is_paid_by_the_next_batch() -> None:
    """A policy that idles (``Batch.idle_until``) on the call that swapped b back in: the
    transfer is paid by the batch that runs next."""
    scheduler, engine, _, _, b, t = _swapped_out()
    scheduler.step = lambda v: Batch([], idle_until=4.0)
    assert engine.start_batch(t) is None and b.status_name == "decoding"
    scheduler.step = lambda v: Batch([], decode=[b])
    assert engine.start_batch(4.0) == 4.0 + 1.0 + 0.5 * 2
