"""Copy each finished job's train_log.csv and metrics.json into the suite's report/logs/ for committing.

Why: job directories hold checkpoints (megabytes each) and are not committed; the report's tables are
derived from metrics.json, so committing those (and the training curves) lets anyone check a table
against its sources without training.

    python tools/copy_job_logs.py results/study      -> results/study/report/logs/<model>_seed<k>_{train_log.csv,metrics.json}
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a suite's results directory (results/<suite name>)")
    results = parser.parse_args().results
    if not any(results.glob("*/seed*/DONE")):
        sys.exit(f"{results}: no finished jobs (<model>/seed<k>/DONE) there; expected a suite's results directory")
    logs = results / "report" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    copied = 0
    for done in sorted(results.glob("*/seed*/DONE")):
        job = done.parent
        for name in ("train_log.csv", "metrics.json"):
            if (job / name).is_file():
                shutil.copyfile(job / name, logs / f"{job.parent.name}_{job.name}_{name}")
                copied += 1
    print(f"{logs}: {copied} files")


if __name__ == "__main__":
    main()
