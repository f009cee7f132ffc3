"""Online (in-LLM) visual token pruning: methods that drop visual tokens inside the LLM while it runs.

Offline reducers (``vtc.reducers``) decide which tokens reach the LLM; an online method decides, from the
LLM's own attention, which of those tokens later layers (and later decoding steps) still see. Both combine:
the online method works on whatever visual tokens the stored reduction gave the LLM.

Registry (a `vtc.registry.Registry`, the type the reducers' is): ``get_online("fastv", k="2", ratio="0.25")`` builds a frozen
dataclass whose fields are the method's parameters (strings from ``--set key=value`` are converted to the
field types), ``list_online()`` lists them, ``online_config(m)`` gives the JSON-able config back.

"Visual tokens" here are all the ``<video>`` placeholder positions of the prompt: visual tokens, row
markers and the end-of-video newline, i.e. ``Reduction.n_llm_tokens`` of them, the span both official codes
prune (LLaVA's image-feature span, newlines included) and the count vtc reports as visual tokens.

How it hooks into transformers (no copied modelling code, no patched source): ``attach`` registers an
attention function with ``transformers.AttentionInterface`` (and the matching mask function with
``AttentionMaskInterface``) that wraps the model's own ``sdpa`` or ``eager`` attention, switches the LLM
(the ``text_config`` sub-model only) to it for one generation, and, for physical removal, adds forward
pre-hooks on the decoder layers. The wrapper sees every layer's query and its full key/value cache:

* at the score layer it computes the last query's attention row (softmax over all keys, mean over heads)
  and hands its visual part to the method (``on_attention``: SparseVLM's raters and PruneVid's question
  tokens use other query rows);
* at a pruned layer it runs the wrapped attention on the kept keys only: the visual keys the method
  dropped are gathered out of K/V (and the mask) before attention, so attention cost shrinks with them.

Physical removal (FastV, SparseVLM, PruneVid, HoliTom): in prefill, a layer's pre-hook first lets the method
rewrite the hidden states entering it (``before_layer``: HoliTom averages each dropped token into a kept
one, SparseVLM writes its recycled cluster means into the slots of the cluster centres), then cuts them,
and the position ids / embeddings, to the layer's layout; the layers from there on compute, and cache,
only those rows, so decoding steps find caches that hold exactly the tokens (and merged states) prefill
kept. Layouts only shrink: each is a subset of the previous layer's.

DyCoke, FastV, PyramidDrop and HoliTom take their scores from the layer *before* the first pruned one
(0-based ``L-1`` / ``K-1``), as their official codes do; SparseVLM and PruneVid score with a layer's own
attention and prune after it, as theirs do.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.errors import VtcError
from vtc.reducers.cluster import dpc_knn
from vtc.registry import Registry


class OnlineError(VtcError, ValueError):
    """A bad online method name or parameter: a ValueError for callers, a one-line VtcError for the CLI."""


@dataclasses.dataclass(frozen=True)
class OnlineInfo:
    """What a method listing shows beside the docstring's first line and the parameters."""

    paper: str = ""
    phase: str = ""  # "decode" (prefill unchanged) or "prefill+decode"


ONLINE = Registry("online method", OnlineError, OnlineInfo)


def register_online(name: str, **info):
    """Class decorator: register a frozen dataclass online method under ``name``."""
    return ONLINE.register(name, **info)


def list_online() -> dict[str, dict]:
    """{name: {"paper", "phase", "description", "params": {field: default}}}, sorted by name."""
    out = {}
    for name, cls in ONLINE.sorted().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        out[name] = {
            "paper": cls.info.paper,
            "phase": cls.info.phase,
            "description": doc[0] if doc else "",
            "params": {f.name: f.default for f in dataclasses.fields(cls) if f.init},
        }
    return out


def get_online(name: str, **params):
    """Build a registered online method; string values are converted to the fields' types."""
    return ONLINE.build(name, params)


def online_config(m) -> dict:
    """{"method": name, **params}; ``get_online(cfg.pop("method"), **cfg)`` rebuilds it."""
    return ONLINE.config(m)


# --------------------------------------------------------------------------------------------------
# Pure selection functions (unit-testable without a model)


def query_attention(
    query: Tensor, key: Tensor, mask: Tensor | None, scaling: float, n_rep: int, rows: Tensor
) -> Tensor:
    """Attention distributions of the query rows ``rows``, per head: [B, H, R, S_kv] float32.

    query [B, H, Q, d] (after RoPE), key [B, H_kv, S_kv, d] (after RoPE), H = n_rep·H_kv; rows: indices into
    Q. mask: None (causal: query q sees keys 0 .. S_kv-Q+q), or the model's 4D mask [B, 1, Q, S_kv] (bool:
    True = attend; float: additive). softmax(q·Kᵀ·scaling + mask) over all keys.
    """
    q = query.index_select(2, rows.to(query.device)).float()  # [B, H, R, d]
    k = key.float()
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)  # [B, H, S, d], head h uses kv head h // n_rep
    s = torch.matmul(q, k.transpose(-1, -2)) * scaling  # [B, H, R, S]
    if mask is not None:
        m = mask.index_select(-2, rows.to(mask.device))
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.float()
    else:
        S, Q = key.shape[2], query.shape[2]
        future = torch.arange(S, device=s.device)[None, :] > (S - Q + rows.to(s.device))[:, None]  # [R, S]
        if future.any():
            s = s.masked_fill(future, float("-inf"))
    return torch.softmax(s, dim=-1)


def last_query_attention(
    query: Tensor, key: Tensor, mask: Tensor | None, scaling: float, n_rep: int = 1
) -> Tensor:
    """The last query's attention distribution, averaged over heads: [B, S_kv] float32.

    query [B, H, Q, d] (after RoPE), key [B, H_kv, S_kv, d] (the whole cache, after RoPE), H = n_rep·H_kv;
    mask: None (causal: the last query sees every key), or the model's 4D mask [B, 1, Q, S_kv] (bool: True =
    attend; float: additive). softmax(q_last·Kᵀ·scaling + mask) over all keys, then the mean over heads
    (DyCoke Eq. 5, FastV's "average attention received from the last token").
    """
    last = torch.tensor([query.shape[2] - 1])
    return query_attention(query, key, mask, scaling, n_rep, last).mean(dim=1)[:, 0]  # [B, S]


