"""`vidcom2`: VidCom2 (Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models, arXiv 2505.14454, EMNLP 2025): per-frame budgets from each frame's uniqueness, and in
each frame the tokens least like the video and the frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import Grid, Reducer, Reduction
from vtc.reducers.flops import cosine_flops
from vtc.reducers.prune import pruned_batch
from vtc.reducers.registry import register

ALPHAS = tuple(2.0**k for k in range(-3, 2))  # the Gaussian kernel's scales: 1/8 .. 2


def gaussian_similarity(x: Tensor, centre: Tensor) -> Tensor:
    """sum over a in ALPHAS of exp(-|x - c|^2 / 2a): x [T, N, C], centre broadcastable -> [T, N]."""
    d2 = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-d2 / (2 * a)) for a in ALPHAS)


def vidcom2_keep(feats: Tensor, T: int, scale: float, temperature: float, channels: float) -> Tensor:
    """The kept base indices (int64, ascending) of one video, feats [T*N, C] float32."""
    N = feats.shape[0] // T
    # the channels that vary least over the video's tokens carry the comparison (official heuristic)
    var = feats.var(dim=0, unbiased=False)
    sel = feats[:, var.topk(max(1, int(feats.shape[1] * channels)), largest=False).indices]
    frames = F.normalize(sel.view(T, N, -1), dim=-1)
    video = gaussian_similarity(frames, frames.mean(dim=(0, 1), keepdim=True))  # [T, N]: like the video
    frame = gaussian_similarity(frames, frames.mean(dim=1, keepdim=True))  # [T, N]: like its frame
    # frame uniqueness: the less a frame's tokens resemble the video, the more of them it keeps
    uniqueness = -video.mean(dim=-1)
    p = F.softmax((uniqueness - uniqueness.max()) / temperature, dim=0)
    scales = (scale * (1 + p - p.mean())).clamp(max=1.0)
    ks = (scales * N).round().long().clamp(min=1).tolist()
    score = video + frame
    kept = [
        score[t].topk(k, largest=False, sorted=False).indices.sort().values + t * N for t, k in enumerate(ks)
    ]
    return torch.cat(kept)


@register(
    "vidcom2",
    paper="Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large Language "
    "Models (VidCom2, arXiv 2505.14454)",
    section="§3: frame compression adjustment, then adaptive token selection",
    summary="per-frame budgets by frame uniqueness",
    params={
        "scale": "base share of each frame's tokens kept (the official base_scale); unique frames get more",
        "temperature": "softmax temperature over the frames' uniqueness (official 0.01)",
        "channels": "share of the feature channels compared: those that vary least over the video",
    },
)
@dataclass(frozen=True)
class VidCom2(Reducer):
    """Frame budgets from uniqueness, then outlier tokens in each frame.

    On the video's base features (half of the channels: those of least variance over all its tokens,
    L2-normalised per token), s_v(t, n) and s_f(t, n) are multi-scale Gaussian similarities of token
    (t, n) to the video's mean token and to its frame's mean token (sum of exp(-d^2 / 2a), a = 1/8 .. 2).
    Frame t's uniqueness is -mean_n s_v(t, n); p = softmax(uniqueness / temperature); frame t keeps
    k_t = round(scale * (1 + p_t - mean p) * N) tokens (at least 1, at most N): the tokens with the
    lowest s_v + s_f, i.e. the least like the video and the frame. Kept tokens unchanged, raster order.
    The shares average to `scale` (25%: about 49 of 196 per frame), the rounding per frame moves the total
    by a few tokens. As the official code (xuyang-liu16/VidCom2, llava/model/vidcom2.py, commit 0312a662),
    which runs on LLaVA-OV's projected and pooled LLM-space tokens; vtc runs on the stored encoder
    features, pooled to LLaVA-OV's 14x14 grid by default.
    """

    scale: float = 0.25
    temperature: float = 0.01
    channels: float = 0.5
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Channel variances, then two Gaussian distances per token on the kept channels, and the norms."""
        T, hb, wb = red.base_grid
        n, c = T * hb * wb, max(1, int(C * self.channels))
        return 2 * C * n + 2 * 2 * c * n + cosine_flops(0, n, c)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.channels <= 1.0:
            raise ValueError(f"channels must be in (0, 1], got {self.channels}")

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        def keep(total: int, T: int, feats: Tensor) -> Tensor:
            return vidcom2_keep(feats, T, self.scale, self.temperature, self.channels)

        return pruned_batch(xs, grid, self.grid, keep)
