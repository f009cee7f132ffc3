"""Analytic LLM FLOPs (vtc.eval.flops) and `vtc flops`: hand counts, FlopCounterMode, the model table."""

from __future__ import annotations

import json

import pytest

from vtc.errors import VtcError
from vtc.eval.flops import (
    KNOWN_SHAPES,
    LLMShape,
    llm_flops,
    llm_shape,
    online_pruning,
    paper_flops,
    store_flops,
)

OV_05B = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


def tiny_qwen2_config(**kw):
    from transformers import Qwen2Config

    base = dict(
        vocab_size=50,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
    )
    return Qwen2Config(**{**base, **kw})


def test_hand_count_of_a_tiny_config():
    s = LLMShape.from_config(tiny_qwen2_config())
    assert s == LLMShape(layers=1, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=50)
    # prompt: 3 text + 2 visual = 5 tokens; 3 new tokens = prefill + 2 decode steps
    f = llm_flops(s, n_text=3, n_visual=2, n_new=3)
    # --- prefill, t = 5 tokens through the single layer
    q = 2 * 5 * 8 * (2 * 4)  # 640: d=8 -> heads*head_dim = 8
    k = 2 * 5 * 8 * (1 * 4)  # 320: one kv head (GQA)
    v = 2 * 5 * 8 * (1 * 4)  # 320
    o = 2 * 5 * (2 * 4) * 8  # 640
    pairs = 1 + 2 + 3 + 4 + 5  # causal: token i sees i+1 keys
    attn = 2 * (2 * 4 * 2 * pairs)  # QK^T and A.V: 2 heads x head_dim 4 x 2 FLOPs per pair -> 480
    mlp = 3 * (2 * 5 * 8 * 16)  # gate, up, down: 3840
    head = 2 * 8 * 50  # LM head on the last position only: 800
    assert f["detail"]["prefill"] == {
        "projections": q + k + v + o,
        "attention": attn,
        "mlp": mlp,
        "lm_head": head,
    }
    assert f["prefill"] == 640 + 320 + 320 + 640 + 480 + 3840 + 800 == 7040
    # --- decode: 2 steps of one token; step 1 sees 5 cached + itself = 6 keys, step 2 sees 7
    per_step_linear = 2 * 8 * 8 + 2 * 8 * 4 + 2 * 8 * 4 + 2 * 8 * 8 + 3 * 2 * 8 * 16  # 384 + 768
    attn_dec = 2 * 2 * 4 * 2 * 6 + 2 * 2 * 4 * 2 * 7  # 192 + 224
    assert f["decode"] == 2 * (per_step_linear + 800) + attn_dec == 4320
    assert f["total"] == 7040 + 4320
    # the dense-kernel convention counts all 5 x 5 score entries
    assert llm_flops(s, 3, 2, 3, causal=False)["prefill"] == 7040 - 480 + 2 * (2 * 4 * 2 * 25)


def test_more_visual_tokens_cost_more_and_grow_quadratically():
    s = KNOWN_SHAPES[OV_05B]
    f = [llm_flops(s, 64, n, 16)["total"] for n in (100, 101, 102, 1000, 6273)]
    assert f[0] < f[1] < f[2] < f[3] < f[4]
    # prefill's only quadratic term is causal attention, n(n+1)/2 pairs: its second difference is one
    # pair per layer, 4 * heads * head_dim FLOPs; decode attention and everything else are linear.
    assert f[2] - 2 * f[1] + f[0] == s.layers * 4 * s.heads * s.head_dim


def test_visible_decode_saves_exactly_the_pruned_attention():
    s = KNOWN_SHAPES[OV_05B]
    full = llm_flops(s, 64, 3098, 16)
    L, kept = 3, 1000  # DyCoke-like: decode layers >= 3 see 1000 of the 3098 visual tokens
    vis = [3098] * L + [kept] * (s.layers - L)
    pruned = llm_flops(s, 64, 3098, 16, visible_decode=vis)
    assert pruned["prefill"] == full["prefill"]
    # 15 decode steps, each query sees (3098 - 1000) fewer keys in each of the 21 pruned layers
    saved = (s.layers - L) * 15 * (3098 - kept) * 4 * s.heads * s.head_dim
    assert full["decode"] - pruned["decode"] == saved
    # online_pruning builds the same lists: int((1 - P) * v) from layer L on
    pre, dec = online_pruning(s, 3098, dycoke_l=3, dycoke_p=0.7)
    assert pre == [3098] * s.layers and dec == [3098] * 3 + [int(0.3 * 3098)] * (s.layers - 3)


