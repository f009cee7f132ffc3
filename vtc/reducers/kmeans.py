"""Seeded cosine k-means++ with fixed or adaptive K, shared by `vqtoken` and `tokendynamics`.

VQToken (arXiv 2503.16980, §3.2.1, Eq. 3) and Token Dynamics (its v1-v3) cluster every token of a video by cosine
similarity. As in the official code (`VQToken/vq_token.py`, `cluster.py`), tokens are L2-normalised first
and k-means runs on the unit vectors: assignment by cosine to each centroid's direction, a centroid is the
plain mean of its members' unit vectors (not re-normalised), inertia = sum ||x_i - c(x_i)||^2 on unit x.

Differences from the official `KMeansTorch` / `AdaptiveKMeansTorch`, on purpose:
- every random draw comes from ``torch.Generator().manual_seed(seed)`` (official: global RNG, unseeded);
- empty clusters are re-seeded (the official keeps the stale centroid, and its empty clusters then leave
  gaps in the codebook); see `fix_empty`;
- convergence: labels unchanged or centroid shift < tol (official: shift < tol only);
- the elbow's index offset is fixed (`elbow_k`), and the adaptive sweep is warm-started (`adaptive_kmeans`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vtc.reducers.base import (
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    reduction_from_groups,
    relabel_by_first,
)
from vtc.reducers.flops import LLOYD_ITERATIONS

Adaptive = Literal["elbow", "drop"]  # how K is chosen when it is not given
ADAPTIVE = typing.get_args(Adaptive)


@dataclass(frozen=True)
class KMeansResult:
    """labels: int64 [N] in 0..K-1 (every id used); centroids: float32 [K, C]; inertia on unit vectors."""

    labels: Tensor
    centroids: Tensor
    inertia: float
    n_iter: int


def l2_normalize(x: Tensor) -> Tensor:
    """[N, C] -> float32 unit rows; an all-zero row stays zero (it joins whichever centroid ties first)."""
    x = x.float()
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)


def _sq_dist(xn: Tensor, x2: Tensor, c: Tensor) -> Tensor:
    """[N] or [N, k] squared Euclidean distances ||x - c||^2 from precomputed ||x||^2, without [N, k, C]."""
    if c.ndim == 1:
        return (x2 - 2 * (xn @ c) + c.dot(c)).clamp_min(0)
    return (x2[:, None] - 2 * (xn @ c.T) + (c * c).sum(1)[None, :]).clamp_min(0)


def kmeans_pp(
    xn: Tensor, k: int, gen: torch.Generator, init: Tensor | None = None, x2: Tensor | None = None
) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2 sampling with the seeded generator.

    xn: [N, C] unit rows; returns float32 [k, C]. With `init` [k0, C] (k0 < k) the first k0 centroids are
    kept and only k - k0 new ones are drawn, D^2 against all current centroids (the sweep's warm start).
    If every point already sits on a centroid (D^2 sums to 0, e.g. duplicates), the draw is uniform.
    x2: [N] ||x||^2, precomputed by a sweep.
    """
    n = xn.shape[0]
    x2 = (xn * xn).sum(1) if x2 is None else x2
    if init is None:
        cents = [xn[int(torch.randint(n, (1,), generator=gen, device="cpu"))]]
        d2 = _sq_dist(xn, x2, cents[0])
    else:
        cents = list(init.float())
        d2 = _sq_dist(xn, x2, init.float()).min(1).values
    for _ in range(len(cents), k):
        w = d2.double()
        if float(w.sum()) > 0:
            i = int(torch.multinomial(w.cpu(), 1, generator=gen))  # the seeded generator lives on the CPU
        else:
            i = int(torch.randint(n, (1,), generator=gen, device="cpu"))
        cents.append(xn[i])
        d2 = torch.minimum(d2, _sq_dist(xn, x2, xn[i]))
    return torch.stack(cents)


