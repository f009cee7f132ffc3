"""`dycoke`: DyCoke (arXiv 2411.15024, §3.2 "Visual Token Temporal Merging", TTM), the pre-LLM stage only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    KIND_NEWLINE,
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    grid_pos,
    newline_row,
    reductions_from_groups,
)
from vtc.reducers.batch import concat_frames, groups_by
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register


def least_similar(feats: Tensor, ref: slice, tgt: slice, keep: int, normalise: bool) -> Tensor:
    """Mask [B, P, N] of the `keep` tokens of each frame feats[:, tgt][b, p] least similar to
    feats[:, ref][b, p].

    feats: [B, T, N, C] float32 (B videos of T frames); ref/tgt: frame slices of equal length P (views,
    no copies). Similarity = cosine at the same position (eq. 3), computed as the official code does:
    pass 1 L2-normalises both frames and then takes ``F.cosine_similarity``, pass 2 takes it directly
    (``normalise``). The two are the same cosine, but not the same float32 rounding, and on stored
    float16 features many cosines lie within 1e-7 of each other: computed any other way, a near-tie
    falls the other way now and then (tests/test_dycoke_official.py). ``topk(largest=False)`` as the
    official code.
    """
    a, b = feats[:, ref], feats[:, tgt]
    if normalise:
        a, b = F.normalize(a, p=2, dim=-1), F.normalize(b, p=2, dim=-1)
    sim = F.cosine_similarity(a, b, dim=-1)  # [B, P, N]
    order = sim.topk(keep, dim=-1, largest=False).indices
    return torch.zeros(sim.shape, dtype=torch.bool).scatter_(-1, order, True)


@register(
    "dycoke",
    paper="DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models (arXiv 2411.15024)",
    section="§3.2 TTM, Eq. 3-4; stage 1 only (the KV-cache stage is the online method dycoke-kv)",
    summary="prune tokens repeating earlier frames",
    params={
        "k": "fraction of a pruned frame's tokens dropped (the paper's K)",
        "window": "frames per window; the window's first frame is kept whole",
        "merge": "average each dropped token into its match (the paper's wording) instead of dropping",
        "odd": "odd frame count: official (drop the last frame) or keep (keep it whole)",
        "official_offset": "reproduce the official code's shifted pass-1 indexing (commit 26dc6f4f)",
    },
)
@dataclass(frozen=True)
class DyCoke(Reducer):
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
    - pass 1 normalises before F.cosine_similarity, pass 2 does not: the same cosine, rounded
      differently; vtc computes both as the official code does, and picks with the same topk, so
      near-ties fall the same way (tests/test_dycoke_official.py: the official function's choices on
      48 inputs, reproduced exactly).
    - kept tokens come out in topk order; here every frame's tokens are in raster order.
    - the stored official commit indexes pass 1's similarities with `(i - 2) // 2`, i.e. frame i+1 keeps
      the positions chosen by pair (i-2, i-1) (frame 1 by the last pair); the paper's reading is `i // 2`,
      which is the default here; official_offset=True reproduces the shifted indexing (commit
      26dc6f4f of KD-TAO/DyCoke; tested against that function's output).
    """

    k: float = 0.7
    window: int = 4
    grid: Grid = "pooled"
    merge: bool = False
    odd: Literal["official", "keep"] = "official"
    official_offset: bool = False

    def decision_flops(self, red: Reduction, C: int) -> float:
        """A cosine per position of each compared frame pair (pass 1 and the re-pruned frames)."""
        T, hb, wb = red.base_grid
        N = hb * wb
        pairs = T // 2
        repruned = len(range(0, T - self.window, self.window)) * (self.window // 2 - 1)
        return cosine_flops((pairs + repruned) * N, (pairs + repruned) * 2 * N, C)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {self.k}")
        if self.window < 2 or self.window % 2:
            raise ValueError(f"window must be an even number >= 2, got {self.window}")

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """Videos of equal T are stacked [B, T, N, C]: the pairs and windows are the same frame slices in
        each, so one similarity, one sort and one scatter per pass serve them all. Videos of another T
        form their own stack."""
        Ts = [check_input(x, grid)[0] for x in xs]
        out: list[Reduction | None] = [None] * len(xs)
        for T, members in groups_by(Ts).items():
            for v, red in zip(members, self._same_t([xs[v] for v in members], T, grid), strict=True):
                out[v] = red
        return out

    def _same_t(self, xs: list[Tensor], T: int, grid: tuple[int, int]) -> list[Reduction]:
        H, W = int(grid[0]), int(grid[1])
        x, _ = concat_frames(xs)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [B*T, hb*wb, C] float32
        B, N, C = len(xs), hb * wb, feats.shape[-1]
        feats = feats.reshape(B, T, N, C)
        keep = int((1 - self.k) * N)  # the official expression, float rounding included (0.3*196 -> 58)
        kept = torch.ones(B, T, N, dtype=torch.bool)  # [B, T, N]
        # parent[b, t, n]: the flat base index (within the video) a dropped token matched (same
        # position, reference frame)
        flat = torch.arange(T * N).reshape(T, N).expand(B, T, N)
        parent = flat.clone()

        # pass 1: odd frames against the preceding even frame
        P = T // 2
        if P:
            ref, tgt = slice(0, 2 * P, 2), slice(1, 2 * P, 2)  # P frames each
            mask = least_similar(feats, ref, tgt, keep, normalise=True)  # [B, P, N]
            if self.official_offset:
                mask = mask.roll(1, dims=1)  # pair j uses pair j-1's choice, pair 0 the last pair's
            kept[:, tgt] = mask
            parent[:, tgt] = torch.where(mask, flat[:, tgt], flat[:, ref])

        # pass 2: frames s+2, s+4, .. of each window but the last, re-pruned from their full token set
        # against the window's first frame s, for s in range(0, T - window, window) (the official range)
        S = len(range(0, T - self.window, self.window))  # windows re-pruned
        if S:
            ref = slice(0, (S - 1) * self.window + 1, self.window)
            for j in range(2, self.window, 2):  # one offset for window=4
                tgt = slice(j, (S - 1) * self.window + j + 1, self.window)
                mask = least_similar(feats, ref, tgt, keep, normalise=False)  # [B, S, N]
                kept[:, tgt] = mask
                parent[:, tgt] = torch.where(mask, flat[:, tgt], flat[:, ref])

        if T % 2 and T > 1 and self.odd == "official":
            kept[:, -1] = False  # the official pair loop never emits the unpaired last frame

        kept, parent = kept.reshape(B, T * N), parent.reshape(B, T * N)
        feats = feats.reshape(B, T * N, C)
        base_grid = (T, hb, wb)
        if not self.merge:
            return [self._pruned(feats[b], kept[b], base_grid, T * H * W) for b in range(B)]
        group = torch.full((B, T * N), -1, dtype=torch.long)
        for b in range(B):
            group[b, kept[b]] = torch.arange(int(kept[b].sum()))  # raster order of the kept tokens
        # follow matches to a kept root: chains are at most 2 hops (s+3 -> s+2 -> s), so one pointer
        # jump resolves them; a token of a dropped last frame keeps parent = itself and stays dropped
        parent = parent.gather(1, parent)
        merged = ~kept & kept.gather(1, parent)
        group = torch.where(merged, group.gather(1, parent), group)
        return reductions_from_groups(
            feats.reshape(B * T * N, C),  # merged groups: the general (slower) builder
            group.reshape(-1),
            torch.ones(B * T * N),
            self.grid,
            [base_grid] * B,
            [T * H * W] * B,
        )

    def _pruned(self, feats: Tensor, kept: Tensor, base_grid: tuple[int, int, int], n_in: int) -> Reduction:
        """The pruning plan directly: one source of weight 1 per kept token, in raster order.

        Same result as reduction_from_groups with singleton groups (a test checks it), without its
        float64 normalisation, sort and index_add: ~2x faster on a 32x729x1152 input.
        """
        idx = kept.nonzero().squeeze(1)  # [K] flat base indices, ascending = raster order
        K, C = idx.numel(), feats.shape[1]
        tokens = torch.empty(K + 1, C)
        torch.index_select(feats, 0, idx, out=tokens[:K])
        tokens[K] = 0.0
        kind = torch.zeros(K + 1, dtype=torch.uint8)
        kind[-1] = KIND_NEWLINE
        indptr = torch.arange(K + 2)
        indptr[-1] = K  # the newline row is empty
        _, Hb, Wb = base_grid
        return Reduction(
            tokens=tokens,
            kind=kind,
            pos=torch.cat((grid_pos(idx, Hb, Wb), newline_row(base_grid))),
            indptr=indptr,
            src=idx,
            weight=torch.ones(K),
            base=self.grid,
            base_grid=base_grid,
            n_input_tokens=n_in,
        )
