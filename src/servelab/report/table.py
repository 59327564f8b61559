"""Plain-text renderings of results: theory first, then what was measured.

Every run prints the analytic bound beside the simulated outcome; that pairing is the product's
signature, so these functions put them on adjacent lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LATENCY_ROWS = (("TTFT", "ttft_ms"), ("TBT", "tbt_ms"), ("TPOT", "tpot_ms"), ("E2E", "e2e_ms"))


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _engine_line(s: dict[str, Any]) -> str:
    kmax = f", k_max={s['kmax']}" if s.get("kmax") else ""
    return (f"engine    {s['preset']} ({s['timing']}), b_max={s['budget']}{kmax}, "
            f"convention={s['convention']}")


def _workload_line(s: dict[str, Any]) -> str:
    w = s["workload"]
    if "trace" in w:
        source = f"trace {w['trace']}"
    else:
        source = f"{w['arrivals']} arrivals, prefill {w['prefill']}, decode {w['decode']}"
    return (f"workload  {source}; mean {s['mean_prefill_tokens']:.1f} + "
            f"{s['mean_decode_tokens']:.1f} tokens; {s['rate']:.3f} req/s; seed {w['seed']}")


def _region_limit(region: dict[str, Any]) -> str:
    """The k_max region's request capacity and the prompt length it assumed."""
    return (f"{region['assumption']}: at most {region['max_rate']:.4f} req/s at this "
            "prefill:decode mix")


def _answer(verdict: str, reason: str) -> str:
    """The theory's verdict as every command prints it, once."""
    return f"{verdict.upper()}: {reason}"


def theory_lines(s: dict[str, Any]) -> list[str]:
    """The engine, workload, capacity and theory-verdict lines shared by simulate and compare."""
    cap = s["capacity"]
    region = s.get("kmax_region")
    capacity = (f"capacity {cap['tokens_per_s']:,.1f} tokens/s = {cap['max_rate']:.3f} req/s "
                f"({cap['work_per_request_tokens']:g} token slots per request); load "
                f"{s['load']:.3f}")
    slope = f"fluid backlog slope {s['fluid_slope_tokens_per_s']:,.1f} tokens/s"
    lines = [_engine_line(s), _workload_line(s)]
    if region:
        px, dx = region["offered_tokens_per_s"]
        lines += [f"theory    token {capacity} (b_max alone)",
                  f"          k_max region, {_region_limit(region)}; offered (prefill "
                  f"{px:,.1f}, decode {dx:,.1f}) tokens/s, 2-D load {region['load']:.3f}; {slope}"]
    else:
        lines.append(f"theory    {capacity}; {slope}")
    lines.append(f"          {_answer(s['theory_verdict'], s['theory_verdict_reason'])}")
    return lines


def simulate_text(s: dict[str, Any]) -> str:
    """The human report of one run."""
    lo, hi = s["verdict_window_s"]
    slope = _num(s["backlog_slope_tokens_per_s"])
    stderr = _num(s["backlog_slope_stderr_tokens_per_s"])
    tolerance = _num(s["verdict_threshold_tokens_per_s"])
    lines = [f"servelab simulate: {s['scheduler']}", *theory_lines(s)]
    lines += [
        f"measured  verdict {s['verdict'].upper()}: backlog slope {slope} ± {stderr} tokens/s "
        f"over {lo:,.1f}-{hi:,.1f} s (tolerance {tolerance} tokens/s; "
        f"fluid {_num(s['fluid_slope_tokens_per_s'])})",
        f"          throughput {_num(s['throughput']['tokens_per_s'])} tokens/s, "
        f"{s['throughput']['requests_per_s']:.3f} req/s; {s['completed']:,} completed, "
        f"{s['in_flight']:,} in flight, {s['iterations']:,} iterations, "
        f"{s['mean_batch_tokens']:.1f} tokens/batch; simulated in {s['wall_s']:.2f} s",
        "",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for label, key in LATENCY_ROWS:
        stats = s[key] or {}
        lines.append(f"{label:<14}" + "".join(
            f"{_num(stats.get(q)):>10}" for q in ("mean", "p50", "p90", "p99")))
    return "\n".join(lines)


COMPARE_COLUMNS = (
    ("scheduler", 18), ("verdict", 13), ("slope ± se tok/s", 22), ("fluid", 8),
    ("thru tok/s", 11), ("TTFT p50", 10), ("TTFT p99", 10), ("TBT p50", 9), ("TBT p99", 9),
    ("E2E p50", 10), ("E2E p99", 10), ("in flight", 10),
)


def _compare_row(s: dict[str, Any]) -> list[str]:
    def q(key: str, name: str) -> str:
        return _num((s[key] or {}).get(name))

    slope = (f"{_num(s['backlog_slope_tokens_per_s'])} ± "
             f"{_num(s['backlog_slope_stderr_tokens_per_s'])}")
    return [s["scheduler"], s["verdict"], slope, _num(s["fluid_slope_tokens_per_s"]),
            _num(s["throughput"]["tokens_per_s"]), q("ttft_ms", "p50"), q("ttft_ms", "p99"),
            q("tbt_ms", "p50"), q("tbt_ms", "p99"), q("e2e_ms", "p50"), q("e2e_ms", "p99"),
            f"{s['in_flight']:,}"]


def compare_text(summaries: Sequence[dict[str, Any]]) -> str:
    """Theory once, then one row per scheduler (latencies in ms)."""
    first = summaries[0]
    lines = [f"servelab compare: {', '.join(s['scheduler'] for s in summaries)}",
             *theory_lines(first),
             f"measured  verdicts from the backlog trend over "
             f"{first['verdict_window_s'][0]:,.1f}-{first['verdict_window_s'][1]:,.1f} s "
             f"(latencies in ms)", ""]
    widths = [w for _, w in COMPARE_COLUMNS]
    header = [name for name, _ in COMPARE_COLUMNS]
    lines.append(_row(header, widths))
    lines.append(_row(["-" * (w - 1) for w in widths], widths))
    lines += [_row(_compare_row(s), widths) for s in summaries]
    return "\n".join(lines)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    first, *rest = zip(cells, widths, strict=True)
    return f"{first[0]:<{first[1]}}" + "".join(f"{c:>{w}}" for c, w in rest)


def presets_text(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'preset':<24}{'budget':>7}  {'convention':<11}{'capacity tok/s':>15}  timing"]
    for r in rows:
        lines.append(f"{r['name']:<24}{r['budget']:>7}  {r['convention']:<11}"
                     f"{r['tokens_per_s']:>15,.1f}  {r['timing']}")
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
    if region:
        vertices = ", ".join(f"({x:,.1f}, {y:,.1f})" for x, y in region["vertices_tokens_per_s"])
        lines += [f"k_max     region vertices (prefill, decode) tokens/s: {vertices}",
                  f"          {_region_limit(region)}"]
    if "load" in c:
        load = f"load {c['load']:.4f} of the token capacity"
        if region:
            load += f", 2-D load {region['load']:.4f} in the k_max region"
        lines += [f"load      {c['rate']:.4f} req/s: {load}; fluid backlog slope "
                  f"{c['fluid_slope_tokens_per_s']:,.1f} tokens/s",
                  f"verdict   {_answer(c['verdict'], c['verdict_reason'])}"]
    return "\n".join(lines)
