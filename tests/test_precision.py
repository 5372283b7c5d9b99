"""`model_config.precision` (core/precision.py; docs/sqair.md, "Precision").

bf16 autocasts the training forward; the log-densities, the likelihood, the log-weights and the IWAE/VIMCO
reductions stay float32, and so do the weights, the gradients and the optimizer's state. Evaluation and
validation score in float32 whatever the precision. The switch reaches the config, the checkpoint and
metrics.json; the dry run takes the bench figure of the suite's precision; bench measures both side by side.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from rsqair_bench.config import EvalConfig, EvalSplit, ModelConfig, SuiteConfig, check_model_config, load_config
from rsqair_bench.core import precision
from rsqair_bench.errors import ConfigError
from rsqair_bench.metrics_schema import read_metrics
from rsqair_bench.registry import build_model, model_names
from rsqair_bench.runner import bench, throughput
from rsqair_bench.runner.suite import Job, validate_suite
from rsqair_bench.training import loop as train
from rsqair_bench.training.state import BEST, LATEST
from tests.fakes import FakeBallsDataset, tiny_job, write_fake_h5

TINY = ModelConfig(image_size=50, z_what=3, glimpse_size=4, n_hidden=8, n_layers=1, max_objects=2)
# suites/learn.yaml's switches: the velocity prior, residual discovery with peak-placed boxes
LEARN = dataclasses.replace(TINY, prop_prior="velocity", prop_prior_scale_bias=-3.0, disc_input="residual",
                            disc_box_centre="residual_peak")
BF16, FP32 = torch.bfloat16, torch.float32


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_h5(tmp_path_factory.mktemp("data") / "balls.h5")


def _frames(b: int = 2, t: int = 3, seed: int = 1) -> torch.Tensor:
    return (torch.rand(b, t, 1, 50, 50, generator=torch.Generator().manual_seed(seed)) > 0.93).float()


def _model(name: str, config: ModelConfig) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(name, config)


# ----------------------------------------------------------------------------- the switch and its helpers
def test_precision_parses_from_a_suite_and_a_bad_value_is_one_line(tmp_path: Path) -> None:
    assert typing.get_args(typing.get_type_hints(ModelConfig)["precision"]) == precision.PRECISIONS  # one list of names
    assert ModelConfig().precision == "fp32"  # the default stays fp32
    doc = {"name": "p", "models": ["sqair"], "seeds": [0], "model_config": {"precision": "bf16"},
           "data": {"b": {"path": str(tmp_path / "b.h5"), "frames": 12, "splits": {"training": 4, "validation": 2}}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_config(SuiteConfig, path).model_config.precision == "bf16"
    doc["model_config"]["precision"] = "fp16"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(SuiteConfig, path)
    assert "model_config.precision" in str(err.value) and "'fp32' or 'bf16'" in str(err.value) and "fp16" in str(err.value)
    with pytest.raises(ConfigError, match=r"^model_config\.precision: expected 'fp32' or 'bf16', found 'tf32'$"):
        check_model_config(dataclasses.replace(ModelConfig(), precision="tf32"))


def test_autocast_is_bf16_only_for_bf16_and_full_precision_upcasts_only_lower_dtypes() -> None:
    cpu = torch.device("cpu")
    with precision.autocast("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == FP32
    with precision.autocast("bf16", cpu):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == BF16
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, found 'fp16'"):
        precision.autocast("fp16", cpu)
    half, single, double = torch.ones(2, dtype=BF16), torch.ones(2), torch.ones(2, dtype=torch.float64)
    assert precision.full_precision(half).dtype == FP32
    assert precision.full_precision(single) is single and precision.full_precision(double) is double


def test_bf16_hardware_reads_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "avx512f"}
    assert precision.cpu_flags(tmp_path / "missing") is None  # not Linux: unknown, not "absent"
    found = precision.bf16_hardware(torch.device("cpu"))
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    flags = precision.cpu_flags()
    if flags is not None:
        assert found["native"] == any(f in flags for f in precision.BF16_CPU_FLAGS)
        assert set(found["flags"]) == {f for f in precision.BF16_CPU_FLAGS if f in flags}


_NO_NATIVE_BF16_STEP = """
import torch
from rsqair_bench.config import ModelConfig
from rsqair_bench.core.precision import autocast
from rsqair_bench.registry import build_model
torch.manual_seed(0)
model = build_model("sqair", ModelConfig(image_size=50, z_what=3, glimpse_size=4, n_hidden=8, n_layers=1, max_objects=2))
x = (torch.rand(2, 3, 1, 50, 50, generator=torch.Generator().manual_seed(1)) > 0.93).float()
with autocast("bf16", torch.device("cpu")):
    out = model(x, 2, torch.Generator().manual_seed(2))
