"""Qwen2.5-VL end to end on a tiny random checkpoint: extract -> compress (every offline method) -> eval.

The stock path here is transformers' own: ``Qwen2_5_VLForConditionalGeneration`` given the processor's
``pixel_values_videos`` / ``video_grid_thw`` of the same frames, and its ``get_rope_index`` ids.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import write_videomme_questions
from vtc.errors import VtcError
from vtc.families import QWEN2_5_VL
from vtc.reducers import KIND_VISUAL, get_reducer, list_reducers

QUESTION = "What is shown?"
# two clips of different sizes, so their grids differ (160x120 -> 8x10 merged cells, 96x128 -> 12x8 at
# min_pixels' upscaling), 5 frames each: an odd count, the last frame repeated into 3 temporal steps
CLIPS = {"wide": ((160, 120), 3), "tall": ((96, 128), 4)}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """(checkpoint dir, float32 feature store of the two clips)."""
    from vtc.encoders.tiny import build_tiny_qwen2_5_vl
    from vtc.stages.demo import synth_video
    from vtc.stages.extract import ExtractOptions, extract

    root = tmp_path_factory.mktemp("qwen")
    model = build_tiny_qwen2_5_vl(root / "model")
    paths = [str(synth_video(root / f"{k}.mp4", 10, seed, size=size)) for k, (size, seed) in CLIPS.items()]
    s = extract(
        ExtractOptions(paths, root / "feats.zarr", model=str(model), frames=5, storage_dtype="float32",
                       save_attention=True),
        quiet=True,
    )  # fmt: skip
    assert s.done == 2
    return model, root / "feats.zarr"


@pytest.fixture(scope="module")
def runner(qwen):
    from vtc.eval.runner import make_runner

    return make_runner(str(qwen[0]))


def compress_to(feats, method, out, params=None, batch_size=None):
    from vtc.stages.compress import CompressOptions, compress

    return compress(CompressOptions(feats, method, params=params, out=out, batch_size=batch_size), quiet=True)


def stock_inputs(runner, store, vid):
    """The processor's inputs for the clip's frames, as the stored features were made."""
    from vtc.cache import Store
    from vtc.encoders.qwen2_5_vl import QwenVisionTower
    from vtc.video import SamplingPolicy, decode_video

    attrs = Store.open(store).read(vid)[1]
    tower = QwenVisionTower(str(runner.model_id))
    frames = decode_video(attrs["source"], SamplingPolicy(frames=5), size=None).frames
    return tower.preprocess(tower.preprocess.resize(frames))


def stock_position_ids(runner, ids, thw, seconds):
    types = (ids == runner.video_token_id).int() * 2  # 0 text, 2 video
    pos, _ = runner.model.model.get_rope_index(
        ids, types, video_grid_thw=thw[None], second_per_grid_ts=torch.tensor([seconds])
    )
    return pos[:, 0]


def test_none_first_token_logits_equal_the_stock_path(qwen, runner, tmp_path):
    from vtc.eval.runner import TokenSource

    model, feats = qwen
    compress_to(feats, "none", tmp_path / "none.zarr")
    for vid in CLIPS:
        x, red = TokenSource(tmp_path / "none.zarr").load(vid)
        ours = runner.run(x, red, QUESTION, max_new_tokens=1, keep_logits=True).logits[0]
        pixels, thw = stock_inputs(runner, feats, vid)
        ids = runner.inputs(x, red, QUESTION)["input_ids"]
        assert int((ids == runner.video_token_id).sum()) == thw.prod() // 4 == red.n_llm_tokens
        with torch.inference_mode():
            ref = runner.model(
                input_ids=ids,
                pixel_values_videos=pixels,
                video_grid_thw=thw[None],
                second_per_grid_ts=torch.tensor([2 / red.fps]),
                mm_token_type_ids=(ids == runner.video_token_id).int() * 2,
            ).logits[0, -1]
        runner.model.model.rope_deltas = None
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,params", [("random", {"ratio": "0.3"}), ("fastvid", {})])
def test_kept_tokens_get_the_ids_the_stock_path_gives_them(qwen, runner, tmp_path, method, params):
    """The position ids passed to the model for each kept token are the ones get_rope_index gives that
    token in the full video's sequence; the text after the video keeps its full-video ids too."""
    from vtc.eval.runner import TokenSource

    model, feats = qwen
    compress_to(feats, method, tmp_path / "r.zarr", params)
    for vid in CLIPS:
        x, red = TokenSource(tmp_path / "r.zarr").load(vid)
        T, h, w = red.base_grid
        assert red.n_llm_tokens < T * h * w and bool((red.kind == KIND_VISUAL).all())
        got = runner.inputs(x, red, QUESTION)
        pos, ids = got["position_ids"][:, 0], got["input_ids"]
        start = int((ids[0] == runner.video_token_id).nonzero()[0])
        n_after = ids.shape[1] - start - red.n_llm_tokens
        full = torch.cat(
            [
                ids[0, :start],
                torch.full((T * h * w,), runner.video_token_id),
                ids[0, start + red.n_llm_tokens :],
            ]
        )[None]
        ref = stock_position_ids(runner, full, torch.tensor([T, 2 * h, 2 * w]), 2 / red.fps)
        flat = (red.pos[:, 0].long() * h + red.pos[:, 1].long()) * w + red.pos[:, 2].long()
        at = torch.cat([torch.arange(start), start + flat, start + T * h * w + torch.arange(n_after)])
        assert torch.equal(pos, ref[:, at])


