"""Plain-text renderings of results: theory first, then what was measured.

Every run prints the analytic bound beside the simulated outcome; that pairing is the product's
signature, so these functions put them on adjacent lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from servelab.analysis.theory import binding_bound

LATENCY_ROWS = (("TTFT", "ttft_ms"), ("TBT", "tbt_ms"), ("TPOT", "tpot_ms"), ("E2E", "e2e_ms"))


def _rate(value: float) -> str:
    """A rate or load: three decimals, or three significant digits when small."""
    return f"{value:.3f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"


def _known(value: float | None) -> bool:
    """Not missing: the library says NaN, its JSON null."""
    return value is not None and value == value


def _num(value: float | None, digits: int = 1) -> str:
    if not _known(value):
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if 0 < abs(value) < 1:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return _num(None if seconds is None else seconds * 1e3)


def _percent(fraction: float | None) -> str:
    return f"{fraction:.1%}" if _known(fraction) else "-"


def scheduler_label(s: dict[str, Any]) -> str:
    """The policy's name, marked where it is our reconstruction of a paper's (RAD)."""
    return f"{s['scheduler']} (reconstructed)" if s.get("reconstructed") else s["scheduler"]


def _engine_line(s: dict[str, Any]) -> str:
    kmax = f", k_max={s['kmax']}" if s.get("kmax") else ""
    replicas = s.get("replicas")
    behind = f" behind {s['router']}" if "router" in s else ""
    fleet = f"; {replicas} replicas{behind}" if replicas else ""
    return (f"engine    {s['preset']} ({s['timing']}), b_max={s['budget']}{kmax}, "
            f"convention={s['convention']}{fleet}")


def engines_lines(s: dict[str, Any]) -> list[str]:
    """One line per replica: its own verdict, from the requests its router sent it."""
    lines = []
    for e in s.get("engines") or ():
        lines.append(
            f"{'engines' if not lines else '':<10}{e['engine']:>3}: {e['verdict']:<12} slope "
            f"{_num(e['backlog_slope_tokens_per_s'])} ± "
            f"{_num(e['backlog_slope_stderr_tokens_per_s'])} tokens/s, load "
            f"{_rate(e['load']) if _known(e['load']) else '-'}, {e['arrived']:,} arrived, "
            f"{e['completed']:,} completed")
    return lines


def workload_source(s: dict[str, Any]) -> str:
    """Where a run's requests come from: its trace, or its arrivals and length specs."""
    w = s["workload"]
    if "trace" in w:
        return f"trace {w['trace']}"
    return f"{w['arrivals']} arrivals, prefill {w['prefill']}, decode {w['decode']}"


def workload_line(s: dict[str, Any], with_rate: bool = True) -> str:
    """The workload and its mean lengths, and the rate (a sweep's rates are per load)."""
    rate = f"{_rate(s['rate'])} req/s; " if with_rate else ""
    return (f"workload  {workload_source(s)}; mean {s['mean_prefill_tokens']:.1f} + "
            f"{s['mean_decode_tokens']:.1f} tokens; {rate}seed {s['workload']['seed']}")


def capacity_phrase(cap: dict[str, Any]) -> str:
    """The token capacity and the request rate it allows (``capacity`` of a summary, or the
    search's theory)."""
    return (f"capacity {cap['tokens_per_s']:,.1f} tokens/s = {_rate(cap['max_rate'])} req/s "
            f"({cap['work_per_request_tokens']:g} token slots per request)")


def _region_limit(region: dict[str, Any]) -> str:
    """The k_max region's request capacity and the prompt length it assumed."""
    return (f"{region['assumption']}: at most {region['max_rate']:.4f} req/s at this "
            "prefill:decode mix")


def memory_line(s: dict[str, Any]) -> list[str]:
    """The KV-memory bound beside the token bound, and which binds; nothing without a cache."""
    m = s.get("memory")
    if not m:
        return []
    load = f"; memory load {_rate(m['load'])}" if "load" in m else ""
    return [f"memory    KV {m['kv_blocks']:,} blocks x {m['block_size']} = {m['kv_tokens']:,} "
            f"tokens; {m['kv_token_iterations_per_request']:,.1f} token-iterations per request "
            f"at {m['batch_tokens']:,.1f} tokens per {m['batch_s'] * 1e3:,.2f} ms batch: at most "
            f"{m['max_rate']:.4f} req/s{load}; binding: {s['binding']}"]


def _answer(verdict: str, reason: str) -> str:
    """The theory's verdict as every command prints it, once."""
    return f"{verdict.upper()}: {reason}"


