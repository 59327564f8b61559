"""SLAI as its authors' code behaves (rad_slai_related.md A.4): the batch order on hand-built
states, the offsets, shortest-prompt-first, user priority, preemption, the ablations, the
cohort implementation against a naive one, and its median TTFT against Sarathi-Serve's."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import servelab
from servelab.core.batch import Batch
from servelab.core.kv import KVCache
from servelab.core.request import CANCELLED, DECODING, PREEMPTED, PREFILLING, WAITING, Request
from servelab.core.slo import SloClass
from servelab.errors import ConfigError
from servelab.schedulers import make_scheduler
from servelab.schedulers import slai as slai_module
from servelab.schedulers.base import EngineView, Scheduler
from servelab.schedulers.cohorts import MIXED, Cohort, CohortHeap
from servelab.schedulers.slai import Slai
from servelab.sim import run as sim_run
from servelab.sim.decode_pool import RequestRecords
from servelab.sim.engine import Engine
from servelab.simulation import prepare
from servelab.timing.models import Constant
from servelab.timing.presets import load_preset
from slai_oracle import SlaiOracle
from test_engine import _Blind

DOCS = Path(__file__).resolve().parent.parent / "docs"
STRICT, RELAXED = SloClass("strict", 0.05, 0.1), SloClass("relaxed", 0.95, 0.5)


class View:
    """A hand-built engine state, as a scheduler reads it (``EngineView``)."""

    def __init__(self, *, now: float = 10.0, budget: int = 512, kv: KVCache | None = None,
                 classes: tuple[SloClass, ...] = (), mean: float = 0.04,
                 end: float = 10.0) -> None:
        self.now = now
        self.budget = budget
        self.max_seqs = None
        self.seq_limit = budget
        self.kv = kv
        self.slo_classes = classes
        self.mean_batch_s = mean
        self.last_batch_end = end
        self.queue: list[Request] = []  # requests with prefill left, in the engine's order
        self.decoders: list[Request] = []
        self.held: dict[int, int] = {}  # blocks each request holds
        self.grows: set[int] = set()  # decoders whose next token takes a new block
        self.emitted: dict[int, int] = {}

    @property
    def waiting(self) -> list[Request]:
        return [r for r in self.queue if r.status in (WAITING, PREFILLING, PREEMPTED)]

    @property
    def prefilling(self) -> list[Request]:
        return [r for r in self.queue if r.status == PREFILLING]

    @property
    def num_decoding(self) -> int:
        return len(self.decoders)

    def first_decoders(self, k: int) -> list[Request]:
        return self.decoders[:k]

    def shortest_waiting(self) -> Any:
        rest = sorted((r for r in self.waiting if r.status != PREFILLING),
                      key=lambda r: r.prefill_left)
        return iter(self.prefilling + rest)

    def blocks_to_admit(self, req: Request) -> int:
        kv = self.kv
        return 0 if kv is None or req.status == PREFILLING else kv.blocks_for(req.prefill_left)

    def needs_block(self, req: Request) -> bool:
        return req.id in self.grows

    def blocks_held(self, req: Request) -> int:
        return self.held.get(req.id, 0)

    def progress(self, req: Request) -> tuple[int, float]:
        return self.emitted.get(req.id, 0), -1.0

    # building the state
    def waits(self, id: int, arrival: float, prompt: int, left: int | None = None,
              status: int = WAITING, cls: int = 0) -> Request:
        req = Request(id, arrival, prompt, 100, cls)
        req.status = status
        if left is not None:
            req.prefill_left = left
        self.queue.append(req)
        return req

    def decodes(self, id: int, arrival: float, cls: int = 0) -> Request:
        req = Request(id, arrival, 10, 100, cls)
        req.prefill_left = 0
        req.status = DECODING
        self.decoders.append(req)
        return req


def _slai(view: View, cohorts: list[tuple[float, list[Request]]] = (),  # type: ignore[assignment]
          paused: list[Request] = (), **knobs: object) -> Slai:  # type: ignore[assignment]
    """SLAI with a hand-built memory of ``view``: decoders with these LSTs, these paused
    prefills in this list order, and no last batch to process."""
    slai = Slai(**knobs)
    state = slai._fresh(view)  # type: ignore[arg-type]
    for lst, members in cohorts:
        state.heap.push(lst, MIXED, list(members))  # each member's TBT group looked up
    state.paused = list(paused)
    state.expect = view.num_decoding
    return slai


def _ids(batch: Batch) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    return ([(r.id, n) for r, n in batch.prefill], [r.id for r in batch.decode or []],
            [r.id for r in batch.preempt or []])


# --- the batch order ----------------------------------------------------------------------


def _ordered_state(budget: int) -> tuple[View, list[tuple[float, list[Request]]], list[Request]]:
    """Two critical decoders (LST 9.9 <= now), two that are not (LST 10.5), a paused prefill
    with 100 tokens left, and two new prompts: 50 tokens (older) and 30."""
    view = View(budget=budget)
    d1, d2, d3, d4 = (view.decodes(i, 0.1 * i) for i in (1, 2, 3, 4))
    paused = view.waits(5, 0.5, 300, left=100, status=PREFILLING)
    view.waits(6, 1.0, 50)
    view.waits(7, 2.0, 30)
    return view, [(9.9, [d1, d2]), (10.5, [d3, d4])], [paused]


def test_critical_decodes_then_paused_prefill_then_shortest_prompts_then_other_decodes() -> None:
    view, cohorts, paused = _ordered_state(200)
    assert _ids(_slai(view, cohorts, paused).schedule(view)) == (
        [(5, 100), (7, 30), (6, 50)], [1, 2, 3, 4], [])


def test_the_other_decodes_get_only_what_prefill_leaves() -> None:
    view, cohorts, paused = _ordered_state(140)  # 2 + 100 + 30 + 8 fill it
    assert _ids(_slai(view, cohorts, paused).schedule(view)) == (
        [(5, 100), (7, 30), (6, 8)], [1, 2], [])


def test_critical_decodes_take_the_budget_before_prefill() -> None:
    view, cohorts, paused = _ordered_state(3)
    assert _ids(_slai(view, cohorts, paused).schedule(view)) == ([(5, 1)], [1, 2], [])


@pytest.mark.parametrize(("limit", "decodes"), [(1, [1]), (3, [1, 2, 3]), (4, [1, 2, 3, 4])])
def test_the_decode_limit_counts_critical_and_other_decodes(limit: int, decodes: list[int]
                                                            ) -> None:
    view, cohorts, paused = _ordered_state(200)
    batch = _slai(view, cohorts, paused, limit_total_decodes=limit).schedule(view)
    assert _ids(batch)[1] == decodes


def test_equal_deadlines_go_oldest_arrival_first() -> None:
    """A cohort cut by the decode limit serves its oldest arrivals, as the released heap's
    (LST, arrival) order does, whatever order its members joined in."""
    view = View()
    young, old, middle = view.decodes(1, 3.0), view.decodes(2, 1.0), view.decodes(3, 2.0)
    slai = _slai(view, [(9.0, [young, old, middle])], limit_total_decodes=2)
    assert _ids(slai.schedule(view))[1] == [2, 3]


def test_paused_prefills_take_turns() -> None:
    """Step 2 takes paused prefills from the front of the list, and the released code puts
    each one served back at the end: two long prompts share the budget round robin."""
    view = View(budget=512)
    a = view.waits(1, 0.0, 2000, left=1500, status=PREFILLING)
    b = view.waits(2, 0.1, 2000, left=1500, status=PREFILLING)
    slai = _slai(view, paused=[a, b])
    served = []
    for _ in range(4):
        [(req, n)] = slai.schedule(view).prefill
        req.prefill_left -= n
        served.append(req.id)
    assert served == [1, 2, 1, 2]


def test_new_prompts_stop_at_the_first_that_does_not_fit() -> None:
    """The released loop breaks, it does not skip: oldest first, a prompt too big for the free
    blocks keeps a small one behind it waiting; shortest first, the small one goes."""
    for fcfs, admitted in ((True, []), (False, [(2, 16)])):
        view = View(kv=KVCache(20, 16))
        view.waits(1, 0.0, 400)  # 25 blocks of 16: more than the cache
        view.waits(2, 1.0, 16)
        assert _ids(_slai(view, fcfs=fcfs).schedule(view))[0] == admitted


def test_the_active_request_cap_counts_decoders_and_begun_prefills() -> None:
    view = View()
    view.decodes(1, 0.0)
    paused = view.waits(2, 0.0, 100, left=40, status=PREFILLING)
    view.waits(3, 1.0, 10)
    assert _ids(_slai(view, paused=[paused], max_active=2).schedule(view))[0] == [(2, 40)]
    assert _ids(_slai(view, paused=[paused], max_active=3).schedule(view))[0] == [(2, 40),
                                                                                (3, 10)]


# --- the offsets ----------------------------------------------------------------------------


def _lst_after_a_token(used_blocks: int | None, **knobs: object) -> float:
    """The LST a decoder gets from a batch that ended at 10.0 with mean batch time 0.04, TBT
    target 0.5 s, and ``used_blocks`` of 100 blocks in use (None: unlimited memory)."""
    kv = None if used_blocks is None else KVCache(100, 16)
    view = View(now=9.0, end=9.0, kv=kv)
    decoder = view.decodes(1, 0.0)
    slai = _slai(view, [(8.0, [decoder])], time_between_tokens=0.5, **knobs)
    assert _ids(slai.schedule(view))[1] == [1]
    view.now = view.last_batch_end = 10.0
    if kv is not None and used_blocks is not None:
        kv.free_blocks = 100 - used_blocks  # as the batch left the cache
    view.waits(2, 9.5, 1000, left=1000, status=PREFILLING)  # fills the next batch
    view.budget = 64
    slai._engines[id(view)].paused.append(view.queue[-1])
    assert _ids(slai.schedule(view)) == ([(2, 64)], [], [])  # its new LST has not passed
    [cohort] = slai._engines[id(view)].heap.cohorts()
    return cohort.lst


@pytest.mark.parametrize(("used", "offset"), [(None, 5), (0, 5), (95, 5), (96, 10), (97, 10)])
def test_the_offset_is_5_mean_batches_below_the_memory_limit_and_10_from_it(
        used: int | None, offset: float) -> None:
    assert _lst_after_a_token(used) == 10.0 + 0.5 - offset * 0.04


@pytest.mark.parametrize(("used", "knobs", "offset"), [
    (99, {"fixed_offset": True}, 5),
    (0, {"fixed_offset": True, "below_memory_limit_offset": 10}, 10),
    (99, {"memory_limit": 1.0}, 5), (100, {"memory_limit": 1.0}, 10),
    (50, {"memory_limit": 0.5, "above_memory_limit_offset": 2.5}, 2.5),
])
def test_offset_knobs(used: int, knobs: dict[str, object], offset: float) -> None:
    assert _lst_after_a_token(used, **knobs) == 10.0 + 0.5 - offset * 0.04


def test_each_class_has_its_own_tbt_target_and_decoders_keep_their_lst_until_served() -> None:
    """Deadlines come from each request's class; a decoder not served keeps its old LST."""
    view = View(now=9.0, end=9.0, classes=(STRICT, RELAXED), budget=2)
    strict, relaxed, skipped = view.decodes(1, 0.0, 0), view.decodes(2, 0.1, 1), \
        view.decodes(3, 0.2, 1)
    slai = _slai(view, [(8.0, [strict, relaxed]), (8.5, [skipped])])
    assert _ids(slai.schedule(view))[1] == [1, 2]
    view.now = view.last_batch_end = 10.0
    view.budget = 1
    assert _ids(slai.schedule(view))[1] == [3]  # still LST 8.5: first
    lsts = sorted(c.lst for c in slai._engines[id(view)].heap.cohorts())
    assert lsts == [10.0 + 0.1 - 5 * 0.04, 10.0 + 0.5 - 5 * 0.04]


