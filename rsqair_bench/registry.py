"""Relation registry: names -> relational modules Gamma, model names -> SQAIR models.

A baseline is one file that subclasses `Relation` and decorates it with
`@register_relation("name", paper_name="R-SQAIR(...)")`. Three places are searched, so adding a
baseline never needs an edit elsewhere:

- every module of the `rsqair_bench.baselines` package (the repository's `baselines/` folder),
- Python files named under `plugins:` in a suite (`load_plugins`),
- the entry-point group `rsqair_bench.relations` of installed packages.

A model name is `sqair` (the identity relation: plain SQAIR) or `sqair+<relation>`.
`python -m rsqair_bench list` prints every model with its parameter counts.

Importing this module does not import torch (the relation files do, when `discover` imports them):
`validate` and `run --dry-run` check the usual suite by reading `baselines/` as text
(`statically_valid`), so they answer before torch would have loaded.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rsqair_bench.config import ModelConfig, SuiteConfig, load_config
from rsqair_bench.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from torch import nn

    from rsqair_bench.models.relation import Relation

ENTRY_POINT_GROUP = "rsqair_bench.relations"
BASE_MODEL = "sqair"
IDENTITY = "identity"
# The one rule for model names (and so for relation names): `sqair` or `sqair+<relation>`, where
# <relation> is letters, digits and _ . - (a model name is also a results directory).
_MODEL_NAME = re.compile(r"^sqair(\+[A-Za-z0-9_.-]+)?$")

R = TypeVar("R", bound=type)
ModelFactory = Callable[[str, ModelConfig], "nn.Module"]  # (model name, config) -> model; tests inject fakes


@dataclass(frozen=True)
class RelationEntry:
    name: str
    cls: type  # a Relation subclass
    paper_name: str

    @property
    def origin(self) -> str:
        """`module.Class (file)`: enough to find the culprit of a clash."""
        module = sys.modules.get(self.cls.__module__)
        file = getattr(module, "__file__", None)
        where = f" ({file})" if file else ""
        return f"{self.cls.__module__}.{self.cls.__qualname__}{where}"


_RELATIONS: dict[str, RelationEntry] = {}
_discovered = False


# ----------------------------------------------------------------------------- registration
def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def register_relation(name: str, paper_name: str | None = None) -> Callable[[R], R]:
    """Class decorator registering a `Relation` subclass under `name` (used as `sqair+<name>`)."""
    if not is_model_name(f"{BASE_MODEL}+{name}"):
        raise RegistryError(f"relation name {name!r}: expected letters, digits, _ . - only (it names a results directory)")

    def decorate(cls: R) -> R:
        from rsqair_bench.models.relation import Relation  # lazy: torch (the decorated file imported it already)

        if not (isinstance(cls, type) and issubclass(cls, Relation)):
            raise RegistryError(f"relation {name!r}: {cls!r} is not a subclass of rsqair_bench.models.relation.Relation")
        entry = RelationEntry(name, cls, paper_name or f"R-SQAIR({name})")
        old = _RELATIONS.get(name)
        # the same class (same module and qualname) re-executed, e.g. a plugin file loaded twice, replaces itself
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RegistryError(f"relation {name!r} registered twice: by {old.origin} and by {entry.origin}")
        _RELATIONS[name] = entry
        return cls

    return decorate


# ----------------------------------------------------------------------------- discovery
def discover() -> None:
    """Import the `baselines` package's modules and the entry points of group `rsqair_bench.relations` (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # set first: a failing import below must not be retried into a duplicate error
    from rsqair_bench import baselines
    from rsqair_bench.models.relation import Relation  # lazy: imports torch

    for info in sorted(pkgutil.iter_modules(baselines.__path__), key=lambda m: m.name):
        module_name = f"{baselines.__name__}.{info.name}"
        try:
            importlib.import_module(module_name)
        except RegistryError:
            raise
        except Exception as err:  # noqa: BLE001 - report which baseline is broken, in one line
            raise RegistryError(f"baseline module {module_name}: import failed ({_first_line(err)})") from err
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:  # noqa: BLE001
            raise RegistryError(
                f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}: import failed ({_first_line(err)})"
            ) from err
        # an entry point naming an undecorated Relation class registers it under the entry point's name
        if isinstance(loaded, type) and issubclass(loaded, Relation):
            if not any(e.cls is loaded for e in _RELATIONS.values()):
                register_relation(ep.name)(loaded)


def _plugin_module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"rsqair_bench_plugin_{stem}_{digest}"


