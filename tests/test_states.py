"""The state-space track (docs/states.md): its data (true states and contacts from the simulator), the
input noise, the model (a registered relation driving SQAIR's propagation prior on ball states), its
settings, and one small run through `run_suite` and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rsqair_bench.config import (
    EvalConfig,
    EvalSplit,
    ModelConfig,
    StatesConfig,
    SuiteConfig,
    check_states_config,
    load_config,
    parse_dataclass,
)
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.data.physics import PhysicsParams, simulate
from rsqair_bench.data.states import (
    StateTensors,
    add_input_noise,
    noise_key,
    read_state_split,
    state_split,
    window_batch,
)
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.models.relation import where_shift
from rsqair_bench.models.sqair import object_latent_dim
from rsqair_bench.models.state_tracker import WHAT_GAIN, object_latent, px_per_unit, to_crop_units
from rsqair_bench.registry import build_state_model, model_names

REPO = Path(__file__).resolve().parents[1]
CONFIG = ModelConfig(z_what=5, n_hidden=16, prop_prior="velocity", prop_prior_scale_bias=-3.0)


@pytest.fixture(scope="module")
def balls_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 balls, 12 frames: enough sequences for some ball-ball contacts."""
    path = tmp_path_factory.mktemp("states") / "balls4.h5"
    return generate_file(path, "4", {"training": 40, "validation": 2, "test": 40}, frames=12, size=64, seed=3,
                         progress=False)


# ----------------------------------------------------------------------------- data
def test_states_are_the_simulators_in_crop_pixels_and_contacts_match_the_collision_images(balls_file: Path) -> None:
    split = read_state_split(balls_file, "test", crop=50)
    with h5py.File(balls_file, "r") as f:
        positions = np.moveaxis(f["test/positions"][:], 1, 0)  # [N, T, n, 2] box units
        groups = np.moveaxis(f["test/groups"][..., 0], 1, 0)  # [N, T, 64, 64]: ball k drawn as k + 1
        collisions = np.moveaxis(f["test/collisions"][..., 0], 1, 0) > 0  # pixels of balls in contact
    np.testing.assert_allclose(split.centres, positions * 64 - 7)  # the crop starts 7 px in
    assert split.box_scale == pytest.approx(8 / 50)  # a ball of radius 4 px in the 50 px crop
    # the data set's own ground truth: a ball is in contact iff its pixels are flagged in `collisions`
    drawn = np.stack([((groups == k + 1) & collisions).any((-2, -1)) for k in range(4)], axis=-1)  # [N, T, n]
    np.testing.assert_array_equal(split.contacts, drawn)
    assert split.contacts.any(), "the fixture should contain ball-ball contacts"


def head_on(gap_frames: float) -> tuple[np.ndarray, np.ndarray]:
    """Two equal balls flying at each other along y = 0.5; they touch after `gap_frames` frames."""
    p = PhysicsParams(masses=(1.0,))
    speed, touch = 0.05, 2 * p.radius
    d0 = touch + 2 * speed * gap_frames
    pos0 = np.array([[[0.5 - d0 / 2, 0.5], [0.5 + d0 / 2, 0.5]]])
    vel0 = np.array([[[speed, 0.0], [-speed, 0.0]]])
    traj = simulate(pos0, vel0, np.ones((1, 2)), np.ones((1, 2), bool), 7, p)
    return traj.positions, traj.velocities


def test_head_on_collision_gives_contacts_and_colliding_frames() -> None:
    """The balls touch at 2.9 frames and part at 0.1 px per frame each way: at frame 3 they are 0.64 px
    apart, within the 1 px contact tolerance; at frames 2 and 4, 6.4 px. So contact at frame 3 only, and
    colliding (contact at t-1 or t) at frames 3 and 4."""
    positions, velocities = head_on(2.9)
    split = state_split(positions, velocities, np.ones((1, 2), bool), PhysicsParams().radius, 64, 50)
    assert split.contacts[0, :, 0].tolist() == [False, False, False, True, False, False, False]
    assert split.colliding()[0, :, 0].tolist() == [False, False, False, True, True, False, False]
    np.testing.assert_allclose(split.velocities[0, 4], [[-3.2, 0.0], [3.2, 0.0]])  # equal masses swap velocities


