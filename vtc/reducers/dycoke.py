"""`dycoke`: DyCoke (seed 003, §3.2 "Visual Token Temporal Merging", TTM), the pre-LLM stage only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import Reduction, check_input, llava_pool, reduction_from_groups
from vtc.reducers.registry import register

GRIDS = ("native", "pooled")
ODD = ("official", "keep")


def least_similar(a: Tensor, b: Tensor, keep: int) -> Tensor:
    """Mask [P, N] of the `keep` tokens of each frame b[p] least similar to the same position in a[p].

    a, b: [P, N, C] float32. Similarity = cosine, x.y / (|x| |y|) (eq. 3). The official code takes
    `topk(keep, largest=False)`; a stable ascending sort picks the same set without ties and breaks
    ties towards the lower token index, so the choice is deterministic.
    """
    P, N = a.shape[:2]
    sim = torch.linalg.vecdot(a, b) / (
        torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    ).clamp_min(1e-8)  # [P, N]
    order = torch.argsort(sim, dim=1, stable=True)[:, :keep]  # [P, keep] token indices, least similar first
    mask = torch.zeros(P, N, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return mask


@register(
    "dycoke",
    paper="DyCoke (seed 003, §3.x TTM) — stage 1 only; the KV-cache stage is an online method",
    budget=False,
)
@dataclass(frozen=True)
class DyCoke:
    """DyCoke's token temporal merging (TTM, §3.2, eq. 3-4): prune tokens that repeat the previous frames.

    Windows of `window` (4) frames. S = cos(h_i, h_j) (eq. 3) between tokens at the same grid position.
    Pass 1, pairs (i, i+1) for even i: frame i is kept whole, frame i+1 keeps the int((1-k)*N) tokens
    least similar to frame i. Pass 2, window starts s in range(0, T - window, window): frames s+2, s+4,
    ..., s+window-2 are re-pruned *from their full token set* against frame s (same cosine, same count).
    So frame s+3 is pruned against s+2 (pass 1) and s+2 against s (pass 2). At T=32, N=196, k=0.7 this
    keeps 16*196 + 16*58 - 7*138 = 3,098 of 6,272 tokens, as the official code does.

    Computed on the input (SigLIP) features, on LLaVA-OV's bilinear-pooled 14x14 grid by default
    (grid="pooled", 196 tokens/frame, where the official code runs); decisions in float32.
    Where the official code (KD-TAO/DyCoke, `llava/model/llava_arch.py`, `dycole_ttm`) differs from the paper:
    - it prunes, it does not merge (the paper says "merging"); merge=True is the paper reading: each
      dropped token is averaged into the token it matched (followed to the kept root, e.g. s+3 -> s+2 -> s).
    - pass 2 is skipped for the last window (range(0, T-4, 4)); the paper repeats it for every window.
    - with odd T the last frame is dropped (odd="official"); odd="keep" keeps it whole instead. A lone
      frame (T=1) is always kept; the official code raises for T <= 4 (torch.stack of an empty list).
    - it runs on projected + pooled LLM-space features; here the decisions use the encoder features.
    - pass 1 normalises before F.cosine_similarity, pass 2 does not: both are the same cosine.
    - kept tokens come out in topk order; here every frame's tokens are in raster order.
    - the stored official commit indexes pass 1's similarities with `(i - 2) // 2`, i.e. frame i+1 keeps
      the positions chosen by pair (i-2, i-1) (frame 1 by the last pair); PAPERS.md describes `i // 2`,
      which is the default here; official_offset=True reproduces the shifted indexing.
    """

    k: float = 0.7
    window: int = 4
    grid: str = "pooled"
    merge: bool = False
    odd: str = "official"
    official_offset: bool = False

    def __post_init__(self):
        if not 0.0 <= self.k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {self.k}")
        if self.window < 2 or self.window % 2:
            raise ValueError(f"window must be an even number >= 2, got {self.window}")
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}; valid: {', '.join(GRIDS)}")
        if self.odd not in ODD:
            raise ValueError(f"unknown odd {self.odd!r}; valid: {', '.join(ODD)}")

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        if self.grid == "pooled":
            feats, (hb, wb) = llava_pool(x, (H, W))  # [T, hb*wb, C] float32
        else:
            feats, (hb, wb) = x.float(), (H, W)
        N, C = hb * wb, feats.shape[-1]
        keep = int((1 - self.k) * N)  # the official expression, float rounding included (0.3*196 -> 58)
        kept = torch.ones(T, N, dtype=torch.bool)  # [T, N]
        # parent[t, n]: the flat base index a dropped token matched (same position, reference frame)
        flat = torch.arange(T * N).reshape(T, N)
        parent = flat.clone()

        # pass 1: odd frames against the preceding even frame
        P = T // 2
        if P:
            ref, tgt = torch.arange(0, 2 * P, 2), torch.arange(1, 2 * P, 2)  # [P] frame ids
            mask = least_similar(feats[ref], feats[tgt], keep)  # [P, N]
            if self.official_offset:
                mask = mask.roll(1, dims=0)  # pair j uses pair j-1's choice, pair 0 the last pair's
            kept[tgt] = mask
            parent[tgt] = torch.where(mask, flat[tgt], flat[ref])

        # pass 2: frames s+2, s+4, .. of each window but the last, re-pruned against the window's first frame
        starts = torch.arange(0, max(T - self.window, 0), self.window)  # [S]
        if starts.numel() and self.window > 2:
            offs = torch.arange(2, self.window, 2)  # [J]
            ref = starts.repeat_interleave(offs.numel())  # [S*J]
            tgt = ref + offs.repeat(starts.numel())
            mask = least_similar(feats[ref], feats[tgt], keep)
            kept[tgt] = mask
            parent[tgt] = torch.where(mask, flat[tgt], flat[ref])

        dropped_frame = torch.zeros(T, dtype=torch.bool)
        if T % 2 and T > 1 and self.odd == "official":
            dropped_frame[-1] = True  # the official pair loop never emits the unpaired last frame
        kept[dropped_frame] = False

        kept, parent = kept.reshape(-1), parent.reshape(-1)
        group = torch.full((T * N,), -1, dtype=torch.long)
        group[kept] = torch.arange(int(kept.sum()))  # raster order of the kept tokens
        if self.merge:
            # follow matches to a kept root: chains are at most 2 hops (s+3 -> s+2 -> s), so one pointer
            # jump resolves them; a token of a dropped last frame keeps parent = itself and stays dropped
            parent = parent[parent]
            merged = ~kept & kept[parent]
            group[merged] = group[parent[merged]]
        return reduction_from_groups(
            feats.reshape(-1, C),
            group,
            torch.ones(T * N),
            self.grid,
            (T, hb, wb),
            T * H * W,
        )
