"""A plain loop version of `vtc.reducers.visionzip` (VisionZip §3, dominant + contextual tokens).

Per frame, on the native grid: the d tokens receiving the most attention are kept as singletons
(ties: the lower index); the remaining tokens, in raster order, give c evenly spaced context centres
(every max(R // c, 1)-th of the R remaining, the first c of them); every other remaining token joins
the centre it is most similar to (cosine; ties: the first centre). Groups are emitted frame by frame,
within a frame in raster order of their first member. Per-frame counts follow the reducer's
parameters: d + c = dominant + contextual (capped at N; all N dominant when that reaches N), or a
`budget` spread evenly over the frames (remainder to the first ones) and split 54:10.
"""

from __future__ import annotations

import torch

from vtc.reducers.base import groups_diff


def frame_counts(reducer, T: int, N: int) -> list[tuple[int, int]]:
    """(dominant, contextual) tokens of each frame."""
    if reducer.budget is None:
        sizes = [min(reducer.dominant + reducer.contextual, N)] * T
        ratio = reducer.dominant / max(reducer.dominant + reducer.contextual, 1)
    else:
        total = min(reducer.budget, T * N)
        sizes = [min(total // T + (t < total % T), N) for t in range(T)]
        ratio = 54 / 64
    out = []
    for size in sizes:
        d = min(N, round(size * ratio)) if size < N else N
        out.append((d, min(size - d, N - d)))
    return out


def frame_loop(feats: torch.Tensor, attn: list[float], d: int, c: int) -> list[list[int]]:
    """One frame: feats [N, C] float32, attn N scores -> groups of token indices, in order of first member."""
    N = feats.shape[0]
    by_attention = sorted(range(N), key=lambda i: (-attn[i], i))
    groups = [[i] for i in by_attention[:d]]
    if c > 0:
        rest = sorted(by_attention[d:])
        step = max(len(rest) // c, 1)
        centres = rest[::step][:c]
        members = {k: [k] for k in centres}
        norms = [float(feats[i].norm()) for i in range(N)]
        for i in rest:
            if i in members:
                continue
            best, best_sim = None, None
            for k in centres:
                s = float(torch.dot(feats[i], feats[k])) / max(norms[i] * norms[k], 1e-12)
                if best_sim is None or s > best_sim:  # strict: ties keep the first centre
                    best, best_sim = k, s
            members[best].append(i)
        groups += [sorted(g) for g in members.values()]
    return sorted(groups, key=lambda g: g[0])


def run(x: torch.Tensor, grid, reducer, attention: torch.Tensor) -> list[list[int]]:
    """x [T, H*W, C], attention [T, H*W] -> groups of flat indices t*H*W + i."""
    T, N = x.shape[0], int(grid[0]) * int(grid[1])
    feats = x.float()
    groups = []
    for t, (d, c) in enumerate(frame_counts(reducer, T, N)):
        for g in frame_loop(feats[t], attention[t].float().tolist(), d, c):
            groups.append([t * N + i for i in g])
    return groups


diff = groups_diff  # the shared check: base tokens grouped differently