def test_every_offline_method_runs_on_the_qwen_grid_with_exact_counts(qwen, runner, tmp_path):
    """Each method compresses both clips (each on its own grid, batched where grids allow); the count
    the store records is the number of <|video_pad|> tokens the LLM gets; `none` is the stock count."""
    from vtc.cache import Store
    from vtc.eval.runner import TokenSource

    _, feats = qwen
    for name in list_reducers():  # holitom and visionzip read the stored attention of the tower's last block
        out = tmp_path / f"{name}.zarr"
        s = compress_to(feats, name, out, batch_size=2)
        assert s.done == 2, name
        src = TokenSource(out)
        total = 0
        for vid, e in Store.open(out).done().items():
            x, red = src.load(vid)
            ids = runner.inputs(x, red, QUESTION)["input_ids"]
            assert int((ids == runner.video_token_id).sum()) == e["n_llm_tokens"] == red.n_visual(), name
            assert e["n_stock_tokens"] == x.shape[0] * x.shape[1]
            total += e["n_llm_tokens"]
        assert s.llm_tokens == total
        if name == "none":
            assert s.llm_tokens == s.stock_tokens == s.tokens_in


@pytest.mark.parametrize("name", sorted(list_reducers()))
def test_contract_on_a_qwen_shaped_grid(name):
    """Every reducer, as it runs on Qwen2.5-VL features (grid=pooled means the stored grid), on an odd
    merged grid of 3 temporal steps (5 frames): visual rows only, on the native base, positions in range,
    the plan reproducing the tokens, deterministic."""
    T, H, W, C = 3, 5, 7, 6
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, 1, C, generator=g) + torch.randn(T, H * W, C, generator=g).cumsum(1) * 0.3
    reducer = QWEN2_5_VL.adapt(get_reducer(name))
    aux = {"attention": torch.rand(T, H * W, generator=g).softmax(1)} if "attention" in reducer.needs else {}
    r = QWEN2_5_VL.for_llm(reducer(x, (H, W), **aux))
    again = QWEN2_5_VL.for_llm(reducer(x, (H, W), **aux))
    N = r.n_llm_tokens
    assert r.base == "native" and r.base_grid == (T, H, W) and r.n_input_tokens == T * H * W
    assert N == r.n_visual() >= 1 and bool((r.kind == KIND_VISUAL).all())
    assert r.indptr.shape == (N + 1,) and r.indptr[0] == 0 and r.indptr[-1] == r.src.numel()
    assert bool(((r.indptr[1:] - r.indptr[:-1]) > 0).all())
    assert bool((r.pos >= 0).all()) and bool((r.pos < torch.tensor([T, H, W])).all())
    out = r.apply(x.reshape(-1, C), torch.zeros(C))
    torch.testing.assert_close(out, r.tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(r.tokens, again.tokens) and torch.equal(r.src, again.src)


def test_pooled_grid_is_the_stored_grid_and_an_explicit_one_is_refused(qwen, tmp_path):
    _, feats = qwen
    s = compress_to(feats, "dycoke", tmp_path / "d.zarr")
    assert s.method["grid"] == "native"
    with pytest.raises(VtcError, match="Qwen2.5-VL has no pooling step"):
        compress_to(feats, "dycoke", tmp_path / "p.zarr", {"grid": "pooled"})
    assert not (tmp_path / "p.zarr").exists()


def test_a_store_and_a_checkpoint_of_different_families_are_refused(qwen, tiny_ckpt, feature_store):
    from vtc.eval.lmms_model import VtcModel

    model, feats = qwen
    with pytest.raises(VtcError, match="holds Qwen2.5-VL features.*LLaVA-OneVision"):
        VtcModel(pretrained=str(tiny_ckpt["llava_ov"]), tokens=str(feats))
    with pytest.raises(VtcError, match="holds LLaVA-OneVision features.*Qwen2.5-VL"):
        VtcModel(pretrained=str(model), tokens=str(feature_store))


def test_vtc_eval_runs_on_qwen_tokens(qwen, tmp_path):
    """`vtc eval` through the lmms-eval plugin: exact counts per sample, FLOPs on the Qwen LLM."""
    from vtc.stages.evaluate import EvalOptions, evaluate

    model, feats = qwen
    compress_to(feats, "dyntok", tmp_path / "dt.zarr")
    data = write_videomme_questions(
        tmp_path / "d" / "q.jsonl", [("wide", "short", "A"), ("tall", "long", "B")]
    )
    r = evaluate(
        EvalOptions("videomme", tmp_path / "dt.zarr", str(model), data=data.parent, out=tmp_path / "o")
    )
    from vtc.cache import Store

    counts = {v: e["n_llm_tokens"] for v, e in Store.open(tmp_path / "dt.zarr").done().items()}
    assert {s["video"]: s["visual_tokens"] for s in r["samples"]} == counts
    assert r["n_samples"] == 2 and r["method"]["grid"] == "native"
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["flops"]["mean_per_sample"]["prefill"] > 0


@pytest.mark.slow
def test_lmms_eval_cli_runs_qwen(qwen, tmp_path):
    """`python -m lmms_eval --model vtc` picks the Qwen2.5-VL family from the checkpoint's config."""
    from vtc.eval.tasks import write_local_task

    model, feats = qwen
    data = write_videomme_questions(
        tmp_path / "d" / "q.jsonl", [("wide", "short", "A"), ("tall", "long", "B")]
    )
    task = write_local_task("videomme", data.parent, tmp_path / "task")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "vtc", "--model_args",
           f"pretrained={model},tokens={feats}", "--tasks", task, "--include_path", str(tmp_path / "task"),
           "--batch_size", "2", "--output_path", str(tmp_path / "lmms_out")]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert task in p.stdout and "videomme_perception_score" in p.stdout


