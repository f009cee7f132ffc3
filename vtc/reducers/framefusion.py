"""`framefusion`: FrameFusion's merging stage (arXiv 2501.01986) — same-position tokens across frames."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import (
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    reductions_from_groups,
)
from vtc.reducers.batch import concat_frames
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register


@register(
    "framefusion",
    paper="FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Vision "
    "Language Models (arXiv 2501.01986)",
    section="merging stage only (its attention pruning runs inside the LLM)",
    summary="merge into the previous frame's token",
    adaptive=True,
    budget=True,
    params={"threshold": "cosine similarity above which a token joins the previous frame's token"},
)
@dataclass(frozen=True)
class FrameFusion(Reducer):
    """Merge a token into the same grid position of the previous frame when they are similar.

    s(t, p) = cos(x[t-1, p], x[t, p]); token (t, p) joins the group of (t-1, p) when s > threshold
    (strict), else it opens a new group. The rule is a chain over time, each token compared with its
    predecessor only (never with the group mean). A group's token is the mean of its members; its pos is
    the earliest member (all weights equal, so plan_pos's tie rule picks the smallest index).
    budget=None keeps every group. budget=B keeps the B groups with the most members (ties: the earlier
    group in raster order of its first member), so exactly min(B, groups) visual tokens; the rest are
    dropped. The official FrameFusion also prunes the merged tokens by LLM attention to a FLOPs budget,
    inside the LLM's first layers; this offline version only merges (+ the optional size-based pruning).
    """

    threshold: float = 0.9
    grid: Grid = "pooled"
    budget: int | None = None

    def decision_flops(self, red: Reduction, C: int) -> float:
        """A cosine per position between consecutive frames."""
        T, hb, wb = red.base_grid
        return cosine_flops((T - 1) * hb * wb, T * hb * wb, C)

    def __post_init__(self):
        super().__post_init__()
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be >= 1 or None, got {self.budget}")

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """Frames of all videos concatenated: one similarity pass over consecutive frames, where each
        video's first frame opens new groups (so no chain crosses videos), one grouping, one build."""
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        x, offs = concat_frames(xs)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [sum T, hb*wb, C] float32
        TT, N, C = feats.shape[0], hb * wb, feats.shape[-1]

        norm = torch.linalg.vector_norm(feats, dim=-1)  # [TT, N]
        dot = torch.linalg.vecdot(feats[:-1], feats[1:])  # [TT-1, N]
        sim = dot / (norm[:-1] * norm[1:]).clamp_min(1e-8)  # [TT-1, N], s(t, p) for t >= 1
        new = torch.ones(TT, N, dtype=torch.bool)  # [TT, N] token opens a group; first frames always do
        new[1:] = ~(sim > self.threshold)  # NaN never merges
        new[offs] = True  # a video's first frame is never compared with the previous video's last
        # root frame of each token: the last t' <= t that opened a group at p
        t_idx = torch.arange(TT)[:, None].expand(TT, N)
        root_t = torch.where(new, t_idx, 0).cummax(dim=0).values  # [TT, N]
        root = root_t * N + torch.arange(N)  # [TT, N] flat index of the group's first member
        new = new.reshape(-1)
        gid_of_root = new.long().cumsum(0) - 1  # group ids in raster order of the first member
        group = gid_of_root[root.reshape(-1)]  # [TT*N], numbered over the whole batch

        b0, g0 = 0, 0
        for T in Ts:  # per video: its own ids (0..G_v-1), and the budget's choice among its groups
            nb = T * N
            g = group[b0 : b0 + nb] - g0
            G = int(new[b0 : b0 + nb].sum())
            if self.budget is not None and self.budget < G:
                size = torch.bincount(g, minlength=G)  # [G] members per group
                # largest first; a stable sort keeps raster order among equal sizes
                top = torch.argsort(-size, stable=True)[: self.budget]
                keep = torch.zeros(G, dtype=torch.bool)
                keep[top] = True
                renum = torch.where(keep, keep.long().cumsum(0) - 1, -1)  # kept groups stay in raster order
                g = renum[g]
            group[b0 : b0 + nb] = g
            b0, g0 = b0 + nb, g0 + G
        return reductions_from_groups(
            feats.reshape(-1, C),
            group,
            torch.ones(TT * N),
            self.grid,
            [(T, hb, wb) for T in Ts],
            [T * H * W for T in Ts],
        )
