"""Density-peak clustering with k-nearest-neighbour density (DPC-kNN), the one copy FastVID, HoliTom,
PruneVid (before the LLM) and SparseVLM's recycling (in it) share: their official codes compute it alike."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def density_peaks(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each set's tokens by density-peak score, best first: x [B, S, C] -> (order int64 [B, S], dist [B, S, S]).

    d_ij = ||x_i - x_j|| / sqrt(C); density rho_i = exp(-mean of the k smallest d_ij^2), itself (d = 0)
    included; delta_i = min d_ij over the denser tokens j (the set's largest distance for the densest);
    score rho_i * delta_i. Where vtc differs from the official codes: equal densities count the lower
    index as denser (they add U(0, 1e-6) noise from the global RNG), and the score is ranked as
    log(delta) - mean d^2, the same order, so that exp cannot underflow into ties on large features;
    equal scores keep index order. torch.cdist as the official codes, so near-ties fall their way.
    """
    B, S, C = x.shape
    dist = torch.cdist(x, x) / math.sqrt(C)  # [B, S, S]
    msq = dist.topk(min(k, S), dim=-1, largest=False).values.pow(2).mean(dim=-1)  # [B, S]: -log rho
    rank = torch.empty(B, S, dtype=torch.long, device=x.device)  # 0 = the densest
    rank.scatter_(
        1, torch.sort(msq, dim=1, stable=True).indices, torch.arange(S, device=x.device).expand(B, S)
    )
    denser = rank[:, None, :] < rank[:, :, None]  # [B, i, j]: j is denser than i
    far = dist.flatten(1).max(dim=1).values[:, None, None]
    delta = torch.where(denser, dist, far).min(dim=-1).values  # [B, S]
    return torch.sort(delta.log() - msq, dim=1, descending=True, stable=True).indices, dist


def dpc_knn(x: Tensor, n_clusters: int, k: int) -> tuple[Tensor, Tensor]:
    """DPC-kNN clustering of the rows of x [n, C]: (centres int64 [m] best first, label int64 [n]).

    The centres are the m = min(n_clusters, n) best by `density_peaks`; every row joins its nearest centre
    (ties: the better-ranked one), a centre its own cluster; label = the rank of the row's centre.
    """
    order, dist = density_peaks(x[None].float(), k)  # a batch of one, as the official codes
    centres, dist = order[0, : min(n_clusters, x.shape[0])], dist[0]
    label = dist[centres].argmin(dim=0)  # argmin keeps the first of equal distances
    label[centres] = torch.arange(centres.numel(), device=x.device)  # a centre is in its own cluster
    return centres, label
