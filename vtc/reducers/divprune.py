"""`divprune`: DivPrune (DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models, arXiv
2503.02175), the kept tokens chosen to differ from each other as much as possible."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import Budgeted, Grid, Reduction
from vtc.reducers.flops import cosine_flops
from vtc.reducers.prune import kept_count, pruned_batch
from vtc.reducers.registry import register


def max_min_subset(feats: Tensor, m: int) -> Tensor:
    """The greedy max-min diversity subset of ``m`` of the rows of feats [n, C]: int64 [m], ascending.

    d(i, j) = 1 - cos(x_i, x_j). First pick: the token whose nearest other token is farthest (per column,
    the second-smallest distance, the smallest being its own ~0). Then, each step: the token farthest from
    the chosen set, min over the chosen rows of d (Eq. 3's objective, grown one token at a time). Ties go
    to the lowest index (``argmax``). The running minimum equals the official min over the chosen rows.
    """
    unit = feats / feats.norm(dim=1, keepdim=True)
    dist = 1.0 - unit @ unit.T  # [n, n]
    first = int(dist.topk(2, dim=0, largest=False).values[1].argmax())
    chosen = torch.empty(m, dtype=torch.long)
    chosen[0] = first
    closest = dist[first].clone()  # [n]: each token's distance to the chosen set
    for i in range(1, m):
        nxt = int(closest.argmax())
        chosen[i] = nxt
        closest = torch.minimum(closest, dist[nxt])
    return chosen.sort().values


@register(
    "divprune",
    paper="DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models (arXiv 2503.02175)",
    section="§3, Eq. 3: a max-min diversity subset, solved greedily",
    summary="keep the most diverse tokens (max-min)",
    budget=True,
)
@dataclass(frozen=True)
class DivPrune(Budgeted):
    """Keep the M tokens of the whole video that are the most diverse: a max-min diversity subset (Eq. 3:
    maximise the smallest pairwise cosine distance among the kept tokens), by the paper's greedy
    algorithm (see `max_min_subset`); kept tokens unchanged, in raster order.

    M = budget, or round(ratio * T*N) clamped to [T, T*N] as for `uniform`; ratio 0.098 is the official
    default (its SUBSET_RATIO: 9.8% of the tokens, 615 of 32x196). Where vtc differs from the official
    code: it selects among the LLM-space tokens of one image (after the projector); vtc selects on the
    stored encoder features, over all frames of the video at once, on LLaVA-OV's pooled 14x14 grid by
    default. The official code keeps the tokens in selection order; vtc keeps raster order (the LLM's
    positions follow the plan either way). Cost: an n x n distance matrix (n = T*N; 150 MB at 32x196).
    """

    ratio: float = 0.098
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """The n x n cosine distances; the greedy picks only compare."""
        T, hb, wb = red.base_grid
        n = T * hb * wb
        return cosine_flops(n * n, n, C)

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        def keep(total: int, T: int, feats: Tensor) -> Tensor:
            return max_min_subset(feats, kept_count(total, T, self.budget, self.ratio))

        return pruned_batch(xs, grid, self.grid, keep)
