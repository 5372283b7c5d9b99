"""Time SQAIR training steps of any checkout of this repository, for before/after ratios.

Why a script and not `bench`: an old commit's `bench` may lack the columns or flags being compared.
This file imports `rsqair_bench` from the tree it is given, so one script times both sides:

    git worktree add /tmp/old 3067613
    for tree in /tmp/old . /tmp/old .; do python tools/step_time.py $tree --setting cpu; done

Settings (issue 10): `cpu` = hidden 64, glimpse 10, batch 16; `paper` = hidden 256, glimpse 20, batch 32;
both 5 particles, 10 frames, 4 slots, Adam, 1 thread unless --threads; --set changes a string field of
model_config (e.g. disc_input=residual; precision=bf16 autocasts the forward as training does, in a tree
that has `core.precision`). With --compile, a tree that
has `train.optimizer_update` compiles the optimizer update as training does; older trees update eagerly.
Prints one JSON line: median and min seconds per step over --steps timed steps (after 2 warm-up steps;
the first one, compilation included with --compile, is reported as first_step_s) and profiler events
in one step.
Alternate the trees in one session and compare ratios: the machine's load changes absolute times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", help="repository checkout whose rsqair_bench to time")
    parser.add_argument("--setting", choices=["cpu", "paper"], default="cpu")
    parser.add_argument("--model", default="sqair")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="model_config.compile (a tree that predates the switch fails on the unknown field)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a string model_config field, e.g. --set disc_input=residual (repeatable)")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from rsqair_bench.config import ModelConfig
    from rsqair_bench.registry import build_model, load_plugins

    torch.set_num_threads(args.threads)
    load_plugins([])
    paper = args.setting == "paper"
    options: dict[str, object] = {"compile": True} if args.compile else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, found {item!r}")
        options[key] = value
    config = ModelConfig(**options) if paper else ModelConfig(n_hidden=64, glimpse_size=10, **options)
    batch = 32 if paper else 16
    torch.manual_seed(0)
    model = build_model(args.model, config)
    try:  # trees with a compiled optimizer update use it with --compile, as training does
        from rsqair_bench.config import TrainConfig
        from rsqair_bench.training.optim import build_optimizer, optimizer_update
    except ImportError:
        optimizer = torch.optim.Adam(model.parameters(), 3e-4)
        update = optimizer.step
    else:
        optimizer = build_optimizer(model, TrainConfig(optimizer="adam", learning_rate=3e-4), args.compile)
        update = optimizer_update(optimizer, args.compile)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 10, 1, 50, 50, generator=generator) > 0.92).float()
    try:  # trees with model_config.precision run the forward under its autocast, as training does
        from rsqair_bench.core.precision import autocast
    except ImportError:
        import contextlib

        def autocast(precision: str, device: object) -> contextlib.nullcontext:  # type: ignore[misc]
            return contextlib.nullcontext()

    def step() -> None:
        with autocast(getattr(config, "precision", "fp32"), x.device):
            out = model(x, 5, generator)
        optimizer.zero_grad()
        out.loss.backward()
        update()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start  # compilation included when --compile
    step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sum(e.count for e in prof.key_averages())
    seconds.sort()
    print(json.dumps({"tree": args.tree, "setting": args.setting, "model": args.model, "compile": args.compile,
                      "set": args.set,
                      "first_step_s": first, "median_s": seconds[len(seconds) // 2], "min_s": seconds[0],
                      "profiler_events": events}))


if __name__ == "__main__":
    main()
