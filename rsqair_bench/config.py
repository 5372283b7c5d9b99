"""Configuration dataclasses, a strict mapping -> dataclass parser, and the value checks.

Reading the YAML files themselves (safe loading, `base:` chains) is config_files.py's job.

Every value that shapes a result lives here with its source: the R-SQAIR paper
(`paper`), the SQAIR reference implementation akosiorek/sqair (`sqair ref`), or our
own choice (`ours`, with the reason in docs/). Unknown keys and wrong types are
errors that name the file and the key path, e.g. `suite.yaml: train.batch_size:
expected int, found str 'x'`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rsqair_bench.config_files import load_yaml, merge_layers, part_from, suite_layers
from rsqair_bench.errors import ConfigError, found


# ----------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    """SQAIR hyperparameters. Defaults: sqair ref (common_model_flags.py, mlp_mnist_model.py) unless noted."""

    max_objects: int = 4  # paper: "up to k = 4 object representations" (sqair ref default 3)
    z_what: int = 5  # paper: 5 instead of SQAIR's 50
    glimpse_size: int = 20  # sqair ref: 20x20 glimpses
    n_hidden: int = 256  # sqair ref: n_hidden
    n_layers: int = 2  # sqair ref: MLPs [256, 256]
    output_std: float = 0.3  # sqair ref: fixed Gaussian likelihood std
    output_scale: float = 0.25  # sqair ref: trainable decoder output scale, initial value
    disc_step_bias: float = 1.0  # sqair ref: presence logit bias in discovery
    prop_step_bias: float = 5.0  # sqair ref: presence logit bias in propagation posterior
    prop_prior_step_bias: float = 10.0  # sqair ref: presence logit bias in propagation prior
    transform_var_bias: float = -3.0  # sqair ref: offset on the where-posterior std logit
    scale_prior: float = -2.0  # sqair ref: discovery where-prior mean for the two scale logits
    shift_prior: float = 0.0  # sqair ref: discovery where-prior mean for the two shift logits
    where_prior_std: float = 1.0  # sqair ref
    where_scale_max: float = 1.0  # sqair ref: box scale = sigmoid(logit) (1.0); ours: max * sigmoid, docs/sqair.md
    where_shift_max: float = 1.0  # sqair ref: box centre = tanh(logit), inside the frame (1.0); ours: max * tanh
    image_size: int = 50  # paper: central 50x50 crop
    prop_prior: Literal["rnn", "residual", "velocity"] = "rnn"  # sqair ref: 'rnn' (absolute); residual: ours, docs/sqair.md
    prop_prior_scale_bias: float | None = None  # None: sqair ref (zero bias, std 0.70); docs/sqair.md
    prop_velocity_space: Literal["logit", "shift"] = "logit"  # velocity prior's rule on raw logits, or on box centres (ours)
    relation_velocity: bool = False  # ours: gamma's input also holds each object's last displacement, docs/sqair.md
    disc_image_encoder: Literal["mlp", "conv"] = "mlp"  # sqair ref: MLP on the image; conv: ours, docs/sqair.md
    disc_input: Literal["image", "residual"] = "image"  # sqair ref: the image; residual: minus what is explained (ours)
    disc_where_refine: bool = False  # sqair ref: box from the image code alone; True: a glimpse at it corrects it (ours)
    disc_box_centre: Literal["head", "residual_peak"] = "head"  # sqair ref: head; residual_peak: ours, docs/sqair.md
    vimco: Literal["vimco", "sqair_tf"] = "vimco"  # VIMCO learning signal; sqair_tf = sqair ref targets.py
    compile: bool = False  # ours: torch.compile each posterior frame and the optimizer update (CUDA: with CUDA graphs)
    precision: Literal["fp32", "bf16"] = "fp32"  # ours: bf16 autocasts the training forward; docs/sqair.md, "Precision"
    relation_options: dict[str, Any] = field(default_factory=dict)  # kwargs for the relation's constructor


# ----------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """The training protocol (paper section 3 and sqair ref)."""

    particles: int = 5  # paper: IWAE with 5 particles
    batch_size: int = 32  # paper
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # sqair ref: RMSProp; adam for short CPU runs (ours)
    learning_rate: float = 1e-5  # sqair ref (RMSProp)
    momentum: float = 0.9  # sqair ref
    lr_decay_at: list[float] = field(default_factory=lambda: [0.2, 0.5])  # sqair ref: lr/3 at 20% and 50%
    lr_decay_factor: float = 1.0 / 3.0  # sqair ref
    max_iterations: int = 200_000  # ours: the paper is silent; early stopping usually ends sooner
    max_minutes: float | None = None  # ours: also stop after this much training wall time (resumes count)
    curriculum_start: int = 3  # paper
    curriculum_every: int = 10_000  # paper: +1 frame every 10,000 iterations
    curriculum_max: int = 10  # paper
    validate_every: int | None = None  # iterations between validations; None = once per epoch (paper)
    validation_sequences: int | None = None  # cap on validation set size; None = all
    early_stop_patience: int = 10  # paper: 10 validations without improvement
    checkpoint_every: int = 500  # ours: iterations between latest-checkpoint writes
    grad_clip: float | None = None  # sqair ref: none
    max_nan_skips: int = 0  # ours: 0 = stop at the first NaN/inf
    log_every: int = 50  # ours
    num_workers: int = 0  # DataLoader workers
    torch_threads: int | None = None  # None = leave torch's default


# ----------------------------------------------------------------------------- evaluation
@dataclass
class EvalSplit:
    """One evaluation target: a split of a data set, possibly with more object slots than training."""

    data: str  # data set name in the suite (e.g. balls4) or a path to an .h5 file
    split: str = "test"
    max_objects: int | None = None  # None = the training value; balls678 needs more slots
    frames: int = 10  # T: sequence length scored (frames 1..T-1 inferred, frame T sampled)
    sequences: int | None = None  # cap; None = the whole split
    # one-step scores (docs/metrics.md, "One-step prediction at every frame") over this many sequences (capped
    # at the split's size), with one posterior sample each; None = the sampled frame's sequences
    onestep_sequences: int | None = None


@dataclass
class EvalConfig:
    samples: int = 5  # paper: 5 sampled last frames per model
    particles: int = 5  # paper: IWAE bound with 5 particles
    batch_size: int = 32
    splits: dict[str, EvalSplit] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data
@dataclass
class DataSetConfig:
    """A data set: an existing file (e.g. R-NEM's balls4mass64.h5) or one generated if missing."""

    path: str
    balls: str = "4"  # "4" or "6-8"
    frames: int = 51  # R-NEM's files hold 51 frames
    size: int = 64
    seed: int = 0
    splits: dict[str, int] = field(default_factory=lambda: {"training": 50_000, "validation": 10_000, "test": 10_000})


# ----------------------------------------------------------------------------- state-space track
@dataclass
class StatesConfig:
    """The state-space track (ours, docs/states.md): the suite's relations and SQAIR's propagation prior
    on the simulator's true ball states instead of pixels. A suite with a `states:` block runs it; the
    model_config (z_what, n_hidden, prop_prior 'velocity', relation_options) and train (optimizer,
    learning rate and its decay, batch_size windows, max_iterations steps per model) keys still apply."""

    noise_px: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5])  # input noise std, px per axis: one model each
    history: int = 3  # input frames t-3..t-1 (their centres: the last where and 2 displacements in what)
    pixel_results: str | None = None  # a pixel suite's results directory: the gain figure marks its posterior error


