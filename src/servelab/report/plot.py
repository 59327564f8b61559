"""The pictures: the backlog over time per scheduler (``compare``), and a statistic against
the load per scheduler (a sweep).

In the backlog picture, stable and unstable policies differ by orders of magnitude, so the y
axes are logarithmic; each run's verdict window (the second half of its arrivals) starts at its
dotted line. Matplotlib's Agg backend writes the files without a display.

The format follows the file name's suffix, which must be one of ``PLOT_SUFFIXES``: matplotlib
would append ``.png`` to a name without one, so the file would not be where the user was told,
and some of its other formats need programs (LaTeX for ``.pgf``) that may not be there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from servelab.analysis.criteria import parse_statistic
from servelab.errors import ConfigError
from servelab.report.table import workload_source
from servelab.results import SimResult, check_writable_dir, write_file_atomically

PLOT_SUFFIXES = (".png", ".svg", ".pdf")

COLORS = {"fastertransformer": "#d62728", "vllm": "#ff7f0e", "orca": "#2ca02c",
          "sarathi": "#1f77b4", "kfcfs": "#9467bd"}


def check_plot_path(path: Path) -> None:
    """Fail before any work unless a plot can be written to exactly ``path``."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError("plot", f"{path}: the file name must end in "
                                  f"{', '.join(PLOT_SUFFIXES[:-1])} or {PLOT_SUFFIXES[-1]}")
    if path.is_dir():
        raise ConfigError("plot", f"{path} is a directory; name a file in it")
    if not path.resolve().parent.is_dir():
        raise ConfigError("plot", f"{path.parent} is not an existing directory")
    check_writable_dir(path.parent, "plot")


def plot_backlog(results: Sequence[SimResult], path: Path) -> None:
    """Write a two-panel plot of the backlog trajectories of ``results`` (whole or not at all)."""
    plt = _pyplot()
    first = results[0].summary
    fig, (ax_tokens, ax_requests) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for result in results:
        s = result.summary
        label = f"{s['scheduler']} ({s['verdict']})"
        color = COLORS.get(s["scheduler"])
        series = result.backlog
        ax_tokens.plot(series.time_s, series.tokens.clip(min=1), label=label, color=color, lw=1.2)
        ax_requests.plot(series.time_s, series.requests.clip(min=1), label=label, color=color,
                         lw=1.2)
        for ax in (ax_tokens, ax_requests):
            ax.axvline(s["verdict_window_s"][0], color=color, ls=":", lw=0.9)
    for ax, name in ((ax_tokens, "unprocessed tokens"), (ax_requests, "requests in system")):
        ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(True, which="major", alpha=0.3)
    ax_requests.set_xlabel("time (s)")
    ax_tokens.legend(loc="upper left", fontsize=9)
    cap = first["capacity"]
    fig.suptitle(
        f"{first['preset']}, b_max={first['budget']}: load {first['load']:.2f} of capacity "
        f"({first['rate']:.2f} of {cap['max_rate']:.2f} req/s)\n"
        "dotted: where each run's verdict window starts", fontsize=11)
    _save(fig, path)


#: A sweep's y axis is logarithmic when its values span more than this factor.
LOG_SPAN = 100.0


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Write a sweep's statistic against the load, one line per scheduler (whole or not at all).

    A run that is not confidently stable has a hollow marker (a circle where the queue grows
    without bound, whose completed requests understate what users see; a square where the
    verdict is inconclusive); a filled one is stable. A run that measured nothing (no request
    completed) has no point.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    names, points = result["schedulers"], result["points"]
    first = points[0]["results"][0]
    colors = _colors(names, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    measured = []
    for name in names:
        runs = [(p["load"], p["values"][name], p["status"][name]) for p in points
                if p["values"][name] is not None]
        loads, values = [r[0] for r in runs], [r[1] for r in runs]
        ax.plot(loads, values, color=colors[name], lw=1.4, label=name)
        for load, value, status in runs:
            ax.plot([load], [value], ls="none", **marker_style(status, colors[name]))
        measured += values
    statuses = {status for p in points for status in p["status"].values()}
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="none", label=label, **marker_style(status, "0.3"))
                for status, label in SWEEP_MARKERS.items() if status in statuses]
    ax.legend(handles=handles, fontsize=9)
    if spans_orders_of_magnitude(measured):
        ax.set_yscale("log")
    if result["loads"][-1] >= 1:
        ax.axvline(1.0, color="0.5", ls=":", lw=0.9)
    statistic = parse_statistic(result["metric"])
    ax.set_xlabel("load (arrival rate / capacity λ*)")
    ax.set_ylabel(f"{statistic.label} ({result['metric_unit']})")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{first['preset']}, b_max={first['budget']}: {workload_source(first)}\n"
                 f"λ* = {result['max_rate']:.3g} req/s; seed {first['workload']['seed']}",
                 fontsize=10)
    _save(fig, path)


#: The marker legend of a sweep, for the statuses that occur.
SWEEP_MARKERS = {"stable": "stable", "inconclusive": "inconclusive",
                 "unstable": "unstable: survivors, understated"}


def spans_orders_of_magnitude(values: Sequence[float]) -> bool:
    """Whether positive values span more than ``LOG_SPAN``: then a log axis shows them all."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) > LOG_SPAN * min(positive)


def marker_style(status: str, color: str) -> dict[str, Any]:
    """Filled for a stable run; hollow otherwise: a circle if unstable, a square if
    inconclusive."""
    return {"marker": "s" if status == "inconclusive" else "o", "markersize": 7,
            "markeredgecolor": color, "markerfacecolor": color if status == "stable" else "white"}


def _colors(names: Sequence[str], cycle: Sequence[str]) -> dict[str, str]:
    """The usual colour of each known scheduler; the others take the cycle's unused ones.
    The cycle is compared in hex: a style may give it as RGB tuples, which would otherwise
    hand a known scheduler's colour to another."""
    from matplotlib.colors import to_hex

    used = {COLORS[name] for name in names if name in COLORS}
    spare = iter([c for c in map(to_hex, cycle) if c not in used] + ["black"] * len(names))
    return {name: COLORS.get(name) or next(spare) for name in names}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` in the format its suffix names, whole or not at all."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        write_file_atomically(
            path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=110), "plot")
    finally:
        plt.close(fig)
