"""Evaluation protocol (docs/design.md, "The metrics are pinned"; definitions and formulas in docs/metrics.md).

For a test sequence of T frames (default 10): infer the posterior over frames 1..T-1, sample
frame T's latents from the propagation prior (discovery off), decode, and score frame T:
- data log-likelihood: sum over the 50x50 pixels of log N(x_T; mu_T, sigma^2), sigma = output_std: the
  model's own `pixel_log_likelihood`, which also scores the reference predictors (scores.py);
- relational log-likelihood: the same sum over the pixels of balls in ball-ball contact at frame T
  (`collisions` mask, restricted to ball pixels `groups > 0`); 0 for sequences without one.
Both are averaged over sequences, once per sampled last frame (`eval.samples`). Also: the
whole-sequence IWAE bound (`eval.particles`), object-count accuracy and throughput; the reference
predictors' scores on the same frames (`references`), object-ball matching (`matching`), the prior's
error taken apart at frame T (`prior_decomposition`) and its one-step error at every frame t = 3..T
(`one_step`, over `onestep_sequences` sequences: those beyond the sampled frame's get one more
one-sample posterior pass), and whether T exceeds the checkpoint's trained horizon (`beyond_trained_horizon`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import (
    EvalConfig,
    EvalSplit,
    ModelConfig,
    check_eval_config,
    check_eval_split,
    eval_config_checks,
    eval_split_checks,
    parse_dataclass,
)
from rsqair_bench.core.device import device_description, peak_memory_mb, resolve_device
from rsqair_bench.core.io import atomic_write, check_outputs, check_writable_dir
from rsqair_bench.core.seeding import derive_seed, seed_error
from rsqair_bench.data import limits
from rsqair_bench.data.loader import DatasetFactory, default_dataset_factory
from rsqair_bench.errors import CheckpointError, ConfigError, DataError
from rsqair_bench.evaluation.relation_use import RelationProbe, knockout_summary
from rsqair_bench.evaluation.scores import (
    LogDensity,
    count_correct,
    data_log_likelihood,
    mean_std_over,
    relational_log_likelihood,
)
from rsqair_bench.metrics import TRAIN_KEYS, finite_or_none, paper_name_or_model, write_metrics
from rsqair_bench.registry import ModelFactory, default_model_factory

log = logging.getLogger(__name__)


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
    checkpoint: Path, device: torch.device, model_factory: ModelFactory | None = None, plugins: list[str] | None = None,
    state: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the checkpoint's model (registry name + stored ModelConfig) and load its weights.

    `plugins`: relation files to load first (the command line's --plugin, a suite's plugins:).
    `state`: the checkpoint already loaded by the caller (read once), else it is read here.
    """
    state = ckpt.load_checkpoint(checkpoint) if state is None else state
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


EVAL_TENSORS_PER_PIXEL = 6  # frames in, frames out, and about 4 canvases per object slot in flight (float32)


def eval_memory_bytes(batch: int, samples: int, particles: int, frames: int, image_size: int, slots: int) -> float:
    """Rough peak bytes of one evaluation batch: every row is expanded to max(samples, particles) copies,
    each holding T frames plus a full-size canvas per object slot."""
    return limits.eval_memory_bytes(batch, samples, particles, frames, image_size, slots)  # `validate` uses it too


def _available_device_memory(dev: torch.device) -> int | None:
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    return limits.available_memory()