# ----------------------------------------------------------------------------- job and suite
@dataclass
class JobConfig:
    """Everything one (model, seed) training job needs; what `train CONFIG.yaml` reads."""

    model: str  # "sqair" or "sqair+<relation>"
    seed: int
    train_data: str  # path to an .h5 file with training and validation splits
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    model_config: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plugins: list[str] = field(default_factory=list)
    states: StatesConfig | None = None  # the state-space track's settings; None: the pixel model


@dataclass
class RayConfig:
    address: str | None = None  # None = RAY_ADDRESS or a local Ray
    num_cpus_per_job: float = 1.0
    num_gpus_per_job: float = 0.0


@dataclass
class SuiteConfig:
    name: str
    models: list[str]
    seeds: list[int]
    data: dict[str, DataSetConfig]
    train_data: str = "balls4"  # which data set trains (training + validation splits)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plugins: list[str] = field(default_factory=list)
    executor: Literal["local", "ray"] = "local"
    workers: int = 1
    device: str = "auto"
    results: str = "results"
    ray: RayConfig = field(default_factory=RayConfig)
    baseline: str | None = None  # ours: the model significance.md tests every other against; None = sqair
    states: StatesConfig | None = None  # ours: run the state-space track instead of the pixel models (docs/states.md)


# ----------------------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def parse_value(tp: Any, value: Any, where: str, partial: bool = False) -> Any:
    """Convert a YAML value to type `tp`, raising ConfigError naming `where` on mismatch.

    `partial`: the value may lack required keys (one file of a `base:` chain, checked alone for
    unknown keys and types); dataclasses are then returned as their parsed mappings."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, where, partial)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None  # before a dataclass option, which would read null as an empty block
        for option in typing.get_args(tp):
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return parse_dataclass(option, value, where)  # its own error names the key inside the block
            try:
                return parse_value(option, value, where, partial)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, found {found(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, found {found(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {found(value)}")
        (item,) = typing.get_args(tp)
        return [parse_value(item, v, f"{where}[{i}]", partial) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {found(value)}")
        key_tp, val_tp = typing.get_args(tp)
        return {parse_value(key_tp, k, f"{where}"): parse_value(val_tp, v, f"{where}.{k}", partial)
                for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, found {found(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, found {found(value)}")


def parse_dataclass(cls: type, data: Any, where: str, partial: bool = False) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and missing required keys are errors.

    With `partial`, missing required keys are allowed and the parsed mapping is returned instead."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        sep = "" if where.endswith(":") else ":"
        raise ConfigError(f"{where}{sep} expected a mapping, found {found(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        sep = "" if where.endswith(":") else ":"
        raise ConfigError(f"{where}{sep} unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where and not where.endswith(":") else f"{where} {name}"
        if name in data:
            kwargs[name] = parse_value(hints[name], data[name], key, partial)
        elif partial:
            continue
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing required key (expected {_type_name(hints[name])})")
    return kwargs if partial else cls(**kwargs)


def load_config(cls: type, path: str | Path) -> Any:
    """Read a YAML file with safe_load and parse it into `cls`; errors are prefixed with the file.

    A suite (`SuiteConfig`) may name a `base:` suite, read first and overridden by this file
    (`suite_layers`). Each base is first checked alone for unknown keys and types, in what survives
    of it, so an error in a base names the base file (not the suite that names it)."""
    if cls is not SuiteConfig:
        return parse_dataclass(cls, load_yaml(path), f"{path}:")
    layers = suite_layers(path)
    merged, origin = merge_layers(layers)
    for index, (file, _) in enumerate(layers[:-1]):
        parse_dataclass(cls, part_from(merged, origin, index) or {}, f"{file}:", partial=True)
    return parse_dataclass(cls, merged, f"{path}:")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-types view of a config, for YAML dumps, checkpoints and hashing."""
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def first_changed_setting(saved: Any, config: Any, prefix: str = "") -> str | None:
    """The first key path where `saved` (a config written by `dump_yaml`, read back as plain YAML)
    differs from the dataclass `config`, or None when they agree.

    A field `saved` lacks counts as unchanged when `config` leaves it at its default: files written
    before a switch existed were produced with the default behaviour. Used for finished jobs (`run`)
    and for checkpoints (`checkpoint.same_model_config`)."""
    if not isinstance(saved, dict):
        return prefix.rstrip(".") or "(top level)"
    plain = yaml.safe_load(dump_yaml(config))  # the types a dump reads back as (tuples -> lists, ...)
    names = set()
    for f in dataclasses.fields(config):
        names.add(f.name)
        key, value = prefix + f.name, getattr(config, f.name)
        if f.name not in saved:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if value != default:
                return key
        elif dataclasses.is_dataclass(value):
            changed = first_changed_setting(saved[f.name], value, key + ".")
            if changed:
                return changed
        elif plain[f.name] != saved[f.name]:
            return key
    extra = sorted(set(saved) - names)
    return prefix + str(extra[0]) if extra else None


