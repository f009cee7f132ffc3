"""`prumerge+`: PruMerge+ (LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models,
arXiv 2403.15388): per frame, the outliers of an attention-like score plus a spatial lattice, each kept token
then merged with its k nearest tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    llava_pool,
    reduction_from_entries,
)
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import ReducerError, register

Score = Literal["feature-mean", "attention"]


def frame_scores(feats: Tensor, score: str, attention: Tensor | None, grid: tuple[int, int]) -> Tensor:
    """What stands in for the [CLS] attention: a [T, N] float64 >= 0 on the base grid.

    feature-mean: Eq. 1 with the frame's mean token as the [CLS] query and the features as keys (no
    projections): a = softmax_n(<x_n, mean_m x_m> / sqrt(C)). attention: the stored [T, H*W] native
    attention (SigLIP's last layer, averaged over heads and queries); on the pooled grid it is pooled
    as the features are, then rescaled so each frame keeps its native total (the merge weights keep
    their scale).
    """
    T, N, C = feats.shape
    if score == "feature-mean":
        logits = (feats * feats.mean(dim=1, keepdim=True)).sum(dim=-1) / math.sqrt(C)  # [T, N]
        return logits.double().softmax(dim=1)
    a = attention.double()
    if a.shape[1] != N:  # pooled base grid: pool the map like the features, keep each frame's total
        pooled = llava_pool(a[..., None], grid)[0][..., 0].double()
        a = pooled * (a.sum(dim=1, keepdim=True) / pooled.sum(dim=1, keepdim=True).clamp_min(1e-300))
    return a


def iqr_outliers(a: Tensor) -> Tensor:
    """bool [T, N]: a > Q3 + 1.5 (Q3 - Q1) within each frame (§3.2; quartiles linear as numpy.percentile)."""
    q = torch.quantile(a, torch.tensor([0.25, 0.75], dtype=a.dtype), dim=1)  # [2, T]
    return a > (q[1] + 1.5 * (q[1] - q[0]))[:, None]


def kept_indices(a: Tensor, outliers: Tensor) -> Tensor:
    """One frame's kept tokens, int64 ascending: its n outliers (at least its top token), plus the lattice
    arange(0, N-1, max(1, floor(floor(N/n)/3))) -- the official `arange(0, 575, int(int(1/ratio)/3))`
    with ratio = n/N, in exact integers (the official floats give the same counts at N = 576)."""
    N = a.shape[0]
    top = outliers.nonzero().squeeze(1)
    if top.numel() == 0:  # the official code divides by zero here; the top token stands in
        top = a.argmax().reshape(1)
    stride = max(1, (N // top.numel()) // 3)
    keep = torch.zeros(N, dtype=torch.bool)
    keep[top] = True
    keep[torch.arange(0, N - 1, stride)] = True
    return keep.nonzero().squeeze(1)


def merge_rows(
    unit: Tensor, a: Tensor, kept: Tensor, k: int, extra: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One frame's plan entries (row, src, weight float64, rep): kept token p's row holds p with weight 1
    and its k nearest other tokens j (cosine on ``unit`` [N, C] unit rows, ties to the lower index) with
    weight a_j; with ``extra`` one more row holds every pruned token j with weight a_j. Unnormalised."""
    N, M = unit.shape[0], kept.shape[0]
    k = min(k, N - 1)
    sim = unit[kept] @ unit.T  # [M, N]
    sim[torch.arange(M), kept] = -math.inf  # a token is not its own neighbour
    near = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]  # [M, k]
    row = torch.cat((torch.arange(M), torch.arange(M).repeat_interleave(k)))
    src = torch.cat((kept, near.reshape(-1)))
    weight = torch.cat((torch.ones(M, dtype=torch.float64), a[near.reshape(-1)]))
    rep = kept
    if extra and M < N:
        pruned = torch.ones(N, dtype=torch.bool)
        pruned[kept] = False
        pruned = pruned.nonzero().squeeze(1)
        wp = a[pruned]
        if not bool((wp > 0).any()):  # a score of exactly 0 everywhere pruned: their plain mean
            wp = torch.ones_like(wp)
        row = torch.cat((row, torch.full((pruned.numel(),), M)))
        src, weight = torch.cat((src, pruned)), torch.cat((weight, wp))
        rep = torch.cat((kept, pruned[:1]))
    return row, src, weight, rep


