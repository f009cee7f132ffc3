"""A plain loop version of `vtc.reducers.dyntok` (DynTok §3.2, "Dynamic token merging").

The paper rule, token by token: on the base grid (LLaVA-OV-pooled by default), the first token of each
row of each frame opens a group; token k joins the group of token k-1 when
s(k-1, k) = x_{k-1}.x_k / (|x_{k-1}| |x_k|) exceeds the threshold (strict), else it opens a new group.
Each token is compared with its left neighbour only, never with the group's mean. Markers (one per
row) are not groups: only the visual tokens are compared.
"""

from __future__ import annotations

import torch

from vtc.reducers.base import base_features, groups_diff


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b)) / max(float(a.norm()) * float(b.norm()), 1e-8)


def run(x: torch.Tensor, grid, reducer) -> list[list[int]]:
    """x [T, H*W, C] -> groups of flat base-grid indices t*Hb*Wb + h*Wb + w, in raster order."""
    feats, (hb, wb) = base_features(x, grid, reducer.grid)
    T = feats.shape[0]
    groups: list[list[int]] = []
    for t in range(T):
        for h in range(hb):
            for w in range(wb):
                i = h * wb + w
                flat = t * hb * wb + i
                if w > 0 and _cos(feats[t, i - 1], feats[t, i]) > reducer.threshold:
                    groups[-1].append(flat)  # joins its left neighbour's group (the last one opened)
                else:
                    groups.append([flat])
    return groups


diff = groups_diff  # the shared check: base tokens grouped differently