# --- the waiting order ----------------------------------------------------------------------


def test_shortest_prompt_first_counts_a_recomputed_output_as_prompt() -> None:
    """A request preempted after 50 output tokens prefills 60 tokens again: its length for
    SPF is those 60 (the released code's prompt after ``reset_for_recompute``)."""
    view = View()
    view.waits(1, 0.0, 10, left=60, status=PREEMPTED)
    view.waits(2, 1.0, 40)
    view.waits(3, 2.0, 70)
    assert _ids(_slai(view).schedule(view))[0] == [(2, 40), (1, 60), (3, 70)]
    assert _ids(_slai(view, fcfs=True).schedule(view))[0] == [(1, 60), (2, 40), (3, 70)]


def test_user_priority_takes_the_strict_class_first() -> None:
    view = View(classes=(STRICT, RELAXED))
    view.waits(1, 0.0, 20, cls=1)
    view.waits(2, 1.0, 300, cls=0)
    view.waits(3, 2.0, 10, cls=1)
    assert _ids(_slai(view).schedule(view))[0] == [(3, 10), (1, 20), (2, 300)]
    assert _ids(_slai(view, user_priority=True).schedule(view))[0] == [(2, 300), (3, 10),
                                                                      (1, 20)]
    same = View(classes=(SloClass("a", 0.5, 0.2), SloClass("b", 0.5, 0.2, 1.0)))
    same.queue = view.queue  # equal targets: no strict tier, plain SPF
    assert _ids(_slai(same, user_priority=True).schedule(same))[0] == [(3, 10), (1, 20),
                                                                      (2, 300)]