def test_inactive_slots_never_collide() -> None:
    positions, velocities = head_on(2.9)
    split = state_split(positions, velocities, np.array([[True, False]]), PhysicsParams().radius, 64, 50)
    assert not split.contacts.any() and not split.colliding().any()


def test_a_file_without_the_simulators_states_is_one_line(fake_h5: Path) -> None:
    with pytest.raises(DataError, match="no positions/velocities") as err:
        read_state_split(fake_h5, "test", crop=50)
    assert "\n" not in str(err.value) and str(fake_h5) in str(err.value)


def test_input_noise_has_the_asked_std_per_axis_and_is_reproducible() -> None:
    centres = torch.zeros(200_000, 2)
    noisy = add_input_noise(centres, 1.5, torch.Generator().manual_seed(0))
    assert noisy.mean().abs() < 0.02
    np.testing.assert_allclose(noisy.std(0).numpy(), [1.5, 1.5], rtol=0.02)
    assert abs(float(torch.corrcoef(noisy.T)[0, 1])) < 0.01  # independent axes
    again = add_input_noise(centres, 1.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)
    assert torch.equal(centres, torch.zeros(200_000, 2))  # the input is not changed
    clean = add_input_noise(centres, 0.0, None)
    assert torch.equal(clean, centres) and clean is not centres
    with pytest.raises(ValueError, match="sigma_px"):
        add_input_noise(centres, -1.0, None)


def test_windows_hold_the_last_frames_and_the_target() -> None:
    centres = torch.arange(2 * 6 * 3 * 2, dtype=torch.float32).view(2, 6, 3, 2)
    data = StateTensors(centres, torch.ones(2, 3, dtype=torch.bool), 50, 0.16)
    inputs, target, present = window_batch(data, torch.tensor([1, 0]), torch.tensor([5, 3]), history=3)
    torch.testing.assert_close(inputs[0], centres[1, 2:5])
    torch.testing.assert_close(inputs[1], centres[0, 0:3])
    torch.testing.assert_close(target, torch.stack([centres[1, 5], centres[0, 3]]))
    assert present.shape == (2, 3)


def test_noise_names() -> None:
    assert [noise_key(s) for s in (0.0, 0.5, 1.0, 1.5)] == ["0", "0.5", "1", "1.5"]


