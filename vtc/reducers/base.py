"""The one contract every reducer meets: a `Reduction` is a linear *plan* over a base grid of tokens.

LLaVA-OneVision pools *after* its nonlinear projector, so a reducer cannot simply hand back reduced
SigLIP features: evaluation needs to know how to build each LLM token from projected tokens. A plan
says it: output token n is ``sum_j weight[j] * base[src[j]]`` for ``j in indptr[n]:indptr[n+1]`` (CSR),
or, for a marker / the video newline, the model's learned ``image_newline`` embedding.

Base grids: ``"native"`` indexes the store's grid (27x27 for SigLIP at 384 px); ``"pooled"`` indexes
LLaVA-OV's own bilinear-pooled grid ceil(H/2) x ceil(W/2), i.e. evaluation pools the projected tokens
the stock way first and applies the plan to the result. Flattened index: ``t*Hb*Wb + h*Wb + w``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KIND_VISUAL, KIND_MARKER, KIND_NEWLINE = 0, 1, 2
Grid = Literal["native", "pooled"]  # the grids a plan can index: a reducer's `grid` parameter
BASES = typing.get_args(Grid)


@dataclass
class Reduction:
    """One video's reduced token sequence and the plan that builds it. N = every token the LLM sees.

    tokens:  [N, C] float32, the plan applied to the base-grid *input* features (markers/newline rows 0).
    kind:    uint8 [N], KIND_VISUAL / KIND_MARKER / KIND_NEWLINE; the last token is the one newline
             (as a reducer builds it; a family without separators drops them, `without_separators`).
    pos:     int32 [N, 3] (t, h, w) on the base grid: a visual token's largest-weight source (ties: the
             first in CSR order, which is the smallest index); a marker: (t, h, Wb-1) of the row it
             closes; the newline: (T-1, Hb-1, Wb-1).
    indptr:  int64 [N+1] CSR row pointers; marker and newline rows are empty.
    src:     int64 [nnz] flattened base-grid indices, ascending within a row.
    weight:  float32 [nnz]; a visual token's weights sum to 1 (up to fp error).
    """

    tokens: Tensor
    kind: Tensor
    pos: Tensor
    indptr: Tensor
    src: Tensor
    weight: Tensor
    base: str
    base_grid: tuple[int, int, int]
    n_input_tokens: int
    # Method-specific side outputs stored beside the plan as "extra_<name>" arrays (e.g. VQToken's
    # index map M[T, H, W] and codebook, for the trainable adapters).
    extras: dict[str, Tensor] = field(default_factory=dict)
    # Frames sampled per second of video (the feature store's), set where evaluation loads the video:
    # Qwen2.5-VL's M-RoPE time ids count seconds.
    fps: float | None = None

    @property
    def n_llm_tokens(self) -> int:
        """Every token that reaches the LLM: visual tokens, markers and the newline."""
        return int(self.kind.shape[0])

    def visual_groups(self) -> list[list[int]]:
        """Each visual token's base-grid sources, in output order (markers and the newline skipped)."""
        kind, ip, src = self.kind.tolist(), self.indptr.tolist(), self.src.tolist()
        return [src[ip[n] : ip[n + 1]] for n in range(len(kind)) if kind[n] == KIND_VISUAL]

    def n_visual(self) -> int:
        return int((self.kind == KIND_VISUAL).sum())

    def without_separators(self) -> Reduction:
        """The visual rows only (marker and newline rows, which are empty in the plan, dropped): what an
        LLM without a learned separator embedding reads (`vtc.families`)."""
        keep = self.kind == KIND_VISUAL
        if bool(keep.all()):
            return self
        return dataclasses.replace(
            self,
            tokens=self.tokens[keep],
            kind=self.kind[keep],
            pos=self.pos[keep],
            indptr=torch.cat((self.indptr[:1], self.indptr[1:][keep])),
        )

    def apply(self, base_tokens: Tensor, newline: Tensor, marker: Tensor | None = None) -> Tensor:
        """Apply the plan to any per-token features of the base grid (e.g. projected ones).

        base_tokens: [T*Hb*Wb, D]; newline: [D] -> [N, D] in base_tokens' dtype, accumulated in float32.
        Marker and newline rows get `newline` (LLaVA-OV has one learned separator embedding); with
        ``marker`` (vtc train's `marker` adapter) marker rows get that one instead.
        On CUDA, index_add_ accumulates with atomics: bit-reproducible only under
        torch.use_deterministic_algorithms(True); on CPU it is always deterministic.
        """
        T, Hb, Wb = self.base_grid
        if base_tokens.ndim != 2 or base_tokens.shape[0] != T * Hb * Wb:
            raise ValueError(
                f"base_tokens must be [{T * Hb * Wb}, D] for base grid {self.base_grid}, "
                f"got {list(base_tokens.shape)}"
            )
        dev = base_tokens.device
        indptr, src, weight = self.indptr.to(dev), self.src.to(dev), self.weight.to(dev)
        n = self.n_llm_tokens
        rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])  # [nnz]
        out = torch.zeros(n, base_tokens.shape[1], dtype=torch.float32, device=dev)
        out.index_add_(0, rows, base_tokens[src].float() * weight[:, None])
        kind = self.kind.to(dev)
        out[kind != KIND_VISUAL] = newline.to(device=dev, dtype=torch.float32)
        if marker is not None:
            out[kind == KIND_MARKER] = marker.to(device=dev, dtype=torch.float32)
        return out.to(base_tokens.dtype)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The tensors as numpy arrays for storage (base, base_grid, n_input_tokens go in attrs)."""
        return {
            "tokens": self.tokens.detach().cpu().float().numpy(),
            "kind": self.kind.cpu().numpy().astype(np.uint8),
            "pos": self.pos.cpu().numpy().astype(np.int32),
            "indptr": self.indptr.cpu().numpy().astype(np.int64),
            "src": self.src.cpu().numpy().astype(np.int64),
            "weight": self.weight.cpu().numpy().astype(np.float32),
            **{f"extra_{k}": v.detach().cpu().numpy() for k, v in self.extras.items()},
        }

    @classmethod
    def read(cls, store, video_id: str) -> Reduction:
        """The stored Reduction of one video of a token store (a ``vtc.cache.Store``): plan, tokens,
        kinds, positions; a damaged array is the store's one-line error."""
        arrays, attrs = store.load(video_id)
        return cls.from_arrays(
            arrays,
            base=attrs["base"],
            base_grid=tuple(attrs["base_grid"]),
            n_input_tokens=attrs["n_input_tokens"],
        )

    @classmethod
    def from_arrays(
        cls, arrays, base: str, base_grid: tuple[int, int, int], n_input_tokens: int
    ) -> Reduction:
        # copies: arrays read from zarr may be read-only, which torch.from_numpy warns about
        def t(name, dtype):
            return torch.from_numpy(np.array(arrays[name], dtype=dtype, copy=True))

        return cls(
            tokens=t("tokens", np.float32),
            kind=t("kind", np.uint8),
            pos=t("pos", np.int32),
            indptr=t("indptr", np.int64),
            src=t("src", np.int64),
            weight=t("weight", np.float32),
            base=str(base),
            base_grid=tuple(int(v) for v in base_grid),
            n_input_tokens=int(n_input_tokens),
            extras={
                k[6:]: torch.from_numpy(np.array(v, copy=True))
                for k, v in arrays.items()
                if k.startswith("extra_")
            },
        )