# ----------------------------------------------------------------------------- ranges
# Why here: `validate`, `run` and `train` share these checks, so a suite that validates never fails at
# train time on a value the types allowed (a zero batch, a negative width), and nothing is written first.
Check = tuple[str, bool, str]


def _raise_first(where: str, section: str, cfg: Any, checks: list[Check]) -> None:
    prefix = f"{where} " if where else ""
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{prefix}{section}.{key}: expected {expected}, found {getattr(cfg, key)!r}")


def _finite_checks(cfg: Any) -> list[Check]:
    """Every float field of a config section (and every float in a list field) must be finite.

    Why: the range checks are written `> 0`, which `.inf` passes, and several floats (output_std's
    partners, shift_prior, prop_prior_scale_bias) had no check at all, so NaN or inf reached training."""
    checks = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            checks.append((f.name, False, "a finite number" if not isinstance(value, list) else "finite numbers"))
    return checks


MAX_MODEL_PARAMETERS = 10**9  # ours: 4 GB of float32 weights, 16 GB with gradients and Adam's moments; paper size: 2.7M


def estimated_parameters(cfg: ModelConfig) -> int:
    """The leading terms of the model's parameter count, from its sizes alone (no model is built).

    Glimpse encoder and decoder (n_hidden x glimpse_size^2 each), the discovery image encoder
    (n_hidden x image_size^2), the mask head (128 x glimpse_size^2), about 12 n_hidden^2 per layer
    of the MLPs, GRU cells and relation, and 25 n_hidden per z_what dimension. Within 20% of the built
    models from n_hidden 256 up, lower for small ones (tests/test_reliability3_values.py checks it against every relation)."""
    h, g, side = cfg.n_hidden, cfg.glimpse_size, cfg.image_size
    return h * (2 * g * g + side * side + 25 * cfg.z_what) + 128 * g * g + 12 * cfg.n_layers * h * h


