"""`prunevid`: PruneVid (arXiv 2412.16117), the pre-LLM stage — scenes, static tokens merged over time, then
DPC-KNN clusters within each frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    KIND_VISUAL,
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    reduction_from_groups,
    relabel_by_first,
)
from vtc.reducers.cluster import dpc_knn
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register


def contiguous_scenes(label: list[int]) -> list[int]:
    """Cluster labels of consecutive frames -> scene lengths, the official refinement (`refine_clusters`).

    Each cluster keeps its longest runs of frames (all of them when several are equally long), unless the
    longest is one frame; the other runs become unassigned. Left to right, each unassigned run joins the
    longer neighbouring run (the left one on a tie; lengths as relabelled so far); with no neighbour at
    all the video is one scene. Scenes are then the runs of equal labels, each two frames or more (T > 1).
    """
    T = len(label)
    runs: dict[int, list[tuple[int, int]]] = {}
    t = 0
    while t < T:
        e = t
        while e + 1 < T and label[e + 1] == label[t]:
            e += 1
        runs.setdefault(label[t], []).append((t, e))
        t = e + 1
    out = list(label)
    for spans in runs.values():
        longest = max(e - s + 1 for s, e in spans)
        for s, e in spans:
            if longest == 1 or e - s + 1 < longest:
                out[s : e + 1] = [-1] * (e - s + 1)
    t = 0
    while t < T:
        if out[t] != -1:
            t += 1
            continue
        s = t
        while t < T and out[t] == -1:
            t += 1
        e = t - 1
        left = right = None
        left_len = right_len = 0
        if s > 0:
            left, i = out[s - 1], s - 1
            while i >= 0 and out[i] == left:
                i -= 1
            left_len = s - 1 - i
        if e < T - 1:
            right, i = out[e + 1], e + 1
            while i < T and out[i] == right:
                i += 1
            right_len = i - e - 1
        new = right if right_len > left_len else (left if left is not None else right)
        out[s : e + 1] = [0 if new is None else new] * (e - s + 1)
    lengths, t = [], 0
    while t < T:
        e = t
        while e + 1 < T and out[e + 1] == out[t]:
            e += 1
        lengths.append(e - t + 1)
        t = e + 1
    return lengths


@register(
    "prunevid",
    paper="PruneVid: Visual Token Pruning for Efficient Video Large Language Models (arXiv 2412.16117)",
    section="§3.2 merging spatial-temporal tokens; pre-LLM stage only (its attention pruning runs in the LLM)",
    summary="merge static tokens, cluster the rest",
    adaptive=True,
    licence="official code CC BY-NC-SA 4.0; this is a re-implementation, no code copied",
    params={
        "tau": "a position is static in a scene when its mean pairwise cosine across the frames exceeds this",
        "temporal_segment_ratio": "scene clusters = int(T x this), found by DPC-KNN on the frame means",
        "cluster_ratio": "each spatial merge keeps int(n x this) DPC-KNN clusters of its n tokens",
        "k": "neighbours of DPC-KNN's local density (scenes and spatial merges)",
        "cluster_above": "a set of at most this many tokens is not clustered (the official 14)",
    },
)
@dataclass(frozen=True)
class PruneVid(Reducer):
    """PruneVid's spatial-temporal token merging, before the LLM: scenes, static tokens, spatial clusters.

    1. Scenes: the frame means m_t = mean_p x[t, p] are clustered by DPC-KNN into int(T * temporal_segment_ratio)
       clusters; the labels are made contiguous (`contiguous_scenes`), each run of frames is a scene S.
    2. Static tokens: position p is static in S when the mean pairwise cosine
       (1 / (|S|(|S|-1))) sum_{t != t' in S} cos(x[t, p], x[t', p]) > tau; a static position becomes one token,
       the mean over S of x[t, p]. A one-frame scene (only at T = 1) has no static tokens.
    3. Spatial merging: S's static tokens form one set, each frame's dynamic tokens one set per frame; a set
       of n > cluster_above tokens is clustered by DPC-KNN (`vtc.reducers.cluster.dpc_knn`, k neighbours) into
       max(1, int(n * cluster_ratio)) clusters, each becoming the mean of its members.
    Every output token is thus a uniform mean of base tokens (weights sum to 1); tokens come in raster order
    of their first member, which is their pos. extras["segment"] int32 [T] is each frame's scene,
    extras["static"] uint8 [K] marks the static-merged tokens: PruneVid's in-LLM stage (attention pruning
    at a middle layer, keeping a share alpha of each scene's static tokens and of each frame's dynamic
    ones) is an online method of its own, not part of this reducer.
    Defaults: the official scripts/eval.sh (tau 0.8, ratios 0.25 / 0.5, k 7; PLLaVA, 16 frames). The official
    code (`merge_frames_dynamic`) runs on projected PLLaVA tokens (16x12x12) and orders each scene's static
    tokens first, then each frame's dynamic ones; vtc runs on stored encoder features, pooled to LLaVA-OV's
    14x14 grid by default, in raster order, with equal densities ordered by index (official: unseeded
    noise), and clamps the cluster count to >= 1 and k to <= n where the official code fails (T < 4, T < 7);
    otherwise it reproduces the official partitions (tests/test_prunevid.py).
    """

    tau: float = 0.8
    temporal_segment_ratio: float = 0.25
    cluster_ratio: float = 0.5
    k: int = 7
    cluster_above: int = 14
    grid: Grid = "pooled"

    def __post_init__(self):
        super().__post_init__()
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [-1, 1], got {self.tau}")
        if not 0.0 < self.temporal_segment_ratio <= 1.0:
            raise ValueError(f"temporal_segment_ratio must be in (0, 1], got {self.temporal_segment_ratio}")
        if not 0.0 < self.cluster_ratio <= 1.0:
            raise ValueError(f"cluster_ratio must be in (0, 1], got {self.cluster_ratio}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.cluster_above < 0:
            raise ValueError(f"cluster_above must be >= 0, got {self.cluster_above}")

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Frame means and their distances, the per-scene pairwise cosines at every position, and the
        distance matrix of every clustered set (its n x n pairs)."""
        T, hb, wb = red.base_grid
        N = hb * wb
        seg = red.extras["segment"].long()
        size = torch.bincount(seg).tolist()  # frames per scene
        visual = red.kind == KIND_VISUAL
        members = (red.indptr[1:] - red.indptr[:-1])[visual]
        static = red.extras["static"].bool()
        # base tokens of each scene's static tokens, and so its static positions (members / frames)
        seg_of = seg[red.pos[visual][:, 0].long()]
        static_members = torch.zeros(len(size), dtype=torch.long).index_add_(
            0, seg_of[static], members[static]
        )
        pairs = norms = 0
        for s, w in enumerate(size):
            n_s = int(static_members[s]) // w
            n_d = N - n_s
            if n_s > self.cluster_above:
                pairs, norms = pairs + n_s * n_s, norms + n_s
            if n_d > self.cluster_above:
                pairs, norms = pairs + w * n_d * n_d, norms + w * n_d
        scenes = [w for w in size if w > 1]  # a one-frame scene (T = 1) has no static test
        flops = cosine_flops(sum(w * w for w in scenes) * N, sum(scenes) * N, C) + cosine_flops(
            pairs, norms, C
        )
        if T > 1:  # the scenes: frame means, then their distances
            flops += T * N * C + cosine_flops(T * T, T, C)
        return flops

    def scenes(self, feats: Tensor) -> list[int]:
        """Scene lengths (frames, in order) of a video's base features [T, N, C] float32."""
        T = feats.shape[0]
        if T == 1:
            return [1]
        m = max(1, int(T * self.temporal_segment_ratio))
        return contiguous_scenes(dpc_knn(feats.mean(dim=1), m, self.k)[1].tolist())

    def spatial(self, x: Tensor) -> Tensor:
        """Cluster labels int64 [n] of one set of tokens x [n, C]: DPC-KNN above `cluster_above`, else each alone."""
        n = x.shape[0]
        if n <= self.cluster_above:
            return torch.arange(n)
        return dpc_knn(x, max(1, int(n * self.cluster_ratio)), self.k)[1]

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        N, C = hb * wb, feats.shape[-1]
        lengths = self.scenes(feats)
        label = torch.empty(T, N, dtype=torch.long)  # group of each base token, unique ids for now
        is_static: list[bool] = []  # per group id
        t0 = 0
        for w in lengths:
            block = feats[t0 : t0 + w]  # [w, N, C]
            static = torch.zeros(N, dtype=torch.bool)
            if w > 1:
                # the mean off-diagonal cosine, summed as the official code does (full Gram, minus the
                # diagonal as 1 per frame): a cosine that close to tau then falls the same way
                u = F.normalize(block, p=2, dim=-1)
                sim = torch.einsum("wlc,tlc->wtl", u, u)  # [w, w, N]
                static = (sim.sum(dim=-2) - 1).sum(dim=-2) / (w * (w - 1)) > self.tau
            sp, dp = static.nonzero().squeeze(1), (~static).nonzero().squeeze(1)
            if sp.numel():
                lab = self.spatial(block[:, sp].mean(dim=0))  # [n_s] over the scene-mean static tokens
                label[t0 : t0 + w, sp] = len(is_static) + lab
                is_static += [True] * (int(lab.max()) + 1)
            for t in range(t0, t0 + w):
                if dp.numel():
                    lab = self.spatial(feats[t, dp])
                    label[t, dp] = len(is_static) + lab
                    is_static += [False] * (int(lab.max()) + 1)
            t0 += w
        group, order = relabel_by_first(label.reshape(-1))
        segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(torch.int32)
        return reduction_from_groups(
            feats.reshape(-1, C),
            group,
            torch.ones(T * N),
            self.grid,
            (T, hb, wb),
            T * H * W,
            extras={"segment": segment, "static": torch.tensor(is_static, dtype=torch.uint8)[order]},
        )