def theory_lines(s: dict[str, Any]) -> list[str]:
    """The engine, workload, capacity and theory-verdict lines shared by simulate and compare."""
    cap = s["capacity"]
    region = s.get("kmax_region")
    capacity = f"{capacity_phrase(cap)}; load {_rate(s['load'])}"
    slope = f"fluid backlog slope {s['fluid_slope_tokens_per_s']:,.1f} tokens/s"
    lines = [_engine_line(s), workload_line(s)]
    if region:
        px, dx = region["offered_tokens_per_s"]
        lines += [f"theory    token {capacity} (b_max alone)",
                  f"          k_max region, {_region_limit(region)}; offered (prefill "
                  f"{px:,.1f}, decode {dx:,.1f}) tokens/s, 2-D load {region['load']:.3f}; {slope}"]
    else:
        lines.append(f"theory    {capacity}; {slope}")
    lines += memory_line(s)
    lines.append(f"          {_answer(s['theory_verdict'], s['theory_verdict_reason'])}")
    return lines


def run_line(s: dict[str, Any]) -> str:
    """How long the run was and why: auto runs say how far they had to grow."""
    length = s["run_length"]
    n = f"{length['requests']:,} requests"
    fixed = {"requests": "as --requests asked", "trace": "the trace",
             "duration": f"arriving in {s['horizon_s']:,.1f} s (--duration)"}
    if length["mode"] in fixed:
        return f"run       {n}, {fixed[length['mode']]}; simulated in {s['wall_s']:.2f} s"
    steps = length["steps"]
    grew = f", grown from {steps[0]:,} in {len(steps)} steps" if len(steps) > 1 else ""
    why = ("until the verdict was confident" if s["verdict"] != "inconclusive"
           else f"stopped at the cap of {length['max_requests']:,}")
    return f"run       auto: {n}{grew}, {why}; simulated in {s['wall_s']:.2f} s"


def measured_lines(s: dict[str, Any]) -> list[str]:
    """The verdict with its reason, then what arrived against what was asked for."""
    lo, hi = s["verdict_window_s"]
    lines = [f"measured  verdict {s['verdict'].upper()}: {s['verdict_reason']}"]
    if _known(s["served_tokens_per_s"]):  # the window was measured
        ci_lo, ci_hi = s["backlog_slope_ci95_tokens_per_s"]
        bound = binding_bound(s)  # the loads are the binding bound's
        load, nominal_load = bound.load_name, bound.load
        lines += [
            f"          over {lo:,.1f}-{hi:,.1f} s: backlog slope "
            f"{_num(s['backlog_slope_tokens_per_s'])} ± "
            f"{_num(s['backlog_slope_stderr_tokens_per_s'])} tokens/s (95%: {_num(ci_lo)} to "
            f"{_num(ci_hi)}); served {_num(s['served_tokens_per_s'])} tokens/s",
            f"          arrived {_rate(s['realised_rate'])} req/s "
            f"({load} {_rate(s['realised_load'])}, "
            f"{_num(s['realised_offered_tokens_per_s'])} tokens/s), so fluid slope "
            f"{_num(s['realised_fluid_slope_tokens_per_s'])} tokens/s; nominal "
            f"{_rate(s['rate'])} req/s ({load} {_rate(nominal_load)}), fluid "
            f"{_num(s['fluid_slope_tokens_per_s'])}",
        ]
    return lines


def survivors_line(s: dict[str, Any]) -> list[str]:
    """Under a diverging queue, completed requests are the lucky ones: say so."""
    if s["verdict"] != "unstable" or not s["in_flight"]:
        return []
    return [f"note      latencies describe the {s['completed']:,} completed requests only; "
            f"{s['in_flight']:,} are still in flight, and the survivors of a diverging queue "
            "understate what users see"]


def _preemptions(s: dict[str, Any]) -> str:
    """Recompute preemptions, when there were any."""
    if not s["preemptions"]:
        return ""
    return (f", {s['preemptions']:,} preemptions ({s['recomputed_tokens']:,} tokens "
            "recomputed)")


def _latency_rows(label_width: int, labelled: list[tuple[str, dict[str, Any] | None]]
                  ) -> list[str]:
    return [f"{label:<{label_width}}" + "".join(
        f"{_num((stats or {}).get(q)):>10}" for q in ("mean", "p50", "p90", "p99"))
        for label, stats in labelled]