out.loss.backward()
print(torch.backends.cpu.get_cpu_capability(), torch.ops.mkldnn._is_mkldnn_bf16_supported(), float(out.loss.detach()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="imitates an x86 CPU without AVX512")
def test_bf16_runs_on_a_cpu_without_native_bf16() -> None:
    """A CPU without AVX512-BF16/AMX, imitated: oneDNN capped at AVX2 (it then declines bf16 and PyTorch
    computes bf16 matmuls itself) and ATen's kernels at AVX2. A bf16 forward and backward still run and
    the loss is finite: only the speed depends on the instructions."""
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _NO_NATIVE_BF16_STEP], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    capability, onednn_bf16, loss = done.stdout.split()[-3:]
    assert (capability, onednn_bf16) == ("AVX2", "False") and math.isfinite(float(loss))


# ----------------------------------------------------------------------------- what stays float32
class _Spy:
    """Records the dtype of every log-density term of one SQAIR forward, and of the linear layers' outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.dtypes: dict[str, set[torch.dtype]] = collections.defaultdict(set)
        model.propagation.register_forward_hook(self._propagation)
        model.discovery.register_forward_hook(self._discovery)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda _m, _i, out: self.dtypes["linear output"].add(out.dtype))
        self._wrap(model, "pixel_log_likelihood", "log p(x | z) per pixel")
        for name in ("count_log_prob", "where_log_prob", "what_log_prob"):
            self._wrap(model.disc_prior, name, f"discovery prior {name}")
        frame = model._frame

        def spy_frame(*args: Any) -> Any:
            out = frame(*args)
            self.dtypes["log_w after a frame"].add(out[2].dtype)
            self.dtypes["log_q_discrete after a frame"].add(out[3].dtype)
            return out

        model.frame = spy_frame

    def _wrap(self, owner: Any, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            self.dtypes[key].add(out.dtype)
            return out

        setattr(owner, name, wrapped)

    def _propagation(self, _module: Any, _inputs: Any, out: Any) -> None:
        terms = out[1]
        for field in ("log_q", "log_p", "log_q_discrete"):
            self.dtypes[f"propagation {field}"].add(getattr(terms, field).dtype)

    def _discovery(self, _module: Any, _inputs: Any, out: Any) -> None:
        self.dtypes["discovery log q (continuous)"].add(out[3].dtype)
        self.dtypes["discovery log q (discrete)"].add(out[4].dtype)


@pytest.mark.parametrize("name,config", [("sqair", TINY), ("sqair", LEARN), ("sqair+rmc", LEARN)],
                         ids=["sqair", "sqair-learn-switches", "rmc-learn-switches"])
def test_under_bf16_the_layers_run_bf16_and_every_log_density_weight_and_bound_stays_fp32(
        name: str, config: ModelConfig) -> None:
    model = _model(name, dataclasses.replace(config, precision="bf16"))
    spy = _Spy(model)
    with precision.autocast("bf16", torch.device("cpu")):
        out = model(_frames(), 2, torch.Generator().manual_seed(2))
    out.loss.backward()
    dtypes = dict(spy.dtypes)
    assert dtypes.pop("linear output") == {BF16}  # autocast did take effect: the matmuls ran in bf16
    assert len(dtypes) == 11, sorted(dtypes)  # every spy fired, propagation's too (frames 2 and 3)
    assert {key: ds for key, ds in dtypes.items() if ds != {FP32}} == {}
    assert (out.loss.dtype, out.iwae_bound.dtype, out.log_weights.dtype) == (FP32, FP32, FP32)
    assert torch.isfinite(out.loss)
    assert {p.dtype for p in model.parameters()} == {FP32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {FP32}


def test_bf16_bound_is_the_fp32_bound_up_to_bf16_rounding() -> None:
    """The same weights, frames and noise: the bf16 forward's bound stays within 0.5% of the fp32 one
    (measured with this setup on this CPU: at most 0.15% for sqair, 0.35% for sqair+in, 0.06% for sqair+rmc,
    of bounds between -1,475 and -1,950 nats; docs/sqair.md, "Precision"). A sanity check that bf16
    computes the same objective, not the evidence that it learns the same (that is a run of the learning
    suite at both precisions)."""
    model = _model("sqair+in", dataclasses.replace(TINY, n_hidden=32, glimpse_size=6, max_objects=3))
    x = _frames(b=4, t=5)
    fp32 = model(x, 3, torch.Generator().manual_seed(2)).iwae_bound.detach()
    with precision.autocast("bf16", torch.device("cpu")):
        bf16 = model(x, 3, torch.Generator().manual_seed(2)).iwae_bound.detach()
    torch.testing.assert_close(bf16, fp32, rtol=5e-3, atol=0.0)
    assert not torch.equal(bf16, fp32)  # bf16 did run: the bound is rounded differently


def test_objective_and_densities_upcast_bf16_inputs() -> None:
    from rsqair_bench.models.air import bernoulli_log_prob, normal_log_prob, softplus_scale
    from rsqair_bench.models.objective import sqair_loss

    g = torch.Generator().manual_seed(0)
    log_w = (torch.randn(3, 4, generator=g) * 5 - 800).to(BF16)
    loss, bound = sqair_loss(log_w, torch.randn(3, 4, generator=g).to(BF16))
    assert (loss.dtype, bound.dtype) == (FP32, FP32)
    x = torch.randn(5, 3, generator=g).to(BF16)
    assert normal_log_prob(x, x, softplus_scale(x)).dtype == FP32 and softplus_scale(x).dtype == FP32
    assert bernoulli_log_prob((x > 0).to(BF16), x).dtype == FP32


def test_presence_draws_from_the_fp32_probability_under_bf16() -> None:
    """sigmoid(6.5) = 0.9985, which bf16 rounds to 1.0: a draw from the bf16 probability would never be absent.
    `bernoulli_from_uniform` draws from the float32 probability that `bernoulli_log_prob` scores."""
    from rsqair_bench.models.air import bernoulli_from_uniform

    logits = torch.tensor([6.5, 6.5, -2.0]).to(BF16)
    assert torch.sigmoid(logits)[0].item() == 1.0  # the rounding this guards against
    uniform = torch.tensor([0.9990, 0.9980, 0.5])
    pres = bernoulli_from_uniform(logits, uniform)
    assert pres.dtype == FP32 and pres.tolist() == [0.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- training, checkpoint, metrics.json
class _DtypeSpy(TorchDispatchMode):
    """The floating dtypes every op of a block saw (inputs and outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        out = func(*args, **(kwargs or {}))
        for value in (*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else (out,))):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                self.seen.add(value.dtype)
        return out


