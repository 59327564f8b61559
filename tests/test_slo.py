"""Service-level classes: the class table, the draws, the requests that carry them, and the
per-class latencies, SLO attainment and goodput of the summary."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

import servelab
from servelab import simulation
from servelab.analysis import metrics
from servelab.analysis.metrics import hist_stats_ms, slo_summary
from servelab.config import SimConfig
from servelab.core.batch import Batch
from servelab.core.request import Request
from servelab.core.slo import SloClass, parse_slo_classes
from servelab.errors import ConfigError
from servelab.report.table import simulate_text
from servelab.results import RequestTable, to_json
from servelab.schedulers.base import EngineView, Scheduler, fill_chunks
from servelab.sim.decode_pool import TICKS_PER_S
from servelab.sim.engine import Engine
from servelab.sim.run import run_engine, run_engines
from servelab.timing.models import Constant
from servelab.workload.build import WorkloadSpec

SLAI = ("strict:0.05:tbt=0.1", "relaxed:0.95:tbt=0.5")  # the SLAI README's example
STRICT, RELAXED = SloClass("strict", 0.05, 0.1), SloClass("relaxed", 0.95, 0.5)
SMALL = {"rate": 10, "requests": 2000, "seed": 4}

# --- the class table ---------------------------------------------------------------------------


def test_specs_mappings_and_classes_read_as_one_table() -> None:
    assert parse_slo_classes(list(SLAI)) == (STRICT, RELAXED)
    assert parse_slo_classes([" gold : 0.25 : ttft=2, tbt=0.05 ", "free:0.75:tbt=1"]) == (
        SloClass("gold", 0.25, 0.05, 2.0), SloClass("free", 0.75, 1.0))
    assert parse_slo_classes([{"name": "strict", "probability": 0.05, "tbt": 0.1},
                              {"name": "relaxed", "probability": "0.95", "tbt": "0.5",
                               "ttft": None}]) == (STRICT, RELAXED)
    assert parse_slo_classes((STRICT, RELAXED)) == (STRICT, RELAXED)
    assert parse_slo_classes("all:1:tbt=0.2") == (SloClass("all", 1.0, 0.2),)
    assert parse_slo_classes(None) == parse_slo_classes([]) == ()
    # 0.1 + 0.2 + 0.7 is 1.0000000000000002 in binary: within the tolerance, like any
    # decimals that sum to 1; a class of probability 0 is allowed (and never drawn).
    assert len(parse_slo_classes(["a:0.1:tbt=1", "b:0.2:tbt=1", "c:0.7:tbt=1",
                                  "never:0:tbt=1"])) == 4


BAD_TABLES = [
    (["strict:0.05:tbt=0", "relaxed:0.95:tbt=0.5"], "strict: tbt must be > 0"),
    (["strict:1:tbt=-0.1"], "tbt must be > 0"),
    (["strict:1:tbt=0.1,ttft=0"], "ttft must be > 0"),
    (["strict:1.5:tbt=0.1", "relaxed:-0.5:tbt=0.5"], "probability 1.5 is outside [0, 1]"),
    (["strict:0.05:tbt=0.1", "relaxed:0.9:tbt=0.5"], "sum to 0.95, not 1"),
    (["a:0.5:tbt=1", "b:0.5000000021:tbt=1"], "not 1"),  # 2.1e-9 over: past the tolerance
    (["strict:0.5:tbt=0.1", "strict:0.5:tbt=0.5"], "strict given twice"),
    (["strict:0.05"], "expected NAME:PROB:tbt=SECONDS"),
    (["strict:0.05:tbt=0.1:x"], "expected NAME:PROB:tbt=SECONDS"),
    (["strict:1:ttft=0.1"], "needs a TBT target"),
    (["strict:1:tbt=0.1,tbt=0.2"], "tbt given twice"),
    (["strict:1:tpot=0.1"], "expected tbt=SECONDS or ttft=SECONDS, got 'tpot=0.1'"),
    (["strict:1:tbt"], "expected tbt=SECONDS or ttft=SECONDS"),
    (["strict:x:tbt=0.1"], "expected a number as strict's probability, got 'x'"),
    (["strict:1:tbt=fast"], "expected seconds as strict's tbt, got 'fast'"),
    (["strict:1:tbt=inf"], "expected seconds as strict's tbt"),
    ([":1:tbt=0.1"], "class name ''"),
    (["a b:1:tbt=0.1"], "class name 'a b'"),
    ([{"name": "strict", "probability": 1}], "a class needs tbt"),
    ([{"name": "strict", "probability": 1, "tbt": 1, "tpot": 1}], "unknown key tpot"),
    ([7], "expected NAME:PROB:tbt=SECONDS[,ttft=SECONDS] or a mapping"),
    (7, "expected a list of classes"),
    ([f"c{i}:{1 / 256}:tbt=1" for i in range(256)], "at most 255 classes"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_TABLES, ids=[r for _, r in BAD_TABLES])
def test_bad_tables_are_refused_with_the_reason(raw: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_slo_classes(raw)
    assert caught.value.field == "slo" and reason in caught.value.reason


@pytest.mark.parametrize(("data", "field"), [
    ({"slo": ["a:1:tbt=0"]}, "slo"),
    ({"workload.slo": ["a:1:tbt=0"]}, "workload.slo"),
    ({"workload": {"slo": [{"name": "a", "probability": 2, "tbt": 1}]}}, "workload.slo"),
])
def test_a_bad_table_is_named_as_written(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SimConfig.from_dict({"rate": 1, **data})
    assert caught.value.field == field


def test_the_config_keeps_the_table_through_replace_and_overrides() -> None:
    config = SimConfig.from_dict({"rate": 1, "workload": {"slo": list(SLAI)}})
    assert config.slo == (STRICT, RELAXED) == config.replace(rate=2).slo
    assert SimConfig.from_dict({"rate": 1}).slo == ()
    dropped = SimConfig.from_dict({"rate": 1, "slo": list(SLAI)}, overrides=[("slo", None)])
    assert dropped.slo == ()


# --- the draws ---------------------------------------------------------------------------------


def _spec(slo: tuple[SloClass, ...] = (), trace: str | None = None) -> WorkloadSpec:
    return WorkloadSpec.resolve("poisson", "lognormal:mean=100,sigma=1", "geometric:50", trace,
                                None, slo)


def test_classes_are_drawn_with_their_probabilities() -> None:
    """200,000 draws: each class count is Binomial(n, p), so it lies within 4 standard
    deviations sqrt(n p (1 - p)) of n p but with probability ~6e-5 (two-sided normal tail),
    while drawing the wrong class (off by one in the cumulative table, say) misses by
    thousands of them; a class of probability 0 is never drawn."""
    classes = parse_slo_classes(["a:0.05:tbt=1", "never:0:tbt=1", "b:0.15:tbt=1",
                                 "c:0.8:tbt=1"])
    n = 200_000
    drawn = _spec(classes).stream(10.0, seed=7).first(n).slo_class
    assert drawn is not None and drawn.dtype == np.uint8
    counts = np.bincount(drawn, minlength=len(classes))
    assert counts[1] == 0
    for count, c in zip(counts, classes, strict=True):
        assert abs(count - n * c.probability) <= 4 * math.sqrt(n * c.probability
                                                                * (1 - c.probability))


def test_classes_move_no_arrival_and_no_length_and_a_prefix_never_changes() -> None:
    plain = _spec().stream(10.0, seed=3).first(20_000)
    stream = _spec((STRICT, RELAXED)).stream(10.0, seed=3)
    short = stream.first(5_000)  # what an auto run's first step draws
    mixed = stream.first(20_000)  # and its later steps
    assert plain.slo_class is None
    for name in ("arrival", "prompt", "output"):
        np.testing.assert_array_equal(getattr(mixed, name), getattr(plain, name))
    np.testing.assert_array_equal(mixed.slo_class[:5_000], short.slo_class)
    again = _spec((STRICT, RELAXED)).stream(10.0, seed=3).first(20_000)
    np.testing.assert_array_equal(again.slo_class, mixed.slo_class)
    other_seed = _spec((STRICT, RELAXED)).stream(10.0, seed=4).first(20_000)
    assert not np.array_equal(other_seed.slo_class, mixed.slo_class)
    by_time = stream.until(float(mixed.arrival[999]))
    np.testing.assert_array_equal(by_time.slo_class, mixed.slo_class[:1000])


def test_trace_rows_get_classes_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                    + "".join(f"{i * 0.5},{10 + i},{5 + i}\n" for i in range(40)))
    plain = _spec(trace=str(path)).stream(None, seed=1).first(40)
    mixed = _spec((STRICT, RELAXED), str(path)).stream(None, seed=1)
    assert plain.slo_class is None
    np.testing.assert_array_equal(mixed.first(40).prompt, plain.prompt)
    np.testing.assert_array_equal(mixed.first(10).slo_class, mixed.first(40).slo_class[:10])
    synthetic = _spec((STRICT, RELAXED)).stream(10.0, seed=1).first(40)  # the same stream
    np.testing.assert_array_equal(mixed.first(100).slo_class, synthetic.slo_class)


# --- requests carry their class ----------------------------------------------------------------


class _Tagged(Request):
    def __init__(self, id: int, arrival: float, prompt: int, output: int, slo_class: int,
                 tag: str) -> None:
        super().__init__(id, arrival, prompt, output, slo_class=slo_class)
        self.tag = tag


def test_a_request_keeps_its_class_through_pickling_and_subclassing() -> None:
    req = Request(1, 0.5, 7, 3, slo_class=np.uint8(2))
    assert req.slo_class == 2 and type(req.slo_class) is int
    assert Request(1, 0.5, 7, 3).slo_class == 0
    again = pickle.loads(pickle.dumps(req))
    assert (again.id, again.prompt_tokens, again.output_tokens, again.slo_class) == (1, 7, 3, 2)
    tagged = pickle.loads(pickle.dumps(_Tagged(4, 0.0, 5, 5, 3, "x")))
    assert type(tagged) is _Tagged and (tagged.slo_class, tagged.tag) == (3, "x")


class _Recording(Scheduler):
    """Sarathi's prefill fill, remembering the class of every request it sees waiting."""

    name = "recording"
    work_conserving = True

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def schedule(self, view: EngineView) -> Batch:
        for req in view.waiting:
            self.seen[req.id] = req.slo_class
        k = min(view.num_decoding, view.budget, view.seq_limit)
        chunks, _ = fill_chunks(view.waiting, view.budget - k, view.seq_limit - k)
        return Batch(chunks, k)


