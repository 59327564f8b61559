"""The text report of a load sweep: the engine and theory once, then loads by schedulers."""

from __future__ import annotations

from typing import Any

from servelab.report.table import _engine_line, _rate, _table, capacity_phrase, workload_line

#: How a value is marked when its run is not confidently stable (``load_sweep.run_status``).
MARKS = {"unstable": "!", "inconclusive": "?"}
NOTES = {
    "unstable": "unstable: the verdict or the theory says the queue grows without bound; the "
                "value describes the completed requests only, the survivors, which understate "
                "what users see",
    "inconclusive": "inconclusive: the run could not tell stable from unstable (--json gives "
                    "each run's verdict_reason)",
}


def seconds(value: float | None) -> str:
    """Seconds to three significant digits, whole seconds above 1,000; ``-`` for none."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _cell(point: dict[str, Any], name: str) -> str:
    return f"{seconds(point['values'][name])} {MARKS.get(point['status'][name], ' ')}"


def sweep_text(result: dict[str, Any]) -> str:
    """One row per load, one column per scheduler: the metric, marked where not stable."""
    names, points = result["schedulers"], result["points"]
    first = points[0]["results"][0]
    lines = [
        f"servelab sweep: {', '.join(names)} at loads "
        f"{', '.join(f'{load:g}' for load in result['loads'])}; {result['metric']} in seconds",
        _engine_line(first),
        workload_line(first, with_rate=False),
        f"theory    {capacity_phrase(first['capacity'])}; each load's rate is that fraction "
        "of it",
        "",
    ]
    columns = [("load", ""), ("rate", "req/s"), ("theory", "verdict"),
               *((name, result["metric_unit"]) for name in names)]
    rows = [[f"{p['load']:g}", _rate(p["rate"]), p["theory_verdict"],
             *(_cell(p, name) for name in names)] for p in points]
    lines += _table(columns, rows, left=0)
    seen = {status for p in points for status in p["status"].values()}
    notes = [f"{MARKS[status]} {NOTES[status]}" for status in MARKS if status in seen]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def load_line(point: dict[str, Any]) -> str:
    """One line of progress per load (stderr): each scheduler's value, and its status where
    that is not stable."""
    runs = []
    for name, value in point["values"].items():
        status = point["status"][name]
        runs.append(f"{name} {seconds(value)} s" + ("" if status == "stable" else f" ({status})"))
    return (f"load {point['load']:g} ({_rate(point['rate'])} req/s): {', '.join(runs)}; "
            f"{len(point['results'])} run(s) in {point['wall_s']:.1f} s")