@dataclasses.dataclass
class _Bf16Job:
    job: Any
    out: Path
    result: Any
    validation_dtypes: set[torch.dtype]


@pytest.fixture(scope="module")
def bf16_job(data: Path, tmp_path_factory: pytest.TempPathFactory) -> _Bf16Job:
    """The real model with the learning suite's switches and Adam: 3 bf16 steps, validated at the end (its
    ops' dtypes recorded)."""
    spy = _DtypeSpy()
    real_validation = train.validation_bound

    def spied_validation(*args: Any, **kwargs: Any) -> float:
        with spy:
            return real_validation(*args, **kwargs)

    job = dataclasses.replace(
        tiny_job(data, model="sqair", max_iterations=3, validate_every=3, checkpoint_every=3, optimizer="adam",
                 learning_rate=1e-3), model_config=dataclasses.replace(LEARN, precision="bf16"))
    out = tmp_path_factory.mktemp("bf16") / "job"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "validation_bound", spied_validation)
        result = train.train_job(job, out, progress=False, model_factory=build_model, dataset_factory=FakeBallsDataset)
    return _Bf16Job(job, out, result, spy.seen)


def test_a_bf16_job_trains_finite_keeps_fp32_state_and_records_bf16_everywhere(bf16_job: _Bf16Job) -> None:
    """The bf16 steps' losses are finite; weights and optimizer state are float32; the precision is in
    config.yaml, both checkpoints, the train result and the runner's metrics.json (read back by the checked
    reader). Validation met no bf16 tensor."""
    job, out, result = bf16_job.job, bf16_job.out, bf16_job.result
    assert result.finished and result.iterations == 3 and result.precision == "bf16"
    with (out / "train_log.csv").open(newline="") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert "precision: bf16" in (out / "config.yaml").read_text()
    for name in (LATEST, BEST):
        saved = torch.load(out / name, weights_only=True)
        assert saved["model_config"]["precision"] == "bf16" and saved["train_stats"]["precision"] == "bf16"
        assert {t.dtype for t in saved["model"].values()} == {FP32}
    state = torch.load(out / LATEST, weights_only=True)["optimizer"]["state"]
    assert {t.dtype for s in state.values() for k, t in s.items() if k != "step"} == {FP32}
    assert FP32 in bf16_job.validation_dtypes and BF16 not in bf16_job.validation_dtypes  # float64: sums of scores

    from rsqair_bench.runner.job import _default_metrics

    runner_job = Job(suite="t", model="sqair", seed=job.seed, config=job, directory=out)
    _default_metrics(runner_job, result, {}, out / "metrics.json")
    assert read_metrics(out / "metrics.json")["train"]["precision"] == "bf16"


