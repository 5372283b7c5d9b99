"""Checkpoints: atomic writes, safe loads, and the identity checks that stop a run from
resuming (or an evaluation from scoring) a checkpoint of a different model.

Every load checks the file's integrity first (`read_checked_bytes`): a regular file, the CRC-32 of
every member of torch's zip container, and the file's line in a `SHA256SUMS` beside it when there
is one (the shipped checkpoints in results/study/checkpoints/ have one).

A checkpoint is a plain dict that `torch.load(weights_only=True)` can read: tensors, str,
int, float, bool, None, lists and dicts only. RNG states are stored as the ByteTensors that
`torch.Generator.get_state()` returns.

Layout (FORMAT_VERSION 1), as training/state.py's `TrainRun.snapshot` writes it:
    format, kind ("latest" | "best"), model_name, model_config (dict), model_config_hash,
    config_hash (whole job), seed, plugins, job (dict), seq_len, trained_horizon, best_score,
    early_stopping (dict), the TrainState (iteration, nan_skips, elapsed_seconds, step_seconds,
    peak_memory_mb, finished, stopped_early, log_window), train_stats (dict, as of this iteration),
    parameters {"total", "relation"}, model (state_dict);
    latest only: optimizer (state_dict), scheduler (state_dict),
    rng {"model": ByteTensor, "torch_cpu": ByteTensor, "cuda": [ByteTensor, ...]}
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from rsqair_bench.config import first_changed_setting, to_dict
from rsqair_bench.core.io import atomic_write, os_error_line, read_regular_file
from rsqair_bench.errors import CheckpointError, OutputError

FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- hashing
def config_hash(config: Any) -> str:
    """Short stable hash of a config dataclass (or plain dict): sha256 of its sorted JSON."""
    data = config if isinstance(config, dict) else to_dict(config)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- RNG states
def capture_global_rng() -> dict[str, Any]:
    """Global torch RNG states. We do not draw from them, but third-party layers might."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    state["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a checkpoint dict (see module docstring)."""
    state = dict(state)
    state.setdefault("format", FORMAT_VERSION)
    path = Path(path)
    existed = path.exists()
    try:
        atomic_write(path, lambda fh: torch.save(state, fh))
    except RuntimeError as err:  # torch's zip writer reports a failed write (e.g. a full disk) this way
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        kept = "the previous one is kept" if existed else "there was no previous one"
        raise OutputError(f"{path}: cannot write checkpoint ({_write_failure(path, state, first)}); {kept}") from None


def _write_failure(path: Path, state: dict[str, Any], torch_text: str) -> str:
    """Why torch's writer failed, in words: `disk full (N bytes free, about M needed)` when the disk
    cannot hold the checkpoint, else torch's own first line (e.g. `[enforce fail at ...]`), which says
    neither what failed nor why."""
    import shutil

    needed = sum(t.numel() * t.element_size() for t in _tensors(state))
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return torch_text[:160]
    if free < max(needed, 1) + 2**20:  # the zip container and its alignment padding need a little more
        return f"disk full ({free} bytes free in {path.parent}, about {needed} needed)"
    return torch_text[:160]


def _tensors(node: Any) -> list[torch.Tensor]:
    """Every tensor in a checkpoint dict (model, optimizer state, RNG states)."""
    if isinstance(node, torch.Tensor):
        return [node]
    if isinstance(node, dict):
        return [t for value in node.values() for t in _tensors(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in _tensors(value)]
    return []


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:120]}" if text else type(err).__name__


CHECKPOINT_LIMIT = 64 * 2**30  # bytes: a checkpoint is read whole (checked, then loaded from memory)
SUMS_FILE = "SHA256SUMS"  # `sha256sum` output beside shipped checkpoints (results/study/checkpoints/)
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def read_checked_bytes(path: Path) -> bytes:
    """The bytes of checkpoint `path`, once their integrity is checked: a regular file (a FIFO would block
    the reader), every zip member's CRC, and its line of a SHA256SUMS file beside it when there is one.

    Why: torch's reader checks neither, so a checkpoint with flipped bytes was evaluated (and resumed)
    silently, with wrong numbers. The checks and the load read the same bytes, so the file cannot change
    between them. A file that is not a zip (an old torch format, or truncated past its directory) is left
    to torch.load, which refuses what it cannot read."""
    try:
        raw = read_regular_file(path, CHECKPOINT_LIMIT)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise CheckpointError(f"{path}: no such checkpoint file") from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err}); expected a checkpoint file") from None
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                bad = archive.testzip()  # reads every member and compares its CRC-32
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
            raise CheckpointError(f"{path}: corrupt checkpoint (its zip container is damaged: {_first_line(err)})") from None
        if bad is not None:
            raise CheckpointError(f"{path}: corrupt checkpoint (zip member {bad!r} fails its CRC-32 check: the file "
                                  "changed after it was written); restore it from a copy or retrain")
    _check_listed_sum(path, raw)
    return raw


def _check_listed_sum(path: Path, raw: bytes) -> None:
    """Compare `raw` with its line of the SHA256SUMS file in `path`'s directory; nothing when there is no
    such file or it does not list `path`. A SHA256SUMS that cannot be read or parsed is refused: it is
    there to vouch for these files."""
    sums = path.parent / SUMS_FILE
    if not sums.exists():
        return
    try:
        text = read_regular_file(sums).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        cause = os_error_line(err, sums) if isinstance(err, OSError) else f"{sums}: not UTF-8 text"
        raise CheckpointError(f"cannot check {path} against its checksum list ({cause})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.match(line.rstrip("\r"))
        if match is None:
            raise CheckpointError(f"{sums}: line {number}: expected '<64 hex digits>  <file name>' "
                                  f"(the sha256sum format), found {line[:60]!r}")
        digest, name = match.groups()
        if (path.parent / name).resolve() != path.resolve():
            continue
        actual = hashlib.sha256(raw).hexdigest()
        if actual != digest.lower():
            raise CheckpointError(f"{path}: sha256 {actual[:16]}... differs from {sums} line {number} "
                                  f"({digest[:16].lower()}...): the file is not the one shipped; restore it")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True after the integrity checks of read_checked_bytes; truncated, corrupt or
    foreign files raise CheckpointError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (e.g. {path / 'best.pt'})")
    raw = read_checked_bytes(path)
    try:
        state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if match:  # readable, but it names code to run on load: we never do that
            raise CheckpointError(
                f"{path}: refused, the pickle names Python object {match.group(1)} that a weights-only load does "
                "not allow (unsafe or foreign file); expected an rsqair-bench checkpoint of tensors and plain values"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
        reason = f"UnpicklingError: {detail.group(1)[:120]}" if detail else _first_line(err)
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt file, {reason})") from None
    except Exception as err:  # zipfile, EOF and RuntimeError variants all mean "unreadable"
        first = _first_line(err)
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt file, {first})") from None
    if not isinstance(state, dict) or "format" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an rsqair-bench checkpoint (expected a dict with 'format' and 'model')")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r}, expected {FORMAT_VERSION}")
    return state


def same_model_config(state: dict[str, Any], model_config: Any) -> bool:
    """Whether a checkpoint's model_config is `model_config`, allowing for fields added since it was saved.

    Why: every new `ModelConfig` switch changes the hash of every config, so a run interrupted before
    an update could not resume after it although its model is the same. A field the checkpoint does
    not know counts as the same when the job leaves it at its default (the behaviour the checkpoint
    was trained with): `config.first_changed_setting`, the rule `run` applies to finished jobs."""
    if state.get("model_config_hash") == config_hash(model_config):
        return True
    saved = state.get("model_config")
    return isinstance(saved, dict) and first_changed_setting(saved, model_config) is None


def check_compatible(
    state: dict[str, Any], path: Path, model_name: str, model_config: Any, seed: int | None = None
) -> None:
    """Refuse a checkpoint of another model name, architecture config or seed (a different job)."""
    if state.get("model_name") != model_name:
        raise CheckpointError(
            f"{path}: checkpoint is of model {state.get('model_name')!r}, expected {model_name!r} "
            f"(use another --out directory or remove the checkpoint)"
        )
    if not same_model_config(state, model_config):
        model_config_hash = config_hash(model_config)
        raise CheckpointError(
            f"{path}: checkpoint model_config hash {state.get('model_config_hash')!r} differs from the job's "
            f"{model_config_hash!r} (model_config changed; use another --out directory)"
        )
    if seed is not None and state.get("seed") != seed:
        raise CheckpointError(f"{path}: checkpoint is of seed {state.get('seed')!r}, expected {seed!r}")
