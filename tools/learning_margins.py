"""Margins of the slow learning checks over seeds x kernel families (x a rounding perturbation).

Why: a learning check passes on one float trajectory. Another CPU picks other kernels (AVX2 or AVX-512
ATen loops, other MKL GEMM code paths), which round differently; the difference grows along the
trajectory, and issue 30's AVX-512 + AMX machine kept the old 1-3-ball check at its initial bound.
So every threshold must hold by a margin over seeds and kernel families. This tool runs each check
(`tests/learning_checks.py: CHECKS`, the functions the tests assert on) once per seed x family
(x `--perturb`), each run in its own process with its family's dispatch variables set before torch
loads, and prints each figure's margin to its threshold and the worst run of each check.

    python tools/learning_margins.py run --out margins.jsonl [--checks bound dynamics] [--seeds 0 1 2]
        [--families default avx2] [--perturb [SEED ...]] [--jobs N] [--logs DIR]   # from the repository root
    python tools/learning_margins.py table margins.jsonl [--json summary.json]
    python tools/learning_margins.py families                  # the kernel families and their variables

`run` appends one JSON line per finished run to `--out` (rewritten atomically after each run) and skips
runs already there, so an interrupted `run` resumes; `--jobs N` runs N processes at once, each with its
check's own thread count (OMP/MKL variables and torch.set_num_threads). Results are deterministic per
check, seed, family, thread count, torch build and CPU; load only changes wall time (`nice` it freely).
`--perturb` multiplies every initial weight by (1 + 2^-24 N(0, 1)), one float32 rounding step: the kind
of difference another CPU's kernels or a torch patch release makes. A run's log (stderr) goes to
`<out>.logs/` (or `--logs`). It needs torch and the project's dependencies, not an install of the project:
`rsqair_bench` is imported from this checkout (`use_this_checkout`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from threading import Lock
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ULP = 2.0**-24  # float32's unit roundoff
DISPATCH = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
# Kernel families: the dispatch variables a run sets (before torch loads). `default` sets none: the
# kernels this CPU picks by itself (AVX-512 ATen loops here and on issue 30's AMX machine; MKL chooses
# its GEMM path by CPU vendor and model). The others cap each library at an instruction set, which
# emulates an older or a different x86-64 CPU on this one. No learning check compiles (both run
# eager), so inductor's SIMD width does not enter; a compiled check would add
# `torch._inductor.config.cpp.simdlen` to its family.
FAMILIES: dict[str, dict[str, str]] = {
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "sse": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def use_this_checkout() -> None:
    """Import `rsqair_bench` and `tests` from this checkout, installed or not (the lead's 16-core machine has
    torch but no `pip install -e`): pyproject.toml installs the top-level baselines/ folder as
    `rsqair_bench.baselines`, which a bare checkout on sys.path lacks, so that name is bound here."""
    import importlib.util

    sys.path.insert(0, str(ROOT))
    here = ROOT / "baselines" / "__init__.py"
    spec = importlib.util.find_spec("rsqair_bench.baselines")
    if spec is None or spec.origin is None or Path(spec.origin).resolve() != here.resolve():
        spec = importlib.util.spec_from_file_location("rsqair_bench.baselines", here,
                                                      submodule_search_locations=[str(here.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["rsqair_bench.baselines"] = module
        spec.loader.exec_module(module)
        sys.modules["rsqair_bench"].baselines = module
    import rsqair_bench

    if Path(rsqair_bench.__file__).resolve().parent != ROOT / "rsqair_bench":
        raise ToolError(f"rsqair_bench imports from {Path(rsqair_bench.__file__).parent}, not this checkout {ROOT}")


class ToolError(Exception):
    """One line for the user: what file or argument, and what was expected."""


def parse_family(text: str) -> tuple[str, dict[str, str]]:
    """A family name from FAMILIES, or `NAME:VAR=VALUE,VAR=VALUE` for one of your own."""
    if ":" not in text:
        if text not in FAMILIES:
            raise ToolError(f"--families: unknown family {text!r}; expected one of {', '.join(FAMILIES)} or NAME:VAR=VALUE,...")
        return text, FAMILIES[text]
    name, _, spec = text.partition(":")
    env = {}
    for item in filter(None, spec.split(",")):
        var, eq, value = item.partition("=")
        if not eq or var not in DISPATCH:
            raise ToolError(f"--families {text!r}: expected NAME:VAR=VALUE,... with VAR one of {', '.join(DISPATCH)}")
        env[var] = value
    return name, env


# ----------------------------------------------------------------------------- one run (child process)
def perturbed_factory(seed: int):  # noqa: ANN201 - a ModelFactory
    """The registry's models with every initial weight multiplied by (1 + ULP * N(0, 1)), noise seeded."""
    import torch

    from rsqair_bench.registry import build_model

    def build(name: str, config):  # noqa: ANN001, ANN202
        model = build_model(name, config)
        g = torch.Generator().manual_seed(10_000 + seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + ULP * torch.randn(p.shape, generator=g))
        return model

    return build


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one(check_name: str, seed: int, perturb: bool, threads: int | None, workdir: Path) -> dict[str, Any]:
    """Run one check in this process (the caller set the family's variables before torch loaded)."""
    import dataclasses

    import torch

    from tests.learning_checks import CHECKS, run_check

    check = CHECKS[check_name]
    if threads is not None:
        check = dataclasses.replace(check, threads=threads)
    start = time.perf_counter()
    figures = run_check(check, workdir, seed, perturbed_factory(seed) if perturb else None)
    return {
        "check": check.name, "seed": seed, "perturbed": perturb, "threads": check.threads,
        "figures": figures, "margins": {t.figure: t.margin(figures[t.figure]) for t in check.thresholds},
        "failures": check.failures(figures), "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_name(),
        "env": {v: os.environ[v] for v in DISPATCH if v in os.environ},
    }


