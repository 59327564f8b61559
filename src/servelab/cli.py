"""The ``servelab`` command: parse flags, build a config, make one library call, print.

Bad input of any kind ends in one line ``error: <field>: <reason>`` on stderr and exit code 2,
with nothing written: flags and ``--set PATH=VALUE`` are passed as text to
``SimConfig.from_dict`` so that flags, YAML files and notebooks share one validation and one
set of field names. Output paths are checked
before the run, and should writing still fail after it, the report is printed anyway before
the error, so finished work is never lost. Warnings are one line each too:
``warning: <field>: <reason>``.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from servelab.analysis.criteria import LATENCY_STATISTICS
from servelab.analysis.theory import MEMORY_KEYS
from servelab.config import DEFAULT_METRIC, DEFAULT_SEEDS, DEFAULT_TOLERANCE, MAX_LOAD, SimConfig
from servelab.core.convention import CONVENTIONS
from servelab.core.kv_settings import PREEMPTION_MODES
from servelab.errors import ConfigError, ConfigWarning, SchedulerError
from servelab.experiment import is_experiment, run_experiment
from servelab.files import load_yaml, parse_yaml
from servelab.load_sweep import sweep
from servelab.report.plot import check_plot_path, plot_backlog, plot_sweep
from servelab.report.search import capacity_search_text, probe_line
from servelab.report.sweep import load_line, sweep_text
from servelab.report.table import capacity_text, compare_text, presets_text, simulate_text
from servelab.results import check_out_dir, to_json, write_atomically
from servelab.schedulers import SCHEDULERS, options_type
from servelab.search import capacity_search
from servelab.simulation import CompareResult, capacity, compare, simulate
from servelab.timing.presets import list_presets

DEFAULT_COMPARE_LOAD = 0.9
DEFAULT_PLOT = "servelab-compare.png"


class _Parser(argparse.ArgumentParser):
    """argparse, but its complaints follow the one-line ``error: field: reason`` contract."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument (?:--)?([\w-]+)(?:/[^:]*)?: (.*)", message)
        if match:
            field, reason = match.groups()
        elif message.startswith("unrecognized arguments: "):
            field, reason = "arguments", message.replace("unrecognized arguments", "unknown")
        elif message.startswith("the following arguments are required: "):
            field, reason = message.split(": ", 1)[1].split(",")[0].lstrip("-"), "required"
        else:
            field, reason = "arguments", message
        raise ConfigError(field.replace("-", "_"), reason)


def _workload_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine and workload")
    g.add_argument("--preset", help="batch-time preset (see `servelab presets`)")
    g.add_argument("--preset-file", metavar="FILE", help="a preset YAML file of your own")
    g.add_argument("--budget", metavar="B", help="token budget b_max (default: the preset's)")
    g.add_argument("--kmax", metavar="K", help="at most K requests per batch (default: no cap)")
    g.add_argument("--tile", metavar="T", help="GEMM tile: a batch of n tokens costs as "
                   "ceil(n/T)*T tokens (default: the preset's, none for the shipped ones)")
    g.add_argument("--replicas", metavar="K",
                   help="K identical engines behind a router (default 1)")
    g.add_argument("--router", metavar="R", help="with --replicas: round_robin, random, "
                   "jsq (the default: fewest unprocessed tokens), lor (fewest outstanding "
                   "requests), power_of_d:D")
    g.add_argument("--convention", choices=CONVENTIONS,
                   help="token convention (default: the preset's)")
    g.add_argument("--rate", metavar="R", help="arrival rate, requests per second")
    g.add_argument("--load", metavar="X", help="arrival rate as a fraction of capacity")
    g.add_argument("--prefill", metavar="L", help="prompt lengths: 129, poisson:32, "
                   "uniform:16,512, geometric:50, lognormal:mean=300,sigma=1, csv:FILE#COL, "
                   "sharegpt (with --decode sharegpt: real prompt/output pairs)")
    g.add_argument("--decode", metavar="L", help="output lengths, same forms as --prefill")
    g.add_argument("--trace", metavar="FILE",
                   help="CSV with arrived_at,num_prefill_tokens,num_decode_tokens")
    _memory_flags(p)


