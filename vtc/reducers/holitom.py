"""`holitom`: HoliTom (HoliTom: Holistic Token Merging for Fast Video Large Language Models, arXiv
2505.21334), the outer-LLM stage: global temporal segmentation, temporal then spatial merging."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    reduction_from_entries,
)
from vtc.reducers.cluster import density_peaks
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import ReducerError, register


def static_counts(static: Tensor) -> list[list[int]]:
    """P[s][e]: tokens temporal merging removes if frames s..e form one segment, static: bool [T-1, N].

    static[t, n] = "position n is alike in frames t and t+1"; a position is static over s..e when it is
    alike in every consecutive pair, and merging it keeps one token of e-s+1: P[s][e] = (e - s) x
    #static positions (0 for e <= s). As the official `get_pruned_static_count_vectorized`.
    """
    T = static.shape[0] + 1
    P = [[0] * T for _ in range(T)]
    for s in range(T - 1):
        n_static = static[s:].long().cumprod(dim=0).sum(dim=1).tolist()  # [T-1-s]: e = s+1 .. T-1
        for i, c in enumerate(n_static):
            P[s][s + 1 + i] = c * (i + 1)
    return P


def segment_frames(static: Tensor, max_window: int) -> tuple[list[tuple[int, int]], int]:
    """The segmentation maximising the tokens removed: ([(start, end), ...] covering 0..T-1, total).

    dp[i] = max(dp[i-1], max over 2 <= w <= min(i+1, max_window) of dp[i-w] + P[i-w+1][i]) (dp[-1] = 0),
    segments read back from each frame's best start. Ties keep the earlier candidate (a lone frame, then
    the shortest window), as the official `select_static_windows` (strict >). Integers, exact.
    """
    T = static.shape[0] + 1
    P = static_counts(static)
    dp, start = [0] * T, [0] * T
    for i in range(T):
        best, best_start = (dp[i - 1] if i else 0), i
        for w in range(2, min(i + 1, max_window) + 1):
            j = i - w
            v = (dp[j] if j >= 0 else 0) + P[j + 1][i]
            if v > best:
                best, best_start = v, j + 1
        dp[i], start[i] = best, best_start
    segments, i = [], T - 1
    while i >= 0:
        segments.append((start[i], i))
        i = start[i] - 1
    return segments[::-1], dp[-1]


def dpc_knn(x: Tensor, n_centres: int, k: int) -> tuple[Tensor, Tensor]:
    """DPC-KNN centres of each set of x [B, S, C]: (centres int64 [B, n_centres] ascending, dist [B, S, S]),
    the n_centres best by `density_peaks` (the official `cluster_dpc_knn`)."""
    order, dist = density_peaks(x, k)
    return order[:, :n_centres].sort(dim=-1).values, dist


def cluster_weights(dist: Tensor, centres: Tensor, beta: float | None) -> tuple[Tensor, Tensor]:
    """Each token's cluster and weight in its merged token, for one set: dist [S, S], centres [K] sorted.

    Every non-centre joins its nearest centre (the first on ties, argmin). The merged token is
    beta * centre + (1 - beta) * mean(members), or the centre alone without members (the official
    default, NO_BETA unset); beta=None: the plain mean of the centre and its members (NO_BETA=1).
    Returns (cluster int64 [S] in 0..K-1, weight float64 [S]) with weights summing to 1 per cluster.
    """
    S, K = dist.shape[0], centres.shape[0]
    cluster = dist[:, centres].argmin(dim=1)  # [S]
    cluster[centres] = torch.arange(K)
    is_centre = torch.zeros(S, dtype=torch.bool)
    is_centre[centres] = True
    members = torch.bincount(cluster[~is_centre], minlength=K).double()  # [K]
    m = members[cluster]  # [S] members of each token's cluster
    if beta is None:
        return cluster, 1.0 / (m + 1)
    member_w = (1 - beta) / m.clamp(min=1)
    centre_w = torch.where(m > 0, torch.full_like(m, beta), torch.ones_like(m))
    return cluster, torch.where(is_centre, centre_w, member_w)


@register(
    "holitom",
    paper="HoliTom: Holistic Token Merging for Fast Video Large Language Models (arXiv 2505.21334)",
    section="§3 outer-LLM merging: global temporal segmentation, temporal + spatial merging",
    summary="segment, merge static, keep attended",
    adaptive=True,
    needs=("attention",),
    params={
        "ratio": "share of the video's base tokens kept (the official RETAIN_RATIO), rescaled after "
        "temporal merging",
        "tau": "cosine between consecutive frames above which a position is static (the official T)",
        "beta": "weight of a cluster's centre in its merged token, the rest the members' mean; "
        "none: the plain mean (official NO_BETA=1)",
        "k": "neighbours of the DPC-KNN density (the official K)",
        "max_window": "longest segment in frames (the official MAX_WINDOW_SIZE)",
    },
)
@dataclass(frozen=True)
class HoliTom(Reducer):
    """HoliTom's outer-LLM merging ("HoliTom w/o M"): temporal segmentation, temporal merging, spatial merging.

    s(t, n) = cos(x[t, n], x[t+1, n]); position n is static over frames s..e when s(t, n) > tau for
    every t in s..e-1. Segmentation (global, over the whole video): the split of 0..T-1 into segments of
    at most max_window frames maximising R = sum over segments of (e - s) x #static positions (the
    tokens temporal merging removes), by dynamic programming (see `segment_frames`). Then
    r' = min(ratio / (1 - R / (T*N)), 1), so that about ratio*T*N tokens remain in all. Per segment:
    - temporal merging: each static position becomes the mean of its e-s+1 frames;
    - static tokens (spatial merging): round(S_s * r') DPC-KNN centres (`dpc_knn`, k = min(k, centres));
      every other static token joins its nearest centre, merged token = beta*centre + (1-beta)*mean of
      its members (`cluster_weights`), placed in the segment's first frame;
    - dynamic tokens, each frame: the ceil(S_d * r') most attended (stored SigLIP attention), unchanged.

    In plan terms a static cluster averages its positions over the segment's frames: weight beta/L at
    the centre's L frames, (1-beta)/(m L) at each member's (m members); weights sum to 1.

    As the official code (cokeshao/HoliTom, holitom/llava_arch.py, commit e9b2972, default path:
    D=0, NO_BETA unset, MAX_WINDOW_SIZE 1024), with RETAIN_RATIO 0.10 and T 0.65 as its LLaVA-OV-7B
    10% script. The paper (Fig. 2) merges static tokens "into their first occurrence"; the code
    averages the segment's frames and places the result in its first frame, as vtc. Its D share of DPC-KNN "contextual" dynamic tokens is 0 by default and the D > 0 path
    fails on a broadcast, so vtc keeps the attention top-k only; its density noise is replaced by an
    index tie-break. The in-LLM merge stage (HOLITOM_k / HOLITOM_r) is the online method, not this
    reducer. The official code runs on projected, pooled LLM-space features in the model dtype; vtc
    runs on the stored encoder features (and attention) in float32, pooled to 14x14 by default. Where
    a segment has no dynamic token and would keep fewer than min(S_s, e-s+1) static tokens (official:
    possibly none), vtc keeps that many, so a video keeps a token per frame where its grid allows
    (this never triggers at <= 32 frames x 196 tokens with ratio >= 0.1).
    """

    ratio: float = 0.10
    tau: float = 0.65
    beta: float | None = 0.6
    k: int = 7
    max_window: int = 1024
    grid: Grid = "pooled"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [-1, 1] (a cosine), got {self.tau}")
        if self.beta is not None and not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1] or none, got {self.beta}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.max_window < 1:
            raise ValueError(f"max_window must be >= 1, got {self.max_window}")

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Consecutive-frame cosines, then per segment the static tokens' temporal mean and distance matrix.

        The static clusters are the plan rows spanning several frames (a segment's L frames x (members+1)
        positions), which gives each segment's static count S_s: cost C*L*S_s + 2*C*S_s^2. The DP and
        the attention top-k are comparisons.
        """
        T, hb, wb = red.base_grid
        N = hb * wb
        flops = cosine_flops((T - 1) * N, T * N, C)
        counts = (red.indptr[1:] - red.indptr[:-1]).tolist()
        starts = red.indptr[:-1].tolist()
        frames = (red.src // N).tolist()
        per_segment: dict[int, list[int]] = {}  # first frame -> [L, S_s]
        for n, c in zip(starts, counts, strict=True):
            if c < 2 or frames[n] == frames[n + c - 1]:
                continue  # a kept dynamic token
            L = frames[n + c - 1] - frames[n] + 1
            seg = per_segment.setdefault(frames[n], [L, 0])
            seg[1] += c // L
        for L, s in per_segment.values():
            flops += C * L * s + 2 * C * s * s
        return float(flops)

    def __call__(self, x: Tensor, grid: tuple[int, int], attention: Tensor | None = None) -> Reduction:
        T, H, W = check_input(x, grid)
        if attention is None:
            raise ReducerError("holitom needs attention scores: extract with `vtc extract --save-attention`")
        if tuple(attention.shape) != (T, H * W):
            raise ReducerError(f"holitom: attention must be [{T}, {H * W}], got {list(attention.shape)}")
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        # as the official code: the attention pooled like the features
        attn = base_features(attention[..., None], (H, W), self.grid)[0][..., 0]
        N, C = hb * wb, feats.shape[-1]
        group, weight = self._groups(feats, attn)
        base_grid = (T, hb, wb)
        idx = (group >= 0).nonzero().squeeze(1)  # a token feeds one merged token at most
        return reduction_from_entries(
            feats.reshape(T * N, C), group[idx], idx, weight[idx].float(), self.grid, base_grid, T * H * W
        )

    def _groups(self, feats: Tensor, attn: Tensor) -> tuple[Tensor, Tensor]:
        """Group ids (any order, -1 dropped) and float64 weights of the T*N base tokens."""
        T, N, C = feats.shape
        unit = F.normalize(feats, p=2, dim=-1)  # [T, N, C]
        # the dot of unit vectors: the official F.cosine_similarity of them within 3e-8 (the cheaper of the two)
        static = torch.linalg.vecdot(unit[:-1], unit[1:]) > self.tau  # [T-1, N]
        segments, removed = segment_frames(static, self.max_window)
        total = T * N
        r = min(self.ratio / ((total - float(removed)) / total), 1)  # the official expression
        group = torch.full((T, N), -1, dtype=torch.long)
        weight = torch.zeros(T, N, dtype=torch.float64)
        next_id = 0
        for s, e in segments:
            L = e - s + 1
            mask = static[s:e].all(dim=0) if L > 1 else torch.zeros(N, dtype=torch.bool)  # [N]
            dyn = (~mask).nonzero().squeeze(1)  # [S_d] dynamic positions, ascending
            n_dyn = int(dyn.numel())
            keep = math.ceil(n_dyn * r)  # per frame, the official count
            if keep:
                a = attn[s : e + 1, dyn]  # [L, S_d]
                top = torch.sort(a, dim=1, descending=True, stable=True).indices[:, :keep]  # [L, keep]
                ids = next_id + torch.arange(L * keep).reshape(L, keep)
                group[s : e + 1].scatter_(1, dyn[top], ids)
                weight[s : e + 1].scatter_(1, dyn[top], torch.ones(L, keep, dtype=torch.float64))
                next_id += L * keep
            stat = mask.nonzero().squeeze(1)  # [S_s] static positions, ascending
            n_stat = int(stat.numel())
            n_centres = round(n_stat * r)  # the official count (Python round, half to even)
            if n_dyn == 0:  # a segment keeps at least a token per frame (see the docstring)
                n_centres = max(n_centres, min(n_stat, L))
            if n_centres:
                merged = feats[s : e + 1, mask].mean(dim=0)  # [S_s, C]: temporal merging
                centres, dist = dpc_knn(merged[None], n_centres, min(self.k, n_centres))
                cluster, w = cluster_weights(dist[0], centres[0], self.beta)
                group[s : e + 1, stat] = next_id + cluster  # the same cluster in every frame
                weight[s : e + 1, stat] = w / L
                next_id += n_centres
        return group.reshape(-1), weight.reshape(-1)
