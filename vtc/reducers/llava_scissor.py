"""`llava-scissor`: LLaVA-Scissor (LLaVA-Scissor: Token Compression with Semantic Connected Components for
Video LLMs, arXiv 2506.21862): semantic connected components within each frame, then across the video,
then every token folded into its nearest component."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.reducers.base import (
    KIND_NEWLINE,
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    grid_pos,
    newline_row,
)
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register


def components(x: Tensor, tau: float) -> Tensor:
    """Connected components of the graph "cos(x_i, x_j) > tau" over the rows of x [n, C]: int64 [n], each
    row's component named by its smallest member. Exact (label propagation to a fixed point)."""
    unit = F.normalize(x, dim=-1)
    adj = (unit @ unit.T) > tau
    adj |= torch.eye(x.shape[0], dtype=torch.bool)  # a token is in its own component, cosine rounding aside
    n = x.shape[0]
    labels = torch.arange(n)
    while True:
        nxt = torch.where(adj, labels[None, :], n).min(dim=1).values
        if torch.equal(nxt, labels):
            return labels
        labels = nxt


def _mean_rows(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(M [K, n], ids) with M the row-normalised membership matrix of the components in ``labels``."""
    ids, inv = labels.unique(return_inverse=True)
    m = torch.zeros(len(ids), labels.shape[0])
    m[inv, torch.arange(labels.shape[0])] = 1.0
    return m / m.sum(dim=1, keepdim=True), ids


def scissor_weights(feats: Tensor, T: int, tau: float) -> Tensor:
    """W [K, T*N]: output token k = sum_b W[k, b] x_b for the video's base tokens feats [T*N, C]."""
    N = feats.shape[0] // T
    # spatial: components within each frame, each a mean token
    blocks = [_mean_rows(components(feats[t * N : (t + 1) * N], tau))[0] for t in range(T)]
    w1 = torch.block_diag(*blocks)  # [K1, T*N]
    s1 = w1 @ feats
    # temporal: components among all the frames' mean tokens, each the mean of its members
    m2, _ = _mean_rows(components(s1, tau))
    w2 = m2 @ w1  # [K2, T*N]
    s2 = w2 @ feats
    # every base token joins its nearest component, which becomes (s2 + sum of its joiners) / (count + 1)
    nearest = (F.normalize(feats, dim=-1) @ F.normalize(s2, dim=-1).T).argmax(dim=1)  # [T*N]
    joins = torch.zeros_like(w2)
    joins[nearest, torch.arange(feats.shape[0])] = 1.0
    return (w2 + joins) / (joins.sum(dim=1, keepdim=True) + 1.0)


@register(
    "llava-scissor",
    paper="LLaVA-Scissor: Token Compression with Semantic Connected Components for Video LLMs "
    "(arXiv 2506.21862)",
    section="§3: semantic connected components, spatial then temporal, then a merge of all tokens",
    summary="merge connected components, then fold",
    adaptive=True,
    params={"tau": "cosine similarity above which two tokens are connected (the official 0.95)"},
)
@dataclass(frozen=True)
class LLaVAScissor(Reducer):
    """Semantic connected components (SCC), spatial then temporal, then every token folded back in.

    1. In each frame, tokens i, j are connected when cos(x_i, x_j) > tau; each connected component
       becomes the mean of its tokens. 2. The same over all the frames' component tokens together: each
       component of those becomes their mean s_k. 3. Every base token joins the s_k it is most similar to
       (cosine), and output token k = (s_k + sum of its joiners) / (joiners + 1). K follows the content.
       Each output token is a weighted mean of base tokens (weights summing to 1); its pos is its
       largest-weight token, and tokens come in raster order of their pos.
    Where the official code (HumanMLLM/LLaVA-Scissor, llava/model/llava_arch_zip.py) differs: it finds
    components approximately, from ceil(ln n / epsilon^2) randomly drawn (unseeded) nodes and their
    neighbours, which is every node of a 196-token frame at epsilon 0.05 but not of the temporal step,
    and it gathers a component as the nodes whose union-find parent is the root, which leaves out the
    deeper members; vtc finds the exact components. The official code runs on the projected LLM-space
    tokens; vtc on the stored encoder features, pooled to LLaVA-OV's 14x14 grid by default.
    """

    tau: float = 0.95
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Per-frame cosines, the temporal step at its largest (n x n), the fold against the K outputs."""
        T, hb, wb = red.base_grid
        N, n = hb * wb, T * hb * wb
        return (
            cosine_flops(T * N * N, n, C) + cosine_flops(n * n, 0, C) + cosine_flops(n * red.n_visual(), 0, C)
        )

    def __post_init__(self):
        super().__post_init__()
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [-1, 1], got {self.tau}")

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        T, H, W = check_input(x, grid)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [T, N, C] float32
        flat = feats.reshape(T * hb * wb, -1)
        w = scissor_weights(flat, T, self.tau)  # [K, T*N]
        base_grid = (T, hb, wb)
        # a row's pos is its largest-weight source (argmax: the first on ties); rows go in raster order of
        # it (a stable sort keeps equal-pos rows in component order)
        best = w.argmax(dim=1)
        order = torch.argsort(best, stable=True)
        w, best = w[order], best[order]
        rows, cols = w.nonzero(as_tuple=True)  # row-major: sources ascending within a row
        K = w.shape[0]
        indptr = torch.zeros(K + 2, dtype=torch.long)
        indptr[1:-1] = torch.bincount(rows, minlength=K).cumsum(0)
        indptr[-1] = indptr[-2]  # the newline row is empty
        weight = w[rows, cols]
        tokens = torch.cat([w @ flat, torch.zeros(1, flat.shape[1])])
        kind = torch.zeros(K + 1, dtype=torch.uint8)
        kind[-1] = KIND_NEWLINE
        return Reduction(
            tokens=tokens,
            kind=kind,
            pos=torch.cat([grid_pos(best, hb, wb), newline_row(base_grid)]),
            indptr=indptr,
            src=cols,
            weight=weight,
            base=self.grid,
            base_grid=base_grid,
            n_input_tokens=T * H * W,
        )