@pytest.mark.parametrize("engines", [1, 3])
def test_each_request_gets_its_class_from_the_run(engines: int) -> None:
    rng = np.random.default_rng(2)
    n = 300
    arrival = np.sort(rng.uniform(0, 30, n))
    prompt, output = rng.integers(1, 50, n), rng.integers(1, 20, n)
    classes = rng.integers(0, 3, n).astype(np.uint8)
    scheduler = _Recording()
    fleet = [Engine(scheduler, Constant(0.1), 64) for _ in range(engines)]
    if engines == 1:
        rec = run_engine(fleet[0], arrival, prompt, output, 30.0, True, classes)
    else:
        rec = run_engines(fleet, lambda req, board: req.id % engines, arrival, prompt, output,
                          30.0, True, classes)
    assert rec.completed == n
    assert scheduler.seen == dict(enumerate(classes.tolist()))
    plain = _Recording()
    run_engine(Engine(plain, Constant(0.1), 64), arrival, prompt, output, 30.0, True)
    assert set(plain.seen.values()) == {0}  # no classes: all in class 0
    with pytest.raises(ValueError, match="one class index"):
        run_engine(Engine(_Recording(), Constant(0.1), 64), arrival, prompt, output, 30.0,
                   True, classes[:-1])


# --- attainment and goodput on hand-made records -----------------------------------------------


