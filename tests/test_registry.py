"""Registry: lookup errors, plugins by path, duplicate names, `list`, and every model trains a few steps."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from rsqair_bench import cli, registry
from rsqair_bench.config import ModelConfig
from rsqair_bench.errors import ConfigError, RegistryError

PAPER_MODELS = ["sqair", "sqair+in", "sqair+in_noatt", "sqair+rmc", "sqair+gru", "sqair+lstm", "sqair+transformer"]

PLUGIN = '''
import torch
from rsqair_bench.models.relation import Relation
from rsqair_bench.registry import register_relation


@register_relation("{name}", paper_name="R-SQAIR(Mean)")
class MeanOfOthers(Relation):
    def __init__(self, obj_dim: int, scale: float = 1.0) -> None:
        super().__init__(obj_dim)
        self.out_dim = 2 * obj_dim
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, z, present, state):
        m = present.unsqueeze(-1).to(z.dtype)
        mean = (z * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        return torch.cat([z, self.scale * mean.expand_as(z)], -1) * m, state
'''


@pytest.fixture(autouse=True)
def clean_registry():
    """Plugins registered by a test do not leak into the next one."""
    registry.discover()
    saved = dict(registry._RELATIONS)
    yield
    registry._RELATIONS.clear()
    registry._RELATIONS.update(saved)


def write_plugin(tmp_path: Path, name: str, body: str | None = None) -> Path:
    path = tmp_path / f"{name}_plugin.py"
    path.write_text(body if body is not None else PLUGIN.format(name=name))
    return path


def test_model_names_and_paper_names() -> None:
    names = registry.model_names()
    assert set(PAPER_MODELS) <= set(names)
    assert names[0] == "sqair" and "sqair+identity" not in names
    assert registry.paper_name("sqair") == "SQAIR"
    assert registry.paper_name("sqair+in") == "R-SQAIR(IN)"
    assert registry.paper_name("sqair+rmc") == "R-SQAIR(RMC)"
    assert registry.parse_model_name("sqair") == "identity"
    assert registry.parse_model_name("sqair+rmc") == "rmc"


def test_unknown_relation_lists_known_names() -> None:
    with pytest.raises(RegistryError) as err:
        registry.get_relation("nope")
    message = str(err.value)
    assert "'nope'" in message and "in, in_local, in_mean, in_noatt" in message and "rmc" in message and "\n" not in message
    with pytest.raises(RegistryError, match="'sqair\\+nope'|'nope'"):
        registry.build_model("sqair+nope", ModelConfig())
    with pytest.raises(RegistryError, match="expected 'sqair' or 'sqair\\+<relation>'"):
        registry.parse_model_name("air+in")


def test_unknown_relation_option_is_a_config_error() -> None:
    config = ModelConfig(relation_options={"embed_dimm": 5})
    with pytest.raises(ConfigError, match="'embed_dimm'.*'in'"):
        registry.build_relation("in", config)
    # per-relation form: options for other relations are ignored
    config = ModelConfig(relation_options={"in": {"embed_dim": 7}, "rmc": {"heads": 2}})
    assert registry.build_relation("in", config).out_dim == 10 + 7
    assert registry.build_relation("rmc", config).out_dim == 10 + 2 * 10  # [z; memory]
    assert registry.build_relation("identity", config).out_dim == 10


def test_plugin_file_is_found_registered_and_runs(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "mean_of_others")
    registry.load_plugins([str(path)])
    registry.load_plugins([str(path)])  # loading twice is harmless
    assert "sqair+mean_of_others" in registry.model_names()
    assert registry.paper_name("sqair+mean_of_others") == "R-SQAIR(Mean)"
    relation = registry.build_relation("mean_of_others", ModelConfig(relation_options={"scale": 2.0}))
    z = torch.randn(2, 3, 10)
    present = torch.tensor([[True, True, False], [True, False, False]])
    gamma, _ = relation(z, present, relation.initial_state(2, 3, z.device))
    assert gamma.shape == (2, 3, 20)
    torch.testing.assert_close(gamma[1, 0, 10:], 2.0 * z[1, 0])


def test_plugin_named_in_a_suite_is_validated(tmp_path: Path) -> None:
    import rsqair_bench.runner.suite as suite_mod
    from rsqair_bench.config import SuiteConfig, load_config

    path = write_plugin(tmp_path, "suite_plugin_rel")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent(f"""
        name: t
        models: [sqair, sqair+suite_plugin_rel]
        seeds: [0]
        data: {{balls4: {{path: {tmp_path / 'b.h5'}, splits: {{training: 4, validation: 2, test: 2}}}}}}
        train: {{batch_size: 4}}
        eval: {{splits: {{balls4/test: {{data: balls4}}}}}}
        plugins: [{path}]
    """))
    suite = load_config(SuiteConfig, suite_file)
    suite_mod.validate_suite(suite, suite_file)
    assert "sqair+suite_plugin_rel" in registry.model_names()


def test_missing_plugin_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.py"
    with pytest.raises(RegistryError, match="nowhere.py: no such file"):
        registry.load_plugins([str(missing)])


def test_plugin_raising_on_import_names_the_file(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "broken", "import torch\nraise ValueError('bad weights path\\nsecond line')\n")
    with pytest.raises(RegistryError) as err:
        registry.load_plugins([str(path)])
    message = str(err.value)
    assert "broken_plugin.py" in message and "ValueError: bad weights path" in message and "\n" not in message


def test_duplicate_registration_names_both(tmp_path: Path) -> None:
    body = PLUGIN.format(name="in").replace("MeanOfOthers", "ImpostorIN")
    path = write_plugin(tmp_path, "dup", body)
    with pytest.raises(RegistryError) as err:
        registry.load_plugins([str(path)])
    message = str(err.value)
    assert "'in' registered twice" in message
    assert "rsqair_bench.baselines.interaction.InteractionNetwork" in message
    assert "ImpostorIN" in message and "dup_plugin.py" in message
    assert registry.get_relation("in").__name__ == "InteractionNetwork"


def test_cli_list_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-v", "WARNING", "list", "--verbose"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for model in PAPER_MODELS:
        assert model in lines, out
    assert "R-SQAIR(RMC)" in lines["sqair+rmc"]
    rmc_relation = registry.count_parameters(registry.build_relation("rmc", ModelConfig()))
    assert f"{rmc_relation:,}" in lines["sqair+rmc"]


def test_cli_list_with_plugin_and_bad_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_plugin(tmp_path, "cli_plugin_rel")
    suite = tmp_path / "small.yaml"  # --suite: its model_config (small, fast) and plugins
    suite.write_text(f"name: s\nmodels: [sqair]\nseeds: [0]\ndata: {{}}\nmodel_config: {{n_hidden: 16}}\nplugins: [{path}]\n")
    assert cli.main(["list", "--suite", str(suite)]) == 0
    assert "sqair+cli_plugin_rel" in capsys.readouterr().out
    assert cli.main(["list", "--plugin", str(tmp_path / "missing.py")]) == 1
    err = capsys.readouterr().err
    assert "missing.py: no such file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model_name", registry.model_names())
def test_every_model_trains_a_few_iterations(model_name: str) -> None:
    """Every registered model: 2 optimiser steps on a tiny random batch, finite loss."""
    config = ModelConfig(n_hidden=16, glimpse_size=8, z_what=3, max_objects=2)
    with torch.random.fork_rng():  # parameter init without touching the global RNG
        torch.manual_seed(0)
        model = registry.build_model(model_name, config)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 1, 50, 50, generator=g)  # [B, T, 1, H, W]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        out = model(x, particles=2, generator=g)
        assert torch.isfinite(out.loss), model_name
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        assert all(p.grad is not None for p in model.relation.parameters()), "relation not in the graph"
    assert all(torch.isfinite(p).all() for p in model.parameters())
