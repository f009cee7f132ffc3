"""The loop references for none, pool, uniform, random and vidtome agree exactly with the reducers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtc.reducers.none import NoReduction
from vtc.reducers.pool import Pool
from vtc.reducers.prune import RandomPrune, Uniform
from vtc.reducers.vidtome import VidToMe

REF = Path(__file__).parents[1] / "benchmarks" / "reference"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_b", REF / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pool_loop, prune_loop, vidtome_loop = _load("pool_loop"), _load("prune_loop"), _load("vidtome_loop")

INPUTS = [(1, (5, 7)), (2, (4, 4)), (3, (27, 27)), (5, (5, 7))]


def video(T: int, grid: tuple[int, int], C: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, grid[0] * grid[1], C, generator=g)
    return base + 0.5 * torch.randn(T, grid[0] * grid[1], C, generator=g).cumsum(0)


@pytest.mark.parametrize("T,grid", INPUTS)
def test_none_loop(T, grid):
    x, r = video(T, grid), NoReduction()
    assert pool_loop.diff_none(r(x, grid), pool_loop.run_none(x, grid, r)) == 0


@pytest.mark.parametrize("T,grid", INPUTS)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "avg"])
def test_pool_loop(T, grid, stride, mode):
    x, r = video(T, grid), Pool(stride=stride, mode=mode)
    ref = pool_loop.run_pool(x, grid, r)
    assert pool_loop.diff_pool(r(x, grid), ref) == 0
    # the loop's plan is itself PyTorch's operator, applied to x
    H, W = grid
    img = x.double().reshape(T, H, W, -1).permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(
            img, size=(-(-H // stride), -(-W // stride)), mode="bilinear", align_corners=False
        )
    else:
        out = F.avg_pool2d(img, kernel_size=stride, stride=stride, ceil_mode=True)
    out = out.permute(0, 2, 3, 1).reshape(-1, x.shape[-1])
    flat = x.double().reshape(-1, x.shape[-1])
    mine = torch.stack([sum(w * flat[s] for s, w in zip(ss, ws, strict=True)) for ss, ws in ref])
    torch.testing.assert_close(mine, out, rtol=1e-9, atol=1e-9)


PRUNE_PARAMS = [
    {"budget": None, "ratio": 0.25},
    {"budget": None, "ratio": 0.1},
    {"budget": None, "ratio": 1.0},
    {"budget": 1},
    {"budget": 7},
    {"budget": 50},
    {"budget": 10_000},
    {"budget": 7, "grid": "native"},
]


@pytest.mark.parametrize("T,grid", INPUTS)
@pytest.mark.parametrize("params", PRUNE_PARAMS)
def test_uniform_loop(T, grid, params):
    x, r = video(T, grid), Uniform(**params)
    assert prune_loop.diff_kept(r(x, grid), prune_loop.run_uniform(x, grid, r)) == 0


@pytest.mark.parametrize("T,grid", INPUTS)
@pytest.mark.parametrize("params", PRUNE_PARAMS + [{"budget": 7, "seed": 3}])
def test_random_loop(T, grid, params):
    x, r = video(T, grid), RandomPrune(**params)
    assert prune_loop.diff_kept(r(x, grid), prune_loop.run_random(x, grid, r)) == 0


VIDTOME_PARAMS = [
    {"window": 2},
    {"window": 4},
    {"window": 4, "ratio": 0.1},
    {"window": 2, "ratio": 1.0},
    {"window": 1, "ratio": 0.3},
    {"window": 4, "budget": "T"},  # one token per frame: stage 2 runs
    {"window": 2, "budget": "T+1"},
    {"window": 4, "budget": 30},
    {"window": 2, "budget": 10_000},
    {"window": 4, "grid": "native", "ratio": 0.2},
]


@pytest.mark.parametrize("T,grid", INPUTS)
@pytest.mark.parametrize("params", VIDTOME_PARAMS)
def test_vidtome_loop(T, grid, params):
    params = dict(params)
    if isinstance(params.get("budget"), str):
        params["budget"] = T + (1 if params["budget"] == "T+1" else 0)
    elif params.get("budget") is not None and params["budget"] < T:
        pytest.skip("budget < T is refused")
    x, r = video(T, grid, seed=T), VidToMe(**params)
    assert vidtome_loop.diff(r(x, grid), vidtome_loop.run(x, grid, r)) == 0
