"""`vtc train`: adapters, the answer-only loss, exact resume, evaluation with a trained adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vtc.errors import VtcError
from vtc.stages.extract import ExtractOptions, extract
from vtc.stages.train import TrainOptions, train
from vtc.video.synthetic import COLOURS, make_synthetic_qa, render, render_flashes, render_often, render_order


@pytest.fixture(scope="module")
def syn(tmp_path_factory, tiny_ckpt):
    d = tmp_path_factory.mktemp("syn")
    paths = make_synthetic_qa(d, n_train=8, n_test=4)
    s = extract(
        ExtractOptions([str(paths["videos"])], d / "feats.zarr", model=str(tiny_ckpt["llava_ov"]), frames=8),
        quiet=True,
    )
    assert s.done == 12 and not s.failed
    return {**paths, "feats": d / "feats.zarr", "model": str(tiny_ckpt["llava_ov"])}


def options(syn, out, **kw) -> TrainOptions:
    base = dict(data=str(syn["train"]), model=syn["model"], adapters="projector,full", out=str(out),
                tokens=str(syn["feats"]), lr=3e-3, steps=6, save_every=2, warmup=0.2)  # fmt: skip
    return TrainOptions(**{**base, **kw})


def test_synthetic_answers_depend_on_the_pixels():
    a, b = render("red", "left", seed=1), render("red", "right", seed=1)
    assert a.shape == (8, 96, 128, 3) and not (a == b).all()
    # the moving square's centre of mass goes left in one and right in the other
    xs = [(f == (220, 40, 40)).all(-1).nonzero()[1].mean() for f in a]
    assert all(x1 < x0 for x0, x1 in zip(xs, xs[1:], strict=False))
    shown = [(f == (50, 80, 235)).all(-1).any() for f in render_flashes("blue", 3, seed=2)]
    assert sum(shown) == 3 and not any(x and y for x, y in zip(shown, shown[1:], strict=False))

    def frames_with(frames, colour):
        return [k for k, f in enumerate(frames) if (f == COLOURS[colour]).all(-1).any()]

    order = render_order("green", "yellow", seed=4)
    assert frames_with(order, "green") == [0, 1, 2, 3] and frames_with(order, "yellow") == [4, 5, 6, 7]
    often = render_often("red", "blue", seed=5)
    assert frames_with(often, "red") == [0, 3, 6] and len(frames_with(often, "blue")) == 1
    assert not set(frames_with(often, "blue")) & {0, 3, 6}


def test_synthetic_splits_are_balanced_and_deterministic(tmp_path):
    p = make_synthetic_qa(tmp_path / "a", n_train=16, n_test=8, seed=3)
    rows = [json.loads(x) for x in p["train"].read_text().splitlines()]
    by = {c: sorted(r["answer"] for r in rows if r["category"] == c) for c in {r["category"] for r in rows}}
    # four kinds of 4 videos: colour asked of the moving and flashing ones, two questions per two-colour video
    assert by == {"colour": sorted("ABCD" * 2), "count": list("ABCD"), "direction": list("ABCD"),
                  "order": sorted("ABCD" * 2), "frequency": sorted("ABCD" * 2)}  # fmt: skip
    q = make_synthetic_qa(tmp_path / "b", n_train=16, n_test=8, seed=3)
    assert p["train"].read_text() == q["train"].read_text()
    train_ids = {r["video"] for r in rows}
    test_ids = {json.loads(x)["video"] for x in p["test"].read_text().splitlines()}
    assert not train_ids & test_ids


def test_adapter_parameter_counts(tiny_ckpt):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from vtc.adapters import get_adapters

    cfg = LlavaOnevisionConfig.from_pretrained(tiny_ckpt["llava_ov"])
    model = LlavaOnevisionForConditionalGeneration(cfg)
    counts = {a.name: sum(p.numel() for p in a.attach(model)) for a in get_adapters("projector,full")}
    c, d = cfg.vision_config.hidden_size, cfg.text_config.hidden_size
    assert counts["projector"] == c * d + d + d * d + d
    assert counts["full"] == sum(p.numel() for p in model.model.language_model.parameters())  # LM head tied
    # at LLaVA-OV-0.5B's widths (SigLIP 1152 -> Qwen2 896) the projector has 1,836,800 weights
    assert 1152 * 896 + 896 + 896 * 896 + 896 == 1_836_800
    with pytest.raises(VtcError, match="unknown adapter 'nope'"):
        get_adapters("projector,nope")


def test_loss_is_on_the_answers_only(tiny_ckpt):
    from transformers import AutoTokenizer

    from vtc.eval.runner import chat_ids, prompt_ids

    tok = AutoTokenizer.from_pretrained(tiny_ckpt["llava_ov"])
    ids, labels = chat_ids(tok, [("Q1?", "B"), ("Q2?", "C")], 5, 99)
    learned = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    assert learned == "B<|im_end|>C<|im_end|>"
    assert ids.count(99) == 5
    # the prompt of one question is exactly what evaluation sends
    one, _ = chat_ids(tok, [("Q1?", "B")], 5, 99)
    assert prompt_ids(tok, "Q1?", 5, 99)[0].tolist() == one[: len(prompt_ids(tok, "Q1?", 5, 99)[0])]


def test_training_lowers_the_loss_and_writes_the_run(syn, tmp_path):
    s = train(options(syn, tmp_path / "run", steps=12, save_every=4), quiet=True)
    assert s.steps == 12 and s.samples == 16 and s.missing_videos == 0
    assert sum(s.losses[-3:]) / 3 < 0.8 * sum(s.losses[:3]) / 3
    for name in (
        "run.json",
        "log.jsonl",
        "adapter.safetensors",
        "adapter.json",
        "checkpoint/state.json",
        "loss.png",
    ):
        assert (tmp_path / "run" / name).exists(), name
    meta = json.loads((tmp_path / "run" / "adapter.json").read_text())
    assert meta["adapters"] == ["full", "projector"] and meta["trainable"]["projector"] > 0


def test_a_stopped_run_resumes_to_the_same_losses(syn, tmp_path):
    whole = train(options(syn, tmp_path / "whole"), quiet=True)
    first = train(options(syn, tmp_path / "cut", steps=6, max_seconds=0.0), quiet=True)  # stops after step 1
    assert first.stopped_early and first.steps == 1
    resumed = train(options(syn, tmp_path / "cut"), quiet=True)
    assert resumed.resumed_from == 1 and resumed.steps == 6
    assert resumed.losses == whole.losses  # bit-identical, step by step
    with pytest.raises(VtcError, match="different training run"):
        train(options(syn, tmp_path / "cut", lr=1e-3), quiet=True)


def test_value_lists_are_drawn_per_batch_and_seeded(syn, tmp_path):
    from vtc.stages.train import Trainer

    opt = options(syn, tmp_path / "r", tokens=None, features=str(syn["feats"]), method="dyntok",
                  params={"threshold": ["0.4", "0.5", "0.6"]})  # fmt: skip
    t = Trainer(opt)
    drawn = [t.reducer_for(m)[1]["threshold"] for m in range(30)]
    assert set(drawn) == {"0.4", "0.5", "0.6"}
    assert drawn == [Trainer(opt).reducer_for(m)[1]["threshold"] for m in range(30)]
    s = train(opt, quiet=True)
    assert s.steps == 6 and all(torch.isfinite(torch.tensor(s.losses)))


def test_missing_videos_are_counted_not_replaced(syn, tmp_path):
    rows = syn["train"].read_text().splitlines()
    extra = json.loads(rows[0]) | {"video": "not_extracted"}
    (tmp_path / "q.jsonl").write_text("\n".join([*rows, json.dumps(extra)]) + "\n")
    s = train(options(syn, tmp_path / "r", data=str(tmp_path / "q.jsonl"), steps=1), quiet=True)
    assert s.missing_videos == 1 and s.samples == len(rows)


def test_eval_with_the_trained_adapter_changes_the_answers(syn, tmp_path):
    from vtc.stages.evaluate import EvalOptions, evaluate

    s = train(options(syn, tmp_path / "run", steps=60, save_every=60, lr=1e-2, warmup=0.1), quiet=True)
    assert sum(s.losses[-5:]) / 5 < 1.5  # it has learned to answer with a letter (right or not)
    data = syn["test"].parent
    base = evaluate(EvalOptions("mcq", syn["feats"], syn["model"], data=data, out=tmp_path / "e0"))
    tuned = evaluate(
        EvalOptions(
            "mcq", syn["feats"], syn["model"], data=data, out=tmp_path / "e1", adapter=tmp_path / "run"
        )
    )
    assert {s["answer"] for s in base["samples"]} == {""}  # the random model says nothing
    assert all(s["answer"] in ("A", "B", "C", "D") for s in tuned["samples"])
    assert tuned["adapter"]["run"] == str((tmp_path / "run").resolve())
    # the same through the CLI, and a run for another base model is refused in one line
    r = subprocess.run([sys.executable, "-m", "vtc", "eval", "mcq", "--tokens", syn["feats"], "--data", data,
                        "--model", syn["model"], "--adapter", tmp_path / "nothing", "--out", tmp_path / "e2"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "holds no trained adapter" in r.stderr and "Traceback" not in r.stderr


def test_lora_trains_only_its_matrices_and_merges_for_evaluation(syn, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    from vtc.adapters import get_adapters, load_adapter

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(syn["model"]).requires_grad_(False)
    (lora,) = get_adapters("lora", {"lora": {"r": "4", "alpha": "8"}})
    params = lora.attach(model)
    cfg = model.config.text_config
    d, m, kv = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_key_value_heads * (d_head := cfg.hidden_size // cfg.num_attention_heads),
    )
    per_layer = 4 * ((d + d) + (d + kv) + (d + kv) + (d + d) + (d + m) + (d + m) + (m + d))
    assert sum(p.numel() for p in params) == cfg.num_hidden_layers * per_layer and d_head > 0
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)

    s = train(options(syn, tmp_path / "run", adapters="projector,lora", adapter_options={"lora": {"r": "4", "alpha": "8"}},
                      steps=4, lr=1e-2), quiet=True)  # fmt: skip
    assert s.trainable["lora"] == cfg.num_hidden_layers * per_layer
    fresh = LlavaOnevisionForConditionalGeneration.from_pretrained(syn["model"])
    before = fresh.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    load_adapter(fresh, tmp_path / "run")
    merged = fresh.model.language_model.layers[0].self_attn.q_proj
    assert not torch.equal(merged.base_layer.weight, before)  # B·A was merged into the weight
    with pytest.raises(VtcError, match="choose one"):
        get_adapters("lora,full")


def test_marker_adapter_starts_as_the_newline_and_learns_apart(syn, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    from vtc.adapters import load_adapter

    opt = options(syn, tmp_path / "run", tokens=None, features=str(syn["feats"]), method="dyntok",
                  adapters="marker", steps=5, lr=1e-2)  # fmt: skip
    s = train(opt, quiet=True)
    assert s.trainable == {"marker": 64}
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(syn["model"])
    load_adapter(model, tmp_path / "run")
    assert not torch.equal(model.model.vtc_marker, model.model.image_newline)
    from vtc.eval.llava import embed_video
    from vtc.eval.runner import TokenSource
    from vtc.reducers import KIND_MARKER, get_reducer

    x, _ = TokenSource(syn["feats"]).load("syn_test_0000")
    red = get_reducer("dyntok")(x, TokenSource(syn["feats"]).grid)
    emb = embed_video(model, x, red)
    marker_rows = emb[red.kind == KIND_MARKER]
    assert len(marker_rows) and torch.allclose(marker_rows[0], model.model.vtc_marker.float())


def test_cli_train_json_and_one_line_errors(syn, tmp_path):
    def vtc(*args):
        return subprocess.run(
            [sys.executable, "-m", "vtc", "train", *map(str, args)], capture_output=True, text=True
        )

    r = vtc("--data", syn["train"], "--model", syn["model"], "--adapter", "projector", "--tokens", syn["feats"],
            "--out", tmp_path / "run", "--steps", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["steps"] == 2 and out["trainable"] == {"projector": 32 * 64 + 64 + 64 * 64 + 64}
    for args, message in [
        (("--data", tmp_path / "none.json"), "does not exist"),
        (("--data", syn["train"], "--adapter", "nope"), "unknown adapter 'nope'"),
        (("--data", syn["train"], "--features", syn["feats"]), "--features needs --method"),
        (
            (
                "--data",
                syn["train"],
                "--features",
                syn["feats"],
                "--method",
                "dyntok",
                "--set",
                "threshold=0.5,nan",
            ),
            "finite",
        ),
        (
            ("--data", syn["train"], "--features", syn["feats"], "--method", "visionzip"),
            "train on the token store",
        ),
    ]:
        base = {"--adapter": "projector", "--tokens": syn["feats"]}
        argv = list(args)
        for k, v in base.items():
            if k not in argv and not (k == "--tokens" and "--features" in argv):
                argv += [k, v]
        r = vtc(*argv, "--model", syn["model"], "--out", tmp_path / "bad", "--steps", "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, (args, r.stderr)
        assert not (tmp_path / "bad").exists()  # a refused run leaves no empty run directory


@pytest.mark.slow
def test_two_processes_train_as_one_with_twice_the_accumulation(syn, tmp_path):
    """Two CPU processes (torchrun, gloo; what `accelerate launch --multi_gpu` starts on GPUs, while on a CPU
    it starts one process without MPI): each takes every other micro-batch and the gradients are averaged,
    so the losses and weights are those of one process with --grad-accum 2."""
    import socket

    from safetensors.torch import load_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["train", "--data", syn["train"], "--model", syn["model"], "--adapter", "projector,full",
            "--tokens", syn["feats"], "--steps", "3", "--lr", "3e-3", "--batch-size", "2", "--quiet"]  # fmt: skip
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "vtc", *map(str, args), "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "vtc", *map(str, args), "--grad-accum", "2", "--out", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path / "two")) == 3
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    a, b = (
        load_file(tmp_path / "two" / "adapter.safetensors"),
        load_file(tmp_path / "one" / "adapter.safetensors"),
    )
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
