"""A plain loop version of `vtc.reducers.framefusion` (FrameFusion's merging stage).

The rule, token by token: on the base grid (LLaVA-OV-pooled by default), every position p of frame 0
opens a group; token (t, p) joins the group of (t-1, p) when cos(x[t-1, p], x[t, p]) exceeds the
threshold (strict), else it opens a new group: a chain over time, each token compared with its
predecessor at the same position only. With a budget B, the B groups with the most members are kept
(ties: the group whose first member comes first in raster order); the rest are dropped. Groups are
emitted in raster order of their first member.
"""

from __future__ import annotations

import torch

from vtc.reducers.base import base_features, groups_diff


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b)) / max(float(a.norm()) * float(b.norm()), 1e-8)


def run(x: torch.Tensor, grid, reducer) -> list[list[int]]:
    """x [T, H*W, C] -> groups of flat base-grid indices t*Hb*Wb + p, in raster order of the first member."""
    feats, (hb, wb) = base_features(x, grid, reducer.grid)
    T, N = feats.shape[0], hb * wb
    groups: list[list[int]] = []
    for p in range(N):
        current: list[int] = [p]  # the open group at position p, frame 0 always opens one
        for t in range(1, T):
            if _cos(feats[t - 1, p], feats[t, p]) > reducer.threshold:
                current.append(t * N + p)
            else:
                groups.append(current)
                current = [t * N + p]
        groups.append(current)
    if reducer.budget is not None and reducer.budget < len(groups):
        groups = sorted(groups, key=lambda g: (-len(g), g[0]))[: reducer.budget]
    return sorted(groups, key=lambda g: g[0])


diff = groups_diff  # the shared check: base tokens grouped differently
