"""Each CPU kernel family compiles into its own inductor cache (core/inductor_cache.py says why: a cache
shared across ATEN_CPU_CAPABILITY values crashed a compiled run with SIGBUS)."""

from __future__ import annotations

import os

import pytest
import torch

from rsqair_bench.core.inductor_cache import CACHE_VAR, family_cache_dir, isolate_inductor_cache
from rsqair_bench.models.sqair import maybe_compile
from rsqair_bench.training.optim import optimizer_update


def test_each_family_gets_its_own_folder():
    native, avx2, avx512 = (family_cache_dir(env) for env in ({}, {"ATEN_CPU_CAPABILITY": "avx2"},
                                                            {"ATEN_CPU_CAPABILITY": " AVX512 "}))
    assert len({native, avx2, avx512}) == 3
    assert native.endswith("-native") and avx2.endswith("-avx2") and avx512.endswith("-avx512")
    assert os.path.dirname(native) == os.path.dirname(avx2)


def test_the_callers_folder_wins_and_the_choice_is_idempotent():
    env = {"ATEN_CPU_CAPABILITY": "avx2"}
    first = isolate_inductor_cache(env)
    assert env[CACHE_VAR] == first == family_cache_dir({"ATEN_CPU_CAPABILITY": "avx2"})
    env["ATEN_CPU_CAPABILITY"] = "avx512"  # a later change does not move a process's cache
    assert isolate_inductor_cache(env) == first
    chosen = {"TORCHINDUCTOR_CACHE_DIR": "/somewhere/mine", "ATEN_CPU_CAPABILITY": "avx2"}
    assert isolate_inductor_cache(chosen) == "/somewhere/mine"


@pytest.mark.parametrize("site", ["frame", "optimizer"])
def test_both_compile_sites_pick_the_family_folder_before_compiling(monkeypatch, site):
    """torch.compile is lazy: wrapping compiles nothing, so this checks the environment inductor will read."""
    monkeypatch.delenv(CACHE_VAR, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    if site == "frame":
        maybe_compile(lambda x: x + 1, enabled=True)
    else:
        optimizer_update(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), compiled=True)
    assert os.environ[CACHE_VAR] == family_cache_dir({"ATEN_CPU_CAPABILITY": "avx2"})


def test_eager_sites_leave_the_environment_alone(monkeypatch):
    monkeypatch.delenv(CACHE_VAR, raising=False)
    maybe_compile(lambda x: x, enabled=False)
    optimizer_update(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), compiled=False)
    assert CACHE_VAR not in os.environ
