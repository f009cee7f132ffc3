"""`dyntok`: DynTok (arXiv 2506.03990, §3.2 "Token level compression"), row-wise merging of similar neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.reducers.base import (
    KIND_MARKER,
    KIND_NEWLINE,
    Grid,
    Reducer,
    Reduction,
    base_features,
    check_input,
    grid_pos,
    split_batch,
)
from vtc.reducers.batch import concat_frames
from vtc.reducers.flops import cosine_flops
from vtc.reducers.registry import register


@register(
    "dyntok",
    paper="DynTok: Dynamic Compression of Visual Tokens for Efficient and Effective Video Understanding "
    "(arXiv 2506.03990)",
    section="§3.2",
    summary="merge similar neighbours along rows",
    adaptive=True,
    params={
        "threshold": "cosine similarity above which a token joins its left neighbour's group",
        "marker": "append a grid marker after each row",
    },
)
@dataclass(frozen=True)
class DynTok(Reducer):
    """Merge runs of similar adjacent tokens within each row of each frame; one grid marker per row.

    §3.2, "Token similarity measurement": s(k-1,k) = x_{k-1}.x_k / (|x_{k-1}| |x_k|) on the SigLIP
    representation X (not the projected tokens H). "Dynamic token merging": the first token of a row
    opens a group; token k joins the group of k-1 if s(k-1,k) > S_th, else opens a new one. The rule is
    a chain: each token is compared with its left neighbour only (Fig. 2, "compared with the one
    corresponding to its left patch"), never with the group's mean. Groups are averaged (weights
    1/|group|, in the LLM-token space at evaluation), and "a grid marker at the end of each row" keeps
    the row structure. §4.1 applies it on LLaVA-OV's bilinear-pooled 14x14 grid, hence grid="pooled".
    No official code is public; the marker's embedding is not specified, it is rendered as LLaVA-OV's
    learned image_newline (KIND_MARKER; `Reduction.apply` fills it).
    """

    threshold: float = 0.6
    marker: bool = True
    grid: Grid = "pooled"

    def decision_flops(self, red: Reduction, C: int) -> float:
        """A cosine per adjacent pair in each row, a norm per token."""
        T, hb, wb = red.base_grid
        return cosine_flops(T * hb * (wb - 1), T * hb * wb, C)

    def __post_init__(self):
        super().__post_init__()

    def batch(self, xs: list[Tensor], grid: tuple[int, int], auxs=None) -> list[Reduction]:
        """The rule is per row, so the rows of all videos (frames concatenated) are decided, grouped and
        averaged in one pass; video v's block is its groups and markers, then its own newline."""
        Ts = [check_input(x, grid)[0] for x in xs]
        H, W = int(grid[0]), int(grid[1])
        x, offs = concat_frames(xs)
        feats, (hb, wb) = base_features(x, (H, W), self.grid)  # [sum T, hb*wb, C] float32
        C = feats.shape[-1]
        B, R = len(Ts), feats.shape[0] * hb  # R rows of the whole batch, in output order
        rows = feats.reshape(R, wb, C)

        # s(k-1, k) from dot products and norms, without F.cosine_similarity's two normalised copies of
        # the features (~1.5x faster at 32x729x1152 on CPU); same value up to rounding
        norm = torch.linalg.vector_norm(rows, dim=-1)  # [R, wb]
        dot = torch.linalg.vecdot(rows[:, :-1], rows[:, 1:])  # [R, wb-1]
        sim = dot / (norm[:, :-1] * norm[:, 1:]).clamp_min(1e-8)  # [R, wb-1], s(k-1, k)
        new = torch.ones(R, wb, dtype=torch.bool)  # [R, wb] token opens a group; col 0 always does
        new[:, 1:] = ~(sim > self.threshold)  # strict ">" (paper: "exceeds"); NaN never merges
        new = new.reshape(-1)  # [R*wb], raster order over the whole batch
        gid = new.long().cumsum(0) - 1  # [R*wb] group of each token; groups are contiguous runs
        G = int(gid[-1]) + 1
        size = torch.bincount(gid, minlength=G)  # [G] members per group

        per_row = new.reshape(R, wb).sum(1)  # [R] groups per row
        rows_v = torch.tensor(Ts) * hb  # [B] rows per video
        vid_row = torch.repeat_interleave(torch.arange(B), rows_v)  # [R] video of each row
        row_of_group = torch.repeat_interleave(torch.arange(R), per_row)  # [G]
        # output order per video: row 0's groups, marker 0, row 1's groups, ..., then its newline; so
        # before group g come the markers of earlier rows and the newlines of earlier videos
        out_group = torch.arange(G) + (row_of_group if self.marker else 0) + vid_row[row_of_group]
        groups_v = torch.zeros(B, dtype=torch.long).index_add_(0, vid_row, per_row)  # [B]
        n_v = groups_v + (rows_v if self.marker else 0) + 1  # [B] LLM tokens per video
        end_v = n_v.cumsum(0)  # [B] one past each video's newline
        N = int(end_v[-1])
        newline = end_v - 1
        sizes = torch.zeros(N, dtype=torch.long)
        sizes[out_group] = size
        kind = torch.zeros(N, dtype=torch.uint8)
        kind[newline] = KIND_NEWLINE
        tokens = torch.zeros(N, C)  # group means: sum the members in place, then divide
        tokens.index_add_(0, out_group[gid], feats.reshape(-1, C))
        tokens[out_group] /= size[:, None]
        pos = torch.empty(N, 3, dtype=torch.int32)
        first = torch.nonzero(new).squeeze(1)  # [G] flat index of each group's first (= smallest) member
        pos[out_group] = grid_pos(first, hb, wb)
        r = torch.arange(R)
        if self.marker:
            out_marker = per_row.cumsum(0) + r + vid_row  # [R] right after the row's last group
            kind[out_marker] = KIND_MARKER
            pos[out_marker] = torch.stack((r // hb, r % hb, torch.full_like(r, wb - 1)), 1).to(torch.int32)
        indptr = torch.zeros(N + 1, dtype=torch.long)
        indptr[1:] = sizes.cumsum(0)
        weight = (1.0 / size.float())[gid]

        return split_batch(
            tokens,
            kind,
            pos,
            indptr,
            # groups are contiguous runs in raster order, so src is the identity over the batch
            torch.arange(int(indptr[-1])),
            weight,
            ends=end_v.tolist(),
            frame_offsets=offs,
            src_offsets=[o * hb * wb for o in offs],
            base=self.grid,
            base_grids=[(T, hb, wb) for T in Ts],
            n_input_tokens=[T * H * W for T in Ts],
        )
