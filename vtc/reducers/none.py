"""`none`: stock LLaVA-OneVision, no reduction beyond the model's own 2x2 bilinear pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import KIND_NEWLINE, Reduction, check_input, grid_pos, llava_pool, newline_row
from vtc.reducers.registry import register


@register("none", paper="LLaVA-OneVision video path (stock)")
@dataclass(frozen=True)
class NoReduction:
    """Identity on the pooled base: T*ceil(H/2)*ceil(W/2) visual tokens + one newline.

    Exactly what `LlavaOnevisionModel.get_video_features` feeds the LLM: 32 frames of 27x27 -> 6,273.
    """

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        pooled, (hb, wb) = llava_pool(x, (H, W))  # [T, hb*wb, C] float32
        n = T * hb * wb
        tokens = torch.cat((pooled.reshape(n, -1), pooled.new_zeros(1, pooled.shape[-1])))
        kind = torch.zeros(n + 1, dtype=torch.uint8)
        kind[-1] = KIND_NEWLINE
        base_grid = (T, hb, wb)
        return Reduction(
            tokens=tokens,
            kind=kind,
            pos=torch.cat((grid_pos(torch.arange(n), hb, wb), newline_row(base_grid))),
            indptr=torch.cat((torch.arange(n + 1), torch.tensor([n]))),  # one source per token; newline empty
            src=torch.arange(n),
            weight=torch.ones(n),
            base="pooled",
            base_grid=base_grid,
            n_input_tokens=T * H * W,
        )
