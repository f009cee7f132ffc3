"""`vq-attn`: VQToken's VQ-Attention (VQToken: Neural Discrete Token Representation Learning for Extreme
Token Reduction in Video Large Language Models, arXiv 2503.16980 v4+; Token Dynamics in v1–v3), in two
selectable forms (``vtc train --adapter vq-attn --vq-attn form=paper|official``).

It sits after the projector and the plan, before the LLM, on a ``vqtoken`` or ``tokendynamics``
reduction: its K visual tokens are the codebook B in the LLM space (each the mean of its projected
members) and its index map M [T, Hb, Wb] says which of them every grid cell belongs to.

``form=paper`` (default), Eq. 6–7::

    M~ = MLP(Flatten(M))                         [K, D]   (6)
    B' = B + MultiHeadAttn(Q = B W_Q, K = B W_K, V = M~ W_V)   (7)

Eq. 6 leaves the MLP's input unsaid beyond Flatten(M); vtc gives row k of M~ the flattened one-hot
footprint of cluster k, [M == k] over the T·Hb·Wb cells (Linear T·Hb·Wb → D, GELU, Linear D → D), so
M~[k] says where and when cluster k occurs and the MLP's size is fixed by the grid and frame count it was
trained on (another one is refused). Eq. 7 as printed has no residual; the paper's text says the block
"enriches each centroid ... without increasing token count", so vtc adds B back and starts the attention's
output projection at zero: an untrained adapter passes the codebook through unchanged. K tokens out.

``form=official``, the module of the official code (``VQAttn(query_dim=729, context_dim=896,
num_heads=8)``): a Linear Hb·Wb → D (``to_q_proj``) turns each frame's row of the index map (its cluster
ids as numbers) into a query, and one ``nn.TransformerDecoderLayer`` (PyTorch defaults: feed-forward 2048,
dropout 0.1, post-norm, sequence-first) attends from those queries to the codebook as memory. The shorter
of the T queries and the K codebook rows is repeated cyclically to max(T, K), as the official code does
before its call, so max(T, K) tokens go to the LLM (vtc's token counts report that number). 10,762,112
weights at Hb·Wb = 729 and D = 896; initialised as the official code does (Xavier for matrices, zero
biases, 1-D weights such as the layer norms' uniform in ±0.01). Where vtc differs: the official code
clusters the projected tokens and takes their cluster centroids as the codebook; vtc clusters the tower
features and the codebook is the mean of each cluster's projected members; vtc's ids are 0-based (the
paper writes 1..K). Neither form is what the official code runs by default: that feeds the K centroids
and a newline, which is `vqtoken` without this adapter.

Both keep the reduction's non-visual rows (the newline) after the visual tokens.
"""

from __future__ import annotations

import functools

from vtc.adapters.base import TokenAdapter, cluster_inputs, register_adapter, start_as_identity
from vtc.errors import VtcError

FORMS = ("paper", "official")


@register_adapter("vq-attn")
class VQAttention(TokenAdapter):
    attr = "vtc_vq_attn"
    defaults = {"form": "paper", "heads": 8}

    def parse(self, opts: dict) -> dict:
        out = {"form": str(opts["form"]), "heads": int(opts["heads"])}
        if out["form"] not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got '{out['form']}'")
        if out["heads"] < 1:
            raise ValueError("heads must be >= 1")
        return out

    def cells(self, base_grid: tuple[int, int, int]) -> int:  # paper: T*Hb*Wb; official: Hb*Wb
        T, Hb, Wb = base_grid
        return (T if self.options["form"] == "paper" else 1) * Hb * Wb

    def make(self, dim: int):
        paper, official = _modules()
        cls = paper if self.options["form"] == "paper" else official
        return cls(self.options["cells"], dim, self.options["heads"])


@functools.cache
def _modules():
    """The two torch modules, defined on first use: the CLI starts without importing torch."""
    import torch
    from torch import nn

    class PaperVQAttn(nn.Module):
        """Eq. 6-7 with a residual (see the module docstring)."""

        def __init__(self, cells: int, dim: int, heads: int):
            super().__init__()
            self.cells = cells
            self.mlp = nn.Sequential(nn.Linear(cells, dim), nn.GELU(), nn.Linear(dim, dim))
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            start_as_identity(self.attn)

        def forward(self, tokens, reduction):
            index, visual, B = cluster_inputs(tokens, reduction, "vq-attn")
            index = index.reshape(-1)
            if index.numel() != self.cells:
                raise VtcError(
                    f"vq-attn (paper form) was trained on {self.cells} grid cells (frames x height x "
                    f"width); this video has {index.numel()}: train it on videos sampled the same way"
                )
            ids = torch.arange(B.shape[0], device=tokens.device)
            footprint = (index[None, :] == ids[:, None]).to(tokens.dtype)  # [K, T*Hb*Wb]
            m = self.mlp(footprint)  # Eq. 6
            mixed, _ = self.attn(B[None], B[None], m[None], need_weights=False)  # Eq. 7
            return torch.cat([B + mixed[0], tokens[~visual]])

    class OfficialVQAttn(nn.Module):
        """The official module: per-frame index-map rows as queries, the codebook as memory."""

        def __init__(self, cells: int, dim: int, heads: int):
            super().__init__()
            self.cells = cells
            self.to_q_proj = nn.Linear(cells, dim)
            self.decoder = nn.TransformerDecoderLayer(d_model=dim, nhead=heads)
            with torch.no_grad():  # the official initialisation
                for name, p in self.named_parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)
                    elif "bias" in name:
                        nn.init.zeros_(p)
                    else:
                        nn.init.uniform_(p, -0.01, 0.01)

        def forward(self, tokens, reduction):
            rows, visual, B = cluster_inputs(tokens, reduction, "vq-attn", self.cells)
            T = rows.shape[0]
            L = max(T, B.shape[0])
            q = self.to_q_proj(_cycle(torch, rows.to(tokens.dtype), L))
            out = self.decoder(q[:, None], _cycle(torch, B, L)[:, None])[:, 0]  # sequence-first, batch 1
            return torch.cat([out, tokens[~visual]])

    return PaperVQAttn, OfficialVQAttn


def _cycle(torch, x, n: int):
    """The rows of ``x`` repeated in turn to ``n`` rows (the official code's repeat-and-trim)."""
    return torch.cat([x] * -(-n // x.shape[0]))[:n]
