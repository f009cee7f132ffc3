"""`uniform` and `random`: the papers' pruning baselines, keeping a fixed number of tokens per video."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import Budgeted, Grid, Reduction, base_features, check_input, reductions_from_groups
from vtc.reducers.batch import concat_frames
from vtc.reducers.registry import register


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


def pruned_batch(xs: list[Tensor], grid: tuple[int, int], base: str, keep_fn) -> list[Reduction]:
    """Keep, in each video, the base tokens keep_fn(T*Hb*Wb, T, feats) (int64 [M], ascending; feats: the
    video's base features [T*Hb*Wb, C] float32) as singletons of weight 1. The frames of all videos are
    pooled in one call (concatenated; pooling is per frame)."""
    Ts = [check_input(x, grid)[0] for x in xs]
    H, W = int(grid[0]), int(grid[1])
    x, _ = concat_frames(xs)
    feats, (hb, wb) = base_features(x, (H, W), base)  # [sum T, N, C] float32
    group = torch.full((feats.shape[0] * hb * wb,), -1, dtype=torch.long)
    b0 = 0
    for T in Ts:
        total = T * hb * wb
        keep = keep_fn(total, T, feats.reshape(-1, feats.shape[-1])[b0 : b0 + total]).to(group.device)
        group[b0 + keep] = torch.arange(keep.numel())
        b0 += total
    return reductions_from_groups(
        feats.reshape(-1, feats.shape[-1]),
        group,
        torch.ones(group.shape[0]),
        base,
        [(T, hb, wb) for T in Ts],
        [T * H * W for T in Ts],
    )


@register(
    "uniform", paper="baseline: uniform pruning", summary="keep tokens on a regular lattice", budget=True
)
@dataclass(frozen=True)
class Uniform(Budgeted):
    """Keep M tokens on a regular lattice over the whole video: base indices round(linspace(0, T*N-1, M))
    in raster order (t, h, w), half up; M = budget, or round(ratio * T*N) clamped to [T, T*N]. Because the
    lattice runs over the flattened video, the kept positions shift from row to row and frame to frame
    (a sheared spatio-temporal lattice) instead of repeating one spatial mask in every frame."""

    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        return 0.0

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """All videos' frames pooled in one call, kept tokens gathered in one `reductions_from_groups`."""
        return pruned_batch(
            xs,
            grid,
            self.grid,
            lambda total, T, _: lattice(total, kept_count(total, T, self.budget, self.ratio)),
        )


@register("random", paper="baseline: random pruning", summary="keep a random subset of tokens", budget=True)
@dataclass(frozen=True)
class RandomPrune(Budgeted):
    """Keep a random subset of exactly M tokens, in raster order: the first M of
    torch.randperm(T*N, generator=torch.Generator().manual_seed(seed)), sorted. M as for `uniform`."""

    seed: int = 0
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        return 0.0

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """As `uniform`; every video draws from its own generator seeded with `seed`, as alone."""

        def keep(total: int, T: int, _) -> Tensor:
            m = kept_count(total, T, self.budget, self.ratio)
            g = torch.Generator().manual_seed(self.seed)
            # drawn on the CPU (where the seeded generator lives) so every device keeps the same tokens
            return torch.randperm(total, generator=g, device="cpu")[:m].sort().values

        return pruned_batch(xs, grid, self.grid, keep)