def check_eval_memory(split: EvalSplit, eval_cfg: EvalConfig, n: int, state: dict[str, Any], dev: torch.device) -> None:
    """Refuse a batch size that cannot fit, before allocating it, with a message that says the limit."""
    cfg = state.get("model_config") or {}
    slots = split.max_objects if split.max_objects is not None else int(cfg.get("max_objects", 4))
    batch = min(eval_cfg.batch_size, n)
    need = eval_memory_bytes(batch, eval_cfg.samples, eval_cfg.particles, split.frames, int(cfg.get("image_size", 50)), slots)
    what = (f"eval batch_size {eval_cfg.batch_size} ({batch} sequences x {max(eval_cfg.samples, eval_cfg.particles)} "
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
    eval_cfg: EvalConfig,
    device: str = "auto",
    seed: int = 0,
    model_factory: ModelFactory | None = None,
    dataset_factory: DatasetFactory | None = None,
    rollout_path: Path | None = None,
    plugins: list[str] | None = None,
    knockout: bool = False,
) -> dict[str, Any]:
    """Score one split; returns one `splits` entry of metrics.json (see docs/metrics.md).

    `plugins`: relation files to load (never the ones a checkpoint lists; see registry_factory).

    With `rollout_path`, also saves the first sequence's first sample (inferred frames, then the
    frame sampled from the prior, with boxes and object ids) for the report's Figure 3.

    With `knockout` and a relation that has parameters, the same weights are scored a second time with
    the relation knocked out (`models.knockout`: every object alone in the scene), on the same
    sequences and random numbers, and the entry gets a `knockout` block (`knockout_summary`).
    """
    check_eval_config(eval_cfg)
    check_eval_split(split, section=f"eval split {split.data}/{split.split}")
    dev = resolve_device(device)
    checkpoint = Path(checkpoint)
    state = ckpt.load_checkpoint(checkpoint)  # once; fail on a bad checkpoint before reading data
    crop = int(state.get("model_config", {}).get("image_size", 50))
    dataset, extra = _eval_datasets(dataset_factory or default_dataset_factory, data_path, split, crop)
    n = len(dataset)  # type: ignore[arg-type]
    n_one_step = n if split.onestep_sequences is None else min(split.onestep_sequences, n + len(extra))  # type: ignore[arg-type]
    check_eval_memory(split, eval_cfg, n, state, dev)  # before the model and the first batch exist
    model, state = load_model(checkpoint, dev, model_factory, plugins, state=state)
    slots = split.max_objects if split.max_objects is not None else int(model.config.max_objects)
    horizon = trained_horizon(state)
    if horizon is not None and split.frames > horizon:
        log.warning("%s: scored at T=%d frames, beyond the %d frames it was trained on (marked in the tables)",
                    checkpoint, split.frames, horizon)
    states = _ball_states(data_path, split.split, split.frames, max(n, n_one_step), crop)
    tally = SplitTally(eval_cfg.samples, model.pixel_log_likelihood, states, model.config, n_one_step, dev, seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    probe = RelationProbe(model)
    t0 = time.perf_counter()
    with probe:
        _score_batches(model, dataset, tally, eval_cfg, slots, dev, seed, rollout_path)
    seconds = time.perf_counter() - t0
    one_step_seconds = _score_one_step(model, extra, tally, eval_cfg, slots, dev, seed, first=n)
    entry = {
        "data": str(data_path), "split": split.split, "max_objects": int(slots), "frames": int(split.frames),
        "sequences": int(n), "samples": int(eval_cfg.samples),
        **tally.likelihoods(n),
        "count_accuracy": tally.correct / max(tally.counted, 1),
        "eval_sequences_per_s": n / seconds if seconds > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(dev),
        "checkpoint_iteration": int(state["iteration"]),
        "eval_seed": int(seed),
        "particles": int(eval_cfg.particles),
        "references": tally.references.result(),
        "matching": tally.matching.result() if tally.matching is not None else None,
        "trained_horizon": horizon,
        "beyond_trained_horizon": bool(horizon is not None and split.frames > horizon),
        "relation_output": probe.result(),
        **tally.prior_blocks(len(extra), one_step_seconds),
    }
    if knockout and probe.active:
        from rsqair_bench.models.knockout import knocked_out

        model.relation = knocked_out(model.relation)
        ko_tally = SplitTally(eval_cfg.samples, model.pixel_log_likelihood, states)
        _score_batches(model, dataset, ko_tally, eval_cfg, slots, dev, seed, None)
        entry["knockout"] = knockout_summary(ko_tally, n)
    return entry


def _eval_datasets(factory: DatasetFactory, data_path: str, split: EvalSplit, crop: int) -> tuple[Dataset, Dataset]:
    """The split's first `split.frames` frames of (at most `split.sequences`) sequences, and the sequences after
    them up to `split.onestep_sequences` (the one-step pass's extra ones; empty when none, capped at the split's
    size like `sequences`). An empty split is an error."""
    full: Dataset = factory(data_path, split.split, split.frames, crop)
    size = len(full)  # type: ignore[arg-type]
    n = size if split.sequences is None else min(split.sequences, size)
    if size == 0:
        raise ConfigError(f"{data_path}: split {split.split!r} has no sequences to evaluate")
    dataset = full if n == size else Subset(full, range(n))
    extra = Subset(full, range(n, min(split.onestep_sequences or 0, size)))
    if (split.onestep_sequences or 0) > size:
        log.warning("%s: split %r holds %d sequences, fewer than onestep_sequences %d: the one-step score covers %d",
                    data_path, split.split, size, split.onestep_sequences, size)
    return dataset, extra


class SplitTally:
    """Sums over the batches of one split: every number of its metrics.json entry but the timings.

    Scores use the model's own per-pixel likelihood (`log_density`), for the model and the references alike.
    """

    def __init__(self, samples: int, log_density: LogDensity, states: Any, model_config: Any = None,
                 one_step_sequences: int = 0, dev: torch.device | None = None, seed: int = 0) -> None:
        """`model_config`: the model's, for its raw where -> pixels (None: no prior blocks, e.g. the knock-out's
        second pass); the one-step score covers sequences numbered below `one_step_sequences`."""
        from rsqair_bench.evaluation.dynamics import MatchingScorer, ReferenceScorer
        from rsqair_bench.evaluation.prior_error import PriorErrorScorer

        self.samples, self.log_density = samples, log_density
        self.references = ReferenceScorer(states, log_density)
        self.matching = MatchingScorer(states, samples) if states is not None else None
        self.prior = None
        self.one_step_sequences = one_step_sequences
        if states is not None and model_config is not None:  # the one-step sample's noise: a stream of its own
            noise = torch.Generator(device=dev or torch.device("cpu")).manual_seed(derive_seed(seed, 13))
            self.prior = PriorErrorScorer(states, model_config, noise)
        self.data_sum = np.zeros(samples)
        self.rel_sum = np.zeros(samples)
        self.empty_sum = 0.0  # reference point: the same score for an all-zero prediction of frame T
        self.with_collision = 0
        self.bounds: list[Tensor] = []
        self.correct, self.counted = 0, 0

    def add_sampled(self, x: Tensor, groups: Tensor, collisions: Tensor, frames_T: Tensor) -> None:
        """x, groups, collisions [B, T, 1, H, W]; frames_T [B*S, 1, H, W]: row b*S + s is sample s of sequence b."""
        S, last = self.samples, x.shape[1] - 1
        target = x[:, last].repeat_interleave(S, 0)
        data_ll = data_log_likelihood(target, frames_T, self.log_density).double().view(-1, S)  # [B, S]
        rel, has = relational_log_likelihood(target, frames_T, groups[:, last].repeat_interleave(S, 0),
                                             collisions[:, last].repeat_interleave(S, 0), self.log_density)
        self.data_sum += data_ll.sum(0).cpu().numpy()
        self.rel_sum += rel.double().view(-1, S).sum(0).cpu().numpy()
        self.with_collision += int(has.view(-1, S)[:, 0].sum())
        empty = data_log_likelihood(x[:, last], torch.zeros_like(x[:, last]), self.log_density)
        self.empty_sum += float(empty.double().sum())

    def add_inferred(self, out: Any, groups: Tensor) -> None:
        """The model's output on the whole sequences: IWAE bound and object counts."""
        self.bounds.append(out.iwae_bound.detach().double().cpu())  # [B]
        ok = count_correct(out.num_present, groups)  # [B, T]
        self.correct += int(ok.sum())
        self.counted += ok.numel()

    def prior_blocks(self, extra_sequences: int, extra_seconds: float) -> dict[str, Any]:
        """`prior_decomposition` and `one_step` of the metrics.json entry (null without ball states or
        prior records); `one_step` also says how many sequences and seconds its extra pass took."""
        if self.prior is None:
            return {"prior_decomposition": None, "one_step": None}
        blocks = self.prior.result()
        if blocks["one_step"] is not None:
            blocks["one_step"] |= {"extra_sequences": int(extra_sequences), "extra_seconds": float(extra_seconds)}
        return blocks

    def likelihoods(self, n: int) -> dict[str, Any]:
        """data_ll .. iwae_bound of the metrics.json entry, in its key order; per_sample[s] = mean over sequences."""
        data_ps, rel_ps = self.data_sum / n, self.rel_sum / n
        bound = torch.cat(self.bounds)
        d_mean, d_std = mean_std_over(data_ps)
        r_mean, r_std = mean_std_over(rel_ps)
        return {
            "data_ll": {"mean": d_mean, "std": d_std, "per_sample": [float(v) for v in data_ps]},
            "relational_ll": {"mean": r_mean, "std": r_std, "per_sample": [float(v) for v in rel_ps]},
            "sequences_with_collision": int(self.with_collision),
            "empty_frame_data_ll": self.empty_sum / n,
            "iwae_bound": {"mean": float(bound.mean()), "std": float(bound.std(unbiased=False))},
        }


def _score_batches(model: torch.nn.Module, dataset: Dataset, tally: SplitTally, eval_cfg: EvalConfig, slots: int,
                   dev: torch.device, seed: int, rollout_path: Path | None) -> None:
    """Frames 1..T-1 shown, frame T sampled `eval.samples` times and scored; then the bound on whole sequences."""
    sample_gen = torch.Generator(device=dev).manual_seed(derive_seed(seed, 10))
    bound_gen = torch.Generator(device=dev).manual_seed(derive_seed(seed, 11))
    loader = DataLoader(dataset, batch_size=eval_cfg.batch_size, shuffle=False, collate_fn=_collate,
                        generator=torch.Generator().manual_seed(derive_seed(seed, 12)))  # no global RNG draw
    S, start = eval_cfg.samples, 0  # start: sequence number of the batch's first row (the loader does not shuffle)
    with torch.no_grad():
        for batch in loader:
            x = batch["features"].to(dev)  # [B, T, 1, H, W]
            T = x.shape[1]
            groups, collisions = batch["groups"].to(dev), batch["collisions"].to(dev)
            x_in = x.clone()
            x_in[:, T - 1] = 0.0  # frame T is never shown to the model
            # All S samples in one batched call: row b*S + s is sample s of sequence b.
            gen = model.generate(x_in.repeat_interleave(S, 0), n_observed=T - 1, max_objects=slots,
                                 generator=sample_gen, particles=eval_cfg.particles)
            index = np.arange(start, start + x.shape[0])  # [B]
            start += x.shape[0]
            tally.references.add(x, groups, collisions, index)
            if tally.matching is not None:
                tally.matching.add(gen.boxes, gen.pres, groups, index, ids=gen.ids)
            if tally.prior is not None:
                tally.prior.add(gen, groups, index, S, tally.one_step_sequences)
            if rollout_path is not None and not tally.bounds:  # first batch
                save_rollout(rollout_path, x[0, :, 0], gen, n_observed=T - 1)
            tally.add_sampled(x, groups, collisions, gen.frames[:, T - 1])
            tally.add_inferred(model(x, eval_cfg.particles, generator=bound_gen, max_objects=slots), groups)


def _score_one_step(model: torch.nn.Module, extra: Dataset, tally: SplitTally, eval_cfg: EvalConfig, slots: int,
                    dev: torch.device, seed: int, first: int) -> float:
    """The one-step score's sequences beyond the sampled frame's (`extra`, numbered from `first`): one
    posterior sample each (P particles, one kept), frame T from the prior as in the main pass; no bound,
    no second sample. Returns its wall seconds. Why: the one-step score needs about 1,000 colliding balls,
    and this pass costs a fraction of the main pass per sequence (docs/metrics.md)."""
    if tally.prior is None or len(extra) == 0:  # type: ignore[arg-type]
        return 0.0
    t0 = time.perf_counter()
    gen_noise = torch.Generator(device=dev).manual_seed(derive_seed(seed, 14))
    loader = DataLoader(extra, batch_size=eval_cfg.batch_size * eval_cfg.samples, shuffle=False, collate_fn=_collate,
                        generator=torch.Generator().manual_seed(derive_seed(seed, 15)))
    start = first
    with torch.no_grad():
        for batch in loader:
            x = batch["features"].to(dev)  # [B, T, 1, H, W]
            T = x.shape[1]
            x_in = x.clone()
            x_in[:, T - 1] = 0.0  # frame T is never shown to the model
            gen = model.generate(x_in, n_observed=T - 1, max_objects=slots, generator=gen_noise,
                                 particles=eval_cfg.particles)
            index = np.arange(start, start + x.shape[0])  # [B]
            start += x.shape[0]
            tally.prior.add(gen, batch["groups"], index, 1, tally.one_step_sequences, decompose=False)
    return time.perf_counter() - t0


def trained_horizon(state: dict[str, Any]) -> int | None:
    """Longest sequence the checkpoint's model was trained on (its curriculum length), None if unknown.

    `trained_horizon` is written by train_job; older checkpoints carry the same number as `seq_len`.
    """
    value = state.get("trained_horizon", state.get("seq_len"))
    return None if value is None else int(value)


def _ball_states(data_path: str, split: str, frames: int, sequences: int, crop: int) -> Any:
    """True ball states for the reference oracle and the matching metrics; None when the data
    file has none (those metrics are then null) or is not an HDF5 file this package can read."""
    from rsqair_bench.data.ball_states import read_ball_states

    if not Path(data_path).is_file():
        return None
    try:
        return read_ball_states(data_path, split, frames, sequences, crop)
    except (DataError, KeyError, OSError) as err:
        log.warning("%s: no ball states for %s (%s); oracle and matching metrics skipped", data_path, split, err)
        return None


# ----------------------------------------------------------------------------- metrics.json job facts
def job_info_from_checkpoint(checkpoint: Path, suite: str = "", device: str = "auto") -> dict[str, Any]:
    """The job-level part of metrics.json from a checkpoint written by train_job (`eval --out`).

    Its `train` figures are those saved with that checkpoint: checkpoint.pt at the end of training holds
    the final ones, best.pt those of its best validation (`run` takes them from the train result instead)."""
    state = ckpt.load_checkpoint(checkpoint)
    name = state["model_name"]
    stats = dict(state.get("train_stats") or {})  # as of the iteration this checkpoint was saved
    for k in TRAIN_KEYS:
        stats.setdefault(k, None)
    return {
        "model": name, "paper_name": paper_name_or_model(name), "seed": state.get("seed"), "suite": suite,
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
    parser.add_argument("--onestep-sequences", type=int, default=None,
                        help="one-step scores over the first N sequences (default: those of --sequences)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", default="", help="suite name recorded in metrics.json")
    parser.add_argument("--out", default=None, help="write a full metrics.json here")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="relation file the checkpoint's model needs (repeatable); a checkpoint never loads code")
    parser.add_argument("--rollout", default=None, metavar="NPZ",
                        help="also save the first sequence's frames, boxes and ids (draw with `report --rollout`)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out or --rollout file")


def _split_and_config(args: argparse.Namespace) -> tuple[EvalSplit, EvalConfig]:
    split = EvalSplit(data=args.data, split=args.split, max_objects=args.max_objects, frames=args.frames,
                      sequences=args.sequences, onestep_sequences=args.onestep_sequences)
    return split, EvalConfig(samples=args.samples, particles=args.particles, batch_size=args.batch_size)


def check_args(args: argparse.Namespace) -> None:
    """Ranges of the command line (config.py's eval checks), named as the user typed them, before any file is read."""
    split, cfg = _split_and_config(args)
    for key, ok, expected in eval_split_checks(split) + eval_config_checks(cfg):
        if not ok:
            raise ConfigError(f"--{key.replace('_', '-')}: found {getattr(args, key)}, expected {expected}")
    for flag in ("out", "rollout"):
        if getattr(args, flag):
            check_writable_dir(Path(getattr(args, flag)).parent, f"--{flag}")
    problem = seed_error(args.seed)
    if problem:
        raise ConfigError(f"--seed: {problem}")
    inputs = {"the checkpoint": args.checkpoint, "--data": args.data,
              **{f"--plugin {p}": p for p in getattr(args, "plugin", None) or []}}
    outputs = {f"--{flag}": getattr(args, flag) for flag in ("out", "rollout") if getattr(args, flag)}
    check_outputs(inputs, outputs, force=bool(getattr(args, "force", False)))  # before any work


def command(args: argparse.Namespace) -> int:
    check_args(args)
    split, cfg = _split_and_config(args)
    result = evaluate_checkpoint(Path(args.checkpoint), args.data, split, cfg, device=args.device, seed=args.seed,
                                 rollout_path=Path(args.rollout) if args.rollout else None, plugins=args.plugin)
    if args.out:
        key = f"{Path(args.data).stem}/{args.split}"
        info = job_info_from_checkpoint(Path(args.checkpoint), suite=args.suite, device=args.device)
        write_metrics(Path(args.out), info, {key: result})
    print(json.dumps(finite_or_none(result), indent=2))
    return 0