def _memory_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("KV memory (unlimited without --kv-blocks)")
    g.add_argument("--kv-blocks", metavar="N|preset",
                   help="a KV cache of N blocks, or the preset's (`servelab presets`)")
    g.add_argument("--block-size", metavar="T",
                   help="tokens per KV block (default: the preset's, else 16)")
    g.add_argument("--watermark", metavar="F",
                   help="fraction of blocks a new prompt leaves free (default 0.01)")
    g.add_argument("--preemption", choices=PREEMPTION_MODES,
                   help="what eviction does with the KV (default recompute)")
    g.add_argument("--swap-block-s", metavar="S",
                   help="with --preemption swap: seconds to move one block each way "
                   "(default: block size x the preset's KV bytes per token / 25 GB/s)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--arrivals", metavar="A", help="poisson (default), gamma:CV, deterministic")
    g.add_argument("--requests", metavar="N|auto",
                   help="simulate N arrivals, or auto (the default): grow the run from 5,000 "
                   "until the stability verdict is confident")
    g.add_argument("--max-requests", metavar="N",
                   help="where --requests auto stops (default 500,000)")
    g.add_argument("--duration", metavar="T", help="simulate arrivals for T seconds")
    g.add_argument("--seed", metavar="S", help="random seed (default 0)")
    g.add_argument("--drain", action="store_const", const=True,
                   help="after the horizon, run until every request finishes")
    g.add_argument("--slo", action="append", metavar="NAME:PROB:tbt=S[,ttft=S]",
                   help="a service-level class: its share of the requests and its TBT (and "
                   "TTFT) target in seconds; repeatable, shares summing to 1, e.g. --slo "
                   "strict:0.05:tbt=0.1 --slo relaxed:0.95:tbt=0.5")
    # Short for --set scheduler.<knob>=...; a new knob needs no flag (see the epilog).
    g = p.add_argument_group("scheduler options")
    g.add_argument("--chunked-prefill", action="store_const", const=True,
                   help="let fastertransformer/vllm split prompts across batches")
    g.add_argument("--priority", choices=("decode", "prefill"), help="kfcfs: which phase first")
    g.add_argument("--kp", metavar="K", help="kfcfs: at most K requests contribute prefill")
    g.add_argument("--kd", metavar="K", help="kfcfs: at most K requests contribute decode")
    _set_flag(p, "set any setting by its dotted path, e.g. workload.rate=5 or "
                 "scheduler.kp=4 (repeatable; wins over a flag)")


def _simulate_flags(p: argparse.ArgumentParser) -> None:
    """What a single simulation takes: a scheduler, the engine and workload, the run."""
    p.add_argument("--scheduler", metavar="S", help=f"one of {', '.join(SCHEDULERS)}")
    _workload_flags(p)
    _run_flags(p)


CRITERIA_HELP = """criteria, --criterion C (repeatable; all must hold for every seed):
  stable                the stability verdict is stable (and the theory agrees)
  METRIC<=SECONDS       METRIC: {ttft,tbt,tpot,e2e}_{mean,p50,p90,p99}, also <
  METRIC<=slo           ttft_* and tbt_*: every SLO class within its own target
  slo_attainment>=X     every SLO class has at least X of its requests within targets, also >"""


def _search_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--criterion", metavar="C", action="append",
                   help="what every run must meet, e.g. stable, ttft_p50<=0.5 or tbt_p99<=slo "
                   "(repeatable; below; also --set criteria=[...])")
    g.add_argument("--seeds", metavar="N", help=f"seeds per rate: --seed S to S+N-1 (default "
                   f"{DEFAULT_SEEDS}); a rate passes only if every seed meets every criterion")
    g.add_argument("--tolerance", metavar="T", help="stop when the bracket's high end is "
                   f"within T of its low end, relative (default {DEFAULT_TOLERANCE})")


def _compare_flags(p: argparse.ArgumentParser) -> None:
    """What a comparison takes: schedulers, the engine and workload, the run."""
    p.add_argument("--schedulers", metavar="A,B,C", help="default: all five")
    _workload_flags(p)
    _run_flags(p)


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--loads", metavar="X,Y,...", help="the loads to compare at, as fractions "
                   f"of capacity (each > 0, at most {MAX_LOAD:g}), e.g. 0.3,0.5,0.7,0.9; "
                   "not with --rate or --load")
    g.add_argument("--metric", metavar="M", help=f"the statistic the table and plot show, in "
                   f"seconds: {LATENCY_STATISTICS}, or M:CLASS for one SLO class's (default "
                   f"{DEFAULT_METRIC})")