# --- preemption -----------------------------------------------------------------------------


def _full_cache(paused: int) -> tuple[View, list[Request], list[Request]]:
    """No free block, ``paused`` paused prefills holding 5 blocks each, and two critical
    decoders holding 3 each, neither needing a new block."""
    kv = KVCache(100, 16)
    kv.free_blocks = 0
    view = View(kv=kv, budget=4)
    prefills = [view.waits(10 + i, float(i), 200, left=100, status=PREFILLING)
                for i in range(paused)]
    decoders = [view.decodes(1, 5.0), view.decodes(2, 6.0)]
    for req in prefills:
        view.held[req.id] = 5
    for req in decoders:
        view.held[req.id] = 3
    return view, prefills, decoders


def test_a_decode_without_a_free_block_preempts_the_last_paused_prefill() -> None:
    view, prefills, decoders = _full_cache(paused=2)
    batch = _slai(view, [(9.0, decoders)], paused=prefills).schedule(view)
    # The released list's last (11) goes; its 5 blocks serve both decodes; the budget of 4
    # leaves 2 tokens for the other paused prefill.
    assert _ids(batch) == ([(10, 2)], [1, 2], [11])


def test_a_decode_without_a_free_block_preempts_itself_when_nothing_is_paused() -> None:
    view, _, decoders = _full_cache(paused=0)
    assert _ids(_slai(view, [(9.0, decoders)]).schedule(view)) == ([], [2], [1])