def load_plugins(paths: list[str]) -> None:
    """Import Python files by path (the suite's `plugins:`), relative to the working directory.

    Also runs `discover()`, so afterwards the registry holds every relation a suite can name.
    A file already loaded is not executed again.
    """
    discover()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            raise RegistryError(f"plugin {raw}: is a directory, expected a Python file (.py) of relations")
        if not path.is_file():
            raise RegistryError(f"plugin {raw}: no such file (resolved to {path.resolve()})")
        path = path.resolve()
        module_name = _plugin_module_name(path)
        if module_name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise RegistryError(f"plugin {raw}: cannot be imported as a Python module (expected a .py file)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except RegistryError:
            del sys.modules[module_name]
            raise
        except BaseException as err:  # noqa: BLE001 - SystemExit in a plugin is still the plugin's fault
            del sys.modules[module_name]
            if isinstance(err, KeyboardInterrupt):
                raise
            raise RegistryError(f"plugin {raw}: import failed ({_first_line(err)})") from err


# ----------------------------------------------------------------------------- lookup
def relation_names() -> list[str]:
    discover()
    return sorted(_RELATIONS)


def get_relation(name: str) -> type:
    """The registered class for `name`; RegistryError listing the known names otherwise."""
    discover()
    try:
        return _RELATIONS[name].cls
    except KeyError:
        raise RegistryError(
            f"unknown relation {name!r} (known: {', '.join(sorted(_RELATIONS))}; "
            f"add one in baselines/, a suite's plugins:, or entry point group {ENTRY_POINT_GROUP})"
        ) from None


def is_model_name(model_name: str) -> bool:
    """Whether `model_name` has the form `sqair` or `sqair+<relation>` (registered or not)."""
    return bool(_MODEL_NAME.match(model_name))


def parse_model_name(model_name: str) -> str:
    """`sqair` -> `identity`, `sqair+<relation>` -> `<relation>` (which must be registered)."""
    if not is_model_name(model_name):
        raise RegistryError(
            f"model {model_name!r}: expected 'sqair' or 'sqair+<relation>' (known: {', '.join(model_names())})"
        )
    relation = IDENTITY if model_name == BASE_MODEL else model_name[len(BASE_MODEL) + 1 :]
    get_relation(relation)  # raises with the known names
    return relation


def paper_name(model_name: str) -> str:
    """Name used in tables: `SQAIR`, `R-SQAIR(IN)`, `R-SQAIR(RMC)`, ..."""
    return _RELATIONS[parse_model_name(model_name)].paper_name


def model_names() -> list[str]:
    """Every model a suite can name: `sqair` first, then `sqair+<relation>` sorted."""
    discover()
    return [BASE_MODEL] + [f"{BASE_MODEL}+{n}" for n in sorted(_RELATIONS) if n != IDENTITY]


# ----------------------------------------------------------------------------- construction
def _constructor_options(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p.name for p in params.values() if p.name not in ("self", "obj_dim") and p.kind is not p.VAR_KEYWORD]


def relation_options(relation: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options for `relation` from ModelConfig.relation_options.

    Two forms: flat `{embed_dim: 5}` applies to the model's relation; a key equal to a registered
    relation name with a mapping value, `{in: {embed_dim: 5}, rmc: {heads: 2}}`, applies to that
    relation only (what a suite with several models needs). Unknown options are ConfigErrors.
    """
    cls = get_relation(relation)
    known = _constructor_options(cls)
    chosen = _options_for(relation, options, set(_RELATIONS))
    for key in chosen:
        if key not in known:
            where = f"model_config.relation_options.{relation}" if relation in options else "model_config.relation_options"
            raise ConfigError(
                f"{where}: unknown option {key!r} for relation {relation!r} "
                f"(accepted: {', '.join(known) or 'none'}; set options per relation with {{<relation>: {{...}}}})"
            )
    return chosen


def _options_for(relation: str, options: dict[str, Any], relations: set[str]) -> dict[str, Any]:
    """The part of `options` that `relation` receives (the two forms of `relation_options` above),
    given the registered relation names `relations`."""
    chosen: dict[str, Any] = {}
    for key, value in options.items():
        if key in relations and isinstance(value, dict):
            if key == relation:
                chosen.update(value)
            continue
        chosen[key] = value
    return chosen


def build_relation(relation: str, config: ModelConfig) -> Relation:
    from rsqair_bench.models.sqair import object_latent_dim

    cls = get_relation(relation)
    return cls(obj_dim=object_latent_dim(config), **relation_options(relation, dict(config.relation_options)))


def build_model(model_name: str, config: ModelConfig) -> nn.Module:
    """SQAIR(config, relation) for `sqair` or `sqair+<relation>`."""
    from rsqair_bench.models.sqair import SQAIR

    relation = build_relation(parse_model_name(model_name), config)
    return SQAIR(config, relation)


def build_state_model(model_name: str, config: ModelConfig) -> nn.Module:
    """The state-space track's model for `sqair` or `sqair+<relation>`: the same relation as `build_model`
    builds, driving SQAIR's propagation prior on ball states (models/state_tracker.py)."""
    from rsqair_bench.models.state_tracker import StateTracker

    return StateTracker(config, build_relation(parse_model_name(model_name), config))


def default_model_factory(plugins: list[str]) -> ModelFactory:
    """`build_model` after loading the plugin files `plugins`: what `train` and `eval` use unless injected."""
    if plugins:
        load_plugins(plugins)
    return build_model


def check_relation_options(model: str, cfg: ModelConfig, plugins: list[str], where: str = "") -> None:
    """Unknown `relation_options` for `model`'s relation are errors at validate time, not at train time."""
    load_plugins(list(plugins))
    try:
        relation_options(parse_model_name(model), dict(cfg.relation_options))
    except ConfigError as err:
        prefix = f"{where} " if where else ""
        raise ConfigError(f"{prefix}{err}") from None


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in the module's (unique) parameters."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- checks without importing
def statically_valid(models: list[str], relation_options: dict[str, Any], plugins: list[str]) -> bool:
    """True when the source of `baselines/`, read as text, shows every model registered and every
    relation option accepted; then `validate` needs no import of the relations (and of torch).

    False only means "import and check": with plugins, with installed entry points, once the
    relations are imported anyway, or when a file does something this reader does not follow, the
    importing checks run, and they alone report errors, so this shortcut can never invent one."""
    if plugins or _discovered or importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        return False
    table = _static_baselines()
    if table is None:
        return False
    for model in models:
        relation = IDENTITY if model == BASE_MODEL else model[len(BASE_MODEL) + 1 :]
        if not is_model_name(model) or relation not in table:
            return False
        if any(key not in table[relation] for key in _options_for(relation, relation_options, set(table))):
            return False
    return True


def _static_baselines() -> dict[str, list[str]] | None:
    """Relation name -> constructor options for every `@register_relation` class in `baselines/`,
    read with `ast` (nothing is executed); None when any file is beyond this reader."""
    # finds the package (the repository's baselines/ folder) without running its __init__
    spec = importlib.util.find_spec("rsqair_bench.baselines")
    if spec is None or not spec.submodule_search_locations:
        return None
    table: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(list(spec.submodule_search_locations)):
        path = Path(spec.submodule_search_locations[0]) / f"{info.name}.py"
        try:
            found = _static_relations(ast.parse(path.read_text(), str(path)))
        except (OSError, SyntaxError, ValueError):
            return None
        if found is None or set(found) & set(table):  # a name twice: the import reports the clash
            return None
        table.update(found)
    return table


def _static_relations(tree: ast.Module) -> dict[str, list[str]] | None:
    """The relations one module registers with a top-level decorated class; None when unsure."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found: dict[str, list[str]] = {}
    for node in classes.values():
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) and deco.func.id == "register_relation"):
                continue
            name = deco.args[0] if deco.args else None
            options = _static_init_options(node, classes)
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)) or options is None or name.value in found:
                return None
            found[name.value] = options
    return found


def _static_init_options(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> list[str] | None:
    """What `_constructor_options` would list for this class: its own `__init__`, else its one base's
    (`Relation`: none; a class of the same file: followed); None for anything else."""
    init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    if init is not None:
        a = init.args
        names = [x.arg for x in [*a.posonlyargs, *a.args]] + ([a.vararg.arg] if a.vararg else [])
        return [n for n in names + [x.arg for x in a.kwonlyargs] if n not in ("self", "obj_dim")]
    if len(node.bases) != 1 or node.keywords or not isinstance(node.bases[0], ast.Name):
        return None
    base = node.bases[0].id
    if base == "Relation":
        return []
    return _static_init_options(classes[base], classes) if base in classes and base != node.name else None


# ----------------------------------------------------------------------------- CLI: list
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE", help="relation file to load (repeatable)")
    parser.add_argument("--suite", metavar="YAML", help="use this suite's model_config and plugins")
    parser.add_argument("--verbose", action="store_true", help="also show per-sub-module parameter counts")


def list_rows(config: ModelConfig, verbose: bool = False) -> list[dict[str, Any]]:
    """One dict per model: name, paper name, total, relation's own, added over plain SQAIR, children."""
    from torch import nn  # lazy: see the module docstring

    rows = []
    base_total: int | None = None
    for name in model_names():
        model = build_model(name, config)
        relation = getattr(model, "relation", None)
        total = count_parameters(model)
        if name == BASE_MODEL:
            base_total = total
        row: dict[str, Any] = {
            "model": name,
            "paper_name": paper_name(name),
            "total": total,
            "relation": count_parameters(relation) if isinstance(relation, nn.Module) else 0,
            "added": total - base_total if base_total is not None else None,
        }
        if verbose:
            row["children"] = {child: count_parameters(mod) for child, mod in model.named_children()}
        rows.append(row)
    return rows


def command(args: argparse.Namespace) -> int:
    config = ModelConfig()
    plugins = list(args.plugin)
    if args.suite:
        suite = load_config(SuiteConfig, args.suite)
        config = suite.model_config
        plugins = list(suite.plugins) + plugins
    load_plugins(plugins)
    rows = list_rows(config, verbose=args.verbose)
    header = f"{'model':<24} {'paper name':<26} {'total':>12} {'relation':>10} {'added':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        added = "" if row["added"] is None else f"{row['added']:,}"
        print(f"{row['model']:<24} {row['paper_name']:<26} {row['total']:>12,} {row['relation']:>10,} {added:>10}")
        for child, count in row.get("children", {}).items():
            print(f"  {child:<48} {count:>12,}")
    print("relation: parameters of the relational module itself; added: total minus plain SQAIR's total "
          "(includes wider prior/posterior inputs for a larger gamma)")
    return 0
