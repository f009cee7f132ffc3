"""The loop references of dyntok, framefusion and visionzip make the same decisions as the reducers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from vtc.reducers.dyntok import DynTok
from vtc.reducers.framefusion import FrameFusion
from vtc.reducers.visionzip import VisionZip


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).parents[1] / "benchmarks" / "reference" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dyntok_loop = _load("dyntok_loop")
framefusion_loop = _load("framefusion_loop")
visionzip_loop = _load("visionzip_loop")

SHAPES = [(1, (5, 7)), (2, (4, 4)), (3, (27, 27)), (5, (5, 7))]


def video(T: int, grid: tuple[int, int], C: int = 16, seed: int = 0) -> torch.Tensor:
    """Tokens = a shared direction at a random per-token strength + noise + a drift over time, so that
    neighbour and frame-to-frame cosines spread over (0, 1) and every threshold merges some pairs."""
    g = torch.Generator().manual_seed(seed)
    N = grid[0] * grid[1]
    shared = torch.randn(C, generator=g)
    strength = 3 * torch.rand(1, N, 1, generator=g) + 0.5 * torch.rand(T, N, 1, generator=g)
    still = torch.randn(1, N, C, generator=g)
    drift = 0.7 * torch.randn(T, N, C, generator=g).cumsum(0)
    return (strength * shared + still + drift).half()


def attention(T: int, N: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(T, N, generator=torch.Generator().manual_seed(seed)).softmax(dim=1)


def check(module, reducer, x, grid, **aux):
    red = reducer(x, grid, **aux)
    groups = module.run(x, grid, reducer, **aux)
    assert module.diff(red, groups) == 0
    assert red.visual_groups() == groups  # same output order too
    return red, groups


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "params", [{}, {"threshold": 0.3}, {"threshold": 0.8, "marker": False}, {"grid": "native"}]
)
def test_dyntok_loop(shape, params):
    T, grid = shape
    for seed in range(2):
        x = video(T, grid, seed=seed)
        _, groups = check(dyntok_loop, DynTok(**params), x, grid)
    assert len(groups) > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"threshold": 0.97},
        {"threshold": 0.97, "budget": 5},
        {"grid": "native", "threshold": 0.95, "budget": 40},
    ],
)
def test_framefusion_loop(shape, params):
    T, grid = shape
    for seed in range(2):
        x = video(T, grid, seed=seed)
        check(framefusion_loop, FrameFusion(**params), x, grid)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "params",
    [{}, {"dominant": 5, "contextual": 3}, {"dominant": 2, "contextual": 0}, {"budget": 7}, {"budget": 50}],
)
def test_visionzip_loop(shape, params):
    T, grid = shape
    N = grid[0] * grid[1]
    for seed in range(2):
        x = video(T, grid, seed=seed)
        check(visionzip_loop, VisionZip(**params), x, grid, attention=attention(T, N, seed + 1))


def test_inputs_merge_something():
    """The random inputs are not trivial: both merging rules merge some tokens but not all."""
    x = video(3, (27, 27))
    n_dyn = len(dyntok_loop.run(x, (27, 27), DynTok()))
    sizes = {len(g) for g in framefusion_loop.run(x, (27, 27), FrameFusion(threshold=0.97))}
    assert 3 * 14 < n_dyn < 3 * 14 * 14
    assert sizes == {1, 2, 3}
