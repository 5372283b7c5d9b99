"""Evaluation protocol (DESIGN.md section 5; definitions and formulas in docs/metrics.md).

For a test sequence of T frames (default 10): infer the posterior over frames 1..T-1, sample
frame T's latents from the propagation prior (discovery off), decode, and score frame T:
- data log-likelihood: sum over the 50x50 pixels of log N(x_T; mu_T, sigma^2), sigma = output_std;
- relational log-likelihood: the same sum over the pixels of balls in ball-ball contact at frame T
  (`collisions` mask, restricted to ball pixels `groups > 0`); 0 for sequences without one.
Both are averaged over sequences, once per sampled last frame (`eval.samples`). Also: the
whole-sequence IWAE bound (`eval.particles`), object-count accuracy and throughput; the reference
predictors' scores on the same frames (`references`), object-ball matching (`matching`), and
whether T exceeds the checkpoint's trained horizon (`beyond_trained_horizon`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import EvalConfig, EvalSplit, ModelConfig, parse_dataclass
from rsqair_bench.data import limits
from rsqair_bench.device import device_description, peak_memory_mb, resolve_device
from rsqair_bench.errors import CheckpointError, ConfigError, DataError
from rsqair_bench.io import atomic_write, atomic_write_text, check_writable_dir
from rsqair_bench.train import (
    DatasetFactory,
    ModelFactory,
    default_dataset_factory,
    default_model_factory,
    derive_seed,
)

LOG_2PI = math.log(2.0 * math.pi)
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- pure metric functions
def gaussian_log_density(x: Tensor, mean: Tensor, std: float) -> Tensor:
    """Elementwise log N(x; mean, std^2), same shape as x."""
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI


def data_log_likelihood(x_T: Tensor, frames_T: Tensor, std: float) -> Tensor:
    """x_T, frames_T: [B, 1, H, W] -> [B], sum over pixels of the Gaussian log density (nats)."""
    return gaussian_log_density(x_T, frames_T, std).flatten(1).sum(1)


def collision_mask(groups_T: Tensor, collisions_T: Tensor) -> Tensor:
    """[B, 1, H, W] bool: pixels of a ball (groups > 0) flagged as colliding with another ball."""
    return collisions_T.bool() & (groups_T > 0)


def relational_log_likelihood(
    x_T: Tensor, frames_T: Tensor, groups_T: Tensor, collisions_T: Tensor, std: float
) -> tuple[Tensor, Tensor]:
    """Data LL restricted to colliding-ball pixels at frame T -> (ll [B], has_collision [B] bool).

    Sequences with no such pixel score exactly 0 (and has_collision False).
    """
    mask = collision_mask(groups_T, collisions_T)  # [B, 1, H, W]
    ll = torch.where(mask, gaussian_log_density(x_T, frames_T, std), torch.zeros((), dtype=x_T.dtype))
    return ll.flatten(1).sum(1), mask.flatten(1).any(1)


def visible_objects(groups: Tensor) -> Tensor:
    """groups: [B, T, 1, H, W] int ids (0 = background) -> [B, T] number of distinct ball ids visible."""
    b, t = groups.shape[:2]
    flat = groups.reshape(b, t, -1).long().clamp(min=0)  # [B, T, HW]
    seen = torch.zeros(b, t, int(flat.max()) + 1, dtype=torch.bool, device=groups.device)
    seen.scatter_(2, flat, True)
    return seen[:, :, 1:].sum(2)


def count_correct(num_present: Tensor, groups: Tensor) -> Tensor:
    """num_present [B, P, T] (per particle), groups [B, T, 1, H, W] -> [B, T] bool: rounded mean count == visible."""
    predicted = num_present.float().mean(1).round().long()  # [B, T]
    return predicted == visible_objects(groups)


def mean_std_over(values: Any) -> tuple[float, float]:
    """Mean and population std (numpy's default, ddof=0) over all entries, e.g. [seeds, samples]."""
    arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


# ----------------------------------------------------------------------------- evaluation
def _collate(batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([item[k] for item in batch]) for k in ("features", "groups", "collisions")}


def registry_factory(checkpoint: Path, state: dict[str, Any], plugins: list[str]) -> ModelFactory:
    """The registry's model builder after loading `plugins`, which come from the command line or the suite.

    Never the checkpoint's own `plugins` list: a file we read must not decide what code runs. The
    checkpoint may only name what it needs, and a model nobody registered is a one-line error.
    """
    from rsqair_bench import registry

    factory = default_model_factory(list(plugins))  # loads exactly these plugin files
    if factory is not registry.build_model:  # an injected factory (tests) knows its own names
        return factory
    name = state["model_name"]
    known = registry.model_names()
    if name not in known:
        named = [str(p) for p in state.get("plugins") or []]
        hint = f"; it was trained with plugin files {named}: pass each with --plugin FILE" if named else ""
        raise CheckpointError(f"{checkpoint}: model {name!r} is not registered (known: {', '.join(known)}){hint}")
    return factory


def load_model(
    checkpoint: Path, device: torch.device, model_factory: ModelFactory | None = None, plugins: list[str] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the checkpoint's model (registry name + stored ModelConfig) and load its weights.

    `plugins`: relation files to load first (the command line's --plugin, a suite's plugins:).
    """
    state = ckpt.load_checkpoint(checkpoint)
    for key in ("model_name", "model_config", "iteration"):
        if key not in state:
            raise CheckpointError(f"{checkpoint}: checkpoint lacks {key!r}")
    try:
        config = parse_dataclass(ModelConfig, state["model_config"], f"{checkpoint}: model_config")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    factory = model_factory or registry_factory(checkpoint, state, plugins or [])
    model = factory(state["model_name"], config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{checkpoint}: weights do not fit model {state['model_name']!r} ({first[:160]})") from None
    return model.to(device).eval(), state


MAX_OBJECT_SLOTS = 64  # K: the relation is O(K^2) per step; the paper uses 4 (train) and 8 (test)
EVAL_TENSORS_PER_PIXEL = 6  # frames in, frames out, and about 4 canvases per object slot in flight (float32)


def eval_memory_bytes(batch: int, samples: int, particles: int, frames: int, image_size: int, slots: int) -> float:
    """Rough peak bytes of one evaluation batch: every row is expanded to max(samples, particles) copies,
    each holding T frames plus a full-size canvas per object slot."""
    rows = batch * max(samples, particles)
    return float(rows * frames * image_size * image_size * 4 * (EVAL_TENSORS_PER_PIXEL + 4 * slots))


def _available_device_memory(dev: torch.device) -> int | None:
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    return limits.available_memory()


def check_eval_memory(split: EvalSplit, eval: EvalConfig, n: int, state: dict[str, Any], dev: torch.device) -> None:
    """Refuse a batch size that cannot fit, before allocating it, with a message that says the limit."""
    cfg = state.get("model_config") or {}
    slots = split.max_objects if split.max_objects is not None else int(cfg.get("max_objects", 4))
    batch = min(eval.batch_size, n)
    need = eval_memory_bytes(batch, eval.samples, eval.particles, split.frames, int(cfg.get("image_size", 50)), slots)
    what = (f"eval batch_size {eval.batch_size} ({batch} sequences x {max(eval.samples, eval.particles)} "
            f"samples/particles x {split.frames} frames x {slots} object slots)")
    limits.check_memory(need, what, "use a smaller --batch-size", available=_available_device_memory(dev))


def save_rollout(path: Path, truth: Tensor, gen: Any, n_observed: int) -> None:
    """Row 0 of a Generation as plain arrays: truth/frames [T, H, W], boxes [T, K, 4], pres/ids [T, K]."""
    arrays = {
        "truth": truth.cpu().numpy(),
        "frames": gen.frames[0, :, 0].clamp(0, 1).cpu().numpy(),
        "boxes": gen.boxes[0].cpu().numpy(),
        "pres": gen.pres[0].cpu().numpy(),
        "ids": gen.ids[0].cpu().numpy(),
        "n_observed": np.array(n_observed),
    }
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def evaluate_checkpoint(
    checkpoint: Path,
    data_path: str,
    split: EvalSplit,
    eval: EvalConfig,
    device: str = "auto",
    seed: int = 0,
    model_factory: ModelFactory | None = None,
    dataset_factory: DatasetFactory | None = None,
    rollout_path: Path | None = None,
    plugins: list[str] | None = None,
) -> dict[str, Any]:
    """Score one split; returns one `splits` entry of metrics.json (see docs/metrics.md).

    `plugins`: relation files to load (never the ones a checkpoint lists; see registry_factory).

    With `rollout_path`, also saves the first sequence's first sample (inferred frames, then the
    frame sampled from the prior, with boxes and object ids) for the report's Figure 3.
    """
    if split.frames < 2:
        raise ConfigError(f"eval split {split.data}/{split.split}: frames must be >= 2, found {split.frames}")
    if eval.samples < 1 or eval.particles < 1 or eval.batch_size < 1:
        raise ConfigError(f"eval: samples, particles and batch_size must be >= 1, found "
                          f"{eval.samples}, {eval.particles}, {eval.batch_size}")
    if split.max_objects is not None and not 1 <= split.max_objects <= MAX_OBJECT_SLOTS:
        raise ConfigError(f"eval split {split.data}/{split.split}: max_objects must be between 1 and "
                          f"{MAX_OBJECT_SLOTS} object slots, found {split.max_objects}")
    dev = resolve_device(device)
    checkpoint = Path(checkpoint)
    state_meta = ckpt.load_checkpoint(checkpoint)  # fail on a bad checkpoint before reading data
    crop = int(state_meta.get("model_config", {}).get("image_size", 50))
    dataset: Dataset = (dataset_factory or default_dataset_factory)(data_path, split.split, split.frames, crop)
    if split.sequences is not None and split.sequences < len(dataset):  # type: ignore[arg-type]
        dataset = Subset(dataset, range(split.sequences))
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError(f"{data_path}: split {split.split!r} has no sequences to evaluate")
    check_eval_memory(split, eval, n, state_meta, dev)  # before the model and the first batch exist
    model, state = load_model(checkpoint, dev, model_factory, plugins)
    std = float(model.config.output_std)
    max_objects = split.max_objects if split.max_objects is not None else int(model.config.max_objects)
    T, S = split.frames, eval.samples
    horizon = trained_horizon(state)
    if horizon is not None and T > horizon:
        log.warning("%s: scored at T=%d frames, beyond the %d frames it was trained on (marked in the tables)",
                    checkpoint, T, horizon)
    from rsqair_bench.dynamics import MatchingScorer, ReferenceScorer  # it imports this module's metrics

    states = _ball_states(data_path, split.split, T, n, crop)
    references = ReferenceScorer(states, std)
    matching = MatchingScorer(states, S) if states is not None else None
    generate_kwargs = {"particles": eval.particles} if _accepts(model.generate, "particles") else {}
    start = 0  # sequence number of the batch's first row (the loader does not shuffle)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sample_gen = torch.Generator(device=dev).manual_seed(derive_seed(seed, 10))
    bound_gen = torch.Generator(device=dev).manual_seed(derive_seed(seed, 11))
    data_sum = np.zeros(S)
    empty_sum = 0.0  # reference point: the same score for an all-zero prediction of frame T
    rel_sum = np.zeros(S)
    with_collision = 0
    bounds: list[Tensor] = []
    correct, counted = 0, 0
    loader = DataLoader(dataset, batch_size=eval.batch_size, shuffle=False, collate_fn=_collate,
                        generator=torch.Generator().manual_seed(derive_seed(seed, 12)))  # no global RNG draw
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            x = batch["features"].to(dev)  # [B, T, 1, H, W]
            groups, collisions = batch["groups"].to(dev), batch["collisions"].to(dev)
            x_in = x.clone()
            x_in[:, T - 1] = 0.0  # frame T is never shown to the model
            # All S samples in one batched call: row b*S + s is sample s of sequence b.
            gen = model.generate(x_in.repeat_interleave(S, 0), n_observed=T - 1, max_objects=max_objects,
                                 generator=sample_gen, **generate_kwargs)
            index = np.arange(start, start + x.shape[0])  # [B]
            start += x.shape[0]
            references.add(x, groups, collisions, index)
            if matching is not None:
                matching.add(gen.boxes, gen.pres, groups, index)
            if rollout_path is not None and not bounds:  # first batch
                save_rollout(rollout_path, x[0, :, 0], gen, n_observed=T - 1)
            frames_T = gen.frames[:, T - 1]  # [B*S, 1, H, W]
            target = x[:, T - 1].repeat_interleave(S, 0)
            data_ll = data_log_likelihood(target, frames_T, std).double().view(-1, S)  # [B, S]
            rel, has = relational_log_likelihood(target, frames_T, groups[:, T - 1].repeat_interleave(S, 0),
                                                 collisions[:, T - 1].repeat_interleave(S, 0), std)
            data_sum += data_ll.sum(0).cpu().numpy()
            rel_sum += rel.double().view(-1, S).sum(0).cpu().numpy()
            with_collision += int(has.view(-1, S)[:, 0].sum())
            empty_sum += float(data_log_likelihood(x[:, T - 1], torch.zeros_like(x[:, T - 1]), std).double().sum())
            out = model(x, eval.particles, generator=bound_gen, max_objects=max_objects)
            bounds.append(out.iwae_bound.detach().double().cpu())  # [B]
            ok = count_correct(out.num_present, groups)  # [B, T]
            correct += int(ok.sum())
            counted += ok.numel()
    seconds = time.perf_counter() - t0
    data_ps, rel_ps = data_sum / n, rel_sum / n  # per_sample[s] = mean over sequences
    bound = torch.cat(bounds)
    d_mean, d_std = mean_std_over(data_ps)
    r_mean, r_std = mean_std_over(rel_ps)
    return {
        "data": str(data_path),
        "split": split.split,
        "max_objects": int(max_objects),
        "frames": int(T),
        "sequences": int(n),
        "samples": int(S),
        "data_ll": {"mean": d_mean, "std": d_std, "per_sample": [float(v) for v in data_ps]},
        "relational_ll": {"mean": r_mean, "std": r_std, "per_sample": [float(v) for v in rel_ps]},
        "sequences_with_collision": int(with_collision),
        "empty_frame_data_ll": empty_sum / n,
        "iwae_bound": {"mean": float(bound.mean()), "std": float(bound.std(unbiased=False))},
        "count_accuracy": correct / max(counted, 1),
        "eval_sequences_per_s": n / seconds if seconds > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(dev),
        "checkpoint_iteration": int(state["iteration"]),
        "eval_seed": int(seed),
        "particles": int(eval.particles),
        "references": references.result(),
        "matching": matching.result() if matching is not None else None,
        "trained_horizon": horizon,
        "beyond_trained_horizon": bool(horizon is not None and T > horizon),
    }


def trained_horizon(state: dict[str, Any]) -> int | None:
    """Longest sequence the checkpoint's model was trained on (its curriculum length), None if unknown.

    `trained_horizon` is written by train_job; older checkpoints carry the same number as `seq_len`.
    """
    value = state.get("trained_horizon", state.get("seq_len"))
    return None if value is None else int(value)


def _accepts(fn: Any, name: str) -> bool:
    """Whether callable `fn` takes keyword `name` (model plugins may predate a keyword)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _ball_states(data_path: str, split: str, frames: int, sequences: int, crop: int) -> Any:
    """True ball states for the reference oracle and the matching metrics; None when the data
    file has none (those metrics are then null) or is not an HDF5 file this package can read."""
    from rsqair_bench.ball_states import read_ball_states

    if not Path(data_path).is_file():
        return None
    try:
        return read_ball_states(data_path, split, frames, sequences, crop)
    except (DataError, KeyError, OSError) as err:
        log.warning("%s: no ball states for %s (%s); oracle and matching metrics skipped", data_path, split, err)
        return None


# ----------------------------------------------------------------------------- metrics.json
TOP_KEYS = ["model", "paper_name", "seed", "suite", "config_hash", "checkpoint_iteration", "parameters",
            "device", "torch_version", "train"]
TRAIN_KEYS = ["iterations", "seconds", "sequences_per_s", "peak_memory_mb", "best_validation_bound"]
SPLIT_KEYS = ["data", "split", "max_objects", "frames", "sequences", "samples", "data_ll", "relational_ll",
              "sequences_with_collision", "iwae_bound", "count_accuracy", "eval_sequences_per_s", "peak_memory_mb",
              "references"]


def validate_metrics(metrics: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing key of the metrics.json schema."""
    def need(d: Any, keys: list[str], where: str) -> None:
        if not isinstance(d, dict):
            raise ValueError(f"metrics.json: {where} must be a mapping")
        for k in keys:
            if k not in d:
                raise ValueError(f"metrics.json: missing key {where}{k}")

    need(metrics, TOP_KEYS + ["splits"], "")
    need(metrics["parameters"], ["total", "relation"], "parameters.")
    need(metrics["train"], TRAIN_KEYS, "train.")
    for name, entry in metrics["splits"].items():
        need(entry, SPLIT_KEYS, f"splits.{name}.")
        for metric in ("data_ll", "relational_ll"):
            need(entry[metric], ["mean", "std", "per_sample"], f"splits.{name}.{metric}.")
            if len(entry[metric]["per_sample"]) != entry["samples"]:
                raise ValueError(f"metrics.json: splits.{name}.{metric}.per_sample has "
                                 f"{len(entry[metric]['per_sample'])} values, expected samples={entry['samples']}")
        need(entry["iwae_bound"], ["mean", "std"], f"splits.{name}.iwae_bound.")


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_metrics(path: Path, job_info: dict[str, Any], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Validate against the schema and write metrics.json atomically; returns what was written."""
    metrics = {**job_info, "splits": splits}
    validate_metrics(metrics)
    metrics = _finite_or_none(metrics)
    atomic_write_text(Path(path), json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics


def job_info_from_checkpoint(checkpoint: Path, suite: str = "", device: str = "auto") -> dict[str, Any]:
    """The job-level part of metrics.json from a checkpoint written by train_job."""
    state = ckpt.load_checkpoint(checkpoint)
    name = state["model_name"]
    try:
        from rsqair_bench.registry import paper_name

        paper = paper_name(name)
    except Exception:  # registry absent or unknown model (e.g. a test fake): fall back to our name
        paper = name
    stats = dict(state.get("train_stats") or {})
    for k in TRAIN_KEYS:
        stats.setdefault(k, None)
    return {
        "model": name, "paper_name": paper, "seed": state.get("seed"), "suite": suite,
        "config_hash": state.get("config_hash", ""), "checkpoint_iteration": int(state["iteration"]),
        "parameters": dict(state.get("parameters") or {"total": None, "relation": None}),
        "device": device_description(resolve_device(device)), "torch_version": torch.__version__,
        "train": stats,
    }


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint file (best.pt or checkpoint.pt)")
    parser.add_argument("--data", required=True, help="HDF5 data file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-objects", type=int, default=None, help="object slots (default: training value)")
    parser.add_argument("--samples", type=int, default=5, help="sampled last frames (paper: 5)")
    parser.add_argument("--particles", type=int, default=5, help="IWAE particles (paper: 5)")
    parser.add_argument("--frames", type=int, default=10, help="T: frames 1..T-1 inferred, frame T sampled")
    parser.add_argument("--sequences", type=int, default=None, help="evaluate only the first N sequences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", default="", help="suite name recorded in metrics.json")
    parser.add_argument("--out", default=None, help="write a full metrics.json here")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="relation file the checkpoint's model needs (repeatable); a checkpoint never loads code")
    parser.add_argument("--rollout", default=None, metavar="NPZ",
                        help="also save the first sequence's frames, boxes and ids (draw with `report --rollout`)")


def check_args(args: argparse.Namespace) -> None:
    """Ranges of the command line, named as the user typed them, before any file is read."""
    checks = [
        ("--max-objects", args.max_objects is None or 1 <= args.max_objects <= MAX_OBJECT_SLOTS,
         f"an integer between 1 and {MAX_OBJECT_SLOTS} (object slots; omit it for the training value)"),
        ("--samples", args.samples >= 1, "an integer >= 1"),
        ("--particles", args.particles >= 1, "an integer >= 1"),
        ("--frames", args.frames >= 2, "an integer >= 2 (observed frames + a sampled last frame)"),
        ("--sequences", args.sequences is None or args.sequences >= 1, "an integer >= 1"),
        ("--batch-size", args.batch_size >= 1, "an integer >= 1"),
    ]
    for flag, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{flag}: found {getattr(args, flag[2:].replace('-', '_'))}, expected {expected}")
    for flag in ("out", "rollout"):
        if getattr(args, flag):
            check_writable_dir(Path(getattr(args, flag)).parent, f"--{flag}")


def command(args: argparse.Namespace) -> int:
    check_args(args)
    split = EvalSplit(data=args.data, split=args.split, max_objects=args.max_objects, frames=args.frames,
                      sequences=args.sequences)
    cfg = EvalConfig(samples=args.samples, particles=args.particles, batch_size=args.batch_size)
    result = evaluate_checkpoint(Path(args.checkpoint), args.data, split, cfg, device=args.device, seed=args.seed,
                                 rollout_path=Path(args.rollout) if args.rollout else None, plugins=args.plugin)
    if args.out:
        key = f"{Path(args.data).stem}/{args.split}"
        info = job_info_from_checkpoint(Path(args.checkpoint), suite=args.suite, device=args.device)
        write_metrics(Path(args.out), info, {key: result})
    print(json.dumps(_finite_or_none(result), indent=2))
    return 0