def simulate_text(s: dict[str, Any]) -> str:
    """The human report of one run."""
    lines = [f"servelab simulate: {scheduler_label(s)}", *theory_lines(s), *measured_lines(s)]
    lines += [
        f"          throughput {_num(s['throughput']['tokens_per_s'])} tokens/s, "
        f"{_rate(s['throughput']['requests_per_s'])} req/s; {s['completed']:,} completed, "
        f"{s['in_flight']:,} in flight, {s['iterations']:,} iterations, "
        f"{s['mean_batch_tokens']:.1f} tokens/batch{_preemptions(s)}",
        *engines_lines(s),
        run_line(s),
        *survivors_line(s),
        "",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
        *_latency_rows(14, [(label, s[key]) for label, key in LATENCY_ROWS]),
        *slo_lines(s),
    ]
    return "\n".join(lines)


SLO_COLUMNS = (("SLO class", ""), ("share", ""), ("TBT target", "ms"), ("TTFT target", "ms"),
               ("arrived", "requests"), ("completed", "requests"), ("met SLO", "completed"),
               ("goodput", "req/s"))
PREEMPTION_COLUMNS = (("preempted", "times"), ("recomputed", "tokens"))


def slo_lines(s: dict[str, Any]) -> list[str]:
    """With service-level classes: each class's targets, attainment and goodput (and its
    preemptions, when the run had any), then its latencies (TBT shows "-" where the engine
    kept no per-class gaps)."""
    if "classes" not in s:
        return []
    rows = [[c["name"], f"{c['probability']:.3g}", _ms(c["tbt_target_s"]),
             _ms(c["ttft_target_s"]), f"{c['arrived']:,}", f"{c['completed']:,}",
             _percent(c["slo_attainment"]), _rate(c["goodput_requests_per_s"])]
            for c in s["classes"]]
    rows.append(["all", "", "", "", f"{s['arrived']:,}", f"{s['completed']:,}",
                 _percent(s["slo_attainment"]), _rate(s["goodput_requests_per_s"])])
    columns = SLO_COLUMNS
    if s.get("preemptions") and "preemptions" in s["classes"][0]:
        columns += PREEMPTION_COLUMNS
        for row, c in zip(rows, [*s["classes"], s], strict=True):
            row += [f"{c['preemptions']:,}", f"{c['recomputed_tokens']:,}"]
    width = max(len(c["name"]) for c in s["classes"]) + 7
    labelled = [(f"{c['name'] if i == 0 else '':<{width - 5}}{label}", c[key])
                for c in s["classes"] for i, (label, key) in enumerate(LATENCY_ROWS)]
    return ["", *_table(columns, rows), "",
            f"{'latency (ms)':<{width}}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
            *_latency_rows(width, labelled)]


#: (name, unit) of each column; the unit goes on a second header line, so that a column is
#: only as wide as its name or its numbers, and the table fits in about 130 characters.
COMPARE_COLUMNS = (
    ("scheduler", ""), ("verdict", ""), ("slope ± se", "tok/s"), ("served", "tok/s"),
    ("run", "requests"), ("TTFT p50", "ms"), ("TTFT p99", "ms"), ("TBT p50", "ms"),
    ("TBT p99", "ms"), ("E2E p50", "ms"), ("E2E p99", "ms"), ("in flight", "requests"),
)


def _compare_row(s: dict[str, Any]) -> list[str]:
    def q(key: str, name: str) -> str:
        return _num((s[key] or {}).get(name))

    slope = (f"{_num(s['backlog_slope_tokens_per_s'])} ± "
             f"{_num(s['backlog_slope_stderr_tokens_per_s'])}")
    return [scheduler_label(s), s["verdict"], slope, _num(s["served_tokens_per_s"]),
            f"{s['arrived']:,}", q("ttft_ms", "p50"), q("ttft_ms", "p99"),
            q("tbt_ms", "p50"), q("tbt_ms", "p99"), q("e2e_ms", "p50"), q("e2e_ms", "p99"),
            f"{s['in_flight']:,}"]


def compare_text(summaries: Sequence[dict[str, Any]]) -> str:
    """Theory once, then one row per scheduler (latencies in ms), then what needs a word."""
    first = summaries[0]
    auto = first["run_length"]["mode"] == "auto"
    lines = [f"servelab compare: {', '.join(scheduler_label(s) for s in summaries)}",
             *theory_lines(first),
             "measured  each verdict is read from the second half of its own run"
             + (" (auto: grown until the verdict was confident)" if auto else "")
             + "; latencies over completed requests", ""]
    lines += _table(COMPARE_COLUMNS, [_compare_row(s) for s in summaries])
    if "classes" in first:
        lines += ["", *_table(COMPARE_SLO_COLUMNS, [
            row for s in summaries for row in _compare_slo_rows(s)], left=2)]
    notes = [f"{s['scheduler']}: {s['verdict_reason']}" for s in summaries
             if s["verdict"] == "inconclusive"]
    diverging = [s for s in summaries if survivors_line(s)]
    if diverging:
        unstable = ", ".join(s["scheduler"] for s in diverging)
        notes.append(f"{unstable}: unstable, so their latencies describe completed requests "
                     "only; the survivors of a diverging queue understate what users see")
    if notes:
        lines += ["", *(f"note      {n}" for n in notes)]
    return "\n".join(lines)


