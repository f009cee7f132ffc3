"""`uniform` and `random`: the papers' pruning baselines, keeping a fixed number of tokens per video."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import Reduction, base_features, check_input, reduction_from_groups
from vtc.reducers.registry import register
from vtc.reducers.tome import check_params


def kept_count(total: int, T: int, budget: int | None, ratio: float) -> int:
    """Visual tokens kept per video: min(budget, total), or round(ratio * total) (half up) clamped to
    [T, total] so that a default run never keeps fewer tokens than frames. An explicit budget < T is
    honoured (pruning may drop whole frames)."""
    if budget is not None:
        return min(budget, total)
    return min(total, max(T, math.floor(ratio * total + 0.5)))


def lattice(total: int, m: int) -> Tensor:
    """round(linspace(0, total-1, m)) in exact integer arithmetic, rounding half up: int64 [m].

    Strictly increasing for m <= total (the step (total-1)/(m-1) is >= 1); m = 1 -> [0].
    """
    i = torch.arange(m)
    if m == 1:
        return i
    return (2 * i * (total - 1) + (m - 1)) // (2 * (m - 1))


def pruned(feats: Tensor, keep: Tensor, base: str, base_grid, n_input: int) -> Reduction:
    """Keep the base tokens `keep` (int64 [M], ascending) as singletons with weight 1."""
    nb = feats.shape[0]
    group = torch.full((nb,), -1, dtype=torch.long)
    group[keep] = torch.arange(keep.numel())
    return reduction_from_groups(feats, group, torch.ones(nb), base, base_grid, n_input)


@register("uniform", paper="baseline: uniform pruning", budget=True)
@dataclass(frozen=True)
class Uniform:
    """Keep M tokens on a regular lattice over the whole video: base indices round(linspace(0, T*N-1, M))
    in raster order (t, h, w), half up; M = budget, or round(ratio * T*N) clamped to [T, T*N]. Because the
    lattice runs over the flattened video, the kept positions shift from row to row and frame to frame
    (a sheared spatio-temporal lattice) instead of repeating one spatial mask in every frame."""

    budget: int | None = None
    ratio: float = 0.25
    grid: str = "pooled"

    def __post_init__(self):
        check_params(self.budget, self.ratio, self.grid)

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        total = T * hb * wb
        keep = lattice(total, kept_count(total, T, self.budget, self.ratio))
        return pruned(feats.reshape(total, -1), keep, self.grid, (T, hb, wb), T * H * W)


@register("random", paper="baseline: random pruning", budget=True)
@dataclass(frozen=True)
class RandomPrune:
    """Keep a random subset of exactly M tokens, in raster order: the first M of
    torch.randperm(T*N, generator=torch.Generator().manual_seed(seed)), sorted. M as for `uniform`."""

    budget: int | None = None
    ratio: float = 0.25
    seed: int = 0
    grid: str = "pooled"

    def __post_init__(self):
        check_params(self.budget, self.ratio, self.grid)

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        total = T * hb * wb
        m = kept_count(total, T, self.budget, self.ratio)
        g = torch.Generator().manual_seed(self.seed)
        # drawn on the CPU (where the seeded generator lives) so every device keeps the same tokens
        keep = torch.randperm(total, generator=g, device="cpu")[:m].sort().values.to(feats.device)
        return pruned(feats.reshape(total, -1), keep, self.grid, (T, hb, wb), T * H * W)