def test_evaluation_of_a_bf16_checkpoint_scores_in_fp32(bf16_job: _Bf16Job, data: Path) -> None:
    """Evaluation never autocasts: no op of `evaluate_checkpoint` on a bf16-trained checkpoint sees a bf16
    tensor, so its scores are the float32 model's."""
    from rsqair_bench.evaluation.evaluate import evaluate_checkpoint

    spy = _DtypeSpy()
    with spy:
        entry = evaluate_checkpoint(bf16_job.out / BEST, str(data), EvalSplit(data=str(data), frames=3, sequences=2),
                                    EvalConfig(samples=1, particles=2, batch_size=2), device="cpu")
    assert FP32 in spy.seen and BF16 not in spy.seen and math.isfinite(entry["data_ll"]["mean"])


def test_the_report_and_compare_show_the_training_precision() -> None:
    from rsqair_bench.metrics import train_precisions
    from rsqair_bench.report.tables import throughput_table

    runs = [{"model": "sqair", "seed": 0, "splits": {}, "train": {"precision": "bf16", "sequences_per_s": 2.0}},
            {"model": "sqair+in", "seed": 0, "splits": {}, "train": {"sequences_per_s": 1.0}}]  # written before the field
    table = throughput_table(runs)
    assert list(table["precision"]) == ["bf16", "fp32"]
    assert train_precisions(runs) == "bf16, fp32"
    from rsqair_bench.report.compare import throughput_ratios

    fp32_runs = [dict(r, train={"precision": "fp32", "sequences_per_s": 1.0}) for r in runs]
    ratios = throughput_ratios(fp32_runs, runs).set_index("model")
    assert list(ratios.loc["sqair", ["precision A", "precision B", "train B/A"]]) == ["fp32", "bf16", "2.00x"]


# ----------------------------------------------------------------------------- compile
def test_every_model_traces_a_bf16_frame_without_graph_breaks(caplog: pytest.LogCaptureFixture) -> None:
    """`model_config.compile` with bf16: dynamo's trace of a frame under bf16 autocast (eager backend, no
    C++ compilation) has no graph break and one graph, for every registered model, as in fp32
    (tests/test_step_speed.py)."""
    from tests.test_step_speed import _explained_frames

    caplog.set_level(logging.WARNING, logger="torch.__trace")
    config = dataclasses.replace(TINY, image_size=16, max_objects=2, precision="bf16")
    x = torch.rand(2, 2, 1, 16, 16, generator=torch.Generator().manual_seed(5)).round()
    for name in model_names():
        model = _model(name, config)
        torch._dynamo.reset()
        with precision.autocast("bf16", torch.device("cpu")):
            reports = _explained_frames(model, x)
        assert len(reports) == 2, name
        for report in reports:
            assert report.graph_break_count == 0, f"{name}: {report.break_reasons}"
            assert report.graph_count == 1, name


# ----------------------------------------------------------------------------- the dry run's bench figure
SETTINGS = {"batch": 32, "particles": 5, "frames": 5, "iterations": 2, "warmup": 1, "max_objects": 4, "z_what": 5,
            "n_hidden": 256, "glimpse_size": 20, "optimizer": "rmsprop"}


def _bench_doc(rows: list[tuple[str, bool, float]], **extra: Any) -> dict[str, Any]:
    """A `bench --json` document as bench now writes it: one row per (precision, compiled) of sqair."""
    return {"device": "cpu (fake, 1 threads)", "torch_version": "fake", "threads": 1, "matmul_peak_flop_per_s": 1.0,
            "settings": SETTINGS | {"precisions": sorted({r[0] for r in rows}), "modes": ["eager"]} | extra,
            "models": [{"model": "sqair", "precision": p, "compiled": c, "train_iterations_per_s": rate,
                        "eval_sequences_per_s": 1.0} for p, c, rate in rows], "data_generation": None}