# ----------------------------------------------------------------------------- model
def history_of(b: int = 3, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(b, 1, k, 2, generator=g) * 40 + 5
    velocity = (torch.rand(b, 1, k, 2, generator=g) - 0.5) * 6
    px = start + velocity * torch.arange(3.0).view(1, 3, 1, 1)  # [B, 3, K, 2] constant velocity
    present = torch.ones(b, k, dtype=torch.bool)
    present[0, -1] = False
    return px, present


def test_object_latent_has_the_pixel_models_layout() -> None:
    px, present = history_of()
    units = to_crop_units(px, 50)
    z, where, before, what = object_latent(units, present, z_what=5, box_scale=0.16)
    assert z.shape[-1] == object_latent_dim(CONFIG)
    shown = present.unsqueeze(-1)
    torch.testing.assert_close(where_shift(z)[shown.expand(-1, -1, 2)], units[:, -1][shown.expand(-1, -1, 2)])
    moves = torch.cat([units[:, 2] - units[:, 1], units[:, 1] - units[:, 0]], dim=-1)  # newest first
    torch.testing.assert_close(what[..., :4][present], WHAT_GAIN * moves[present])
    assert torch.all(what[..., 4] == 0) and torch.all(where[..., :2][present] == 0.16)
    torch.testing.assert_close(before[..., 2:][present], units[:, -2][present])
    assert torch.all(z[0, -1] == 0)  # an empty slot is a zero row, presence included
    assert torch.all(z[present][:, -1] == 1)
    assert px_per_unit(50) == 25.0


@pytest.mark.parametrize("model", model_names())
def test_untrained_tracker_predicts_constant_velocity_for_every_relation(model: str) -> None:
    """The velocity prior's delta starts at zero: before training every relation predicts x_{t-1} + (x_{t-1} - x_{t-2})."""
    px, present = history_of()
    torch.manual_seed(0)
    tracker = build_state_model(model, CONFIG)
    target = px[:, -1] + (px[:, -1] - px[:, -2])
    density, centre = tracker.centre_log_density(px, target, present, 50, 0.16)
    torch.testing.assert_close(centre[present], target[present], rtol=0, atol=1e-4)
    assert torch.isfinite(density[present]).all()
    px8, present8 = history_of(k=8)
    assert tracker.centre_log_density(px8, px8[:, -1], present8, 50, 0.16)[0].shape == (3, 8)  # any slot count


def test_log_density_is_a_density_over_pixels() -> None:
    px, present = history_of()
    torch.manual_seed(0)
    tracker = build_state_model("sqair+in", CONFIG)
    target = px[:, -1] + 1.0
    density, centre = tracker.centre_log_density(px, target, present, 50, 0.16)
    _, std = tracker(to_crop_units(px, 50), present, 0.16)
    std_px = std * 25.0
    expected = torch.distributions.Normal(centre, std_px).log_prob(target).sum(-1)
    torch.testing.assert_close(density[present], expected[present], rtol=1e-5, atol=1e-4)


def test_tracker_needs_the_velocity_prior() -> None:
    with pytest.raises(ValueError, match="velocity"):
        build_state_model("sqair", ModelConfig(prop_prior="rnn"))


# ----------------------------------------------------------------------------- settings
def suite_data(**states: object) -> dict:
    return {"name": "s", "models": ["sqair"], "seeds": [0], "data": {}, "states": states}


def test_states_block_parses_and_null_means_the_pixel_track() -> None:
    assert parse_dataclass(SuiteConfig, {**suite_data(), "states": None}, "s.yaml:").states is None
    assert parse_dataclass(SuiteConfig, suite_data(), "s.yaml:").states == StatesConfig()
    with pytest.raises(ConfigError, match=r"s.yaml: states: unknown key 'noise'"):
        parse_dataclass(SuiteConfig, suite_data(noise=[1.0]), "s.yaml:")


@pytest.mark.parametrize(("states", "model", "key"), [
    (StatesConfig(noise_px=[]), CONFIG, "states.noise_px"),
    (StatesConfig(noise_px=[-0.5]), CONFIG, "states.noise_px"),
    (StatesConfig(noise_px=[0.5, 0.5]), CONFIG, "states.noise_px"),
    (StatesConfig(history=4), CONFIG, "states.history"),  # 3 displacements need z_what >= 6
    (StatesConfig(history=1), CONFIG, "states.history"),
    (StatesConfig(), ModelConfig(prop_prior="residual"), "model_config.prop_prior"),
    (StatesConfig(), ModelConfig(prop_prior="velocity", prop_velocity_space="shift"), "model_config.prop_velocity_space"),
])
def test_states_ranges_name_the_key(states: StatesConfig, model: ModelConfig, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"s.yaml: {key}: expected"):
        check_states_config(states, model, "s.yaml:")


def test_the_states_suite_validates() -> None:
    from rsqair_bench.runner.suite import expand_jobs, validate_suite

    path = REPO / "suites" / "states.yaml"
    suite = validate_suite(load_config(SuiteConfig, path), path)
    assert suite.states is not None and suite.states.noise_px == [0.0, 0.5, 1.0, 1.5]
    assert set(suite.models) >= {"sqair", "sqair+in", "sqair+in_mean", "sqair+in_local", "sqair+rmc", "sqair+gru",
                                 "sqair+lstm", "sqair+transformer"}
    assert suite.seeds == [0, 1, 2, 3, 4]
    assert all(job.config.states == suite.states for job in expand_jobs(suite))


# ----------------------------------------------------------------------------- report pieces
def test_posterior_error_reads_as_a_noise_std() -> None:
    from rsqair_bench.report.states_figure import sigma_of_error

    assert sigma_of_error(math.sqrt(math.pi / 2)) == pytest.approx(1.0)
    sample = torch.randn(400_000, 2, generator=torch.Generator().manual_seed(0)) * 0.9
    assert sigma_of_error(float(sample.norm(dim=-1).mean())) == pytest.approx(0.9, rel=0.01)


def write_metrics_file(directory: Path, splits: dict, model: str = "sqair", suite: str = "s") -> None:
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps({"model": model, "seed": 0, "suite": suite, "splits": splits}))


