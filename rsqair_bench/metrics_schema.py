"""Reading one metrics.json: its bytes, its JSON and its schema, each refused with one line.

Why a checked reader: the report, `report --compare`, the significance tests and the GIFs index into
these files directly. A file that is not UTF-8, a `splits` that is a list, a `seed` that is a string
or a per-sample score of `"abc"` used to end the report in a traceback, and a FIFO named
`metrics.json` hung it. Every value the readers use is checked here for its type (unknown keys are
left alone: newer code may add fields), so a bad file is one `DataError` naming the file, the key,
what was found and what was expected.

`schema_version`: the layout version the writer records (`metrics.write_metrics`). A file without
one was written before the field existed and reads as version 1, which is the current layout.

No torch here: `report` imports this module and stays light.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rsqair_bench.core.io import os_error_line, read_regular_file
from rsqair_bench.errors import DataError

SCHEMA_VERSION = 1  # metrics.json layout; a file without `schema_version` predates the field and is version 1
SEED_LIMIT = 2**63  # seeds are in [0, 2**63) (seeding.check_seed)

_JOB_TEXT = ("suite", "config_hash", "device", "torch_version", "track")
_SPLIT_INTS = ("frames", "samples", "sequences", "max_objects", "sequences_with_collision", "checkpoint_iteration",
               "particles")
_SPLIT_NUMBERS = ("count_accuracy", "eval_sequences_per_s", "peak_memory_mb", "empty_frame_data_ll")
_SCORES = ("data_ll", "relational_ll")
_SCORE_BLOCKS = ("references", "matching", "prior_decomposition", "one_step",  # every leaf a number or null
                 "prior_decomposition_drawn", "one_step_drawn",
                 "states")  # the state-space track's block, docs/states.md


class _Checker:
    """Type checks that raise one DataError: `PATH: KEY: expected WHAT, found VALUE`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, expected: str, value: Any) -> None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise DataError(f"{self.path}: {key}: expected {expected}, found {type(value).__name__} {shown}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, "a mapping", value)
        return value

    def text(self, value: Any, key: str, optional: bool = True) -> None:
        if not (isinstance(value, str) or (optional and value is None)):
            self.fail(key, "a string" + (" or null" if optional else ""), value)

    def integer(self, value: Any, key: str, low: int = -(2**63), high: int = 2**63, optional: bool = True) -> None:
        if optional and value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
            self.fail(key, f"an integer in [{low}, {high})" + (" or null" if optional else ""), value)

    def number(self, value: Any, key: str) -> None:
        """A finite number or null (the writer stores NaN/inf as null; JSON has no literal for them)."""
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "a finite number or null", value)
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(key, "a finite number or null (NaN/inf are written as null)", value)
        if isinstance(value, int) and abs(value) >= 2**1023:  # would not fit a float: overflows every mean
            self.fail(key, "a finite number or null", value)