def _set_flag(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=text)


def _scheduler_epilog() -> str:
    """Every policy's knobs, from their options classes: a new policy shows up by itself."""
    lines = ["scheduler options, --set scheduler.OPTION=VALUE (in a file: scheduler: {name: S, "
             "OPTION: VALUE}):"]
    for name in SCHEDULERS:
        rows = options_type(name).describe()
        lines.append(f"  {name}{'' if rows else ': none'}")
        lines += [f"    {knob:<18}{values}: {about}" for knob, values, about in rows]
    return "\n".join(lines)


def _output_flags(p: argparse.ArgumentParser, plot: str | None = None) -> None:
    """--json and --out; with ``plot`` (what the plot shows, and where by default), --plot."""
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--out", metavar="DIR", help="write result files into a new directory DIR")
    if plot:
        g.add_argument("--plot", metavar="FILE", help=f"{plot}; .png, .svg or .pdf")


BACKLOG_PLOT = f"the backlog plot (default: DIR/backlog.png, else ./{DEFAULT_PLOT})"
SWEEP_PLOT = "the metric against the load (default: DIR/sweep.png with --out, else none)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="servelab", description="Queueing theory and simulation of LLM "
                     "inference scheduling: capacity, stability, TTFT/TBT/E2E.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list the batch-time presets")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("capacity", help="the theory alone: capacity, load, fluid slope")
    _workload_flags(p)
    p.add_argument("--json", action="store_true")

    epilog = _scheduler_epilog()
    formatter = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("simulate", help="simulate one scheduler", epilog=epilog,
                       formatter_class=formatter)
    _simulate_flags(p)
    _output_flags(p)

    p = sub.add_parser("capacity-search", help="the largest rate that meets every criterion, "
                       "over several seeds", epilog=f"{CRITERIA_HELP}\n\n{epilog}",
                       formatter_class=formatter)
    _simulate_flags(p)
    _search_flags(p)
    _output_flags(p)

    p = sub.add_parser("compare", help="simulate several schedulers on the same requests "
                       "(no options: the paper's Figure 1 at 0.9 of capacity)", epilog=epilog,
                       formatter_class=formatter)
    _compare_flags(p)
    _output_flags(p, BACKLOG_PLOT)

    p = sub.add_parser("sweep", help="compare schedulers at several loads: a latency "
                       "statistic against the load", epilog=epilog, formatter_class=formatter)
    _compare_flags(p)
    _sweep_flags(p)
    _output_flags(p, SWEEP_PLOT)

    p = sub.add_parser("run", help="run an experiment YAML (keys as the flags, or dotted "
                       "paths): one run, a comparison, a sweep (loads), capacity searches "
                       "(criteria)", epilog=epilog, formatter_class=formatter)
    p.add_argument("file", metavar="FILE")
    _set_flag(p, "override a setting of the file by its flat name or dotted path, e.g. "
                 "rate=5 or scheduler.kp=4 (repeatable)")
    _output_flags(p, f"with schedulers: {BACKLOG_PLOT}; with loads: {SWEEP_PLOT}")
    return parser


_NOT_CONFIG = {"command", "json", "out", "plot", "file", "set"}


def _config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None,
                      base_dir: str | None = None) -> SimConfig:
    """The flags (or ``base``, a file's settings) with the ``--set`` overrides applied."""
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    return SimConfig.from_dict(flags if base is None else base, base_dir,
                               _overrides(getattr(args, "set", [])))


def _overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``--set PATH=VALUE`` items, each value read as YAML."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("set", f"expected PATH=VALUE, got {item!r}")
        if not value.strip():
            raise ConfigError("set", f"{item!r} has no value; to drop the setting, write "
                                     f"{key.strip()}=null")
        pairs.append((key.strip(), parse_yaml(value, "set", item)))
    return pairs


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(message + "\n")


def cmd_presets(args: argparse.Namespace) -> None:
    rows = []
    for preset in list_presets():
        mu, _ = preset.timing.capacity(preset.budget)
        rows.append({"name": preset.name, "budget": preset.budget,
                     "convention": preset.convention, "timing": preset.timing.describe(),
                     "tokens_per_s": mu, "description": preset.description,
                     "source": preset.source,
                     "kv": None if preset.kv is None else preset.kv.to_dict()})
    _emit(to_json(rows) if args.json else presets_text(rows))