def test_a_request_preempted_in_this_batch_is_not_admitted_in_it() -> None:
    """Preempted, the request goes to the front of the waiting list; reaching it stops the
    new prompts (the released code would find it no room), even with room for others."""
    view, prefills, decoders = _full_cache(paused=1)
    view.waits(20, 0.5, 16)
    view.budget = 100
    assert _ids(_slai(view, [(9.0, decoders)], paused=prefills, fcfs=True).schedule(view)) \
        == ([], [1, 2], [10])


# --- the same batches as the naive implementation -----------------------------------------


class _Recorder(Scheduler):
    """Runs ``inner`` and keeps each batch as ids: chunks, decode set, preemptions."""

    work_conserving = False
    decode_order = "explicit"

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.log: list[tuple[list[tuple[int, int]], list[int], list[int]]] = []

    def schedule(self, view: EngineView) -> Batch:
        batch = self.inner.schedule(view)
        chunks, decode, preempt = _ids(batch)
        self.log.append((chunks, sorted(decode), preempt))
        assert len(self.log) < 20_000, "runaway: no progress"
        return batch


def _random_run(cls: type[Scheduler], seed: int) -> tuple[list[Any], int, int]:
    """A random engine (memory or none, classes or none, caps, knobs), SLAI's batches on it."""
    rng = np.random.default_rng(seed)
    knobs = dict(max_active=int(rng.integers(2, 20)),
                 limit_total_decodes=int(rng.integers(1, 30)),
                 fcfs=bool(rng.random() < 0.3), user_priority=bool(rng.random() < 0.5),
                 fixed_offset=bool(rng.random() < 0.2),
                 memory_limit=float(rng.choice([0.5, 0.9, 0.96])),
                 time_between_tokens=float(rng.choice([0.05, 0.2, 0.5])))
    classes = [(), (STRICT, RELAXED), (SloClass("a", 0.5, 0.2), SloClass("b", 0.5, 0.2, 1.0)),
               (SloClass("fast", 0.5, 0.25), SloClass("slow", 0.5, 0.5))][seed % 4]
    kv = None if seed % 5 == 0 else KVCache(int(rng.integers(40, 120)),
                                            int(rng.choice([4, 16])),
                                            float(rng.choice([0.0, 0.01, 0.05])))
    budget = int(rng.integers(16, 200))
    kmax = None if seed % 3 else int(rng.integers(4, 40))
    # Exact binary batch times (0.0625 s) make deadlines from different targets coincide:
    # cohorts of two classes then merge, and ties go by arrival across them.
    timing = Constant(0.0625) if seed % 4 == 3 else load_preset("mistral-7b-rtx6000ada").timing
    n = 120
    arrival = np.sort(rng.uniform(0, 8, n))
    prompt, output = rng.integers(1, 90, n), rng.integers(1, 60, n)
    slo_class = rng.integers(0, len(classes), n) if classes else None
    recorder = _Recorder(cls(**knobs))
    engine = Engine(recorder, timing, budget, kmax, "engine" if seed % 2 else "paper", kv=kv,
                    slo_classes=classes)
    rec = sim_run.run_engine(engine, arrival, prompt, output, float(arrival[-1]), True,
                             slo_class)
    assert rec.completed == n
    return recorder.log, engine.preemptions, rec.iterations


