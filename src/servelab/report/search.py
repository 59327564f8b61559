"""The text report of a capacity search: the theory it started from, its probes, the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from servelab.analysis.criteria import Criterion, Value, parse_criterion
from servelab.report.table import _engine_line, _rate, _row, capacity_phrase

#: How the report names the bound the search started from (``search.starting_bound``).
BOUNDS = {"tokens": "the token capacity", "kmax": "the k_max region's bound",
          "memory": "the KV-memory bound"}


def _value(value: Value) -> str:
    """A criterion's value: seconds or a fraction to 3 digits, a verdict, one per class."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{name} {_value(v)}" for name, v in value.items())
    return f"{value:.3g}"


def _outcome(probe: dict[str, Any], runs: Sequence[dict[str, Any]]) -> str:
    if not probe["simulated"]:
        return "fail: load >= 1, no scheduler keeps up (theory; not simulated)"
    if probe["pass"]:
        return "pass"
    last = runs[-1]
    return f"fail: seed {last['seed']} missed {', '.join(last['failed'])}"


def probe_line(probe: dict[str, Any]) -> str:
    """One line of progress per probe (stderr)."""
    runs = probe["runs"]
    took = sum(r["wall_s"] for r in runs)
    head = f"probe {probe['probe']}: {_rate(probe['rate'])} req/s (load {probe['load']:.4f})"
    outcome = _outcome(probe, runs)
    return f"{head}: {outcome}" + (f"; {len(runs)} run(s) in {took:.1f} s" if runs else "")


def capacity_search_text(result: dict[str, Any]) -> str:
    """Theory, one row per probe (each criterion's worst value over its seeds), the answer."""
    criteria = [parse_criterion(c["text"]) for c in result["criteria"]]
    theory = result["theory"]
    seeds = result["seeds"]
    lines = [
        f"servelab capacity-search: {result['scheduler']}; criteria "
        f"{', '.join(c.text for c in criteria)}; seeds {', '.join(map(str, seeds))}; "
        f"tolerance {100 * result['tolerance']:g}%",
        _engine_line(theory),
        f"theory    {capacity_phrase(theory)}; the search starts at "
        f"{_rate(result['start_rate'])} req/s, {BOUNDS[result['start_binding']]}",
        "",
    ]
    header = ["probe", "rate", "load", "seeds", *(c.text for c in criteria), "result"]
    units = ["", "req/s", "", "run", *(_unit(c) for c in criteria), ""]
    rows = [_probe_row(p, result["runs"], criteria, len(seeds)) for p in result["probes"]]
    widths = [max(len(h), len(u), *(len(r[i]) for r in rows)) for i, (h, u)
              in enumerate(zip(header, units, strict=True))]
    widths[-1] = 0  # the last column is free text, left as it is
    lines += [_row(header, widths), _row(units, widths),
              _row(["-" * w for w in widths[:-1]] + ["------"], widths)]
    lines += [_row(r, widths) for r in rows]
    lines += ["", *_answer_lines(result)]
    return "\n".join(lines)


def _unit(c: Criterion) -> str:
    return "verdict" if c.is_stability else c.to_dict()["unit"]


def _probe_row(probe: dict[str, Any], runs: Sequence[dict[str, Any]],
               criteria: Sequence[Criterion], seeds: int) -> list[str]:
    mine = [r for r in runs if r["probe"] == probe["probe"]]
    worst = [_value(c.worst([r["values"][c.text] for r in mine])) if mine else "-"
             for c in criteria]
    made = f"{len(mine)}/{seeds}" if mine else "-"
    return [str(probe["probe"]), _rate(probe["rate"]), f"{probe['load']:.4f}", made,
            *worst, _outcome(probe, mine)]


def _answer_lines(result: dict[str, Any]) -> list[str]:
    low, high = result["bracket"]
    low_load, high_load = result["bracket_load"]
    simulated = sum(p["simulated"] for p in result["probes"])
    spent = (f"          {simulated} probes simulated, {len(result['runs'])} runs, "
             f"{result['wall_s']:.1f} s")
    if low is None:
        return [f"answer    no rate down to {_rate(high)} req/s (load {high_load:.4f}) meets "
                "every criterion for every seed", spent]
    return [f"answer    max rate {_rate(low)} req/s (load {low_load:.4f}): every criterion held "
            f"for every seed; bracket {_rate(low)} to {_rate(high)} req/s (load {low_load:.4f} "
            f"to {high_load:.4f})", spent]