def cmd_capacity(args: argparse.Namespace) -> None:
    result = capacity(_config_from_args(args))
    _emit(to_json(result) if args.json else capacity_text(result))


def _path(value: str | None, field: str) -> Path | None:
    """A path flag; an empty one is an error (it would otherwise mean "no output" silently)."""
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(field, "is empty; name a path")
    return Path(value)


def _save_then_emit(writes: Sequence[Callable[[], None]], report: Callable[[bool], str]) -> None:
    """Write the result files, then print the report; if a write fails, print it anyway.

    Paths were checked before the run, so a failure here is rare (a full disk, a permission
    changed meanwhile), but the finished work must not be lost to it: the report (told whether
    the files were saved) goes to stdout, then the one-line error.
    """
    try:
        for write in writes:
            write()
    except ConfigError:
        _emit(report(False))
        raise
    _emit(report(True))


def cmd_simulate(args: argparse.Namespace, config: SimConfig | None = None) -> None:
    config = _config_from_args(args) if config is None else config
    out = _path(args.out, "out")
    if getattr(args, "plot", None) is not None:
        raise ConfigError("plot", "a single simulation draws no plot; only a comparison (a "
                                  "file with schedulers:) does")
    if out is not None:
        check_out_dir(out)
    result = simulate(config)
    writes = [] if out is None else [lambda: write_atomically(out, result.write_into)]
    _save_then_emit(writes, lambda saved: to_json(result.summary) if args.json
                    else simulate_text(result.summary))


def _outputs(args: argparse.Namespace, plot_name: str, default_plot: Path | None
             ) -> tuple[Path | None, Path | None, bool]:
    """``--out`` and ``--plot``, checked before any run: the directory, where the plot goes
    (``plot_name`` in the directory unless ``--plot`` says elsewhere; None: no plot), and
    whether it goes into the directory."""
    out, plot = _path(args.out, "out"), _path(args.plot, "plot")
    if out is not None:
        check_out_dir(out)
    plot_in_out = out is not None and plot is None  # the plot travels with the results
    plot_path = out / plot_name if out is not None and plot_in_out else plot or default_plot
    if plot_path is not None and not plot_in_out:
        check_plot_path(plot_path)
    return out, plot_path, plot_in_out


def cmd_compare(args: argparse.Namespace, config: SimConfig | None = None) -> None:
    config = _config_from_args(args) if config is None else config
    if config.rate is None and config.load is None and config.trace is None:
        config = config.replace(load=DEFAULT_COMPARE_LOAD)
    out, plot_path, plot_in_out = _outputs(args, "backlog.png", Path(DEFAULT_PLOT))
    assert plot_path is not None  # a comparison always draws its plot
    names = config.schedulers
    _progress(f"simulating {', '.join(names or ('all five schedulers',))} ...")
    result = compare(config)
    writes = [] if out is None else [
        lambda: write_atomically(out, lambda d: _write_compare(result, d, plot_in_out))]
    if not plot_in_out:
        writes.append(lambda: plot_backlog(result.results, plot_path))

    def report(saved: bool) -> str:
        shown = str(plot_path) if saved else None
        if args.json:
            theory = {k: result.summaries[0][k]
                      for k in ("rate", "load", "capacity", "fluid_slope_tokens_per_s",
                                "kmax_region", "theory_verdict", "theory_verdict_reason")}
            theory.update({k: result.summaries[0][k] for k in MEMORY_KEYS
                           if k in result.summaries[0]})
            return to_json({"theory": theory, "results": result.summaries, "plot": shown})
        return f"{compare_text(result.summaries)}\n\nbacklog plot: {shown or 'not written'}"

    _save_then_emit(writes, report)


def cmd_capacity_search(args: argparse.Namespace) -> None:
    config = _config_from_args(args)  # --criterion, --seeds, --tolerance: settings too
    out = _path(args.out, "out")
    if out is not None:
        check_out_dir(out)
    result = capacity_search(config, on_probe=lambda probe: _progress(probe_line(probe)))
    text = to_json(result)

    def save(directory: Path) -> None:
        (directory / "capacity_search.json").write_text(text + "\n")

    writes = [] if out is None else [lambda: write_atomically(out, save)]
    _save_then_emit(writes, lambda saved: text if args.json else capacity_search_text(result))


