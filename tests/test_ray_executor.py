"""The Ray executor runs the same job function as the local one (local Ray, 2 CPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'rsqair-bench[ray]' (.ci/run installs it)")

from tests.test_runner import _job_dir, _mark, _run, _suite  # noqa: E402 - after the importorskip


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_runs_jobs_isolates_failure_and_skips_done(tmp_path: Path, local_ray: None) -> None:
    _, suite = _suite(tmp_path, seeds=[0, 1, 2])
    _mark(suite, 2, "inject_failure")
    summary, out = _run(suite, executor="ray")
    assert summary.count("done") == 2 and summary.count("failed") == 1 and summary.exit_code == 1, out
    assert "injected failure" in (_job_dir(suite, 2) / "error.txt").read_text()
    for seed in (0, 1):
        metrics = json.loads((_job_dir(suite, seed) / "metrics.json").read_text())
        assert metrics["seed"] == seed and (_job_dir(suite, seed) / "DONE").exists()
    (_job_dir(suite, 2) / "inject_failure").unlink()
    summary, out = _run(suite, executor="ray")
    assert summary.count("skipped") == 2 and summary.count("done") == 1 and summary.exit_code == 0, out
    assert ray.is_initialized()  # the runner leaves a Ray it did not start running