# ----------------------------------------------------------------------------- many runs (parent)
def read_rows(path: Path) -> list[dict[str, Any]]:
    """The runs recorded in a JSON-lines file; a line that is not a run is one ToolError naming the line."""
    from rsqair_bench.core.io import os_error_line, read_regular_file

    try:
        text = read_regular_file(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ToolError(os_error_line(err, path) if isinstance(err, OSError) else f"{path}: not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ToolError(f"{path}: line {number}: not JSON ({err.msg}); expected one run per line") from None
        if not isinstance(row, dict) or not {"check", "seed", "family", "perturbed", "figures", "margins"} <= set(row):
            raise ToolError(f"{path}: line {number}: expected a run with check, seed, family, perturbed, figures, margins")
        rows.append(row)
    return rows


def key(row: dict[str, Any]) -> tuple:
    return row["check"], row["seed"], row["family"], row["perturbed"], row.get("threads")


def child(check: str, seed: int, family: tuple[str, dict[str, str]], perturb: bool, threads: int, logs: Path) -> dict[str, Any]:
    """One run in a fresh process: the family's variables (and no others of DISPATCH), its thread count."""
    name, env_vars = family
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH}
    env.update(env_vars, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    tag = f"{check}-seed{seed}-{name}{'-perturbed' if perturb else ''}"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"margins-{tag}-") as work, (logs / f"{tag}.log").open("w") as log:
        cmd = [sys.executable, str(Path(__file__).resolve()), "one", check, str(seed), "--threads", str(threads),
               "--workdir", work] + (["--perturb"] if perturb else [])
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"check": check, "seed": seed, "family": name, "perturbed": perturb, "threads": threads, "figures": {},
                "margins": {}, "failures": [f"run failed (exit {done.returncode}); see {logs / (tag + '.log')}"],
                "error": True}
    return {**json.loads(lines[-1]), "family": name}


def planned(args: argparse.Namespace, checks: dict) -> Iterator[tuple]:
    families = [parse_family(f) for f in args.families]
    for name in args.checks:
        threads = args.threads or checks[name].threads
        for seed in args.seeds:
            for family in families:
                perturbed = args.perturb is not None and (not args.perturb or seed in args.perturb)
                for perturb in (False, True) if perturbed else (False,):
                    yield name, seed, family, perturb, threads


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    from rsqair_bench.core.io import atomic_write_text
    from tests.learning_checks import CHECKS

    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        raise ToolError(f"--checks: unknown check {unknown[0]!r}; expected one of {', '.join(CHECKS)}")
    out = Path(args.out)
    rows = read_rows(out) if out.exists() else []
    done = {key(r) for r in rows if not r.get("error")}
    rows = [r for r in rows if not r.get("error")]  # a failed run is retried
    todo = [p for p in planned(args, CHECKS) if (p[0], p[1], p[2][0], p[3], p[4]) not in done]
    print(f"{len(todo)} runs to do ({len(done)} already in {out}), {args.jobs} at a time", flush=True)
    lock, logs = Lock(), Path(args.logs) if args.logs else out.with_name(out.name + ".logs")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(child, *p, logs) for p in todo]
        for future in as_completed(futures):
            row = future.result()
            with lock:
                rows.append(row)
                atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
            state = "FAILED " + "; ".join(row["failures"]) if row["failures"] else "passes"
            print(f"{row['check']} seed {row['seed']} {row['family']}{' perturbed' if row['perturbed'] else ''}: "
                  f"{state} ({row.get('seconds', '?')} s)", flush=True)
    return rows


