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
    Reduction,
    base_features,
    check_grid,
    check_input,
    reduction_from_groups,
)
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


def bipartite_targets(x: Tensor, n: Tensor, r: Tensor) -> Tensor:
    """One round of bipartite soft matching (ToMe §3.1, "Bipartite Soft Matching") on a padded batch.

    x: [B, L, C] current tokens; n: int64 [B] valid tokens; r: int64 [B] merges, r <= ceil(n/2).
    Slots alternate into A (even) and B (odd); each A token's edge goes to its most similar B token
    (cosine, ties -> lowest B); the r most similar edges are kept and their A tokens merge into B.
    Returns target: int64 [B, L], the slot each token goes to (itself unless merged).
    """
    B, L, _ = x.shape
    xn = unit(x)
    a, b = xn[:, ::2], xn[:, 1::2]  # [B, La, C], [B, Lb, C]
    La, Lb = a.shape[1], b.shape[1]
    scores = a @ b.transpose(1, 2)  # [B, La, Lb] cosine similarities
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


def tome_rounds(x: Tensor, size: Tensor, n: Tensor, k: Tensor, gid: Tensor) -> tuple[Tensor, Tensor]:
    """Bipartite soft matching rounds until each set b holds k[b] tokens; returns (gid, n).

    Per round r = min(n - k, ceil(n/2)) merges (ceil(n/2) = |A|: all of A at most). k >= 1.
    """
    while True:
        r = torch.minimum(n - k, (n + 1) // 2).clamp_min(0)  # [B]
        if not bool((r > 0).any()):
            return gid, n
        target = bipartite_targets(x, n, r)
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


def check_params(budget: int | None, ratio: float, grid: str) -> None:
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    check_grid(grid)


@register(
    "tome",
    paper="ToMe (Bolya et al., ICLR 2023), bipartite soft matching",
    licence="official code CC-BY-NC; this is a clean re-implementation from the paper",
    budget=True,
)
@dataclass(frozen=True)
class ToMe:
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

    budget: int | None = None
    ratio: float = 0.5
    grid: str = "pooled"

    def __post_init__(self):
        check_params(self.budget, self.ratio, self.grid)

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        N = hb * wb
        k = frame_budgets(T, N, self.budget, self.ratio, "tome")  # [T]
        gid = torch.arange(N).repeat(T, 1)  # [T, N] slot of each original token
        gid, n = tome_rounds(feats, torch.ones(T, N), torch.full((T,), N), k, gid)
        group = groups_from_slots(gid, torch.arange(T * N).reshape(T, N), n, T * N)
        # equal weights: every original token counts once (the merged token is its group's mean)
        return reduction_from_groups(
            feats.reshape(T * N, -1), group, torch.ones(T * N), self.grid, (T, hb, wb), T * H * W
        )