def _suite(tmp_path: Path, chosen: str) -> SuiteConfig:
    doc = {"name": "p", "models": ["sqair"], "seeds": [0], "model_config": {"precision": chosen}, "device": "cpu",
           "data": {"balls4": {"path": str(tmp_path / "b.h5"), "frames": 12,
                               "splits": {"training": 320, "validation": 40, "test": 40}}},
           "eval": {"samples": 1, "particles": 5, "splits": {"balls4/test": {"data": "balls4", "max_objects": 4, "frames": 5}}},
           "train": {"curriculum_max": 5, "torch_threads": 1}, "results": str(tmp_path / "results")}
    path = tmp_path / f"suite-{chosen}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return validate_suite(load_config(SuiteConfig, path), path)


def test_dry_run_takes_the_bench_figure_of_the_suites_precision(tmp_path: Path) -> None:
    files = tmp_path / "bench"
    files.mkdir()
    (files / "a-both.json").write_text(json.dumps(_bench_doc([("fp32", False, 1.0), ("bf16", False, 3.0)])))
    old = {k: v for k, v in _bench_doc([("fp32", False, 2.0)]).items()} | {"settings": SETTINGS | {"compile": False}}
    old["models"] = [{"model": "sqair", "train_iterations_per_s": 2.0, "eval_sequences_per_s": 1.0}]  # before bf16
    (files / "b-old.json").write_text(json.dumps(old))
    for chosen, rate in (("fp32", 1.0), ("bf16", 3.0)):
        suite = _suite(tmp_path, chosen)
        figure = throughput.choose_figure(suite, 1, None, "cpu", bench_dir=files, can_measure=False)
        assert (figure.settings["precision"], figure.train_iterations_per_s["sqair"]) == (chosen, rate)
        assert figure.differences == []
    only_fp32 = tmp_path / "only-fp32"
    only_fp32.mkdir()
    (only_fp32 / "b-old.json").write_text(json.dumps(old))
    bf16_suite = _suite(tmp_path, "bf16")
    # no committed figure of the suite's precision: none is used (a measurement would be made)
    assert throughput.choose_figure(bf16_suite, 1, None, "cpu", bench_dir=only_fp32, can_measure=False) is None
    # a file given with --throughput is used anyway, and the line says how it differs
    given = throughput.choose_figure(bf16_suite, 1, str(only_fp32 / "b-old.json"), "cpu", bench_dir=only_fp32)
    assert given.train_iterations_per_s["sqair"] == 2.0 and given.differences == ["precision fp32 (run: bf16; not scaled)"]
    both = throughput.choose_figure(bf16_suite, 1, str(files / "a-both.json"), "cpu", bench_dir=only_fp32)
    assert both.train_iterations_per_s["sqair"] == 3.0  # the file's bf16 variant


