"""Analytic FLOPs of a reduction module, counted the same way for every method.

VQToken §3.1.1 separates the reduction module's own complexity from the LLM's; this is the module's
side, in multiply-adds × 2 on C-dimensional features:

- ``decision``: what the method computes to decide (similarities, norms, clustering, sorting is free);
- ``pool``: the 2×2 bilinear pooling of SigLIP features a method needs when it decides on the pooled
  grid (≤ 4 taps per pooled token);
- ``plan``: building the output tokens, 2·nnz·C (each plan entry is one multiply-add per channel).

Formulas are per method (below) from the base grid (T frames × N tokens) and the reduction itself.
k-means counts 10 Lloyd iterations per fit (an assumption, not a measurement: iteration counts
depend on the data); the elbow sweep counts every K it fits.
"""

from __future__ import annotations

import math

from vtc.reducers.base import Reduction


def _cos(n_pairs: float, n_norms: float, C: int) -> float:
    """Cosine similarities: a dot product per pair plus a norm per token."""
    return 2 * C * (n_pairs + n_norms)


def _tome_rounds(n: int, k: int, C: int) -> float:
    flops = 0.0
    while n > k:
        a, b = math.ceil(n / 2), n // 2
        flops += 2 * C * (a * b + n)
        n -= min(n - k, a)
    return flops


LLOYD_ITERATIONS = 10


def _kmeans(r, red: Reduction, n: int, C: int) -> float:
    k = red.n_visual()
    if getattr(r, "k", None) is not None or getattr(r, "budget", None) is not None:
        ks = [k]
    elif r.adaptive == "elbow":
        ks = list(range(r.k_min, min(r.k_max, n) + 1))
    else:
        ks = list(range(r.k_min, min(k + 1, n) + 1))
    return sum(LLOYD_ITERATIONS * 2 * C * n * kk for kk in ks) + 2 * C * n


def decision_flops(name: str, r, red: Reduction, C: int) -> float:
    T, hb, wb = red.base_grid
    N = hb * wb
    if name in ("none", "pool", "uniform", "random"):
        return 0.0
    if name == "dyntok":
        return _cos(T * hb * (wb - 1), T * N, C)
    if name == "dycoke":
        pairs = T // 2
        repruned = len(range(0, T - r.window, r.window)) * (r.window // 2 - 1)
        return _cos((pairs + repruned) * N, (pairs + repruned) * 2 * N, C)
    if name == "framefusion":
        return _cos((T - 1) * N, T * N, C)
    if name == "tome":
        per_frame = red.n_visual() // max(T, 1)
        return T * _tome_rounds(N, max(per_frame, 1), C)
    if name == "vidtome":
        windows = math.ceil(T / r.window)
        return windows * (2 * C * (r.window - 1) * N * N) + _cos(0, T * N, C)
    if name == "visionzip":
        c = r.contextual
        return T * (2 * C * (N - r.dominant) * c) + _cos(0, T * N, C)
    if name in ("vqtoken", "tokendynamics"):
        return _kmeans(r, red, T * N, C)
    n = T * N
    if name == "divprune":  # the n x n cosine distances; the greedy picks only compare
        return _cos(n * n, n, C)
    if name == "vidcom2":  # channel variances, then two Gaussian distances on the kept channels
        c = max(1, int(C * r.channels))
        return 2 * C * n + 2 * 2 * c * n + _cos(0, n, c)
    if name == "llava-scissor":  # per-frame cosines, the temporal step at its largest (n x n), the fold
        return _cos(T * N * N, n, C) + _cos(n * n, 0, C) + _cos(n * red.n_visual(), 0, C)
    raise KeyError(f"no FLOPs formula for method {name!r} (vtc/reducers/flops.py)")


def module_flops(name: str, reducer, red: Reduction, C: int) -> dict[str, int]:
    """{"decision", "pool", "plan", "total"} analytic FLOPs of reducing one video with C-dim features."""
    T, hb, wb = red.base_grid
    decides_on_pooled = getattr(reducer, "grid", None) == "pooled" and name not in ("uniform", "random")
    out = {
        "decision": int(decision_flops(name, reducer, red, C)),
        "pool": int(2 * 4 * T * hb * wb * C) if decides_on_pooled else 0,
        "plan": int(2 * red.src.numel() * C),
    }
    out["total"] = sum(out.values())
    return out
