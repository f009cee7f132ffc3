"""`fastvid`: FastVID (FastVID: Dynamic Density Pruning for Fast Video Large Language Models, arXiv
2503.11187): dynamic temporal segments, then in each segment salient tokens kept and density-peak anchors
that absorb the rest of the segment."""

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
    reduction_from_entries,
)
from vtc.reducers.cluster import density_peaks
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import ReducerError, register

KNN = 4  # the official density's neighbours, the token itself included (its distance 0)


def segment_sizes(glob: Tensor, c: int, tau: float) -> list[int]:
    """DySeg: frame counts of the temporal segments, in order. glob: [T, C] one global feature per frame.

    t_i = cos(g_i, g_{i+1}); a segment ends after frame i when t_i is among the c-1 lowest (ties: the
    earlier transition) or t_i < tau. Fewer than c segments only when the video has fewer than c frames.
    """
    T = glob.shape[0]
    if T == 1:
        return [1]
    u = F.normalize(glob.float(), dim=1)
    sim = (u[:-1] * u[1:]).sum(dim=1)  # [T-1]
    cut = sim < tau
    cut[torch.sort(sim, stable=True).indices[: min(c - 1, T - 1)]] = True
    ends = torch.cat((cut.nonzero().squeeze(1) + 1, torch.tensor([T])))
    return torch.diff(ends, prepend=torch.tensor([0])).tolist()


