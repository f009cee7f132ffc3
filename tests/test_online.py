"""Online pruning inside the LLM (DyCoke-KV, FastV) and the timed greedy decode loop `LlavaRunner.run`.

The tiny LLaVA-OV has 2 LLM layers, so the methods run with l=1 / k=1: scores from layer 0, pruning in
layer 1. Its stock random weights make greedy decoding repeat one token; `sharp_runner` redraws the LLM's
matrices with a larger seeded std so answers vary and the attention pattern moves between steps.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import vtc.eval.online as online
from vtc.errors import VtcError
from vtc.eval.llava import LlavaRunner
from vtc.eval.online import DynamicSelection, get_online, list_online, online_config, topk_sorted
from vtc.reducers import get_reducer

N_VIS = 2 * 196 + 1  # two frames pooled to 14x14 + the end-of-video newline
QUESTIONS = ["What is shown?", "Select the best answer"]


def _sharpen(runner: LlavaRunner, std: float, seed: int = 1) -> LlavaRunner:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in runner.model.model.language_model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return runner


@pytest.fixture(scope="module")
def runner(tiny_ckpt):
    return LlavaRunner(str(tiny_ckpt["llava_ov"]))


@pytest.fixture(scope="module")
def sharp_runner(tiny_ckpt):
    return _sharpen(LlavaRunner(str(tiny_ckpt["llava_ov"])), 0.15)


@pytest.fixture(scope="module")
def shifting_runner(tiny_ckpt):
    """Weights at which the layer-0 attention of successive steps has cosines on both sides of 0.9."""
    return _sharpen(LlavaRunner(str(tiny_ckpt["llava_ov"])), 0.1)


@pytest.fixture(scope="module")
def video(runner):
    vc = runner.model.config.vision_config
    side = vc.image_size // vc.patch_size
    feats = torch.randn(2, side * side, vc.hidden_size, generator=torch.Generator().manual_seed(0))
    red = get_reducer("none")(feats, (side, side))
    assert red.n_llm_tokens == N_VIS
    return feats, red


@pytest.fixture
def lives(monkeypatch):
    """Captures the live state of every online run (the object the attention wrapper consults)."""
    got = []
    real = online.attach

    @contextlib.contextmanager
    def spy(*a, **kw):
        with real(*a, **kw) as live:
            got.append(live)
            yield live

    monkeypatch.setattr(online, "attach", spy)
    return got


def _hf_generate(runner, feats, red, question, max_new_tokens):
    inputs = runner.inputs(feats, red, question)
    with torch.inference_mode():
        out = runner.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=runner.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), torch.stack([x[0] for x in out.logits])


@contextlib.contextmanager
def _with_eos(runner, extra: int):
    """Make ``extra`` an end-of-sequence id too (generate and run read the generation config)."""
    gc = runner.model.generation_config
    old = gc.eos_token_id
    gc.eos_token_id = [old, extra]
    try:
        yield
    finally:
        gc.eos_token_id = old


# ---------------------------------------------------------------------------------------------- registry


def test_registry_defaults_conversion_and_round_trip():
    listed = list_online()
    assert set(listed) >= {"dycoke-kv", "fastv"}
    assert listed["dycoke-kv"]["params"] == {"l": 3, "p": 0.7, "tau": 0.9}
    assert listed["fastv"]["params"] == {"k": 2, "r": None, "ratio": 0.5, "mask": False}
    assert listed["dycoke-kv"]["phase"] == "decode" and listed["fastv"]["description"]
    m = get_online("fastv", k="1", r="none", ratio="0.25", mask="true")
    assert (m.k, m.r, m.ratio, m.mask) == (1, None, 0.25, True)
    assert get_online("fastv", r="7").r == 7
    d = get_online("dycoke-kv", l="2", p="0.5", tau="0.8")
    cfg = online_config(d)
    assert cfg == {"method": "dycoke-kv", "l": 2, "p": 0.5, "tau": 0.8}
    assert get_online(cfg.pop("method"), **cfg) == d


@pytest.mark.parametrize(
    "name, params, match",
    [
        (
            "nope",
            {},
            "unknown online method 'nope'; valid: dycoke-kv, fastv, holitom, pdrop, prunevid, sparsevlm",
        ),
        ("fastv", {"q": 1}, "unknown parameter 'q' for fastv; valid: k, mask, r, ratio"),
        ("fastv", {"k": "two"}, "bad value 'two' for fastv.k: expected int"),
        ("fastv", {"ratio": 1.5}, r"fastv: ratio must be in \[0, 1\]"),
        ("fastv", {"k": 0}, "fastv: k must be >= 1"),
        ("dycoke-kv", {"p": "-0.1"}, r"dycoke-kv: p must be in \[0, 1\]"),
        ("dycoke-kv", {"l": 0}, "dycoke-kv: l must be >= 1"),
    ],
)
def test_bad_methods_and_params_are_one_line_errors(name, params, match):
    with pytest.raises(VtcError, match=match) as e:
        get_online(name, **params)
    assert "\n" not in str(e.value)


def test_keep_counts_and_rounding():
    # DyCoke: floor((1-p)·N), the official int(); the guard keeps (1-0.9)·10 = 0.999… at 1
    assert get_online("dycoke-kv", p=0.7).n_keep(N_VIS) == 117  # 117.9 -> 117
    assert get_online("dycoke-kv", p=0.9).n_keep(10) == 1
    assert get_online("dycoke-kv", p=0.0).n_keep(N_VIS) == N_VIS
    # FastV: round(ratio·N), or r capped at N
    assert get_online("fastv", ratio=0.3).n_keep(N_VIS) == 118  # 117.9 -> 118
    assert get_online("fastv", r=50).n_keep(N_VIS) == 50
    assert get_online("fastv", r=10_000).n_keep(N_VIS) == N_VIS


# ------------------------------------------------------------------------------------------- decode loop


@pytest.mark.parametrize("question", QUESTIONS)
def test_run_equals_hf_generate(sharp_runner, video, question):
    feats, red = video
    ids, logits = _hf_generate(sharp_runner, feats, red, question, 10)
    g = sharp_runner.run(feats, red, question, max_new_tokens=10, keep_logits=True)
    assert len(set(ids)) > 3  # a varied answer, not one repeated token
    assert g.token_ids == ids and g.n_new_tokens == 10
    assert torch.equal(g.logits, logits.float())
    assert g.text == sharp_runner.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert sharp_runner.generate(feats, red, question, max_new_tokens=10) == g.text
    assert g.visual_prefill == N_VIS and g.visual_decode == N_VIS
    assert g.visible_per_layer_prefill == [N_VIS, N_VIS] and g.visible_per_layer_decode == [N_VIS, N_VIS]
    assert g.ttft_s > g.embed_s > 0 and g.decode_s_per_token > 0
    assert g.online is None and g.online_stats == {}


def test_run_stops_at_eos_like_generate(sharp_runner, video):
    feats, red = video
    free = sharp_runner.run(feats, red, QUESTIONS[0], max_new_tokens=10).token_ids
    stop = free[3]  # make the 4th generated token an end-of-sequence id
    with _with_eos(sharp_runner, stop):
        ids, _ = _hf_generate(sharp_runner, feats, red, QUESTIONS[0], 10)
        g = sharp_runner.run(feats, red, QUESTIONS[0], max_new_tokens=10)
    first = free.index(stop)
    assert g.token_ids == ids == free[: first + 1] and g.n_new_tokens == first + 1


def test_single_token_has_no_decode_time(runner, video):
    feats, red = video
    g = runner.run(feats, red, QUESTIONS[0], max_new_tokens=1)
    assert g.n_new_tokens == 1 and g.decode_s_per_token is None
    assert g.visible_per_layer_decode == [float(N_VIS)] * 2
    f = runner.run(feats, red, QUESTIONS[0], max_new_tokens=1, online=get_online("fastv", k=1, r=5))
    assert f.visible_per_layer_prefill == [N_VIS, 5] and f.visible_per_layer_decode == [N_VIS, 5.0]
    with pytest.raises(VtcError, match="max_new_tokens must be >= 1"):
        runner.run(feats, red, QUESTIONS[0], max_new_tokens=0)


@pytest.mark.parametrize(
    "method",
    [
        get_online("fastv", k=1, ratio=1.0),
        get_online("fastv", k=1, r=N_VIS, mask=True),
        get_online("dycoke-kv", l=1, p=0.0),
    ],
    ids=str,
)
def test_keeping_everything_changes_nothing(sharp_runner, video, method):
    """FastV with R = N and DyCoke-KV with p = 0 run through the wrapper and gathers, bit for bit as stock."""
    feats, red = video
    ref = sharp_runner.run(feats, red, QUESTIONS[1], max_new_tokens=8, keep_logits=True)
    g = sharp_runner.run(feats, red, QUESTIONS[1], max_new_tokens=8, keep_logits=True, online=method)
    assert g.token_ids == ref.token_ids and g.text == ref.text
    assert torch.equal(g.logits, ref.logits)
    assert g.online == online_config(method)
    # the comparison can fail: the same method pruning for real changes the logits
    cfg = online_config(method)
    cut = get_online(cfg.pop("method"), **(cfg | ({"r": None, "ratio": 0.3} if "r" in cfg else {"p": 0.7})))
    other = sharp_runner.run(feats, red, QUESTIONS[1], max_new_tokens=8, keep_logits=True, online=cut)
    assert (other.logits - ref.logits).abs().max() > 1e-3


def test_online_restores_the_model(runner, video):
    feats, red = video
    before = runner.model.config.text_config._attn_implementation
    runner.run(feats, red, QUESTIONS[0], max_new_tokens=2, online=get_online("fastv", k=1))
    assert runner.model.config.text_config._attn_implementation == before
    assert all(not layer._forward_pre_hooks for layer in runner.model.model.language_model.layers)
    with pytest.raises(
        VtcError, match="pruning from layer 3 needs an LLM with more than 3 layers; this one has 2"
    ):
        runner.run(feats, red, QUESTIONS[0], max_new_tokens=2, online="dycoke-kv")
    assert runner.model.config.text_config._attn_implementation == before
    with pytest.raises(VtcError, match="unknown online method 'nope'"):
        runner.run(feats, red, QUESTIONS[0], online="nope")


# ----------------------------------------------------------------------------------------------- DyCoke


def test_dynamic_selection_keeps_reselects_and_brings_back():
    """Scripted attention vectors over 8 visual tokens, n_keep = 3, tau = 0.9."""
    sel = DynamicSelection(n_keep=3, tau=0.9)
    a1 = torch.tensor([0.30, 0.25, 0.20, 0.05, 0.05, 0.05, 0.05, 0.05])
    assert sel.update(a1) and sel.keep.tolist() == [0, 1, 2]
    # token 3 now outranks token 2, but the pattern is still similar (cos > 0.9): no re-evaluation
    a2 = torch.tensor([0.30, 0.25, 0.14, 0.15, 0.04, 0.04, 0.04, 0.04])
    assert torch.nn.functional.cosine_similarity(a1, a2, dim=0) > 0.9
    assert not sel.update(a2) and sel.keep.tolist() == [0, 1, 2]
    # attention moves to token 6 (pruned since step 1): cos < 0.9, re-selection brings it back
    a3 = torch.tensor([0.28, 0.20, 0.02, 0.02, 0.02, 0.02, 0.40, 0.04])
    assert torch.nn.functional.cosine_similarity(a2, a3, dim=0) < 0.9
    assert sel.update(a3) and sel.keep.tolist() == [0, 1, 6]
    assert (sel.selections, sel.brought_back, sel.evicted) == (2, 1, 1)
    assert sel.cosines[0] is None and len(sel.cosines) == 3
    # the threshold is strict: a cosine just above tau keeps the set, just below re-selects
    a4 = torch.tensor([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.65])
    c = float(torch.nn.functional.cosine_similarity(a3, a4, dim=0))
    keep = DynamicSelection(3, tau=c - 1e-4, keep=sel.keep, prev=a3)
    assert not keep.update(a4) and keep.keep.tolist() == [0, 1, 6]
    redo = DynamicSelection(3, tau=c + 1e-4, keep=sel.keep, prev=a3)
    assert redo.update(a4) and 7 in redo.keep.tolist()
    # tau = 0 never re-selects after the first step (one-shot pruning)
    once = DynamicSelection(3, tau=0.0)
    assert [once.update(a) for a in (a1, a2, a3, a4)] == [True, False, False, False]


def test_topk_sorted():
    s = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.5])
    assert topk_sorted(s, 3).tolist() == [1, 3, 4]
    assert topk_sorted(s, 99).tolist() == [0, 1, 2, 3, 4] and topk_sorted(s, 0).tolist() == []


def test_dycoke_kv_counts_per_layer_and_step(shifting_runner, video, lives):
    feats, red = video
    m = get_online("dycoke-kv", l=1, p=0.7, tau=0.9)
    g = shifting_runner.run(feats, red, QUESTIONS[0], max_new_tokens=12, online=m)
    n_keep = 117
    rows = g.online_stats["visible_per_step"]
    assert rows[0] == [N_VIS, N_VIS]  # prefill unchanged
    assert len(rows) == g.n_new_tokens == 12
    assert all(row == [N_VIS, n_keep] for row in rows[1:])  # every decode step: all below l, n_keep from l
    assert g.visible_per_layer_prefill == [N_VIS, N_VIS] and g.visible_per_layer_decode == [N_VIS, n_keep]
    assert g.visual_prefill == N_VIS and g.visual_decode == n_keep
    # re-selection exactly at the first decode step and where cos(previous step) < tau
    st = g.online_stats
    expect = [s + 1 for s, c in enumerate(st["cosines"]) if c is None or c < 0.9]
    assert st["reselected_at"] == expect and st["selections"] == len(expect)
    assert 1 < len(expect) < 11  # both branches happened (these weights were chosen for it)
    # the active set used at each step is the top n_keep of the step where it was last selected
    live = lives[-1]
    assert all(k.shape == (n_keep,) for k in live.keep_log)
    changed = [
        i for i in range(1, len(live.keep_log)) if not torch.equal(live.keep_log[i], live.keep_log[i - 1])
    ]
    assert {i + 1 for i in changed} <= set(st["reselected_at"])
    assert st["brought_back"] > 0 and st["brought_back"] == st["evicted"]


def test_dycoke_kv_end_to_end_brings_back_a_token_whose_attention_rises(
    sharp_runner, video, lives, monkeypatch
):
    """The real model and wrapper, with the layer-0 scores scripted: token 300 is ignored, then attended."""
    feats, red = video
    real = online.last_query_attention
    script = []

    def scripted(query, key, mask, scaling, n_rep=1):
        out = real(query, key, mask, scaling, n_rep)
        live = lives[-1]
        step = live.step  # 1, 2, 3, ...
        a = torch.full((live.n_visual,), 1e-4)
        a[:10] = 1.0  # tokens 0..9 dominate
        if step >= 3:
            a[300] = 5.0  # from step 3 on token 300 draws most attention
        script.append(a)
        out = out.clone()
        out[0, live.vs : live.ve] = a
        return out

    monkeypatch.setattr(online, "last_query_attention", scripted)
    m = get_online("dycoke-kv", l=1, p=1 - 10.5 / N_VIS, tau=0.9)  # keeps exactly 10 tokens
    g = sharp_runner.run(feats, red, QUESTIONS[0], max_new_tokens=5, online=m)
    live = lives[-1]
    assert m.n_keep(N_VIS) == 10 and g.n_new_tokens == 5
    assert [k.tolist() for k in live.keep_log[:2]] == [list(range(10))] * 2
    assert all(300 in k.tolist() for k in live.keep_log[2:])
    st = g.online_stats
    assert st["reselected_at"] == [1, 3] and st["brought_back"] == 1 and st["evicted"] == 1
    assert all(row == [N_VIS, 10] for row in st["visible_per_step"][1:])


# ------------------------------------------------------------------------------------------------- FastV


@pytest.mark.parametrize("mask", [False, True])
def test_fastv_keeps_r_tokens_at_their_original_positions(sharp_runner, video, lives, mask):
    feats, red = video
    m = get_online("fastv", k=1, ratio=0.3, mask=mask)
    R = 118
    g = sharp_runner.run(feats, red, QUESTIONS[0], max_new_tokens=6, online=m)
    live = lives[-1]
    rows = g.online_stats["visible_per_step"]
    assert rows == [[N_VIS, R]] * 6  # prefill and every decode step: all below k, R from k
    assert g.visual_prefill == N_VIS and g.visual_decode == R
    # the kept tokens are the R the last prompt token attended to most at layer k-1
    assert live.keep.shape == (R,) and torch.equal(live.keep, topk_sorted(live.scores, R))
    dropped = torch.ones(N_VIS, dtype=torch.bool)
    dropped[live.keep] = False
    assert live.scores[live.keep].min() >= live.scores[dropped].max()
    # position ids the layers' queries had at prefill: original positions, gaps where tokens were dropped
    S, vs = live.positions[0][0].numel(), live.vs
    assert torch.equal(live.positions[0][0], torch.arange(S))
    kept_pos = torch.cat([torch.arange(vs), live.keep + vs, torch.arange(vs + N_VIS, S)])
    if mask:  # every hidden state is still computed; the dropped keys are masked out
        assert torch.equal(live.positions[0][1], torch.arange(S))
    else:  # layer k runs on the shorter sequence
        assert torch.equal(live.positions[0][1], kept_pos) and kept_pos.numel() == S - N_VIS + R
    # decode steps continue at the full length's positions
    assert [int(p[1]) for p in live.positions[1:]] == list(range(S, S + 5))


def test_fastv_removal_equals_masking(sharp_runner, video):
    """Physical removal (shorter K/V, RoPE positions kept) gives the masked variant's logits: a renumbered
    position or a wrong key set would not."""
    feats, red = video
    for q in QUESTIONS:
        a = sharp_runner.run(
            feats, red, q, max_new_tokens=8, keep_logits=True, online=get_online("fastv", k=1, ratio=0.3)
        )
        b = sharp_runner.run(
            feats,
            red,
            q,
            max_new_tokens=8,
            keep_logits=True,
            online=get_online("fastv", k=1, ratio=0.3, mask=True),
        )
        assert a.token_ids == b.token_ids
        assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=0)


def test_fastv_on_an_offline_reduction(sharp_runner, video):
    feats, _ = video
    side = int(feats.shape[1] ** 0.5)
    red = get_reducer("pool", stride=3)(feats, (side, side))
    n = red.n_llm_tokens
    g = sharp_runner.run(feats, red, QUESTIONS[0], max_new_tokens=3, online=get_online("fastv", k=1, r=20))
    assert g.visual_prefill == n and g.visible_per_layer_prefill == [n, 20] and g.visual_decode == 20


# ------------------------------------------------------------------------------------------ batched loop


@pytest.fixture(scope="module")
def batch_items(video):
    feats, red = video
    side = int(feats.shape[1] ** 0.5)
    one = feats[:1]
    return [
        (feats, red, QUESTIONS[0]),
        (one, get_reducer("pool", stride=3)(one, (side, side)), QUESTIONS[1]),  # a much shorter prompt
        (feats, get_reducer("pool", stride=2)(feats, (side, side)), "A"),
    ]


def test_run_batch_equals_run_one_by_one(sharp_runner, batch_items):
    singles = [sharp_runner.run(f, r, q, max_new_tokens=10, keep_logits=True) for f, r, q in batch_items]
    stop = singles[0].token_ids[3]  # item 0 ends at its 4th token; the others must run on (left padding)
    assert stop not in singles[1].token_ids[:5] and stop not in singles[2].token_ids[:5]
    with _with_eos(sharp_runner, stop):
        singles = [sharp_runner.run(f, r, q, max_new_tokens=10, keep_logits=True) for f, r, q in batch_items]
        batch = sharp_runner.run_batch(batch_items, max_new_tokens=10, keep_logits=True)
        ignored = sharp_runner.run(*batch_items[0], max_new_tokens=10, ignore_eos=True)
    assert singles[0].n_new_tokens == 4 and max(s.n_new_tokens for s in singles[1:]) > 4
    for s, b, (_, r, _) in zip(singles, batch, batch_items, strict=True):
        assert b.token_ids == s.token_ids and b.text == s.text and b.n_new_tokens == s.n_new_tokens
        assert torch.allclose(b.logits, s.logits, atol=1e-4, rtol=0)
        assert (
            b.visual_prefill == r.n_llm_tokens and b.visible_per_layer_decode == [float(r.n_llm_tokens)] * 2
        )
        assert b.ttft_s == batch[0].ttft_s and b.decode_s_per_token > 0
    assert ignored.n_new_tokens == 10 and ignored.token_ids[:4] == singles[0].token_ids
    assert sharp_runner.run_batch([], max_new_tokens=3) == []


def test_run_batch_online(sharp_runner, batch_items):
    m = get_online("fastv", k=1, r=30)
    with pytest.raises(VtcError, match="online pruning runs one sequence at a time"):
        sharp_runner.run_batch(batch_items, max_new_tokens=2, online=m)
    (one,) = sharp_runner.run_batch(batch_items[:1], max_new_tokens=2, online=m)
    assert one.visible_per_layer_prefill == [N_VIS, 30]


def test_eager_attention_gives_the_sdpa_results(tiny_ckpt, shifting_runner, video):
    """The wrapper also wraps eager attention, whose 4D float masks it slices (queries and keys)."""
    feats, red = video
    eager = _sharpen(LlavaRunner(str(tiny_ckpt["llava_ov"])), 0.1)
    eager.model.set_attn_implementation({"text_config": "eager"})
    for m in (
        get_online("fastv", k=1, ratio=0.3),
        get_online("fastv", k=1, ratio=0.3, mask=True),
        get_online("dycoke-kv", l=1),
    ):
        a = shifting_runner.run(feats, red, QUESTIONS[0], max_new_tokens=8, keep_logits=True, online=m)
        b = eager.run(feats, red, QUESTIONS[0], max_new_tokens=8, keep_logits=True, online=m)
        assert eager.model.config.text_config._attn_implementation == "eager"
        assert a.token_ids == b.token_ids and a.online_stats == b.online_stats
        assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=0)
