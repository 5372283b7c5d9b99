"""Reading suite and job YAML files: a strict safe loader, and suites' `base:` chains.

Why a module of its own: what a file may contain (UTF-8, no duplicate keys, bounded size and depth)
and how a suite's `base:` files layer on each other are questions about files, apart from what the
settings mean (config.py, which parses the merged mapping into dataclasses and checks the values).
Every error is one line naming the file, the key and what was expected (errors.ConfigError).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import yaml

from rsqair_bench.errors import ConfigError, found


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key not in seen:
                    seen[key] = line
                    continue
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            first = seen[key]
            raise _DuplicateKey(f"duplicate key {key!r} on line {line} (first on line {first}); expected each key once")
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    """Raised inside the loader; load_yaml turns it into a ConfigError naming the file."""


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """PyYAML's problem with its line and column (1-based), e.g. `line 3, column 7: mapping values are not allowed here`."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


YAML_FILE_LIMIT = 2**20  # bytes: a suite or job file is a few kilobytes; a larger one is not one
MAX_YAML_DEPTH = 32  # nesting levels: a suite needs 5 (eval.splits.<key>.<field>); PyYAML recurses per level


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with a safe loader: UTF-8 only, no duplicate keys; errors name the file and line.

    The file must be a regular file (a FIFO would block, /dev/zero never end: `io.read_regular_file`)
    of at most YAML_FILE_LIMIT bytes, nested at most MAX_YAML_DEPTH levels (PyYAML recurses once per
    level and ended in a RecursionError traceback at about a thousand)."""
    from rsqair_bench.core.io import read_regular_file

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    try:
        raw = read_regular_file(path, YAML_FILE_LIMIT)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as err:
        if err.errno == errno.EFBIG:
            raise ConfigError(f"{path}: more than {YAML_FILE_LIMIT:,} bytes, expected a suite or job YAML file") from None
        if err.errno == errno.EINVAL:
            raise ConfigError(f"{path}: not a regular file (a FIFO, device or socket), expected a YAML file") from None
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); expected a UTF-8 YAML file"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_error_line(err)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply for a YAML reader; expected at most {MAX_YAML_DEPTH} levels") from None
    if _deeper_than(data, MAX_YAML_DEPTH):
        raise ConfigError(f"{path}: nested more than {MAX_YAML_DEPTH} levels deep; expected a suite or job file")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and mappings in `data` nest more than `limit` levels (iterative: no recursion limit)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 >= limit:
                    return True
                stack.append((child, depth + 1))
    return False



BASE_KEY = "base"  # a suite's `base: other.yaml`, a path relative to the working directory (as data paths are)
MAX_BASE_CHAIN = 32  # suites in one `base:` chain: the shipped chains have 2 or 3


def suite_layers(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, Any]]:
    """The suite files of `path`'s `base:` chain with their mappings (the `base` key removed), base first.

    Why: a suite that runs another's settings at a different budget or with more seeds (study.yaml on
    learn.yaml) shares them instead of copying them, so the two cannot drift apart. Paths are relative
    to `root` (default: the working directory), like every other path in a suite. Each file with a
    `base:` names itself (`name:`): a suite inheriting the base's name would write into, and evaluate
    again, the base's results directory without saying so. A loop, a missing base or a chain longer
    than MAX_BASE_CHAIN is one line naming the file and the key."""
    current, child, layers, chain = Path(path), None, [], []
    while True:
        data = load_yaml(current)
        if child is not None and not isinstance(data, dict):
            raise ConfigError(f"{child}: {BASE_KEY}: {current} is not a mapping of suite settings")
        chain.append(current.resolve())
        if not isinstance(data, dict) or BASE_KEY not in data:
            return [(current, data), *reversed(layers)]
        data = dict(data)
        base = data.pop(BASE_KEY)
        if "name" not in data:
            raise ConfigError(f"{current}: name: missing; a suite with {BASE_KEY}: names its own results directory "
                              f"(write the base's name to add jobs to its results, or a new name for a new experiment)")
        layers.append((current, data))
        if len(chain) >= MAX_BASE_CHAIN:
            raise ConfigError(f"{current}: {BASE_KEY}: a chain of more than {MAX_BASE_CHAIN} suites; expected at most "
                              f"{MAX_BASE_CHAIN}")
        child, current = current, _base_path(current, base, chain, Path(root) if root is not None else Path())


def _base_path(path: Path, base: Any, chain: list[Path], root: Path) -> Path:
    """The file `path`'s `base:` names, checked: a path string, not in `chain` (a loop), an existing file."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY}: expected the path of a suite YAML file, found {found(base)}")
    base_path = root / base
    if base_path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: {BASE_KEY}: suites name each other in a loop ({loop}); expected a chain that ends")
    if base_path.is_dir():
        raise ConfigError(f"{path}: {BASE_KEY}: {base} is a directory, expected a suite YAML file")
    if not base_path.exists():
        beside, hint = path.parent / base, ""
        if beside.is_file() and not Path(base).is_absolute():  # written relative to the suite's folder
            try:
                beside = beside.resolve().relative_to(root.resolve())
            except ValueError:
                pass
            hint = f"; {beside} exists: write {BASE_KEY}: {beside}"
        raise ConfigError(f"{path}: {BASE_KEY}: no such suite file {base} (paths in a suite are relative to the "
                          f"directory you run from, as data paths are{hint})")
    return base_path