def per_layer(n_layers: int, n_visual: int, changes: list[tuple[int, int]]) -> list[int]:
    """Visual tokens each of ``n_layers`` layers sees: ``n_visual`` until the first (layer, count) change, then
    that count from its layer on (changes in increasing layer order)."""
    rows, n = [], n_visual
    todo = list(changes)
    for i in range(n_layers):
        while todo and todo[0][0] <= i:
            n = todo.pop(0)[1]
        rows.append(n)
    return rows


def topk_sorted(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores (capped at len(scores)), ascending: the kept tokens in order."""
    k = max(0, min(int(k), scores.shape[-1]))
    return torch.topk(scores, k).indices.sort().values


@dataclasses.dataclass
class DynamicSelection:
    """DyCoke's dynamic KV selection over N visual tokens (paper §3.2, Eq. 5-7), one decode step at a time.

    ``update(a)`` takes the step's attention a ∈ R^N over the visual tokens. On the first step, and whenever
    cos(a, a_prev) < tau (a_prev: the previous step's vector, as the official code compares), the active set
    becomes the top ``n_keep`` of a: tokens of the DP cache whose attention rose come back ("brought back"),
    tokens that fell out go to the DP cache ("evicted"). Otherwise the active set is kept.
    """

    n_keep: int
    tau: float
    keep: Tensor | None = None  # [n_keep] ascending indices into the visual span: the active KV set
    prev: Tensor | None = None  # the previous step's attention vector
    steps: int = 0
    selections: int = 0
    brought_back: int = 0
    evicted: int = 0
    last_cos: float | None = None
    cosines: list = dataclasses.field(default_factory=list)  # per step: cos to the previous step (None first)

    def update(self, attn: Tensor) -> bool:
        """attn [N] -> True when the active set was (re)selected at this step."""
        attn = attn.detach().float().reshape(-1)
        cos = None
        if self.prev is not None and self.prev.shape == attn.shape:
            cos = self.last_cos = float(F.cosine_similarity(attn, self.prev, dim=0))
        select = cos is None or cos < self.tau
        self.cosines.append(cos)
        self.prev = attn
        self.steps += 1
        if select:
            new = topk_sorted(attn, self.n_keep)
            if self.keep is not None:
                self.brought_back += int((~torch.isin(new, self.keep)).sum())
                self.evicted += int((~torch.isin(self.keep, new)).sum())
            self.keep = new
            self.selections += 1
        return select


def select_raters(visual: Tensor, text: Tensor) -> Tensor:
    """SparseVLM's text raters (§3.2): the text tokens relevant to the visual tokens, as ascending indices.

    visual [Nv, D], text [Nt, D]: the LLM's input embeddings. R = softmax over the text of visual·textᵀ
    ([Nv, Nt], each visual token's distribution over the text), averaged over the visual tokens ([Nt]); the
    raters are the text tokens whose mean exceeds the mean over the text (the official ``m_v_t > m_v_t.mean()``).
    When no token exceeds it (all equal, e.g. a single text token) every text token rates (the official code
    would average an empty set).
    """
    r = torch.softmax(visual.float() @ text.float().T, dim=1).mean(dim=0)  # [Nt]
    idx = torch.nonzero(r > r.mean()).flatten()
    return idx if idx.numel() else torch.arange(text.shape[0], device=text.device)


def cluster_means(x: Tensor, assign: Tensor, n_clusters: int) -> Tensor:
    """x [N, C], assign [N] in 0..n_clusters-1 -> the mean of each cluster [n_clusters, C] (in x's dtype)."""
    sums = torch.zeros(n_clusters, x.shape[1], dtype=torch.float32, device=x.device)
    sums.index_add_(0, assign, x.float())
    counts = torch.bincount(assign, minlength=n_clusters).clamp(min=1)
    return (sums / counts[:, None]).to(x.dtype)


def recycle(x: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """SparseVLM's token recycling (§3.4) of the pruned tokens x [P, C] with their rater scores [P].

    The official rule: the top 30% of the pruned tokens by score (``int(0.3·P) + 1``) are clustered by
    DPC-kNN (`vtc.reducers.cluster.dpc_knn`, k = the cluster count) into ``int(M/10) + 1`` clusters and
    each cluster becomes one token, the mean of its members.
    Returns (centres [n_clusters]: indices into x of the clusters' centre tokens, merged [n_clusters, C]).
    """
    p = x.shape[0]
    if p == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device), x[:0]
    m = min(p, int(p * 0.3) + 1)
    chosen = torch.topk(scores, m).indices
    n_clusters = min(m, int(m / 10) + 1)
    centres, assign = dpc_knn(x[chosen], n_clusters, n_clusters)
    return chosen[centres], cluster_means(x[chosen], assign, n_clusters)


def merge_into_nearest(x: Tensor, keep: Tensor, drop: Tensor) -> Tensor:
    """HoliTom's inner-LLM merge: each dropped token is averaged into its most similar kept token.

    x [N, C]; keep, drop: disjoint indices into x (drop ascending). Each dropped token's target is the kept
    token of largest cosine similarity (hidden states before any merge; the first on ties). The official code
    then loops over the dropped tokens in order, ``h[t] = (h[t] + h[i]) / 2``, so a target t with sources
    i1 < … < im ends as 2^-m·h[t] + Σ_j 2^-(m-j+1)·h[ij] (later sources weigh more); this is that sum, in one
    pass. Returns the kept tokens' merged states [len(keep), C] (in x's dtype).
    """
    xf = x.float()
    out = xf[keep].clone()
    if drop.numel() == 0 or keep.numel() == 0:
        return out.to(x.dtype)
    kept, dropped = F.normalize(xf[keep], dim=-1), F.normalize(xf[drop], dim=-1)
    target = (dropped @ kept.T).argmax(dim=-1)  # [D] index into keep
    m = torch.bincount(target, minlength=keep.numel())  # sources per kept token
    order = torch.argsort(target, stable=True)  # by target, then position (drop is ascending)
    tgt_sorted = target[order]
    first = torch.cumsum(m, 0) - m  # where each target's run starts in the sorted order
    j = torch.arange(drop.numel(), device=x.device) - first[tgt_sorted] + 1  # 1-based rank among its sources
    w = torch.pow(2.0, -(m[tgt_sorted] - j + 1).float())  # [D]
    out = out * torch.pow(2.0, -m.float())[:, None]
    out.index_add_(0, tgt_sorted, xf[drop][order] * w[:, None])
    return out.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# The methods


@register_online(
    "dycoke-kv",
    paper="DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models (arXiv 2411.15024), "
    "§3.2 KV cache dynamic pruning",
    phase="decode",
)
@dataclasses.dataclass(frozen=True)
class DyCokeKV:
    """DyCoke stage 2: at each decode step keep the top (1-p) visual tokens in the KV cache of layers >= l.

    Paper (§3.2, Eq. 5-7): at layer L the predicted token's attention over the visual tokens, averaged over
    heads, keeps the top tokens in the KV cache (Eq. 6); the others wait in a dynamic-pruning (DP) cache
    (Eq. 7) and come back when attention shifts to them; the selection is recomputed only at steps where the
    attention pattern's cosine similarity to the previous step drops (official threshold 0.9). Prefill is
    unchanged. Here: n_keep = floor((1-p)·N + 1e-9) (the official ``int(N·(1-P))``; the 1e-9 stops a product
    like (1-0.9)·10 = 0.99999… from flooring to 0); scores from layer l-1, pruning in layers >= l at the same
    step; the DP cache is the layer's full KV cache and the active set is gathered from it before attention
    (physically shorter K/V for the attention, the same as the official ``PrunableDynamicCache.update``).
    tau=0 never re-selects (one-shot pruning at the first decode step, the paper's "w/o DP" ablation).

    Where the official code (KD-TAO/DyCoke, ``modeling_qwen2.py``) differs: it resets the selection at every
    forward and re-applies it only at steps whose cosine falls below 0.9, so steps with a stable attention
    pattern run with *no* pruning at all; vtc keeps the last selection on those steps (the paper's reading).
    It also takes the scores from the layer before L, as here. What the paper's L=0 ablation rows ran could
    not be verified (the official loop has no attention map before layer 0); vtc requires l >= 1.
    """

    l: int = 3  # noqa: E741  (the paper's name)
    p: float = 0.7
    tau: float = 0.9

    def __post_init__(self):
        if self.l < 1:
            raise ValueError(f"l must be >= 1 (scores come from layer l-1), got {self.l}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")

    def n_keep(self, n_visual: int) -> int:
        from vtc.eval.flops import dycoke_keep

        return dycoke_keep(n_visual, self.p)

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): decode layers >= l see the kept ones."""
        return [n_visual] * n_layers, per_layer(n_layers, n_visual, [(self.l, self.n_keep(n_visual))])

    def first_pruned_layer(self) -> int:
        return self.l


@register_online(
    "fastv",
    paper="An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for Large "
    "Vision-Language Models (FastV, arXiv 2403.06764)",
    phase="prefill+decode",
)
@dataclasses.dataclass(frozen=True)
class FastV:
    """FastV: after layer k-1, keep the R visual tokens the last prompt token attends to most.

    Paper: at layer K rank the image tokens by the attention they receive from the last token (mean over
    heads, scores of layer K-1 as in the official code) and drop all but the top R for layers >= K, during
    prefill; kept tokens keep their original positions (RoPE positions unchanged, gaps allowed), and the
    decode steps see only the kept tokens in layers >= K. R = r if given, else round(ratio·N) (Python's
    round), capped at N. ``ratio`` is the fraction *kept* (the official ``fastv_kvcache.py`` keeps
    ``int(576·ratio)``; the main FastV code's ratio is the fraction dropped).
    mask=false (default) removes the dropped tokens physically: layers >= k run on the shorter sequence and
    cache only the kept tokens (what saves compute). mask=true is the official attention-mask variant: all
    hidden states are computed but the dropped tokens are masked out of attention in layers >= k; the kept
    tokens' outputs, and so the generated text, are the same either way.
    The official "inplace" variant re-runs the whole prompt without a KV cache at every generated token (a
    fresh selection per token); it is not implemented. The official kvcache variant hard-codes LLaVA-1.5's
    image span (35:611) and runs layer K-1 twice; vtc locates the <video> span from the prompt.
    """

    k: int = 2
    r: int | None = None
    ratio: float = 0.5
    mask: bool = False

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1 (scores come from layer k-1), got {self.k}")
        if self.r is not None and self.r < 0:
            raise ValueError(f"r must be >= 0, got {self.r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")

    def n_keep(self, n_visual: int) -> int:
        r = self.r if self.r is not None else round(self.ratio * n_visual)
        return max(0, min(n_visual, int(r)))

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): layers >= k see the kept ones."""
        rows = per_layer(n_layers, n_visual, [(self.k, self.n_keep(n_visual))])
        return rows, list(rows)

    def first_pruned_layer(self) -> int:
        return self.k


def _layer_list(name: str, value, first: int = 0) -> tuple[int, ...]:
    """Comma-separated increasing layer numbers >= ``first`` (a one-line ValueError otherwise)."""
    try:
        out = tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated layer numbers, got {value!r}") from None
    if not out or out[0] < first or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be increasing layer numbers >= {first}, got {value!r}")
    return out


@register_online(
    "pdrop",
    paper="PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy "
    "Reduction (arXiv 2410.17247)",
    phase="prefill+decode",
)
@dataclasses.dataclass(frozen=True)
class PyramidDrop:
    """PyramidDrop: at each stage boundary, keep the share `ratio` of the visual tokens still in use.

    Paper (§3.2): the LLM is cut into stages at `layers`; at the start of each stage the visual tokens
    still in use are ranked by the attention the last instruction token gives them, and only the top
    share λ (`ratio`, 0.5) go on, so the count shrinks as N, λN, λ²N, ... (a pyramid) over the
    stages, in prefill, and the decode steps see the same sets layer by layer. Scores are taken, as vtc's
    `fastv`, from the layer before each boundary (mean over heads of the last prompt token's attention);
    each stage keeps round(ratio * count) of the previous stage's tokens (Python's round). Default
    boundaries 8,16,24 (the paper's for 32-layer LLMs; a boundary must lie inside the LLM). The dropped
    tokens are masked out of attention in the later layers rather than removed, so the kept tokens'
    outputs (and the answer) are those of physical removal; the per-layer visible counts (and the FLOPs
    vtc reports from them) are the pyramid's.
    """

    layers: str = "8,16,24"
    ratio: float = 0.5

    def __post_init__(self):
        self.stages()  # scores come from the layer before a boundary: the first is >= 1
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")

    def stages(self) -> tuple[int, ...]:
        return _layer_list("layers", self.layers, first=1)

    def counts(self, n_visual: int) -> list[int]:
        """Visual tokens in use after each boundary: N, λN, λ²N, ... rounded stage by stage."""
        out, n = [], n_visual
        for _ in self.stages():
            n = max(0, min(n, round(self.ratio * n)))
            out.append(n)
        return out

    def n_keep(self, n_visual: int) -> int:
        """Visual tokens in use after the last boundary."""
        return self.counts(n_visual)[-1]

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): the pyramid, stage by stage."""
        rows = per_layer(n_layers, n_visual, list(zip(self.stages(), self.counts(n_visual), strict=True)))
        return rows, list(rows)

    def first_pruned_layer(self) -> int:
        return self.stages()[-1]  # the deepest boundary must lie inside the LLM


# SparseVLM's official schedules (``score.py``, v1.x): visual tokens kept at layers 2, 6, 15 of LLaVA-1.5's 576,
# by the RETAIN_TOKN budget (the mean count over the 32 layers).
SPARSEVLM_SCHEDULES = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}


@register_online(
    "sparsevlm",
    paper="SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model Inference (arXiv 2410.04417)",
    phase="prefill+decode",
)
@dataclasses.dataclass(frozen=True)
class SparseVLM:
    """SparseVLM: text raters rank the visual tokens at a few layers; the pruned ones are recycled as clusters.

    Paper (§3.2-3.4): the raters are the text tokens relevant to the visual ones (:func:`select_raters`, on the
    LLM's input embeddings); at each sparsification layer the visual tokens still in use are scored by the
    raters' attention (mean over heads, then over raters), the top ones stay, and of the pruned ones the top 30%
    by score are clustered (DPC-kNN, M/10+1 clusters) into recycled tokens, the means of their members' hidden
    states, which stay too (:func:`recycle`). Official code (Gumpest/SparseVLMs v1.5, LLaVA-1.5): layers 2, 6,
    15 (0-based; a layer's own attention scores, the layers after it see the reduced set), keeping 300, 200,
    110 of 576 tokens for RETAIN_TOKN=192 (``retain``: 192, 128, 96 or 64, the official tables); recycled
    tokens join the candidates of the next layer. vtc scales the schedule to the N visual tokens reaching the
    LLM, round(count·N/576) (``ratios``: explicit kept fractions of N per layer instead), capped at the tokens in
    use, and removes the pruned tokens physically in prefill; decoding sees the same sets layer by layer.
    Where vtc differs: kept tokens keep their RoPE positions (the v1.5 code renumbers them contiguously; v2.0
    keeps them) and a recycled token takes the position (and the slot) of its cluster's centre token, where
    the official code appends the recycled tokens after the kept ones; the official cap min(count, N-1) (which
    always prunes one token) and the 1e-6 noise of its clustering are not reproduced. SparseVLM v2.0's bias
    correction and head selection are not implemented (recycle=false gives v2.0's no-recycling selection).
    """

    layers: str = "2,6,15"
    retain: int = 192
    ratios: str = ""
    recycle: bool = True

    def __post_init__(self):
        stages = _layer_list("layers", self.layers)
        if self.ratios:
            try:
                r = [float(v) for v in str(self.ratios).split(",")]
            except ValueError:
                raise ValueError(f"ratios must be comma-separated fractions, got {self.ratios!r}") from None
            if len(r) != len(stages) or not all(0.0 <= v <= 1.0 for v in r):
                raise ValueError(
                    f"ratios must be {len(stages)} fractions in [0, 1] (one per layer), got {self.ratios!r}"
                )
        else:
            if self.retain not in SPARSEVLM_SCHEDULES:
                valid = ", ".join(str(k) for k in sorted(SPARSEVLM_SCHEDULES))
                raise ValueError(f"retain must be one of {valid} (the official schedules), got {self.retain}")
            if len(stages) != 3:
                raise ValueError(
                    f"the official schedules have 3 layers; give ratios for {len(stages)} layers"
                )

    def stages(self) -> tuple[int, ...]:
        return _layer_list("layers", self.layers)

    def stage_keep(self, n_visual: int) -> list[int]:
        """Visual tokens kept (before recycling) at each layer, before the cap at the tokens in use."""
        if self.ratios:
            return [round(float(v) * n_visual) for v in str(self.ratios).split(",")]
        return [round(c * n_visual / 576) for c in SPARSEVLM_SCHEDULES[self.retain]]

    def schedule(self, n_visual: int) -> list[tuple[int, int]]:
        """(kept, recycled) visual tokens after each layer of ``layers``: the counts later layers see are sums."""
        out, alive = [], n_visual
        for k in self.stage_keep(n_visual):
            k = max(0, min(alive, k))
            pruned = alive - k
            r = int((min(pruned, int(pruned * 0.3) + 1)) / 10) + 1 if self.recycle and pruned else 0
            out.append((k, r))
            alive = k + r
        return out

    def n_keep(self, n_visual: int) -> int:
        return sum(self.schedule(n_visual)[-1])

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): after each listed layer, kept + recycled."""
        changes = [
            (layer + 1, k + r) for layer, (k, r) in zip(self.stages(), self.schedule(n_visual), strict=True)
        ]
        rows = per_layer(n_layers, n_visual, changes)
        return rows, list(rows)

    def first_pruned_layer(self) -> int:
        return self.stages()[-1] + 1  # the deepest sparsification must leave a layer to see it


@register_online(
    "prunevid",
    paper="PruneVid: Visual Token Pruning for Efficient Video Large Language Models (arXiv 2412.16117)",
    phase="prefill+decode",
)
@dataclasses.dataclass(frozen=True)
class PruneVid:
    """PruneVid's in-LLM stage: after layer `layer`, keep the visual tokens the question attends to most.

    Paper (§3.3): at an intermediate layer the attention from the question tokens to the visual tokens ranks
    them and only the top share α (`alpha`) stays, for the later layers and in the KV cache of every layer, so
    decoding attends only to the kept tokens. Official code (Visual-AI/PruneVid, PLLaVA-7B only,
    ``VTPWindowCache``): layer 10 (0-based; that layer's own attention, cut after it), α = 0.4; score = max over
    heads, then max over the queries, of the attention of every token after the visual span to it; kept tokens
    keep their RoPE positions; the caches of layers <= 10 are cut to the kept tokens. Its per-window budget
    (int(α·size) of the static tokens and of each frame's dynamic tokens, from its own pre-LLM merge) has no
    counterpart on an arbitrary stored reduction: the LLaVA-OV port here keeps floor(α·N) of the whole visual
    span (newline and markers included), layer 10 and α = 0.4 as official (layer 10 of LLaVA-OV-7B's 28, not
    rescaled). vtc removes the dropped tokens physically for layers > `layer` and gathers the kept ones out of
    the full caches of layers <= `layer` at decode (the official cut of those caches, the same attention).
    The pre-LLM stage is the offline reducer ``prunevid``; its store keeps which tokens are static merges and
    each frame's scene (``extra_static``, ``extra_segment``), what a per-window budget would need.
    """

    layer: int = 10
    alpha: float = 0.4

    def __post_init__(self):
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def n_keep(self, n_visual: int) -> int:
        from vtc.eval.flops import dycoke_keep

        return dycoke_keep(n_visual, 1.0 - self.alpha)  # floor(α·N), the official int()

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): the layers after `layer`, and every layer
        while decoding, see the kept ones."""
        keep = self.n_keep(n_visual)
        return per_layer(n_layers, n_visual, [(self.layer + 1, keep)]), [keep] * n_layers

    def first_pruned_layer(self) -> int:
        return self.layer + 1


@register_online(
    "holitom",
    paper="HoliTom: Holistic Token Merging for Fast Video Large Language Models (arXiv 2505.21334)",
    phase="prefill+decode",
)
@dataclasses.dataclass(frozen=True)
class HoliTom:
    """HoliTom's inner-LLM merge: at layer k the least-attended visual tokens are merged into their nearest kept.

    Paper (§3.4): at layer K the last instruction token's attention (layer K-1, mean over heads) keeps the top
    (1-r) of the visual tokens; each other one is merged into the kept token most similar to it (cosine of the
    hidden states entering layer K) rather than dropped, and layers >= K run on the kept tokens only. Official
    code (cokeshao/HoliTom, ``Qwen2Model_holitom``): K = HOLITOM_k = 18 and r = HOLITOM_r = 0.5 in its
    LLaVA-OV-7B scripts (code default K = 3), round(N·(1-r)) kept, original RoPE positions, the merge a loop of
    pairwise averages (see :func:`merge_into_nearest`), prefill only, layers < K keep the full cache. vtc
    follows it on the visual tokens reaching the LLM (the whole <video> span); HoliTom's pre-LLM stages
    (temporal segmentation, spatial merging) are the offline reducer ``holitom`` (vtc compress), so the
    whole method is that store evaluated with this one.
    """

    k: int = 18
    r: float = 0.5

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1 (scores come from layer k-1), got {self.k}")
        if not 0.0 <= self.r <= 1.0:
            raise ValueError(f"r must be in [0, 1], got {self.r}")

    def n_keep(self, n_visual: int) -> int:
        return max(0, min(n_visual, round(n_visual * (1.0 - self.r))))

    def visible(self, n_visual: int, n_layers: int) -> tuple[list[int], list[int]]:
        """Visual tokens each layer sees (prefill, a decode step): layers >= k see the kept (merged) ones."""
        rows = per_layer(n_layers, n_visual, [(self.k, self.n_keep(n_visual))])
        return rows, list(rows)

    def first_pruned_layer(self) -> int:
        return self.k


# --------------------------------------------------------------------------------------------------
# Runtime: per-generation state, the attention wrapper, the layer pre-hooks


class _Live:
    """One generation's state, shared by the attention wrapper and the pre-hooks.

    Positions are the original sequence positions (0 .. n_seen-1). ``begin(q_len)`` is called before each
    forward: step 0 is the prefill, steps >= 1 decode one token each.
    """

    def __init__(self, method, n_layers: int, vis_start: int, n_visual: int, device):
        first = method.first_pruned_layer()
        if first >= n_layers:
            raise VtcError(
                f"{type(method).name}: pruning from layer {first} needs an LLM with more than {first} "
                f"layers; this one has {n_layers}"
            )
        self.method = method
        self.n_layers, self.vs, self.ve, self.n_visual = n_layers, vis_start, vis_start + n_visual, n_visual
        self.n_keep = method.n_keep(n_visual)
        self.device = device
        self.step = -1
        self.n_seen = 0
        self.q_len = 0
        self.counts: list[list[int]] = []  # per forward, per layer: visual keys the attention used
        self.positions: list[dict[int, Tensor]] = []  # per forward, per layer: the queries' position ids
        self.cur: Tensor | None = (
            None  # prefill: original positions of the rows flowing between layers (None: all)
        )

    def begin(self, q_len: int) -> None:
        self.step += 1
        self.q_len = q_len
        self.n_seen += q_len
        self.counts.append([-1] * self.n_layers)
        self.positions.append({})
        self.cur = None

    def _span_layout(self, keep: Tensor) -> Tensor:
        """Original positions of the keys in use: the prefix, the kept visual tokens, everything after."""
        dev = self.device
        return torch.cat(
            [
                torch.arange(0, self.vs, device=dev),
                keep.to(dev) + self.vs,
                torch.arange(self.ve, self.n_seen, device=dev),
            ]
        )

    # the method-specific part
    def score_layer(self) -> int | None:
        raise NotImplementedError

    def scores_at(self, layer: int) -> bool:
        """Whether this forward's attention scores at ``layer`` go to ``on_scores``."""
        return layer == self.score_layer()

    def on_scores(self, attn: Tensor, layer: int) -> None:
        raise NotImplementedError

    def layout(self, layer: int) -> Tensor | None:
        raise NotImplementedError

    def physical(self, layer: int) -> bool:
        return False

    def hooked(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` gets the prefill pre-hook (physical removal, ``before_layer``)."""
        return self.physical(layer)

    def before_layer(self, layer: int, hidden: Tensor) -> Tensor:
        """Prefill: the hidden states entering ``layer`` [1, S_cur, D] (rows at ``self.cur``), before its cut.

        A merging method returns them with the dropped tokens folded into the kept ones' rows."""
        return hidden

    def stats(self) -> dict:
        raise NotImplementedError

    def on_attention(self, query, key, mask, scaling: float, n_rep: int, layer: int) -> None:
        """At a score layer: the last query's head-averaged attention over the visual span to ``on_scores``."""
        attn = last_query_attention(query, key, mask, scaling, n_rep)[0]
        self.on_scores(attn[self.vs : self.ve], layer)

    def current_visual(self) -> Tensor:
        """Prefill: the rows of the current sequence (``self.cur``) that hold visual tokens."""
        if self.cur is None:
            return torch.arange(self.vs, self.ve, device=self.device)
        return torch.nonzero((self.cur >= self.vs) & (self.cur < self.ve)).flatten()

    def current_mask(self, mask: Tensor | None, q_len: int, k_len: int) -> Tensor | None:
        """The model's 4D mask restricted to the current prefill sequence (rows and keys at ``self.cur``)."""
        if mask is None or (mask.shape[-2] == q_len and mask.shape[-1] == k_len):
            return mask
        return mask.index_select(-2, self.cur[-q_len:]).index_select(-1, self.cur)

    # the wrapper
    def attend(self, base, module, query, key, value, attention_mask, **kw):
        layer = int(module.layer_idx)
        n_rep = int(getattr(module, "num_key_value_groups", 1))
        if query.shape[0] != 1:
            raise VtcError("online pruning runs one sequence at a time (batch size 1)")
        pos = kw.get("position_ids")
        if pos is not None:
            self.positions[-1][layer] = pos.reshape(-1).detach().clone()
        if self.scores_at(layer):
            scaling = kw.get("scaling") or query.shape[-1] ** -0.5
            self.on_attention(query, key, attention_mask, scaling, n_rep, layer)
        lay = self.layout(layer)
        if lay is None:
            self.counts[-1][layer] = self.n_visual
            return base(module, query, key, value, attention_mask, **kw)
        q_len = query.shape[2]
        if self.physical(layer):
            if key.shape[2] != lay.shape[0]:
                raise RuntimeError(f"layer {layer} caches {key.shape[2]} keys, expected {lay.shape[0]}")
            q_pos = lay[-q_len:]
        else:
            key, value = key.index_select(2, lay), value.index_select(2, lay)
            q_pos = torch.arange(self.n_seen - q_len, self.n_seen, device=lay.device)
        if attention_mask is not None:
            if attention_mask.shape[-2] != q_len:
                attention_mask = attention_mask.index_select(-2, q_pos)
            attention_mask = attention_mask.index_select(-1, lay)
        elif q_len > 1 and not self.physical(layer):
            # the wrapped sdpa would apply a top-left causal mask to a gathered key set: spell it out
            allowed = (lay[None, :] <= q_pos[:, None])[None, None]  # [1, 1, Q, K]
            if base is _sdpa():
                attention_mask = allowed
            else:
                attention_mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
                attention_mask.masked_fill_(~allowed, torch.finfo(query.dtype).min)
        self.counts[-1][layer] = int(((lay >= self.vs) & (lay < self.ve)).sum())
        return base(module, query, key, value, attention_mask, **kw)

    def pre_hook(self, layer: int):
        """A with_kwargs forward pre-hook for decoder layer ``layer``: in prefill, ``before_layer`` and, where the
        layer is physical, the cut of the hidden states (from the previous layer's rows to this layer's layout)
        and of the position ids / embeddings (computed once for the whole prompt)."""

        def hook(module, args, kwargs):
            if self.step != 0:
                return None
            args = list(args)
            hidden = args[0] if args else kwargs["hidden_states"]
            new = self.before_layer(layer, hidden)
            lay = self.layout(layer) if self.physical(layer) else None
            full = self.n_seen
            if lay is not None:
                if not (self.cur is not None and torch.equal(self.cur, lay)):
                    if self.cur is None:
                        rows = lay
                    else:
                        rows = torch.searchsorted(self.cur, lay)
                        if not torch.equal(self.cur[rows.clamp(max=len(self.cur) - 1)], lay):
                            raise RuntimeError(
                                f"layer {layer}: the layout is not a subset of the previous one"
                            )
                    new = new.index_select(1, rows)
                    self.cur = lay

                def cut(t, dim):
                    return t.index_select(dim, lay) if t is not None and t.shape[dim] == full else t

                pe = kwargs.get("position_embeddings")
                if pe is not None:
                    kwargs["position_embeddings"] = tuple(cut(t, 1) for t in pe)
                if kwargs.get("position_ids") is not None:
                    kwargs["position_ids"] = cut(kwargs["position_ids"], -1)
            elif new is hidden:
                return None
            if args:
                args[0] = new
            else:
                kwargs["hidden_states"] = new
            return tuple(args), kwargs

        return hook


class _DyCokeLive(_Live):
    def __init__(self, method: DyCokeKV, *a, **kw):
        super().__init__(method, *a, **kw)
        self.sel = DynamicSelection(self.n_keep, method.tau)
        self.reselected_at: list[int] = []
        self.keep_log: list[Tensor] = []  # per decode step: the active set (visual-span indices) used

    def score_layer(self):
        return self.method.l - 1 if self.step >= 1 else None  # decode only: prefill is unchanged

    def on_scores(self, attn, layer):
        if self.sel.update(attn):
            self.reselected_at.append(self.step)
        self.keep_log.append(self.sel.keep)

    def layout(self, layer):
        if self.step >= 1 and layer >= self.method.l and self.sel.keep is not None:
            return self._span_layout(self.sel.keep)
        return None

    def stats(self):
        return {
            "n_keep": self.n_keep,
            "decode_steps": self.sel.steps,
            "selections": self.sel.selections,
            "reselections": max(0, self.sel.selections - 1),
            "reselected_at": list(self.reselected_at),
            "brought_back": self.sel.brought_back,
            "evicted": self.sel.evicted,
            "cosines": list(self.sel.cosines),
            "visible_per_step": [list(c) for c in self.counts],
        }


class _FastVLive(_Live):
    def __init__(self, method: FastV, *a, **kw):
        super().__init__(method, *a, **kw)
        self.keep: Tensor | None = None
        self.scores: Tensor | None = None  # the last prompt token's attention over the visual span

    def score_layer(self):
        return self.method.k - 1 if self.step == 0 else None

    def on_scores(self, attn, layer):
        self.scores = attn
        self.keep = topk_sorted(attn, self.n_keep)

    def layout(self, layer):
        if layer >= self.method.k and self.keep is not None:
            return self._span_layout(self.keep)
        return None

    def physical(self, layer):
        return not self.method.mask and layer >= self.method.k

    def stats(self):
        return {"n_keep": self.n_keep, "visible_per_step": [list(c) for c in self.counts]}


class _PDropLive(_Live):
    def __init__(self, method: PyramidDrop, *a, **kw):
        super().__init__(method, *a, **kw)
        self.bounds = method.stages()
        self.keeps: list[Tensor] = []  # per stage: the visual-span indices in use from its boundary on
        self.scores: list[Tensor] = []  # per stage: the last prompt token's attention over the visual span

    def score_layer(self):
        return None

    def scores_at(self, layer):
        return self.step == 0 and layer + 1 in self.bounds

    def on_scores(self, attn, layer):
        alive = self.keeps[-1] if self.keeps else torch.arange(self.n_visual, device=attn.device)
        n = max(0, min(len(alive), round(self.method.ratio * len(alive))))
        self.scores.append(attn)
        self.keeps.append(alive[topk_sorted(attn[alive], n)])

    def layout(self, layer):
        stage = sum(layer >= b for b in self.bounds)  # boundaries at or below this layer
        if stage == 0 or stage > len(self.keeps):
            return None
        return self._span_layout(self.keeps[stage - 1])

    def stats(self):
        return {
            "kept_per_stage": [int(k.numel()) for k in self.keeps],
            "visible_per_step": [list(c) for c in self.counts],
        }


class _SparseVLMLive(_Live):
    def __init__(self, method: SparseVLM, *a, **kw):
        super().__init__(method, *a, **kw)
        self.stages = method.stages()
        self.stage_keep = method.stage_keep(self.n_visual)
        self.raters: Tensor | None = None  # indices into the tokens after the visual span
        self.alive: list[Tensor] = []  # per stage: the visual-span indices in use after it (kept + centres)
        self.scores: list[Tensor] = []  # per stage: the raters' attention over the tokens then in use
        self.recycled: list[
            Tensor
        ] = []  # per stage: the visual-span indices whose slots hold recycled tokens
        self.pending = None  # (alive, keep, pruned, scores) of the stage whose cut the next layer makes

    def score_layer(self):
        return None

    def scores_at(self, layer):
        return self.step == 0 and layer in self.stages

    def hooked(self, layer):
        return layer == 0 or self.physical(layer)

    def physical(self, layer):
        return layer > self.stages[0]

    def before_layer(self, layer, hidden):
        if layer == 0:
            self.raters = select_raters(hidden[0, self.vs : self.ve], hidden[0, self.ve :])
        if self.pending is None:
            return hidden
        alive, keep, pruned, scores = self.pending
        self.pending = None
        rows = self.current_visual()  # the rows of ``alive``, in order
        centres = torch.zeros(0, dtype=torch.long, device=alive.device)
        if self.method.recycle and pruned.numel():
            c, merged = recycle(hidden[0, rows[pruned]], scores[pruned])
            centres = pruned[c]
            hidden = hidden.clone()
            hidden[0, rows[centres]] = merged
        self.recycled.append(alive[centres].sort().values)
        self.alive.append(torch.cat([alive[keep], alive[centres]]).sort().values)
        return hidden

    def on_attention(self, query, key, mask, scaling, n_rep, layer):
        q_len = query.shape[2]
        rows = q_len - (self.n_seen - self.ve) + self.raters.to(query.device)
        attn = query_attention(query, key, self.current_mask(mask, q_len, key.shape[2]), scaling, n_rep, rows)
        cols = self.current_visual()
        scores = attn.mean(dim=1)[0][:, cols].mean(dim=0)  # mean over heads, then over raters
        alive = self.alive[-1] if self.alive else torch.arange(self.n_visual, device=scores.device)
        n = max(0, min(len(alive), self.stage_keep[len(self.alive)]))
        keep = topk_sorted(scores, n)
        gone = torch.ones(len(alive), dtype=torch.bool, device=scores.device)
        gone[keep] = False
        self.scores.append(scores)
        self.pending = (alive, keep, torch.nonzero(gone).flatten(), scores)

    def layout(self, layer):
        stage = sum(layer > s for s in self.stages)  # sparsification layers below this one
        if stage == 0 or stage > len(self.alive):
            return None
        return self._span_layout(self.alive[stage - 1])

    def stats(self):
        return {
            "raters": int(self.raters.numel()) if self.raters is not None else 0,
            "kept_per_stage": [
                int(a.numel() - r.numel()) for a, r in zip(self.alive, self.recycled, strict=True)
            ],
            "recycled_per_stage": [int(r.numel()) for r in self.recycled],
            "visible_per_step": [list(c) for c in self.counts],
        }


class _PruneVidLive(_Live):
    def __init__(self, method: PruneVid, *a, **kw):
        super().__init__(method, *a, **kw)
        self.keep: Tensor | None = None
        self.scores: Tensor | None = (
            None  # max over heads and question tokens of their attention, per visual token
        )

    def score_layer(self):
        return self.method.layer if self.step == 0 else None

    def on_attention(self, query, key, mask, scaling, n_rep, layer):
        q_len = query.shape[2]
        rows = torch.arange(q_len - (self.n_seen - self.ve), q_len, device=query.device)  # every token after
        attn = query_attention(query, key, mask, scaling, n_rep, rows)[0]  # [H, R, S]
        self.scores = attn[:, :, self.vs : self.ve].amax(dim=0).amax(dim=0)
        self.keep = topk_sorted(self.scores, self.n_keep)

    def layout(self, layer):
        if self.keep is None or (layer <= self.method.layer and self.step == 0):
            return None
        return self._span_layout(self.keep)  # later layers, and every layer while decoding

    def physical(self, layer):
        return layer > self.method.layer

    def stats(self):
        return {"n_keep": self.n_keep, "visible_per_step": [list(c) for c in self.counts]}


class _HoliTomLive(_Live):
    def __init__(self, method: HoliTom, *a, **kw):
        super().__init__(method, *a, **kw)
        self.keep: Tensor | None = None
        self.scores: Tensor | None = None

    def score_layer(self):
        return self.method.k - 1 if self.step == 0 else None

    def on_scores(self, attn, layer):
        self.scores = attn
        self.keep = topk_sorted(attn, self.n_keep)

    def before_layer(self, layer, hidden):
        if layer != self.method.k:
            return hidden
        drop = torch.ones(self.n_visual, dtype=torch.bool, device=self.keep.device)
        drop[self.keep] = False
        span = hidden[0, self.vs : self.ve]
        hidden = hidden.clone()
        hidden[0, self.keep + self.vs] = merge_into_nearest(span, self.keep, torch.nonzero(drop).flatten())
        return hidden

    def layout(self, layer):
        if layer >= self.method.k and self.keep is not None:
            return self._span_layout(self.keep)
        return None

    def physical(self, layer):
        return layer >= self.method.k

    def stats(self):
        return {"n_keep": self.n_keep, "visible_per_step": [list(c) for c in self.counts]}


_LIVE_BY_METHOD = {
    DyCokeKV: _DyCokeLive,
    FastV: _FastVLive,
    PyramidDrop: _PDropLive,
    SparseVLM: _SparseVLMLive,
    PruneVid: _PruneVidLive,
    HoliTom: _HoliTomLive,
}
_ACTIVE: contextvars.ContextVar[_Live | None] = contextvars.ContextVar("vtc_online", default=None)
_BASES = ("sdpa", "eager")


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def _eager(module):
    # the modelling file's own eager function (the default its attention module falls back to)
    return sys.modules[type(module).__module__].eager_attention_forward


def _wrapper(base_name: str):
    def online_attention(module, query, key, value, attention_mask, **kw):
        base = _sdpa() if base_name == "sdpa" else _eager(module)
        active = _ACTIVE.get()
        if active is None:
            return base(module, query, key, value, attention_mask, **kw)
        return active.attend(base, module, query, key, value, attention_mask, **kw)

    return online_attention


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for b in _BASES:
        name = f"vtc_online_{b}"
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, _wrapper(b))
            # the same masks the wrapped implementation gets, so an unpruned layer computes exactly as before
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[b])


@contextlib.contextmanager
def attach(model, method, vis_start: int, n_visual: int):
    """Run ``method`` inside ``model`` (a LlavaOnevisionForConditionalGeneration) for one generation.

    Yields the live state; call ``live.begin(q_len)`` before each forward. On exit the LLM's attention
    implementation, the hooks and the active state are restored, also on error.
    """
    if type(method) not in _LIVE_BY_METHOD:
        raise OnlineError(f"{type(method).__name__} is not a registered online method")
    text_cfg = model.config.text_config
    base = text_cfg._attn_implementation or "eager"
    if base not in _BASES:
        raise VtcError(f"online pruning wraps sdpa or eager attention; the LLM uses {base!r}")
    _register()
    layers = model.model.language_model.layers
    dev = next(model.parameters()).device
    live = _LIVE_BY_METHOD[type(method)](method, len(layers), vis_start, n_visual, dev)
    handles = [
        layer.register_forward_pre_hook(live.pre_hook(i), with_kwargs=True)
        for i, layer in enumerate(layers)
        if live.hooked(i)
    ]
    token = _ACTIVE.set(live)
    model.set_attn_implementation({"text_config": f"vtc_online_{base}"})
    try:
        yield live
    finally:
        model.set_attn_implementation({"text_config": base})
        _ACTIVE.reset(token)
        for h in handles:
            h.remove()
