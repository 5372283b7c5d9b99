"""Command line: `python -m rsqair_bench <subcommand>`.

Each subcommand lives in the module that does the work; that module exposes
`add_arguments(parser)` and `command(args) -> int`. This file only wires them up,
turns user-facing errors into one line on stderr, and sets up logging.

Only the chosen subcommand's module is imported: `--help`, `validate` and `run --dry-run` then
start in a fraction of a second instead of paying for torch (about a second here, more on a cold
disk), which only the stages that train, evaluate or measure need.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from rsqair_bench.core.exit_guard import must_finish
from rsqair_bench.core.io import os_error_line
from rsqair_bench.errors import BenchError

# subcommand -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rsqair_bench.runner.run", "train and evaluate every model x seed of a suite, then report"),
    "data": ("rsqair_bench.data.commands", "generate or inspect bouncing-balls HDF5 files"),
    "train": ("rsqair_bench.training.command", "train one model from a job config"),
    "eval": ("rsqair_bench.evaluation.evaluate", "evaluate a checkpoint on a data split"),
    "report": ("rsqair_bench.report.write", "write tables and figures from metrics.json files"),
    "bench": ("rsqair_bench.runner.bench", "measure throughput and peak memory"),
    "list": ("rsqair_bench.registry", "list registered models with parameter counts"),
    "validate": ("rsqair_bench.runner.suite", "check a suite file without running it"),
}


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The parser and the imported subcommand modules: every one, or with `only` just that one
    (the other subcommands are then listed with their help line but take no arguments)."""
    parser = argparse.ArgumentParser(prog="python -m rsqair_bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    sub.required = True
    modules: dict[str, ModuleType] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        wired = only is None or name == only
        # not wired: no -h of its own, so that `SUBCOMMAND -h` reaches the wired parser in main
        subparser = sub.add_parser(name, help=help_text, description=help_text, add_help=wired)
        if wired:
            module = importlib.import_module(module_name)
            modules[name] = module
            module.add_arguments(subparser)
    return parser, modules


def chosen_subcommand(argv: list[str]) -> str:
    """The subcommand `argv` names, found by a parser that imports no subcommand module.

    Exits as argparse does for top-level `--help`, a missing or an unknown subcommand."""
    light, _ = build_parser(only="")
    known, _rest = light.parse_known_args(argv)
    return str(known.subcommand)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = build_parser(only=chosen_subcommand(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with must_finish(args.subcommand):  # a plugin's os._exit(0) / sys.exit(0) must not read as success
            return int(modules[args.subcommand].command(args) or 0)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at interpreter exit
        return 0
    except OSError as err:  # read-only or full filesystem, no permission, a file where a directory goes
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