def _size_check(cfg: ModelConfig) -> list[Check]:
    """A model too large to allocate is refused before it is built, naming the size that makes it so."""
    count = estimated_parameters(cfg)
    glimpse_part = (2 * cfg.n_hidden + 128) * cfg.glimpse_size ** 2
    key = "glimpse_size" if glimpse_part > count - glimpse_part else "n_hidden"
    return [(key, count <= MAX_MODEL_PARAMETERS,
             f"a model of at most {MAX_MODEL_PARAMETERS:,} parameters (n_hidden {cfg.n_hidden}, glimpse_size "
             f"{cfg.glimpse_size}, n_layers {cfg.n_layers}, image_size {cfg.image_size} give about {count:.2g}: "
             "config.estimated_parameters)")]


def check_model_config(cfg: ModelConfig, where: str = "") -> None:
    """Ranges of ModelConfig; `where` is the file prefix (e.g. `suite.yaml:`)."""
    _raise_first(where, "model_config", cfg, _finite_checks(cfg) + [
        ("max_objects", 1 <= cfg.max_objects <= MAX_OBJECT_SLOTS, f"between 1 and {MAX_OBJECT_SLOTS} object slots"),
        ("z_what", cfg.z_what >= 1, ">= 1"),
        ("glimpse_size", cfg.glimpse_size >= 1, ">= 1 (pixels)"),
        ("n_hidden", cfg.n_hidden >= 1, ">= 1"),
        ("n_layers", cfg.n_layers >= 1, ">= 1"),
        ("output_std", cfg.output_std > 0, "> 0"),
        ("where_prior_std", cfg.where_prior_std > 0, "> 0"),
        ("where_scale_max", 0 < cfg.where_scale_max <= 1, "in (0, 1]"),
        ("where_shift_max", 1 <= cfg.where_shift_max <= 2, "in [1, 2] (half-frames from the centre)"),
        ("prop_velocity_space", cfg.prop_velocity_space == "logit" or cfg.prop_prior == "velocity",
         "'logit' unless prop_prior is 'velocity' (the rule it changes)"),
        ("disc_box_centre", cfg.disc_box_centre == "head" or cfg.disc_input == "residual",
         "'head' unless disc_input is 'residual' (the peak is searched in the residual)"),
        ("image_size", 1 <= cfg.image_size <= 4096, "between 1 and 4096 (pixels)"),
        ("precision", cfg.precision in ("fp32", "bf16"), "'fp32' or 'bf16'"),
    ])
    _raise_first(where, "model_config", cfg, _size_check(cfg))  # after the ranges: its inputs are then >= 1


