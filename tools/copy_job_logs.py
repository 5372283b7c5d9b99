"""Copy each finished job's train_log.csv and metrics.json into the suite's report/logs/ for committing.

Why: job directories hold checkpoints (megabytes each) and are not committed; the report's tables are
derived from metrics.json, so committing those (and the training curves) lets anyone check a table
against its sources without training.

    python tools/copy_job_logs.py results/study      -> results/study/report/logs/<model>_seed<k>_{train_log.csv,metrics.json}
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    results = Path(sys.argv[1])
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