def parse_metrics(raw: bytes, path: Path) -> dict[str, Any]:
    """The checked content of one metrics.json file's bytes; DataError naming `path` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                        "expected a metrics.json written by rsqair-bench") from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a readable metrics.json ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: not a readable metrics.json (nested too deeply)") from None
    check_metrics(metrics, path)
    return metrics


def read_metrics(path: Path) -> dict[str, Any]:
    """Read and check `path` (a regular file only: a FIFO would block the reader forever)."""
    try:
        raw = read_regular_file(path)
    except OSError as err:
        raise DataError(f"not a readable metrics.json ({os_error_line(err, path)})") from None
    return parse_metrics(raw, path)


def check_metrics(metrics: Any, path: Path) -> None:
    """Raise DataError at the first value of the metrics.json schema with a wrong type (docs/metrics.md)."""
    c = _Checker(path)
    if not isinstance(metrics, dict):
        c.fail("(top level)", "a mapping of the metrics.json fields", metrics)
    version = metrics.get("schema_version", 1)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise DataError(f"{path}: schema_version {version!r} unknown, expected {SCHEMA_VERSION} "
                        "(written by another rsqair-bench version? read it with that version)")
    for key in ("model", "seed", "splits"):
        if key not in metrics:
            raise DataError(f"{path}: missing key {key!r} (expected the metrics.json schema)")
    if not isinstance(metrics["model"], str) or not metrics["model"]:
        c.fail("model", "a non-empty string", metrics["model"])
    c.integer(metrics["seed"], "seed", 0, SEED_LIMIT, optional=False)
    c.text(metrics.get("paper_name"), "paper_name")
    for key in _JOB_TEXT:
        c.text(metrics.get(key), key)
    c.integer(metrics.get("checkpoint_iteration"), "checkpoint_iteration", 0)
    for block in ("parameters", "train"):
        if metrics.get(block) is not None:
            for key, value in c.mapping(metrics[block], block).items():
                if (block, key) == ("train", "compiled"):  # TrainStats: the one flag of the block
                    if value is not None and not isinstance(value, bool):
                        c.fail(f"{block}.{key}", "true, false or null", value)
                elif block == "train" and key in ("compile_fallback", "precision"):  # TrainStats: its texts
                    c.text(value, f"{block}.{key}")
                else:
                    c.number(value, f"{block}.{key}")
    splits = metrics["splits"]
    if not isinstance(splits, dict):
        c.fail("splits", "a mapping of split name (e.g. balls4/test) to its metrics", splits)
    for name, entry in splits.items():
        _check_split(c, c.mapping(entry, f"splits.{name}"), f"splits.{name}")


def _check_split(c: _Checker, entry: dict[str, Any], where: str) -> None:
    c.text(entry.get("data"), f"{where}.data")
    c.text(entry.get("split"), f"{where}.split")
    for key in _SPLIT_INTS:
        c.integer(entry.get(key), f"{where}.{key}", 0)
    for key in _SPLIT_NUMBERS:
        c.number(entry.get(key), f"{where}.{key}")
    _check_scores(c, entry, where)
    for block in _SCORE_BLOCKS:
        if entry.get(block) is not None:
            _check_finite(c, c.mapping(entry[block], f"{where}.{block}"), f"{where}.{block}", every_leaf=True)
    for block in ("knockout", "relation_output"):  # other leaves are left alone: the report skips them
        _check_finite(c, entry.get(block), f"{where}.{block}")
    for block, shape in _SHAPES.items():
        _check_shape(c, entry.get(block), shape, f"{where}.{block}")
    tracked = ((entry.get("matching") or {}).get("sampled") or {}).get("tracked") or {}  # mappings by now
    if tracked.get(_TRACKED_TOGETHER[0]) is not None:
        for key in _TRACKED_TOGETHER[1:]:
            if tracked.get(key) is None:
                c.fail(f"{where}.matching.sampled.tracked.{key}", f"a number (given with {_TRACKED_TOGETHER[0]})",
                       tracked.get(key))
    if entry.get("settings") is not None:
        _check_settings(c, c.mapping(entry["settings"], f"{where}.settings"), f"{where}.settings")


def _check_scores(c: _Checker, entry: dict[str, Any], where: str) -> None:
    """data_ll, relational_ll (pooled by the tables: finite numbers, never null) and iwae_bound."""
    for metric in (*_SCORES, "iwae_bound"):
        if entry.get(metric) is None:
            continue
        score = c.mapping(entry[metric], f"{where}.{metric}")
        for key in ("mean", "std"):
            c.number(score.get(key), f"{where}.{metric}.{key}")
        if metric in _SCORES and score.get("mean") is None:  # the tables pool it; null is a NaN the writer hid
            c.fail(f"{where}.{metric}.mean", "a finite number (the score the tables pool)", score.get("mean"))
        if metric == "iwae_bound" or score.get("per_sample") is None:
            continue
        per = score["per_sample"]
        if not isinstance(per, list):
            c.fail(f"{where}.{metric}.per_sample", "a list of numbers (one per sampled frame)", per)
        for i, value in enumerate(per):
            c.number(value, f"{where}.{metric}.per_sample[{i}]")
            if value is None:
                c.fail(f"{where}.{metric}.per_sample[{i}]", "a finite number (the values the tables pool)", value)
        if isinstance(entry.get("samples"), int) and len(per) != entry["samples"]:
            c.fail(f"{where}.{metric}.per_sample", f"{entry['samples']} values (samples)", per)


# The shape of the blocks the report indexes into (report/dynamics.py, report/relations.py): a dict is a
# mapping (null allowed, except as a list item), whose named keys are checked when present ("!name": a
# key that must be there); "*" checks every key, "#" every key, which must then be a count (digits);
# [x] is a list of x; None is anything; NUMBER is a finite number or null (not a list or a mapping);
# SCORE_LIKE is a number, null, or a mapping whose `per_sample` is a list of numbers. Keys not named
# here are free: newer code may add fields.
NUMBER = "number"
SCORE_LIKE = "score-like"
_SCORE: dict[str, Any] = {"per_sample": [NUMBER]}
_REFERENCE = dict.fromkeys(("data_ll", "relational_ll", "centre_error_px", "centre_error_px_colliding",
                            "centre_error_px_free"), NUMBER)
_TRACKED_TOGETHER = ("prior_error_px", "copy_last_error_px", "tracked_fraction")  # read as one (report/dynamics.py)
_SHAPES: dict[str, Any] = {
    "matching": {"inferred": {"by_frame": [{"!coverage": NUMBER}]},
                 "sampled": {"centre_error_px": _SCORE, "centre_error_px_colliding": _SCORE,
                             "centre_error_px_free": _SCORE, "tracked": dict.fromkeys(_TRACKED_TOGETHER, NUMBER)}},
    "references": {"*": _REFERENCE},
    "knockout": dict.fromkeys(("data_ll", "relational_ll", "centre_error_px", "centre_error_px_colliding"), SCORE_LIKE),
    "relation_output": {"by_neighbours": {"#": {"mean_norm": NUMBER}}},
}


def _check_shape(c: _Checker, value: Any, shape: Any, where: str, item: bool = False) -> None:
    """Raise DataError where `value` is not of `shape` (see _SHAPES); `item`: a list's item (never null
    where a mapping is expected)."""
    if shape is None or (value is None and not (item and isinstance(shape, dict))):
        return
    if shape == NUMBER:
        c.number(value, where)
        return
    if shape == SCORE_LIKE:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        shape = _SCORE
    if isinstance(shape, list):
        if not isinstance(value, list):
            c.fail(where, "a list", value)
        for i, element in enumerate(value):
            _check_shape(c, element, shape[0], f"{where}[{i}]", item=True)
        return
    mapping = c.mapping(value, where)
    for name in shape:
        if name.startswith("!") and name[1:] not in mapping:
            raise DataError(f"{c.path}: {where}: missing key {name[1:]!r} (the report reads it)")
    for key, item in mapping.items():
        if "#" in shape and not (isinstance(key, str) and key.isdigit() and key.isascii()):
            c.fail(f"{where}.{key}", "a key that counts (0, 1, 2, ...)", key)
        sub = shape.get(key, shape.get("!" + key, shape.get("*", shape.get("#"))))
        _check_shape(c, item, sub, f"{where}.{key}")


def _check_finite(c: _Checker, node: Any, where: str, every_leaf: bool = False) -> None:
    """No NaN or infinity anywhere in a block (JSON's `NaN`/`Infinity`, which Python's reader accepts).
    With `every_leaf` (blocks of scores: `references`, `matching`) every leaf must be a finite number or
    null; otherwise other leaves are not checked."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(c, value, f"{where}.{key}", every_leaf)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(c, value, f"{where}[{i}]", every_leaf)
    elif every_leaf or (isinstance(node, (int, float)) and not isinstance(node, bool)):
        c.number(node, where)


def _check_settings(c: _Checker, settings: dict[str, Any], where: str) -> None:
    """`settings` (metrics.evaluation_settings): the values the report compares between seeds must be of
    their type, so that two seeds evaluated alike compare equal and others differ."""
    split = settings.get("split")
    if split is not None:
        c.mapping(split, f"{where}.split")
        c.text(split.get("data"), f"{where}.split.data")
        c.text(split.get("split"), f"{where}.split.split")
        for key in ("frames", "sequences", "max_objects"):
            c.integer(split.get(key), f"{where}.split.{key}", 0)
    for key in ("samples", "particles", "batch_size", "version"):
        c.integer(settings.get(key), f"{where}.{key}", 0)
    c.text(settings.get("data_checksum"), f"{where}.data_checksum")