def assign(xn: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid by cosine: (labels int64 [N], best cosine [N]); ties -> lowest centroid id."""
    cn = c / torch.linalg.vector_norm(c, dim=1, keepdim=True).clamp_min(1e-12)
    sim = xn @ cn.T  # [N, K]
    labels = sim.argmax(1)
    return labels, sim.gather(1, labels[:, None]).squeeze(1)


def fix_empty(labels: Tensor, best: Tensor, k: int) -> Tensor:
    """Give each empty cluster one point: the points least similar to their own centroid, in order.

    A cluster's first (lowest-index) member is never moved, so no non-empty cluster is emptied; there are
    N - (K - e) >= e movable points when K <= N. Ties broken by index (stable sort): deterministic.
    """
    n = labels.shape[0]
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().squeeze(1)
    if empty.numel() == 0:
        return labels
    first = torch.full((k,), n, dtype=torch.long).scatter_reduce(0, labels, torch.arange(n), "amin")
    score = best.clone()
    score[first[counts > 0]] = float("inf")  # protected representatives
    movers = torch.sort(score, stable=True).indices[: empty.numel()]
    labels = labels.clone()
    labels[movers] = empty
    return labels


def _means(xn: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(labels, minlength=k)
    sums = torch.zeros(k, xn.shape[1]).index_add_(0, labels, xn)
    return sums / counts.clamp_min(1)[:, None].float(), counts


def lloyd(
    xn: Tensor, c: Tensor, max_iter: int = 100, tol: float = 1e-4, x2: Tensor | None = None
) -> KMeansResult:
    """Lloyd iterations from centroids c [K, C] until labels stop changing, the centroids move less than
    tol (Frobenius norm, as the official code), or max_iter. Empty clusters are re-seeded every step.
    x2: [N] ||x||^2, precomputed by a sweep."""
    k = c.shape[0]
    labels = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (it is reported)
        new, best = assign(xn, c)
        new = fix_empty(new, best, k)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        c_new, _ = _means(xn, labels, k)
        shift = float(torch.linalg.vector_norm(c_new - c))
        c = c_new
        if shift < tol:
            break
    # centroids are exactly the member means of `labels`, so inertia = sum ||x||^2 - sum n_k ||c_k||^2
    counts = torch.bincount(labels, minlength=k).double()
    x2 = (xn * xn).sum(1) if x2 is None else x2
    inertia = float(x2.double().sum() - (counts * (c.double() ** 2).sum(1)).sum())
    return KMeansResult(labels=labels, centroids=c, inertia=max(inertia, 0.0), n_iter=it)


def kmeans(x: Tensor, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4) -> KMeansResult:
    """Cosine k-means++ with a fixed K (clipped to N): x [N, C] (any float dtype, normalised here)."""
    xn = l2_normalize(x)
    k = max(1, min(int(k), xn.shape[0]))
    gen = torch.Generator().manual_seed(int(seed))
    return lloyd(xn, kmeans_pp(xn, k, gen), max_iter, tol)


def elbow_k(inertias: list[float] | Tensor, k_min: int) -> int:
    """The elbow of an inertia curve I(k_min), I(k_min+1), ...: the K with the largest second difference.

    d2[i] = I[i+2] - 2 I[i+1] + I[i] is centred on K = k_min + i + 1, so K = k_min + 1 + argmax(d2)
    (ties -> the smallest K). The official `compute_elbow` returns argmax(d2) + 2 and its caller adds 2,
    i.e. K = argmax(d2) + 4, then max(K, 12): it drops k_min (12) and the centre offset (1), so with
    k_min = 12 it lands on 12 unless argmax(d2) >= 9, and can never exceed 22. Needs >= 3 values.
    """
    i = torch.as_tensor(inertias, dtype=torch.float64)
    if i.numel() < 3:
        raise ValueError(f"the elbow rule needs at least 3 inertias, got {i.numel()}")
    d2 = i[2:] - 2 * i[1:-1] + i[:-2]
    return int(k_min) + 1 + int(torch.argmax(d2))


def adaptive_kmeans(
    x: Tensor,
    k_min: int = 12,
    k_max: int = 32,
    rule: str = "elbow",
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    min_drop: float = 0.02,
) -> tuple[KMeansResult, list[int], list[float]]:
    """Pick K in [k_min, k_max] (clipped to N) and cluster; returns (result, swept Ks, their inertias).

    The sweep is warm-started: K+1 starts from K's converged centroids plus one k-means++ (D^2) draw
    against them, so each step needs a few Lloyd iterations instead of a cold fit, and one generator
    drives the whole sweep. The chosen K's fit is reused (the official refits it from scratch).
    rule="elbow": the official intent: fit every K in the range, K = `elbow_k` (never k_min or k_max).
    rule="drop": grow K from k_min and stop at the first K whose next step lowers the inertia by less than
      `min_drop` (relative); costs (K* - k_min + 2) warm fits instead of k_max - k_min + 1, and the same
      fits as the elbow up to there, so on a clear elbow both agree. min_drop=0.02 is not calibrated.
    Fewer than 3 candidate Ks (min(k_max, N) - min(k_min, N) < 2): K = min(k_min, N), one fit.
    """
    if rule not in ADAPTIVE:
        raise ValueError(f"unknown adaptive rule {rule!r}; valid: {', '.join(ADAPTIVE)}")
    xn = l2_normalize(x)
    n = xn.shape[0]
    lo, hi = min(int(k_min), n), min(int(k_max), n)
    gen = torch.Generator().manual_seed(int(seed))
    x2 = (xn * xn).sum(1)  # [N], reused by every fit of the sweep
    res = lloyd(xn, kmeans_pp(xn, lo, gen, x2=x2), max_iter, tol, x2)
    if hi - lo + 1 < 3:
        return res, [lo], [res.inertia]
    fits, stopped = [res], False
    for k in range(lo + 1, hi + 1):
        res = lloyd(xn, kmeans_pp(xn, k, gen, fits[-1].centroids, x2), max_iter, tol, x2)
        fits.append(res)
        prev = fits[-2].inertia
        if rule == "drop" and prev - res.inertia < min_drop * prev:
            stopped = True
            break
    ks = list(range(lo, lo + len(fits)))
    inertias = [f.inertia for f in fits]
    if rule == "drop":
        # stopped at K* + 1 (drop too small): K*; ran to the end without stopping: k_max
        return (fits[-2] if stopped else fits[-1]), ks, inertias
    return fits[elbow_k(inertias, lo) - lo], ks, inertias


# --------------------------------------------------------------------------------------------------
# the reducer pieces vqtoken and tokendynamics share


# what `vtc compress --list` says of ClusterReducer's own fields
CLUSTER_PARAMS = {
    "k": "number of clusters K (fixed); none: adaptive K by `adaptive`",
    "adaptive": "how K is chosen when k and budget are none: elbow (official rule) or drop",
    "k_min": "smallest K the adaptive sweep tries",
    "k_max": "largest K the adaptive sweep tries",
    "max_iter": "Lloyd iterations at most",
    "tol": "stop when the centroids move less (Frobenius)",
    "min_drop": "drop rule: stop when inertia falls by less than this fraction",
}


@dataclass(frozen=True)
class ClusterReducer(Reducer):
    """Fields and clustering shared by `vqtoken` and `tokendynamics` (not registered itself).

    K: `budget` (fixed-length mode, exactly that many visual tokens) or `k` (fixed) or adaptive by
    `adaptive` in [k_min, k_max]; always clipped to the number of tokens (a tiny grid with N < K tokens
    gives N singleton clusters).

    Not natively batched (`reduce_batch` loops): each video runs its own seeded k-means++ draws and a
    data-dependent number of Lloyd iterations (and of K in the adaptive sweep), so videos cannot share
    steps; stacking them would only pad every video to the slowest one's iterations.
    """

    k: int | None = None
    adaptive: Adaptive = "elbow"
    k_min: int = 12
    k_max: int = 32
    budget: int | None = None
    grid: Grid = "native"
    seed: int = 0
    max_iter: int = 100
    tol: float = 1e-4
    min_drop: float = 0.02

    def decision_flops(self, red: Reduction, C: int) -> float:
        """LLOYD_ITERATIONS Lloyd steps for every K fitted (the elbow sweep fits each K), plus the norms."""
        T, hb, wb = red.base_grid
        n, k = T * hb * wb, red.n_visual()
        if self.k is not None or self.budget is not None:
            ks = [k]
        elif self.adaptive == "elbow":
            ks = list(range(self.k_min, min(self.k_max, n) + 1))
        else:
            ks = list(range(self.k_min, min(k + 1, n) + 1))
        return sum(LLOYD_ITERATIONS * 2 * C * n * kk for kk in ks) + 2 * C * n

    def __post_init__(self):
        super().__post_init__()
        if self.k is not None and self.k < 1 or self.budget is not None and self.budget < 1:
            raise ValueError("k and budget must be >= 1")
        if self.k is not None and self.budget is not None and self.k != self.budget:
            raise ValueError(f"k={self.k} and budget={self.budget} disagree; give one")
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.max_iter < 1 or self.tol < 0 or self.min_drop < 0:
            raise ValueError("need max_iter >= 1, tol >= 0, min_drop >= 0")

    def _cluster(self, x: Tensor, grid: tuple[int, int], map_name: str, codebook_name: str) -> Reduction:
        """Cluster all T*Hb*Wb base tokens; visual tokens = cluster means (raster order of each cluster's
        first member), then the newline. extras: map_name int32 [T, Hb, Wb] (output ids), codebook_name
        float32 [K, C] = mean of the members' unit vectors (the official codebook)."""
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, hb*wb, C] float32
        feats = feats.reshape(T * hb * wb, -1)  # [Nb, C]
        fixed = self.budget if self.budget is not None else self.k
        if fixed is not None:
            res = kmeans(feats, fixed, self.seed, self.max_iter, self.tol)
        else:
            res, _, _ = adaptive_kmeans(
                feats,
                self.k_min,
                self.k_max,
                self.adaptive,
                self.seed,
                self.max_iter,
                self.tol,
                self.min_drop,
            )
        nb = feats.shape[0]
        # output id = rank of the cluster's first member (its pos: equal weights tie to the first source);
        # order[j] = the k-means id of output token j
        group, order = relabel_by_first(res.labels)
        extras = {
            map_name: group.reshape(T, hb, wb).to(torch.int32),
            codebook_name: res.centroids[order].float().contiguous(),
        }
        return reduction_from_groups(
            feats, group, torch.ones(nb), self.grid, (T, hb, wb), T * H * W, extras=extras
        )
