"""`python -m rsqair_bench train JOB.yaml --out DIR`: one job trained (or resumed) outside a suite,
under the same directory lock as the runner. Apart from the loop so that the loop module holds only
the training protocol."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from rsqair_bench.config import JobConfig, check_job, dump_yaml, load_config
from rsqair_bench.core.io import check_outputs, directory_lock
from rsqair_bench.core.job_status import STATUS_FILE
from rsqair_bench.training.csv_log import LOG_FILE
from rsqair_bench.training.loop import train_job
from rsqair_bench.training.state import BEST, LATEST


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="job config YAML (JobConfig: model, seed, train_data, model_config, train)")
    parser.add_argument("--out", required=True, help="job directory (resumes from its checkpoint.pt)")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_train_outputs(config_path: Path, job: JobConfig, out: Path) -> None:
    """Refuse a `--out` whose files would replace an input: the job file, its `train_data` or a plugin.

    Why: a job whose train_data or job file is one of the files training writes in `--out`
    (checkpoint.pt, best.pt, train_log.csv, ...) had that input replaced by a checkpoint or appended
    to with log rows. One exception: the job file may be `--out`'s own config.yaml when rewriting it
    changes no byte (resuming with the config.yaml a run wrote), since that writes over nothing."""
    outputs = {f"--out's {name}": out / name for name in ("config.yaml", LATEST, BEST, LOG_FILE, STATUS_FILE)}
    own_config = out / "config.yaml"
    if own_config.is_file() and config_path.is_file() and os.path.samefile(own_config, config_path) \
            and config_path.read_bytes() == dump_yaml(job).encode():
        outputs.pop("--out's config.yaml")
    inputs = {"the job config": config_path, "train_data": job.train_data,
              **{f"plugin {p}": p for p in job.plugins}}
    check_outputs(inputs, outputs)


def command(args: argparse.Namespace) -> int:
    job = load_config(JobConfig, args.config)
    if args.device:
        job = dataclasses.replace(job, device=args.device)
    check_job(job, f"{args.config}:")  # every range, before --out is touched
    check_train_outputs(Path(args.config), job, Path(args.out))
    with directory_lock(Path(args.out)):  # the runner's lock: one trainer per job directory
        result = train_job(job, Path(args.out), progress=not args.no_progress)
    how = "early-stopped" if result.stopped_early else "finished"
    print(
        f"{result.out_dir}: {how} at iteration {result.iterations}, best validation bound "
        f"{result.best_validation_bound} (iteration {result.best_iteration}), {result.sequences_per_s:.1f} seq/s"
    )
    return 0