def test_fastv_prefill_pruning_matches_fewer_tokens():
    s = KNOWN_SHAPES[OV_05B]
    pre, dec = online_pruning(s, 6273, fastv_k=0, fastv_r=500)
    # pruning from layer 0 is the same as sending 500 visual tokens, in prefill and (via the cache) decode
    a = llm_flops(s, 64, 6273, 16, visible_prefill=pre, visible_decode=dec)
    b = llm_flops(s, 64, 500, 16)
    assert (a["prefill"], a["decode"]) == (b["prefill"], b["decode"])
    # K = layers prunes nothing; K = 2 costs in between
    pre, _ = online_pruning(s, 6273, fastv_k=s.layers, fastv_r=500)
    assert llm_flops(s, 64, 6273, 16, visible_prefill=pre)["total"] == llm_flops(s, 64, 6273, 16)["total"]
    pre, _ = online_pruning(s, 6273, fastv_k=2, fastv_r=500)
    mid = llm_flops(s, 64, 6273, 16, visible_prefill=pre)["total"]
    assert b["total"] < mid < llm_flops(s, 64, 6273, 16)["total"]


def test_bad_inputs_are_one_line_errors():
    s = LLMShape.from_config(tiny_qwen2_config())
    with pytest.raises(VtcError, match="n_new"):
        llm_flops(s, 3, 2, 0)
    with pytest.raises(VtcError, match="no tokens"):
        llm_flops(s, 0, 0)
    with pytest.raises(VtcError, match="1 layers"):
        llm_flops(s, 3, 2, visible_prefill=[2, 2])
    with pytest.raises(VtcError, match=r"\[0, n_visual=2\]"):
        llm_flops(s, 3, 2, visible_prefill=[3])
    with pytest.raises(VtcError, match="exceeds"):
        llm_flops(s, 3, 2, visible_prefill=[1], visible_decode=[2])
    with pytest.raises(VtcError, match="both K"):
        online_pruning(s, 2, fastv_k=1)
    with pytest.raises(VtcError, match="P must lie"):
        online_pruning(s, 2, dycoke_l=0, dycoke_p=1.5)


def _measure(model, **kw):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = model(**kw)
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    return out, fc.get_total_flops(), counts