@dataclass(frozen=True)
class Reducer:
    """Base of every registered reducer: a frozen dataclass whose fields are the method's parameters.

    A reducer defines ``batch`` (several videos in one call, which `reduce_batch` then uses) or
    ``__call__`` (one video), and gets the other from here. A field typed ``Literal[...]`` is a closed
    set: another value is refused at construction, naming the valid ones, and `vtc compress --list NAME`
    shows them. A subclass with its own ``__post_init__`` calls this one first.
    """

    def __post_init__(self):
        for name, choices in closed_sets(type(self)).items():
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(choices)}")

    def __call__(self, x: Tensor, grid: tuple[int, int], **aux) -> Reduction:  # x: [T, H*W, C]
        return self.batch([x], grid, [aux])[0]

    @property
    def needs(self) -> tuple[str, ...]:
        """The per-video arrays beside the features (keywords of ``__call__``) this configuration reads, which
        `vtc compress` loads: the class's ``info.needs``, unless a parameter decides (an attention mode)."""
        return type(self).info.needs

    def decision_flops(self, red: Reduction, C: int) -> float:
        """Analytic FLOPs of deciding ``red`` on C-dim features (vtc.reducers.flops): every method has one."""
        raise NotImplementedError(f"{type(self).__name__} has no decision_flops")

    def batch(
        self, xs: list[Tensor], grid: tuple[int, int], auxs: list[dict] | None = None
    ) -> list[Reduction]:
        """One video at a time (a reducer that can do better defines its own)."""
        auxs = auxs if auxs is not None else [{} for _ in xs]
        return [self(x, grid, **a) for x, a in zip(xs, auxs, strict=True)]


