"""The run seed reaches every random choice of the initialisation: Random-r's triplets, the
randomized SVD's probes (through the method's `seed` option) and LoRA's A0 (torch's
generator), unless method.options.seed is set; a seed that is not an integer stops the run
before anything is written.

    .venv/bin/python -m pytest -q -p no:xdist tests/test_seeds.py
"""
from __future__ import annotations


import pytest
import torch

from geora.surgery import get_state
from geora.training import pipeline
from geora.training.settings import RunSettings
from tests.conftest import build_tiny_qwen3, compose_run as make


pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def prepared(method: str, seed: int, *extra: str):
    """The tiny model prepared as pipeline.prepare does it for `seed` (same weights W)."""
    cfg = make(f"method={method}", f"seed={seed}", "method.rank=4", *extra)
    run = pipeline.Run(RunSettings.from_config(cfg), folder=None, model=build_tiny_qwen3(seed=0))
    pipeline.prepare(run)
    return run.model


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    """Every lora_A / lora_B tensor and every base weight (W_res for residual methods)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if "lora_" in n or n.endswith("base_layer.weight")}


def a0(model) -> dict[str, torch.Tensor]:
    return {n: t for n, t in adapter_tensors(model).items() if "lora_A" in n}


@pytest.mark.parametrize("method", ["geora_random_r", "lora"])
def test_seeds_0_and_1_draw_different_initialisations(method):
    one, other = a0(prepared(method, 0)), a0(prepared(method, 1))
    assert one.keys() == other.keys() and one
    differ = [n for n in one if not torch.equal(one[n], other[n])]
    assert len(differ) == len(one), f"{method}: seeds 0 and 1 gave the same A0 for {set(one) - set(differ)}"


@pytest.mark.parametrize("method", ["geora_random_r", "lora", "geora"])
def test_the_same_seed_gives_the_same_adapter_bitwise(method):
    first, again = adapter_tensors(prepared(method, 3)), adapter_tensors(prepared(method, 3))
    assert first.keys() == again.keys() and first
    for name, tensor in first.items():
        assert torch.equal(tensor, again[name]), name


def test_the_run_seed_is_the_methods_seed_unless_set():
    assert get_state(prepared("geora", 7)).options["seed"] == 7
    assert get_state(prepared("geora", 7, "+method.options.seed=2")).options["seed"] == 2
    # an explicit method seed fixes the draw across run seeds
    fixed = [a0(prepared("geora_random_r", s, "+method.options.seed=2")) for s in (0, 1)]
    assert all(torch.equal(fixed[0][n], fixed[1][n]) for n in fixed[0])
    # a method without the option gets none (MiLoRA refuses `seed`)
    assert "seed" not in pipeline.method_kwargs(make("method=milora").method, 5)


def test_random_r_triplets_follow_the_seed_directly():
    """The same at the level of geora_init: seed 0 and 1 pick different triplets of W_geo."""
    from geora.init import geora_init

    w = torch.randn(24, 32, generator=torch.Generator().manual_seed(0))
    picks = [geora_init(w, rank=4, factors="random", svd="exact", seed=s) for s in (0, 1, 0)]
    assert not torch.equal(picks[0].A, picks[1].A)
    assert torch.equal(picks[0].A, picks[2].A) and torch.equal(picks[0].B, picks[2].B)
