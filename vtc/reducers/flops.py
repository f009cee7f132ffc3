"""Analytic FLOPs of a reduction module, counted the same way for every method.

VQToken §3.1.1 separates the reduction module's own complexity from the LLM's; this is the module's
side, in multiply-adds × 2 on C-dimensional features:

- ``decision``: what the method computes to decide (similarities, norms, clustering, sorting is free);
- ``pool``: the 2×2 bilinear pooling of SigLIP features a method needs when it decides on the pooled
  grid (≤ 4 taps per pooled token);
- ``plan``: building the output tokens, 2·nnz·C (each plan entry is one multiply-add per channel).

Each method's formula lives in its own file (``decision_flops``), from the base grid (T frames × N tokens)
and the reduction itself; the shared pieces are here.
k-means counts 10 Lloyd iterations per fit (an assumption, not a measurement: iteration counts
depend on the data); the elbow sweep counts every K it fits.
"""

from __future__ import annotations

import math

from vtc.reducers.base import Reduction


def cosine_flops(n_pairs: float, n_norms: float, C: int) -> float:
    """Cosine similarities: a dot product per pair plus a norm per token."""
    return 2 * C * (n_pairs + n_norms)


def tome_round_flops(n: int, k: int, C: int) -> float:
    """ToMe's bipartite cosines, round after round, from n tokens down to k."""
    flops = 0.0
    while n > k:
        a, b = math.ceil(n / 2), n // 2
        flops += 2 * C * (a * b + n)
        n -= min(n - k, a)
    return flops


LLOYD_ITERATIONS = 10


def module_flops(name: str, reducer, red: Reduction, C: int) -> dict[str, int]:
    """{"decision", "pool", "plan", "total"} analytic FLOPs of reducing one video with C-dim features."""
    T, hb, wb = red.base_grid
    decides_on_pooled = getattr(reducer, "grid", None) == "pooled" and name not in ("uniform", "random")
    out = {
        "decision": int(reducer.decision_flops(red, C)),  # the method's own formula, in its file
        "pool": int(2 * 4 * T * hb * wb * C) if decides_on_pooled else 0,
        "plan": int(2 * red.src.numel() * C),
    }
    out["total"] = sum(out.values())
    return out