COMPARE_SLO_COLUMNS = (
    ("scheduler", ""), ("SLO class", ""), ("completed", "requests"), ("met SLO", "completed"),
    ("goodput", "req/s"), ("TTFT p50", "ms"), ("TTFT p99", "ms"), ("TBT p50", "ms"),
    ("TBT p99", "ms"), ("TPOT p99", "ms"),
)


def _compare_slo_rows(s: dict[str, Any]) -> list[list[str]]:
    """One row per class of one scheduler, then all its requests together."""
    def q(stats: dict[str, float] | None, name: str) -> str:
        return _num((stats or {}).get(name))

    everyone = {"name": "all", "completed": s["completed"],
                **{k: s[k] for k in ("slo_attainment", "goodput_requests_per_s", "ttft_ms",
                                     "tbt_ms", "tpot_ms")}}
    return [[s["scheduler"] if i == 0 else "", c["name"], f"{c['completed']:,}",
             _percent(c["slo_attainment"]), _rate(c["goodput_requests_per_s"]),
             q(c["ttft_ms"], "p50"), q(c["ttft_ms"], "p99"), q(c["tbt_ms"], "p50"),
             q(c["tbt_ms"], "p99"), q(c["tpot_ms"], "p99")]
            for i, c in enumerate([*s["classes"], everyone])]


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]],
           left: int = 1) -> list[str]:
    """A header of names, a line of units, a rule, then the rows; each column as wide as its
    widest cell, the first ``left`` columns (names) left-aligned and the numbers right."""
    names, units = zip(*columns, strict=True)
    widths = [max(len(name), len(unit), *(len(row[i]) for row in rows))
              for i, (name, unit) in enumerate(columns)]
    return [_row(line, widths, left) for line in
            (names, units, ["-" * w for w in widths], *rows)]


def _row(cells: Sequence[str], widths: Sequence[int], left: int = 1) -> str:
    """Cells two spaces apart: the first ``left`` left-aligned, the rest right-aligned."""
    return "  ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}"
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def presets_text(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'preset':<24}{'budget':>7}  {'convention':<11}{'capacity tok/s':>15}"
             f"{'KV blocks':>15}  timing"]
    for r in rows:
        kv = r["kv"]
        blocks = f"{kv['blocks']:,} x {kv['block_size']}" if kv else "-"
        lines.append(f"{r['name']:<24}{r['budget']:>7}  {r['convention']:<11}"
                     f"{r['tokens_per_s']:>15,.1f}{blocks:>15}  {r['timing']}")
    return "\n".join(lines)


def capacity_text(c: dict[str, Any]) -> str:
    """The theory alone; with a rate, one verdict line (the k_max region's when there is one)."""
    region = c.get("kmax_region")
    alone = " (b_max alone)" if region else ""
    lines = [
        _engine_line(c),
        f"workload  mean {c['mean_prefill_tokens']:.1f} prefill + {c['mean_decode_tokens']:.1f} "
        f"decode tokens ({c['work_per_request_tokens']:g} token slots per request)",
        f"capacity  {c['tokens_per_s']:,.1f} tokens/s at {c['batch_tokens_at_capacity']} tokens "
        f"per batch = {c['max_rate']:.4f} requests/s{alone}",
    ]
    if "full_batch_tokens_per_s" in c:
        lines.append(f"          full batches of {c['budget']} serve only "
                     f"{c['full_batch_tokens_per_s']:,.1f} tokens/s = "
                     f"{c['full_batch_max_rate']:.4f} requests/s: the most a work-conserving "
                     "scheduler keeps up with")
    if region:
        vertices = ", ".join(f"({x:,.1f}, {y:,.1f})" for x, y in region["vertices_tokens_per_s"])
        lines += [f"k_max     region vertices (prefill, decode) tokens/s: {vertices}",
                  f"          {_region_limit(region)}"]
    lines += memory_line(c)
    if "load" in c:
        load = f"load {c['load']:.4f} of the token capacity"
        if region:
            load += f", 2-D load {region['load']:.4f} in the k_max region"
        if "memory" in c:
            load += f", memory load {c['memory']['load']:.4f}"
        lines += [f"load      {c['rate']:.4f} req/s: {load}; fluid backlog slope "
                  f"{c['fluid_slope_tokens_per_s']:,.1f} tokens/s",
                  f"verdict   {_answer(c['verdict'], c['verdict_reason'])}"]
    return "\n".join(lines)
