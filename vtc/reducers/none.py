"""`none`: stock LLaVA-OneVision, no reduction beyond the model's own 2x2 bilinear pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
)
from vtc.reducers.batch import concat_frames
from vtc.reducers.registry import register


@register(
    "none",
    paper="LLaVA-OneVision: Easy Visual Task Transfer (arXiv 2408.03326)",
    section="the stock video path",
    summary="stock LLaVA-OV tokens (2x2 pooled)",
)
@dataclass(frozen=True)
class NoReduction(Reducer):
    """Identity on the pooled base: T*ceil(H/2)*ceil(W/2) visual tokens + one newline.

    Exactly what `LlavaOnevisionModel.get_video_features` feeds the LLM: 32 frames of 27x27 -> 6,273.
    grid="native": every stored token, unpooled (Qwen2.5-VL's stock tokens, whose tower merges 2x2 itself:
    `vtc.families` runs `none` there so).
    """

    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        return 0.0

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """Pool every frame of the batch in one call (frames concatenated), then split per video."""
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        x, offs = concat_frames(xs)
        pooled, (hb, wb) = base_features(x, (H, W), self.grid)  # [sum T, hb*wb, C] float32
        C = pooled.shape[-1]
        out = []
        for T, t0 in zip(Ts, offs, strict=True):
            n = T * hb * wb
            tokens = torch.cat((pooled[t0 : t0 + T].reshape(n, C), pooled.new_zeros(1, C)))
            kind = torch.zeros(n + 1, dtype=torch.uint8)
            kind[-1] = KIND_NEWLINE
            base_grid = (T, hb, wb)
            out.append(
                Reduction(
                    tokens=tokens,
                    kind=kind,
                    pos=torch.cat((grid_pos(torch.arange(n), hb, wb), newline_row(base_grid))),
                    # one source per token; the newline row is empty
                    indptr=torch.cat((torch.arange(n + 1), torch.tensor([n]))),
                    src=torch.arange(n),
                    weight=torch.ones(n),
                    base=self.grid,
                    base_grid=base_grid,
                    n_input_tokens=T * H * W,
                )
            )
        return out
