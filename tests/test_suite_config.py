"""Suite validation: every bad input is one ConfigError line naming the file and the key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rsqair_bench.cli import main
from rsqair_bench.config import JobConfig, SuiteConfig, dump_yaml, first_changed_setting, load_config, to_dict
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner.suite import expand_jobs, validate_suite

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "tiny",
    "models": ["sqair"],
    "seeds": [0, 1],
    "data": {
        "balls4": {"path": "data/b4.h5", "frames": 12, "splits": {"training": 10, "validation": 5, "test": 5}},
        "balls678": {"path": "data/b678.h5", "balls": "6-8", "frames": 12, "splits": {"test": 5}},
    },
    "train": {"curriculum_max": 10, "batch_size": 4},  # at most the 10 training sequences (validate)
    "eval": {"splits": {"balls4/test": {"data": "balls4"}, "balls678/test": {"data": "balls678", "max_objects": 8}}},
}


def _load(tmp_path: Path, **changes) -> SuiteConfig:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return validate_suite(load_config(SuiteConfig, path), path)


_DELETE = object()


def _error(tmp_path: Path, **changes) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, **changes)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "suite.yaml") + ":")
    return message


def test_base_suite_is_valid(tmp_path: Path) -> None:
    suite = _load(tmp_path)
    assert suite.models == ["sqair"] and suite.seeds == [0, 1]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"models": _DELETE}, "models: missing required key"),
        ({"seeds": "0,1"}, "seeds: expected a list, found str"),
        ({"train__batch_size": "x"}, "train.batch_size: expected int, found str 'x'"),
        ({"models": ["sqair", "foo"]}, "models[1]: unknown model 'foo'"),
        ({"models": ["sqair", "sqair"]}, "models[1]: duplicated model 'sqair'"),
        ({"seeds": [0, -3]}, "seeds[1]: expected a non-negative seed, found -3"),
        ({"seeds": [0, 1, 1]}, "seeds[2]: duplicated seed 1"),
        ({"results": "../elsewhere"}, "results: path '../elsewhere' escapes with '..'"),
        ({"results": "out/../../x"}, "results: path 'out/../../x' escapes"),
        ({"executor": "slurm"}, "executor: expected 'local' or 'ray', found str 'slurm'"),
        ({"workers": 0}, "workers: expected >= 1, found 0"),
        ({"train_data": "balls5"}, "train_data: unknown data set 'balls5'"),
        ({"eval__splits__balls4/test__data": "nope"}, "eval.splits.balls4/test.data: unknown data set 'nope'"),
        ({"eval__splits__balls4/test__frames": 20}, "eval.splits.balls4/test.frames: 20 frames but data.balls4 has 12"),
        ({"eval__splits__balls678/test__split": "training"}, "eval.splits.balls678/test.split: data set 'balls678' has no split"),
        ({"device": "gpu"}, "device: expected auto, cpu, cuda or cuda:N, found 'gpu'"),
        ({"data__balls4__balls": "5"}, "data.balls4.balls: expected '4' or '6-8'"),
        ({"extra": 1}, "unknown key 'extra'"),
        ({"model_config": {"where_scale_max": 1.5}}, "model_config.where_scale_max: expected in (0, 1], found 1.5"),
        ({"model_config": {"disc_image_encoder": "cnn"}}, "model_config.disc_image_encoder: expected 'mlp' or 'conv'"),
        ({"model_config": {"disc_input": "diff"}}, "model_config.disc_input: expected 'image' or 'residual'"),
        ({"model_config": {"disc_box_centre": "residual_peak"}},
         "model_config.disc_box_centre: expected 'head' unless disc_input is 'residual'"),
    ],
)
def test_bad_suite_is_one_line_with_key_path(tmp_path: Path, changes: dict, expected: str) -> None:
    assert expected in _error(tmp_path, **changes)


def test_unknown_relation_model_is_an_error(tmp_path: Path) -> None:
    assert "models[1]: unknown model 'sqair+nope'" in _error(tmp_path, models=["sqair", "sqair+nope"])


def test_expand_jobs_model_by_seed(tmp_path: Path) -> None:
    suite = _load(tmp_path, seeds=[3, 1])
    jobs = expand_jobs(suite)
    assert [j.name for j in jobs] == ["sqair/seed3", "sqair/seed1"]
    assert jobs[0].directory == Path("results/tiny/sqair/seed3")
    assert jobs[0].config.train_data == "data/b4.h5" and jobs[0].config.seed == 3
    assert jobs[1].split_data_path("balls678") == "data/b678.h5"
    assert jobs[0].config.train is not jobs[1].config.train  # each job owns its config


SHIPPED_SUITES = sorted(str(p.relative_to(ROOT / "suites")) for p in (ROOT / "suites").rglob("*.yaml"))


def test_the_headline_suites_are_shipped() -> None:
    assert {"generalization.yaml", "reference.yaml", "quick.yaml", "learn.yaml", "study.yaml"} <= set(SHIPPED_SUITES)


@pytest.mark.parametrize("name", SHIPPED_SUITES)
def test_shipped_suites_validate(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "suites" / name)]) == 0
    assert ": ok (" in capsys.readouterr().out


def test_generalization_dry_run_lists_five_seeds_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "suites" / "generalization.yaml"
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    suite = load_config(SuiteConfig, path)
    assert len(suite.models) >= 5 and {"sqair", "sqair+in", "sqair+rmc"} <= set(suite.models)
    for model in suite.models:
        listed = [line for line in out.splitlines() if line.strip().startswith(f"{model}/seed")]
        assert len(listed) == 5, (model, listed)
    assert "results/generalization/sqair+in/seed4" in out


def _settings_that_differ(a: object, b: object, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k for key in set(a) | set(b) for k in _settings_that_differ(a.get(key), b.get(key), f"{prefix}{key}.")}
    return set() if a == b else {prefix.rstrip(".")}


def test_paper_size_evidence_runs_differ_only_in_the_settings_under_test() -> None:
    """results/paper-size-cpu compares the learning suite's settings (run a) with the reference's
    (run b) at the paper's size, and run (c) is (a) without the prior's scale bias. The comparison is
    fair only if data, size, budget, threads and evaluation are the same, and the runs really are those
    suites' settings; generalization.yaml runs the set that learned dynamics there, (c)'s switches and
    optimizer, with the reference's iteration budget."""
    def job(name: str):
        return expand_jobs(load_config(SuiteConfig, ROOT / "suites" / name))[0]

    a, b = job("paper-size-cpu/learn-switches.yaml"), job("paper-size-cpu/reference-switches.yaml")
    c = job("paper-size-cpu/learn-nobias.yaml")
    switches = {"prop_prior", "prop_prior_scale_bias", "disc_input", "disc_box_centre"}
    optimizer = {"optimizer", "learning_rate", "max_iterations", "curriculum_every", "grad_clip"}
    assert _settings_that_differ(to_dict(a.config), to_dict(b.config)) == (
        {f"model_config.{k}" for k in switches} | {f"train.{k}" for k in optimizer})
    assert _settings_that_differ(to_dict(a.config), to_dict(c.config)) == {
        "model_config.prop_prior_scale_bias", "train.max_minutes"}
    assert a.eval == b.eval == c.eval and a.config.train.max_minutes == 60 and a.config.model_config.n_hidden == 256
    assert c.config.model_config.prop_prior_scale_bias is None and c.config.train.max_minutes == 120
    runs = ((a, "learn.yaml", switches | optimizer), (b, "reference.yaml", switches | optimizer),
            (c, "generalization.yaml", switches | (optimizer - {"max_iterations"})))
    for run, suite, keys in runs:
        source = job(suite).config
        for key in keys:
            part = "model_config" if key in switches else "train"
            assert getattr(getattr(run.config, part), key) == getattr(getattr(source, part), key), (suite, key)
    assert job("generalization.yaml").config.train.max_iterations == job("reference.yaml").config.train.max_iterations


def test_cli_prints_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = dict(BASE, seeds=[0, 0])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: seeds[1]: duplicated seed 0"


def test_first_changed_setting_names_the_key_and_allows_fields_a_file_predates() -> None:
    job = JobConfig(model="sqair", seed=0, train_data="b4.h5")
    saved = yaml.safe_load(dump_yaml(job))
    assert first_changed_setting(saved, job) is None
    del saved["model_config"]["disc_input"]  # written before the field existed; the job keeps the default
    assert first_changed_setting(saved, job) is None
    residual = dataclasses.replace(job, model_config=dataclasses.replace(job.model_config, disc_input="residual"))
    assert first_changed_setting(saved, residual) == "model_config.disc_input"
    saved["train"]["batch_size"] = 7
    assert first_changed_setting(saved, job) == "train.batch_size"
    saved["train"]["batch_size"] = job.train.batch_size
    saved["removed_switch"] = 1
    assert first_changed_setting(saved, job) == "removed_switch"
