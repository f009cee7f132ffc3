"""Reducing several videos in one call: `reduce_batch(reducer, xs, grid, auxs)` -> one Reduction per video.

Each video's Reduction is bit-identical to calling the reducer on that video alone (same tokens, plan,
kinds, positions, extras): `tests/test_reduce_batch.py` checks it for every registered method. A reducer
class with a ``batch(xs, grid, auxs)`` method is *natively batched*: it stacks the videos (concatenated
along frames, or as [B, T, N, C] for videos of equal T) and does its similarities, pooling, sorts and
gathers once for the whole batch, then splits; its ``__call__`` is the batch of one, so there is a
single code path. Every other reducer runs in a plain loop (`reduce_batch`'s fallback).

Why bit-identical holds: every per-row reduction CPU torch uses here (norms, dot products, sums,
sorts, scatter/index_add in index order) gives each row the same bits whatever the number of rows
(measured on torch 2.13 at 2 and 8 threads, up to 1152 channels). Batched BLAS does not:
``bmm``'s result for one matrix depends on how many matrices it is given (a batch of 1 or 2 goes
another path), so methods whose similarities are matrix products (tome, visionzip) call the product
once per video and batch everything around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vtc.reducers.base import Reducer, Reduction, check_input
from vtc.reducers.registry import ReducerError


def natively_batched(reducer) -> bool:
    """Whether a reducer (instance or class) has its own `batch` method rather than the loop fallback."""
    cls = reducer if isinstance(reducer, type) else type(reducer)
    return callable(getattr(cls, "batch", None)) and cls.batch is not Reducer.batch


def check_batch(xs: Sequence[Tensor], grid: tuple[int, int], auxs: Sequence[dict] | None) -> list[dict]:
    """Validate a batch: every x [T_v, H*W, C] against grid (check_input), one C, one aux dict per video."""
    if auxs is None:
        auxs = [{} for _ in xs]
    if len(auxs) != len(xs):
        raise ReducerError(f"reduce_batch: {len(xs)} videos but {len(auxs)} aux dicts")
    for x in xs:
        check_input(x, grid)
    if len({int(x.shape[-1]) for x in xs}) > 1:
        raise ReducerError(
            f"reduce_batch: videos have different channels {sorted({int(x.shape[-1]) for x in xs})}"
        )
    return [dict(a or {}) for a in auxs]


def reduce_batch(
    reducer,
    xs: Sequence[Tensor],
    grid: tuple[int, int],
    auxs: Sequence[dict] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Reduction]:
    """Reduce B videos, xs[v]: [T_v, H*W, C] (any T_v, one grid and C), auxs[v]: that video's keyword
    arrays (e.g. {"attention": [T_v, H*W]}). Returns [reducer(xs[v], grid, **auxs[v]) for v], bit for bit.

    Natively batched reducers draw no global random numbers (`random` uses its own seeded generator);
    for the loop fallback, ``seeds[v]`` (if given) seeds torch's global RNG before video v, as the
    one-video path of `vtc compress` does.
    """
    xs = list(xs)
    auxs = check_batch(xs, grid, auxs)
    if not xs:
        return []
    if natively_batched(reducer):
        return reducer.batch(xs, grid, auxs)
    out = []
    for v, (x, aux) in enumerate(zip(xs, auxs, strict=True)):
        if seeds is not None:
            torch.manual_seed(int(seeds[v]))
        out.append(reducer(x, grid, **aux))
    return out


def concat_frames(xs: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
    """Videos [T_v, N, C] -> (float32 [sum T_v, N, C] on xs[0]'s device, first frame of each video).

    One video: x.float() (no copy when already float32). Several: each is converted straight into the
    batch buffer, so stacking float16 features costs what the one-video x.float() costs.
    """
    Ts = [int(x.shape[0]) for x in xs]
    offs = [sum(Ts[:v]) for v in range(len(Ts))]
    if len(xs) == 1:
        return xs[0].float(), offs
    N, C = int(xs[0].shape[1]), int(xs[0].shape[2])
    buf = torch.empty(sum(Ts), N, C, dtype=torch.float32, device=xs[0].device)
    for x, t0 in zip(xs, offs, strict=True):
        buf[t0 : t0 + x.shape[0]].copy_(x)
    return buf, offs


def groups_by(keys: Sequence) -> dict:
    """key -> indices having it, in first-appearance order (e.g. videos by frame count)."""
    out: dict = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out
