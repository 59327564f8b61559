"""The ``servelab`` command: parse flags, build a config, make one library call, print.

Bad input of any kind ends in one line ``error: <field>: <reason>`` on stderr and exit code 2,
with nothing written: flags are passed as text to ``SimConfig.from_dict`` so that flags, YAML
files and notebooks share one validation and one set of field names.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from servelab.config import SimConfig
from servelab.errors import ConfigError, SchedulerError
from servelab.report.plot import plot_backlog
from servelab.report.table import capacity_text, compare_text, presets_text, simulate_text
from servelab.results import check_out_dir, to_json, write_atomically
from servelab.schedulers import SCHEDULERS
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
    g.add_argument("--convention", choices=("paper", "engine"),
                   help="token convention (default: the preset's)")
    g.add_argument("--rate", metavar="R", help="arrival rate, requests per second")
    g.add_argument("--load", metavar="X", help="arrival rate as a fraction of capacity")
    g.add_argument("--prefill", metavar="L", help="prompt lengths: 129, poisson:32, "
                   "uniform:16,512, geometric:50, lognormal:mean=300,sigma=1, csv:FILE#COL")
    g.add_argument("--decode", metavar="L", help="output lengths, same forms as --prefill")
    g.add_argument("--trace", metavar="FILE",
                   help="CSV with arrived_at,num_prefill_tokens,num_decode_tokens")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--arrivals", metavar="A", help="poisson (default), gamma:CV, deterministic")
    g.add_argument("--requests", metavar="N", help="simulate N arrivals (default 5000)")
    g.add_argument("--duration", metavar="T", help="simulate arrivals for T seconds")
    g.add_argument("--seed", metavar="S", help="random seed (default 0)")
    g.add_argument("--drain", action="store_const", const=True,
                   help="after the horizon, run until every request finishes")
    g = p.add_argument_group("scheduler options")
    g.add_argument("--chunked-prefill", action="store_const", const=True,
                   help="let fastertransformer/vllm split prompts across batches")
    g.add_argument("--priority", choices=("decode", "prefill"), help="kfcfs: which phase first")
    g.add_argument("--kp", metavar="K", help="kfcfs: at most K requests contribute prefill")
    g.add_argument("--kd", metavar="K", help="kfcfs: at most K requests contribute decode")


def _output_flags(p: argparse.ArgumentParser, plot: bool = False) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--out", metavar="DIR", help="write result files into a new directory DIR")
    if plot:
        g.add_argument("--plot", metavar="PNG",
                       help=f"backlog plot path (default: DIR/backlog.png or ./{DEFAULT_PLOT})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="servelab", description="Queueing theory and simulation of LLM "
                     "inference scheduling: capacity, stability, TTFT/TBT/E2E.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list the batch-time presets")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("capacity", help="the theory alone: capacity, load, fluid slope")
    _workload_flags(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("simulate", help="simulate one scheduler")
    p.add_argument("--scheduler", metavar="S", help=f"one of {', '.join(SCHEDULERS)}")
    _workload_flags(p)
    _run_flags(p)
    _output_flags(p)

    p = sub.add_parser("compare", help="simulate several schedulers on the same requests "
                       "(no options: the paper's Figure 1 at 0.9 of capacity)")
    p.add_argument("--schedulers", metavar="A,B,C", help="default: all five")
    _workload_flags(p)
    _run_flags(p)
    _output_flags(p, plot=True)

    p = sub.add_parser("run", help="run an experiment YAML (keys as the flags)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the file (repeatable)")
    _output_flags(p, plot=True)
    return parser


_NOT_CONFIG = {"command", "json", "out", "plot", "file", "set"}


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}


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
                     "source": preset.source})
    _emit(to_json(rows) if args.json else presets_text(rows))


def cmd_capacity(args: argparse.Namespace) -> None:
    result = capacity(SimConfig.from_dict(_config_from_args(args)))
    _emit(to_json(result) if args.json else capacity_text(result))


def cmd_simulate(args: argparse.Namespace, values: dict[str, Any] | None = None,
                 base_dir: str | None = None) -> None:
    config = SimConfig.from_dict(values if values is not None else _config_from_args(args),
                                 base_dir)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_dir(out)
    result = simulate(config)
    if out is not None:
        write_atomically(out, result.write_into)
    _emit(to_json(result.summary) if args.json else simulate_text(result.summary))


def cmd_compare(args: argparse.Namespace, values: dict[str, Any] | None = None,
                base_dir: str | None = None) -> None:
    values = dict(values if values is not None else _config_from_args(args))
    if not {"rate", "load", "trace"} & values.keys():
        values["load"] = DEFAULT_COMPARE_LOAD
    config = SimConfig.from_dict(values, base_dir)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_dir(out)
    names = config.schedulers or None
    _progress(f"simulating {', '.join(names or ('all five schedulers',))} ...")
    result = compare(config, names)
    plot_in_out = out is not None and not args.plot  # the plot travels with the results
    if out is not None:
        write_atomically(out, lambda d: _write_compare(result, d, plot_in_out))
    plot_path = out / "backlog.png" if plot_in_out else Path(args.plot or DEFAULT_PLOT)
    if not plot_in_out:
        plot_backlog(result.results, plot_path)
    theory = {k: result.summaries[0][k]
              for k in ("rate", "load", "capacity", "fluid_slope_tokens_per_s", "kmax_region",
                        "theory_verdict", "theory_verdict_reason")}
    payload = {"theory": theory, "results": result.summaries, "plot": str(plot_path)}
    _emit(to_json(payload) if args.json else compare_text(result.summaries)
          + f"\n\nbacklog plot: {plot_path}")


def _write_compare(result: CompareResult, directory: Path, with_plot: bool) -> None:
    (directory / "compare.json").write_text(to_json(result.summaries) + "\n")
    for r in result.results:
        sub = directory / r.summary["scheduler"]
        sub.mkdir()
        r.write_into(sub)
    if with_plot:
        plot_backlog(result.results, directory / "backlog.png")


def cmd_run(args: argparse.Namespace) -> None:
    path = Path(args.file)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("file", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("file", f"{path} must hold a mapping of settings")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("set", f"expected KEY=VALUE, got {item!r}")
        data[key.strip()] = yaml.safe_load(value) if value.strip() else None
    base_dir = str(path.resolve().parent)
    if "schedulers" in data:
        cmd_compare(args, data, base_dir)
    else:
        cmd_simulate(args, data, base_dir)


COMMANDS = {"presets": cmd_presets, "capacity": cmd_capacity, "simulate": cmd_simulate,
            "compare": cmd_compare, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