@dataclass(frozen=True)
class Budgeted(Reducer):
    """A reducer with a fixed-length mode: ``budget`` visual tokens per video, or else the fraction
    ``ratio`` of the video's base tokens (a subclass redeclares ``ratio`` for its own default)."""

    budget: int | None = None
    ratio: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")


@functools.cache
def closed_sets(cls: type) -> dict[str, tuple]:
    """field name -> its allowed values, for the fields of ``cls`` typed ``Literal[...]``."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is Literal
    }


def check_input(x: Tensor, grid: tuple[int, int]) -> tuple[int, int, int]:
    """Validate x [T, H*W, C] against grid (H, W); returns (T, H, W)."""
    H, W = (int(v) for v in grid)
    if x.ndim != 3 or x.shape[1] != H * W or H < 1 or W < 1:
        raise ValueError(f"expected x of shape [T, {H}*{W}, C] for grid {(H, W)}, got {list(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError("x has no frames (T = 0): nothing to reduce")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got {x.dtype}")
    return int(x.shape[0]), H, W


def base_features(x: Tensor, grid: tuple[int, int], base: str) -> tuple[Tensor, tuple[int, int]]:
    """x [T, H*W, C] -> the base-grid features [T, Hb*Wb, C] float32 and (Hb, Wb)."""
    if base == "pooled":
        return llava_pool(x, grid)
    return x.float(), (int(grid[0]), int(grid[1]))


def pooled_hw(grid: tuple[int, int]) -> tuple[int, int]:
    """LLaVA-OV's pooled grid size: ceil(H/2) x ceil(W/2) (27x27 -> 14x14)."""
    return math.ceil(grid[0] / 2), math.ceil(grid[1] / 2)