@pytest.mark.parametrize("row,message", [
    ({"precision": "fp16"}, "models[0].precision: expected one of fp32, bf16, found str 'fp16'"),
    ({"precision": ["bf16"]}, "models[0].precision: expected one of fp32, bf16, found list ['bf16']"),
    ({"compiled": "yes"}, "models[0].compiled: expected true or false, found str 'yes'"),
])
def test_a_bench_file_with_a_bad_variant_is_one_line(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    doc = _bench_doc([("fp32", False, 1.0)])
    doc["models"][0] |= row
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        throughput.choose_figure(_suite(tmp_path, "fp32"), 1, str(path), "cpu", bench_dir=tmp_path)
    assert str(err.value) == f"--throughput {path}: {message}"


def test_dry_run_measurement_runs_at_the_suites_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = bench.make_train_step
    monkeypatch.setattr(bench, "make_train_step", lambda *a, **k: seen.append(a[6:] or k) or real(*a, **k))
    suite = _suite(tmp_path, "bf16")
    suite = dataclasses.replace(suite, model_config=dataclasses.replace(TINY, precision="bf16"),
                                train=dataclasses.replace(suite.train, batch_size=2, particles=2))
    figure = throughput.choose_figure(suite, 1, throughput.MEASURE, "cpu", bench_dir=tmp_path / "none")
    assert figure.kind == "measured" and figure.settings["precision"] == "bf16" and seen == [("bf16",)]
    assert ", bf16, " in figure.source


# ----------------------------------------------------------------------------- bench: variants and timing
def _bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_variants_default_to_both_precisions_and_bound_the_compiled_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsqair_bench.core import compiler

    monkeypatch.setattr(compiler, "compiler_problem", lambda: None)
    models = ["sqair", "sqair+in"]
    assert bench.variants(_bench_args(), ModelConfig(), models) == [
        ("sqair", False, "fp32"), ("sqair", False, "bf16"), ("sqair+in", False, "fp32"), ("sqair+in", False, "bf16")]
    args = _bench_args("--modes", "compiled", "eager", "--precision", "bf16", "--compiled-models", "sqair")
    assert bench.variants(args, ModelConfig(), models) == [("sqair", False, "bf16"), ("sqair", True, "bf16"),
                                                           ("sqair+in", False, "bf16")]
    assert bench.variants(_bench_args("--precision", "fp32"), ModelConfig(compile=True), ["sqair"]) == [("sqair", True, "fp32")]
    monkeypatch.setattr(compiler, "compiler_problem", lambda: "no compiler (test)")
    assert bench.variants(_bench_args("--modes", "eager", "compiled"), ModelConfig(), ["sqair"]) == [
        ("sqair", False, "fp32"), ("sqair", False, "bf16")]  # no compiled row passes as compiled


@pytest.mark.parametrize("argv,message", [
    (["--compiled-models", "sqair+rmc"], "bench --compiled-models: sqair+rmc not among the measured models (sqair)"),
    (["--compile", "--modes", "eager"], "bench: give --compile or --modes, not both"),
])
def test_bench_refuses_contradictory_options_in_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        bench._configure(_bench_args(*argv))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bench_refuses_an_unknown_model_before_measuring() -> None:
    from rsqair_bench.errors import BenchError

    with pytest.raises(BenchError, match=r"^model 'sqair\+nope': expected|relation 'nope'"):
        bench._configure(_bench_args("--model", "sqair+nope"))


def test_bench_records_a_failing_row_measures_the_rest_and_writes_after_each_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A row that raises (a failed compile, CUDA out of memory) is recorded under `failed` and the other rows
    still run; the --json file is rewritten after every row, so a run stopped part-way keeps its rows."""
    out = tmp_path / "b.json"
    seen_on_disk: list[tuple[int, int]] = []
    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype=torch.float32: 1e9)
    monkeypatch.setattr(bench, "model_facts", lambda *a, **k: bench.ModelFacts(1, 0, 1e6, 10.0))

    def row(name: str, config: ModelConfig, *args: Any, **kwargs: Any) -> bench.ModelBench:
        if config.precision == "bf16":
            raise RuntimeError("CUDA out of memory (test)\nsecond line")
        if out.exists():
            doc = json.loads(out.read_text())
            seen_on_disk.append((len(doc["models"]), len(doc["failed"])))
        return bench.ModelBench(name, config.precision, config.compile, 1, 0, 2.0, 4.0, 10.0, 0.1, 1.0, 10, 1e6,
                                2e6, 1e9, 2e-3, None)

    monkeypatch.setattr(bench, "bench_model", row)
    args = _bench_args("--model", "sqair", "--model", "sqair+in", "--data-sequences", "0", "--json", str(out))
    assert bench.command(args) == 1
    assert seen_on_disk == [(1, 1)]  # before sqair+in fp32: sqair fp32 measured, sqair bf16 failed
    doc = json.loads(out.read_text())
    assert [(m["model"], m["precision"]) for m in doc["models"]] == [("sqair", "fp32"), ("sqair+in", "fp32")]
    assert doc["failed"] == [{"model": m, "precision": "bf16", "compiled": False,
                              "error": "RuntimeError: CUDA out of memory (test)"} for m in ("sqair", "sqair+in")]
    printed = capsys.readouterr().out
    assert "measured sqair fp32 eager: 2.000 it/s" in printed
    assert "FAILED sqair+in bf16 eager: RuntimeError: CUDA out of memory (test)" in printed


def test_bench_cuda_timer_synchronises_before_it_starts_and_before_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA here: fakes record the order of the calls the timer makes on a CUDA device."""
    calls: list[str] = []

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing

        def record(self) -> None:
            calls.append("record")

        def elapsed_time(self, other: Event) -> float:
            calls.append("elapsed")
            return 250.0  # ms

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    with bench._Timer(torch.device("cuda")) as timer:
        calls.append("work")
    assert calls == ["sync", "record", "work", "record", "sync", "elapsed"] and timer.seconds == 0.25
