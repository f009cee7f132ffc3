"""Analytic FLOPs of the LLM (prefill and decode), next to the reduction module's own.

VQToken §3.1.1 separates *module complexity* (the reduction itself, `vtc.reducers.flops`, recorded
per video by `vtc compress`) from *LLM complexity* (what the shorter sequence saves in the LLM). This
is the LLM side, for a Qwen2-style decoder (LLaVA-OneVision's LLM), counted as in
``vtc/reducers/flops.py``: FLOPs = 2 × multiply-adds, from the config alone.

Per decoder layer, for ``t`` tokens going through it and ``p`` (query, key) attention pairs
(d = hidden, m = intermediate, h = heads, g = kv_heads, e = head_dim):

- projections ``2·t·d·e·(2h + 2g)``: q and o have h·e outputs/inputs, k and v only g·e (GQA);
- attention ``4·h·e·p``: QKᵀ and A·V, one e-long dot product each per head and pair;
- SwiGLU MLP ``6·t·d·m``: gate, up and down matrices.

``p`` is the **exact causal count**: in prefill the i-th of n tokens sees i+1 keys, Σ(i+1) =
n(n+1)/2; a decode step sees the whole cache plus itself. Dense kernels (eager attention, and what
``torch.utils.flop_counter`` reports for SDPA) compute the full n² score matrix and mask it, so
``causal=False`` gives that convention; FastV's and DyCoke's papers use n² too (`paper_flops`).
The LM head costs ``2·d·vocab`` per position that produces logits: one in prefill (``generate``
keeps only the last position's logits, ``logits_to_keep=1``) and one per decode step.

Not counted (elementwise: O(t·d) against O(t·d²) for the matmuls, softmax O(h·p) against O(h·e·p)
for attention — about 1 % for these models; ``FlopCounterMode`` does not count them either): the embedding lookup, RMSNorm, RoPE, softmax, SiLU and
the gating product, residual adds, the q/k/v biases. Online pruning (FastV in prefill, DyCoke's KV
pruning in decode) is counted as if the pruned tokens were removed from the sequence / cache; an
implementation that only masks them computes as much as without pruning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from vtc.errors import VtcError


@dataclass(frozen=True)
class LLMShape:
    """The sizes of a Qwen2-style decoder that FLOPs depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tie_word_embeddings: bool = False  # the LM head shares the embedding: same FLOPs, fewer params

    @classmethod
    def from_config(cls, config) -> LLMShape:
        """From a transformers config: a LlavaOnevisionConfig (its text_config) or a Qwen2Config."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        try:
            heads = int(text.num_attention_heads)
            hidden = int(text.hidden_size)
            shape = cls(
                layers=int(text.num_hidden_layers),
                hidden=hidden,
                intermediate=int(text.intermediate_size),
                heads=heads,
                kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
                head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
                vocab=int(text.vocab_size),
                tie_word_embeddings=bool(
                    getattr(text, "tie_word_embeddings", False)
                    or getattr(config, "tie_word_embeddings", False)
                ),
            )
        except (AttributeError, TypeError) as e:
            raise VtcError(f"not a decoder LLM config ({type(config).__name__}): {e}") from None
        if min(shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads) <= 0:
            raise VtcError(f"config has a non-positive size: {shape}")
        return shape

    def params(self) -> int:
        """Parameters of the decoder without biases and norms (a sanity check against model cards)."""
        d, e = self.hidden, self.head_dim
        layer = d * e * (2 * self.heads + 2 * self.kv_heads) + 3 * d * self.intermediate
        emb = self.vocab * d * (1 if self.tie_word_embeddings else 2)
        return self.layers * layer + emb

    def to_dict(self) -> dict:
        return asdict(self)


# LLaVA-OneVision's LLMs, for when the config cannot be read (no hub access, not in the local cache).
# Sizes from the Qwen2-*-Instruct config.json files (huggingface.co/Qwen/Qwen2-0.5B-Instruct,
# Qwen2-7B-Instruct, Qwen2-72B-Instruct), which transformers'
# models/llava_onevision/convert_llava_onevision_weights_to_hf.py loads as the llava-hf text_config;
# d, m and layers agree with DyCoke's Table 8 (896/4864/24, 3584/18944/28, 8192/29568/80). That script
# then adds <image> and <video> and pads the vocabulary to a multiple of 64 (151936+2 -> 152000,
# 152064+2 -> 152128). The lmms-lab originals keep Qwen2's embedding size (our reading of LLaVA-NeXT,
# which adds no tokens for Qwen; their config.json was not checked) — the vocabulary only enters the
# LM head term, < 0.1 % of a video prompt's FLOPs.
_QWEN2 = {
    "0.5b": dict(layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2, head_dim=64),
    "7b": dict(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, head_dim=128),
    "72b": dict(layers=80, hidden=8192, intermediate=29568, heads=64, kv_heads=8, head_dim=128),
}
_VOCAB = {"0.5b": (151936, 152000), "7b": (152064, 152128), "72b": (152064, 152128)}  # (qwen2, llava-hf)
_TIED = {"0.5b": True, "7b": False, "72b": False}

KNOWN_SHAPES: dict[str, LLMShape] = {}
for _size, _dims in _QWEN2.items():
    for _variant in ("ov", "si", "ov-chat"):
        if _size == "0.5b" and _variant == "ov-chat":
            continue  # there is no 0.5B chat checkpoint
        KNOWN_SHAPES[f"llava-hf/llava-onevision-qwen2-{_size}-{_variant}-hf"] = LLMShape(
            **_dims, vocab=_VOCAB[_size][1], tie_word_embeddings=_TIED[_size]
        )
        KNOWN_SHAPES[f"lmms-lab/llava-onevision-qwen2-{_size}-{_variant}"] = LLMShape(
            **_dims, vocab=_VOCAB[_size][0], tie_word_embeddings=_TIED[_size]
        )


def _shape_from_config_dict(d: dict) -> LLMShape:
    """config.json of a LLaVA-OV (text_config inside) or of a bare / LLaVA-NeXT-style Qwen2 (top level)."""
    from transformers import AutoConfig

    text = dict(d.get("text_config") or d)
    model_type = text.get("model_type") or "qwen2"
    if model_type.startswith("llava"):
        model_type = "qwen2"  # lmms-lab's LlavaQwen configs carry the Qwen2 sizes at the top level
    text["model_type"] = model_type
    try:
        cfg = AutoConfig.for_model(model_type, **{k: v for k, v in text.items() if k != "model_type"})
    except (ValueError, KeyError) as e:
        raise VtcError(f"cannot read an LLM config of type '{model_type}': {e}") from None
    return LLMShape.from_config(cfg)


def llm_shape(model: str | Path) -> tuple[LLMShape, str]:
    """(shape, source) of ``model``'s LLM from its config only (no weights).

    ``model`` is a local directory with config.json or a Hugging Face id. A known LLaVA-OneVision id
    is never fetched over the network: its cached config.json is used if present, else the built-in
    table (``KNOWN_SHAPES``), so the command works offline instantly (a failed fetch retries for ~30 s).
    Any other id is fetched (config.json only). ``source`` says which: "config", "cache" or "table".
    """
    from transformers import PretrainedConfig

    path = Path(model)
    if path.exists():
        if not (path / "config.json").is_file():
            raise VtcError(f"{model}: no config.json in this directory")
        d, _ = PretrainedConfig.get_config_dict(str(path))
        return _shape_from_config_dict(d), "config"
    model = str(model)
    if path.is_absolute() or model.startswith(".") or model.count("/") != 1:
        raise VtcError(f"{model}: no such directory (and not a Hugging Face id owner/name)")
    try:
        d, _ = PretrainedConfig.get_config_dict(model, local_files_only=True)
        return _shape_from_config_dict(d), "cache"
    except (OSError, ValueError):
        pass
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model], "table"
    try:
        d, _ = PretrainedConfig.get_config_dict(model)
    except (OSError, ValueError) as e:
        known = ", ".join(k for k in KNOWN_SHAPES if k.startswith("llava-hf/") and k.endswith("-ov-hf"))
        raise VtcError(
            f"cannot read the config of '{model}' ({str(e).splitlines()[0]}); give a local directory "
            f"or a known id ({known}, ...)"
        ) from None
    return _shape_from_config_dict(d), "config"


# ------------------------------------------------------------------------------------------- counts
def _layer_linear(s: LLMShape, tokens: int) -> tuple[int, int]:
    """(projection, MLP) FLOPs of ``tokens`` tokens through one decoder layer."""
    proj = 2 * tokens * s.hidden * s.head_dim * (2 * s.heads + 2 * s.kv_heads)
    mlp = 2 * tokens * 3 * s.hidden * s.intermediate
    return proj, mlp


def _attention(s: LLMShape, pairs: int) -> int:
    """QKᵀ and A·V over ``pairs`` (query, key) pairs: 2·head_dim FLOPs each, per head, twice."""
    return 4 * s.heads * s.head_dim * pairs


def _per_layer(name: str, values, layers: int, n_visual: int, default: list[int]) -> list[int]:
    if values is None:
        return list(default)
    values = [int(v) for v in values]
    if len(values) != layers:
        raise VtcError(f"{name} has {len(values)} entries; the LLM has {layers} layers")
    bad = [v for v in values if not 0 <= v <= n_visual]
    if bad:
        raise VtcError(f"{name} must lie in [0, n_visual={n_visual}], got {bad[0]}")
    return values


def llm_flops(
    shape: LLMShape,
    n_text: int,
    n_visual: int,
    n_new: int = 1,
    visible_prefill: list[int] | None = None,
    visible_decode: list[int] | None = None,
    causal: bool = True,
) -> dict:
    """Analytic FLOPs of ``generate`` on a prompt of ``n_text`` text and ``n_visual`` visual tokens.

    Prefill runs the whole prompt through every layer (layer l holding ``n_text +
    visible_prefill[l]`` tokens) and the LM head on the last position; it yields the first new
    token. Each of the ``n_new − 1`` decode steps runs one token through every layer, attending to
    layer l's cache of ``n_text + visible_decode[l]`` prompt tokens plus the tokens generated so far
    and itself, and the LM head once. ``visible_prefill`` / ``visible_decode`` (one int per layer,
    default all ``n_visual``; decode defaults to what prefill kept) express online pruning: FastV
    (layers ≥ K keep R visual tokens) and DyCoke's KV pruning (decode layers ≥ L see (1−P) of them).

    Returns ``{"prefill", "decode", "total"}`` in FLOPs plus ``"detail"``: per phase the
    ``projections``, ``attention``, ``mlp`` and ``lm_head`` terms (see the module docstring).
    ``causal=False`` counts n² attention pairs in prefill, as dense kernels compute.
    """
    for name, v, lo in (("n_text", n_text, 0), ("n_visual", n_visual, 0), ("n_new", n_new, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise VtcError(f"{name} must be an integer >= {lo}, got {v!r}")
    if n_text + n_visual < 1:
        raise VtcError("the prompt has no tokens (n_text + n_visual = 0)")
    L = shape.layers
    pre_vis = _per_layer("visible_prefill", visible_prefill, L, n_visual, [n_visual] * L)
    dec_vis = _per_layer("visible_decode", visible_decode, L, n_visual, pre_vis)
    over = [(i, d, p) for i, (d, p) in enumerate(zip(dec_vis, pre_vis, strict=True)) if d > p]
    if over:
        i, d, p = over[0]
        raise VtcError(
            f"visible_decode[{i}]={d} exceeds the {p} visual tokens prefill left in layer {i}'s cache"
        )

    head = 2 * shape.hidden * shape.vocab  # LM head, one position
    pre = {"projections": 0, "attention": 0, "mlp": 0, "lm_head": head}
    for v in pre_vis:
        t = n_text + v
        proj, mlp = _layer_linear(shape, t)
        pre["projections"] += proj
        pre["mlp"] += mlp
        pre["attention"] += _attention(shape, t * (t + 1) // 2 if causal else t * t)

    steps = n_new - 1
    dec = {"projections": 0, "attention": 0, "mlp": 0, "lm_head": steps * head}
    if steps:
        for v in dec_vis:
            proj, mlp = _layer_linear(shape, steps)  # one token per step: linear in the step count
            dec["projections"] += proj
            dec["mlp"] += mlp
            cache = n_text + v
            # step j (1-based) sees the cache, the j-1 tokens decoded before it, and itself
            dec["attention"] += _attention(shape, steps * cache + steps * (steps + 1) // 2)
    out = {"prefill": sum(pre.values()), "decode": sum(dec.values())}
    out["total"] = out["prefill"] + out["decode"]
    out["detail"] = {"prefill": pre, "decode": dec}
    return out


def paper_flops(
    shape: LLMShape,
    n_tokens: int,
    n_decode: int = 0,
    tokens_per_layer: list[int] | None = None,
    decode_tokens_per_layer: list[int] | None = None,
) -> dict:
    """FastV's per-layer formula and DyCoke's Eq. 8, literally, to compare with those papers.

    Prefill, per layer with n tokens: ``4nd² + 2n²d + 2ndm`` (FastV §5; DyCoke App. C) — one FLOP per
    multiply-add, four d×d projections (no GQA), n² attention (no causal halving), two FFN matrices
    (not SwiGLU's three), no LM head: about half of :func:`llm_flops` for these models. Decode (DyCoke
    Eq. 8), R = ``n_decode`` iterations: ``Σ_{i=1..R} (4d² + 2dm + 2d(n + i))`` per layer. Note DyCoke
    counts R iterations after prefill (it uses R = 100), where ``llm_flops`` counts ``n_new − 1``.
    ``tokens_per_layer`` gives n per layer (FastV: K layers of n, the rest of n̂);
    ``decode_tokens_per_layer`` the prompt tokens each layer's decode attends to (default the same).
    """
    d, m = shape.hidden, shape.intermediate
    ns = list(tokens_per_layer) if tokens_per_layer is not None else [n_tokens] * shape.layers
    dns = list(decode_tokens_per_layer) if decode_tokens_per_layer is not None else ns
    for name, xs in (("tokens_per_layer", ns), ("decode_tokens_per_layer", dns)):
        if len(xs) != shape.layers:
            raise VtcError(f"{name} has {len(xs)} entries; the LLM has {shape.layers} layers")
    R = n_decode
    prefill = sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in ns)
    decode = sum(R * (4 * d * d + 2 * d * m) + 2 * d * (R * n + R * (R + 1) // 2) for n in dns)
    return {"prefill": prefill, "decode": decode, "total": prefill + decode}


def dycoke_keep(n_visual: int, p: float) -> int:
    """Visual tokens DyCoke's KV pruning keeps of ``n_visual`` when it prunes the fraction ``p``:
    floor((1 − p)·N), the official ``int(N·(1−P))``, with 1e-9 so that a product like (1 − 0.9)·10 =
    0.99999… keeps 1, not 0. The one definition, for evaluation and for `vtc flops` alike."""
    return max(0, min(n_visual, math.floor((1.0 - p) * n_visual + 1e-9)))


def online_pruning(
    shape: LLMShape,
    n_visual: int,
    fastv_k: int | None = None,
    fastv_r: int | None = None,
    dycoke_l: int | None = None,
    dycoke_p: float | None = None,
    online=None,
) -> tuple[list[int], list[int]]:
    """(visible_prefill, visible_decode) per layer for FastV and/or DyCoke's KV pruning, or for any
    registered online method ``online`` (its own ``visible``, the counts a run records: tested).

    FastV: layers < K see all ``n_visual`` tokens, layers ≥ K the R kept (at most ``n_visual``).
    DyCoke decode: layers ≥ L see :func:`dycoke_keep` ``(v, P)`` of the v visual tokens their cache
    holds, the count evaluation keeps. Prefill is untouched by DyCoke's second stage.
    """
    L = shape.layers
    if online is not None:
        if any(v is not None for v in (fastv_k, fastv_r, dycoke_l, dycoke_p)):
            raise VtcError("give --online NAME or the --fastv/--dycoke options, not both")
        if online.first_pruned_layer() >= L:
            raise VtcError(
                f"{type(online).name}: pruning from layer {online.first_pruned_layer()} needs an LLM with "
                f"more than {online.first_pruned_layer()} layers; this one has {L}"
            )
        return online.visible(n_visual, L)
    pre = [n_visual] * L
    if (fastv_k is None) != (fastv_r is None):
        raise VtcError("FastV needs both K (the layer) and R (visual tokens kept)")
    if fastv_k is not None:
        if not 0 <= fastv_k <= L:
            raise VtcError(f"FastV K must lie in [0, {L}] (the LLM has {L} layers), got {fastv_k}")
        if fastv_r < 0:
            raise VtcError(f"FastV R must be >= 0, got {fastv_r}")
        pre = [n_visual if i < fastv_k else min(fastv_r, n_visual) for i in range(L)]
    dec = list(pre)
    if (dycoke_l is None) != (dycoke_p is None):
        raise VtcError("DyCoke KV pruning needs both L (the layer) and P (the pruned fraction)")
    if dycoke_l is not None:
        if not 0 <= dycoke_l <= L:
            raise VtcError(f"DyCoke L must lie in [0, {L}] (the LLM has {L} layers), got {dycoke_l}")
        if not 0.0 <= dycoke_p <= 1.0:
            raise VtcError(f"DyCoke P must lie in [0, 1], got {dycoke_p}")
        dec = [v if i < dycoke_l else dycoke_keep(v, dycoke_p) for i, v in enumerate(pre)]
    return pre, dec


# ------------------------------------------------------------------------------- stores and reports
def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def store_flops(
    store: str | Path,
    shape: LLMShape,
    n_text: int,
    n_new: int = 1,
    pruning: dict | None = None,
) -> dict:
    """Mean per video of a store's module FLOPs, LLM FLOPs and the stock LLaVA-OV LLM FLOPs.

    Each done video's LLM FLOPs are computed from its own token count (``n_llm_tokens``: visual
    tokens, markers and the newline) and then averaged — FLOPs are quadratic in tokens, so this is
    not the FLOPs of the mean count. Module FLOPs are what ``vtc compress`` recorded
    (``module_flops``, analytic, `vtc.reducers.flops`). A feature store counts as stock tokens with no
    module. ``pruning``: keyword arguments of :func:`online_pruning`.
    """
    from vtc.cache import Store
    from vtc.families import stock_tokens_of

    st = Store.open(store)
    done = st.done()
    if not done:
        raise VtcError(f"{store} has no finished videos")
    rows = []
    for vid, e in done.items():
        stock_n = stock_tokens_of(st, vid)
        n_vis = e["n_llm_tokens"] if st.kind == "tokens" else stock_n
        pre, dec = online_pruning(shape, n_vis, **(pruning or {}))
        llm = llm_flops(shape, n_text, n_vis, n_new, visible_prefill=pre, visible_decode=dec)
        stock = llm_flops(shape, n_text, stock_n, n_new)
        rows.append((n_vis, stock_n, int(e.get("module_flops", 0)), llm, stock))
    llm_mean = {k: _mean(r[3][k] for r in rows) for k in ("prefill", "decode", "total")}
    stock_mean = {k: _mean(r[4][k] for r in rows) for k in ("prefill", "decode", "total")}
    module = _mean(r[2] for r in rows)
    return {
        "store": str(store),
        "kind": st.kind,
        "method": st.meta["identity"].get("method", {"method": "none"}) if st.kind == "tokens" else None,
        "videos": len(rows),
        "visual_tokens": _mean(r[0] for r in rows),
        "stock_tokens": _mean(r[1] for r in rows),
        "module_recorded": all("module_flops" in e for e in done.values()) if st.kind == "tokens" else True,
        "module": module,
        "llm": llm_mean,
        "total": module + llm_mean["total"],
        "stock": stock_mean,
    }


def flops_report(
    model: str | Path,
    n_text: int = 64,
    n_new: int = 16,
    n_visual: int | None = None,
    tokens: str | Path | None = None,
    frames: int = 32,
    fastv_k: int | None = None,
    fastv_r: int | None = None,
    dycoke_l: int | None = None,
    dycoke_p: float | None = None,
    online: str | None = None,
    online_params: dict | None = None,
) -> dict:
    """Everything `vtc flops` prints: LLM prefill / decode / total, module FLOPs, ratio vs stock.

    Visual tokens come from ``n_visual``, or from a token store (``tokens``: means per video), or
    default to stock LLaVA-OV for ``frames`` frames (F·196+1). The stock reference is the LLM on
    F·196+1 tokens with no pruning; ``ratio`` = (module + LLM) / stock.
    """
    if n_visual is not None and tokens is not None:
        raise VtcError("give either --visual or --tokens, not both")
    if frames < 1:
        raise VtcError(f"--frames must be >= 1, got {frames}")
    shape, source = llm_shape(model)
    pruning = {"fastv_k": fastv_k, "fastv_r": fastv_r, "dycoke_l": dycoke_l, "dycoke_p": dycoke_p}
    shown = {k: v for k, v in pruning.items() if v is not None}
    if online_params and not online:
        raise VtcError(
            "--set configures an online method: add --online NAME (vtc eval list-online lists them)"
        )
    if online:
        from vtc.eval.online import get_online, online_config

        pruning["online"] = get_online(online, **(online_params or {}))
        shown["online"] = online_config(pruning["online"])
    report = {
        "model": str(model),
        "shape": shape.to_dict(),
        "shape_source": source,
        "n_text": n_text,
        "n_new": n_new,
        "pruning": shown,
    }
    if tokens is not None:
        s = store_flops(tokens, shape, n_text, n_new, pruning)
        report.update(
            {
                "tokens": s["store"],
                "method": s["method"],
                "videos": s["videos"],
                "n_visual": s["visual_tokens"],
                "stock_visual": s["stock_tokens"],
                "llm": s["llm"],
                "module": s["module"],
                "module_recorded": s["module_recorded"],
                "stock": s["stock"],
            }
        )
    else:
        from vtc.families import LLAVA_ONEVISION

        stock_n = LLAVA_ONEVISION.stock_tokens(frames, (27, 27))
        n_vis = stock_n if n_visual is None else n_visual
        pre, dec = online_pruning(shape, n_vis, **pruning)
        llm = llm_flops(shape, n_text, n_vis, n_new, visible_prefill=pre, visible_decode=dec)
        stock = llm_flops(shape, n_text, stock_n, n_new)
        report.update(
            {
                "frames": frames,
                "n_visual": n_vis,
                "stock_visual": stock_n,
                "visible_prefill": pre,
                "visible_decode": dec,
                "llm": {k: llm[k] for k in ("prefill", "decode", "total")},
                "detail": llm["detail"],
                "module": 0,
                "stock": {k: stock[k] for k in ("prefill", "decode", "total")},
            }
        )
    report["total"] = report["module"] + report["llm"]["total"]
    report["ratio"] = report["total"] / report["stock"]["total"]
    # The papers' convention on the same (mean, rounded) token count, for comparison with their tables.
    n_vis = round(report["n_visual"])
    pre, dec = online_pruning(shape, n_vis, **pruning)
    report["paper"] = paper_flops(
        shape,
        n_text + n_vis,
        n_decode=n_new - 1,
        tokens_per_layer=[n_text + v for v in pre],
        decode_tokens_per_layer=[n_text + v for v in dec],
    )
    return report