def test_attainment_and_goodput_follow_vllms_definition() -> None:
    """Eight requests, two classes (strict: TBT 0.1 s, TTFT 1 s; relaxed: TBT 0.5 s). TPOT
    is (E2E - TTFT) / (D - 1); a one-token request has none and meets any TBT target; a
    target is met when equal; requests still in flight count nowhere."""
    classes = (SloClass("strict", 0.5, 0.1, ttft_s=1.0), SloClass("relaxed", 0.5, 0.5))
    rows = [  # arrival, first token, finish, output tokens, class
        (0.0, 0.5, 1.5, 11, 0),  # TPOT 0.1 = target, TTFT 0.5: good
        (0.0, 1.5, 2.5, 11, 0),  # TTFT 1.5 > 1: bad
        (0.0, 0.5, 2.5, 11, 0),  # TPOT 0.2 > 0.1: bad
        (1.0, 1.25, 1.25, 1, 0),  # one token: TPOT 0, good
        (0.0, 9.0, 19.0, 21, 1),  # TPOT 0.5 = target; no TTFT target: good
        (0.0, 0.1, 6.1, 11, 1),  # TPOT 0.6: bad
        (2.0, 3.0, math.nan, 5, 1),  # in flight
        (2.0, math.nan, math.nan, 5, 0),  # waiting
    ]
    arrival, first, finish, output, cls = (np.array(col) for col in zip(*rows, strict=True))
    requests = RequestTable(arrival, first, finish, np.full(len(rows), 10), output.astype(int),
                            cls.astype(np.uint8), ("strict", "relaxed"))
    done = np.isfinite(finish)
    hists = [{1_000_000: 3, 2_000_000: 1}, None]  # ticks of 0.1 us
    s = slo_summary(requests, classes, done, hists, TICKS_PER_S, elapsed_s=20.0)
    strict, relaxed = s["classes"]
    assert (strict["arrived"], strict["completed"], relaxed["arrived"], relaxed["completed"]) \
        == (5, 4, 3, 2)
    assert strict["slo_attainment"] == 2 / 4 and relaxed["slo_attainment"] == 1 / 2
    assert strict["goodput_requests_per_s"] == 2 / 20 and relaxed["goodput_requests_per_s"] \
        == 1 / 20
    assert s["slo_attainment"] == 3 / 6 and s["goodput_requests_per_s"] == 3 / 20
    assert strict["tbt_ms"] == hist_stats_ms(hists[0], TICKS_PER_S) and relaxed["tbt_ms"] is None
    assert strict["tbt_ms"]["p99"] == pytest.approx(200.0)
    assert strict["ttft_ms"]["p50"] == pytest.approx(500.0)  # of 0.5, 1.5, 0.5, 0.25
    assert strict["tpot_ms"]["mean"] == pytest.approx(1e3 * (0.1 + 0.1 + 0.2) / 3)
    assert relaxed["e2e_ms"]["mean"] == pytest.approx(1e3 * (19.0 + 6.1) / 2)
    assert (strict["tbt_target_s"], strict["ttft_target_s"], relaxed["ttft_target_s"]) == (
        0.1, 1.0, None)
    nobody = slo_summary(requests, classes, np.zeros(len(rows), bool), hists, TICKS_PER_S, 20.0)
    assert nobody["slo_attainment"] is None and nobody["goodput_requests_per_s"] == 0
    assert nobody["classes"][0]["ttft_ms"] is None