def _write_compare(result: CompareResult, directory: Path, with_plot: bool) -> None:
    (directory / "compare.json").write_text(to_json(result.summaries) + "\n")
    for r in result.results:
        sub = directory / r.summary["scheduler"]
        sub.mkdir()
        r.write_into(sub)
    if with_plot:
        plot_backlog(result.results, directory / "backlog.png")


def cmd_sweep(args: argparse.Namespace) -> None:
    config = _config_from_args(args)
    out, plot_path, plot_in_out = _outputs(args, "sweep.png", None)
    result = {"sweep": sweep(config, on_load=lambda point: _progress(load_line(point)))}
    _save_experiment(args, result, out, plot_path, plot_in_out, whole=False)


def cmd_experiment(args: argparse.Namespace, config: SimConfig) -> None:
    """A file with loads (a sweep) or criteria (capacity searches), or both."""
    if config.loads is None and args.plot is not None:
        raise ConfigError("plot", "only a sweep (loads:) or a comparison draws a plot; "
                                  "capacity searches draw none")
    out, plot_path, plot_in_out = _outputs(args, "sweep.png", None)
    result = run_experiment(
        config, on_load=lambda point: _progress(load_line(point)),
        on_probe=lambda probe: _progress(f"{probe['scheduler']}: {probe_line(probe)}"))
    _save_experiment(args, result, out, plot_path, plot_in_out, whole=True)


def _save_experiment(args: argparse.Namespace, result: dict[str, Any], out: Path | None,
                     plot_path: Path | None, plot_in_out: bool, whole: bool) -> None:
    """Write an experiment's files and print its report: the sweep's (``sweep.json`` and its
    plot), then each capacity search's (``<scheduler>/capacity_search.json``). ``whole``: the
    JSON holds the parts by name; otherwise it is the sweep's alone (``servelab sweep``)."""
    swept = result.get("sweep")
    searches = result.get("capacity_searches", [])
    plot = plot_path if swept is not None else None  # only a sweep draws one

    def fill(directory: Path) -> None:
        if swept is not None:
            (directory / "sweep.json").write_text(to_json(swept) + "\n")
            if plot is not None and plot_in_out:
                plot_sweep(swept, directory / plot.name)
        for search in searches:
            (directory / search["scheduler"]).mkdir()
            (directory / search["scheduler"] / "capacity_search.json").write_text(
                to_json(search) + "\n")

    writes = [] if out is None else [lambda: write_atomically(out, fill)]
    if swept is not None and plot is not None and not plot_in_out:
        writes.append(lambda: plot_sweep(swept, plot))

    def report(saved: bool) -> str:
        shown = str(plot) if saved and plot is not None else None
        if args.json:
            parts = {**result, **({"sweep": {**swept, "plot": shown}} if swept else {})}
            return to_json(parts if whole else parts["sweep"])
        texts = [capacity_search_text(s) for s in searches]
        if swept is not None:
            where = shown or ("not written" if plot else "none (give --plot FILE or --out DIR)")
            texts.insert(0, f"{sweep_text(swept)}\n\nplot: {where}")
        return "\n\n".join(texts)

    _save_then_emit(writes, report)


def cmd_run(args: argparse.Namespace) -> None:
    path = _path(args.file, "file")
    assert path is not None  # a required argument
    data = load_yaml(path, "file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("file", f"{path} must hold a mapping of settings")
    config = _config_from_args(args, data, str(path.resolve().parent))
    if is_experiment(config):
        cmd_experiment(args, config)
    elif "schedulers" in config.written:  # even as null: a comparison of all five
        cmd_compare(args, config)
    else:
        cmd_simulate(args, config)


COMMANDS = {"presets": cmd_presets, "capacity": cmd_capacity, "simulate": cmd_simulate,
            "compare": cmd_compare, "sweep": cmd_sweep, "run": cmd_run,
            "capacity-search": cmd_capacity_search}


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Every warning as one line on stderr, a ``ConfigWarning`` as ``warning: field: reason``."""
    if isinstance(message, ConfigWarning):
        text = f"{message.field}: {message.reason}"
    else:
        text = f"{category.__name__}: {' '.join(str(message).split())}"
    sys.stderr.write(f"warning: {text}\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # a newcomer's first try: show what there is
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = parser.parse_args(argv)
            COMMANDS[args.command](args)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc.field}: {exc.reason}\n")
        return 2
    except SchedulerError as exc:
        sys.stderr.write(f"error: scheduler: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