def test_flop_counter_mode_measures_the_same_counts():
    """FlopCounterMode counts mm/addmm (projections, MLP, LM head; addmm's bias add is not counted, nor
    are norms, RoPE, softmax, SiLU) and bmm (eager attention, which computes the full n x n scores).
    So prefill matches exactly under the dense convention (causal=False), and a decode step (one
    query, no masked entries) matches the causal count exactly."""
    import torch
    from transformers import Qwen2ForCausalLM

    sizes = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
    )
    cfg = tiny_qwen2_config(**sizes, attn_implementation="eager")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    s = LLMShape.from_config(cfg)
    n = 7
    out, measured, counts = _measure(model, input_ids=torch.arange(n)[None], logits_to_keep=1, use_cache=True)
    dense = llm_flops(s, n_text=n, n_visual=0, n_new=1, causal=False)
    assert measured == dense["prefill"]
    assert counts["aten.bmm"] == dense["detail"]["prefill"]["attention"]  # eager QK^T and A.V
    causal = llm_flops(s, n_text=n, n_visual=0, n_new=1)
    assert dense["prefill"] - causal["prefill"] == s.layers * 4 * s.heads * s.head_dim * (
        n * n - n * (n + 1) // 2
    )

    # one decode step on the cache: exactly the n_new=2 decode term
    _, measured, _ = _measure(
        model,
        input_ids=torch.tensor([[5]]),
        past_key_values=out.past_key_values,
        logits_to_keep=1,
        use_cache=True,
    )
    assert measured == llm_flops(s, n_text=n, n_visual=0, n_new=2)["decode"]

    # SDPA: on CPU torch dispatches to a kernel FlopCounterMode has no formula for (0 attention FLOPs);
    # where it has one (CUDA flash / efficient) it counts the full n x n. Either way the rest is exact.
    sdpa = Qwen2ForCausalLM(tiny_qwen2_config(**sizes, attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(model.state_dict())
    _, measured, _ = _measure(sdpa, input_ids=torch.arange(n)[None], logits_to_keep=1)
    no_attn = dense["prefill"] - dense["detail"]["prefill"]["attention"]
    assert measured in (no_attn, dense["prefill"])


def test_shape_from_the_tiny_llava_ov_checkpoint(tiny_ckpt):
    from transformers import AutoTokenizer

    s, source = llm_shape(tiny_ckpt["llava_ov"])
    # vtc.encoders.tiny.build_tiny_llava_ov: text_hidden 64, 2 layers, 4 heads, 2 kv heads, tied
    assert source == "config"
    assert (s.layers, s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim) == (2, 64, 128, 4, 2, 16)
    assert s.vocab == len(AutoTokenizer.from_pretrained(str(tiny_ckpt["llava_ov"])))
    assert s.tie_word_embeddings


def test_shape_from_bare_and_llava_next_style_configs(tmp_path):
    tiny_qwen2_config(num_hidden_layers=3).save_pretrained(tmp_path / "qwen2")
    s, _ = llm_shape(tmp_path / "qwen2")
    assert (s.layers, s.hidden, s.kv_heads, s.vocab) == (3, 8, 1, 50)
    # lmms-lab checkpoints (LLaVA-NeXT's LlavaQwen) keep the Qwen2 sizes at the top level
    (tmp_path / "lmms").mkdir()
    raw = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
    }
    (tmp_path / "lmms" / "config.json").write_text(json.dumps(raw))
    s, _ = llm_shape(tmp_path / "lmms")
    assert s == KNOWN_SHAPES["lmms-lab/llava-onevision-qwen2-0.5b-ov"]
    with pytest.raises(VtcError, match="no such directory"):
        llm_shape(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VtcError, match="no config.json"):
        llm_shape(tmp_path / "empty")


def _params_with_biases_and_norms(s: LLMShape) -> int:
    biases = s.layers * (s.heads + 2 * s.kv_heads) * s.head_dim  # Qwen2 has q/k/v biases
    norms = s.layers * 2 * s.hidden + s.hidden  # two RMSNorms per layer + the final one
    return s.params() + biases + norms


def test_builtin_table_matches_the_published_checkpoints():
    # Qwen/Qwen2-0.5B-Instruct config.json: 24 layers, d 896, m 4864, 14 heads, 2 kv heads, vocab
    # 151936, tied; llava-hf adds <image>, <video> and pads to a multiple of 64 -> 152000.
    s, source = llm_shape(OV_05B)  # offline: never touches the network for a known id
    assert source in ("cache", "table")
    assert s == LLMShape(24, 896, 4864, 14, 2, 64, 152000, True)
    # parameter counts published for the Qwen2 / Qwen2.5 LLMs of these sizes (model cards, GGUF
    # metadata): 494,032,768 (0.5B), 7,615,616,512 (7B), 72,706,203,648 (72B)
    for size, n in (("0.5b", 494_032_768), ("7b", 7_615_616_512), ("72b", 72_706_203_648)):
        assert _params_with_biases_and_norms(KNOWN_SHAPES[f"lmms-lab/llava-onevision-qwen2-{size}-ov"]) == n
    # DyCoke's Table 8 (d, m, layers) for LLaVA-OV 0.5B / 7B / 72B
    for size, dml in (("0.5b", (896, 4864, 24)), ("7b", (3584, 18944, 28)), ("72b", (8192, 29568, 80))):
        t = KNOWN_SHAPES[f"llava-hf/llava-onevision-qwen2-{size}-ov-hf"]
        assert (t.hidden, t.intermediate, t.layers) == dml


def test_paper_formula_reproduces_dycoke_full_token_flops():
    # DyCoke Table 1 / Table 6: LLaVA-OV-7B with 32 frames x 196 tokens, R = 100 decode iterations:
    # 41.40 TFLOPs with Eq. 8. Our literal Eq. 8 on 6,272 tokens: 41.416 T.
    s = KNOWN_SHAPES["llava-hf/llava-onevision-qwen2-7b-ov-hf"]
    assert paper_flops(s, 32 * 196, n_decode=100)["total"] / 1e12 == pytest.approx(41.40, abs=0.02)
    # hand check of one layer of the formula
    one = LLMShape(1, 8, 16, 2, 2, 4, 50)
    assert paper_flops(one, 5, n_decode=2) == {
        "prefill": 4 * 5 * 64 + 2 * 25 * 8 + 2 * 5 * 8 * 16,
        "decode": 2 * (4 * 64 + 2 * 8 * 16) + 2 * 8 * (5 + 1) + 2 * 8 * (5 + 2),
        "total": 4 * 5 * 64 + 2 * 25 * 8 + 2 * 5 * 8 * 16 + 2 * (4 * 64 + 2 * 8 * 16) + 2 * 8 * 13,
    }


def test_store_flops_means_per_video(feature_store, tmp_path):
    from vtc.cache import Store
    from vtc.stages.compress import CompressOptions, compress

    out = compress(
        CompressOptions(feature_store, "dyntok", {"threshold": "0.5"}, out=tmp_path / "d.zarr"), quiet=True
    ).out
    s = LLMShape.from_config(tiny_qwen2_config(num_hidden_layers=2))
    r = store_flops(out, s, n_text=10, n_new=4)
    done = Store.open(out).done()
    assert r["videos"] == 2 and r["kind"] == "tokens"
    assert r["module"] == sum(e["module_flops"] for e in done.values()) / 2 > 0
    per_video = [llm_flops(s, 10, e["n_llm_tokens"], 4)["total"] for e in done.values()]
    assert r["llm"]["total"] == pytest.approx(sum(per_video) / 2)
    # stock: 4 and 3 frames of 196 + 1 newline
    assert r["stock"]["total"] == pytest.approx(
        (llm_flops(s, 10, 785, 4)["total"] + llm_flops(s, 10, 589, 4)["total"]) / 2
    )
    # a feature store is stock LLaVA-OV with no module
    f = store_flops(feature_store, s, n_text=10, n_new=4)
    assert f["module"] == 0 and f["llm"] == f["stock"] and f["visual_tokens"] == (785 + 589) / 2


def _run_cli(args, capsys):
    import vtc.cli.flops  # noqa: F401  (registers the command until app._register imports it)
    from vtc.cli.app import main

    main(args)
    return capsys.readouterr()


def test_cli_json_round_trips_and_table_prints(capsys):
    out = _run_cli(["flops", "--visual", "100", "--text", "10", "--new", "4", "--json"], capsys).out
    r = json.loads(out)
    s = KNOWN_SHAPES[OV_05B]
    f = llm_flops(s, 10, 100, 4)
    assert r["llm"] == {k: f[k] for k in ("prefill", "decode", "total")}
    assert r["stock_visual"] == 32 * 196 + 1 and r["stock"]["total"] == llm_flops(s, 10, 6273, 4)["total"]
    assert r["ratio"] == pytest.approx(f["total"] / r["stock"]["total"])
    assert LLMShape(**r["shape"]) == s

    r = json.loads(
        _run_cli(["flops", "--visual", "100", "--fastv-k", "2", "--fastv-r", "10", "--json"], capsys).out
    )
    assert r["visible_prefill"] == [100, 100] + [10] * 22 and r["pruning"] == {"fastv_k": 2, "fastv_r": 10}

    table = _run_cli(["flops", "--visual", "3098", "--dycoke-l", "3", "--dycoke-p", "0.7"], capsys).out
    assert (
        "prefill" in table
        and "6273" in table
        and "3098" in table
        and "dycoke_p=0.7" in table
        and "100.0%" in table
    )
    assert max(len(line) for line in table.splitlines()) <= 80


def test_cli_with_a_token_store_and_errors(feature_store, tmp_path, tiny_ckpt, capsys):
    from vtc.stages.compress import CompressOptions, compress

    out = compress(
        CompressOptions(feature_store, "pool", {"stride": "3"}, out=tmp_path / "p.zarr"), quiet=True
    ).out
    args = ["flops", "--tokens", out, "--model", tiny_ckpt["llava_ov"], "--json"]
    r = json.loads(_run_cli([str(a) for a in args], capsys).out)
    assert (
        r["videos"] == 2 and r["n_visual"] == (4 * 81 + 1 + 3 * 81 + 1) / 2 and r["shape_source"] == "config"
    )
    assert r["ratio"] < 1
    with pytest.raises(SystemExit) as e:
        _run_cli(["flops", "--tokens", str(out), "--visual", "10"], capsys)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "not both" in err


def test_cli_takes_any_online_method(capsys):
    """`vtc flops --online NAME --set ...`: the per-layer counts are the method's own (`visible`, checked
    against real runs in tests/test_online_more.py), so the FLOPs fall with them."""
    from vtc.eval.online import get_online

    args = ["flops", "--visual", "6273", "--online", "pdrop", "--set", "layers=6,12,18", "--json"]
    r = json.loads(_run_cli(args, capsys).out)
    pre, dec = get_online("pdrop", layers="6,12,18").visible(6273, 24)
    assert r["visible_prefill"] == pre and r["visible_decode"] == dec and pre[-1] == 784
    assert r["pruning"] == {"online": {"method": "pdrop", "layers": "6,12,18", "ratio": 0.5}}
    assert r["llm"]["prefill"] < llm_flops(KNOWN_SHAPES[OV_05B], 64, 6273, 16)["prefill"]
    table = _run_cli(["flops", "--online", "sparsevlm"], capsys).out
    assert "sparsevlm" in table and max(len(line) for line in table.splitlines()) <= 80
    for bad, match in (
        (["--online", "holitom", "--set", "k=30"], "needs an LLM with more than 30 layers"),
        (["--set", "k=2"], "add --online NAME"),
        (["--online", "fastv", "--fastv-k", "2", "--fastv-r", "9"], "not both"),
    ):
        with pytest.raises(SystemExit) as e:
            _run_cli(["flops", *bad], capsys)
        assert e.value.code != 0 and match in capsys.readouterr().err
