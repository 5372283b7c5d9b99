"""The pretrained checkpoints committed under results/study/checkpoints/: intact, and loadable only
through the safe path (weights-only load, registry-built model) that every checkpoint takes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from rsqair_bench.evaluation.evaluate import load_model

DIRECTORY = Path(__file__).resolve().parents[1] / "results" / "study" / "checkpoints"


def _listed() -> dict[str, str]:
    """SHA256SUMS: '<hex>  <file>' per line (the `sha256sum` format)."""
    lines = (DIRECTORY / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def test_every_committed_checkpoint_is_listed_with_its_sha256() -> None:
    listed = _listed()
    assert sorted(listed) == sorted(p.name for p in DIRECTORY.glob("*.pt")) and listed
    for name, digest in listed.items():
        assert hashlib.sha256((DIRECTORY / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", sorted(p.name for p in DIRECTORY.glob("*.pt")))
def test_committed_checkpoint_loads_through_the_safe_path(name: str) -> None:
    model, state = load_model(DIRECTORY / name, torch.device("cpu"))
    assert name.startswith(state["model_name"] + "-seed") and state["kind"] == "best"
    assert sum(p.numel() for p in model.parameters()) == state["parameters"]["total"]