@register(
    "prumerge+",
    paper="LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models (arXiv 2403.15388)",
    section="§3.2 IQR outliers, §3.3 key-similarity merging, PruMerge+ spatial sampling",
    summary="IQR outliers + lattice, kNN-merged",
    adaptive=True,
    params={
        "score": "what stands in for SigLIP's missing [CLS] attention: feature-mean (softmax of each token's "
        "dot product with its frame's mean token / sqrt(C); any store) or attention (stored last-layer "
        "attention, averaged over heads and queries; vtc extract --save-attention)",
        "k": "nearest tokens (cosine) merged into each kept token, weighted by their score (official 32)",
        "extra": "one more token per frame: the score-weighted mean of the pruned tokens (official code)",
    },
)
@dataclass(frozen=True)
class PruMergePlus(Reducer):
    """PruMerge+ per frame: IQR outliers of an attention score, a spatial lattice, then k-NN merging.

    Per frame (N base tokens x_n, score a_n >= 0): outliers O = {n : a_n > Q3 + 1.5 (Q3 - Q1)} (§3.2, the
    IQR rule; adaptive: n = |O| follows the content). PruMerge+ adds the lattice {0, s, 2s, ...} < N-1 of the raster
    index, s = max(1, floor(floor(N/n)/3)) (the official code's step); kept K = O u lattice. Each kept p
    becomes y'_p = (x_p + sum_{j in kNN(p)} a_j x_j) / (1 + sum a_j), kNN(p) its k most cosine-similar other
    tokens (§3.3, Algorithm 1); with `extra`, one more token sum_{j not in K} a_j x_j / sum a_j. Tokens in
    raster order of their largest-weight source (a kept token's own position).
    SigLIP has no [CLS] token: `score` says what stands in for its attention (see `frame_scores`);
    feature-mean, the default, needs nothing beside the features and is not calibrated on real SigLIP
    features (its outlier share depends on their scale); attention is what visionzip uses.
    Official code (42Shawn/LLaVA-PruMerge, clip_encoder.py `token_prune_merge_advanced_plus`, commit
    097c0411): CLIP's penultimate-layer CLS attention and keys, neighbours among all other tokens (kept
    or pruned) as in the paper, k = 32, neighbour weights a_j not normalised (y'_p = x_p + sum a_j x_j),
    the extra token sum_{pruned} a_j x_j; with no outlier it divides by zero. vtc: features for keys, weights
    normalised to 1 (the plan averages), per frame of a video, at least the top token per frame, on
    LLaVA-OV's pooled 14x14 grid by default (the official lattice's 575 = N - 1 at N = 576).
    """

    score: Score = "feature-mean"
    k: int = 32
    extra: bool = True
    grid: Grid = "pooled"

    def __post_init__(self):
        super().__post_init__()
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")

    @property
    def needs(self) -> tuple[str, ...]:
        return ("attention",) if self.score == "attention" else ()

    def decision_flops(self, red: Reduction, C: int) -> float:
        """The score (a dot product with the mean per token), a norm per token, and each kept token's
        cosine with the frame's N tokens (counted for every visual token, the extra ones included)."""
        T, hb, wb = red.base_grid
        N = hb * wb
        return 2 * C * T * N * (self.score == "feature-mean") + cosine_flops(red.n_visual() * N, T * N, C)

    def __call__(self, x: Tensor, grid: tuple[int, int], attention: Tensor | None = None) -> Reduction:
        T, H, W = check_input(x, grid)
        if self.score == "attention":
            if attention is None:
                raise ReducerError(
                    "prumerge+ score=attention needs attention scores: extract with "
                    "`vtc extract --save-attention`, or use score=feature-mean"
                )
            if attention.shape != (T, H * W):
                raise ReducerError(
                    f"prumerge+: attention must be [{T}, {H * W}], got {list(attention.shape)}"
                )
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        N, C = hb * wb, feats.shape[-1]
        a = frame_scores(feats, self.score, attention, (H, W))  # [T, N] float64
        outliers = iqr_outliers(a)
        unit = F.normalize(feats, dim=-1)
        rows, srcs, ws, reps, n = [], [], [], [], 0
        for t in range(T):
            kept = kept_indices(a[t], outliers[t])
            row, src, w, rep = merge_rows(unit[t], a[t], kept, self.k, self.extra)
            rows.append(row + n)
            srcs.append(src + t * N)
            ws.append(w)
            reps.append(rep + t * N)
            n += rep.numel()
        return reduction_from_entries(
            feats.reshape(T * N, C),
            torch.cat(rows),
            torch.cat(srcs),
            torch.cat(ws),
            self.grid,
            (T, hb, wb),
            T * H * W,
            tiebreak=torch.cat(reps),
        )
