"""One split of the state-space track: each σ's model predicts every ball's centre at every frame t.

Scored: every window (sequence, t) with t = H .. T-1 (H = `states.history`, T = the split's
`frames`), each ball present in it. Per σ (docs/states.md, "Metrics"):
- `error_px`: distance between the prior's mean centre and the true one, px, averaged over the
  colliding balls (ball-ball contact at t-1 or t, `data.states.StateSplit.colliding`), the free
  ones and all;
- `log_density`: the prior's log-density of the true centre, nats per ball as a density over
  pixels (per px^2), same groups;
- `const_velocity_error_px`: the constant-velocity rule on the same noisy inputs (2 x_{t-1} -
  x_{t-2}: what the velocity prior predicts before it learns a delta), same groups.
Once per split, `oracle_error_px`: the true centre at t-1 plus the simulator's velocity (noise-free),
and the number of ball-frames in each group (`balls`).

Noise: the inputs' standard-normal draws come from `derive_seed(seed, SEED_EVAL_NOISE)`, times σ, so every
model of one seed sees the same noisy inputs (a paired comparison between relations), and its σ models
the same draws at other sizes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import EvalConfig, EvalSplit, ModelConfig, StatesConfig, check_eval_split, parse_dataclass
from rsqair_bench.core.device import resolve_device
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.data.states import StateSplit, StateTensors, add_input_noise, noise_key, read_state_split, window_batch
from rsqair_bench.errors import CheckpointError, ConfigError, DataError
from rsqair_bench.models.state_tracker import CHECKPOINT_KIND
from rsqair_bench.registry import build_state_model, load_plugins

SEED_EVAL_NOISE = 23  # derive_seed purpose of the evaluation's input noise (core/seeding.py)
GROUPS = ("colliding", "free", "all")


def group_means(values: Tensor, present: Tensor, colliding: Tensor) -> dict[str, float | None]:
    """values [W, n] -> their mean over the colliding, free and all present balls (None for an empty group)."""
    masks = {"colliding": present & colliding, "free": present & ~colliding, "all": present}
    return {name: (float(values[m].double().mean()) if bool(m.any()) else None) for name, m in masks.items()}


def _windows(split: StateSplit, history: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every (sequence, t) with t = history .. T-1, sequence-major, and whose balls collide there [W, n]."""
    n, frames = split.centres.shape[:2]
    seq = torch.arange(n).repeat_interleave(frames - history)  # [W]
    t = torch.arange(history, frames).repeat(n)  # [W]
    colliding = torch.as_tensor(split.colliding())[seq, t]  # [W, n]
    return seq, t, colliding


def _load(checkpoint: Path) -> tuple[dict[str, Any], ModelConfig, StatesConfig]:
    state = ckpt.load_checkpoint(checkpoint)
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{checkpoint}: not a state-space checkpoint (kind {state.get('kind')!r}, expected "
                              f"{CHECKPOINT_KIND!r}); score pixel checkpoints with `eval`")
    for key in ("model_name", "model_config", "states", "model"):
        if key not in state:
            raise CheckpointError(f"{checkpoint}: checkpoint lacks {key!r}")
    try:
        config = parse_dataclass(ModelConfig, state["model_config"], f"{checkpoint}: model_config")
        states = parse_dataclass(StatesConfig, state["states"], f"{checkpoint}: states")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    return state, config, states


def _score_noise(model: torch.nn.Module, data: StateTensors, windows: tuple[Tensor, Tensor, Tensor], history: int,
                 sigma: float, seed: int, batch: int, device: torch.device) -> dict[str, Any]:
    """One σ's metrics over every window, `batch` windows at a time."""
    seq, t, colliding = windows
    noise = torch.Generator().manual_seed(derive_seed(seed, SEED_EVAL_NOISE))  # the same draws for every σ and model
    errors, densities, const_velocity, present_rows = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(seq), batch):
            inputs, target, present = window_batch(data, seq[start:start + batch], t[start:start + batch], history)
            inputs = add_input_noise(inputs, sigma, noise)
            density, centre = model.centre_log_density(inputs.to(device), target.to(device), present.to(device),
                                                       data.crop, data.box_scale)
            errors.append((centre.cpu() - target).norm(dim=-1))  # [b, n]
            densities.append(density.cpu())
            const_velocity.append((2 * inputs[:, -1] - inputs[:, -2] - target).norm(dim=-1))
            present_rows.append(present)
    present = torch.cat(present_rows)
    return {
        "error_px": group_means(torch.cat(errors), present, colliding),
        "log_density": group_means(torch.cat(densities), present, colliding),
        "const_velocity_error_px": group_means(torch.cat(const_velocity), present, colliding),
    }


def evaluate_states(checkpoint: str | Path, data_path: str | Path, split: EvalSplit, eval_cfg: EvalConfig,
                    device: str = "auto", seed: int = 0, plugins: list[str] | None = None) -> dict[str, Any]:
    """One split's entry of metrics.json for a state-space job's best.pt (all its σ models)."""
    check_eval_split(split)
    checkpoint, start = Path(checkpoint), time.perf_counter()
    state, config, states = _load(checkpoint)
    load_plugins(list(plugins if plugins is not None else state.get("plugins") or []))
    data_split = read_state_split(data_path, split.split, config.image_size, split.sequences, split.frames)
    slots = split.max_objects if split.max_objects is not None else config.max_objects
    if data_split.active.shape[1] > slots:
        raise DataError(f"{data_path}: {split.split} has {data_split.active.shape[1]} ball slots, more than the "
                        f"{slots} object slots of this split (max_objects); expected at most {slots}")
    if data_split.frames <= states.history:
        raise DataError(f"{data_path}: {split.split} has {data_split.frames} frames, expected more than "
                        f"states.history {states.history}")
    dev = resolve_device(device)
    data, windows = StateTensors.of(data_split), _windows(data_split, states.history)
    present = data.active[windows[0]]  # [W, n]
    per_noise = {}
    for sigma in states.noise_px:
        model = build_state_model(state["model_name"], config)
        try:
            model.load_state_dict(state["model"][noise_key(sigma)])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{checkpoint}: no weights that fit {state['model_name']!r} for noise "
                                  f"{noise_key(sigma)} px ({str(err).splitlines()[0][:120]})") from None
        model = model.to(dev).eval()
        batch = eval_cfg.batch_size * (data_split.frames - states.history)
        per_noise[noise_key(sigma)] = _score_noise(model, data, windows, states.history, sigma, seed, batch, dev)
    oracle = _oracle_errors(data_split, windows)
    counts = {name: int(mask.sum()) for name, mask in
              {"colliding": present & windows[2], "free": present & ~windows[2], "all": present}.items()}
    n_seq = int(data_split.centres.shape[0])
    return {
        "data": split.data, "split": split.split, "max_objects": slots, "frames": data_split.frames,
        "sequences": n_seq, "eval_sequences_per_s": n_seq * len(per_noise) / (time.perf_counter() - start),
        "states": {"history": states.history, "balls": counts, "oracle_error_px": group_means(oracle, present, windows[2]),
                   "noise": per_noise},
    }


def _oracle_errors(split: StateSplit, windows: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The exact-velocity oracle's error [W, n] px: true centre at t-1 plus the simulator's velocity after t-1."""
    seq, t, _ = windows
    s, f = seq.numpy(), t.numpy()
    predicted = split.centres[s, f - 1] + split.velocities[s, f - 1]  # [W, n, 2]
    return torch.as_tensor(np.linalg.norm(predicted - split.centres[s, f], axis=-1))
