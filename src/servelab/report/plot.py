"""The backlog picture: unprocessed tokens and requests in system over time, per scheduler.

Stable and unstable policies differ by orders of magnitude, so the y axes are logarithmic;
each run's verdict window (the second half of its arrivals) starts at its dotted line.
Matplotlib's Agg backend writes the PNG without a display.

The format follows the file name's suffix, which must be one of ``PLOT_SUFFIXES``: matplotlib
would append ``.png`` to a name without one, so the file would not be where the user was told,
and some of its other formats need programs (LaTeX for ``.pgf``) that may not be there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from servelab.errors import ConfigError
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    try:
        write_file_atomically(
            path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=110), "plot")
    finally:
        plt.close(fig)