def test_lora_trains_on_qwen_tokens_and_evaluation_loads_it(qwen, tmp_path):
    """`vtc train --adapters lora` on Qwen2.5-VL tokens (M-RoPE ids as in evaluation), then `vtc eval
    --adapter`; the adapters that need LLaVA-OV's embedding path are refused in one line."""
    from vtc.stages.evaluate import EvalOptions, evaluate
    from vtc.stages.extract import ExtractOptions, extract
    from vtc.stages.train import TrainOptions, train
    from vtc.video.synthetic import make_synthetic_qa

    model, _ = qwen
    paths = make_synthetic_qa(tmp_path / "syn", n_train=4, n_test=2)
    extract(
        ExtractOptions([str(paths["videos"])], tmp_path / "f.zarr", model=str(model), frames=8), quiet=True
    )
    compress_to(tmp_path / "f.zarr", "fastvid", tmp_path / "t.zarr")
    opts = dict(data=str(paths["train"]), model=str(model), out=str(tmp_path / "run"), tokens=str(tmp_path / "t.zarr"),
                adapter_options={"lora": {"r": "4", "alpha": "8"}}, lr=1e-2, steps=4, save_every=2)  # fmt: skip
    for refused in ("projector", "marker", "vq-attn"):
        with pytest.raises(VtcError, match=f"adapter {refused} does not apply to Qwen2.5-VL"):
            train(TrainOptions(adapters=refused, **{**opts, "out": str(tmp_path / refused)}), quiet=True)
    s = train(TrainOptions(adapters="lora", **opts), quiet=True)
    assert s.steps == 4 and s.trainable["lora"] > 0 and all(map(torch.isfinite, torch.tensor(s.losses)))
    assert s.losses[-1] < s.losses[0]
    # a reducer applied on the fly: on each video's own grid, as the family runs it
    fly = {**opts, "tokens": None, "features": str(tmp_path / "f.zarr"), "method": "dycoke", "steps": 2}
    f = train(TrainOptions(adapters="lora", **{**fly, "out": str(tmp_path / "fly")}), quiet=True)
    assert f.steps == 2 and all(map(torch.isfinite, torch.tensor(f.losses)))
    with pytest.raises(VtcError, match="Qwen2.5-VL has no pooling step"):
        train(
            TrainOptions(
                adapters="lora", **{**fly, "out": str(tmp_path / "p"), "params": {"grid": ["pooled"]}}
            )
        )
    r = evaluate(
        EvalOptions(
            "mcq",
            tmp_path / "t.zarr",
            str(model),
            data=paths["test"],
            out=tmp_path / "e",
            adapter=tmp_path / "run",
        )
    )
    assert r["n_samples"] >= 2 and r["adapter"]["run"]