def check_train_config(cfg: TrainConfig, where: str = "") -> None:
    """Ranges of TrainConfig (the same checks train_job makes before writing anything)."""
    _raise_first(where, "train", cfg, _finite_checks(cfg) + [
        ("particles", cfg.particles >= 1, ">= 1"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("learning_rate", cfg.learning_rate > 0, "> 0"),
        ("momentum", 0 <= cfg.momentum < 1, ">= 0 and < 1"),
        ("lr_decay_at", all(0 <= f <= 1 for f in cfg.lr_decay_at), "fractions between 0 and 1"),
        ("lr_decay_at", len(set(cfg.lr_decay_at)) == len(cfg.lr_decay_at),
         "each fraction once (a fraction listed twice decays the learning rate twice there)"),
        ("lr_decay_factor", cfg.lr_decay_factor > 0, "> 0"),
        ("max_iterations", cfg.max_iterations >= 1, ">= 1"),
        ("max_minutes", cfg.max_minutes is None or cfg.max_minutes > 0, "> 0 or null"),
        ("curriculum_start", cfg.curriculum_start >= 1, ">= 1"),
        ("curriculum_every", cfg.curriculum_every >= 1, ">= 1"),
        ("curriculum_max", cfg.curriculum_max >= cfg.curriculum_start, ">= curriculum_start"),
        ("validate_every", cfg.validate_every is None or cfg.validate_every >= 1, ">= 1 or null"),
        ("validation_sequences", cfg.validation_sequences is None or cfg.validation_sequences >= 1, ">= 1 or null"),
        ("early_stop_patience", cfg.early_stop_patience >= 0, ">= 0"),
        ("checkpoint_every", cfg.checkpoint_every >= 1, ">= 1"),
        ("grad_clip", cfg.grad_clip is None or cfg.grad_clip > 0, "> 0 or null"),
        ("max_nan_skips", cfg.max_nan_skips >= 0, ">= 0"),
        ("log_every", cfg.log_every >= 1, ">= 1"),
        ("num_workers", cfg.num_workers >= 0, ">= 0"),
        ("torch_threads", cfg.torch_threads is None or cfg.torch_threads >= 1, ">= 1 or null"),
    ])


def eval_config_checks(cfg: EvalConfig) -> list[Check]:
    return [
        ("samples", cfg.samples >= 1, ">= 1"),
        ("particles", cfg.particles >= 1, ">= 1"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
    ]


def check_eval_config(cfg: EvalConfig, where: str = "") -> None:
    """Ranges of EvalConfig (its splits: check_eval_split)."""
    _raise_first(where, "eval", cfg, eval_config_checks(cfg))


MAX_OBJECT_SLOTS = 64  # K: the relation is O(K^2) per step; the paper uses 4 (train) and 8 (test)


def eval_split_checks(split: EvalSplit) -> list[Check]:
    return [
        ("frames", split.frames >= 2, ">= 2 (observed frames + a sampled last frame)"),
        ("max_objects", split.max_objects is None or 1 <= split.max_objects <= MAX_OBJECT_SLOTS,
         f"between 1 and {MAX_OBJECT_SLOTS} object slots (unset: the training value)"),
        ("sequences", split.sequences is None or split.sequences >= 1, ">= 1 or null"),
        ("onestep_sequences", split.onestep_sequences is None or split.onestep_sequences >= 1, ">= 1 or null"),
    ]


def check_eval_split(split: EvalSplit, where: str = "", section: str = "eval split") -> None:
    """Ranges of one EvalSplit (`validate`, `run`, `eval` and `evaluate_checkpoint` all use these checks)."""
    _raise_first(where, section, split, eval_split_checks(split))


def check_states_config(states: StatesConfig, model: ModelConfig, where: str = "") -> None:
    """Ranges of the state-space track's settings, and the model settings the track needs."""
    noise = states.noise_px
    _raise_first(where, "states", states, [
        ("noise_px", bool(noise), "at least one noise std (px)"),
        ("noise_px", all(0 <= s < 1e3 for s in noise), "stds >= 0 px (and below 1000)"),
        ("noise_px", len({f"{s:g}" for s in noise}) == len(noise), "each std once"),
        ("history", 2 <= states.history <= model.z_what // 2 + 1,
         f"between 2 and z_what // 2 + 1 = {model.z_what // 2 + 1} frames (each displacement fills 2 of what's "
         "model_config.z_what values)"),
    ])
    _raise_first(where, "model_config", model, [
        ("prop_prior", model.prop_prior == "velocity", "'velocity' in the state-space track (velocity + learned delta)"),
        ("prop_velocity_space", model.prop_velocity_space == "logit",
         "'logit' in the state-space track (its where holds the centre itself: the rule is exact constant velocity)"),
    ])


def check_job(job: JobConfig, where: str = "") -> None:
    """Every range of a job config, checked before anything is written (relation options are checked by
    the registry when train_job builds the model, also before it writes)."""
    from rsqair_bench.core.seeding import seed_error

    problem = seed_error(job.seed)
    if problem:
        raise ConfigError(f"{where + ' ' if where else ''}seed: {problem}")
    check_model_config(job.model_config, where)
    check_train_config(job.train, where)
    if job.states is not None:
        check_states_config(job.states, job.model_config, where)