@pytest.mark.parametrize("seed", range(40))
def test_cohorts_make_the_batches_a_heap_per_decoder_makes(seed: int) -> None:
    """Cohorts, lazy block counts and the engine's shortest-first index against A.4 written
    the naive way (tests/slai_oracle.py), batch for batch, on random engines."""
    assert _random_run(Slai, seed) == _random_run(SlaiOracle, seed)


def _plain_slai(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``schedulers.cohorts`` and ``schedulers.slai`` loaded afresh from their sources, so that
    a test can wrap their methods whichever build is installed (compiled classes cannot be
    patched); returns the two modules."""
    folder = Path(slai_module.__file__).parent
    plain = []
    for name in ("cohorts", "slai"):
        spec = importlib.util.spec_from_file_location(f"servelab.schedulers.{name}",
                                                      folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # slai imports the fresh cohorts, not the installed one
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        plain.append(module)
    return plain[0], plain[1]


def test_the_random_runs_reach_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is only as good as what it exercises: both kinds of preemption,
    cohorts cut part way, cohorts merged (of one TBT target and of two), and a request
    preempted in the batch that reaches it among the new prompts."""
    cohorts, slai = _plain_slai(monkeypatch)
    seen: Counter[str] = Counter()
    take, push, freed = cohorts.Cohort.take, cohorts.CohortHeap.push, slai._Batch.freed

    def counting_take(cohort: Cohort, count: int) -> list[Request]:
        seen["cut"] += count < cohort.remaining()
        return take(cohort, count)

    def counting_push(heap: CohortHeap, lst: float, group: int, members: list[Request]) -> None:
        same = heap._at.get(lst)
        if same is not None:
            seen["merged" if same.group == group else "merged across targets"] += 1
        push(heap, lst, group, members)

    def counting_freed(batch: Any, req: Request) -> None:
        seen["decoder preempted" if req.status == DECODING else "prefill preempted"] += 1
        freed(batch, req)

    monkeypatch.setattr(cohorts.Cohort, "take", counting_take)
    monkeypatch.setattr(cohorts.CohortHeap, "push", counting_push)
    monkeypatch.setattr(slai._Batch, "freed", counting_freed)
    for seed in range(40):
        _random_run(slai.Slai, seed)
    assert all(seen[k] >= 5 for k in ("cut", "merged", "merged across targets",
                                      "decoder preempted", "prefill preempted")), seen


# --- options, ablations, engines ----------------------------------------------------------


def test_options_are_the_released_defaults() -> None:
    assert Slai().options() == {
        "max_active": 128, "limit_total_decodes": 128, "time_between_tokens": 0.2,
        "fcfs": False, "user_priority": False, "fixed_offset": False,
        "below_memory_limit_offset": 5.0, "above_memory_limit_offset": 10.0,
        "memory_limit": 0.96}


@pytest.mark.parametrize(("knobs", "field", "reason"), [
    ({"time_between_tokens": 0}, "scheduler.time_between_tokens", "must be > 0 seconds"),
    ({"max_active": 0}, "scheduler.max_active", "must be >= 1"),
    ({"below_memory_limit_offset": -1}, "scheduler.below_memory_limit_offset", "must be >= 0"),
    ({"fcfs": "sometimes"}, "scheduler.fcfs", "expected true or false"),
])
def test_bad_knobs_are_refused(knobs: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_scheduler("slai", **knobs)
    assert info.value.field == field and info.value.reason.startswith(reason)


def test_swap_preemption_is_refused() -> None:
    engine = Engine(Slai(), Constant(0.05), 64, kv=KVCache(100, 16, preemption="swap"))
    engine.use_records(RequestRecords(1))
    engine.admit(Request(0, 0.0, 10, 5))
    with pytest.raises(ConfigError) as info:
        engine.start_batch(0.0)
    assert info.value.field == "preemption"


#: The ablations of SLAI's gain over Sarathi-Serve (docs/slai.md): each row's settings.
ABLATIONS = {
    "sarathi-serve": ("sarathi", {}),
    "spf alone": ("sarathi", {"order": "spf"}),
    "deadlines alone": ("slai", {"fcfs": True}),
    "both (slai)": ("slai", {}),
    "both, user priority": ("slai", {"user_priority": True}),
    "fcfs, fixed offset 10": ("slai", {"fcfs": True, "fixed_offset": True,
                                       "below_memory_limit_offset": 10, "memory_limit": 1}),
    "spf, fixed offset 10": ("slai", {"fixed_offset": True, "below_memory_limit_offset": 10,
                                      "memory_limit": 1}),
}


def test_docs_give_each_ablation_as_these_settings() -> None:
    text = (DOCS / "slai.md").read_text()
    for label, (name, knobs) in ABLATIONS.items():
        flags = " ".join(f"--set scheduler.{k}={str(v).lower()}" for k, v in knobs.items())
        line = f"| {label} | `--scheduler {name}{' ' + flags if flags else ''}` |"
        assert line in text, line


def test_each_ablation_runs_and_reports_its_settings() -> None:
    for name, knobs in ABLATIONS.values():
        summary = servelab.simulate({"preset": "mistral-7b-rtx6000ada", "load": 0.5,
                                     "requests": 300, "seed": 2, "drain": True,
                                     "scheduler": name,
                                     **{f"scheduler.{k}": v for k, v in knobs.items()}}).summary
        assert summary["completed"] == 300
        for knob, value in knobs.items():
            assert summary["scheduler_options"][knob] == value


def test_replicated_engines_keep_their_own_deadlines() -> None:
    """One SLAI object schedules every replica; each engine's state is its own."""
    base = {"preset": "mistral-7b-rtx6000ada", "load": 0.5, "requests": 600, "seed": 3,
            "scheduler": "slai", "drain": True}
    fleet = servelab.simulate({**base, "replicas": 3, "router": "round_robin"}).summary
    assert fleet["completed"] == 600 and fleet["in_flight"] == 0


def test_one_slai_object_serves_engine_after_engine_afresh() -> None:
    """What SLAI remembers is per engine: a second run with the same object (as
    ``--requests auto`` makes) batches exactly as a new object does, even when the first
    run stopped with requests in flight."""
    def run(slai: Slai, horizon: float) -> list[Any]:
        recorder = _Recorder(slai)
        engine = Engine(recorder, Constant(0.05), 64, kv=KVCache(60, 16, 0.01))
        rng = np.random.default_rng(4)
        n = 100
        sim_run.run_engine(engine, np.sort(rng.uniform(0, 5, n)), rng.integers(1, 80, n),
                           rng.integers(1, 60, n), horizon, horizon > 5)
        return recorder.log

    shared = Slai()
    run(shared, 2.0)  # stops mid-run: decoders, paused prefills and deadlines left behind
    assert run(shared, 10.0) == run(Slai(), 10.0)
    # A new engine may get a gone one's id: before its first batch, SLAI forgets the old one.
    view = View()
    old = view.waits(1, 0.0, 100, left=50, status=PREFILLING)
    slai = _slai(view, [(9.0, [view.decodes(2, 0.0)])], paused=[old])
    view.queue, view.decoders, view.mean_batch_s = [], [], 0.0
    view.waits(3, 0.0, 20)
    assert _ids(slai.schedule(view)) == ([(3, 20)], [], [])


def test_a_paused_prefill_cancelled_between_batches_is_forgotten() -> None:
    engine = Engine(Slai(), Constant(0.05), 8)
    engine.use_records(RequestRecords(2))
    long, short = Request(0, 0.0, 30, 3), Request(1, 0.0, 4, 3)
    engine.admit(long)
    end = engine.start_batch(0.0)
    engine.finish_batch()
    assert long.status == PREFILLING
    engine.admit(short)
    engine.cancel(long)
    assert long.status == CANCELLED
    end = engine.start_batch(end)
    assert end is not None
    assert [(r.id, n) for r, n in engine._chunks] == [(1, 4)]


# --- nothing SLAI reads tells it a true output length --------------------------------------


class _BlindView:
    """An engine's view with every request blindfolded, one wrapper per request for the run
    (SLAI remembers requests between batches, by identity)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wrapped: dict[int, _Blind] = {}

    def _blind(self, reqs: Any) -> list[_Blind]:
        return [self._wrapped.setdefault(r.id, _Blind(r)) for r in reqs]

    def __getattr__(self, name: str) -> object:
        value = getattr(self._engine, name)
        if name in ("waiting", "decoding", "prefilling"):
            return self._blind(value)  # type: ignore[arg-type]
        if name in ("first_decoders", "last_decoders", "shortest_waiting"):
            return lambda *args: self._blind(value(*args))  # type: ignore[operator]
        if name in ("blocks_to_admit", "needs_block", "blocks_held", "progress"):
            return lambda req: value(req.real)  # type: ignore[operator]
        return value


class _Blindfolded(Scheduler):
    """Runs SLAI on a blind view of its engine and hands the engine the real requests."""

    work_conserving = False
    decode_order = "explicit"
    name = "blindfolded-slai"

    def __init__(self, slai: type[Scheduler], **knobs: object) -> None:
        self.inner = slai(**knobs)  # type: ignore[call-arg]
        self.views: dict[int, _BlindView] = {}

    def schedule(self, view: EngineView) -> Batch:
        blind = self.views.setdefault(id(view), _BlindView(view))  # type: ignore[arg-type]
        batch = self.inner.schedule(blind)  # type: ignore[arg-type]
        return Batch([(r.real, n) for r, n in batch.prefill],
                     decode=[r.real for r in batch.decode or []],
                     preempt=[r.real for r in batch.preempt] if batch.preempt else None)


def test_slai_never_reads_a_true_output_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch for batch the same on blindfolded requests, with classes, a small cache that
    makes it preempt, and user priority. (On the plain sources: the compiled module accepts
    nothing but real requests.)"""
    assert not Slai.clairvoyant
    plain = _plain_slai(monkeypatch)[1].Slai
    seen, blind = [], []
    for scheduler, log in ((plain(user_priority=True), seen),
                           (_Blindfolded(plain, user_priority=True), blind)):
        recorder = _Recorder(scheduler)
        engine = Engine(recorder, Constant(0.05), 48, kv=KVCache(40, 8, 0.05),
                        slo_classes=(STRICT, RELAXED))
        rng = np.random.default_rng(8)
        n = 80
        rec = sim_run.run_engine(engine, np.sort(rng.uniform(0, 3, n)),
                                 rng.integers(1, 40, n), rng.integers(1, 40, n), 3.0, True,
                                 rng.integers(0, 2, n))
        assert rec.completed == n and engine.preemptions > 0
        log.extend(recorder.log)
    assert blind == seen


# --- the standard scenario ----------------------------------------------------------------


@pytest.mark.slow
def test_slai_median_ttft_is_below_sarathi_serves_in_the_standard_scenario() -> None:
    """Mistral-7B on an RTX 6000 Ada, ShareGPT lengths, 5 % strict (TBT 0.1 s) and 95 %
    relaxed (0.5 s) users, Poisson arrivals at 0.6 of lambda* (the capacity of 128 requests
    at a time), 14,733 KV blocks of 16 tokens, seed 1. Sarathi-Serve as the paper ran it:
    128 requests at most (``--kmax 128``). Measured: SLAI 121 ms, Sarathi-Serve 2,827 ms."""
    scenario = prepare({"preset": "mistral-7b-rtx6000ada", "prefill": "sharegpt",
                        "decode": "sharegpt", "load": 0.6, "seed": 1, "requests": 3000,
                        "slo": ["strict:0.05:tbt=0.1", "relaxed:0.95:tbt=0.5"]})
    w = scenario.workload
    medians = {}
    for name, kmax in (("slai", None), ("sarathi", 128)):
        engine = Engine(make_scheduler(name), scenario.preset.timing, scenario.budget, kmax,
                        scenario.convention, kv=KVCache(14733, 16, 0.01),
                        slo_classes=scenario.spec.slo)
        rec = sim_run.run_engine(engine, w.arrival, w.prompt, w.output, float(w.arrival[-1]),
                                 True, w.slo_class)
        assert rec.completed == len(w.arrival)
        medians[name] = float(np.median(np.asarray(rec.first_token) - w.arrival))
    # A tenfold margin: the difference is SPF's at the cap's capacity, not noise.
    assert medians["slai"] * 10 < medians["sarathi"], medians
