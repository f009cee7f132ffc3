"""`visionzip`: dominant tokens by encoder attention + contextual merges of the rest, per frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import Reducer, Reduction, check_input, reductions_from_groups, relabel_by_first
from vtc.reducers.batch import concat_frames
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import ReducerError, register


def split_budget(total: int, parts: int) -> Tensor:
    """``total`` spread over ``parts`` as evenly as possible, the remainder to the first parts."""
    base, rem = divmod(total, parts)
    return torch.tensor([base + (i < rem) for i in range(parts)])


@register(
    "visionzip",
    paper="VisionZip: Longer is Better but Not Necessary in Vision Language Models (arXiv 2412.04467)",
    section="§3, dominant + contextual tokens",
    summary="keep most-attended, merge the rest",
    params={"dominant": "most-attended tokens kept per frame", "contextual": "contextual tokens per frame"},
    budget=True,
    needs=("attention",),
)
@dataclass(frozen=True)
class VisionZip(Reducer):
    """Keep each frame's most-attended tokens; merge the rest into a few contextual tokens.

    §3 of the paper: dominant tokens = top-K_d by the attention they receive (on SigLIP, which has no
    CLS token: last-layer attention averaged over heads and queries — stored by
    ``vtc extract --save-attention``); of the remaining tokens, K_c evenly spaced ones become context
    centres and every other remaining token joins its most similar centre (cosine), each context token
    being the mean of its group. Default 54:10 as in the paper (64 of 729 tokens per frame).
    Differs from the official code: similarity on the stored features instead of the attention keys;
    applied offline per frame to video features on the native grid (the official is per image, in
    the encoder). ``budget`` (visual tokens per video) is spread over frames and split 54:10.
    """

    dominant: int = 54
    contextual: int = 10
    budget: int | None = None

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Each remaining token against the contextual centres, plus a norm per token."""
        T, hb, wb = red.base_grid
        N = hb * wb
        return T * (2 * C * (N - self.dominant) * self.contextual) + cosine_flops(0, T * N, C)

    def __call__(self, x: Tensor, grid: tuple[int, int], attention: Tensor | None = None) -> Reduction:
        return self.batch([x], grid, [{"attention": attention}])[0]

    def batch(
        self, xs: list[Tensor], grid: tuple[int, int], auxs: list[dict] | None = None
    ) -> list[Reduction]:
        """Frames of all videos concatenated; the frames keeping the same number of tokens are ranked,
        split and assigned together (the cosine product is taken per video: a batched matrix
        product's bits depend on the batch, see reducers/batch); one gather builds every video."""
        auxs = auxs or [{} for _ in xs]
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        N = H * W
        for T, aux in zip(Ts, auxs, strict=True):
            attention = aux.get("attention")
            if attention is None:
                raise ReducerError(
                    "visionzip needs attention scores: extract with `vtc extract --save-attention`"
                )
            if attention.shape != (T, N):
                raise ReducerError(f"visionzip: attention must be [{T}, {N}], got {list(attention.shape)}")
        if self.dominant < 0 or self.contextual < 0 or (self.budget is not None and self.budget < 0):
            raise ReducerError("visionzip: dominant, contextual and budget must be >= 0")
        if self.budget is None:
            per_frame = torch.full((sum(Ts),), min(self.dominant + self.contextual, N))
            ratio = self.dominant / max(self.dominant + self.contextual, 1)
        else:
            per_frame = torch.cat([split_budget(min(self.budget, T * N), T).clamp(max=N) for T in Ts])
            ratio = 54 / 64
        feats, _ = concat_frames(xs)  # [TT, N, C] float32
        attn = torch.cat([aux["attention"] for aux in auxs]).float()  # [TT, N]
        vid = torch.repeat_interleave(torch.arange(len(Ts)), torch.tensor(Ts))  # [TT] video of each frame
        group = torch.full((feats.shape[0], N), -1, dtype=torch.long)
        # Frames may differ in their counts only when a budget does not divide evenly: at most two sizes
        # per video.
        for size in per_frame.unique().tolist():
            frames = (per_frame == size).nonzero().squeeze(1)
            d = min(N, round(size * ratio)) if size < N else N
            c = min(size - d, N - d)
            chunks = torch.bincount(vid[frames], minlength=len(Ts))
            group[frames] = _frame_groups(feats[frames], attn[frames], d, c, chunks[chunks > 0].tolist())
        # global ids: frame by frame, within a frame in raster order of each group's first member; then
        # each video's own ids from 0
        out, t0 = [], 0
        for T in Ts:
            g = group[t0 : t0 + T]
            flat = torch.where(g >= 0, g + torch.arange(T)[:, None] * N, -1).reshape(-1)
            group[t0 : t0 + T] = relabel_by_first(flat)[0].reshape(T, N)
            t0 += T
        out = reductions_from_groups(
            feats.reshape(-1, feats.shape[-1]),
            group.reshape(-1),
            torch.ones(group.numel()),
            "native",
            [(T, H, W) for T in Ts],
            [T * N for T in Ts],
        )
        return out


def _frame_groups(x: Tensor, attn: Tensor, d: int, c: int, chunks: list[int] | None = None) -> Tensor:
    """Per-frame group ids [F, N] (-1 dropped) for F frames of N tokens: d dominant singletons, c context
    groups. chunks: frames per video (summing to F); the cosine product is taken per video."""
    F_, N, _ = x.shape
    group = torch.full((F_, N), -1, dtype=torch.long)
    # stable descending order so ties go to the lower index
    order = torch.sort(attn, dim=1, descending=True, stable=True).indices
    dom = order[:, :d]
    group.scatter_(1, dom, torch.arange(d).expand(F_, d))
    if c == 0:
        return group
    rest = order[:, d:].sort(dim=1).values  # remaining tokens in raster order, [F, R]
    R = rest.shape[1]
    step = max(R // c, 1)
    centres = rest[:, ::step][:, :c]  # [F, c] evenly spaced
    xn = F.normalize(x, dim=-1)
    C = x.shape[2]
    assign = torch.cat(
        [
            torch.einsum(
                "frc,fkc->frk",
                xc.gather(1, rc[..., None].expand(-1, -1, C)),
                xc.gather(1, cc[..., None].expand(-1, -1, C)),
            ).argmax(dim=2)  # [f, R] nearest centre (first on ties)
            for xc, rc, cc in zip(
                xn.split(chunks or [F_]),
                rest.split(chunks or [F_]),
                centres.split(chunks or [F_]),
                strict=True,
            )
        ]
    )  # [F, R]
    own = torch.arange(c).expand(F_, c)
    group.scatter_(1, rest, d + assign)
    group.scatter_(1, centres, d + own)  # a centre always belongs to its own group
    return group