def test_resize_bounds_set_the_grid_and_the_store_identity(qwen, tiny_ckpt, tmp_path):
    """--min-pixels/--max-pixels: the processor's rule with other bounds, recorded in the store identity
    (an append with other bounds is refused); LLaVA-OV frames have no such bounds."""
    from vtc.cache import Store
    from vtc.encoders.qwen2_5_vl import smart_resize
    from vtc.stages.demo import synth_video
    from vtc.stages.extract import ExtractOptions, extract

    model, _ = qwen
    video = str(synth_video(tmp_path / "v.mp4", 4, 1, size=(160, 120)))
    opts = dict(model=str(model), frames=4, min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    assert extract(ExtractOptions([video], tmp_path / "s.zarr", **opts), quiet=True).done == 1
    st = Store.open(tmp_path / "s.zarr")
    h, w = smart_resize(120, 160, 28, 28 * 28, 4 * 28 * 28)
    assert tuple(st.read("v")[1]["grid"]) == (h // 28, w // 28) == (1, 2)
    assert st.meta["identity"]["encoder"]["preprocess"]["max_pixels"] == 4 * 28 * 28
    with pytest.raises(VtcError, match="refuses|differ|identity"):
        extract(
            ExtractOptions([video], tmp_path / "s.zarr", **{**opts, "max_pixels": 8 * 28 * 28}), quiet=True
        )
    with pytest.raises(VtcError, match="need 784 <= --min-pixels <= --max-pixels"):
        extract(ExtractOptions([video], tmp_path / "b.zarr", **{**opts, "min_pixels": 10}), quiet=True)
    with pytest.raises(VtcError, match="LLaVA-OV frames are 384x384"):
        extract(
            ExtractOptions([video], tmp_path / "l.zarr", model=str(tiny_ckpt["llava_ov"]), min_pixels=784),
            quiet=True,
        )
    assert not (tmp_path / "b.zarr").exists() and not (tmp_path / "l.zarr").exists()


def test_viz_draws_qwen_plans_on_the_first_frame_of_each_pair(qwen, tmp_path):
    from vtc.stages.viz import viz

    _, feats = qwen
    compress_to(feats, "uniform", tmp_path / "u.zarr", {"ratio": "0.5"})
    r = viz("wide", [tmp_path / "u.zarr"], tmp_path / "v.png")
    assert r.source_found and r.frames == [0, 1, 2]  # 3 temporal steps of the 5 frames
    from vtc.cache import Store

    picked = Store.open(feats).read("wide")[0]["frame_indices"][...]
    assert r.frame_indices == [int(picked[0]), int(picked[2]), int(picked[4])]


@pytest.mark.slow
def test_demo_on_a_tiny_qwen_learns_from_the_pixels(tmp_path):
    """`vtc demo --family qwen2.5-vl --quick`: the whole pipeline on a tiny random Qwen2.5-VL whose LLM vtc
    trains (200 steps) on its frozen random merger's tokens; colour is answered well above chance (25)."""
    from tests.test_cli import vtc

    r = vtc("demo", "--family", "qwen2.5-vl", "--workdir", tmp_path / "d", "--quick", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^\s*(none grid=native|uniform)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout, re.M)}  # fmt: skip
    assert rows["none grid=native"][0] == "60"  # 4 steps x 3 x 5 cells, no separator
    assert int(rows["none grid=native"][2]) >= 60  # colour (measured: 81)
    assert (tmp_path / "d" / "qwen-viz.png").is_file() and (
        tmp_path / "d" / "report" / "report.html"
    ).is_file()
    bad = vtc("demo", "--family", "gemma", "--workdir", tmp_path / "x")
    assert bad.returncode != 0 and "unknown family 'gemma'" in bad.stderr and "Traceback" not in bad.stderr


def test_online_methods_prune_inside_the_qwen_llm(qwen, runner, tmp_path):
    """The in-LLM methods cut the 3-D rotary embeddings with the hidden states: FastV keeping every token
    gives the unpruned logits, keeping half halves what layer 1 sees and removing the rest equals masking
    it out; DyCoke's KV pruning runs at decode."""
    from vtc.eval.online import get_online
    from vtc.eval.runner import TokenSource

    _, feats = qwen
    compress_to(feats, "none", tmp_path / "n.zarr")
    x, red = TokenSource(tmp_path / "n.zarr").load("wide")
    n = red.n_llm_tokens
    plain = runner.run(x, red, QUESTION, max_new_tokens=3, keep_logits=True)
    keep_all = runner.run(x, red, QUESTION, max_new_tokens=3, keep_logits=True,
                          online=get_online("fastv", k=1, ratio=1.0))  # fmt: skip
    torch.testing.assert_close(keep_all.logits, plain.logits, atol=1e-5, rtol=0)
    half = runner.run(x, red, QUESTION, max_new_tokens=3, keep_logits=True,
                      online=get_online("fastv", k=1, ratio=0.5))  # fmt: skip
    assert half.visible_per_layer_prefill == [n, round(0.5 * n)]
    # removing the dropped rows (hidden states, cos/sin) = masking them out of attention
    masked = runner.run(x, red, QUESTION, max_new_tokens=3, keep_logits=True,
                        online=get_online("fastv", k=1, ratio=0.5, mask=True))  # fmt: skip
    torch.testing.assert_close(half.logits, masked.logits, atol=1e-5, rtol=0)
    assert not torch.allclose(half.logits, plain.logits, atol=1e-5)
    dy = runner.run(x, red, QUESTION, max_new_tokens=3, online=get_online("dycoke-kv", l=1, p=0.5))
    assert dy.visible_per_layer_prefill == [n, n] and dy.visible_per_layer_decode[1] < n