def anchor_counts(sizes: list[int], k: int, p: int, cap: int) -> list[int]:
    """Anchors per frame [T]: in a segment of L frames, the last frame and every p-th one before it
    (A = ceil(L/p) anchor frames) get (k*L) // A anchors each (at most ``cap``), the others none."""
    out: list[int] = []
    for L in sizes:
        per = min(k * L // -(-L // p), cap)
        out += [per if (L - 1 - i) % p == 0 else 0 for i in range(L)]
    return out


@register(
    "fastvid",
    paper="FastVID: Dynamic Density Pruning for Fast Video Large Language Models (arXiv 2503.11187)",
    section="§3: DySeg segments, then STPrune (salient tokens + density anchors merged per segment)",
    summary="segments; salient + density anchors",
    params={
        "ratio": "share of each frame's tokens kept (official fastvid_retention_ratio)",
        "c": "DySeg: at least c segments (the c-1 least similar transitions are cut)",
        "tau": "DySeg: also cut wherever adjacent frames' cosine is below tau",
        "d": "STPrune: share of the kept tokens that are density anchors (the rest: salient tokens)",
        "p": "anchor frames: a segment's last frame and every p-th frame before it",
        "beta": "an anchor keeps at least weight beta against the mean of the tokens it absorbs",
        "saliency": "salient tokens by: feature (dot with the frame's mean feature) or attention (stored)",
    },
)
@dataclass(frozen=True)
class FastVID(Reducer):
    """FastVID's dynamic segmentation and density-based spatio-temporal pruning, before the LLM.

    DySeg (`segment_sizes`): cut after the c-1 least similar adjacent frames and wherever
    cos(g_t, g_t+1) < tau, g_t a global feature per frame. STPrune, per frame of N base tokens: R =
    int(ratio * N) kept (at least 1), of which S = R - int(d * R) salient tokens (the most attended,
    kept as they are) and K = int(d * R) anchors' worth. A segment of L frames has A = ceil(L / p)
    anchor frames (its last and every p-th before it) with (K * L) // A anchors each: the density peaks
    (DPC-kNN, `vtc.reducers.cluster.density_peaks`) of their non-salient tokens. Every non-salient token of the segment joins
    its most similar (cosine) anchor in each anchor frame; an anchor that absorbed n tokens becomes
    w * anchor + (1 - w) * mean(absorbed), w = max(1 / (n + 1), beta). Rows in raster order of the
    anchors and salient tokens: T * R of them, less the rounding (at most A - 1 per segment).
    Defaults: the official LLaVA-OV eval.sh, 10% = 19 of 196 per frame (12 salient + 7 anchors'
    worth), c = 8, tau = 0.9, d = 0.4, p = 4, beta = 0.6.

    The official code (LunarShen/FastVID@a40a109c, fastvid_llavaonevision modeling_qwen2.py) computes
    densities per anchor frame, the paper's parallel variant, not over the whole segment; it keeps the
    kept tokens' original RoPE positions. vtc runs on the stored encoder features (pooled to 14x14 by
    default), not the projected LLM tokens. Saliency and g_t come from SigLIP's pooling head there (probe
    attention, pooled output), which vtc lacks: saliency="attention" uses the stored last-layer
    attention and the attention-weighted mean feature; the default "feature" ranks tokens by their dot
    product with the frame's mean feature, which is g_t. Also: ties go to the lower index (not 1e-6
    noise), anchors are capped at the candidates (the official code fails there), and a multi-frame
    segment always merges as one (the official treats a frame with exactly K anchors as alone: p = 1).
    """

    ratio: float = 0.10
    c: int = 8
    tau: float = 0.9
    d: float = 0.4
    p: int = 4
    beta: float = 0.6
    saliency: Literal["feature", "attention"] = "feature"
    grid: Grid = "pooled"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.c < 1:
            raise ValueError(f"c must be >= 1, got {self.c}")
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [-1, 1] (a cosine), got {self.tau}")
        if not 0.0 <= self.d <= 1.0:
            raise ValueError(f"d must be in [0, 1], got {self.d}")
        if self.p < 1:
            raise ValueError(f"p must be >= 1, got {self.p}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")

    @property
    def needs(self) -> tuple[str, ...]:
        return ("attention",) if self.saliency == "attention" else ()

    def counts(self, N: int) -> tuple[int, int]:
        """(salient tokens per frame, anchors' worth per frame) on a base grid of N tokens per frame."""
        keep = max(1, int(N * self.ratio))
        k = int(keep * self.d)
        return keep - k, k

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Global features and adjacent cosines; saliency dots (feature mode); per anchor frame the M x M
        distances of its M candidates, and each segment token's cosine to its anchors (from the plan:
        an anchor row holds the tokens it absorbed)."""
        T, hb, wb = red.base_grid
        N = hb * wb
        s, _ = self.counts(N)
        M = N - s
        flops = 2.0 * red.n_input_tokens * C + cosine_flops(T - 1, T, C)
        if self.saliency == "feature":
            flops += 2.0 * C * T * N
        vis = red.kind != KIND_NEWLINE
        t = red.pos[vis, 0].long()
        rows = torch.bincount(t, minlength=T)
        nnz = torch.zeros(T, dtype=torch.long).index_add_(0, t, (red.indptr[1:] - red.indptr[:-1])[vis])
        anchors, members = (rows - s).clamp(min=0), (nnz - s).clamp(min=0)
        flops += float((anchors > 0).sum()) * cosine_flops(M * M, M, C)
        flops += 2.0 * C * float((anchors * members).sum()) + cosine_flops(0, T * M, C)
        return flops

    def __call__(self, x: Tensor, grid: tuple[int, int], attention: Tensor | None = None) -> Reduction:
        T, H, W = check_input(x, grid)
        xf = x.float()
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        N, C = hb * wb, feats.shape[-1]
        if self.saliency == "attention":
            if attention is None:
                raise ReducerError(
                    "fastvid saliency=attention needs attention scores: extract with "
                    "`vtc extract --save-attention`, or use saliency=feature"
                )
            if tuple(attention.shape) != (T, H * W):
                raise ReducerError(f"fastvid: attention must be [{T}, {H * W}], got {list(attention.shape)}")
            a = attention.float()
            glob = (a[..., None] * xf).sum(dim=1) / a.sum(dim=1, keepdim=True)  # attention-pooled frame
            sal = base_features(a[..., None], (H, W), self.grid)[0][..., 0]  # pooled like the features
        else:
            # stand-in for the pooling head's probe: the frame's mean feature as the query
            glob = xf.mean(dim=1)
            sal = (feats * glob[:, None, :]).sum(dim=-1)
        sizes = segment_sizes(glob, self.c, self.tau)
        s, k = self.counts(N)
        M = N - s
        per_frame = anchor_counts(sizes, k, self.p, M)

        order = torch.sort(sal, dim=1, descending=True, stable=True).indices  # [T, N]
        salient = order[:, :s]
        cand = order[:, s:].sort(dim=1).values  # [T, M] non-salient tokens, raster order
        flat = cand + torch.arange(T)[:, None] * N  # base indices
        unit = F.normalize(feats, dim=-1)

        kept = (salient + torch.arange(T)[:, None] * N).reshape(-1)  # salient tokens: rows of weight 1
        reps, rows, srcs, ws = [kept], [torch.arange(T * s)], [kept], [torch.ones(T * s, dtype=torch.float64)]
        frames = [t for t in range(T) if per_frame[t] > 0]  # the anchor frames
        ranked = {}
        if frames:  # all anchor frames' densities at once, as the official code's parallel version
            ranked = dict(
                zip(frames, density_peaks(feats.reshape(T * N, C)[flat[frames]], KNN)[0], strict=True)
            )
        n_rows, t0 = T * s, 0
        for L in sizes:
            seg = flat[t0 : t0 + L].reshape(-1)  # every non-salient token of the segment
            seg_unit = unit.reshape(T * N, C)[seg]
            for t in range(t0, t0 + L):
                m = per_frame[t]
                if m == 0:
                    continue
                anchor = flat[t, ranked[t][:m]]  # best first, as the official topk
                owner = (seg_unit @ unit.reshape(T * N, C)[anchor].T).argmax(dim=1)  # [L*M] anchor of each
                n = torch.bincount(owner, minlength=m).double()
                w = torch.maximum(1.0 / (n + 1.0), torch.tensor(self.beta, dtype=torch.float64))
                w = torch.where(n == 0, 1.0, w)  # nothing absorbed: the anchor as it is
                share = (1.0 - w) / n.clamp(min=1.0)
                rows += [n_rows + torch.arange(m), n_rows + owner]
                srcs += [anchor, seg]
                ws += [w, share[owner]]
                reps.append(anchor)
                n_rows += m
            t0 += L
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
