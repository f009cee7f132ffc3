"""Evaluation on stored tokens: exactness against the HF pixel path, the lmms-eval plugin, local tasks."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import write_videomme_questions
from vtc.errors import VtcError
from vtc.eval.llava import LlavaRunner
from vtc.eval.runner import TokenSource, prompt_ids
from vtc.stages.compress import CompressOptions, compress


@pytest.fixture(scope="module")
def runner(tiny_ckpt):
    return LlavaRunner(str(tiny_ckpt["llava_ov"]))


@pytest.fixture(scope="module")
def none_store(feature_store, tmp_path_factory):
    s = compress(
        CompressOptions(feature_store, "none", out=tmp_path_factory.mktemp("tok") / "none.zarr"), quiet=True
    )
    assert s.vs_stock == 1.0 and s.llm_tokens == (4 + 3) * 196 + 2
    return s.out


def test_none_logits_equal_stock_pixel_path(runner, none_store, frames_by_video):
    """`--method none` reproduces LLaVA-OV's own video path: first-token logits within 1e-5 in fp32."""
    from vtc.encoders.vision import Preprocess

    src = TokenSource(none_store)
    feats, red = src.load("vid_a")
    assert red.n_llm_tokens == 4 * 196 + 1
    ours = runner.inputs(feats, red, "What is shown?")
    pixels = Preprocess()(frames_by_video["vid_a"])[None]
    ids = prompt_ids(runner.tokenizer, "What is shown?", 4 * 196 + 1, runner.video_token_id)
    with torch.no_grad():
        stock = runner.model(input_ids=ids, pixel_values_videos=pixels).logits[0, -1]
        mine = runner.model(**ours).logits[0, -1]
    assert torch.equal(ours["input_ids"], ids)
    assert (stock - mine).abs().max().item() < 1e-5
    # the comparison can fail: another plan (pool stride 3) gives other logits
    other = compress(
        CompressOptions(src.features.path, "pool", {"stride": "3"}, out=src.tokens.path.parent / "p3.zarr"),
        quiet=True,
    )
    f3, r3 = TokenSource(other.out).load("vid_a")
    assert r3.n_llm_tokens == 4 * 81 + 1
    with torch.no_grad():
        pooled3 = runner.model(**runner.inputs(f3, r3, "What is shown?")).logits[0, -1]
    assert (stock - pooled3).abs().max().item() > 1e-3


def test_feature_store_evaluates_as_none(feature_store, none_store):
    a_feats, a_red = TokenSource(feature_store).load("vid_b")
    b_feats, b_red = TokenSource(none_store).load("vid_b")
    assert torch.equal(a_feats, b_feats)
    assert torch.equal(a_red.src, b_red.src) and torch.equal(a_red.kind, b_red.kind)


def test_visual_lookup_by_id_or_path(none_store):
    src = TokenSource(none_store)
    assert src.resolve("vid_a") == "vid_a"
    assert src.resolve("/data/videomme/data/vid_b.mp4") == "vid_b"
    with pytest.raises(VtcError, match="'nope' is not in the store"):
        src.resolve("nope")


def test_entry_point_registers_the_model():
    eps = {e.name: e.value for e in md.entry_points(group="lmms_eval.models")}
    assert eps.get("vtc") == "vtc.eval.plugin:manifest"
    from lmms_eval.models import get_model

    from vtc.eval.lmms_model import VtcModel

    assert get_model("vtc") is VtcModel


def test_eval_local_videomme(tiny_ckpt, none_store, tmp_path):
    from vtc.stages.evaluate import EvalOptions, evaluate

    data = write_videomme_questions(
        tmp_path / "data" / "q.jsonl",
        [("vid_a", "short", "A"), ("vid_b", "long", "B"), ("vid_a", "short", "C")],
    )
    r = evaluate(
        EvalOptions(
            "videomme", none_store, str(tiny_ckpt["llava_ov"]), data=data.parent, out=tmp_path / "out"
        )
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["accuracy"] == r["accuracy"]
    assert r["n_samples"] == 3 and len(r["samples"]) == 3
    # exact token accounting: 4 and 3 frames of 196 pooled tokens + 1 newline
    assert sorted(s["visual_tokens"] for s in r["samples"]) == [3 * 196 + 1, 4 * 196 + 1, 4 * 196 + 1]
    assert r["visual_tokens"] == {"mean": (2 * 785 + 589) / 3, "min": 589, "max": 785}
    assert r["tokdense"] == pytest.approx(r["accuracy"] / r["visual_tokens"]["mean"])
    assert set(r["per_duration"]) == {"short", "long"}
    # accuracy is what lmms-eval's scoring says about the answers the model gave
    scores = [s["score"] for s in r["samples"]]
    assert r["accuracy"] == pytest.approx(100 * sum(scores) / 3)
    assert r["method"] == {"method": "none", "grid": "pooled"}


def test_eval_fails_loudly(tiny_ckpt, none_store, tmp_path):
    from vtc.stages.evaluate import EvalOptions, evaluate

    with pytest.raises(VtcError, match="does not exist"):
        evaluate(
            EvalOptions(
                "videomme",
                none_store,
                str(tiny_ckpt["llava_ov"]),
                data=tmp_path / "missing",
                out=tmp_path / "o",
            )
        )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "q.jsonl").write_text(json.dumps({"videoID": "vid_a", "question": "?"}) + "\n")
    with pytest.raises(VtcError, match="missing question_id"):
        evaluate(
            EvalOptions("videomme", none_store, str(tiny_ckpt["llava_ov"]), data=bad, out=tmp_path / "o")
        )
    with pytest.raises(VtcError, match="unknown task 'no_such_task'"):
        evaluate(EvalOptions("no_such_task", none_store, str(tiny_ckpt["llava_ov"]), out=tmp_path / "o"))
    q = write_videomme_questions(tmp_path / "d2" / "q.jsonl", [("not_extracted", "short", "A")])
    with pytest.raises(VtcError, match="'not_extracted' is not in the store"):
        evaluate(
            EvalOptions("videomme", none_store, str(tiny_ckpt["llava_ov"]), data=q.parent, out=tmp_path / "o")
        )


@pytest.mark.slow
def test_lmms_eval_cli_runs_the_plugin(tiny_ckpt, none_store, tmp_path):
    """`python -m lmms_eval --model vtc` (no fork) on a task YAML vtc wrote for a local copy."""
    from vtc.eval.tasks import write_local_task

    data = write_videomme_questions(
        tmp_path / "data" / "q.jsonl", [("vid_a", "short", "A"), ("vid_b", "medium", "B")]
    )
    task = write_local_task("videomme", data.parent, tmp_path / "task")
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "vtc",
        "--model_args",
        f"pretrained={tiny_ckpt['llava_ov']},tokens={none_store}",
        "--tasks",
        task,
        "--include_path",
        str(tmp_path / "task"),
        "--batch_size",
        "1",
        "--output_path",
        str(tmp_path / "lmms_out"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert task in p.stdout and "videomme_perception_score" in p.stdout
    assert list((tmp_path / "lmms_out").rglob("*results.json"))
