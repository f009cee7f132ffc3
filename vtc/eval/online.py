"""Online (in-LLM) visual token pruning: methods that drop visual tokens inside the LLM while it runs.

Offline reducers (``vtc.reducers``) decide which tokens reach the LLM; an online method decides, from the
LLM's own attention, which of those tokens later layers (and later decoding steps) still see. Both combine:
the online method works on whatever visual tokens the stored reduction gave the LLM.

Registry, in the style of the reducer registry: ``get_online("fastv", k="2", ratio="0.25")`` builds a frozen
dataclass whose fields are the method's parameters (strings from ``--set key=value`` are converted to the
field types), ``list_online()`` lists them, ``online_config(m)`` gives the JSON-able config back.

"Visual tokens" here are all the ``<video>`` placeholder positions of the prompt: visual tokens, row
markers and the end-of-video newline, i.e. ``Reduction.n_llm_tokens`` of them, the span both official codes
prune (LLaVA's image-feature span, newlines included) and the count vtc reports as visual tokens.

How it hooks into transformers (no copied modelling code, no patched source): ``attach`` registers an
attention function with ``transformers.AttentionInterface`` (and the matching mask function with
``AttentionMaskInterface``) that wraps the model's own ``sdpa`` or ``eager`` attention, switches the LLM
(the ``text_config`` sub-model only) to it for one generation, and, for FastV's physical removal, adds
forward pre-hooks on the decoder layers. The wrapper sees every layer's query and its full key/value cache:

* at the score layer it computes the last query's attention row (softmax over all keys, mean over heads)
  and hands its visual part to the method;
* at a pruned layer it runs the wrapped attention on the kept keys only: the visual keys the method
  dropped are gathered out of K/V (and the mask) before attention, so attention cost shrinks with them.

Both methods take their scores from the layer *before* the first pruned one (0-based layer ``L-1`` /
``K-1``), as both official codes do, so ``l`` and ``k`` must be at least 1 and below the LLM's depth.
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

_REGISTRY: dict[str, type] = {}


class OnlineError(VtcError, ValueError):
    """A bad online method name or parameter: a ValueError for callers, a one-line VtcError for the CLI."""


@dataclasses.dataclass(frozen=True)
class OnlineInfo:
    """What a method listing shows beside the docstring's first line and the parameters."""

    paper: str = ""
    phase: str = ""  # "decode" (prefill unchanged) or "prefill+decode"


def register_online(name: str, **info):
    """Class decorator: register a frozen dataclass online method under ``name``."""
    meta = OnlineInfo(**info)

    def deco(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"online method {cls.__name__} must be a dataclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"online method {name!r} is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.name = name
        cls.info = meta
        return cls

    return deco


def list_online() -> dict[str, dict]:
    """{name: {"paper", "phase", "description", "params": {field: default}}}, sorted by name."""
    out = {}
    for name, cls in sorted(_REGISTRY.items()):
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
    from vtc.reducers.registry import build_registered  # the reducer registry's builder, one copy

    return build_registered(_REGISTRY, name, params, error=OnlineError, what="online method")


def online_config(m) -> dict:
    """{"method": name, **params}; ``get_online(cfg.pop("method"), **cfg)`` rebuilds it."""
    if type(m) not in _REGISTRY.values():
        raise OnlineError(f"{type(m).__name__} is not a registered online method")
    return {"method": type(m).name, **dataclasses.asdict(m)}


# --------------------------------------------------------------------------------------------------
# Pure selection functions (unit-testable without a model)


def last_query_attention(
    query: Tensor, key: Tensor, mask: Tensor | None, scaling: float, n_rep: int = 1
) -> Tensor:
    """The last query's attention distribution, averaged over heads: [B, S_kv] float32.

    query [B, H, Q, d] (after RoPE), key [B, H_kv, S_kv, d] (the whole cache, after RoPE), H = n_rep·H_kv;
    mask: None (causal: the last query sees every key), or the model's 4D mask [B, 1, Q, S_kv] (bool: True =
    attend; float: additive). softmax(q_last·Kᵀ·scaling + mask) over all keys, then the mean over heads
    (DyCoke Eq. 5, FastV's "average attention received from the last token").
    """
    q = query[:, :, -1:, :].float()  # [B, H, 1, d]
    k = key.float()
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)  # [B, H, S, d], head h uses kv head h // n_rep
    s = torch.matmul(q, k.transpose(-1, -2)) * scaling  # [B, H, 1, S]
    if mask is not None:
        row = mask[..., -1:, :]
        s = s.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else s + row.float()
    return torch.softmax(s, dim=-1).mean(dim=1)[:, 0]  # [B, S]


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


# --------------------------------------------------------------------------------------------------
# The methods


@register_online(
    "dycoke-kv", paper="DyCoke (arXiv 2411.15024), §3.2 KV cache dynamic pruning", phase="decode"
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

    def first_pruned_layer(self) -> int:
        return self.l


@register_online("fastv", paper="FastV (Chen et al. 2024, arXiv 2403.06764)", phase="prefill+decode")
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

    def first_pruned_layer(self) -> int:
        return self.k


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
        try:
            stages = [int(v) for v in str(self.layers).split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"layers must be comma-separated layer numbers, got {self.layers!r}") from None
        if not stages or stages[0] < 1 or any(b <= a for a, b in zip(stages, stages[1:], strict=False)):
            raise ValueError(f"layers must be increasing layer numbers >= 1, got {self.layers!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")

    def stages(self) -> tuple[int, ...]:
        return tuple(int(v) for v in str(self.layers).split(",") if v.strip())

    def n_keep(self, n_visual: int) -> int:
        """Visual tokens in use after the last boundary."""
        n = n_visual
        for _ in self.stages():
            n = max(0, min(n, round(self.ratio * n)))
        return n

    def first_pruned_layer(self) -> int:
        return self.stages()[-1]  # the deepest boundary must lie inside the LLM


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

    def begin(self, q_len: int) -> None:
        self.step += 1
        self.q_len = q_len
        self.n_seen += q_len
        self.counts.append([-1] * self.n_layers)
        self.positions.append({})

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

    def stats(self) -> dict:
        raise NotImplementedError

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
            attn = last_query_attention(query, key, attention_mask, scaling, n_rep)[0]
            self.on_scores(attn[self.vs : self.ve], layer)
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
        """A with_kwargs forward pre-hook for decoder layer ``layer`` (physical removal during prefill)."""

        def hook(module, args, kwargs):
            if self.step != 0 or not self.physical(layer):
                return None
            lay = self.layout(layer)
            full = self.n_seen

            def cut(t, dim):
                return t.index_select(dim, lay) if t is not None and t.shape[dim] == full else t

            args = list(args)
            if args:
                args[0] = cut(args[0], 1)
            else:
                kwargs["hidden_states"] = cut(kwargs["hidden_states"], 1)
            pe = kwargs.get("position_embeddings")
            if pe is not None:
                kwargs["position_embeddings"] = tuple(cut(t, 1) for t in pe)
            if kwargs.get("position_ids") is not None:
                kwargs["position_ids"] = cut(kwargs["position_ids"], -1)
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


_LIVE_BY_METHOD = {DyCokeKV: _DyCokeLive, FastV: _FastVLive, PyramidDrop: _PDropLive}
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
        if live.physical(i)
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