def merge_layers(layers: list[tuple[Path, Any]]) -> tuple[Any, Any]:
    """The suite the layers make (each on top of the ones before), and where each value came from.

    Mappings merge key by key (recursively); any other value (a list, a scalar) replaces the base's
    value whole. So `seeds: [0, 1]` replaces the base's seeds, and `train: {max_iterations: 10}` changes
    one training key and keeps the others. A null (an empty section: `train:` with its only line
    commented out) over a base's mapping is refused: merged, it would have reset the whole section to
    the code's defaults, and there is no way to remove a base's split or data set.

    The origin mirrors the merged mapping: a layer's index where one layer gave the whole value, a
    mapping of origins where several did."""
    merged, origin = layers[0][1], 0
    for index, (_path, data) in enumerate(layers[1:], start=1):
        merged, origin = dict(merged), dict.fromkeys(merged, 0) if index == 1 else origin
        _merge_into(merged, origin, data, index, [p for p, _ in layers], ())
    return merged, origin


def _merge_into(merged: dict, origin: dict, data: dict, index: int, files: list[Path], where: tuple) -> None:
    for key, value in data.items():
        have = merged.get(key)
        here = ".".join(map(str, (*where, key)))
        if value is None and isinstance(have, dict):
            setter = files[_latest(origin[key])]
            if not where:
                raise ConfigError(f"{files[index]}: {here}: empty, but {setter} sets it; an empty section would reset "
                                  f"it to the code's defaults, so delete the line or list the keys to change")
            raise ConfigError(f"{files[index]}: {here}: null cannot remove what {setter} sets; a suite with "
                              f"{BASE_KEY}: adds or changes a base's entries but cannot remove them")
        if isinstance(value, dict) and isinstance(have, dict):
            merged[key] = dict(have)
            before = origin[key]
            origin[key] = dict.fromkeys(have, before) if isinstance(before, int) else dict(before)
            _merge_into(merged[key], origin[key], value, index, files, (*where, key))
        else:
            merged[key], origin[key] = value, index


def _latest(origin: Any) -> int:
    """The last layer that gave any part of a value (its origin)."""
    if isinstance(origin, int):
        return origin
    return max((_latest(o) for o in origin.values()), default=0)


def part_from(merged: Any, origin: Any, index: int) -> Any:
    """What of `merged` layer `index` gave (None when nothing): the part checked against that layer's file."""
    if isinstance(origin, int):
        return merged if origin == index else None
    part = {}
    for key, sub in origin.items():
        value = part_from(merged[key], sub, index)
        if value is not None or (sub == index):
            part[key] = value
    return part or None


def load_suite_mapping(path: str | Path, root: str | Path | None = None) -> Any:
    """A suite file's mapping with its `base:` chain resolved (base first, this file on top)."""
    return merge_layers(suite_layers(path, root))[0]
