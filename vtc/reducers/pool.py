"""`pool`: fixed spatial pooling of every frame on the native grid (the papers' pooling baseline)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    KIND_NEWLINE,
    Reducer,
    Reduction,
    check_input,
    frame_plan,
    interp_matrix,
    newline_row,
    plan_pos,
)
from vtc.reducers.batch import concat_frames
from vtc.reducers.registry import register


@register(
    "pool",
    paper="baseline: LLaVA-OneVision's pooling (arXiv 2408.03326) at larger strides",
    summary="pool each frame with a larger stride",
    params={"stride": "pooling stride on the native grid (2 = LLaVA-OV's own)", "mode": "bilinear or avg"},
)
@dataclass(frozen=True)
class Pool(Reducer):
    """Pool each frame H x W -> ceil(H/stride) x ceil(W/stride) on the native base.

    mode="bilinear": F.interpolate(size=..., mode="bilinear", align_corners=False), the operator
    LLaVA-OV itself uses (stride=2 reproduces its pooling exactly; larger strides are the papers'
    "larger pooling" baseline). mode="avg": F.avg_pool2d(kernel=stride, stride=stride, ceil_mode=True);
    a partial window at the bottom/right border averages only the pixels it covers (weights
    1/(covered rows * covered cols), no zero padding), as PyTorch does. stride=1 is the identity.
    """

    stride: int = 2
    mode: Literal["avg", "bilinear"] = "bilinear"

    def decision_flops(self, red: Reduction, C: int) -> float:
        return 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """Pool every frame of the batch in one call (frames concatenated), then split per video; the
        plan depends only on T, so it is built once per distinct T."""
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        s = self.stride
        ho, wo = math.ceil(H / s), math.ceil(W / s)
        x, offs = concat_frames(xs)
        img = x.reshape(-1, H, W, x.shape[-1]).permute(0, 3, 1, 2)  # [sum T, C, H, W]
        if self.mode == "bilinear":
            pooled = F.interpolate(img, size=(ho, wo), mode="bilinear", align_corners=False)
        else:
            pooled = F.avg_pool2d(img, kernel_size=s, stride=s, ceil_mode=True)
        pooled = pooled.permute(0, 2, 3, 1)  # [sum T, ho, wo, C]
        C = img.shape[1]
        # the plan is built independently of the tokens (weights from the closed form, not from the op),
        # so the contract test that applies it to x checks one against the other
        m = interp_matrix((H, W), (ho, wo), self.mode, stride=s)  # [ho*wo, H*W]
        plans: dict[int, tuple] = {}
        out = []
        for T, t0 in zip(Ts, offs, strict=True):
            n = T * ho * wo
            if T not in plans:
                indptr, src, weight = frame_plan(m, T)
                pos = plan_pos(indptr, src, weight, (T, H, W))
                pos[-1] = newline_row((T, H, W))[0]
                plans[T] = indptr, src, weight, pos
            else:  # another video of the same T: its own copy of the plan
                indptr, src, weight, pos = (p.clone() for p in plans[T])
            tokens = torch.cat((pooled[t0 : t0 + T].reshape(n, C), img.new_zeros(1, C)))
            kind = torch.zeros(n + 1, dtype=torch.uint8)
            kind[-1] = KIND_NEWLINE
            out.append(
                Reduction(
                    tokens=tokens,
                    kind=kind,
                    pos=pos,
                    indptr=indptr,
                    src=src,
                    weight=weight,
                    base="native",
                    base_grid=(T, H, W),
                    n_input_tokens=T * H * W,
                )
            )
        return out