def test_posterior_marks_come_from_a_pixel_results_directory(tmp_path: Path) -> None:
    from rsqair_bench.report.states_figure import DEFAULT_POSTERIOR_PX, posterior_marks

    assert posterior_marks(None, "balls4/test")[0] == DEFAULT_POSTERIOR_PX
    write_metrics_file(tmp_path / "px" / "sqair" / "seed0", {"balls4/test": {"matching": {"posterior_error_px": 1.5}}})
    marks, source = posterior_marks(tmp_path / "px", "balls4/test")
    assert marks == {"posterior_error_px": 1.5} and str(tmp_path / "px") in source
    with pytest.raises(DataError, match="no posterior_error_px"):
        posterior_marks(tmp_path / "px", "balls678/test")


# ----------------------------------------------------------------------------- one run through the pipeline
def tiny_suite(tmp_path: Path, data: Path) -> SuiteConfig:
    split = {"data": "balls4", "split": "test", "max_objects": 4, "frames": 12, "sequences": 20}
    return parse_dataclass(SuiteConfig, {
        "name": "tiny", "models": ["sqair", "sqair+in_local"], "seeds": [0, 1, 2],
        "data": {"balls4": {"path": str(data), "balls": "4", "frames": 12, "size": 64, "seed": 3,
                            "splits": {"training": 40, "validation": 2, "test": 40}}},
        "model_config": {"n_hidden": 16, "prop_prior": "velocity", "relation_options": {"in_local": {"embed_dim": 8}}},
        "train": {"optimizer": "adam", "learning_rate": 3e-3, "batch_size": 16, "max_iterations": 5, "log_every": 5},
        "eval": {"splits": {"balls4/test": split}}, "states": {"noise_px": [0.0, 1.0]},
        "workers": 1, "device": "cpu", "results": str(tmp_path / "results"),
    }, "tiny.yaml:")


def test_a_states_suite_runs_and_reports(tmp_path: Path, balls_file: Path) -> None:
    from rsqair_bench.metrics_schema import read_metrics
    from rsqair_bench.report.write import write_report
    from rsqair_bench.runner.run import run_suite
    from rsqair_bench.runner.suite import validate_suite

    suite = validate_suite(tiny_suite(tmp_path, balls_file), "tiny.yaml")
    summary = run_suite(suite, out=open(tmp_path / "run.log", "w"))  # noqa: SIM115 - closed with the test
    assert summary.exit_code == 0 and summary.count("done") == 6
    metrics = read_metrics(tmp_path / "results" / "tiny" / "sqair+in_local" / "seed1" / "metrics.json")
    assert metrics["track"] == "states" and metrics["seed"] == 1
    block = metrics["splits"]["balls4/test"]["states"]
    assert set(block["noise"]) == {"0", "1"} and block["balls"]["all"] == 20 * 9 * 4  # 20 sequences x frames 3..11 x 4
    assert block["balls"]["colliding"] + block["balls"]["free"] == block["balls"]["all"]
    assert set(block["noise"]["1"]["error_px"]) == {"colliding", "free", "all"}
    report = tmp_path / "results" / "tiny" / "report"
    table = (report / "table.md").read_text()
    assert "σ 0 px" in table and "σ 1 px" in table and "exact-velocity oracle" in table
    assert "R-SQAIR(IN, local)" in (report / "significance.md").read_text()
    assert (report / "figures" / "gain_vs_sigma.png").is_file()
    again = run_suite(suite, out=open(tmp_path / "run2.log", "w"))  # noqa: SIM115
    assert again.count("skipped") == 6  # finished jobs are not run again
    # a directory that mixes the two tracks is refused, in one line
    write_metrics_file(tmp_path / "results" / "tiny" / "sqair+rmc" / "seed0", {}, model="sqair+rmc", suite="tiny")
    with pytest.raises(DataError, match="mixes state-space jobs"):
        write_report(tmp_path / "results" / "tiny")


def test_states_evaluation_refuses_a_pixel_checkpoint(tmp_path: Path, balls_file: Path) -> None:
    from rsqair_bench import checkpoint as ckpt
    from rsqair_bench.errors import CheckpointError
    from rsqair_bench.evaluation.states import evaluate_states

    ckpt.save_checkpoint(tmp_path / "best.pt", {"model": {}, "model_name": "sqair", "kind": "best"})
    with pytest.raises(CheckpointError, match="not a state-space checkpoint"):
        evaluate_states(tmp_path / "best.pt", balls_file, EvalSplit(data="b", frames=12), EvalConfig())
