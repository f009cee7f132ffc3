"""`tome`: ToMe (Bolya et al., ICLR 2023), bipartite soft matching within each frame, offline.

A clean re-implementation from the paper's §3 text (the official code is CC-BY-NC). The batched
functions here (`bipartite_targets`, `merge_into`, `tome_rounds`) are shared with `vidtome`.

State of a batch of token sets (frames, or windows of frames), padded to a common length L:
    x:    [B, L, C] float32 current tokens (size-weighted means of their members)
    size: [B, L] float32, how many original tokens each current token holds (0 = padding)
    n:    int64 [B], valid tokens per set; valid tokens are the prefix 0..n-1, ordered by their
          representative (smallest original index), padding after them
    gid:  int64 [B, L0], the current slot of every original token (membership, not just sizes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import (
    Budgeted,
    Grid,
    Reduction,
    base_features,
    check_input,
    reductions_from_groups,
)
from vtc.reducers.batch import concat_frames, groups_by
from vtc.reducers.flops import tome_round_flops
from vtc.reducers.registry import register


def unit(x: Tensor) -> Tensor:
    """[..., C] -> rows scaled to unit norm (zero rows stay zero): cosine = dot product of units."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-8)


def edge_rank(node_max: Tensor) -> Tensor:
    """[B, La] best-edge similarity of each A token -> int64 [B, La] its rank, most similar first.

    A stable sort: ties go to the lower A index (the loop oracle sorts the same way).
    """
    B, La = node_max.shape
    order = torch.sort(node_max, dim=-1, descending=True, stable=True).indices  # [B, La] A index by rank
    ar = torch.arange(La).expand(B, La)
    return torch.empty_like(order).scatter_(1, order, ar)


def bipartite_targets(x: Tensor, n: Tensor, r: Tensor, chunks: list[int] | None = None) -> Tensor:
    """One round of bipartite soft matching (ToMe §3.1, "Bipartite Soft Matching") on a padded batch.

    x: [B, L, C] current tokens; n: int64 [B] valid tokens; r: int64 [B] merges, r <= ceil(n/2).
    Slots alternate into A (even) and B (odd); each A token's edge goes to its most similar B token
    (cosine, ties -> lowest B); the r most similar edges are kept and their A tokens merge into B.
    Returns target: int64 [B, L], the slot each token goes to (itself unless merged).
    chunks: set counts (summing to B) of the videos of a batch: the product is taken per video, because
    a batched matrix product's bits for one matrix depend on how many it is given (see reducers/batch).
    """
    B, L, _ = x.shape
    La, Lb = (L + 1) // 2, L // 2
    parts = [xn[:, ::2] @ xn[:, 1::2].transpose(1, 2) for xn in map(unit, x.split(chunks or [B]))]
    scores = parts[0] if len(parts) == 1 else torch.cat(parts)  # [B, La, Lb] cosine similarities
    b_valid = (2 * torch.arange(Lb) + 1)[None] < n[:, None]  # [B, Lb]
    scores = scores.masked_fill(~b_valid[:, None, :], -math.inf)
    node_max, node_idx = scores.max(dim=-1)  # [B, La] best B for each A token
    a_valid = (2 * torch.arange(La))[None] < n[:, None]  # [B, La]
    node_max = node_max.masked_fill(~a_valid, -math.inf)  # padding ranks last, never merges
    merged = edge_rank(node_max) < r[:, None]  # [B, La]
    target = torch.arange(L).repeat(B, 1)  # [B, L]
    target[:, ::2] = torch.where(merged, 2 * node_idx + 1, target[:, ::2])
    return target


