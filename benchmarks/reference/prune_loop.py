"""Plain loop versions of `vtc.reducers.prune`'s `uniform` and `random` (the kept base-grid indices).

Written from the docstrings: M = budget (at most T*N), or round(ratio * T*N) half up clamped to [T, T*N];
uniform keeps round(linspace(0, T*N-1, M)) half up (exact rationals here), random the first M of
torch.randperm(T*N) under a generator seeded with `seed`, sorted. N is the base grid's size: the pooled
grid ceil(H/2) x ceil(W/2) when the reducer's grid is "pooled", else H x W.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def _total(x, grid, reducer) -> tuple[int, int]:
    T, H, W = int(x.shape[0]), int(grid[0]), int(grid[1])
    if reducer.grid == "pooled":
        H, W = math.ceil(H / 2), math.ceil(W / 2)
    return T, T * H * W


def kept_count(total: int, T: int, budget: int | None, ratio: float) -> int:
    if budget is not None:
        return min(budget, total)
    m = math.floor(ratio * total + 0.5)  # round half up
    return min(total, max(T, m))


def run_uniform(x, grid, reducer) -> list[int]:
    T, total = _total(x, grid, reducer)
    m = kept_count(total, T, reducer.budget, reducer.ratio)
    if m == 1:
        return [0]
    kept = []
    for i in range(m):
        v = Fraction(i * (total - 1), m - 1)  # linspace(0, total-1, m)[i], exactly
        kept.append(math.floor(v + Fraction(1, 2)))  # half up
    return kept


def run_random(x, grid, reducer) -> list[int]:
    T, total = _total(x, grid, reducer)
    m = kept_count(total, T, reducer.budget, reducer.ratio)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(reducer.seed)).tolist()
    return sorted(perm[:m])


def diff_kept(reduction, kept) -> int:
    """Size of the symmetric difference between the reduction's kept base tokens and the loop's, plus
    visual tokens that are not a single source of weight 1 (a pruned token must be one)."""
    indptr, src, weight = reduction.indptr.tolist(), reduction.src.tolist(), reduction.weight.tolist()
    ours, odd = set(), 0
    for k in range(reduction.n_visual()):
        row = src[indptr[k] : indptr[k + 1]]
        if len(row) != 1 or weight[indptr[k]] != 1.0:
            odd += 1
        ours.update(row)
    return len(ours ^ set(kept)) + odd