# ----------------------------------------------------------------------------- the table
def run_label(row: dict[str, Any]) -> str:
    return f"seed {row['seed']}, {row['family']}{', perturbed' if row['perturbed'] else ''}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per check: its thresholds, its runs, and per threshold the worst run's value and margin (margins
    and failures recomputed from the figures against the check's current thresholds)."""
    from tests.learning_checks import CHECKS

    out: dict[str, Any] = {}
    rows = [{**r, "margins": {t.figure: t.margin(r["figures"][t.figure]) for t in CHECKS[r["check"]].thresholds
                              if t.figure in r["figures"]}, "failures": CHECKS[r["check"]].failures(r["figures"])}
            if r["check"] in CHECKS and not r.get("error") else r for r in rows]  # against today's thresholds
    for name in dict.fromkeys(r["check"] for r in rows):
        runs = sorted((r for r in rows if r["check"] == name), key=lambda r: (r["seed"], r["family"], r["perturbed"]))
        thresholds = CHECKS[name].thresholds if name in CHECKS else ()
        worst = {}
        for t in thresholds:
            measured = [r for r in runs if t.figure in r["margins"]]
            if measured:
                w = min(measured, key=lambda r: r["margins"][t.figure])
                worst[t.figure] = {"threshold": str(t), "value": w["figures"][t.figure], "margin": w["margins"][t.figure],
                                   "run": run_label(w)}
        out[name] = {"test": CHECKS[name].test if name in CHECKS else None, "thresholds": [str(t) for t in thresholds],
                     "runs": runs, "worst": worst, "all_pass": all(not r["failures"] for r in runs),
                     "machines": sorted({f"{r.get('cpu')} ({r.get('cpu_capability')}, torch {r.get('torch')})" for r in runs})}
    return out


def markdown(summ: dict[str, Any]) -> str:
    """One Markdown table per check: a row per run (value and margin of each asserted figure, then the
    figures it prints but does not assert), then the thresholds and the worst run of each."""
    from tests.learning_checks import CHECKS

    parts = []
    for name, s in summ.items():
        figures = list(s["worst"]) or sorted({f for r in s["runs"] for f in r["margins"]})
        shown = list(CHECKS[name].printed) if name in CHECKS else []
        head = ["run", "threads", *figures, *shown, "passes", "s"]
        lines = [f"### {name} ({s['test']})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in s["runs"]:
            cells = [f"{r['figures'][f]:.3f} ({r['margins'][f]:+.3f})" if f in r["margins"] else "—" for f in figures]
            cells += [f"{r['figures'][f]:.3f}" if f in r["figures"] else "—" for f in shown]
            ok = "error" if r.get("error") else ("yes" if not r["failures"] else "NO: " + "; ".join(r["failures"]))
            lines.append(f"| {run_label(r)} | {r.get('threads')} | " + " | ".join(cells) + f" | {ok} | {r.get('seconds', '—')} |")
        limits = [s["worst"][f]["threshold"] if f in s["worst"] else "" for f in figures]
        worst = [f"{s['worst'][f]['run']} ({s['worst'][f]['margin']:+.3f})" if f in s["worst"] else "—" for f in figures]
        lines.append("| " + " | ".join(["threshold", "", *limits, *["not asserted"] * len(shown), "", ""]) + " |")
        lines.append("| " + " | ".join(["worst run (margin)", "", *worst, *[""] * len(shown), "", ""]) + " |")
        lines += ["", f"All runs pass: {'yes' if s['all_pass'] else 'NO'}. Machines: {'; '.join(s['machines'])}.", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run checks x seeds x families; JSON lines to --out")
    r.add_argument("--out", required=True, help="JSON-lines file (created, or resumed: runs already there are skipped)")
    r.add_argument("--checks", nargs="+", default=None, help="default: every check in tests/learning_checks.py")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--families", nargs="+", default=["default", "avx2"], help=f"{', '.join(FAMILIES)} or NAME:VAR=VALUE,...")
    r.add_argument("--perturb", nargs="*", type=int, default=None, metavar="SEED",
                   help="also run with perturbed initial weights: every seed, or only the seeds given")
    r.add_argument("--logs", default=None, help="folder for each run's stderr log (default: <out>.logs)")
    r.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    r.add_argument("--threads", type=int, default=None, help="override each check's own thread count (changes the trajectory)")
    r.add_argument("--json", default=None, help="also write the summary (runs and worst margins) to this JSON file")
    t = sub.add_parser("table", help="print the table of a JSON-lines file")
    t.add_argument("file")
    t.add_argument("--json", default=None, help="also write the summary to this JSON file")
    o = sub.add_parser("one", help="(internal) one run in this process; prints one JSON line")
    o.add_argument("check")
    o.add_argument("seed", type=int)
    o.add_argument("--perturb", action="store_true")
    o.add_argument("--threads", type=int, default=None)
    o.add_argument("--workdir", required=True)
    sub.add_parser("families", help="list the kernel families")
    args = parser.parse_args(argv)
    try:
        use_this_checkout()
        if args.command == "families":
            print("\n".join(f"{n}: {' '.join(f'{k}={v}' for k, v in e.items()) or '(none set: this CPU picks)'}"
                            for n, e in FAMILIES.items()))
            return 0
        if args.command == "one":
            print(json.dumps(one(args.check, args.seed, args.perturb, args.threads, Path(args.workdir))))
            return 0
        if args.command == "run":
            from tests.learning_checks import CHECKS

            args.checks = args.checks or list(CHECKS)
            if args.jobs < 1:
                raise ToolError(f"--jobs: expected a positive integer, found {args.jobs}")
            rows = run_all(args)
        else:
            rows = read_rows(Path(args.file))
        summ = summary(rows)
        print(markdown(summ))
        if args.json:
            from rsqair_bench.core.io import atomic_write_text

            atomic_write_text(args.json, json.dumps(summ, indent=1) + "\n")
        return 0 if all(s["all_pass"] for s in summ.values()) else 1
    except ToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
