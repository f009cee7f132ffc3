"""`vidtome`: VidToMe (Li et al., CVPR 2024), ToMe across the frames of a window, offline."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import Budgeted, Grid, Reduction, base_features, check_input, reduction_from_groups
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register
from vtc.reducers.tome import (
    edge_rank,
    frame_budgets,
    groups_from_slots,
    merge_into,
    tome_rounds,
    unit,
)


@register(
    "vidtome",
    paper="VidToMe: Video Token Merging for Zero-Shot Video Editing (arXiv 2312.10656)",
    section="ToMe across the frames of a window",
    summary="merge each window into its key frame",
    budget=True,
    params={"window": "frames per window; the first is the key frame the others merge into"},
)
@dataclass(frozen=True)
class VidToMe(Budgeted):
    """Merge the tokens of each window of `window` frames into the window's first (key) frame.

    Stage 1, across frames: in each window, set B = the key frame's tokens, set A = every token of
    the other frames; each A token's edge goes to its most similar key-frame token (cosine), the
    r = min(needed, |A|) most similar edges are kept and merged (size-weighted means, as in ToMe).
    Stage 2, only if the window is still over its budget (every non-key token already merged): ToMe
    bipartite soft matching rounds (`tome`) on what is left, i.e. within the key frame.
    Budget: as `tome`, per frame (budget // T each, the first budget % T frames one more, budget < T
    refused; or round(ratio * N) per frame), summed per window, so a window may end with fewer tokens
    than frames. window=1 (or T=1) is exactly `tome`.
    Differences from VidToMe, which merges self-attention tokens inside the diffusion UNet at every
    step and unmerges them afterwards: here it runs once on the encoder's features with no unmerging;
    the destination is the window's first frame (VidToMe draws it at random within each chunk); and
    VidToMe's global merging across chunks is left out (windows never merge with each other).
    Not natively batched (`reduce_batch` loops): its cost is the per-window cross-frame product, which
    must be taken per video anyway to stay bit-identical (see reducers/batch).
    """

    ratio: float = 0.5
    window: int = 4
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Each window's non-key tokens against its key frame, plus a norm per token."""
        T, hb, wb = red.base_grid
        N = hb * wb
        windows = math.ceil(T / self.window)
        return windows * (2 * C * (self.window - 1) * N * N) + cosine_flops(0, T * N, C)

    def __post_init__(self):
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        N, C = hb * wb, feats.shape[-1]
        F_ = min(self.window, T)  # frames per window
        nW = math.ceil(T / F_)
        L = F_ * N  # tokens per (padded) window
        k_frame = frame_budgets(T, N, self.budget, self.ratio, "vidtome")  # [T]
        k = torch.zeros(nW * F_, dtype=torch.long)
        k[:T] = k_frame
        k = k.reshape(nW, F_).sum(1)  # [nW] tokens kept per window

        # windows as padded sets: the last one may have fewer frames (padding has size 0)
        xw = torch.zeros(nW * F_, N, C)
        xw[:T] = feats
        xw = xw.reshape(nW, L, C)  # [nW, L, C], frame-major: the key frame is slots 0..N-1
        orig = torch.arange(nW * L).reshape(nW, L)  # flat base index of each slot
        orig = torch.where(orig < T * N, orig, -1)
        n = (orig >= 0).sum(1)  # [nW] valid tokens per window
        size = (orig >= 0).float()
        gid = torch.arange(L).repeat(nW, 1)  # [nW, L]

        if F_ > 1:  # stage 1: non-key frames (A) -> key frame (B)
            xn = unit(xw)
            scores = xn[:, N:] @ xn[:, :N].transpose(1, 2)  # [nW, L-N, N]
            node_max, node_idx = scores.max(dim=-1)  # [nW, L-N] best key-frame token of each A token
            a_valid = orig[:, N:] >= 0
            node_max = node_max.masked_fill(~a_valid, -math.inf)
            r = torch.minimum(n - k, n - N).clamp_min(0)  # [nW], |A| = n - N
            merged = edge_rank(node_max) < r[:, None]
            target = torch.arange(L).repeat(nW, 1)
            target[:, N:] = torch.where(merged, node_idx, target[:, N:])
            xw, size, slot, n = merge_into(xw, size, target, n)
            gid = slot.gather(1, gid)

        gid, n = tome_rounds(xw, size, n, k, gid)  # stage 2: a no-op unless stage 1 ran out of A
        group = groups_from_slots(gid, orig, n, T * N)
        return reduction_from_groups(
            feats.reshape(T * N, C), group, torch.ones(T * N), self.grid, (T, hb, wb), T * H * W
        )