# --- the summary -------------------------------------------------------------------------------


def test_the_summary_reports_each_class_and_adding_classes_changes_nothing_else() -> None:
    plain = servelab.simulate(SMALL).summary
    mixed = servelab.simulate({**SMALL, "slo": list(SLAI)}).summary
    assert "classes" not in plain and "goodput_requests_per_s" not in plain
    assert (plain["preemptions"], plain["recomputed_tokens"]) == (0, 0)
    new = {"classes", "slo_attainment", "goodput_requests_per_s", "wall_s"}
    assert to_json({k: v for k, v in mixed.items() if k not in new}) == to_json(  # NaN too
        {k: v for k, v in plain.items() if k != "wall_s"})
    classes = mixed["classes"]
    assert [c["name"] for c in classes] == ["strict", "relaxed"]
    assert set(classes[0]) == {
        "name", "probability", "tbt_target_s", "ttft_target_s", "arrived", "completed",
        "ttft_ms", "tbt_ms", "tpot_ms", "e2e_ms", "slo_attainment", "goodput_requests_per_s",
        "preemptions", "recomputed_tokens"}
    assert sum(c["arrived"] for c in classes) == mixed["arrived"]
    assert sum(c["completed"] for c in classes) == mixed["completed"]
    assert sum(c["goodput_requests_per_s"] for c in classes) == pytest.approx(
        mixed["goodput_requests_per_s"], rel=1e-12)
    # Every completed request meets a relaxed 10 s target: goodput is the throughput.
    lax = servelab.simulate({**SMALL, "slo": ["all:1:tbt=10,ttft=100"]}).summary
    assert lax["goodput_requests_per_s"] == lax["throughput"]["requests_per_s"]
    assert lax["classes"][0]["tbt_ms"] == lax["tbt_ms"]  # one class: the run's own gaps


@pytest.mark.parametrize("scheduler", ["sarathi", "slai"])
def test_each_class_counts_its_own_preemptions_and_recomputed_tokens(scheduler: str) -> None:
    """A cache of 300 blocks preempts often; every preemption and recomputed token belongs to
    one class, and the text report shows them per class."""
    s = servelab.simulate({"preset": "mistral-7b-rtx6000ada", "prefill": "sharegpt",
                           "decode": "sharegpt", "load": 0.5, "requests": 1500, "seed": 2,
                           "kv_blocks": 300, "scheduler": scheduler,
                           "slo": list(SLAI)}).summary
    classes = s["classes"]
    assert s["preemptions"] > 0 and all(c["preemptions"] > 0 for c in classes)
    assert sum(c["preemptions"] for c in classes) == s["preemptions"]
    assert sum(c["recomputed_tokens"] for c in classes) == s["recomputed_tokens"]
    text = simulate_text(s)
    assert "preempted" in text and f"{classes[0]['preemptions']:,}" in text