def merge_into(x: Tensor, size: Tensor, target: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Merge every token into its target with size-weighted averaging (ToMe §3.1, "Tracking Token Size").

    x: [B, L, C]; size: [B, L]; target: int64 [B, L] (a survivor targets itself); n: int64 [B].
    Returns (x' [B, L', C], size' [B, L'], slot int64 [B, L] the new slot of each old token, n' [B]);
    padding keeps size 0 and its slot means nothing.
    Survivors are re-ordered by their group's smallest old slot, i.e. by representative (the old
    order is by representative), so the next round's A/B alternation still alternates neighbours.
    """
    B, L, C = x.shape
    j = torch.arange(L).expand(B, L)  # [B, L] old slot
    survivor = (target == j) & (j < n[:, None])  # [B, L]
    first = torch.full((B, L), L).scatter_reduce(1, target, j, "amin")  # [B, L] smallest member slot
    key = torch.where(survivor, first, L + j)  # survivors by representative, then padding
    new_order = torch.argsort(key, dim=1)  # [B, L] new slot k holds old slot new_order[:, k]
    new_slot = torch.empty_like(new_order).scatter_(1, new_order, j.contiguous())  # [B, L] of survivors
    slot = new_slot.gather(1, target)  # [B, L] new slot of every old token
    n_new = survivor.sum(1)
    L_new = int(n_new.max())
    xs = torch.zeros(B, L, C).scatter_add_(1, slot[..., None].expand(B, L, C), x * size[..., None])
    sz = torch.zeros(B, L).scatter_add_(1, slot, size)
    xs, sz = xs[:, :L_new], sz[:, :L_new]
    # padding may sit past the new length: point it at the last slot (it has size 0, it adds nothing)
    slot = slot.clamp_max(L_new - 1)
    return xs / sz.clamp_min(1e-12)[..., None], sz, slot, n_new


def tome_rounds(
    x: Tensor, size: Tensor, n: Tensor, k: Tensor, gid: Tensor, chunks: list[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Bipartite soft matching rounds until each set b holds k[b] tokens; returns (gid, n).

    Per round r = min(n - k, ceil(n/2)) merges (ceil(n/2) = |A|: all of A at most). k >= 1.
    chunks: see `bipartite_targets`.
    """
    while True:
        r = torch.minimum(n - k, (n + 1) // 2).clamp_min(0)  # [B]
        if not bool((r > 0).any()):
            return gid, n
        target = bipartite_targets(x, n, r, chunks)
        x, size, slot, n = merge_into(x, size, target, n)
        gid = slot.gather(1, gid)


def groups_from_slots(gid: Tensor, orig: Tensor, n: Tensor, total: int) -> Tensor:
    """Video-wide group ids: set b's slots come after all slots of sets < b.

    gid: int64 [B, L0] slot of each original token; orig: int64 [B, L0] its flat base-grid index (-1 =
    padding); n: [B] slots per set -> int64 [total] group of every base token, in raster order of the
    representatives (sets are in video order, slots in representative order within a set).
    """
    offset = n.cumsum(0) - n  # [B]
    valid = orig >= 0
    group = torch.full((total,), -1, dtype=torch.long)
    group[orig[valid]] = (gid + offset[:, None])[valid]
    return group


def frame_budgets(T: int, N: int, budget: int | None, ratio: float, name: str) -> Tensor:
    """Visual tokens kept per frame, int64 [T].

    budget (per video): q = budget // T each, the first budget % T frames one more; budget >= T*N keeps
    everything. ratio: round(ratio * N) per frame (half up), at least 1.
    """
    if budget is None:
        return torch.full((T,), min(N, max(1, math.floor(ratio * N + 0.5))), dtype=torch.long)
    if budget >= T * N:
        return torch.full((T,), N, dtype=torch.long)
    if budget < T:
        raise ValueError(f"{name} keeps at least one token per frame: budget {budget} < {T} frames")
    q, rem = divmod(budget, T)
    return q + (torch.arange(T) < rem).long()


@register(
    "tome",
    paper="Token Merging: Your ViT But Faster (ToMe, arXiv 2210.09461)",
    section="§3.1 bipartite soft matching",
    summary="bipartite soft matching per frame",
    licence="official code CC-BY-NC; this is a clean re-implementation from the paper",
    budget=True,
)
@dataclass(frozen=True)
class ToMe(Budgeted):
    """Bipartite soft matching (ToMe §3.1) within each frame, repeated until the frame's budget.

    Per round: tokens (in raster order of their representatives) alternate into A and B; each A token
    draws an edge to its most similar B token (cosine on the features: offline there are no attention
    keys); the r = min(needed, |A|) most similar edges are kept, their A tokens merge into their B
    token by size-weighted averaging (§3.1 "Tracking Token Size"), and the rest are concatenated.
    A merged token is the plain mean of the original tokens it holds (weights 1/|group|), so its pos is
    its smallest base index. Budget: `budget` visual tokens per video, q = budget // T per frame and
    the first budget % T frames one more (budget < T is refused, budget >= input keeps everything);
    with budget=None, round(ratio * N) per frame. Deviations from the paper: ToMe merges a fixed r in
    every transformer layer, inside the network; here it is repeated offline on one layer's features,
    with as many merges per round as needed (at most |A|). ToMe concatenates [unmerged A, B]; here
    survivors are re-sorted into raster order so the next round alternates spatial neighbours.
    Proportional attention does not apply offline.
    """

    ratio: float = 0.5
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """The bipartite cosines of every merging round in every frame."""
        T, hb, wb = red.base_grid
        per_frame = red.n_visual() // max(T, 1)
        return T * tome_round_flops(hb * wb, max(per_frame, 1), C)

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """Frames of all videos concatenated: one merge pass per round for the whole batch (the cosine
        product is taken per video, see `bipartite_targets`). Videos are batched together when their
        frames' budgets take the same values (always with ratio=; with budget=, the same T): then every
        round runs with the same padding and the same number of rounds as for each video alone, so
        even the intermediate size-weighted means are the same bits."""
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        N = math.ceil(H / 2) * math.ceil(W / 2) if self.grid == "pooled" else H * W
        ks = [frame_budgets(T, N, self.budget, self.ratio, "tome") for T in Ts]  # [T_v] each
        out: list[Reduction | None] = [None] * len(xs)
        for members in groups_by([frozenset(k.tolist()) for k in ks]).values():
            reds = self._same_budgets([xs[v] for v in members], [ks[v] for v in members], grid)
            for v, red in zip(members, reds, strict=True):
                out[v] = red
        return out

    def _same_budgets(self, xs: list[Tensor], ks: list[Tensor], grid: tuple[int, int]) -> list[Reduction]:
        H, W = int(grid[0]), int(grid[1])
        Ts = [int(x.shape[0]) for x in xs]
        x, _ = concat_frames(xs)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [sum T, N, C] float32
        TT, N = feats.shape[0], hb * wb
        k = torch.cat(ks)  # [sum T]
        gid = torch.arange(N).repeat(TT, 1)  # [TT, N] slot of each original token
        gid, n = tome_rounds(feats, torch.ones(TT, N), torch.full((TT,), N), k, gid, Ts)
        group = groups_from_slots(gid, torch.arange(TT * N).reshape(TT, N), n, TT * N)
        # ids per video: subtract the groups of the earlier videos' frames
        first = torch.tensor([0, *Ts[:-1]]).cumsum(0)  # [B] first frame of each video
        done = torch.cat((torch.zeros(1, dtype=torch.long), n.cumsum(0)))[first]  # [B] groups before
        group = group - torch.repeat_interleave(done, torch.tensor(Ts) * N)
        # equal weights: every original token counts once (the merged token is its group's mean)
        return reductions_from_groups(
            feats.reshape(TT * N, -1),
            group,
            torch.ones(TT * N),
            self.grid,
            [(T, hb, wb) for T in Ts],
            [T * H * W for T in Ts],
        )