def llava_pool(x: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """LLaVA-OV's video pooling (`LlavaOnevisionModel.apply_pooling`), computed in float32.

    x: [T, H*W, C] -> ([T, ceil(H/2)*ceil(W/2), C] float32, (ceil(H/2), ceil(W/2))).
    Bilinear, align_corners=False, no antialias, output size given (so the scale is in/out, not 1/2).
    """
    T, H, W = int(x.shape[0]), int(grid[0]), int(grid[1])
    hb, wb = pooled_hw((H, W))
    img = x.float().reshape(T, H, W, -1).permute(0, 3, 1, 2)  # [T, C, H, W]
    out = F.interpolate(img, size=(hb, wb), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(T, hb * wb, -1), (hb, wb)


def _interp_1d(n_in: int, n_out: int, mode: str, stride: int | None) -> Tensor:
    """Dense [n_out, n_in] float64 weights of one axis."""
    o = torch.arange(n_out)
    if mode == "bilinear":
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        # PyTorch's area_pixel_compute_source_index with align_corners=False, size given: scale = in/out,
        # src = scale*(dst+0.5) - 0.5 clamped at 0; the right neighbour is clamped to the last pixel.
        s = ((o.double() + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
        i0 = s.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        lam = s - i0.double()
        m.index_put_((o, i0), 1.0 - lam, accumulate=True)
        m.index_put_((o, i1), lam, accumulate=True)
    else:
        # avg_pool(kernel=stride, stride, ceil_mode=True, padding=0): a partial border window averages
        # only the pixels it covers (PyTorch clips the window to the input before computing the divisor).
        k = stride if stride is not None else math.ceil(n_in / n_out)
        if math.ceil(n_in / k) != n_out:
            raise ValueError(f"avg: no stride maps {n_in} to {n_out}; pass stride explicitly")
        start = (o * k)[:, None]
        i = torch.arange(n_in)[None, :]
        inside = (i >= start) & (i < start + k)
        m = inside.double() / inside.sum(1, keepdim=True).double()
    return m


def interp_matrix(
    in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str = "bilinear", *, stride: int | None = None
) -> Tensor:
    """Dense float32 [out_h*out_w, in_h*in_w] M with ``out = M @ x`` (x: [in_h*in_w, C], raster order).

    mode="bilinear": F.interpolate(size=out_hw, mode="bilinear", align_corners=False), separable:
    M = kron(M_h, M_w). mode="avg": F.avg_pool2d(kernel=stride, stride=stride, ceil_mode=True);
    stride defaults to ceil(in/out) per axis (pass it when several strides give the same size).
    Weights are computed in float64 and rounded once to float32.
    """
    if mode not in ("bilinear", "avg"):
        raise ValueError(f"unknown interpolation mode {mode!r}; valid: avg, bilinear")
    mh = _interp_1d(int(in_hw[0]), int(out_hw[0]), mode, stride)
    mw = _interp_1d(int(in_hw[1]), int(out_hw[1]), mode, stride)
    return torch.kron(mh, mw).float()


def plan_pos(indptr: Tensor, src: Tensor, weight: Tensor, base_grid: tuple[int, int, int]) -> Tensor:
    """int32 [N, 3] (t, h, w) of each row's largest-weight source (ties: the first); empty rows -> 0."""
    _, Hb, Wb = base_grid
    n, nnz = indptr.shape[0] - 1, src.shape[0]
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])  # [nnz] row of each entry
    top = torch.full((n,), -math.inf).scatter_reduce(0, rows, weight.float(), "amax")
    cand = torch.where(weight == top[rows], torch.arange(nnz), nnz)  # entries holding their row's max
    first = torch.full((n,), nnz, dtype=torch.long).scatter_reduce(0, rows, cand, "amin")
    best = src[first.clamp(max=nnz - 1)] if nnz else torch.zeros(n, dtype=torch.long)
    best = torch.where(first < nnz, best, 0)  # empty rows (markers, newline): the caller sets their pos
    return grid_pos(best, Hb, Wb)


def frame_plan(m: Tensor, T: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR plan (indptr, src, weight) applying the per-frame matrix m [out, in] to each of T frames.

    Rows: T*out visual tokens, frame by frame, then one empty row for the newline. Exact zeros in m
    are dropped (e.g. bilinear at an integer source position), so nnz counts real contributions.
    """
    n_out, n_in = m.shape
    r, c = m.nonzero(as_tuple=True)  # row-major: rows ascending, columns ascending within a row
    w = m[r, c].float()
    per_row = torch.bincount(r, minlength=n_out).repeat(T)
    indptr = torch.zeros(T * n_out + 2, dtype=torch.long)
    indptr[1:-1] = per_row.cumsum(0)
    indptr[-1] = indptr[-2]  # the newline row is empty
    src = (c[None, :] + n_in * torch.arange(T)[:, None]).reshape(-1)
    return indptr, src, w.repeat(T)


def grid_pos(flat: Tensor, Hb: int, Wb: int) -> Tensor:
    """Flattened base-grid indices [n] -> int32 [n, 3] (t, h, w)."""
    return torch.stack((flat // (Hb * Wb), (flat // Wb) % Hb, flat % Wb), dim=1).to(torch.int32)


def newline_row(base_grid: tuple[int, int, int]) -> Tensor:
    """pos of LLaVA-OV's single end-of-video newline: (T-1, Hb-1, Wb-1), int32 [1, 3]."""
    T, Hb, Wb = base_grid
    return torch.tensor([[T - 1, Hb - 1, Wb - 1]], dtype=torch.int32)


def relabel_by_first(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Renumber groups in raster order of their smallest member (the output order the contract wants).

    labels: int64 [n], any non-negative group ids (-1 = dropped) -> (group int64 [n] with ids 0..K-1, -1
    kept; order int64 [K], the original label of output group j).
    """
    n = labels.shape[0]
    keep = labels >= 0
    if not bool(keep.any()):
        return labels.clone(), torch.empty(0, dtype=torch.long)
    size = int(labels.max()) + 1
    first = torch.full((size,), n, dtype=torch.long)
    first.scatter_reduce_(0, labels[keep], torch.arange(n)[keep], "amin")
    used = (first < n).nonzero().squeeze(1)
    order = used[first[used].argsort()]
    rank = torch.full((size,), -1, dtype=torch.long)
    rank[order] = torch.arange(order.numel())
    return torch.where(keep, rank[labels.clamp(min=0)], -1), order


def reduction_from_groups(
    base_feats: Tensor,
    group: Tensor,
    weight: Tensor,
    base: str,
    base_grid: tuple[int, int, int],
    n_input_tokens: int,
    extras: dict[str, Tensor] | None = None,
) -> Reduction:
    """Build a Reduction whose visual tokens are weighted means of groups of base tokens, then the newline.

    base_feats: [Nb, C] features of the base grid (flattened t, h, w); group: int64 [Nb], the output
    token each base token feeds (0..K-1, in output order), or -1 if it is dropped; weight: [Nb] relative
    weights (e.g. ToMe sizes), normalised to sum 1 within each group. Every id in 0..K-1 must be used.
    Pruning = singleton groups with weight 1. Sources within a row are ascending; no Python loops.
    The batch of one of `reductions_from_groups`.
    """
    nb = base_feats.shape[0]
    if group.shape != (nb,) or weight.shape != (nb,):
        raise ValueError(f"group and weight must be [{nb}], got {list(group.shape)} and {list(weight.shape)}")
    return reductions_from_groups(
        base_feats, group, weight, base, [tuple(base_grid)], [n_input_tokens], [extras or {}]
    )[0]


def reductions_from_groups(
    base_feats: Tensor,
    group: Tensor,
    weight: Tensor,
    base: str,
    base_grids: list[tuple[int, int, int]],
    n_input_tokens: list[int],
    extras: list[dict[str, Tensor]] | None = None,
) -> list[Reduction]:
    """`reduction_from_groups` for B videos at once: one sort, one index_add, one plan_pos, then split.

    base_feats: [sum Nb_v, C], the videos' base tokens back to back (Nb_v = T_v*Hb*Wb, one Hb x Wb for
    all); group, weight: [sum Nb_v], each video's own group ids (0..K_v-1, -1 dropped) and weights.
    Every per-row quantity is computed as in the one-video case (the same members, summed in the same
    order), so each Reduction is bit-identical to `reduction_from_groups` on that video alone. The
    outputs are contiguous slices of shared tensors: video v's K_v tokens then its newline.
    """
    B = len(base_grids)
    nbs = [int(T) * int(Hb) * int(Wb) for T, Hb, Wb in base_grids]
    NB = sum(nbs)
    if base_feats.shape[0] != NB or group.shape != (NB,) or weight.shape != (NB,):
        raise ValueError(
            f"base_feats, group and weight must have {NB} rows, got {base_feats.shape[0]}, "
            f"{list(group.shape)} and {list(weight.shape)}"
        )
    if len({(Hb, Wb) for _, Hb, Wb in base_grids}) > 1:
        raise ValueError(f"videos of one batch share a base grid, got {sorted(set(base_grids))}")
    dev = group.device
    nb_t = torch.tensor(nbs, dtype=torch.long, device=dev)
    boff = nb_t.cumsum(0) - nb_t  # [B] first base index of each video
    vid = torch.repeat_interleave(torch.arange(B, device=dev), nb_t)  # [NB] video of each base token
    keep = group >= 0
    kmax = torch.full((B,), -1, dtype=torch.long, device=dev).scatter_reduce(
        0, vid[keep], group[keep], "amax"
    )
    k = kmax + 1  # [B] visual tokens per video
    rows = k + 1  # [B] output rows per video: its groups, then its newline
    roff = rows.cumsum(0) - rows  # [B] first output row of each video
    n_rows = int(rows.sum())
    g, idx, w = group[keep] + roff[vid[keep]], torch.arange(NB, device=dev)[keep], weight[keep].double()
    counts = torch.bincount(g, minlength=n_rows)  # [n_rows] members per output row; newline rows 0
    newline = roff + k  # [B] row index of each video's newline
    is_nl = torch.zeros(n_rows, dtype=torch.bool, device=dev)
    is_nl[newline] = True
    if bool(((counts == 0) & ~is_nl).any()):
        raise ValueError("group ids must cover 0..K-1 with no gaps")
    order = torch.argsort(g * NB + idx)  # by group, then source index ascending
    g, idx, w = g[order], idx[order], w[order]
    total = torch.zeros(n_rows, dtype=torch.float64, device=dev).index_add_(0, g, w)
    w = (w / total[g]).float()
    indptr = torch.zeros(n_rows + 1, dtype=torch.long, device=dev)
    indptr[1:] = counts.cumsum(0)
    feats = base_feats.float()
    tokens = torch.zeros(n_rows, feats.shape[1], device=dev).index_add_(0, g, feats[idx] * w[:, None])
    kind = torch.zeros(n_rows, dtype=torch.uint8, device=dev)
    kind[newline] = KIND_NEWLINE
    _, Hb, Wb = base_grids[0]
    pos = plan_pos(indptr, idx, w, (NB // (Hb * Wb), Hb, Wb))  # t counted over the whole batch
    return split_batch(
        tokens,
        kind,
        pos,
        indptr,
        idx,
        w,
        ends=(newline + 1).tolist(),
        frame_offsets=(boff // (Hb * Wb)).tolist(),
        src_offsets=boff.tolist(),
        base=base,
        base_grids=base_grids,
        n_input_tokens=n_input_tokens,
        extras=extras,
    )


def reduction_from_entries(
    base_feats: Tensor,
    row: Tensor,
    src: Tensor,
    weight: Tensor,
    base: str,
    base_grid: tuple[int, int, int],
    n_input_tokens: int,
    tiebreak: Tensor | None = None,
) -> Reduction:
    """Build a Reduction from plan entries, for methods whose tokens share sources (a merged token that
    also feeds its neighbours), which `reduction_from_groups`' one-group-per-token cannot say.

    Entry e puts base token src[e] into output token row[e] with relative weight weight[e]; a repeated
    (row, src) pair adds up; each row's weights are normalised to sum 1 (in float64). Rows come out in
    the contract's order: by position (the largest-weight source, the first on ties), rows at the same
    position by ``tiebreak`` (int64 per row, e.g. the token it stands for; default: the row id), then the
    newline. base_feats: [T*Hb*Wb, C]; every row id 0..K-1 must be used.
    """
    T, hb, wb = base_grid
    NB, C = base_feats.shape
    n = int(row.max()) + 1 if row.numel() else 0
    key, inv = torch.unique(row * NB + src, return_inverse=True)  # sorted: by row, then source
    w = torch.zeros(key.shape[0], dtype=torch.float64).index_add_(0, inv, weight.double())
    row, src = key // NB, key % NB
    counts = torch.bincount(row, minlength=n)
    if bool((counts == 0).any()):
        raise ValueError("row ids must cover 0..K-1 with no gaps")
    w = (w / torch.zeros(n, dtype=torch.float64).index_add_(0, row, w)[row]).float()
    indptr = torch.zeros(n + 1, dtype=torch.long)
    indptr[1:] = counts.cumsum(0)
    pos = plan_pos(indptr, src, w, base_grid)
    flat = (pos[:, 0].long() * hb + pos[:, 1].long()) * wb + pos[:, 2].long()
    tiebreak = torch.arange(n) if tiebreak is None else tiebreak
    perm = torch.argsort(flat * (int(tiebreak.max()) + 1 if n else 1) + tiebreak)  # output row i: old perm[i]
    new_row = torch.empty(n, dtype=torch.long)
    new_row[perm] = torch.arange(n)
    order = torch.argsort(new_row[row] * NB + src)
    row, src, w = new_row[row][order], src[order], w[order]
    indptr = torch.zeros(n + 2, dtype=torch.long)  # + the newline's empty row
    indptr[1 : n + 1] = torch.bincount(row, minlength=n).cumsum(0)
    indptr[n + 1] = indptr[n]
    tokens = torch.zeros(n + 1, C).index_add_(0, row, base_feats.float()[src] * w[:, None])
    kind = torch.zeros(n + 1, dtype=torch.uint8)
    kind[n] = KIND_NEWLINE
    pos = torch.cat((pos[perm], torch.zeros(1, 3, dtype=torch.int32)))
    return split_batch(
        tokens,
        kind,
        pos,
        indptr,
        src,
        w,
        ends=[n + 1],
        frame_offsets=[0],
        src_offsets=[0],
        base=base,
        base_grids=[tuple(base_grid)],
        n_input_tokens=[n_input_tokens],
    )[0]


def split_batch(
    tokens: Tensor,
    kind: Tensor,
    pos: Tensor,
    indptr: Tensor,
    src: Tensor,
    weight: Tensor,
    ends: list[int],
    frame_offsets: list[int],
    src_offsets: list[int],
    base: str,
    base_grids: list[tuple[int, int, int]],
    n_input_tokens: list[int],
    extras: list[dict[str, Tensor]] | None = None,
) -> list[Reduction]:
    """Cut a batch's concatenated reduction into one Reduction per video.

    Video v owns output rows [ends[v-1], ends[v]) (its newline last), its base frames start at
    frame_offsets[v] and its base indices at src_offsets[v] of the batch's flat base grid: its positions,
    plan rows and sources are shifted to count from its own start, and its newline gets the video's own
    newline position (T-1, Hb-1, Wb-1). The outputs are slices of the shared tensors.
    """
    dev = tokens.device
    out, r0 = [], 0
    for v, (T, Hb, Wb) in enumerate(base_grids):
        r1 = int(ends[v])
        e0, e1 = int(indptr[r0]), int(indptr[r1])
        p = pos[r0:r1]
        if v:  # frames of earlier videos come first in the batch's flat index
            p = p - torch.tensor([int(frame_offsets[v]), 0, 0], dtype=torch.int32, device=dev)
        p[-1] = torch.tensor([int(T) - 1, int(Hb) - 1, int(Wb) - 1], dtype=torch.int32, device=dev)
        out.append(
            Reduction(
                tokens=tokens[r0:r1],
                kind=kind[r0:r1],
                pos=p,
                indptr=indptr[r0 : r1 + 1] - e0 if v else indptr[r0 : r1 + 1],
                src=src[e0:e1] - int(src_offsets[v]) if v else src[e0:e1],
                weight=weight[e0:e1],
                base=base,
                base_grid=(int(T), int(Hb), int(Wb)),
                n_input_tokens=int(n_input_tokens[v]),
                extras=dict((extras or [{}] * len(base_grids))[v] or {}),
            )
        )
        r0 = r1
    return out


def groups_diff(reduction: Reduction, groups: list[list[int]]) -> int:
    """How many base tokens are grouped differently from ``groups`` (lists of sources in output order):
    the total size of the symmetric difference of the two sets of groups; the same groups in another
    order count every token. 0 = identical decisions. Used to check reducers against loop references."""
    ours = [tuple(g) for g in reduction.visual_groups()]
    theirs = [tuple(g) for g in groups]
    sym = set(ours) ^ set(theirs)
    if not sym and ours != theirs:
        return sum(len(g) for g in ours)
    return sum(len(g) for g in sym)