def test_per_class_tbt_comes_from_the_runs_class_histograms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's per-class histograms (``RunRecords.tbt_by_class``) reach the summary;
    hand-made here, so this checks the summary's side alone."""
    hists = [{1_000_000: 5}, {3_000_000: 2, 4_000_000: 2}]

    def with_class_hists(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        rec = run_engine(*args, **kwargs)  # type: ignore[arg-type]
        rec.tbt_by_class = hists
        return rec

    monkeypatch.setattr(simulation, "run_engine", with_class_hists)
    s = servelab.simulate({**SMALL, "slo": list(SLAI)}).summary
    assert [c["tbt_ms"]["p50"] for c in s["classes"]] == pytest.approx([100.0, 300.0])
    assert s["classes"][1]["tbt_ms"]["mean"] == pytest.approx(350.0)


def test_requests_csv_names_each_requests_class(tmp_path: Path) -> None:
    result = servelab.simulate({**SMALL, "requests": 300, "slo": list(SLAI)})
    result.write_into(tmp_path)
    header, *rows = (tmp_path / "requests.csv").read_text().splitlines()
    assert header.endswith(",slo_class")
    names = [row.rsplit(",", 1)[1] for row in rows]
    assert set(names) == {"strict", "relaxed"} and len(names) == 300
    assert names.count("strict") == result.summary["classes"][0]["arrived"]
    plain = servelab.simulate({**SMALL, "requests": 300})
    assert "slo_class" not in plain.requests.columns()


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("memory", [False, True])
def test_per_class_tbt_histograms_hold_each_completed_requests_gaps(explicit: bool,
                                                                    memory: bool) -> None:
    """Every gap of every completed request, and only those, in its own class's histogram,
    whichever way decoders are named, through preemptions, with requests still in flight
    when the run stops; the classes add up to the run's histogram."""
    from servelab.core.kv import KVCache
    from servelab.schedulers import make_scheduler
    from servelab.sim.engine import Engine
    from servelab.sim.run import run_engine
    from servelab.timing.models import Constant
    from test_engine import NEWEST_FIRST
    from test_memory import NamedSarathi

    rng = np.random.default_rng(4)
    n = 300
    arrival = np.sort(rng.uniform(0, 60, n))
    prompt, output = rng.integers(1, 60, n), rng.integers(1, 80, n)
    classes = rng.integers(0, 3, n)
    scheduler = (NamedSarathi() if memory else NEWEST_FIRST()) if explicit \
        else make_scheduler("sarathi")
    engine = Engine(scheduler, Constant(0.05), 64, kv=KVCache(30, 16) if memory else None)
    rec = run_engine(engine, arrival, prompt, output, horizon=50.0, slo_class=classes)
    assert rec.tbt_by_class is not None and len(rec.tbt_by_class) == 3
    assert 0 < rec.completed < n  # some still in flight at the horizon
    assert (engine.preemptions > 0) == memory
    done = np.isfinite(rec.finish)
    for c, hist in enumerate(rec.tbt_by_class):
        mine = done & (classes[: len(done)] == c)
        assert sum(hist.values()) == int((output[: len(done)][mine] - 1).sum())
    total: dict[int, int] = {}
    for hist in rec.tbt_by_class:
        for ticks, count in hist.items():
            total[ticks] = total.get(ticks, 0) + count
    assert total == rec.tbt_hist


def test_tpot_made_block_by_block_is_the_whole_array_formula() -> None:
    """``tpot_ms`` is computed a block of requests at a time (to bound peak memory); over
    several blocks, with some requests left out, it is bit for bit the one-array formula."""
    rng = np.random.default_rng(3)
    n = 2 * metrics._BLOCK + 123
    arrival = np.sort(rng.uniform(0, 1e4, n))
    first = arrival + rng.exponential(0.3, n)
    finish = first + rng.exponential(20.0, n)
    output = rng.integers(1, 500, n)
    table = RequestTable(arrival, first, finish, rng.integers(1, 500, n), output)
    selected = (output > 1) & (rng.random(n) < 0.9)
    whole = ((finish[selected] - arrival[selected]) - (first[selected] - arrival[selected])) / (
        output[selected] - 1)
    assert np.array_equal(metrics._tpot_s(table, selected), whole)
