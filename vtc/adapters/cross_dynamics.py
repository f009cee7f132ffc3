"""`cross-dynamics`: Token Dynamics' cross-dynamics attention (Token Dynamics: A Temporal-Spatial Framework
for Extreme Token Reduction in Video LLMs, arXiv 2503.16980 v1–v3; VQToken from v4).

It sits after the projector and the plan, before the LLM, on a ``tokendynamics`` (or ``vqtoken``)
reduction: the token base B is its K visual tokens (object-level content, each the mean of its projected
members) and the token dynamics map M [T, Hb, Wb] says which base token every grid cell holds, so the
cells of one base token trace where and when that content is in the video.

The paper (an abstract only for v1–v3) says the attention "integrates motion features into the token
base without increasing token length"; its code shares VQ-Attention's module family. vtc's form: every
cell c = (t, h, w) of the map becomes a dynamics token d_c = B[M[c]] + E_t[t] + E_s[h·Wb + w] (learned
frame and cell embeddings), and base token k attends to the dynamics tokens of its own cells only::

    B'_k = B_k + MultiHeadAttn(Q = LN(B_k) W_Q, K = LN(d_c) W_K, V = LN(d_c) W_V),  c in {c : M[c] = k}

so each base token gathers its own trajectory (which frames, which places, weighted by learned queries:
one head can look at early frames, another at late ones). Each attention also has a null slot (a zero
key and value, ``add_zero_attn``): a softmax over a token's cells alone weighs 1 cell and 8 cells the
same, with the slot the weight on the cells grows with their number, so how often a content occurs
comes through (synthetic set, tests/test_train_learns.py: count 58% -> 92% after 600 steps; without
the slot, on the demo's split, 300 steps took count 44% -> 56% and overall accuracy nowhere). The output
projection starts at zero (an
untrained adapter changes nothing) and K tokens come out, followed by the reduction's newline. Settings:
``heads`` (default 8) and ``frames`` (the frame-embedding table, default 64: longer videos are refused).
"""

from __future__ import annotations

import functools

from vtc.adapters.base import TokenAdapter, cluster_inputs, register_adapter, start_as_identity
from vtc.errors import VtcError


@register_adapter("cross-dynamics")
class CrossDynamics(TokenAdapter):
    attr = "vtc_cross_dynamics"
    defaults = {"heads": 8, "frames": 64}

    def parse(self, opts: dict) -> dict:
        out = {k: int(opts[k]) for k in ("heads", "frames")}
        if out["heads"] < 1 or out["frames"] < 1:
            raise ValueError("heads and frames must be >= 1")
        return out

    def cells(self, base_grid: tuple[int, int, int]) -> int:  # Hb*Wb
        return base_grid[1] * base_grid[2]

    def make(self, dim: int):
        return _module()(self.options["cells"], self.options["frames"], dim, self.options["heads"])


@functools.cache
def _module():
    """The torch module, defined on first use: the CLI starts without importing torch."""
    import torch
    from torch import nn

    class CrossDynamicsAttn(nn.Module):
        def __init__(self, cells: int, frames: int, dim: int, heads: int):
            super().__init__()
            self.cells, self.frames = cells, frames
            self.frame = nn.Embedding(frames, dim)
            self.cell = nn.Embedding(cells, dim)
            with torch.no_grad():  # on the scale of the tokens' own features
                self.frame.weight.normal_(0.0, dim**-0.5)
                self.cell.weight.normal_(0.0, dim**-0.5)
            self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
            # add_zero_attn: a null slot (zero key and value) beside a token's cells, so the weight on
            # the cells grows with their number and how often a content occurs can come through
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, add_zero_attn=True)
            start_as_identity(self.attn)

        def forward(self, tokens, reduction):
            index, visual, B = cluster_inputs(tokens, reduction, "cross-dynamics", self.cells)
            T = index.shape[0]
            if T > self.frames:
                raise VtcError(
                    f"cross-dynamics embeds at most {self.frames} frames; this video has {T} "
                    "(train with --cross-dynamics frames=N)"
                )
            K, dim = B.shape
            t = torch.arange(T, device=tokens.device)[:, None].expand_as(index)
            c = torch.arange(index.shape[1], device=tokens.device)[None, :].expand_as(index)
            dyn = B[index] + self.frame(t) + self.cell(c)  # [T, Hb*Wb, D]: the dynamics tokens
            dyn = self.norm_kv(dyn.reshape(-1, dim))
            own = index.reshape(1, -1) == torch.arange(K, device=tokens.device)[:, None]  # [K, cells]
            mixed, _ = self.attn(
                self.norm_q(B)[None], dyn[None], dyn[None], attn_mask=~own, need_weights=False
            )
            return torch.cat([B + mixed[0], tokens[~visual]])

    return CrossDynamicsAttn
