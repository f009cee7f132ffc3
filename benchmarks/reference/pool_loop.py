"""Plain loop versions of `vtc.reducers.none` and `vtc.reducers.pool`: each output cell's sources and weights.

Written from the textbook rules, not from the batched `interp_matrix`:
- bilinear (PyTorch, align_corners=False, output size given): per axis, scale = in/out and the source
  coordinate of output index d is s = (d + 0.5) * scale - 0.5, clamped at 0; the left neighbour is
  floor(s) (clamped to the last pixel), the right one left + 1 clamped to the last pixel; weights
  1 - (s - left) and s - left. A 2-D weight is the product of the two axes' weights.
- avg (avg_pool2d, kernel = stride = s, ceil_mode=True, no padding): output cell (i, j) covers rows
  [i*s, i*s+s) and columns [j*s, j*s+s) clipped to the input; each covered pixel weighs 1/(pixels covered).
Exact-zero weights are not sources. Scalars are Python floats (float64).
"""

from __future__ import annotations

import math


def bilinear_axis(n_in: int, n_out: int, d: int) -> list[tuple[int, float]]:
    """(source index, weight) pairs of output index d along one axis; zero weights dropped, duplicates summed."""
    scale = n_in / n_out
    s = max((d + 0.5) * scale - 0.5, 0.0)
    left = min(math.floor(s), n_in - 1)
    right = min(left + 1, n_in - 1)
    lam = s - left
    acc: dict[int, float] = {}
    for i, w in ((left, 1.0 - lam), (right, lam)):
        acc[i] = acc.get(i, 0.0) + w
    return [(i, w) for i, w in sorted(acc.items()) if w != 0.0]


def avg_axis(n_in: int, stride: int, d: int) -> list[int]:
    """Input indices covered by output index d's window along one axis."""
    return [i for i in range(d * stride, d * stride + stride) if i < n_in]


def run_pool(x, grid, reducer) -> list[tuple[list[int], list[float]]]:
    """x [T, H*W, C], grid (H, W), a `pool` reducer -> per output token (raster order t, h, w):
    (flat native source indices t*H*W + h*W + w ascending, their weights)."""
    T, (H, W), s = int(x.shape[0]), (int(grid[0]), int(grid[1])), int(reducer.stride)
    ho, wo = math.ceil(H / s), math.ceil(W / s)
    out = []
    for t in range(T):
        for i in range(ho):
            for j in range(wo):
                cell: dict[int, float] = {}
                if reducer.mode == "bilinear":
                    for h, wh in bilinear_axis(H, ho, i):
                        for w, ww in bilinear_axis(W, wo, j):
                            cell[t * H * W + h * W + w] = cell.get(t * H * W + h * W + w, 0.0) + wh * ww
                else:
                    rows, cols = avg_axis(H, s, i), avg_axis(W, s, j)
                    for h in rows:
                        for w in cols:
                            cell[t * H * W + h * W + w] = 1.0 / (len(rows) * len(cols))
                srcs = sorted(k for k, v in cell.items() if v != 0.0)
                out.append((srcs, [cell[k] for k in srcs]))
    return out


def run_none(x, grid, reducer) -> list[tuple[list[int], list[float]]]:
    """`none` is stock LLaVA-OV: its bilinear pooling 27x27 -> 14x14 *is* the pooled base, so the plan is the
    identity on that grid: token n = pooled token n, weight 1, for n in 0..T*ceil(H/2)*ceil(W/2)-1."""
    T = int(x.shape[0])
    n = T * math.ceil(int(grid[0]) / 2) * math.ceil(int(grid[1]) / 2)
    return [([i], [1.0]) for i in range(n)]


def diff_pool(reduction, ref) -> int:
    """Output tokens whose sources differ from the loop's, or whose weights differ by more than 1e-6
    (plus any tokens one side has and the other lacks)."""
    n = reduction.n_visual()
    indptr, src, weight = reduction.indptr.tolist(), reduction.src.tolist(), reduction.weight.tolist()
    bad = abs(n - len(ref))
    for k in range(min(n, len(ref))):
        s, w = src[indptr[k] : indptr[k + 1]], weight[indptr[k] : indptr[k + 1]]
        rs, rw = ref[k]
        if s != list(rs) or any(abs(a - b) > 1e-6 for a, b in zip(w, rw, strict=True)):
            bad += 1
    return bad


diff_none = diff_pool
